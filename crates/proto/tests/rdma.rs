//! Property tests of the NVMe/RDMA controller queue (`nvmf_proto::rdma`).
//!
//! A simulated shell plays the verbs side: it owns the host's registered
//! memory (keyed buffers), executes the queue's READ and WRITE work items on it,
//! delivers SENDs to the host, completes work in a random order and at random
//! times, and posts capsules into the receive slots the queue gave back. A tiny
//! controller app stores written data by LBA and serves reads from it.
//!
//! Checked: every byte a host writes (in-capsule or keyed) reaches the app
//! unchanged and every byte the app serves lands in the host's buffer; every
//! command completes exactly once, with the key invalidated when asked; the
//! send work requests in flight never exceed `max_send_wr`; no more commands
//! outstanding than the queue size and no receive slot posted twice; the
//! queue never ends on well-formed traffic. And `on_recv` never panics on
//! arbitrary bytes, with the same invariants holding.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use nvmf_proto::cqe::Cqe;
use nvmf_proto::rdma::{RdmaControllerQueue, RdmaQueueConfig, RdmaSgl, RdmaWork};
use nvmf_proto::sqe::{io_opcode, Sqe};
use nvmf_proto::status::Status;
use nvmf_proto::tcp::ControllerEvent;
use proptest::prelude::*;

const BLOCK: usize = 512;

/// xorshift64*: the in-test source of scheduling decisions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone)]
struct Params {
    seed: u64,
    recv_queue_size: u16,
    max_icd: u32,
    max_send_wr: u32,
    max_write_sge: u16,
    max_pending_read_bytes: u32,
    /// (is_write, blocks, in_capsule, invalidate)
    commands: Vec<(bool, u8, bool, bool)>,
}

fn params() -> impl Strategy<Value = Params> {
    (
        any::<u64>(),
        1u16..12,
        prop_oneof![Just(0u32), Just(4096), Just(8192)],
        2u32..24,
        1u16..4,
        prop_oneof![Just(512u32), Just(4096), Just(1 << 20)],
        prop::collection::vec(
            (any::<bool>(), 1u8..17, any::<bool>(), any::<bool>()),
            1..60,
        ),
    )
        .prop_map(|(seed, rq, icd, wr, sge, rb, commands)| Params {
            seed,
            recv_queue_size: rq,
            max_icd: icd,
            max_send_wr: wr,
            max_write_sge: sge,
            max_pending_read_bytes: rb,
            commands,
        })
}

struct HostBuf {
    cid: u16,
    data: Vec<u8>,
    invalidate: bool,
    valid: bool,
}

struct Sim {
    q: RdmaControllerQueue,
    rng: Rng,
    cfg: RdmaQueueConfig,
    /// Receive slots posted and free for a capsule.
    posted: Vec<u32>,
    /// Keyed buffers by key.
    mem: HashMap<u32, HostBuf>,
    /// READs handed out: (cid, key, len).
    reads: Vec<(u16, u32, u32)>,
    /// SENDs handed out: (token, cqe, invalidate, credits).
    sends: Vec<(u64, Cqe, Option<u32>, u32)>,
    /// Unsignaled WRITEs since the last SEND.
    writes_pending: u32,
    /// Send WRs in flight when the current completion group started.
    group_base: u32,
    /// Credits of work handed out and not completed (the model's count).
    inflight: u32,
    /// Commands the app has and what it must still do: cid -> sqe.
    app: VecDeque<(Sqe, Option<Vec<u8>>)>,
    store: HashMap<u64, [u8; BLOCK]>,
    completed: HashMap<u16, Cqe>,
}

impl Sim {
    fn apply(&mut self, w: RdmaWork) {
        match w {
            RdmaWork::PostRecv { slot } => {
                assert!(!self.posted.contains(&slot), "slot {slot} posted twice");
                self.posted.push(slot);
                // A completion group starts: its WRITEs and SEND follow.
                self.group_base = self.inflight;
            }
            RdmaWork::Read {
                cid,
                key,
                len,
                addr,
            } => {
                let b = &self.mem[&key];
                assert!(b.valid && b.cid == cid);
                assert_eq!((addr, len as usize), (0, b.data.len()));
                self.reads.push((cid, key, len));
                self.check_group(self.inflight, 1);
                self.inflight += 1;
            }
            RdmaWork::Write {
                key, addr, data, ..
            } => {
                assert!(data.len() <= usize::from(self.cfg.max_write_sge));
                let b = self.mem.get_mut(&key).expect("WRITE to an unknown key");
                assert!(b.valid, "WRITE after invalidation");
                let mut off = addr as usize;
                for d in data {
                    b.data[off..off + d.len()].copy_from_slice(&d);
                    off += d.len();
                }
                self.writes_pending += 1;
                self.inflight += 1;
            }
            RdmaWork::Send {
                token,
                cid,
                cqe,
                invalidate,
            } => {
                let c = Cqe::decode(&cqe);
                assert_eq!(c.cid, cid);
                let credits = self.writes_pending + 1;
                self.writes_pending = 0;
                self.inflight += 1;
                self.check_group(self.group_base, credits);
                self.sends.push((token, c, invalidate, credits));
            }
        }
    }

