//! Streaming PDU decoder (NVMe/TCP 1.0 §3.6).
//!
//! Bytes arrive in any chunking; [`Decoder::next_pdu`] returns whole PDUs once their
//! last byte is in. The received bytes are held in one `BytesMut`, and a PDU's data
//! is handed out as a `Bytes` slice of that buffer, so data is copied once, from the
//! socket into the buffer. Headers are checked in field order (type, flags, HLEN,
//! PDO, PLEN) before any data is buffered, so a hostile PLEN cannot make the
//! decoder reserve memory beyond the configured limits.

use bytes::{Bytes, BytesMut};

use super::digest::{crc32c, DIGEST_LEN};
use super::error::FatalError;
use super::pdu::*;
use crate::cqe::Cqe;
use crate::le::*;
use crate::sqe::Sqe;

/// Makes room for `additional` more bytes at the end of a receive buffer,
/// moving only the bytes still in it.
///
/// `BytesMut::reserve` grows a buffer it owns alone with `realloc`, and the
/// allocator copies the whole old block: the PDUs already split off its front
/// too, up to a read chunk of dead bytes per grow (at 128 KiB writes that
/// copy was 4.6 % of the target's time; docs/performance.md). Here the live
/// bytes move to the front of the same block when it is free and large
/// enough, and otherwise to a new block sized for them: the room asked for,
/// and at least twice the live bytes, so that a buffer grown a little at a
/// time is copied O(n) in all, not O(n²) (a fuzz input that made the target
/// read one byte at a time while its buffer held 70 KiB ran it out of memory).
pub fn make_room(buf: &mut BytesMut, additional: usize) {
    if buf.capacity() - buf.len() >= additional || buf.try_reclaim(additional) {
        return;
    }
    let mut fresh = BytesMut::with_capacity((buf.len() + additional).max(2 * buf.len()));
    fresh.extend_from_slice(buf);
    *buf = fresh;
}

/// Which end of the connection the decoder serves: it accepts only the PDU types
/// that flow towards that end (§3.6.1: a controller receives even types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The controller: receives ICReq, H2CTermReq, CapsuleCmd, H2CData.
    Controller,
    /// The host: receives ICResp, C2HTermReq, CapsuleResp, C2HData, R2T.
    Host,
}

/// Limits and negotiated parameters the decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Header digests are on.
    pub hdgst: bool,
    /// Data digests are on.
    pub ddgst: bool,
    /// Alignment of PDO this side asked for, in bytes ((PDA + 1) × 4).
    pub rx_pda: usize,
    /// Largest in-capsule data accepted in one CapsuleCmd.
    pub max_icd: u32,
    /// Largest data in one H2CData or C2HData PDU.
    pub max_data: u32,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            hdgst: false,
            ddgst: false,
            rx_pda: 4,
            max_icd: 8192,
            max_data: 1 << 20,
        }
    }
}

/// A decoded PDU and whether its data digest matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The PDU.
    pub pdu: Pdu,
    /// False if data digests are on and the data's digest did not match. A data
    /// digest error is not fatal (§3.6.2.2): the command fails instead.
    pub data_digest_ok: bool,
}

/// The streaming decoder. See the module documentation.
#[derive(Debug)]
pub struct Decoder {
    side: Side,
    cfg: DecoderConfig,
    negotiated: bool,
    buf: BytesMut,
    /// PLEN of the PDU whose header has been validated, while waiting for the rest.
    pending_plen: Option<usize>,
}

const FEI_TYPE: u32 = 0;
const FEI_FLAGS: u32 = 1;
const FEI_HLEN: u32 = 2;
const FEI_PDO: u32 = 3;
const FEI_PLEN: u32 = 4;

impl Decoder {
    /// A decoder for `side` before connection initialisation: only ICReq/ICResp and
    /// TermReqs are accepted, with no digests.
    pub fn new(side: Side, cfg: DecoderConfig) -> Self {
        Self {
            side,
            cfg,
            negotiated: false,
            buf: BytesMut::new(),
            pending_plen: None,
        }
    }

    /// Switches to the negotiated parameters after ICReq/ICResp.
    pub fn set_negotiated(&mut self, cfg: DecoderConfig) {
        self.cfg = cfg;
        self.negotiated = true;
    }

    /// The current configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The receive buffer, for reading from a socket straight into it
    /// (`read_buf`); bytes appended there are decoded by the next [`Self::next_pdu`].
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet returned as PDUs.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the PDU in progress needs (at least 1 when idle), to size reads.
    pub fn wanted(&self) -> usize {
        match self.pending_plen {
            Some(p) => p.saturating_sub(self.buf.len()).max(1),
            None => self.header_len().saturating_sub(self.buf.len()).max(1),
        }
    }

