//! Submission queue entries and the SGL descriptors NVMe/TCP uses.
//!
//! NVMe Base 2.0 §4.2 "Submission Queue Entry" (Figure 87: 64 bytes) and §4.3.2
//! "Scatter Gather List" (Figure 91: 16-byte descriptors). NVMe/TCP (TP 8000,
//! NVMe/TCP Transport Specification 1.0 §3.3.1) allows exactly two data
//! descriptors in SGL1: a Data Block with the Offset subtype for in-capsule data
//! and a Transport SGL Data Block with the transport-specific subtype for a command
//! buffer transferred by C2HData or R2T/H2CData.

use crate::le::*;

/// Size of a submission queue entry in bytes (NVMe Base 2.0 Figure 87).
pub const SQE_SIZE: usize = 64;

/// SGL descriptor type and subtype byte: Data Block, Offset (NVMe Base 2.0 Figures 92-93).
pub const SGL_ICD: u8 = 0x01;
/// SGL descriptor type and subtype byte: Transport SGL Data Block, transport specific.
pub const SGL_TRANSPORT_DATA_BLOCK: u8 = 0x5A;

/// Admin command opcodes (NVMe Base 2.0 Figure 138).
pub mod admin_opcode {
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0A;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
    /// Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Fabrics command (NVMe-oF 1.1 §6); the command is named by FCTYPE.
    pub const FABRICS: u8 = 0x7F;
}

/// NVM command set I/O opcodes (NVM Command Set Specification 1.0 Figure 18).
pub mod io_opcode {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Compare.
    pub const COMPARE: u8 = 0x05;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u8 = 0x09;
    /// Verify (NVM Command Set 1.0 §3.3.4): no data transfer.
    pub const VERIFY: u8 = 0x0C;
    /// Copy (NVM Command Set 1.0 §3.3.1): host-to-controller source range list.
    pub const COPY: u8 = 0x19;
}

/// The FUSE field, CDW0 bits 9:8 (NVMe Base 2.0 Figure 87, §3.4.2 fused operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fuse {
    /// 00b: a normal command.
    Normal,
    /// 01b: the first command of a fused operation (Compare of Compare and Write).
    First,
    /// 10b: the second command of a fused operation (Write of Compare and Write).
    Second,
    /// 11b: reserved.
    Reserved,
}

/// A Copy command's Source Range Entry in Descriptor Format 0h (NVM Command Set
/// 1.0 Figure 39: 32 bytes; SLBA at bytes 15:8, NLB 0's based at bytes 17:16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopySourceRange {
    /// Starting LBA of the range.
    pub slba: u64,
    /// Number of logical blocks, 1-based here (the wire field is 0's based).
    pub nlb: u32,
}

impl CopySourceRange {
    /// Size of one format 0 entry.
    pub const SIZE: usize = 32;

    /// Encodes one entry.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put_u64(&mut b, 8, self.slba);
        put_u16(&mut b, 16, (self.nlb.saturating_sub(1) & 0xffff) as u16);
        b
    }

    /// Decodes the first `count` entries of `b`; `None` if `b` is too short.
    pub fn decode_list(b: &[u8], count: usize) -> Option<Vec<Self>> {
        decode_entries(b, count, Self::SIZE, |e| Self {
            slba: u64_at(e, 8),
            nlb: u32::from(u16_at(e, 16)) + 1,
        })
    }
}

/// A Dataset Management range (NVM Command Set 1.0 Figure 40, §3.2.3: 16
/// bytes; Context Attributes at bytes 3:0, Length in Logical Blocks at 7:4,
/// 1-based, Starting LBA at 15:8). A command carries up to 256 of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DsmRange {
    /// Context Attributes (access frequency, latency, sequential hints).
    pub attributes: u32,
    /// Number of logical blocks (1-based on the wire too; 0 is an empty range).
    pub nlb: u32,
    /// Starting LBA.
    pub slba: u64,
}

