//! The NVMe/TCP secure channel: TLS 1.3 with an external pre-shared key
//! (NVMe/TCP Transport Specification 1.1 §3.6.1, TP 8011), over OpenSSL.
//!
//! Why OpenSSL: rustls has no external-PSK support (docs/design.md). The
//! `openssl` crate binds the TLS 1.3 PSK session callbacks only through
//! OpenSSL's legacy PSK interface, which fixes the PSK hash to SHA-256; a
//! SHA-384 PSK (the `02` keys nvme-cli makes) needs
//! `SSL_CTX_set_psk_find_session_callback` / `..._use_session_callback` and
//! the `SSL_SESSION` setters, which neither crate binds. Those few calls are
//! declared here and are this crate's only `unsafe`.
//!
//! What the peer sees: TLS 1.3 only, cipher suites TLS_AES_128_GCM_SHA256 and
//! TLS_AES_256_GCM_SHA384 (the one matching the PSK's hash is negotiated),
//! (EC)DHE with the PSK (psk_dhe_ke, which the kernel's tlshd offers), no
//! certificates and no session tickets (a NewSessionTicket after the handshake
//! would reach the kernel's kTLS as a record it cannot take).
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};

use foreign_types::ForeignTypeRef;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslRef,
    SslStream, SslVersion,
};
use openssl_sys as ffi;
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::error::TransportError;

/// How long a TLS handshake may take (nvmet's `tls_handshake_timeout`: 10 s).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The hash a PSK is bound to (TLS 1.3 binds every PSK to one hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PskHash {
    /// SHA-256: cipher suite TLS_AES_128_GCM_SHA256 (32-byte PSKs).
    Sha256,
    /// SHA-384: cipher suite TLS_AES_256_GCM_SHA384 (48-byte PSKs).
    Sha384,
}

impl PskHash {
    /// The TLS 1.3 cipher suite ID (RFC 8446 §B.4).
    fn suite(self) -> [u8; 2] {
        match self {
            Self::Sha256 => [0x13, 0x01],
            Self::Sha384 => [0x13, 0x02],
        }
    }
}

/// A TLS PSK with the identity it is offered under.
#[derive(Clone)]
pub struct TlsPsk {
    /// The PSK identity (e.g. `NVMe0R01 <hostnqn> <subnqn>`).
    pub identity: Vec<u8>,
    /// The PSK itself.
    pub key: Zeroizing<Vec<u8>>,
    /// Its hash.
    pub hash: PskHash,
}

impl std::fmt::Debug for TlsPsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPsk")
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Finds the PSK for an identity a host offers (`None`: unknown identity,
/// the handshake fails).
pub type PskLookup = dyn Fn(&[u8]) -> Option<TlsPsk> + Send + Sync;

/// What a controller needs to accept TLS connections.
#[derive(Clone)]
pub struct TlsServerConfig {
    ctx: SslContext,
    lookup: Arc<PskLookup>,
}

impl std::fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServerConfig")
    }
}

/// What a host needs to open a TLS connection: the PSKs to offer, in order
/// (one is tried per connection attempt; see [`connect_tls`]).
#[derive(Debug, Clone)]
pub struct TlsClientConfig {
    /// The PSK offered.
    pub psk: TlsPsk,
}

fn ssl_index() -> Result<openssl::ex_data::Index<Ssl, Arc<PskLookup>>, TransportError> {
    static I: OnceLock<openssl::ex_data::Index<Ssl, Arc<PskLookup>>> = OnceLock::new();
    if let Some(i) = I.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index().map_err(tls_err("allocating an ex_data index"))?;
    Ok(*I.get_or_init(|| i))
}

fn client_index() -> Result<openssl::ex_data::Index<Ssl, TlsPsk>, TransportError> {
    static I: OnceLock<openssl::ex_data::Index<Ssl, TlsPsk>> = OnceLock::new();
    if let Some(i) = I.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index().map_err(tls_err("allocating an ex_data index"))?;
    Ok(*I.get_or_init(|| i))
}

fn tls_err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> TransportError {
    move |e| TransportError::Tls(format!("{what}: {e}"))
}

/// TLS 1.3 only, both NVMe cipher suites, no tickets, no certificates.
fn base_context() -> Result<SslContextBuilder, TransportError> {
    let mut b = SslContextBuilder::new(SslMethod::tls()).map_err(tls_err("creating a context"))?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(tls_err("TLS version"))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))
        .map_err(tls_err("TLS version"))?;
    b.set_ciphersuites("TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384")
        .map_err(tls_err("cipher suites"))?;
    b.set_options(SslOptions::NO_TICKET);
    b.set_num_tickets(0).map_err(tls_err("session tickets"))?;
    b.set_mode(SslMode::ENABLE_PARTIAL_WRITE | SslMode::ACCEPT_MOVING_WRITE_BUFFER);
    Ok(b)
}

