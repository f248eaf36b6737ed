//! Identify data structures (NVMe Base 2.0 §5.17.2; NVM Command Set 1.0 §4.1.5).
//!
//! Each structure keeps the fields this stack sets or reads; encoding writes them at
//! their spec offsets into a zeroed 4096-byte page, decoding reads them back. Fields
//! that are not modelled read as zero, as a controller that does not support them
//! reports.

use crate::le::*;

/// Size of every Identify data structure.
pub const IDENTIFY_SIZE: usize = 4096;

/// CNS values (NVMe Base 2.0 Figure 273).
pub mod cns {
    /// Identify Namespace (NVM command set).
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller.
    pub const CONTROLLER: u8 = 0x01;
    /// Active Namespace ID list.
    pub const ACTIVE_NS_LIST: u8 = 0x02;
    /// Namespace Identification Descriptor list.
    pub const NS_DESCRIPTORS: u8 = 0x03;
    /// I/O Command Set specific Identify Namespace.
    pub const CSI_NAMESPACE: u8 = 0x05;
    /// I/O Command Set specific Identify Controller.
    pub const CSI_CONTROLLER: u8 = 0x06;
    /// I/O Command Set independent Identify Namespace.
    pub const CS_INDEPENDENT_NAMESPACE: u8 = 0x08;
}

/// Controller type in CNTRLTYPE (NVMe Base 2.0 Figure 275, byte 111).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControllerType {
    /// 0: not reported.
    #[default]
    NotReported,
    /// 1: I/O controller.
    Io,
    /// 2: discovery controller.
    Discovery,
    /// 3: administrative controller.
    Administrative,
}

impl ControllerType {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Io,
            2 => Self::Discovery,
            3 => Self::Administrative,
            _ => Self::NotReported,
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            Self::NotReported => 0,
            Self::Io => 1,
            Self::Discovery => 2,
            Self::Administrative => 3,
        }
    }
}

/// ONCS bits (NVMe Base 2.0 Figure 275, bytes 521:520).
pub mod oncs {
    /// Compare supported.
    pub const COMPARE: u16 = 1 << 0;
    /// Dataset Management supported.
    pub const DSM: u16 = 1 << 2;
    /// Write Zeroes supported.
    pub const WRITE_ZEROES: u16 = 1 << 3;
    /// Reservations supported.
    pub const RESERVATIONS: u16 = 1 << 5;
    /// Verify supported (bit 7).
    pub const VERIFY: u16 = 1 << 7;
    /// Copy supported (bit 8).
    pub const COPY: u16 = 1 << 8;
}

/// CMIC bits (NVMe Base 2.0 Figure 275, byte 76).
pub mod cmic {
    /// The NVM subsystem may have two or more ports.
    pub const MULTI_PORT: u8 = 1 << 0;
    /// The NVM subsystem may have two or more controllers.
    pub const MULTI_CTRL: u8 = 1 << 1;
    /// The controller supports Asymmetric Namespace Access Reporting.
    pub const ANA: u8 = 1 << 3;
}

/// ANACAP bits (NVMe Base 2.0 Figure 275, byte 343).
pub mod anacap {
    /// Reports ANA Optimized.
    pub const OPTIMIZED: u8 = 1 << 0;
    /// Reports ANA Non-Optimized.
    pub const NON_OPTIMIZED: u8 = 1 << 1;
    /// Reports ANA Inaccessible.
    pub const INACCESSIBLE: u8 = 1 << 2;
    /// Reports ANA Persistent Loss.
    pub const PERSISTENT_LOSS: u8 = 1 << 3;
    /// Reports ANA Change.
    pub const CHANGE: u8 = 1 << 4;
    /// A namespace's ANAGRPID does not change while it is attached.
    pub const GRPID_STATIC: u8 = 1 << 6;
}

/// FUSES bits (NVMe Base 2.0 Figure 275, bytes 523:522).
pub mod fuses {
    /// Compare and Write fused operation supported.
    pub const COMPARE_AND_WRITE: u16 = 1 << 0;
}

/// OCFS bits (NVMe Base 2.0 Figure 275, bytes 535:534): Copy descriptor formats.
pub mod ocfs {
    /// Source Range Entries Copy Descriptor Format 0h (NVM Command Set 1.0 Figure 39).
    pub const FORMAT_0: u16 = 1 << 0;
}

