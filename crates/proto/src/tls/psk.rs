//! Pre-shared keys of the NVMe/TCP secure channel.
//!
//! * The **configured PSK** is what an administrator types:
//!   `NVMeTLSkey-1:hh:<base64(key || crc32(key))>:` (libnvme's PSK interchange
//!   format; `hh` 00 = used as is, 01 = SHA-256 / 32 bytes, 02 = SHA-384 / 48 bytes).
//! * The **retained PSK** is HKDF-Expand-Label(HKDF-Extract(0, configured),
//!   "HostNQN", host NQN, length) with the hash `hh` names (TCP transport §3.6.1.3).
//! * The **TLS PSK** handed to TLS 1.3 is HKDF-Expand-Label(HKDF-Extract(0,
//!   retained), "nvme-tls-psk", context, length), where the context is the PSK
//!   identity for identity version 0 and `"<hh> <digest>"` for version 1.
//! * The **PSK identity** is `NVMe0R<hh> <hostnqn> <subnqn>` or
//!   `NVMe1R<hh> <hostnqn> <subnqn> <digest>`, digest = base64(HMAC(retained,
//!   hostnqn " " subnqn " NVMe-over-Fabrics")).
//!
//! These are exactly what `nvme gen-tls-key` / `nvme check-tls-key --insert`
//! (libnvme) compute and put in the kernel's `.nvme` keyring; the known-answer
//! tests below come from nvme-cli 2.13 in a Debian 13 guest.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384};
use zeroize::Zeroizing;

/// Hash of a PSK: the `hh` of the interchange format and of the identity, and
/// the hash of the TLS 1.3 cipher suite the TLS PSK goes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PskHash {
    /// SHA-256: 32-byte keys, TLS_AES_128_GCM_SHA256.
    Sha256 = 1,
    /// SHA-384: 48-byte keys, TLS_AES_256_GCM_SHA384.
    Sha384 = 2,
}

impl PskHash {
    /// The `hh` value (1 or 2).
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The hash for an `hh` value.
    pub fn from_id(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Sha256),
            2 => Some(Self::Sha384),
            _ => None,
        }
    }

    /// Output length of the hash, which is also the key length it goes with.
    pub fn len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
        }
    }

    /// Always false (a hash has a non-zero length); for clippy's `len` rule.
    pub fn is_empty(self) -> bool {
        false
    }

    /// The TLS 1.3 cipher suite (IANA name) a TLS PSK of this hash is used with.
    pub fn cipher_suite(self) -> &'static str {
        match self {
            Self::Sha256 => "TLS_AES_128_GCM_SHA256",
            Self::Sha384 => "TLS_AES_256_GCM_SHA384",
        }
    }
}

impl fmt::Display for PskHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sha256 => "SHA-256",
            Self::Sha384 => "SHA-384",
        })
    }
}

/// How the HKDF `info` of the retained and TLS PSK derivations is laid out.
///
/// libnvme up to 1.15 (nvme-cli up to 2.15, e.g. Debian 13's 2.13) wrote the
/// HkdfLabel wrongly: the length little-endian and the label and context
/// without their length bytes (`le16(L) "tls13 " label context`). libnvme 1.16
/// fixed it (commit fde6b1f5, 2025-07) and keeps the old one as `--compat`.
/// Keys the two produce differ, so both ends must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Derivation {
    /// RFC 8446 §7.1 HkdfLabel, as the NVMe/TCP specification and libnvme >= 1.16.
    #[default]
    Spec,
    /// The layout of libnvme <= 1.15 (`nvme … --compat` in nvme-cli >= 2.16).
    Compat,
}

impl Derivation {
    /// Both, the specification's first.
    pub const ALL: [Derivation; 2] = [Derivation::Spec, Derivation::Compat];
}

