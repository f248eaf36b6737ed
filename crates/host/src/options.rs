//! Connection options, with nvme-cli's defaults.

use std::time::Duration;

use nvmf_proto::auth::DhchapSecret;
use nvmf_proto::fabrics::DISCOVERY_NQN;
use nvmf_transport::TransportAddr;

/// Keep Alive Timeout for I/O controllers, as Linux (NVME_DEFAULT_KATO, 5 s).
pub const DEFAULT_KATO_MS: u32 = 5000;
/// I/O queue size, as nvme-cli (NVMF_DEF_QUEUE_SIZE 128).
pub const DEFAULT_QUEUE_SIZE: u16 = 128;
/// Controller loss timeout, as nvme-cli (600 s).
pub const DEFAULT_CTRL_LOSS_TMO: Duration = Duration::from_secs(600);
/// Delay between reconnect attempts, as nvme-cli (10 s).
pub const DEFAULT_RECONNECT_DELAY: Duration = Duration::from_secs(10);
/// I/O command timeout, as Linux (`nvme_core.io_timeout`, 30 s).
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Admin command timeout, as Linux (`nvme_core.admin_timeout`, 60 s).
pub const DEFAULT_ADMIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Admin queue depth (SQSIZE 31 in Connect).
pub const ADMIN_QUEUE_DEPTH: u16 = 32;

/// How to reach and set up a controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Transport address (IP and port).
    pub addr: TransportAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Number of I/O queues to ask for (0 for an admin-only association).
    pub nr_io_queues: u16,
    /// Entries per I/O queue (SQSIZE + 1).
    pub queue_size: u16,
    /// Keep Alive Timeout in milliseconds (0: no keep alive).
    pub kato_ms: u32,
    /// Ask for the NVMe/TCP header digest.
    pub hdr_digest: bool,
    /// Ask for the NVMe/TCP data digest.
    pub data_digest: bool,
    /// How long to keep trying to re-establish a lost association; `None`: forever.
    pub ctrl_loss_tmo: Option<Duration>,
    /// Delay between reconnect attempts.
    pub reconnect_delay: Duration,
    /// The host's DH-HMAC-CHAP secret (`nvme connect --dhchap-secret`), used
    /// when the controller asks for authentication.
    pub dhchap_secret: Option<DhchapSecret>,
    /// The controller's secret (`--dhchap-ctrl-secret`): the controller must
    /// prove it knows it (bidirectional authentication).
    pub dhchap_ctrl_secret: Option<DhchapSecret>,
    /// Configured TLS PSK (`nvme connect --tls-key`): every queue runs over
    /// TLS 1.3 with the TLS PSK derived from it for this host and subsystem
    /// (identity version 0, as Linux 6.12 offers it). `None`: plain TCP.
    pub tls_key: Option<nvmf_proto::tls::ConfiguredPsk>,
    /// Key derivation (`Compat` for keys nvme-cli <= 2.15 put in a peer's keyring).
    pub tls_derivation: nvmf_proto::tls::Derivation,
    /// How long an I/O command may stay outstanding before the host asks the
    /// controller to abort it (NVMe Base 2.0 §5.1, Abort) and, if that does not
    /// free it within another `io_timeout`, resets the association; `None`: wait
    /// forever. Default [`DEFAULT_IO_TIMEOUT`], Linux's `nvme_core.io_timeout`.
    pub io_timeout: Option<Duration>,
    /// The same for admin commands (Asynchronous Event Requests excepted), which
    /// reset the association at once when they time out, as Linux's fabrics
    /// hosts do. Default [`DEFAULT_ADMIN_TIMEOUT`] (`nvme_core.admin_timeout`).
    pub admin_timeout: Option<Duration>,
    /// Ask the controller to disable SQ flow control on every queue (Connect
    /// CATTR bit 2, NVMe over Fabrics 1.1 §3.3; `nvme connect
    /// --disable-sqflow`): the controller then stops reporting SQ head
    /// pointers, and on NVMe/TCP may complete a successful read with its last
    /// C2HData PDU (SUCCESS) instead of a response capsule, one PDU fewer per
    /// read. Default off, as on Linux.
    pub disable_sqflow: bool,
}

impl ConnectOptions {
    /// How many reconnect attempts fit in ctrl-loss-tmo: one every
    /// reconnect-delay, the first a delay after the loss, none after the
    /// timeout (at least one). `None` when ctrl-loss-tmo is unset (retry
    /// forever). Linux bounds its attempts the same way
    /// (`max_reconnects = ctrl_loss_tmo / reconnect_delay`, drivers/nvme/host/fabrics.c).
    pub fn max_reconnects(&self) -> Option<u32> {
        self.ctrl_loss_tmo.map(|t| {
            let per = self.reconnect_delay.as_millis().max(1);
            u32::try_from(t.as_millis() / per)
                .unwrap_or(u32::MAX)
                .max(1)
        })
    }

