//! Completion queue entries (NVMe Base 2.0 §4.6, Figure 89: 16 bytes).

use crate::le::*;
use crate::status::Status;

/// Size of a completion queue entry in bytes.
pub const CQE_SIZE: usize = 16;

/// A 16-byte completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    /// Command-specific dword 0.
    pub dw0: u32,
    /// Command-specific dword 1.
    pub dw1: u32,
    /// SQ Head Pointer (DW2 bits 15:0).
    pub sqhd: u16,
    /// SQ Identifier (DW2 bits 31:16).
    pub sqid: u16,
    /// Command Identifier (DW3 bits 15:0).
    pub cid: u16,
    /// Status (DW3 bits 31:17); the phase tag (bit 16) is 0 on fabrics.
    pub status: Status,
}

impl Default for Cqe {
    fn default() -> Self {
        Self {
            dw0: 0,
            dw1: 0,
            sqhd: 0,
            sqid: 0,
            cid: 0,
            status: Status::SUCCESS,
        }
    }
}

impl Cqe {
    /// A completion for `cid` with `status` and zero result dwords.
    pub fn new(cid: u16, status: Status) -> Self {
        Self {
            cid,
            status,
            ..Self::default()
        }
    }

    /// The 64-bit result carried in DW0-DW1 (Property Get, NVMe-oF 1.1 Figure 27).
    pub fn result64(&self) -> u64 {
        u64::from(self.dw0) | (u64::from(self.dw1) << 32)
    }

    /// Decodes 16 bytes.
    pub fn decode(b: &[u8; CQE_SIZE]) -> Self {
        Self {
            dw0: u32_at(b, 0),
            dw1: u32_at(b, 4),
            sqhd: u16_at(b, 8),
            sqid: u16_at(b, 10),
            cid: u16_at(b, 12),
            status: Status::from_field(u16_at(b, 14)),
        }
    }

    /// Encodes 16 bytes.
    pub fn encode(&self) -> [u8; CQE_SIZE] {
        let mut b = [0u8; CQE_SIZE];
        put_u32(&mut b, 0, self.dw0);
        put_u32(&mut b, 4, self.dw1);
        put_u16(&mut b, 8, self.sqhd);
        put_u16(&mut b, 10, self.sqid);
        put_u16(&mut b, 12, self.cid);
        put_u16(&mut b, 14, self.status.to_field());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Cqe {
            dw0: 1,
            dw1: 2,
            sqhd: 3,
            sqid: 4,
            cid: 5,
            status: Status::LBA_OUT_OF_RANGE.dnr(),
        };
        let b = c.encode();
        assert_eq!(b.len(), CQE_SIZE);
        assert_eq!(Cqe::decode(&b), c);
        assert_eq!(&b[14..16], &0x8100u16.to_le_bytes());
    }
}