/// Why a key or an identity is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    /// Not `NVMeTLSkey-1:`.
    #[error("a TLS PSK in interchange format starts with \"NVMeTLSkey-1:\" (as `nvme gen-tls-key` prints it)")]
    NotTlsKey,
    /// `hh` is not 00, 01 or 02.
    #[error(
        "the hash field of an NVMeTLSkey-1 key is 00, 01 (SHA-256) or 02 (SHA-384), not {0:?}"
    )]
    BadHash(String),
    /// The base64 part does not decode.
    #[error("the key part of the NVMeTLSkey-1 key is not valid base64: the key was mistyped or truncated")]
    BadBase64,
    /// Wrong key length for the `hh` field.
    #[error("an NVMeTLSkey-1:{hh:02}: key has {want} key bytes plus a 4-byte CRC, not {got} bytes in all")]
    BadLength {
        /// The `hh` field.
        hh: u8,
        /// What the field allows.
        want: &'static str,
        /// Decoded length (key and CRC).
        got: usize,
    },
    /// The CRC does not match.
    #[error("the CRC-32 of the NVMeTLSkey-1 key does not match (stored {stored:#010x}, computed {computed:#010x}): the key was mistyped or truncated")]
    CrcMismatch {
        /// CRC in the string.
        stored: u32,
        /// CRC of the key bytes.
        computed: u32,
    },
    /// The identity is not `NVMe<v><R|G><hh> <hostnqn> <subnqn>[ <digest>]`.
    #[error("PSK identity {0:?} is not of the form \"NVMe0R01 <hostnqn> <subnqn>\" or \"NVMe1R01 <hostnqn> <subnqn> <digest>\"")]
    BadIdentity(String),
    /// A generated PSK (TP 8018 secure concatenation) was asked for.
    #[error("PSK identity {0:?} names a generated PSK (secure concatenation after DH-HMAC-CHAP), which this target does not support; configure a PSK (NVMeTLSkey-1) on both ends")]
    Generated(String),
    /// No configured key gives this identity.
    #[error("no configured TLS PSK matches identity {0:?}: the target needs the same NVMeTLSkey-1 key as the host, with the same hash (hh)")]
    NoKey(String),
}

/// A configured PSK (the interchange-format key). `Debug` hides the key; the
/// bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfiguredPsk {
    transform: Option<PskHash>,
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ConfiguredPsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConfiguredPsk(NVMeTLSkey-1:{:02}:<{} bytes redacted>)",
            self.transform.map_or(0, PskHash::id),
            self.key.len()
        )
    }
}

impl ConfiguredPsk {
    /// A configured PSK from key bytes: 32 or 48 of them, and for a
    /// transformation hash, as many as the hash's length (as libnvme requires).
    pub fn new(key: &[u8], transform: Option<PskHash>) -> Result<Self, PskError> {
        let (ok, want) = match transform {
            None => (matches!(key.len(), 32 | 48), "32 or 48"),
            Some(PskHash::Sha256) => (key.len() == 32, "32"),
            Some(PskHash::Sha384) => (key.len() == 48, "48"),
        };
        if !ok {
            return Err(PskError::BadLength {
                hh: transform.map_or(0, PskHash::id),
                want,
                got: key.len() + 4,
            });
        }
        Ok(Self {
            transform,
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// Parses `NVMeTLSkey-1:hh:<base64>:`; surrounding whitespace and a missing
    /// final `:` are accepted.
    pub fn parse(s: &str) -> Result<Self, PskError> {
        let rest = s
            .trim()
            .strip_prefix("NVMeTLSkey-1:")
            .ok_or(PskError::NotTlsKey)?;
        let (hh, b64) = rest
            .split_once(':')
            .ok_or_else(|| PskError::BadHash(rest.to_string()))?;
        let transform = match hh {
            "00" => None,
            "01" => Some(PskHash::Sha256),
            "02" => Some(PskHash::Sha384),
            other => return Err(PskError::BadHash(other.to_string())),
        };
        let b64 = b64.strip_suffix(':').unwrap_or(b64);
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| PskError::BadBase64)?,
        );
        if raw.len() < 4 {
            return Err(PskError::BadLength {
                hh: transform.map_or(0, PskHash::id),
                want: "32 or 48",
                got: raw.len(),
            });
        }
        let (key, crc) = raw.split_at(raw.len() - 4);
        let psk = Self::new(key, transform)?;
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = crc32fast::hash(key);
        if stored != computed {
            return Err(PskError::CrcMismatch { stored, computed });
        }
        Ok(psk)
    }

    /// The interchange format (it holds the key: do not log it).
    pub fn to_interchange(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(self.key.to_vec());
        raw.extend_from_slice(&crc32fast::hash(&self.key).to_le_bytes());
        Zeroizing::new(format!(
            "NVMeTLSkey-1:{:02}:{}:",
            self.transform.map_or(0, PskHash::id),
            base64::engine::general_purpose::STANDARD.encode(raw.as_slice())
        ))
    }

    /// The `hh` transformation hash (`None` for 00).
    pub fn transform(&self) -> Option<PskHash> {
        self.transform
    }

    /// The hash of the TLS PSK and cipher suite: `hh`, or for 00 the one that
    /// fits the key length (libnvme's `default_hmac`).
    pub fn hash(&self) -> PskHash {
        self.transform.unwrap_or(if self.key.len() == 48 {
            PskHash::Sha384
        } else {
            PskHash::Sha256
        })
    }

    /// The retained PSK for `hostnqn`: the configured PSK transformed with
    /// HKDF-Expand-Label(…, "HostNQN", hostnqn), or the key as is for `hh` 00.
    pub fn retained(&self, hostnqn: &str, d: Derivation) -> RetainedPsk {
        let key = match self.transform {
            None => Zeroizing::new(self.key.to_vec()),
            Some(h) => hkdf_expand_label(
                d,
                h,
                &self.key,
                "HostNQN",
                hostnqn.as_bytes(),
                self.key.len(),
            ),
        };
        RetainedPsk {
            hash: self.hash(),
            key,
        }
    }
}

/// A retained PSK, bound to one host NQN. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct RetainedPsk {
    hash: PskHash,
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for RetainedPsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RetainedPsk({}, <{} bytes redacted>)",
            self.hash,
            self.key.len()
        )
    }
}

