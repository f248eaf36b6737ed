//! Arbitrary input into an NVMe/RDMA RdmaControllerQueue: raw capsules and
//! well-formed ones built from fuzz data (keyed, keyed-invalidate, in-capsule,
//! null, other SGL types), interleaved with what the controller app and the
//! verbs shell do (request_data, send_data, complete, cancel, READ and SEND
//! completions, set_connected, fail), chosen by the input.
//!
//! Oracles: no panic; every work group fits under `max_send_wr` or goes alone;
//! `inflight_send_wrs()` matches the work handed out and not completed; a slot
//! is reposted only once and only after a capsule arrived on it; no more
//! commands outstanding than the receive slots; a CID is not handed up twice
//! while outstanding; nothing comes out after `Terminated`.
#![no_main]

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nvmf_proto::cqe::Cqe;
use nvmf_proto::rdma::{RdmaControllerQueue, RdmaQueueConfig, RdmaSgl, RdmaWork};
use nvmf_proto::sqe::{SglDescriptor, Sqe};
use nvmf_proto::status::Status;
use nvmf_proto::tcp::ControllerEvent;

#[path = "common.rs"]
mod common;
use common::Reader;

enum Op {
    Raw {
        slot: u8,
        bytes: Vec<u8>,
    },
    Capsule {
        slot: u8,
        cid: u16,
        opcode: u8,
        sgl: u8,
        len: u32,
        icd: u16,
    },
    RequestData {
        pick: u8,
    },
    SendData {
        pick: u8,
        len: u32,
        success: bool,
    },
    Complete {
        pick: u8,
        status: u16,
    },
    Cancel {
        pick: u8,
    },
    ReadDone {
        pick: u8,
        wrong: bool,
    },
    SendDone {
        pick: u8,
        bogus: bool,
    },
    SetConnected {
        sq_size: u16,
        max_icd: u16,
    },
    Fail,
}

impl Op {
    fn read(r: &mut Reader) -> Op {
        match r.u8() % 10 {
            0 => {
                let slot = r.u8();
                let n = r.u16() % 1024;
                Op::Raw {
                    slot,
                    bytes: r.bytes(usize::from(n)).to_vec(),
                }
            }
            1 => Op::Capsule {
                slot: r.u8(),
                cid: r.u16(),
                opcode: r.u8(),
                sgl: r.u8(),
                len: r.u32(),
                icd: r.u16(),
            },
            2 => Op::RequestData { pick: r.u8() },
            3 => Op::SendData {
                pick: r.u8(),
                len: r.u32(),
                success: r.bool(),
            },
            4 => Op::Complete {
                pick: r.u8(),
                status: r.u16(),
            },
            5 => Op::Cancel { pick: r.u8() },
            6 => Op::ReadDone {
                pick: r.u8(),
                wrong: r.bool(),
            },
            7 => Op::SendDone {
                pick: r.u8(),
                bogus: r.bool(),
            },
            8 => Op::SetConnected {
                sq_size: r.u16(),
                max_icd: r.u16(),
            },
            _ => Op::Fail,
        }
    }
}

struct Harness {
    q: RdmaControllerQueue,
    cfg: RdmaQueueConfig,
    terminated: bool,
    /// Commands handed up and not completed: cid -> buffer length.
    outstanding: HashMap<u16, u32>,
    /// Slots a capsule arrived on and not yet reposted.
    held: HashSet<u32>,
    /// READs handed out: (cid, len).
    reads: Vec<(u16, u32)>,
    /// SENDs handed out: (token, credits).
    sends: Vec<(u64, u32)>,
    writes: u32,
    group_base: u32,
    inflight: u32,
}

impl Harness {
    fn pick(&self, p: u8) -> u16 {
        let mut v: Vec<u16> = self.outstanding.keys().copied().collect();
        v.sort_unstable();
        if v.is_empty() {
            u16::from(p)
        } else {
            v[usize::from(p) % v.len()]
        }
    }

