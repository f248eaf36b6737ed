//! Kernel TLS: after the TLS 1.3 handshake, the record layer of a connection
//! moves into the Linux kernel (the `tls` upper-layer protocol,
//! Documentation/networking/tls.rst), so the data path is the plain one again:
//! `writev` of plaintext PDUs, which the kernel encrypts into records, and
//! `recv` of plaintext, which the kernel decrypts. No record passes through
//! user space and no plaintext is copied once more each way.
//!
//! Why not OpenSSL's own kTLS (`SSL_OP_ENABLE_KTLS`): OpenSSL only hands a
//! session to the kernel when it talks to the socket through its own socket
//! BIO, and our sessions run over the tokio socket through `SockIo` (so that
//! readiness stays with tokio). So we do what tlshd does for the kernel's NVMe
//! host: take the traffic secrets of the handshake (OpenSSL hands them to the
//! key-log callback, `SSL_CTX_set_keylog_callback`), derive each direction's
//! key and IV (RFC 8446 §7.3: HKDF-Expand-Label(secret, "key"/"iv", "", n)),
//! and give them to the kernel with `setsockopt(SOL_TLS, TLS_TX/TLS_RX)`.
//!
//! Safe only when no application-data record has gone either way through
//! OpenSSL: the handshake runs without read-ahead (OpenSSL reads record by
//! record and never past the peer's Finished; checked with `SSL_has_pending`),
//! and we issue no session tickets, so both record sequence numbers start at 0.
//! Records the kernel cannot hand over as data (alerts, post-handshake
//! handshake messages such as a NewSessionTicket) make `recv` fail with EIO;
//! [`recv_control`] then reads that record with its type.
//!
//! This module's `unsafe` is the socket calls that take C structures
//! (`setsockopt` with `tls12_crypto_info_aes_gcm_*`, `sendmsg`/`recvmsg` with a
//! `SOL_TLS` control message), for which neither std nor socket2 has a wrapper.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, OnceLock};

use openssl::ex_data::Index;
use openssl::ssl::{Ssl, SslRef};
use sha2::{Sha256, Sha384};
use zeroize::{Zeroize, Zeroizing};

/// `SOL_TLS` (linux/socket.h).
const SOL_TLS: c_int = 282;
/// `TCP_ULP` (linux/tcp.h).
const TCP_ULP: c_int = 31;
/// `TLS_TX`, `TLS_RX` (linux/tls.h): the socket options that install a direction.
const TLS_TX: c_int = 1;
const TLS_RX: c_int = 2;
/// `TLS_SET_RECORD_TYPE` / `TLS_GET_RECORD_TYPE`: the control messages that
/// carry a record's content type on `sendmsg` / `recvmsg`.
const TLS_SET_RECORD_TYPE: c_int = 1;
const TLS_GET_RECORD_TYPE: c_int = 2;
/// `TLS_1_3_VERSION` (linux/tls.h).
const TLS_1_3_VERSION: u16 = 0x0304;
/// `TLS_CIPHER_AES_GCM_128` / `_256` (linux/tls.h).
const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
/// TLS record content types (RFC 8446 §5.1).
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message types after the handshake (RFC 8446 §4.6).
const HS_NEW_SESSION_TICKET: u8 = 4;

/// `struct tls12_crypto_info_aes_gcm_128` / `_256` (linux/tls.h; the same
/// layout serves TLS 1.3): the 12-byte IV is `salt` (4) then `iv` (8).
#[repr(C)]
struct CryptoInfo<const K: usize> {
    version: u16,
    cipher_type: u16,
    iv: [u8; 8],
    key: [u8; K],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

impl<const K: usize> Drop for CryptoInfo<K> {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
        self.salt.zeroize();
    }
}

/// Which directions of a connection the kernel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KtlsState {
    /// The kernel encrypts what we send.
    pub tx: bool,
    /// The kernel decrypts what we receive.
    pub rx: bool,
}

/// The traffic secrets of one handshake, as the key-log callback saw them.
#[derive(Default)]
pub(crate) struct Secrets {
    client: Option<Zeroizing<Vec<u8>>>,
    server: Option<Zeroizing<Vec<u8>>>,
}

pub(crate) type SecretSlot = Arc<Mutex<Secrets>>;

/// The per-SSL slot the key-log callback fills.
pub(crate) fn secrets_index() -> Result<Index<Ssl, SecretSlot>, openssl::error::ErrorStack> {
    static I: OnceLock<Index<Ssl, SecretSlot>> = OnceLock::new();
    if let Some(i) = I.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index()?;
    Ok(*I.get_or_init(|| i))
}

/// The key-log callback: keeps the first application traffic secrets
/// (`CLIENT_TRAFFIC_SECRET_0`, `SERVER_TRAFFIC_SECRET_0`) of SSLs that have a
/// slot, and nothing else. Nothing is logged anywhere.
pub(crate) fn keylog(ssl: &SslRef, line: &str) {
    let Some(slot) = secrets_index().ok().and_then(|i| ssl.ex_data(i)) else {
        return;
    };
    let mut it = line.split(' ');
    let (Some(label), Some(_random), Some(hex)) = (it.next(), it.next(), it.next()) else {
        return;
    };
    let Some(secret) = unhex(hex) else { return };
    let Ok(mut s) = slot.lock() else { return };
    match label {
        "CLIENT_TRAFFIC_SECRET_0" => s.client = Some(secret),
        "SERVER_TRAFFIC_SECRET_0" => s.server = Some(secret),
        _ => {}
    }
}

