//! What the target serves: subsystems, their namespaces and the controllers
//! (associations) hosts have created, shared by every connection task.
//!
//! Namespace maps are copy-on-write snapshots behind a generation number, so the
//! I/O path reads a namespace without taking a lock once its queue has the current
//! snapshot; a reload swaps the snapshot and bumps the generation.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use nvmf_backend::Backend;
use nvmf_proto::features::{aec, aen_dw0, aen_notice, aen_type};
use nvmf_proto::log::{lid, ErrorLogEntry};
use tokio::sync::{mpsc, watch};

use crate::config::{BackendSpec, HostConfig, NamespaceConfig, SubsystemConfig, TargetConfig};
use nvmf_transport::TransportAddr;
use tracing::info;

/// Errors opening what the configuration names.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A namespace's backend could not be opened. The cause is the source, not
    /// part of this message, so that a printed chain (`{:#}`) names it once.
    #[error("subsystem {nqn} namespace {nsid} ({what})")]
    Backend {
        /// Subsystem.
        nqn: String,
        /// Namespace.
        nsid: u32,
        /// What it is stored on: "file PATH", "device PATH", "rbd POOL/IMAGE", ...
        what: String,
        /// The backend's error.
        #[source]
        source: nvmf_backend::BackendError,
    },
}

/// A namespace being served.
#[derive(Debug)]
pub struct Namespace {
    /// Namespace ID.
    pub nsid: u32,
    /// Where the data lives.
    pub backend: Arc<dyn Backend>,
    /// The configuration it was made from (to tell on reload whether it changed).
    pub config: NamespaceConfig,
    /// Namespace UUID.
    pub uuid: [u8; 16],
    /// NGUID (the UUID's bytes).
    pub nguid: [u8; 16],
    /// EUI-64 (from the UUID).
    pub eui64: [u8; 8],
    /// Reservations (NVMe Base 2.0 §8.19), persisted beside file and device backends.
    pub resv: Arc<crate::reservation::Reservation>,
    /// Orders writes against fused Compare and Write (NVMe Base 2.0 §3.4.2):
    /// every command that writes takes it shared, a fused pair takes it
    /// exclusively across its compare and its write, so no queue writes the
    /// namespace in between.
    pub write_order: Arc<crate::write_order::WriteOrder>,
}

impl Namespace {
    /// Opens the backend a namespace configuration names.
    pub fn open(subnqn: &str, cfg: &NamespaceConfig) -> Result<Self, RegistryError> {
        let what = cfg.backend.to_string();
        let err = |source| RegistryError::Backend {
            nqn: subnqn.to_string(),
            nsid: cfg.nsid,
            what: what.clone(),
            source,
        };
        let backend = match &cfg.backend {
            BackendSpec::Memory { size } => {
                nvmf_backend::open_memory(*size, cfg.block_size).map_err(err)?
            }
            BackendSpec::Null { size } => {
                nvmf_backend::open_null(*size, cfg.block_size).map_err(err)?
            }
            BackendSpec::File { path, size } => {
                nvmf_backend::open_file(path, *size, cfg.block_size, cfg.direct).map_err(err)?
            }
            BackendSpec::Device { path } => {
                nvmf_backend::open_block_device(path, Some(cfg.block_size)).map_err(err)?
            }
            BackendSpec::Rbd(spec) => nvmf_backend::rbd::open(spec, cfg.block_size).map_err(err)?,
        };
        let resv_path = match &cfg.backend {
            BackendSpec::File { path, .. } => Some(crate::reservation::state_path(path, false)),
            BackendSpec::Device { path } => Some(crate::reservation::state_path(path, true)),
            // PTPL state of an RBD namespace would belong in the cluster
            // (image metadata), not in a local file: not persisted.
            BackendSpec::Memory { .. } | BackendSpec::Null { .. } | BackendSpec::Rbd(_) => None,
        };
        let uuid = cfg.uuid.unwrap_or_else(|| {
            uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_OID,
                format!("{subnqn}/{}", cfg.nsid).as_bytes(),
            )
        });
        let b = *uuid.as_bytes();
        let mut eui64 = [0u8; 8];
        eui64.copy_from_slice(&b[8..16]);
        Ok(Self {
            nsid: cfg.nsid,
            backend,
            config: cfg.clone(),
            uuid: b,
            nguid: b,
            eui64,
            resv: Arc::new(crate::reservation::Reservation::open(resv_path)),
            write_order: Default::default(),
        })
    }
}