    /// A group of `cost` send WRs started with `base` in flight: it must fit
    /// under `max_send_wr`, or go alone when it cannot fit at all.
    fn check_group(&self, base: u32, cost: u32) {
        assert!(
            base + cost <= self.cfg.max_send_wr || base == 0,
            "{base} send WRs in flight and a group of {cost} started, limit {}",
            self.cfg.max_send_wr
        );
    }

    fn pump(&mut self) {
        while let Some(w) = self.q.poll_work() {
            self.apply(w);
        }
        assert_eq!(self.q.inflight_send_wrs(), self.inflight);
        assert!(self.q.outstanding() <= usize::from(self.cfg.recv_queue_size));
        while let Some(ev) = self.q.poll_event() {
            match ev {
                ControllerEvent::Command(c) => {
                    let data = (!c.data.is_empty()).then(|| c.data.to_vec());
                    self.app.push_back((c.sqe, data));
                }
                ControllerEvent::Data { cid, data } => {
                    let sqe = Sqe {
                        cid,
                        ..Sqe::default()
                    };
                    let d: Vec<u8> = data.iter().flat_map(|b| b.to_vec()).collect();
                    self.app.push_back((sqe, Some(d)));
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    }

    /// The app acts on one command (in a random order).
    fn app_step(&mut self, cmds: &HashMap<u16, Sqe>) {
        if self.app.is_empty() {
            return;
        }
        let i = self.rng.below(self.app.len() as u64) as usize;
        let (sqe, data) = self.app.remove(i).unwrap();
        let full = cmds[&sqe.cid];
        let lba = full.slba();
        let n = full.nlb() as usize;
        if full.opcode == io_opcode::WRITE {
            match data {
                None => self.q.request_data(sqe.cid).unwrap(),
                Some(d) => {
                    assert_eq!(d.len(), n * BLOCK);
                    for (k, blk) in d.chunks(BLOCK).enumerate() {
                        self.store.insert(lba + k as u64, blk.try_into().unwrap());
                    }
                    self.q.complete(Cqe::new(sqe.cid, Status::SUCCESS));
                }
            }
        } else {
            // Serve in one to three parts, some with SUCCESS folded in.
            let mut all = Vec::new();
            for k in 0..n as u64 {
                all.extend_from_slice(&self.store.get(&(lba + k)).copied().unwrap_or([0; BLOCK]));
            }
            let cut = self.rng.below(all.len() as u64 + 1) as usize;
            let parts = [
                Bytes::copy_from_slice(&all[..cut]),
                Bytes::copy_from_slice(&all[cut..]),
            ];
            let fold = self.rng.below(2) == 0;
            let done = self.q.send_data_parts(sqe.cid, &parts, fold).unwrap();
            assert_eq!(done, fold);
            if !fold {
                self.q.complete(Cqe::new(sqe.cid, Status::SUCCESS));
            }
        }
    }

    /// The shell completes some work, in random order.
    fn shell_step(&mut self) {
        if !self.reads.is_empty() && self.rng.below(2) == 0 {
            let i = self.rng.below(self.reads.len() as u64) as usize;
            let (cid, key, _) = self.reads.swap_remove(i);
            let data = Bytes::from(self.mem[&key].data.clone());
            self.inflight -= 1;
            self.q.on_read_done(cid, data).unwrap();
        } else if !self.sends.is_empty() {
            // SENDs complete in order on a reliable connection.
            let (token, cqe, invalidate, credits) = self.sends.remove(0);
            self.inflight -= credits;
            self.q.on_send_done(token).unwrap();
            assert!(
                self.completed.insert(cqe.cid, cqe).is_none(),
                "command {} completed twice",
                cqe.cid
            );
            if let Some(b) = self.mem.values_mut().find(|b| b.cid == cqe.cid && b.valid) {
                assert_eq!(invalidate.is_some(), b.invalidate);
                if b.invalidate {
                    b.valid = false;
                }
            }
        }
    }
}

fn run(p: &Params) {
    let cfg = RdmaQueueConfig {
        qid: 1,
        recv_queue_size: p.recv_queue_size,
        max_icd: p.max_icd,
        max_data_len: 1 << 20,
        max_send_wr: p.max_send_wr,
        max_write_sge: p.max_write_sge,
        max_pending_read_bytes: p.max_pending_read_bytes,
    };
    let mut s = Sim {
        q: RdmaControllerQueue::new(cfg),
        rng: Rng(p.seed | 1),
        cfg,
        posted: (0..u32::from(p.recv_queue_size)).collect(),
        mem: HashMap::new(),
        reads: Vec::new(),
        sends: Vec::new(),
        writes_pending: 0,
        group_base: 0,
        inflight: 0,
        app: VecDeque::new(),
        store: HashMap::new(),
        completed: HashMap::new(),
    };
    let mut cmds: HashMap<u16, Sqe> = HashMap::new();
    // What the host wrote, to check reads against.
    let mut model: HashMap<u64, [u8; BLOCK]> = HashMap::new();
    let mut todo: VecDeque<(u16, bool, u8, bool, bool)> = p
        .commands
        .iter()
        .enumerate()
        .map(|(i, &(w, n, ic, inv))| (i as u16, w, n, ic, inv))
        .collect();
    let mut in_flight: HashSet<u16> = HashSet::new();
    let mut steps = 0;
    while (!todo.is_empty() || !in_flight.is_empty()) && steps < 100_000 {
        steps += 1;
        // The host sends while it has a receive slot and a free SQ entry.
        if !todo.is_empty()
            && !s.posted.is_empty()
            && in_flight.len() < usize::from(p.recv_queue_size)
            && s.rng.below(3) != 0
        {
            let (cid, write, n, ic, inv) = todo.pop_front().unwrap();
            // LBA ranges 0, 16, ..., 112; one command per range at a time, so
            // a read sees exactly the writes completed before it.
            let lba = u64::from(cid % 8) * 16;
            if in_flight.iter().any(|c| cmds[c].slba() == lba) {
                todo.push_front((cid, write, n, ic, inv));
            } else {
                let len = usize::from(n) * BLOCK;
                let mut sqe = Sqe::rw(
                    if write {
                        io_opcode::WRITE
                    } else {
                        io_opcode::READ
                    },
                    1,
                    lba,
                    u32::from(n),
                    false,
                );
                sqe.cid = cid;
                let mut icd = Vec::new();
                if write && ic && len as u32 <= p.max_icd {
                    icd = (0..len).map(|i| (i as u8) ^ (cid as u8)).collect();
                    sqe.sgl1 = RdmaSgl::InCapsule {
                        offset: 0,
                        len: len as u32,
                    }
                    .to_descriptor();
                    for (k, blk) in icd.chunks(BLOCK).enumerate() {
                        model.insert(lba + k as u64, blk.try_into().unwrap());
                    }
                } else {
                    let key = 0x1000 + u32::from(cid);
                    let data = if write {
                        let d: Vec<u8> = (0..len)
                            .map(|i| (i as u8).wrapping_add(cid as u8))
                            .collect();
                        for (k, blk) in d.chunks(BLOCK).enumerate() {
                            model.insert(lba + k as u64, blk.try_into().unwrap());
                        }
                        d
                    } else {
                        vec![0xEE; len]
                    };
                    s.mem.insert(
                        key,
                        HostBuf {
                            cid,
                            data,
                            invalidate: inv,
                            valid: true,
                        },
                    );
                    sqe.sgl1 = RdmaSgl::Keyed {
                        addr: 0,
                        len: len as u32,
                        key,
                        invalidate: inv,
                    }
                    .to_descriptor();
                }
                let slot = s.posted.remove(s.rng.below(s.posted.len() as u64) as usize);
                let mut cap = sqe.encode().to_vec();
                cap.extend_from_slice(&icd);
                cmds.insert(cid, sqe);
                in_flight.insert(cid);
                s.q.on_recv(slot, Bytes::from(cap)).unwrap();
            }
        }
        s.pump();
        if s.rng.below(2) == 0 {
            s.app_step(&cmds);
            s.pump();
        }
        s.shell_step();
        s.pump();
        // The host takes completions.
        let done: Vec<u16> = in_flight
            .iter()
            .copied()
            .filter(|c| s.completed.contains_key(c))
            .collect();
        for cid in done {
            in_flight.remove(&cid);
            let cqe = s.completed[&cid];
            assert!(cqe.status.is_success(), "{cid}: {:?}", cqe.status);
            assert_eq!(cqe.sqid, 1);
            let sqe = cmds[&cid];
            if sqe.opcode == io_opcode::READ {
                let b = s.mem.remove(&(0x1000 + u32::from(cid))).unwrap();
                for k in 0..u64::from(sqe.nlb()) {
                    let want = model.get(&(sqe.slba() + k)).copied().unwrap_or([0; BLOCK]);
                    let off = k as usize * BLOCK;
                    assert_eq!(&b.data[off..off + BLOCK], &want[..], "read {cid} block {k}");
                }
            } else {
                s.mem.remove(&(0x1000 + u32::from(cid)));
            }
            s.completed.remove(&cid);
        }
    }
    assert!(
        todo.is_empty() && in_flight.is_empty(),
        "stalled: {steps} steps"
    );
    assert!(!s.q.is_terminated());
    assert_eq!(s.q.outstanding(), 0);
    assert_eq!(s.posted.len(), usize::from(p.recv_queue_size));
    // Everything written is in the store.
    for (b, v) in &model {
        assert_eq!(s.store.get(b), Some(v), "block {b}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn rdma_queue_moves_data_and_respects_limits(p in params()) {
        run(&p);
    }

    /// Arbitrary capsules into arbitrary slots: no panic, and the queue's
    /// limits hold whatever arrives.
    #[test]
    fn on_recv_never_panics(
        max_icd in 0u32..300,
        rq in 1u16..6,
        wr in 1u32..6,
        caps in prop::collection::vec((0u32..8, prop::collection::vec(any::<u8>(), 0..400)), 0..40),
        acts in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let cfg = RdmaQueueConfig {
            qid: 0,
            recv_queue_size: rq,
            max_icd,
            max_data_len: 4096,
            max_send_wr: wr,
            max_write_sge: 1,
            max_pending_read_bytes: 8192,
        };
        let mut q = RdmaControllerQueue::new(cfg);
        let mut cids = Vec::new();
        let mut tokens = VecDeque::new();
        let mut reads = Vec::new();
        let mut terminated = false;
        for (i, (slot, bytes)) in caps.into_iter().enumerate() {
            let _ = q.on_recv(slot, Bytes::from(bytes));
            let a = acts.get(i).copied().unwrap_or(0);
            while let Some(ev) = q.poll_event() {
                prop_assert!(!terminated, "event after Terminated");
                match ev {
                    ControllerEvent::Command(c) => cids.push((c.sqe.cid, c.buffer_len)),
                    ControllerEvent::Terminated { .. } => terminated = true,
                    _ => {}
                }
            }
            prop_assert!(q.outstanding() <= usize::from(rq));
            if let Some(&(cid, len)) = cids.get(usize::from(a) % cids.len().max(1)) {
                match a % 4 {
                    0 => { let _ = q.request_data(cid); }
                    1 => { let _ = q.send_data(cid, Bytes::from(vec![0; len as usize]), true); }
                    2 => q.complete(Cqe::new(cid, Status::SUCCESS)),
                    _ => { let _ = q.on_read_done(cid, Bytes::from(vec![0; len as usize])); }
                }
            }
            while let Some(w) = q.poll_work() {
                match w {
                    RdmaWork::Send { token, .. } => tokens.push_back(token),
                    RdmaWork::Read { cid, len, .. } => reads.push((cid, len)),
                    _ => {}
                }
            }
            if a & 0x10 != 0 {
                if let Some(t) = tokens.pop_front() {
                    prop_assert!(q.on_send_done(t).is_ok());
                }
            }
            if a & 0x20 != 0 {
                if let Some((cid, len)) = reads.pop() {
                    let _ = q.on_read_done(cid, Bytes::from(vec![0; len as usize]));
                }
            }
            // No group here exceeds one WRITE plus a SEND.
            prop_assert!(q.inflight_send_wrs() <= wr.max(2));
        }
    }
}
