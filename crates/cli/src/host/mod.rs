//! Host subcommands, with nvme-cli's verbs and flags. `discover` and `io-check`
//! talk to the target directly; `connect` hands the association to the host
//! daemon (`nvmf host-daemon`), which keeps it after the command returns, and the
//! other verbs go through that daemon.

mod daemon;
mod disco;
mod fmt;
mod iocheck;

use crate::stdout::{emit, outln};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use nvmf_host::{ConnectOptions, TransportAddr};
use nvmf_proto::auth::DhchapSecret;
use nvmf_proto::identify::{IdentifyController, IdentifyNamespace};
use nvmf_proto::log::SmartLog;
use serde_json::{json, Value};

use self::fmt::unhex;

/// Output format (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Normal,
    /// JSON, with nvme-cli's key names.
    Json,
}

/// `-o json|normal`.
#[derive(Debug, Clone, Args)]
pub struct Out {
    /// Output format: normal or json.
    #[arg(short = 'o', long = "output-format", value_enum, default_value_t = OutputFormat::Normal)]
    pub output: OutputFormat,
}

/// Where a target is (`-t -a -s`).
#[derive(Debug, Clone, Args)]
pub struct Fabric {
    /// Transport type: tcp, or rdma (NVMe/RDMA: needs rdma-core's libibverbs
    /// and librdmacm, and an RDMA device that reaches the address).
    #[arg(short = 't', long = "transport", default_value = "tcp")]
    pub transport: String,
    /// Transport address (IPv4 or IPv6).
    #[arg(short = 'a', long = "traddr")]
    pub traddr: String,
    /// Transport service ID (the TCP or RDMA CM port).
    #[arg(short = 's', long = "trsvcid")]
    pub trsvcid: Option<String>,
    /// Host NQN (default /etc/nvme/hostnqn or a generated one).
    #[arg(short = 'q', long = "hostnqn")]
    pub hostnqn: Option<String>,
    /// Host ID, a UUID (default /etc/nvme/hostid or the one in the host NQN).
    #[arg(short = 'I', long = "hostid")]
    pub hostid: Option<String>,
    /// Ask for the NVMe/TCP header digest.
    #[arg(short = 'g', long = "hdr-digest")]
    pub hdr_digest: bool,
    /// Ask for the NVMe/TCP data digest.
    #[arg(short = 'G', long = "data-digest")]
    pub data_digest: bool,
    /// The host's DH-HMAC-CHAP secret (`DHHC-1:hh:…:`, as `nvme gen-dhchap-key`
    /// prints it), for a controller that requires authentication.
    #[arg(short = 'S', long = "dhchap-secret", value_name = "KEY")]
    pub dhchap_secret: Option<String>,
    /// The controller's DH-HMAC-CHAP secret: the controller must prove it
    /// knows it (bidirectional authentication).
    #[arg(short = 'C', long = "dhchap-ctrl-secret", value_name = "KEY")]
    pub dhchap_ctrl_secret: Option<String>,
    /// Run every queue over TLS 1.3 with a pre-shared key (needs --tls-key).
    #[arg(long)]
    pub tls: bool,
    /// The configured TLS PSK (`NVMeTLSkey-1:01:…:`, as `nvme gen-tls-key`
    /// prints it); implies --tls.
    #[arg(long = "tls-key", value_name = "KEY")]
    pub tls_key: Option<String>,
    /// Derive the TLS PSK as libnvme <= 1.15 does (nvme-cli 2.13, Debian 13):
    /// for a kernel target whose key was inserted with such an nvme-cli.
    #[arg(long = "tls-compat")]
    pub tls_compat: bool,
}

impl Fabric {
    fn addr(&self, default_port: u16) -> anyhow::Result<TransportAddr> {
        let rdma = match self.transport.to_ascii_lowercase().as_str() {
            "tcp" => false,
            "rdma" => true,
            t => bail!("transport '{t}' is not supported; use -t tcp or -t rdma"),
        };
        if rdma && (self.hdr_digest || self.data_digest) {
            bail!("-g/-G ask for NVMe/TCP digests; NVMe/RDMA has none: drop them with -t rdma");
        }
        let port = self
            .trsvcid
            .clone()
            .unwrap_or_else(|| default_port.to_string());
        let a = TransportAddr::from_parts(&self.traddr, &port).map_err(|e| anyhow!(e))?;
        Ok(if rdma {
            TransportAddr::rdma(a.socket)
        } else {
            a
        })
    }

    fn options(&self, subnqn: &str, default_port: u16) -> anyhow::Result<ConnectOptions> {
        let mut o = ConnectOptions::new(self.addr(default_port)?, subnqn);
        if let Some(h) = &self.hostnqn {
            nvmf_proto::fabrics::validate_nqn(h).map_err(|e| anyhow!("host NQN '{h}': {e}"))?;
            o.hostnqn = h.clone();
        }
        if let Some(h) = &self.hostid {
            o.hostid = parse_uuid(h)?;
        }
        o.hdr_digest = self.hdr_digest;
        o.data_digest = self.data_digest;
        o.dhchap_secret = parse_secret(self.dhchap_secret.as_deref(), "--dhchap-secret")?;
        o.dhchap_ctrl_secret =
            parse_secret(self.dhchap_ctrl_secret.as_deref(), "--dhchap-ctrl-secret")?;
        if o.dhchap_ctrl_secret.is_some() && o.dhchap_secret.is_none() {
            bail!("--dhchap-ctrl-secret needs --dhchap-secret too (the host authenticates first)");
        }
        o.tls_key = parse_tls_key(self.tls_key.as_deref(), "--tls-key")?;
        if self.tls && o.tls_key.is_none() {
            bail!("--tls needs --tls-key NVMeTLSkey-1:…: (this host has no kernel keyring to look the PSK up in)");
        }
        if self.tls_compat {
            o.tls_derivation = nvmf_proto::tls::Derivation::Compat;
        }
        Ok(o)
    }
}