// OpenSSL 3.0 functions the Rust bindings lack (ssl.h).
type FindSessionCb = unsafe extern "C" fn(
    *mut ffi::SSL,
    *const u8,
    usize,
    *mut *mut ffi::SSL_SESSION,
) -> std::ffi::c_int;
type UseSessionCb = unsafe extern "C" fn(
    *mut ffi::SSL,
    *const ffi::EVP_MD,
    *mut *const u8,
    *mut usize,
    *mut *mut ffi::SSL_SESSION,
) -> std::ffi::c_int;
extern "C" {
    fn SSL_CTX_set_psk_find_session_callback(ctx: *mut ffi::SSL_CTX, cb: Option<FindSessionCb>);
    fn SSL_CTX_set_psk_use_session_callback(ctx: *mut ffi::SSL_CTX, cb: Option<UseSessionCb>);
    fn SSL_SESSION_new() -> *mut ffi::SSL_SESSION;
    fn SSL_SESSION_set1_master_key(
        s: *mut ffi::SSL_SESSION,
        key: *const u8,
        len: usize,
    ) -> std::ffi::c_int;
    fn SSL_SESSION_set_cipher(
        s: *mut ffi::SSL_SESSION,
        cipher: *const ffi::SSL_CIPHER,
    ) -> std::ffi::c_int;
    fn SSL_SESSION_set_protocol_version(
        s: *mut ffi::SSL_SESSION,
        version: std::ffi::c_int,
    ) -> std::ffi::c_int;
    fn SSL_CIPHER_find(ssl: *mut ffi::SSL, ptr: *const u8) -> *const ffi::SSL_CIPHER;
    fn SSL_SESSION_free(s: *mut ffi::SSL_SESSION);
    fn SSL_client_hello_get0_ext(
        s: *mut ffi::SSL,
        ext_type: std::ffi::c_uint,
        out: *mut *const u8,
        outlen: *mut usize,
    ) -> std::ffi::c_int;
}

/// The identities of a ClientHello's pre_shared_key extension (RFC 8446
/// §4.2.11: `identities<7..2^16-1>` of `opaque identity<1..2^16-1>` and a
/// 4-byte ticket age), read with checked slices.
fn offered_identities(ext: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let Some(len) = ext
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return out;
    };
    let mut ids = ext.get(2..2 + len).unwrap_or(&[]);
    while let Some(n) = ids
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    {
        let Some(id) = ids.get(2..2 + n) else { break };
        out.push(id);
        ids = ids.get(2 + n + 4..).unwrap_or(&[]);
    }
    out
}

/// TLS 1.3 binds a PSK to the hash of the cipher suite, and OpenSSL picks the
/// suite before it looks at the PSK: a SHA-384 PSK offered beside both suites
/// would meet TLS_AES_128_GCM_SHA256 and be dropped. So the server reads the
/// offered identity from the ClientHello first and keeps only the suite that
/// fits its PSK.
fn client_hello(
    ssl: &mut SslRef,
    _alert: &mut openssl::ssl::SslAlert,
) -> Result<openssl::ssl::ClientHelloResponse, openssl::error::ErrorStack> {
    let mut p: *const u8 = std::ptr::null();
    let mut n: usize = 0;
    // SAFETY: `ssl` is the live SSL in its ClientHello callback, the only time
    // this call is valid; OpenSSL sets `p`/`n` to the extension's bytes, valid
    // until the callback returns.
    let found = unsafe { SSL_client_hello_get0_ext(ssl.as_ptr(), 41, &mut p, &mut n) } == 1;
    let ext = if found && !p.is_null() {
        // SAFETY: as above: `p` points to `n` bytes owned by OpenSSL for this call.
        unsafe { std::slice::from_raw_parts(p, n) }
    } else {
        &[][..]
    };
    let hash = ssl_index()
        .ok()
        .and_then(|i| ssl.ex_data(i))
        .and_then(|lookup| {
            offered_identities(ext)
                .into_iter()
                .find_map(|id| lookup(id))
        })
        .map(|psk| psk.hash);
    match hash {
        Some(PskHash::Sha384) => ssl.set_ciphersuites("TLS_AES_256_GCM_SHA384")?,
        Some(PskHash::Sha256) => ssl.set_ciphersuites("TLS_AES_128_GCM_SHA256")?,
        None => {}
    }
    Ok(openssl::ssl::ClientHelloResponse::SUCCESS)
}

