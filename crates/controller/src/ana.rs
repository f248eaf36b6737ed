//! Asymmetric Namespace Access (NVMe Base 2.0 §8.1): ANA groups, their state on
//! each port, the ANA log page (§5.16.1.12, log identifier 0Ch), the ANA Change
//! notice and the path-related statuses of I/O on a path whose group cannot be
//! used.
//!
//! Model (as Linux's nvmet): ANA groups are target-wide IDs 1..=[`ANAGRPMAX`];
//! every namespace belongs to one group (its `ana_group`, default 1); each
//! listen port gives each group a state (default optimized). A controller's
//! states are those of the port its admin queue connected through, so a host
//! that connects one controller per port sees one path per port, each with the
//! state that port gives the namespace's group (NVMe Base 2.0 §8.1.1: the ANA
//! state is a property of a namespace *and* the controller reaching it).
//!
//! States are atomics, one per (port, group), so the I/O path checks a path's
//! state with one load and no lock; a reload ([`AnaTable::apply`]) or the control
//! socket ([`AnaTable::set`]) changes them, bumps the change count and raises
//! the ANA Change notice on every affected controller that enabled it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use nvmf_proto::features::{aec, aen_dw0, aen_notice, aen_type};
use nvmf_proto::identify::{anacap, cmic, IdentifyController};
use nvmf_proto::log::{ana_state, encode_ana_log, lid, AnaGroup};
use nvmf_proto::Status;
use nvmf_transport::TransportAddr;
use tracing::info;

use crate::registry::{CtrlShared, Namespace, NsMap, Registry};

/// Largest ANA group ID (Identify Controller ANAGRPMAX), and the number of
/// groups (NANAGRPID): 128, as nvmet's NVMET_MAX_ANAGRPS.
pub const ANAGRPMAX: u32 = 128;

/// ANA Transition Time reported in Identify Controller, seconds: how long a
/// group may stay in the Change state before a host gives up on it (Linux
/// resets the controller after twice this). The target never enters Change
/// by itself; an operator can set it.
pub const ANATT_SECS: u8 = 10;

/// An ANA state (NVMe Base 2.0 §8.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnaState {
    /// I/O is served; the best path.
    #[default]
    Optimized,
    /// I/O is served; a path to use when no optimized one is left.
    NonOptimized,
    /// I/O fails with Asymmetric Access Inaccessible (03h/02h); the state may change.
    Inaccessible,
    /// I/O fails with Asymmetric Access Persistent Loss (03h/01h); for good.
    PersistentLoss,
    /// In transition: I/O fails with Asymmetric Access Transition (03h/03h).
    Change,
}

impl AnaState {
    /// Every state, for messages.
    pub const NAMES: &'static str =
        "optimized, non-optimized, inaccessible, persistent-loss or change";

    /// The ANA State field value (NVMe Base 2.0 Figure 226).
    pub fn code(self) -> u8 {
        match self {
            Self::Optimized => ana_state::OPTIMIZED,
            Self::NonOptimized => ana_state::NON_OPTIMIZED,
            Self::Inaccessible => ana_state::INACCESSIBLE,
            Self::PersistentLoss => ana_state::PERSISTENT_LOSS,
            Self::Change => ana_state::CHANGE,
        }
    }

    /// The state of an ANA State field value, if it is one.
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            ana_state::OPTIMIZED => Self::Optimized,
            ana_state::NON_OPTIMIZED => Self::NonOptimized,
            ana_state::INACCESSIBLE => Self::Inaccessible,
            ana_state::PERSISTENT_LOSS => Self::PersistentLoss,
            ana_state::CHANGE => Self::Change,
            _ => return None,
        })
    }

    /// The name used in the configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Optimized => "optimized",
            Self::NonOptimized => "non-optimized",
            Self::Inaccessible => "inaccessible",
            Self::PersistentLoss => "persistent-loss",
            Self::Change => "change",
        }
    }

    /// The status of an I/O command on a path in this state, `None` when the
    /// command runs (NVMe Base 2.0 §8.1.3, Figure 102 path related status).
    /// DNR stays clear: the host is expected to retry on another path.
    pub fn io_status(self) -> Option<Status> {
        match self {
            Self::Optimized | Self::NonOptimized => None,
            Self::Inaccessible => Some(Status::ANA_INACCESSIBLE),
            Self::PersistentLoss => Some(Status::ANA_PERSISTENT_LOSS),
            Self::Change => Some(Status::ANA_TRANSITION),
        }
    }
}

