//! `nvmf check`: a conformance and robustness checker for any NVMe/TCP target
//! (issue 15). It talks to the target over plain sockets with raw PDUs built by
//! nvmf-proto, prints one line per rule (verdict, rule id, spec section, what was
//! seen) and a summary, and exits with status 1 if any rule failed. The rules and
//! their sources are listed in docs/check.md.

mod conn;
mod report;
mod rules;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;

use crate::host::OutputFormat;

/// `nvmf check` flags (nvme-cli style, as the other host verbs).
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Transport type (only tcp).
    #[arg(short = 't', long = "transport", default_value = "tcp")]
    pub transport: String,
    /// Transport address (IPv4 or IPv6) of the target.
    #[arg(short = 'a', long = "traddr")]
    pub traddr: String,
    /// Transport service ID (TCP port) of the I/O subsystem.
    #[arg(short = 's', long = "trsvcid", default_value_t = 4420)]
    pub trsvcid: u16,
    /// Subsystem NQN to check (default: the first NVM subsystem of the discovery log).
    #[arg(short = 'n', long = "nqn")]
    pub nqn: Option<String>,
    /// Host NQN (default /etc/nvme/hostnqn or a generated one).
    #[arg(short = 'q', long = "hostnqn")]
    pub hostnqn: Option<String>,
    /// Port of the discovery controller (default: try the --trsvcid port; a
    /// discovery controller there is optional, one given here is required).
    #[arg(long = "discovery-port")]
    pub discovery_port: Option<u16>,
    /// Do not run the write rules (they write the last block of the first
    /// namespace and restore its old contents afterwards).
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Seconds to wait for each answer (a robustness rule waits this long for the
    /// connection to end).
    #[arg(long = "timeout", default_value_t = 5)]
    pub timeout: u64,
    /// Output format: normal or json.
    #[arg(short = 'o', long = "output-format", value_enum, default_value_t = OutputFormat::Normal)]
    pub output: OutputFormat,
}

/// Everything the rules need to know about where and who.
pub struct Target {
    /// The I/O subsystem's address.
    pub addr: SocketAddr,
    /// The discovery controller's address and whether it must be there.
    pub disc: (SocketAddr, bool),
    /// The subsystem to check, if known yet.
    pub subnqn: Option<String>,
    /// Host NQN and host ID sent in Connect.
    pub hostnqn: String,
    /// Host ID.
    pub hostid: [u8; 16],
    /// Per-answer timeout.
    pub timeout: Duration,
    /// Skip the write rules.
    pub read_only: bool,
}

fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    (h, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} has no address"))
}

/// Runs every rule; `Ok(false)` if one failed.
pub fn run(a: CheckArgs) -> anyhow::Result<bool> {
    if a.transport != "tcp" {
        bail!("transport '{}' is not supported; use -t tcp", a.transport);
    }
    if let Some(n) = &a.nqn {
        nvmf_proto::fabrics::validate_nqn(n).map_err(|e| anyhow!("NQN '{n}': {e}"))?;
    }
    let hostnqn = match &a.hostnqn {
        Some(h) => {
            nvmf_proto::fabrics::validate_nqn(h).map_err(|e| anyhow!("host NQN '{h}': {e}"))?;
            h.clone()
        }
        None => nvmf_host::default_hostnqn(),
    };
    let addr = resolve(&a.traddr, a.trsvcid)?;
    let disc = match a.discovery_port {
        Some(p) => (resolve(&a.traddr, p)?, true),
        None => (addr, false),
    };
    let mut t = Target {
        addr,
        disc,
        subnqn: a.nqn.clone(),
        hostnqn,
        hostid: nvmf_host::default_hostid(),
        timeout: Duration::from_secs(a.timeout.max(1)),
        read_only: a.read_only,
    };
    let json = a.output == OutputFormat::Json;
    let mut r = report::Report::new(json);
    rules::run_all(&mut t, &mut r);
    Ok(r.finish(&addr.to_string()))
}
