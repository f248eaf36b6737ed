//! NVMe/RDMA, controller side (NVMe-oF 1.1 §7.3): the I/O shell that drives
//! [`RdmaControllerQueue`] (the sans-I/O NVMe/RDMA queue in `nvmf_proto::rdma`)
//! over an RC queue pair of `nvmf_rdma` (rdma-core, loaded at run time).
//!
//! What it does, per queue pair:
//! * RDMA CM: checks the host's RDMA_CM_REQUEST private data as nvmet-rdma
//!   does and rejects with the NVMe/RDMA status, or accepts with CRQSIZE;
//! * receives: one registered slot per command the queue may hold (64-byte SQE
//!   plus the in-capsule data the controller allows, none on the admin queue,
//!   as the Linux host never sends in-capsule data there);
//! * data: RDMA READ of a write's data from the host's keyed buffer and RDMA
//!   WRITE of read data, through a pool of registered chunks (a transfer that
//!   finds no free chunk waits for one: the pool bounds the queue's memory);
//! * responses: SEND of the CQE from a registered slot, SEND with Invalidate
//!   when the host's SGL asked for it.
//!
//! Data is copied between the controller's buffers and the registered pool.
//! Why: the backends' buffers are not registered memory; registering each
//! I/O's buffers costs more than a copy at the sizes NVMe moves (ibv_reg_mr pins
//! pages with a system call). Registering the memory backend's pages once is
//! the way to zero copy, not done yet.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nvmf_proto::rdma::cm::{validate_request, CmLimits, CmReject};
use nvmf_proto::rdma::controller::{RdmaControllerQueue, RdmaQueueConfig, RdmaWork};
use nvmf_proto::tcp::{ControllerEvent, Digests, UsageError};
use nvmf_proto::{Cqe, Sqe, Status};
use nvmf_rdma::verbs::{Access, Completion, MemoryRegion, QpAttrs, RemoteBuf, SendWr, Sge};
use nvmf_rdma::{CmListener, ConnParam, ConnectRequest};
use tracing::{debug, warn};

use super::{
    post_recv_slots, rdma_err, Completions, POLL_BATCH, TAG_MASK, TAG_READ, TAG_RECV, TAG_SEND,
    TAG_WRITE, WC_WR_FLUSH_ERR,
};
use crate::addr::{TransportAddr, TransportKind};
use crate::error::TransportError;
use crate::queue_pair::ControllerQueuePair;

/// Size of one chunk of the data pool: a transfer uses as many as it needs, one
/// SGE each.
const CHUNK: usize = 128 * 1024;

/// Limits of the RDMA queue pairs a listener accepts.
#[derive(Debug, Clone, Copy)]
pub struct RdmaListenConfig {
    /// In-capsule data accepted on I/O queues (IOCCSZ × 16 − 64).
    pub max_icd: u32,
    /// Largest command buffer (MDTS in bytes).
    pub max_data_len: u32,
    /// Largest I/O queue (HSQSIZE + 1) accepted.
    pub max_io_queue_size: u16,
    /// Bytes of registered memory for data transfers per I/O queue.
    pub io_pool_bytes: usize,
}

impl Default for RdmaListenConfig {
    fn default() -> Self {
        Self {
            max_icd: 8192,
            max_data_len: 1 << 20,
            max_io_queue_size: 128,
            io_pool_bytes: 8 << 20,
        }
    }
}

/// An RDMA CM listener for NVMe/RDMA hosts.
#[derive(Debug)]
pub struct RdmaListener {
    cm: CmListener,
    addr: TransportAddr,
    cfg: RdmaListenConfig,
}

impl RdmaListener {
    /// Binds `addr` (an address of an RDMA-capable interface) and listens.
    /// Fails with rdma-core's own words when the libraries are missing or no
    /// RDMA device has the address.
    pub fn bind(addr: &TransportAddr, cfg: RdmaListenConfig) -> Result<Self, TransportError> {
        let cm = CmListener::bind(addr.socket, 128)
            .map_err(|e| rdma_err("listening for NVMe/RDMA hosts", e))?;
        let socket = cm.local_addr().unwrap_or(addr.socket);
        Ok(Self {
            cm,
            addr: TransportAddr::rdma(socket),
            cfg,
        })
    }