    /// How much of the next PDU must be buffered before its header is judged: the
    /// common header, then HLEN bytes (at most PLEN, at most the 128 bytes a
    /// TermReq carries). Judging only then makes the outcome, and the header
    /// echoed in the TermReq, independent of how the bytes were segmented.
    fn header_len(&self) -> usize {
        match self.buf.get(..CH_LEN) {
            Some(raw) => {
                let ch = CommonHeader::decode(raw);
                usize::from(ch.hlen)
                    .min(ch.plen as usize)
                    .clamp(CH_LEN, TERM_MAX_PLEN - TERM_HLEN)
            }
            None => CH_LEN,
        }
    }

    /// Returns the next whole PDU, `Ok(None)` if more bytes are needed, or the fatal
    /// error that ends the connection.
    pub fn next_pdu(&mut self) -> Result<Option<Received>, FatalError> {
        let plen = match self.pending_plen {
            Some(p) => p,
            None => {
                // The common header alone decides whether the PDU is acceptable,
                // so a garbage header is refused as soon as its 8 bytes are here
                // rather than after HLEN more (a peer could stall there).
                if self.buf.len() < CH_LEN {
                    return Ok(None);
                }
                let p = self.check_header()?;
                if self.buf.len() < self.header_len() {
                    return Ok(None);
                }
                self.pending_plen = Some(p);
                p
            }
        };
        if self.buf.len() < plen {
            let more = plen - self.buf.len();
            make_room(&mut self.buf, more);
            return Ok(None);
        }
        self.pending_plen = None;
        let pdu = self.buf.split_to(plen).freeze();
        self.parse(pdu).map(Some)
    }

    /// Validates the common header at the front of the buffer and returns PLEN.
    fn check_header(&self) -> Result<usize, FatalError> {
        let raw = self.buf.get(..CH_LEN).unwrap_or(&[]);
        let ch = CommonHeader::decode(raw);
        // The error data is the common header: it is all that the checks
        // below read, and it is there whatever the segmentation (the data
        // must not depend on how the bytes arrived).
        let hdr_for_err = raw;
        let err = |fes, fei, why: &str| FatalError::new(fes, fei, hdr_for_err, why.to_string());

        let Some(t) = PduType::from_u8(ch.pdu_type) else {
            return Err(err(
                Fes::InvalidHeaderField,
                FEI_TYPE,
                &format!("unknown PDU type {:#04x}", ch.pdu_type),
            ));
        };
        let ours = match self.side {
            Side::Controller => t.is_host_to_controller(),
            Side::Host => !t.is_host_to_controller(),
        };
        if !ours {
            return Err(err(
                Fes::InvalidHeaderField,
                FEI_TYPE,
                &format!("{t:?} PDU sent in the wrong direction"),
            ));
        }
        let is_term = matches!(t, PduType::H2CTermReq | PduType::C2HTermReq);
        let is_ic = matches!(t, PduType::IcReq | PduType::IcResp);
        if is_term {
            // §3.6.2.3: a malformed TermReq is not answered; the connection just closes.
            let p = ch.plen as usize;
            if usize::from(ch.hlen) != TERM_HLEN || !(TERM_HLEN..=TERM_MAX_PLEN).contains(&p) {
                return Err(FatalError::silent(format!(
                    "malformed termination request (hlen {}, plen {p})",
                    ch.hlen
                )));
            }
            return Ok(p);
        }
        if is_ic && self.negotiated {
            return Err(err(
                Fes::InvalidHeaderField,
                FEI_TYPE,
                &format!("{t:?} after the connection was initialised"),
            ));
        }
        if !is_ic && !self.negotiated {
            return Err(err(
                Fes::PduSequenceError,
                FEI_TYPE,
                &format!("{t:?} before connection initialisation"),
            ));
        }

        // Flags.
        let mut allowed = 0u8;
        if t.may_have_hdgst() {
            allowed |= flags::HDGSTF;
        }
        if t.may_have_data() {
            allowed |= flags::DDGSTF;
        }
        if matches!(t, PduType::H2CData | PduType::C2HData) {
            allowed |= flags::LAST_PDU;
        }
        if t == PduType::C2HData {
            allowed |= flags::SUCCESS;
        }
        let hd_flag = ch.flags & flags::HDGSTF != 0;
        let dd_flag = ch.flags & flags::DDGSTF != 0;
        if ch.flags & !allowed != 0
            || (t.may_have_hdgst() && hd_flag != self.cfg.hdgst)
            || (dd_flag && !self.cfg.ddgst)
            || (ch.flags & flags::SUCCESS != 0 && ch.flags & flags::LAST_PDU == 0)
        {
            return Err(err(
                Fes::InvalidHeaderField,
                FEI_FLAGS,
                &format!("invalid flags {:#04x} for {t:?}", ch.flags),
            ));
        }

        // HLEN.
        let hlen = t.hlen();
        if usize::from(ch.hlen) != hlen {
            return Err(err(
                Fes::InvalidHeaderField,
                FEI_HLEN,
                &format!("HLEN {} for {t:?}, expected {hlen}", ch.hlen),
            ));
        }
        let hd = if hd_flag { DIGEST_LEN } else { 0 };
        let plen = ch.plen as usize;
        let pdo = usize::from(ch.pdo);

        // PDO and PLEN.
        if !t.may_have_data() {
            if pdo != 0 {
                return Err(err(
                    Fes::InvalidHeaderField,
                    FEI_PDO,
                    &format!("PDO {pdo} on {t:?}, which carries no data"),
                ));
            }
            if plen != hlen + hd {
                return Err(err(
                    Fes::InvalidHeaderField,
                    FEI_PLEN,
                    &format!("PLEN {plen} for {t:?}, expected {}", hlen + hd),
                ));
            }
            return Ok(plen);
        }
        let dd = if dd_flag { DIGEST_LEN } else { 0 };
        if pdo == 0 {
            if dd_flag {
                return Err(err(
                    Fes::InvalidHeaderField,
                    FEI_FLAGS,
                    "data digest flag on a PDU without data",
                ));
            }
            if plen != hlen + hd {
                return Err(err(
                    Fes::InvalidHeaderField,
                    FEI_PLEN,
                    &format!("PLEN {plen} but PDO 0 (no data) for {t:?}"),
                ));
            }
            if t != PduType::CapsuleCmd {
                return Err(err(
                    Fes::InvalidHeaderField,
                    FEI_PDO,
                    &format!("{t:?} without data"),
                ));
            }
            return Ok(plen);
        }
        if pdo < hlen + hd || pdo % self.cfg.rx_pda.max(1) != 0 {
            return Err(err(
                Fes::InvalidHeaderField,
                FEI_PDO,
                &format!("PDO {pdo} is not a valid aligned offset past the header"),
            ));
        }
        if plen <= pdo + dd {
            return Err(err(
                Fes::InvalidHeaderField,
                FEI_PLEN,
                &format!("PLEN {plen} leaves no data after PDO {pdo}"),
            ));
        }
        if self.cfg.ddgst && !dd_flag {
            return Err(err(
                Fes::InvalidHeaderField,
                FEI_FLAGS,
                "data digest flag missing on a PDU with data",
            ));
        }
        let data_len = plen - pdo - dd;
        let limit = if t == PduType::CapsuleCmd {
            self.cfg.max_icd
        } else {
            self.cfg.max_data
        } as usize;
        if data_len > limit {
            return Err(err(
                Fes::DataLimitExceeded,
                FEI_PLEN,
                &format!("{t:?} carries {data_len} bytes of data, more than the limit of {limit}"),
            ));
        }
        Ok(plen)
    }