impl std::str::FromStr for AnaState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "optimized" => Self::Optimized,
            "non-optimized" | "nonoptimized" => Self::NonOptimized,
            "inaccessible" => Self::Inaccessible,
            "persistent-loss" => Self::PersistentLoss,
            "change" => Self::Change,
            _ => return Err(format!("'{s}' is not an ANA state ({})", Self::NAMES)),
        })
    }
}

impl std::fmt::Display for AnaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The state one listen port gives one ANA group (config `[[ana_state]]`,
/// flag `--ana-state PORT=GROUP:STATE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaPortState {
    /// A listen address.
    pub port: TransportAddr,
    /// The ANA group, 1..=[`ANAGRPMAX`].
    pub group: u32,
    /// Its state on that port.
    pub state: AnaState,
}

impl AnaPortState {
    /// Parses `ADDR:PORT=GROUP:STATE`, e.g. `127.0.0.1:4421=1:inaccessible`.
    pub fn parse_flag(s: &str) -> Result<Self, String> {
        let form = "ADDR:PORT=GROUP:STATE, e.g. 127.0.0.1:4421=1:inaccessible";
        let (addr, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("expected {form}"))?;
        let (group, state) = rest
            .split_once(':')
            .ok_or_else(|| format!("expected {form}"))?;
        Ok(Self {
            port: addr.parse()?,
            group: parse_group(group)?,
            state: state.parse()?,
        })
    }
}

/// Parses an ANA group ID and checks its range.
pub fn parse_group(s: &str) -> Result<u32, String> {
    let g: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not an ANA group number"))?;
    check_group(g)?;
    Ok(g)
}

/// Checks that `g` is a valid ANA group ID (1..=[`ANAGRPMAX`]; 0 means "none"
/// and is not a group, NVMe Base 2.0 §8.1.2).
pub fn check_group(g: u32) -> Result<(), String> {
    if g == 0 || g > ANAGRPMAX {
        return Err(format!("ANA group {g} is not between 1 and {ANAGRPMAX}"));
    }
    Ok(())
}

/// The port index of a connection whose local address is `local`, among the
/// bound listen addresses `bound` (in listen order): the exact address, or a
/// wildcard address of the same port. `None` for a discovery-only port.
pub fn port_of(bound: &[TransportAddr], local: TransportAddr) -> Option<usize> {
    bound.iter().position(|a| *a == local).or_else(|| {
        bound.iter().position(|a| {
            a.kind == local.kind
                && a.socket.port() == local.socket.port()
                && a.socket.ip().is_unspecified()
        })
    })
}

#[derive(Debug)]
struct Slot {
    state: AtomicU8,
    /// CHGCNT at this (port, group)'s last change (the descriptor's Change Count).
    chgcnt: AtomicU64,
}

/// Why [`AnaTable::set`] refused a change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnaError {
    /// The address is not one of the target's listen addresses.
    #[error("{0} is not a listen address of this target")]
    UnknownPort(String),
    /// The group is out of range.
    #[error("{0}")]
    BadGroup(String),
}

/// The ANA state of every (listen port, ANA group) of the target.
#[derive(Debug)]
pub struct AnaTable {
    /// The configured listen addresses; index = port index.
    listen: Vec<TransportAddr>,
    /// `slots[port][group - 1]`.
    slots: Vec<Vec<Slot>>,
    /// The ANA log's Change Count: bumped on every change of any state.
    chgcnt: AtomicU64,
    /// Serialises changes (a reload and a control command at once).
    change: Mutex<()>,
}

impl AnaTable {
    /// The states of `listen` (the configured addresses, in order): optimized
    /// unless `states` says otherwise.
    pub fn new(listen: &[TransportAddr], states: &[AnaPortState]) -> Self {
        let t = Self {
            listen: listen.to_vec(),
            slots: listen
                .iter()
                .map(|_| {
                    (0..ANAGRPMAX)
                        .map(|_| Slot {
                            state: AtomicU8::new(ana_state::OPTIMIZED),
                            chgcnt: AtomicU64::new(0),
                        })
                        .collect()
                })
                .collect(),
            chgcnt: AtomicU64::new(0),
            change: Mutex::new(()),
        };
        for s in states {
            if let (Some(p), Some(slot)) = (t.index(&s.port), s.group.checked_sub(1)) {
                if let Some(sl) = t.slots[p].get(slot as usize) {
                    sl.state.store(s.state.code(), Ordering::Relaxed);
                }
            }
        }
        t
    }

    fn index(&self, a: &TransportAddr) -> Option<usize> {
        self.listen.iter().position(|l| l == a)
    }

