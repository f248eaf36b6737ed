//! `nvmf target`: serve NVMe/TCP subsystems.
//!
//! With no options it serves the embedded default (a 1 GiB memory namespace on
//! 127.0.0.1:4420, discovery also on 127.0.0.1:8009). Quick-mode flags build one
//! subsystem; `--config FILE` reads a TOML file (docs/target.md) and SIGHUP
//! reloads it.

use crate::stdout::{emit, outln};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::ArgMatches;
use nvmf_backend::{parse_size, DirectIo};
use nvmf_controller::config::{
    default_serial, parse_direct, BackendSpec, HostConfig, NamespaceConfig, SubsystemConfig,
    DEFAULT_SUBNQN,
};
use nvmf_controller::{Target, TargetConfig};
use nvmf_transport::TransportAddr;
use tracing::{error, info, warn};

/// Options of `nvmf target`.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// Address to listen on, `ADDR:PORT` for NVMe/TCP or `rdma://ADDR:PORT`
    /// for NVMe/RDMA (an address of an RDMA device; needs rdma-core's
    /// libibverbs and librdmacm) (repeatable; IPv6 as `[::1]:4420`).
    #[arg(long, value_name = "[rdma://]ADDR:PORT")]
    pub listen: Vec<String>,
    /// NQN of the subsystem served in quick mode.
    #[arg(long, value_name = "NQN")]
    pub subnqn: Option<String>,
    /// A memory-backed namespace of SIZE (e.g. 1G); volatile.
    #[arg(long, value_name = "SIZE")]
    pub memory: Vec<String>,
    /// A null namespace of SIZE: reads return zeroes, writes are dropped (for
    /// measuring the transport alone, like SPDK's Null bdev).
    #[arg(long, value_name = "SIZE")]
    pub null: Vec<String>,
    /// A file-backed namespace: `PATH[,size=SIZE][,direct=auto|on|off]`; created or extended to SIZE.
    #[arg(long, value_name = "PATH[,size=SIZE]")]
    pub file: Vec<String>,
    /// A block-device-backed namespace.
    #[arg(long, value_name = "PATH")]
    pub device: Vec<String>,
    /// A namespace on a Ceph RBD image: `POOL/IMAGE[,conf=CEPH_CONF][,id=USER]`
    /// (librbd; conf defaults to $CEPH_CONF or /etc/ceph/ceph.conf).
    #[arg(long, value_name = "POOL/IMAGE[,conf=PATH]")]
    pub rbd: Vec<String>,
    /// Logical block size of quick-mode namespaces.
    #[arg(long, default_value_t = 512, value_parser = parse_block_size)]
    pub block_size: u32,
    /// Host NQN allowed to connect, without authentication (repeatable; default: any host).
    #[arg(long, value_name = "NQN")]
    pub allow_host: Vec<String>,
    /// A host allowed to connect, with its DH-HMAC-CHAP secrets (repeatable):
    /// `NQN[,dhchap-secret=DHHC-1:…][,dhchap-ctrl-secret=DHHC-1:…][,dhchap-hash=sha256|sha384|sha512][,dhchap-dhgroup=null|ffdhe2048|…]`.
    /// With a secret, the host must authenticate every queue; with a controller
    /// secret, the target proves itself too. Keys as `nvme gen-dhchap-key` prints them.
    #[arg(long, value_name = "NQN[,dhchap-secret=KEY,…]")]
    pub host: Vec<String>,
    /// TOML configuration file (see docs/target.md); SIGHUP reloads it.
    #[arg(long, short = 'C', value_name = "FILE", conflicts_with_all = ["subnqn", "memory", "null", "file", "device", "rbd", "allow_host", "host"])]
    pub config: Option<PathBuf>,
    /// Serve a configuration saved by nvmetcli (`nvmetcli save`, e.g.
    /// /etc/nvmet/config.json), converted on the fly; what cannot be carried
    /// over is logged. SIGHUP re-imports it. `nvmf import-nvmetcli` writes the
    /// converted TOML instead.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "subnqn", "memory", "null", "file", "device", "rbd", "allow_host", "host"])]
    pub import_nvmetcli: Option<PathBuf>,
    /// Also serve discovery on this address (default 127.0.0.1:8009 for the embedded default).
    #[arg(long, value_name = "ADDR:PORT")]
    pub discovery_listen: Vec<String>,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Poll each queue's socket for up to this many microseconds before sleeping
    /// (lower latency, more CPU; 0: never poll; default 50). Overrides
    /// busy_poll_us of --config.
    #[arg(long, value_name = "MICROSECONDS")]
    pub busy_poll_us: Option<u32>,
    /// Poll only after a pass that took in at most this many PDUs, as a host
    /// waiting on each answer sends them (0: after every pass; default 2).
    /// Overrides busy_poll_batch of --config.
    #[arg(long, value_name = "PDUS")]
    pub busy_poll_batch: Option<u32>,
    /// TCP congestion control of accepted connections (e.g. cubic; see
    /// /proc/sys/net/ipv4/tcp_available_congestion_control). Overrides
    /// tcp_congestion of --config. Default: the system's.
    #[arg(long, value_name = "NAME")]
    pub tcp_congestion: Option<String>,
    /// While the target runs, ask the kernel to keep every CPU's wake-up
    /// latency at or below this (Linux PM QoS through /dev/cpu_dma_latency;
    /// needs root). 0: idle CPUs poll in the kernel instead of halting, which
    /// halves queue depth 1 latency without --busy-poll-us where waking a
    /// halted CPU is slow (VMs), at the price of power. System-wide. Default:
    /// no request. Overrides cpu_latency_us of --config.
    #[arg(long, value_name = "MICROSECONDS")]
    pub cpu_latency_us: Option<u32>,
    /// Require TLS 1.3 with a pre-shared key on the --listen ports (nvmet
    /// addr_treq=required, addr_tsas=tls1.3); needs --tls-key. Overrides tls of --config.
    #[arg(long)]
    pub tls: bool,
    /// Configured TLS PSK (`NVMeTLSkey-1:01:…:`, `nvme gen-tls-key` prints one),
    /// from which the TLS PSK of any host NQN and subsystem is derived; repeatable.
    #[arg(long = "tls-key", value_name = "KEY")]
    pub tls_key: Vec<String>,
    /// Derive identity-version-0 TLS PSKs as libnvme <= 1.15 does (nvme-cli 2.13,
    /// Debian 13): for kernel hosts whose key was inserted with such an nvme-cli.
    #[arg(long = "tls-compat")]
    pub tls_compat: bool,
    /// Whether TLS is required (the default) or only offered on the TLS ports
    /// (`not-required`: a plain ICReq is served too; the discovery log says
    /// TREQ "not required" with SECTYPE TLS 1.3), as nvmet's addr_treq.
    #[arg(
        long = "tls-treq",
        value_name = "required|not-required",
        requires = "tls"
    )]
    pub tls_treq: Option<String>,
    /// Put TLS on this --listen address only (repeatable; default: all of them),
    /// so one target can serve plain and TLS ports.
    #[arg(long = "tls-port", value_name = "ADDR:PORT", requires = "tls")]
    pub tls_port: Vec<String>,
    /// ANA state of a group on a --listen address (repeatable):
    /// `ADDR:PORT=GROUP:STATE`, STATE one of optimized, non-optimized,
    /// inaccessible, persistent-loss, change. Unlisted: optimized. Overrides
    /// the ana_state tables of --config.
    #[arg(long = "ana-state", value_name = "ADDR:PORT=GROUP:STATE")]
    pub ana_state: Vec<String>,
    /// Refer hosts to another discovery service (repeatable): `ADDR[:PORT]`,
    /// port 8009 by default. Each is a referral entry (SUBTYPE 1) of the
    /// discovery log, which `nvme connect-all` and `nvmf connect-all` follow.
    /// Added to the `[[referral]]` tables of --config.
    #[arg(long = "referral", value_name = "ADDR[:PORT]")]
    pub referral: Vec<String>,
    /// ANA group of a quick-mode namespace (repeatable): `NSID=GROUP`, 1..=128
    /// (default group 1).
    #[arg(
        long = "ana-group",
        value_name = "NSID=GROUP",
        conflicts_with = "config"
    )]
    pub ana_group: Vec<String>,
    /// Controller IDs the quick-mode subsystem hands out, `MIN-MAX` (default
    /// 1-65519): two targets serving one subsystem (an HA pair) need disjoint ranges.
    #[arg(
        long = "cntlid-range",
        value_name = "MIN-MAX",
        conflicts_with = "config"
    )]
    pub cntlid_range: Option<String>,
    /// Unix socket taking control commands (mode 0600): `nvmf ana-state
    /// --control-socket PATH ...` changes ANA states live.
    #[arg(long = "control-socket", value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`, text format 0.0.4) on this
    /// address, e.g. 127.0.0.1:9100; `nvmf stats` reads them. Overrides
    /// metrics of --config.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// Options of `nvmf ana-state`.