/// Parses an `NVMeTLSkey-1` configured PSK given as `flag` (the message never
/// shows the key).
pub(crate) fn parse_tls_key(
    s: Option<&str>,
    flag: &str,
) -> anyhow::Result<Option<nvmf_proto::tls::ConfiguredPsk>> {
    s.map(|s| nvmf_proto::tls::ConfiguredPsk::parse(s).map_err(|e| anyhow!("{flag}: {e}")))
        .transpose()
}

/// Parses a `DHHC-1` secret given as `flag` (the message never shows the key).
pub(crate) fn parse_secret(s: Option<&str>, flag: &str) -> anyhow::Result<Option<DhchapSecret>> {
    s.map(|s| {
        DhchapSecret::parse(s).map_err(|e| {
            anyhow!(
                "{flag}: {e} (give the key as `nvme gen-dhchap-key` prints it: DHHC-1:hh:base64:)"
            )
        })
    })
    .transpose()
}

fn parse_uuid(s: &str) -> anyhow::Result<[u8; 16]> {
    let h: String = s.chars().filter(|c| *c != '-').collect();
    unhex(&h).and_then(|v| v.try_into().ok()).ok_or_else(|| {
        anyhow!("host ID '{s}' is not a UUID (like 1b4e28ba-2fa1-11d2-883f-0016d3cca427)")
    })
}

/// Queue and timeout flags of `connect`.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectTuning {
    /// Number of I/O queues (default: one per CPU, at most 8).
    #[arg(short = 'i', long = "nr-io-queues")]
    pub nr_io_queues: Option<u16>,
    /// I/O queue size.
    #[arg(short = 'Q', long = "queue-size")]
    pub queue_size: Option<u16>,
    /// Keep alive timeout in seconds.
    #[arg(short = 'k', long = "keep-alive-tmo")]
    pub keep_alive_tmo: Option<u32>,
    /// Controller loss timeout in seconds (-1: reconnect forever).
    #[arg(short = 'l', long = "ctrl-loss-tmo", allow_negative_numbers = true)]
    pub ctrl_loss_tmo: Option<i64>,
    /// Seconds between reconnect attempts.
    #[arg(short = 'c', long = "reconnect-delay")]
    pub reconnect_delay: Option<u64>,
    /// Ask the controller to disable SQ flow control (Connect CATTR bit 2):
    /// on NVMe/TCP a successful read then completes with its last data PDU,
    /// one PDU fewer per read.
    #[arg(short = 'D', long = "disable-sqflow")]
    pub disable_sqflow: bool,
    /// Also expose each namespace as a local block device (needs root):
    /// /dev/ublkbN through the kernel's ublk driver where it has one (Linux
    /// 6.0+, ublk_drv), else /dev/nbdN through NBD. `nvmf list` names the device.
    #[arg(long = "block")]
    pub block: bool,
    /// The kernel front end for --block: auto (ublk, else NBD), ublk or nbd.
    /// Implies --block.
    #[arg(long = "block-kind", value_parser = ["auto", "ublk", "nbd"])]
    pub block_kind: Option<String>,
    /// How the block devices spread I/O over the paths (controllers) of
    /// the subsystem: round-robin or queue-depth (nvme-cli's subsystem
    /// iopolicy). Applies to every device of the subsystem; default
    /// round-robin. Connecting --block to another address of a subsystem
    /// already exposed adds a path to its devices.
    #[arg(long = "iopolicy", value_parser = ["round-robin", "queue-depth"])]
    pub iopolicy: Option<String>,
}

