//! Namespace reservations (NVMe Base 2.0 §8.19; commands §7.2–7.5): the
//! registrants, the holder and type, the access rules applied to every I/O
//! command, the notifications (Reservation Notification log page 80h and its
//! asynchronous event) and Persist Through Power Loss.
//!
//! Identity is the 128-bit Host Identifier from Connect (NVMe-oF 1.1 §3.3):
//! every controller of one host shares its registration.
//!
//! **Persistence.** A namespace whose backend is a file or a block device can
//! persist through power loss (RESCAP.PTPLS = 1). While PTPL is on (Register
//! with CPTPL = 11b, or Set Features 83h), every change is written to a state
//! file — `<backing file>.resv` next to a file namespace, or
//! `$NVMF_STATE_DIR/<device path with '/' as '_'>.resv` (default directory
//! `/var/lib/nvmf-rs`) for a device — by writing a temporary file, fsync,
//! rename and fsync of the directory, so a crash leaves the old or the new
//! state whole. Turning PTPL off deletes the file. Memory and null namespaces
//! never persist: RESCAP.PTPLS = 0 and CPTPL = 11b fails with Invalid Field.

use nvmf_transport::ControllerQueuePair;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nvmf_proto::features::{aen_dw0, aen_type};
use nvmf_proto::log::lid;
use nvmf_proto::resv::{
    access_class, notify_mask, notify_type, AccessClass, AcquireAction, Cptpl, RegisterAction,
    RegisteredController, ReleaseAction, ReservationNotification, ReservationStatus, ResvKeys,
    ResvType,
};
use nvmf_proto::Status;
use tracing::warn;

/// A host's registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Registrant {
    hostid: [u8; 16],
    rkey: u64,
}

/// The reservation itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    hostid: [u8; 16],
    rtype: ResvType,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct State {
    gen: u32,
    ptpl: bool,
    /// In registration order.
    regs: Vec<Registrant>,
    holder: Option<Holder>,
}

impl State {
    fn reg(&self, hostid: &[u8; 16]) -> Option<&Registrant> {
        self.regs.iter().find(|r| &r.hostid == hostid)
    }

    /// All Registrants types make every registrant a holder (§8.19.4).
    fn is_holder(&self, hostid: &[u8; 16]) -> bool {
        match self.holder {
            Some(h) if h.rtype.all_registrants() => self.reg(hostid).is_some(),
            Some(h) => &h.hostid == hostid,
            None => false,
        }
    }

    /// Removes a registrant; a holder's reservation passes to the next
    /// registrant (All Registrants) or ends. Returns true if a Registrants
    /// Only reservation was released by it (the others are told).
    fn unregister(&mut self, hostid: &[u8; 16]) -> bool {
        self.regs.retain(|r| &r.hostid != hostid);
        let Some(h) = self.holder else { return false };
        if h.rtype.all_registrants() {
            self.holder = self.regs.first().map(|r| Holder {
                hostid: r.hostid,
                rtype: h.rtype,
            });
            return false;
        }
        if &h.hostid != hostid {
            return false;
        }
        self.holder = None;
        h.rtype.registrants_have_access()
    }
}

/// A notification to deliver: to every controller of `hostid`, this log type.
pub type Notice = ([u8; 16], u8);

/// What a reservation command produced.
#[derive(Debug, Default)]
pub struct Effects {
    /// Notifications for other hosts.
    pub notices: Vec<Notice>,
    /// Preempt and Abort: the preempted hosts' commands must finish first.
    pub abort: bool,
}

/// Reservation state of one namespace.
#[derive(Debug)]
pub struct Reservation {
    state: Mutex<State>,
    /// A reservation is held (the I/O fast path skips the lock when false).
    held: AtomicBool,
    /// Anyone is registered (I/O is then counted for Preempt and Abort).
    registered: AtomicBool,
    path: Option<PathBuf>,
    inflight: [AtomicU64; 2],
    phase: AtomicUsize,
    draining: AtomicBool,
}

/// A running I/O command counted for Preempt and Abort; dropping it ends it.
#[derive(Debug)]
pub struct InflightGuard {
    resv: Arc<Reservation>,
    phase: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.resv.inflight[self.phase].fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where the state of a namespace on `backing` persists (see the module doc).
pub fn state_path(backing: &Path, device: bool) -> PathBuf {
    let dir = std::env::var_os("NVMF_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/nvmf-rs"));
    state_path_in(&dir, backing, device)
}