    fn recv(&mut self, slot: u32, b: Vec<u8>) {
        let was_terminated = self.q.is_terminated();
        if self.q.on_recv(slot, Bytes::from(b)).is_ok() && !was_terminated {
            self.held.insert(slot);
        }
    }

    fn check_group(&self, base: u32, cost: u32) {
        assert!(
            base == 0 || base + cost <= self.cfg.max_send_wr,
            "group of {cost} started with {base} in flight, limit {}",
            self.cfg.max_send_wr
        );
    }

    fn after(&mut self) {
        while let Some(ev) = self.q.poll_event() {
            assert!(!self.terminated, "event after termination: {ev:?}");
            match ev {
                ControllerEvent::Command(c) => {
                    assert!(
                        self.outstanding.insert(c.sqe.cid, c.buffer_len).is_none(),
                        "CID {} handed up twice",
                        c.sqe.cid
                    );
                }
                ControllerEvent::Data { cid, data } => {
                    let n: usize = data.iter().map(Bytes::len).sum();
                    assert_eq!(Some(&(n as u32)), self.outstanding.get(&cid));
                }
                ControllerEvent::Abandoned { cid } => {
                    assert!(self.outstanding.remove(&cid).is_some());
                }
                ControllerEvent::Terminated { .. } => self.terminated = true,
                other => panic!("unexpected event {other:?}"),
            }
        }
        while let Some(w) = self.q.poll_work() {
            assert!(!self.terminated, "work after termination: {w:?}");
            match w {
                RdmaWork::PostRecv { slot } => {
                    assert!(
                        self.held.remove(&slot),
                        "slot {slot} reposted without a capsule"
                    );
                    self.group_base = self.inflight;
                }
                RdmaWork::Read { cid, len, .. } => {
                    assert_eq!(Some(&len), self.outstanding.get(&cid));
                    self.check_group(self.inflight, 1);
                    self.inflight += 1;
                    self.reads.push((cid, len));
                }
                RdmaWork::Write { data, .. } => {
                    assert!(
                        !data.is_empty()
                            && data.len() <= usize::from(self.cfg.max_write_sge.max(1))
                    );
                    self.inflight += 1;
                    self.writes += 1;
                }
                RdmaWork::Send {
                    token, cid, cqe, ..
                } => {
                    assert_eq!(Cqe::decode(&cqe).cid, cid);
                    assert_eq!(Cqe::decode(&cqe).sqid, self.cfg.qid);
                    let credits = self.writes + 1;
                    self.writes = 0;
                    self.inflight += 1;
                    self.check_group(self.group_base, credits);
                    self.sends.push((token, credits));
                }
            }
        }
        // Forget commands the queue has completed (their SEND may still be
        // held back), so a new capsule may reuse the CID.
        let q = &self.q;
        self.outstanding.retain(|c, _| q.is_outstanding(*c));
        if !self.terminated {
            assert_eq!(self.q.outstanding(), self.outstanding.len());
            assert_eq!(self.q.inflight_send_wrs(), self.inflight);
            assert!(self.q.outstanding() <= usize::from(self.cfg.recv_queue_size.max(1)));
        }
    }
}