    /// Options for `subnqn` at `addr` with nvme-cli's defaults: host NQN and ID from
    /// /etc/nvme/hostnqn and /etc/nvme/hostid when present, queue size 128,
    /// KATO 5 s (0 for the discovery NQN), ctrl-loss-tmo 600 s, reconnect-delay 10 s,
    /// one I/O queue per CPU (at most 8).
    pub fn new(addr: TransportAddr, subnqn: impl Into<String>) -> Self {
        let subnqn = subnqn.into();
        let discovery = subnqn == DISCOVERY_NQN;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8) as u16;
        Self {
            addr,
            hostnqn: default_hostnqn(),
            hostid: default_hostid(),
            nr_io_queues: if discovery { 0 } else { cpus },
            queue_size: DEFAULT_QUEUE_SIZE,
            kato_ms: if discovery { 0 } else { DEFAULT_KATO_MS },
            hdr_digest: false,
            data_digest: false,
            ctrl_loss_tmo: Some(DEFAULT_CTRL_LOSS_TMO),
            reconnect_delay: DEFAULT_RECONNECT_DELAY,
            dhchap_secret: None,
            dhchap_ctrl_secret: None,
            tls_key: None,
            tls_derivation: nvmf_proto::tls::Derivation::Spec,
            io_timeout: Some(DEFAULT_IO_TIMEOUT),
            admin_timeout: Some(DEFAULT_ADMIN_TIMEOUT),
            disable_sqflow: false,
            subnqn,
        }
    }

    /// True when this is the well-known discovery subsystem.
    pub fn is_discovery(&self) -> bool {
        self.subnqn == DISCOVERY_NQN
    }
}

/// The host NQN: /etc/nvme/hostnqn if present, else
/// `nqn.2014-08.org.nvmexpress:uuid:<uuid>` with a UUID derived from the
/// machine (the same for every process on it).
pub fn default_hostnqn() -> String {
    if let Ok(s) = std::fs::read_to_string("/etc/nvme/hostnqn") {
        let s = s.trim();
        if !s.is_empty() {
            return s.to_string();
        }
    }
    format!("nqn.2014-08.org.nvmexpress:uuid:{}", process_uuid())
}

/// The host ID: /etc/nvme/hostid if present (a UUID), else the UUID in the generated host NQN.
pub fn default_hostid() -> [u8; 16] {
    if let Ok(s) = std::fs::read_to_string("/etc/nvme/hostid") {
        if let Ok(u) = uuid::Uuid::parse_str(s.trim()) {
            return *u.as_bytes();
        }
    }
    if let Some(u) = default_hostnqn()
        .rsplit_once(":uuid:")
        .and_then(|(_, u)| uuid::Uuid::parse_str(u).ok())
    {
        return *u.as_bytes();
    }
    *process_uuid().as_bytes()
}

/// The UUID of the generated host NQN and host ID when /etc/nvme/hostnqn is
/// absent: derived from this machine's identity, so every `nvmf` process on
/// the machine presents the same host (connecting twice must not make two
/// controllers for one host; nvme-cli derives its default from the machine
/// too). Random only when the machine has no identity to read.
fn process_uuid() -> uuid::Uuid {
    static U: std::sync::OnceLock<uuid::Uuid> = std::sync::OnceLock::new();
    *U.get_or_init(|| {
        machine_uuid(
            std::path::Path::new("/sys/class/dmi/id/product_uuid"),
            std::path::Path::new("/etc/machine-id"),
        )
        .unwrap_or_else(uuid::Uuid::new_v4)
    })
}

/// Namespace of the UUIDs derived from a machine ID (a fixed random UUID, so
/// the host NQN does not reveal the machine ID itself).
const MACHINE_NS: uuid::Uuid = uuid::Uuid::from_u128(0x5c1e_7a54_8d0b_4f3e_9b8a_6e21_d4c7_0f93);

/// The machine's DMI product UUID if readable, else a name-based UUID of its
/// systemd machine ID.
pub(crate) fn machine_uuid(
    dmi: &std::path::Path,
    machine_id: &std::path::Path,
) -> Option<uuid::Uuid> {
    if let Some(u) = std::fs::read_to_string(dmi)
        .ok()
        .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
        .filter(|u| !u.is_nil())
    {
        return Some(u);
    }
    let id = std::fs::read_to_string(machine_id).ok()?;
    let id = id.trim();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| uuid::Uuid::new_v5(&MACHINE_NS, id.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_attempts_fit_the_loss_timeout() {
        let mut o = ConnectOptions::new("127.0.0.1:4420".parse().unwrap(), "nqn.x");
        let s = Duration::from_secs;
        for (tmo, delay, n) in [(10, 2, 5), (600, 10, 60), (11, 2, 5), (1, 10, 1)] {
            o.ctrl_loss_tmo = Some(s(tmo));
            o.reconnect_delay = s(delay);
            assert_eq!(o.max_reconnects(), Some(n), "tmo {tmo} s, delay {delay} s");
        }
        o.reconnect_delay = Duration::ZERO;
        o.ctrl_loss_tmo = Some(s(1));
        assert_eq!(o.max_reconnects(), Some(1000));
        o.ctrl_loss_tmo = None;
        assert_eq!(o.max_reconnects(), None);
    }

    #[test]
    fn host_identity_follows_the_machine() {
        let d = std::env::temp_dir().join(format!("nvmf-hostid-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let (dmi, mid) = (d.join("product_uuid"), d.join("machine-id"));
        std::fs::write(&mid, "0123456789abcdef0123456789abcdef\n").unwrap();
        let a = machine_uuid(&dmi, &mid).unwrap();
        assert_eq!(machine_uuid(&dmi, &mid), Some(a), "stable across calls");
        std::fs::write(&mid, "fedcba9876543210fedcba9876543210\n").unwrap();
        assert_ne!(
            machine_uuid(&dmi, &mid),
            Some(a),
            "another machine, another host"
        );
        std::fs::write(&dmi, "1b4e28ba-2fa1-11d2-883f-0016d3cca427\n").unwrap();
        assert_eq!(
            machine_uuid(&dmi, &mid).unwrap().to_string(),
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
        );
        std::fs::write(&mid, "garbage").unwrap();
        std::fs::remove_file(&dmi).unwrap();
        assert_eq!(machine_uuid(&dmi, &mid), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
