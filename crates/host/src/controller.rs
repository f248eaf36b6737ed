//! [`Controller`]: a live association usable from many tasks, with keep alive,
//! asynchronous events and reconnect.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use nvmf_proto::features::{aen_fields, aen_notice, aen_type};
use nvmf_proto::identify::{cns, decode_ns_list, IdentifyController, IdentifyNamespace};
use nvmf_proto::log::{decode_ana_log, lid, AnaGroup};
use nvmf_proto::sqe::{admin_opcode, io_opcode};
use nvmf_proto::tcp::{Completion, HostData};
use nvmf_proto::{Sqe, Status};
use nvmf_transport::HostConnection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::assoc::{self, check, ControllerInfo};
use crate::error::{Error, Result};
use crate::options::ConnectOptions;
use crate::queue::{self, Ctl, Failure, Request, Timeouts};

/// An active namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Namespace ID.
    pub nsid: u32,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Size in logical blocks (NSZE).
    pub blocks: u64,
    /// The Identify Namespace data.
    pub id: IdentifyNamespace,
}

impl Namespace {
    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}

/// An asynchronous event reported by the controller (NVMe Base 2.0 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncEvent {
    /// Asynchronous Event Type (0 error, 1 SMART/health, 2 notice, ...).
    pub event_type: u8,
    /// Asynchronous Event Information.
    pub info: u8,
    /// Log page to read to clear the event.
    pub log_page: u8,
    /// The raw completion DW0.
    pub dw0: u32,
}

/// State of the association behind a [`Controller`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Connected.
    Live,
    /// The association was lost; reconnect attempt `attempt` is under way.
    Reconnecting {
        /// Attempts made so far.
        attempt: u32,
        /// The error that ended the last association or attempt.
        last_error: String,
    },
    /// ctrl_loss_tmo passed without a new association; every command fails.
    Lost(String),
    /// Disconnected by the caller.
    Disconnected,
}

struct Inner {
    opts: ConnectOptions,
    admin: mpsc::Sender<Request>,
    io: Vec<mpsc::Sender<Request>>,
    ctl: Vec<mpsc::UnboundedSender<Ctl>>,
    rr: AtomicUsize,
    gen: AtomicU64,
    fail_tx: mpsc::UnboundedSender<Failure>,
    info: RwLock<ControllerInfo>,
    namespaces: RwLock<Vec<Namespace>>,
    state: Mutex<LinkState>,
    events: Mutex<Option<mpsc::Receiver<AsyncEvent>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    ana: RwLock<AnaCache>,
}

/// The ANA log page (NVMe Base 2.0 §5.16.1.12) as last read: on connect, on
/// every reconnect and after each ANA Change notice.
#[derive(Default)]
struct AnaCache {
    /// The page was read at least once.
    read: bool,
    /// Its Change Count.
    chgcnt: u64,
    /// Its group descriptors, with their NSIDs.
    groups: Vec<AnaGroup>,
}

/// A controller association: an admin queue and I/O queues, each driven by its own
/// task. Cheap to clone; every clone talks to the same association.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
    /// Commands sent through this handle fail at once when the association
    /// is lost instead of waiting for the next one (see [`Self::failfast`]).
    failfast: bool,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("addr", &self.inner.opts.addr)
            .field("subnqn", &self.inner.opts.subnqn)
            .field("state", &self.state())
            .finish()
    }
}

fn ns_from(nsid: u32, id: IdentifyNamespace) -> Namespace {
    Namespace {
        nsid,
        block_size: id.block_size(),
        blocks: id.nsze,
        id,
    }
}

