//! A raw NVMe/TCP host connection for the checker: blocking std sockets, PDUs built
//! and parsed with nvmf-proto's sans-I/O encoder and decoder, and no recovery of any
//! kind, so that whatever the target sends (or fails to send) is seen as it is.
//! It can also write arbitrary bytes, for the robustness rules.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use nvmf_proto::cqe::Cqe;
use nvmf_proto::fabrics::{ConnectCommand, ConnectData, PropertyCommand};
use nvmf_proto::sqe::{SglDescriptor, Sqe};
use nvmf_proto::status::Status;
use nvmf_proto::tcp::pdu::{DataPdu, IcReq, IcResp, TermReq, PFV_1_0};
use nvmf_proto::tcp::{Decoder, DecoderConfig, Digests, FatalError, Pdu, PduEncoder, Side};

/// Why no PDU came.
#[derive(Debug)]
pub enum RecvError {
    /// The target closed (or reset) the connection.
    Closed,
    /// Nothing arrived within the timeout.
    Timeout,
    /// The target sent bytes our decoder refuses (a malformed PDU).
    Malformed(FatalError),
    /// Another socket error.
    Io(std::io::Error),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => write!(f, "connection closed by the target"),
            Self::Timeout => write!(f, "no answer within the timeout"),
            Self::Malformed(e) => write!(f, "malformed PDU from the target: {e}"),
            Self::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// A command's outcome as seen on the wire.
#[derive(Debug, Clone)]
pub struct CmdResult {
    /// The completion (synthesised as success if the last C2HData had SUCCESS set).
    pub cqe: Cqe,
    /// Data received in C2HData PDUs, placed at their DATAO.
    pub data: Vec<u8>,
    /// C2HData PDUs received.
    pub c2h_pdus: usize,
    /// R2Ts received.
    pub r2ts: usize,
    /// Every data digest received matched.
    pub data_digests_ok: bool,
    /// Data PDU problems seen (offsets out of order, data beyond the buffer...).
    pub anomalies: Vec<String>,
}

/// One TCP connection to the target.
pub struct Conn {
    s: TcpStream,
    dec: Decoder,
    enc: PduEncoder,
    next_cid: u16,
    /// MAXH2CDATA of the ICResp (how much one H2CData may carry).
    pub maxh2cdata: u32,
    /// Digests negotiated.
    pub digests: Digests,
    /// Header digests received and checked (all valid, else the decoder fails).
    pub hdgsts_seen: usize,
    /// Data digests received and checked.
    pub ddgsts_seen: usize,
}

impl Conn {
    /// Opens a TCP connection (no ICReq yet).
    pub fn open(addr: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Ok(Self {
            s,
            dec: Decoder::new(Side::Host, DecoderConfig::default()),
            enc: PduEncoder::default(),
            next_cid: 1,
            maxh2cdata: 4096,
            digests: Digests::default(),
            hdgsts_seen: 0,
            ddgsts_seen: 0,
        })
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.s.write_all(b)
    }

    /// Encodes and sends a PDU with the negotiated digests and alignment.
    pub fn send(&mut self, pdu: &Pdu) -> std::io::Result<()> {
        let b = self.enc.to_bytes(pdu);
        self.s.write_all(&b)
    }

    /// The encoder in use (for building PDUs to corrupt).
    pub fn encoder(&self) -> PduEncoder {
        self.enc
    }

    /// Receives the next whole PDU.
    pub fn recv(&mut self) -> Result<(Pdu, bool), RecvError> {
        let mut buf = [0u8; 65536];
        loop {
            match self.dec.next_pdu() {
                Ok(Some(r)) => {
                    if self.dec.config().hdgst && r.pdu.pdu_type().may_have_hdgst() {
                        self.hdgsts_seen += 1;
                    }
                    if self.dec.config().ddgst && matches!(r.pdu, Pdu::C2HData(_)) {
                        self.ddgsts_seen += 1;
                    }
                    return Ok((r.pdu, r.data_digest_ok));
                }
                Ok(None) => {}
                Err(e) => return Err(RecvError::Malformed(e)),
            }
            match self.s.read(&mut buf) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => self.dec.feed(buf.get(..n).unwrap_or(&[])),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(RecvError::Timeout)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Err(RecvError::Closed)
                }
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }

