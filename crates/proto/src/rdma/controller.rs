//! The controller end of an NVMe/RDMA queue pair, without I/O (NVMe-oF 1.1
//! §7.3 "RDMA Transport").
//!
//! The RDMA counterpart of [`crate::tcp::ControllerQueue`]. A shell drives it
//! from verbs completions and turns its work items into work requests:
//!
//! * a RECV completion on slot `s` → [`RdmaControllerQueue::on_recv`] with the
//!   bytes received (64-byte SQE + in-capsule data);
//! * the events that come out ([`RdmaControllerQueue::poll_event`]) are the TCP
//!   queue's [`ControllerEvent`]s: `Command` (with in-capsule data, or
//!   `buffer_len` for a keyed buffer), `Data` (write data read from the host),
//!   `Abandoned` (an AER whose CID the host reused) and `Terminated`;
//! * the controller answers with [`RdmaControllerQueue::request_data`] (RDMA
//!   READ of a write's data), [`RdmaControllerQueue::send_data_parts`] (RDMA
//!   WRITE of read data) and [`RdmaControllerQueue::complete`] (SEND of the
//!   CQE), as it does on TCP;
//! * the work to post comes out of [`RdmaControllerQueue::poll_work`]:
//!   [`RdmaWork::PostRecv`] (repost a receive slot), [`RdmaWork::Read`],
//!   [`RdmaWork::Write`] and [`RdmaWork::Send`]; the shell reports the READ and
//!   SEND completions back ([`RdmaControllerQueue::on_read_done`],
//!   [`RdmaControllerQueue::on_send_done`]). RDMA WRITEs are posted unsignaled,
//!   chained before the SEND of the same command, as nvmet does
//!   (`nvmet_rdma_queue_response`): on a reliable connection the SEND is
//!   delivered only after the data is placed.
//!
//! Rules kept here:
//!
//! * Flow control: at most the queue size commands outstanding (the receive
//!   slots posted, HSQSIZE + 1, and the Connect's SQSIZE + 1); a command's
//!   receive slot is reposted when it completes (nvmet reposts in
//!   `nvmet_rdma_queue_response`), because in-capsule data handed up in
//!   `Command` may borrow the slot's buffer until then. The send work requests
//!   handed out and not completed never exceed `max_send_wr` (a command's
//!   WRITEs and SEND go as one group; a group larger than the limit goes alone).
//!   Bytes of RDMA READ in flight are bounded like the TCP queue's R2Ts.
//! * A capsule whose SGL the transport cannot honour completes with the
//!   status [`super::sgl::SglError::status`] names; a reused CID completes with Command ID
//!   Conflict. A capsule shorter than an SQE (nvmet: "capsule size less than 64
//!   bytes" is a fatal error), one longer than the receive buffer, or a command
//!   beyond the queue size ends the queue with [`ControllerEvent::Terminated`]:
//!   RDMA has no TermReq, the shell disconnects.
//! * SQHD advances as each command completes (as on TCP and in nvmet); SQID is
//!   the queue's.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;

use super::sgl::RdmaSgl;
use crate::cqe::{Cqe, CQE_SIZE};
use crate::sqe::{admin_opcode, Sqe, SQE_SIZE};
use crate::status::Status;
use crate::tcp::idmap::CidMap;
use crate::tcp::{ControllerEvent, IncomingCommand, UsageError};

/// Limits of one NVMe/RDMA controller queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdmaQueueConfig {
    /// Queue ID from the RDMA CM request.
    pub qid: u16,
    /// Receive slots posted for command capsules (HSQSIZE + 1, the accept's
    /// CRQSIZE): the most commands outstanding.
    pub recv_queue_size: u16,
    /// In-capsule data a receive buffer holds after the SQE (IOCCSZ × 16 − 64;
    /// nvmet posts 64 bytes only on the admin queue, so 0 there).
    pub max_icd: u32,
    /// Largest keyed buffer accepted (MDTS in bytes).
    pub max_data_len: u32,
    /// Send work requests (READ, WRITE, SEND) in flight at most: the QP's send
    /// queue depth.
    pub max_send_wr: u32,
    /// Local buffers (SGEs) per RDMA WRITE; more parts take more WRITEs.
    pub max_write_sge: u16,
    /// Bytes of RDMA READ in flight at most (memory for write data); one READ
    /// larger than this still goes when none is in flight.
    pub max_pending_read_bytes: u32,
}

impl Default for RdmaQueueConfig {
    fn default() -> Self {
        Self {
            qid: 0,
            recv_queue_size: 32,
            max_icd: 0,
            max_data_len: 1 << 20,
            max_send_wr: 256,
            max_write_sge: 16,
            max_pending_read_bytes: 16 << 20,
        }
    }
}

/// One work request for the shell to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdmaWork {
    /// Post receive slot `slot` again (a RECV of 64 + `max_icd` bytes).
    PostRecv {
        /// The slot given to [`RdmaControllerQueue::on_recv`].
        slot: u32,
    },
    /// RDMA READ `len` bytes of the host's buffer into a local buffer (signaled:
    /// report with [`RdmaControllerQueue::on_read_done`]).
    Read {
        /// The command.
        cid: u16,
        /// Remote address.
        addr: u64,
        /// Remote key.
        key: u32,
        /// Bytes (the local buffer's length).
        len: u32,
    },
    /// RDMA WRITE of `data` (in order, one SGE each) to the host's buffer at
    /// `addr` (unsignaled; the SEND that follows completes it).
    Write {
        /// The command.
        cid: u16,
        /// Remote address.
        addr: u64,
        /// Remote key.
        key: u32,
        /// The data.
        data: Vec<Bytes>,
    },
    /// SEND the 16-byte completion (signaled: report with
    /// [`RdmaControllerQueue::on_send_done`] and `token`).
    Send {
        /// Identifies the SEND's completion.
        token: u64,
        /// The command completed.
        cid: u16,
        /// The CQE bytes.
        cqe: [u8; CQE_SIZE],
        /// SEND with Invalidate of this remote key (the command's SGL had the
        /// Invalidate Key subtype; nvmet `IB_WR_SEND_WITH_INV`).
        invalidate: Option<u32>,
    },
}

