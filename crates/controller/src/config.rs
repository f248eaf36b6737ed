//! Target configuration: the TOML file and the quick-mode flags both build a
//! [`TargetConfig`]. Unknown fields are errors, so a typo never passes silently.

use std::path::{Path, PathBuf};

use nvmf_backend::{parse_size, DirectIo};
use nvmf_proto::fabrics::{validate_nqn, DISCOVERY_NQN};
use nvmf_transport::addr::TransportKind;
use nvmf_transport::TransportAddr;
use serde::Deserialize;

/// Why a configuration is unusable. Messages name the file, the field and what is expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// The file, or "command line".
        origin: String,
        /// The field.
        field: String,
        /// What is expected.
        message: String,
    },
}

/// Limits that keep one host from exhausting the target (docs/reliability.md).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections open at once, all hosts together.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_host: usize,
    /// I/O queues one controller may create.
    pub max_io_queues: u16,
    /// Entries of an I/O submission queue (CAP.MQES + 1).
    pub max_queue_depth: u16,
    /// In-capsule data accepted on I/O queues, in bytes (IOCCSZ; a multiple
    /// of 16, at most 128 KiB). Absent: [`TCP_IN_CAPSULE_DATA`] on NVMe/TCP and
    /// [`RDMA_IN_CAPSULE_DATA`] on NVMe/RDMA (see [`Limits::in_capsule_data`]).
    pub in_capsule_data_size: Option<u32>,
    /// Largest data transfer of one command (MDTS), in bytes.
    pub max_data_transfer: u32,
    /// MAXH2CDATA: largest H2CData PDU.
    pub max_h2c_data: u32,
    /// Write data requested by R2T and not yet received, per connection.
    pub max_pending_write_bytes: u32,
    /// Time a new connection has to send ICReq, in milliseconds.
    pub icreq_timeout_ms: u64,
    /// Time an initialised connection has to send Connect, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Response bytes queued for a host that is not reading them, per
    /// connection, above which the target stops reading that connection's
    /// commands (backpressure: its memory stays bounded).
    pub max_pending_send_bytes: u32,
    /// Time a connection may make no progress sending queued responses before
    /// the target closes it (a host that stopped reading), in milliseconds.
    pub send_stall_timeout_ms: u64,
}

/// In-capsule data of NVMe/TCP I/O queues unless configured: 128 KiB, so
/// that a write of up to 128 KiB travels with its command, without the R2T
/// round trip (one PDU fewer each way and a round trip less per write; a host
/// sends in-capsule data up to IOCCSZ, NVMe/TCP 1.0 §3.3). Memory stays
/// bounded by the queue depth: at most one capsule's data per entry. 128 KiB
/// writes from spdk_nvme_perf, depth 16: +12 % (docs/performance.md). Linux's
/// nvmet offers 16 KiB and SPDK 4 KiB by default.
pub const TCP_IN_CAPSULE_DATA: u32 = MAX_IN_CAPSULE_DATA;

/// In-capsule data of NVMe/RDMA I/O queues unless configured: 8 KiB. On RDMA
/// the target posts a receive buffer of this size for every queue entry in
/// advance, in registered memory, so a large default would cost every queue
/// its depth times the size.
pub const RDMA_IN_CAPSULE_DATA: u32 = 8192;

/// The largest `limits.in_capsule_data_size` accepted: 128 KiB, the most
/// capsule data a queue entry may hold (so a queue's unrequested write data
/// stays at depth times this; nvmetcli import caps ports' `inline_data_size`
/// to it).
pub const MAX_IN_CAPSULE_DATA: u32 = 128 * 1024;

impl Limits {
    /// The in-capsule data size of I/O queues on transport `kind`.
    pub fn in_capsule_data(&self, kind: TransportKind) -> u32 {
        self.in_capsule_data_size.unwrap_or(match kind {
            TransportKind::Tcp => TCP_IN_CAPSULE_DATA,
            TransportKind::Rdma => RDMA_IN_CAPSULE_DATA,
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_host: 1024,
            max_io_queues: 16,
            max_queue_depth: 128,
            in_capsule_data_size: None,
            max_data_transfer: 1 << 20,
            max_h2c_data: 128 * 1024,
            max_pending_write_bytes: 32 << 20,
            icreq_timeout_ms: 10_000,
            connect_timeout_ms: 10_000,
            max_pending_send_bytes: 8 << 20,
            send_stall_timeout_ms: 30_000,
        }
    }
}

/// Where a namespace keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    /// Volatile memory of this size.
    Memory {
        /// Bytes.
        size: u64,
    },
    /// Nothing stored: reads return zeroes, writes are dropped (benchmarks).
    Null {
        /// Bytes.
        size: u64,
    },
    /// A regular file, created or extended to `size` if given.
    File {
        /// The file.
        path: PathBuf,
        /// Size to create or extend to.
        size: Option<u64>,
    },
    /// A block device.
    Device {
        /// The device node.
        path: PathBuf,
    },
    /// A Ceph RBD image (librbd, loaded at run time).
    Rbd(nvmf_backend::RbdSpec),
}

/// What a namespace is stored on, for logs and errors: "memory 64 MiB",
/// "null 1024 MiB", "file PATH", "device PATH", "rbd POOL/IMAGE".
impl std::fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendSpec::Memory { size } => write!(f, "memory {} MiB", size >> 20),
            BackendSpec::Null { size } => write!(f, "null {} MiB", size >> 20),
            BackendSpec::File { path, .. } => write!(f, "file {}", path.display()),
            BackendSpec::Device { path } => write!(f, "device {}", path.display()),
            BackendSpec::Rbd(r) => write!(f, "rbd {}/{}", r.pool, r.image),
        }
    }
}

