//! Fused Compare and Write (NVMe Base 2.0 §3.4.2 "Fused Operations").
//!
//! A host marks a Compare as the first command (FUSE = 01b) and the Write that
//! follows it on the same submission queue as the second (FUSE = 10b). The pair
//! runs as one atomic unit: the Compare and the Write hold the namespace's
//! `write_order` lock exclusively, which every other writing command takes
//! shared, so no queue of any controller writes the namespace between the two.
//!
//! Statuses, as SPDK's target and its `fused_ordering` test expect them:
//! - Compare miscompares (or fails): it completes with its own status and the
//!   Write with Command Aborted due to Failed Fused Command, unwritten.
//! - A first half not followed by a second half (the next capsule on the queue
//!   is a normal command or another first half), or a second half with no first
//!   half before it: Command Aborted due to Missing Fused Command.
//! - A pair that is not Compare + Write on the same namespace and LBA range: the
//!   first half fails with Invalid Field in Command, the second with Failed
//!   Fused Command.
//!
//! A first half asks for no write data (R2T) until its second half arrives, so
//! a half that must fail alone never has data in flight.

use nvmf_transport::ControllerQueuePair;
use std::sync::Arc;

use bytes::Bytes;
use nvmf_proto::sqe::{io_opcode, DataDirection, Fuse};
use nvmf_proto::tcp::IncomingCommand;
use nvmf_proto::{Cqe, Sqe, Status};
use tracing::warn;

use crate::io::run_io_locked;
use crate::queue::{Done, Outcome, QueueTask, Role};
use crate::registry::Namespace;

/// One half of a fused operation and its data once it is all here.
#[derive(Debug)]
pub(crate) struct Half {
    sqe: Sqe,
    /// `None` while the data is still to come by R2T.
    data: Option<Vec<Bytes>>,
}

impl Half {
    fn new(cmd: &IncomingCommand) -> Self {
        let needs_r2t =
            cmd.buffer_len > 0 && cmd.sqe.data_direction() == DataDirection::HostToController;
        Self {
            sqe: cmd.sqe,
            data: if needs_r2t {
                None
            } else if cmd.data.is_empty() {
                Some(Vec::new())
            } else {
                Some(vec![cmd.data.clone()])
            },
        }
    }
}

/// The fused operations of one I/O queue.
#[derive(Debug, Default)]
pub(crate) struct FusedState {
    /// A first half whose second half has not arrived yet.
    open: Option<Half>,
    /// Pairs whose capsules are both here, waiting for write data.
    pairs: Vec<(Half, Half)>,
}

/// Checks that a pair is a Compare and a Write of the same range.
fn pair_is_valid(first: &Sqe, second: &Sqe) -> bool {
    first.opcode == io_opcode::COMPARE
        && second.opcode == io_opcode::WRITE
        && first.nsid == second.nsid
        && first.slba() == second.slba()
        && first.nlb() == second.nlb()
}

/// Runs a pair atomically: the Compare and then, if it matched, the Write, with
/// the namespace's writes held off across both. Returns both statuses.
pub(crate) fn run_pair(
    ns: &Namespace,
    first: &Sqe,
    first_data: &[Bytes],
    second: &Sqe,
    second_data: &[Bytes],
) -> (Status, Status) {
    let _excl = ns.write_order.exclusive();
    if let Err(st) = run_io_locked(ns, first, first_data, 0) {
        return (st, Status::ABORTED_FAILED_FUSED);
    }
    match run_io_locked(ns, second, second_data, 0) {
        Ok(_) => (Status::SUCCESS, Status::SUCCESS),
        Err(st) => (Status::SUCCESS, st),
    }
}

impl<C: ControllerQueuePair> QueueTask<C> {
    fn complete_now(&mut self, sqe: &Sqe, st: Status) {
        self.finish_cmd(sqe, Outcome::Complete(Cqe::new(sqe.cid, st)));
    }