/// Host-side commands.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Read the discovery log of a discovery controller (default port 8009).
    Discover {
        #[command(flatten)]
        fabric: Fabric,
        /// Persistent: print the log, then the host daemon keeps the
        /// discovery controller connected and, on every Discovery Log Change
        /// notice, re-reads the log and logs what changed (until
        /// `disconnect-all`).
        #[arg(short = 'p', long = "persistent")]
        persistent: bool,
        /// With -p: hold the discovery controller in this process instead
        /// (until SIGINT/SIGTERM) and print every change.
        #[arg(long = "foreground", requires = "persistent")]
        foreground: bool,
        /// Keep alive timeout of the persistent discovery controller, in
        /// seconds (default 30).
        #[arg(short = 'k', long = "keep-alive-tmo")]
        keep_alive_tmo: Option<u32>,
        #[command(flatten)]
        out: Out,
    },
    /// Connect to a subsystem; the association is held by the host daemon.
    Connect {
        #[command(flatten)]
        fabric: Fabric,
        /// Subsystem NQN.
        #[arg(short = 'n', long = "nqn")]
        nqn: String,
        #[command(flatten)]
        tuning: ConnectTuning,
        #[command(flatten)]
        out: Out,
    },
    /// Discover, then connect to every NVM subsystem in the discovery log,
    /// following referrals to other discovery services (at most 8 deep, each
    /// service once).
    ConnectAll {
        #[command(flatten)]
        fabric: Fabric,
        #[command(flatten)]
        tuning: ConnectTuning,
        /// Persistent: after connecting, the host daemon keeps the discovery
        /// controller connected and connect-alls again on every Discovery Log
        /// Change notice, so new subsystems are connected (until
        /// `disconnect-all`).
        #[arg(short = 'p', long = "persistent")]
        persistent: bool,
        /// With -p: hold the discovery controller in this process instead
        /// (until SIGINT/SIGTERM) and print the devices it connects.
        #[arg(long = "foreground", requires = "persistent")]
        foreground: bool,
        #[command(flatten)]
        out: Out,
    },
    /// List the controllers and namespaces the host daemon holds.
    List {
        #[command(flatten)]
        out: Out,
    },
    /// Identify Controller.
    IdCtrl {
        /// Device (nvme0).
        dev: String,
        #[command(flatten)]
        out: Out,
    },
    /// Identify Namespace.
    IdNs {
        /// Device (nvme0 or nvme0n1).
        dev: String,
        /// Namespace ID (default: from the device name, else 1).
        #[arg(short = 'n', long = "namespace-id")]
        nsid: Option<u32>,
        #[command(flatten)]
        out: Out,
    },
    /// Get Log Page (raw bytes, hex dump or JSON array).
    GetLog {
        /// Device (nvme0).
        dev: String,
        /// Log page identifier.
        #[arg(short = 'i', long = "log-id")]
        log_id: u8,
        /// Bytes to read.
        #[arg(short = 'l', long = "log-len")]
        log_len: u32,
        /// Namespace ID.
        #[arg(short = 'n', long = "namespace-id")]
        nsid: Option<u32>,
        #[command(flatten)]
        out: Out,
    },
    /// SMART / Health Information log.
    SmartLog {
        /// Device (nvme0).
        dev: String,
        #[command(flatten)]
        out: Out,
    },
    /// Read blocks to a file or stdout.
    Read(RwArgs),
    /// Write blocks from a file or stdin.
    Write(RwArgs),
    /// Compare blocks with a file or stdin (the controller compares; a
    /// mismatch is an error with status Compare Failure).
    Compare(RwArgs),
    /// Verify blocks: the controller reads them and reports whether it could
    /// (no data moves).
    Verify(VerifyArgs),
    /// Copy source ranges (format 0) to consecutive blocks from --sdlba.
    Copy(CopyArgs),
    /// Write Zeroes: the blocks read as zeroes afterwards; no data moves.
    WriteZeroes(WriteZeroesArgs),
    /// Dataset Management: deallocate (--ad) ranges, or pass access hints.
    Dsm(DsmArgs),
    /// Disconnect controllers by subsystem NQN or device.
    Disconnect {
        /// Subsystem NQN: disconnect every controller of it.
        #[arg(short = 'n', long = "nqn")]
        nqn: Option<String>,
        /// Device (nvme0).
        #[arg(short = 'd', long = "device")]
        device: Option<String>,
        #[command(flatten)]
        out: Out,
    },
    /// Disconnect every controller the host daemon holds.
    DisconnectAll {
        #[command(flatten)]
        out: Out,
    },
    /// Reservation Register (register, unregister, replace a key).
    ResvRegister {
        /// Namespace device (nvme0n1), or a controller with -n.
        dev: String,
        /// Namespace ID (default: from the device name).
        #[arg(short = 'n', long = "namespace-id")]
        nsid: Option<u32>,
        /// Current reservation key.
        #[arg(short = 'c', long = "crkey", value_parser = parse_key, default_value = "0")]
        crkey: u64,
        /// New reservation key.
        #[arg(short = 'k', long = "nrkey", value_parser = parse_key, default_value = "0")]
        nrkey: u64,
        /// Register action: 0 register, 1 unregister, 2 replace.
        #[arg(short = 'r', long = "rrega", default_value_t = 0)]
        rrega: u8,
        /// Change persist through power loss: 0 no change, 2 off, 3 on.
        #[arg(short = 'p', long = "cptpl", default_value_t = 0)]
        cptpl: u8,
        /// Ignore the existing key.
        #[arg(short = 'i', long = "iekey")]
        iekey: bool,
        #[command(flatten)]
        out: Out,
    },
    /// Reservation Acquire (acquire, preempt, preempt and abort).
    ResvAcquire {
        /// Namespace device (nvme0n1), or a controller with -n.
        dev: String,
        /// Namespace ID (default: from the device name).
        #[arg(short = 'n', long = "namespace-id")]
        nsid: Option<u32>,
        /// Current reservation key.
        #[arg(short = 'c', long = "crkey", value_parser = parse_key, default_value = "0")]
        crkey: u64,
        /// Preempt reservation key.
        #[arg(short = 'p', long = "prkey", value_parser = parse_key, default_value = "0")]
        prkey: u64,
        /// Reservation type: 1 write exclusive, 2 exclusive access, 3/4 the same
        /// for registrants only, 5/6 for all registrants.
        #[arg(short = 't', long = "rtype", default_value_t = 0)]
        rtype: u8,
        /// Acquire action: 0 acquire, 1 preempt, 2 preempt and abort.
        #[arg(short = 'a', long = "racqa", default_value_t = 0)]
        racqa: u8,
        /// Ignore the existing key (reserved since NVMe 1.3; the target refuses it).
        #[arg(short = 'i', long = "iekey")]
        iekey: bool,
        #[command(flatten)]
        out: Out,
    },
    /// Reservation Release (release, clear).
    ResvRelease {
        /// Namespace device (nvme0n1), or a controller with -n.
        dev: String,
        /// Namespace ID (default: from the device name).
        #[arg(short = 'n', long = "namespace-id")]
        nsid: Option<u32>,
        /// Current reservation key.
        #[arg(short = 'c', long = "crkey", value_parser = parse_key, default_value = "0")]
        crkey: u64,
        /// Reservation type (as held).
        #[arg(short = 't', long = "rtype", default_value_t = 0)]
        rtype: u8,
        /// Release action: 0 release, 1 clear.
        #[arg(short = 'a', long = "rrela", default_value_t = 0)]
        rrela: u8,
        /// Ignore the existing key (reserved since NVMe 1.3; the target refuses it).
        #[arg(short = 'i', long = "iekey")]
        iekey: bool,
        #[command(flatten)]
        out: Out,
    },
    /// Reservation Report.
    ResvReport {
        /// Namespace device (nvme0n1), or a controller with -n.
        dev: String,
        /// Namespace ID (default: from the device name).
        #[arg(short = 'n', long = "namespace-id")]
        nsid: Option<u32>,
        /// Dwords to read, 0's based (default: 1023, 4 KiB).
        #[arg(short = 'd', long = "numd")]
        numd: Option<u32>,
        /// Extended data structure (128-bit host IDs; NVMe-oF needs it).
        #[arg(short = 'e', long = "eds")]
        eds: bool,
        #[command(flatten)]
        out: Out,
    },
    /// Connect directly (no daemon), write a pattern over all I/O queues, read it back, compare.
    IoCheck(iocheck::IoCheckArgs),
    /// The host daemon (started by `nvmf connect`).
    #[command(hide = true)]
    HostDaemon {
        /// Control socket (default: see docs/host.md).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Stop the running daemon.
        #[arg(long)]
        stop: bool,
    },
}