    fn slot(&self, port: usize, group: u32) -> Option<&Slot> {
        self.slots
            .get(port)?
            .get(usize::try_from(group.checked_sub(1)?).ok()?)
    }

    /// The state port `port` gives `group`; optimized for a port without ANA
    /// states (discovery-only ports) or a group out of range.
    pub fn state(&self, port: Option<usize>, group: u32) -> AnaState {
        port.and_then(|p| self.slot(p, group))
            .and_then(|s| AnaState::from_code(s.state.load(Ordering::Relaxed)))
            .unwrap_or_default()
    }

    /// The state listen address `port` gives `group`.
    pub fn state_of(&self, port: &TransportAddr, group: u32) -> Option<AnaState> {
        let p = self.index(port)?;
        Some(self.state(Some(p), group))
    }

    /// The ANA log's Change Count.
    pub fn chgcnt(&self) -> u64 {
        self.chgcnt.load(Ordering::Acquire)
    }

    /// The configured listen addresses, in port-index order.
    pub fn ports(&self) -> &[TransportAddr] {
        &self.listen
    }

    /// Sets one state; returns the (port, group) changed, if it changed.
    fn store(&self, port: usize, group: u32, state: AnaState) -> Option<(usize, u32)> {
        let slot = self.slot(port, group)?;
        if slot.state.swap(state.code(), Ordering::AcqRel) == state.code() {
            return None;
        }
        let c = self.chgcnt.fetch_add(1, Ordering::AcqRel) + 1;
        slot.chgcnt.store(c, Ordering::Release);
        Some((port, group))
    }

    /// Puts a whole configuration's states in force (a reload): every
    /// (port, group) it does not name goes back to optimized. Entries for
    /// addresses the target does not listen on (listen addresses need a
    /// restart) are ignored. Returns what changed.
    pub fn apply(&self, states: &[AnaPortState]) -> Vec<(usize, u32)> {
        let _g = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let mut want: Vec<Vec<AnaState>> = self
            .listen
            .iter()
            .map(|_| vec![AnaState::Optimized; ANAGRPMAX as usize])
            .collect();
        for s in states {
            if let (Some(p), Some(i)) = (self.index(&s.port), s.group.checked_sub(1)) {
                if let Some(w) = want[p].get_mut(i as usize) {
                    *w = s.state;
                }
            }
        }
        let mut changed = Vec::new();
        for (p, groups) in want.iter().enumerate() {
            for (i, st) in groups.iter().enumerate() {
                changed.extend(self.store(p, i as u32 + 1, *st));
            }
        }
        changed
    }

    /// Sets the state of one group on one listen address (the control
    /// socket). Returns whether it changed.
    pub fn set(
        &self,
        port: &TransportAddr,
        group: u32,
        state: AnaState,
    ) -> Result<Option<(usize, u32)>, AnaError> {
        check_group(group).map_err(AnaError::BadGroup)?;
        let p = self
            .index(port)
            .ok_or_else(|| AnaError::UnknownPort(port.to_string()))?;
        let _g = self.change.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self.store(p, group, state))
    }

    /// The ANA log page for a controller reached through `port` that sees the
    /// namespaces `ns`: one descriptor per group holding at least one of them,
    /// in group order, with the group's NSIDs in ascending order (Linux walks
    /// them in step with its sorted namespace list); without NSIDs when the
    /// host asked for groups only (RGO).
    pub fn log_page(&self, port: Option<usize>, ns: &NsMap, rgo: bool) -> Vec<u8> {
        let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for n in ns.values() {
            groups.entry(n.config.ana_group).or_default().push(n.nsid);
        }
        let descs: Vec<AnaGroup> = groups
            .into_iter()
            .map(|(g, nsids)| AnaGroup {
                grpid: g,
                chgcnt: port
                    .and_then(|p| self.slot(p, g))
                    .map_or(0, |s| s.chgcnt.load(Ordering::Acquire)),
                state: self.state(port, g).code(),
                nsids: if rgo { Vec::new() } else { nsids },
            })
            .collect();
        encode_ana_log(self.chgcnt(), &descs)
    }

    /// The status an I/O command for `ns` gets on a controller reached
    /// through `port`, `None` if the path serves I/O.
    pub fn io_status(&self, port: Option<usize>, ns: &Namespace) -> Option<Status> {
        let p = port?;
        self.state(Some(p), ns.config.ana_group).io_status()
    }
}