impl DsmRange {
    /// Size of one range.
    pub const SIZE: usize = 16;
    /// Most ranges in one command (NR is an 8-bit 0's based field).
    pub const MAX_RANGES: usize = 256;

    /// Encodes one range.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put_u32(&mut b, 0, self.attributes);
        put_u32(&mut b, 4, self.nlb);
        put_u64(&mut b, 8, self.slba);
        b
    }

    /// Decodes the first `count` ranges of `b`; `None` if `b` is too short.
    pub fn decode_list(b: &[u8], count: usize) -> Option<Vec<Self>> {
        decode_entries(b, count, Self::SIZE, |e| Self {
            attributes: u32_at(e, 0),
            nlb: u32_at(e, 4),
            slba: u64_at(e, 8),
        })
    }
}

/// The first `count` entries of `size` bytes each in a command's data (a range
/// list), each decoded by `entry`; `None` if `b` is too short.
fn decode_entries<T>(
    b: &[u8],
    count: usize,
    size: usize,
    entry: impl Fn(&[u8]) -> T,
) -> Option<Vec<T>> {
    let list = b.get(..count.checked_mul(size)?)?;
    Some(list.chunks_exact(size).map(entry).collect())
}

/// Dataset Management attributes, CDW11 (NVM Command Set 1.0 Figure 39).
pub mod dsm_attr {
    /// IDR: the ranges will be read soon (integral dataset for read).
    pub const IDR: u32 = 1 << 0;
    /// IDW: the ranges will be written soon (integral dataset for write).
    pub const IDW: u32 = 1 << 1;
    /// AD: deallocate the ranges.
    pub const AD: u32 = 1 << 2;
}

/// Direction of a command's data, from opcode bits 1:0 (NVMe Base 2.0 §5, Figure 138 note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirection {
    /// 00b: no data.
    None,
    /// 01b: host to controller (a write).
    HostToController,
    /// 10b: controller to host (a read).
    ControllerToHost,
    /// 11b: bidirectional (not used over NVMe/TCP).
    Bidirectional,
}

impl DataDirection {
    /// Direction encoded in the two low bits of an opcode (or a Fabrics FCTYPE).
    pub fn from_opcode(op: u8) -> Self {
        match op & 3 {
            0 => Self::None,
            1 => Self::HostToController,
            2 => Self::ControllerToHost,
            _ => Self::Bidirectional,
        }
    }
}

/// A 16-byte SGL descriptor (NVMe Base 2.0 §4.3.2, Figure 92).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SglDescriptor {
    /// Address or, for the Offset subtype, offset into the in-capsule data.
    pub address: u64,
    /// Length in bytes.
    pub length: u32,
    /// Bytes 12..15: type-specific (reserved for the data descriptors used here).
    pub reserved: [u8; 3],
    /// Descriptor type (bits 7:4) and subtype (bits 3:0).
    pub type_byte: u8,
}

impl SglDescriptor {
    /// In-capsule data of `len` bytes at offset 0 (NVMe/TCP 1.0 §3.3.1.1).
    pub fn in_capsule(len: u32) -> Self {
        Self {
            address: 0,
            length: len,
            reserved: [0; 3],
            type_byte: SGL_ICD,
        }
    }

    /// A command buffer of `len` bytes moved by C2HData or R2T/H2CData.
    pub fn transport(len: u32) -> Self {
        Self {
            address: 0,
            length: len,
            reserved: [0; 3],
            type_byte: SGL_TRANSPORT_DATA_BLOCK,
        }
    }

    /// Decodes 16 bytes.
    pub fn decode(b: &[u8; 16]) -> Self {
        Self {
            address: u64_at(b, 0),
            length: u32_at(b, 8),
            reserved: array_at(b, 12),
            type_byte: u8_at(b, 15),
        }
    }

    /// Encodes 16 bytes.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        put_u64(&mut b, 0, self.address);
        put_u32(&mut b, 8, self.length);
        put(&mut b, 12, &self.reserved);
        put_u8(&mut b, 15, self.type_byte);
        b
    }
}