    /// Looks at a command capsule's FUSE field as it arrives, in submission
    /// order. Returns true if the command is taken care of here (a fused half,
    /// or a command with an invalid FUSE field); false for a normal command,
    /// which runs as usual. A first half left open by this capsule fails.
    pub(crate) fn fused_capsule(&mut self, cmd: &IncomingCommand) -> bool {
        let fuse = cmd.sqe.fuse();
        if !matches!(self.role, Role::Io(_)) {
            if fuse == Fuse::Normal {
                return false;
            }
            // Fused operations are I/O commands (NVMe Base 2.0 §3.4.2).
            self.complete_now(&cmd.sqe, Status::INVALID_FIELD.dnr());
            return true;
        }
        if fuse != Fuse::Second {
            if let Some(h) = self.fused.open.take() {
                self.complete_now(&h.sqe, Status::ABORTED_MISSING_FUSED);
            }
        }
        match fuse {
            Fuse::Normal => false,
            Fuse::Reserved => {
                self.complete_now(&cmd.sqe, Status::INVALID_FIELD.dnr());
                true
            }
            Fuse::First => {
                self.fused.open = Some(Half::new(cmd));
                true
            }
            Fuse::Second => {
                let Some(first) = self.fused.open.take() else {
                    self.complete_now(&cmd.sqe, Status::ABORTED_MISSING_FUSED);
                    return true;
                };
                let second = Half::new(cmd);
                if !pair_is_valid(&first.sqe, &second.sqe) {
                    self.complete_now(&first.sqe, Status::INVALID_FIELD.dnr());
                    self.complete_now(&second.sqe, Status::ABORTED_FAILED_FUSED);
                    return true;
                }
                for h in [&first, &second] {
                    if h.data.is_none() {
                        if let Err(e) = self.conn.request_data(h.sqe.cid) {
                            warn!(peer = %self.peer, "cannot request fused data: {e}");
                            self.complete_now(&first.sqe, Status::INTERNAL_ERROR);
                            self.complete_now(&second.sqe, Status::ABORTED_FAILED_FUSED);
                            return true;
                        }
                    }
                }
                self.fused.pairs.push((first, second));
                self.run_ready_pairs();
                true
            }
        }
    }

    /// Write data for a fused half arrived. Returns false if `cid` is not one.
    pub(crate) fn fused_data(&mut self, cid: u16, data: Vec<Bytes>) -> bool {
        let Some(h) = self
            .fused
            .pairs
            .iter_mut()
            .flat_map(|(a, b)| [a, b])
            .find(|h| h.sqe.cid == cid)
        else {
            return false;
        };
        h.data = Some(data);
        self.run_ready_pairs();
        true
    }

    /// The transport completed fused half `cid` itself (a data digest error):
    /// its partner fails. Returns false if `cid` is not a fused half.
    pub(crate) fn fused_transport_abort(&mut self, cid: u16) -> bool {
        let Some(i) = self
            .fused
            .pairs
            .iter()
            .position(|(a, b)| a.sqe.cid == cid || b.sqe.cid == cid)
        else {
            return false;
        };
        let (a, b) = self.fused.pairs.remove(i);
        let other = if a.sqe.cid == cid { b } else { a };
        self.complete_now(&other.sqe, Status::ABORTED_FAILED_FUSED);
        true
    }

    /// Abort of a fused half that is still waiting for its second half (NVMe
    /// Base 2.0 §5.1): it completes with Command Abort Requested. Returns true
    /// if it was aborted.
    pub(crate) fn fused_abort(&mut self, cid: u16) -> bool {
        if self.fused.open.as_ref().is_some_and(|h| h.sqe.cid == cid) {
            if let Some(h) = self.fused.open.take() {
                self.complete_now(&h.sqe, Status::ABORT_REQUESTED);
            }
            return true;
        }
        false
    }

    fn run_ready_pairs(&mut self) {
        while let Some(i) = self
            .fused
            .pairs
            .iter()
            .position(|(a, b)| a.data.is_some() && b.data.is_some())
        {
            let (a, b) = self.fused.pairs.remove(i);
            self.run_fused_pair(a, b);
        }
    }

    fn run_fused_pair(&mut self, first: Half, second: Half) {
        let fail_both = |t: &mut Self, st: Status| {
            t.complete_now(&first.sqe, st);
            t.complete_now(&second.sqe, Status::ABORTED_FAILED_FUSED);
        };
        if self.auth_blocks(&first.sqe) {
            return fail_both(self, Status::AUTH_REQUIRED.dnr());
        }
        if let Some(c) = &self.ctrl {
            if !c.ready.load(std::sync::atomic::Ordering::Relaxed) {
                return fail_both(self, Status::COMMAND_SEQUENCE_ERROR);
            }
        }
        self.refresh_ns();
        let Some(ns) = self.ns.get(&first.sqe.nsid).cloned() else {
            return fail_both(self, Status::INVALID_NS.dnr());
        };
        let (fsqe, ssqe) = (first.sqe, second.sqe);
        let fdata = first.data.unwrap_or_default();
        let sdata = second.data.unwrap_or_default();
        if !ns.backend.info().may_block {
            let (a, b) = run_pair(&ns, &fsqe, &fdata, &ssqe, &sdata);
            self.complete_now(&fsqe, a);
            self.complete_now(&ssqe, b);
            return;
        }
        let tx = self.done_tx.clone();
        let ns: Arc<Namespace> = ns;
        let start = self.cmd_start;
        tokio::task::spawn_blocking(move || {
            let (a, b) = run_pair(&ns, &fsqe, &fdata, &ssqe, &sdata);
            for (sqe, st) in [(fsqe, a), (ssqe, b)] {
                let result = if st.is_success() { Ok(None) } else { Err(st) };
                let _ = tx.send(Done {
                    cid: sqe.cid,
                    result,
                    sqe,
                    start,
                });
            }
        });
    }
}
