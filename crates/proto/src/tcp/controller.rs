//! The controller end of an NVMe/TCP queue pair, without I/O (NVMe/TCP 1.0 §3.3-3.5).
//!
//! Feed it received bytes ([`ControllerQueue::receive`] or
//! [`ControllerQueue::buffer_mut`] + [`ControllerQueue::process`]), take events with
//! [`ControllerQueue::poll_event`], answer with [`ControllerQueue::request_data`]
//! (R2T for write data), [`ControllerQueue::send_data`] (C2HData) and
//! [`ControllerQueue::complete`] (CapsuleResp), and send what
//! [`ControllerQueue::tx`] holds. Protocol violations end the connection with a
//! C2HTermReq carrying the status the spec names; they never panic.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::decoder::{Decoder, DecoderConfig, Received, Side};
use super::error::FatalError;
use super::idmap::CidMap;
use super::pdu::*;
use super::tx::TxQueue;
use crate::cqe::Cqe;
use crate::sqe::{admin_opcode, Sqe, SGL_ICD, SGL_TRANSPORT_DATA_BLOCK};
use crate::status::Status;

/// Limits and options of a controller queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerQueueConfig {
    /// Largest in-capsule data accepted (8192 on admin queues, §3.3.1.1 allows more on I/O queues).
    pub max_icd: u32,
    /// MAXH2CDATA advertised in ICResp: the largest H2CData PDU the host may send.
    pub maxh2cdata: u32,
    /// Digests this controller agrees to; the negotiated set is what the host asks for within these.
    pub allowed_digests: Digests,
    /// Controller PDU data alignment to ask for (0's based dwords).
    pub cpda: u8,
    /// Largest command data buffer (MDTS in bytes).
    pub max_data_len: u32,
    /// Most bytes of write data requested by R2T and not yet received on this connection.
    pub max_pending_r2t_bytes: u32,
    /// Largest data in one C2HData PDU sent.
    pub max_c2h_pdu: u32,
    /// Most commands outstanding before the host has connected (then SQSIZE + 1).
    pub initial_queue_depth: u16,
}

impl Default for ControllerQueueConfig {
    fn default() -> Self {
        Self {
            max_icd: 8192,
            maxh2cdata: 128 * 1024,
            allowed_digests: Digests {
                header: true,
                data: true,
            },
            cpda: 0,
            max_data_len: 1 << 20,
            max_pending_r2t_bytes: 16 << 20,
            max_c2h_pdu: 256 * 1024,
            initial_queue_depth: 32,
        }
    }
}

/// A command capsule received from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCommand {
    /// The submission queue entry.
    pub sqe: Sqe,
    /// In-capsule data (empty if none).
    pub data: Bytes,
    /// Length of the command buffer in the SGL for data moved by R2T/H2CData or
    /// C2HData (0 for in-capsule data or no data).
    pub buffer_len: u32,
}

/// What the controller queue reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerEvent {
    /// ICReq/ICResp done.
    Connected {
        /// Negotiated digests.
        digests: Digests,
        /// The host's PDU data alignment (0's based dwords).
        hpda: u8,
        /// The host's MAXR2T (0's based).
        maxr2t: u32,
    },
    /// A command to execute.
    Command(IncomingCommand),
    /// All write data asked for with [`ControllerQueue::request_data`] has arrived.
    Data {
        /// The command.
        cid: u16,
        /// The data, in order, as received (no copy).
        data: Vec<Bytes>,
    },
    /// The command failed in transport (a data digest error) and has been completed
    /// with Transient Transport Error; forget it.
    Aborted {
        /// The command.
        cid: u16,
    },
    /// The host reused the CID of an outstanding Asynchronous Event Request on
    /// the admin queue: it has given that AER up (SPDK's host completes its AERs
    /// itself when it detaches, `nvme_tcp_admin_qpair_abort_aers`, and reuses
    /// their CIDs for the shutdown's Property Get and Set). The AER is forgotten
    /// with no CQE; never complete it. Comes just before the new command.
    Abandoned {
        /// The AER's (and the new command's) CID.
        cid: u16,
    },
    /// The connection is over; close the socket once `tx` is flushed.
    Terminated {
        /// Why: our own error (a TermReq was queued) or the peer's TermReq.
        reason: String,
        /// The fatal error status, when there is one.
        fes: Option<Fes>,
    },
}