/// [`state_path`] with the state directory given.
fn state_path_in(dir: &Path, backing: &Path, device: bool) -> PathBuf {
    if device {
        let name = backing
            .to_string_lossy()
            .trim_start_matches('/')
            .replace('/', "_");
        dir.join(format!("{name}.resv"))
    } else {
        let mut s = backing.as_os_str().to_owned();
        s.push(".resv");
        PathBuf::from(s)
    }
}

fn hex16(b: &[u8; 16]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl State {
    fn to_text(&self) -> String {
        let mut s = format!("nvmf-rs reservation v1\ngen {}\n", self.gen);
        for r in &self.regs {
            s += &format!("reg {} {:016x}\n", hex16(&r.hostid), r.rkey);
        }
        if let Some(h) = self.holder {
            s += &format!("holder {} {}\n", hex16(&h.hostid), h.rtype.code());
        }
        s
    }

    fn from_text(t: &str) -> Option<Self> {
        let mut lines = t.lines();
        if lines.next()? != "nvmf-rs reservation v1" {
            return None;
        }
        let mut st = State {
            ptpl: true,
            ..Default::default()
        };
        for l in lines {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["gen", g] => st.gen = g.parse().ok()?,
                ["reg", h, k] => st.regs.push(Registrant {
                    hostid: unhex16(h)?,
                    rkey: u64::from_str_radix(k, 16).ok()?,
                }),
                ["holder", h, t] => {
                    st.holder = Some(Holder {
                        hostid: unhex16(h)?,
                        rtype: ResvType::from_code(t.parse().ok()?)?,
                    })
                }
                [] => {}
                _ => return None,
            }
        }
        Some(st)
    }
}

/// Writes `text` to `path` atomically: temporary file, fsync, rename, fsync the directory.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(d) = dir {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