fn unhex(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) || b.len() > 128 {
        return None;
    }
    let nib = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut out = Zeroizing::new(Vec::with_capacity(b.len() / 2));
    for p in b.chunks_exact(2) {
        out.push(nib(p[0])? << 4 | nib(p[1])?);
    }
    Some(out)
}

/// HKDF-Expand-Label(secret, label, "", out.len()) of RFC 8446 §7.1, with
/// SHA-384 or SHA-256 (the hash of the cipher suite).
fn expand_label(sha384: bool, secret: &[u8], label: &str, out: &mut [u8]) -> Option<()> {
    let full = format!("tls13 {label}");
    let mut info = Vec::with_capacity(4 + full.len());
    info.extend_from_slice(&(out.len() as u16).to_be_bytes());
    info.push(full.len() as u8);
    info.extend_from_slice(full.as_bytes());
    info.push(0);
    if sha384 {
        hkdf::Hkdf::<Sha384>::from_prk(secret)
            .ok()?
            .expand(&info, out)
            .ok()
    } else {
        hkdf::Hkdf::<Sha256>::from_prk(secret)
            .ok()?
            .expand(&info, out)
            .ok()
    }
}

/// Why a connection stays on the user-space record layer.
#[derive(Debug)]
pub(crate) enum Unavailable {
    /// Switched off by configuration.
    Disabled,
    /// The kernel has no `tls` ULP (no CONFIG_TLS, or the module is not loaded).
    NoUlp(io::Error),
    /// Something else (cipher, secrets, buffered records, a refused direction).
    Other(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Disabled => f.write_str("kernel TLS switched off"),
            Self::NoUlp(e) => write!(
                f,
                "the kernel has no TLS ULP ({e}; needs CONFIG_TLS and `modprobe tls`)"
            ),
            Self::Other(s) => f.write_str(s),
        }
    }
}

fn setsockopt<T>(fd: c_int, level: c_int, name: c_int, val: &T, len: usize) -> io::Result<()> {
    // SAFETY: `val` points to `len` readable bytes (a repr(C) value or a byte
    // string of that length) for the duration of the call; the kernel copies them.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast::<c_void>(),
            len as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn install<const K: usize>(
    fd: c_int,
    dir: c_int,
    cipher: u16,
    secret: &[u8],
    sha384: bool,
) -> io::Result<()> {
    let mut key = Zeroizing::new([0u8; K]);
    let mut iv = Zeroizing::new([0u8; 12]);
    let ok = expand_label(sha384, secret, "key", &mut key[..])
        .and_then(|_| expand_label(sha384, secret, "iv", &mut iv[..]));
    if ok.is_none() {
        return Err(io::Error::other("HKDF-Expand-Label failed"));
    }
    let mut info = CryptoInfo::<K> {
        version: TLS_1_3_VERSION,
        cipher_type: cipher,
        iv: [0; 8],
        key: *key,
        salt: [0; 4],
        rec_seq: [0; 8],
    };
    info.salt.copy_from_slice(&iv[..4]);
    info.iv.copy_from_slice(&iv[4..]);
    setsockopt(
        fd,
        SOL_TLS,
        dir,
        &info,
        std::mem::size_of::<CryptoInfo<K>>(),
    )
}

/// Moves the record layer of an established TLS 1.3 session on `sock` into
/// the kernel. `client`: which side we are. On `Err`, nothing was installed
/// and the user-space path carries on (the socket may have the `tls` ULP
/// attached, which passes bytes through untouched until a direction is set).
/// A partial result (TX installed, RX refused) is `Ok` with `rx` false.
pub(crate) fn enable(
    sock: &impl AsRawFd,
    ssl: &SslRef,
    client: bool,
) -> Result<KtlsState, Unavailable> {
    let other = |s: &str| Unavailable::Other(s.to_string());
    if crate::tls_session::has_pending(ssl) {
        return Err(other("OpenSSL holds received bytes past the handshake"));
    }
    let cipher = ssl
        .current_cipher()
        .and_then(|c| c.standard_name())
        .unwrap_or("");
    let (kernel_cipher, sha384, key_len) = match cipher {
        "TLS_AES_128_GCM_SHA256" => (TLS_CIPHER_AES_GCM_128, false, 16),
        "TLS_AES_256_GCM_SHA384" => (TLS_CIPHER_AES_GCM_256, true, 32),
        c => {
            return Err(Unavailable::Other(format!(
                "cipher suite {c} not offloaded"
            )))
        }
    };
    let slot = secrets_index()
        .ok()
        .and_then(|i| ssl.ex_data(i))
        .ok_or_else(|| other("no secret slot"))?;
    let (tx_secret, rx_secret) = {
        let mut s = slot.lock().map_err(|_| other("secret slot poisoned"))?;
        let (c, sv) = (s.client.take(), s.server.take());
        match (c, sv) {
            (Some(c), Some(sv)) if client => (c, sv),
            (Some(c), Some(sv)) => (sv, c),
            _ => return Err(other("the handshake's traffic secrets were not seen")),
        }
    };
    let fd = sock.as_raw_fd();
    setsockopt(fd, libc::SOL_TCP, TCP_ULP, b"tls", 3).map_err(Unavailable::NoUlp)?;
    let put = |dir, secret: &[u8]| {
        if key_len == 16 {
            install::<16>(fd, dir, kernel_cipher, secret, sha384)
        } else {
            install::<32>(fd, dir, kernel_cipher, secret, sha384)
        }
    };
    put(TLS_TX, &tx_secret)
        .map_err(|e| Unavailable::Other(format!("setsockopt(SOL_TLS, TLS_TX): {e}")))?;
    let rx = match put(TLS_RX, &rx_secret) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("kernel TLS: receive direction refused ({e}); decrypting in user space");
            false
        }
    };
    Ok(KtlsState { tx: true, rx })
}

