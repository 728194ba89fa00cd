//! PLACEHOLDER: `strata run`, being written.

#[derive(clap::Args, Debug)]
pub struct RunArgs {}

pub async fn run(_args: RunArgs) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}
