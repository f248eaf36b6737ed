//! Arbitrary input into a ControllerQueue: raw bytes and well-formed PDUs built
//! from fuzz data, interleaved with the calls an application makes after each event
//! (request_data, send_data, complete, set_connected), chosen by the input.
//!
//! Oracles: no panic; everything the controller sends decodes cleanly with a host
//! decoder (valid headers, digests, PDO alignment to the host's HPDA); nothing is
//! sent after termination; `outstanding()` matches the commands the harness saw
//! and has not completed; no CID is handed up twice while outstanding.
#![no_main]

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nvmf_proto::cqe::Cqe;
use nvmf_proto::fabrics::ConnectCommand;
use nvmf_proto::sqe::{DataDirection, SglDescriptor, Sqe};
use nvmf_proto::status::Status;
use nvmf_proto::tcp::pdu::{DataPdu, IcReq, TermReq};
use nvmf_proto::tcp::{
    ControllerEvent, ControllerQueue, ControllerQueueConfig, Decoder, DecoderConfig, Digests, Fes,
    Pdu, PduEncoder, Side,
};

#[path = "common.rs"]
mod common;
use common::Reader;

enum Op {
    Raw(Vec<u8>),
    IcReq {
        pfv: u8,
        hpda: u8,
        dgst: u8,
    },
    Capsule {
        cid: u16,
        opcode: u8,
        sgl: u8,
        len: u16,
        icd: u16,
    },
    H2C {
        pick: u8,
        wrong_ttag: bool,
        datao: u16,
        len: u16,
        last: bool,
    },
    H2CAuto {
        pick: u8,
        max: u16,
    },
    Term {
        fes: u16,
        fei: u32,
        len: u8,
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
    SetConnected {
        qid: u16,
        sq_size: u16,
        sqfc: bool,
        max_icd: u16,
    },
    Auto(bool),
}

impl Op {
    /// One operation: a tag byte, then its fields (see `make-corpus.py`).
    fn read(r: &mut Reader) -> Op {
        match r.u8() % 11 {
            0 => {
                let n = r.u16();
                Op::Raw(r.bytes(usize::from(n)).to_vec())
            }
            1 => Op::IcReq {
                pfv: r.u8(),
                hpda: r.u8(),
                dgst: r.u8(),
            },
            2 => Op::Capsule {
                cid: r.u16(),
                opcode: r.u8(),
                sgl: r.u8(),
                len: r.u16(),
                icd: r.u16(),
            },
            3 => Op::H2C {
                pick: r.u8(),
                wrong_ttag: r.bool(),
                datao: r.u16(),
                len: r.u16(),
                last: r.bool(),
            },
            4 => Op::H2CAuto {
                pick: r.u8(),
                max: r.u16(),
            },
            5 => Op::Term {
                fes: r.u16(),
                fei: r.u32(),
                len: r.u8(),
            },
            6 => Op::RequestData { pick: r.u8() },
            7 => Op::SendData {
                pick: r.u8(),
                len: r.u32(),
                success: r.bool(),
            },
            8 => Op::Complete {
                pick: r.u8(),
                status: r.u16(),
            },
            9 => Op::SetConnected {
                qid: r.u16(),
                sq_size: r.u16(),
                sqfc: r.bool(),
                max_icd: r.u16(),
            },
            _ => Op::Auto(r.bool()),
        }
    }
}

struct Harness {
    q: ControllerQueue,
    /// Host-side decoder checking everything the controller sends.
    check: Decoder,
    check_negotiated: bool,
    hpda: Option<u8>,
    digests: Digests,
    connected: bool,
    terminated: bool,
    outstanding: HashMap<u16, u32>,
    /// TTAG, offset sent so far and length of each R2T seen in the output.
    r2t: HashMap<u16, (u16, u32, u32)>,
    /// Commands the app asked write data for and has not got or completed.
    requested: HashSet<u16>,
    /// Act as a well-behaved application: answer every command at once.
    auto: bool,
    /// Commands (and finished write transfers) waiting for the automatic app.
    todo: Vec<(Sqe, bool)>,
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

