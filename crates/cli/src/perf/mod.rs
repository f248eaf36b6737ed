//! `nvmf perf`: the load generator.

/// Options of `nvmf perf`.
#[derive(Debug, clap::Args)]
pub struct PerfArgs {}

/// Runs a load.
pub fn run(_args: PerfArgs) -> anyhow::Result<()> {
    anyhow::bail!("nvmf perf is not implemented yet")
}