impl Controller {
    /// Connects: brings up the admin queue and the I/O queues, reads the namespaces,
    /// starts keep alive (every KATO/2) and the Asynchronous Event Requests.
    pub async fn connect(opts: ConnectOptions) -> Result<Self> {
        let mut a = assoc::establish(&opts).await?;
        let nss = assoc::read_namespaces_direct(&mut a.admin).await?;
        let (fail_tx, fail_rx) = mpsc::unbounded_channel();
        let mut ctl = Vec::new();
        let mut tasks = Vec::new();
        let mut spawn_queue = |qid: u16, conn: HostConnection, depth: usize, tmo: Timeouts| {
            let (req_tx, req_rx) = mpsc::channel(depth.max(16) * 4);
            let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
            ctl.push(ctl_tx);
            tasks.push(tokio::spawn(queue::run(
                qid,
                Some(Box::new(conn)),
                0,
                req_rx,
                ctl_rx,
                fail_tx.clone(),
                tmo,
            )));
            req_tx
        };
        let admin_tmo = Timeouts {
            limit: opts.admin_timeout,
            abort_to: None,
        };
        let admin = spawn_queue(0, a.admin, 32, admin_tmo);
        let io_tmo = Timeouts {
            limit: opts.io_timeout,
            abort_to: Some(admin.clone()),
        };
        let qsize = usize::from(a.info.io_queue_size);
        let io: Vec<_> =
            a.io.into_iter()
                .enumerate()
                .map(|(i, c)| spawn_queue(i as u16 + 1, c, qsize, io_tmo.clone()))
                .collect();
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let aers = if opts.is_discovery() {
            0
        } else {
            (usize::from(a.info.id.aerl) + 1).min(4)
        };
        let kato = opts.kato_ms;
        let ctrl = Controller {
            failfast: false,
            inner: Arc::new(Inner {
                opts,
                admin,
                io,
                ctl,
                rr: AtomicUsize::new(0),
                gen: AtomicU64::new(0),
                fail_tx,
                info: RwLock::new(a.info),
                namespaces: RwLock::new(nss.into_iter().map(|(n, id)| ns_from(n, id)).collect()),
                state: Mutex::new(LinkState::Live),
                events: Mutex::new(Some(ev_rx)),
                tasks: Mutex::new(tasks),
                ana: RwLock::new(AnaCache::default()),
            }),
        };
        let mut t = Vec::new();
        t.push(tokio::spawn(supervise(
            Arc::downgrade(&ctrl.inner),
            fail_rx,
        )));
        if kato > 0 {
            t.push(tokio::spawn(keep_alive(Arc::downgrade(&ctrl.inner), kato)));
        }
        for _ in 0..aers {
            t.push(tokio::spawn(aer_loop(
                Arc::downgrade(&ctrl.inner),
                ev_tx.clone(),
            )));
        }
        lock(&ctrl.inner.tasks).extend(t);
        if let Err(e) = ctrl.refresh_ana().await {
            tracing::warn!("reading the ANA log page: {e}");
        }
        Ok(ctrl)
    }

