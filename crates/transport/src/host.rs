//! The host end of one queue pair: NVMe/TCP (a socket and its [`HostQueue`])
//! or NVMe/RDMA ([`RdmaHostQueuePair`]), behind one API.

use std::collections::VecDeque;
use std::time::Duration;

use nvmf_proto::tcp::{Completion, HostData, HostEvent, HostQueue, HostQueueConfig};
use nvmf_proto::Sqe;
use tokio::net::TcpStream;

use crate::addr::TransportAddr;
use crate::connection::Connection;
use crate::error::TransportError;
use crate::rdma::RdmaHostQueuePair;

/// How long connection initialisation (TCP connect plus ICReq/ICResp) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A host queue connected over TCP or RDMA, driven by the task that owns it.
///
/// Submit any number of commands, then take completions in the order they arrive
/// with [`HostConnection::next_completion`]; [`HostConnection::execute`] does both
/// for one command.
#[derive(Debug)]
pub struct HostConnection {
    inner: Inner,
    /// What ICResp settled (none on RDMA).
    pub digests: nvmf_proto::tcp::Digests,
    /// The controller's MAXH2CDATA (TCP).
    pub maxh2cdata: u32,
}

// TCP, the hot path, stays inline (no pointer to chase per call); there is
// one HostConnection per queue, so the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Inner {
    Tcp {
        conn: Connection<HostQueue>,
        ready: VecDeque<Completion>,
    },
    Rdma(Box<RdmaHostQueuePair>),
}

impl HostConnection {
    /// Connects and performs ICReq/ICResp.
    pub async fn connect(
        addr: &TransportAddr,
        cfg: HostQueueConfig,
    ) -> Result<Self, TransportError> {
        Self::connect_with(addr, cfg, None).await
    }