/// CTRATT bits (NVMe Base 2.0 Figure 275, bytes 99:96).
pub mod ctratt {
    /// Traffic Based Keep Alive Support (bit 6): any command the controller
    /// processes restarts the Keep Alive Timer (NVMe Base 2.0 §3.9.5).
    pub const TBKAS: u32 = 1 << 6;
}

/// Identify Controller (NVMe Base 2.0 Figure 275), with the Fabrics fields of
/// bytes 1792-1805 (NVMe-oF 1.1 Figure 39).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyController {
    /// PCI Vendor ID.
    pub vid: u16,
    /// PCI Subsystem Vendor ID.
    pub ssvid: u16,
    /// Serial Number (20 ASCII bytes, space padded).
    pub sn: String,
    /// Model Number (40 ASCII bytes).
    pub mn: String,
    /// Firmware Revision (8 ASCII bytes).
    pub fr: String,
    /// Recommended Arbitration Burst.
    pub rab: u8,
    /// IEEE OUI.
    pub ieee: [u8; 3],
    /// Controller Multi-Path I/O and Namespace Sharing Capabilities.
    pub cmic: u8,
    /// Maximum Data Transfer Size: 2^MDTS units of CAP.MPSMIN (0 = no limit).
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: u16,
    /// Version (same encoding as the VS property).
    pub ver: u32,
    /// Optional Asynchronous Events Supported.
    pub oaes: u32,
    /// Controller Attributes.
    pub ctratt: u32,
    /// Controller type.
    pub cntrltype: ControllerType,
    /// Optional Admin Command Support.
    pub oacs: u16,
    /// Abort Command Limit, 0's based.
    pub acl: u8,
    /// Asynchronous Event Request Limit, 0's based.
    pub aerl: u8,
    /// Firmware Updates.
    pub frmw: u8,
    /// Log Page Attributes.
    pub lpa: u8,
    /// Error Log Page Entries, 0's based.
    pub elpe: u8,
    /// Number of Power States Support, 0's based.
    pub npss: u8,
    /// Warning Composite Temperature Threshold (Kelvin).
    pub wctemp: u16,
    /// Critical Composite Temperature Threshold (Kelvin).
    pub cctemp: u16,
    /// Total NVM Capacity in bytes.
    pub tnvmcap: u128,
    /// Keep Alive Support: granularity in 100 ms units (0 = not supported).
    pub kas: u16,
    /// Submission Queue Entry Size: required (bits 3:0) and maximum (7:4), 2^n.
    pub sqes: u8,
    /// Completion Queue Entry Size.
    pub cqes: u8,
    /// Maximum Outstanding Commands.
    pub maxcmd: u16,
    /// Number of Namespaces (largest valid NSID).
    pub nn: u32,
    /// Optional NVM Command Support.
    pub oncs: u16,
    /// Fused Operation Support.
    pub fuses: u16,
    /// Format NVM Attributes.
    pub fna: u8,
    /// Volatile Write Cache: bit 0 present.
    pub vwc: u8,
    /// Atomic Write Unit Normal, 0's based.
    pub awun: u16,
    /// Atomic Write Unit Power Fail, 0's based.
    pub awupf: u16,
    /// Atomic Compare & Write Unit, 0's based logical blocks (bytes 533:532).
    pub acwu: u16,
    /// Optional Copy Formats Supported (bytes 535:534), [`ocfs`] bits.
    pub ocfs: u16,
    /// SGL Support.
    pub sgls: u32,
    /// ANA Transition Time in seconds (NVMe Base 2.0 Figure 275, byte 342).
    pub anatt: u8,
    /// ANA Capabilities (byte 343): bits 0-4 the states reported (optimized,
    /// non-optimized, inaccessible, persistent loss, change), bit 6 ANAGRPID
    /// does not change while attached, bit 7 non-zero ANAGRPID in Namespace Management.
    pub anacap: u8,
    /// ANA Group Identifier Maximum (bytes 347:344).
    pub anagrpmax: u32,
    /// Number of ANA Group Identifiers (bytes 351:348).
    pub nanagrpid: u32,
    /// Maximum Number of Allowed Namespaces.
    pub mnan: u32,
    /// NVM Subsystem NVMe Qualified Name.
    pub subnqn: String,
    /// I/O Queue Command Capsule Supported Size, in 16-byte units.
    pub ioccsz: u32,
    /// I/O Queue Response Capsule Supported Size, in 16-byte units.
    pub iorcsz: u32,
    /// In Capsule Data Offset, in 16-byte units.
    pub icdoff: u16,
    /// Fabrics Controller Attributes: bit 0 static controller model.
    pub fcatt: u8,
    /// Maximum SGL Data Block Descriptors.
    pub msdbd: u8,
    /// Optional Fabric Commands Support: bit 0 Disconnect.
    pub ofcs: u16,
}

