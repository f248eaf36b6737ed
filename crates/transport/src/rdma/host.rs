//! NVMe/RDMA, host side (NVMe-oF 1.1 §7.3): the I/O shell that drives
//! [`RdmaHostQueue`] (sans I/O, `nvmf_proto::rdma::host`) over an RC queue
//! pair of `nvmf_rdma`.
//!
//! Per queue pair: the RDMA CM request carries the NVMe/RDMA private data (QID,
//! HRQSIZE, HSQSIZE); a reject comes back as a typed error with the
//! controller's NVMe/RDMA status. Command capsules are SENT from registered
//! slots (SQE and in-capsule data); responses land in registered 16-byte slots
//! that are reposted at once. Command data goes through registered memory the
//! controller reads (writes) or writes (reads) with RDMA: a slot of
//! [`DATA_SLOT`] bytes per command of the queue, and for a larger transfer a
//! region registered for that command alone. The keys are long-lived (no
//! remote invalidation is asked for), so no fast registration is needed.
//! Write data up to the controller's in-capsule size (IOCCSZ) goes in the
//! capsule, as the Linux host sends it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use nvmf_proto::rdma::cm::{CmReject, CmRequest, RECFMT_1_0};
use nvmf_proto::rdma::host::{
    HostWork, RdmaHostData, RdmaHostEvent, RdmaHostQueue, RdmaHostQueueConfig,
};
use nvmf_proto::tcp::{Completion, HostData, SubmitError};
use nvmf_proto::Sqe;
use nvmf_rdma::verbs::{Access, Completion as Wc, MemoryRegion, QpAttrs, SendWr, Sge};
use nvmf_rdma::{ConnParam, RdmaError};

use super::{
    post_recv_slots, rdma_err, Completions, POLL_BATCH, TAG_MASK, TAG_RECV, TAG_SEND,
    WC_WR_FLUSH_ERR,
};
use crate::addr::TransportAddr;
use crate::error::TransportError;

/// Bytes of the registered data slot each command of a queue gets.
pub const DATA_SLOT: usize = 128 * 1024;
const CQE: usize = 16;

/// The bytes of a command's data buffer.
fn buf_mut<'a>(pool: &'a mut MemoryRegion, b: &'a mut DataBuf) -> &'a mut [u8] {
    match b {
        DataBuf::Slot(n) => {
            let at = *n as usize * DATA_SLOT;
            &mut pool.as_mut_slice()[at..at + DATA_SLOT]
        }
        DataBuf::Own(mr) => mr.as_mut_slice(),
    }
}

/// The bytes of a command's data buffer.
fn buf<'a>(pool: &'a MemoryRegion, b: &'a DataBuf) -> &'a [u8] {
    match b {
        DataBuf::Slot(n) => {
            let at = *n as usize * DATA_SLOT;
            &pool.as_slice()[at..at + DATA_SLOT]
        }
        DataBuf::Own(mr) => mr.as_slice(),
    }
}

/// Where a command's data is.
#[derive(Debug)]
enum DataBuf {
    /// In data slot `n` of the pool.
    Slot(u32),
    /// In a region registered for this command.
    Own(MemoryRegion),
}

#[derive(Debug)]
struct Pending {
    buf: Option<DataBuf>,
    /// Bytes the controller writes for a read.
    read_len: usize,
}

/// The host end of one NVMe/RDMA queue pair.
pub struct RdmaHostQueuePair {
    // First, so the QP goes before the regions below.
    conn: nvmf_rdma::Connection,
    queue: RdmaHostQueue,
    recv_mr: MemoryRegion,
    send_mr: MemoryRegion,
    capsule_size: usize,
    send_free: Vec<u32>,
    send_slot: HashMap<u16, u32>,
    data_mr: MemoryRegion,
    data_free: Vec<u32>,
    pending: HashMap<u16, Pending>,
    ready: VecDeque<Completion>,
    max_icd: u32,
    eof: bool,
    peer: SocketAddr,
}

impl std::fmt::Debug for RdmaHostQueuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaHostQueuePair")
            .field("peer", &self.peer)
            .finish()
    }
}

