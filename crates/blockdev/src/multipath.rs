//! One namespace over several paths (controllers of one NVM subsystem), as
//! Linux's native NVMe multipath gives one `/dev/nvmeXnY` per namespace.
//!
//! NVMe Base 2.0 §8.1 (Asymmetric Namespace Access): each controller reports,
//! per ANA group, whether the namespaces of the group are reachable through it
//! Optimized, Non-Optimized, Inaccessible, in Persistent Loss or in Change
//! (transition). [`Multipath`] sends each [`BlockOp`] down one path: an
//! Optimized one if any, else a Non-Optimized one; never an Inaccessible, a
//! Persistent Loss or a Change path (Change is waited out), nor a path whose
//! association is down. Among the paths of the best tier, [`IoPolicy`] picks
//! round-robin or the one with the fewest operations outstanding (Linux's
//! `iopolicy` `round-robin` and `queue-depth`).
//!
//! Failover: an operation failing with a path error
//! ([`nvmf_host::Error::is_path_error`]: transport failure, lost association,
//! timeout, or a Path Related Status, SCT 3h, without DNR: NVMe Base 2.0
//! §4.6.1.2.4 and Linux's nvme_decide_disposition) is run again on another
//! path and the caller never sees the error; an ANA status also has the
//! path's ANA log re-read (NVMe Base 2.0 §8.1.4; Linux's nvme_failover_req
//! queues ana_work). The paths are [`Controller::failfast`] handles, so a
//! command in flight when a path dies fails at once instead of being re-sent
//! on that path after its reconnect, where it could overwrite what the other
//! path wrote since. With no usable path the operation waits for one to come
//! back (a reconnect, an ANA change) for at most the longest ctrl-loss-tmo of
//! the paths, then fails. Any other error (media, data, invalid field: SCT 0
//! and 2, DNR) goes to the caller: another path reaches the same media.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nvmf_host::{Controller, Error, LinkState};
use nvmf_proto::log::ana_state;

use crate::io::{run, BlockIo, BlockOp, Geometry};

/// How to spread operations over the paths of the best ANA tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoPolicy {
    /// Each operation to the next path in turn (Linux `round-robin`).
    #[default]
    RoundRobin,
    /// Each operation to the path with the fewest operations outstanding
    /// (Linux `queue-depth`).
    QueueDepth,
}

impl IoPolicy {
    /// The policy's name, as nvme-cli and sysfs spell it.
    pub fn name(self) -> &'static str {
        match self {
            IoPolicy::RoundRobin => "round-robin",
            IoPolicy::QueueDepth => "queue-depth",
        }
    }
}

impl std::str::FromStr for IoPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "round-robin" => Ok(IoPolicy::RoundRobin),
            "queue-depth" => Ok(IoPolicy::QueueDepth),
            _ => Err(format!(
                "unknown I/O policy '{s}' (round-robin or queue-depth)"
            )),
        }
    }
}

/// What a path can do for the next operation, from its link state and its
/// ANA state for the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathUse {
    /// Live, ANA Optimized (or the controller does not report ANA).
    Optimized,
    /// Live, ANA Non-Optimized: used when no Optimized path is.
    NonOptimized,
    /// Live but not usable now: ANA Inaccessible or Change; an ANA change may
    /// make it usable (NVMe Base 2.0 §8.1.3.3, §8.1.3.5).
    Waiting,
    /// The association is being re-established.
    Reconnecting,
    /// Never usable again: the association is lost or disconnected, or the
    /// namespace is in ANA Persistent Loss (§8.1.3.4).
    Gone,
}

