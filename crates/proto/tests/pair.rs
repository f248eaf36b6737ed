//! Property tests: a HostQueue and a ControllerQueue talking to each other in
//! memory, bytes moved in random chunk sizes, with random digests, data alignment,
//! in-capsule limits, MAXH2CDATA, C2HData PDU sizes, SQ flow control, queue depth
//! and a random mix of writes (in-capsule and R2T/H2CData), reads (C2HData, with
//! and without SUCCESS) and commands without data, several outstanding at once.
//!
//! A tiny "controller app" stores written data by LBA and serves reads from it.
//! Checked: every byte written arrives at the app unchanged, every byte the app
//! serves arrives at the host unchanged, every command completes exactly once with
//! success, CIDs are unique among outstanding commands, neither side ever ends the
//! connection, and both sides end with nothing outstanding.
//!
//! Also: segmentation invariance — a fixed byte stream fed at once or in random
//! chunks gives the same PDUs/errors (Decoder, both sides) and the same events and
//! output (HostQueue, ControllerQueue).

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use nvmf_proto::cqe::Cqe;
use nvmf_proto::sqe::{io_opcode, SglDescriptor, Sqe};
use nvmf_proto::status::Status;
use nvmf_proto::tcp::pdu::{DataPdu, IcReq, IcResp, R2t, TermReq};
use nvmf_proto::tcp::{
    ControllerEvent, ControllerQueue, ControllerQueueConfig, Decoder, DecoderConfig, Digests, Fes,
    HostData, HostEvent, HostQueue, HostQueueConfig, Pdu, PduEncoder, Side,
};
use proptest::prelude::*;

/// xorshift64*: the in-test source of chunk sizes and app decisions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Write,
    Read,
    NoData,
}

#[derive(Debug, Clone)]
struct Op {
    kind: Kind,
    lba: u8,
    len: usize,
}

#[derive(Debug, Clone)]
struct Params {
    host_digests: Digests,
    allowed: Digests,
    hpda: u8,
    cpda: u8,
    max_icd: u32,
    maxh2cdata: u32,
    max_c2h_pdu: u32,
    max_pending_r2t: u32,
    sqfc_disabled: bool,
    depth: u16,
    /// Largest chunk moved at once (0: everything waiting).
    max_chunk: usize,
    ops: Vec<Op>,
    seed: u64,
}

fn digests() -> impl Strategy<Value = Digests> {
    (any::<bool>(), any::<bool>()).prop_map(|(header, data)| Digests { header, data })
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![
        3 => 0usize..=64,
        3 => 0usize..=8192,
        2 => 0usize..=65536,
        1 => 0usize..=300 * 1024,
    ];
    let kind = prop_oneof![3 => Just(Kind::Write), 3 => Just(Kind::Read), 1 => Just(Kind::NoData)];
    (kind, 0u8..16, len).prop_map(|(kind, lba, len)| Op { kind, lba, len })
}

fn params() -> impl Strategy<Value = Params> {
    (
        (digests(), digests(), 0u8..32, 0u8..32),
        (
            prop_oneof![Just(0u32), 0u32..=16384, Just(8192)],
            (1024u32..=65536).prop_map(|k| k * 4),
            prop_oneof![Just(0u32), 1u32..=300 * 1024, Just(4096)],
            prop_oneof![1u32..=1 << 20, Just(16 << 20)],
        ),
        (any::<bool>(), 1u16..=32),
        prop_oneof![
            Just(1usize),
            1usize..=16,
            1usize..=1500,
            1usize..=70000,
            Just(0usize)
        ],
        proptest::collection::vec(op(), 1..=20),
        any::<u64>(),
    )
        .prop_map(
            |(
                (host_digests, allowed, hpda, cpda),
                (max_icd, maxh2cdata, max_c2h_pdu, max_pending_r2t),
                (sqfc_disabled, depth),
                max_chunk,
                ops,
                seed,
            )| Params {
                host_digests,
                allowed,
                hpda,
                cpda,
                max_icd,
                maxh2cdata,
                max_c2h_pdu,
                max_pending_r2t,
                sqfc_disabled,
                depth,
                max_chunk,
                ops,
                seed,
            },
        )
}