/// Misuse of the queue by the shell that feeds it completions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// A RECV completed on a slot whose previous capsule is still held.
    #[error("receive slot {0} completed while its last capsule is still in use")]
    SlotInUse(u32),
    /// A READ completion for a command without one in flight.
    #[error("no RDMA READ in flight for command {0}")]
    NoRead(u16),
    /// A READ delivered a different length than asked.
    #[error("RDMA READ for command {cid} delivered {got} bytes, {want} asked")]
    ReadLength {
        /// The command.
        cid: u16,
        /// Bytes delivered.
        got: usize,
        /// Bytes asked.
        want: u32,
    },
    /// A SEND completion with a token that is not in flight.
    #[error("SEND token {0} is not in flight")]
    UnknownToken(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Idle,
    /// Asked for; waiting for read bytes to free.
    Waiting,
    /// In the work queue, not yet handed out.
    Queued,
    /// Handed out; [`RdmaControllerQueue::on_read_done`] ends it.
    InFlight,
    Done,
}

#[derive(Debug)]
struct Cmd {
    slot: u32,
    sgl: RdmaSgl,
    buffer_len: u32,
    read: ReadState,
    /// A completion given while the READ was queued or in flight.
    deferred: Option<Cqe>,
    /// Read data to write, in order, from offset 0.
    out: Vec<Bytes>,
    written: u32,
    abandonable: bool,
}

#[derive(Debug)]
struct Group {
    cost: u32,
    started: bool,
    items: VecDeque<RdmaWork>,
}

/// The controller end of one NVMe/RDMA queue pair.
#[derive(Debug)]
pub struct RdmaControllerQueue {
    cfg: RdmaQueueConfig,
    closed: bool,
    events: VecDeque<ControllerEvent>,
    cmds: CidMap<Cmd>,
    /// Slots whose capsule is held (by a command, or waiting for its PostRecv
    /// to be handed out).
    held: HashSet<u32>,
    work: VecDeque<Group>,
    /// Send work requests handed out and not completed.
    inflight: u32,
    /// SEND tokens in flight and the credits each returns.
    sends: HashMap<u64, u32>,
    next_token: u64,
    read_wait: VecDeque<u16>,
    pending_read_bytes: u32,
    sq_size: u16,
    sq_head: u16,
    queue_depth: u16,
    /// In-capsule data accepted: `max_icd`, or less after `limit_in_capsule_data`.
    icd_limit: u32,
}

