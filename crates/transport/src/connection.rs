//! One socket bound to one sans-I/O queue, and the loop that moves bytes between them.

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nvmf_proto::tcp::{ControllerQueue, HostQueue, TxQueue};
use std::sync::Arc;
use tokio::io::{Interest, Ready};
use tokio::net::TcpStream;

use crate::error::TransportError;
use crate::tls::{TlsClientConfig, TlsServerConfig, TlsWire};

/// Most buffers handed to one `writev` (Linux IOV_MAX is 1024). A 4 KiB
/// read's response takes two (the data, and the CapsuleResp merged with the
/// next C2HData header), so 64, SPDK's own batch, cut a pass of 120 such
/// responses at depth 128 into five writes; 256 makes it three, and 4 KiB
/// random reads at depth 128 gained 7–11 % (docs/performance.md, "Where it
/// stands: 2026-12-05, midday").
const MAX_IOVECS: usize = 256;

/// A spin at the socket goes through the runtime (letting the thread's other
/// tasks run and reaping the reactor's events) once in this many looks; the
/// others read the socket directly.
const SPIN_YIELD_EVERY: u32 = 8;

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
/// Most free space kept past a chunked read's end ([`Connection`]'s
/// `straddle_room`): a chunked read that ends inside a PDU of up to this size
/// leaves it room to finish in the same buffer. Without it the decoder moves
/// the PDU's first part to a larger buffer; at 128 KiB writes, where a host's
/// commands and H2CData arrive interleaved, that copy was 7 % of the target's
/// time. The largest H2CData our target accepts (MAXH2CDATA 128 KiB) and its
/// header fit.
const STRADDLE_ROOM_MAX: usize = 128 * 1024 + 256;
/// The size of a header-sized read: the common header and PDU-specific header
/// of CapsuleResp, C2HData, H2CData and R2T.
const HEADER_READ: usize = 24;
/// Header-sized reads after the last large PDU before reads grow again.
const LARGE_MODE_READS: u8 = 4;
/// Most bytes one [`Connection::drive`] reads before it returns, though the
/// socket may still hold more: a peer that keeps its socket full cannot hold
/// the thread (whose other queues wait) or grow the receive buffer without
/// bound. The readiness stays set, so the next pass reads on at once. Four
/// of the largest read chunks: a 128 KiB write's depth-16 burst takes two passes.
const READ_PASS_MAX: usize = 4 * READ_CHUNK_MAX;
/// Most ciphertext encrypted ahead of the socket on a TLS connection: a batch of
/// PDUs is encrypted into one buffer of up to this much and sent with one `send`.
const TLS_OUT_HIGH: usize = 256 * 1024;

/// Reads up to `asked` bytes of what a plain socket holds into `rx`'s spare
/// room, without consulting the runtime's readiness (which lags the socket
/// while a spin reads it directly). Measured need for the one `unsafe`:
/// docs/performance.md, "Queue depth 1: a spin that reads the socket
/// itself".
#[allow(unsafe_code)]
fn recv_direct(stream: &TcpStream, rx: &mut BytesMut, asked: usize) -> io::Result<usize> {
    let spare = rx.spare_capacity_mut();
    let room = asked.min(spare.len());
    let n = socket2::SockRef::from(stream).recv(&mut spare[..room])?;
    // SAFETY: recv(2) wrote the first `n` bytes (n <= room) of the spare
    // capacity, which begins at rx.len(); so rx.len() + n bytes are
    // initialised and within the capacity.
    unsafe { rx.set_len(rx.len() + n) };
    Ok(n)
}

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
    /// True once the queue has ended (a fatal error or a termination request):
    /// nothing more is read for it. The default (never) suits a plain byte stream.
    fn is_closed(&self) -> bool {
        false
    }
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
    fn is_closed(&self) -> bool {
        HostQueue::is_terminated(self)
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
    fn is_closed(&self) -> bool {
        ControllerQueue::is_terminated(self)
    }
}