/// Data written by op `i`: distinct for every op and every byte position.
fn payload(i: usize, len: usize) -> Bytes {
    let mut x = (i as u32).wrapping_mul(2_654_435_761) | 1;
    let v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    Bytes::from(v)
}

/// Moves up to a random number of waiting bytes from `from` into `deliver`.
fn move_bytes(
    rng: &mut Rng,
    max_chunk: usize,
    from: &mut VecDeque<u8>,
    deliver: &mut impl FnMut(&[u8]),
) -> bool {
    if from.is_empty() {
        return false;
    }
    let n = if max_chunk == 0 {
        from.len()
    } else {
        1 + rng.below(max_chunk.min(from.len()))
    };
    let chunk: Vec<u8> = from.drain(..n).collect();
    deliver(&chunk);
    true
}

/// What the controller app still has to do.
enum Action {
    /// Answer a command just received.
    Command {
        sqe: Sqe,
        data: Bytes,
        buffer_len: u32,
    },
    /// Store write data that arrived by R2T/H2CData and complete.
    Stored { cid: u16, data: Vec<Bytes> },
}

struct App {
    store: HashMap<u8, Bytes>,
    /// The LBA of each outstanding command, by CID.
    lba: HashMap<u16, u8>,
    outstanding: HashSet<u16>,
    /// What the app served for each outstanding read, by CID.
    served: HashMap<u16, Bytes>,
    actions: VecDeque<Action>,
}