impl RdmaControllerQueue {
    /// A queue whose receive slots the shell has posted.
    pub fn new(cfg: RdmaQueueConfig) -> Self {
        let n = cfg.recv_queue_size.max(1);
        Self {
            cfg,
            closed: false,
            events: VecDeque::new(),
            cmds: CidMap::default(),
            held: HashSet::new(),
            work: VecDeque::new(),
            inflight: 0,
            sends: HashMap::new(),
            next_token: 0,
            read_wait: VecDeque::new(),
            pending_read_bytes: 0,
            sq_size: n,
            sq_head: 0,
            queue_depth: n,
            icd_limit: cfg.max_icd,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RdmaQueueConfig {
        &self.cfg
    }

    /// Sets what the Fabrics Connect established: the SQ size (1-based) that
    /// SQHD wraps at. Outstanding commands are limited to the smaller of it and
    /// the receive slots. (`qid` comes from the CM request; SQ flow control
    /// changes nothing on RDMA, where SQHD is always reported; see
    /// [`Self::limit_in_capsule_data`] for the in-capsule size.)
    pub fn set_connected(&mut self, sq_size: u16) {
        let n = sq_size.max(1);
        self.sq_size = n;
        self.sq_head %= n;
        self.queue_depth = n.min(self.cfg.recv_queue_size.max(1));
    }

    /// Lowers the in-capsule data accepted to `max_icd` (the IOCCSZ the
    /// controller reports for this queue may be smaller than the receive
    /// buffers posted); a larger value changes nothing, as the buffers are
    /// posted. In-capsule data beyond it completes with SGL Offset Invalid.
    pub fn limit_in_capsule_data(&mut self, max_icd: u32) {
        self.icd_limit = self.icd_limit.min(max_icd);
    }

    /// True once the queue has ended.
    pub fn is_terminated(&self) -> bool {
        self.closed
    }

    /// Commands received and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.cmds.len()
    }

    /// True while command `cid` is outstanding (received, not yet completed).
    pub fn is_outstanding(&self, cid: u16) -> bool {
        self.cmds.contains_key(&cid)
    }

    /// Send work requests handed out and not yet completed.
    pub fn inflight_send_wrs(&self) -> u32 {
        self.inflight
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ControllerEvent> {
        self.events.pop_front()
    }

    /// The commands among the events not yet taken, in order, without taking
    /// them: a shell can start work for them (prefetch what they will touch)
    /// before it runs the first.
    pub fn pending_commands(&self) -> impl Iterator<Item = &Sqe> + '_ {
        self.events.iter().filter_map(ControllerEvent::command_sqe)
    }

    /// True while events wait to be taken.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next work request to post, if the send queue has room for it.
    pub fn poll_work(&mut self) -> Option<RdmaWork> {
        loop {
            let g = self.work.front_mut()?;
            if !g.started {
                if self.inflight > 0 && self.inflight.saturating_add(g.cost) > self.cfg.max_send_wr
                {
                    return None;
                }
                self.inflight = self.inflight.saturating_add(g.cost);
                g.started = true;
            }
            let Some(item) = g.items.pop_front() else {
                self.work.pop_front();
                continue;
            };
            match &item {
                RdmaWork::PostRecv { slot } => {
                    self.held.remove(slot);
                }
                RdmaWork::Read { cid, .. } => {
                    if let Some(c) = self.cmds.get_mut(cid) {
                        c.read = ReadState::InFlight;
                    }
                }
                RdmaWork::Write { .. } | RdmaWork::Send { .. } => {}
            }
            return Some(item);
        }
    }

    /// Appends all work that may be posted now to `out`; returns how many.
    pub fn drain_work(&mut self, out: &mut Vec<RdmaWork>) -> usize {
        let n = out.len();
        while let Some(w) = self.poll_work() {
            out.push(w);
        }
        out.len() - n
    }

    /// True while work waits, posted or held back by the send queue limit.
    pub fn has_work(&self) -> bool {
        !self.work.is_empty()
    }

    /// Ends the queue (a verbs error, a disconnect, or the controller's
    /// decision): reports [`ControllerEvent::Terminated`] and drops all work
    /// not yet handed out. The shell disconnects.
    pub fn fail(&mut self, reason: impl Into<String>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.work.clear();
        self.read_wait.clear();
        self.events.push_back(ControllerEvent::Terminated {
            reason: reason.into(),
            fes: None,
        });
    }

    /// A RECV completed on `slot` with `capsule` (the bytes received). The
    /// slot is held until [`RdmaWork::PostRecv`] for it is handed out.
    pub fn on_recv(&mut self, slot: u32, capsule: Bytes) -> Result<(), ShellError> {
        if self.closed {
            return Ok(());
        }
        if !self.held.insert(slot) {
            return Err(ShellError::SlotInUse(slot));
        }
        let Some(sqe) = Sqe::from_slice(&capsule) else {
            self.fail(format!(
                "capsule of {} bytes is shorter than a {SQE_SIZE}-byte SQE",
                capsule.len()
            ));
            return Ok(());
        };
        let icd = capsule.len() - SQE_SIZE;
        if icd as u64 > u64::from(self.cfg.max_icd) {
            self.fail(format!(
                "capsule carries {icd} bytes of in-capsule data, the receive buffer {}",
                self.cfg.max_icd
            ));
            return Ok(());
        }
        if let Some(old) = self.cmds.get(&sqe.cid) {
            if !old.abandonable {
                // Base 2.0 §4.2: CIDs are unique among outstanding commands.
                self.finish(slot, Cqe::new(sqe.cid, Status::CID_CONFLICT.dnr()), None);
                return Ok(());
            }
            // An AER whose CID the host reuses has been given up (see
            // ControllerEvent::Abandoned): free its slot and SQ entry.
            if let Some(old) = self.cmds.remove(&sqe.cid) {
                self.push_group(0, [RdmaWork::PostRecv { slot: old.slot }]);
            }
            self.advance_sq_head();
            self.events
                .push_back(ControllerEvent::Abandoned { cid: sqe.cid });
        }
        if self.cmds.len() >= usize::from(self.queue_depth) {
            self.fail(format!(
                "command {} beyond the {} the queue holds",
                sqe.cid, self.queue_depth
            ));
            return Ok(());
        }
        let sgl = match RdmaSgl::parse(&sqe, icd, self.icd_limit, self.cfg.max_data_len) {
            Ok(s) => s,
            Err(e) => {
                self.finish(slot, Cqe::new(sqe.cid, e.status()), None);
                return Ok(());
            }
        };
        let (data, buffer_len) = match sgl {
            RdmaSgl::None => (Bytes::new(), 0),
            RdmaSgl::InCapsule { offset, len } => {
                let start = SQE_SIZE + offset as usize;
                (capsule.slice(start..start + len as usize), 0)
            }
            RdmaSgl::Keyed { len, .. } => (Bytes::new(), len),
        };
        self.cmds.insert(
            sqe.cid,
            Cmd {
                slot,
                sgl,
                buffer_len,
                read: ReadState::Idle,
                deferred: None,
                out: Vec::new(),
                written: 0,
                abandonable: self.cfg.qid == 0
                    && sqe.opcode == admin_opcode::ASYNC_EVENT_REQUEST
                    && buffer_len == 0,
            },
        );
        self.events
            .push_back(ControllerEvent::Command(IncomingCommand {
                sqe,
                data,
                buffer_len,
            }));
        Ok(())
    }

    /// Asks for the command's write data: an RDMA READ of its keyed buffer.
    /// The data arrives as [`ControllerEvent::Data`] after
    /// [`Self::on_read_done`].
    pub fn request_data(&mut self, cid: u16) -> Result<(), UsageError> {
        if self.closed {
            return Err(UsageError::Terminated);
        }
        let cmd = self
            .cmds
            .get_mut(&cid)
            .ok_or(UsageError::UnknownCommand(cid))?;
        if cmd.buffer_len == 0 || cmd.read != ReadState::Idle {
            return Err(UsageError::NoBuffer(cid));
        }
        cmd.read = ReadState::Waiting;
        self.read_wait.push_back(cid);
        self.issue_reads();
        Ok(())
    }

    /// Completes `cid` with `status` if it asked for its write data and the
    /// READ is still held back by the read byte limit; true if it did.
    pub fn cancel_data_request(&mut self, cid: u16, status: Status) -> bool {
        if self.closed {
            return false;
        }
        if !self
            .cmds
            .get(&cid)
            .is_some_and(|c| c.read == ReadState::Waiting)
        {
            return false;
        }
        self.complete(Cqe::new(cid, status));
        true
    }

    fn issue_reads(&mut self) {
        while let Some(&cid) = self.read_wait.front() {
            let Some(cmd) = self
                .cmds
                .get_mut(&cid)
                .filter(|c| c.read == ReadState::Waiting)
            else {
                self.read_wait.pop_front();
                continue;
            };
            let len = cmd.buffer_len;
            if self.pending_read_bytes > 0
                && self.pending_read_bytes.saturating_add(len) > self.cfg.max_pending_read_bytes
            {
                break;
            }
            self.read_wait.pop_front();
            self.pending_read_bytes = self.pending_read_bytes.saturating_add(len);
            cmd.read = ReadState::Queued;
            let RdmaSgl::Keyed { addr, key, .. } = cmd.sgl else {
                continue;
            };
            self.push_group(
                1,
                [RdmaWork::Read {
                    cid,
                    addr,
                    key,
                    len,
                }],
            );
        }
    }

    /// An RDMA READ completed: `data` is the command's write data.
    pub fn on_read_done(&mut self, cid: u16, data: Bytes) -> Result<(), ShellError> {
        if self.closed {
            return Ok(());
        }
        let cmd = self
            .cmds
            .get_mut(&cid)
            .filter(|c| c.read == ReadState::InFlight)
            .ok_or(ShellError::NoRead(cid))?;
        if data.len() != cmd.buffer_len as usize {
            return Err(ShellError::ReadLength {
                cid,
                got: data.len(),
                want: cmd.buffer_len,
            });
        }
        cmd.read = ReadState::Done;
        let deferred = cmd.deferred.take();
        self.inflight = self.inflight.saturating_sub(1);
        self.pending_read_bytes = self.pending_read_bytes.saturating_sub(cmd.buffer_len);
        match deferred {
            Some(cqe) => self.complete(cqe),
            None => self.events.push_back(ControllerEvent::Data {
                cid,
                data: vec![data],
            }),
        }
        self.issue_reads();
        Ok(())
    }

    /// A SEND completed.
    pub fn on_send_done(&mut self, token: u64) -> Result<(), ShellError> {
        let credits = self
            .sends
            .remove(&token)
            .ok_or(ShellError::UnknownToken(token))?;
        self.inflight = self.inflight.saturating_sub(credits);
        Ok(())
    }

    /// Read data for `cid` (in `parts`, in order), at the offset already sent.
    /// The RDMA WRITEs go out with the completion, chained before its SEND.
    /// When the data reaches the end of the command's buffer and `success`
    /// is true, the command completes here with Successful Completion and
    /// the call returns true (the caller must not complete it again);
    /// otherwise it returns false and [`Self::complete`] follows. Data of a
    /// command that then completes with an error is not written (nvmet
    /// `nvmet_rdma_need_data_out`).
    pub fn send_data_parts(
        &mut self,
        cid: u16,
        parts: &[Bytes],
        success: bool,
    ) -> Result<bool, UsageError> {
        if self.closed {
            return Err(UsageError::Terminated);
        }
        let cmd = self
            .cmds
            .get_mut(&cid)
            .ok_or(UsageError::UnknownCommand(cid))?;
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if cmd.buffer_len == 0 || u64::from(cmd.written) + total > u64::from(cmd.buffer_len) {
            return Err(UsageError::Overrun {
                cid,
                offset: cmd.written,
                len: total.min(u64::from(u32::MAX)) as u32,
                buffer: cmd.buffer_len,
            });
        }
        cmd.written += total as u32;
        cmd.out
            .extend(parts.iter().filter(|p| !p.is_empty()).cloned());
        if success && cmd.written == cmd.buffer_len {
            self.complete(Cqe::new(cid, Status::SUCCESS));
            return Ok(true);
        }
        Ok(false)
    }

    /// Like [`Self::send_data_parts`] with one buffer.
    pub fn send_data(&mut self, cid: u16, data: Bytes, success: bool) -> Result<bool, UsageError> {
        self.send_data_parts(cid, std::slice::from_ref(&data), success)
    }

    /// Sends the command's completion (after its read data, if any) and
    /// reposts its receive slot. SQHD and SQID are filled in here. A CQE for a
    /// CID that is not outstanding is dropped, as on TCP. A completion given
    /// while the command's RDMA READ is in flight waits for it.
    pub fn complete(&mut self, cqe: Cqe) {
        if self.closed {
            return;
        }
        let Some(cmd) = self.cmds.get_mut(&cqe.cid) else {
            return;
        };
        if matches!(cmd.read, ReadState::Queued | ReadState::InFlight) {
            cmd.deferred = Some(cqe);
            return;
        }
        let Some(cmd) = self.cmds.remove(&cqe.cid) else {
            return;
        };
        // A command still in read_wait (Waiting) leaves its entry there; it is
        // skipped once the command is gone.
        let mut writes = Vec::new();
        let mut invalidate = None;
        if let RdmaSgl::Keyed {
            addr,
            key,
            invalidate: inv,
            ..
        } = cmd.sgl
        {
            if inv {
                invalidate = Some(key);
            }
            if cqe.status.is_success() && !cmd.out.is_empty() {
                let per = usize::from(self.cfg.max_write_sge.max(1));
                let mut off = 0u64;
                for chunk in cmd.out.chunks(per) {
                    writes.push(RdmaWork::Write {
                        cid: cqe.cid,
                        addr: addr.wrapping_add(off),
                        key,
                        data: chunk.to_vec(),
                    });
                    off += chunk.iter().map(|b| b.len() as u64).sum::<u64>();
                }
            }
        }
        self.finish(cmd.slot, cqe, Some((writes, invalidate)));
    }

    /// Queues the completion group: repost `slot`, the WRITEs, the SEND.
    fn finish(&mut self, slot: u32, mut cqe: Cqe, data: Option<(Vec<RdmaWork>, Option<u32>)>) {
        self.advance_sq_head();
        cqe.sqhd = self.sq_head;
        cqe.sqid = self.cfg.qid;
        let (writes, invalidate) = data.unwrap_or_default();
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        let cost = writes.len() as u32 + 1;
        self.sends.insert(token, cost);
        let mut items = Vec::with_capacity(writes.len() + 2);
        items.push(RdmaWork::PostRecv { slot });
        items.extend(writes);
        items.push(RdmaWork::Send {
            token,
            cid: cqe.cid,
            cqe: cqe.encode(),
            invalidate,
        });
        self.push_group(cost, items);
    }

    fn push_group(&mut self, cost: u32, items: impl IntoIterator<Item = RdmaWork>) {
        self.work.push_back(Group {
            cost,
            started: false,
            items: items.into_iter().collect(),
        });
    }

    /// Frees the command's SQ entry, as [`crate::tcp::ControllerQueue`] does.
    fn advance_sq_head(&mut self) {
        self.sq_head = (self.sq_head + 1) % self.sq_size.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdma::sgl::RdmaSgl;
    use crate::sqe::{io_opcode, SglDescriptor};

    fn cfg() -> RdmaQueueConfig {
        RdmaQueueConfig {
            qid: 1,
            recv_queue_size: 4,
            max_icd: 8192,
            max_data_len: 1 << 20,
            max_send_wr: 16,
            max_write_sge: 2,
            max_pending_read_bytes: 1 << 20,
        }
    }

    fn capsule(sqe: &Sqe, icd: &[u8]) -> Bytes {
        let mut v = sqe.encode().to_vec();
        v.extend_from_slice(icd);
        Bytes::from(v)
    }

    fn keyed(opcode: u8, cid: u16, len: u32, invalidate: bool) -> Sqe {
        let mut s = Sqe::rw(opcode, 1, 0, 1, false);
        s.cid = cid;
        s.sgl1 = RdmaSgl::Keyed {
            addr: 0x10_0000,
            len,
            key: 0xfeed,
            invalidate,
        }
        .to_descriptor();
        s
    }

    fn work(q: &mut RdmaControllerQueue) -> Vec<RdmaWork> {
        let mut v = Vec::new();
        q.drain_work(&mut v);
        v
    }

    fn cqe_of(w: &RdmaWork) -> Cqe {
        match w {
            RdmaWork::Send { cqe, .. } => Cqe::decode(cqe),
            other => panic!("not a SEND: {other:?}"),
        }
    }

    fn command(q: &mut RdmaControllerQueue) -> IncomingCommand {
        match q.poll_event() {
            Some(ControllerEvent::Command(c)) => c,
            other => panic!("expected a command, got {other:?}"),
        }
    }

    #[test]
    fn keyed_write_reads_then_sends_with_invalidate() {
        let mut q = RdmaControllerQueue::new(cfg());
        q.on_recv(7, capsule(&keyed(io_opcode::WRITE, 5, 4096, true), &[]))
            .unwrap();
        let c = command(&mut q);
        assert_eq!((c.sqe.cid, c.buffer_len, c.data.len()), (5, 4096, 0));
        assert!(work(&mut q).is_empty());
        q.request_data(5).unwrap();
        assert_eq!(q.request_data(5), Err(UsageError::NoBuffer(5)));
        let w = work(&mut q);
        assert_eq!(
            w,
            vec![RdmaWork::Read {
                cid: 5,
                addr: 0x10_0000,
                key: 0xfeed,
                len: 4096
            }]
        );
        assert_eq!(q.inflight_send_wrs(), 1);
        // A READ of the wrong length is the shell's error and changes nothing.
        assert!(matches!(
            q.on_read_done(5, Bytes::from(vec![0; 10])),
            Err(ShellError::ReadLength { .. })
        ));
        q.on_read_done(5, Bytes::from(vec![9; 4096])).unwrap();
        assert_eq!(q.on_read_done(5, Bytes::new()), Err(ShellError::NoRead(5)));
        assert_eq!(q.inflight_send_wrs(), 0);
        match q.poll_event() {
            Some(ControllerEvent::Data { cid: 5, data }) => assert_eq!(data[0].len(), 4096),
            other => panic!("{other:?}"),
        }
        q.complete(Cqe::new(5, Status::SUCCESS));
        let w = work(&mut q);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0], RdmaWork::PostRecv { slot: 7 });
        let RdmaWork::Send {
            token, invalidate, ..
        } = w[1]
        else {
            panic!()
        };
        assert_eq!(invalidate, Some(0xfeed));
        let cqe = cqe_of(&w[1]);
        assert_eq!((cqe.cid, cqe.sqhd, cqe.sqid), (5, 1, 1));
        assert!(cqe.status.is_success());
        assert_eq!(q.outstanding(), 0);
        assert_eq!(q.inflight_send_wrs(), 1);
        q.on_send_done(token).unwrap();
        assert_eq!(q.on_send_done(token), Err(ShellError::UnknownToken(token)));
        assert_eq!(q.inflight_send_wrs(), 0);
        // Completing it again is dropped, as on TCP.
        q.complete(Cqe::new(5, Status::SUCCESS));
        assert!(work(&mut q).is_empty());
    }