impl IdentifyController {
    /// Encodes the 4096-byte page.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_SIZE];
        put_u16(&mut b, 0, self.vid);
        put_u16(&mut b, 2, self.ssvid);
        put_str(&mut b, 4, 20, &self.sn, b' ');
        put_str(&mut b, 24, 40, &self.mn, b' ');
        put_str(&mut b, 64, 8, &self.fr, b' ');
        put_u8(&mut b, 72, self.rab);
        put(&mut b, 73, &self.ieee);
        put_u8(&mut b, 76, self.cmic);
        put_u8(&mut b, 77, self.mdts);
        put_u16(&mut b, 78, self.cntlid);
        put_u32(&mut b, 80, self.ver);
        put_u32(&mut b, 92, self.oaes);
        put_u32(&mut b, 96, self.ctratt);
        put_u8(&mut b, 111, self.cntrltype.to_u8());
        put_u16(&mut b, 256, self.oacs);
        put_u8(&mut b, 258, self.acl);
        put_u8(&mut b, 259, self.aerl);
        put_u8(&mut b, 260, self.frmw);
        put_u8(&mut b, 261, self.lpa);
        put_u8(&mut b, 262, self.elpe);
        put_u8(&mut b, 263, self.npss);
        put_u16(&mut b, 266, self.wctemp);
        put_u16(&mut b, 268, self.cctemp);
        put_u128(&mut b, 280, self.tnvmcap);
        put_u16(&mut b, 320, self.kas);
        put_u8(&mut b, 512, self.sqes);
        put_u8(&mut b, 513, self.cqes);
        put_u16(&mut b, 514, self.maxcmd);
        put_u32(&mut b, 516, self.nn);
        put_u16(&mut b, 520, self.oncs);
        put_u16(&mut b, 522, self.fuses);
        put_u8(&mut b, 524, self.fna);
        put_u8(&mut b, 525, self.vwc);
        put_u16(&mut b, 526, self.awun);
        put_u16(&mut b, 528, self.awupf);
        put_u16(&mut b, 532, self.acwu);
        put_u16(&mut b, 534, self.ocfs);
        put_u32(&mut b, 536, self.sgls);
        put_u8(&mut b, 342, self.anatt);
        put_u8(&mut b, 343, self.anacap);
        put_u32(&mut b, 344, self.anagrpmax);
        put_u32(&mut b, 348, self.nanagrpid);
        put_u32(&mut b, 540, self.mnan);
        put_str(&mut b, 768, 256, &self.subnqn, 0);
        put_u32(&mut b, 1792, self.ioccsz);
        put_u32(&mut b, 1796, self.iorcsz);
        put_u16(&mut b, 1800, self.icdoff);
        put_u8(&mut b, 1802, self.fcatt);
        put_u8(&mut b, 1803, self.msdbd);
        put_u16(&mut b, 1804, self.ofcs);
        b
    }

    /// Decodes a page; short input reads as zeroes past its end.
    pub fn decode(b: &[u8]) -> Self {
        Self {
            vid: u16_at(b, 0),
            ssvid: u16_at(b, 2),
            sn: str_at(b, 4, 20),
            mn: str_at(b, 24, 40),
            fr: str_at(b, 64, 8),
            rab: u8_at(b, 72),
            ieee: array_at(b, 73),
            cmic: u8_at(b, 76),
            mdts: u8_at(b, 77),
            cntlid: u16_at(b, 78),
            ver: u32_at(b, 80),
            oaes: u32_at(b, 92),
            ctratt: u32_at(b, 96),
            cntrltype: ControllerType::from_u8(u8_at(b, 111)),
            oacs: u16_at(b, 256),
            acl: u8_at(b, 258),
            aerl: u8_at(b, 259),
            frmw: u8_at(b, 260),
            lpa: u8_at(b, 261),
            elpe: u8_at(b, 262),
            npss: u8_at(b, 263),
            wctemp: u16_at(b, 266),
            cctemp: u16_at(b, 268),
            tnvmcap: u128_at(b, 280),
            kas: u16_at(b, 320),
            sqes: u8_at(b, 512),
            cqes: u8_at(b, 513),
            maxcmd: u16_at(b, 514),
            nn: u32_at(b, 516),
            oncs: u16_at(b, 520),
            fuses: u16_at(b, 522),
            fna: u8_at(b, 524),
            vwc: u8_at(b, 525),
            awun: u16_at(b, 526),
            awupf: u16_at(b, 528),
            acwu: u16_at(b, 532),
            ocfs: u16_at(b, 534),
            sgls: u32_at(b, 536),
            anatt: u8_at(b, 342),
            anacap: u8_at(b, 343),
            anagrpmax: u32_at(b, 344),
            nanagrpid: u32_at(b, 348),
            mnan: u32_at(b, 540),
            subnqn: str_at(b, 768, 256),
            ioccsz: u32_at(b, 1792),
            iorcsz: u32_at(b, 1796),
            icdoff: u16_at(b, 1800),
            fcatt: u8_at(b, 1802),
            msdbd: u8_at(b, 1803),
            ofcs: u16_at(b, 1804),
        }
    }

    /// Largest in-capsule data an I/O queue accepts: (IOCCSZ × 16) − 64 (NVMe-oF 1.1 §2.1).
    pub fn in_capsule_data_size(&self) -> u32 {
        self.ioccsz.saturating_mul(16).saturating_sub(64)
    }
}

