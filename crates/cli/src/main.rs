//! `nvmf`: one binary for the NVMe over Fabrics target, host tools and load generator.
//!
//! Subcommands follow nvme-cli's verbs and flags where one exists, so habits carry
//! over: `nvmf discover -t tcp -a 127.0.0.1 -s 4420`, `nvmf connect -n NQN ...`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod check;
mod host;
mod perf;
mod stats;
mod stdout;
mod target;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// NVMe over Fabrics in user space: target, host and tools.
#[derive(Debug, Parser)]
#[command(name = "nvmf", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Serve NVMe/TCP subsystems (with no options: a 1 GiB memory namespace on 127.0.0.1:4420).
    Target(target::TargetArgs),
    /// Set or show the ANA state of a group on a port of a running target,
    /// through its --control-socket.
    AnaState(target::AnaStateArgs),
    /// Convert a configuration saved by nvmetcli (Linux nvmet) into this
    /// target's TOML.
    ImportNvmetcli(target::ImportArgs),
    /// Generate load and measure IOPS, bandwidth and latency (fio-style options).
    Perf(perf::PerfArgs),
    /// Check an NVMe/TCP target against the spec's rules: one line per rule
    /// (verdict, rule, spec section, what was seen) and a summary; exit status 1
    /// if a rule failed.
    Check(check::CheckArgs),
    /// Show a running target's I/O statistics per namespace, from its
    /// --metrics endpoint (IOPS and MiB/s with --interval, latency, errors).
    Stats(stats::StatsArgs),
    #[command(flatten)]
    Host(host::HostCommand),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NVMF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: logs redirected to a file or a journal stay
    // plain text (no ANSI escapes around levels and fields).
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    init_tracing();
    let result = match cli.command {
        Command::Target(a) => target::run(a, matches.subcommand_matches("target")),
        Command::AnaState(a) => target::ana_state(a),
        Command::ImportNvmetcli(a) => target::import(a),
        Command::Perf(p) => perf::run(p),
        Command::Stats(s) => stats::run(s),
        Command::Host(h) => host::run(h),
        Command::Check(a) => match check::run(a) {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nvmf: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