    #[test]
    fn read_data_goes_as_writes_chained_before_the_send() {
        let mut q = RdmaControllerQueue::new(cfg());
        q.on_recv(0, capsule(&keyed(io_opcode::READ, 1, 300, false), &[]))
            .unwrap();
        command(&mut q);
        let parts = [
            Bytes::from(vec![1; 100]),
            Bytes::from(vec![2; 100]),
            Bytes::from(vec![3; 50]),
        ];
        assert_eq!(q.send_data_parts(1, &parts, true), Ok(false));
        // Nothing is posted before the completion.
        assert!(work(&mut q).is_empty());
        assert!(matches!(
            q.send_data(1, Bytes::from(vec![0; 51]), true),
            Err(UsageError::Overrun { .. })
        ));
        assert_eq!(q.send_data(1, Bytes::from(vec![4; 50]), true), Ok(true));
        assert_eq!(q.outstanding(), 0);
        let w = work(&mut q);
        assert_eq!(w.len(), 4, "{w:?}");
        assert_eq!(w[0], RdmaWork::PostRecv { slot: 0 });
        // max_write_sge 2: 4 parts in two WRITEs, the second at offset 200.
        match (&w[1], &w[2]) {
            (
                RdmaWork::Write {
                    addr: a1, data: d1, ..
                },
                RdmaWork::Write {
                    addr: a2,
                    data: d2,
                    key,
                    ..
                },
            ) => {
                assert_eq!((*a1, d1.len()), (0x10_0000, 2));
                assert_eq!((*a2, d2.len(), *key), (0x10_0000 + 200, 2, 0xfeed));
            }
            other => panic!("{other:?}"),
        }
        assert!(cqe_of(&w[3]).status.is_success());
        assert!(matches!(
            w[3],
            RdmaWork::Send {
                invalidate: None,
                ..
            }
        ));
        // The WRITEs' credits come back with the SEND's completion.
        assert_eq!(q.inflight_send_wrs(), 3);
        let RdmaWork::Send { token, .. } = w[3] else {
            panic!()
        };
        q.on_send_done(token).unwrap();
        assert_eq!(q.inflight_send_wrs(), 0);
    }