/// One namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceConfig {
    /// Namespace ID (1-based).
    pub nsid: u32,
    /// Backing store.
    pub backend: BackendSpec,
    /// Logical block size.
    pub block_size: u32,
    /// O_DIRECT policy for files and devices.
    pub direct: DirectIo,
    /// Namespace UUID; derived from the subsystem NQN and NSID when absent, so it is stable.
    pub uuid: Option<uuid::Uuid>,
    /// ANA group (Identify Namespace ANAGRPID, NVMe Base 2.0 §8.1.2), 1..=128;
    /// its state on each port comes from [`TargetConfig::ana_states`].
    pub ana_group: u32,
}

/// A secret from the configuration (a DH-HMAC-CHAP key in its `DHHC-1:`
/// representation). Its `Debug` form is redacted, so configurations can be
/// logged without leaking keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A host allowed to use a subsystem (nvmet's `allowed_hosts` entry with its
/// `hosts/<nqn>/dhchap_*` attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The host's NQN.
    pub nqn: String,
    /// The host's DH-HMAC-CHAP secret: when set, every queue of this host must
    /// authenticate (NVMe Base 2.0 §8.13) before any command but
    /// Authentication Send/Receive runs.
    pub dhchap_secret: Option<Secret>,
    /// The controller's secret for bidirectional authentication: when set, the
    /// controller proves itself to the host too (the host must ask for it).
    pub dhchap_ctrl_secret: Option<Secret>,
    /// Hash functions accepted, by name (`sha256`, `sha384`, `sha512`); empty: all.
    pub dhchap_hashes: Vec<String>,
    /// DH groups accepted, by name (`null`, `ffdhe2048` … `ffdhe8192`); empty: all.
    pub dhchap_dhgroups: Vec<String>,
}

impl HostConfig {
    /// A host allowed without authentication.
    pub fn plain(nqn: impl Into<String>) -> Self {
        Self {
            nqn: nqn.into(),
            dhchap_secret: None,
            dhchap_ctrl_secret: None,
            dhchap_hashes: Vec::new(),
            dhchap_dhgroups: Vec::new(),
        }
    }

    /// Parses the quick-mode form `NQN[,dhchap-secret=KEY][,dhchap-ctrl-secret=KEY]`
    /// `[,dhchap-hash=NAME]…[,dhchap-dhgroup=NAME]…` (the flag `--host`).
    pub fn parse_flag(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let nqn = parts.next().unwrap_or_default();
        if nqn.is_empty() {
            return Err("give the host NQN first: NQN[,dhchap-secret=KEY][,dhchap-ctrl-secret=KEY][,dhchap-hash=NAME][,dhchap-dhgroup=NAME]".into());
        }
        let mut h = Self::plain(nqn);
        for p in parts {
            match p.split_once('=') {
                Some(("dhchap-secret", v)) => h.dhchap_secret = Some(Secret(v.into())),
                Some(("dhchap-ctrl-secret", v)) => h.dhchap_ctrl_secret = Some(Secret(v.into())),
                Some(("dhchap-hash", v)) => h.dhchap_hashes.push(v.into()),
                Some(("dhchap-dhgroup", v)) => h.dhchap_dhgroups.push(v.into()),
                _ => {
                    return Err(format!(
                        "unknown option '{p}' (expected dhchap-secret=KEY, dhchap-ctrl-secret=KEY, \
                         dhchap-hash=sha256|sha384|sha512 or dhchap-dhgroup=null|ffdhe2048|…|ffdhe8192)"
                    ))
                }
            }
        }
        Ok(h)
    }
}

/// One subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsystemConfig {
    /// Its NQN.
    pub nqn: String,
    /// Serial number reported in Identify Controller.
    pub serial: String,
    /// Model number reported in Identify Controller.
    pub model: String,
    /// Hosts allowed, with how each must authenticate; empty means any host
    /// (without authentication).
    pub hosts: Vec<HostConfig>,
    /// Namespaces, by NSID.
    pub namespaces: Vec<NamespaceConfig>,
    /// Lowest controller ID handed out (nvmet's `attr_cntlid_min`).
    pub cntlid_min: u16,
    /// Highest controller ID handed out (nvmet's `attr_cntlid_max`). Two
    /// targets serving one subsystem (an HA pair) need disjoint ranges: a
    /// host refuses a second controller with a CNTLID it already has in
    /// that subsystem.
    pub cntlid_max: u16,
}

/// Largest dynamic controller ID (NVMe-oF 1.1 §4.2: FFF0h..FFFFh are reserved).
pub const CNTLID_MAX: u16 = 0xFFEF;

/// The whole target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// Addresses to listen on. Every port serves every subsystem and the discovery service.
    pub listen: Vec<TransportAddr>,
    /// Extra addresses serving only discovery (8009 by default).
    pub discovery_listen: Vec<TransportAddr>,
    /// Subsystems.
    pub subsystems: Vec<SubsystemConfig>,
    /// Allow header digests.
    pub header_digest: bool,
    /// Allow data digests.
    pub data_digest: bool,
    /// Resource limits.
    pub limits: Limits,
    /// How long a queue polls its socket before sleeping, in microseconds (0:
    /// never). Polling cuts the wakeup out of a round trip at the price of CPU
    /// time (docs/performance.md). Default [`DEFAULT_BUSY_POLL_US`].
    pub busy_poll_us: u32,
    /// Poll only after a pass over the socket that took in at most this many
    /// PDUs (0: after every pass). Small passes are the sign of a host waiting
    /// on each answer (low queue depth), where the wakeup is most of the round
    /// trip; after large ones the host is streaming, and sleeping lets the next
    /// batch build up. Default [`DEFAULT_BUSY_POLL_BATCH`].
    pub busy_poll_batch: u32,
    /// TCP congestion control of the connections accepted (tcp(7)
    /// `TCP_CONGESTION`); `None`: the system default.
    pub tcp_congestion: Option<String>,
    /// While the target runs, ask that no CPU take longer than this many
    /// microseconds to wake up (Linux PM QoS, [`crate::cpu_latency`]; 0: idle
    /// CPUs poll in the kernel instead of halting). System-wide, needs root;
    /// `None` (the default): no request.
    pub cpu_latency_us: Option<u32>,
    /// TLS on the `listen` ports (`None`: plain TCP).
    pub tls: Option<TlsConfig>,
    /// ANA state of groups on listen ports; unlisted (port, group) pairs are
    /// optimized (NVMe Base 2.0 §8.1; docs/target.md).
    pub ana_states: Vec<crate::ana::AnaPortState>,
    /// Other discovery services this one refers hosts to: each is a SUBTYPE 1
    /// (referral) entry of the discovery log (NVMe Base 2.0 Figure 262; nvmet's
    /// configfs `ports/N/referrals`). A reload that changes them raises a
    /// Discovery Log Change notice.
    pub referrals: Vec<TransportAddr>,
    /// Where to serve `GET /metrics` (Prometheus text format; crate::metrics),
    /// `None`: no metrics endpoint.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Whether a TLS port insists on TLS (the discovery log's TREQ secure channel
