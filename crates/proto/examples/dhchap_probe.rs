//! Interop probe for `nvmf_proto::auth` over real NVMe/TCP (blocking std sockets,
//! no digests): runs one DH-HMAC-CHAP transaction on an admin queue and reports.
//!
//! ```text
//! dhchap_probe host   ADDR SUBNQN HOSTNQN HOST_KEY [CTRL_KEY|-]
//!     connects to a target (Linux nvmet), does ICReq + Connect, then HostAuth
//!     with every hash and group offered; prints the outcome and exits 0 on Done.
//! dhchap_probe target ADDR SUBNQN HASH GROUP HOST_KEY [CTRL_KEY|-]
//!     accepts one connection (the Linux host: `nvme connect --dhchap-secret …`),
//!     answers Connect with ATR, runs ControllerAuth allowing only HASH (1-3)
//!     and GROUP (0-5), prints the outcome, exits 0 if authenticated.
//! ```
//!
//! Run in the Debian 13 guest of `shared/linux-nvme-vm/run-vm.sh --kernel
//! trixie` (`--extra target/release/examples/dhchap_probe` plus a guest script
//! that configures nvmet's `hosts/<nqn>/dhchap_{key,ctrl_key,hash,dhgroup}`),
//! it authenticated bidirectionally against Linux 6.12 nvmet for every hash ×
//! DH group, and the Linux host (nvme-cli 2.13, `--dhchap-secret` and
//! `--dhchap-ctrl-secret`) authenticated to it and logged "controller
//! authenticated" for every hash × DH group (docs/spec-facts.md §12).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;

use bytes::Bytes;
use nvmf_proto::auth::*;
use nvmf_proto::cqe::Cqe;
use nvmf_proto::fabrics::{
    connect_response_dw0, fctype, AuthCommand, ConnectCommand, ConnectData, CNTLID_DYNAMIC,
};
use nvmf_proto::status::Status;
use nvmf_proto::tcp::pdu::{DataPdu, IcReq, IcResp};
use nvmf_proto::tcp::{Decoder, DecoderConfig, Digests, Pdu, PduEncoder, Side};

struct Conn {
    s: TcpStream,
    dec: Decoder,
}

impl Conn {
    fn new(s: TcpStream, side: Side) -> Self {
        Self {
            s,
            dec: Decoder::new(side, DecoderConfig::default()),
        }
    }
    fn send(&mut self, p: &Pdu) {
        let b = PduEncoder::default().to_bytes(p);
        self.s.write_all(&b).expect("send");
    }
    fn recv(&mut self) -> Pdu {
        loop {
            match self.dec.next_pdu() {
                Ok(Some(r)) => return r.pdu,
                Ok(None) => {}
                Err(e) => panic!("decoder: {e:?}"),
            }
            let mut buf = [0u8; 65536];
            let n = self.s.read(&mut buf).expect("read");
            assert!(n > 0, "peer closed the connection");
            self.dec.feed(&buf[..n]);
        }
    }
}

fn key(s: &str) -> Option<DhchapSecret> {
    (s != "-").then(|| DhchapSecret::parse(s).expect("DHHC-1 key"))
}

fn host(args: &[String]) -> ExitCode {
    let [addr, subnqn, hostnqn, hkey, rest @ ..] = args else {
        eprintln!("usage: host ADDR SUBNQN HOSTNQN HOST_KEY [CTRL_KEY]");
        return ExitCode::from(2);
    };
    let mut c = Conn::new(TcpStream::connect(addr).expect("connect"), Side::Host);
    c.send(&Pdu::IcReq(IcReq {
        pfv: 0,
        hpda: 0,
        digests: Digests::default(),
        maxr2t: 0,
    }));
    let Pdu::IcResp(_) = c.recv() else {
        panic!("no ICResp")
    };
    c.dec.set_negotiated(DecoderConfig::default());
    let mut sqe = ConnectCommand {
        recfmt: 0,
        qid: 0,
        sqsize: 31,
        cattr: 0,
        kato: 0,
    }
    .to_sqe();
    sqe.cid = 1;
    let data = ConnectData {
        hostid: [0x42; 16],
        cntlid: CNTLID_DYNAMIC,
        subnqn: subnqn.clone(),
        hostnqn: hostnqn.clone(),
    };
    c.send(&Pdu::CapsuleCmd {
        sqe,
        data: Bytes::copy_from_slice(&data.encode()),
    });
    let Pdu::CapsuleResp(cqe) = c.recv() else {
        panic!("no Connect response")
    };
    println!("connect: status {} dw0 {:#010x}", cqe.status, cqe.dw0);
    if cqe.status != Status::SUCCESS || cqe.dw0 & nvmf_proto::fabrics::authreq::ATR == 0 {
        println!("FAIL: the target did not ask for authentication");
        return ExitCode::FAILURE;
    }
    let mut cfg = HostConfig::new(key(hkey).unwrap(), hostnqn, subnqn, 0, 0);
    cfg.ctrl_secret = rest.first().and_then(|k| key(k));
    let bidi = cfg.ctrl_secret.is_some();
    let mut auth = HostAuth::new(cfg);
    let mut cid = 2u16;
    loop {
        cid += 1;
        match auth.next_step() {
            Step::Send(b) => {
                let mut sqe = AuthCommand::dhchap(b.len() as u32).to_sqe(true);
                sqe.cid = cid;
                c.send(&Pdu::CapsuleCmd {
                    sqe,
                    data: Bytes::from(b),
                });
                let Pdu::CapsuleResp(cqe) = c.recv() else {
                    panic!("no Auth Send response")
                };
                if cqe.status != Status::SUCCESS {
                    auth.command_failed(cqe.status.to_field());
                }
            }
            Step::Receive(al) => {
                let mut sqe = AuthCommand::dhchap(al).to_sqe(false);
                sqe.cid = cid;
                c.send(&Pdu::CapsuleCmd {
                    sqe,
                    data: Bytes::new(),
                });
                let mut got = Vec::new();
                loop {
                    match c.recv() {
                        Pdu::C2HData(d) => {
                            got.resize((d.datao + d.datal) as usize, 0);
                            got[d.datao as usize..][..d.data.len()].copy_from_slice(&d.data);
                            if d.success {
                                break;
                            }
                        }
                        Pdu::CapsuleResp(cqe) => {
                            if cqe.status != Status::SUCCESS {
                                auth.command_failed(cqe.status.to_field());
                            }
                            break;
                        }
                        p => panic!("unexpected {p:?}"),
                    }
                }
                auth.received(&got);
            }
            Step::Done => {
                let (h, g) = auth.negotiated().unwrap();
                println!(
                    "PASS: authenticated with {h} / {g}{}",
                    if bidi {
                        ", controller verified (R2)"
                    } else {
                        ""
                    }
                );
                return ExitCode::SUCCESS;
            }
            Step::Failed(f) => {
                println!("FAIL: {f}");
                return ExitCode::FAILURE;
            }
        }
    }
}