    #[test]
    fn an_error_completion_writes_no_data() {
        let mut q = RdmaControllerQueue::new(cfg());
        q.on_recv(0, capsule(&keyed(io_opcode::READ, 1, 300, false), &[]))
            .unwrap();
        command(&mut q);
        assert_eq!(q.send_data(1, Bytes::from(vec![1; 100]), false), Ok(false));
        q.complete(Cqe::new(1, Status::UNRECOVERED_READ_ERROR));
        let w = work(&mut q);
        assert_eq!(w.len(), 2);
        assert_eq!(cqe_of(&w[1]).status, Status::UNRECOVERED_READ_ERROR);
    }

    #[test]
    fn in_capsule_data_is_handed_up_without_copy_rules() {
        let mut q = RdmaControllerQueue::new(cfg());
        let mut s = Sqe::rw(io_opcode::WRITE, 1, 0, 1, false);
        s.cid = 3;
        let mut d = SglDescriptor::in_capsule(512);
        d.address = 16;
        s.sgl1 = d;
        let mut icd = vec![0u8; 16];
        icd.extend(vec![0xab; 512]);
        q.on_recv(2, capsule(&s, &icd)).unwrap();
        let c = command(&mut q);
        assert_eq!((c.buffer_len, c.data.len()), (0, 512));
        assert!(c.data.iter().all(|&b| b == 0xab));
        // No buffer to read or write for in-capsule data.
        assert_eq!(q.request_data(3), Err(UsageError::NoBuffer(3)));
        assert!(q.send_data(3, Bytes::from_static(b"x"), true).is_err());
        // The slot is held until the command completes.
        assert_eq!(
            q.on_recv(2, capsule(&s, &icd)),
            Err(ShellError::SlotInUse(2))
        );
        q.complete(Cqe::new(3, Status::SUCCESS));
        assert_eq!(work(&mut q)[0], RdmaWork::PostRecv { slot: 2 });
        // Reposted: the slot may complete again.
        q.on_recv(2, capsule(&s, &icd)).unwrap();
        assert_eq!(command(&mut q).sqe.cid, 3);
    }

