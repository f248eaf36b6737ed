//! DH-HMAC-CHAP secrets in the `DHHC-1:hh:<base64>:` representation (NVMe Base
//! 2.0 §8.13.5.8 "Secret representation"; libnvme and `nvme gen-dhchap-key` write
//! it, Linux `nvme_auth_extract_key` reads it) and the key transformation of
//! §8.13.5.7 (`nvme_auth_transform_key`).

use std::fmt;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::digest;
use super::ids::HashId;

/// Why a `DHHC-1` string is not a usable secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The string does not start with `DHHC-1:`.
    #[error("a DH-HMAC-CHAP secret starts with \"DHHC-1:\"")]
    NotDhhc1,
    /// The `hh` field is not 00, 01, 02 or 03.
    #[error("the transformation field of a DHHC-1 secret is 00, 01, 02 or 03, not {0:?}")]
    BadTransform(String),
    /// The base64 part does not decode.
    #[error("the key part of the DHHC-1 secret is not valid base64")]
    BadBase64,
    /// The decoded key (without its CRC) is not 32, 48 or 64 bytes.
    #[error("a DHHC-1 key is 32, 48 or 64 bytes followed by a 4-byte CRC, not {0} bytes in all")]
    BadLength(usize),
    /// Raw key bytes given to [`DhchapSecret::new`] are not 32, 48 or 64 bytes.
    #[error("a DH-HMAC-CHAP key is 32, 48 or 64 bytes, not {0}")]
    BadKeyLength(usize),
    /// The CRC-32 that follows the key does not match it.
    #[error("the CRC-32 of the DHHC-1 key does not match (stored {stored:#010x}, computed {computed:#010x}): the key was mistyped or truncated")]
    CrcMismatch {
        /// CRC in the string.
        stored: u32,
        /// CRC of the key bytes.
        computed: u32,
    },
}

/// A DH-HMAC-CHAP secret: the key bytes and the hash its `hh` field names for the
/// key transformation (`None` = used as is).
///
/// `Debug` never shows the key; the bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct DhchapSecret {
    transform: Option<HashId>,
    key: Zeroizing<Vec<u8>>,
}