impl RetainedPsk {
    /// A retained PSK from its bytes (32 or 48) and the hash of its cipher suite.
    pub fn from_bytes(key: &[u8], hash: PskHash) -> Self {
        Self {
            hash,
            key: Zeroizing::new(key.to_vec()),
        }
    }

    /// The key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The PSK digest of identity version 1: base64(HMAC(retained, hostnqn ' '
    /// subnqn ' ' "NVMe-over-Fabrics")), with the PSK's hash.
    pub fn digest(&self, hostnqn: &str, subnqn: &str) -> String {
        let parts: [&[u8]; 5] = [
            hostnqn.as_bytes(),
            b" ",
            subnqn.as_bytes(),
            b" ",
            b"NVMe-over-Fabrics",
        ];
        let mac = match self.hash {
            PskHash::Sha256 => hmac_parts::<Hmac<Sha256>>(&self.key, &parts),
            PskHash::Sha384 => hmac_parts::<Hmac<Sha384>>(&self.key, &parts),
        };
        base64::engine::general_purpose::STANDARD.encode(mac.as_slice())
    }

    /// The PSK identity of `version` (0 or 1) for this host and subsystem.
    pub fn identity(&self, version: u8, hostnqn: &str, subnqn: &str) -> String {
        let hh = self.hash.id();
        if version == 0 {
            format!("NVMe0R{hh:02} {hostnqn} {subnqn}")
        } else {
            let d = self.digest(hostnqn, subnqn);
            format!("NVMe1R{hh:02} {hostnqn} {subnqn} {d}")
        }
    }

    /// The TLS PSK (and its identity) of identity `version` (0 or 1; any other
    /// value is taken as 1).
    pub fn tls_psk(&self, version: u8, hostnqn: &str, subnqn: &str, d: Derivation) -> TlsPsk {
        let hh = self.hash.id();
        let (identity, context) = if version == 0 {
            let id = format!("NVMe0R{hh:02} {hostnqn} {subnqn}");
            (id.clone(), id)
        } else {
            let d = self.digest(hostnqn, subnqn);
            (
                format!("NVMe1R{hh:02} {hostnqn} {subnqn} {d}"),
                format!("{hh:02} {d}"),
            )
        };
        let key = hkdf_expand_label(
            d,
            self.hash,
            &self.key,
            "nvme-tls-psk",
            context.as_bytes(),
            self.key.len(),
        );
        TlsPsk {
            identity,
            hash: self.hash,
            key,
        }
    }
}

/// A TLS PSK with its identity: what one TLS 1.3 handshake uses. `Debug` hides
/// the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsPsk {
    /// The PSK identity (`NVMe0R01 …`), sent in the ClientHello.
    pub identity: String,
    /// Hash of the cipher suite.
    pub hash: PskHash,
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for TlsPsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TlsPsk({:?}, {}, <{} bytes redacted>)",
            self.identity,
            self.hash,
            self.key.len()
        )
    }
}

impl TlsPsk {
    /// A TLS PSK from its parts (for keys found elsewhere, e.g. a keyring).
    pub fn new(identity: String, hash: PskHash, key: &[u8]) -> Self {
        Self {
            identity,
            hash,
            key: Zeroizing::new(key.to_vec()),
        }
    }

    /// The key bytes (the TLS 1.3 external PSK).
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

/// A parsed PSK identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PskIdentity {
    /// Identity format version (0 or 1).
    pub version: u8,
    /// `G` (generated PSK, TP 8018) rather than `R` (retained).
    pub generated: bool,
    /// The `hh` hash.
    pub hash: PskHash,
    /// Host NQN.
    pub hostnqn: String,
    /// Subsystem NQN.
    pub subnqn: String,
    /// The PSK digest (version 1 only).
    pub digest: Option<String>,
}