/// A 64-byte submission queue entry (NVMe Base 2.0 Figure 87).
///
/// Fields are kept as dwords so that every command (admin, I/O, Fabrics) shares one
/// type; accessors name the fields of the commands this stack handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sqe {
    /// Opcode (CDW0 bits 7:0).
    pub opcode: u8,
    /// CDW0 bits 15:8: FUSE (bits 1:0) and PSDT (bits 7:6).
    pub flags: u8,
    /// Command Identifier (CDW0 bits 31:16).
    pub cid: u16,
    /// Namespace Identifier.
    pub nsid: u32,
    /// Command dword 2.
    pub cdw2: u32,
    /// Command dword 3.
    pub cdw3: u32,
    /// Metadata pointer.
    pub mptr: u64,
    /// Data pointer: SGL entry 1.
    pub sgl1: SglDescriptor,
    /// Command dwords 10 to 15.
    pub cdw10: u32,
    /// Command dword 11.
    pub cdw11: u32,
    /// Command dword 12.
    pub cdw12: u32,
    /// Command dword 13.
    pub cdw13: u32,
    /// Command dword 14.
    pub cdw14: u32,
    /// Command dword 15.
    pub cdw15: u32,
}

/// PSDT = 01b: SGLs for data, MPTR is an address (NVMe Base 2.0 Figure 87); required on fabrics.
pub const PSDT_SGL: u8 = 0x40;

impl Sqe {
    /// A command with the given opcode and SGL data transfer selected.
    pub fn new(opcode: u8) -> Self {
        Self {
            opcode,
            flags: PSDT_SGL,
            ..Self::default()
        }
    }

    /// Decodes 64 bytes.
    pub fn decode(b: &[u8; SQE_SIZE]) -> Self {
        Self {
            opcode: u8_at(b, 0),
            flags: u8_at(b, 1),
            cid: u16_at(b, 2),
            nsid: u32_at(b, 4),
            cdw2: u32_at(b, 8),
            cdw3: u32_at(b, 12),
            mptr: u64_at(b, 16),
            sgl1: SglDescriptor::decode(&array_at(b, 24)),
            cdw10: u32_at(b, 40),
            cdw11: u32_at(b, 44),
            cdw12: u32_at(b, 48),
            cdw13: u32_at(b, 52),
            cdw14: u32_at(b, 56),
            cdw15: u32_at(b, 60),
        }
    }