fn run_pair(p: &Params) {
    let mut rng = Rng::new(p.seed);
    let mut host = HostQueue::new(HostQueueConfig {
        digests: p.host_digests,
        hpda: p.hpda,
        maxr2t: 0,
        max_icd: p.max_icd,
        max_c2h_data: 1 << 20,
        queue_depth: p.depth,
    });
    let mut ctrl = ControllerQueue::new(ControllerQueueConfig {
        max_icd: 8192,
        maxh2cdata: p.maxh2cdata,
        allowed_digests: p.allowed,
        cpda: p.cpda,
        max_data_len: 1 << 20,
        max_pending_r2t_bytes: p.max_pending_r2t,
        max_c2h_pdu: p.max_c2h_pdu,
        initial_queue_depth: 32,
    });
    let mut app = App {
        store: HashMap::new(),
        lba: HashMap::new(),
        outstanding: HashSet::new(),
        served: HashMap::new(),
        actions: VecDeque::new(),
    };
    let mut h2c: VecDeque<u8> = VecDeque::new();
    let mut c2h: VecDeque<u8> = VecDeque::new();
    // Host side bookkeeping: op index of each outstanding CID, and what each write sent.
    let mut host_out: HashMap<u16, usize> = HashMap::new();
    let mut sent: HashMap<u16, Bytes> = HashMap::new();
    let mut completed = vec![false; p.ops.len()];
    let mut next_op = 0;
    let mut host_ready = false;
    let mut ctrl_ready = false;
    let want = Digests {
        header: p.host_digests.header && p.allowed.header,
        data: p.host_digests.data && p.allowed.data,
    };

    let mut steps = 0u64;
    let mut stalled = 0;
    loop {
        steps += 1;
        assert!(steps < 20_000_000, "no progress");
        let mut progress = false;

        // Host: submit while there is room.
        if host_ready && ctrl_ready {
            while next_op < p.ops.len() && host.has_room() && rng.chance(70) {
                let op = &p.ops[next_op];
                let (sqe, data) = match op.kind {
                    Kind::Write => (
                        Sqe::rw(io_opcode::WRITE, 1, u64::from(op.lba), 1, false),
                        HostData::ToController(payload(next_op, op.len)),
                    ),
                    Kind::Read => (
                        Sqe::rw(io_opcode::READ, 1, u64::from(op.lba), 1, false),
                        HostData::FromController(op.len as u32),
                    ),
                    Kind::NoData => (Sqe::new(io_opcode::FLUSH), HostData::None),
                };
                let cid = host.submit(sqe, data.clone()).expect("submit");
                assert!(
                    host_out.insert(cid, next_op).is_none(),
                    "CID {cid} reused while outstanding"
                );
                if let HostData::ToController(b) = data {
                    sent.insert(cid, b);
                }
                next_op += 1;
                progress = true;
            }
        }
        h2c.extend(host.tx().take_all());

        // Bytes host → controller.
        progress |= move_bytes(&mut rng, p.max_chunk, &mut h2c, &mut |b| ctrl.receive(b));

        // Controller events. The commands among them, as `pending_commands`
        // lists them before any is taken, are exactly those `poll_event` gives.
        let peeked: Vec<u16> = ctrl.pending_commands().map(|s| s.cid).collect();
        let mut taken = Vec::new();
        while let Some(ev) = ctrl.poll_event() {
            progress = true;
            if let ControllerEvent::Command(c) = &ev {
                taken.push(c.sqe.cid);
            }
            match ev {
                ControllerEvent::Connected {
                    digests,
                    hpda,
                    maxr2t,
                } => {
                    assert_eq!((digests, hpda, maxr2t), (want, p.hpda, 0));
                    ctrl.set_connected(1, p.depth, !p.sqfc_disabled, p.max_icd);
                    ctrl_ready = true;
                }
                ControllerEvent::Command(c) => {
                    assert!(
                        app.outstanding.insert(c.sqe.cid),
                        "CID {} handed up twice",
                        c.sqe.cid
                    );
                    app.lba.insert(c.sqe.cid, c.sqe.slba() as u8);
                    app.actions.push_back(Action::Command {
                        sqe: c.sqe,
                        data: c.data,
                        buffer_len: c.buffer_len,
                    });
                }
                ControllerEvent::Data { cid, data } => {
                    assert!(app.outstanding.contains(&cid));
                    app.actions.push_back(Action::Stored { cid, data });
                }
                e => panic!("controller: {e:?} with {p:?}"),
            }
        }
        assert_eq!(peeked, taken, "pending_commands against poll_event");

        // The app answers some of what is waiting (all of it if nothing else moves).
        let n = if progress || app.actions.is_empty() {
            rng.below(app.actions.len() + 1)
        } else {
            app.actions.len()
        };
        for _ in 0..n {
            progress = true;
            match app.actions.pop_front().unwrap() {
                Action::Command {
                    sqe,
                    data,
                    buffer_len,
                } => {
                    let cid = sqe.cid;
                    let lba = app.lba[&cid];
                    match sqe.opcode {
                        io_opcode::WRITE if buffer_len > 0 => {
                            assert!(data.is_empty());
                            ctrl.request_data(cid).unwrap();
                        }
                        io_opcode::WRITE => {
                            // In-capsule data (possibly empty).
                            assert_eq!(sqe.sgl1.type_byte, 0x01);
                            assert_eq!(&data[..], &sent[&cid][..], "in-capsule data");
                            app.store.insert(lba, data);
                            app.outstanding.remove(&cid);
                            ctrl.complete(Cqe::new(cid, Status::SUCCESS));
                        }
                        io_opcode::READ if buffer_len > 0 => {
                            let mut v = app.store.get(&lba).map(|b| b.to_vec()).unwrap_or_default();
                            v.resize(buffer_len as usize, 0xee);
                            let v = Bytes::from(v);
                            app.served.insert(cid, v.clone());
                            let success = rng.chance(50);
                            // In one or more pieces.
                            let mut off = 0;
                            let mut done = false;
                            while off < v.len() {
                                let n = if rng.chance(50) {
                                    v.len() - off
                                } else {
                                    1 + rng.below(v.len() - off)
                                };
                                let piece = v.slice(off..off + n);
                                done = if rng.chance(50) {
                                    ctrl.send_data(cid, piece, success).unwrap()
                                } else {
                                    // The same piece from several buffers (as a
                                    // namespace's pages): empty parts included.
                                    let mut parts = Vec::new();
                                    let mut k = 0;
                                    while k < n {
                                        let m = if rng.chance(30) {
                                            0
                                        } else {
                                            1 + rng.below(n - k)
                                        };
                                        parts.push(piece.slice(k..k + m));
                                        k += m;
                                    }
                                    ctrl.send_data_parts(cid, &parts, success).unwrap()
                                };
                                off += n;
                            }
                            assert_eq!(done, success && p.sqfc_disabled);
                            if !done {
                                ctrl.complete(Cqe::new(cid, Status::SUCCESS));
                            }
                            app.outstanding.remove(&cid);
                        }
                        _ => {
                            assert_eq!(buffer_len, 0);
                            if sqe.opcode == io_opcode::READ {
                                app.served.insert(cid, Bytes::new());
                            }
                            app.outstanding.remove(&cid);
                            ctrl.complete(Cqe::new(cid, Status::SUCCESS));
                        }
                    }
                }
                Action::Stored { cid, data } => {
                    let v: Vec<u8> = data.iter().flat_map(|b| b.iter().copied()).collect();
                    assert_eq!(&v[..], &sent[&cid][..], "write data via R2T");
                    app.store.insert(app.lba[&cid], Bytes::from(v));
                    app.outstanding.remove(&cid);
                    ctrl.complete(Cqe::new(cid, Status::SUCCESS));
                }
            }
        }
        c2h.extend(ctrl.tx().take_all());
        assert!(!ctrl.is_terminated());

        // Bytes controller → host.
        progress |= move_bytes(&mut rng, p.max_chunk, &mut c2h, &mut |b| host.receive(b));

        // Host events.
        while let Some(ev) = host.poll_event() {
            progress = true;
            match ev {
                HostEvent::Connected {
                    digests,
                    cpda,
                    maxh2cdata,
                } => {
                    assert_eq!((digests, cpda, maxh2cdata), (want, p.cpda, p.maxh2cdata));
                    host.set_limits(p.max_icd, p.depth);
                    host_ready = true;
                }
                HostEvent::Completion(c) => {
                    let cid = c.cqe.cid;
                    let i = host_out
                        .remove(&cid)
                        .expect("completion for a CID not outstanding");
                    assert!(!completed[i], "op {i} completed twice");
                    completed[i] = true;
                    assert!(c.cqe.status.is_success(), "{:?}", c.cqe.status);
                    match p.ops[i].kind {
                        Kind::Read => {
                            let got = c.data_contiguous();
                            assert_eq!(got.len(), p.ops[i].len);
                            assert_eq!(
                                &got[..],
                                &app.served.remove(&cid).unwrap()[..],
                                "read data"
                            );
                        }
                        _ => assert!(c.data.is_empty()),
                    }
                    sent.remove(&cid);
                }
                e => panic!("host: {e:?} with {p:?}"),
            }
        }
        assert!(!host.is_terminated());

        let idle = !progress && h2c.is_empty() && c2h.is_empty() && app.actions.is_empty();
        if idle && next_op == p.ops.len() {
            break;
        }
        // Idle with ops left: only the host's coin flips can be holding them back.
        stalled = if idle { stalled + 1 } else { 0 };
        assert!(
            stalled < 1000,
            "stalled with {} of {} ops submitted",
            next_op,
            p.ops.len()
        );
    }
    assert_eq!(next_op, p.ops.len(), "not every op was submitted");
    assert!(completed.iter().all(|&c| c), "not every op completed");
    assert_eq!(host.outstanding(), 0);
    assert_eq!(ctrl.outstanding(), 0);
    assert!(app.outstanding.is_empty());
    // The last data written to each LBA is what the app holds; check it came from
    // the op that wrote it last in the app's order (contents checked on arrival).
    for (lba, b) in &app.store {
        let writers: Vec<usize> = p
            .ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.kind == Kind::Write && o.lba == *lba)
            .map(|(i, _)| i)
            .collect();
        assert!(writers.iter().any(|&i| payload(i, p.ops[i].len) == *b));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn host_and_controller_agree(p in params()) {
        run_pair(&p);
    }
}

