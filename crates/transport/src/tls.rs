//! The NVMe/TCP secure channel: TLS 1.3 with an external pre-shared key
//! (NVMe/TCP Transport Specification §3.6, TP 8011), on OpenSSL.
//!
//! TLS 1.3 only, cipher suites TLS_AES_128_GCM_SHA256 and
//! TLS_AES_256_GCM_SHA384, PSK with (EC)DHE key exchange (`psk_dhe_ke`, OpenSSL's
//! default for external PSKs), no certificates, no session tickets. The PSKs are
//! those of [`nvmf_proto::tls`]: the host offers the identity of its host NQN and
//! the subsystem NQN, the target derives the TLS PSK of the identity it is offered
//! from its configured keys.
//!
//! PSKs of both hashes go through OpenSSL's TLS 1.3 PSK session callbacks
//! (`tls_session.rs`, the crate's only `unsafe`): the legacy PSK
//! callbacks that the `openssl` crate binds tie every PSK to SHA-256.
//!
//! The record layer runs over the connection's non-blocking tokio socket: OpenSSL
//! reads it through `SockIo` (`try_read`, up to 256 KiB of ciphertext per call
//! with read-ahead), so a `WouldBlock` becomes `SSL_ERROR_WANT_READ` and tokio's
//! readiness stays exact. Once the handshake is done, OpenSSL's writes are
//! gathered and sent with one `send` per batch (`SockIo::flush_out`).

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use nvmf_proto::tls::{ConfiguredPsk, Derivation, TlsPsk};
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslStream,
    SslVerifyMode, SslVersion,
};
use tokio::net::TcpStream;

use crate::error::TransportError;
use crate::ktls::KtlsState;
use tracing::info;

/// How long a TLS handshake may take (nvmet-tcp waits 10 s for tlshd too).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS handshake record (RFC 8446 §5.1, ContentType
/// handshake = 22): how a port that offers TLS tells a ClientHello from a
/// plain ICReq (PDU type 0).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// OpenSSL's read buffer per connection: the most ciphertext one `recv` takes.
const READ_BUFFER: usize = 256 * 1024;

/// The TLS 1.3 cipher suites of NVMe/TCP.
const CIPHERSUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";

/// The socket as OpenSSL sees it: non-blocking reads of the tokio stream, and
/// writes that either go straight to the socket (the handshake) or, once the
/// session is established, are gathered in `out` so that the records of a whole
/// batch of PDUs leave with one `send` ([`SockIo::flush_out`]) instead of one per
/// 16 KiB record.
#[derive(Debug)]
pub(crate) struct SockIo {
    pub(crate) sock: Arc<TcpStream>,
    /// Ciphertext not yet sent (established sessions only); `out_off` bytes of
    /// it are already on the socket.
    pub(crate) out: Vec<u8>,
    pub(crate) out_off: usize,
    /// Whether writes are gathered in `out` (set after the handshake).
    pub(crate) buffered: bool,
}

impl SockIo {
    fn new(sock: Arc<TcpStream>) -> Self {
        Self {
            sock,
            out: Vec::new(),
            out_off: 0,
            buffered: false,
        }
    }

    /// Ciphertext waiting in `out`.
    pub(crate) fn out_len(&self) -> usize {
        self.out.len() - self.out_off
    }