/// Sets the Identify Controller fields of ANA reporting (NVMe Base 2.0 Figure
/// 275) on an I/O controller's page: CMIC multi-port, multi-controller and ANA
/// reporting; OAES ANA Change notices; ANACAP every state, ANAGRPID not
/// static (a reload may move a namespace to another group); ANATT,
/// ANAGRPMAX, NANAGRPID; MNAN = NN (Linux sizes its ANA log buffer from
/// NANAGRPID and MNAN and refuses ANA when MNAN is 0 or above NN).
pub fn fill_identify_controller(id: &mut IdentifyController) {
    id.cmic |= cmic::MULTI_PORT | cmic::MULTI_CTRL | cmic::ANA;
    id.oaes |= aec::ANA_CHANGE;
    id.anatt = ANATT_SECS;
    id.anacap = anacap::OPTIMIZED
        | anacap::NON_OPTIMIZED
        | anacap::INACCESSIBLE
        | anacap::PERSISTENT_LOSS
        | anacap::CHANGE;
    id.anagrpmax = ANAGRPMAX;
    id.nanagrpid = ANAGRPMAX;
    id.mnan = id.nn;
}

/// A controller's ANA bookkeeping: the port it was reached through and the
/// masking of its ANA Change notice.
#[derive(Debug)]
pub struct CtrlAna {
    port: AtomicUsize,
    aen_masked: AtomicBool,
}

impl Default for CtrlAna {
    fn default() -> Self {
        Self {
            port: AtomicUsize::new(usize::MAX),
            aen_masked: AtomicBool::new(false),
        }
    }
}

impl CtrlAna {
    /// Records the port index the controller's admin queue connected through.
    pub fn set_port(&self, port: Option<usize>) {
        self.port
            .store(port.unwrap_or(usize::MAX), Ordering::Release);
    }

    /// The port index, `None` for a discovery-only port.
    pub fn port(&self) -> Option<usize> {
        match self.port.load(Ordering::Acquire) {
            usize::MAX => None,
            p => Some(p),
        }
    }

    /// The host read the ANA log without RAE: the next change notifies again
    /// (NVMe Base 2.0 §5.2: an event type stays masked until its log is read).
    pub fn log_read(&self, rae: bool) {
        if !rae {
            self.aen_masked.store(false, Ordering::Release);
        }
    }
}

/// Raises the ANA Change notice (type Notice, information 03h, log page 0Ch;
/// NVMe Base 2.0 Figure 149) on a controller that enabled it (Asynchronous
/// Event Configuration bit 11) and has no such notice unread.
pub fn notify(c: &CtrlShared) {
    if c.aec.load(Ordering::Relaxed) & aec::ANA_CHANGE != 0
        && !c.ana.aen_masked.swap(true, Ordering::AcqRel)
    {
        c.send_aen(aen_dw0(aen_type::NOTICE, aen_notice::ANA_CHANGE, lid::ANA));
    }
}

/// True if a namespace present in both maps changed its ANA group (a reload).
pub fn groups_moved(old: &NsMap, new: &NsMap) -> bool {
    new.iter().any(|(id, n)| {
        old.get(id)
            .is_some_and(|o| o.config.ana_group != n.config.ana_group)
    })
}

/// A reload moved namespaces of `subsys` to other ANA groups: its
/// controllers' ANA log pages changed, so CHGCNT moves and they get the ANA
/// Change notice (besides the Namespace Attribute notice of the reload).
pub fn namespaces_moved(table: &AnaTable, subsys: &crate::registry::Subsystem) {
    table.chgcnt.fetch_add(1, Ordering::AcqRel);
    info!(subnqn = %subsys.nqn, chgcnt = table.chgcnt(), "namespaces moved to other ANA groups");
    for c in subsys.all_controllers() {
        notify(&c);
    }
}

/// Tells every controller whose log page `changed` affects: those reached
/// through a changed port that see a namespace of a changed group.
pub fn notify_changed(reg: &Registry, changed: &[(usize, u32)]) {
    if changed.is_empty() {
        return;
    }
    for (p, g) in changed {
        let port = reg
            .ana
            .ports()
            .get(*p)
            .map(|a| a.to_string())
            .unwrap_or_default();
        info!(port = %port, group = g, state = %reg.ana.state(Some(*p), *g), chgcnt = reg.ana.chgcnt(), "ANA state changed");
    }
    for s in reg.subsystems() {
        let ns = s.namespaces();
        for c in s.all_controllers() {
            let Some(p) = c.ana.port() else { continue };
            let hit = changed
                .iter()
                .any(|&(cp, g)| cp == p && ns.values().any(|n| n.config.ana_group == g));
            if hit {
                notify(&c);
            }
        }
    }
}