impl PskIdentity {
    /// Parses `NVMe<v><R|G><hh> <hostnqn> <subnqn>[ <digest>]`.
    pub fn parse(s: &str) -> Result<Self, PskError> {
        let bad = || PskError::BadIdentity(s.to_string());
        let mut it = s.split(' ');
        let head = it.next().ok_or_else(bad)?;
        let h = head.as_bytes();
        if h.len() != 8 || !head.starts_with("NVMe") {
            return Err(bad());
        }
        let version = match h[4] {
            b'0' => 0,
            b'1' => 1,
            _ => return Err(bad()),
        };
        let generated = match h[5] {
            b'R' => false,
            b'G' => true,
            _ => return Err(bad()),
        };
        let hash = match &head[6..] {
            "01" => PskHash::Sha256,
            "02" => PskHash::Sha384,
            _ => return Err(bad()),
        };
        let hostnqn = it.next().filter(|x| !x.is_empty()).ok_or_else(bad)?;
        let subnqn = it.next().filter(|x| !x.is_empty()).ok_or_else(bad)?;
        let digest = it.next().map(str::to_string);
        if it.next().is_some() || (version == 0) != digest.is_none() {
            return Err(bad());
        }
        Ok(Self {
            version,
            generated,
            hash,
            hostnqn: hostnqn.to_string(),
            subnqn: subnqn.to_string(),
            digest,
        })
    }
}

/// The TLS PSKs a host offers for `hostnqn` → `subnqn`, best first, as the
/// Linux 6.12 host chooses (`nvme_tls_psk_default`: retained PSKs with
/// identity version 0, SHA-384 before SHA-256). The TLS client offers the first.
pub fn host_offers(
    keys: &[ConfiguredPsk],
    hostnqn: &str,
    subnqn: &str,
    d: Derivation,
) -> Vec<TlsPsk> {
    let mut v: Vec<TlsPsk> = keys
        .iter()
        .map(|k| k.retained(hostnqn, d).tls_psk(0, hostnqn, subnqn, d))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.hash));
    v
}

/// The target's side: the TLS PSK for the identity a host offers, from the
/// configured keys (any host NQN and subsystem NQN). Version 1 identities pick
/// the key (and derivation) whose digest matches; version 0 the first key of
/// the same hash, with derivation `v0`.
pub fn target_lookup(
    identity: &[u8],
    keys: &[ConfiguredPsk],
    v0: Derivation,
) -> Result<TlsPsk, PskError> {
    let s = std::str::from_utf8(identity)
        .map_err(|_| PskError::BadIdentity(String::from_utf8_lossy(identity).into_owned()))?;
    let id = PskIdentity::parse(s)?;
    if id.generated {
        return Err(PskError::Generated(s.to_string()));
    }
    let ds: &[Derivation] = if id.version == 0 {
        &[v0]
    } else if v0 == Derivation::Compat {
        &[Derivation::Compat, Derivation::Spec]
    } else {
        &Derivation::ALL
    };
    for k in keys.iter().filter(|k| k.hash() == id.hash) {
        for &d in ds {
            let r = k.retained(&id.hostnqn, d);
            let psk = r.tls_psk(id.version, &id.hostnqn, &id.subnqn, d);
            if psk.identity == s {
                return Ok(psk);
            }
        }
    }
    Err(PskError::NoKey(s.to_string()))
}

fn hmac_parts<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    // HMAC takes a key of any length (RFC 2104 §2), so this cannot fail.
    let mut m =
        <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        m.update(p);
    }
    Zeroizing::new(m.finalize().into_bytes().to_vec())
}

/// HKDF-Expand-Label(HKDF-Extract(0, ikm), label, context, len) of RFC 8446
/// §7.1 (HkdfLabel = u16 length, "tls13 " label, context).
fn hkdf_expand_label(
    d: Derivation,
    h: PskHash,
    ikm: &[u8],
    label: &str,
    context: &[u8],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    let full = format!("tls13 {label}");
    // Labels and contexts here are an NQN (at most 223 bytes) or shorter.
    let mut info = Vec::with_capacity(4 + full.len() + context.len());
    match d {
        Derivation::Spec => {
            info.extend_from_slice(&(len as u16).to_be_bytes());
            info.push(full.len() as u8);
            info.extend_from_slice(full.as_bytes());
            info.push(context.len().min(255) as u8);
        }
        Derivation::Compat => {
            info.extend_from_slice(&(len as u16).to_le_bytes());
            info.extend_from_slice(full.as_bytes());
        }
    }
    info.extend_from_slice(context);
    let mut out = Zeroizing::new(vec![0u8; len]);
    // len is 32 or 48, far below 255 * HashLen, so expand cannot fail.
    match h {
        PskHash::Sha256 => hkdf::Hkdf::<Sha256>::new(None, ikm)
            .expand(&info, &mut out)
            .expect("HKDF output length is 32 or 48"),
        PskHash::Sha384 => hkdf::Hkdf::<Sha384>::new(None, ikm)
            .expand(&info, &mut out)
            .expect("HKDF output length is 32 or 48"),
    }
    out
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