/// What [`recv_control`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// The peer's close_notify: end of stream.
    CloseNotify,
    /// A record we may ignore (a NewSessionTicket).
    Ignored,
    /// Nothing to read now.
    WouldBlock,
}

/// Reads the non-data record at the head of a kTLS receive queue (after `recv`
/// failed with EIO) together with its content type.
pub(crate) fn recv_control(sock: &impl AsRawFd) -> io::Result<Control> {
    let mut data = vec![0u8; 16 * 1024 + 256];
    // cmsg space for one c_uchar (the record type), generously aligned.
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: msg points to one iovec over `data` and to `cbuf`, all live and
    // writable for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(Control::WouldBlock)
        } else {
            Err(e)
        };
    }
    let n = n as usize;
    let mut rtype = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == SOL_TLS && (*c).cmsg_type == TLS_GET_RECORD_TYPE {
                rtype = Some(*libc::CMSG_DATA(c));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let body = data.get(..n).unwrap_or(&[]);
    match rtype {
        Some(CONTENT_ALERT) if body.get(1) == Some(&0) => Ok(Control::CloseNotify),
        Some(CONTENT_ALERT) => Err(io::Error::other(format!(
            "TLS alert from the peer: level {:?}, description {:?}",
            body.first(),
            body.get(1)
        ))),
        Some(CONTENT_HANDSHAKE) if body.first() == Some(&HS_NEW_SESSION_TICKET) => {
            Ok(Control::Ignored)
        }
        Some(CONTENT_HANDSHAKE) => Err(io::Error::other(format!(
            "post-handshake message type {:?} (KeyUpdate is not supported with kernel TLS)",
            body.first()
        ))),
        // Application data after all (the EIO came before it): not expected
        // here, since only EIO leads here; refuse rather than lose bytes.
        t => Err(io::Error::other(format!(
            "unexpected TLS record type {t:?} on a kernel TLS socket"
        ))),
    }
}

/// Sends a close_notify alert (RFC 8446 §6.1) through the kernel's record
/// layer: a record of type alert, with `sendmsg` and `TLS_SET_RECORD_TYPE`.
pub(crate) fn send_close_notify(sock: &impl AsRawFd) -> io::Result<()> {
    let alert = [1u8, 0]; // warning, close_notify
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: alert.as_ptr() as *mut c_void,
        iov_len: alert.len(),
    };
    // SAFETY: plain data, zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(1) } as _;
    // SAFETY: the control buffer (64 bytes) holds CMSG_SPACE(1) bytes; the
    // header and its one data byte are written inside it; the iovec points to
    // `alert`, which the kernel only reads.
    let n = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = SOL_TLS;
        (*c).cmsg_type = TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(c) = CONTENT_ALERT;
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_DONTWAIT)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8448 §3 (Simple 1-RTT Handshake): the server's application traffic
    /// secret and the key and IV derived from it.
    #[test]
    fn traffic_key_and_iv_follow_rfc_8448() {
        let secret =
            unhex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643").expect("hex");
        let mut key = [0u8; 16];
        let mut iv = [0u8; 12];
        expand_label(false, &secret, "key", &mut key).expect("key");
        expand_label(false, &secret, "iv", &mut iv).expect("iv");
        assert_eq!(
            key.to_vec(),
            *unhex("9f02283b6c9c07efc26bb9f2ac92e356").expect("hex")
        );
        assert_eq!(
            iv.to_vec(),
            *unhex("cf782b88dd83549aadf1e984").expect("hex")
        );
    }

    #[test]
    fn unhex_rejects_odd_and_non_hex() {
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
        assert_eq!(*unhex("00ff").expect("hex"), vec![0, 255]);
    }

    #[test]
    fn crypto_info_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<CryptoInfo<16>>(), 40);
        assert_eq!(std::mem::size_of::<CryptoInfo<32>>(), 56);
    }
}