    /// Parses a whole PDU whose header was validated.
    fn parse(&self, mut pdu: Bytes) -> Result<Received, FatalError> {
        let ch = CommonHeader::decode(&pdu);
        let t = PduType::from_u8(ch.pdu_type)
            .ok_or_else(|| FatalError::silent("unreachable: type checked"))?;
        let hlen = usize::from(ch.hlen);
        let hd_flag = t.may_have_hdgst() && ch.flags & flags::HDGSTF != 0;
        let dd_flag = ch.flags & flags::DDGSTF != 0;
        let h = pdu.get(..hlen).unwrap_or(&[]);
        if hd_flag {
            let got = u32_at(&pdu, hlen);
            if crc32c(h) != got {
                return Err(FatalError::new(
                    Fes::HeaderDigestError,
                    0,
                    h,
                    format!("header digest mismatch on {t:?}"),
                ));
            }
        }
        let mut data_digest_ok = true;
        let data = if t.may_have_data() && ch.pdo != 0 {
            let pdo = usize::from(ch.pdo);
            let end = pdu.len() - if dd_flag { DIGEST_LEN } else { 0 };
            if dd_flag {
                let got = u32_at(&pdu, end);
                let d = pdu.get(pdo..end).unwrap_or(&[]);
                data_digest_ok = crc32c(d) == got;
            }
            pdu.truncate(end);
            pdu.split_off(pdo)
        } else if matches!(t, PduType::H2CTermReq | PduType::C2HTermReq) {
            pdu.split_off(hlen.min(pdu.len()))
        } else {
            Bytes::new()
        };
        let h = pdu.get(..hlen).unwrap_or(&[]);
        let p = match t {
            PduType::IcReq => Pdu::IcReq(IcReq {
                pfv: u16_at(h, 8),
                hpda: u8_at(h, 10),
                digests: Digests::from_u8(u8_at(h, 11)),
                maxr2t: u32_at(h, 12),
            }),
            PduType::IcResp => Pdu::IcResp(IcResp {
                pfv: u16_at(h, 8),
                cpda: u8_at(h, 10),
                digests: Digests::from_u8(u8_at(h, 11)),
                maxh2cdata: u32_at(h, 12),
            }),
            PduType::H2CTermReq | PduType::C2HTermReq => {
                let tr = TermReq {
                    fes: Fes::from_u16(u16_at(h, 8)),
                    fei: u32_at(h, 10),
                    data,
                };
                if t == PduType::H2CTermReq {
                    Pdu::H2CTermReq(tr)
                } else {
                    Pdu::C2HTermReq(tr)
                }
            }
            PduType::CapsuleCmd => Pdu::CapsuleCmd {
                sqe: Sqe::decode(&array_at(h, CH_LEN)),
                data,
            },
            PduType::CapsuleResp => Pdu::CapsuleResp(Cqe::decode(&array_at(h, CH_LEN))),
            PduType::H2CData | PduType::C2HData => {
                let d = DataPdu {
                    cccid: u16_at(h, 8),
                    ttag: u16_at(h, 10),
                    datao: u32_at(h, 12),
                    datal: u32_at(h, 16),
                    last: ch.flags & flags::LAST_PDU != 0,
                    success: ch.flags & flags::SUCCESS != 0,
                    data,
                };
                if d.datal as usize != d.data.len() {
                    return Err(FatalError::new(
                        Fes::InvalidHeaderField,
                        16,
                        h,
                        format!(
                            "DATAL {} but the PDU carries {} bytes",
                            d.datal,
                            d.data.len()
                        ),
                    ));
                }
                if t == PduType::H2CData {
                    Pdu::H2CData(d)
                } else {
                    Pdu::C2HData(d)
                }
            }
            PduType::R2T => Pdu::R2T(R2t {
                cccid: u16_at(h, 8),
                ttag: u16_at(h, 10),
                r2to: u32_at(h, 12),
                r2tl: u32_at(h, 16),
            }),
        };
        Ok(Received {
            pdu: p,
            data_digest_ok,
        })
    }
}

