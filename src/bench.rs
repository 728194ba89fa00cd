//! PLACEHOLDER: `strata bench`, being written.

#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

pub async fn bench(_args: BenchArgs) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}