fn target(args: &[String]) -> ExitCode {
    let [addr, subnqn, hash, group, hkey, rest @ ..] = args else {
        eprintln!("usage: target ADDR SUBNQN HASH GROUP HOST_KEY [CTRL_KEY]");
        return ExitCode::from(2);
    };
    let hash = HashId::from_u8(hash.parse().expect("hash id")).expect("hash 1-3");
    let group = DhGroup::from_u8(group.parse().expect("group id")).expect("group 0-5");
    let l = TcpListener::bind(addr).expect("bind");
    println!("listening on {addr}, {hash} / {group}");
    let (s, _) = l.accept().expect("accept");
    let mut c = Conn::new(s, Side::Controller);
    let Pdu::IcReq(_) = c.recv() else {
        panic!("no ICReq")
    };
    c.send(&Pdu::IcResp(IcResp {
        pfv: 0,
        cpda: 0,
        digests: Digests::default(),
        maxh2cdata: 131072,
    }));
    c.dec.set_negotiated(DecoderConfig::default());
    let mut auth: Option<ControllerAuth> = None;
    loop {
        let Pdu::CapsuleCmd { sqe, data } = c.recv() else {
            panic!("expected a command")
        };
        let mut cqe = Cqe::new(sqe.cid, Status::SUCCESS);
        match sqe.fctype() {
            fctype::CONNECT if sqe.opcode == 0x7F => {
                let d = ConnectData::decode(&data).expect("connect data");
                println!("connect from {}", d.hostnqn);
                let mut cfg = ControllerConfig::new(key(hkey).unwrap(), &d.hostnqn, subnqn, 0);
                cfg.ctrl_secret = rest.first().and_then(|k| key(k));
                cfg.hashes = vec![hash];
                cfg.dh_groups = vec![group];
                auth = Some(ControllerAuth::new(cfg));
                cqe.dw0 = connect_response_dw0(1, true);
            }
            fctype::AUTH_SEND if sqe.opcode == 0x7F => {
                let a = auth.as_mut().expect("Connect first");
                AuthCommand::from_sqe(&sqe)
                    .check_dhchap()
                    .expect("SECP/SPSP");
                if let Err(f) = a.handle_send(&data) {
                    println!("auth send: {f}");
                }
            }
            fctype::AUTH_RECV if sqe.opcode == 0x7F => {
                let a = auth.as_mut().expect("Connect first");
                let ac = AuthCommand::from_sqe(&sqe);
                ac.check_dhchap().expect("SECP/SPSP");
                let mut out = a.handle_receive(ac.length).expect("AL");
                // Transfer AL bytes, as nvmet does (the message, then zeros).
                out.resize(ac.length.min(65536) as usize, 0);
                c.send(&Pdu::C2HData(DataPdu {
                    cccid: sqe.cid,
                    ttag: 0,
                    datao: 0,
                    datal: out.len() as u32,
                    last: true,
                    success: false,
                    data: Bytes::from(out),
                }));
            }
            _ => {
                // The first command after authentication (Property Get CAP).
                let a = auth.as_ref().expect("Connect first");
                let ok = a.is_authenticated();
                println!(
                    "{}: host {} with {:?}; next command opcode {:#x} fctype {}",
                    if ok { "PASS" } else { "FAIL" },
                    if ok {
                        "authenticated"
                    } else {
                        "not authenticated"
                    },
                    a.negotiated(),
                    sqe.opcode,
                    sqe.fctype()
                );
                return if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
        }
        c.send(&Pdu::CapsuleResp(cqe));
        if let Some(a) = &auth {
            if a.is_finished() && a.failure().is_some() {
                println!("FAIL: {:?}", a.failure());
                return ExitCode::FAILURE;
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("host") => host(&args[1..]),
        Some("target") => target(&args[1..]),
        _ => {
            eprintln!("usage: dhchap_probe host|target …");
            ExitCode::from(2)
        }
    }
}