impl Reservation {
    /// State for a namespace; `path` is where it persists (`None`: it cannot,
    /// RESCAP.PTPLS = 0). A state file found there is loaded (PTPL on).
    pub fn open(path: Option<PathBuf>) -> Self {
        let st = path
            .as_ref()
            .and_then(|p| match std::fs::read_to_string(p) {
                Ok(t) => State::from_text(&t).or_else(|| {
                    warn!(path = %p.display(), "reservation state file unreadable; starting without reservations");
                    None
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    warn!(path = %p.display(), "reading reservation state: {e}");
                    None
                }
            })
            .unwrap_or_default();
        Self {
            held: AtomicBool::new(st.holder.is_some()),
            registered: AtomicBool::new(!st.regs.is_empty()),
            state: Mutex::new(st),
            path,
            inflight: [AtomicU64::new(0), AtomicU64::new(0)],
            phase: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        }
    }

    /// True if the state can persist through power loss (RESCAP.PTPLS).
    pub fn ptpl_capable(&self) -> bool {
        self.path.is_some()
    }

    /// The current Persist Through Power Loss state (Get Features 83h).
    pub fn ptpl(&self) -> bool {
        self.lock().ptpl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets PTPL (Set Features 83h, or CPTPL): on writes the state file, off removes it.
    pub fn set_ptpl(&self, on: bool) -> Result<(), Status> {
        let mut st = self.lock();
        self.apply_ptpl(&mut st, on)?;
        Ok(())
    }

    fn apply_ptpl(&self, st: &mut State, on: bool) -> Result<(), Status> {
        if on && self.path.is_none() {
            return Err(Status::INVALID_FIELD.dnr());
        }
        st.ptpl = on;
        if let Some(p) = &self.path {
            if on {
                self.save(st)?;
            } else if let Err(e) = std::fs::remove_file(p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(path = %p.display(), "removing reservation state: {e}");
                    return Err(Status::INTERNAL_ERROR);
                }
            }
        }
        Ok(())
    }

    fn save(&self, st: &State) -> Result<(), Status> {
        let (Some(p), true) = (&self.path, st.ptpl) else {
            return Ok(());
        };
        write_atomic(p, &st.to_text()).map_err(|e| {
            warn!(path = %p.display(), "writing reservation state: {e}");
            Status::INTERNAL_ERROR
        })
    }

    fn publish(&self, st: &State) {
        // SeqCst: ordered with the Preempt and Abort counters (see `enter`).
        self.held.store(st.holder.is_some(), Ordering::SeqCst);
        self.registered.store(!st.regs.is_empty(), Ordering::SeqCst);
    }

    /// Commits a changed state: generation (if `bump`), flags, state file.
    fn commit(&self, st: &mut State, bump: bool) -> Result<(), Status> {
        if bump {
            st.gen = st.gen.wrapping_add(1);
        }
        self.publish(st);
        self.save(st)
    }

    /// May `hostid` run I/O opcode `op`? (NVMe Base 2.0 Figure 549.) Reservation
    /// Conflict if not. Lock-free while no reservation is held.
    pub fn check(&self, hostid: &[u8; 16], op: u8) -> Result<(), Status> {
        if !self.held.load(Ordering::SeqCst) {
            return Ok(());
        }
        let class = access_class(op);
        if class == AccessClass::Other {
            return Ok(());
        }
        let st = self.lock();
        let Some(h) = st.holder else { return Ok(()) };
        if st.is_holder(hostid) || (h.rtype.registrants_have_access() && st.reg(hostid).is_some()) {
            return Ok(());
        }
        if class == AccessClass::Write || h.rtype.excludes_reads() {
            return Err(Status::RESERVATION_CONFLICT.dnr());
        }
        Ok(())
    }

    /// Counts an I/O command while anyone is registered (Preempt and Abort waits
    /// for them). A command that starts while nobody is registered is not
    /// counted: a preempt needs a registration made after it started, and it
    /// finishes within one backend call.
    pub fn enter(self: &Arc<Self>) -> Option<InflightGuard> {
        if !self.registered.load(Ordering::SeqCst) {
            return None;
        }
        // SeqCst with drain_blocking's flip and load: a command that read the
        // old phase is either seen by the drain or runs its check after the
        // drain began, i.e. after the new reservation was in place.
        let phase = self.phase.load(Ordering::SeqCst) & 1;
        self.inflight[phase].fetch_add(1, Ordering::SeqCst);
        Some(InflightGuard {
            resv: self.clone(),
            phase,
        })
    }

    /// Waits (blocking) until every I/O command counted before this call ended:
    /// the abort half of Preempt and Abort (as nvmet, commands are not cut short
    /// but the command completes only once they are done; new ones already see
    /// the new reservation).
    pub fn drain_blocking(&self) {
        while self.draining.swap(true, Ordering::AcqRel) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let old = self.phase.fetch_add(1, Ordering::SeqCst) & 1;
        while self.inflight[old].load(Ordering::SeqCst) != 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.draining.store(false, Ordering::Release);
    }

    /// Reservation Register (§7.3).
    pub fn register(
        &self,
        hostid: &[u8; 16],
        action: Option<RegisterAction>,
        iekey: bool,
        cptpl: Option<Cptpl>,
        keys: ResvKeys,
    ) -> Result<Effects, Status> {
        let (Some(action), Some(cptpl)) = (action, cptpl) else {
            return Err(Status::INVALID_FIELD.dnr());
        };
        if cptpl == Cptpl::Set && self.path.is_none() {
            return Err(Status::INVALID_FIELD.dnr());
        }
        let mut st = self.lock();
        let cur = st.reg(hostid).copied();
        let conflict = Err(Status::RESERVATION_CONFLICT.dnr());
        let mut fx = Effects::default();
        match action {
            RegisterAction::Register => match cur {
                // Registering again with the same key succeeds (§8.19.2).
                Some(r) if r.rkey == keys.key2 => {}
                Some(_) => return conflict,
                None => st.regs.push(Registrant {
                    hostid: *hostid,
                    rkey: keys.key2,
                }),
            },
            RegisterAction::Unregister => match cur {
                Some(r) if iekey || r.rkey == keys.crkey => {
                    if st.unregister(hostid) {
                        fx.notices = released_notices(&st, hostid);
                    }
                }
                _ => return conflict,
            },
            RegisterAction::Replace => match cur {
                Some(r) if iekey || r.rkey == keys.crkey => {
                    if let Some(r) = st.regs.iter_mut().find(|r| &r.hostid == hostid) {
                        r.rkey = keys.key2;
                    }
                }
                _ => return conflict,
            },
        }
        match cptpl {
            Cptpl::NoChange => {}
            Cptpl::Clear => self.apply_ptpl(&mut st, false)?,
            Cptpl::Set => st.ptpl = true,
        }
        self.commit(&mut st, true)?;
        Ok(fx)
    }

    /// Reservation Acquire (§7.2): acquire, preempt, preempt and abort.
    pub fn acquire(
        &self,
        hostid: &[u8; 16],
        action: Option<AcquireAction>,
        iekey: bool,
        rtype: u8,
        keys: ResvKeys,
    ) -> Result<Effects, Status> {
        let (Some(action), Some(rtype), false) = (action, ResvType::from_code(rtype), iekey) else {
            return Err(Status::INVALID_FIELD.dnr());
        };
        let mut st = self.lock();
        let conflict = Err(Status::RESERVATION_CONFLICT.dnr());
        match st.reg(hostid) {
            Some(r) if r.rkey == keys.crkey => {}
            _ => return conflict,
        }
        let mut fx = Effects {
            abort: action == AcquireAction::PreemptAndAbort,
            ..Default::default()
        };
        if action == AcquireAction::Acquire {
            return match st.holder {
                None => {
                    st.holder = Some(Holder {
                        hostid: *hostid,
                        rtype,
                    });
                    self.commit(&mut st, false)?;
                    Ok(Effects::default())
                }
                // Acquiring what one holds, of the same type, succeeds; any other is a conflict.
                Some(h) if st.is_holder(hostid) && h.rtype == rtype => Ok(Effects::default()),
                Some(_) => conflict,
            };
        }
        let prkey = keys.key2;
        let preempted_by_key = |st: &mut State, fx: &mut Effects| -> bool {
            let victims: Vec<[u8; 16]> = st
                .regs
                .iter()
                .filter(|r| r.rkey == prkey && &r.hostid != hostid)
                .map(|r| r.hostid)
                .collect();
            for v in &victims {
                st.unregister(v);
                fx.notices.push((*v, notify_type::REGISTRATION_PREEMPTED));
            }
            !victims.is_empty()
        };
        match st.holder {
            None => {
                // No reservation: unregister the registrants of PRKEY (§8.19.5).
                if !preempted_by_key(&mut st, &mut fx) {
                    return conflict;
                }
            }
            Some(h) if h.rtype.all_registrants() => {
                if prkey == 0 {
                    // PRKEY 0 against All Registrants: the issuer takes a new
                    // reservation and every other registrant is removed.
                    let victims: Vec<[u8; 16]> = st
                        .regs
                        .iter()
                        .filter(|r| &r.hostid != hostid)
                        .map(|r| r.hostid)
                        .collect();
                    st.regs.retain(|r| &r.hostid == hostid);
                    st.holder = Some(Holder {
                        hostid: *hostid,
                        rtype,
                    });
                    for v in victims {
                        fx.notices.push((v, notify_type::REGISTRATION_PREEMPTED));
                    }
                } else if !preempted_by_key(&mut st, &mut fx) {
                    return conflict;
                }
            }
            Some(h) if h.hostid == *hostid => {
                // The holder preempting itself changes the type.
                st.holder = Some(Holder {
                    hostid: *hostid,
                    rtype,
                });
                preempted_by_key(&mut st, &mut fx);
                if h.rtype != rtype {
                    fx.notices.extend(released_notices(&st, hostid));
                }
            }
            Some(h) if st.reg(&h.hostid).is_some_and(|r| r.rkey == prkey) => {
                st.holder = Some(Holder {
                    hostid: *hostid,
                    rtype,
                });
                preempted_by_key(&mut st, &mut fx);
                if h.rtype != rtype {
                    fx.notices.extend(released_notices(&st, hostid));
                }
            }
            Some(_) if prkey != 0 => {
                if !preempted_by_key(&mut st, &mut fx) {
                    return conflict;
                }
            }
            Some(_) => return Err(Status::INVALID_FIELD.dnr()),
        }
        self.commit(&mut st, true)?;
        Ok(fx)
    }

    /// Reservation Release (§7.5): release, clear.
    pub fn release(
        &self,
        hostid: &[u8; 16],
        action: Option<ReleaseAction>,
        iekey: bool,
        rtype: u8,
        crkey: u64,
    ) -> Result<Effects, Status> {
        let (Some(action), false) = (action, iekey) else {
            return Err(Status::INVALID_FIELD.dnr());
        };
        let mut st = self.lock();
        match st.reg(hostid) {
            Some(r) if r.rkey == crkey => {}
            _ => return Err(Status::RESERVATION_CONFLICT.dnr()),
        }
        let mut fx = Effects::default();
        match action {
            ReleaseAction::Release => {
                let Some(h) = st.holder else { return Ok(fx) };
                if !st.is_holder(hostid) {
                    // Releasing a reservation one does not hold does nothing (§8.19.7).
                    return Ok(fx);
                }
                if h.rtype.code() != rtype {
                    return Err(Status::INVALID_FIELD.dnr());
                }
                st.holder = None;
                if h.rtype.registrants_have_access() {
                    fx.notices = released_notices(&st, hostid);
                }
                self.commit(&mut st, false)?;
            }
            ReleaseAction::Clear => {
                for r in st.regs.iter().filter(|r| &r.hostid != hostid) {
                    fx.notices
                        .push((r.hostid, notify_type::RESERVATION_PREEMPTED));
                }
                st.regs.clear();
                st.holder = None;
                self.commit(&mut st, true)?;
            }
        }
        Ok(fx)
    }

    /// Reservation Report (§7.4) data.
    pub fn report(&self) -> ReservationStatus {
        let st = self.lock();
        let rtype = st.holder.map_or(0, |h| h.rtype.code());
        ReservationStatus {
            gen: st.gen,
            rtype,
            ptpls: st.ptpl,
            regctl_count: st.regs.len().min(usize::from(u16::MAX)) as u16,
            regctl: st
                .regs
                .iter()
                .map(|r| RegisteredController {
                    // Dynamic controller model: one registration stands for
                    // every controller of the host (FFFFh, as nvmet reports).
                    cntlid: 0xffff,
                    holds: st.is_holder(&r.hostid),
                    hostid: r.hostid,
                    rkey: r.rkey,
                })
                .collect(),
        }
    }
}

/// Reservation Released notices for every registrant but `issuer`.
fn released_notices(st: &State, issuer: &[u8; 16]) -> Vec<Notice> {
    st.regs
        .iter()
        .filter(|r| &r.hostid != issuer)
        .map(|r| (r.hostid, notify_type::RESERVATION_RELEASED))
        .collect()
}

/// Reservation notification state of one controller: the log page 80h queue,
/// the per-namespace masks (Set Features 82h) and whether the event is masked
/// until the log is read (NVMe Base 2.0 §5.2: an event stays masked until the
/// host reads its log page).
#[derive(Debug, Default)]
pub struct CtrlResv {
    inner: Mutex<CtrlResvInner>,
}

#[derive(Debug, Default)]
struct CtrlResvInner {
    counter: u64,
    log: VecDeque<ReservationNotification>,
    masks: HashMap<u32, u32>,
    default_mask: u32,
    aen_outstanding: bool,
}

/// Log pages kept per controller; older ones are dropped (the gap in Log Page
/// Count tells the host some were lost).
pub const NOTIFY_LOG_DEPTH: usize = 64;

impl CtrlResv {
    fn lock(&self) -> std::sync::MutexGuard<'_, CtrlResvInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a notification unless masked; returns the AEN DW0 to raise, if one
    /// is not already outstanding.
    pub fn push(&self, nsid: u32, log_type: u8) -> Option<u32> {
        let mut g = self.lock();
        let mask = g.masks.get(&nsid).copied().unwrap_or(g.default_mask);
        if mask & notify_mask::bit_of(log_type) != 0 {
            return None;
        }
        g.counter = g.counter.wrapping_add(1).max(1);
        let count = g.counter;
        if g.log.len() == NOTIFY_LOG_DEPTH {
            g.log.pop_front();
        }
        g.log.push_back(ReservationNotification {
            count,
            log_type,
            available: 0,
            nsid,
        });
        if g.aen_outstanding {
            return None;
        }
        g.aen_outstanding = true;
        Some(aen_dw0(aen_type::IO_COMMAND_SPECIFIC, 0, lid::RESERVATION))
    }

