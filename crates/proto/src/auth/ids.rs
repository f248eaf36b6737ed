//! Identifiers of DH-HMAC-CHAP: hash functions, Diffie-Hellman groups, message
//! types and failure explanations (NVMe Base 2.0 §8.13.5; the values are those of
//! Linux `include/linux/nvme.h`, `NVME_AUTH_*`).

use std::fmt;

/// Security Protocol (SECP) of Authentication Send/Receive for NVMe in-band
/// authentication (NVMe Base 2.0 §8.13.4; `NVME_AUTH_DHCHAP_PROTOCOL_IDENTIFIER`).
pub const SECP_NVME_AUTH: u8 = 0xE9;
/// SPSP0 of every DH-HMAC-CHAP Authentication Send/Receive (the Linux host and
/// nvmet send and require 01h).
pub const SPSP0_DHCHAP: u8 = 0x01;
/// SPSP1 of every DH-HMAC-CHAP Authentication Send/Receive (01h, as SPSP0).
pub const SPSP1_DHCHAP: u8 = 0x01;

/// AUTH-Type values of the message header (`NVME_AUTH_COMMON_MESSAGES`,
/// `NVME_AUTH_DHCHAP_MESSAGES`).
pub mod auth_type {
    /// Common messages: AUTH_Negotiate, AUTH_Failure1, AUTH_Failure2.
    pub const COMMON: u8 = 0x00;
    /// DH-HMAC-CHAP messages: Challenge, Reply, Success1, Success2.
    pub const DHCHAP: u8 = 0x01;
}

/// AUTH-Id values of the message header (`NVME_AUTH_DHCHAP_MESSAGE_*`).
pub mod auth_id {
    /// AUTH_Negotiate (common).
    pub const NEGOTIATE: u8 = 0x00;
    /// DH-HMAC-CHAP_Challenge.
    pub const CHALLENGE: u8 = 0x01;
    /// DH-HMAC-CHAP_Reply.
    pub const REPLY: u8 = 0x02;
    /// DH-HMAC-CHAP_Success1.
    pub const SUCCESS1: u8 = 0x03;
    /// DH-HMAC-CHAP_Success2.
    pub const SUCCESS2: u8 = 0x04;
    /// AUTH_Failure2 (common; host to controller).
    pub const FAILURE2: u8 = 0xF0;
    /// AUTH_Failure1 (common; controller to host).
    pub const FAILURE1: u8 = 0xF1;
}

/// AUTH ID of the DH-HMAC-CHAP protocol descriptor in AUTH_Negotiate
/// (`NVME_AUTH_DHCHAP_AUTH_ID`).
pub const DHCHAP_AUTH_ID: u8 = 0x01;
/// Most hash identifiers a protocol descriptor holds (`NVME_AUTH_DHCHAP_MAX_HASH_IDS`).
pub const MAX_HASH_IDS: usize = 30;
/// Most DH group identifiers a protocol descriptor holds (`NVME_AUTH_DHCHAP_MAX_DH_IDS`).
pub const MAX_DH_IDS: usize = 30;

/// Secure channel concatenation (SC_C) values of AUTH_Negotiate
/// (`NVME_AUTH_SECP_*`). Only `NONE` is supported here.
pub mod sc_c {
    /// No secure channel concatenation.
    pub const NONE: u8 = 0x00;
    /// Generate a new TLS PSK.
    pub const NEW_TLS_PSK: u8 = 0x01;
    /// Replace the TLS PSK.
    pub const REPLACE_TLS_PSK: u8 = 0x02;
}

/// Reason Code of AUTH_Failure1/2: "authentication failure"
/// (`NVME_AUTH_DHCHAP_FAILURE_REASON_FAILED`, the only one defined).
pub const REASON_CODE_FAILED: u8 = 0x01;

/// Reason Code Explanation of AUTH_Failure1/2 (`NVME_AUTH_DHCHAP_FAILURE_*`).
/// A newtype rather than an enum: the peer may send any byte, and it is logged as is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailureReason(pub u8);

impl FailureReason {
    /// Authentication failed (wrong response, missing key).
    pub const FAILED: Self = Self(0x01);
    /// Authentication protocol not usable.
    pub const NOT_USABLE: Self = Self(0x02);
    /// Secure channel concatenation mismatch.
    pub const CONCAT_MISMATCH: Self = Self(0x03);
    /// Hash function not usable.
    pub const HASH_UNUSABLE: Self = Self(0x04);
    /// DH group not usable.
    pub const DHGROUP_UNUSABLE: Self = Self(0x05);
    /// Incorrect payload.
    pub const INCORRECT_PAYLOAD: Self = Self(0x06);
    /// Incorrect protocol message.
    pub const INCORRECT_MESSAGE: Self = Self(0x07);