/// A TLS 1.3 session carrying `psk` as its resumption secret: how OpenSSL
/// represents an external PSK. Null on failure.
fn psk_session(ssl: *mut ffi::SSL, psk: &TlsPsk) -> *mut ffi::SSL_SESSION {
    let suite = psk.hash.suite();
    // SAFETY: `ssl` is the live SSL* OpenSSL passed to the callback that calls
    // us; `suite` is a 2-byte array, the length SSL_CIPHER_find reads.
    let cipher = unsafe { SSL_CIPHER_find(ssl, suite.as_ptr()) };
    if cipher.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: SSL_SESSION_new has no preconditions; it returns an owned
    // session or null.
    let sess = unsafe { SSL_SESSION_new() };
    if sess.is_null() {
        return sess;
    }
    // SAFETY: `sess` is the session just created and owned here; the key
    // pointer and length describe `psk.key`, which OpenSSL copies; `cipher`
    // is a static cipher description from SSL_CIPHER_find.
    let ok = unsafe {
        SSL_SESSION_set1_master_key(sess, psk.key.as_ptr(), psk.key.len()) == 1
            && SSL_SESSION_set_cipher(sess, cipher) == 1
            && SSL_SESSION_set_protocol_version(sess, ffi::TLS1_3_VERSION) == 1
    };
    if !ok {
        // SAFETY: `sess` is ours and not handed to OpenSSL.
        unsafe { SSL_SESSION_free(sess) };
        return std::ptr::null_mut();
    }
    sess
}

/// Server side: the host offered `identity`; answer with the PSK's session,
/// or no session (the PSK is unknown and the handshake fails).
unsafe extern "C" fn find_session(
    ssl: *mut ffi::SSL,
    identity: *const u8,
    identity_len: usize,
    sess: *mut *mut ffi::SSL_SESSION,
) -> std::ffi::c_int {
    let run = || {
        // SAFETY: OpenSSL calls this with its live SSL*, for the duration of
        // the call.
        let ssl_ref = unsafe { SslRef::from_ptr(ssl) };
        let id = if identity.is_null() {
            &[][..]
        } else {
            // SAFETY: OpenSSL passes the identity's bytes and length, valid
            // for the duration of the call.
            unsafe { std::slice::from_raw_parts(identity, identity_len) }
        };
        let lookup = ssl_index().ok().and_then(|i| ssl_ref.ex_data(i))?;
        let psk = lookup(id)?;
        let s = psk_session(ssl, &psk);
        (!s.is_null()).then_some(s)
    };
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .ok()
        .flatten();
    // SAFETY: `sess` is OpenSSL's out pointer; a session written there is
    // owned by OpenSSL from now on (null means "no PSK").
    unsafe { *sess = found.unwrap_or(std::ptr::null_mut()) };
    1
}

/// Client side: offer the configured PSK. When OpenSSL passes a digest (after
/// a HelloRetryRequest), a PSK of another hash is not offered.
unsafe extern "C" fn use_session(
    ssl: *mut ffi::SSL,
    md: *const ffi::EVP_MD,
    id: *mut *const u8,
    idlen: *mut usize,
    sess: *mut *mut ffi::SSL_SESSION,
) -> std::ffi::c_int {
    let run = || {
        // SAFETY: OpenSSL calls this with its live SSL*.
        let ssl_ref = unsafe { SslRef::from_ptr(ssl) };
        let psk = client_index().ok().and_then(|i| ssl_ref.ex_data(i))?;
        if !md.is_null() {
            // SAFETY: `md` is a digest OpenSSL passed; EVP_MD_get_size only reads it.
            let size = unsafe { ffi::EVP_MD_size(md) };
            let want = match psk.hash {
                PskHash::Sha256 => 32,
                PskHash::Sha384 => 48,
            };
            if size != want {
                return None;
            }
        }
        let s = psk_session(ssl, psk);
        (!s.is_null()).then_some((s, psk.identity.as_ptr(), psk.identity.len()))
    };
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .ok()
        .flatten();
    // SAFETY: the out pointers are OpenSSL's. The identity points into the
    // TlsPsk held in this SSL's ex_data, which lives as long as the SSL.
    unsafe {
        match found {
            Some((s, p, n)) => {
                *sess = s;
                *id = p;
                *idlen = n;
            }
            None => *sess = std::ptr::null_mut(),
        }
    }
    1
}

impl TlsServerConfig {
    /// A controller's TLS configuration: `lookup` maps the identity a host
    /// offers to its PSK.
    pub fn new(lookup: Arc<PskLookup>) -> Result<Self, TransportError> {
        let mut b = base_context()?;
        // SAFETY: the builder's SSL_CTX is live; the callback is a plain
        // function with the signature ssl.h declares.
        unsafe { SSL_CTX_set_psk_find_session_callback(b.as_ptr(), Some(find_session)) };
        b.set_client_hello_callback(client_hello);
        b.set_verify(openssl::ssl::SslVerifyMode::NONE);
        Ok(Self {
            ctx: b.build(),
            lookup,
        })
    }
}