    /// Reads log page 80h: the oldest notification (an empty page if none),
    /// removed from the queue; `rae` keeps the event masked.
    pub fn take(&self, rae: bool) -> ReservationNotification {
        let mut g = self.lock();
        let mut n = g.log.pop_front().unwrap_or_default();
        n.available = g.log.len().min(255) as u8;
        if !rae {
            g.aen_outstanding = false;
        }
        n
    }

    /// Set Features 82h: `nsid` FFFFFFFFh sets every namespace.
    pub fn set_mask(&self, nsid: u32, mask: u32) {
        let mut g = self.lock();
        if nsid == u32::MAX {
            g.masks.clear();
            g.default_mask = mask;
        } else {
            g.masks.insert(nsid, mask);
        }
    }

    /// Get Features 82h.
    pub fn mask(&self, nsid: u32) -> u32 {
        let g = self.lock();
        g.masks.get(&nsid).copied().unwrap_or(g.default_mask)
    }
}

// ---- The commands on a queue (hooks called from io.rs and admin.rs) ----

use bytes::Bytes;
use nvmf_backend::SharedData;
use nvmf_proto::resv::{opcode, ResvCdw10};
use nvmf_proto::{Cqe, Sqe};

use crate::queue::{Done, Outcome, QueueTask};
use crate::registry::{CtrlShared, Namespace};

impl<C: ControllerQueuePair> QueueTask<C> {
    /// Reservation Register / Acquire / Release / Report on namespace `ns`.
    /// Report runs inline; the others run on the blocking pool, since they may
    /// write the state file and Preempt and Abort waits for running commands.
    pub(crate) fn reservation_command(
        &mut self,
        ns: Arc<Namespace>,
        sqe: &Sqe,
        data: &[Bytes],
        buffer_len: u32,
    ) -> Outcome {
        let cid = sqe.cid;
        let Some(ctrl) = self.ctrl.clone() else {
            return Outcome::Complete(Cqe::new(cid, Status::INTERNAL_ERROR));
        };
        if sqe.opcode == opcode::REPORT {
            return report(&ns, sqe, buffer_len);
        }
        let raw: Vec<u8> = data.iter().flat_map(|b| b.iter().copied()).collect();
        let tx = self.done_tx.clone();
        let sqe = *sqe;
        let start = self.cmd_start;
        tokio::task::spawn_blocking(move || {
            let result = run_mutation(&ns, &ctrl, &sqe, &raw).map(|()| None);
            let _ = tx.send(Done {
                cid,
                result,
                sqe,
                start,
            });
        });
        Outcome::Async
    }

