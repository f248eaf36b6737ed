//! The host end of one NVMe/TCP connection.

use std::collections::VecDeque;
use std::time::Duration;

use nvmf_proto::tcp::{Completion, HostData, HostEvent, HostQueue, HostQueueConfig};
use nvmf_proto::Sqe;
use tokio::net::TcpStream;

use crate::addr::TransportAddr;
use crate::connection::Connection;
use crate::error::TransportError;

/// How long connection initialisation (TCP connect plus ICReq/ICResp) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A host queue connected over TCP, driven by the task that owns it.
///
/// Submit any number of commands, then take completions in the order they arrive
/// with [`HostConnection::next_completion`]; [`HostConnection::execute`] does both
/// for one command.
#[derive(Debug)]
pub struct HostConnection {
    conn: Connection<HostQueue>,
    ready: VecDeque<Completion>,
    /// What ICResp settled.
    pub digests: nvmf_proto::tcp::Digests,
    /// The controller's MAXH2CDATA.
    pub maxh2cdata: u32,
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
                            conn,
                            ready: VecDeque::new(),
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

    /// The queue state machine (limits, outstanding count).
    pub fn queue(&mut self) -> &mut HostQueue {
        &mut self.conn.queue
    }

    /// The underlying connection.
    pub fn connection(&mut self) -> &mut Connection<HostQueue> {
        &mut self.conn
    }

    /// Queues a command; it is sent by the next call that moves bytes. Returns its CID.
    pub fn submit(&mut self, sqe: Sqe, data: HostData) -> Result<u16, TransportError> {
        Ok(self.conn.queue.submit(sqe, data)?)
    }

    /// Writes what can be written without waiting.
    pub fn kick(&mut self) -> Result<(), TransportError> {
        self.conn.write_available()
    }

    fn collect(&mut self) -> Result<(), TransportError> {
        while let Some(ev) = self.conn.queue.poll_event() {
            match ev {
                HostEvent::Completion(c) => self.ready.push_back(c),
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
        loop {
            if let Some(c) = self.ready.pop_front() {
                return Ok(c);
            }
            self.collect()?;
            if let Some(c) = self.ready.pop_front() {
                return Ok(c);
            }
            if self.conn.is_eof() {
                return Err(TransportError::Closed);
            }
            self.conn.pump().await?;
            if let Err(e) = self.collect() {
                // Send our TermReq, if one was queued, before reporting.
                let _ = tokio::time::timeout(Duration::from_secs(1), self.conn.flush()).await;
                return Err(e);
            }
        }
    }

    /// Completions already received, without waiting.
    pub fn try_completion(&mut self) -> Result<Option<Completion>, TransportError> {
        if self.ready.is_empty() {
            self.collect()?;
        }
        Ok(self.ready.pop_front())
    }

    /// Sends one command and waits for its completion; completions of other
    /// commands that arrive meanwhile are kept for [`Self::next_completion`].
    pub async fn execute(
        &mut self,
        sqe: Sqe,
        data: HostData,
    ) -> Result<Completion, TransportError> {
        let cid = self.submit(sqe, data)?;
        loop {
            if let Some(i) = self.ready.iter().position(|c| c.cqe.cid == cid) {
                if let Some(c) = self.ready.remove(i) {
                    return Ok(c);
                }
            }
            self.collect()?;
            if self.ready.iter().any(|c| c.cqe.cid == cid) {
                continue;
            }
            if self.conn.is_eof() {
                return Err(TransportError::Closed);
            }
            self.conn.pump().await?;
        }
    }

    /// Flushes and closes.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.shutdown()).await;
    }
}
