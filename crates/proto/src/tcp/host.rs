//! The host end of an NVMe/TCP queue pair, without I/O (NVMe/TCP 1.0 §3.3-3.5).
//!
//! [`HostQueue::new`] queues the ICReq; once [`HostEvent::Connected`] is reported,
//! [`HostQueue::submit`] sends commands: write data goes in the capsule when it fits
//! the in-capsule limit, otherwise it waits for the controller's R2T and leaves in
//! H2CData PDUs of at most MAXH2CDATA; read data is collected from C2HData.
//! Completions come back as [`HostEvent::Completion`] with the data.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::decoder::{Decoder, DecoderConfig, Received, Side};
use super::error::FatalError;
use super::idmap::CidMap;
use super::pdu::*;
use super::tx::TxQueue;
use crate::cqe::Cqe;
use crate::sqe::{SglDescriptor, Sqe};
use crate::status::Status;

/// Options of a host queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostQueueConfig {
    /// Digests to ask for.
    pub digests: Digests,
    /// Host PDU data alignment to ask for (0's based dwords).
    pub hpda: u8,
    /// MAXR2T to announce (0's based).
    pub maxr2t: u32,
    /// Largest in-capsule data to send (8192 on admin queues; from IOCCSZ on I/O queues).
    pub max_icd: u32,
    /// Largest C2HData PDU accepted.
    pub max_c2h_data: u32,
    /// Most commands outstanding at once (the SQ size, 1-based).
    pub queue_depth: u16,
}

impl Default for HostQueueConfig {
    fn default() -> Self {
        Self {
            digests: Digests::default(),
            hpda: 0,
            maxr2t: 0,
            max_icd: 8192,
            max_c2h_data: 16 << 20,
            queue_depth: 32,
        }
    }
}

/// Data that goes with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostData {
    /// No data.
    None,
    /// Data to the controller (a write).
    ToController(Bytes),
    /// A buffer of this many bytes to receive from the controller (a read).
    FromController(u32),
}

/// A completed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The completion entry (synthesised with success status for C2HData SUCCESS).
    pub cqe: Cqe,
    /// Data received for a read, in order (no copy).
    pub data: Vec<Bytes>,
}

impl Completion {
    /// The read data as one buffer.
    pub fn data_contiguous(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.data.iter().map(Bytes::len).sum());
        for c in &self.data {
            v.extend_from_slice(c);
        }
        v
    }
}

/// What the host queue reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// ICResp received and accepted.
    Connected {
        /// Digests in force.
        digests: Digests,
        /// Controller's PDU data alignment.
        cpda: u8,
        /// Largest H2CData PDU the controller accepts.
        maxh2cdata: u32,
    },
    /// A command completed.
    Completion(Completion),
    /// The connection is over.
    Terminated {
        /// Why.
        reason: String,
        /// The fatal error status, if one was sent or received.
        fes: Option<Fes>,
    },
}

/// Why a command could not be submitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// As many commands as the queue holds are outstanding; wait for a completion.
    #[error("the submission queue is full ({0} commands outstanding)")]
    QueueFull(u16),
    /// The connection is not initialised yet.
    #[error("the connection is not initialised yet")]
    NotConnected,
    /// The connection has ended.
    #[error("the connection is terminated")]
    Terminated,
    /// Data larger than a 32-bit SGL length.
    #[error("data of {0} bytes is too large for one command")]
    TooLarge(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitIcResp,
    Ready,
    Closed,
}

#[derive(Debug)]
struct Cmd {
    write: Option<Bytes>,
    read_len: u32,
    received: u32,
    chunks: Vec<Bytes>,
    digest_bad: bool,
}

/// The host end of one NVMe/TCP connection.
#[derive(Debug)]
pub struct HostQueue {
    cfg: HostQueueConfig,
    state: State,
    decoder: Decoder,
    enc: PduEncoder,
    maxh2cdata: u32,
    tx: TxQueue,
    events: VecDeque<HostEvent>,
    cmds: CidMap<Cmd>,
    next_cid: u16,
    sq_head: u16,
}