impl DhchapSecret {
    /// A secret from raw key bytes (32, 48 or 64 of them) and the transformation hash.
    pub fn new(key: &[u8], transform: Option<HashId>) -> Result<Self, SecretError> {
        if !matches!(key.len(), 32 | 48 | 64) {
            return Err(SecretError::BadKeyLength(key.len()));
        }
        Ok(Self {
            transform,
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// Parses `DHHC-1:hh:<base64(key || crc32_le(key))>:`. Surrounding whitespace
    /// and a missing final `:` are accepted, as the Linux kernel does.
    ///
    /// Like the kernel (and unlike `nvme gen-dhchap-key`), any key length of 32,
    /// 48 or 64 bytes goes with any `hh`.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let rest = s
            .trim()
            .strip_prefix("DHHC-1:")
            .ok_or(SecretError::NotDhhc1)?;
        let (hh, b64) = rest
            .split_once(':')
            .ok_or_else(|| SecretError::BadTransform(rest.to_string()))?;
        let transform = match hh {
            "00" => None,
            "01" => Some(HashId::Sha256),
            "02" => Some(HashId::Sha384),
            "03" => Some(HashId::Sha512),
            other => return Err(SecretError::BadTransform(other.to_string())),
        };
        let b64 = b64.strip_suffix(':').unwrap_or(b64);
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| SecretError::BadBase64)?,
        );
        if !matches!(raw.len(), 36 | 52 | 68) {
            return Err(SecretError::BadLength(raw.len()));
        }
        let (key, crc) = raw.split_at(raw.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = crc32fast::hash(key);
        if stored != computed {
            return Err(SecretError::CrcMismatch { stored, computed });
        }
        Ok(Self {
            transform,
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// The `DHHC-1:hh:<base64>:` representation (it holds the key: do not log it).
    pub fn to_dhhc1(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(self.key.to_vec());
        raw.extend_from_slice(&crc32fast::hash(&self.key).to_le_bytes());
        let hh = self.transform.map_or(0, HashId::id);
        Zeroizing::new(format!(
            "DHHC-1:{hh:02}:{}:",
            base64::engine::general_purpose::STANDARD.encode(raw.as_slice())
        ))
    }

    /// The hash of the key transformation (`hh`), `None` for 00.
    pub fn transform_hash(&self) -> Option<HashId> {
        self.transform
    }

    /// Length of the key in bytes.
    pub fn len(&self) -> usize {
        self.key.len()
    }

    /// Always false: a secret has 32, 48 or 64 bytes.
    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }

    /// The raw key bytes.
    pub fn key_bytes(&self) -> &[u8] {
        &self.key
    }

    /// The transformed key of §8.13.5.7, the HMAC key of a response:
    /// `HMAC(H(hh), key, nqn || "NVMe-over-Fabrics")`, or the key itself for 00.
    /// `nqn` is the host NQN for the host key and the subsystem NQN for the
    /// controller key. Its length is that of H(hh), whatever the negotiated hash.
    pub fn transformed(&self, nqn: &str) -> Zeroizing<Vec<u8>> {
        match self.transform {
            None => self.key.clone(),
            Some(h) => digest::hmac(h, &self.key, &[nqn.as_bytes(), b"NVMe-over-Fabrics"]),
        }
    }
}

impl fmt::Debug for DhchapSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhchapSecret")
            .field("transform", &self.transform)
            .field("len", &self.key.len())
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for DhchapSecret {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:12345678-1234-1234-1234-123456789abc";

    fn seq(n: u8) -> Vec<u8> {
        (0..n).collect()
    }

    /// `nvme gen-dhchap-key --secret=000102... --key-length=L --hmac=M --nqn=NQN`
    /// (nvme-cli 2.3 / libnvme 1.3). nvme-cli stores the *transformed* secret for
    /// M > 0, so the decoded key must equal our transformation of the input.
    #[test]
    fn known_answers_from_nvme_cli() {
        let plain = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
        let s = DhchapSecret::parse(plain).unwrap();
        assert_eq!(s.key_bytes(), seq(32).as_slice());
        assert_eq!(s.transform_hash(), None);
        assert_eq!(s.to_dhhc1().as_str(), plain);
        let s48 =
            "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vcSEgBQ==:";
        assert_eq!(
            DhchapSecret::parse(s48).unwrap().key_bytes(),
            seq(48).as_slice()
        );
        let s64 = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P4zODhA=:";
        assert_eq!(DhchapSecret::parse(s64).unwrap().to_dhhc1().as_str(), s64);

        for (hh, len, text) in [
            (HashId::Sha256, 32, "DHHC-1:01:vpq37fuC3dXlrFdBeL3l55rZX5frlPLAL6XiWUcBs2JLmx7/:"),
            (HashId::Sha384, 48, "DHHC-1:02:NwqxfxwFQhRNg8ncQQ2645ht3wneCjXuJaX/V9tLWt9AIcSRpk+h6mkYWKny/dFsqsGKHw==:"),
            (HashId::Sha512, 64, "DHHC-1:03:c3lgfzD5HZ29Xmro92EZHhfluxQql5/Of33XBh4g+Lmks3bctimmKuOCJ9F1qhHuppeNOuxDSqRiml6FbHKNXJP4uv0=:"),
        ] {
            let parsed = DhchapSecret::parse(text).unwrap();
            assert_eq!(parsed.transform_hash(), Some(hh));
            assert_eq!(parsed.to_dhhc1().as_str(), text);
            let input = DhchapSecret::new(&seq(len), Some(hh)).unwrap();
            assert_eq!(input.transformed(NQN).as_slice(), parsed.key_bytes());
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            DhchapSecret::parse("DHHC-2:00:AAAA:"),
            Err(SecretError::NotDhhc1)
        );
        assert!(matches!(
            DhchapSecret::parse("DHHC-1:04:AAAA:"),
            Err(SecretError::BadTransform(t)) if t == "04"
        ));
        assert_eq!(
            DhchapSecret::parse("DHHC-1:00:!!!!:"),
            Err(SecretError::BadBase64)
        );
        assert_eq!(
            DhchapSecret::parse("DHHC-1:00:AAAA:"),
            Err(SecretError::BadLength(3))
        );
        let bad_crc = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaS:";
        assert!(matches!(
            DhchapSecret::parse(bad_crc),
            Err(SecretError::CrcMismatch { .. })
        ));
        // Whitespace and a missing final colon are fine.
        assert!(DhchapSecret::parse(
            " DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR\n"
        )
        .is_ok());
        assert_eq!(
            DhchapSecret::new(&[0; 31], None),
            Err(SecretError::BadKeyLength(31))
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let s = DhchapSecret::new(&[0xAB; 32], Some(HashId::Sha256)).unwrap();
        let d = format!("{s:?}");
        assert!(
            !d.contains("171") && !d.to_lowercase().contains("ab,"),
            "{d}"
        );
        assert!(d.contains("len: 32"));
    }
}