/// An LBA format (NVM Command Set 1.0 Figure 98).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LbaFormat {
    /// Metadata Size in bytes.
    pub ms: u16,
    /// LBA Data Size as a power of two (9 = 512, 12 = 4096).
    pub lbads: u8,
    /// Relative Performance.
    pub rp: u8,
}

/// Identify Namespace for the NVM command set (NVM Command Set 1.0 Figure 97).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyNamespace {
    /// Namespace Size in logical blocks.
    pub nsze: u64,
    /// Namespace Capacity in logical blocks.
    pub ncap: u64,
    /// Namespace Utilization in logical blocks.
    pub nuse: u64,
    /// Namespace Features: bit 0 thin provisioning.
    pub nsfeat: u8,
    /// Number of LBA Formats, 0's based.
    pub nlbaf: u8,
    /// Formatted LBA Size: bits 3:0 index of the format in use.
    pub flbas: u8,
    /// Namespace Multi-path I/O and Namespace Sharing Capabilities.
    pub nmic: u8,
    /// Reservation Capabilities (byte 31, [`crate::resv::rescap`]).
    pub rescap: u8,
    /// Deallocate Logical Block Features: bits 2:0 = 001b, deallocated blocks read as zeroes.
    pub dlfeat: u8,
    /// Namespace Optimal I/O Boundary in blocks.
    pub noiob: u16,
    /// NVM Capacity in bytes.
    pub nvmcap: u128,
    /// Maximum Single Source Range Length of a Copy, in logical blocks (bytes 75:74).
    pub mssrl: u16,
    /// Maximum Copy Length of a Copy, in logical blocks (bytes 79:76).
    pub mcl: u32,
    /// Maximum Source Range Count of a Copy, 0's based (byte 80).
    pub msrc: u8,
    /// ANA Group Identifier.
    pub anagrpid: u32,
    /// Namespace Globally Unique Identifier.
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
    /// LBA formats (up to 64).
    pub lbaf: Vec<LbaFormat>,
}