/// Namespaces of a subsystem, by NSID.
pub type NsMap = BTreeMap<u32, Arc<Namespace>>;

/// A subsystem being served.
#[derive(Debug)]
pub struct Subsystem {
    /// NQN.
    pub nqn: String,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    hosts: RwLock<Arc<Vec<HostConfig>>>,
    namespaces: RwLock<Arc<NsMap>>,
    ns_generation: AtomicU64,
    controllers: Mutex<HashMap<u16, Arc<CtrlShared>>>,
    /// The next CNTLID to try and the range handed out (cntlid_min..=cntlid_max).
    next_cntlid: Mutex<(u16, u16, u16)>,
    /// Connection events and the queues' command counters (crate::metrics).
    pub metrics: crate::metrics::SubsysMetrics,
}

impl Subsystem {
    fn new(cfg: &SubsystemConfig) -> Result<Self, RegistryError> {
        let mut map = NsMap::new();
        for n in &cfg.namespaces {
            map.insert(n.nsid, Arc::new(Namespace::open(&cfg.nqn, n)?));
        }
        Ok(Self {
            nqn: cfg.nqn.clone(),
            serial: cfg.serial.clone(),
            model: cfg.model.clone(),
            hosts: RwLock::new(Arc::new(cfg.hosts.clone())),
            namespaces: RwLock::new(Arc::new(map)),
            ns_generation: AtomicU64::new(1),
            controllers: Mutex::new(HashMap::new()),
            next_cntlid: Mutex::new((cfg.cntlid_min, cfg.cntlid_min, cfg.cntlid_max)),
            metrics: Default::default(),
        })
    }

