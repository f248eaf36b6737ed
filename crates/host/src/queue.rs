//! The task that drives one queue: it owns the queue's connection, takes requests
//! from an mpsc channel and answers each on its oneshot. When the connection fails
//! the commands in flight go back to the front of the pending list, in the order
//! they were first submitted, and the task reports the failure; the supervisor then
//! hands it a new connection (and the pending commands are sent again) or declares
//! the controller lost.
//!
//! Command timeouts (NVMe Base 2.0 §5.1 Abort; Linux's `nvme_core.io_timeout`):
//! an I/O command outstanding for longer than its queue's timeout is aborted
//! through the admin queue; if the controller aborts it (status Command Abort
//! Requested) it is sent again, at most [`MAX_RETRIES`] times; if nothing frees it
//! within another timeout, or an admin command times out, the queue asks for the
//! association to be reset, and the reconnect sends it again. So a lost
//! completion never hangs a caller: it ends in a retry, a reset or, after
//! ctrl-loss-tmo, an error.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use nvmf_proto::sqe::admin_opcode;
use nvmf_proto::tcp::{Completion, HostData};
use nvmf_proto::{Sqe, Status};
use nvmf_transport::{HostConnection, TransportError};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Times a command aborted after a timeout is sent again before it fails (as
/// Linux's `nvme_core.max_retries`).
pub(crate) const MAX_RETRIES: u8 = 5;

/// One command for a queue task.
pub(crate) struct Request {
    pub sqe: Sqe,
    pub data: HostData,
    pub reply: oneshot::Sender<Result<Completion>>,
    /// Fail with [`Error::PathUnavailable`] when the connection is lost (or
    /// is down when the command arrives) instead of waiting to be sent again
    /// on the next association: the caller (a multipath layer) retries it on
    /// another path. See [`crate::Controller::failfast`].
    pub failfast: bool,
}

/// Control messages from the supervisor.
pub(crate) enum Ctl {
    /// A new connection of association generation `gen`.
    Conn(Box<HostConnection>, u64),
    /// Drop the connection (the association is being re-established); keep the commands.
    Reset,
    /// The controller is lost: fail everything, now and from now on.
    Dead(String),
    /// Close the connection and end the task.
    Close(oneshot::Sender<()>),
}

/// A failure report: (queue id, generation).
pub(crate) type Failure = (u16, u64);

/// How a queue task bounds the time a command may stay outstanding.
#[derive(Clone)]
pub(crate) struct Timeouts {
    /// Commands older than this are timed out; `None`: never.
    pub limit: Option<Duration>,
    /// Where Abort commands go (the admin queue); `None` on the admin queue
    /// itself, whose timeouts reset the association at once.
    pub abort_to: Option<mpsc::Sender<Request>>,
}

/// A request the task has taken, with its place in submission order.
struct Cmd {
    req: Request,
    /// Submission order on this queue (CIDs wrap, so they cannot tell it).
    seq: u64,
    /// Times it was aborted after a timeout and sent again.
    retries: u8,
}

/// A command on the wire.
struct Inflight {
    cmd: Cmd,
    /// Timer tick at which it was sent, or at which its Abort was sent.
    since: u64,
    /// An Abort for it was sent.
    aborting: bool,
}

/// The coarse clock of the timeouts: one tick every `limit / 8` (10 ms to 1 s),
/// so a command needs no clock read of its own and the task wakes a few times
/// per timeout, not per command.
struct Ticker {
    interval: Option<tokio::time::Interval>,
    /// Ticks that make up one timeout.
    limit_ticks: u64,
    now: u64,
}

impl Ticker {
    fn new(limit: Option<Duration>) -> Self {
        let Some(limit) = limit else {
            return Self {
                interval: None,
                limit_ticks: u64::MAX,
                now: 0,
            };
        };
        let period = (limit / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut iv = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            interval: Some(iv),
            // A command sent just before a tick must still get the whole limit.
            limit_ticks: limit.as_nanos().div_ceil(period.as_nanos()) as u64 + 1,
            now: 0,
        }
    }

    async fn tick(&mut self) {
        match self.interval.as_mut() {
            Some(iv) => {
                iv.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

async fn next(conn: &mut Option<Box<HostConnection>>) -> Result<Completion, TransportError> {
    match conn {
        Some(c) => c.next_completion().await,
        None => std::future::pending().await,
    }
}

/// Asynchronous Event Requests stay outstanding until an event: never timed out.
fn times_out(qid: u16, sqe: &Sqe) -> bool {
    !(qid == 0 && sqe.opcode == admin_opcode::ASYNC_EVENT_REQUEST)
}

/// What a timer tick found.
enum Expired {
    Nothing,
    /// Abort these CIDs.
    Abort(Vec<u16>),
    /// Reset the association; the reason.
    Reset(String),
}

fn expired(qid: u16, inflight: &mut HashMap<u16, Inflight>, t: &Ticker, tmo: &Timeouts) -> Expired {
    let mut abort = Vec::new();
    for (&cid, f) in inflight.iter_mut() {
        if t.now.saturating_sub(f.since) < t.limit_ticks || !times_out(qid, &f.cmd.req.sqe) {
            continue;
        }
        let limit = tmo.limit.unwrap_or_default();
        let op = f.cmd.req.sqe.opcode;
        if tmo.abort_to.is_none() {
            return Expired::Reset(format!(
                "admin command {op:#04x} (CID {cid}) unanswered after {limit:?}"
            ));
        }
        if f.aborting {
            return Expired::Reset(format!(
                "command {op:#04x} (CID {cid}) still outstanding {limit:?} after its Abort"
            ));
        }
        f.aborting = true;
        f.since = t.now;
        abort.push(cid);
    }
    if abort.is_empty() {
        Expired::Nothing
    } else {
        Expired::Abort(abort)
    }
}

/// Sends Abort (SQID `qid`, CID `cid`) on the admin queue and logs its answer;
/// the command itself completes on its own queue (or a reset takes it).
fn send_abort(to: &mpsc::Sender<Request>, qid: u16, cid: u16, limit: Duration) {
    let to = to.clone();
    tokio::spawn(async move {
        let mut sqe = Sqe::new(admin_opcode::ABORT);
        // CDW10: bits 31:16 CID, bits 15:0 SQID (NVMe Base 2.0 Figure 145).
        sqe.cdw10 = (u32::from(cid) << 16) | u32::from(qid);
        let (reply, rx) = oneshot::channel();
        if to
            .send(Request {
                sqe,
                data: HostData::None,
                reply,
                failfast: false,
            })
            .await
            .is_err()
        {
            return;
        }
        match rx.await {
            Ok(Ok(c)) if c.cqe.status.is_success() && c.cqe.dw0 & 1 == 0 => {
                tracing::warn!(qid, cid, "command timed out after {limit:?}; the controller aborted it")
            }
            Ok(Ok(c)) if c.cqe.status.is_success() => tracing::warn!(
                qid,
                cid,
                "command timed out after {limit:?}; the controller did not abort it (the association is reset if it stays outstanding)"
            ),
            Ok(Ok(c)) => tracing::warn!(qid, cid, "Abort of a timed-out command failed: {}", c.cqe.status),
            Ok(Err(e)) => tracing::debug!(qid, cid, "Abort not sent: {e}"),
            Err(_) => {}
        }
    });
}

pub(crate) async fn run(
    qid: u16,
    mut conn: Option<Box<HostConnection>>,
    mut gen: u64,
    mut req_rx: mpsc::Receiver<Request>,
    mut ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    fail_tx: mpsc::UnboundedSender<Failure>,
    tmo: Timeouts,
) {
    let mut pending: VecDeque<Cmd> = VecDeque::new();
    let mut inflight: HashMap<u16, Inflight> = HashMap::new();
    let mut dead: Option<String> = None;
    let mut seq = 0u64;
    let mut ticker = Ticker::new(tmo.limit);
    loop {
        // Send what fits.
        if let Some(c) = conn.as_mut() {
            let mut failed = None;
            while c.has_room() {
                let Some(cmd) = pending.pop_front() else {
                    break;
                };
                if cmd.req.reply.is_closed() {
                    continue;
                }
                match c.submit(cmd.req.sqe, cmd.req.data.clone()) {
                    Ok(cid) => {
                        let since = ticker.now;
                        inflight.insert(
                            cid,
                            Inflight {
                                cmd,
                                since,
                                aborting: false,
                            },
                        );
                    }
                    Err(e) => {
                        pending.push_front(cmd);
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            let failed = failed.or_else(|| c.kick().err().map(|e| e.to_string()));
            if let Some(e) = failed {
                tracing::warn!(qid, "queue connection failed: {e}");
                lose(qid, &mut pending, &mut inflight);
                conn = None;
                let _ = fail_tx.send((qid, gen));
            }
        }
        tokio::select! {
            biased;
            ctl = ctl_rx.recv() => match ctl {
                Some(Ctl::Conn(c, g)) => {
                    conn = Some(c);
                    gen = g;
                    dead = None;
                }
                Some(Ctl::Reset) => {
                    lose(qid, &mut pending, &mut inflight);
                    if let Some(c) = conn.take() {
                        tokio::spawn(c.close());
                    }
                }
                Some(Ctl::Dead(msg)) => {
                    requeue(&mut pending, &mut inflight);
                    for cmd in pending.drain(..) {
                        let _ = cmd.req.reply.send(Err(Error::ControllerLost(msg.clone())));
                    }
                    if let Some(c) = conn.take() {
                        tokio::spawn(c.close());
                    }
                    dead = Some(msg);
                }
                Some(Ctl::Close(ack)) => {
                    requeue(&mut pending, &mut inflight);
                    for cmd in pending.drain(..) {
                        let _ = cmd.req.reply.send(Err(Error::Disconnected));
                    }
                    if let Some(c) = conn.take() {
                        c.close().await;
                    }
                    let _ = ack.send(());
                    return;
                }
                None => return,
            },
            r = req_rx.recv() => match r {
                Some(req) => match &dead {
                    Some(msg) => {
                        let _ = req.reply.send(Err(Error::ControllerLost(msg.clone())));
                    }
                    None if req.failfast && conn.is_none() => {
                        let _ = req.reply.send(Err(Error::PathUnavailable(format!(
                            "queue {qid} is reconnecting"
                        ))));
                    }
                    None => {
                        seq += 1;
                        pending.push_back(Cmd { req, seq, retries: 0 });
                    }
                },
                None => {
                    if let Some(c) = conn.take() {
                        c.close().await;
                    }
                    return;
                }
            },
            res = next(&mut conn) => match res {
                Ok(c) => {
                    if let Some(f) = inflight.remove(&c.cqe.cid) {
                        complete(qid, f, c, &mut pending, &tmo);
                    }
                }
                Err(e) => {
                    tracing::warn!(qid, "queue connection failed: {e}");
                    lose(qid, &mut pending, &mut inflight);
                    conn = None;
                    let _ = fail_tx.send((qid, gen));
                }
            },
            _ = ticker.tick() => {
                ticker.now += 1;
                if conn.is_none() {
                    continue;
                }
                match expired(qid, &mut inflight, &ticker, &tmo) {
                    Expired::Nothing => {}
                    Expired::Abort(cids) => {
                        let to = tmo.abort_to.as_ref().expect("abort_to is set when aborting");
                        for cid in cids {
                            send_abort(to, qid, cid, tmo.limit.unwrap_or_default());
                        }
                    }
                    Expired::Reset(why) => {
                        tracing::warn!(qid, "{why}; resetting the association");
                        lose(qid, &mut pending, &mut inflight);
                        if let Some(c) = conn.take() {
                            tokio::spawn(c.close());
                        }
                        let _ = fail_tx.send((qid, gen));
                    }
                }
            }
        }
    }
}

/// Answers a completed command, or sends it again when it was aborted after a
/// timeout (a retry of a command that did not execute, as Linux retries
/// NVME_SC_ABORT_REQ).
fn complete(qid: u16, mut f: Inflight, c: Completion, pending: &mut VecDeque<Cmd>, tmo: &Timeouts) {
    let st = c.cqe.status;
    if f.aborting && st.sct == Status::ABORT_REQUESTED.sct && st.sc == Status::ABORT_REQUESTED.sc {
        if f.cmd.retries < MAX_RETRIES {
            f.cmd.retries += 1;
            // Ahead of the commands submitted after it.
            let pos = pending
                .iter()
                .position(|p| p.seq > f.cmd.seq)
                .unwrap_or(pending.len());
            pending.insert(pos, f.cmd);
            return;
        }
        let _ = f.cmd.req.reply.send(Err(Error::Timeout(format!(
            "command {:#04x} on queue {qid} timed out {} times (limit {:?} each)",
            f.cmd.req.sqe.opcode,
            u32::from(MAX_RETRIES) + 1,
            tmo.limit.unwrap_or_default()
        ))));
        return;
    }
    let _ = f.cmd.req.reply.send(Ok(c));
}

/// The connection is gone: commands of failfast handles fail with
/// [`Error::PathUnavailable`] (never sent again on this path, so a multipath
/// layer may retry them elsewhere without an old copy turning up later, as
/// Linux fails over REQ_NVME_MPATH requests when it tears a queue down); the
/// others go back to the pending list to be sent on the next association.
fn lose(qid: u16, pending: &mut VecDeque<Cmd>, inflight: &mut HashMap<u16, Inflight>) {
    requeue(pending, inflight);
    if !pending.iter().any(|c| c.req.failfast) {
        return;
    }
    let (fail, keep): (VecDeque<Cmd>, VecDeque<Cmd>) =
        pending.drain(..).partition(|c| c.req.failfast);
    *pending = keep;
    for c in fail {
        let _ = c.req.reply.send(Err(Error::PathUnavailable(format!(
            "queue {qid} lost its connection"
        ))));
    }
}

/// Puts the commands in flight back at the front of the pending list, in the
/// order they were first submitted.
fn requeue(pending: &mut VecDeque<Cmd>, inflight: &mut HashMap<u16, Inflight>) {
    let mut v: Vec<Cmd> = inflight.drain().map(|(_, f)| f.cmd).collect();
    v.extend(pending.drain(..));
    v.sort_by_key(|c| c.seq);
    pending.extend(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(seq: u64) -> Cmd {
        let (reply, _rx) = oneshot::channel();
        Cmd {
            req: Request {
                sqe: Sqe::new(0),
                data: HostData::None,
                reply,
                failfast: false,
            },
            seq,
            retries: 0,
        }
    }

    /// CIDs wrap at 65536: commands in flight with CIDs 65534, 65535, 0 and 1
    /// were submitted in that order and go back in that order, before the
    /// commands still pending.
    #[test]
    fn requeue_keeps_submission_order_across_cid_wrap() {
        let mut inflight = HashMap::new();
        for (cid, seq) in [(0u16, 3u64), (65535, 2), (1, 4), (65534, 1)] {
            inflight.insert(
                cid,
                Inflight {
                    cmd: cmd(seq),
                    since: 0,
                    aborting: false,
                },
            );
        }
        let mut pending: VecDeque<Cmd> = [5, 6].into_iter().map(cmd).collect();
        requeue(&mut pending, &mut inflight);
        let order: Vec<u64> = pending.iter().map(|c| c.seq).collect();
        assert_eq!(order, vec![1, 2, 3, 4, 5, 6]);
        assert!(inflight.is_empty());
    }

    /// One timeout is at least `limit` whatever the phase of the tick.
    #[tokio::test]
    async fn ticks_cover_the_whole_limit() {
        let t = Ticker::new(Some(Duration::from_millis(800)));
        // period 100 ms: a command sent just before a tick times out after
        // 9 ticks, > 800 ms after it was sent.
        assert_eq!(t.limit_ticks, 9);
        let t = Ticker::new(Some(Duration::from_secs(30)));
        assert_eq!(t.limit_ticks, 31);
        assert_eq!(Ticker::new(None).limit_ticks, u64::MAX);
    }
}