    /// Sends what `out` holds until the socket would block; returns the bytes sent.
    pub(crate) fn flush_out(&mut self) -> io::Result<usize> {
        let mut sent = 0;
        while self.out_off < self.out.len() {
            match self.sock.try_write(&self.out[self.out_off..]) {
                Ok(n) => {
                    self.out_off += n;
                    sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(sent),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_off = 0;
        Ok(sent)
    }
}

impl Read for SockIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.try_read(buf)
    }
}

impl Write for SockIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.buffered {
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        } else {
            self.sock.try_write(buf)
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn base_context() -> Result<SslContextBuilder, TransportError> {
    let e = |e: openssl::error::ErrorStack| TransportError::Tls(format!("OpenSSL setup: {e}"));
    let mut b = SslContext::builder(SslMethod::tls()).map_err(e)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(e)?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))
        .map_err(e)?;
    b.set_ciphersuites(CIPHERSUITES).map_err(e)?;
    b.set_verify(SslVerifyMode::NONE);
    b.set_num_tickets(0).map_err(e)?;
    b.set_options(SslOptions::NO_TICKET | SslOptions::IGNORE_UNEXPECTED_EOF);
    b.set_mode(SslMode::ACCEPT_MOVING_WRITE_BUFFER | SslMode::ENABLE_PARTIAL_WRITE);
    b.set_read_ahead(true);
    // With read-ahead, OpenSSL fills its whole read buffer with each `recv`:
    // make that buffer large, so that many records arrive per system call (the
    // default is one maximal record, about 16.7 KiB).
    crate::tls_session::set_default_read_buffer_len(&mut b, READ_BUFFER);
    // The traffic secrets, for handing the session to the kernel (ktls.rs);
    // kept only for SSLs that carry a slot, and only until then.
    b.set_keylog_callback(crate::ktls::keylog);
    Ok(b)
}

/// The host's TLS settings for one subsystem: the TLS PSK it offers.
#[derive(Clone)]
pub struct TlsClientConfig {
    ctx: SslContext,
    identity: String,
    ktls: bool,
}

impl std::fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsClientConfig({:?})", self.identity)
    }
}

impl TlsClientConfig {
    /// Offers `psk` (see [`nvmf_proto::tls::host_offers`]).
    pub fn new(psk: TlsPsk) -> Result<Self, TransportError> {
        let e = |e: openssl::error::ErrorStack| TransportError::Tls(format!("OpenSSL setup: {e}"));
        let mut b = base_context()?;
        let identity = psk.identity.clone();
        crate::tls_session::install_client(&mut b, psk).map_err(e)?;
        Ok(Self {
            ctx: b.build(),
            identity,
            ktls: true,
        })
    }

    /// The TLS PSK for a configured key, host NQN and subsystem NQN, with
    /// identity version 0 (what Linux 6.12 offers).
    pub fn from_configured(
        key: &ConfiguredPsk,
        hostnqn: &str,
        subnqn: &str,
        d: Derivation,
    ) -> Result<Self, TransportError> {
        let psk = key.retained(hostnqn, d).tls_psk(0, hostnqn, subnqn, d);
        Self::new(psk)
    }

    /// The PSK identity offered.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether connections hand their record layer to the kernel after the
    /// handshake where the kernel can take it (kernel TLS, the default: the
    /// data path then runs without user-space encryption or copies), or keep
    /// it in OpenSSL.
    pub fn set_kernel_tls(&mut self, on: bool) {
        self.ktls = on;
    }
}

/// The target's TLS settings: the configured PSKs every identity is derived from.
#[derive(Clone)]
pub struct TlsServerConfig {
    ctx: SslContext,
    ktls: bool,
}

impl std::fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServerConfig")
    }
}

impl TlsServerConfig {
    /// Serves any host NQN and subsystem with the TLS PSKs derived from `keys`;
    /// `v0` is the derivation for identity version 0 (version 1 finds its own).
    pub fn new(keys: Vec<ConfiguredPsk>, v0: Derivation) -> Result<Self, TransportError> {
        if keys.is_empty() {
            return Err(TransportError::Tls(
                "TLS needs at least one configured PSK (--tls-key NVMeTLSkey-1:...)".into(),
            ));
        }
        let e = |e: openssl::error::ErrorStack| TransportError::Tls(format!("OpenSSL setup: {e}"));
        let mut b = base_context()?;
        crate::tls_session::install_server(&mut b, crate::tls_session::ServerKeys { keys, v0 })
            .map_err(e)?;
        Ok(Self {
            ctx: b.build(),
            ktls: true,
        })
    }

    /// As [`TlsClientConfig::set_kernel_tls`], for the target's connections.
    pub fn set_kernel_tls(&mut self, on: bool) {
        self.ktls = on;
    }
}

