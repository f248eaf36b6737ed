//! TLS 1.3 external PSKs of either hash, through OpenSSL's PSK *session*
//! callbacks (`SSL_CTX_set_psk_find_session_callback`,
//! `SSL_CTX_set_psk_use_session_callback`, ssl.h). OpenSSL's older PSK
//! callbacks, which the `openssl` crate binds, tie every PSK to SHA-256, so a
//! SHA-384 PSK (`NVMeTLSkey-1:02:`, TLS_AES_256_GCM_SHA384) needs these; the
//! crate binds neither them nor the `SSL_SESSION` setters they need. This file
//! declares those few functions and holds this crate's only `unsafe` (the
//! measured need: SHA-384 keys did not work at all without it).
//!
//! TLS 1.3 binds a PSK to the hash of the cipher suite, and OpenSSL picks the
//! suite before it looks at the PSK, so a SHA-384 PSK met by
//! TLS_AES_128_GCM_SHA256 would be dropped: the server reads the identity from
//! the ClientHello first and keeps only the suite that fits its PSK, and the
//! client offers only the suite of its own PSK.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_uint};
use std::sync::{Arc, OnceLock};

use foreign_types::ForeignTypeRef;
use nvmf_proto::tls::{ConfiguredPsk, Derivation, PskHash, TlsPsk};
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{ClientHelloResponse, SslAlert, SslContext, SslContextBuilder, SslRef};
use openssl_sys as ffi;
use tracing::{debug, warn};

/// What the target derives TLS PSKs from.
pub(crate) struct ServerKeys {
    /// The configured PSKs.
    pub keys: Vec<ConfiguredPsk>,
    /// The derivation of identity version 0 (version 1 finds its own).
    pub v0: Derivation,
}

type FindSessionCb =
    unsafe extern "C" fn(*mut ffi::SSL, *const u8, usize, *mut *mut ffi::SSL_SESSION) -> c_int;
type UseSessionCb = unsafe extern "C" fn(
    *mut ffi::SSL,
    *const ffi::EVP_MD,
    *mut *const u8,
    *mut usize,
    *mut *mut ffi::SSL_SESSION,
) -> c_int;

extern "C" {
    fn SSL_CTX_set_psk_find_session_callback(ctx: *mut ffi::SSL_CTX, cb: Option<FindSessionCb>);
    fn SSL_CTX_set_psk_use_session_callback(ctx: *mut ffi::SSL_CTX, cb: Option<UseSessionCb>);
    fn SSL_SESSION_new() -> *mut ffi::SSL_SESSION;
    fn SSL_SESSION_free(s: *mut ffi::SSL_SESSION);
    fn SSL_SESSION_set1_master_key(s: *mut ffi::SSL_SESSION, key: *const u8, len: usize) -> c_int;
    fn SSL_SESSION_set_cipher(s: *mut ffi::SSL_SESSION, cipher: *const ffi::SSL_CIPHER) -> c_int;
    fn SSL_SESSION_set_protocol_version(s: *mut ffi::SSL_SESSION, version: c_int) -> c_int;
    fn SSL_CIPHER_find(ssl: *mut ffi::SSL, ptr: *const u8) -> *const ffi::SSL_CIPHER;
    fn SSL_client_hello_get0_ext(
        s: *mut ffi::SSL,
        ext_type: c_uint,
        out: *mut *const u8,
        outlen: *mut usize,
    ) -> c_int;
    fn SSL_CTX_set_default_read_buffer_len(ctx: *mut ffi::SSL_CTX, len: usize);
    fn SSL_set_read_ahead(s: *mut ffi::SSL, yes: c_int);
    fn SSL_has_pending(s: *const ffi::SSL) -> c_int;
    fn SSL_free_buffers(s: *mut ffi::SSL) -> c_int;
}

