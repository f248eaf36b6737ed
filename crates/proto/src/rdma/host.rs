//! The host end of an NVMe/RDMA queue pair, without I/O (NVMe-oF 1.1 §7.3).
//!
//! [`RdmaHostQueue::submit`] builds a command capsule (SQE + in-capsule data)
//! with SGL1 naming in-capsule data or a keyed buffer the caller registered,
//! and hands it out as [`HostWork::Send`]; the shell posts it and reports the
//! SEND's completion ([`RdmaHostQueue::on_send_done`]) and each response RECV
//! ([`RdmaHostQueue::on_recv`]). A command completes
//! ([`RdmaHostEvent::Completion`]) once both happened, as in the Linux host
//! (`nvme_rdma_end_request` waits for the send and the response: the capsule
//! buffer is the HCA's until the SEND completes). Response slots are reposted
//! at once ([`HostWork::PostRecv`]): the CQE is copied out.
//!
//! A response shorter than a CQE, for a CID not outstanding, or invalidating a
//! key the command did not name ends the queue with
//! [`RdmaHostEvent::Terminated`] (the Linux host starts error recovery for each:
//! "Unexpected nvme completion length", "tag not found", "Bogus remote
//! invalidation").

use std::collections::VecDeque;

use bytes::Bytes;

use super::sgl::{RdmaSgl, MAX_KEYED_LEN};
use crate::cqe::{Cqe, CQE_SIZE};
use crate::sqe::Sqe;
use crate::tcp::idmap::CidMap;
use crate::tcp::SubmitError;

/// Limits of a host queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdmaHostQueueConfig {
    /// Commands outstanding at most (HSQSIZE + 1, and no more than the
    /// controller's CRQSIZE).
    pub queue_depth: u16,
    /// In-capsule data the controller takes (IOCCSZ × 16 − 64; 0 on the admin
    /// queue, where the Linux host never sends in-capsule data).
    pub max_icd: u32,
}

impl Default for RdmaHostQueueConfig {
    fn default() -> Self {
        Self {
            queue_depth: 32,
            max_icd: 0,
        }
    }
}

/// Where a command's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdmaHostData {
    /// No data.
    None,
    /// Write data sent in the capsule (at most `max_icd` bytes).
    InCapsule(Bytes),
    /// A buffer the caller registered: the controller reads (write) or
    /// writes (read) it with RDMA.
    Keyed {
        /// Address.
        addr: u64,
        /// Length (at most 2^24 − 1).
        len: u32,
        /// Remote key.
        key: u32,
        /// Ask the controller to invalidate the key with its response.
        invalidate: bool,
    },
}

/// Work for the shell to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostWork {
    /// SEND the capsule (the parts in order: the 64-byte SQE, then in-capsule
    /// data), signaled: report with [`RdmaHostQueue::on_send_done`].
    Send {
        /// The command.
        cid: u16,
        /// SQE bytes and in-capsule data.
        capsule: Vec<Bytes>,
    },
    /// Post response slot `slot` again (a RECV of 16 bytes).
    PostRecv {
        /// The slot given to [`RdmaHostQueue::on_recv`].
        slot: u32,
    },
}

/// What the host queue reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdmaHostEvent {
    /// A command completed: its response arrived and its SEND completed.
    Completion {
        /// The completion entry.
        cqe: Cqe,
        /// A key of this command that is still valid and that the shell must
        /// invalidate locally (the command asked for remote invalidation and
        /// the response did not do it, or did not ask).
        local_invalidate: Option<u32>,
    },
    /// The queue is over; the shell disconnects.
    Terminated {
        /// Why.
        reason: String,
    },
}

#[derive(Debug)]
struct Cmd {
    key: Option<u32>,
    sent: bool,
    response: Option<(Cqe, bool)>,
}

/// The host end of one NVMe/RDMA queue pair.
#[derive(Debug)]
pub struct RdmaHostQueue {
    cfg: RdmaHostQueueConfig,
    closed: bool,
    cmds: CidMap<Cmd>,
    next_cid: u16,
    sq_head: u16,
    work: VecDeque<HostWork>,
    events: VecDeque<RdmaHostEvent>,
}

