//! `nvmf target`.

/// Options of `nvmf target`.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {}

/// Runs the target until interrupted.
pub fn run(_args: TargetArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