    fn enc(&self) -> PduEncoder {
        if self.connected {
            PduEncoder::negotiated(self.digests, self.q.config().cpda)
        } else {
            PduEncoder::default()
        }
    }

    /// The automatic application's answers.
    fn app(&mut self) -> bool {
        let todo = std::mem::take(&mut self.todo);
        if !self.auto || self.terminated {
            return false;
        }
        let acted = !todo.is_empty();
        for (sqe, data_done) in todo {
            let cid = sqe.cid;
            let Some(&len) = self.outstanding.get(&cid) else {
                continue;
            };
            if !data_done && sqe.opcode == 0x7f && sqe.fctype() == 1 {
                let c = ConnectCommand::from_sqe(&sqe);
                self.q.set_connected(
                    c.qid,
                    c.sqsize.saturating_add(1),
                    !c.sq_flow_control_disabled(),
                    8192,
                );
            }
            if !data_done && len > 0 && sqe.data_direction() == DataDirection::HostToController {
                if self.q.request_data(cid).is_ok() {
                    self.requested.insert(cid);
                }
                continue;
            }
            if !data_done && len > 0 {
                match self
                    .q
                    .send_data(cid, Bytes::from(vec![0xc3u8; len as usize]), true)
                {
                    Ok(true) => {
                        self.outstanding.remove(&cid);
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => panic!("send_data of the whole buffer failed: {e}"),
                }
            }
            self.outstanding.remove(&cid);
            self.r2t.remove(&cid);
            self.requested.remove(&cid);
            self.q.complete(Cqe::new(cid, Status::SUCCESS));
        }
        acted
    }

    fn after(&mut self) {
        self.events();
        while self.app() {
            self.events();
        }
        self.check_output();
    }

    fn events(&mut self) {
        while let Some(ev) = self.q.poll_event() {
            assert!(!self.terminated, "event after termination: {ev:?}");
            match ev {
                ControllerEvent::Connected { digests, hpda, .. } => {
                    assert!(!self.connected);
                    self.connected = true;
                    self.digests = digests;
                    self.hpda = Some(hpda);
                }
                ControllerEvent::Command(c) => {
                    assert!(
                        self.outstanding.insert(c.sqe.cid, c.buffer_len).is_none(),
                        "CID {} handed up twice",
                        c.sqe.cid
                    );
                    self.todo.push((c.sqe, false));
                }
                ControllerEvent::Data { cid, data } => {
                    assert!(self.outstanding.contains_key(&cid));
                    let n: usize = data.iter().map(Bytes::len).sum();
                    assert_eq!(n as u32, self.outstanding[&cid], "Data length");
                    self.r2t.remove(&cid);
                    assert!(self.requested.remove(&cid), "Data without request_data");
                    let sqe = Sqe {
                        cid,
                        ..Sqe::default()
                    };
                    self.todo.push((sqe, true));
                }
                ControllerEvent::Aborted { cid } => {
                    assert!(self.outstanding.remove(&cid).is_some());
                    self.r2t.remove(&cid);
                    self.requested.remove(&cid);
                }
                // An admin command reused an outstanding AER's CID: the AER is
                // forgotten (never completed); the new command follows.
                ControllerEvent::Abandoned { cid } => {
                    assert!(
                        self.outstanding.remove(&cid).is_some(),
                        "abandoned CID {cid} was not outstanding"
                    );
                    self.todo.retain(|(sqe, _)| sqe.cid != cid);
                    self.r2t.remove(&cid);
                    self.requested.remove(&cid);
                }
                ControllerEvent::Terminated { .. } => self.terminated = true,
            }
        }
    }

    fn check_output(&mut self) {
        let tx = self.q.tx().take_all();
        if self.terminated && tx.is_empty() {
            return;
        }
        self.check.feed(&tx);
        loop {
            match self.check.next_pdu() {
                Ok(Some(r)) => {
                    assert!(r.data_digest_ok, "bad data digest sent");
                    match r.pdu {
                        Pdu::IcResp(s) => {
                            assert!(!self.check_negotiated);
                            let hpda = self.hpda.expect("ICResp without Connected");
                            assert_eq!(s.digests, self.digests);
                            self.check.set_negotiated(DecoderConfig {
                                hdgst: s.digests.header,
                                ddgst: s.digests.data,
                                rx_pda: (usize::from(hpda) + 1) * 4,
                                max_icd: 0,
                                max_data: u32::MAX,
                            });
                            self.check_negotiated = true;
                        }
                        Pdu::R2T(r) => {
                            assert!(self.outstanding.contains_key(&r.cccid));
                            assert!(
                                self.requested.contains(&r.cccid),
                                "R2T for command {} that did not ask for data",
                                r.cccid
                            );
                            assert!(r.r2tl > 0);
                            assert_eq!(r.r2to, 0);
                            assert_eq!(r.r2tl, self.outstanding[&r.cccid]);
                            self.r2t.insert(r.cccid, (r.ttag, 0, r.r2tl));
                        }
                        Pdu::C2HData(d) => {
                            assert!(d.data.len() as u32 <= self.q.config().max_c2h_pdu.max(4096));
                        }
                        Pdu::CapsuleResp(_) => {}
                        Pdu::C2HTermReq(_) => assert!(self.terminated),
                        p => panic!("controller sent {p:?}"),
                    }
                }
                Ok(None) => break,
                Err(e) => panic!("controller output does not decode: {e:?}"),
            }
        }
        assert_eq!(self.check.buffered(), 0, "partial PDU sent");
        if !self.terminated {
            assert_eq!(self.q.outstanding(), self.outstanding.len());
        }
    }
}

// Input: allowed digests u8, CPDA u8, MAX_ICD u16, MAXH2CDATA/4096-1 u8,
// max C2H PDU u32, initial depth u8, max pending R2T bytes u32, auto-app u8, then ops.
fuzz_target!(|input: &[u8]| {
    let mut r = Reader::new(input);
    let cfg = ControllerQueueConfig {
        allowed_digests: Digests::from_u8(r.u8()),
        cpda: r.u8() % 32,
        max_icd: u32::from(r.u16()),
        maxh2cdata: (u32::from(r.u8() % 64) + 1) * 4096,
        max_c2h_pdu: r.u32() % (1 << 20),
        initial_queue_depth: u16::from(r.u8()),
        max_pending_r2t_bytes: r.u32() % (4 << 20),
        max_data_len: 1 << 20,
    };
    let auto = r.bool();
    let mut h = Harness {
        q: ControllerQueue::new(cfg),
        check: Decoder::new(Side::Host, DecoderConfig::default()),
        check_negotiated: false,
        hpda: None,
        digests: Digests::default(),
        connected: false,
        terminated: false,
        outstanding: HashMap::new(),
        r2t: HashMap::new(),
        requested: HashSet::new(),
        auto,
        todo: Vec::new(),
    };
    let mut completed: HashSet<u16> = HashSet::new();
    let mut n = 0;
    while !r.is_empty() && n < 512 {
        n += 1;
        match Op::read(&mut r) {
            Op::Raw(b) => h.q.receive(&b),
            Op::IcReq { pfv, hpda, dgst } => {
                let p = Pdu::IcReq(IcReq {
                    pfv: u16::from(pfv % 2),
                    hpda: hpda % 33,
                    digests: Digests::from_u8(dgst),
                    maxr2t: 0,
                });
                h.q.receive(&PduEncoder::default().to_bytes(&p));
            }
            Op::Capsule {
                cid,
                opcode,
                sgl,
                len,
                icd,
            } => {
                let mut sqe = Sqe::new(opcode);
                sqe.cid = cid;
                let icd = usize::from(icd % 9000);
                sqe.sgl1 = match sgl % 4 {
                    0 => SglDescriptor::in_capsule(icd as u32),
                    1 => SglDescriptor::transport(u32::from(len)),
                    2 => SglDescriptor::transport(0),
                    _ => SglDescriptor {
                        address: u64::from(len),
                        length: u32::from(len),
                        reserved: [0; 3],
                        type_byte: sgl,
                    },
                };
                let data = if sgl % 4 == 0 {
                    vec![0xa5u8; icd]
                } else {
                    Vec::new()
                };
                let p = Pdu::CapsuleCmd {
                    sqe,
                    data: Bytes::from(data),
                };
                h.q.receive(&h.enc().to_bytes(&p));
            }
            Op::H2C {
                pick,
                wrong_ttag,
                datao,
                len,
                last,
            } => {
                let cid = h.pick(pick);
                let ttag = h.r2t.get(&cid).map_or(0, |r| r.0) ^ u16::from(wrong_ttag);
                let p = Pdu::H2CData(DataPdu {
                    cccid: cid,
                    ttag,
                    datao: u32::from(datao),
                    datal: u32::from(len),
                    last,
                    success: false,
                    data: Bytes::from(vec![0x5au8; usize::from(len)]),
                });
                h.q.receive(&h.enc().to_bytes(&p));
            }
            Op::H2CAuto { pick, max } => {
                // A well-behaved host answering an R2T, in PDUs of at most `max`.
                let cid = h.pick(pick);
                if let Some(&(ttag, sent, end)) = h.r2t.get(&cid) {
                    let n = (end - sent)
                        .min(u32::from(max).max(1))
                        .min(h.q.config().maxh2cdata);
                    let p = Pdu::H2CData(DataPdu {
                        cccid: cid,
                        ttag,
                        datao: sent,
                        datal: n,
                        last: sent + n == end,
                        success: false,
                        data: Bytes::from(vec![0x3cu8; n as usize]),
                    });
                    h.r2t.insert(cid, (ttag, sent + n, end));
                    h.q.receive(&h.enc().to_bytes(&p));
                }
            }
            Op::Term { fes, fei, len } => {
                let p = Pdu::H2CTermReq(TermReq {
                    fes: Fes::from_u16(fes),
                    fei,
                    data: Bytes::from(vec![0u8; usize::from(len % 160)]),
                });
                h.q.receive(&PduEncoder::default().to_bytes(&p));
            }
            Op::RequestData { pick } => {
                let cid = h.pick(pick);
                if h.q.request_data(cid).is_ok() {
                    h.requested.insert(cid);
                }
            }
            Op::SendData { pick, len, success } => {
                let cid = h.pick(pick);
                let len = (len % (1 << 20)) as usize;
                if let Ok(true) = h.q.send_data(cid, Bytes::from(vec![0x11u8; len]), success) {
                    assert!(h.outstanding.remove(&cid).is_some());
                    h.requested.remove(&cid);
                    completed.insert(cid);
                }
            }
            Op::Complete { pick, status } => {
                let cid = h.pick(pick);
                let was = h.outstanding.remove(&cid).is_some();
                h.r2t.remove(&cid);
                h.requested.remove(&cid);
                h.q.complete(Cqe::new(cid, Status::from_field(status)));
                if was {
                    completed.insert(cid);
                }
            }
            Op::SetConnected {
                qid,
                sq_size,
                sqfc,
                max_icd,
            } => {
                h.q.set_connected(qid, sq_size, sqfc, u32::from(max_icd));
            }
            Op::Auto(on) => h.auto = on,
        }
        h.after();
        if h.terminated {
            // Nothing more may leave once the connection is over.
            assert!(h.q.send_data(0, Bytes::from_static(b"x"), true).is_err());
            assert!(h.q.request_data(0).is_err());
            h.q.complete(Cqe::new(0, Status::SUCCESS));
            h.q.receive(&[0u8; 8]);
            assert!(h.q.poll_event().is_none());
            assert!(h.q.tx().take_all().is_empty());
        }
    }
});