impl RdmaHostQueue {
    /// A queue whose connection is established (the CM accepted it).
    pub fn new(cfg: RdmaHostQueueConfig) -> Self {
        Self {
            cfg,
            closed: false,
            cmds: CidMap::default(),
            next_cid: 0,
            sq_head: 0,
            work: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// True once the queue has ended.
    pub fn is_terminated(&self) -> bool {
        self.closed
    }

    /// Commands submitted and not completed.
    pub fn outstanding(&self) -> usize {
        self.cmds.len()
    }

    /// True if another command may be submitted.
    pub fn has_room(&self) -> bool {
        !self.closed && self.cmds.len() < usize::from(self.cfg.queue_depth.max(1))
    }

    /// The SQ head the controller last reported.
    pub fn sq_head(&self) -> u16 {
        self.sq_head
    }

    /// The next work request to post.
    pub fn poll_work(&mut self) -> Option<HostWork> {
        self.work.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RdmaHostEvent> {
        self.events.pop_front()
    }

    /// Ends the queue.
    pub fn fail(&mut self, reason: impl Into<String>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.work.clear();
        self.events.push_back(RdmaHostEvent::Terminated {
            reason: reason.into(),
        });
    }

    /// Builds and queues a command capsule; the CID in `sqe` is replaced by
    /// one this queue allocates, which is returned, and SGL1 is set for `data`.
    pub fn submit(&mut self, mut sqe: Sqe, data: RdmaHostData) -> Result<u16, SubmitError> {
        if self.closed {
            return Err(SubmitError::Terminated);
        }
        if !self.has_room() {
            return Err(SubmitError::QueueFull(self.cfg.queue_depth));
        }
        let (sgl, icd, key) = match data {
            RdmaHostData::None => (RdmaSgl::None, Bytes::new(), None),
            RdmaHostData::InCapsule(d) => {
                let len = u32::try_from(d.len()).map_err(|_| SubmitError::TooLarge(d.len()))?;
                if len > self.cfg.max_icd {
                    return Err(SubmitError::TooLarge(d.len()));
                }
                (RdmaSgl::InCapsule { offset: 0, len }, d, None)
            }
            RdmaHostData::Keyed {
                addr,
                len,
                key,
                invalidate,
            } => {
                if len > MAX_KEYED_LEN {
                    return Err(SubmitError::TooLarge(len as usize));
                }
                let sgl = RdmaSgl::Keyed {
                    addr,
                    len,
                    key,
                    invalidate,
                };
                (sgl, Bytes::new(), (len > 0).then_some(key))
            }
        };
        let cid = loop {
            let c = self.next_cid;
            self.next_cid = self.next_cid.wrapping_add(1);
            if !self.cmds.contains_key(&c) {
                break c;
            }
        };
        sqe.cid = cid;
        sqe.sgl1 = sgl.to_descriptor();
        self.cmds.insert(
            cid,
            Cmd {
                key,
                sent: false,
                response: None,
            },
        );
        let mut capsule = vec![Bytes::copy_from_slice(&sqe.encode())];
        if !icd.is_empty() {
            capsule.push(icd);
        }
        self.work.push_back(HostWork::Send { cid, capsule });
        Ok(cid)
    }

    /// The SEND of `cid`'s capsule completed.
    pub fn on_send_done(&mut self, cid: u16) {
        if self.closed {
            return;
        }
        if let Some(c) = self.cmds.get_mut(&cid) {
            c.sent = true;
        }
        self.try_finish(cid);
    }

    /// A response arrived on `slot`; `invalidated` is the key the SEND with
    /// Invalidate named, if the work completion carried one.
    pub fn on_recv(&mut self, slot: u32, bytes: &[u8], invalidated: Option<u32>) {
        if self.closed {
            return;
        }
        let Some(b) = bytes
            .get(..CQE_SIZE)
            .and_then(|b| <&[u8; CQE_SIZE]>::try_from(b).ok())
        else {
            self.fail(format!(
                "response of {} bytes, a CQE is {CQE_SIZE}",
                bytes.len()
            ));
            return;
        };
        let cqe = Cqe::decode(b);
        let Some(cmd) = self.cmds.get_mut(&cqe.cid) else {
            self.fail(format!("response for command {} not outstanding", cqe.cid));
            return;
        };
        if cmd.response.is_some() {
            self.fail(format!("second response for command {}", cqe.cid));
            return;
        }
        if let Some(k) = invalidated {
            if cmd.key != Some(k) {
                self.fail(format!(
                    "response for command {} invalidated key {k:#x}, not its own",
                    cqe.cid
                ));
                return;
            }
        }
        cmd.response = Some((cqe, invalidated.is_some()));
        self.sq_head = cqe.sqhd;
        self.work.push_back(HostWork::PostRecv { slot });
        self.try_finish(cqe.cid);
    }

    fn try_finish(&mut self, cid: u16) {
        let done = self
            .cmds
            .get(&cid)
            .is_some_and(|c| c.sent && c.response.is_some());
        if !done {
            return;
        }
        let Some(c) = self.cmds.remove(&cid) else {
            return;
        };
        let Some((cqe, invalidated)) = c.response else {
            return;
        };
        self.events.push_back(RdmaHostEvent::Completion {
            cqe,
            local_invalidate: if invalidated { None } else { c.key },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdma::controller::{RdmaControllerQueue, RdmaQueueConfig, RdmaWork};
    use crate::sqe::io_opcode;
    use crate::status::Status;
    use crate::tcp::ControllerEvent;

    #[test]
    fn capsules_match_what_the_controller_parses() {
        let mut h = RdmaHostQueue::new(RdmaHostQueueConfig {
            queue_depth: 2,
            max_icd: 4096,
        });
        let w = h
            .submit(
                Sqe::rw(io_opcode::WRITE, 1, 8, 8, false),
                RdmaHostData::InCapsule(Bytes::from(vec![7; 4096])),
            )
            .unwrap();
        let r = h
            .submit(
                Sqe::rw(io_opcode::READ, 1, 8, 8, false),
                RdmaHostData::Keyed {
                    addr: 0x1000,
                    len: 4096,
                    key: 0x55,
                    invalidate: true,
                },
            )
            .unwrap();
        assert_eq!(
            h.submit(Sqe::new(io_opcode::FLUSH), RdmaHostData::None),
            Err(SubmitError::QueueFull(2))
        );
        let mut c = RdmaControllerQueue::new(RdmaQueueConfig {
            qid: 1,
            recv_queue_size: 2,
            max_icd: 4096,
            ..RdmaQueueConfig::default()
        });
        let mut slot = 0;
        while let Some(HostWork::Send { cid, capsule }) = h.poll_work() {
            let b: Vec<u8> = capsule.iter().flat_map(|p| p.to_vec()).collect();
            c.on_recv(slot, Bytes::from(b)).unwrap();
            slot += 1;
            h.on_send_done(cid);
        }
        let ControllerEvent::Command(wc) = c.poll_event().unwrap() else {
            panic!()
        };
        assert_eq!((wc.sqe.cid, wc.data.len(), wc.buffer_len), (w, 4096, 0));
        let ControllerEvent::Command(rc) = c.poll_event().unwrap() else {
            panic!()
        };
        assert_eq!((rc.sqe.cid, rc.buffer_len), (r, 4096));
        c.complete(Cqe::new(w, Status::SUCCESS));
        assert_eq!(c.send_data(r, Bytes::from(vec![1; 4096]), true), Ok(true));
        let mut recv_slot = 100;
        while let Some(work) = c.poll_work() {
            if let RdmaWork::Send {
                cqe, invalidate, ..
            } = work
            {
                h.on_recv(recv_slot, &cqe, invalidate);
                assert_eq!(h.poll_work(), Some(HostWork::PostRecv { slot: recv_slot }));
                recv_slot += 1;
            }
        }
        assert_eq!(
            h.poll_event(),
            Some(RdmaHostEvent::Completion {
                cqe: Cqe {
                    sqhd: 1,
                    sqid: 1,
                    ..Cqe::new(w, Status::SUCCESS)
                },
                local_invalidate: None
            })
        );
        // The controller invalidated the read's key remotely.
        match h.poll_event() {
            Some(RdmaHostEvent::Completion {
                cqe,
                local_invalidate: None,
            }) => assert_eq!((cqe.cid, cqe.sqhd), (r, 0)),
            other => panic!("{other:?}"),
        }
        assert_eq!(h.outstanding(), 0);
        assert_eq!(h.sq_head(), 0);
    }

    #[test]
    fn completion_waits_for_the_send_and_local_invalidation_is_reported() {
        let mut h = RdmaHostQueue::new(RdmaHostQueueConfig::default());
        let cid = h
            .submit(
                Sqe::rw(io_opcode::WRITE, 1, 0, 1, false),
                RdmaHostData::Keyed {
                    addr: 0,
                    len: 512,
                    key: 9,
                    invalidate: false,
                },
            )
            .unwrap();
        // In-capsule data on the admin queue (max_icd 0) is refused.
        assert!(matches!(
            h.submit(
                Sqe::new(1),
                RdmaHostData::InCapsule(Bytes::from_static(b"x"))
            ),
            Err(SubmitError::TooLarge(1))
        ));
        h.poll_work();
        h.on_recv(0, &Cqe::new(cid, Status::SUCCESS).encode(), None);
        assert!(h.poll_event().is_none(), "the SEND has not completed");
        h.on_send_done(cid);
        assert_eq!(
            h.poll_event(),
            Some(RdmaHostEvent::Completion {
                cqe: Cqe::new(cid, Status::SUCCESS),
                local_invalidate: Some(9)
            })
        );
    }

    #[test]
    fn bad_responses_terminate() {
        for case in 0..4 {
            let mut h = RdmaHostQueue::new(RdmaHostQueueConfig::default());
            let cid = h
                .submit(
                    Sqe::new(io_opcode::READ),
                    RdmaHostData::Keyed {
                        addr: 0,
                        len: 512,
                        key: 9,
                        invalidate: true,
                    },
                )
                .unwrap();
            let cqe = Cqe::new(cid, Status::SUCCESS).encode();
            match case {
                0 => h.on_recv(0, &cqe[..15], None),
                1 => h.on_recv(0, &Cqe::new(cid + 1, Status::SUCCESS).encode(), None),
                2 => h.on_recv(0, &cqe, Some(10)),
                _ => {
                    h.on_recv(0, &cqe, Some(9));
                    h.on_recv(1, &cqe, None);
                }
            }
            assert!(
                matches!(h.poll_event(), Some(RdmaHostEvent::Terminated { .. })),
                "case {case}"
            );
            assert!(h.is_terminated());
            assert_eq!(
                h.submit(Sqe::new(0), RdmaHostData::None),
                Err(SubmitError::Terminated)
            );
        }
    }
}