    /// True if `hostnqn` may connect: the subsystem lists it, or lists no host
    /// at all (any host may connect).
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        let h = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        h.is_empty() || h.iter().any(|a| a.nqn == hostnqn)
    }

    /// The entry of `hostnqn`, if the subsystem lists it (with its secrets).
    pub fn host(&self, hostnqn: &str) -> Option<HostConfig> {
        let h = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        h.iter().find(|a| a.nqn == hostnqn).cloned()
    }

    /// The current namespace snapshot.
    pub fn namespaces(&self) -> Arc<NsMap> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The generation of the namespace snapshot; changes on every reload that
    /// touches this subsystem.
    pub fn ns_generation(&self) -> u64 {
        self.ns_generation.load(Ordering::Acquire)
    }

    /// Registers a new controller and returns it (dynamic controller model: IDs
    /// cntlid_min..=cntlid_max within 1..=0xFFEF, NVMe-oF 1.1 §4.2; two targets
    /// serving one subsystem use disjoint ranges so that CNTLIDs stay unique
    /// in the subsystem). `None` when every ID is in use.
    pub fn add_controller(
        self: &Arc<Self>,
        hostnqn: &str,
        hostid: [u8; 16],
        kato_ms: u32,
    ) -> Option<Arc<CtrlShared>> {
        let mut ctrls = self.controllers.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.next_cntlid.lock().unwrap_or_else(|e| e.into_inner());
        let (_, min, max) = *next;
        for _ in min..=max {
            let id = next.0.clamp(min, max);
            next.0 = if id >= max { min } else { id + 1 };
            if ctrls.contains_key(&id) {
                continue;
            }
            let c = Arc::new(CtrlShared::new(
                id,
                hostnqn.to_string(),
                hostid,
                self.clone(),
                kato_ms,
            ));
            ctrls.insert(id, c.clone());
            self.metrics
                .controllers_created
                .fetch_add(1, Ordering::Relaxed);
            return Some(c);
        }
        None
    }

    /// Looks up a live controller.
    pub fn controller(&self, cntlid: u16) -> Option<Arc<CtrlShared>> {
        self.controllers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cntlid)
            .cloned()
    }

    /// Forgets a controller (its admin queue ended).
    pub fn remove_controller(&self, cntlid: u16) {
        self.controllers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&cntlid);
    }

    pub(crate) fn all_controllers(&self) -> Vec<Arc<CtrlShared>> {
        self.controllers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The first half of a reload of this subsystem: opens the namespaces that
    /// are added or changed, touching nothing that runs. Returns the new map
    /// and the NSIDs that change (added, changed or removed).
    fn prepare(&self, cfg: &SubsystemConfig) -> Result<(NsMap, Vec<u32>), RegistryError> {
        let old = self.namespaces();
        let mut new = NsMap::new();
        let mut changed = Vec::new();
        for n in &cfg.namespaces {
            match old.get(&n.nsid) {
                Some(o) if o.config == *n => {
                    new.insert(n.nsid, o.clone());
                }
                _ => {
                    new.insert(n.nsid, Arc::new(Namespace::open(&cfg.nqn, n)?));
                    changed.push(n.nsid);
                }
            }
        }
        changed.extend(old.keys().filter(|k| !new.contains_key(k)));
        changed.sort_unstable();
        Ok((new, changed))
    }

    /// The second half: puts a prepared namespace map and the host list in
    /// force and tells every controller which NSIDs changed. Returns whether
    /// the allowed hosts changed (the discovery log of those hosts changes
    /// with them).
    fn apply(&self, cfg: &SubsystemConfig, new: NsMap, changed: &[u32]) -> bool {
        {
            // A new CNTLID range applies to the next controllers.
            let mut n = self.next_cntlid.lock().unwrap_or_else(|e| e.into_inner());
            if (n.1, n.2) != (cfg.cntlid_min, cfg.cntlid_max) {
                *n = (cfg.cntlid_min, cfg.cntlid_min, cfg.cntlid_max);
            }
        }
        let hosts_changed = {
            let mut h = self.hosts.write().unwrap_or_else(|e| e.into_inner());
            let changed = **h != cfg.hosts;
            *h = Arc::new(cfg.hosts.clone());
            changed
        };
        // A host taken off the list loses its controllers at once (as nvmet
        // does when an allowed_hosts link is removed), not at its next Connect.
        for c in self.all_controllers() {
            if !self.host_allowed(&c.hostnqn) {
                info!(subnqn = %self.nqn, hostnqn = %c.hostnqn, cntlid = c.cntlid,
                      "host removed from the subsystem's allowed hosts: ending its controller");
                c.close();
            }
        }
        if !changed.is_empty() {
            *self.namespaces.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
            self.ns_generation.fetch_add(1, Ordering::AcqRel);
            for c in self.all_controllers() {
                c.namespaces_changed(changed);
            }
        }
        hosts_changed
    }

    /// Delivers reservation notifications of namespace `nsid` to every
    /// controller of each named host (log page 80h and its event).
    pub fn notify_reservation(&self, nsid: u32, notices: &[crate::reservation::Notice]) {
        if notices.is_empty() {
            return;
        }
        for c in self.all_controllers() {
            for (hostid, ty) in notices {
                if c.hostid == *hostid {
                    if let Some(dw0) = c.resv.push(nsid, *ty) {
                        let _ = c.admin_tx.send(AdminSignal::Aen(dw0));
                    }
                }
            }
        }
    }

    /// Ends every controller (the subsystem is being removed).
    fn close_all(&self) {
        for c in self.all_controllers() {
            c.close();
        }
    }
}

/// An event for a controller's admin queue task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminSignal {
    /// Complete an outstanding Asynchronous Event Request with this DW0.
    Aen(u32),
    /// An I/O queue answered an Abort (NVMe Base 2.0 §5.1): complete the
    /// Abort command `cid` with DW0 bit 0 clear if the command was aborted.
    AbortDone {
        /// The Abort command's CID on the admin queue.
        cid: u16,
        /// The command was aborted.
        aborted: bool,
    },
}

/// An Abort the admin queue hands to the I/O queue that holds the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortRequest {
    /// The Abort command's CID (on the admin queue), for the answer.
    pub abort_cid: u16,
    /// The CID of the command to abort (on the I/O queue).
    pub cid: u16,
}