/// field, NVMe-oF 1.1 Figure 38; nvmet `addr_treq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Treq {
    /// A host that does not start with a TLS handshake is disconnected.
    #[default]
    Required,
    /// TLS is offered; a plain ICReq is served too.
    NotRequired,
}

/// TLS 1.3 with PSK on listen ports (nvmet `addr_tsas=tls1.3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Required or merely offered.
    pub treq: Treq,
    /// The listen ports TLS applies to; empty: every listen port.
    pub ports: Vec<TransportAddr>,
    /// Configured PSKs (`NVMeTLSkey-1:…`); the TLS PSK of any host NQN and
    /// subsystem NQN is derived from them.
    pub keys: Vec<nvmf_proto::tls::ConfiguredPsk>,
    /// Derivation for identity version 0 (libnvme <= 1.15 / nvme-cli 2.13 use
    /// [`Derivation::Compat`](nvmf_proto::tls::Derivation::Compat)).
    pub derivation: nvmf_proto::tls::Derivation,
}

/// Default subsystem NQN of the embedded default and quick mode.
pub const DEFAULT_SUBNQN: &str = "nqn.2024-01.io.nvmf-rs:default";

impl TargetConfig {
    /// The embedded default: one 1 GiB memory namespace on 127.0.0.1:4420, discovery
    /// also on 127.0.0.1:8009.
    pub fn embedded_default() -> Self {
        Self {
            listen: vec![TransportAddr::from_parts("127.0.0.1", "4420")
                .unwrap_or_else(|_| unreachable_addr())],
            discovery_listen: vec![TransportAddr::from_parts("127.0.0.1", "8009")
                .unwrap_or_else(|_| unreachable_addr())],
            subsystems: vec![SubsystemConfig {
                nqn: DEFAULT_SUBNQN.into(),
                serial: default_serial(DEFAULT_SUBNQN),
                model: "nvmf-rs".into(),
                hosts: vec![],
                namespaces: vec![NamespaceConfig {
                    nsid: 1,
                    backend: BackendSpec::Memory { size: 1 << 30 },
                    block_size: 512,
                    direct: DirectIo::Auto,
                    uuid: None,
                    ana_group: 1,
                }],
                cntlid_min: 1,
                cntlid_max: CNTLID_MAX,
            }],
            header_digest: true,
            data_digest: true,
            limits: Limits::default(),
            busy_poll_us: DEFAULT_BUSY_POLL_US,
            busy_poll_batch: DEFAULT_BUSY_POLL_BATCH,
            tcp_congestion: None,
            cpu_latency_us: None,
            tls: None,
            ana_states: Vec::new(),
            referrals: Vec::new(),
            metrics: None,
        }
    }

