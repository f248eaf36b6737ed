//! Host subcommands (nvme-cli verbs).

use clap::Subcommand;

/// Host-side commands.
#[derive(Debug, Subcommand)]
pub enum HostCommand {}

/// Runs a host command.
pub fn run(cmd: HostCommand) -> anyhow::Result<()> {
    match cmd {}
}