/// A few fixed configurations that must always work, with larger workloads.
#[test]
fn pair_fixed_configurations() {
    let ops: Vec<Op> = (0..40)
        .map(|i| Op {
            kind: [Kind::Write, Kind::Read, Kind::NoData][i % 3],
            lba: (i % 5) as u8,
            len: [0, 1, 511, 4096, 8192, 8193, 65536, 300 * 1024][i % 8],
        })
        .collect();
    for (digests, hpda, cpda, sqfc_disabled, max_chunk) in [
        (Digests::default(), 0, 0, false, 0),
        (
            Digests {
                header: true,
                data: true,
            },
            31,
            31,
            true,
            1,
        ),
        (
            Digests {
                header: true,
                data: false,
            },
            3,
            0,
            true,
            1500,
        ),
        (
            Digests {
                header: false,
                data: true,
            },
            0,
            7,
            false,
            65536,
        ),
    ] {
        run_pair(&Params {
            host_digests: digests,
            allowed: Digests {
                header: true,
                data: true,
            },
            hpda,
            cpda,
            max_icd: 8192,
            maxh2cdata: 4096,
            max_c2h_pdu: 4096,
            max_pending_r2t: 128 * 1024,
            sqfc_disabled,
            depth: 8,
            max_chunk,
            ops: ops.clone(),
            seed: 42,
        });
    }
}

