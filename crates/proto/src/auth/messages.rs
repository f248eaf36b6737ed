//! The payloads of Authentication Send/Receive: AUTH_Negotiate, the
//! DH-HMAC-CHAP messages and AUTH_Failure1/2 (NVMe Base 2.0 §8.13.5.4-5;
//! layouts as Linux `struct nvmf_auth_dhchap_*_data` in `include/linux/nvme.h`).
//!
//! Every message starts with the same 6 bytes: AUTH-Type @0, AUTH-Id @1,
//! reserved @2..4, T_ID (transaction identifier, LE) @4. Decoding reads through
//! checked slices, ignores bytes past the message (a receive buffer is often
//! larger) and never panics.

use super::ids::{auth_id, auth_type, FailureReason, DHCHAP_AUTH_ID, MAX_DH_IDS, MAX_HASH_IDS};
use crate::le::*;

/// Bytes of AUTH_Negotiate before its protocol descriptors.
pub const NEGOTIATE_HEADER_LEN: usize = 8;
/// Bytes of one protocol descriptor of AUTH_Negotiate.
pub const PROTOCOL_DESCRIPTOR_LEN: usize = 64;
/// Offset of the DH group identifiers inside a descriptor's ID list.
const DH_ID_OFFSET: usize = 30;
/// Bytes of DH-HMAC-CHAP_Challenge before its challenge value.
pub const CHALLENGE_HEADER_LEN: usize = 16;
/// Bytes of DH-HMAC-CHAP_Reply before its response value.
pub const REPLY_HEADER_LEN: usize = 16;
/// Bytes of DH-HMAC-CHAP_Success1 before its response value.
pub const SUCCESS1_HEADER_LEN: usize = 16;
/// Bytes of DH-HMAC-CHAP_Success2.
pub const SUCCESS2_LEN: usize = 16;
/// Bytes of AUTH_Failure1 and AUTH_Failure2.
pub const FAILURE_LEN: usize = 8;

/// Why bytes are not an authentication message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the message's fields say it has.
    #[error("the {what} message needs {need} bytes, {have} given")]
    Short {
        /// Message being decoded.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// An AUTH-Type / AUTH-Id pair that names no message.
    #[error("AUTH-Type {auth_type:#04x} AUTH-Id {auth_id:#04x} is no authentication message")]
    UnknownMessage {
        /// AUTH-Type byte.
        auth_type: u8,
        /// AUTH-Id byte.
        auth_id: u8,
    },
    /// A protocol descriptor lists more than 30 hash or DH group identifiers.
    #[error(
        "a protocol descriptor lists {halen} hashes and {dhlen} DH groups; at most 30 of each fit"
    )]
    TooManyIds {
        /// HALEN.
        halen: u8,
        /// DHLEN.
        dhlen: u8,
    },
}

impl DecodeError {
    /// The failure explanation to report for this error (what nvmet reports).
    pub fn reason(&self) -> FailureReason {
        match self {
            Self::UnknownMessage { .. } => FailureReason::INCORRECT_MESSAGE,
            _ => FailureReason::INCORRECT_PAYLOAD,
        }
    }
}

fn need(what: &'static str, b: &[u8], n: usize) -> Result<(), DecodeError> {
    if b.len() < n {
        return Err(DecodeError::Short {
            what,
            need: n,
            have: b.len(),
        });
    }
    Ok(())
}

fn bytes_at(b: &[u8], off: usize, len: usize) -> Vec<u8> {
    b.get(off..off.saturating_add(len))
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

fn header(b: &mut [u8], ty: u8, id: u8, t_id: u16) {
    put_u8(b, 0, ty);
    put_u8(b, 1, id);
    put_u16(b, 4, t_id);
}

/// One protocol descriptor of AUTH_Negotiate. Identifiers stay raw bytes so that
/// values this crate does not know survive decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolDescriptor {
    /// AUTH ID (01h = DH-HMAC-CHAP).
    pub auth_id: u8,
    /// Hash identifiers offered (HALEN of them, at most 30).
    pub hashes: Vec<u8>,
    /// DH group identifiers offered (DHLEN of them, at most 30).
    pub dh_groups: Vec<u8>,
}

impl ProtocolDescriptor {
    /// A DH-HMAC-CHAP descriptor.
    pub fn dhchap(hashes: Vec<u8>, dh_groups: Vec<u8>) -> Self {
        Self {
            auth_id: DHCHAP_AUTH_ID,
            hashes,
            dh_groups,
        }
    }
}