impl PathUse {
    /// From a path's link state and ANA state code (`None`: no ANA reported).
    pub fn of(link: &LinkState, ana: Option<u8>) -> Self {
        match link {
            LinkState::Live => match ana {
                None | Some(ana_state::OPTIMIZED) => PathUse::Optimized,
                Some(ana_state::NON_OPTIMIZED) => PathUse::NonOptimized,
                Some(ana_state::PERSISTENT_LOSS) => PathUse::Gone,
                // Inaccessible, Change, and reserved codes.
                Some(_) => PathUse::Waiting,
            },
            LinkState::Reconnecting { .. } => PathUse::Reconnecting,
            LinkState::Lost(_) | LinkState::Disconnected => PathUse::Gone,
        }
    }
}

/// One path as [`pick`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// What the path can do.
    pub usable: PathUse,
    /// Operations outstanding on it.
    pub outstanding: usize,
    /// This operation already failed on it with a path error.
    pub excluded: bool,
}

/// What [`pick`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Send the operation down path `i`.
    Path(usize),
    /// No path is usable now but one may become usable: wait and ask again.
    Wait,
    /// No path will be usable again.
    Fail,
}

/// Chooses a path: among those not excluded, the Optimized ones, else the
/// Non-Optimized ones; within that tier `policy` decides (`turn` is a counter
/// that advances once per operation, for round-robin and to break ties of
/// queue depth). [`Pick::Wait`] while some path may still become usable
/// (reconnecting, Inaccessible, Change, or only excluded for this operation),
/// [`Pick::Fail`] when every path is gone.
pub fn pick(paths: &[Candidate], policy: IoPolicy, turn: usize) -> Pick {
    for tier in [PathUse::Optimized, PathUse::NonOptimized] {
        let idx: Vec<usize> = (0..paths.len())
            .filter(|&i| paths[i].usable == tier && !paths[i].excluded)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let n = idx.len();
        return Pick::Path(match policy {
            IoPolicy::RoundRobin => idx[turn % n],
            IoPolicy::QueueDepth => {
                // Fewest outstanding; ties go round from `turn`.
                let mut best = idx[turn % n];
                for k in 0..n {
                    let i = idx[(turn + k) % n];
                    if paths[i].outstanding < paths[best].outstanding {
                        best = i;
                    }
                }
                best
            }
        });
    }
    if paths.iter().any(|p| p.usable != PathUse::Gone) {
        Pick::Wait
    } else {
        Pick::Fail
    }
}

/// One path: a controller (a failfast handle) and the namespace's ID on it.
struct Path {
    ctrl: Controller,
    nsid: u32,
    outstanding: AtomicUsize,
    /// Operations sent down this path.
    commands: AtomicU64,
    /// Operations that failed on it with a path error and went elsewhere.
    failovers: AtomicU64,
    /// The ANA state an ANA status reported, until the log is read again
    /// (0: none).
    ana_hint: AtomicU8,
}

impl Path {
    fn ana(&self) -> Option<u8> {
        match self.ana_hint.load(Ordering::Relaxed) {
            0 => self.ctrl.ana_state(self.nsid),
            s => Some(s),
        }
    }

    fn usable(&self) -> PathUse {
        PathUse::of(&self.ctrl.state(), self.ana())
    }
}

/// What [`Multipath::paths`] reports of one path.
#[derive(Debug, Clone)]
pub struct PathInfo {
    /// The controller (a failfast handle on it).
    pub ctrl: Controller,
    /// The namespace ID on it.
    pub nsid: u32,
    /// Its link state.
    pub link: LinkState,
    /// The namespace's ANA state through it (`None`: not reported).
    pub ana: Option<u8>,
    /// What selection makes of it.
    pub usable: PathUse,
    /// Operations outstanding on it.
    pub outstanding: usize,
    /// Operations sent down it so far.
    pub commands: u64,
    /// Operations that failed on it with a path error and were retried elsewhere.
    pub failovers: u64,
}

struct Inner {
    paths: RwLock<Vec<Arc<Path>>>,
    policy: AtomicU8,
    turn: AtomicUsize,
}

/// A namespace reached over one or more paths; a [`BlockIo`] that picks a path
/// per operation and fails over (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct Multipath {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Multipath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multipath")
            .field("paths", &self.len())
            .field("policy", &self.policy())
            .finish()
    }
}