/// Flags of `read` and `write`, as nvme-cli.
#[derive(Debug, Args)]
pub struct RwArgs {
    /// Namespace device (nvme0n1).
    dev: String,
    /// Starting LBA.
    #[arg(short = 's', long = "start-block", default_value_t = 0)]
    start_block: u64,
    /// Number of blocks, 0's based (0 = one block).
    #[arg(short = 'c', long = "block-count", default_value_t = 0)]
    block_count: u32,
    /// Data size in bytes (at least (block-count + 1) × block size).
    #[arg(short = 'z', long = "data-size")]
    data_size: Option<u64>,
    /// Data file (default stdin for write, stdout for read).
    #[arg(short = 'd', long = "data")]
    data: Option<PathBuf>,
    /// Force unit access (write).
    #[arg(short = 'f', long = "force-unit-access")]
    fua: bool,
    #[command(flatten)]
    out: Out,
}

/// Flags of `verify`, as nvme-cli.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Namespace device (nvme0n1).
    dev: String,
    /// Namespace ID (default: the device's).
    #[arg(short = 'n', long = "namespace-id")]
    nsid: Option<u32>,
    /// Starting LBA.
    #[arg(short = 's', long = "start-block", default_value_t = 0)]
    start_block: u64,
    /// Number of blocks, 0's based (0 = one block).
    #[arg(short = 'c', long = "block-count", default_value_t = 0)]
    block_count: u16,
    #[command(flatten)]
    out: Out,
}

/// Flags of `copy`, as nvme-cli (Source Range Entries format 0 only).
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Namespace device (nvme0n1).
    dev: String,
    /// Namespace ID (default: the device's).
    #[arg(short = 'n', long = "namespace-id")]
    nsid: Option<u32>,
    /// Destination starting LBA.
    #[arg(short = 'd', long = "sdlba", default_value_t = 0)]
    sdlba: u64,
    /// Comma-separated starting LBAs of the source ranges.
    #[arg(short = 's', long = "slbs", value_delimiter = ',', required = true)]
    slbs: Vec<u64>,
    /// Comma-separated block counts of the source ranges, 0's based.
    #[arg(short = 'b', long = "blocks", value_delimiter = ',', required = true)]
    blocks: Vec<u16>,
    /// Force unit access.
    #[arg(short = 'f', long = "force-unit-access")]
    fua: bool,
    /// Descriptor format (only 0 is supported).
    #[arg(short = 'F', long = "format", default_value_t = 0)]
    format: u8,
    #[command(flatten)]
    out: Out,
}

/// Flags of `write-zeroes`, as nvme-cli.
#[derive(Debug, Args)]
pub struct WriteZeroesArgs {
    /// Namespace device (nvme0n1).
    dev: String,
    /// Namespace ID (default: the device's).
    #[arg(short = 'n', long = "namespace-id")]
    nsid: Option<u32>,
    /// Starting LBA.
    #[arg(short = 's', long = "start-block", default_value_t = 0)]
    start_block: u64,
    /// Number of blocks, 0's based (0 = one block).
    #[arg(short = 'c', long = "block-count", default_value_t = 0)]
    block_count: u16,
    /// Let the controller deallocate the blocks instead of writing zeroes (DEAC).
    #[arg(short = 'd', long = "deac")]
    deac: bool,
    /// Force unit access.
    #[arg(short = 'f', long = "force-unit-access")]
    fua: bool,
    #[command(flatten)]
    out: Out,
}

/// Flags of `dsm`, as nvme-cli: one range per entry of --slbs and --blocks.
#[derive(Debug, Args)]
pub struct DsmArgs {
    /// Namespace device (nvme0n1).
    dev: String,
    /// Namespace ID (default: the device's).
    #[arg(short = 'n', long = "namespace-id")]
    nsid: Option<u32>,
    /// Comma-separated context attributes, one per range (default 0).
    #[arg(short = 'a', long = "ctx-attrs", value_delimiter = ',')]
    ctx_attrs: Vec<u32>,
    /// Comma-separated block counts of the ranges (1-based, as the range field).
    #[arg(short = 'b', long = "blocks", value_delimiter = ',', required = true)]
    blocks: Vec<u32>,
    /// Comma-separated starting LBAs of the ranges.
    #[arg(short = 's', long = "slbs", value_delimiter = ',', required = true)]
    slbs: Vec<u64>,
    /// Attribute Deallocate: the blocks are trimmed (they read as zeroes here).
    #[arg(short = 'd', long = "ad")]
    ad: bool,
    /// Attribute Integral Dataset for Write (a hint).
    #[arg(short = 'w', long = "idw")]
    idw: bool,
    /// Attribute Integral Dataset for Read (a hint).
    #[arg(short = 'r', long = "idr")]
    idr: bool,
    /// The whole CDW11 (attributes), instead of --ad/--idw/--idr.
    #[arg(short = 'c', long = "cdw11", value_parser = parse_u32, conflicts_with_all = ["ad", "idw", "idr"])]
    cdw11: Option<u32>,
    #[command(flatten)]
    out: Out,
}

fn parse_u32(s: &str) -> Result<u32, String> {
    hex_or_decimal(s)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("'{s}' is not a 32-bit value (decimal or 0x…)"))
}