    /// Set Features 82h (Reservation Notification Mask) and 83h (Reservation
    /// Persistence); both are namespace specific (NVMe Base 2.0 §5.27.1.21-22).
    pub(crate) fn set_reservation_feature(&mut self, sqe: &Sqe, ctrl: &CtrlShared) -> Outcome {
        let cid = sqe.cid;
        let fid = (sqe.cdw10 & 0xff) as u8;
        self.refresh_ns();
        let ns = self.ns.get(&sqe.nsid).cloned();
        let st = if fid == nvmf_proto::features::fid::RESERVATION_NOTIFICATION_MASK {
            if sqe.cdw11 & !notify_mask::ALL != 0 {
                Err(Status::INVALID_FIELD.dnr())
            } else if ns.is_none() && sqe.nsid != u32::MAX {
                Err(Status::INVALID_NS.dnr())
            } else {
                ctrl.resv.set_mask(sqe.nsid, sqe.cdw11);
                Ok(())
            }
        } else {
            match ns {
                Some(ns) => ns.resv.set_ptpl(sqe.cdw11 & 1 != 0),
                None => Err(Status::INVALID_NS.dnr()),
            }
        };
        Outcome::Complete(Cqe::new(cid, st.err().unwrap_or(Status::SUCCESS)))
    }