    #[test]
    fn sgl_errors_complete_the_command() {
        let mut q = RdmaControllerQueue::new(cfg());
        let cases: Vec<(Sqe, Vec<u8>, Status)> = vec![
            // A transport SGL (TCP's 5Ah) has no meaning on RDMA.
            (
                {
                    let mut s = Sqe::rw(io_opcode::READ, 1, 0, 1, false);
                    s.sgl1 = SglDescriptor::transport(4096);
                    s
                },
                vec![],
                Status::SGL_DESCRIPTOR_TYPE_INVALID.dnr(),
            ),
            // In-capsule data beyond what arrived.
            (
                {
                    let mut s = Sqe::rw(io_opcode::WRITE, 1, 0, 1, false);
                    s.sgl1 = SglDescriptor::in_capsule(4096);
                    s
                },
                vec![0; 100],
                Status::DATA_SGL_LENGTH_INVALID.dnr(),
            ),
            // In-capsule data beyond the in-capsule size.
            (
                {
                    let mut s = Sqe::rw(io_opcode::WRITE, 1, 0, 1, false);
                    s.sgl1 = SglDescriptor::in_capsule(8193);
                    s
                },
                vec![],
                Status::SGL_OFFSET_INVALID.dnr(),
            ),
            // A keyed buffer beyond MDTS.
            (
                keyed(io_opcode::READ, 0, (1 << 20) + 4096, true),
                vec![],
                Status::INVALID_FIELD.dnr(),
            ),
        ];
        for (i, (mut sqe, icd, st)) in cases.into_iter().enumerate() {
            sqe.cid = i as u16;
            q.on_recv(i as u32, capsule(&sqe, &icd)).unwrap();
            assert!(q.poll_event().is_none());
            let w = work(&mut q);
            assert_eq!(w[0], RdmaWork::PostRecv { slot: i as u32 });
            let cqe = cqe_of(&w[1]);
            assert_eq!((cqe.cid, cqe.status), (i as u16, st));
            // No invalidation for a command that was refused.
            assert!(matches!(
                w[1],
                RdmaWork::Send {
                    invalidate: None,
                    ..
                }
            ));
            assert_eq!(cqe.sqhd, (i as u16 + 1) % 4, "SQHD wraps at the queue size");
        }
        assert!(!q.is_terminated());
    }