    /// The name the NVMe specification gives the value, if any.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x01 => "authentication failed",
            0x02 => "authentication protocol not usable",
            0x03 => "secure channel concatenation mismatch",
            0x04 => "hash function not usable",
            0x05 => "DH group not usable",
            0x06 => "incorrect payload",
            0x07 => "incorrect protocol message",
            _ => return None,
        })
    }
}

impl fmt::Debug for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FailureReason({:#04x}", self.0)?;
        if let Some(n) = self.name() {
            write!(f, " {n}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({:#04x})", self.0),
            None => write!(f, "unknown reason {:#04x}", self.0),
        }
    }
}

/// Hash function of DH-HMAC-CHAP (`NVME_AUTH_HASH_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashId {
    /// HMAC-SHA-256.
    Sha256 = 1,
    /// HMAC-SHA-384.
    Sha384 = 2,
    /// HMAC-SHA-512.
    Sha512 = 3,
}

impl HashId {
    /// Every hash, strongest last (the order the Linux host offers them).
    pub const ALL: [HashId; 3] = [HashId::Sha256, HashId::Sha384, HashId::Sha512];

    /// The identifier for a wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Sha256),
            2 => Some(Self::Sha384),
            3 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Wire value.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// Digest length in bytes: the HL of Challenge, Reply and Success1.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The name nvmet's `dhchap_hash` attribute and the kernel log use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "hmac(sha256)",
            Self::Sha384 => "hmac(sha384)",
            Self::Sha512 => "hmac(sha512)",
        }
    }
}

impl fmt::Display for HashId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Diffie-Hellman group of DH-HMAC-CHAP (`NVME_AUTH_DHGROUP_*`; RFC 7919 groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DhGroup {
    /// No Diffie-Hellman exchange: plain HMAC-CHAP.
    Null = 0,
    /// ffdhe2048.
    Ffdhe2048 = 1,
    /// ffdhe3072.
    Ffdhe3072 = 2,
    /// ffdhe4096.
    Ffdhe4096 = 3,
    /// ffdhe6144.
    Ffdhe6144 = 4,
    /// ffdhe8192.
    Ffdhe8192 = 5,
}

impl DhGroup {
    /// Every group in wire order (the order the Linux host offers them).
    pub const ALL: [DhGroup; 6] = [
        DhGroup::Null,
        DhGroup::Ffdhe2048,
        DhGroup::Ffdhe3072,
        DhGroup::Ffdhe4096,
        DhGroup::Ffdhe6144,
        DhGroup::Ffdhe8192,
    ];

    /// The group for a wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v)).copied()
    }

    /// Wire value.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// Length in bytes of a public value (DHVLEN), which is that of the prime;
    /// 0 for the null group.
    pub fn value_len(self) -> usize {
        match self {
            Self::Null => 0,
            Self::Ffdhe2048 => 256,
            Self::Ffdhe3072 => 384,
            Self::Ffdhe4096 => 512,
            Self::Ffdhe6144 => 768,
            Self::Ffdhe8192 => 1024,
        }
    }

    /// The name nvmet's `dhchap_dhgroup` attribute and the kernel log use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Ffdhe2048 => "ffdhe2048",
            Self::Ffdhe3072 => "ffdhe3072",
            Self::Ffdhe4096 => "ffdhe4096",
            Self::Ffdhe6144 => "ffdhe6144",
            Self::Ffdhe8192 => "ffdhe8192",
        }
    }
}

impl fmt::Display for DhGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for h in HashId::ALL {
            assert_eq!(HashId::from_u8(h.id()), Some(h));
        }
        assert_eq!(HashId::from_u8(0), None);
        assert_eq!(HashId::from_u8(4), None);
        for g in DhGroup::ALL {
            assert_eq!(DhGroup::from_u8(g.id()), Some(g));
        }
        assert_eq!(DhGroup::from_u8(6), None);
        assert_eq!(DhGroup::Ffdhe8192.value_len(), 1024);
        assert_eq!(
            FailureReason::HASH_UNUSABLE.to_string(),
            "hash function not usable (0x04)"
        );
        assert_eq!(FailureReason(0x42).name(), None);
    }
}