    /// Checks NQNs, NSIDs, sizes and limits.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let inv = |field: String, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            field,
            message,
        };
        if self.listen.is_empty() {
            return Err(inv(
                "listen".into(),
                "at least one listen address is needed".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.subsystems.iter().enumerate() {
            let f = format!("subsystem[{i}]");
            validate_nqn(&s.nqn)
                .map_err(|m| inv(format!("{f}.nqn"), format!("'{}': {m}", s.nqn)))?;
            if s.nqn == DISCOVERY_NQN {
                return Err(inv(
                    format!("{f}.nqn"),
                    "the discovery NQN is reserved for the discovery service".into(),
                ));
            }
            if !seen.insert(s.nqn.clone()) {
                return Err(inv(
                    format!("{f}.nqn"),
                    format!("'{}' is defined twice", s.nqn),
                ));
            }
            let mut host_nqns = std::collections::HashSet::new();
            for (k, h) in s.hosts.iter().enumerate() {
                let g = format!("{f}.hosts[{k}]");
                validate_nqn(&h.nqn).map_err(|m| inv(g.clone(), format!("'{}': {m}", h.nqn)))?;
                if !host_nqns.insert(h.nqn.as_str()) {
                    return Err(inv(g, format!("host '{}' is listed twice", h.nqn)));
                }
                crate::auth::validate_host(h)
                    .map_err(|(field, m)| inv(format!("{g}.{field}"), m))?;
            }
            if s.cntlid_min == 0 || s.cntlid_max > CNTLID_MAX || s.cntlid_min > s.cntlid_max {
                return Err(inv(
                    format!("{f}.cntlid_min"),
                    format!(
                        "the CNTLID range {}..={} must lie within 1..={CNTLID_MAX} with cntlid_min <= cntlid_max",
                        s.cntlid_min, s.cntlid_max
                    ),
                ));
            }
            let mut ids = std::collections::HashSet::new();
            for (j, n) in s.namespaces.iter().enumerate() {
                let g = format!("{f}.namespace[{j}]");
                crate::ana::check_group(n.ana_group)
                    .map_err(|m| inv(format!("{g}.ana_group"), m))?;
                if n.nsid == 0 || n.nsid == u32::MAX {
                    return Err(inv(
                        format!("{g}.nsid"),
                        "NSID must be between 1 and 4294967294".into(),
                    ));
                }
                if !ids.insert(n.nsid) {
                    return Err(inv(
                        format!("{g}.nsid"),
                        format!("NSID {} is used twice", n.nsid),
                    ));
                }
                if !matches!(n.block_size, 512 | 4096) {
                    return Err(inv(
                        format!("{g}.block_size"),
                        format!("{} is not 512 or 4096", n.block_size),
                    ));
                }
            }
        }
        let mut seen_ana = std::collections::HashSet::new();
        for (i, a) in self.ana_states.iter().enumerate() {
            let f = format!("ana_state[{i}]");
            if !self.listen.contains(&a.port) {
                return Err(inv(
                    format!("{f}.port"),
                    format!("{} is not one of the listen addresses", a.port),
                ));
            }
            crate::ana::check_group(a.group).map_err(|m| inv(format!("{f}.group"), m))?;
            if !seen_ana.insert((a.port, a.group)) {
                return Err(inv(
                    f,
                    format!("group {} on {} is given twice", a.group, a.port),
                ));
            }
        }
        if self.busy_poll_us > 1_000_000 {
            return Err(inv(
                "busy_poll_us".into(),
                "must be at most 1000000 (one second)".into(),
            ));
        }
        if self.busy_poll_batch > MAX_BUSY_POLL_BATCH {
            return Err(inv(
                "busy_poll_batch".into(),
                format!("must be at most {MAX_BUSY_POLL_BATCH} (0: poll after every pass)"),
            ));
        }
        if self
            .cpu_latency_us
            .is_some_and(|us| us > MAX_CPU_LATENCY_US)
        {
            return Err(inv(
                "cpu_latency_us".into(),
                format!("must be at most {MAX_CPU_LATENCY_US} (one second; 0: idle CPUs poll)"),
            ));
        }
        if let Some(cc) = &self.tcp_congestion {
            if cc.is_empty()
                || cc.len() > 15
                || !cc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(inv(
                    "tcp_congestion".into(),
                    format!("'{cc}' is not a congestion control name (e.g. cubic, bbr, reno)"),
                ));
            }
        }
        let l = &self.limits;
        if l.max_queue_depth < 2 || l.max_queue_depth > 1024 {
            return Err(inv(
                "limits.max_queue_depth".into(),
                "must be between 2 and 1024".into(),
            ));
        }
        if l.max_io_queues == 0 || l.max_io_queues > 1024 {
            return Err(inv(
                "limits.max_io_queues".into(),
                "must be between 1 and 1024".into(),
            ));
        }
        if l.in_capsule_data_size
            .is_some_and(|n| n > MAX_IN_CAPSULE_DATA || !n.is_multiple_of(16))
        {
            return Err(inv(
                "limits.in_capsule_data_size".into(),
                format!("must be a multiple of 16 up to {MAX_IN_CAPSULE_DATA}"),
            ));
        }
        if l.max_h2c_data < 4096 || !l.max_h2c_data.is_multiple_of(4) {
            return Err(inv(
                "limits.max_h2c_data".into(),
                "must be a multiple of 4, at least 4096".into(),
            ));
        }
        if l.max_data_transfer < 4096 || !l.max_data_transfer.is_power_of_two() {
            return Err(inv(
                "limits.max_data_transfer".into(),
                "must be a power of two, at least 4096".into(),
            ));
        }
        Ok(())
    }

    /// Reads and validates a TOML file (see docs/target.md for the schema).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses TOML text; `path` is used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let origin = path.display().to_string();
        let cfg = file.into_config(&origin)?;
        cfg.validate(&origin)?;
        Ok(cfg)
    }
}

fn unreachable_addr() -> TransportAddr {
    TransportAddr::tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 4420)))
}

/// A serial number derived from the NQN, so it is stable across restarts.
pub fn default_serial(nqn: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in nqn.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:016x}", h)
}

/// Default of [`TargetConfig::busy_poll_us`]: long enough to catch a
/// queue-depth-1 host's next command on loopback (one round trip is 15–20 µs
/// here), short enough that an idle queue costs nothing measurable.
pub const DEFAULT_BUSY_POLL_US: u32 = 50;
/// Default of [`TargetConfig::busy_poll_batch`]: poll after passes of one or
/// two PDUs (a command, or a command and its data). A/B in docs/performance.md:
/// queue depth 1 as fast as polling always, depth 128 as fast as never.
pub const DEFAULT_BUSY_POLL_BATCH: u32 = 2;
/// Upper bound of [`TargetConfig::busy_poll_batch`] (a queue holds at most
/// 65,535 commands).
pub const MAX_BUSY_POLL_BATCH: u32 = 65_535;

/// Upper bound of [`TargetConfig::cpu_latency_us`]: a limit of a second or
/// more asks nothing of any idle state.
pub const MAX_CPU_LATENCY_US: u32 = 1_000_000;

fn default_busy_poll_us() -> u32 {
    DEFAULT_BUSY_POLL_US
}

fn default_busy_poll_batch() -> u32 {
    DEFAULT_BUSY_POLL_BATCH
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    discovery_listen: Option<Vec<String>>,
    #[serde(default = "yes")]
    header_digest: bool,
    #[serde(default = "yes")]
    data_digest: bool,
    #[serde(default)]
    limits: Limits,
    #[serde(default = "default_busy_poll_us")]
    busy_poll_us: u32,
    #[serde(default = "default_busy_poll_batch")]
    busy_poll_batch: u32,
    #[serde(default)]
    tcp_congestion: Option<String>,
    #[serde(default)]
    cpu_latency_us: Option<u32>,
    /// `ADDR:PORT` serving GET /metrics.
    #[serde(default)]
    metrics: Option<String>,
    /// "required" or "not-required": TLS on every listen port (or on tls_ports).
    #[serde(default)]
    tls: Option<String>,
    /// The listen ports TLS applies to (default: all).
    #[serde(default)]
    tls_ports: Vec<String>,
    /// Configured PSK(s), NVMeTLSkey-1:…
    #[serde(default)]
    tls_key: OneOrMany,
    /// Key derivation of libnvme <= 1.15 (nvme-cli 2.13).
    #[serde(default)]
    tls_compat: bool,
    #[serde(default, rename = "subsystem")]
    subsystems: Vec<FileSubsystem>,
    /// `[[ana_state]]` tables: port, group, state.
    #[serde(default, rename = "ana_state")]
    ana_states: Vec<FileAnaState>,
    /// `[[referral]]` tables: address, port, transport.
    #[serde(default, rename = "referral")]
    referrals: Vec<FileReferral>,
}