    /// Get Features 82h / 83h.
    pub(crate) fn get_reservation_feature(&mut self, sqe: &Sqe, ctrl: &CtrlShared) -> Outcome {
        let cid = sqe.cid;
        self.refresh_ns();
        let Some(ns) = self.ns.get(&sqe.nsid).cloned() else {
            return Outcome::Complete(Cqe::new(cid, Status::INVALID_NS.dnr()));
        };
        let mut c = Cqe::new(cid, Status::SUCCESS);
        c.dw0 = if (sqe.cdw10 & 0xff) as u8
            == nvmf_proto::features::fid::RESERVATION_NOTIFICATION_MASK
        {
            ctrl.resv.mask(ns.nsid)
        } else {
            u32::from(ns.resv.ptpl())
        };
        Outcome::Complete(c)
    }
}

/// Reservation Report: the extended data structure only (EDS = 1), since
/// NVMe-oF host identifiers are 128-bit; EDS = 0 fails with Host Identifier
/// Inconsistent Format (NVMe Base 2.0 §7.4).
fn report(ns: &Namespace, sqe: &Sqe, buffer_len: u32) -> Outcome {
    let cid = sqe.cid;
    if sqe.cdw11 & 1 == 0 {
        return Outcome::Complete(Cqe::new(cid, Status::HOSTID_INCONSISTENT.dnr()));
    }
    let len = (u64::from(sqe.cdw10) + 1) * 4;
    if len > u64::from(buffer_len) {
        return Outcome::Complete(Cqe::new(cid, Status::DATA_SGL_LENGTH_INVALID.dnr()));
    }
    let mut page = ns.resv.report().encode(true);
    page.resize(len as usize, 0);
    Outcome::Read(
        SharedData::One(Bytes::from(page)),
        Cqe::new(cid, Status::SUCCESS),
    )
}

/// Runs Register, Acquire or Release and delivers its notifications.
fn run_mutation(ns: &Namespace, ctrl: &CtrlShared, sqe: &Sqe, raw: &[u8]) -> Result<(), Status> {
    let c = ResvCdw10::from_u32(sqe.cdw10);
    let need2 = sqe.opcode != opcode::RELEASE;
    let keys = ResvKeys::decode(raw, need2).ok_or(Status::DATA_SGL_LENGTH_INVALID.dnr())?;
    let hostid = &ctrl.hostid;
    let fx = match sqe.opcode {
        opcode::REGISTER => {
            ns.resv
                .register(hostid, c.register_action(), c.iekey, c.cptpl(), keys)?
        }
        opcode::ACQUIRE => ns
            .resv
            .acquire(hostid, c.acquire_action(), c.iekey, c.rtype, keys)?,
        _ => ns
            .resv
            .release(hostid, c.release_action(), c.iekey, c.rtype, keys.crkey)?,
    };
    if fx.abort {
        ns.resv.drain_blocking();
    }
    ctrl.subsys.notify_reservation(ns.nsid, &fx.notices);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 16] = [0xa; 16];
    const B: [u8; 16] = [0xb; 16];
    const C: [u8; 16] = [0xc; 16];