    /// The address bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> TransportAddr {
        self.addr
    }

    /// Waits for the next host's connect request. Finish it with
    /// [`RdmaIncoming::establish`] on the connection's own task, so that a
    /// slow host never holds up the listener.
    pub async fn accept(&self) -> Result<RdmaIncoming, TransportError> {
        let req = self
            .cm
            .accept_request()
            .await
            .map_err(|e| rdma_err("waiting for an RDMA connect request", e))?;
        Ok(RdmaIncoming {
            req,
            local: self.addr,
            cfg: self.cfg,
        })
    }
}

/// A host's connect request, not yet accepted.
#[derive(Debug)]
pub struct RdmaIncoming {
    req: ConnectRequest,
    local: TransportAddr,
    cfg: RdmaListenConfig,
}

impl RdmaIncoming {
    /// The host's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.req.peer_addr()
    }

    /// Checks the request's private data, creates and fills the queue pair,
    /// accepts and waits until the connection is established. A request the
    /// limits refuse is rejected with its NVMe/RDMA status (NVMe-oF 1.1
    /// §7.3.5.2) and returned as an error.
    pub async fn establish(self) -> Result<RdmaQueuePair, TransportError> {
        let limits = CmLimits {
            max_io_queue_size: self.cfg.max_io_queue_size,
            ..CmLimits::default()
        };
        let peer = self.req.peer_addr();
        let q = match validate_request(self.req.private_data(), &limits) {
            Ok(q) => q,
            Err(st) => {
                let _ = self.req.reject(&CmReject::new(st).encode());
                return Err(TransportError::io(
                    "accepting an NVMe/RDMA connection",
                    std::io::Error::other(format!("rejected: {}", st.message())),
                ));
            }
        };
        let qid = q.request.qid;
        let depth = q.recv_queue_size;
        // The admin queue takes no in-capsule data from the Linux host; its
        // Connect data comes by RDMA READ.
        let max_icd = if qid == 0 { 0 } else { self.cfg.max_icd };
        let slot_size = 64 + max_icd as usize;
        let pool_bytes = if qid == 0 {
            4 * CHUNK.max(self.cfg.max_data_len as usize)
        } else {
            self.cfg.io_pool_bytes.max(self.cfg.max_data_len as usize)
        };
        let chunks = pool_bytes.div_ceil(CHUNK);
        let per_cmd_sges = (self.cfg.max_data_len as usize).div_ceil(CHUNK).max(1) as u32;
        // Per command: its response SEND, and its data (one READ or WRITE).
        let send_wr = u32::from(depth) * 2 + 1;
        let attrs = QpAttrs {
            max_send_wr: send_wr,
            max_recv_wr: u32::from(depth),
            max_send_sge: per_cmd_sges,
            max_recv_sge: 1,
            max_inline_data: 0,
            cq_entries: send_wr + u32::from(depth),
        };
        // The CM request's resources, already seen from our side (ib_cm swaps
        // the REQ's fields): `initiator_depth` is how many RDMA READs the host
        // lets us have outstanding against it, `responder_resources` how many
        // it would have against us (the Linux host asks for none). nvmet-rdma
        // takes the same two (`nvmet_rdma_cm_accept`).
        let ird = self.req.responder_resources();
        let ord = self.req.initiator_depth();
        let accepting = self
            .req
            .create_qp(&attrs)
            .map_err(|e| rdma_err("creating the RDMA queue pair", e))?;
        let qp = accepting.qp();
        let recv_mr = qp
            .register(slot_size * usize::from(depth), Access::LOCAL_WRITE)
            .map_err(|e| rdma_err("registering receive buffers", e))?;
        let send_mr = qp
            .register(16 * send_wr as usize, Access::LOCAL_WRITE)
            .map_err(|e| rdma_err("registering response buffers", e))?;
        let data_mr = qp
            .register(chunks * CHUNK, Access::LOCAL_WRITE)
            .map_err(|e| rdma_err("registering data buffers", e))?;
        post_recv_slots(qp, &recv_mr, slot_size, 0..u32::from(depth))?;
        let param = ConnParam {
            responder_resources: ird.min(16),
            initiator_depth: ord.min(16),
            ..ConnParam::default()
        };
        let conn = accepting
            .accept(&q.accept().encode(), param)
            .await
            .map_err(|e| rdma_err("accepting the RDMA connection", e))?;
        debug!(
            ?peer,
            qid, depth, max_icd, ird, ord, "NVMe/RDMA queue established"
        );
        let queue = RdmaControllerQueue::new(RdmaQueueConfig {
            qid,
            recv_queue_size: depth,
            max_icd,
            max_data_len: self.cfg.max_data_len,
            max_send_wr: send_wr,
            max_write_sge: per_cmd_sges as u16,
            max_pending_read_bytes: (chunks * CHUNK) as u32,
        });
        Ok(RdmaQueuePair {
            conn,
            queue,
            recv_mr,
            slot_size,
            send_mr,
            send_free: (0..send_wr).rev().collect(),
            data_mr,
            chunk_free: (0..chunks as u32).rev().collect(),
            reads: HashMap::new(),
            writes: HashMap::new(),
            sends: HashMap::new(),
            stalled: VecDeque::new(),
            connected_event: true,
            eof: false,
            written: 0,
            read: 0,
            busy_poll: Duration::ZERO,
            peer,
            local: self.local,
        })
    }
}