    /// [`connect`](Self::connect), over TLS when `tls` is given: the TLS
    /// handshake (with its own 10 s limit) comes before the ICReq.
    pub async fn connect_with(
        addr: &TransportAddr,
        cfg: HostQueueConfig,
        tls: Option<&crate::tls::TlsClientConfig>,
    ) -> Result<Self, TransportError> {
        let stream = TcpStream::connect(addr.socket)
            .await
            .map_err(|e| TransportError::io(format!("connecting to {addr}"), e))?;
        let mut conn = Connection::new(stream, HostQueue::new(cfg));
        if let Some(t) = tls {
            conn.start_tls_client(t).await.map_err(|e| match e {
                TransportError::Tls(m) => TransportError::Tls(format!(
                    "{m}; the host offered PSK identity {:?} to {addr}",
                    t.identity()
                )),
                e => e,
            })?;
        }
        let fut = async {
            loop {
                conn.pump().await?;
                match conn.queue.poll_event() {
                    Some(HostEvent::Connected {
                        digests,
                        maxh2cdata,
                        ..
                    }) => {
                        return Ok(Self {
                            inner: Inner::Tcp {
                                conn,
                                ready: VecDeque::new(),
                            },
                            digests,
                            maxh2cdata,
                        });
                    }
                    Some(HostEvent::Terminated { reason, fes }) => {
                        let _ = conn.flush().await;
                        return Err(TransportError::Terminated { reason, fes });
                    }
                    Some(HostEvent::Completion(_)) => {}
                    None if conn.is_eof() => return Err(TransportError::Closed),
                    None => {}
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| {
                TransportError::Timeout(format!("no ICResp from {addr} within {CONNECT_TIMEOUT:?}"))
            })?
    }

    /// Connects NVMe/RDMA queue `qid` of `depth` commands (RDMA CM with the
    /// NVMe/RDMA private data); `max_icd` is the in-capsule data the
    /// controller takes (0 on the admin queue).
    pub async fn connect_rdma(
        addr: &TransportAddr,
        qid: u16,
        depth: u16,
        max_icd: u32,
    ) -> Result<Self, TransportError> {
        let q = RdmaHostQueuePair::connect(addr, qid, depth, max_icd, CONNECT_TIMEOUT).await?;
        Ok(Self {
            inner: Inner::Rdma(Box::new(q)),
            digests: Default::default(),
            maxh2cdata: 0,
        })
    }

    /// True if another command may be submitted.
    pub fn has_room(&self) -> bool {
        match &self.inner {
            Inner::Tcp { conn, .. } => conn.queue.has_room(),
            Inner::Rdma(q) => q.has_room(),
        }
    }

    /// Commands submitted and not completed.
    pub fn outstanding(&self) -> usize {
        match &self.inner {
            Inner::Tcp { conn, .. } => conn.queue.outstanding(),
            Inner::Rdma(q) => q.outstanding(),
        }
    }

    /// Sets what Connect and Identify settled: the in-capsule data the
    /// controller takes and the queue depth.
    pub fn set_limits(&mut self, max_icd: u32, queue_depth: u16) {
        match &mut self.inner {
            Inner::Tcp { conn, .. } => conn.queue.set_limits(max_icd, queue_depth),
            Inner::Rdma(q) => q.set_max_icd(max_icd),
        }
    }

    /// The NVMe/TCP connection (socket options), if this queue is one.
    pub fn tcp_connection(&mut self) -> Option<&mut Connection<HostQueue>> {
        match &mut self.inner {
            Inner::Tcp { conn, .. } => Some(conn),
            Inner::Rdma(_) => None,
        }
    }

    /// Queues a command; it is sent by the next call that moves bytes. Returns its CID.
    pub fn submit(&mut self, sqe: Sqe, data: HostData) -> Result<u16, TransportError> {
        match &mut self.inner {
            Inner::Tcp { conn, .. } => Ok(conn.queue.submit(sqe, data)?),
            Inner::Rdma(q) => q.submit(sqe, data),
        }
    }

    /// Writes what can be written without waiting.
    pub fn kick(&mut self) -> Result<(), TransportError> {
        match &mut self.inner {
            Inner::Tcp { conn, .. } => conn.write_available(),
            Inner::Rdma(q) => q.kick(),
        }
    }

    fn collect(
        conn: &mut Connection<HostQueue>,
        ready: &mut VecDeque<Completion>,
    ) -> Result<(), TransportError> {
        while let Some(ev) = conn.queue.poll_event() {
            match ev {
                HostEvent::Completion(c) => ready.push_back(c),
                HostEvent::Terminated { reason, fes } => {
                    return Err(TransportError::Terminated { reason, fes })
                }
                HostEvent::Connected { .. } => {}
            }
        }
        Ok(())
    }

    /// The next completion, in arrival order.
    pub async fn next_completion(&mut self) -> Result<Completion, TransportError> {
        let (conn, ready) = match &mut self.inner {
            Inner::Tcp { conn, ready } => (conn, ready),
            Inner::Rdma(q) => return q.next_completion().await,
        };
        loop {
            if let Some(c) = ready.pop_front() {
                return Ok(c);
            }
            Self::collect(conn, ready)?;
            if let Some(c) = ready.pop_front() {
                return Ok(c);
            }
            if conn.is_eof() {
                return Err(TransportError::Closed);
            }
            conn.pump().await?;
            if let Err(e) = Self::collect(conn, ready) {
                // Send our TermReq, if one was queued, before reporting.
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.flush()).await;
                return Err(e);
            }
        }
    }

    /// Completions already received, without waiting.
    pub fn try_completion(&mut self) -> Result<Option<Completion>, TransportError> {
        let (conn, ready) = match &mut self.inner {
            Inner::Tcp { conn, ready } => (conn, ready),
            Inner::Rdma(q) => return q.try_completion(),
        };
        if ready.is_empty() {
            Self::collect(conn, ready)?;
        }
        Ok(ready.pop_front())
    }

    /// Sends one command and waits for its completion; completions of other
    /// commands that arrive meanwhile are kept for [`Self::next_completion`].
    pub async fn execute(
        &mut self,
        sqe: Sqe,
        data: HostData,
    ) -> Result<Completion, TransportError> {
        let (conn, ready) = match &mut self.inner {
            Inner::Tcp { conn, ready } => (conn, ready),
            Inner::Rdma(q) => return q.execute(sqe, data).await,
        };
        let cid = conn.queue.submit(sqe, data)?;
        loop {
            if let Some(i) = ready.iter().position(|c| c.cqe.cid == cid) {
                if let Some(c) = ready.remove(i) {
                    return Ok(c);
                }
            }
            Self::collect(conn, ready)?;
            if ready.iter().any(|c| c.cqe.cid == cid) {
                continue;
            }
            if conn.is_eof() {
                return Err(TransportError::Closed);
            }
            conn.pump().await?;
        }
    }

    /// Flushes and closes.
    pub async fn close(self) {
        match self.inner {
            Inner::Tcp { mut conn, .. } => {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.shutdown()).await;
            }
            Inner::Rdma(q) => q.close().await,
        }
    }
}
