//! One socket bound to one sans-I/O queue, and the loop that moves bytes between them.

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nvmf_proto::tcp::{ControllerQueue, HostQueue, TxQueue};
use tokio::io::{Interest, Ready};
use tokio::net::TcpStream;

use crate::error::TransportError;
use crate::tls::{TlsClientConfig, TlsServerConfig, TlsStream};

/// Which end of a TLS handshake a connection plays.
#[derive(Debug, Clone, Copy)]
pub enum TlsSide<'a> {
    /// The controller: accepts, choosing the PSK by the identity offered.
    Server(&'a TlsServerConfig),
    /// The host: offers its PSK.
    Client(&'a TlsClientConfig),
}

/// Most buffers handed to one `writev` (Linux IOV_MAX is 1024).
const MAX_IOVECS: usize = 64;
/// Free space first offered to one read: an idle or stalled connection holds little
/// (1,000 stalled connections cost about 16 KB each; tests/stall.rs in the cli crate).
const READ_CHUNK_MIN: usize = 4 * 1024;
/// Most free space offered to one read: a busy queue doubles its read size each
/// time a read fills all the space offered, so many PDUs share one system call.
const READ_CHUNK_MAX: usize = 256 * 1024;
/// A PDU whose remaining bytes reach this size is read exactly to its end, and
/// the PDUs after it start with a header-sized read, so that one read never
/// straddles a large PDU and the next: a straddling read leaves the next PDU's
/// first part in a buffer whose front is already handed out (as data), and the
/// decoder must copy it to grow the buffer for the rest (the memmove that cost
/// 16 % of the host's time on 128 KiB reads; docs/performance.md).
const LARGE_PDU: usize = 32 * 1024;
/// The size of a header-sized read: the common header and PDU-specific header
/// of CapsuleResp, C2HData, H2CData and R2T.
const HEADER_READ: usize = 24;
/// Header-sized reads after the last large PDU before reads grow again.
const LARGE_MODE_READS: u8 = 4;

/// What the I/O shell needs from a queue state machine.
pub trait QueueIo {
    /// Outgoing bytes.
    fn tx(&mut self) -> &mut TxQueue;
    /// The receive buffer.
    fn rx(&mut self) -> &mut BytesMut;
    /// How many bytes the decoder needs next.
    fn wanted(&self) -> usize;
    /// Processes received bytes.
    fn process(&mut self);
}

impl QueueIo for HostQueue {
    fn tx(&mut self) -> &mut TxQueue {
        HostQueue::tx(self)
    }
    fn rx(&mut self) -> &mut BytesMut {
        self.buffer_mut()
    }
    fn wanted(&self) -> usize {
        HostQueue::wanted(self)
    }
    fn process(&mut self) {
        HostQueue::process(self);
    }
}

impl QueueIo for ControllerQueue {
    fn tx(&mut self) -> &mut TxQueue {
        ControllerQueue::tx(self)
    }
    fn rx(&mut self) -> &mut BytesMut {
        self.buffer_mut()
    }
    fn wanted(&self) -> usize {
        ControllerQueue::wanted(self)
    }
    fn process(&mut self) {
        ControllerQueue::process(self);
    }
}

/// What carries a connection's bytes: the socket itself, or TLS over it.
#[derive(Debug)]
enum Wire {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Wire {
    fn tcp(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(t) => &t.get_ref().0,
        }
    }
}

/// Largest plaintext gathered into one TLS write: one full record.
const TLS_RECORD: usize = 16 * 1024;

/// An OpenSSL error as an I/O error: WANT_READ / WANT_WRITE are `WouldBlock`
/// (the socket is not ready), a closed peer is end of stream.
fn ssl_io(e: openssl::ssl::Error) -> Result<usize, io::Error> {
    use openssl::ssl::ErrorCode;
    match e.code() {
        ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => Err(io::ErrorKind::WouldBlock.into()),
        ErrorCode::ZERO_RETURN => Ok(0),
        _ => match e.into_io_error() {
            Ok(io) => Err(io),
            Err(e) => Err(io::Error::other(format!("TLS: {e}"))),
        },
    }
}

/// A TCP socket (plain or under TLS) and the queue it carries.
#[derive(Debug)]
pub struct Connection<Q> {
    wire: Wire,
    /// The queue state machine.
    pub queue: Q,
    eof: bool,
    read_chunk: usize,
    written: u64,
    read: u64,
    /// Header-sized reads left before chunked reads resume (large-PDU mode).
    large_mode: u8,
    /// How long [`Connection::ready_for`] polls before it sleeps (zero: never polls).
    busy_poll: Duration,
}

impl<Q: QueueIo> Connection<Q> {
    /// Binds a connected socket to a queue. Sets TCP_NODELAY: PDUs are batched by
    /// the queue, so Nagle's delay only adds latency.
    pub fn new(stream: TcpStream, queue: Q) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            wire: Wire::Plain(stream),
            queue,
            eof: false,
            read_chunk: READ_CHUNK_MIN,
            written: 0,
            read: 0,
            large_mode: 0,
            busy_poll: Duration::ZERO,
        }
    }

    /// Makes [`Connection::ready_for`] poll the socket for up to `budget` before
    /// it sleeps in the reactor (zero, the default: sleep at once;
    /// `Duration::MAX`: never sleep).
    ///
    /// Why: a thread asleep in `epoll_wait` must be woken by the peer's send and
    /// scheduled again, which is most of a queue-depth-1 round trip on loopback.
    /// Polling trades CPU for that latency, as SPDK (which always polls) does.
    /// Between polls the task yields to the runtime, which polls its reactor
    /// without sleeping, so other connections on the same thread keep running.
    pub fn set_busy_poll(&mut self, budget: Duration) {
        self.busy_poll = budget;
    }

    /// Sets the socket's TCP congestion control (see
    /// [`crate::sockopt::set_tcp_congestion`]).
    pub fn set_tcp_congestion(&self, name: &str) -> Result<(), TransportError> {
        crate::sockopt::set_tcp_congestion(self.wire.tcp(), name)
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        self.wire.tcp()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.wire.tcp().peer_addr()
    }

    /// True when the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.wire, Wire::Tls(_))
    }

    /// Runs a TLS handshake on a connection that has exchanged nothing yet
    /// and carries the queue over TLS from then on (NVMe/TCP 1.1 §3.6.1: TLS
    /// starts right after the TCP connection, before ICReq).
    pub async fn start_tls(&mut self, tls: TlsSide<'_>) -> Result<(), TransportError> {
        let tcp = match &self.wire {
            Wire::Plain(s) => {
                // Take the socket out: a duplicate of its descriptor keeps the
                // Connection valid while the handshake owns the original.
                let err = |e| TransportError::io("starting TLS", e);
                let dup: std::net::TcpStream =
                    socket2::SockRef::from(s).try_clone().map_err(err)?.into();
                dup.set_nonblocking(true).map_err(err)?;
                TcpStream::from_std(dup).map_err(err)?
            }
            Wire::Tls(_) => return Err(TransportError::Tls("TLS is already on".into())),
        };
        let s = match tls {
            TlsSide::Server(cfg) => crate::tls::accept_tls(tcp, cfg).await?,
            TlsSide::Client(cfg) => crate::tls::connect_tls(tcp, cfg).await?,
        };
        self.wire = Wire::Tls(Box::new(s));
        Ok(())
    }

    /// True once the peer closed its side.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Bytes written to the socket so far (progress, for stall detection).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Bytes read from the socket so far (for diagnostics: did the peer send
    /// anything lately?).
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Waits until the socket is readable, or writable while bytes are queued.
    /// Cancel safe, so it can sit in a `select!` beside other work.
    pub async fn ready(&self, has_tx: bool) -> Result<Ready, TransportError> {
        self.ready_for(true, has_tx).await
    }

    /// Like [`Connection::ready`], but may leave reading out: a controller whose
    /// peer is not reading its responses stops taking new commands until the
    /// backlog drains (`read` false, `write` true), which bounds its memory.
    /// With neither, it waits for readability (a peer's close still wakes it).
    pub async fn ready_for(&self, read: bool, write: bool) -> Result<Ready, TransportError> {
        let interest = match (read, write) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            _ => Interest::READABLE,
        };
        let err = |e| TransportError::io("waiting on the socket", e);
        if !self.busy_poll.is_zero() {
            // Duration::MAX (or any budget past the end of time): poll forever.
            let deadline = Instant::now().checked_add(self.busy_poll);
            loop {
                tokio::select! {
                    biased;
                    r = self.wire.tcp().ready(interest) => return r.map_err(err),
                    _ = std::future::ready(()) => {}
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        self.wire.tcp().ready(interest).await.map_err(err)
    }

    /// Moves bytes in the directions `ready` allows: reads all that is available
    /// and processes it, then writes as much as the socket takes.
    pub fn drive(&mut self, ready: Ready) -> Result<(), TransportError> {
        if ready.is_readable() || ready.is_read_closed() {
            self.read_available()?;
        }
        if ready.is_writable() {
            self.write_available()?;
        }
        Ok(())
    }

    fn read_available(&mut self) -> Result<(), TransportError> {
        use bytes::BufMut;
        loop {
            let wanted = self.queue.wanted();
            // (limit, chunked): how much to read, and whether it may grow the chunk.
            let (limit, chunked) = if wanted >= LARGE_PDU {
                self.large_mode = LARGE_MODE_READS;
                (wanted, false)
            } else if self.large_mode > 0 && self.queue.rx().is_empty() {
                self.large_mode -= 1;
                (wanted.max(HEADER_READ), false)
            } else {
                (wanted.max(self.read_chunk), true)
            };
            let rx = self.queue.rx();
            rx.reserve(limit);
            let offered = rx.capacity() - rx.len();
            let result = match &mut self.wire {
                Wire::Plain(s) if chunked => s.try_read_buf(rx),
                Wire::Plain(s) => s.try_read_buf(&mut rx.limit(limit)),
                Wire::Tls(t) => {
                    // Decrypted bytes land in the buffer's spare room; it is
                    // zeroed first (the cipher's cost dwarfs that).
                    let start = rx.len();
                    let room = if chunked { offered } else { limit.min(offered) };
                    rx.resize(start + room, 0);
                    let r = t.ssl_read(&mut rx[start..]).or_else(ssl_io);
                    rx.truncate(start + *r.as_ref().unwrap_or(&0));
                    r
                }
            };
            match result {
                Ok(0) => {
                    self.eof = true;
                    self.queue.process();
                    return Ok(());
                }
                Ok(n) => {
                    self.read += n as u64;
                    if chunked && n >= offered {
                        self.read_chunk = (self.read_chunk * 2).min(READ_CHUNK_MAX);
                    }
                    self.queue.process();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TransportError::io("reading from the socket", e)),
            }
        }
    }

    /// Writes queued bytes until the socket would block or nothing is left.
    pub fn write_available(&mut self) -> Result<(), TransportError> {
        let tx = self.queue.tx();
        while !tx.is_empty() {
            let n = {
                let chunks = tx.chunks();
                let slices: Vec<IoSlice<'_>> = chunks
                    .iter()
                    .take(MAX_IOVECS)
                    .map(|c| IoSlice::new(c))
                    .collect();
                let r = match &mut self.wire {
                    Wire::Plain(s) => s.try_write_vectored(&slices),
                    Wire::Tls(t) => {
                        // One record's worth of the queued chunks per write.
                        let mut rec = Vec::with_capacity(TLS_RECORD);
                        for c in &slices {
                            let take = c.len().min(TLS_RECORD - rec.len());
                            rec.extend_from_slice(&c[..take]);
                            if rec.len() == TLS_RECORD {
                                break;
                            }
                        }
                        t.ssl_write(&rec).or_else(ssl_io)
                    }
                };
                match r {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                    Err(e) => return Err(TransportError::io("writing to the socket", e)),
                }
            };
            tx.advance(n);
            self.written += n as u64;
        }
        Ok(())
    }

    /// Writes everything queued, waiting for the socket as needed (reads are
    /// processed meanwhile so the peer is never blocked on us).
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        self.write_available()?;
        while !self.queue.tx().is_empty() {
            let r = self.ready(true).await?;
            self.drive(r)?;
            if self.eof {
                return Err(TransportError::Closed);
            }
        }
        Ok(())
    }

    /// One round: write what can be written, wait for the socket, move bytes.
    pub async fn pump(&mut self) -> Result<(), TransportError> {
        self.write_available()?;
        let has_tx = !self.queue.tx().is_empty();
        let r = self.ready(has_tx).await?;
        self.drive(r)
    }

    /// Shuts the socket down after flushing (best effort, bounded by the caller).
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        self.shutdown_write().await;
    }

    /// Sends FIN (after a TLS close_notify when TLS is on).
    async fn shutdown_write(&mut self) {
        if let Wire::Tls(t) = &mut self.wire {
            let _ = t.shutdown();
        }
        let _ = socket2::SockRef::from(self.wire.tcp()).shutdown(std::net::Shutdown::Write);
    }

    /// Ends the connection so that the peer receives everything sent: flushes,
    /// sends FIN (shutdown of the write side), then reads and drops whatever
    /// the peer still sends until it closes too. Closing a socket that holds
    /// unread bytes makes Linux send a reset, which can discard a C2HTermReq
    /// still on its way. Unbounded against a peer that never closes: the
    /// caller bounds it with a timeout.
    pub async fn close_gracefully(&mut self) {
        let _ = self.flush().await;
        self.shutdown_write().await;
        let mut scratch = [0u8; 4096];
        while !self.eof {
            if self.wire.tcp().readable().await.is_err() {
                break;
            }
            match self.wire.tcp().try_read(&mut scratch) {
                Ok(0) => self.eof = true,
                Ok(n) => self.read += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}