/// An established TLS session over the connection's socket.
pub(crate) struct TlsWire {
    pub(crate) ssl: SslStream<SockIo>,
    /// The directions the kernel carries (kernel TLS); the others go through
    /// OpenSSL in user space.
    pub(crate) ktls: KtlsState,
    /// Small transmit chunks gathered into one record (up to 16 KiB) before
    /// `SSL_write`, so that a batch of small PDUs costs one record, not one each.
    pub(crate) record: Vec<u8>,
}

impl std::fmt::Debug for TlsWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TlsWire({:?}, {:?})",
            self.ssl.ssl().current_cipher().map(|c| c.name()),
            self.ktls
        )
    }
}

/// Runs the handshake on `sock` (client or server side) within
/// [`HANDSHAKE_TIMEOUT`], then hands the record layer to the kernel if `ktls`
/// and the kernel can take it (ktls.rs), and logs which path the connection uses.
pub(crate) async fn handshake(
    sock: Arc<TcpStream>,
    ctx: &SslContext,
    client: bool,
    ktls: bool,
) -> Result<TlsWire, TransportError> {
    let e = |e: openssl::error::ErrorStack| TransportError::Tls(format!("OpenSSL setup: {e}"));
    let mut ssl = Ssl::new(ctx).map_err(e)?;
    if ktls {
        ssl.set_ex_data(crate::ktls::secrets_index().map_err(e)?, Default::default());
        crate::tls_session::set_read_ahead(&ssl, false);
    }
    let mut s = SslStream::new(ssl, SockIo::new(sock.clone())).map_err(e)?;
    let fut = async {
        loop {
            let r = if client { s.connect() } else { s.accept() };
            match r {
                Ok(()) => return Ok(()),
                Err(err) => match err.code() {
                    ErrorCode::WANT_READ => sock
                        .readable()
                        .await
                        .map_err(|e| TransportError::io("TLS handshake", e))?,
                    ErrorCode::WANT_WRITE => sock
                        .writable()
                        .await
                        .map_err(|e| TransportError::io("TLS handshake", e))?,
                    _ => {
                        return Err(TransportError::Tls(format!(
                            "TLS handshake failed: {err} (wrong or missing PSK on one end, or the peer does not speak TLS)"
                        )))
                    }
                },
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .map_err(|_| {
            TransportError::Timeout(format!(
                "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}"
            ))
        })??;
    let state = if ktls {
        crate::ktls::enable(&*sock, s.ssl(), client)
    } else {
        Err(crate::ktls::Unavailable::Disabled)
    };
    let peer = sock.peer_addr().ok();
    let cipher = s.ssl().current_cipher().map(|c| c.name()).unwrap_or("?");
    let state = match state {
        Ok(k) => {
            info!(
                ?peer,
                cipher,
                tx = k.tx,
                rx = k.rx,
                "TLS record layer: kernel TLS"
            );
            k
        }
        Err(why) => {
            info!(
                ?peer,
                cipher, "TLS record layer: OpenSSL in user space ({why})"
            );
            KtlsState {
                tx: false,
                rx: false,
            }
        }
    };
    if !state.rx {
        crate::tls_session::set_read_ahead(s.ssl(), true);
    } else if state.tx && !crate::tls_session::free_buffers(s.ssl()) {
        tracing::debug!("OpenSSL kept its buffers (not empty) after the hand-over to kernel TLS");
    }
    // Forget the secrets (the slot holds them until the SSL is freed otherwise).
    if let Some(slot) = crate::ktls::secrets_index()
        .ok()
        .and_then(|i| s.ssl().ex_data(i))
    {
        if let Ok(mut g) = slot.lock() {
            *g = Default::default();
        }
    }
    s.get_mut().buffered = true;
    Ok(TlsWire {
        ssl: s,
        ktls: state,
        record: Vec::new(),
    })
}

impl TlsClientConfig {
    pub(crate) fn context(&self) -> &SslContext {
        &self.ctx
    }
    pub(crate) fn kernel_tls(&self) -> bool {
        self.ktls
    }
}

impl TlsServerConfig {
    pub(crate) fn context(&self) -> &SslContext {
        &self.ctx
    }
    pub(crate) fn kernel_tls(&self) -> bool {
        self.ktls
    }
}