/// Frees OpenSSL's (empty) read and write buffers (`SSL_free_buffers`): once
/// the kernel carries both directions OpenSSL never reads or writes the
/// socket again, and its 256 KiB read buffer would otherwise live as long as
/// the connection. Returns whether they were freed (not if they held data).
pub(crate) fn free_buffers(ssl: &SslRef) -> bool {
    // SAFETY: `ssl` is a live SSL; OpenSSL frees only buffers that are empty
    // and allocates them again if it ever needs them.
    unsafe { SSL_free_buffers(ssl.as_ptr()) == 1 }
}

/// Turns read-ahead on or off for one SSL (`SSL_set_read_ahead`): off during
/// the handshake, so that OpenSSL reads record by record and never takes
/// bytes past the peer's Finished off the socket (the condition for handing
/// the session to the kernel, ktls.rs).
pub(crate) fn set_read_ahead(ssl: &SslRef, on: bool) {
    // SAFETY: `ssl` is a live SSL (an opaque foreign object behind the
    // reference); the call only stores a flag in it.
    unsafe { SSL_set_read_ahead(ssl.as_ptr(), c_int::from(on)) }
}

/// Whether OpenSSL holds received bytes, decrypted or not (`SSL_has_pending`).
pub(crate) fn has_pending(ssl: &SslRef) -> bool {
    // SAFETY: `ssl` is a live SSL; the call only reads its buffers' state.
    unsafe { SSL_has_pending(ssl.as_ptr()) == 1 }
}

/// Sets the size of the read buffer of every SSL made from `b`
/// (`SSL_CTX_set_default_read_buffer_len`, which the `openssl` crate does not
/// bind). With read-ahead, OpenSSL fills that buffer in one read of the socket.
pub(crate) fn set_default_read_buffer_len(b: &mut SslContextBuilder, len: usize) {
    // SAFETY: the builder's SSL_CTX is live; the call only stores `len`.
    unsafe { SSL_CTX_set_default_read_buffer_len(b.as_ptr(), len) }
}

/// Decrypts into the free space of `rx` (at most `limit` bytes, at least one
/// byte of room is made) with `SSL_read`, without first zeroing that space or
/// passing through a scratch buffer: OpenSSL copies the plaintext of its record
/// straight to where the PDU decoder reads it. Returns what `SSL_read` returned.
pub(crate) fn ssl_read_into<S: std::io::Read + std::io::Write>(
    ssl: &mut openssl::ssl::SslStream<S>,
    rx: &mut bytes::BytesMut,
    limit: usize,
) -> Result<usize, openssl::ssl::Error> {
    let limit = limit.max(1);
    nvmf_proto::tcp::decoder::make_room(rx, limit);
    let spare = rx.spare_capacity_mut();
    let take = spare.len().min(limit);
    let n = ssl.ssl_read_uninit(&mut spare[..take])?;
    let n = n.min(take);
    // SAFETY: SSL_read wrote (initialised) the first `n` bytes of the spare
    // capacity it was given, `n <= take <= capacity - len`.
    unsafe { rx.set_len(rx.len() + n) };
    Ok(n)
}

fn server_index() -> Result<Index<SslContext, Arc<ServerKeys>>, ErrorStack> {
    static I: OnceLock<Index<SslContext, Arc<ServerKeys>>> = OnceLock::new();
    if let Some(i) = I.get() {
        return Ok(*i);
    }
    let i = SslContext::new_ex_index()?;
    Ok(*I.get_or_init(|| i))
}

fn client_index() -> Result<Index<SslContext, TlsPsk>, ErrorStack> {
    static I: OnceLock<Index<SslContext, TlsPsk>> = OnceLock::new();
    if let Some(i) = I.get() {
        return Ok(*i);
    }
    let i = SslContext::new_ex_index()?;
    Ok(*I.get_or_init(|| i))
}

/// The cipher suite of a PSK's hash: its name and its ID (RFC 8446 §B.4).
fn suite(hash: PskHash) -> (&'static str, [u8; 2]) {
    match hash {
        PskHash::Sha256 => ("TLS_AES_128_GCM_SHA256", [0x13, 0x01]),
        PskHash::Sha384 => ("TLS_AES_256_GCM_SHA384", [0x13, 0x02]),
    }
}