    /// Sends ICReq (PFV 0, HPDA 0, MAXR2T 0, `digests`) and returns the PDU the
    /// target answers with; on an ICResp the connection switches to the
    /// negotiated digests and CPDA (NVMe/TCP 1.0 Figures 15-16).
    pub fn icreq(&mut self, digests: Digests) -> Result<IcResp, String> {
        self.send(&Pdu::IcReq(IcReq {
            pfv: PFV_1_0,
            hpda: 0,
            digests,
            maxr2t: 0,
        }))
        .map_err(|e| format!("sending ICReq: {e}"))?;
        match self.recv() {
            Ok((Pdu::IcResp(r), _)) => {
                self.negotiate(&r);
                Ok(r)
            }
            Ok((Pdu::C2HTermReq(t), _)) => Err(format!(
                "C2HTermReq FES {:#x} FEI {} instead of ICResp",
                t.fes.to_u16(),
                t.fei
            )),
            Ok((p, _)) => Err(format!("{:?} instead of ICResp", p.pdu_type())),
            Err(e) => Err(format!("no ICResp: {e}")),
        }
    }

    fn negotiate(&mut self, r: &IcResp) {
        self.digests = r.digests;
        self.maxh2cdata = r.maxh2cdata.max(4);
        self.enc = PduEncoder::negotiated(r.digests, r.cpda);
        self.dec.set_negotiated(DecoderConfig {
            hdgst: r.digests.header,
            ddgst: r.digests.data,
            rx_pda: 4,
            max_icd: 0,
            max_data: 64 << 20,
        });
    }

    /// A fresh command identifier.
    pub fn cid(&mut self) -> u16 {
        let c = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        c
    }

    /// Runs one command: `out` is sent in the capsule when `in_capsule`, else
    /// through R2T/H2CData; `in_len` bytes are expected back in C2HData.
    /// Runs a command that returns `len` bytes to the host: its data, or
    /// what went wrong (the failure, or the status if not success).
    pub fn data_in(&mut self, sqe: Sqe, len: usize) -> Result<Vec<u8>, String> {
        match self.command(sqe, &[], false, len) {
            Ok(res) if res.cqe.status.is_success() => Ok(res.data),
            Ok(res) => Err(status_text(res.cqe.status)),
            Err(e) => Err(e),
        }
    }

    pub fn command(
        &mut self,
        mut sqe: Sqe,
        out: &[u8],
        in_capsule: bool,
        in_len: usize,
    ) -> Result<CmdResult, String> {
        let cid = self.cid();
        sqe.cid = cid;
        if !out.is_empty() {
            sqe.sgl1 = if in_capsule {
                SglDescriptor::in_capsule(out.len() as u32)
            } else {
                SglDescriptor::transport(out.len() as u32)
            };
        } else {
            sqe.sgl1 = SglDescriptor::transport(in_len as u32);
        }
        let data = if in_capsule {
            Bytes::copy_from_slice(out)
        } else {
            Bytes::new()
        };
        self.send(&Pdu::CapsuleCmd { sqe, data })
            .map_err(|e| format!("sending the command: {e}"))?;
        let mut res = CmdResult {
            cqe: Cqe::default(),
            data: vec![0; in_len],
            c2h_pdus: 0,
            r2ts: 0,
            data_digests_ok: true,
            anomalies: Vec::new(),
        };
        let mut received = 0usize;
        loop {
            let (pdu, dd_ok) = self.recv().map_err(|e| e.to_string())?;
            res.data_digests_ok &= dd_ok;
            match pdu {
                Pdu::CapsuleResp(cqe) => {
                    if cqe.cid != cid {
                        return Err(format!("CapsuleResp for CID {} (sent {cid})", cqe.cid));
                    }
                    res.cqe = cqe;
                    return Ok(res);
                }
                Pdu::C2HData(d) => {
                    res.c2h_pdus += 1;
                    if d.cccid != cid {
                        res.anomalies
                            .push(format!("C2HData CCCID {} (sent {cid})", d.cccid));
                    }
                    let off = d.datao as usize;
                    if off != received {
                        res.anomalies
                            .push(format!("C2HData DATAO {off}, expected {received}"));
                    }
                    match res.data.get_mut(off..off + d.data.len()) {
                        Some(dst) => dst.copy_from_slice(&d.data),
                        None => res.anomalies.push(format!(
                            "C2HData {}+{} beyond the {in_len}-byte buffer",
                            off,
                            d.data.len()
                        )),
                    }
                    received = off + d.data.len();
                    if d.success {
                        res.cqe = Cqe::new(cid, Status::SUCCESS);
                        return Ok(res);
                    }
                }
                Pdu::R2T(r) => {
                    res.r2ts += 1;
                    if r.cccid != cid {
                        return Err(format!("R2T for CID {} (sent {cid})", r.cccid));
                    }
                    let (o, l) = (r.r2to as usize, r.r2tl as usize);
                    let Some(chunk) = out.get(o..o + l) else {
                        return Err(format!("R2T {o}+{l} beyond the {} bytes", out.len()));
                    };
                    let step = (self.maxh2cdata as usize).max(4);
                    let mut pos = 0;
                    while pos < chunk.len() {
                        let n = step.min(chunk.len() - pos);
                        let last = pos + n == chunk.len();
                        self.send(&Pdu::H2CData(DataPdu {
                            cccid: cid,
                            ttag: r.ttag,
                            datao: (o + pos) as u32,
                            datal: n as u32,
                            last,
                            success: false,
                            data: Bytes::copy_from_slice(chunk.get(pos..pos + n).unwrap_or(&[])),
                        }))
                        .map_err(|e| format!("sending H2CData: {e}"))?;
                        pos += n;
                    }
                }
                Pdu::C2HTermReq(t) => return Err(term_text(&t)),
                other => return Err(format!("unexpected {:?}", other.pdu_type())),
            }
        }
    }