    #[test]
    fn cid_conflict_completes_the_new_capsule_only() {
        let mut q = RdmaControllerQueue::new(cfg());
        let s = keyed(io_opcode::READ, 9, 512, false);
        q.on_recv(0, capsule(&s, &[])).unwrap();
        command(&mut q);
        q.on_recv(1, capsule(&s, &[])).unwrap();
        assert!(q.poll_event().is_none());
        let w = work(&mut q);
        assert_eq!(w[0], RdmaWork::PostRecv { slot: 1 });
        assert_eq!(cqe_of(&w[1]).status, Status::CID_CONFLICT.dnr());
        assert_eq!(q.outstanding(), 1);
        assert_eq!(q.send_data(9, Bytes::from(vec![0; 512]), true), Ok(true));
        assert_eq!(work(&mut q)[0], RdmaWork::PostRecv { slot: 0 });
    }

    #[test]
    fn fatal_capsules_terminate() {
        // Shorter than an SQE (nvmet: fatal), longer than the receive buffer,
        // and one command beyond the queue size.
        let mut q = RdmaControllerQueue::new(cfg());
        q.on_recv(0, Bytes::from(vec![0; 63])).unwrap();
        assert!(matches!(
            q.poll_event(),
            Some(ControllerEvent::Terminated { fes: None, .. })
        ));
        assert!(q.is_terminated());
        q.on_recv(1, Bytes::from(vec![0; 64])).unwrap();
        assert!(q.poll_event().is_none());
        assert!(work(&mut q).is_empty());
        assert_eq!(q.request_data(0), Err(UsageError::Terminated));

        let mut q = RdmaControllerQueue::new(RdmaQueueConfig {
            max_icd: 16,
            ..cfg()
        });
        let mut s = Sqe::rw(io_opcode::WRITE, 1, 0, 1, false);
        s.sgl1 = SglDescriptor::in_capsule(17);
        q.on_recv(0, capsule(&s, &[0; 17])).unwrap();
        assert!(matches!(
            q.poll_event(),
            Some(ControllerEvent::Terminated { .. })
        ));

        let mut q = RdmaControllerQueue::new(cfg());
        for cid in 0..4u16 {
            q.on_recv(
                u32::from(cid),
                capsule(&keyed(io_opcode::READ, cid, 512, false), &[]),
            )
            .unwrap();
            command(&mut q);
        }
        q.on_recv(4, capsule(&keyed(io_opcode::READ, 4, 512, false), &[]))
            .unwrap();
        assert!(matches!(
            q.poll_event(),
            Some(ControllerEvent::Terminated { .. })
        ));
        // Work queued before the end is dropped; nothing more goes out.
        q.complete(Cqe::new(0, Status::SUCCESS));
        assert!(work(&mut q).is_empty());
    }

    #[test]
    fn send_queue_limit_holds_work_back() {
        let mut q = RdmaControllerQueue::new(RdmaQueueConfig {
            max_send_wr: 2,
            ..cfg()
        });
        for cid in 0..3u16 {
            let mut s = Sqe::new(io_opcode::FLUSH);
            s.cid = cid;
            s.sgl1 = RdmaSgl::None.to_descriptor();
            q.on_recv(u32::from(cid), capsule(&s, &[])).unwrap();
            command(&mut q);
            q.complete(Cqe::new(cid, Status::SUCCESS));
        }
        let w = work(&mut q);
        assert_eq!(w.len(), 4, "two completions fit: {w:?}");
        assert_eq!(q.inflight_send_wrs(), 2);
        assert!(q.has_work());
        let RdmaWork::Send { token, .. } = w[1] else {
            panic!()
        };
        q.on_send_done(token).unwrap();
        let w = work(&mut q);
        assert_eq!(w.len(), 2);
        assert_eq!(cqe_of(&w[1]).cid, 2);
        assert!(!q.has_work());

        // A group bigger than the limit goes alone rather than never.
        let mut q = RdmaControllerQueue::new(RdmaQueueConfig {
            max_send_wr: 2,
            max_write_sge: 1,
            ..cfg()
        });
        q.on_recv(0, capsule(&keyed(io_opcode::READ, 1, 3, false), &[]))
            .unwrap();
        command(&mut q);
        let parts = [
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            Bytes::from_static(b"c"),
        ];
        assert_eq!(q.send_data_parts(1, &parts, true), Ok(true));
        assert_eq!(work(&mut q).len(), 5);
        assert_eq!(q.inflight_send_wrs(), 4);
    }

    #[test]
    fn read_bytes_are_bounded_and_a_waiting_read_can_be_cancelled() {
        let mut q = RdmaControllerQueue::new(RdmaQueueConfig {
            max_pending_read_bytes: 4096,
            ..cfg()
        });
        for cid in 0..2u16 {
            q.on_recv(
                u32::from(cid),
                capsule(&keyed(io_opcode::WRITE, cid, 4096, false), &[]),
            )
            .unwrap();
            command(&mut q);
            q.request_data(cid).unwrap();
        }
        let w = work(&mut q);
        assert_eq!(w.len(), 1);
        assert!(matches!(w[0], RdmaWork::Read { cid: 0, .. }));
        // The waiting one can be cancelled; the one in flight cannot.
        assert!(!q.cancel_data_request(0, Status::ABORT_REQUESTED));
        assert!(q.cancel_data_request(1, Status::ABORT_REQUESTED));
        let w = work(&mut q);
        assert_eq!(cqe_of(&w[1]).status, Status::ABORT_REQUESTED);
        // A completion given while the READ is in flight waits for it, and
        // no Data event follows.
        q.complete(Cqe::new(0, Status::ABORT_REQUESTED));
        assert!(work(&mut q).is_empty());
        q.on_read_done(0, Bytes::from(vec![0; 4096])).unwrap();
        assert!(q.poll_event().is_none());
        let w = work(&mut q);
        assert_eq!(cqe_of(&w[1]).status, Status::ABORT_REQUESTED);
        assert_eq!(q.outstanding(), 0);
    }

