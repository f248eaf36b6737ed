//! NVMe/TCP PDUs (NVMe/TCP Transport Specification 1.0, §3.6 "PDU formats").
//!
//! Every PDU starts with the 8-byte common header (§3.6.1, Figure 13); then the
//! PDU-specific header, an optional header digest, padding up to PDO, the data and
//! an optional data digest. [`Pdu`] is the decoded form; [`PduEncoder`] writes it
//! with the digests and data alignment negotiated by ICReq/ICResp.

use bytes::{BufMut, Bytes, BytesMut};

use super::digest::{crc32c, DIGEST_LEN};
use crate::cqe::{Cqe, CQE_SIZE};
use crate::le::*;
use crate::sqe::{Sqe, SQE_SIZE};

/// Length of the common header.
pub const CH_LEN: usize = 8;
/// HLEN of ICReq and ICResp (Figures 15-16).
pub const IC_HLEN: usize = 128;
/// HLEN of H2CTermReq and C2HTermReq (Figures 17-18).
pub const TERM_HLEN: usize = 24;
/// Largest TermReq PDU: header plus at most 128 bytes of error data (§3.6.2.3).
pub const TERM_MAX_PLEN: usize = 152;
/// HLEN of CapsuleCmd (Figure 19): common header + SQE.
pub const CMD_HLEN: usize = CH_LEN + SQE_SIZE;
/// HLEN of CapsuleResp (Figure 20): common header + CQE.
pub const RESP_HLEN: usize = CH_LEN + CQE_SIZE;
/// HLEN of H2CData, C2HData and R2T (Figures 21-23).
pub const DATA_HLEN: usize = 24;
/// The only PDU Format Version defined (ICReq/ICResp PFV).
pub const PFV_1_0: u16 = 0;

/// PDU types (Figure 13, PDU-Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PduType {
    /// Initialize Connection Request.
    IcReq = 0x00,
    /// Initialize Connection Response.
    IcResp = 0x01,
    /// Host to Controller Terminate Connection Request.
    H2CTermReq = 0x02,
    /// Controller to Host Terminate Connection Request.
    C2HTermReq = 0x03,
    /// Command Capsule.
    CapsuleCmd = 0x04,
    /// Response Capsule.
    CapsuleResp = 0x05,
    /// Host to Controller Data.
    H2CData = 0x06,
    /// Controller to Host Data.
    C2HData = 0x07,
    /// Ready to Transfer.
    R2T = 0x09,
}

impl PduType {
    /// Decodes a PDU-Type byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x00 => Self::IcReq,
            0x01 => Self::IcResp,
            0x02 => Self::H2CTermReq,
            0x03 => Self::C2HTermReq,
            0x04 => Self::CapsuleCmd,
            0x05 => Self::CapsuleResp,
            0x06 => Self::H2CData,
            0x07 => Self::C2HData,
            0x09 => Self::R2T,
            _ => return None,
        })
    }

    /// The fixed HLEN of this type.
    pub fn hlen(self) -> usize {
        match self {
            Self::IcReq | Self::IcResp => IC_HLEN,
            Self::H2CTermReq | Self::C2HTermReq => TERM_HLEN,
            Self::CapsuleCmd => CMD_HLEN,
            Self::CapsuleResp => RESP_HLEN,
            Self::H2CData | Self::C2HData | Self::R2T => DATA_HLEN,
        }
    }

    /// True if this type carries a header digest once it is negotiated (all but
    /// ICReq, ICResp and the TermReqs, §3.6.1).
    pub fn may_have_hdgst(self) -> bool {
        !matches!(
            self,
            Self::IcReq | Self::IcResp | Self::H2CTermReq | Self::C2HTermReq
        )
    }

    /// True if this type may carry data, and so a data digest.
    pub fn may_have_data(self) -> bool {
        matches!(self, Self::CapsuleCmd | Self::H2CData | Self::C2HData)
    }

    /// True if a controller receives this type (the host sends it).
    pub fn is_host_to_controller(self) -> bool {
        (self as u8) & 1 == 0
    }
}

/// Common header flags (Figure 13 and the data PDU figures).
pub mod flags {
    /// HDGSTF: a header digest follows the header.
    pub const HDGSTF: u8 = 1 << 0;
    /// DDGSTF: a data digest follows the data.
    pub const DDGSTF: u8 = 1 << 1;
    /// LAST_PDU: the last data PDU of a transfer (H2CData, C2HData).
    pub const LAST_PDU: u8 = 1 << 2;
    /// SUCCESS: the command completed successfully; no CapsuleResp follows (C2HData).
    pub const SUCCESS: u8 = 1 << 3;
}

