//! Arbitrary input into a HostQueue: raw bytes and well-formed controller PDUs
//! built from fuzz data (ICResp, CapsuleResp, C2HData, R2T, C2HTermReq), with
//! submissions of reads, writes (in-capsule and R2T) and no-data commands.
//!
//! Oracles: no panic; everything the host sends decodes cleanly with a controller
//! decoder (valid headers and digests, PDO aligned to CPDA, H2CData no larger than
//! MAXH2CDATA, in-capsule data no larger than the limit); each submitted command
//! completes at most once; CIDs are unique among outstanding commands; read data
//! handed back has the length that was received.
#![no_main]

use std::collections::HashMap;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nvmf_proto::cqe::Cqe;
use nvmf_proto::sqe::{io_opcode, Sqe};
use nvmf_proto::status::Status;
use nvmf_proto::tcp::pdu::{DataPdu, IcResp, R2t, TermReq};
use nvmf_proto::tcp::{
    Decoder, DecoderConfig, Digests, Fes, HostData, HostEvent, HostQueue, HostQueueConfig, Pdu,
    PduEncoder, Side,
};

#[path = "common.rs"]
mod common;
use common::Reader;

enum Op {
    Raw(Vec<u8>),
    IcResp {
        pfv: u8,
        cpda: u8,
        dgst: u8,
        maxh2cdata: u32,
    },
    Resp {
        pick: u8,
        status: u16,
    },
    C2H {
        pick: u8,
        datao: u16,
        len: u16,
        last: bool,
        success: bool,
    },
    C2HAuto {
        pick: u8,
        max: u16,
        success: bool,
    },
    R2T {
        pick: u8,
        r2to: u32,
        r2tl: u32,
    },
    Term {
        fes: u16,
    },
    Submit {
        kind: u8,
        len: u32,
    },
    SetLimits {
        max_icd: u16,
        depth: u8,
    },
}

impl Op {
    /// One operation: a tag byte, then its fields (see `make-corpus.py`).
    fn read(r: &mut Reader) -> Op {
        match r.u8() % 9 {
            0 => {
                let n = r.u16();
                Op::Raw(r.bytes(usize::from(n)).to_vec())
            }
            1 => Op::IcResp {
                pfv: r.u8(),
                cpda: r.u8(),
                dgst: r.u8(),
                maxh2cdata: r.u32(),
            },
            2 => Op::Resp {
                pick: r.u8(),
                status: r.u16(),
            },
            3 => Op::C2H {
                pick: r.u8(),
                datao: r.u16(),
                len: r.u16(),
                last: r.bool(),
                success: r.bool(),
            },
            4 => Op::C2HAuto {
                pick: r.u8(),
                max: r.u16(),
                success: r.bool(),
            },
            5 => Op::R2T {
                pick: r.u8(),
                r2to: r.u32(),
                r2tl: r.u32(),
            },
            6 => Op::Term { fes: r.u16() },
            7 => Op::Submit {
                kind: r.u8(),
                len: r.u32(),
            },
            _ => Op::SetLimits {
                max_icd: r.u16(),
                depth: r.u8(),
            },
        }
    }
}

/// What the harness knows about a submitted command.
struct Cmd {
    read_len: u32,
    write_len: u32,
    received: u32,
}