impl RdmaHostQueuePair {
    /// Connects queue `qid` of `depth` commands to `addr` (RDMA CM address and
    /// route resolution, then the connect request with the NVMe/RDMA private
    /// data). `max_icd` is the in-capsule data the controller takes (IOCCSZ ×
    /// 16 − 64; 0 on the admin queue).
    pub async fn connect(
        addr: &TransportAddr,
        qid: u16,
        depth: u16,
        max_icd: u32,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let depth = depth.max(2);
        let d = usize::from(depth);
        let attrs = QpAttrs {
            max_send_wr: u32::from(depth) + 1,
            max_recv_wr: u32::from(depth),
            max_send_sge: 2,
            max_recv_sge: 1,
            max_inline_data: 0,
            cq_entries: 2 * u32::from(depth) + 1,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let fut = async {
            let connecting = nvmf_rdma::resolve(addr.socket, &attrs, ms)
                .await
                .map_err(|e| rdma_err(format!("resolving {addr}"), e))?;
            let qp = connecting.qp();
            let capsule_size = 64 + max_icd as usize;
            let recv_mr = qp
                .register(CQE * d, Access::LOCAL_WRITE)
                .map_err(|e| rdma_err("registering response buffers", e))?;
            let send_mr = qp
                .register(capsule_size * d, Access::LOCAL_WRITE)
                .map_err(|e| rdma_err("registering capsule buffers", e))?;
            let data_mr = qp
                .register(
                    DATA_SLOT * d,
                    Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE,
                )
                .map_err(|e| rdma_err("registering data buffers", e))?;
            post_recv_slots(qp, &recv_mr, CQE, 0..u32::from(depth))?;
            // HRQSIZE = HSQSIZE + 1, as the Linux host sends it.
            let req = CmRequest {
                recfmt: RECFMT_1_0,
                qid,
                hrqsize: depth,
                hsqsize: depth - 1,
                cntlid: 0,
            };
            let param = ConnParam {
                // The controller reads our write data with RDMA READ.
                responder_resources: 16,
                initiator_depth: 0,
                ..ConnParam::default()
            };
            let conn = match connecting.connect(&req.encode(), param).await {
                Ok(c) => c,
                Err(RdmaError::Rejected { private_data, .. }) => {
                    let why = CmReject::decode(&private_data)
                        .map(|r| r.status.message().to_string())
                        .unwrap_or_else(|_| "no NVMe/RDMA status".into());
                    return Err(TransportError::Io {
                        context: format!("connecting queue {qid} to {addr}"),
                        source: std::io::Error::other(format!("the controller rejected it: {why}")),
                    });
                }
                Err(e) => return Err(rdma_err(format!("connecting queue {qid} to {addr}"), e)),
            };
            Ok(Self {
                conn,
                queue: RdmaHostQueue::new(RdmaHostQueueConfig {
                    queue_depth: depth,
                    max_icd,
                }),
                recv_mr,
                send_mr,
                capsule_size,
                send_free: (0..u32::from(depth)).rev().collect(),
                send_slot: HashMap::new(),
                data_mr,
                data_free: (0..u32::from(depth)).rev().collect(),
                pending: HashMap::new(),
                ready: VecDeque::new(),
                max_icd,
                eof: false,
                peer: addr.socket,
            })
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| {
            TransportError::Timeout(format!("no RDMA connection to {addr} within {timeout:?}"))
        })?
    }

    /// True if another command may be submitted.
    pub fn has_room(&self) -> bool {
        self.queue.has_room()
    }

    /// Commands submitted and not completed.
    pub fn outstanding(&self) -> usize {
        self.queue.outstanding()
    }

    /// Lowers the in-capsule data sent (the controller's IOCCSZ).
    pub fn set_max_icd(&mut self, icd: u32) {
        self.max_icd = self.max_icd.min(icd);
    }

    fn take_buf(&mut self, len: usize) -> Result<(DataBuf, u64, u32), TransportError> {
        if len <= DATA_SLOT {
            if let Some(n) = self.data_free.pop() {
                let at = n as usize * DATA_SLOT;
                let addr = self.data_mr.addr() + at as u64;
                return Ok((DataBuf::Slot(n), addr, self.data_mr.rkey()));
            }
        }
        let mr = self
            .conn
            .qp()
            .register(
                len.max(1),
                Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE,
            )
            .map_err(|e| rdma_err("registering a data buffer", e))?;
        let (addr, key) = (mr.addr(), mr.rkey());
        Ok((DataBuf::Own(mr), addr, key))
    }

    fn free_buf(&mut self, b: DataBuf) {
        if let DataBuf::Slot(n) = b {
            self.data_free.push(n);
        }
    }

    /// Queues a command; returns its CID. Posted by the next [`Self::kick`].
    pub fn submit(&mut self, sqe: Sqe, data: HostData) -> Result<u16, TransportError> {
        if !self.queue.has_room() {
            return Err(SubmitError::QueueFull(self.queue.outstanding() as u16).into());
        }
        let (rdata, buf, read_len) = match data {
            HostData::None => (RdmaHostData::None, None, 0),
            HostData::ToController(d) if d.len() <= self.max_icd as usize => {
                (RdmaHostData::InCapsule(d), None, 0)
            }
            HostData::ToController(d) => {
                let (mut b, addr, key) = self.take_buf(d.len())?;
                buf_mut(&mut self.data_mr, &mut b)[..d.len()].copy_from_slice(&d);
                let len = d.len() as u32;
                let keyed = RdmaHostData::Keyed {
                    addr,
                    len,
                    key,
                    invalidate: false,
                };
                (keyed, Some(b), 0)
            }
            HostData::FromController(len) => {
                let (b, addr, key) = self.take_buf(len as usize)?;
                let keyed = RdmaHostData::Keyed {
                    addr,
                    len,
                    key,
                    invalidate: false,
                };
                (keyed, Some(b), len as usize)
            }
        };
        match self.queue.submit(sqe, rdata) {
            Ok(cid) => {
                self.pending.insert(cid, Pending { buf, read_len });
                Ok(cid)
            }
            Err(e) => {
                if let Some(b) = buf {
                    self.free_buf(b);
                }
                Err(e.into())
            }
        }
    }

    /// Posts what the queue has queued (capsules, receive slots).
    pub fn kick(&mut self) -> Result<(), TransportError> {
        let mut recvs: Vec<u32> = Vec::new();
        let mut sends: Vec<(u16, Vec<Sge>)> = Vec::new();
        while let Some(w) = self.queue.poll_work() {
            match w {
                HostWork::PostRecv { slot } => recvs.push(slot),
                HostWork::Send { cid, capsule } => {
                    let Some(slot) = self.send_free.pop() else {
                        // Cannot happen: one slot per command of the queue.
                        self.queue.fail("no free capsule buffer");
                        break;
                    };
                    let at = slot as usize * self.capsule_size;
                    let mut off = 0;
                    {
                        let mem = &mut self.send_mr.as_mut_slice()[at..at + self.capsule_size];
                        for p in &capsule {
                            let n = p.len().min(mem.len() - off);
                            mem[off..off + n].copy_from_slice(&p[..n]);
                            off += n;
                        }
                    }
                    let sge = self
                        .send_mr
                        .sge(at, off)
                        .map_err(|e| rdma_err("capsule buffer", e))?;
                    self.send_slot.insert(cid, slot);
                    sends.push((cid, vec![sge]));
                }
            }
        }
        post_recv_slots(self.conn.qp(), &self.recv_mr, CQE, recvs.into_iter())?;
        if !sends.is_empty() {
            let wrs: Vec<SendWr<'_>> = sends
                .iter()
                .map(|(cid, sges)| SendWr::Send {
                    wr_id: TAG_SEND | u64::from(*cid),
                    sges,
                    signaled: true,
                    invalidate_rkey: None,
                })
                .collect();
            self.conn
                .qp()
                .post_send_batch(&wrs)
                .map_err(|e| rdma_err("posting capsules", e))?;
        }
        Ok(())
    }

    fn on_wc(&mut self, c: &Wc) {
        if c.result().is_err() {
            if c.status == WC_WR_FLUSH_ERR {
                self.eof = true;
            } else {
                self.queue
                    .fail(format!("RDMA work completion failed: {}", c.status_text));
            }
            return;
        }
        let id = c.wr_id & !TAG_MASK;
        match c.wr_id & TAG_MASK {
            TAG_RECV => {
                let at = id as usize * CQE;
                let len = (c.byte_len as usize).min(CQE);
                let bytes = self.recv_mr.as_slice()[at..at + len].to_vec();
                self.queue.on_recv(id as u32, &bytes, c.invalidated_rkey);
            }
            TAG_SEND => {
                let cid = id as u16;
                if let Some(s) = self.send_slot.remove(&cid) {
                    self.send_free.push(s);
                }
                self.queue.on_send_done(cid);
            }
            _ => {}
        }
    }

    /// Turns the queue's events into completions; an error once it ended.
    fn collect(&mut self) -> Result<(), TransportError> {
        while let Some(ev) = self.queue.poll_event() {
            match ev {
                RdmaHostEvent::Completion { cqe, .. } => {
                    let mut data = Vec::new();
                    if let Some(p) = self.pending.remove(&cqe.cid) {
                        if let Some(b) = p.buf {
                            if p.read_len > 0 {
                                data.push(Bytes::copy_from_slice(
                                    &buf(&self.data_mr, &b)[..p.read_len],
                                ));
                            }
                            self.free_buf(b);
                        }
                    }
                    self.ready.push_back(Completion { cqe, data });
                }
                RdmaHostEvent::Terminated { reason } => {
                    return Err(TransportError::Terminated { reason, fes: None })
                }
            }
        }
        Ok(())
    }

    /// Completions already received, without waiting.
    pub fn try_completion(&mut self) -> Result<Option<Completion>, TransportError> {
        if self.ready.is_empty() {
            let mut wc: Completions = [Wc::default(); POLL_BATCH];
            let n = self
                .conn
                .qp()
                .poll(&mut wc)
                .map_err(|e| rdma_err("polling the CQ", e))?;
            for c in &wc[..n] {
                self.on_wc(c);
            }
            self.kick()?;
            self.collect()?;
        }
        Ok(self.ready.pop_front())
    }

    /// Waits for completions (or the end of the connection, which sets
    /// `eof`), takes them in and posts what they freed.
    async fn wait(&mut self) -> Result<(), TransportError> {
        let mut wc: Completions = [Wc::default(); POLL_BATCH];
        let n = tokio::select! {
            r = self.conn.qp().wait_completions(&mut wc) => r.map_err(|e| rdma_err("waiting for completions", e))?,
            _ = self.conn.disconnected() => { self.eof = true; 0 }
        };
        for c in &wc[..n] {
            self.on_wc(c);
        }
        self.kick()
    }

    /// The next completion, in arrival order.
    pub async fn next_completion(&mut self) -> Result<Completion, TransportError> {
        loop {
            self.collect()?;
            if let Some(c) = self.ready.pop_front() {
                return Ok(c);
            }
            if self.eof {
                return Err(TransportError::Closed);
            }
            self.kick()?;
            self.wait().await?;
        }
    }

    /// Sends one command and waits for its completion; others that arrive
    /// meanwhile are kept for [`Self::next_completion`].
    pub async fn execute(
        &mut self,
        sqe: Sqe,
        data: HostData,
    ) -> Result<Completion, TransportError> {
        let cid = self.submit(sqe, data)?;
        self.kick()?;
        loop {
            self.collect()?;
            if let Some(i) = self.ready.iter().position(|c| c.cqe.cid == cid) {
                if let Some(c) = self.ready.remove(i) {
                    return Ok(c);
                }
            }
            if self.eof {
                return Err(TransportError::Closed);
            }
            self.wait().await?;
        }
    }

    /// Disconnects.
    pub async fn close(self) {
        let _ = self.conn.disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.disconnected()).await;
    }
}