/// The 8-byte common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    /// PDU-Type byte (not necessarily a known type).
    pub pdu_type: u8,
    /// FLAGS.
    pub flags: u8,
    /// Header length, excluding the header digest.
    pub hlen: u8,
    /// PDU Data Offset: where the data starts (0 = no data).
    pub pdo: u8,
    /// Total PDU length in bytes.
    pub plen: u32,
}

impl CommonHeader {
    /// Decodes 8 bytes.
    pub fn decode(b: &[u8]) -> Self {
        Self {
            pdu_type: u8_at(b, 0),
            flags: u8_at(b, 1),
            hlen: u8_at(b, 2),
            pdo: u8_at(b, 3),
            plen: u32_at(b, 4),
        }
    }

    /// Encodes 8 bytes.
    pub fn encode(&self) -> [u8; CH_LEN] {
        let mut b = [0u8; CH_LEN];
        put_u8(&mut b, 0, self.pdu_type);
        put_u8(&mut b, 1, self.flags);
        put_u8(&mut b, 2, self.hlen);
        put_u8(&mut b, 3, self.pdo);
        put_u32(&mut b, 4, self.plen);
        b
    }
}

/// Digest selection in ICReq/ICResp DGST (Figures 15-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    /// Header digest (bit 0).
    pub header: bool,
    /// Data digest (bit 1).
    pub data: bool,
}

impl Digests {
    /// Decodes the DGST byte.
    pub fn from_u8(v: u8) -> Self {
        Self {
            header: v & 1 != 0,
            data: v & 2 != 0,
        }
    }

    /// Encodes the DGST byte.
    pub fn to_u8(self) -> u8 {
        u8::from(self.header) | (u8::from(self.data) << 1)
    }
}

/// ICReq (Figure 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReq {
    /// PDU Format Version.
    pub pfv: u16,
    /// Host PDU Data Alignment, in dwords, 0's based: how the host wants C2H data aligned.
    pub hpda: u8,
    /// Digests the host asks for.
    pub digests: Digests,
    /// Maximum number of outstanding R2Ts per command, 0's based.
    pub maxr2t: u32,
}

/// ICResp (Figure 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcResp {
    /// PDU Format Version.
    pub pfv: u16,
    /// Controller PDU Data Alignment, in dwords, 0's based: how the controller wants H2C data aligned.
    pub cpda: u8,
    /// Digests enabled.
    pub digests: Digests,
    /// Largest data in one H2CData PDU, in bytes (at least 4096, a multiple of 4).
    pub maxh2cdata: u32,
}

/// Fatal Error Status of a termination request (§3.6.2.3, Figure 17-18 FES).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fes {
    /// 01h: Invalid PDU Header Field; FEI is the byte offset of the field.
    InvalidHeaderField,
    /// 02h: PDU Sequence Error.
    PduSequenceError,
    /// 03h: Header Digest Error.
    HeaderDigestError,
    /// 04h: Data Transfer Out of Range; FEI is the offset.
    DataOutOfRange,
    /// 05h: Data Transfer Limit Exceeded (also R2T Limit Exceeded).
    DataLimitExceeded,
    /// 06h: Unsupported Parameter; FEI is the byte offset of the field.
    UnsupportedParameter,
    /// Any other value received from a peer.
    Other(u16),
}

impl Fes {
    /// Decodes FES.
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::InvalidHeaderField,
            2 => Self::PduSequenceError,
            3 => Self::HeaderDigestError,
            4 => Self::DataOutOfRange,
            5 => Self::DataLimitExceeded,
            6 => Self::UnsupportedParameter,
            x => Self::Other(x),
        }
    }

    /// Encodes FES.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::InvalidHeaderField => 1,
            Self::PduSequenceError => 2,
            Self::HeaderDigestError => 3,
            Self::DataOutOfRange => 4,
            Self::DataLimitExceeded => 5,
            Self::UnsupportedParameter => 6,
            Self::Other(x) => x,
        }
    }
}

/// H2CTermReq or C2HTermReq (Figures 17-18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermReq {
    /// Fatal Error Status.
    pub fes: Fes,
    /// Fatal Error Information (a field offset for FES 01h and 06h).
    pub fei: u32,
    /// Error data: the header of the PDU that caused the error, at most 128 bytes.
    pub data: Bytes,
}