impl HostQueue {
    /// A queue that has queued its ICReq for sending.
    pub fn new(cfg: HostQueueConfig) -> Self {
        let mut tx = TxQueue::default();
        let req = IcReq {
            pfv: PFV_1_0,
            hpda: cfg.hpda.min(31),
            digests: cfg.digests,
            maxr2t: cfg.maxr2t,
        };
        tx.push_pdu(&PduEncoder::default(), Pdu::IcReq(req));
        let dcfg = DecoderConfig {
            max_data: cfg.max_c2h_data,
            ..DecoderConfig::default()
        };
        Self {
            cfg,
            state: State::AwaitIcResp,
            decoder: Decoder::new(Side::Host, dcfg),
            enc: PduEncoder::default(),
            maxh2cdata: 4096,
            tx,
            events: VecDeque::new(),
            cmds: CidMap::default(),
            next_cid: 0,
            sq_head: 0,
        }
    }

    /// Sets the in-capsule data limit (from IOCCSZ) and the queue depth after Connect.
    pub fn set_limits(&mut self, max_icd: u32, queue_depth: u16) {
        self.cfg.max_icd = max_icd;
        self.cfg.queue_depth = queue_depth.max(1);
    }

    /// True once ICResp was accepted and the connection is still up.
    pub fn is_connected(&self) -> bool {
        self.state == State::Ready
    }