/// A non-blocking socket as `Read + Write` for OpenSSL: would-block comes back
/// as `WouldBlock`, which OpenSSL turns into WANT_READ / WANT_WRITE.
#[derive(Debug)]
pub struct NbSocket(pub TcpStream);

impl Read for NbSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for NbSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TLS stream over a non-blocking socket.
pub type TlsStream = SslStream<NbSocket>;

/// Drives a handshake to its end, waiting for the socket between steps.
async fn handshake(mut s: TlsStream, server: bool) -> Result<TlsStream, TransportError> {
    loop {
        let r = if server { s.accept() } else { s.connect() };
        match r {
            Ok(()) => return Ok(s),
            Err(e) if e.code() == ErrorCode::WANT_READ => {
                s.get_ref()
                    .0
                    .readable()
                    .await
                    .map_err(|e| TransportError::io("TLS handshake", e))?;
            }
            Err(e) if e.code() == ErrorCode::WANT_WRITE => {
                s.get_ref()
                    .0
                    .writable()
                    .await
                    .map_err(|e| TransportError::io("TLS handshake", e))?;
            }
            Err(e) => {
                return Err(TransportError::Tls(format!(
                    "TLS handshake failed: {}",
                    e.ssl_error()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.to_string())
                )))
            }
        }
    }
}

/// Runs the server side of the handshake on an accepted socket.
pub async fn accept_tls(
    tcp: TcpStream,
    cfg: &TlsServerConfig,
) -> Result<TlsStream, TransportError> {
    let mut ssl = Ssl::new(&cfg.ctx).map_err(tls_err("creating a TLS session"))?;
    ssl.set_ex_data(ssl_index()?, cfg.lookup.clone());
    let s = SslStream::new(ssl, NbSocket(tcp)).map_err(tls_err("creating a TLS stream"))?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(s, true))
        .await
        .map_err(|_| {
            TransportError::Timeout(format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"))
        })?
}

/// Runs the client side of the handshake on a connected socket, offering `cfg.psk`.
pub async fn connect_tls(
    tcp: TcpStream,
    cfg: &TlsClientConfig,
) -> Result<TlsStream, TransportError> {
    static CTX: OnceLock<Result<SslContext, String>> = OnceLock::new();
    let ctx = CTX
        .get_or_init(|| {
            let mut b = base_context().map_err(|e| e.to_string())?;
            // SAFETY: the builder's SSL_CTX is live; the callback has the
            // signature ssl.h declares.
            unsafe { SSL_CTX_set_psk_use_session_callback(b.as_ptr(), Some(use_session)) };
            b.set_verify(openssl::ssl::SslVerifyMode::NONE);
            Ok(b.build())
        })
        .as_ref()
        .map_err(|e| TransportError::Tls(e.clone()))?;
    let mut ssl = Ssl::new(ctx).map_err(tls_err("creating a TLS session"))?;
    // Offer only the suite the PSK's hash fits (TLS 1.3 binds the two).
    ssl.set_ciphersuites(match cfg.psk.hash {
        PskHash::Sha256 => "TLS_AES_128_GCM_SHA256",
        PskHash::Sha384 => "TLS_AES_256_GCM_SHA384",
    })
    .map_err(tls_err("cipher suites"))?;
    ssl.set_ex_data(client_index()?, cfg.psk.clone());
    let s = SslStream::new(ssl, NbSocket(tcp)).map_err(tls_err("creating a TLS stream"))?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(s, false))
        .await
        .map_err(|_| {
            TransportError::Timeout(format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"))
        })?
}

/// The first byte of a TLS handshake record (RFC 8446 §5.1, ContentType
/// handshake): how a listener tells a ClientHello from a plain ICReq (type 0).
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

#[cfg(test)]
mod tests {
    use super::offered_identities;

    #[test]
    fn pre_shared_key_identities_are_read_with_checked_slices() {
        // Two identities ("ab", "xyz"), each with a ticket age, then binders.
        let ext = [
            0, 13, 0, 2, b'a', b'b', 0, 0, 0, 0, 0, 3, b'x', b'y', b'z', 0, 0, 0, 0, 0, 33,
        ];
        assert_eq!(offered_identities(&ext), vec![&b"ab"[..], &b"xyz"[..]]);
        for cut in 0..ext.len() {
            let _ = offered_identities(&ext[..cut]);
        }
        assert!(offered_identities(&[0xff, 0xff, 0, 9]).is_empty());
    }
}