impl IdentifyNamespace {
    /// Encodes the 4096-byte page.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_SIZE];
        put_u64(&mut b, 0, self.nsze);
        put_u64(&mut b, 8, self.ncap);
        put_u64(&mut b, 16, self.nuse);
        put_u8(&mut b, 24, self.nsfeat);
        put_u8(&mut b, 25, self.nlbaf);
        put_u8(&mut b, 26, self.flbas);
        put_u8(&mut b, 30, self.nmic);
        put_u8(&mut b, 31, self.rescap);
        put_u8(&mut b, 33, self.dlfeat);
        put_u16(&mut b, 46, self.noiob);
        put_u128(&mut b, 48, self.nvmcap);
        put_u16(&mut b, 74, self.mssrl);
        put_u32(&mut b, 76, self.mcl);
        put_u8(&mut b, 80, self.msrc);
        put_u32(&mut b, 92, self.anagrpid);
        put(&mut b, 104, &self.nguid);
        put(&mut b, 120, &self.eui64);
        for (i, f) in self.lbaf.iter().take(64).enumerate() {
            let v = u32::from(f.ms) | (u32::from(f.lbads) << 16) | (u32::from(f.rp & 3) << 24);
            put_u32(&mut b, 128 + 4 * i, v);
        }
        b
    }

    /// Decodes a page; the LBA format list has NLBAF + 1 entries.
    pub fn decode(b: &[u8]) -> Self {
        let nlbaf = u8_at(b, 25);
        let lbaf = (0..=usize::from(nlbaf).min(63))
            .map(|i| {
                let v = u32_at(b, 128 + 4 * i);
                LbaFormat {
                    ms: (v & 0xffff) as u16,
                    lbads: ((v >> 16) & 0xff) as u8,
                    rp: ((v >> 24) & 3) as u8,
                }
            })
            .collect();
        Self {
            nsze: u64_at(b, 0),
            ncap: u64_at(b, 8),
            nuse: u64_at(b, 16),
            nsfeat: u8_at(b, 24),
            nlbaf,
            flbas: u8_at(b, 26),
            nmic: u8_at(b, 30),
            rescap: u8_at(b, 31),
            dlfeat: u8_at(b, 33),
            noiob: u16_at(b, 46),
            nvmcap: u128_at(b, 48),
            mssrl: u16_at(b, 74),
            mcl: u32_at(b, 76),
            msrc: u8_at(b, 80),
            anagrpid: u32_at(b, 92),
            nguid: array_at(b, 104),
            eui64: array_at(b, 120),
            lbaf,
        }
    }

    /// Logical block size in bytes of the format in use; 0 if the format is unusable.
    pub fn block_size(&self) -> u32 {
        let idx = usize::from(self.flbas & 0xf);
        self.lbaf
            .get(idx)
            .and_then(|f| 1u32.checked_shl(u32::from(f.lbads)))
            .unwrap_or(0)
    }
}

/// A Namespace Identification Descriptor (NVMe Base 2.0 Figure 280).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsDescriptor {
    /// NIDT 1: IEEE Extended Unique Identifier.
    Eui64([u8; 8]),
    /// NIDT 2: Namespace Globally Unique Identifier.
    Nguid([u8; 16]),
    /// NIDT 3: Namespace UUID.
    Uuid([u8; 16]),
    /// NIDT 4: Command Set Identifier (0 = NVM).
    Csi(u8),
}

impl NsDescriptor {
    /// Encodes a descriptor list into a 4096-byte page.
    pub fn encode_list(list: &[NsDescriptor]) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_SIZE];
        let mut off = 0;
        for d in list {
            let (t, v): (u8, &[u8]) = match d {
                Self::Eui64(x) => (1, x),
                Self::Nguid(x) => (2, x),
                Self::Uuid(x) => (3, x),
                Self::Csi(x) => (4, std::slice::from_ref(x)),
            };
            put_u8(&mut b, off, t);
            put_u8(&mut b, off + 1, v.len() as u8);
            put(&mut b, off + 4, v);
            off += 4 + v.len();
        }
        b
    }

    /// Decodes a descriptor list; stops at a zero NIDT or a malformed entry.
    pub fn decode_list(b: &[u8]) -> Vec<NsDescriptor> {
        let mut out = Vec::new();
        let mut off = 0usize;
        while off + 4 <= b.len() {
            let (t, l) = (u8_at(b, off), usize::from(u8_at(b, off + 1)));
            let Some(v) = b.get(off + 4..off + 4 + l) else {
                break;
            };
            let d = match (t, l) {
                (1, 8) => Self::Eui64(array_at(v, 0)),
                (2, 16) => Self::Nguid(array_at(v, 0)),
                (3, 16) => Self::Uuid(array_at(v, 0)),
                (4, 1) => Self::Csi(u8_at(v, 0)),
                _ => break,
            };
            out.push(d);
            off += 4 + l;
        }
        out
    }
}

/// Encodes an Active Namespace ID list (CNS 02h): NSIDs greater than `after`, ascending,
/// at most 1024 of them (NVMe Base 2.0 §5.17.2.2).
pub fn encode_ns_list(nsids: impl IntoIterator<Item = u32>, after: u32) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_SIZE];
    let mut ids: Vec<u32> = nsids.into_iter().filter(|&n| n > after && n != 0).collect();
    ids.sort_unstable();
    for (i, n) in ids.into_iter().take(1024).enumerate() {
        put_u32(&mut b, 4 * i, n);
    }
    b
}