    fn keys(crkey: u64, key2: u64) -> ResvKeys {
        ResvKeys { crkey, key2 }
    }

    fn reg(r: &Reservation, h: &[u8; 16], k: u64) {
        r.register(
            h,
            Some(RegisterAction::Register),
            false,
            Some(Cptpl::NoChange),
            keys(0, k),
        )
        .unwrap();
    }

    fn acquire(r: &Reservation, h: &[u8; 16], k: u64, t: ResvType) -> Result<Effects, Status> {
        r.acquire(h, Some(AcquireAction::Acquire), false, t.code(), keys(k, 0))
    }

    #[test]
    fn access_table_for_every_type() {
        use nvmf_proto::sqe::io_opcode::{READ, WRITE};
        for t in ResvType::ALL {
            let r = Reservation::open(None);
            reg(&r, &A, 1);
            reg(&r, &B, 2);
            acquire(&r, &A, 1, t).unwrap();
            // Holder: everything.
            assert!(r.check(&A, READ).is_ok() && r.check(&A, WRITE).is_ok());
            // Registrant (B) and non-registrant (C).
            let reg_ok = t.registrants_have_access();
            assert_eq!(r.check(&B, WRITE).is_ok(), reg_ok, "{t:?}");
            assert_eq!(
                r.check(&B, READ).is_ok(),
                reg_ok || !t.excludes_reads(),
                "{t:?}"
            );
            assert!(r.check(&C, WRITE).is_err(), "{t:?}");
            assert_eq!(r.check(&C, READ).is_ok(), !t.excludes_reads(), "{t:?}");
            assert_eq!(r.check(&C, WRITE), Err(Status::RESERVATION_CONFLICT.dnr()));
        }
    }

    #[test]
    fn keys_and_conflicts() {
        let r = Reservation::open(None);
        reg(&r, &A, 1);
        // Registering again with another key conflicts; with the same succeeds.
        assert!(r
            .register(
                &A,
                Some(RegisterAction::Register),
                false,
                Some(Cptpl::NoChange),
                keys(0, 9)
            )
            .is_err());
        reg(&r, &A, 1);
        // Wrong CRKEY.
        assert_eq!(
            acquire(&r, &A, 2, ResvType::WriteExclusive).unwrap_err(),
            Status::RESERVATION_CONFLICT.dnr()
        );
        // Unregistered host.
        assert!(acquire(&r, &B, 1, ResvType::WriteExclusive).is_err());
        acquire(&r, &A, 1, ResvType::WriteExclusive).unwrap();
        // Another type while holding: conflict; release with the wrong type: invalid field.
        assert!(acquire(&r, &A, 1, ResvType::ExclusiveAccess).is_err());
        assert_eq!(
            r.release(&A, Some(ReleaseAction::Release), false, 2, 1)
                .unwrap_err(),
            Status::INVALID_FIELD.dnr()
        );
        // Replace with IEKEY ignores CRKEY.
        r.register(
            &A,
            Some(RegisterAction::Replace),
            true,
            Some(Cptpl::NoChange),
            keys(77, 5),
        )
        .unwrap();
        assert_eq!(r.report().regctl[0].rkey, 5);
        // CPTPL set on a namespace that cannot persist.
        assert_eq!(
            r.register(
                &A,
                Some(RegisterAction::Replace),
                false,
                Some(Cptpl::Set),
                keys(5, 5)
            )
            .unwrap_err(),
            Status::INVALID_FIELD.dnr()
        );
    }