// Input: digests u8, HPDA u8, MAX_ICD u16, max C2H data u32, queue depth u8, then ops.
fuzz_target!(|input: &[u8]| {
    let mut r = Reader::new(input);
    let cfg = HostQueueConfig {
        digests: Digests::from_u8(r.u8()),
        hpda: r.u8() % 40,
        maxr2t: 0,
        max_icd: u32::from(r.u16()),
        max_c2h_data: r.u32() % (1 << 20),
        queue_depth: u16::from(r.u8()),
    };
    let mut q = HostQueue::new(cfg);
    let mut check = Decoder::new(Side::Controller, DecoderConfig::default());
    let mut connected: Option<(Digests, u8, u32)> = None;
    let mut terminated = false;
    let mut cmds: HashMap<u16, Cmd> = HashMap::new();
    let mut max_icd = cfg.max_icd;
    let enc = |c: &Option<(Digests, u8, u32)>| match c {
        Some((d, _, _)) => PduEncoder::negotiated(*d, cfg.hpda.min(31)),
        None => PduEncoder::default(),
    };
    let pick = |cmds: &HashMap<u16, Cmd>, p: u8| -> u16 {
        let mut v: Vec<u16> = cmds.keys().copied().collect();
        v.sort_unstable();
        if v.is_empty() {
            u16::from(p)
        } else {
            v[usize::from(p) % v.len()]
        }
    };
    let mut first = true;
    let mut n = 0;
    while first || (!r.is_empty() && n < 512) {
        n += 1;
        let op = if first { None } else { Some(Op::read(&mut r)) };
        first = false;
        match op {
            None => {}
            Some(Op::Raw(b)) => q.receive(&b),
            Some(Op::IcResp {
                pfv,
                cpda,
                dgst,
                maxh2cdata,
            }) => {
                let p = Pdu::IcResp(IcResp {
                    pfv: u16::from(pfv % 2),
                    cpda: cpda % 33,
                    digests: Digests::from_u8(dgst),
                    maxh2cdata: maxh2cdata % (1 << 20),
                });
                q.receive(&PduEncoder::default().to_bytes(&p));
            }
            Some(Op::Resp { pick: p, status }) => {
                let cid = pick(&cmds, p);
                let r = Pdu::CapsuleResp(Cqe::new(cid, Status::from_field(status)));
                q.receive(&enc(&connected).to_bytes(&r));
            }
            Some(Op::C2H {
                pick: p,
                datao,
                len,
                last,
                success,
            }) => {
                let cid = pick(&cmds, p);
                let d = Pdu::C2HData(DataPdu {
                    cccid: cid,
                    ttag: 0,
                    datao: u32::from(datao),
                    datal: u32::from(len),
                    last: last || success,
                    success,
                    data: Bytes::from(vec![0x77u8; usize::from(len)]),
                });
                q.receive(&enc(&connected).to_bytes(&d));
            }
            Some(Op::C2HAuto {
                pick: p,
                max,
                success,
            }) => {
                let cid = pick(&cmds, p);
                if let Some(c) = cmds.get_mut(&cid) {
                    let n = (c.read_len - c.received).min(u32::from(max).max(1));
                    if n > 0 {
                        let last = c.received + n == c.read_len;
                        let datao = c.received;
                        c.received += n;
                        let d = Pdu::C2HData(DataPdu {
                            cccid: cid,
                            ttag: 0,
                            datao,
                            datal: n,
                            last,
                            success: last && success,
                            data: Bytes::from(vec![0x66u8; n as usize]),
                        });
                        q.receive(&enc(&connected).to_bytes(&d));
                    }
                }
            }
            Some(Op::R2T {
                pick: p,
                r2to,
                r2tl,
            }) => {
                let cid = pick(&cmds, p);
                let (r2to, r2tl) = match cmds.get(&cid) {
                    // Mostly in range, so that data gets sent.
                    Some(c) if c.write_len > 0 && r2tl & 1 == 0 => {
                        let o = r2to % c.write_len;
                        (o, 1 + (r2tl >> 1) % (c.write_len - o))
                    }
                    _ => (r2to, r2tl),
                };
                let r = Pdu::R2T(R2t {
                    cccid: cid,
                    ttag: 7,
                    r2to,
                    r2tl,
                });
                q.receive(&enc(&connected).to_bytes(&r));
            }
            Some(Op::Term { fes }) => {
                let t = Pdu::C2HTermReq(TermReq {
                    fes: Fes::from_u16(fes),
                    fei: 0,
                    data: Bytes::new(),
                });
                q.receive(&PduEncoder::default().to_bytes(&t));
            }
            Some(Op::Submit { kind, len }) => {
                let len = len % (300 * 1024);
                let mut sqe = Sqe::rw(io_opcode::READ, 1, 0, 1, false);
                let data = match kind % 3 {
                    0 => HostData::None,
                    1 => {
                        sqe.opcode = io_opcode::WRITE;
                        HostData::ToController(Bytes::from(vec![0x42u8; len as usize]))
                    }
                    _ => HostData::FromController(len),
                };
                let (read_len, write_len) = match &data {
                    HostData::None => (0, 0),
                    HostData::ToController(b) => (
                        0,
                        if b.len() as u32 > max_icd {
                            b.len() as u32
                        } else {
                            0
                        },
                    ),
                    HostData::FromController(n) => (*n, 0),
                };
                if let Ok(cid) = q.submit(sqe, data) {
                    assert!(
                        cmds.insert(
                            cid,
                            Cmd {
                                read_len,
                                write_len,
                                received: 0
                            }
                        )
                        .is_none(),
                        "CID {cid} allocated twice"
                    );
                    assert!(connected.is_some() && !terminated);
                }
            }
            Some(Op::SetLimits { max_icd: m, depth }) => {
                q.set_limits(u32::from(m), u16::from(depth));
                max_icd = u32::from(m);
            }
        }
        // Events.
        while let Some(ev) = q.poll_event() {
            assert!(!terminated, "event after termination: {ev:?}");
            match ev {
                HostEvent::Connected {
                    digests,
                    cpda,
                    maxh2cdata,
                } => {
                    assert!(connected.is_none());
                    assert!(maxh2cdata >= 4096 && maxh2cdata % 4 == 0);
                    assert!(cpda <= 31);
                    connected = Some((digests, cpda, maxh2cdata));
                    check.set_negotiated(DecoderConfig {
                        hdgst: digests.header,
                        ddgst: digests.data,
                        rx_pda: (usize::from(cpda) + 1) * 4,
                        max_icd: u32::MAX,
                        max_data: maxh2cdata,
                    });
                }
                HostEvent::Completion(c) => {
                    let cmd = cmds
                        .remove(&c.cqe.cid)
                        .expect("completion for an unknown command");
                    let n: usize = c.data.iter().map(Bytes::len).sum();
                    assert!(n as u32 <= cmd.read_len);
                    assert_eq!(c.data_contiguous().len(), n);
                }
                HostEvent::Terminated { .. } => terminated = true,
            }
        }
        let tx = q.tx().take_all();
        if terminated && tx.is_empty() {
            continue;
        }
        check.feed(&tx);
        loop {
            match check.next_pdu() {
                Ok(Some(r)) => {
                    assert!(r.data_digest_ok);
                    match r.pdu {
                        Pdu::IcReq(_) => {}
                        Pdu::CapsuleCmd { sqe, data } => {
                            assert!(cmds.contains_key(&sqe.cid));
                            assert!(data.len() as u32 <= max_icd);
                            if !data.is_empty() {
                                assert_eq!(sqe.sgl1.length as usize, data.len());
                            }
                        }
                        Pdu::H2CData(d) => {
                            let (_, _, m) = connected.expect("H2CData before ICResp");
                            assert!(d.datal <= m);
                            assert!(cmds.contains_key(&d.cccid));
                            assert_eq!(d.ttag, 7);
                        }
                        Pdu::H2CTermReq(_) => assert!(terminated),
                        p => panic!("host sent {p:?}"),
                    }
                }
                Ok(None) => break,
                Err(e) => panic!("host output does not decode: {e:?}"),
            }
        }
        assert_eq!(check.buffered(), 0, "partial PDU sent");
        if !terminated {
            assert_eq!(q.outstanding(), cmds.len());
        }
    }
});