/// State of one controller (association) that its admin queue and I/O queues share.
#[derive(Debug)]
pub struct CtrlShared {
    /// Controller ID.
    pub cntlid: u16,
    /// The host's NQN.
    pub hostnqn: String,
    /// The host's identifier.
    pub hostid: [u8; 16],
    /// The subsystem.
    pub subsys: Arc<Subsystem>,
    /// CC.EN = 1 and CSTS.RDY = 1.
    pub ready: AtomicBool,
    /// I/O queues granted by Set Features Number of Queues.
    pub granted_io_queues: AtomicU32,
    /// Keep Alive Timeout in milliseconds (0 = none).
    pub kato_ms: AtomicU32,
    /// Asynchronous Event Configuration.
    pub aec: AtomicU32,
    /// ANA: the port reached through, the ANA Change notice's mask.
    pub ana: crate::ana::CtrlAna,
    last_activity_ms: AtomicU64,
    epoch: Instant,
    close_tx: watch::Sender<bool>,
    admin_tx: mpsc::UnboundedSender<AdminSignal>,
    admin_rx: Mutex<Option<mpsc::UnboundedReceiver<AdminSignal>>>,
    changed_ns: Mutex<Vec<u32>>,
    ns_aen_masked: AtomicBool,
    disc_aen_masked: AtomicBool,
    errors: Mutex<VecDeque<ErrorLogEntry>>,
    error_count: AtomicU64,
    io_queues: Mutex<Vec<u16>>,
    /// Reservation notifications of this controller.
    pub resv: crate::reservation::CtrlResv,
    io_abort: Mutex<HashMap<u16, mpsc::UnboundedSender<AbortRequest>>>,
}

/// Error log entries kept per controller (ELPE + 1).
pub const ERROR_LOG_ENTRIES: usize = 64;

impl CtrlShared {
    fn new(
        cntlid: u16,
        hostnqn: String,
        hostid: [u8; 16],
        subsys: Arc<Subsystem>,
        kato_ms: u32,
    ) -> Self {
        let (close_tx, _) = watch::channel(false);
        let (admin_tx, admin_rx) = mpsc::unbounded_channel();
        Self {
            cntlid,
            hostnqn,
            hostid,
            subsys,
            ready: AtomicBool::new(false),
            granted_io_queues: AtomicU32::new(0),
            kato_ms: AtomicU32::new(kato_ms),
            aec: AtomicU32::new(0),
            ana: crate::ana::CtrlAna::default(),
            last_activity_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            close_tx,
            admin_tx,
            admin_rx: Mutex::new(Some(admin_rx)),
            changed_ns: Mutex::new(Vec::new()),
            ns_aen_masked: AtomicBool::new(false),
            disc_aen_masked: AtomicBool::new(false),
            errors: Mutex::new(VecDeque::new()),
            error_count: AtomicU64::new(0),
            io_queues: Mutex::new(Vec::new()),
            resv: Default::default(),
            io_abort: Mutex::new(HashMap::new()),
        }
    }

    /// Takes the admin queue's signal receiver (once).
    pub fn take_admin_rx(&self) -> Option<mpsc::UnboundedReceiver<AdminSignal>> {
        self.admin_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// A receiver that turns true when the controller ends.
    pub fn close_watch(&self) -> watch::Receiver<bool> {
        self.close_tx.subscribe()
    }

    /// Ends the controller: every queue task closes its connection.
    pub fn close(&self) {
        self.ready.store(false, Ordering::Release);
        self.close_tx.send_replace(true);
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        *self.close_tx.borrow()
    }

    /// Records host activity, which restarts the keep-alive timer (TBKAS-style:
    /// any command counts, NVMe Base 2.0 §3.9.5).
    pub fn touch(&self) {
        self.last_activity_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Milliseconds since the last command.
    pub fn idle_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64)
            .saturating_sub(self.last_activity_ms.load(Ordering::Relaxed))
    }

    /// Registers an I/O queue; false if it already exists.
    pub fn add_io_queue(&self, qid: u16) -> bool {
        let mut q = self.io_queues.lock().unwrap_or_else(|e| e.into_inner());
        if q.contains(&qid) {
            return false;
        }
        q.push(qid);
        true
    }

    /// Registers where Abort requests for I/O queue `qid` go.
    pub fn set_abort_sender(&self, qid: u16, tx: mpsc::UnboundedSender<AbortRequest>) {
        self.io_abort
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(qid, tx);
    }