#[derive(Debug, clap::Args)]
pub struct AnaStateArgs {
    /// The target's --control-socket.
    #[arg(long = "control-socket", value_name = "PATH")]
    pub control_socket: PathBuf,
    /// The listen address, as the target was given it (e.g. 127.0.0.1:4421).
    #[arg(long, value_name = "ADDR:PORT")]
    pub port: String,
    /// The ANA group (1..=128).
    #[arg(long, default_value_t = 1)]
    pub group: u32,
    /// The new state: optimized, non-optimized, inaccessible,
    /// persistent-loss or change; without it the current state is printed.
    #[arg(long)]
    pub state: Option<String>,
}

/// `nvmf ana-state`: one request to a running target's control socket.
pub fn ana_state(a: AnaStateArgs) -> anyhow::Result<()> {
    let mut line = format!("ana-state {} {}", a.port, a.group);
    if let Some(s) = &a.state {
        let st: nvmf_controller::ana::AnaState = s.parse().map_err(anyhow::Error::msg)?;
        line.push_str(&format!(" {st}"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let answer = rt
        .block_on(nvmf_controller::control::request(&a.control_socket, &line))
        .with_context(|| format!("control socket {}", a.control_socket.display()))?;
    match answer.strip_prefix("ok") {
        Some(rest) => {
            outln!("{} group {}: {}", a.port, a.group, rest.trim());
            Ok(())
        }
        None => bail!("{}", answer.strip_prefix("error ").unwrap_or(&answer)),
    }
}

enum NsArg {
    Memory(String),
    Null(String),
    File(String),
    Device(String),
    Rbd(String),
}

/// Namespace flags in command-line order, so `--file a --memory 1G` gives NSID 1 = a.
fn ordered_namespaces(m: Option<&ArgMatches>, a: &TargetArgs) -> Vec<NsArg> {
    let mut v: Vec<(usize, NsArg)> = Vec::new();
    let mut add = |id: &str, vals: &[String], f: fn(String) -> NsArg| {
        let idx: Vec<usize> = m
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_default();
        for (k, val) in vals.iter().enumerate() {
            v.push((
                idx.get(k).copied().unwrap_or(usize::MAX - vals.len() + k),
                f(val.clone()),
            ));
        }
    };
    add("memory", &a.memory, NsArg::Memory);
    add("null", &a.null, NsArg::Null);
    add("file", &a.file, NsArg::File);
    add("device", &a.device, NsArg::Device);
    add("rbd", &a.rbd, NsArg::Rbd);
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, n)| n).collect()
}

/// `--rbd POOL/IMAGE[,conf=PATH][,id=USER]`.
fn parse_rbd_arg(s: &str) -> anyhow::Result<nvmf_backend::RbdSpec> {
    let mut parts = s.split(',');
    let mut spec = nvmf_backend::RbdSpec::parse(parts.next().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("--rbd {s}: {e}"))?;
    for p in parts {
        match p.split_once('=') {
            Some(("conf", v)) => spec.conf = Some(v.into()),
            Some(("id", v)) => spec.id = Some(v.into()),
            _ => bail!("--rbd {s}: unknown option {p:?} (conf=PATH or id=USER)"),
        }
    }
    Ok(spec)
}

fn parse_file_arg(s: &str) -> anyhow::Result<(PathBuf, Option<u64>, DirectIo)> {
    let mut parts = s.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .context("--file needs a path: --file PATH[,size=SIZE]")?;
    let mut size = None;
    let mut direct = DirectIo::Auto;
    for p in parts {
        match p.split_once('=') {
            Some(("size", v)) => size = Some(size_arg(v, || format!("--file {s}: size"))?),
            Some(("direct", v)) => {
                direct = parse_direct(v)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("--file {s}: direct"))?
            }
            _ => {
                bail!("--file {s}: unknown option '{p}' (expected size=SIZE or direct=auto|on|off)")
            }
        }
    }
    Ok((PathBuf::from(path), size, direct))
}