/// Makes a context serve the PSKs derived from `keys`.
pub(crate) fn install_server(
    b: &mut SslContextBuilder,
    keys: ServerKeys,
) -> Result<(), ErrorStack> {
    b.set_ex_data(server_index()?, Arc::new(keys));
    b.set_client_hello_callback(client_hello);
    // SAFETY: the builder's SSL_CTX is live; the callback is a plain function
    // with the signature ssl.h declares, and needs no user data pointer.
    unsafe { SSL_CTX_set_psk_find_session_callback(b.as_ptr(), Some(find_session)) };
    Ok(())
}

/// Makes a context offer `psk` (and only its hash's cipher suite).
pub(crate) fn install_client(b: &mut SslContextBuilder, psk: TlsPsk) -> Result<(), ErrorStack> {
    b.set_ciphersuites(suite(psk.hash).0)?;
    b.set_ex_data(client_index()?, psk);
    // SAFETY: as in install_server.
    unsafe { SSL_CTX_set_psk_use_session_callback(b.as_ptr(), Some(use_session)) };
    Ok(())
}

/// The identities of a ClientHello's pre_shared_key extension (RFC 8446
/// §4.2.11: `identities<7..2^16-1>` of `opaque identity<1..2^16-1>` and a
/// 4-byte ticket age), read with checked slices.
pub(crate) fn offered_identities(ext: &[u8]) -> Vec<&[u8]> {
    let be16 = |b: &[u8]| {
        b.get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let mut out = Vec::new();
    let Some(len) = be16(ext) else {
        return out;
    };
    let mut ids = ext.get(2..2 + len).unwrap_or(&[]);
    while let Some(n) = be16(ids) {
        let Some(id) = ids.get(2..2 + n) else { break };
        out.push(id);
        ids = ids.get(2 + n + 4..).unwrap_or(&[]);
    }
    out
}

fn server_keys(ssl: &SslRef) -> Option<&Arc<ServerKeys>> {
    server_index()
        .ok()
        .and_then(|i| ssl.ssl_context().ex_data(i))
}

/// Before the cipher suite is chosen: keep only the suite of the PSK the
/// host's first known identity names.
fn client_hello(
    ssl: &mut SslRef,
    _alert: &mut SslAlert,
) -> Result<ClientHelloResponse, ErrorStack> {
    let mut p: *const u8 = std::ptr::null();
    let mut n: usize = 0;
    // SAFETY: `ssl` is the live SSL in its ClientHello callback, the only time
    // this call is valid; OpenSSL points `p`/`n` at the extension's bytes,
    // valid until the callback returns (41 = pre_shared_key).
    let found = unsafe { SSL_client_hello_get0_ext(ssl.as_ptr(), 41, &mut p, &mut n) } == 1;
    let ext = if found && !p.is_null() {
        // SAFETY: as above, `p` points to `n` bytes owned by OpenSSL for this call.
        unsafe { std::slice::from_raw_parts(p, n) }
    } else {
        &[][..]
    };
    let hash = server_keys(ssl).and_then(|k| {
        offered_identities(ext)
            .into_iter()
            .find_map(|id| nvmf_proto::tls::target_lookup(id, &k.keys, k.v0).ok())
            .map(|psk| psk.hash)
    });
    if let Some(h) = hash {
        ssl.set_ciphersuites(suite(h).0)?;
    }
    Ok(ClientHelloResponse::SUCCESS)
}

/// A TLS 1.3 session carrying `key` as its resumption secret, the form in
/// which OpenSSL takes an external PSK. Null on failure.
fn psk_session(ssl: *mut ffi::SSL, key: &[u8], hash: PskHash) -> *mut ffi::SSL_SESSION {
    let id = suite(hash).1;
    // SAFETY: `ssl` is the live SSL* OpenSSL passed to the callback that
    // calls us; `id` is the 2 bytes SSL_CIPHER_find reads.
    let cipher = unsafe { SSL_CIPHER_find(ssl, id.as_ptr()) };
    if cipher.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: no preconditions; returns an owned session or null.
    let sess = unsafe { SSL_SESSION_new() };
    if sess.is_null() {
        return sess;
    }
    // SAFETY: `sess` was just created and is ours; OpenSSL copies `key`;
    // `cipher` is a static description from SSL_CIPHER_find.
    let ok = unsafe {
        SSL_SESSION_set1_master_key(sess, key.as_ptr(), key.len()) == 1
            && SSL_SESSION_set_cipher(sess, cipher) == 1
            && SSL_SESSION_set_protocol_version(sess, ffi::TLS1_3_VERSION) == 1
    };
    if !ok {
        // SAFETY: `sess` is ours and was never handed to OpenSSL.
        unsafe { SSL_SESSION_free(sess) };
        return std::ptr::null_mut();
    }
    sess
}

/// Server side: the session of the PSK of `identity`, or none (the handshake
/// then fails: there are no certificates to fall back on).
unsafe extern "C" fn find_session(
    ssl: *mut ffi::SSL,
    identity: *const u8,
    identity_len: usize,
    sess: *mut *mut ffi::SSL_SESSION,
) -> c_int {
    let run = || {
        // SAFETY: OpenSSL calls this with its live SSL*, valid for the call.
        let r = unsafe { SslRef::from_ptr(ssl) };
        let id = if identity.is_null() {
            &[][..]
        } else {
            // SAFETY: OpenSSL passes the identity bytes and their length,
            // valid for the duration of the call.
            unsafe { std::slice::from_raw_parts(identity, identity_len) }
        };
        let k = server_keys(r)?;
        match nvmf_proto::tls::target_lookup(id, &k.keys, k.v0) {
            Ok(psk) => {
                debug!(identity = %psk.identity, "TLS PSK found");
                let s = psk_session(ssl, psk.key(), psk.hash);
                (!s.is_null()).then_some(s)
            }
            Err(e) => {
                warn!("TLS handshake refused: {e}");
                None
            }
        }
    };
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .ok()
        .flatten();
    // SAFETY: `sess` is OpenSSL's out pointer; a session written there is
    // OpenSSL's from now on, null means "no such PSK".
    unsafe { *sess = found.unwrap_or(std::ptr::null_mut()) };
    1
}

/// Client side: offer the configured PSK. After a HelloRetryRequest OpenSSL
/// passes the digest of the chosen suite; a PSK of another hash is then not offered.
unsafe extern "C" fn use_session(
    ssl: *mut ffi::SSL,
    md: *const ffi::EVP_MD,
    id: *mut *const u8,
    idlen: *mut usize,
    sess: *mut *mut ffi::SSL_SESSION,
) -> c_int {
    let run = || {
        // SAFETY: OpenSSL calls this with its live SSL*.
        let r = unsafe { SslRef::from_ptr(ssl) };
        let psk = client_index()
            .ok()
            .and_then(|i| r.ssl_context().ex_data(i))?;
        if !md.is_null() {
            // SAFETY: `md` is a digest OpenSSL passed; this only reads it.
            let size = unsafe { ffi::EVP_MD_size(md) };
            let want = match psk.hash {
                PskHash::Sha256 => 32,
                PskHash::Sha384 => 48,
            };
            if size != want {
                return None;
            }
        }
        let s = psk_session(ssl, psk.key(), psk.hash);
        (!s.is_null()).then_some((s, psk.identity.as_ptr(), psk.identity.len()))
    };
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .ok()
        .flatten();
    // SAFETY: the out pointers are OpenSSL's. The identity points into the
    // TlsPsk held in the SSL_CTX's ex_data, which outlives every SSL made
    // from that context.
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