/// AUTH_Negotiate (host → controller): the transaction ID, SC_C and the
/// protocols with the hashes and DH groups the host accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiate {
    /// Transaction identifier chosen by the host.
    pub t_id: u16,
    /// Secure channel concatenation (00h = none).
    pub sc_c: u8,
    /// Protocol descriptors (NAPD of them; Linux sends exactly one).
    pub protocols: Vec<ProtocolDescriptor>,
}

/// DH-HMAC-CHAP_Challenge (controller → host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Transaction identifier.
    pub t_id: u16,
    /// Selected hash identifier.
    pub hash_id: u8,
    /// Selected DH group identifier.
    pub dh_group: u8,
    /// Sequence number S1.
    pub seqnum: u32,
    /// Challenge C1 (HL bytes).
    pub challenge: Vec<u8>,
    /// Controller's DH public value (DHVLEN bytes; empty for the null group).
    pub dh_value: Vec<u8>,
}

/// DH-HMAC-CHAP_Reply (host → controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Transaction identifier.
    pub t_id: u16,
    /// Sequence number S2 (0 = no bidirectional authentication).
    pub seqnum: u32,
    /// Host response R1 (HL bytes).
    pub response: Vec<u8>,
    /// Challenge C2 for the controller (CVALID set), HL bytes.
    pub challenge: Option<Vec<u8>>,
    /// Host's DH public value (empty for the null group).
    pub dh_value: Vec<u8>,
}

/// DH-HMAC-CHAP_Success1 (controller → host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success1 {
    /// Transaction identifier.
    pub t_id: u16,
    /// HL: the digest length of the selected hash (sent even without a response).
    pub hl: u8,
    /// Controller response R2 (RVALID set), HL bytes.
    pub response: Option<Vec<u8>>,
}

/// AUTH_Failure1 (controller → host) or AUTH_Failure2 (host → controller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Transaction identifier.
    pub t_id: u16,
    /// Reason code (01h = authentication failure).
    pub reason_code: u8,
    /// Reason code explanation.
    pub reason: FailureReason,
}

/// Any authentication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// AUTH_Negotiate.
    Negotiate(Negotiate),
    /// DH-HMAC-CHAP_Challenge.
    Challenge(Challenge),
    /// DH-HMAC-CHAP_Reply.
    Reply(Reply),
    /// DH-HMAC-CHAP_Success1.
    Success1(Success1),
    /// DH-HMAC-CHAP_Success2 (the transaction ID).
    Success2(u16),
    /// AUTH_Failure1.
    Failure1(Failure),
    /// AUTH_Failure2.
    Failure2(Failure),
}