/// A send-queue work request being gathered for one ibv_post_send.
struct PendingWr {
    kind: WrKind,
    sges: Vec<Sge>,
    wr_id: u64,
}

enum WrKind {
    Read(RemoteBuf),
    Write(RemoteBuf),
    /// SEND, with Invalidate of this rkey if asked.
    Send(Option<u32>),
}

/// A data transfer's chunks and length.
#[derive(Debug)]
struct Held {
    chunks: Vec<u32>,
    len: usize,
}

/// The controller end of one NVMe/RDMA queue pair.
pub struct RdmaQueuePair {
    // Declared first so the QP goes (and the HCA stops touching our memory)
    // before the regions below are deregistered.
    conn: nvmf_rdma::Connection,
    queue: RdmaControllerQueue,
    recv_mr: MemoryRegion,
    slot_size: usize,
    send_mr: MemoryRegion,
    send_free: Vec<u32>,
    data_mr: MemoryRegion,
    chunk_free: Vec<u32>,
    /// RDMA READs in flight: cid → the chunks read into.
    reads: HashMap<u16, Held>,
    /// RDMA WRITEs posted: cid → the chunks written from, freed when the
    /// command's SEND completes.
    writes: HashMap<u16, Held>,
    /// SENDs in flight: token → (response slot, cid).
    sends: HashMap<u64, (u32, u16)>,
    /// Work taken from the queue that found no free chunk or slot yet.
    stalled: VecDeque<RdmaWork>,
    /// A `Connected` event is still to be reported.
    connected_event: bool,
    eof: bool,
    written: u64,
    read: u64,
    busy_poll: Duration,
    peer: Option<SocketAddr>,
    local: TransportAddr,
}

impl std::fmt::Debug for RdmaQueuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaQueuePair")
            .field("peer", &self.peer)
            .field("qid", &self.queue.config().qid)
            .finish()
    }
}

/// What [`RdmaQueuePair::ready`] found.
#[derive(Debug)]
pub struct RdmaReady {
    completions: Completions,
    /// How many of `completions` are filled.
    n: usize,
    /// The CM said the connection is gone.
    disconnected: bool,
}

impl RdmaQueuePair {
    fn take_chunks(&mut self, len: usize) -> Option<Vec<u32>> {
        let n = len.div_ceil(CHUNK).max(1);
        if self.chunk_free.len() < n {
            return None;
        }
        let at = self.chunk_free.len() - n;
        Some(self.chunk_free.split_off(at))
    }

    fn sges(&self, h: &Held) -> Result<Vec<Sge>, TransportError> {
        let mut left = h.len;
        let mut out = Vec::with_capacity(h.chunks.len());
        for &c in &h.chunks {
            let n = left.min(CHUNK);
            out.push(
                self.data_mr
                    .sge(c as usize * CHUNK, n.max(1))
                    .map_err(|e| rdma_err("data buffer", e))?,
            );
            left -= n;
        }
        Ok(out)
    }