// ---------------------------------------------------------------------------------
// Segmentation invariance.

fn feed_decoder(
    side: Side,
    neg: DecoderConfig,
    stream: &[u8],
    rng: Option<&mut Rng>,
) -> (Vec<(Pdu, bool)>, Option<String>) {
    let mut d = Decoder::new(side, DecoderConfig::default());
    let mut out = Vec::new();
    let mut rng = rng;
    let mut off = 0;
    while off < stream.len() {
        let n = match rng.as_deref_mut() {
            Some(r) => 1 + r.below((stream.len() - off).min(3000)),
            None => stream.len() - off,
        };
        d.feed(&stream[off..off + n]);
        off += n;
        loop {
            match d.next_pdu() {
                Ok(Some(r)) => {
                    let ic = matches!(r.pdu, Pdu::IcReq(_) | Pdu::IcResp(_));
                    out.push((r.pdu, r.data_digest_ok));
                    if ic {
                        d.set_negotiated(neg);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return (
                        out,
                        Some(format!("{:?} {} {:?} {}", e.fes, e.fei, e.header, e.reason)),
                    )
                }
            }
        }
    }
    (out, None)
}

fn arb_sqe() -> impl Strategy<Value = Sqe> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut x = [0u8; 64];
        x[..32].copy_from_slice(&a);
        x[32..].copy_from_slice(&b);
        Sqe::decode(&x)
    })
}

fn arb_h2c_pdu(max_icd: usize) -> impl Strategy<Value = Pdu> {
    prop_oneof![
        (
            arb_sqe(),
            proptest::collection::vec(any::<u8>(), 0..=max_icd)
        )
            .prop_map(|(sqe, d)| Pdu::CapsuleCmd {
                sqe,
                data: Bytes::from(d)
            }),
        (
            any::<(u16, u16, u32, bool)>(),
            proptest::collection::vec(any::<u8>(), 1..=5000)
        )
            .prop_map(|((cccid, ttag, datao, last), d)| Pdu::H2CData(DataPdu {
                cccid,
                ttag,
                datao,
                datal: d.len() as u32,
                last,
                success: false,
                data: Bytes::from(d),
            })),
    ]
}