/// The hosts of `--allow-host` and `--host`, in that order.
fn quick_hosts(a: &TargetArgs) -> anyhow::Result<Vec<HostConfig>> {
    let mut v: Vec<HostConfig> = a.allow_host.iter().map(HostConfig::plain).collect();
    for h in &a.host {
        v.push(
            HostConfig::parse_flag(h)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--host {}", h.split(',').next().unwrap_or_default()))?,
        );
    }
    Ok(v)
}

/// The configuration file the target was started with (--config, or
/// --import-nvmetcli converted), read now; None for the flags-only modes.
fn file_config(a: &TargetArgs) -> Option<anyhow::Result<TargetConfig>> {
    if let Some(path) = &a.config {
        return Some(TargetConfig::from_file(path).map_err(anyhow::Error::from));
    }
    let path = a.import_nvmetcli.as_ref()?;
    Some((|| {
        let c = import_nvmetcli(path)?;
        for n in &c.notes {
            warn!("{}: {n}", path.display());
        }
        TargetConfig::from_toml(&c.toml, path).with_context(|| {
            format!(
                "the configuration converted from {} does not load; write it out with \
                 `nvmf import-nvmetcli {} -o target.toml`, complete it and use --config",
                path.display(),
                path.display()
            )
        })
    })())
}