/// H2CData or C2HData (Figures 21-22). C2HData's TTAG field is reserved (0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPdu {
    /// Command Capsule CID.
    pub cccid: u16,
    /// Transfer Tag from the R2T (H2CData only).
    pub ttag: u16,
    /// Data offset within the command's buffer.
    pub datao: u32,
    /// Data length.
    pub datal: u32,
    /// LAST_PDU flag.
    pub last: bool,
    /// SUCCESS flag (C2HData only).
    pub success: bool,
    /// The data.
    pub data: Bytes,
}

/// R2T (Figure 23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    /// Command Capsule CID.
    pub cccid: u16,
    /// Transfer Tag to echo in H2CData.
    pub ttag: u16,
    /// Offset of the requested data.
    pub r2to: u32,
    /// Length of the requested data.
    pub r2tl: u32,
}

/// A decoded PDU. Data is a slice of the receive buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// H2CTermReq.
    H2CTermReq(TermReq),
    /// C2HTermReq.
    C2HTermReq(TermReq),
    /// CapsuleCmd: the SQE and any in-capsule data.
    CapsuleCmd {
        /// The command.
        sqe: Sqe,
        /// In-capsule data (empty if none).
        data: Bytes,
    },
    /// CapsuleResp.
    CapsuleResp(Cqe),
    /// H2CData.
    H2CData(DataPdu),
    /// C2HData.
    C2HData(DataPdu),
    /// R2T.
    R2T(R2t),
}

impl Pdu {
    /// The PDU's type.
    pub fn pdu_type(&self) -> PduType {
        match self {
            Self::IcReq(_) => PduType::IcReq,
            Self::IcResp(_) => PduType::IcResp,
            Self::H2CTermReq(_) => PduType::H2CTermReq,
            Self::C2HTermReq(_) => PduType::C2HTermReq,
            Self::CapsuleCmd { .. } => PduType::CapsuleCmd,
            Self::CapsuleResp(_) => PduType::CapsuleResp,
            Self::H2CData(_) => PduType::H2CData,
            Self::C2HData(_) => PduType::C2HData,
            Self::R2T(_) => PduType::R2T,
        }
    }

    /// The data this PDU carries.
    pub fn data(&self) -> &[u8] {
        match self {
            Self::CapsuleCmd { data, .. } => data,
            Self::H2CData(d) | Self::C2HData(d) => &d.data,
            Self::H2CTermReq(t) | Self::C2HTermReq(t) => &t.data,
            _ => &[],
        }
    }
}

/// Writes PDUs with the digests and the receiver's data alignment that the
/// connection negotiated. Before negotiation (ICReq/ICResp, TermReq) use
/// [`PduEncoder::default`]: no digests, no alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduEncoder {
    /// Send header digests.
    pub hdgst: bool,
    /// Send data digests.
    pub ddgst: bool,
    /// Alignment of data in bytes, as the receiver asked: (PDA + 1) × 4.
    pub pda: usize,
}

impl Default for PduEncoder {
    fn default() -> Self {
        Self {
            hdgst: false,
            ddgst: false,
            pda: 4,
        }
    }
}

/// Where the data of an encoded PDU goes, so that callers can send it from its own
/// buffer (gather I/O) instead of copying it behind the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedLayout {
    /// Bytes of header, header digest and padding written before the data.
    pub prefix_len: usize,
    /// The data digest to send after the data, if data digests are on and there is data.
    pub ddgst: Option<[u8; 4]>,
}

impl PduEncoder {
    /// Encoder for a negotiated connection; `pda` is the receiver's 0's-based PDA in dwords.
    pub fn negotiated(digests: Digests, pda: u8) -> Self {
        Self {
            hdgst: digests.header,
            ddgst: digests.data,
            pda: (usize::from(pda.min(31)) + 1) * 4,
        }
    }

    /// Encodes `pdu` fully (header, digests, padding, data) into `out`.
    pub fn encode(&self, pdu: &Pdu, out: &mut BytesMut) {
        let layout = self.encode_prefix(pdu, out);
        out.extend_from_slice(pdu.data());
        if let Some(d) = layout.ddgst {
            out.extend_from_slice(&d);
        }
    }