fn arb_c2h_pdu() -> impl Strategy<Value = Pdu> {
    prop_oneof![
        any::<(u32, u32, u16, u16, u16, u16)>().prop_map(|(dw0, dw1, sqhd, sqid, cid, st)| {
            Pdu::CapsuleResp(Cqe {
                dw0,
                dw1,
                sqhd,
                sqid,
                cid,
                status: Status::from_field(st),
            })
        }),
        (
            any::<(u16, u16, u32, bool, bool)>(),
            proptest::collection::vec(any::<u8>(), 1..=5000)
        )
            .prop_map(
                |((cccid, ttag, datao, last, success), d)| Pdu::C2HData(DataPdu {
                    cccid,
                    ttag,
                    datao,
                    datal: d.len() as u32,
                    last: last || success,
                    success,
                    data: Bytes::from(d),
                })
            ),
        any::<(u16, u16, u32, u32)>().prop_map(|(cccid, ttag, r2to, r2tl)| Pdu::R2T(R2t {
            cccid,
            ttag,
            r2to,
            r2tl
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Decoder, controller side: ICReq, then commands and H2C data; optionally a
    /// corrupted byte, so that errors are compared too.
    #[test]
    fn decoder_segmentation_invariance_controller_side(
        dg in digests(), pda in 0u8..32,
        pdus in proptest::collection::vec(arb_h2c_pdu(2048), 0..12),
        term in any::<bool>(),
        corrupt in proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
        seed in any::<u64>(),
    ) {
        let neg = DecoderConfig { hdgst: dg.header, ddgst: dg.data, rx_pda: (usize::from(pda) + 1) * 4, max_icd: 4096, max_data: 8192 };
        let mut s = PduEncoder::default().to_bytes(&Pdu::IcReq(IcReq { pfv: 0, hpda: 0, digests: dg, maxr2t: 0 })).to_vec();
        let enc = PduEncoder { hdgst: dg.header, ddgst: dg.data, pda: neg.rx_pda };
        for p in &pdus {
            s.extend_from_slice(&enc.to_bytes(p));
        }
        if term {
            s.extend_from_slice(&enc.to_bytes(&Pdu::H2CTermReq(TermReq { fes: Fes::PduSequenceError, fei: 0, data: Bytes::from_static(&[1; 40]) })));
        }
        if let Some((i, x)) = corrupt {
            let i = i.index(s.len());
            s[i] ^= x;
        }
        let whole = feed_decoder(Side::Controller, neg, &s, None);
        let pieces = feed_decoder(Side::Controller, neg, &s, Some(&mut Rng::new(seed)));
        prop_assert_eq!(&whole, &pieces);
        if corrupt.is_none() {
            prop_assert!(whole.1.is_none(), "{:?}", whole.1);
            let got: Vec<&Pdu> = whole.0.iter().map(|(p, _)| p).skip(1).collect();
            let mut want: Vec<&Pdu> = pdus.iter().collect();
            let t;
            if term {
                t = Pdu::H2CTermReq(TermReq { fes: Fes::PduSequenceError, fei: 0, data: Bytes::from_static(&[1; 40]) });
                want.push(&t);
            }
            prop_assert_eq!(got, want);
            prop_assert!(whole.0.iter().all(|(_, ok)| *ok));
        }
    }

    /// Decoder, host side: ICResp, then responses, C2H data and R2Ts.
    #[test]
    fn decoder_segmentation_invariance_host_side(
        dg in digests(), pda in 0u8..32,
        pdus in proptest::collection::vec(arb_c2h_pdu(), 0..12),
        corrupt in proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
        seed in any::<u64>(),
    ) {
        let neg = DecoderConfig { hdgst: dg.header, ddgst: dg.data, rx_pda: (usize::from(pda) + 1) * 4, max_icd: 0, max_data: 8192 };
        let mut s = PduEncoder::default().to_bytes(&Pdu::IcResp(IcResp { pfv: 0, cpda: 0, digests: dg, maxh2cdata: 4096 })).to_vec();
        let enc = PduEncoder { hdgst: dg.header, ddgst: dg.data, pda: neg.rx_pda };
        for p in &pdus {
            s.extend_from_slice(&enc.to_bytes(p));
        }
        if let Some((i, x)) = corrupt {
            let i = i.index(s.len());
            s[i] ^= x;
        }
        let whole = feed_decoder(Side::Host, neg, &s, None);
        let pieces = feed_decoder(Side::Host, neg, &s, Some(&mut Rng::new(seed)));
        prop_assert_eq!(&whole, &pieces);
        if corrupt.is_none() {
            prop_assert!(whole.1.is_none(), "{:?}", whole.1);
            let got: Vec<&Pdu> = whole.0.iter().map(|(p, _)| p).skip(1).collect();
            prop_assert_eq!(got, pdus.iter().collect::<Vec<_>>());
        }
    }

    /// HostQueue: the same responses fed at once or in chunks give the same events
    /// and the same output (H2CData answering R2Ts).
    #[test]
    fn host_queue_segmentation_invariance(
        dg in digests(),
        ops in proptest::collection::vec(op(), 1..12),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
        seed in any::<u64>(),
    ) {
        // Build nvmet-like responses for the commands the host will allocate CIDs 0.. for.
        let enc = PduEncoder::negotiated(dg, 0);
        let mut s = PduEncoder::default().to_bytes(&Pdu::IcResp(IcResp { pfv: 0, cpda: 0, digests: dg, maxh2cdata: 16384 })).to_vec();
        for (i, o) in ops.iter().enumerate() {
            let cid = i as u16;
            match o.kind {
                Kind::Read if o.len > 0 => {
                    let d = payload(i, o.len);
                    let mut off = 0;
                    while off < d.len() {
                        let n = (d.len() - off).min(10000);
                        s.extend_from_slice(&enc.to_bytes(&Pdu::C2HData(DataPdu { cccid: cid, ttag: 0, datao: off as u32, datal: n as u32, last: off + n == d.len(), success: false, data: d.slice(off..off + n) })));
                        off += n;
                    }
                }
                Kind::Write if o.len > 8192 => {
                    s.extend_from_slice(&enc.to_bytes(&Pdu::R2T(R2t { cccid: cid, ttag: i as u16, r2to: 0, r2tl: o.len as u32 })));
                }
                _ => {}
            }
            s.extend_from_slice(&enc.to_bytes(&Pdu::CapsuleResp(Cqe::new(cid, Status::SUCCESS))));
        }
        s.extend_from_slice(&junk);
        let run = |chunked: Option<u64>| {
            let mut h = HostQueue::new(HostQueueConfig { digests: dg, queue_depth: 64, ..HostQueueConfig::default() });
            let mut tx = h.tx().take_all();
            let mut rng = chunked.map(Rng::new);
            let mut events = Vec::new();
            // The ICResp first, then every command is submitted, then the rest.
            for (phase, part) in [&s[..128], &s[128..]].into_iter().enumerate() {
                if phase == 1 {
                    assert!(h.is_connected());
                    for (i, o) in ops.iter().enumerate() {
                        let d = match o.kind {
                            Kind::Write => HostData::ToController(payload(i, o.len)),
                            Kind::Read => HostData::FromController(o.len as u32),
                            Kind::NoData => HostData::None,
                        };
                        let cid = h.submit(Sqe::rw(io_opcode::READ, 1, 0, 1, false), d).unwrap();
                        assert_eq!(cid, i as u16);
                    }
                }
                let mut off = 0;
                while off < part.len() {
                    let n = match rng.as_mut() {
                        Some(r) => 1 + r.below((part.len() - off).min(5000)),
                        None => part.len() - off,
                    };
                    h.receive(&part[off..off + n]);
                    off += n;
                    while let Some(e) = h.poll_event() {
                        events.push(format!("{e:?}"));
                    }
                    tx.extend(h.tx().take_all());
                }
            }
            (events, tx)
        };
        let whole = run(None);
        let pieces = run(Some(seed));
        prop_assert_eq!(&whole, &pieces);
        if junk.is_empty() {
            prop_assert_eq!(whole.0.iter().filter(|e| e.starts_with("Completion")).count(), ops.len());
        }
    }

    /// ControllerQueue with a passive app: ICReq, then command capsules (some with
    /// in-capsule data), then possibly junk: same events and output either way.
    #[test]
    fn controller_queue_segmentation_invariance(
        dg in digests(), cpda in 0u8..32,
        cmds in proptest::collection::vec((any::<u16>(), 0usize..=4096, any::<bool>()), 0..20),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
        seed in any::<u64>(),
    ) {
        let enc = PduEncoder::negotiated(dg, cpda);
        let mut s = PduEncoder::default().to_bytes(&Pdu::IcReq(IcReq { pfv: 0, hpda: 0, digests: dg, maxr2t: 0 })).to_vec();
        for (i, (cid, len, icd)) in cmds.iter().enumerate() {
            let mut sqe = Sqe::rw(if *icd { io_opcode::WRITE } else { io_opcode::READ }, 1, 0, 1, false);
            sqe.cid = *cid;
            let data = if *icd { payload(i, *len) } else { Bytes::new() };
            sqe.sgl1 = if *icd { SglDescriptor::in_capsule(*len as u32) } else { SglDescriptor::transport(*len as u32) };
            s.extend_from_slice(&enc.to_bytes(&Pdu::CapsuleCmd { sqe, data }));
        }
        s.extend_from_slice(&junk);
        let run = |chunked: Option<u64>| {
            let mut c = ControllerQueue::new(ControllerQueueConfig { cpda, initial_queue_depth: 16, ..ControllerQueueConfig::default() });
            let mut rng = chunked.map(Rng::new);
            let mut events = Vec::new();
            let mut tx = Vec::new();
            let mut off = 0;
            while off < s.len() {
                let n = match rng.as_mut() { Some(r) => 1 + r.below((s.len() - off).min(3000)), None => s.len() - off };
                c.receive(&s[off..off + n]);
                off += n;
                while let Some(e) = c.poll_event() { events.push(e); }
                tx.extend(c.tx().take_all());
            }
            (events, tx)
        };
        let whole = run(None);
        let pieces = run(Some(seed));
        prop_assert_eq!(&whole, &pieces);
    }
}