/// `[[referral]]`: another discovery service (nvmet `ports/N/referrals/NAME`:
/// `addr_traddr`, `addr_trsvcid`, `addr_trtype`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileReferral {
    /// IPv4 or IPv6 address.
    address: String,
    /// TCP port (default 8009, the discovery port).
    #[serde(default)]
    port: Option<u16>,
    /// Only "tcp".
    #[serde(default)]
    transport: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAnaState {
    port: String,
    group: u32,
    state: String,
}

/// A string or a list of strings.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::None => vec![],
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSubsystem {
    nqn: String,
    serial: Option<String>,
    model: Option<String>,
    #[serde(default)]
    hosts: Vec<FileHost>,
    #[serde(default, rename = "namespace")]
    namespaces: Vec<FileNamespace>,
    cntlid_min: Option<u16>,
    cntlid_max: Option<u16>,
}

/// A host in the file: its NQN alone, or a table with its secrets.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileHost {
    Nqn(String),
    Table(FileHostTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHostTable {
    nqn: String,
    dhchap_secret: Option<String>,
    dhchap_ctrl_secret: Option<String>,
    #[serde(default)]
    dhchap_hash: Vec<String>,
    #[serde(default)]
    dhchap_dhgroup: Vec<String>,
}

impl From<FileHost> for HostConfig {
    fn from(h: FileHost) -> Self {
        match h {
            FileHost::Nqn(n) => HostConfig::plain(n),
            FileHost::Table(t) => HostConfig {
                nqn: t.nqn,
                dhchap_secret: t.dhchap_secret.map(Secret),
                dhchap_ctrl_secret: t.dhchap_ctrl_secret.map(Secret),
                dhchap_hashes: t.dhchap_hash,
                dhchap_dhgroups: t.dhchap_dhgroup,
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNamespace {
    nsid: Option<u32>,
    memory: Option<String>,
    null: Option<String>,
    file: Option<PathBuf>,
    device: Option<PathBuf>,
    /// `POOL/IMAGE` of a Ceph RBD image.
    rbd: Option<String>,
    /// ceph.conf for `rbd` (default: librados's search, $CEPH_CONF first).
    ceph_conf: Option<PathBuf>,
    /// Ceph user for `rbd`, without `client.` (default admin).
    ceph_id: Option<String>,
    size: Option<String>,
    #[serde(default = "default_bs")]
    block_size: u32,
    #[serde(default)]
    direct: Option<String>,
    uuid: Option<String>,
    ana_group: Option<u32>,
}

fn default_bs() -> u32 {
    512
}

/// Parses the O_DIRECT policy names used in the config file and on the command line.
pub fn parse_direct(s: &str) -> Result<DirectIo, String> {
    match s {
        "auto" => Ok(DirectIo::Auto),
        "on" | "true" | "yes" => Ok(DirectIo::On),
        "off" | "false" | "no" => Ok(DirectIo::Off),
        _ => Err(format!("'{s}' is not auto, on or off")),
    }
}

impl TlsConfig {
    /// The TLS mode of listen address `a`, if TLS applies to it.
    pub fn treq_for(&self, a: &TransportAddr) -> Option<Treq> {
        (self.ports.is_empty() || self.ports.contains(a)).then_some(self.treq)
    }
}

/// The TLS settings from `tls` ("required", "not-required" or absent), the
/// keys and the derivation choice; `Err((field, message))`.
pub fn parse_tls(
    mode: Option<&str>,
    keys: &[String],
    compat: bool,
) -> Result<Option<TlsConfig>, (String, String)> {
    let treq = match mode {
        Some("not-required") | Some("not required") => {
            return parse_tls(Some("required"), keys, compat).map(|t| {
                t.map(|mut t| {
                    t.treq = Treq::NotRequired;
                    t
                })
            })
        }
        _ => Treq::Required,
    };
    match mode {
        None | Some("none") | Some("no") => {
            if keys.is_empty() {
                return Ok(None);
            }
            Err((
                "tls".into(),
                "tls_key is set but tls is not \"required\" or \"not-required\"; add tls = \"required\"".into(),
            ))
        }
        Some("required") => {
            if keys.is_empty() {
                return Err((
                    "tls_key".into(),
                    "tls = \"required\" needs a configured PSK: tls_key = \"NVMeTLSkey-1:01:…:\" (nvme gen-tls-key prints one)".into(),
                ));
            }
            let keys = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    nvmf_proto::tls::ConfiguredPsk::parse(k)
                        .map_err(|e| (format!("tls_key[{i}]"), e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(TlsConfig {
                treq,
                ports: Vec::new(),
                keys,
                derivation: if compat {
                    nvmf_proto::tls::Derivation::Compat
                } else {
                    nvmf_proto::tls::Derivation::Spec
                },
            }))
        }
        Some(other) => Err((
            "tls".into(),
            format!("tls is \"required\" or \"not-required\" (TLS 1.3 on the listen ports, or on tls_ports) or absent, not {other:?}"),
        )),
    }
}

impl FileConfig {
    fn into_config(self, origin: &str) -> Result<TargetConfig, ConfigError> {
        let inv = |field: String, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            field,
            message,
        };
        let parse_addr = |f: String, s: &str| s.parse::<TransportAddr>().map_err(|m| inv(f, m));
        let listen = if self.listen.is_empty() {
            vec![parse_addr("listen".into(), "127.0.0.1:4420")?]
        } else {
            self.listen
                .iter()
                .enumerate()
                .map(|(i, s)| parse_addr(format!("listen[{i}]"), s))
                .collect::<Result<_, _>>()?
        };
        let tls = parse_tls(
            self.tls.as_deref(),
            &self.tls_key.into_vec(),
            self.tls_compat,
        )
        .map_err(|(f, m)| inv(f, m))?;
        let tls = match tls {
            Some(mut t) => {
                for (i, p) in self.tls_ports.iter().enumerate() {
                    let a = parse_addr(format!("tls_ports[{i}]"), p)?;
                    if !listen.contains(&a) {
                        return Err(inv(
                            format!("tls_ports[{i}]"),
                            format!("{a} is not one of the listen addresses"),
                        ));
                    }
                    t.ports.push(a);
                }
                Some(t)
            }
            None if !self.tls_ports.is_empty() => {
                return Err(inv(
                    "tls_ports".into(),
                    "tls_ports needs tls = \"required\" or \"not-required\" and a tls_key".into(),
                ))
            }
            None => None,
        };
        let metrics = match &self.metrics {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| {
                inv(
                    "metrics".into(),
                    format!("'{s}' is not an ADDR:PORT (e.g. 127.0.0.1:9100)"),
                )
            })?),
        };
        let discovery_listen = match self.discovery_listen {
            None => vec![],
            Some(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| parse_addr(format!("discovery_listen[{i}]"), s))
                .collect::<Result<_, _>>()?,
        };
        let mut subsystems = Vec::new();
        for (i, s) in self.subsystems.into_iter().enumerate() {
            let mut namespaces = Vec::new();
            for (j, n) in s.namespaces.into_iter().enumerate() {
                let f = format!("subsystem[{i}].namespace[{j}]");
                let size = n
                    .size
                    .as_deref()
                    .map(parse_size)
                    .transpose()
                    .map_err(|m| inv(format!("{f}.size"), m))?;
                if (n.ceph_conf.is_some() || n.ceph_id.is_some()) && n.rbd.is_none() {
                    return Err(inv(
                        f,
                        "ceph_conf and ceph_id go with rbd = \"POOL/IMAGE\"".into(),
                    ));
                }
                let backend = match (n.memory, n.null, n.file, n.device, n.rbd) {
                    (Some(m), None, None, None, None) => BackendSpec::Memory {
                        size: parse_size(&m).map_err(|e| inv(format!("{f}.memory"), e))?,
                    },
                    (None, Some(m), None, None, None) => BackendSpec::Null {
                        size: parse_size(&m).map_err(|e| inv(format!("{f}.null"), e))?,
                    },
                    (None, None, Some(path), None, None) => BackendSpec::File { path, size },
                    (None, None, None, Some(path), None) => BackendSpec::Device { path },
                    (None, None, None, None, Some(r)) => {
                        let mut spec = nvmf_backend::RbdSpec::parse(&r)
                            .map_err(|e| inv(format!("{f}.rbd"), e))?;
                        spec.conf = n.ceph_conf;
                        spec.id = n.ceph_id;
                        BackendSpec::Rbd(spec)
                    }
                    _ => {
                        return Err(inv(f, "give exactly one of memory = \"SIZE\", null = \"SIZE\", file = \"PATH\", device = \"PATH\" or rbd = \"POOL/IMAGE\"".into()))
                    }
                };
                let direct = n
                    .direct
                    .as_deref()
                    .map(parse_direct)
                    .transpose()
                    .map_err(|m| inv(format!("{f}.direct"), m))?
                    .unwrap_or_default();
                let uuid = n
                    .uuid
                    .as_deref()
                    .map(uuid::Uuid::parse_str)
                    .transpose()
                    .map_err(|e| inv(format!("{f}.uuid"), e.to_string()))?;
                namespaces.push(NamespaceConfig {
                    nsid: n.nsid.unwrap_or(j as u32 + 1),
                    backend,
                    block_size: n.block_size,
                    direct,
                    uuid,
                    ana_group: n.ana_group.unwrap_or(1),
                });
            }
            subsystems.push(SubsystemConfig {
                serial: s.serial.unwrap_or_else(|| default_serial(&s.nqn)),
                model: s.model.unwrap_or_else(|| "nvmf-rs".into()),
                nqn: s.nqn,
                hosts: s.hosts.into_iter().map(HostConfig::from).collect(),
                namespaces,
                cntlid_min: s.cntlid_min.unwrap_or(1),
                cntlid_max: s.cntlid_max.unwrap_or(CNTLID_MAX),
            });
        }
        let mut ana_states = Vec::new();
        for (i, a) in self.ana_states.iter().enumerate() {
            let f = format!("ana_state[{i}]");
            ana_states.push(crate::ana::AnaPortState {
                port: parse_addr(format!("{f}.port"), &a.port)?,
                group: a.group,
                state: a.state.parse().map_err(|m| inv(format!("{f}.state"), m))?,
            });
        }
        let mut referrals = Vec::new();
        for (i, r) in self.referrals.iter().enumerate() {
            let f = format!("referral[{i}]");
            if let Some(t) = r.transport.as_deref() {
                if !t.eq_ignore_ascii_case("tcp") {
                    return Err(inv(
                        format!("{f}.transport"),
                        format!("'{t}': only \"tcp\" is supported"),
                    ));
                }
            }
            let port = r.port.unwrap_or(nvmf_transport::addr::DISCOVERY_PORT);
            let a = TransportAddr::from_parts(&r.address, &port.to_string())
                .map_err(|m| inv(format!("{f}.address"), m))?;
            if !referrals.contains(&a) {
                referrals.push(a);
            }
        }
        Ok(TargetConfig {
            ana_states,
            referrals,
            listen,
            discovery_listen,
            subsystems,
            header_digest: self.header_digest,
            data_digest: self.data_digest,
            limits: self.limits,
            busy_poll_us: self.busy_poll_us,
            busy_poll_batch: self.busy_poll_batch,
            tcp_congestion: self.tcp_congestion,
            cpu_latency_us: self.cpu_latency_us,
            tls,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_rdma_addresses() {
        let t = r#"listen = ["127.0.0.1:4420", "rdma://10.99.0.1:4420"]"#;
        let c = TargetConfig::from_toml(t, Path::new("t.toml")).unwrap();
        let kinds: Vec<_> = c.listen.iter().map(|a| a.kind).collect();
        use nvmf_transport::addr::TransportKind;
        assert_eq!(kinds, [TransportKind::Tcp, TransportKind::Rdma]);
        let e = TargetConfig::from_toml(r#"listen = ["roce://1.2.3.4:1"]"#, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("listen[0]") && e.contains("unknown transport 'roce'"),
            "{e}"
        );
    }

    #[test]
    fn parses_full_file() {
        let t = r#"
            listen = ["127.0.0.1:4420", "[::1]:4420"]
            header_digest = false
            busy_poll_us = 20
            busy_poll_batch = 0
            tcp_congestion = "cubic"
            cpu_latency_us = 0
            metrics = "127.0.0.1:9100"
            [limits]
            max_queue_depth = 256
            [[subsystem]]
            nqn = "nqn.2024-01.io.test:a"
            hosts = ["nqn.2024-01.io.test:host1"]
            [[subsystem.namespace]]
            memory = "64M"
            [[subsystem.namespace]]
            null = "1G"
            [[subsystem.namespace]]
            nsid = 5
            file = "/tmp/x.img"
            size = "1G"
            block_size = 4096
            direct = "off"
        "#;
        let c = TargetConfig::from_toml(t, Path::new("t.toml")).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(!c.header_digest);
        assert_eq!((c.busy_poll_us, c.busy_poll_batch), (20, 0));
        // Absent, both take their defaults (adaptive polling is on by default).
        let d = TargetConfig::from_toml("", Path::new("t.toml")).unwrap();
        assert_eq!(
            (d.busy_poll_us, d.busy_poll_batch),
            (DEFAULT_BUSY_POLL_US, DEFAULT_BUSY_POLL_BATCH)
        );
        assert_eq!(c.tcp_congestion.as_deref(), Some("cubic"));
        assert_eq!(c.cpu_latency_us, Some(0));
        assert_eq!(d.cpu_latency_us, None, "no request unless asked");
        assert_eq!(c.metrics, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.limits.max_queue_depth, 256);
        let s = &c.subsystems[0];
        assert_eq!(s.namespaces[0].nsid, 1);
        assert_eq!(
            s.namespaces[0].backend,
            BackendSpec::Memory { size: 64 << 20 }
        );
        assert_eq!(s.namespaces[1].backend, BackendSpec::Null { size: 1 << 30 });
        assert_eq!(s.namespaces[2].nsid, 5);
        assert_eq!(s.namespaces[2].direct, DirectIo::Off);
    }

    #[test]
    fn hosts_as_names_or_tables_with_secrets() {
        let t = r#"
            [[subsystem]]
            nqn = "nqn.2024-01.io.test:a"
            hosts = [
                "nqn.2024-01.io.test:plain",
                { nqn = "nqn.2024-01.io.test:auth", dhchap_secret = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:", dhchap_ctrl_secret = "DHHC-1:01:ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOeXryU:", dhchap_hash = ["hmac(sha512)"], dhchap_dhgroup = ["ffdhe2048", "null"] },
            ]
        "#;
        let c = TargetConfig::from_toml(t, Path::new("t.toml")).unwrap();
        let h = &c.subsystems[0].hosts;
        assert_eq!(h[0], HostConfig::plain("nqn.2024-01.io.test:plain"));
        assert_eq!(h[1].nqn, "nqn.2024-01.io.test:auth");
        assert!(h[1].dhchap_secret.is_some() && h[1].dhchap_ctrl_secret.is_some());
        assert_eq!(h[1].dhchap_dhgroups, ["ffdhe2048", "null"]);
        // Debug output never shows a key.
        assert!(!format!("{c:?}").contains("AAECAwQF"));

        for (host, field) in [
            (
                r#"{ nqn = "nqn.2024-01.io.test:x", dhchap_hash = ["md5"] }"#,
                "dhchap_hash",
            ),
            (
                r#"{ nqn = "nqn.2024-01.io.test:x", dhchap_dhgroup = ["ffdhe1024"] }"#,
                "dhchap_dhgroup",
            ),
            (
                r#"{ nqn = "nqn.2024-01.io.test:x", dhchap_ctrl_secret = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:" }"#,
                "dhchap_ctrl_secret",
            ),
            (
                r#"{ nqn = "nqn.2024-01.io.test:x", dhchap_secret = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaS:" }"#,
                "dhchap_secret",
            ),
            (
                r#""nqn.2024-01.io.test:a", "nqn.2024-01.io.test:a""#,
                "listed twice",
            ),
        ] {
            let t = format!("[[subsystem]]\nnqn = \"nqn.2024-01.io.test:a\"\nhosts = [{host}]\n");
            let e = TargetConfig::from_toml(&t, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(field) && e.contains("hosts[0]") || e.contains("hosts[1]"),
                "{host}: {e}"
            );
            assert!(
                !e.contains("AAECAwQF"),
                "an error must not print the key: {e}"
            );
        }

        let h = HostConfig::parse_flag(
            "nqn.2024-01.io.test:h,dhchap-secret=DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:,dhchap-hash=sha256,dhchap-hash=sha384",
        )
        .unwrap();
        assert_eq!(h.dhchap_hashes, ["sha256", "sha384"]);
        assert!(HostConfig::parse_flag("nqn.2024-01.io.test:h,bogus=1").is_err());
        assert!(HostConfig::parse_flag(",dhchap-secret=x").is_err());
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = TargetConfig::from_toml("[[subsystem]]\nnqn = \"bad\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.toml") && e.contains("subsystem[0].nqn"),
            "{e}"
        );
        let e = TargetConfig::from_toml("bogus = 1\n", Path::new("y.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("y.toml") && e.contains("bogus"), "{e}");
        let e = TargetConfig::from_toml(
            "[[subsystem]]\nnqn = \"nqn.2024-01.a:b\"\n[[subsystem.namespace]]\nmemory = \"1G\"\nfile = \"/x\"\n",
            Path::new("z.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("exactly one"), "{e}");
    }

    #[test]
    fn tuning_values_are_checked() {
        for (t, field) in [
            ("busy_poll_us = 2000000\n", "busy_poll_us"),
            ("busy_poll_batch = 70000\n", "busy_poll_batch"),
            ("tcp_congestion = \"cu bic\"\n", "tcp_congestion"),
            ("tcp_congestion = \"\"\n", "tcp_congestion"),
            ("cpu_latency_us = 1000001\n", "cpu_latency_us"),
            ("metrics = \"localhost\"\n", "metrics"),
        ] {
            let e = TargetConfig::from_toml(t, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{t}: {e}");
        }
    }

    #[test]
    fn in_capsule_data_size_is_bounded() {
        let parse = |n: u32| {
            TargetConfig::from_toml(
                &format!("[limits]\nin_capsule_data_size = {n}\n"),
                Path::new("t.toml"),
            )
        };
        let c = parse(MAX_IN_CAPSULE_DATA).unwrap();
        assert_eq!(c.limits.in_capsule_data(TransportKind::Tcp), 131_072);
        assert_eq!(c.limits.in_capsule_data(TransportKind::Rdma), 131_072);
        assert!(parse(0).is_ok());
        for bad in [MAX_IN_CAPSULE_DATA + 16, 4100] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("limits.in_capsule_data_size")
                    && e.contains("multiple of 16 up to 131072"),
                "{bad}: {e}"
            );
        }
        let d = TargetConfig::from_toml("", Path::new("t.toml")).unwrap();
        assert_eq!(
            d.limits.in_capsule_data(TransportKind::Tcp),
            TCP_IN_CAPSULE_DATA
        );
        assert_eq!(
            d.limits.in_capsule_data(TransportKind::Rdma),
            RDMA_IN_CAPSULE_DATA
        );
    }

    #[test]
    fn referral_tables() {
        let t = r#"
            [[referral]]
            address = "192.168.0.2"
            [[referral]]
            address = "fd00::2"
            port = 4430
            transport = "tcp"
            [[subsystem]]
            nqn = "nqn.2024-01.io.test:a"
            [[subsystem.namespace]]
            memory = "1M"
        "#;
        let c = TargetConfig::from_toml(t, Path::new("t.toml")).unwrap();
        let r: Vec<String> = c.referrals.iter().map(|a| a.to_string()).collect();
        assert_eq!(r, ["192.168.0.2:8009", "[fd00::2]:4430"]);
        for (bad, field) in [
            (t.replace("\"tcp\"", "\"rdma\""), "referral[1].transport"),
            (
                t.replace("192.168.0.2", "host.example"),
                "referral[0].address",
            ),
        ] {
            let e = TargetConfig::from_toml(&bad, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn ana_states_groups_and_cntlid_range() {
        let t = r#"
            listen = ["127.0.0.1:4420", "127.0.0.1:4421"]
            [[ana_state]]
            port = "127.0.0.1:4421"
            group = 2
            state = "non-optimized"
            [[subsystem]]
            nqn = "nqn.2024-01.io.test:a"
            cntlid_min = 100
            cntlid_max = 199
            [[subsystem.namespace]]
            memory = "1M"
            [[subsystem.namespace]]
            memory = "1M"
            ana_group = 2
        "#;
        let c = TargetConfig::from_toml(t, Path::new("t.toml")).unwrap();
        assert_eq!(
            c.ana_states,
            [crate::ana::AnaPortState {
                port: "127.0.0.1:4421".parse().unwrap(),
                group: 2,
                state: crate::ana::AnaState::NonOptimized,
            }]
        );
        let s = &c.subsystems[0];
        assert_eq!((s.cntlid_min, s.cntlid_max), (100, 199));
        assert_eq!(
            (s.namespaces[0].ana_group, s.namespaces[1].ana_group),
            (1, 2)
        );
        for (bad, field) in [
            (
                t.replacen("group = 2\n", "group = 0\n", 1),
                "ana_state[0].group",
            ),
            (
                t.replace("4421\"\n            group", "4422\"\n            group"),
                "ana_state[0].port",
            ),
            (
                t.replace("\"non-optimized\"", "\"sideways\""),
                "ana_state[0].state",
            ),
            (
                t.replace("ana_group = 2", "ana_group = 129"),
                "namespace[1].ana_group",
            ),
            (
                t.replace("cntlid_min = 100", "cntlid_min = 200"),
                "cntlid_min",
            ),
            (
                t.replace("cntlid_max = 199", "cntlid_max = 65520"),
                "cntlid_min",
            ),
        ] {
            let e = TargetConfig::from_toml(&bad, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        let f = crate::ana::AnaPortState::parse_flag("[::1]:4420=3:inaccessible").unwrap();
        assert_eq!((f.group, f.state), (3, crate::ana::AnaState::Inaccessible));
        for bad in [
            "127.0.0.1:4420",
            "127.0.0.1:4420=1",
            "127.0.0.1:4420=0:optimized",
            "x=1:optimized",
            "127.0.0.1:4420=1:gone",
        ] {
            assert!(crate::ana::AnaPortState::parse_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn embedded_default_is_valid() {
        TargetConfig::embedded_default()
            .validate("default")
            .unwrap();
    }
}