/// `s` as a decimal number or, with a 0x prefix, a hexadecimal one.
fn hex_or_decimal(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `copy` and `dsm` take one block count (--blocks) per starting LBA (--slbs).
fn one_count_per_range(slbs: usize, blocks: usize) -> anyhow::Result<()> {
    if slbs != blocks {
        bail!("--slbs has {slbs} entries and --blocks {blocks}; give one block count per range");
    }
    Ok(())
}

fn write_zeroes(a: WriteZeroesArgs) -> anyhow::Result<()> {
    let mut req = json!({"op": "write-zeroes", "dev": a.dev, "slba": a.start_block,
        "nblocks": u64::from(a.block_count) + 1, "deac": a.deac, "fua": a.fua});
    if let Some(n) = a.nsid {
        req["nsid"] = json!(n);
    }
    daemon::request(&req)?;
    success(&a.out, "write-zeroes")
}

fn dsm(a: DsmArgs) -> anyhow::Result<()> {
    use nvmf_proto::sqe::dsm_attr;
    one_count_per_range(a.slbs.len(), a.blocks.len())?;
    if !a.ctx_attrs.is_empty() && a.ctx_attrs.len() != a.slbs.len() {
        bail!(
            "--ctx-attrs has {} entries for {} ranges; give one per range or none",
            a.ctx_attrs.len(),
            a.slbs.len()
        );
    }
    let attributes = a.cdw11.unwrap_or(
        if a.ad { dsm_attr::AD } else { 0 }
            | if a.idw { dsm_attr::IDW } else { 0 }
            | if a.idr { dsm_attr::IDR } else { 0 },
    );
    let ranges: Vec<[u64; 3]> = (0..a.slbs.len())
        .map(|i| {
            [
                u64::from(a.ctx_attrs.get(i).copied().unwrap_or(0)),
                u64::from(a.blocks[i]),
                a.slbs[i],
            ]
        })
        .collect();
    let mut req = json!({"op": "dsm", "dev": a.dev, "ranges": ranges, "attributes": attributes});
    if let Some(n) = a.nsid {
        req["nsid"] = json!(n);
    }
    daemon::request(&req)?;
    success(&a.out, "dsm")
}

fn success(out: &Out, verb: &str) -> anyhow::Result<()> {
    match out.output {
        OutputFormat::Json => print_json(&json!({"result": "success"})),
        OutputFormat::Normal => {
            eprintln!("{verb}: Success");
            Ok(())
        }
    }
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let mut req = json!({"op": "verify", "dev": a.dev, "slba": a.start_block,
        "nblocks": u64::from(a.block_count) + 1});
    if let Some(n) = a.nsid {
        req["nsid"] = json!(n);
    }
    daemon::request(&req)?;
    success(&a.out, "verify")
}

fn copy(a: CopyArgs) -> anyhow::Result<()> {
    if a.format != 0 {
        bail!(
            "--format {}: only descriptor format 0 is supported",
            a.format
        );
    }
    one_count_per_range(a.slbs.len(), a.blocks.len())?;
    let ranges: Vec<[u64; 2]> = a
        .slbs
        .iter()
        .zip(&a.blocks)
        .map(|(&s, &b)| [s, u64::from(b) + 1])
        .collect();
    let mut req =
        json!({"op": "copy", "dev": a.dev, "sdlba": a.sdlba, "ranges": ranges, "fua": a.fua});
    if let Some(n) = a.nsid {
        req["nsid"] = json!(n);
    }
    daemon::request(&req)?;
    success(&a.out, "copy")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    emit(&(serde_json::to_string_pretty(v)? + "\n"));
    Ok(())
}

fn connect_req(o: &ConnectOptions, t: &ConnectTuning) -> Value {
    json!({
        "op": "connect",
        "trtype": o.addr.kind.name(),
        "traddr": o.addr.traddr(),
        "trsvcid": o.addr.trsvcid(),
        "subnqn": o.subnqn,
        "hostnqn": o.hostnqn,
        "hostid": fmt::hex(&o.hostid),
        "hdr_digest": o.hdr_digest,
        "data_digest": o.data_digest,
        "dhchap_secret": o.dhchap_secret.as_ref().map(|k| k.to_dhhc1().to_string()),
        "dhchap_ctrl_secret": o.dhchap_ctrl_secret.as_ref().map(|k| k.to_dhhc1().to_string()),
        "tls_key": o.tls_key.as_ref().map(|k| k.to_interchange().to_string()),
        "tls_compat": o.tls_derivation == nvmf_proto::tls::Derivation::Compat,
        "nr_io_queues": t.nr_io_queues,
        "queue_size": t.queue_size,
        "kato_ms": t.keep_alive_tmo.map(|k| k.saturating_mul(1000)),
        "ctrl_loss_tmo": t.ctrl_loss_tmo,
        "reconnect_delay": t.reconnect_delay,
        "disable_sqflow": t.disable_sqflow,
        "block": t.block || t.block_kind.is_some(),
        "block_kind": t.block_kind.as_deref().unwrap_or("auto"),
        "iopolicy": t.iopolicy,
    })
}

/// Hands a persistent discovery controller for `d` (its address, host NQN,
/// KATO) to the host daemon; `connect`: the connect request template of
/// `connect-all -p`. Says so on stderr (stdout carries the log or devices).
fn hand_to_daemon(d: &ConnectOptions, connect: Option<Value>) -> anyhow::Result<()> {
    let mut req = connect_req(d, &ConnectTuning::default());
    req["op"] = json!("discover-persistent");
    req["kato_ms"] = json!(d.kato_ms);
    req["connect"] = connect.unwrap_or(Value::Null);
    daemon::ensure_running()?;
    let r = daemon::request(&req)?;
    eprintln!(
        "nvmf: the host daemon {} a persistent discovery controller at {} (nvmf disconnect-all stops it)",
        if r["already"].as_bool() == Some(true) {
            "already holds"
        } else {
            "now holds"
        },
        d.addr
    );
    Ok(())
}

/// Runs a host command.
pub fn run(cmd: HostCommand) -> anyhow::Result<()> {
    match cmd {
        HostCommand::Discover {
            fabric,
            persistent,
            foreground,
            keep_alive_tmo,
            out,
        } => {
            let mut o = fabric.options(
                nvmf_proto::fabrics::DISCOVERY_NQN,
                nvmf_transport::addr::DISCOVERY_PORT,
            )?;
            o.kato_ms = keep_alive_tmo.unwrap_or(0).saturating_mul(1000);
            if foreground {
                return disco::persistent(&runtime()?, &o, None, out.output);
            }
            let log = runtime()?.block_on(nvmf_host::discover_with(&o))?;
            match out.output {
                OutputFormat::Json => print_json(&fmt::discovery_json(&log))?,
                OutputFormat::Normal => emit(&fmt::discovery_text(&log)),
            }
            if persistent {
                hand_to_daemon(&o, None)?;
            }
            Ok(())
        }
        HostCommand::Connect {
            fabric,
            nqn,
            tuning,
            out,
        } => {
            nvmf_proto::fabrics::validate_nqn(&nqn)
                .map_err(|e| anyhow!("subsystem NQN '{nqn}': {e}"))?;
            let o = fabric.options(&nqn, nvmf_transport::addr::DEFAULT_PORT)?;
            daemon::ensure_running()?;
            let r = daemon::request(&connect_req(&o, &tuning))?;
            match out.output {
                OutputFormat::Json => print_json(&json!({"device": r["name"]}))?,
                OutputFormat::Normal => {
                    if r["already"].as_bool() == Some(true) {
                        outln!(
                            "already connected: device: {}",
                            r["name"].as_str().unwrap_or("?")
                        );
                    } else {
                        outln!("device: {}", r["name"].as_str().unwrap_or("?"));
                    }
                }
            }
            Ok(())
        }
        HostCommand::ConnectAll {
            fabric,
            tuning,
            persistent,
            foreground,
            out,
        } => {
            let mut d = fabric.options(
                nvmf_proto::fabrics::DISCOVERY_NQN,
                nvmf_transport::addr::DISCOVERY_PORT,
            )?;
            if foreground {
                d.kato_ms = tuning.keep_alive_tmo.unwrap_or(0).saturating_mul(1000);
                return disco::persistent(&runtime()?, &d, Some(&tuning), out.output);
            }
            disco::connect_all(&runtime()?, &d, &tuning, out.output)?;
            if persistent {
                let mut t = d.clone();
                t.subnqn = String::new();
                let template = connect_req(&t, &tuning);
                d.kato_ms = tuning.keep_alive_tmo.unwrap_or(0).saturating_mul(1000);
                hand_to_daemon(&d, Some(template))?;
            }
            Ok(())
        }
        HostCommand::List { out } => list(out),
        HostCommand::IdCtrl { dev, out } => {
            let r = daemon::request(&json!({"op": "id-ctrl", "dev": dev}))?;
            let c = IdentifyController::decode(&data_of(&r)?);
            match out.output {
                OutputFormat::Json => print_json(&fmt::id_ctrl_json(&c)),
                OutputFormat::Normal => {
                    emit(&fmt::id_ctrl_text(&c));
                    Ok(())
                }
            }
        }
        HostCommand::IdNs { dev, nsid, out } => {
            let r = daemon::request(&json!({"op": "id-ns", "dev": dev, "nsid": nsid}))?;
            let n = IdentifyNamespace::decode(&data_of(&r)?);
            match out.output {
                OutputFormat::Json => print_json(&fmt::id_ns_json(&n)),
                OutputFormat::Normal => {
                    emit(&fmt::id_ns_text(r["nsid"].as_u64().unwrap_or(0) as u32, &n));
                    Ok(())
                }
            }
        }
        HostCommand::GetLog {
            dev,
            log_id,
            log_len,
            nsid,
            out,
        } => {
            let r = daemon::request(
                &json!({"op": "get-log", "dev": dev, "lid": log_id, "len": log_len, "nsid": nsid}),
            )?;
            let d = data_of(&r)?;
            match out.output {
                OutputFormat::Json => print_json(&json!({"log_id": log_id, "data": d})),
                OutputFormat::Normal => {
                    emit(&format!(
                        "Device:{dev} log-id:{log_id} namespace-id:{:#x}\n",
                        nsid.unwrap_or(0xffff_ffff)
                    ));
                    emit(&hexdump(&d));
                    Ok(())
                }
            }
        }
        HostCommand::SmartLog { dev, out } => {
            let r = daemon::request(&json!({"op": "get-log", "dev": dev, "lid": 2, "len": 512}))?;
            let l = SmartLog::decode(&data_of(&r)?);
            match out.output {
                OutputFormat::Json => print_json(&fmt::smart_json(&l)),
                OutputFormat::Normal => {
                    emit(&fmt::smart_text(&dev, &l));
                    Ok(())
                }
            }
        }
        HostCommand::Read(a) => rw(a, false),
        HostCommand::Write(a) => rw(a, true),
        HostCommand::Compare(a) => compare(a),
        HostCommand::Verify(a) => verify(a),
        HostCommand::Copy(a) => copy(a),
        HostCommand::WriteZeroes(a) => write_zeroes(a),
        HostCommand::Dsm(a) => dsm(a),
        HostCommand::Disconnect { nqn, device, out } => {
            let req = match (&nqn, &device) {
                (Some(n), None) => json!({"op": "disconnect", "subnqn": n}),
                (None, Some(d)) => json!({"op": "disconnect", "dev": d}),
                _ => bail!("give exactly one of -n NQN or -d DEVICE"),
            };
            if !daemon::running() {
                bail!("no controllers are connected (no nvmf host daemon is running)");
            }
            let r = daemon::request(&req)?;
            report_disconnect(&r, out, nqn.as_deref())
        }
        HostCommand::DisconnectAll { out } => {
            if !daemon::running() {
                return report_disconnect(&json!({"disconnected": []}), out, None);
            }
            let r = daemon::request(&json!({"op": "disconnect-all"}))?;
            report_disconnect(&r, out, None)
        }
        HostCommand::ResvRegister {
            dev,
            nsid,
            crkey,
            nrkey,
            rrega,
            cptpl,
            iekey,
            out,
        } => resv_simple(
            "resv-register",
            json!({"op": "resv-register", "dev": dev, "nsid": nsid, "crkey": crkey, "nrkey": nrkey,
                   "rrega": rrega, "cptpl": cptpl, "iekey": iekey}),
            out,
        ),
        HostCommand::ResvAcquire {
            dev,
            nsid,
            crkey,
            prkey,
            rtype,
            racqa,
            iekey,
            out,
        } => resv_simple(
            "resv-acquire",
            json!({"op": "resv-acquire", "dev": dev, "nsid": nsid, "crkey": crkey, "prkey": prkey,
                   "rtype": rtype, "racqa": racqa, "iekey": iekey}),
            out,
        ),
        HostCommand::ResvRelease {
            dev,
            nsid,
            crkey,
            rtype,
            rrela,
            iekey,
            out,
        } => resv_simple(
            "resv-release",
            json!({"op": "resv-release", "dev": dev, "nsid": nsid, "crkey": crkey,
                   "rtype": rtype, "rrela": rrela, "iekey": iekey}),
            out,
        ),
        HostCommand::ResvReport {
            dev,
            nsid,
            numd,
            eds,
            out,
        } => {
            let len = (u64::from(numd.unwrap_or(1023)) + 1) * 4;
            let r = daemon::request(
                &json!({"op": "resv-report", "dev": dev, "nsid": nsid, "len": len, "eds": eds}),
            )?;
            let st = nvmf_proto::resv::ReservationStatus::decode(&data_of(&r)?, eds)
                .ok_or_else(|| anyhow!("short reservation report"))?;
            match out.output {
                OutputFormat::Json => print_json(&fmt::resv_report_json(&st, eds)),
                OutputFormat::Normal => {
                    emit(&fmt::resv_report_text(&st, eds));
                    Ok(())
                }
            }
        }
        HostCommand::IoCheck(a) => iocheck::run(a, runtime()?),
        HostCommand::HostDaemon { socket, stop } => {
            if stop {
                if !daemon::running() {
                    outln!("no nvmf host daemon is running");
                    return Ok(());
                }
                daemon::request(&json!({"op": "stop"}))?;
                outln!("nvmf host daemon stopped");
                return Ok(());
            }
            let path = socket.unwrap_or_else(daemon::socket_path);
            runtime()?.block_on(daemon::serve(path))
        }
    }
}

/// Parses a reservation key: decimal or 0x-prefixed hexadecimal (as nvme-cli).
fn parse_key(s: &str) -> Result<u64, String> {
    hex_or_decimal(s).ok_or_else(|| format!("'{s}' is not a 64-bit key (decimal or 0x…)"))
}

/// Runs a reservation command that returns nothing; prints nvme-cli's line.
fn resv_simple(what: &str, req: Value, out: Out) -> anyhow::Result<()> {
    let nsid = req["nsid"].clone();
    daemon::request(&req)?;
    match out.output {
        OutputFormat::Json => print_json(&json!({"result": "success", "nsid": nsid})),
        OutputFormat::Normal => {
            outln!("NVME Reservation {} success", &what[5..]);
            Ok(())
        }
    }
}

fn report_disconnect(r: &Value, out: Out, nqn: Option<&str>) -> anyhow::Result<()> {
    let names: Vec<&str> = r["disconnected"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match out.output {
        OutputFormat::Json => print_json(&json!({"disconnected": names})),
        OutputFormat::Normal => {
            match nqn {
                Some(n) => outln!("NQN:{n} disconnected {} controller(s)", names.len()),
                None => outln!(
                    "disconnected {} controller(s){}{}",
                    names.len(),
                    if names.is_empty() { "" } else { ": " },
                    names.join(", ")
                ),
            }
            if nqn.is_some() && names.is_empty() {
                bail!(
                    "no controller of {} is connected (see nvmf list)",
                    nqn.unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

fn data_of(r: &Value) -> anyhow::Result<Vec<u8>> {
    r["data"]
        .as_str()
        .and_then(unhex)
        .ok_or_else(|| anyhow!("the host daemon's answer has no data"))
}

fn hexdump(d: &[u8]) -> String {
    let mut s = String::new();
    for (i, c) in d.chunks(16).enumerate() {
        let h: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
        let a: String = c
            .iter()
            .map(|b| {
                if b.is_ascii_graphic() || *b == b' ' {
                    *b as char
                } else {
                    '.'
                }
            })
            .collect();
        s += &format!("{:04x}: {:<47} \"{a}\"\n", i * 16, h.join(" "));
    }
    s
}

fn list(out: Out) -> anyhow::Result<()> {
    let (ctrls, heads) = if daemon::running() {
        (
            daemon::request(&json!({"op": "list"}))?,
            daemon::request(&json!({"op": "block-devices"}))?,
        )
    } else {
        (json!([]), json!([]))
    };
    let ctrls = ctrls.as_array().cloned().unwrap_or_default();
    let heads = heads.as_array().cloned().unwrap_or_default();
    match out.output {
        OutputFormat::Json => {
            let mut devices = Vec::new();
            for c in &ctrls {
                for n in c["namespaces"].as_array().cloned().unwrap_or_default() {
                    let bs = n["block_size"].as_u64().unwrap_or(0);
                    devices.push(json!({
                        "NameSpace": n["nsid"], "DevicePath": n["name"], "BlockDevice": n["block_device"], "Firmware": c["fr"],
                        "ModelNumber": c["mn"], "SerialNumber": c["sn"],
                        "UsedBytes": n["nuse"].as_u64().unwrap_or(0) * bs,
                        "MaximumLBA": n["blocks"], "PhysicalSize": n["size"], "SectorSize": bs,
                        "Controller": c["name"], "SubsystemNQN": c["subnqn"],
                        "Address": format!("traddr={},trsvcid={}", c["traddr"].as_str().unwrap_or(""), c["trsvcid"].as_str().unwrap_or("")),
                        "State": c["state"],
                    }));
                }
            }
            let controllers: Vec<Value> = ctrls.iter().map(|c| {
                json!({"Controller": c["name"], "Cntlid": c["cntlid"], "SerialNumber": c["sn"], "ModelNumber": c["mn"],
                       "Firmware": c["fr"], "Transport": c["trtype"].as_str().unwrap_or("tcp"), "Address": format!("traddr={},trsvcid={}", c["traddr"].as_str().unwrap_or(""), c["trsvcid"].as_str().unwrap_or("")),
                       "SubsystemNQN": c["subnqn"], "State": c["state"], "Namespaces": c["namespaces"]})
            }).collect();
            print_json(
                &json!({"Devices": devices, "Controllers": controllers, "BlockDevices": heads}),
            )
        }
        OutputFormat::Normal => {
            let mut rows = Vec::new();
            for c in &ctrls {
                let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
                let addr = format!("{}:{}", s("traddr"), s("trsvcid"));
                let nss = c["namespaces"].as_array().cloned().unwrap_or_default();
                if nss.is_empty() {
                    rows.push(vec![
                        s("name"),
                        s("sn"),
                        s("mn"),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        s("fr"),
                        addr.clone(),
                        s("state"),
                    ]);
                }
                for n in nss {
                    let bs = n["block_size"].as_u64().unwrap_or(0);
                    let used = n["nuse"].as_u64().unwrap_or(0) * bs;
                    let size = n["size"].as_u64().unwrap_or(0);
                    let node = match n["block_device"].as_str() {
                        Some(b) => format!("{} ({b})", n["name"].as_str().unwrap_or("")),
                        None => n["name"].as_str().unwrap_or("").into(),
                    };
                    rows.push(vec![
                        node,
                        s("sn"),
                        s("mn"),
                        n["nsid"].to_string(),
                        format!("{} / {}", fmt::human_size(used), fmt::human_size(size)),
                        format!("{bs} B + 0 B"),
                        s("fr"),
                        addr.clone(),
                        s("state"),
                    ]);
                }
            }
            emit(&fmt::table(
                &[
                    "Node",
                    "SN",
                    "Model",
                    "Namespace",
                    "Usage",
                    "Format",
                    "FW Rev",
                    "Address",
                    "State",
                ],
                &rows,
            ));
            if !heads.is_empty() {
                emit(&block_devices_text(&heads));
            }
            Ok(())
        }
    }
}

/// The block devices and their paths, as `list` prints them after the
/// controllers.
fn block_devices_text(heads: &[Value]) -> String {
    let mut rows = Vec::new();
    for h in heads {
        let s = |v: &Value, k: &str| match &v[k] {
            Value::String(x) => x.clone(),
            Value::Null => "-".into(),
            x => x.to_string(),
        };
        for (i, p) in h["paths"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let first = i == 0;
            rows.push(vec![
                if first { s(h, "device") } else { String::new() },
                if first {
                    format!("{} n{}", s(h, "subnqn"), s(h, "nsid"))
                } else {
                    String::new()
                },
                if first {
                    s(h, "iopolicy")
                } else {
                    String::new()
                },
                s(p, "controller"),
                format!("{}:{}", s(p, "traddr"), s(p, "trsvcid")),
                s(p, "ana_state"),
                s(p, "commands"),
                s(p, "failovers"),
                s(p, "state"),
            ]);
        }
    }
    format!(
        "\n{}",
        fmt::table(
            &[
                "Block device",
                "Namespace",
                "I/O policy",
                "Path",
                "Address",
                "ANA state",
                "Commands",
                "Failovers",
                "State",
            ],
            &rows,
        )
    )
}

/// Reads the data of `write` or `compare`: the file or stdin, cut or padded
/// with zeroes to `need` bytes.
fn input_data(a: &RwArgs, need: u64) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match &a.data {
        Some(p) => {
            std::fs::File::open(p)
                .with_context(|| format!("opening {}", p.display()))?
                .read_to_end(&mut buf)?;
        }
        None => {
            std::io::stdin().read_to_end(&mut buf)?;
        }
    }
    buf.truncate(need as usize);
    buf.resize(need as usize, 0);
    Ok(buf)
}

/// Bytes of data the command moves: (block-count + 1) blocks of the
/// namespace's size; a --data-size below that is refused.
fn data_len(a: &RwArgs) -> anyhow::Result<u64> {
    let info = daemon::request(&json!({"op": "namespace", "dev": a.dev}))?;
    let bs = info["block_size"].as_u64().unwrap_or(512);
    let nblocks = u64::from(a.block_count) + 1;
    let need = nblocks * bs;
    if let Some(z) = a.data_size {
        if z < need {
            bail!("--data-size {z} is smaller than {need} bytes ({nblocks} blocks of {bs} bytes; -c is 0's based)");
        }
    }
    Ok(need)
}

fn compare(a: RwArgs) -> anyhow::Result<()> {
    let need = data_len(&a)?;
    let buf = input_data(&a, need)?;
    daemon::request_data(
        &json!({"op": "compare", "dev": a.dev, "slba": a.start_block}),
        Some(&buf),
    )?;
    success(&a.out, "compare")
}

fn rw(a: RwArgs, write: bool) -> anyhow::Result<()> {
    let (_, ns) = daemon::parse_dev(&a.dev)?;
    if ns.is_none() {
        bail!(
            "'{}' is a controller; give a namespace device such as {}n1",
            a.dev,
            a.dev
        );
    }
    let need = data_len(&a)?;
    let nblocks = u64::from(a.block_count) + 1;
    if write {
        let buf = input_data(&a, need)?;
        daemon::request_data(
            &json!({"op": "write", "dev": a.dev, "slba": a.start_block, "fua": a.fua}),
            Some(&buf),
        )?;
        match a.out.output {
            OutputFormat::Json => print_json(&json!({"result": "success", "blocks": nblocks}))?,
            OutputFormat::Normal => eprintln!("write: Success"),
        }
    } else {
        let (_, d) = daemon::request_data(
            &json!({"op": "read", "dev": a.dev, "slba": a.start_block, "nblocks": nblocks}),
            None,
        )?;
        if d.len() as u64 != need {
            bail!(
                "the host daemon returned {} bytes for a read of {need}",
                d.len()
            );
        }
        match &a.data {
            Some(p) => std::fs::write(p, &d).with_context(|| format!("writing {}", p.display()))?,
            None => {
                let _ = std::io::stdout().lock().write_all(&d);
            }
        }
        if a.data.is_some() {
            match a.out.output {
                OutputFormat::Json => print_json(&json!({"result": "success", "blocks": nblocks}))?,
                OutputFormat::Normal => eprintln!("read: Success"),
            }
        }
    }
    Ok(())
}

/// Parses sizes like `16M`, `4k`, `1G`, `512` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => {
            let m = match s[i..]
                .to_ascii_lowercase()
                .trim_end_matches("ib")
                .trim_end_matches('b')
            {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                u => return Err(format!("unknown size unit '{u}' (use k, M, G)")),
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("'{s}' is not a size like 16M or 4096"))
}

#[allow(dead_code)]
fn _unused(_: Duration) {}