    /// Hands an Abort to I/O queue `qid`; false if that queue does not exist.
    pub fn send_abort(&self, qid: u16, req: AbortRequest) -> bool {
        self.io_abort
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&qid)
            .is_some_and(|tx| tx.send(req).is_ok())
    }

    /// Sends a signal to the admin queue's task.
    pub fn signal_admin(&self, sig: AdminSignal) {
        let _ = self.admin_tx.send(sig);
    }

    /// Forgets an I/O queue.
    pub fn remove_io_queue(&self, qid: u16) {
        self.io_abort
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&qid);
        self.io_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&x| x != qid);
    }

    /// Number of I/O queues connected.
    pub fn io_queue_count(&self) -> usize {
        self.io_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Adds to the changed namespace list and raises a Namespace Attribute Changed
    /// notice if enabled and not masked (NVMe Base 2.0 §5.2: masked until the log is read).
    pub fn namespaces_changed(&self, nsids: &[u32]) {
        {
            let mut l = self.changed_ns.lock().unwrap_or_else(|e| e.into_inner());
            for n in nsids {
                if !l.contains(n) {
                    l.push(*n);
                }
            }
        }
        if self.aec.load(Ordering::Relaxed) & aec::NS_ATTRIBUTE != 0
            && !self.ns_aen_masked.swap(true, Ordering::AcqRel)
        {
            let _ = self.admin_tx.send(AdminSignal::Aen(aen_dw0(
                aen_type::NOTICE,
                aen_notice::NS_ATTRIBUTE_CHANGED,
                lid::CHANGED_NS,
            )));
        }
    }

    /// Completes an Asynchronous Event Request with `dw0` (or queues it until
    /// the host sends one).
    pub(crate) fn send_aen(&self, dw0: u32) {
        let _ = self.admin_tx.send(AdminSignal::Aen(dw0));
    }

    /// Raises a Discovery Log Page Change notice (Notice F0h, log page 70h;
    /// NVMe Base 2.0 Figure 147, NVMe-oF 1.1 §5.3) if the host enabled it
    /// (Asynchronous Event Configuration bit 31). Further changes are masked
    /// until the host reads the log with RAE clear (Base 2.0 §5.2; nvmet
    /// `nvmet_aen_bit_disabled(ctrl, NVME_AEN_BIT_DISC_CHANGE)`): one notice
    /// per read, however many reloads happen in between. True if a notice was
    /// sent.
    pub fn discovery_changed(&self) -> bool {
        if self.aec.load(Ordering::Relaxed) & aec::DISCOVERY_LOG_CHANGE != 0
            && !self.disc_aen_masked.swap(true, Ordering::AcqRel)
        {
            let _ = self.admin_tx.send(AdminSignal::Aen(aen_dw0(
                aen_type::NOTICE,
                aen_notice::DISCOVERY_LOG_CHANGE,
                lid::DISCOVERY,
            )));
            return true;
        }
        false
    }

    /// The host read the discovery log: unless `rae` (Retain Asynchronous
    /// Event), the next change raises a notice again.
    pub fn discovery_log_read(&self, rae: bool) {
        if !rae {
            self.disc_aen_masked.store(false, Ordering::Release);
        }
    }

    /// Takes the changed namespace list (reading the log clears it); `rae` keeps
    /// the event masked (Retain Asynchronous Event).
    pub fn take_changed_ns(&self, rae: bool) -> Vec<u32> {
        let v = std::mem::take(&mut *self.changed_ns.lock().unwrap_or_else(|e| e.into_inner()));
        if !rae {
            self.ns_aen_masked.store(false, Ordering::Release);
        }
        v
    }

    /// Adds an Error Information log entry.
    pub fn log_error(&self, mut e: ErrorLogEntry) {
        e.error_count = self.error_count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut l = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() == ERROR_LOG_ENTRIES {
            l.pop_back();
        }
        l.push_front(e);
    }

    /// Error log entries, newest first.
    pub fn errors(&self) -> Vec<ErrorLogEntry> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Total errors logged.
    pub fn error_total(&self) -> u64 {
        self.error_count.load(Ordering::Relaxed)
    }
}