#[cfg(test)]
mod make_room_tests {
    use super::make_room;
    use bytes::BytesMut;

    /// Bytes split off the front and dropped: the block is reused, the live
    /// bytes move to its front, nothing is allocated.
    #[test]
    fn reuses_the_block_once_the_front_is_free() {
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(&[7u8; 1000]);
        drop(buf.split_to(990).freeze());
        let block = buf.as_ptr() as usize - 990;
        make_room(&mut buf, 1000);
        assert_eq!(&buf[..], &[7u8; 10]);
        assert_eq!(
            buf.as_ptr() as usize,
            block,
            "same block, live bytes at its front"
        );
        assert!(buf.capacity() - buf.len() >= 1000);
    }

    /// Bytes split off the front and still held: a new block sized for the
    /// live bytes and the room asked for, the held bytes unchanged.
    #[test]
    fn moves_only_the_live_bytes_while_the_front_is_held() {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.extend((0..64 * 1024u32).map(|i| i as u8));
        let held = buf.split_to(60 * 1024).freeze();
        make_room(&mut buf, 128 * 1024);
        assert_eq!(buf.len(), 4 * 1024);
        assert!(buf
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (60 * 1024 + i) as u8));
        assert!(buf.capacity() >= 132 * 1024);
        assert!(
            buf.capacity() < 192 * 1024,
            "sized for what is live, not the whole block"
        );
        assert!(held.iter().enumerate().all(|(i, &b)| b == i as u8));
    }

    /// Grown a byte at a time while the front is held: few new blocks
    /// (doubling), not one per byte.
    #[test]
    fn growing_a_byte_at_a_time_copies_linearly() {
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&[1u8; 16]);
        let _held = buf.split_to(8).freeze();
        let mut blocks = 0;
        for i in 0..100_000u32 {
            let before = buf.as_ptr();
            make_room(&mut buf, 1);
            blocks += usize::from(buf.as_ptr() != before);
            buf.extend_from_slice(&[i as u8]);
        }
        assert_eq!(buf.len(), 100_008);
        assert!(blocks < 20, "{blocks} new blocks for 100,000 bytes");
    }

    /// Enough room already: nothing moves.
    #[test]
    fn leaves_a_buffer_with_room_alone() {
        let mut buf = BytesMut::with_capacity(4096);
        buf.extend_from_slice(b"abc");
        let p = buf.as_ptr();
        make_room(&mut buf, 100);
        assert_eq!(buf.as_ptr(), p);
        assert_eq!(&buf[..], b"abc");
    }
}