    /// Decodes from a slice of at least 64 bytes; `None` if it is shorter.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let a: &[u8; SQE_SIZE] = b.get(..SQE_SIZE)?.try_into().ok()?;
        Some(Self::decode(a))
    }

    /// Encodes 64 bytes.
    pub fn encode(&self) -> [u8; SQE_SIZE] {
        let mut b = [0u8; SQE_SIZE];
        put_u8(&mut b, 0, self.opcode);
        put_u8(&mut b, 1, self.flags);
        put_u16(&mut b, 2, self.cid);
        put_u32(&mut b, 4, self.nsid);
        put_u32(&mut b, 8, self.cdw2);
        put_u32(&mut b, 12, self.cdw3);
        put_u64(&mut b, 16, self.mptr);
        put(&mut b, 24, &self.sgl1.encode());
        put_u32(&mut b, 40, self.cdw10);
        put_u32(&mut b, 44, self.cdw11);
        put_u32(&mut b, 48, self.cdw12);
        put_u32(&mut b, 52, self.cdw13);
        put_u32(&mut b, 56, self.cdw14);
        put_u32(&mut b, 60, self.cdw15);
        b
    }

    /// FCTYPE of a Fabrics command (byte 4, NVMe-oF 1.1 Figure 10), which overlays NSID.
    pub fn fctype(&self) -> u8 {
        (self.nsid & 0xff) as u8
    }

    /// Direction of the data this command moves: by FCTYPE for Fabrics commands,
    /// by opcode otherwise.
    pub fn data_direction(&self) -> DataDirection {
        if self.opcode == admin_opcode::FABRICS {
            DataDirection::from_opcode(self.fctype())
        } else {
            DataDirection::from_opcode(self.opcode)
        }
    }

    /// Starting LBA of Read, Write, Compare and Write Zeroes (CDW10-11).
    pub fn slba(&self) -> u64 {
        u64::from(self.cdw10) | (u64::from(self.cdw11) << 32)
    }

    /// Number of logical blocks, 1-based (CDW12 bits 15:0 are 0's based).
    pub fn nlb(&self) -> u32 {
        (self.cdw12 & 0xffff) + 1
    }

    /// Force Unit Access (CDW12 bit 30).
    pub fn fua(&self) -> bool {
        self.cdw12 & (1 << 30) != 0
    }

    /// The FUSE field (CDW0 bits 9:8, the low two bits of the flags byte).
    pub fn fuse(&self) -> Fuse {
        match self.flags & 3 {
            0 => Fuse::Normal,
            1 => Fuse::First,
            2 => Fuse::Second,
            _ => Fuse::Reserved,
        }
    }

    /// The same command with its FUSE field set.
    pub fn with_fuse(mut self, fuse: Fuse) -> Self {
        let v = match fuse {
            Fuse::Normal => 0,
            Fuse::First => 1,
            Fuse::Second => 2,
            Fuse::Reserved => 3,
        };
        self.flags = (self.flags & !3) | v;
        self
    }

    /// Builds a Verify (NVM Command Set 1.0 §3.3.4): SLBA in CDW10-11, NLB
    /// (0's based) in CDW12 bits 15:0; no data moves.
    pub fn verify(nsid: u32, slba: u64, nlb: u32) -> Self {
        let mut s = Self::rw(io_opcode::VERIFY, nsid, slba, nlb, false);
        s.sgl1 = SglDescriptor::default();
        s
    }

    /// Builds a Copy (NVM Command Set 1.0 §3.3.1) of `nr` format 0 source
    /// ranges to `sdlba`: SDLBA in CDW10-11, NR (0's based) in CDW12 bits 7:0,
    /// Descriptor Format 0 in bits 11:8, FUA bit 30. The range list is the data
    /// (`nr` × 32 bytes; the caller sets SGL1 to how it sends them).
    pub fn copy(nsid: u32, sdlba: u64, nr: u32, fua: bool) -> Self {
        let mut s = Self::new(io_opcode::COPY);
        s.nsid = nsid;
        s.cdw10 = sdlba as u32;
        s.cdw11 = (sdlba >> 32) as u32;
        s.cdw12 = (nr.saturating_sub(1) & 0xff) | if fua { 1 << 30 } else { 0 };
        s
    }

    /// Builds a Dataset Management (NVM Command Set 1.0 §3.2.3) of `nr` ranges
    /// (1 to 256; NR is 0's based in CDW10 bits 7:0) with the CDW11 attributes
    /// ([`dsm_attr`]). The range list is the data (`nr` × 16 bytes).
    pub fn dsm(nsid: u32, nr: u32, attributes: u32) -> Self {
        let mut s = Self::new(io_opcode::DATASET_MANAGEMENT);
        s.nsid = nsid;
        s.cdw10 = nr.saturating_sub(1) & 0xff;
        s.cdw11 = attributes;
        s
    }

    /// Builds a Write Zeroes (NVM Command Set 1.0 §3.2.8) of `nlb` blocks
    /// (1 to 65536) from `slba`: NLB 0's based in CDW12 bits 15:0, DEAC
    /// (the controller may deallocate the blocks instead) bit 25, FUA bit 30.
    /// No data moves.
    pub fn write_zeroes(nsid: u32, slba: u64, nlb: u32, deac: bool, fua: bool) -> Self {
        let mut s = Self::rw(io_opcode::WRITE_ZEROES, nsid, slba, nlb, fua);
        if deac {
            s.cdw12 |= 1 << 25;
        }
        s.sgl1 = SglDescriptor::default();
        s
    }

    /// Builds a Read or Write style LBA command (NVM Command Set 1.0 §3.2.4, §3.2.6).
    pub fn rw(opcode: u8, nsid: u32, slba: u64, nlb: u32, fua: bool) -> Self {
        let mut s = Self::new(opcode);
        s.nsid = nsid;
        s.cdw10 = slba as u32;
        s.cdw11 = (slba >> 32) as u32;
        s.cdw12 = (nlb.saturating_sub(1) & 0xffff) | if fua { 1 << 30 } else { 0 };
        s
    }

    /// Identify (NVMe Base 2.0 §5.17): CNS in CDW10 bits 7:0, CNTID bits 31:16.
    pub fn identify(cns: u8, nsid: u32) -> Self {
        let mut s = Self::new(admin_opcode::IDENTIFY);
        s.nsid = nsid;
        s.cdw10 = u32::from(cns);
        s.sgl1 = SglDescriptor::transport(4096);
        s
    }

    /// Get Log Page (NVMe Base 2.0 §5.16) for `len` bytes (a multiple of 4) at `offset`.
    pub fn get_log_page(lid: u8, nsid: u32, len: u32, offset: u64, rae: bool) -> Self {
        let numd = (len / 4).saturating_sub(1);
        let mut s = Self::new(admin_opcode::GET_LOG_PAGE);
        s.nsid = nsid;
        s.cdw10 = u32::from(lid) | (u32::from(rae) << 15) | ((numd & 0xffff) << 16);
        s.cdw11 = numd >> 16;
        s.cdw12 = offset as u32;
        s.cdw13 = (offset >> 32) as u32;
        s.sgl1 = SglDescriptor::transport(len);
        s
    }

    /// Log page identifier, length in bytes and offset of a Get Log Page command.
    pub fn log_page_params(&self) -> (u8, u64, u64) {
        let numdl = u64::from(self.cdw10 >> 16);
        let numdu = u64::from(self.cdw11 & 0xffff);
        let len = (((numdu << 16) | numdl) + 1) * 4;
        let offset = u64::from(self.cdw12) | (u64::from(self.cdw13) << 32);
        ((self.cdw10 & 0xff) as u8, len, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(Sqe::default().encode().len(), SQE_SIZE);
        assert_eq!(SglDescriptor::default().encode().len(), 16);
    }

    #[test]
    fn round_trip_and_fields() {
        let mut s = Sqe::rw(io_opcode::WRITE, 1, 0x1_0000_0002, 8, true);
        s.cid = 0xbeef;
        s.sgl1 = SglDescriptor::in_capsule(4096);
        let b = s.encode();
        assert_eq!(b[0], 0x01);
        assert_eq!(b[1], 0x40);
        assert_eq!(&b[2..4], &[0xef, 0xbe]);
        assert_eq!(b[39], 0x01);
        assert_eq!(Sqe::decode(&b), s);
        assert_eq!(s.slba(), 0x1_0000_0002);
        assert_eq!(s.nlb(), 8);
        assert!(s.fua());
        assert_eq!(s.data_direction(), DataDirection::HostToController);
        let g = Sqe::get_log_page(0x70, 0, 4096, 1024, false);
        assert_eq!(g.log_page_params(), (0x70, 4096, 1024));
        assert_eq!(Sqe::from_slice(&[0u8; 10]), None);
    }

    #[test]
    fn fuse_verify_and_copy_fields() {
        let s = Sqe::rw(io_opcode::COMPARE, 1, 8, 1, false).with_fuse(Fuse::First);
        // FUSE is CDW0 bits 9:8: the low bits of byte 1, beside PSDT (bits 15:14).
        assert_eq!(s.encode()[1], PSDT_SGL | 1);
        assert_eq!(Sqe::decode(&s.encode()).fuse(), Fuse::First);
        assert_eq!(s.with_fuse(Fuse::Second).fuse(), Fuse::Second);
        assert_eq!(s.with_fuse(Fuse::Normal).flags, PSDT_SGL);
        let mut r = s;
        r.flags |= 3;
        assert_eq!(r.fuse(), Fuse::Reserved);
        let v = Sqe::verify(2, 0x1_0000_0000, 65536);
        assert_eq!(
            (v.opcode, v.nsid, v.slba(), v.nlb()),
            (0x0C, 2, 0x1_0000_0000, 65536)
        );
        assert_eq!(v.data_direction(), DataDirection::None);
        let c = Sqe::copy(1, 4096, 3, true);
        assert_eq!(c.opcode, 0x19);
        assert_eq!(c.slba(), 4096);
        assert_eq!(c.cdw12 & 0xff, 2, "NR is 0's based");
        assert_eq!((c.cdw12 >> 8) & 0xf, 0, "descriptor format 0");
        assert!(c.fua());
        assert_eq!(c.data_direction(), DataDirection::HostToController);
        let e = CopySourceRange {
            slba: 0x0102_0304_0506_0708,
            nlb: 256,
        }
        .encode();
        assert_eq!(&e[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&e[16..18], &[0xff, 0x00], "NLB is 0's based");
        assert_eq!(e[..8], [0; 8]);
        let two = [e, CopySourceRange { slba: 9, nlb: 1 }.encode()].concat();
        assert_eq!(
            CopySourceRange::decode_list(&two, 2),
            Some(vec![
                CopySourceRange {
                    slba: 0x0102_0304_0506_0708,
                    nlb: 256
                },
                CopySourceRange { slba: 9, nlb: 1 }
            ])
        );
        assert_eq!(CopySourceRange::decode_list(&two, 3), None);
        assert_eq!(CopySourceRange::decode_list(&two, usize::MAX), None);
    }

    /// Dataset Management and Write Zeroes, against the bytes of NVM Command
    /// Set 1.0 Figures 38–40 and 58.
    #[test]
    fn dsm_and_write_zeroes() {
        let d = Sqe::dsm(1, 3, dsm_attr::AD);
        assert_eq!((d.opcode, d.nsid, d.cdw10, d.cdw11), (0x09, 1, 2, 4));
        assert_eq!(d.data_direction(), DataDirection::HostToController);
        assert_eq!(Sqe::dsm(1, 256, 0).cdw10, 255, "NR is 0's based");
        let r = DsmRange {
            attributes: 0x0a0b_0c0d,
            nlb: 0x0001_0000,
            slba: 0x0102_0304_0506_0708,
        };
        let e = r.encode();
        assert_eq!(
            e,
            [
                0x0d, 0x0c, 0x0b, 0x0a, 0x00, 0x00, 0x01, 0x00, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03,
                0x02, 0x01
            ]
        );
        let two = [e, DsmRange::default().encode()].concat();
        assert_eq!(
            DsmRange::decode_list(&two, 2),
            Some(vec![r, DsmRange::default()])
        );
        assert_eq!(DsmRange::decode_list(&two, 3), None);
        assert_eq!(DsmRange::decode_list(&two, usize::MAX), None);

        let w = Sqe::write_zeroes(2, 0x1_0000_0010, 65536, true, true);
        assert_eq!(
            (w.opcode, w.nsid, w.slba(), w.nlb()),
            (0x08, 2, 0x1_0000_0010, 65536)
        );
        assert_eq!(w.cdw12 & 0xffff, 0xffff, "NLB is 0's based");
        assert!(w.cdw12 & (1 << 25) != 0, "DEAC");
        assert!(w.fua());
        assert_eq!(w.data_direction(), DataDirection::None);
        let w = Sqe::write_zeroes(2, 7, 1, false, false);
        assert_eq!(w.cdw12, 0);
    }
}