/// Everything the target serves.
#[derive(Debug)]
pub struct Registry {
    subsystems: RwLock<BTreeMap<String, Arc<Subsystem>>>,
    genctr: AtomicU64,
    /// Discovery controllers, to notify of log changes.
    discovery_ctrls: Mutex<Vec<std::sync::Weak<CtrlShared>>>,
    /// The discovery subsystem (holds discovery controllers).
    pub discovery: Arc<Subsystem>,
    /// Referrals to other discovery services (discovery log SUBTYPE 1).
    referrals: RwLock<Vec<TransportAddr>>,
    /// When the target started, for SMART power-on hours.
    pub started: Instant,
    /// ANA states of every listen port and group.
    pub ana: crate::ana::AnaTable,
    /// Target-wide counters (crate::metrics).
    pub metrics: crate::metrics::TargetMetrics,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Subsystems added.
    pub added: Vec<String>,
    /// Subsystems removed.
    pub removed: Vec<String>,
    /// Namespaces added, removed or replaced, by subsystem.
    pub changed_namespaces: Vec<(String, Vec<u32>)>,
    /// ANA states changed: "ADDR:PORT group N: STATE".
    pub ana_changed: Vec<String>,
    /// The referrals changed.
    pub referrals_changed: bool,
    /// Discovery controllers sent a Discovery Log Change notice.
    pub discovery_notices: usize,
}