// Input: qid u8 (0 or 1), receive slots u8, max ICD u16, MDTS/4096 u8,
// max send WRs u8, max WRITE SGEs u8, max read bytes u32, then ops.
fuzz_target!(|input: &[u8]| {
    let mut r = Reader::new(input);
    let cfg = RdmaQueueConfig {
        qid: u16::from(r.u8() & 1),
        recv_queue_size: u16::from(r.u8() % 64) + 1,
        max_icd: u32::from(r.u16() % 16384),
        max_data_len: (u32::from(r.u8() % 64) + 1) * 4096,
        max_send_wr: u32::from(r.u8() % 32) + 1,
        max_write_sge: u16::from(r.u8() % 8),
        max_pending_read_bytes: r.u32() % (1 << 20),
    };
    let mut h = Harness {
        q: RdmaControllerQueue::new(cfg),
        cfg,
        terminated: false,
        outstanding: HashMap::new(),
        held: HashSet::new(),
        reads: Vec::new(),
        sends: Vec::new(),
        writes: 0,
        group_base: 0,
        inflight: 0,
    };
    let mut n = 0;
    while !r.is_empty() && n < 512 {
        n += 1;
        match Op::read(&mut r) {
            Op::Raw { slot, bytes } => h.recv(u32::from(slot % 80), bytes),
            Op::Capsule {
                slot,
                cid,
                opcode,
                sgl,
                len,
                icd,
            } => {
                let mut sqe = Sqe::new(opcode);
                sqe.cid = cid;
                let icd = usize::from(icd % 9000);
                sqe.sgl1 = match sgl % 6 {
                    0 => SglDescriptor::in_capsule(icd as u32),
                    1 => RdmaSgl::Keyed {
                        addr: u64::from(len),
                        len: len & 0xffffff,
                        key: len,
                        invalidate: false,
                    }
                    .to_descriptor(),
                    2 => RdmaSgl::Keyed {
                        addr: 0,
                        len: len % (1 << 18),
                        key: u32::from(cid),
                        invalidate: true,
                    }
                    .to_descriptor(),
                    3 => RdmaSgl::None.to_descriptor(),
                    4 => SglDescriptor {
                        address: u64::from(len % 64),
                        length: icd as u32,
                        reserved: [0; 3],
                        type_byte: 0x01,
                    },
                    _ => SglDescriptor {
                        address: u64::from(len),
                        length: len,
                        reserved: [sgl; 3],
                        type_byte: sgl,
                    },
                };
                let mut b = sqe.encode().to_vec();
                b.resize(b.len() + icd, 0xa5);
                h.recv(u32::from(slot % 80), b);
            }
            Op::RequestData { pick } => {
                let _ = h.q.request_data(h.pick(pick));
            }
            Op::SendData { pick, len, success } => {
                let cid = h.pick(pick);
                let len = (len % (1 << 18)) as usize;
                // Split in up to three parts, some empty.
                let d = Bytes::from(vec![0x11u8; len]);
                let parts = [
                    d.slice(..len / 3),
                    d.slice(len / 3..len / 2),
                    d.slice(len / 2..),
                ];
                let _ = h.q.send_data_parts(cid, &parts, success);
            }
            Op::Complete { pick, status } => {
                let cid = h.pick(pick);
                h.q.complete(Cqe::new(cid, Status::from_field(status)));
            }
            Op::Cancel { pick } => {
                let _ =
                    h.q.cancel_data_request(h.pick(pick), Status::ABORT_REQUESTED);
            }
            Op::ReadDone { pick, wrong } => {
                if h.reads.is_empty() {
                    let _ = h.q.on_read_done(u16::from(pick), Bytes::new());
                } else {
                    let i = usize::from(pick) % h.reads.len();
                    let (cid, len) = h.reads[i];
                    let l = len as usize + usize::from(wrong);
                    if h.q.on_read_done(cid, Bytes::from(vec![0x22u8; l])).is_ok() {
                        assert!(!wrong || h.terminated);
                        h.reads.swap_remove(i);
                        h.inflight -= 1;
                    }
                }
            }
            Op::SendDone { pick, bogus } => {
                if bogus || h.sends.is_empty() {
                    assert!(h.q.on_send_done(u64::MAX - u64::from(pick)).is_err());
                } else {
                    let i = usize::from(pick) % h.sends.len();
                    let (token, credits) = h.sends.swap_remove(i);
                    assert!(h.q.on_send_done(token).is_ok());
                    h.inflight -= credits;
                }
            }
            Op::SetConnected { sq_size, max_icd } => {
                h.q.set_connected(sq_size);
                h.q.limit_in_capsule_data(u32::from(max_icd));
            }
            Op::Fail => h.q.fail("fuzz"),
        }
        h.after();
        if h.terminated {
            assert!(h.q.request_data(0).is_err());
            assert!(h.q.send_data(0, Bytes::from_static(b"x"), true).is_err());
            h.q.complete(Cqe::new(0, Status::SUCCESS));
            assert!(h.q.poll_work().is_none());
            assert!(h.q.poll_event().is_none());
        }
    }
});