/// A TCP socket and the queue it carries.
#[derive(Debug)]
pub struct Connection<Q> {
    stream: Arc<TcpStream>,
    /// The TLS session, once started; `None` is plain TCP (one branch on the hot path).
    tls: Option<Box<TlsWire>>,
    /// The queue state machine.
    pub queue: Q,
    eof: bool,
    read_chunk: usize,
    written: u64,
    write_calls: u64,
    read: u64,
    /// Header-sized reads left before chunked reads resume (large-PDU mode).
    large_mode: u8,
    /// Free space kept past the end of every chunked read, so that a large
    /// PDU whose start a chunked read took in finishes in the same buffer
    /// (see [`STRADDLE_ROOM_MAX`]). Zero until a large PDU has been seen.
    straddle_room: usize,
    /// How long [`Connection::ready_for`] polls before it sleeps (zero: never polls).
    busy_poll: Duration,
}

impl<Q: QueueIo> Connection<Q> {
    /// Binds a connected socket to a queue. Sets TCP_NODELAY: PDUs are batched by
    /// the queue, so Nagle's delay only adds latency.
    pub fn new(stream: TcpStream, queue: Q) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream: Arc::new(stream),
            tls: None,
            queue,
            eof: false,
            read_chunk: READ_CHUNK_MIN,
            written: 0,
            write_calls: 0,
            read: 0,
            large_mode: 0,
            straddle_room: 0,
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
        crate::sockopt::set_tcp_congestion(&self.stream, name)
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.peer_addr()
    }

    /// True once the peer closed its side.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Bytes written to the socket so far (progress, for stall detection).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// `writev` system calls made so far, those that failed included (how well
    /// responses are batched; see `MAX_IOVECS`). Userspace TLS sends its
    /// records otherwise and is not counted.
    pub fn write_calls(&self) -> u64 {
        self.write_calls
    }

    /// Bytes read from the socket so far (for diagnostics: did the peer send
    /// anything lately?).
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Waits until the socket is readable, or writable while bytes are queued.
    /// Cancel safe, so it can sit in a `select!` beside other work.
    pub async fn ready(&mut self, has_tx: bool) -> Result<Ready, TransportError> {
        self.ready_for(true, has_tx).await
    }

    /// Like [`Connection::ready`], but may leave reading out: a controller whose
    /// peer is not reading its responses stops taking new commands until the
    /// backlog drains (`read` false, `write` true), which bounds its memory.
    /// With neither, it waits for readability (a peer's close still wakes it).
    pub async fn ready_for(&mut self, read: bool, write: bool) -> Result<Ready, TransportError> {
        self.ready_polled(read, write).await.map(|(r, _)| r)
    }

    /// [`Connection::ready_for`] that also says how many times it looked
    /// before the socket was ready: 0 or 1 when the bytes were already there
    /// (the first look, or the first after the runtime polled its reactor),
    /// more when polling caught bytes that came later. A caller tells a host
    /// that streams commands (its next ones already waiting) from one that
    /// waits on each answer (worth polling for) by this count.
    ///
    /// A spin on a plain TCP socket reads it directly between its looks
    /// through the runtime: what it finds is then already read and processed
    /// (new events wait in the queue), and the returned readiness is empty.
    pub async fn ready_polled(
        &mut self,
        read: bool,
        write: bool,
    ) -> Result<(Ready, u32), TransportError> {
        let interest = match (read, write) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            _ => Interest::READABLE,
        };
        let err = |e| TransportError::io("waiting on the socket", e);
        let mut looks = 0u32;
        if !self.busy_poll.is_zero() {
            // Duration::MAX (or any budget past the end of time): poll forever.
            let deadline = Instant::now().checked_add(self.busy_poll);
            // On a plain TCP socket most looks read the socket itself (one
            // recv that finds nothing, or the bytes); every SPIN_YIELD_EVERY-th
            // goes through the runtime, which lets the other tasks of this
            // thread run.
            let direct = read && self.tls.is_none();
            loop {
                tokio::select! {
                    biased;
                    r = self.stream.ready(interest) => return r.map(|r| (r, looks)).map_err(err),
                    _ = std::future::ready(()) => {}
                }
                loop {
                    looks += 1;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return self.wait(interest, looks).await;
                    }
                    if !direct || looks.is_multiple_of(SPIN_YIELD_EVERY) {
                        break;
                    }
                    let before = self.read;
                    self.read_available()?;
                    if self.read != before || self.eof {
                        return Ok((Ready::EMPTY, looks));
                    }
                }
                tokio::task::yield_now().await;
            }
        }
        self.wait(interest, looks).await
    }

    /// Sleeps until the runtime's reactor reports `interest`.
    async fn wait(&self, interest: Interest, looks: u32) -> Result<(Ready, u32), TransportError> {
        let err = |e| TransportError::io("waiting on the socket", e);
        self.stream
            .ready(interest)
            .await
            .map(|r| (r, looks))
            .map_err(err)
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
        if self.tls.as_ref().is_some_and(|t| !t.ktls.rx) {
            return self.read_tls();
        }
        let pass_start = self.read;
        loop {
            // A queue that has ended reads nothing more (its PDUs would only
            // pile up in the buffer), and one pass reads at most READ_PASS_MAX.
            if self.queue.is_closed() || self.read - pass_start >= READ_PASS_MAX as u64 {
                return Ok(());
            }
            let wanted = self.queue.wanted();
            // (limit, chunked): how much to read, and whether it may grow the chunk.
            let (limit, chunked) = if wanted >= LARGE_PDU {
                self.large_mode = LARGE_MODE_READS;
                let room = (wanted + HEADER_READ).min(STRADDLE_ROOM_MAX);
                self.straddle_room = self.straddle_room.max(room);
                (wanted, false)
            } else if self.large_mode > 0 && self.queue.rx().is_empty() {
                self.large_mode -= 1;
                (wanted.max(HEADER_READ), false)
            } else if self.straddle_room > 0 && wanted >= HEADER_READ && {
                let rx = self.queue.rx();
                !rx.is_empty() && rx.capacity() - rx.len() < self.read_chunk + self.straddle_room
            } {
                // The PDU in progress ends in this buffer, the next read chunk
                // does not fit: finish the PDU alone, so that the chunk
                // starts in an empty buffer and needs no copy of its first
                // part (a large PDU's last bytes, up to 128 KiB). Only for
                // a real rest: `wanted` is 1 also while whole PDUs wait in
                // the buffer, and reading those one byte at a time would
                // never end (a fuzz input found it).
                (wanted, false)
            } else {
                (wanted.max(self.read_chunk), true)
            };
            let room = if chunked { self.straddle_room } else { 0 };
            let rx = self.queue.rx();
            nvmf_proto::tcp::decoder::make_room(rx, limit + room);
            let offered = rx.capacity() - rx.len() - room;
            let asked = if chunked { offered } else { limit.min(offered) };
            // A plain TCP read that returns less than it asked for has
            // emptied the receive queue, so the read that would only say
            // EAGAIN is skipped: the closure reports WouldBlock itself, which
            // makes tokio clear the readiness it saw before this read (data
            // arriving later brings a new readiness event, which is not
            // cleared). With kernel TLS a short read may end at a record
            // boundary with more data queued, so there the EAGAIN read stays.
            // At queue depth 1 this is one system call of three per command.
            let drained_on_short = self.tls.is_none();
            let mut short = 0;
            let mut looked = false;
            let stream = &self.stream;
            let result = stream.try_io(Interest::READABLE, || {
                looked = true;
                let n = stream.try_read_buf(&mut rx.limit(asked))?;
                if drained_on_short && n > 0 && n < asked {
                    short = n;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            // The runtime has not seen the socket readable yet (try_io did
            // not read): a spin looks at the socket before the runtime does.
            // A plain socket is then read directly. There is no readiness to
            // clear: any the runtime raises from here on comes from bytes it
            // sees after this read, and costs at most one read that finds
            // nothing.
            let result = if !looked && drained_on_short {
                match recv_direct(stream, rx, asked) {
                    Ok(n) if n > 0 && n < asked => {
                        short = n;
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    r => r,
                }
            } else {
                result
            };
            if short > 0 {
                self.read += short as u64;
                self.queue.process();
                return Ok(());
            }
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
                // Kernel TLS: the next record is not application data.
                Err(e) if e.raw_os_error() == Some(libc::EIO) && self.tls.is_some() => {
                    match crate::ktls::recv_control(&*self.stream) {
                        Ok(crate::ktls::Control::CloseNotify) => {
                            self.eof = true;
                            self.queue.process();
                            return Ok(());
                        }
                        Ok(crate::ktls::Control::Ignored) => {}
                        Ok(crate::ktls::Control::WouldBlock) => return Ok(()),
                        Err(e) => return Err(TransportError::io("kernel TLS", e)),
                    }
                }
                Err(e) => return Err(TransportError::io("reading from the socket", e)),
            }
        }
    }

    /// Reads and decrypts until OpenSSL wants more bytes from the socket, so no
    /// decrypted plaintext stays buffered inside OpenSSL (`SSL_pending`).
    /// OpenSSL decrypts straight into the receive buffer's free space; a PDU
    /// whose rest is [`LARGE_PDU`] or more is read exactly to its end, as on the
    /// plain path, so that the decoder never copies a partial PDU.
    fn read_tls(&mut self) -> Result<(), TransportError> {
        use openssl::ssl::ErrorCode;
        const RECORD: usize = 16 * 1024;
        let Some(t) = self.tls.as_mut() else {
            return Ok(());
        };
        // Bytes appended since the last process(): one record is at most 16 KiB,
        // so the queue is run once per PDU's worth (or per READ_CHUNK_MAX), not
        // once per record.
        let mut fresh = 0usize;
        loop {
            // No pass limit here: decrypted bytes left inside OpenSSL would not
            // raise the socket's readiness again. An ended queue reads no more.
            if self.queue.is_closed() {
                return Ok(());
            }
            let wanted = self.queue.wanted();
            if fresh >= wanted.clamp(1, READ_CHUNK_MAX) {
                fresh = 0;
                self.queue.process();
                continue;
            }
            // (`wanted` already counts the bytes appended since the last process.)
            let limit = if wanted >= LARGE_PDU { wanted } else { RECORD };
            match crate::tls_session::ssl_read_into(&mut t.ssl, self.queue.rx(), limit) {
                Ok(0) => {
                    self.eof = true;
                    self.queue.process();
                    return Ok(());
                }
                Ok(n) => {
                    self.read += n as u64;
                    fresh += n;
                }
                Err(e) => match e.code() {
                    ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => {
                        if fresh > 0 {
                            self.queue.process();
                        }
                        return Ok(());
                    }
                    ErrorCode::ZERO_RETURN => {
                        self.eof = true;
                        self.queue.process();
                        return Ok(());
                    }
                    ErrorCode::SYSCALL if e.io_error().is_none() => {
                        self.eof = true;
                        self.queue.process();
                        return Ok(());
                    }
                    _ => return Err(TransportError::Tls(format!("TLS read: {e}"))),
                },
            }
        }
    }

    /// Encrypts the transmit buffer and sends the records of the whole batch
    /// with one `send`: OpenSSL's output is gathered in the session's `out`
    /// buffer (up to [`TLS_OUT_HIGH`] at a time) and flushed when the batch is
    /// encrypted. Chunks of 16 KiB or more are encrypted where they are; smaller
    /// ones are gathered into records of up to 16 KiB first, so a batch of small
    /// PDUs costs one record rather than one each.
    fn write_tls(&mut self) -> Result<(), TransportError> {
        const RECORD: usize = 16 * 1024;
        let Some(t) = self.tls.as_mut() else {
            return Ok(());
        };
        let tx = self.queue.tx();
        let err = |e: openssl::ssl::Error| TransportError::Tls(format!("TLS write: {e}"));
        loop {
            if t.ssl.get_ref().out_len() > 0 {
                let n = t
                    .ssl
                    .get_mut()
                    .flush_out()
                    .map_err(|e| TransportError::io("writing to the socket", e))?;
                self.written += n as u64;
                if t.ssl.get_ref().out_len() > 0 {
                    return Ok(()); // the socket is full: wait until writable
                }
            }
            if tx.is_empty() {
                return Ok(());
            }
            // Encrypt a batch into `out`: the BIO never blocks once established,
            // so SSL_write takes every byte (record by record).
            while !tx.is_empty() && t.ssl.get_ref().out_len() < TLS_OUT_HIGH {
                if let Some(c) = tx.chunks().front().filter(|c| c.len() >= RECORD) {
                    let n = t.ssl.ssl_write(c).map_err(err)?;
                    tx.advance(n);
                    continue;
                }
                let mut taken = 0;
                for c in tx.chunks().iter().take(MAX_IOVECS) {
                    if c.len() >= RECORD && !t.record.is_empty() {
                        break;
                    }
                    let n = c.len().min(RECORD - t.record.len());
                    t.record.extend_from_slice(&c[..n]);
                    taken += n;
                    if t.record.len() >= RECORD {
                        break;
                    }
                }
                tx.advance(taken);
                let mut off = 0;
                while off < t.record.len() {
                    off += t.ssl.ssl_write(&t.record[off..]).map_err(err)?;
                }
                t.record.clear();
            }
        }
    }

    /// Whether bytes wait to be sent (the queue's or ciphertext inside TLS).
    fn has_tx(&mut self) -> bool {
        !self.queue.tx().is_empty()
            || self
                .tls
                .as_ref()
                .is_some_and(|t| t.ssl.get_ref().out_len() > 0)
    }

    /// Runs the TLS handshake as the client (host), before the ICReq.
    pub async fn start_tls_client(&mut self, cfg: &TlsClientConfig) -> Result<(), TransportError> {
        let w = crate::tls::handshake(self.stream.clone(), cfg.context(), true, cfg.kernel_tls())
            .await?;
        self.tls = Some(Box::new(w));
        Ok(())
    }

    /// Runs the TLS handshake as the server (target), before the ICReq is read.
    pub async fn start_tls_server(&mut self, cfg: &TlsServerConfig) -> Result<(), TransportError> {
        let w = crate::tls::handshake(self.stream.clone(), cfg.context(), false, cfg.kernel_tls())
            .await?;
        self.tls = Some(Box::new(w));
        Ok(())
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Which directions of a TLS connection the kernel's record layer carries
    /// (kernel TLS); `None` for plain TCP. Both false: OpenSSL in user space.
    pub fn kernel_tls(&self) -> Option<crate::KtlsState> {
        self.tls.as_ref().map(|t| t.ktls)
    }

    /// The negotiated TLS cipher suite (IANA name), if the connection runs over TLS.
    pub fn tls_cipher(&self) -> Option<&'static str> {
        self.tls
            .as_ref()
            .and_then(|t| t.ssl.ssl().current_cipher())
            .map(|c| c.standard_name().unwrap_or(c.name()))
    }

    /// Writes queued bytes until the socket would block or nothing is left.
    pub fn write_available(&mut self) -> Result<(), TransportError> {
        if self.tls.as_ref().is_some_and(|t| !t.ktls.tx) {
            return self.write_tls();
        }
        let tx = self.queue.tx();
        while !tx.is_empty() {
            let n = {
                let chunks = tx.chunks();
                let slices: Vec<IoSlice<'_>> = chunks
                    .iter()
                    .take(MAX_IOVECS)
                    .map(|c| IoSlice::new(c))
                    .collect();
                self.write_calls += 1;
                match self.stream.try_write_vectored(&slices) {
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
        while self.has_tx() {
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
        let has_tx = self.has_tx();
        let r = self.ready(has_tx).await?;
        self.drive(r)
    }

    /// Shuts the socket down after flushing (best effort, bounded by the caller).
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        if self.tls.as_ref().is_some_and(|t| t.ktls.tx) {
            let _ = crate::ktls::send_close_notify(&*self.stream);
        } else if let Some(t) = self.tls.as_mut() {
            // close_notify goes into the gathered output: send it.
            let _ = t.ssl.shutdown();
            while t.ssl.get_ref().out_len() > 0 {
                if t.ssl.get_mut().flush_out().is_err() || self.stream.writable().await.is_err() {
                    break;
                }
            }
        }
        let _ = socket2::SockRef::from(&*self.stream).shutdown(std::net::Shutdown::Write);
    }

    /// Ends the connection so that the peer receives everything sent: flushes,
    /// sends FIN (after a TLS close_notify), then reads and drops whatever the
    /// peer still sends until it closes too. Closing a socket that holds
    /// unread bytes makes Linux send a reset, which can discard a C2HTermReq
    /// still on its way. Unbounded against a peer that never closes: the
    /// caller bounds it with a timeout.
    pub async fn close_gracefully(&mut self) {
        self.shutdown().await;
        let mut scratch = [0u8; 4096];
        while !self.eof {
            if self.stream.readable().await.is_err() {
                break;
            }
            match self.stream.try_read(&mut scratch) {
                Ok(0) => self.eof = true,
                Ok(n) => self.read += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Kernel TLS: a record other than data (the peer's close_notify).
                Err(e) if e.raw_os_error() == Some(libc::EIO) && self.tls.is_some() => {
                    match crate::ktls::recv_control(&*self.stream) {
                        Ok(crate::ktls::Control::CloseNotify) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                Err(_) => break,
            }
        }
    }
}