    #[test]
    fn preempt_and_notices() {
        let r = Reservation::open(None);
        reg(&r, &A, 1);
        reg(&r, &B, 2);
        acquire(&r, &A, 1, ResvType::WriteExclusiveRegistrantsOnly).unwrap();
        let g0 = r.report().gen;
        let fx = r
            .acquire(&B, Some(AcquireAction::Preempt), false, 1, keys(2, 1))
            .unwrap();
        assert_eq!(fx.notices, vec![(A, notify_type::REGISTRATION_PREEMPTED)]);
        let rep = r.report();
        assert_eq!(rep.rtype, 1);
        assert_eq!(rep.regctl.len(), 1);
        assert!(rep.regctl[0].holds && rep.regctl[0].hostid == B);
        assert_eq!(rep.gen, g0 + 1);
        // Clear: the others get Reservation Preempted.
        reg(&r, &A, 1);
        let fx = r
            .release(&B, Some(ReleaseAction::Clear), false, 0, 2)
            .unwrap();
        assert_eq!(fx.notices, vec![(A, notify_type::RESERVATION_PREEMPTED)]);
        assert_eq!(r.report().regctl_count, 0);
    }

    #[test]
    fn all_registrants_pass_on() {
        let r = Reservation::open(None);
        reg(&r, &A, 1);
        reg(&r, &B, 2);
        acquire(&r, &A, 1, ResvType::ExclusiveAccessAllRegistrants).unwrap();
        assert!(r.report().regctl.iter().all(|c| c.holds));
        r.register(
            &A,
            Some(RegisterAction::Unregister),
            false,
            Some(Cptpl::NoChange),
            keys(1, 0),
        )
        .unwrap();
        let rep = r.report();
        assert_eq!(rep.rtype, 6);
        assert!(rep.regctl[0].holds);
    }

    #[test]
    fn state_text_round_trip_and_persistence() {
        let dir = std::env::temp_dir().join(format!("nvmf-resv-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("ns.img.resv");
        let _ = std::fs::remove_file(&p);
        let r = Reservation::open(Some(p.clone()));
        r.register(
            &A,
            Some(RegisterAction::Register),
            false,
            Some(Cptpl::Set),
            keys(0, 0xfeed),
        )
        .unwrap();
        acquire(&r, &A, 0xfeed, ResvType::WriteExclusive).unwrap();
        let again = Reservation::open(Some(p.clone()));
        assert_eq!(again.report(), r.report());
        assert!(again.ptpl());
        assert!(again.check(&B, nvmf_proto::sqe::io_opcode::WRITE).is_err());
        r.set_ptpl(false).unwrap();
        assert!(!p.exists());
        assert_eq!(Reservation::open(Some(p)).report().regctl_count, 0);
        assert_eq!(State::from_text("garbage"), None);
        // Written by rename: no temporary file stays behind.
        assert!(!dir.join("ns.img.resv.tmp").exists());
        assert_eq!(unhex16("zz"), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn preempt_and_abort_waits_for_commands_already_running() {
        let r = Arc::new(Reservation::open(None));
        // Nobody registered: commands are not counted.
        assert!(r.enter().is_none());
        reg(&r, &A, 1);
        let running = r.enter().expect("counted while someone is registered");
        let (tx, rx) = std::sync::mpsc::channel();
        let r2 = r.clone();
        let t = std::thread::spawn(move || {
            r2.drain_blocking();
            tx.send(()).unwrap();
        });
        // A command that starts after the drain began is not waited for.
        std::thread::sleep(Duration::from_millis(50));
        let later = r.enter().unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "drain must wait"
        );
        drop(running);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("drain ends once the command ends");
        t.join().unwrap();
        drop(later);
        r.drain_blocking();
    }

    #[test]
    fn state_file_locations() {
        let d = Path::new("/var/lib/nvmf-rs");
        assert_eq!(
            state_path_in(d, Path::new("/dev/disk/by-id/nvme-x"), true),
            Path::new("/var/lib/nvmf-rs/dev_disk_by-id_nvme-x.resv")
        );
        assert_eq!(
            state_path_in(d, Path::new("/srv/disk1.img"), false),
            Path::new("/srv/disk1.img.resv")
        );
    }

    #[test]
    fn notification_log_masks_and_aen() {
        let c = CtrlResv::default();
        let dw0 = c.push(1, notify_type::RESERVATION_RELEASED).unwrap();
        assert_eq!(dw0 & 7, 6);
        assert_eq!((dw0 >> 16) & 0xff, 0x80);
        // Masked until read.
        assert_eq!(c.push(1, notify_type::RESERVATION_PREEMPTED), None);
        c.set_mask(2, notify_mask::REGPRE);
        assert_eq!(c.push(2, notify_type::REGISTRATION_PREEMPTED), None);
        let first = c.take(false);
        assert_eq!((first.count, first.log_type, first.available), (1, 2, 1));
        let second = c.take(false);
        assert_eq!((second.count, second.nsid), (2, 1));
        assert_eq!(c.take(false).count, 0);
        assert!(c.push(1, notify_type::RESERVATION_RELEASED).is_some());
    }
}