    /// True once the connection has ended.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Closed
    }

    /// Commands outstanding.
    pub fn outstanding(&self) -> usize {
        self.cmds.len()
    }

    /// Room for more commands.
    pub fn has_room(&self) -> bool {
        self.cmds.len() < usize::from(self.cfg.queue_depth)
    }

    /// The SQ head last reported by the controller.
    pub fn sq_head(&self) -> u16 {
        self.sq_head
    }

    /// Outgoing bytes.
    pub fn tx(&mut self) -> &mut TxQueue {
        &mut self.tx
    }

    /// The receive buffer: read into it, then call [`Self::process`].
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        self.decoder.buffer_mut()
    }

    /// A hint for how many bytes to read next.
    pub fn wanted(&self) -> usize {
        self.decoder.wanted()
    }

    /// Appends received bytes and processes them.
    pub fn receive(&mut self, data: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.decoder.feed(data);
        self.process();
    }

    /// Processes the receive buffer.
    pub fn process(&mut self) {
        while self.state != State::Closed {
            match self.decoder.next_pdu() {
                Ok(Some(r)) => {
                    if let Err(e) = self.handle(r) {
                        self.fail(e);
                    }
                }
                Ok(None) => break,
                Err(e) => self.fail(e),
            }
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<HostEvent> {
        self.events.pop_front()
    }

    /// Ends the connection, queuing an H2CTermReq when the error has a status.
    pub fn fail(&mut self, e: FatalError) {
        if self.state == State::Closed {
            return;
        }
        if let Some(fes) = e.fes {
            let p = Pdu::H2CTermReq(TermReq {
                fes,
                fei: e.fei,
                data: e.header.clone(),
            });
            self.tx.push_pdu(&PduEncoder::default(), p);
        }
        self.state = State::Closed;
        self.events.push_back(HostEvent::Terminated {
            reason: e.reason,
            fes: e.fes,
        });
    }

    /// Takes every outstanding command back (after the connection ended), so the
    /// caller can fail or retry them.
    pub fn drain_outstanding(&mut self) -> Vec<u16> {
        let v: Vec<u16> = self.cmds.keys().copied().collect();
        self.cmds.clear();
        v
    }

    fn alloc_cid(&mut self) -> u16 {
        loop {
            let c = self.next_cid;
            self.next_cid = self.next_cid.wrapping_add(1);
            if !self.cmds.contains_key(&c) {
                return c;
            }
        }
    }

    /// Sends a command; the CID in `sqe` is replaced by one this queue allocates,
    /// which is returned. The SGL is set for the data given.
    pub fn submit(&mut self, mut sqe: Sqe, data: HostData) -> Result<u16, SubmitError> {
        match self.state {
            State::AwaitIcResp => return Err(SubmitError::NotConnected),
            State::Closed => return Err(SubmitError::Terminated),
            State::Ready => {}
        }
        if !self.has_room() {
            return Err(SubmitError::QueueFull(self.cfg.queue_depth));
        }
        let cid = self.alloc_cid();
        sqe.cid = cid;
        let mut icd = Bytes::new();
        let cmd = match data {
            HostData::None => {
                sqe.sgl1 = SglDescriptor::transport(0);
                Cmd {
                    write: None,
                    read_len: 0,
                    received: 0,
                    chunks: Vec::new(),
                    digest_bad: false,
                }
            }
            HostData::ToController(d) => {
                let len = u32::try_from(d.len()).map_err(|_| SubmitError::TooLarge(d.len()))?;
                if len <= self.cfg.max_icd {
                    sqe.sgl1 = SglDescriptor::in_capsule(len);
                    icd = d;
                    Cmd {
                        write: None,
                        read_len: 0,
                        received: 0,
                        chunks: Vec::new(),
                        digest_bad: false,
                    }
                } else {
                    sqe.sgl1 = SglDescriptor::transport(len);
                    Cmd {
                        write: Some(d),
                        read_len: 0,
                        received: 0,
                        chunks: Vec::new(),
                        digest_bad: false,
                    }
                }
            }
            HostData::FromController(len) => {
                sqe.sgl1 = SglDescriptor::transport(len);
                Cmd {
                    write: None,
                    read_len: len,
                    received: 0,
                    chunks: Vec::new(),
                    digest_bad: false,
                }
            }
        };
        self.cmds.insert(cid, cmd);
        self.tx
            .push_pdu(&self.enc, Pdu::CapsuleCmd { sqe, data: icd });
        Ok(cid)
    }

    fn handle(&mut self, r: Received) -> Result<(), FatalError> {
        match r.pdu {
            Pdu::IcResp(resp) => self.on_icresp(resp),
            Pdu::C2HTermReq(t) => {
                self.state = State::Closed;
                self.events.push_back(HostEvent::Terminated {
                    reason: format!("controller sent C2HTermReq: {:?}, FEI {:#x}", t.fes, t.fei),
                    fes: Some(t.fes),
                });
                Ok(())
            }
            Pdu::CapsuleResp(cqe) => self.on_response(cqe),
            Pdu::C2HData(d) => self.on_c2h_data(d, r.data_digest_ok),
            Pdu::R2T(r2t) => self.on_r2t(r2t),
            other => Err(FatalError::silent(format!(
                "unexpected {:?} at the host",
                other.pdu_type()
            ))),
        }
    }

    fn on_icresp(&mut self, resp: IcResp) -> Result<(), FatalError> {
        let hdr = PduEncoder::default().to_bytes(&Pdu::IcResp(resp));
        if resp.pfv != PFV_1_0 {
            return Err(FatalError::new(
                Fes::UnsupportedParameter,
                8,
                &hdr,
                format!("controller answered PDU format version {}", resp.pfv),
            ));
        }
        if resp.cpda > 31 {
            return Err(FatalError::new(
                Fes::UnsupportedParameter,
                10,
                &hdr,
                format!("CPDA {} is out of range", resp.cpda),
            ));
        }
        if (resp.digests.header && !self.cfg.digests.header)
            || (resp.digests.data && !self.cfg.digests.data)
        {
            return Err(FatalError::new(
                Fes::UnsupportedParameter,
                11,
                &hdr,
                "controller enabled a digest the host did not ask for",
            ));
        }
        if resp.maxh2cdata < 4096 || !resp.maxh2cdata.is_multiple_of(4) {
            return Err(FatalError::new(
                Fes::UnsupportedParameter,
                12,
                &hdr,
                format!("MAXH2CDATA {} is invalid", resp.maxh2cdata),
            ));
        }
        self.maxh2cdata = resp.maxh2cdata;
        self.enc = PduEncoder::negotiated(resp.digests, resp.cpda);
        self.decoder.set_negotiated(DecoderConfig {
            hdgst: resp.digests.header,
            ddgst: resp.digests.data,
            rx_pda: (usize::from(self.cfg.hpda.min(31)) + 1) * 4,
            max_icd: 0,
            max_data: self.cfg.max_c2h_data,
        });
        self.state = State::Ready;
        self.events.push_back(HostEvent::Connected {
            digests: resp.digests,
            cpda: resp.cpda,
            maxh2cdata: resp.maxh2cdata,
        });
        Ok(())
    }

    fn data_hdr(t: PduType, cccid: u16, ttag: u16, off: u32, len: u32) -> Vec<u8> {
        let mut h = vec![t as u8, 0, DATA_HLEN as u8, 0, 0, 0, 0, 0];
        h.extend_from_slice(&cccid.to_le_bytes());
        h.extend_from_slice(&ttag.to_le_bytes());
        h.extend_from_slice(&off.to_le_bytes());
        h.extend_from_slice(&len.to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        h
    }

    fn on_r2t(&mut self, r: R2t) -> Result<(), FatalError> {
        let h = Self::data_hdr(PduType::R2T, r.cccid, r.ttag, r.r2to, r.r2tl);
        let Some(cmd) = self.cmds.get(&r.cccid) else {
            return Err(FatalError::new(
                Fes::InvalidHeaderField,
                8,
                &h,
                format!("R2T for command {} that is not outstanding", r.cccid),
            ));
        };
        let Some(data) = cmd.write.clone() else {
            return Err(FatalError::new(
                Fes::InvalidHeaderField,
                8,
                &h,
                format!("R2T for command {}, which has no data to send", r.cccid),
            ));
        };
        if r.r2tl == 0 {
            return Err(FatalError::new(
                Fes::InvalidHeaderField,
                16,
                &h,
                "R2T with zero length",
            ));
        }
        let end = u64::from(r.r2to) + u64::from(r.r2tl);
        if end > data.len() as u64 {
            return Err(FatalError::new(
                Fes::DataOutOfRange,
                12,
                &h,
                format!(
                    "R2T for {}+{} beyond the {} byte buffer",
                    r.r2to,
                    r.r2tl,
                    data.len()
                ),
            ));
        }
        let mut off = r.r2to as usize;
        let end = end as usize;
        while off < end {
            let n = (end - off).min(self.maxh2cdata as usize);
            let p = Pdu::H2CData(DataPdu {
                cccid: r.cccid,
                ttag: r.ttag,
                datao: off as u32,
                datal: n as u32,
                last: off + n == end,
                success: false,
                data: data.slice(off..off + n),
            });
            self.tx.push_pdu(&self.enc, p);
            off += n;
        }
        Ok(())
    }

    fn on_c2h_data(&mut self, d: DataPdu, digest_ok: bool) -> Result<(), FatalError> {
        let h = Self::data_hdr(PduType::C2HData, d.cccid, 0, d.datao, d.datal);
        let Some(cmd) = self.cmds.get_mut(&d.cccid) else {
            return Err(FatalError::new(
                Fes::InvalidHeaderField,
                8,
                &h,
                format!("C2HData for command {} that is not outstanding", d.cccid),
            ));
        };
        let end = u64::from(d.datao) + u64::from(d.datal);
        if end > u64::from(cmd.read_len) {
            return Err(FatalError::new(
                Fes::DataOutOfRange,
                12,
                &h,
                format!(
                    "C2HData at {}+{} beyond the {} byte buffer",
                    d.datao, d.datal, cmd.read_len
                ),
            ));
        }
        if d.datao != cmd.received {
            return Err(FatalError::new(
                Fes::PduSequenceError,
                12,
                &h,
                format!(
                    "C2HData at offset {} but {} was expected",
                    d.datao, cmd.received
                ),
            ));
        }
        cmd.received = end as u32;
        cmd.digest_bad |= !digest_ok;
        if !d.data.is_empty() {
            cmd.chunks.push(d.data);
        }
        if d.success {
            let mut cqe = Cqe::new(d.cccid, Status::SUCCESS);
            cqe.sqhd = self.sq_head;
            return self.on_response(cqe);
        }
        Ok(())
    }

    fn on_response(&mut self, mut cqe: Cqe) -> Result<(), FatalError> {
        let Some(cmd) = self.cmds.remove(&cqe.cid) else {
            let mut h = vec![
                PduType::CapsuleResp as u8,
                0,
                RESP_HLEN as u8,
                0,
                0,
                0,
                0,
                0,
            ];
            h.extend_from_slice(&cqe.encode());
            return Err(FatalError::new(
                Fes::InvalidHeaderField,
                20,
                &h,
                format!("response for command {} that is not outstanding", cqe.cid),
            ));
        };
        self.sq_head = cqe.sqhd;
        if cmd.digest_bad && cqe.status.is_success() {
            cqe.status = Status::TRANSIENT_TRANSPORT_ERROR;
        }
        self.events.push_back(HostEvent::Completion(Completion {
            cqe,
            data: cmd.chunks,
        }));
        Ok(())
    }
}