/// Reads and converts an nvmetcli configuration.
fn import_nvmetcli(path: &Path) -> anyhow::Result<nvmf_controller::nvmetcli::Converted> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the nvmetcli configuration {}", path.display()))?;
    nvmf_controller::nvmetcli::convert(&text).with_context(|| format!("{}", path.display()))
}

/// Arguments of `nvmf import-nvmetcli`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The file `nvmetcli save` wrote (default location /etc/nvmet/config.json).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Write the TOML here instead of to standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `nvmf import-nvmetcli`: converts nvmetcli's saved JSON into this target's
/// TOML (docs/target.md), with what could not be carried over as comments and
/// on standard error.
pub fn import(a: ImportArgs) -> anyhow::Result<()> {
    let c = import_nvmetcli(&a.file)?;
    for n in &c.notes {
        eprintln!("nvmf: note: {n}");
    }
    match &a.output {
        Some(out) => {
            std::fs::write(out, &c.toml).with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "nvmf: wrote {}; serve it with: nvmf target --config {}",
                out.display(),
                out.display()
            );
        }
        None => emit(&c.toml),
    }
    Ok(())
}

fn build_config(a: &TargetArgs, m: Option<&ArgMatches>) -> anyhow::Result<(TargetConfig, bool)> {
    if let Some(cfg) = file_config(a) {
        let mut cfg = cfg?;
        if !a.listen.is_empty() {
            cfg.listen = parse_addrs(&a.listen, "--listen")?;
        }
        cfg.discovery_listen
            .extend(parse_addrs(&a.discovery_listen, "--discovery-listen")?);
        apply_tuning(&mut cfg, a)?;
        return Ok((cfg, true));
    }
    let mut cfg = TargetConfig::embedded_default();
    let nss = ordered_namespaces(m, a);
    let quick = !nss.is_empty()
        || a.subnqn.is_some()
        || !a.ana_group.is_empty()
        || a.cntlid_range.is_some()
        || !a.listen.is_empty()
        || !a.allow_host.is_empty()
        || !a.host.is_empty();
    if !a.listen.is_empty() {
        cfg.listen = parse_addrs(&a.listen, "--listen")?;
        // The default discovery port follows the first listen address's IP.
        let ip = cfg.listen[0].socket.ip();
        cfg.discovery_listen = vec![TransportAddr::tcp(std::net::SocketAddr::new(ip, 8009))];
    }
    if !a.discovery_listen.is_empty() {
        cfg.discovery_listen = parse_addrs(&a.discovery_listen, "--discovery-listen")?;
    }
    if quick {
        let nqn = a
            .subnqn
            .clone()
            .unwrap_or_else(|| DEFAULT_SUBNQN.to_string());
        let mut namespaces = Vec::new();
        for (i, n) in nss.into_iter().enumerate() {
            let nsid = i as u32 + 1;
            let (backend, direct) = match n {
                NsArg::Memory(s) => (
                    BackendSpec::Memory {
                        size: size_arg(&s, || format!("--memory {s}"))?,
                    },
                    DirectIo::Auto,
                ),
                NsArg::Null(s) => (
                    BackendSpec::Null {
                        size: size_arg(&s, || format!("--null {s}"))?,
                    },
                    DirectIo::Auto,
                ),
                NsArg::File(s) => {
                    let (path, size, direct) = parse_file_arg(&s)?;
                    (BackendSpec::File { path, size }, direct)
                }
                NsArg::Device(s) => (BackendSpec::Device { path: s.into() }, DirectIo::Auto),
                NsArg::Rbd(s) => (BackendSpec::Rbd(parse_rbd_arg(&s)?), DirectIo::Auto),
            };
            namespaces.push(NamespaceConfig {
                nsid,
                backend,
                block_size: a.block_size,
                direct,
                uuid: None,
                ana_group: 1,
            });
        }
        if namespaces.is_empty() {
            namespaces.push(NamespaceConfig {
                nsid: 1,
                backend: BackendSpec::Memory { size: 1 << 30 },
                block_size: a.block_size,
                direct: DirectIo::Auto,
                uuid: None,
                ana_group: 1,
            });
        }
        for g in &a.ana_group {
            let (nsid, group) = g
                .split_once('=')
                .with_context(|| format!("--ana-group {g}: expected NSID=GROUP"))?;
            let nsid: u32 = nsid
                .parse()
                .ok()
                .filter(|n| namespaces.iter().any(|ns: &NamespaceConfig| ns.nsid == *n))
                .with_context(|| {
                    format!("--ana-group {g}: '{nsid}' is not the NSID of a namespace given")
                })?;
            let group = nvmf_controller::ana::parse_group(group)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--ana-group {g}"))?;
            for ns in namespaces.iter_mut().filter(|ns| ns.nsid == nsid) {
                ns.ana_group = group;
            }
        }
        let (cntlid_min, cntlid_max) = match &a.cntlid_range {
            None => (1, nvmf_controller::config::CNTLID_MAX),
            Some(r) => r
                .split_once('-')
                .and_then(|(lo, hi)| Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?)))
                .with_context(|| format!("--cntlid-range {r}: expected MIN-MAX, e.g. 1-999"))?,
        };
        cfg.subsystems = vec![SubsystemConfig {
            serial: default_serial(&nqn),
            model: "nvmf-rs".into(),
            nqn,
            hosts: quick_hosts(a)?,
            namespaces,
            cntlid_min,
            cntlid_max,
        }];
    }
    apply_tuning(&mut cfg, a)?;
    Ok((cfg, false))
}