/// How long to sleep between looks while no path is usable.
const WAIT_STEP: Duration = Duration::from_millis(50);

impl Multipath {
    /// A namespace with its first path: namespace `nsid` of `ctrl`.
    pub fn new(ctrl: &Controller, nsid: u32, policy: IoPolicy) -> Self {
        let m = Self {
            inner: Arc::new(Inner {
                paths: RwLock::new(Vec::new()),
                policy: AtomicU8::new(0),
                turn: AtomicUsize::new(0),
            }),
        };
        m.set_policy(policy);
        m.add_path(ctrl, nsid);
        m
    }

    /// Adds a path (nothing if `ctrl`'s association is already one).
    pub fn add_path(&self, ctrl: &Controller, nsid: u32) {
        let mut p = self.inner.paths.write().unwrap_or_else(|e| e.into_inner());
        if p.iter().any(|x| x.ctrl.same_association(ctrl)) {
            return;
        }
        p.push(Arc::new(Path {
            ctrl: ctrl.failfast(),
            nsid,
            outstanding: AtomicUsize::new(0),
            commands: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            ana_hint: AtomicU8::new(0),
        }));
    }

    /// Removes the path through `ctrl`'s association; returns how many remain.
    /// Operations in flight on it fail over when it is disconnected.
    pub fn remove_path(&self, ctrl: &Controller) -> usize {
        let mut p = self.inner.paths.write().unwrap_or_else(|e| e.into_inner());
        p.retain(|x| !x.ctrl.same_association(ctrl));
        p.len()
    }