/// Decodes a namespace list: entries up to the first zero.
pub fn decode_ns_list(b: &[u8]) -> Vec<u32> {
    (0..b.len() / 4)
        .map(|i| u32_at(b, 4 * i))
        .take_while(|&n| n != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_round_trip_and_offsets() {
        let c = IdentifyController {
            vid: 0x1b36,
            sn: "nvmevm0001".into(),
            mn: "nvmf-rs".into(),
            fr: "0.1.0".into(),
            cntlid: 1,
            ver: crate::registers::version(1, 3, 0),
            cntrltype: ControllerType::Io,
            kas: 10,
            sqes: 0x66,
            cqes: 0x44,
            maxcmd: 128,
            nn: 4,
            oncs: oncs::COMPARE | oncs::DSM | oncs::WRITE_ZEROES,
            sgls: 1 | (1 << 20),
            subnqn: "nqn.2024-01.io.test:sub1".into(),
            ioccsz: (8192 + 64) / 16,
            iorcsz: 1,
            msdbd: 1,
            cmic: cmic::MULTI_PORT | cmic::MULTI_CTRL | cmic::ANA,
            anatt: 10,
            anacap: 0x1f,
            anagrpmax: 128,
            nanagrpid: 128,
            mnan: 1024,
            ..Default::default()
        };
        let b = c.encode();
        assert_eq!(b[76], 0x0b);
        // Linux `struct nvme_id_ctrl`: endgidmax at 340, then anatt, anacap,
        // anagrpmax, nanagrpid.
        assert_eq!((b[342], b[343]), (10, 0x1f));
        assert_eq!(b[344..352], [128, 0, 0, 0, 128, 0, 0, 0]);
        assert_eq!(b.len(), IDENTIFY_SIZE);
        assert_eq!(&b[4..14], b"nvmevm0001");
        assert_eq!(b[14], b' ');
        assert_eq!(b[111], 1);
        assert_eq!(&b[768..774], b"nqn.20");
        assert_eq!(u32::from_le_bytes(b[1792..1796].try_into().unwrap()), 516);
        assert_eq!(IdentifyController::decode(&b), c);
        assert_eq!(c.in_capsule_data_size(), 8192);
    }

    #[test]
    fn io_set_fields_at_their_offsets() {
        let c = IdentifyController {
            ctratt: ctratt::TBKAS,
            oncs: oncs::VERIFY | oncs::COPY,
            fuses: fuses::COMPARE_AND_WRITE,
            acwu: 0x1234,
            ocfs: ocfs::FORMAT_0,
            ..Default::default()
        };
        let b = c.encode();
        assert_eq!(&b[96..100], &[0x40, 0, 0, 0]);
        assert_eq!(&b[520..522], &[0x80, 0x01]);
        assert_eq!(&b[522..524], &[0x01, 0]);
        assert_eq!(&b[532..534], &[0x34, 0x12]);
        assert_eq!(&b[534..536], &[0x01, 0]);
        assert_eq!(IdentifyController::decode(&b), c);
        let n = IdentifyNamespace {
            mssrl: 0x0102,
            mcl: 0x0304_0506,
            msrc: 127,
            lbaf: vec![LbaFormat {
                ms: 0,
                lbads: 9,
                rp: 0,
            }],
            ..Default::default()
        };
        let b = n.encode();
        assert_eq!(&b[74..81], &[0x02, 0x01, 0x06, 0x05, 0x04, 0x03, 127]);
        assert_eq!(IdentifyNamespace::decode(&b), n);
    }

    #[test]
    fn namespace_round_trip() {
        let n = IdentifyNamespace {
            nsze: 1 << 21,
            ncap: 1 << 21,
            nuse: 5,
            nsfeat: 1,
            nlbaf: 1,
            flbas: 1,
            dlfeat: 1,
            nguid: [1; 16],
            eui64: [2; 8],
            lbaf: vec![
                LbaFormat {
                    ms: 0,
                    lbads: 9,
                    rp: 0,
                },
                LbaFormat {
                    ms: 0,
                    lbads: 12,
                    rp: 0,
                },
            ],
            ..Default::default()
        };
        let b = n.encode();
        assert_eq!(IdentifyNamespace::decode(&b), n);
        assert_eq!(n.block_size(), 4096);
        assert_eq!(IdentifyNamespace::decode(&[0xff; 4096]).block_size(), 0);
    }

    #[test]
    fn descriptors_and_lists() {
        let l = vec![
            NsDescriptor::Eui64([1; 8]),
            NsDescriptor::Uuid([2; 16]),
            NsDescriptor::Csi(0),
        ];
        assert_eq!(NsDescriptor::decode_list(&NsDescriptor::encode_list(&l)), l);
        assert_eq!(decode_ns_list(&encode_ns_list([3, 1, 2], 1)), vec![2, 3]);
        assert!(NsDescriptor::decode_list(&[1, 200, 0, 0]).is_empty());
    }
}