impl ControllerEvent {
    /// The command's SQE, if this event is a command.
    pub fn command_sqe(&self) -> Option<&Sqe> {
        match self {
            ControllerEvent::Command(c) => Some(&c.sqe),
            _ => None,
        }
    }
}

/// Misuse of the queue by the code above it (not a peer error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// No such command is outstanding.
    #[error("command {0} is not outstanding")]
    UnknownCommand(u16),
    /// The command has no command buffer in the direction asked for.
    #[error("command {0} has no command buffer for this transfer")]
    NoBuffer(u16),
    /// More data than the command buffer holds.
    #[error("command {cid}: {len} bytes at offset {offset} overrun its {buffer} byte buffer")]
    Overrun {
        /// The command.
        cid: u16,
        /// Offset of the data.
        offset: u32,
        /// Length of the data.
        len: u32,
        /// Buffer length.
        buffer: u32,
    },
    /// The connection is closed.
    #[error("the connection is terminated")]
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitIcReq,
    Ready,
    Closed,
}

#[derive(Debug, Default)]
struct Cmd {
    buffer_len: u32,
    c2h_sent: u32,
    r2t: Option<R2tState>,
    waiting_r2t: bool,
    /// An admin-queue Asynchronous Event Request: a host may reuse its CID.
    abandonable: bool,
}

#[derive(Debug, Default)]
struct R2tState {
    ttag: u16,
    expect: u32,
    end: u32,
    chunks: Vec<Bytes>,
    digest_bad: bool,
}

/// The controller end of one NVMe/TCP connection (one queue).
#[derive(Debug)]
pub struct ControllerQueue {
    cfg: ControllerQueueConfig,
    state: State,
    decoder: Decoder,
    enc: PduEncoder,
    tx: TxQueue,
    events: VecDeque<ControllerEvent>,
    cmds: CidMap<Cmd>,
    r2t_wait: VecDeque<u16>,
    pending_r2t_bytes: u32,
    qid: u16,
    sq_size: u16,
    sq_head: u16,
    sq_flow_control: bool,
    queue_depth: u16,
    next_ttag: u16,
}

impl ControllerQueue {
    /// A queue waiting for the host's ICReq.
    pub fn new(cfg: ControllerQueueConfig) -> Self {
        let dcfg = DecoderConfig {
            max_icd: cfg.max_icd,
            max_data: cfg.maxh2cdata,
            ..DecoderConfig::default()
        };
        Self {
            cfg,
            state: State::AwaitIcReq,
            decoder: Decoder::new(Side::Controller, dcfg),
            enc: PduEncoder::default(),
            tx: TxQueue::default(),
            events: VecDeque::new(),
            cmds: CidMap::default(),
            r2t_wait: VecDeque::new(),
            pending_r2t_bytes: 0,
            qid: 0,
            sq_size: cfg.initial_queue_depth,
            sq_head: 0,
            sq_flow_control: true,
            queue_depth: cfg.initial_queue_depth,
            next_ttag: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ControllerQueueConfig {
        &self.cfg
    }

    /// Sets what Connect established: the queue ID, the SQ size (1-based) and
    /// whether SQ flow control is on (CATTR bit 2 clear). Outstanding commands are
    /// limited to the SQ size from then on.
    pub fn set_connected(&mut self, qid: u16, sq_size: u16, sq_flow_control: bool, max_icd: u32) {
        self.qid = qid;
        self.sq_size = sq_size.max(1);
        self.sq_flow_control = sq_flow_control;
        self.queue_depth = sq_size.max(1);
        if self.state == State::Ready {
            let mut d = *self.decoder.config();
            d.max_icd = max_icd;
            self.decoder.set_negotiated(d);
        }
        self.cfg.max_icd = max_icd;
    }

    /// True once the connection has ended.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Closed
    }

    /// True when SQ flow control is disabled, which allows C2HData with SUCCESS.
    pub fn sq_flow_control(&self) -> bool {
        self.sq_flow_control
    }

    /// Number of commands received and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.cmds.len()
    }

    /// Outgoing bytes.
    pub fn tx(&mut self) -> &mut TxQueue {
        &mut self.tx
    }

    /// How many outgoing bytes wait to be sent.
    pub fn tx_len(&self) -> usize {
        self.tx.len()
    }