/// Applies the tuning flags, which override a config file's values, and checks
/// the result.
fn apply_tuning(cfg: &mut TargetConfig, a: &TargetArgs) -> anyhow::Result<()> {
    for r in &a.referral {
        let addr = parse_referral(r)?;
        if !cfg.referrals.contains(&addr) {
            cfg.referrals.push(addr);
        }
    }
    if !a.ana_state.is_empty() {
        cfg.ana_states = a
            .ana_state
            .iter()
            .map(|s| {
                nvmf_controller::ana::AnaPortState::parse_flag(s)
                    .map_err(|m| anyhow::anyhow!("--ana-state {s}: {m}"))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(us) = a.busy_poll_us {
        cfg.busy_poll_us = us;
    }
    if let Some(n) = a.busy_poll_batch {
        cfg.busy_poll_batch = n;
    }
    if a.metrics.is_some() {
        cfg.metrics = a.metrics;
    }
    if a.tcp_congestion.is_some() {
        cfg.tcp_congestion = a.tcp_congestion.clone();
    }
    if a.cpu_latency_us.is_some() {
        cfg.cpu_latency_us = a.cpu_latency_us;
    }
    if a.tls || !a.tls_key.is_empty() {
        let mode = if a.tls {
            Some(a.tls_treq.as_deref().unwrap_or("required"))
        } else {
            None
        };
        cfg.tls = nvmf_controller::config::parse_tls(mode, &a.tls_key, a.tls_compat).map_err(
            |(f, m)| {
                let flag = if f == "tls" {
                    "tls-treq".to_string()
                } else {
                    f.replace('_', "-")
                };
                anyhow::anyhow!("--{flag}: {m}")
            },
        )?;
        if let Some(t) = cfg.tls.as_mut() {
            for p in &a.tls_port {
                let addr: TransportAddr = p
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--tls-port {p}: {e}"))?;
                if !cfg.listen.contains(&addr) {
                    bail!("--tls-port {p}: not one of the --listen addresses");
                }
                t.ports.push(addr);
            }
        }
    }
    cfg.validate("command line")?;
    Ok(())
}

/// Parses a size given on the command line; `what` names the flag for the error.
fn size_arg(v: &str, what: impl FnOnce() -> String) -> anyhow::Result<u64> {
    parse_size(v).map_err(anyhow::Error::msg).with_context(what)
}

/// `--referral ADDR[:PORT]`: an IPv4 address, `[IPv6]`, either with an
/// optional port (default 8009, the discovery port).
fn parse_referral(s: &str) -> anyhow::Result<TransportAddr> {
    // (TransportAddr's own parser defaults to 4420, the I/O port.)
    if let Ok(socket) = s.parse::<std::net::SocketAddr>() {
        return Ok(TransportAddr::tcp(socket));
    }
    TransportAddr::from_parts(s, &nvmf_transport::addr::DISCOVERY_PORT.to_string())
        .map_err(|e| anyhow::anyhow!("--referral {s}: {e} (expected ADDR[:PORT])"))
}

fn parse_addrs(v: &[String], flag: &str) -> anyhow::Result<Vec<TransportAddr>> {
    v.iter()
        .map(|s| {
            s.parse::<TransportAddr>()
                .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
        })
        .collect()
}

fn print_banner(target: &Target, cfg: &TargetConfig) {
    for s in &cfg.subsystems {
        for n in &s.namespaces {
            let what = match &n.backend {
                BackendSpec::Memory { .. } => format!(
                    "{} (VOLATILE: data is lost when the target stops)",
                    n.backend
                ),
                BackendSpec::Null { .. } => {
                    format!("{} (reads return zeroes, writes are dropped)", n.backend)
                }
                b => b.to_string(),
            };
            outln!(
                "nvmf target: {} namespace {}: {what}, {}-byte blocks",
                s.nqn,
                n.nsid,
                n.block_size
            );
        }
    }
    if let Some(us) = target.cpu_latency_us() {
        outln!(
            "nvmf target: CPU wake-up latency held at {us} µs or less while the target runs ({}; system-wide)",
            nvmf_controller::cpu_latency::CPU_DMA_LATENCY
        );
    }
    for p in target.ports() {
        let t = p.kind.name();
        for s in &cfg.subsystems {
            outln!(
                "nvmf target: listening on {} ({t}), subsystem {}",
                p.socket,
                s.nqn
            );
            outln!(
                "  connect with the Linux kernel host:  nvme connect -t {t} -a {} -s {} -n {}",
                p.traddr(),
                p.trsvcid(),
                s.nqn
            );
            // nvmf-rs's own host speaks NVMe/TCP only so far.
            if p.kind == nvmf_transport::addr::TransportKind::Tcp {
                outln!(
                    "  connect with nvmf-rs:                nvmf connect -t tcp -a {} -s {} -n {}",
                    p.traddr(),
                    p.trsvcid(),
                    s.nqn
                );
            }
        }
    }
    for b in target.bound() {
        if !target.ports().contains(&b) {
            outln!(
                "nvmf target: discovery service on {}:  nvme discover -t {} -a {} -s {}",
                b.socket,
                b.kind.name(),
                b.traddr(),
                b.trsvcid()
            );
        }
    }
    if let Some(m) = target.metrics_addr() {
        outln!("nvmf target: metrics on http://{m}/metrics  (nvmf stats --metrics {m})");
    }
}

/// Runs the target until SIGINT or SIGTERM.
pub fn run(args: TargetArgs, matches: Option<&ArgMatches>) -> anyhow::Result<()> {
    let (cfg, from_file) = build_config(&args, matches)?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let target = Arc::new(Target::bind(&cfg).await?);
        for s in &cfg.subsystems {
            if s.namespaces.iter().any(|n| matches!(n.backend, BackendSpec::Memory { .. })) {
                warn!(subnqn = %s.nqn, "memory namespaces are volatile: their data is lost when the target stops");
            }
        }
        print_banner(&target, &cfg);
        let server = tokio::spawn(target.clone().serve());
        let control = match &args.control_socket {
            Some(p) => {
                let l = nvmf_controller::control::bind(p)
                    .with_context(|| format!("--control-socket {}", p.display()))?;
                outln!("nvmf target: control socket {}  (nvmf ana-state --control-socket {} --port ADDR:PORT --group N --state STATE)", p.display(), p.display());
                Some(tokio::spawn(nvmf_controller::control::serve(target.registry().clone(), l)))
            }
            None => None,
        };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => { info!("interrupted; stopping"); break; }
                _ = term.recv() => { info!("SIGTERM; stopping"); break; }
                _ = hup.recv() => {
                    let Some(path) = args.config.as_ref().or(args.import_nvmetcli.as_ref()).filter(|_| from_file) else {
                        warn!("SIGHUP ignored: the target was not started with --config or --import-nvmetcli");
                        continue;
                    };
                    let Some(loaded) = file_config(&args) else { continue };
                    match loaded.and_then(|c| target.reload(&c).map_err(anyhow::Error::from)) {
                        Ok(s) => info!("configuration reloaded from {}: {s}", path.display()),
                        Err(e) => error!("reload of {} failed, keeping the running configuration: {e:#}", path.display()),
                    }
                }
            }
        }
        server.abort();
        if let Some(c) = control {
            c.abort();
            if let Some(p) = &args.control_socket {
                let _ = std::fs::remove_file(p);
            }
        }
        // Make file namespaces durable before exiting.
        for s in target.registry().subsystems() {
            for ns in s.namespaces().values() {
                let _ = ns.backend.flush();
            }
        }
        Ok(())
    })
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    match s {
        "512" => Ok(512),
        "4096" => Ok(4096),
        _ => Err(format!(
            "'{s}' is not a supported block size: use 512 or 4096"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: TargetArgs,
    }

    fn quick(args: &[&str]) -> anyhow::Result<TargetConfig> {
        let t = T::try_parse_from(std::iter::once("target").chain(args.iter().copied()))?;
        Ok(build_config(&t.a, None)?.0)
    }

    #[test]
    fn referral_flags_default_to_the_discovery_port() {
        let c = quick(&[
            "--memory",
            "1M",
            "--referral",
            "10.0.0.2",
            "--referral",
            "[::1]:4430",
            "--referral",
            "10.0.0.2:8009",
        ])
        .unwrap();
        let r: Vec<String> = c.referrals.iter().map(|a| a.to_string()).collect();
        assert_eq!(r, ["10.0.0.2:8009", "[::1]:4430"]);
        assert!(quick(&["--memory", "1M", "--referral", "no-such-host"]).is_err());
    }

    #[test]
    fn ana_flags_build_the_config() {
        let c = quick(&[
            "--listen",
            "127.0.0.1:4420",
            "--listen",
            "127.0.0.1:4421",
            "--memory",
            "1M",
            "--memory",
            "1M",
            "--ana-group",
            "2=7",
            "--ana-state",
            "127.0.0.1:4421=7:inaccessible",
            "--cntlid-range",
            "100-199",
        ])
        .unwrap();
        let s = &c.subsystems[0];
        assert_eq!((s.cntlid_min, s.cntlid_max), (100, 199));
        assert_eq!(
            (s.namespaces[0].ana_group, s.namespaces[1].ana_group),
            (1, 7)
        );
        assert_eq!(c.ana_states.len(), 1);
        assert_eq!(
            c.ana_states[0].state,
            nvmf_controller::ana::AnaState::Inaccessible
        );
        for (bad, why) in [
            (vec!["--memory", "1M", "--ana-group", "3=2"], "not the NSID"),
            (
                vec!["--memory", "1M", "--ana-group", "1=200"],
                "between 1 and 128",
            ),
            (vec!["--memory", "1M", "--cntlid-range", "9"], "MIN-MAX"),
            (
                vec!["--memory", "1M", "--cntlid-range", "9-3"],
                "cntlid_min",
            ),
            (
                vec![
                    "--memory",
                    "1M",
                    "--ana-state",
                    "127.0.0.1:4499=1:optimized",
                ],
                "not one of the listen addresses",
            ),
        ] {
            let e = format!("{:#}", quick(&bad).unwrap_err());
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