    /// Copies `h`'s bytes out of the pool.
    fn gather(&self, h: &Held) -> Bytes {
        let mut v = Vec::with_capacity(h.len);
        let mem = self.data_mr.as_slice();
        let mut left = h.len;
        for &c in &h.chunks {
            let n = left.min(CHUNK);
            let at = c as usize * CHUNK;
            v.extend_from_slice(&mem[at..at + n]);
            left -= n;
        }
        Bytes::from(v)
    }

    fn on_completion(&mut self, c: &Completion) -> Result<(), TransportError> {
        if c.result().is_err() {
            // Flushed work (IBV_WC_WR_FLUSH_ERR, ibv_poll_cq(3)) means the QP
            // went to the error state: the host disconnected, and the CM event
            // may come after these completions. The normal end.
            if c.status == WC_WR_FLUSH_ERR {
                self.eof = true;
                return Ok(());
            }
            if self.eof || self.queue.is_terminated() {
                return Ok(());
            }
            warn!(peer = ?self.peer, "RDMA work completion failed: {} (vendor error {:#x})", c.status_text, c.vendor_err);
            self.queue
                .fail(format!("RDMA work completion failed: {}", c.status_text));
            return Ok(());
        }
        let id = c.wr_id & !TAG_MASK;
        match c.wr_id & TAG_MASK {
            TAG_RECV => {
                let slot = id as usize;
                let at = slot * self.slot_size;
                let len = (c.byte_len as usize).min(self.slot_size);
                self.read += len as u64;
                let capsule = Bytes::copy_from_slice(&self.recv_mr.as_slice()[at..at + len]);
                if let Err(e) = self.queue.on_recv(slot as u32, capsule) {
                    self.queue.fail(format!("receive: {e}"));
                }
            }
            TAG_READ => {
                let cid = id as u16;
                if let Some(h) = self.reads.remove(&cid) {
                    let data = self.gather(&h);
                    self.read += data.len() as u64;
                    self.chunk_free.extend(h.chunks);
                    if let Err(e) = self.queue.on_read_done(cid, data) {
                        self.queue.fail(format!("RDMA READ: {e}"));
                    }
                }
            }
            TAG_SEND => {
                if let Some((slot, cid)) = self.sends.remove(&id) {
                    self.send_free.push(slot);
                    if let Some(h) = self.writes.remove(&cid) {
                        self.chunk_free.extend(h.chunks);
                    }
                }
                if let Err(e) = self.queue.on_send_done(id) {
                    self.queue.fail(format!("SEND: {e}"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Posts what the queue has to post, in one ibv_post_send and one
    /// ibv_post_recv call.
    fn post(&mut self) -> Result<(), TransportError> {
        let mut recvs: Vec<u32> = Vec::new();
        let mut sends: Vec<PendingWr> = Vec::new();
        loop {
            let w = match self.stalled.pop_front() {
                Some(w) => w,
                None => match self.queue.poll_work() {
                    Some(w) => w,
                    None => break,
                },
            };
            match w {
                RdmaWork::PostRecv { slot } => recvs.push(slot),
                RdmaWork::Read {
                    cid,
                    addr,
                    key,
                    len,
                } => {
                    let Some(chunks) = self.take_chunks(len as usize) else {
                        self.stalled.push_front(RdmaWork::Read {
                            cid,
                            addr,
                            key,
                            len,
                        });
                        break;
                    };
                    let h = Held {
                        chunks,
                        len: len as usize,
                    };
                    let sges = self.sges(&h)?;
                    self.reads.insert(cid, h);
                    let remote = RemoteBuf {
                        addr,
                        len,
                        rkey: key,
                    };
                    sends.push(PendingWr {
                        kind: WrKind::Read(remote),
                        sges,
                        wr_id: TAG_READ | u64::from(cid),
                    });
                }
                RdmaWork::Write {
                    cid,
                    addr,
                    key,
                    data,
                } => {
                    let len: usize = data.iter().map(Bytes::len).sum();
                    let Some(chunks) = self.take_chunks(len) else {
                        self.stalled.push_front(RdmaWork::Write {
                            cid,
                            addr,
                            key,
                            data,
                        });
                        break;
                    };
                    let h = Held { chunks, len };
                    // Copy the data into the chunks, in order.
                    {
                        let mut ci = 0usize;
                        let mut off = 0usize;
                        let ids = h.chunks.clone();
                        let mem = self.data_mr.as_mut_slice();
                        for part in &data {
                            let mut p: &[u8] = part;
                            while !p.is_empty() {
                                let n = p.len().min(CHUNK - off);
                                let at = ids[ci] as usize * CHUNK + off;
                                mem[at..at + n].copy_from_slice(&p[..n]);
                                p = &p[n..];
                                off += n;
                                if off == CHUNK {
                                    ci += 1;
                                    off = 0;
                                }
                            }
                        }
                    }
                    let sges = self.sges(&h)?;
                    self.written += len as u64;
                    // A command may send its data in several WRITEs: keep
                    // every chunk until its SEND completes.
                    match self.writes.get_mut(&cid) {
                        Some(prev) => {
                            prev.chunks.extend(h.chunks);
                            prev.len += len;
                        }
                        None => {
                            self.writes.insert(cid, h);
                        }
                    }
                    let remote = RemoteBuf {
                        addr,
                        len: len as u32,
                        rkey: key,
                    };
                    sends.push(PendingWr {
                        kind: WrKind::Write(remote),
                        sges,
                        wr_id: TAG_WRITE | u64::from(cid),
                    });
                }
                RdmaWork::Send {
                    token,
                    cid,
                    cqe,
                    invalidate,
                } => {
                    let Some(slot) = self.send_free.pop() else {
                        self.stalled.push_front(RdmaWork::Send {
                            token,
                            cid,
                            cqe,
                            invalidate,
                        });
                        break;
                    };
                    let at = slot as usize * 16;
                    self.send_mr.as_mut_slice()[at..at + 16].copy_from_slice(&cqe);
                    let sge = self
                        .send_mr
                        .sge(at, 16)
                        .map_err(|e| rdma_err("response buffer", e))?;
                    self.sends.insert(token, (slot, cid));
                    self.written += 16;
                    sends.push(PendingWr {
                        kind: WrKind::Send(invalidate),
                        sges: vec![sge],
                        wr_id: TAG_SEND | token,
                    });
                }
            }
        }
        post_recv_slots(
            self.conn.qp(),
            &self.recv_mr,
            self.slot_size,
            recvs.into_iter(),
        )?;
        if !sends.is_empty() {
            let wrs: Vec<SendWr<'_>> = sends
                .iter()
                .map(|w| match w.kind {
                    WrKind::Read(remote) => SendWr::Read {
                        wr_id: w.wr_id,
                        sges: &w.sges,
                        remote,
                        signaled: true,
                    },
                    // Unsignaled: the SEND after it completes the command.
                    WrKind::Write(remote) => SendWr::Write {
                        wr_id: w.wr_id,
                        sges: &w.sges,
                        remote,
                        signaled: false,
                    },
                    WrKind::Send(invalidate_rkey) => SendWr::Send {
                        wr_id: w.wr_id,
                        sges: &w.sges,
                        signaled: true,
                        invalidate_rkey,
                    },
                })
                .collect();
            self.conn
                .qp()
                .post_send_batch(&wrs)
                .map_err(|e| rdma_err("posting work requests", e))?;
        }
        Ok(())
    }
}

impl ControllerQueuePair for RdmaQueuePair {
    type Ready = RdmaReady;
    const KIND: TransportKind = TransportKind::Rdma;

    fn poll_event(&mut self) -> Option<ControllerEvent> {
        if self.connected_event {
            // The CM handshake is the RDMA counterpart of ICReq/ICResp.
            self.connected_event = false;
            return Some(ControllerEvent::Connected {
                digests: Digests::default(),
                hpda: 0,
                maxr2t: 0,
            });
        }
        self.queue.poll_event()
    }
    fn has_events(&self) -> bool {
        self.connected_event || self.queue.has_events()
    }
    fn for_each_pending_command(&self, f: impl FnMut(&Sqe)) {
        self.queue.pending_commands().for_each(f)
    }
    fn request_data(&mut self, cid: u16) -> Result<(), UsageError> {
        self.queue.request_data(cid)
    }
    fn cancel_data_request(&mut self, cid: u16, status: Status) -> bool {
        self.queue.cancel_data_request(cid, status)
    }
    fn send_data_parts(
        &mut self,
        cid: u16,
        parts: &[Bytes],
        plain: bool,
    ) -> Result<bool, UsageError> {
        self.queue.send_data_parts(cid, parts, plain)
    }
    fn complete(&mut self, cqe: Cqe) {
        self.queue.complete(cqe)
    }
    fn set_connected(&mut self, _qid: u16, sq_size: u16, _sqfc: bool, max_icd: u32) {
        // (SQ flow control cannot be disabled on RDMA: SQHD is always sent.)
        self.queue.set_connected(sq_size);
        self.queue.limit_in_capsule_data(max_icd);
    }
    fn is_terminated(&self) -> bool {
        self.queue.is_terminated()
    }
    fn outstanding(&self) -> usize {
        self.queue.outstanding()
    }
    fn pending_send(&self) -> usize {
        // Work waits for send-queue room or pool chunks, never for a reader:
        // what the host does not take back is bounded by its queue size.
        0
    }
    fn write_available(&mut self) -> Result<(), TransportError> {
        if self.eof {
            return Ok(());
        }
        self.post()
    }
    async fn ready(
        &mut self,
        _read: bool,
        _write: bool,
    ) -> Result<(RdmaReady, u32), TransportError> {
        let mut out = RdmaReady {
            completions: [Completion::default(); POLL_BATCH],
            n: 0,
            disconnected: false,
        };
        let qp = self.conn.qp();
        let mut looks = 0u32;
        if !self.busy_poll.is_zero() {
            let deadline = Instant::now().checked_add(self.busy_poll);
            loop {
                let n = qp
                    .poll(&mut out.completions)
                    .map_err(|e| rdma_err("polling the CQ", e))?;
                if n > 0 {
                    out.n = n;
                    return Ok((out, looks));
                }
                looks += 1;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        tokio::select! {
            r = qp.wait_completions(&mut out.completions) => {
                out.n = r.map_err(|e| rdma_err("waiting for completions", e))?;
            }
            e = self.conn.disconnected() => {
                if let Err(e) = e {
                    debug!(peer = ?self.peer, "RDMA CM: {e}");
                }
                out.disconnected = true;
            }
        }
        Ok((out, looks))
    }
    fn drive(&mut self, ready: RdmaReady) -> Result<(), TransportError> {
        for c in &ready.completions[..ready.n] {
            self.on_completion(c)?;
        }
        if ready.disconnected {
            self.eof = true;
        }
        self.write_available()
    }
    fn set_busy_poll(&mut self, budget: Duration) {
        self.busy_poll = budget;
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        self.write_available()?;
        // Wait until every SEND posted has completed (or the host is gone).
        let mut buf: Completions = [Completion::default(); POLL_BATCH];
        while !self.sends.is_empty() && !self.eof {
            let n = tokio::select! {
                r = self.conn.qp().wait_completions(&mut buf) => r.map_err(|e| rdma_err("waiting for completions", e))?,
                _ = self.conn.disconnected() => { self.eof = true; 0 }
            };
            for c in &buf[..n] {
                self.on_completion(c)?;
            }
            self.write_available()?;
        }
        Ok(())
    }
    async fn close_gracefully(&mut self) {
        let _ = self.flush().await;
        let _ = self.conn.disconnect();
        if !self.eof {
            let _ = self.conn.disconnected().await;
            self.eof = true;
        }
    }
    fn is_eof(&self) -> bool {
        self.eof
    }
    fn bytes_written(&self) -> u64 {
        self.written
    }
    fn bytes_read(&self) -> u64 {
        self.read
    }
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
    fn local_addr(&self) -> Option<TransportAddr> {
        Some(self.local)
    }
}