    /// True when `ctrl`'s association is one of the paths.
    pub fn has_path(&self, ctrl: &Controller) -> bool {
        self.snapshot()
            .iter()
            .any(|x| x.ctrl.same_association(ctrl))
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// True with no path left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The I/O policy.
    pub fn policy(&self) -> IoPolicy {
        match self.inner.policy.load(Ordering::Relaxed) {
            1 => IoPolicy::QueueDepth,
            _ => IoPolicy::RoundRobin,
        }
    }

    /// Sets the I/O policy (takes effect with the next operation).
    pub fn set_policy(&self, p: IoPolicy) {
        let v = match p {
            IoPolicy::RoundRobin => 0,
            IoPolicy::QueueDepth => 1,
        };
        self.inner.policy.store(v, Ordering::Relaxed);
    }

    /// The state of every path.
    pub fn paths(&self) -> Vec<PathInfo> {
        self.snapshot()
            .iter()
            .map(|p| {
                let link = p.ctrl.state();
                let ana = p.ana();
                PathInfo {
                    ctrl: p.ctrl.clone(),
                    nsid: p.nsid,
                    usable: PathUse::of(&link, ana),
                    link,
                    ana,
                    outstanding: p.outstanding.load(Ordering::Relaxed),
                    commands: p.commands.load(Ordering::Relaxed),
                    failovers: p.failovers.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// The namespace's geometry, from the first path whose controller knows it.
    pub fn geometry(&self) -> nvmf_host::Result<Geometry> {
        let mut last = Error::Invalid("no path".into());
        for p in self.snapshot() {
            match Geometry::of(&p.ctrl, p.nsid) {
                Ok(g) => return Ok(g),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn snapshot(&self) -> Vec<Arc<Path>> {
        self.inner
            .paths
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The longest ctrl-loss-tmo of the paths: how long an operation waits
    /// for a usable path (`None`: some path reconnects forever).
    fn wait_limit(paths: &[Arc<Path>]) -> Option<Duration> {
        let mut max = Duration::ZERO;
        for p in paths {
            max = max.max(p.ctrl.options().ctrl_loss_tmo?);
        }
        Some(max)
    }

    /// Runs `op` on a path, failing over as the module documentation says.
    pub async fn run(&self, op: BlockOp) -> nvmf_host::Result<Vec<u8>> {
        let mut excluded: Vec<Arc<Path>> = Vec::new();
        let mut last_err: Option<Error> = None;
        let mut waiting_since: Option<tokio::time::Instant> = None;
        let turn = self.inner.turn.fetch_add(1, Ordering::Relaxed);
        loop {
            let paths = self.snapshot();
            let cands: Vec<Candidate> = paths
                .iter()
                .map(|p| Candidate {
                    usable: p.usable(),
                    outstanding: p.outstanding.load(Ordering::Relaxed),
                    excluded: excluded.iter().any(|x| Arc::ptr_eq(x, p)),
                })
                .collect();
            match pick(&cands, self.policy(), turn) {
                Pick::Path(i) => {
                    let p = &paths[i];
                    p.outstanding.fetch_add(1, Ordering::Relaxed);
                    p.commands.fetch_add(1, Ordering::Relaxed);
                    let r = run(&p.ctrl, p.nsid, op.clone()).await;
                    p.outstanding.fetch_sub(1, Ordering::Relaxed);
                    match r {
                        Ok(v) => return Ok(v),
                        Err(e) if e.is_path_error() => {
                            p.failovers.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(
                                "{} on {} failed ({e}); trying another path",
                                op.name(),
                                p.ctrl.options().addr
                            );
                            // One log read per burst of ANA statuses, not one per operation.
                            if let Some(s) = e
                                .ana_state()
                                .filter(|&s| p.ana_hint.swap(s, Ordering::Relaxed) == 0)
                            {
                                tracing::debug!("ANA state {s:#x} reported by an I/O status; re-reading the ANA log");
                                let p = p.clone();
                                tokio::spawn(async move {
                                    let _ = p.ctrl.refresh_ana().await;
                                    p.ana_hint.store(0, Ordering::Relaxed);
                                });
                            }
                            excluded.push(p.clone());
                            last_err = Some(e);
                            waiting_since = None;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Pick::Wait => {
                    let since = *waiting_since.get_or_insert_with(tokio::time::Instant::now);
                    if Self::wait_limit(&paths).is_some_and(|l| since.elapsed() >= l) {
                        return Err(last_err.unwrap_or_else(|| {
                            Error::ControllerLost(format!(
                                "no usable path to namespace within {:?}",
                                Self::wait_limit(&paths).unwrap_or_default()
                            ))
                        }));
                    }
                    // A path this operation failed on may be fine again (a
                    // reconnect, a new ANA state): try it after the pause.
                    excluded.clear();
                    tokio::time::sleep(WAIT_STEP).await;
                }
                Pick::Fail => {
                    return Err(last_err.unwrap_or_else(|| {
                        Error::ControllerLost(if paths.is_empty() {
                            "no path to the namespace".into()
                        } else {
                            "every path to the namespace is lost".into()
                        })
                    }));
                }
            }
        }
    }
}

impl BlockIo for Multipath {
    async fn submit(&self, op: BlockOp) -> nvmf_host::Result<Vec<u8>> {
        self.run(op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(usable: PathUse, outstanding: usize) -> Candidate {
        Candidate {
            usable,
            outstanding,
            excluded: false,
        }
    }

    use PathUse::*;

    #[test]
    fn optimized_before_non_optimized_never_the_rest() {
        let p = [
            c(NonOptimized, 0),
            c(Optimized, 9),
            c(Waiting, 0),
            c(Gone, 0),
        ];
        for t in 0..8 {
            assert_eq!(pick(&p, IoPolicy::RoundRobin, t), Pick::Path(1));
            assert_eq!(pick(&p, IoPolicy::QueueDepth, t), Pick::Path(1));
        }
        let p = [c(Waiting, 0), c(NonOptimized, 3), c(Reconnecting, 0)];
        assert_eq!(pick(&p, IoPolicy::RoundRobin, 5), Pick::Path(1));
        // Inaccessible / Change / reconnecting: wait; all gone: fail.
        assert_eq!(
            pick(&[c(Waiting, 0), c(Gone, 0)], IoPolicy::RoundRobin, 0),
            Pick::Wait
        );
        assert_eq!(
            pick(&[c(Reconnecting, 0)], IoPolicy::QueueDepth, 0),
            Pick::Wait
        );
        assert_eq!(
            pick(&[c(Gone, 0), c(Gone, 0)], IoPolicy::RoundRobin, 0),
            Pick::Fail
        );
        assert_eq!(pick(&[], IoPolicy::RoundRobin, 0), Pick::Fail);
    }

    #[test]
    fn round_robin_takes_turns_within_the_tier() {
        let p = [
            c(Optimized, 0),
            c(NonOptimized, 0),
            c(Optimized, 0),
            c(Optimized, 0),
        ];
        let got: Vec<Pick> = (0..6).map(|t| pick(&p, IoPolicy::RoundRobin, t)).collect();
        let want = [0, 2, 3, 0, 2, 3].map(Pick::Path);
        assert_eq!(got, want);
    }

    #[test]
    fn queue_depth_takes_the_least_busy() {
        let p = [c(Optimized, 4), c(Optimized, 1), c(Optimized, 2)];
        for t in 0..5 {
            assert_eq!(pick(&p, IoPolicy::QueueDepth, t), Pick::Path(1));
        }
        // Equal depths: spread by turn.
        let p = [c(Optimized, 2), c(Optimized, 2)];
        assert_eq!(pick(&p, IoPolicy::QueueDepth, 0), Pick::Path(0));
        assert_eq!(pick(&p, IoPolicy::QueueDepth, 1), Pick::Path(1));
        // The least busy non-optimized path is not taken while an optimized one is usable.
        let p = [c(Optimized, 50), c(NonOptimized, 0)];
        assert_eq!(pick(&p, IoPolicy::QueueDepth, 0), Pick::Path(0));
    }

    #[test]
    fn a_path_that_failed_this_operation_is_skipped() {
        let mut p = [c(Optimized, 0), c(NonOptimized, 0)];
        p[0].excluded = true;
        assert_eq!(pick(&p, IoPolicy::RoundRobin, 0), Pick::Path(1));
        p[1].excluded = true;
        // Only excluded paths left: wait (and try them again), not fail.
        assert_eq!(pick(&p, IoPolicy::RoundRobin, 0), Pick::Wait);
    }

    #[test]
    fn path_use_from_link_and_ana() {
        let live = LinkState::Live;
        assert_eq!(PathUse::of(&live, None), Optimized);
        assert_eq!(PathUse::of(&live, Some(ana_state::OPTIMIZED)), Optimized);
        assert_eq!(
            PathUse::of(&live, Some(ana_state::NON_OPTIMIZED)),
            NonOptimized
        );
        assert_eq!(PathUse::of(&live, Some(ana_state::INACCESSIBLE)), Waiting);
        assert_eq!(PathUse::of(&live, Some(ana_state::CHANGE)), Waiting);
        assert_eq!(PathUse::of(&live, Some(ana_state::PERSISTENT_LOSS)), Gone);
        let rc = LinkState::Reconnecting {
            attempt: 1,
            last_error: String::new(),
        };
        assert_eq!(PathUse::of(&rc, Some(ana_state::OPTIMIZED)), Reconnecting);
        assert_eq!(PathUse::of(&LinkState::Lost("x".into()), None), Gone);
        assert_eq!(PathUse::of(&LinkState::Disconnected, None), Gone);
    }

    #[test]
    fn policy_names() {
        for p in [IoPolicy::RoundRobin, IoPolicy::QueueDepth] {
            assert_eq!(p.name().parse::<IoPolicy>(), Ok(p));
        }
        assert!("numa".parse::<IoPolicy>().is_err());
    }
}