    /// The receive buffer: read from the socket into it, then call [`Self::process`].
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        self.decoder.buffer_mut()
    }

    /// How many bytes the decoder needs to make progress (a hint for read sizes).
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

    /// Processes the bytes in the receive buffer.
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

    /// True while events wait to be taken: a shell that defers them (for
    /// backpressure) should not read more bytes until they are taken.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Ends the connection: queues a C2HTermReq (if the error has a status) and reports it.
    pub fn fail(&mut self, e: FatalError) {
        if self.state == State::Closed {
            return;
        }
        if let Some(fes) = e.fes {
            let p = Pdu::C2HTermReq(TermReq {
                fes,
                fei: e.fei,
                data: e.header.clone(),
            });
            self.tx.push_pdu(&PduEncoder::default(), p);
        }
        self.state = State::Closed;
        self.events.push_back(ControllerEvent::Terminated {
            reason: e.reason,
            fes: e.fes,
        });
    }

    fn handle(&mut self, r: Received) -> Result<(), FatalError> {
        match r.pdu {
            Pdu::IcReq(req) => self.on_icreq(req),
            Pdu::H2CTermReq(t) => {
                self.state = State::Closed;
                self.events.push_back(ControllerEvent::Terminated {
                    reason: format!("host sent H2CTermReq: {:?}, FEI {:#x}", t.fes, t.fei),
                    fes: None,
                });
                Ok(())
            }
            Pdu::CapsuleCmd { sqe, data } => self.on_command(sqe, data, r.data_digest_ok),
            Pdu::H2CData(d) => self.on_h2c_data(d, r.data_digest_ok),
            other => Err(FatalError::silent(format!(
                "unexpected {:?} at the controller",
                other.pdu_type()
            ))),
        }
    }

    fn on_icreq(&mut self, req: IcReq) -> Result<(), FatalError> {
        let hdr = self.ic_header_bytes(&Pdu::IcReq(req));
        if req.pfv != PFV_1_0 {
            return Err(FatalError::new(
                Fes::UnsupportedParameter,
                8,
                &hdr,
                format!("unsupported PDU format version {}", req.pfv),
            ));
        }
        if req.hpda > 31 {
            return Err(FatalError::new(
                Fes::UnsupportedParameter,
                10,
                &hdr,
                format!("HPDA {} is out of range", req.hpda),
            ));
        }
        let digests = Digests {
            header: req.digests.header && self.cfg.allowed_digests.header,
            data: req.digests.data && self.cfg.allowed_digests.data,
        };
        let resp = IcResp {
            pfv: PFV_1_0,
            cpda: self.cfg.cpda,
            digests,
            maxh2cdata: self.cfg.maxh2cdata,
        };
        self.tx.push_pdu(&PduEncoder::default(), Pdu::IcResp(resp));
        self.enc = PduEncoder::negotiated(digests, req.hpda);
        self.decoder.set_negotiated(DecoderConfig {
            hdgst: digests.header,
            ddgst: digests.data,
            rx_pda: (usize::from(self.cfg.cpda) + 1) * 4,
            max_icd: self.cfg.max_icd,
            max_data: self.cfg.maxh2cdata,
        });
        self.state = State::Ready;
        self.events.push_back(ControllerEvent::Connected {
            digests,
            hpda: req.hpda,
            maxr2t: req.maxr2t,
        });
        Ok(())
    }

    fn ic_header_bytes(&self, p: &Pdu) -> Vec<u8> {
        PduEncoder::default().to_bytes(p).to_vec()
    }

    fn cmd_header_bytes(&self, sqe: &Sqe) -> Vec<u8> {
        let mut h = vec![PduType::CapsuleCmd as u8, 0, CMD_HLEN as u8, 0, 0, 0, 0, 0];
        h.extend_from_slice(&sqe.encode());
        h
    }

    fn on_command(&mut self, sqe: Sqe, data: Bytes, digest_ok: bool) -> Result<(), FatalError> {
        if let Some(old) = self.cmds.get(&sqe.cid) {
            if !old.abandonable {
                // §3.3: a CID must be unique among outstanding commands on the queue.
                self.complete_inner(Cqe::new(sqe.cid, Status::CID_CONFLICT.dnr()), false);
                return Ok(());
            }
            // An AER whose CID the host reuses has been given up by the host
            // (SPDK's detach completes its AERs locally and reuses the CIDs):
            // forget it, free its SQ slot, and take the new command. SPDK's own
            // target does not check CIDs at all, so it takes it too.
            self.cmds.remove(&sqe.cid);
            self.advance_sq_head();
            self.events
                .push_back(ControllerEvent::Abandoned { cid: sqe.cid });
        }
        if self.cmds.len() >= usize::from(self.queue_depth) {
            return Err(FatalError::new(
                Fes::PduSequenceError,
                0,
                &self.cmd_header_bytes(&sqe),
                format!(
                    "more than {} commands outstanding (the submission queue size)",
                    self.queue_depth
                ),
            ));
        }
        let sgl = sqe.sgl1;
        let status = if !digest_ok {
            Some(Status::TRANSIENT_TRANSPORT_ERROR)
        } else if sgl.type_byte == SGL_ICD {
            if sgl.address != 0 {
                Some(Status::SGL_OFFSET_INVALID.dnr())
            } else if sgl.length as usize != data.len() || sgl.length > self.cfg.max_icd {
                Some(Status::DATA_SGL_LENGTH_INVALID.dnr())
            } else {
                None
            }
        } else if !data.is_empty() {
            Some(Status::SGL_DESCRIPTOR_TYPE_INVALID.dnr())
        } else if sgl.length == 0 {
            None
        } else if sgl.type_byte != SGL_TRANSPORT_DATA_BLOCK {
            Some(Status::SGL_DESCRIPTOR_TYPE_INVALID.dnr())
        } else if sgl.length > self.cfg.max_data_len {
            // Beyond MDTS: Invalid Field in Command (NVMe Base 2.0 §5.15.2.2,
            // MDTS; nvmet and SPDK answer the same).
            Some(Status::INVALID_FIELD.dnr())
        } else {
            None
        };
        if let Some(st) = status {
            self.complete_inner(Cqe::new(sqe.cid, st), false);
            return Ok(());
        }
        let buffer_len = if sgl.type_byte == SGL_ICD {
            0
        } else {
            sgl.length
        };
        self.cmds.insert(
            sqe.cid,
            Cmd {
                buffer_len,
                abandonable: self.qid == 0
                    && sqe.opcode == admin_opcode::ASYNC_EVENT_REQUEST
                    && buffer_len == 0,
                ..Cmd::default()
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

    /// Frees the command's SQ slot. Done when the command completes, as Linux nvmet
    /// (`__nvmet_req_complete` → `nvmet_update_sq_head`) and SPDK do: the SQHD a
    /// host sees then never lets it have more than the SQ size outstanding, which
    /// [`Self::on_command`] enforces.
    fn advance_sq_head(&mut self) {
        self.sq_head = (self.sq_head + 1) % self.sq_size.max(1);
    }

    /// Asks the host for the command's write data with an R2T (§3.5.2). The data
    /// arrives as [`ControllerEvent::Data`]. If too much write data is already in
    /// flight on this connection, the R2T waits until some arrives.
    pub fn request_data(&mut self, cid: u16) -> Result<(), UsageError> {
        if self.state == State::Closed {
            return Err(UsageError::Terminated);
        }
        let cmd = self
            .cmds
            .get_mut(&cid)
            .ok_or(UsageError::UnknownCommand(cid))?;
        if cmd.buffer_len == 0 || cmd.r2t.is_some() || cmd.waiting_r2t {
            return Err(UsageError::NoBuffer(cid));
        }
        cmd.waiting_r2t = true;
        self.r2t_wait.push_back(cid);
        self.issue_r2ts();
        Ok(())
    }

    /// Completes command `cid` with `status` if it asked for its write data
    /// ([`Self::request_data`]) and is still waiting for its R2T to be sent
    /// (too much write data was in flight): no data can be on its way for it,
    /// so it can end here (an Abort, NVMe Base 2.0 §5.1). Returns true if it
    /// did; false if the command is unknown, has an R2T out, or its data is
    /// all here.
    pub fn cancel_data_request(&mut self, cid: u16, status: Status) -> bool {
        if self.state == State::Closed {
            return false;
        }
        if !self
            .cmds
            .get(&cid)
            .is_some_and(|c| c.waiting_r2t && c.r2t.is_none())
        {
            return false;
        }
        // Its entry in r2t_wait is skipped once the command is gone.
        self.complete_inner(Cqe::new(cid, status), true);
        true
    }

    fn issue_r2ts(&mut self) {
        while let Some(&cid) = self.r2t_wait.front() {
            // Skip commands completed while they waited: their CID may already
            // belong to a new command, which did not ask for data.
            let Some(cmd) = self.cmds.get_mut(&cid).filter(|c| c.waiting_r2t) else {
                self.r2t_wait.pop_front();
                continue;
            };
            let len = cmd.buffer_len;
            if self.pending_r2t_bytes > 0
                && self.pending_r2t_bytes.saturating_add(len) > self.cfg.max_pending_r2t_bytes
            {
                break;
            }
            self.r2t_wait.pop_front();
            self.pending_r2t_bytes = self.pending_r2t_bytes.saturating_add(len);
            let ttag = self.next_ttag;
            self.next_ttag = self.next_ttag.wrapping_add(1);
            cmd.waiting_r2t = false;
            cmd.r2t = Some(R2tState {
                ttag,
                expect: 0,
                end: len,
                chunks: Vec::new(),
                digest_bad: false,
            });
            let p = Pdu::R2T(R2t {
                cccid: cid,
                ttag,
                r2to: 0,
                r2tl: len,
            });
            self.tx.push_pdu(&self.enc, p);
        }
    }

    fn on_h2c_data(&mut self, d: DataPdu, digest_ok: bool) -> Result<(), FatalError> {
        let mut h = vec![PduType::H2CData as u8, 0, DATA_HLEN as u8, 0, 0, 0, 0, 0];
        h.extend_from_slice(&d.cccid.to_le_bytes());
        h.extend_from_slice(&d.ttag.to_le_bytes());
        h.extend_from_slice(&d.datao.to_le_bytes());
        h.extend_from_slice(&d.datal.to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        let Some(cmd) = self.cmds.get_mut(&d.cccid) else {
            return Err(FatalError::new(
                Fes::InvalidHeaderField,
                8,
                &h,
                format!("H2CData for command {} that is not outstanding", d.cccid),
            ));
        };
        let Some(r2t) = cmd.r2t.as_mut() else {
            return Err(FatalError::new(
                Fes::PduSequenceError,
                8,
                &h,
                format!("H2CData for command {} without an R2T", d.cccid),
            ));
        };
        if d.ttag != r2t.ttag {
            return Err(FatalError::new(
                Fes::InvalidHeaderField,
                10,
                &h,
                format!(
                    "H2CData TTAG {} does not match the R2T's {}",
                    d.ttag, r2t.ttag
                ),
            ));
        }
        if d.datal > self.cfg.maxh2cdata {
            return Err(FatalError::new(
                Fes::DataLimitExceeded,
                16,
                &h,
                format!(
                    "H2CData of {} bytes exceeds MAXH2CDATA {}",
                    d.datal, self.cfg.maxh2cdata
                ),
            ));
        }
        let end = u64::from(d.datao) + u64::from(d.datal);
        if d.datao < r2t.expect || end > u64::from(r2t.end) {
            return Err(FatalError::new(
                Fes::DataOutOfRange,
                12,
                &h,
                format!(
                    "H2CData at {}+{} is outside the requested {}..{}",
                    d.datao, d.datal, r2t.expect, r2t.end
                ),
            ));
        }
        if d.datao != r2t.expect {
            return Err(FatalError::new(
                Fes::PduSequenceError,
                12,
                &h,
                format!(
                    "H2CData at offset {} but {} was expected",
                    d.datao, r2t.expect
                ),
            ));
        }
        let done = end == u64::from(r2t.end);
        if d.last != done {
            return Err(FatalError::new(
                Fes::InvalidHeaderField,
                1,
                &h,
                "LAST_PDU must be set on, and only on, the PDU that completes the R2T",
            ));
        }
        r2t.expect = end as u32;
        r2t.digest_bad |= !digest_ok;
        if !d.data.is_empty() {
            r2t.chunks.push(d.data);
        }
        if done {
            let Some(r2t) = cmd.r2t.take() else {
                return Ok(());
            };
            self.pending_r2t_bytes = self.pending_r2t_bytes.saturating_sub(r2t.end);
            if r2t.digest_bad {
                self.complete_inner(Cqe::new(d.cccid, Status::TRANSIENT_TRANSPORT_ERROR), true);
                self.events
                    .push_back(ControllerEvent::Aborted { cid: d.cccid });
            } else {
                self.events.push_back(ControllerEvent::Data {
                    cid: d.cccid,
                    data: r2t.chunks,
                });
            }
            self.issue_r2ts();
        }
        Ok(())
    }

    /// Sends read data for `cid` in C2HData PDUs, at the offset already sent. When the
    /// data reaches the end of the command buffer and `success` is true and SQ flow
    /// control is off, the last PDU carries SUCCESS and the command is complete
    /// (§3.5.1: no CapsuleResp follows). Returns true in that case.
    pub fn send_data(&mut self, cid: u16, data: Bytes, success: bool) -> Result<bool, UsageError> {
        self.send_data_parts(cid, std::slice::from_ref(&data), success)
    }

    /// Like [`Self::send_data`] for data held in several buffers (`parts`, in
    /// order), which go to the socket by reference: C2HData PDUs of up to
    /// `max_c2h_pdu` bytes each take their data from whichever parts they span.
    pub fn send_data_parts(
        &mut self,
        cid: u16,
        parts: &[Bytes],
        success: bool,
    ) -> Result<bool, UsageError> {
        if self.state == State::Closed {
            return Err(UsageError::Terminated);
        }
        let sqfc = self.sq_flow_control;
        let cmd = self
            .cmds
            .get_mut(&cid)
            .ok_or(UsageError::UnknownCommand(cid))?;
        let total: usize = parts.iter().map(Bytes::len).sum();
        let len = total as u64;
        if cmd.buffer_len == 0 || u64::from(cmd.c2h_sent) + len > u64::from(cmd.buffer_len) {
            return Err(UsageError::Overrun {
                cid,
                offset: cmd.c2h_sent,
                len: len as u32,
                buffer: cmd.buffer_len,
            });
        }
        let max = self.cfg.max_c2h_pdu.max(4096) as usize;
        let mut off = 0usize;
        let mut completed = false;
        while off < total {
            let n = (total - off).min(max);
            let datao = cmd.c2h_sent;
            cmd.c2h_sent += n as u32;
            let last = cmd.c2h_sent == cmd.buffer_len;
            let succ = last && success && !sqfc;
            completed |= succ;
            let p = Pdu::C2HData(DataPdu {
                cccid: cid,
                ttag: 0,
                datao,
                datal: n as u32,
                last,
                success: succ,
                data: Bytes::new(),
            });
            self.tx
                .push_pdu_parts(&self.enc, &p, n, byte_window(parts, off, off + n));
            off += n;
        }
        if completed {
            self.cmds.remove(&cid);
            self.advance_sq_head();
        }
        Ok(completed)
    }

    /// Sends the response capsule for a command and forgets the command. SQHD and
    /// SQID are filled in here. A CQE for a CID that is not outstanding (never
    /// received, already completed, or reported as [`ControllerEvent::Aborted`]) is
    /// dropped: sending it would be a protocol violation the host ends the
    /// connection for.
    pub fn complete(&mut self, cqe: Cqe) {
        if !self.cmds.contains_key(&cqe.cid) {
            return;
        }
        self.complete_inner(cqe, true);
    }

    fn complete_inner(&mut self, mut cqe: Cqe, forget: bool) {
        if self.state == State::Closed {
            return;
        }
        if forget {
            if let Some(c) = self.cmds.remove(&cqe.cid) {
                if let Some(r) = c.r2t {
                    self.pending_r2t_bytes = self.pending_r2t_bytes.saturating_sub(r.end);
                }
            }
        }
        self.advance_sq_head();
        cqe.sqhd = self.sq_head;
        cqe.sqid = self.qid;
        self.tx.push_pdu(&self.enc, Pdu::CapsuleResp(cqe));
    }
}

/// The bytes `start..end` of the concatenation of `parts`, as slices of them (no copy).
fn byte_window(parts: &[Bytes], start: usize, end: usize) -> impl Iterator<Item = Bytes> + '_ {
    let mut pos = 0usize;
    parts.iter().filter_map(move |p| {
        let (lo, hi) = (pos, pos + p.len());
        pos = hi;
        let a = start.max(lo);
        let b = end.min(hi);
        (a < b).then(|| p.slice(a - lo..b - lo))
    })
}