    /// Encodes `pdu` into a fresh buffer.
    pub fn to_bytes(&self, pdu: &Pdu) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(pdu, &mut b);
        b.freeze()
    }

    /// Encodes everything that precedes the data (header, header digest, padding) into
    /// `out` and returns where the data goes and its digest. The caller sends
    /// `pdu.data()` next and then the digest: this is how data is sent without a copy.
    pub fn encode_prefix(&self, pdu: &Pdu, out: &mut BytesMut) -> EncodedLayout {
        let data = pdu.data();
        let (prefix_len, dd) = self.encode_header(pdu, data.len(), out);
        EncodedLayout {
            prefix_len,
            ddgst: dd.then(|| crc32c(data).to_le_bytes()),
        }
    }

    /// Encodes the header, header digest and padding of `pdu` as if it carried
    /// `data_len` bytes of data (its own data is not looked at), for data sent from
    /// several buffers. Returns the prefix length and whether a data digest must
    /// follow the data.
    pub fn encode_header(&self, pdu: &Pdu, data_len: usize, out: &mut BytesMut) -> (usize, bool) {
        let t = pdu.pdu_type();
        let hlen = t.hlen();
        let is_term = matches!(t, PduType::H2CTermReq | PduType::C2HTermReq);
        let hd = if self.hdgst && t.may_have_hdgst() {
            DIGEST_LEN
        } else {
            0
        };
        let has_data = data_len != 0 && t.may_have_data();
        let dd = if self.ddgst && has_data {
            DIGEST_LEN
        } else {
            0
        };
        let (pdo, pad) = if has_data {
            let unaligned = hlen + hd;
            let aligned = unaligned.div_ceil(self.pda.max(1)) * self.pda.max(1);
            (aligned, aligned - unaligned)
        } else {
            (0, 0)
        };
        let plen = if is_term {
            hlen + data_len
        } else {
            hlen + hd + pad + if has_data { data_len + dd } else { 0 }
        };
        let mut fl = 0u8;
        if hd != 0 {
            fl |= flags::HDGSTF;
        }
        if dd != 0 {
            fl |= flags::DDGSTF;
        }
        let mut h = [0u8; IC_HLEN];
        match pdu {
            Pdu::IcReq(r) => {
                put_u16(&mut h, 8, r.pfv);
                put_u8(&mut h, 10, r.hpda);
                put_u8(&mut h, 11, r.digests.to_u8());
                put_u32(&mut h, 12, r.maxr2t);
            }
            Pdu::IcResp(r) => {
                put_u16(&mut h, 8, r.pfv);
                put_u8(&mut h, 10, r.cpda);
                put_u8(&mut h, 11, r.digests.to_u8());
                put_u32(&mut h, 12, r.maxh2cdata);
            }
            Pdu::H2CTermReq(r) | Pdu::C2HTermReq(r) => {
                put_u16(&mut h, 8, r.fes.to_u16());
                put_u32(&mut h, 10, r.fei);
            }
            Pdu::CapsuleCmd { sqe, .. } => put(&mut h, 8, &sqe.encode()),
            Pdu::CapsuleResp(cqe) => put(&mut h, 8, &cqe.encode()),
            Pdu::H2CData(d) | Pdu::C2HData(d) => {
                if d.last {
                    fl |= flags::LAST_PDU;
                }
                if d.success && t == PduType::C2HData {
                    fl |= flags::SUCCESS;
                }
                put_u16(&mut h, 8, d.cccid);
                put_u16(&mut h, 10, d.ttag);
                put_u32(&mut h, 12, d.datao);
                put_u32(&mut h, 16, d.datal);
            }
            Pdu::R2T(r) => {
                put_u16(&mut h, 8, r.cccid);
                put_u16(&mut h, 10, r.ttag);
                put_u32(&mut h, 12, r.r2to);
                put_u32(&mut h, 16, r.r2tl);
            }
        }
        let ch = CommonHeader {
            pdu_type: t as u8,
            flags: fl,
            hlen: hlen as u8,
            pdo: pdo as u8,
            plen: plen as u32,
        };
        put(&mut h, 0, &ch.encode());
        let hdr = h.get(..hlen).unwrap_or(&[]);
        out.reserve(hlen + hd + pad);
        out.extend_from_slice(hdr);
        if hd != 0 {
            out.put_u32_le(crc32c(hdr));
        }
        out.put_bytes(0, pad);
        (hlen + hd + pad, dd != 0)
    }
}