/// One plain line for logs: what changed, in words (no Rust debug syntax).
impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("added {}", self.added.join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(", ")));
        }
        for (nqn, nsids) in &self.changed_namespaces {
            let n: Vec<String> = nsids.iter().map(u32::to_string).collect();
            parts.push(format!("{nqn}: namespaces {} changed", n.join(", ")));
        }
        if !self.ana_changed.is_empty() {
            parts.push(format!(
                "ANA states changed in {}",
                self.ana_changed.join(", ")
            ));
        }
        if self.referrals_changed {
            parts.push("referrals changed".into());
        }
        if self.discovery_notices > 0 {
            parts.push(format!(
                "{} discovery log change notice(s) sent",
                self.discovery_notices
            ));
        }
        if parts.is_empty() {
            f.write_str("no change")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

impl Registry {
    /// Opens every subsystem and namespace of `cfg`.
    pub fn new(cfg: &TargetConfig) -> Result<Self, RegistryError> {
        let mut map = BTreeMap::new();
        for s in &cfg.subsystems {
            map.insert(s.nqn.clone(), Arc::new(Subsystem::new(s)?));
        }
        let disc = SubsystemConfig {
            nqn: nvmf_proto::fabrics::DISCOVERY_NQN.into(),
            serial: crate::config::default_serial(nvmf_proto::fabrics::DISCOVERY_NQN),
            model: "nvmf-rs discovery".into(),
            hosts: vec![],
            namespaces: vec![],
            cntlid_min: 1,
            cntlid_max: crate::config::CNTLID_MAX,
        };
        Ok(Self {
            subsystems: RwLock::new(map),
            genctr: AtomicU64::new(1),
            discovery_ctrls: Mutex::new(Vec::new()),
            discovery: Arc::new(Subsystem::new(&disc)?),
            referrals: RwLock::new(cfg.referrals.clone()),
            started: Instant::now(),
            ana: crate::ana::AnaTable::new(&cfg.listen, &cfg.ana_states),
            metrics: Default::default(),
        })
    }

    /// Looks up a subsystem by NQN.
    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        self.subsystems
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(nqn)
            .cloned()
    }

    /// All subsystems.
    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        self.subsystems
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Discovery log generation counter.
    pub fn genctr(&self) -> u64 {
        self.genctr.load(Ordering::Acquire)
    }

    /// The referrals to other discovery services.
    pub fn referrals(&self) -> Vec<TransportAddr> {
        self.referrals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The NQNs of the subsystems `hostnqn` may reach: what its discovery log
    /// lists, apart from the ports and referrals.
    fn visible_to(&self, hostnqn: &str) -> Vec<String> {
        self.subsystems
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| s.host_allowed(hostnqn))
            .map(|s| s.nqn.clone())
            .collect()
    }

    /// The discovery controllers still connected.
    fn discovery_controllers(&self) -> Vec<Arc<CtrlShared>> {
        let mut l = self
            .discovery_ctrls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        l.retain(|w| w.strong_count() > 0);
        l.iter().filter_map(std::sync::Weak::upgrade).collect()
    }

    /// Remembers a discovery controller for change notices.
    pub fn add_discovery_ctrl(&self, c: &Arc<CtrlShared>) {
        let mut l = self
            .discovery_ctrls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        l.retain(|w| w.strong_count() > 0);
        l.push(Arc::downgrade(c));
    }

    /// Applies a new configuration without a restart: subsystems and namespaces are
    /// added, removed or replaced; hosts get Namespace Attribute Changed and
    /// Discovery Log Page Change notices. Listen addresses and limits need a restart.
    pub fn reload(&self, cfg: &TargetConfig) -> Result<ReloadSummary, RegistryError> {
        let mut summary = ReloadSummary::default();
        let mut hosts_changed = false;
        // What each connected discovery controller's host sees now, to tell
        // after the reload whose discovery log changed.
        let disc_before: Vec<(Arc<CtrlShared>, Vec<String>)> = self
            .discovery_controllers()
            .into_iter()
            .map(|c| {
                let v = self.visible_to(&c.hostnqn);
                (c, v)
            })
            .collect();
        // Open everything new first, so a bad namespace leaves the running set alone.
        let mut fresh = Vec::new();
        for s in &cfg.subsystems {
            if self.subsystem(&s.nqn).is_none() {
                fresh.push(Arc::new(Subsystem::new(s)?));
            }
        }
        // Then every changed namespace of the subsystems that stay: a reload is
        // applied whole or not at all, so a namespace that fails to open
        // leaves every subsystem as it was.
        let mut prepared = Vec::new();
        for s in &cfg.subsystems {
            if let Some(existing) = self.subsystem(&s.nqn) {
                let (map, changed) = existing.prepare(s)?;
                prepared.push((existing, s, map, changed));
            }
        }
        for (existing, s, map, changed) in prepared {
            let moved = crate::ana::groups_moved(&existing.namespaces(), &map);
            hosts_changed |= existing.apply(s, map, &changed);
            if moved {
                crate::ana::namespaces_moved(&self.ana, &existing);
            }
            if !changed.is_empty() {
                summary.changed_namespaces.push((s.nqn.clone(), changed));
            }
        }
        {
            let mut map = self.subsystems.write().unwrap_or_else(|e| e.into_inner());
            for f in fresh {
                summary.added.push(f.nqn.clone());
                map.insert(f.nqn.clone(), f);
            }
            let keep: Vec<&str> = cfg.subsystems.iter().map(|s| s.nqn.as_str()).collect();
            let gone: Vec<String> = map
                .keys()
                .filter(|k| !keep.contains(&k.as_str()))
                .cloned()
                .collect();
            for g in gone {
                if let Some(s) = map.remove(&g) {
                    s.close_all();
                }
                summary.removed.push(g);
            }
        }
        let ana = self.ana.apply(&cfg.ana_states);
        for &(p, g) in &ana {
            let port = self
                .ana
                .ports()
                .get(p)
                .map(|a| a.to_string())
                .unwrap_or_default();
            summary
                .ana_changed
                .push(format!("{port} group {g}: {}", self.ana.state(Some(p), g)));
        }
        crate::ana::notify_changed(self, &ana);
        {
            let mut r = self.referrals.write().unwrap_or_else(|e| e.into_inner());
            if *r != cfg.referrals {
                *r = cfg.referrals.clone();
                summary.referrals_changed = true;
            }
        }
        // GENCTR is one counter for every host (as nvmet's `nvmet_genctr`); it
        // moves whenever some host's log may have changed. The notice goes to
        // the discovery controllers whose own log changed (nvmet
        // `nvmet_subsys_disc_changed` checks the host is allowed).
        if !summary.added.is_empty()
            || !summary.removed.is_empty()
            || hosts_changed
            || summary.referrals_changed
        {
            self.genctr.fetch_add(1, Ordering::AcqRel);
            for (c, before) in disc_before {
                if summary.referrals_changed || self.visible_to(&c.hostnqn) != before {
                    summary.discovery_notices += usize::from(c.discovery_changed());
                }
            }
        }
        Ok(summary)
    }
}