    /// Fabrics Connect (NVMe-oF 1.1 §3.3) on this connection.
    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        &mut self,
        qid: u16,
        sqsize: u16,
        kato: u32,
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
        hostid: [u8; 16],
    ) -> Result<Cqe, String> {
        let sqe = ConnectCommand {
            recfmt: 0,
            qid,
            sqsize,
            cattr: 0,
            kato,
        }
        .to_sqe();
        let data = ConnectData {
            hostid,
            cntlid,
            subnqn: subnqn.into(),
            hostnqn: hostnqn.into(),
        }
        .encode();
        // Connect data always goes in the capsule (NVMe/TCP 1.0: 8 KiB on the admin
        // queue, IOCCSZ on I/O queues, both larger than 1024 bytes).
        Ok(self.command(sqe, &data, true, 0)?.cqe)
    }

    /// Property Get; the value or the failing status.
    pub fn prop_get(&mut self, offset: u32, eight: bool) -> Result<Result<u64, Status>, String> {
        let c = self
            .command(PropertyCommand::get_sqe(offset, eight), &[], false, 0)?
            .cqe;
        Ok(if c.status.is_success() {
            Ok(if eight {
                c.result64()
            } else {
                u64::from(c.dw0)
            })
        } else {
            Err(c.status)
        })
    }

    /// Property Set.
    pub fn prop_set(&mut self, offset: u32, eight: bool, v: u64) -> Result<Status, String> {
        Ok(self
            .command(PropertyCommand::set_sqe(offset, eight, v), &[], false, 0)?
            .cqe
            .status)
    }
}

/// "C2HTermReq FES x FEI y" for messages.
pub fn term_text(t: &TermReq) -> String {
    format!(
        "C2HTermReq FES {:#04x} ({}) FEI {}",
        t.fes.to_u16(),
        fes_name(t.fes.to_u16()),
        t.fei
    )
}

/// The spec's name for a FES value (NVMe/TCP 1.0 Figure 17).
pub fn fes_name(v: u16) -> &'static str {
    match v {
        1 => "Invalid PDU Header Field",
        2 => "PDU Sequence Error",
        3 => "Header Digest Error",
        4 => "Data Transfer Out of Range",
        5 => "Data Transfer Limit Exceeded",
        6 => "Unsupported Parameter",
        _ => "reserved",
    }
}

/// "SCT/SC (name)" for messages.
pub fn status_text(s: Status) -> String {
    format!(
        "status SCT {:#x} SC {:#04x} ({})",
        s.sct,
        s.sc,
        s.name().unwrap_or("unknown")
    )
}
