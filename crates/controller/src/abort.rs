//! Abort (NVMe Base 2.0 §5.1): the admin command that asks the controller to
//! abort one command, named by its SQID (CDW10 bits 15:0) and CID (bits 31:16).
//!
//! What this target can abort, because it has not started to run yet:
//! - on the admin queue, an outstanding Asynchronous Event Request;
//! - on an I/O queue, the first half of a fused Compare and Write still
//!   waiting for its second half, and a write-type command whose R2T has not
//!   been sent yet because the queue already has as much write data in flight
//!   as `max_pending_write_bytes` allows (no data can be on its way for it),
//!   and a command handed to the blocking pool (file and device namespaces)
//!   that no pool thread has taken yet.
//!
//! The aborted command completes with Command Abort Requested, and the Abort
//! with DW0 bit 0 cleared; otherwise (the command already ran, is running, is
//! receiving its data, or does not exist) the Abort completes with DW0 bit 0
//! set, "not aborted", which the spec allows for any command. An I/O queue is
//! another task: the admin queue hands the Abort to it (AbortRequest) and
//! completes the Abort when that queue answers (AdminSignal::AbortDone). At
//! most ACL + 1 Aborts wait for an answer at once; more fail with Abort Command
//! Limit Exceeded.

use nvmf_transport::ControllerQueuePair;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use nvmf_proto::{Cqe, Sqe, Status};
use tracing::debug;

use crate::queue::{Outcome, QueueTask, Role};
use crate::registry::{AbortRequest, AdminSignal};

/// Abort Command Limit, 0's based (ACL): four Aborts outstanding.
pub(crate) const ACL: u8 = 3;

/// Whether a command handed to the blocking pool has started: the pool thread
/// and an Abort race for it with one compare-and-swap, so exactly one wins.
#[derive(Debug, Clone)]
pub(crate) struct PoolStart(Arc<AtomicU8>);

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const CANCELLED: u8 = 2;

impl PoolStart {
    pub(crate) fn new() -> Self {
        Self(Arc::new(AtomicU8::new(QUEUED)))
    }

    /// On the pool thread: true if the command may run, false if it was aborted.
    pub(crate) fn begin(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// From the queue task: true if the command had not started and now never will.
    fn cancel(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

fn not_aborted(cid: u16) -> Outcome {
    let mut c = Cqe::new(cid, Status::SUCCESS);
    c.dw0 = 1;
    Outcome::Complete(c)
}

impl<C: ControllerQueuePair> QueueTask<C> {
    /// The Abort admin command.
    pub(crate) fn abort_command(&mut self, sqe: &Sqe) -> Outcome {
        let cid = sqe.cid;
        let sqid = (sqe.cdw10 & 0xffff) as u16;
        let target = (sqe.cdw10 >> 16) as u16;
        let ctrl = self.ctrl.clone();
        let Role::Admin(a) = &mut self.role else {
            return Outcome::Complete(Cqe::new(cid, Status::INVALID_OPCODE.dnr()));
        };
        if a.aborts > ACL {
            return Outcome::Complete(Cqe::new(cid, Status::ABORT_LIMIT_EXCEEDED.dnr()));
        }
        if sqid == 0 {
            let Some(i) = a.aers.iter().position(|&c| c == target) else {
                return not_aborted(cid);
            };
            a.aers.remove(i);
            debug!(peer = %self.peer, cid = target, "Asynchronous Event Request aborted");
            self.conn
                .complete(Cqe::new(target, Status::ABORT_REQUESTED));
            return Outcome::Complete(Cqe::new(cid, Status::SUCCESS));
        }
        let req = AbortRequest {
            abort_cid: cid,
            cid: target,
        };
        if ctrl.is_some_and(|c| c.send_abort(sqid, req)) {
            a.aborts += 1;
            return Outcome::Held;
        }
        not_aborted(cid)
    }

    /// An I/O queue's answer to an Abort this admin queue handed it.
    pub(crate) fn abort_done(&mut self, cid: u16, aborted: bool) {
        if let Role::Admin(a) = &mut self.role {
            a.aborts = a.aborts.saturating_sub(1);
        }
        let mut c = Cqe::new(cid, Status::SUCCESS);
        c.dw0 = u32::from(!aborted);
        self.conn.complete(c);
    }

    /// Aborts a command still waiting for its R2T to be sent.
    fn abort_waiting_data(&mut self, cid: u16) -> bool {
        if !self.waiting_data.contains_key(&cid)
            || !self.conn.cancel_data_request(cid, Status::ABORT_REQUESTED)
        {
            return false;
        }
        self.waiting_data.remove(&cid);
        true
    }

    /// On an I/O queue: aborts the command if it has not started, and answers
    /// the admin queue.
    pub(crate) fn on_abort_request(&mut self, req: AbortRequest) {
        // A cancelled pool command completes with Command Abort Requested when
        // its pool task reports back (Done).
        let aborted = self.fused_abort(req.cid)
            || self.abort_waiting_data(req.cid)
            || self
                .pool_queued
                .get(&req.cid)
                .is_some_and(PoolStart::cancel);
        if aborted {
            debug!(peer = %self.peer, cid = req.cid, "command aborted");
        }
        if let Some(c) = &self.ctrl {
            c.signal_admin(AdminSignal::AbortDone {
                cid: req.abort_cid,
                aborted,
            });
        }
    }
}