    #[test]
    fn a_queued_read_frees_bytes_for_the_next() {
        let mut q = RdmaControllerQueue::new(RdmaQueueConfig {
            max_pending_read_bytes: 4096,
            ..cfg()
        });
        for cid in 0..2u16 {
            q.on_recv(
                u32::from(cid),
                capsule(&keyed(io_opcode::WRITE, cid, 4096, false), &[]),
            )
            .unwrap();
            command(&mut q);
            q.request_data(cid).unwrap();
        }
        assert_eq!(work(&mut q).len(), 1);
        q.on_read_done(0, Bytes::from(vec![0; 4096])).unwrap();
        let w = work(&mut q);
        assert!(matches!(w[..], [RdmaWork::Read { cid: 1, .. }]));
    }

    #[test]
    fn admin_aer_cid_reuse_abandons_it_and_frees_its_slot() {
        let mut q = RdmaControllerQueue::new(RdmaQueueConfig {
            qid: 0,
            max_icd: 0,
            ..cfg()
        });
        let mut aer = Sqe::new(admin_opcode::ASYNC_EVENT_REQUEST);
        aer.cid = 4;
        aer.sgl1 = RdmaSgl::None.to_descriptor();
        q.on_recv(0, capsule(&aer, &[])).unwrap();
        command(&mut q);
        let mut prop = Sqe::new(admin_opcode::FABRICS);
        prop.cid = 4;
        prop.nsid = 4; // Property Get
        prop.sgl1 = RdmaSgl::None.to_descriptor();
        q.on_recv(1, capsule(&prop, &[])).unwrap();
        assert_eq!(q.poll_event(), Some(ControllerEvent::Abandoned { cid: 4 }));
        assert_eq!(command(&mut q).sqe.opcode, admin_opcode::FABRICS);
        assert_eq!(work(&mut q), vec![RdmaWork::PostRecv { slot: 0 }]);
        q.complete(Cqe::new(4, Status::SUCCESS));
        let w = work(&mut q);
        // The abandoned AER's SQ entry was freed too: SQHD 2.
        assert_eq!(cqe_of(&w[1]).sqhd, 2);
        assert_eq!(cqe_of(&w[1]).sqid, 0);
    }

    #[test]
    fn the_in_capsule_size_can_be_lowered() {
        let mut q = RdmaControllerQueue::new(cfg());
        q.limit_in_capsule_data(1024);
        let mut s = Sqe::rw(io_opcode::WRITE, 1, 0, 1, false);
        s.sgl1 = SglDescriptor::in_capsule(2048);
        // Within the receive buffer but beyond the reported IOCCSZ: the
        // command fails, the queue goes on.
        q.on_recv(0, capsule(&s, &[0; 2048])).unwrap();
        assert!(q.poll_event().is_none());
        let w = work(&mut q);
        let cqe = cqe_of(&w[1]);
        assert_eq!(cqe.status, Status::SGL_OFFSET_INVALID.dnr());
        s.sgl1 = SglDescriptor::in_capsule(1024);
        q.on_recv(0, capsule(&s, &[0; 1024])).unwrap();
        assert_eq!(command(&mut q).data.len(), 1024);
        // A larger limit does not raise it past the posted buffers.
        q.limit_in_capsule_data(1 << 20);
        s.cid = 1;
        s.sgl1 = SglDescriptor::in_capsule(2048);
        q.on_recv(1, capsule(&s, &[0; 2048])).unwrap();
        assert_eq!(
            cqe_of(&work(&mut q)[1]).status,
            Status::SGL_OFFSET_INVALID.dnr()
        );
        assert!(!q.is_terminated());
    }

    #[test]
    fn sqhd_wraps_at_the_connected_sq_size() {
        let mut q = RdmaControllerQueue::new(cfg());
        q.set_connected(2);
        let mut heads = Vec::new();
        for cid in 0..3u16 {
            let mut s = Sqe::new(io_opcode::FLUSH);
            s.cid = cid;
            s.sgl1 = RdmaSgl::None.to_descriptor();
            q.on_recv(u32::from(cid), capsule(&s, &[])).unwrap();
            command(&mut q);
            q.complete(Cqe::new(cid, Status::SUCCESS));
            heads.push(cqe_of(&work(&mut q)[1]).sqhd);
        }
        assert_eq!(heads, [1, 0, 1]);
        // Two outstanding at most now, though four slots are posted.
        for cid in 10..12u16 {
            let mut s = Sqe::new(io_opcode::FLUSH);
            s.cid = cid;
            s.sgl1 = RdmaSgl::None.to_descriptor();
            q.on_recv(u32::from(cid), capsule(&s, &[])).unwrap();
            command(&mut q);
        }
        let mut s = Sqe::new(io_opcode::FLUSH);
        s.cid = 12;
        q.on_recv(12, capsule(&s, &[])).unwrap();
        assert!(matches!(
            q.poll_event(),
            Some(ControllerEvent::Terminated { .. })
        ));
    }
}
