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
//! reads and writes it through `SockIo` (`try_read` / `try_write`), so a
//! `WouldBlock` becomes `SSL_ERROR_WANT_READ/WRITE` and tokio's readiness stays exact.

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

/// How long a TLS handshake may take (nvmet-tcp waits 10 s for tlshd too).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS handshake record (RFC 8446 §5.1, ContentType
/// handshake = 22): how a port that offers TLS tells a ClientHello from a
/// plain ICReq (PDU type 0).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The TLS 1.3 cipher suites of NVMe/TCP.
const CIPHERSUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";

/// The socket as OpenSSL sees it: non-blocking reads and writes of the tokio stream.
#[derive(Debug, Clone)]
pub(crate) struct SockIo(pub(crate) Arc<TcpStream>);

impl Read for SockIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for SockIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
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
    Ok(b)
}

/// The host's TLS settings for one subsystem: the TLS PSK it offers.
#[derive(Clone)]
pub struct TlsClientConfig {
    ctx: SslContext,
    identity: String,
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
}

/// The target's TLS settings: the configured PSKs every identity is derived from.
#[derive(Clone)]
pub struct TlsServerConfig {
    ctx: SslContext,
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
        Ok(Self { ctx: b.build() })
    }
}

/// An established TLS session over the connection's socket.
pub(crate) struct TlsWire {
    pub(crate) ssl: SslStream<SockIo>,
    /// Plaintext taken from the queue's transmit buffer that OpenSSL has not
    /// accepted yet (an `SSL_write` to retry with the same bytes).
    pub(crate) pending: Vec<u8>,
    pub(crate) scratch: Vec<u8>,
}

impl std::fmt::Debug for TlsWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TlsWire({:?})",
            self.ssl.ssl().current_cipher().map(|c| c.name())
        )
    }
}

/// Runs the handshake on `sock` (client or server side) within [`HANDSHAKE_TIMEOUT`].
pub(crate) async fn handshake(
    sock: Arc<TcpStream>,
    ctx: &SslContext,
    client: bool,
) -> Result<TlsWire, TransportError> {
    let e = |e: openssl::error::ErrorStack| TransportError::Tls(format!("OpenSSL setup: {e}"));
    let ssl = Ssl::new(ctx).map_err(e)?;
    let mut s = SslStream::new(ssl, SockIo(sock.clone())).map_err(e)?;
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
    Ok(TlsWire {
        ssl: s,
        pending: Vec::new(),
        scratch: vec![0; 64 * 1024],
    })
}

impl TlsClientConfig {
    pub(crate) fn context(&self) -> &SslContext {
        &self.ctx
    }
}

impl TlsServerConfig {
    pub(crate) fn context(&self) -> &SslContext {
        &self.ctx
    }
}