    /// A handle on the same association whose commands, when the association
    /// is lost (or while it is being re-established), fail at once with
    /// [`Error::PathUnavailable`] instead of being kept and sent again on the
    /// next association. For a multipath layer, which retries them on another
    /// path: a command kept here could otherwise reach the namespace again,
    /// later, after the other path wrote newer data (Linux likewise fails
    /// REQ_NVME_MPATH requests over instead of requeueing them).
    pub fn failfast(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            failfast: true,
        }
    }

    /// True when `other` is a handle on the same association.
    pub fn same_association(&self, other: &Controller) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// True when the controller reports Asymmetric Namespace Access (Identify
    /// Controller CMIC bit 3, NVMe Base 2.0 Figure 275).
    pub fn ana_reporting(&self) -> bool {
        self.info().id.cmic & nvmf_proto::identify::cmic::ANA != 0
    }

    /// The ANA state (NVMe Base 2.0 §8.1.3; the codes of
    /// [`nvmf_proto::log::ana_state`]) of namespace `nsid` through this
    /// controller, from the ANA log page as last read: the group listing
    /// `nsid`, else the group of its Identify Namespace ANAGRPID. `None` when
    /// the controller does not report ANA or the log did not name it.
    pub fn ana_state(&self, nsid: u32) -> Option<u8> {
        let a = read(&self.inner.ana);
        if !a.read {
            return None;
        }
        if let Some(g) = a.groups.iter().find(|g| g.nsids.contains(&nsid)) {
            return Some(g.state);
        }
        let grp = self.namespace(nsid).ok()?.id.anagrpid;
        a.groups.iter().find(|g| g.grpid == grp).map(|g| g.state)
    }

    /// The ANA group descriptors as last read (empty when not read).
    pub fn ana_groups(&self) -> Vec<AnaGroup> {
        read(&self.inner.ana).groups.clone()
    }

    /// Reads the ANA log page now (with the NSIDs: RGO clear) and keeps it for
    /// [`Self::ana_state`]. Nothing to do when the controller does not report
    /// ANA. Done on connect, reconnect and after each ANA Change notice
    /// (NVMe Base 2.0 §8.1.4: the host reads the log to learn the new states);
    /// a multipath layer also calls it after an ANA status, as Linux queues
    /// its ana_work from nvme_failover_req.
    pub async fn refresh_ana(&self) -> Result<()> {
        if !self.ana_reporting() {
            return Ok(());
        }
        let id = self.info().id;
        // Header, one descriptor per group, one NSID per namespace (Figure 225).
        let groups = id.nanagrpid.clamp(1, 1024);
        let nsids = id.nn.clamp(self.namespaces().len() as u32, 4096);
        let len = 16 + 32 * groups + 4 * nsids;
        let page = Self {
            inner: self.inner.clone(),
            failfast: false,
        }
        .get_log_page(lid::ANA, 0xffff_ffff, len)
        .await?;
        let (chgcnt, groups) = decode_ana_log(&page);
        let mut a = write(&self.inner.ana);
        if a.read && chgcnt != 0 && chgcnt < a.chgcnt {
            // An older page than the one kept (two reads crossed).
            return Ok(());
        }
        *a = AnaCache {
            read: true,
            chgcnt,
            groups,
        };
        Ok(())
    }

    /// The options this controller was connected with.
    pub fn options(&self) -> &ConnectOptions {
        &self.inner.opts
    }

    /// What the bring-up learnt (refreshed on every reconnect).
    pub fn info(&self) -> ControllerInfo {
        read(&self.inner.info).clone()
    }

    /// The association's state.
    pub fn state(&self) -> LinkState {
        lock(&self.inner.state).clone()
    }

    /// Number of I/O queues.
    pub fn nr_io_queues(&self) -> u16 {
        self.inner.io.len() as u16
    }

    /// The receiver of asynchronous events; `Some` on the first call only.
    pub fn events(&self) -> Option<mpsc::Receiver<AsyncEvent>> {
        lock(&self.inner.events).take()
    }

    /// The active namespaces, as last read.
    pub fn namespaces(&self) -> Vec<Namespace> {
        read(&self.inner.namespaces).clone()
    }

    /// One namespace, as last read.
    pub fn namespace(&self, nsid: u32) -> Result<Namespace> {
        read(&self.inner.namespaces)
            .iter()
            .find(|n| n.nsid == nsid)
            .cloned()
            .ok_or_else(|| {
                let have: Vec<String> = self
                    .namespaces()
                    .iter()
                    .map(|n| n.nsid.to_string())
                    .collect();
                Error::Invalid(format!(
                    "namespace {nsid} is not active on this controller (active: {})",
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                ))
            })
    }

    async fn send(
        &self,
        tx: &mpsc::Sender<Request>,
        sqe: Sqe,
        data: HostData,
    ) -> Result<oneshot::Receiver<Result<Completion>>> {
        let (reply, rx) = oneshot::channel();
        tx.send(Request {
            sqe,
            data,
            reply,
            failfast: self.failfast,
        })
        .await
        .map_err(|_| Error::Disconnected)?;
        Ok(rx)
    }

    async fn wait(rx: oneshot::Receiver<Result<Completion>>) -> Result<Completion> {
        rx.await.map_err(|_| Error::Disconnected)?
    }

    /// Runs an admin command. A completion with an error status is [`Error::Nvme`].
    pub async fn admin(&self, sqe: Sqe, data: HostData) -> Result<Completion> {
        let c = Self::wait(self.send(&self.inner.admin, sqe, data).await?).await?;
        check(c, &sqe, true)
    }

    fn io_tx(&self, qid: Option<u16>) -> Result<&mpsc::Sender<Request>> {
        let n = self.inner.io.len();
        if n == 0 {
            return Err(Error::Invalid("this controller has no I/O queues".into()));
        }
        match qid {
            Some(q) if q >= 1 && usize::from(q) <= n => Ok(&self.inner.io[usize::from(q) - 1]),
            Some(q) => Err(Error::Invalid(format!("no I/O queue {q} (queues 1..={n})"))),
            None => Ok(&self.inner.io[self.inner.rr.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    /// Runs an I/O command on queue `qid` (1-based), or round-robin with `None`.
    pub async fn io(&self, qid: Option<u16>, sqe: Sqe, data: HostData) -> Result<Completion> {
        let c = Self::wait(self.send(self.io_tx(qid)?, sqe, data).await?).await?;
        check(c, &sqe, false)
    }

    fn blocks_per_cmd(&self, ns: &Namespace) -> u64 {
        let max = self.info().max_transfer.max(ns.block_size);
        (u64::from(max / ns.block_size)).clamp(1, 65536)
    }

    /// Reads `nblocks` blocks from `slba`, split by MDTS and spread over the I/O queues.
    pub async fn read(&self, nsid: u32, slba: u64, nblocks: u64) -> Result<Vec<u8>> {
        let ns = self.namespace(nsid)?;
        check_range(&ns, slba, nblocks)?;
        let per = self.blocks_per_cmd(&ns);
        let mut rxs = Vec::new();
        let mut lba = slba;
        while lba < slba + nblocks {
            let n = per.min(slba + nblocks - lba);
            let sqe = Sqe::rw(io_opcode::READ, nsid, lba, n as u32, false);
            let len = (n * u64::from(ns.block_size)) as u32;
            rxs.push((
                sqe,
                self.send(self.io_tx(None)?, sqe, HostData::FromController(len))
                    .await?,
            ));
            lba += n;
        }
        let mut out = Vec::with_capacity((nblocks * u64::from(ns.block_size)) as usize);
        for (sqe, rx) in rxs {
            let c = check(Self::wait(rx).await?, &sqe, false)?;
            for d in &c.data {
                out.extend_from_slice(d);
            }
        }
        Ok(out)
    }

    /// Writes `data` (a whole number of blocks) at `slba`, split by MDTS and spread
    /// over the I/O queues. Returns once every part was acknowledged by the controller.
    pub async fn write(
        &self,
        nsid: u32,
        slba: u64,
        data: impl Into<Bytes>,
        fua: bool,
    ) -> Result<()> {
        self.send_blocks(io_opcode::WRITE, nsid, slba, data.into(), fua)
            .await
    }

    /// Sends `data` (a whole number of blocks) at `slba` with `opcode` (Write or
    /// Compare), split by MDTS and spread over the I/O queues; waits for every
    /// part and returns the first error.
    async fn send_blocks(
        &self,
        opcode: u8,
        nsid: u32,
        slba: u64,
        data: Bytes,
        fua: bool,
    ) -> Result<()> {
        let ns = self.namespace(nsid)?;
        let bs = u64::from(ns.block_size);
        if bs == 0 || !(data.len() as u64).is_multiple_of(bs) {
            return Err(Error::Invalid(format!(
                "{} bytes is not a whole number of {bs}-byte blocks",
                data.len()
            )));
        }
        let nblocks = data.len() as u64 / bs;
        check_range(&ns, slba, nblocks)?;
        let per = self.blocks_per_cmd(&ns);
        let mut rxs = Vec::new();
        let mut off = 0u64;
        while off < nblocks {
            let n = per.min(nblocks - off);
            let sqe = Sqe::rw(opcode, nsid, slba + off, n as u32, fua);
            let part = data.slice((off * bs) as usize..((off + n) * bs) as usize);
            rxs.push((
                sqe,
                self.send(self.io_tx(None)?, sqe, HostData::ToController(part))
                    .await?,
            ));
            off += n;
        }
        let mut first_err = None;
        for (sqe, rx) in rxs {
            if let Err(e) = Self::wait(rx).await.and_then(|c| check(c, &sqe, false)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Verify (NVM Command Set 1.0 §3.3.4): the controller reads `nblocks`
    /// blocks from `slba` and reports whether it could; no data moves. Split
    /// into commands of at most 65536 blocks (the 16-bit NLB field). A block
    /// that cannot be read is [`Error::Nvme`] with the controller's status.
    pub async fn verify(&self, nsid: u32, slba: u64, nblocks: u64) -> Result<()> {
        self.no_data_in_pieces(nsid, slba, nblocks, |lba, n| Sqe::verify(nsid, lba, n))
            .await
    }

    /// Runs a command that moves no data over `nblocks` blocks from `slba`
    /// (checked against the namespace), one command per 65536 blocks (the
    /// 16-bit NLB field), each built by `sqe(lba, blocks)` and sent after the
    /// one before completed; stops at the first error.
    async fn no_data_in_pieces(
        &self,
        nsid: u32,
        slba: u64,
        nblocks: u64,
        sqe: impl Fn(u64, u32) -> Sqe,
    ) -> Result<()> {
        let ns = self.namespace(nsid)?;
        check_range(&ns, slba, nblocks)?;
        let (mut lba, end) = (slba, slba + nblocks);
        while lba < end {
            let n = (end - lba).min(65536);
            self.io(None, sqe(lba, n as u32), HostData::None).await?;
            lba += n;
        }
        Ok(())
    }

    /// Compare (NVM Command Set 1.0 §3.2.1): the controller compares `data` (a
    /// whole number of blocks) with the blocks at `slba`, split by MDTS. A
    /// mismatch is [`Error::Nvme`] with status Compare Failure.
    pub async fn compare(&self, nsid: u32, slba: u64, data: impl Into<Bytes>) -> Result<()> {
        self.send_blocks(io_opcode::COMPARE, nsid, slba, data.into(), false)
            .await
    }

    /// Copy (NVM Command Set 1.0 §3.3.1): the controller copies the source
    /// ranges, in order, to consecutive blocks from `sdlba`, with Source Range
    /// Entries format 0. Ranges beyond the namespace's MSRC / MSSRL / MCL
    /// (Identify Namespace) are refused here before anything is sent.
    pub async fn copy(
        &self,
        nsid: u32,
        sdlba: u64,
        ranges: &[nvmf_proto::sqe::CopySourceRange],
        fua: bool,
    ) -> Result<()> {
        let ns = self.namespace(nsid)?;
        let id = &ns.id;
        if ranges.is_empty() || ranges.len() > usize::from(id.msrc) + 1 {
            return Err(Error::Invalid(format!(
                "{} source ranges; the namespace takes 1 to {} (MSRC)",
                ranges.len(),
                usize::from(id.msrc) + 1
            )));
        }
        let mut total = 0u64;
        for r in ranges {
            if r.nlb == 0 || r.nlb > 65536 {
                return Err(Error::Invalid(format!("a range of {} blocks", r.nlb)));
            }
            if id.mssrl != 0 && r.nlb > u32::from(id.mssrl) {
                return Err(Error::Invalid(format!(
                    "a range of {} blocks is longer than MSSRL ({})",
                    r.nlb, id.mssrl
                )));
            }
            check_range(&ns, r.slba, u64::from(r.nlb))?;
            total += u64::from(r.nlb);
        }
        if id.mcl != 0 && total > u64::from(id.mcl) {
            return Err(Error::Invalid(format!(
                "{total} blocks in all is more than MCL ({})",
                id.mcl
            )));
        }
        check_range(&ns, sdlba, total)?;
        let mut list = Vec::with_capacity(ranges.len() * nvmf_proto::sqe::CopySourceRange::SIZE);
        for r in ranges {
            list.extend_from_slice(&r.encode());
        }
        let sqe = Sqe::copy(nsid, sdlba, ranges.len() as u32, fua);
        self.io(None, sqe, HostData::ToController(Bytes::from(list)))
            .await
            .map(|_| ())
    }

    /// Write Zeroes (NVM Command Set 1.0 §3.2.8): `nblocks` blocks from `slba`
    /// read as zeroes afterwards; no data moves. Split into commands of at most
    /// 65536 blocks (the 16-bit NLB field), sent one after another. `deac` lets
    /// the controller deallocate the blocks instead of writing them.
    pub async fn write_zeroes(
        &self,
        nsid: u32,
        slba: u64,
        nblocks: u64,
        deac: bool,
        fua: bool,
    ) -> Result<()> {
        self.no_data_in_pieces(nsid, slba, nblocks, |lba, n| {
            Sqe::write_zeroes(nsid, lba, n, deac, fua)
        })
        .await
    }

    /// Dataset Management (NVM Command Set 1.0 §3.2.3): sends `ranges` (1 to
    /// 256, each inside the namespace) with the CDW11 `attributes`
    /// ([`nvmf_proto::sqe::dsm_attr`]: AD deallocates, IDR and IDW are hints).
    pub async fn dsm(
        &self,
        nsid: u32,
        ranges: &[nvmf_proto::sqe::DsmRange],
        attributes: u32,
    ) -> Result<()> {
        use nvmf_proto::sqe::DsmRange;
        if ranges.is_empty() || ranges.len() > DsmRange::MAX_RANGES {
            return Err(Error::Invalid(format!(
                "{} ranges; Dataset Management takes 1 to {}",
                ranges.len(),
                DsmRange::MAX_RANGES
            )));
        }
        let ns = self.namespace(nsid)?;
        let mut list = Vec::with_capacity(ranges.len() * DsmRange::SIZE);
        for r in ranges {
            check_range(&ns, r.slba, u64::from(r.nlb))?;
            list.extend_from_slice(&r.encode());
        }
        let sqe = Sqe::dsm(nsid, ranges.len() as u32, attributes);
        self.io(None, sqe, HostData::ToController(Bytes::from(list)))
            .await
            .map(|_| ())
    }

    /// Deallocates (trims) `nblocks` blocks from `slba`: Dataset Management
    /// with AD, in ranges of at most 2^32 - 1 blocks, 256 ranges a command.
    pub async fn deallocate(&self, nsid: u32, slba: u64, nblocks: u64) -> Result<()> {
        use nvmf_proto::sqe::{dsm_attr, DsmRange};
        let mut ranges = Vec::new();
        let (mut lba, end) = (slba, slba + nblocks);
        while lba < end {
            let n = (end - lba).min(u64::from(u32::MAX));
            ranges.push(DsmRange {
                attributes: 0,
                nlb: n as u32,
                slba: lba,
            });
            lba += n;
        }
        for chunk in ranges.chunks(DsmRange::MAX_RANGES) {
            self.dsm(nsid, chunk, dsm_attr::AD).await?;
        }
        Ok(())
    }

    /// Flush.
    pub async fn flush(&self, nsid: u32) -> Result<()> {
        let mut s = Sqe::new(io_opcode::FLUSH);
        s.nsid = nsid;
        self.io(None, s, HostData::None).await.map(|_| ())
    }

    /// Identify Controller, read now.
    pub async fn identify_controller(&self) -> Result<IdentifyController> {
        let c = self
            .admin(
                Sqe::identify(cns::CONTROLLER, 0),
                HostData::FromController(4096),
            )
            .await?;
        Ok(IdentifyController::decode(&c.data_contiguous()))
    }

    /// Identify Namespace, read now.
    pub async fn identify_namespace(&self, nsid: u32) -> Result<IdentifyNamespace> {
        let c = self
            .admin(
                Sqe::identify(cns::NAMESPACE, nsid),
                HostData::FromController(4096),
            )
            .await?;
        Ok(IdentifyNamespace::decode(&c.data_contiguous()))
    }

    /// The active namespace list (first 1024), read now.
    pub async fn active_namespaces(&self) -> Result<Vec<u32>> {
        let c = self
            .admin(
                Sqe::identify(cns::ACTIVE_NS_LIST, 0),
                HostData::FromController(4096),
            )
            .await?;
        Ok(decode_ns_list(&c.data_contiguous()))
    }

    /// Re-reads the active namespace list and their Identify data.
    pub async fn rescan_namespaces(&self) -> Result<Vec<Namespace>> {
        let mut v = Vec::new();
        for nsid in self.active_namespaces().await? {
            v.push(ns_from(nsid, self.identify_namespace(nsid).await?));
        }
        *write(&self.inner.namespaces) = v.clone();
        Ok(v)
    }

    /// Get Log Page: `len` bytes (rounded up to dwords) of log `lid` for `nsid`,
    /// in pieces of at most the transfer limit.
    pub async fn get_log_page(&self, lid: u8, nsid: u32, len: u32) -> Result<Vec<u8>> {
        let len4 = len.div_ceil(4) * 4;
        let max = self.info().max_transfer.max(4096);
        let mut out = Vec::with_capacity(len4 as usize);
        let mut off = 0u32;
        while off < len4 {
            let n = (len4 - off).min(max);
            let c = self
                .admin(
                    Sqe::get_log_page(lid, nsid, n, u64::from(off), false),
                    HostData::FromController(n),
                )
                .await?;
            out.extend_from_slice(&c.data_contiguous());
            off += n;
        }
        out.truncate(len as usize);
        Ok(out)
    }

    /// Property Get (4 or 8 bytes).
    pub async fn property_get(&self, offset: u32, eight_bytes: bool) -> Result<u64> {
        let c = self
            .admin(
                nvmf_proto::fabrics::PropertyCommand::get_sqe(offset, eight_bytes),
                HostData::None,
            )
            .await?;
        Ok(if eight_bytes {
            c.cqe.result64()
        } else {
            u64::from(c.cqe.dw0)
        })
    }

    /// Property Set (4 or 8 bytes).
    pub async fn property_set(&self, offset: u32, eight_bytes: bool, value: u64) -> Result<()> {
        self.admin(
            nvmf_proto::fabrics::PropertyCommand::set_sqe(offset, eight_bytes, value),
            HostData::None,
        )
        .await
        .map(|_| ())
    }

    /// Opens an extra I/O queue of this association on its own connection, for a
    /// caller that drives it directly (see [`crate::IoQueue`]). `qid` must be one the
    /// controller granted and that this `Controller` does not use itself: connect
    /// with `nr_io_queues` larger than the queues you leave to the `Controller`... or
    /// simplest, connect the `Controller` with the queue count you want and use
    /// `qid` values above [`Self::nr_io_queues`] only if the controller allows them.
    pub async fn connect_raw_io_queue(&self, qid: u16) -> Result<crate::IoQueue> {
        let info = self.info();
        crate::connect_io_queue(
            &self.inner.opts,
            info.cntlid,
            qid,
            info.io_icd,
            info.io_queue_size,
        )
        .await
    }

    /// Shuts the controller down (CC.SHN, bounded wait for CSTS.SHST) and closes
    /// every connection. Commands still queued fail with [`Error::Disconnected`].
    pub async fn disconnect(&self) -> Result<()> {
        let live = {
            let mut s = lock(&self.inner.state);
            let live = *s == LinkState::Live;
            *s = LinkState::Disconnected;
            live
        };
        for t in lock(&self.inner.tasks).iter().skip(1 + self.inner.io.len()) {
            t.abort();
        }
        let mut res = Ok(());
        if live {
            res = tokio::time::timeout(Duration::from_secs(6), self.shutdown_cc())
                .await
                .unwrap_or_else(|_| Err(Error::Timeout("shutdown".into())));
        }
        let mut acks = Vec::new();
        for c in &self.inner.ctl {
            let (tx, rx) = oneshot::channel();
            let _ = c.send(Ctl::Close(tx));
            acks.push(rx);
        }
        for a in acks {
            let _ = tokio::time::timeout(Duration::from_secs(3), a).await;
        }
        res
    }

    async fn shutdown_cc(&self) -> Result<()> {
        use nvmf_proto::registers::{Cc, Csts, CC, CSTS};
        let mut cc = Cc::from_u32(self.property_get(CC, false).await? as u32);
        cc.shn = 1;
        self.property_set(CC, false, u64::from(cc.to_u32())).await?;
        let start = tokio::time::Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if Csts::from_u32(self.property_get(CSTS, false).await? as u32).shst == 2 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(Error::Timeout(
            "CSTS.SHST did not report shutdown complete within 5 s".into(),
        ))
    }
}

fn check_range(ns: &Namespace, slba: u64, nblocks: u64) -> Result<()> {
    if ns.block_size == 0 {
        return Err(Error::Invalid(format!(
            "namespace {} has an unusable LBA format",
            ns.nsid
        )));
    }
    if slba.checked_add(nblocks).is_none_or(|e| e > ns.blocks) {
        return Err(Error::Invalid(format!(
            "blocks {slba}..{} are beyond the end of namespace {} ({} blocks)",
            slba.saturating_add(nblocks),
            ns.nsid,
            ns.blocks
        )));
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// Sends Keep Alive every KATO/2; a Keep Alive unanswered within KATO counts as a
/// failed association.
///
/// The period runs from one send to the next, not from an answer to the next
/// send: a Keep Alive answered late (TCP retransmission under loss) must not push
/// the next one back, or the controller sees KATO/2 plus the round trip between
/// them (the netfault suite saw our target end a live association that way).
/// Linux's host likewise subtracts the round trip from its period.
async fn keep_alive(w: std::sync::Weak<Inner>, kato_ms: u32) {
    let period = Duration::from_millis(u64::from(kato_ms / 2).max(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = w.upgrade() else { return };
        if *lock(&inner.state) != LinkState::Live {
            continue;
        }
        let gen = inner.gen.load(Ordering::SeqCst);
        let ctrl = Controller {
            inner,
            failfast: false,
        };
        let sent = tokio::time::Instant::now();
        let r = tokio::time::timeout(
            Duration::from_millis(u64::from(kato_ms)),
            ctrl.admin(Sqe::new(admin_opcode::KEEP_ALIVE), HostData::None),
        )
        .await;
        let rtt = sent.elapsed();
        match r {
            Ok(Ok(_)) if rtt > period => {
                tracing::warn!("Keep Alive answered after {rtt:?} (more than KATO/2)")
            }
            Ok(Ok(_)) => tracing::trace!("Keep Alive answered after {rtt:?}"),
            Ok(Err(e)) if e.status().is_some() => tracing::warn!("Keep Alive failed: {e}"),
            // The association is being re-established or was closed: the
            // supervisor reports that; a Keep Alive is not sent meanwhile.
            Ok(Err(e)) => tracing::debug!("Keep Alive not sent: {e}"),
            Err(_) => {
                if *lock(&ctrl.inner.state) == LinkState::Live {
                    tracing::warn!(
                        "Keep Alive unanswered within {kato_ms} ms; resetting the association"
                    );
                    let _ = ctrl.inner.fail_tx.send((0, gen));
                }
            }
        }
    }
}

/// Keeps one Asynchronous Event Request outstanding and forwards what it reports.
async fn aer_loop(w: std::sync::Weak<Inner>, tx: mpsc::Sender<AsyncEvent>) {
    loop {
        let Some(inner) = w.upgrade() else { return };
        let ctrl = Controller {
            inner,
            failfast: false,
        };
        let rx = match ctrl
            .send(
                &ctrl.inner.admin,
                Sqe::new(admin_opcode::ASYNC_EVENT_REQUEST),
                HostData::None,
            )
            .await
        {
            Ok(rx) => rx,
            Err(_) => return,
        };
        drop(ctrl);
        let Ok(r) = rx.await else { return };
        match r {
            Ok(c) if c.cqe.status.is_success() => {
                let (t, info, log) = aen_fields(c.cqe.dw0);
                let ev = AsyncEvent {
                    event_type: t,
                    info,
                    log_page: log,
                    dw0: c.cqe.dw0,
                };
                tracing::info!("asynchronous event: type {t}, info {info:#x}, log page {log:#x}");
                let _ = tx.try_send(ev);
                let Some(inner) = w.upgrade() else { return };
                let ctrl = Controller {
                    inner,
                    failfast: false,
                };
                // Reading the log page (RAE = 0) re-arms this event type.
                // Reservation notifications (80h) are left to the caller (resv_notification):
                // reading one removes it.
                if log == lid::ANA {
                    if let Err(e) = ctrl.refresh_ana().await {
                        tracing::warn!("reading the ANA log page after an ANA Change: {e}");
                    }
                } else if log != 0 && log != lid::DISCOVERY && log != lid::RESERVATION {
                    let _ = ctrl.get_log_page(log, 0xffff_ffff, 512).await;
                }
                if t == aen_type::NOTICE && info == aen_notice::NS_ATTRIBUTE_CHANGED {
                    let _ = ctrl.rescan_namespaces().await;
                }
            }
            Ok(c)
                if c.cqe.status.sct == Status::AER_LIMIT_EXCEEDED.sct
                    && c.cqe.status.sc == Status::AER_LIMIT_EXCEEDED.sc =>
            {
                return
            }
            Ok(c) => {
                tracing::debug!("Asynchronous Event Request completed with {}", c.cqe.status);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => return,
        }
    }
}

/// Re-establishes the association when a queue reports a failure.
async fn supervise(w: std::sync::Weak<Inner>, mut fail_rx: mpsc::UnboundedReceiver<Failure>) {
    while let Some((qid, g)) = fail_rx.recv().await {
        let Some(inner) = w.upgrade() else { return };
        if g != inner.gen.load(Ordering::SeqCst) || *lock(&inner.state) != LinkState::Live {
            continue;
        }
        let opts = inner.opts.clone();
        let mut last_error = format!("queue {qid} lost its connection");
        tracing::warn!(
            "{}: {last_error}; reconnecting every {:?}",
            opts.subnqn,
            opts.reconnect_delay
        );
        *lock(&inner.state) = LinkState::Reconnecting {
            attempt: 0,
            last_error: last_error.clone(),
        };
        for c in &inner.ctl {
            let _ = c.send(Ctl::Reset);
        }
        if opts.ctrl_loss_tmo == Some(Duration::ZERO) {
            let msg = format!(
                "the association with {} at {} failed ({last_error}) and ctrl-loss-tmo is 0 (no reconnect)",
                opts.subnqn, opts.addr
            );
            *lock(&inner.state) = LinkState::Lost(msg.clone());
            for c in &inner.ctl {
                let _ = c.send(Ctl::Dead(msg.clone()));
            }
            return;
        }
        drop(inner);
        let start = tokio::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            tokio::time::sleep(opts.reconnect_delay).await;
            attempt += 1;
            let Some(inner) = w.upgrade() else { return };
            if *lock(&inner.state) == LinkState::Disconnected {
                return;
            }
            let r = match tokio::time::timeout(Duration::from_secs(30), assoc::establish(&opts))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout("association bring-up took over 30 s".into())),
            };
            let r = match r {
                Ok(a) if a.io.len() == inner.io.len() => Ok(a),
                Ok(a) => Err(Error::Invalid(format!(
                    "the controller granted {} I/O queues, {} before",
                    a.io.len(),
                    inner.io.len()
                ))),
                Err(e) => Err(e),
            };
            match r {
                Ok(mut a) => {
                    let nss = assoc::read_namespaces_direct(&mut a.admin).await.ok();
                    let gen = inner.gen.fetch_add(1, Ordering::SeqCst) + 1;
                    *write(&inner.info) = a.info;
                    if let Some(n) = nss {
                        *write(&inner.namespaces) =
                            n.into_iter().map(|(n, id)| ns_from(n, id)).collect();
                    }
                    let _ = inner.ctl[0].send(Ctl::Conn(Box::new(a.admin), gen));
                    for (i, c) in a.io.into_iter().enumerate() {
                        let _ = inner.ctl[i + 1].send(Ctl::Conn(Box::new(c), gen));
                    }
                    *lock(&inner.state) = LinkState::Live;
                    tracing::info!("{}: reconnected after {attempt} attempt(s)", opts.subnqn);
                    // The ANA states may have changed while the path was down.
                    let c = Controller {
                        inner,
                        failfast: false,
                    };
                    tokio::spawn(async move {
                        if let Err(e) = c.refresh_ana().await {
                            tracing::warn!("reading the ANA log page after a reconnect: {e}");
                        }
                    });
                    break;
                }
                Err(e) => {
                    last_error = e.to_string();
                    let budget = opts.max_reconnects();
                    let max = budget.map_or_else(|| "unlimited".into(), |n| n.to_string());
                    tracing::warn!(
                        "{}: reconnect attempt {attempt} of {max} failed: {last_error}",
                        opts.subnqn
                    );
                    // Out of attempts, or out of time (attempts that hang
                    // until their 30 s limit make the budget's clock run slow).
                    if budget.is_some_and(|n| attempt >= n)
                        || opts.ctrl_loss_tmo.is_some_and(|t| start.elapsed() >= t)
                    {
                        let msg = format!(
                            "could not re-establish the association with {} at {} within ctrl-loss-tmo {:?} ({attempt} attempts; last error: {last_error})",
                            opts.subnqn,
                            opts.addr,
                            opts.ctrl_loss_tmo.unwrap_or_default()
                        );
                        tracing::error!("{msg}");
                        *lock(&inner.state) = LinkState::Lost(msg.clone());
                        for c in &inner.ctl {
                            let _ = c.send(Ctl::Dead(msg.clone()));
                        }
                        return;
                    }
                    let mut st = lock(&inner.state);
                    if let LinkState::Reconnecting { .. } = *st {
                        *st = LinkState::Reconnecting {
                            attempt,
                            last_error: last_error.clone(),
                        };
                    }
                }
            }
        }
    }
}