impl Message {
    /// Decodes one message from the start of `b`.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        need("authentication", b, 6)?;
        let (ty, id, t_id) = (u8_at(b, 0), u8_at(b, 1), u16_at(b, 4));
        match (ty, id) {
            (auth_type::COMMON, auth_id::NEGOTIATE) => {
                need("AUTH_Negotiate", b, NEGOTIATE_HEADER_LEN)?;
                let napd = usize::from(u8_at(b, 7));
                need(
                    "AUTH_Negotiate",
                    b,
                    NEGOTIATE_HEADER_LEN + napd * PROTOCOL_DESCRIPTOR_LEN,
                )?;
                let mut protocols = Vec::with_capacity(napd);
                for i in 0..napd {
                    let d = NEGOTIATE_HEADER_LEN + i * PROTOCOL_DESCRIPTOR_LEN;
                    let (halen, dhlen) = (u8_at(b, d + 2), u8_at(b, d + 3));
                    if usize::from(halen) > MAX_HASH_IDS || usize::from(dhlen) > MAX_DH_IDS {
                        return Err(DecodeError::TooManyIds { halen, dhlen });
                    }
                    protocols.push(ProtocolDescriptor {
                        auth_id: u8_at(b, d),
                        hashes: bytes_at(b, d + 4, usize::from(halen)),
                        dh_groups: bytes_at(b, d + 4 + DH_ID_OFFSET, usize::from(dhlen)),
                    });
                }
                Ok(Self::Negotiate(Negotiate {
                    t_id,
                    sc_c: u8_at(b, 6),
                    protocols,
                }))
            }
            (auth_type::DHCHAP, auth_id::CHALLENGE) => {
                const W: &str = "DH-HMAC-CHAP_Challenge";
                need(W, b, CHALLENGE_HEADER_LEN)?;
                let hl = usize::from(u8_at(b, 6));
                let dhvlen = usize::from(u16_at(b, 10));
                need(W, b, CHALLENGE_HEADER_LEN + hl + dhvlen)?;
                Ok(Self::Challenge(Challenge {
                    t_id,
                    hash_id: u8_at(b, 8),
                    dh_group: u8_at(b, 9),
                    seqnum: u32_at(b, 12),
                    challenge: bytes_at(b, CHALLENGE_HEADER_LEN, hl),
                    dh_value: bytes_at(b, CHALLENGE_HEADER_LEN + hl, dhvlen),
                }))
            }
            (auth_type::DHCHAP, auth_id::REPLY) => {
                const W: &str = "DH-HMAC-CHAP_Reply";
                need(W, b, REPLY_HEADER_LEN)?;
                let hl = usize::from(u8_at(b, 6));
                let dhvlen = usize::from(u16_at(b, 10));
                // As nvmet: R1 and C2 are both present (C2 zeroed when unused).
                need(W, b, REPLY_HEADER_LEN + 2 * hl + dhvlen)?;
                let cvalid = u8_at(b, 8) & 1 != 0;
                Ok(Self::Reply(Reply {
                    t_id,
                    seqnum: u32_at(b, 12),
                    response: bytes_at(b, REPLY_HEADER_LEN, hl),
                    challenge: cvalid.then(|| bytes_at(b, REPLY_HEADER_LEN + hl, hl)),
                    dh_value: bytes_at(b, REPLY_HEADER_LEN + 2 * hl, dhvlen),
                }))
            }
            (auth_type::DHCHAP, auth_id::SUCCESS1) => {
                const W: &str = "DH-HMAC-CHAP_Success1";
                need(W, b, SUCCESS1_HEADER_LEN)?;
                let hl = u8_at(b, 6);
                let rvalid = u8_at(b, 8) & 1 != 0;
                if rvalid {
                    need(W, b, SUCCESS1_HEADER_LEN + usize::from(hl))?;
                }
                Ok(Self::Success1(Success1 {
                    t_id,
                    hl,
                    response: rvalid.then(|| bytes_at(b, SUCCESS1_HEADER_LEN, usize::from(hl))),
                }))
            }
            // nvmet reads nothing past T_ID, and the Linux host sends all 16 bytes.
            (auth_type::DHCHAP, auth_id::SUCCESS2) => Ok(Self::Success2(t_id)),
            (auth_type::COMMON, auth_id::FAILURE1 | auth_id::FAILURE2) => {
                need("AUTH_Failure", b, FAILURE_LEN)?;
                let f = Failure {
                    t_id,
                    reason_code: u8_at(b, 6),
                    reason: FailureReason(u8_at(b, 7)),
                };
                Ok(if id == auth_id::FAILURE1 {
                    Self::Failure1(f)
                } else {
                    Self::Failure2(f)
                })
            }
            _ => Err(DecodeError::UnknownMessage {
                auth_type: ty,
                auth_id: id,
            }),
        }
    }

    /// Encodes the message. Lists and values longer than their length fields can
    /// say are cut to fit (30 IDs, 255-byte HL, 65535-byte DHVLEN); the state
    /// machines never build such messages.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Negotiate(n) => {
                let napd = n.protocols.len().min(255);
                let mut b = vec![0u8; NEGOTIATE_HEADER_LEN + napd * PROTOCOL_DESCRIPTOR_LEN];
                header(&mut b, auth_type::COMMON, auth_id::NEGOTIATE, n.t_id);
                put_u8(&mut b, 6, n.sc_c);
                put_u8(&mut b, 7, napd as u8);
                for (i, p) in n.protocols.iter().take(napd).enumerate() {
                    let d = NEGOTIATE_HEADER_LEN + i * PROTOCOL_DESCRIPTOR_LEN;
                    let hashes = &p.hashes[..p.hashes.len().min(MAX_HASH_IDS)];
                    let groups = &p.dh_groups[..p.dh_groups.len().min(MAX_DH_IDS)];
                    put_u8(&mut b, d, p.auth_id);
                    put_u8(&mut b, d + 2, hashes.len() as u8);
                    put_u8(&mut b, d + 3, groups.len() as u8);
                    put(&mut b, d + 4, hashes);
                    put(&mut b, d + 4 + DH_ID_OFFSET, groups);
                }
                b
            }
            Self::Challenge(c) => {
                let cv = &c.challenge[..c.challenge.len().min(255)];
                let dh = &c.dh_value[..c.dh_value.len().min(0xFFFF)];
                let mut b = vec![0u8; CHALLENGE_HEADER_LEN + cv.len() + dh.len()];
                header(&mut b, auth_type::DHCHAP, auth_id::CHALLENGE, c.t_id);
                put_u8(&mut b, 6, cv.len() as u8);
                put_u8(&mut b, 8, c.hash_id);
                put_u8(&mut b, 9, c.dh_group);
                put_u16(&mut b, 10, dh.len() as u16);
                put_u32(&mut b, 12, c.seqnum);
                put(&mut b, CHALLENGE_HEADER_LEN, cv);
                put(&mut b, CHALLENGE_HEADER_LEN + cv.len(), dh);
                b
            }
            Self::Reply(r) => {
                let rv = &r.response[..r.response.len().min(255)];
                let hl = rv.len();
                let dh = &r.dh_value[..r.dh_value.len().min(0xFFFF)];
                let mut b = vec![0u8; REPLY_HEADER_LEN + 2 * hl + dh.len()];
                header(&mut b, auth_type::DHCHAP, auth_id::REPLY, r.t_id);
                put_u8(&mut b, 6, hl as u8);
                put_u8(&mut b, 8, u8::from(r.challenge.is_some()));
                put_u16(&mut b, 10, dh.len() as u16);
                put_u32(&mut b, 12, r.seqnum);
                put(&mut b, REPLY_HEADER_LEN, rv);
                if let Some(c2) = &r.challenge {
                    put(&mut b, REPLY_HEADER_LEN + hl, &c2[..c2.len().min(hl)]);
                }
                put(&mut b, REPLY_HEADER_LEN + 2 * hl, dh);
                b
            }
            Self::Success1(s) => {
                let rv = s.response.as_deref().map(|r| &r[..r.len().min(255)]);
                let mut b = vec![0u8; SUCCESS1_HEADER_LEN + rv.map_or(0, <[u8]>::len)];
                header(&mut b, auth_type::DHCHAP, auth_id::SUCCESS1, s.t_id);
                put_u8(&mut b, 6, s.hl);
                if let Some(rv) = rv {
                    put_u8(&mut b, 8, 1);
                    put(&mut b, SUCCESS1_HEADER_LEN, rv);
                }
                b
            }
            Self::Success2(t_id) => {
                let mut b = vec![0u8; SUCCESS2_LEN];
                header(&mut b, auth_type::DHCHAP, auth_id::SUCCESS2, *t_id);
                b
            }
            Self::Failure1(f) | Self::Failure2(f) => {
                let id = if matches!(self, Self::Failure1(_)) {
                    auth_id::FAILURE1
                } else {
                    auth_id::FAILURE2
                };
                let mut b = vec![0u8; FAILURE_LEN];
                header(&mut b, auth_type::COMMON, id, f.t_id);
                put_u8(&mut b, 6, f.reason_code);
                put_u8(&mut b, 7, f.reason.0);
                b
            }
        }
    }

    /// The transaction identifier of the message.
    pub fn t_id(&self) -> u16 {
        match self {
            Self::Negotiate(m) => m.t_id,
            Self::Challenge(m) => m.t_id,
            Self::Reply(m) => m.t_id,
            Self::Success1(m) => m.t_id,
            Self::Success2(t) => *t,
            Self::Failure1(f) | Self::Failure2(f) => f.t_id,
        }
    }

    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Negotiate(_) => "AUTH_Negotiate",
            Self::Challenge(_) => "DH-HMAC-CHAP_Challenge",
            Self::Reply(_) => "DH-HMAC-CHAP_Reply",
            Self::Success1(_) => "DH-HMAC-CHAP_Success1",
            Self::Success2(_) => "DH-HMAC-CHAP_Success2",
            Self::Failure1(_) => "AUTH_Failure1",
            Self::Failure2(_) => "AUTH_Failure2",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(m: Message) -> Vec<u8> {
        let b = m.encode();
        assert_eq!(Message::decode(&b).as_ref(), Ok(&m), "{}", m.name());
        // Trailing bytes (a larger receive buffer) are ignored.
        let mut padded = b.clone();
        padded.resize(b.len() + 100, 0);
        assert_eq!(Message::decode(&padded), Ok(m.clone()));
        // Every strict prefix of a message with a length-dependent body is short.
        for cut in 0..b.len() {
            if let Ok(d) = Message::decode(&b[..cut]) {
                assert!(matches!(d, Message::Success2(_)) || cut >= 6, "{cut}");
            }
        }
        b
    }

    #[test]
    fn negotiate_layout_as_linux_sends_it() {
        let b = rt(Message::Negotiate(Negotiate {
            t_id: 0x1234,
            sc_c: 0,
            protocols: vec![ProtocolDescriptor::dhchap(
                vec![1, 2, 3],
                vec![0, 1, 2, 3, 4, 5],
            )],
        }));
        assert_eq!(b.len(), 72);
        assert_eq!(&b[..8], &[0x00, 0x00, 0, 0, 0x34, 0x12, 0x00, 0x01]);
        assert_eq!(&b[8..12], &[0x01, 0x00, 3, 6]);
        assert_eq!(&b[12..15], &[1, 2, 3]);
        assert_eq!(&b[42..48], &[0, 1, 2, 3, 4, 5]);
        assert!(Message::decode(&b[..71]).is_err());
        let mut too_many = b.clone();
        too_many[10] = 31;
        assert!(matches!(
            Message::decode(&too_many),
            Err(DecodeError::TooManyIds { .. })
        ));
    }

    #[test]
    fn challenge_reply_success_failure_layouts() {
        let b = rt(Message::Challenge(Challenge {
            t_id: 7,
            hash_id: 1,
            dh_group: 1,
            seqnum: 0xAABBCCDD,
            challenge: vec![0x11; 32],
            dh_value: vec![0x22; 256],
        }));
        assert_eq!(b.len(), 16 + 32 + 256);
        assert_eq!(
            &b[..16],
            &[1, 1, 0, 0, 7, 0, 32, 0, 1, 1, 0x00, 0x01, 0xDD, 0xCC, 0xBB, 0xAA]
        );
        assert_eq!(b[16], 0x11);
        assert_eq!(b[48], 0x22);

        let b = rt(Message::Reply(Reply {
            t_id: 7,
            seqnum: 5,
            response: vec![0x33; 48],
            challenge: Some(vec![0x44; 48]),
            dh_value: vec![],
        }));
        assert_eq!(b.len(), 16 + 96);
        assert_eq!(&b[..16], &[1, 2, 0, 0, 7, 0, 48, 0, 1, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!((b[16], b[64]), (0x33, 0x44));
        // No C2: CVALID clear, the C2 bytes are still there, zeroed (as Linux).
        let b = rt(Message::Reply(Reply {
            t_id: 7,
            seqnum: 0,
            response: vec![0x33; 32],
            challenge: None,
            dh_value: vec![0x55; 256],
        }));
        assert_eq!(b.len(), 16 + 64 + 256);
        assert_eq!((b[8], b[48], b[80]), (0, 0, 0x55));

        let b = rt(Message::Success1(Success1 {
            t_id: 9,
            hl: 64,
            response: Some(vec![0x66; 64]),
        }));
        assert_eq!(b.len(), 80);
        assert_eq!(&b[..9], &[1, 3, 0, 0, 9, 0, 64, 0, 1]);
        let b = rt(Message::Success1(Success1 {
            t_id: 9,
            hl: 32,
            response: None,
        }));
        assert_eq!(b, vec![1, 3, 0, 0, 9, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

        let b = rt(Message::Success2(3));
        assert_eq!(b, vec![1, 4, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let f = Failure {
            t_id: 3,
            reason_code: 1,
            reason: FailureReason::FAILED,
        };
        assert_eq!(rt(Message::Failure1(f)), vec![0, 0xF1, 0, 0, 3, 0, 1, 1]);
        assert_eq!(rt(Message::Failure2(f)), vec![0, 0xF0, 0, 0, 3, 0, 1, 1]);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(Message::decode(&[]).is_err());
        assert_eq!(
            Message::decode(&[2, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownMessage {
                auth_type: 2,
                auth_id: 0
            })
        );
        // HL and DHVLEN larger than the data.
        let mut c = vec![1, 1, 0, 0, 0, 0, 255, 0, 1, 0, 0xff, 0xff, 0, 0, 0, 0];
        c.extend([0; 40]);
        assert!(matches!(
            Message::decode(&c),
            Err(DecodeError::Short { .. })
        ));
        assert_eq!(
            DecodeError::UnknownMessage {
                auth_type: 9,
                auth_id: 9
            }
            .reason(),
            FailureReason::INCORRECT_MESSAGE
        );
    }
}
