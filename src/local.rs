//! PLACEHOLDER: `strata local`, being written.

#[derive(clap::Args, Debug)]
pub struct LocalArgs {}

pub async fn local(_args: LocalArgs) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}
