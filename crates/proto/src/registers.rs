//! Controller properties read and written with Property Get/Set
//! (NVMe Base 2.0 §3.1.3, Figure 35; NVMe-oF 1.1 §3.5 "Controller Properties").

/// Property offset of CAP, Controller Capabilities (8 bytes).
pub const CAP: u32 = 0x00;
/// Property offset of VS, Version (4 bytes).
pub const VS: u32 = 0x08;
/// Property offset of CC, Controller Configuration (4 bytes).
pub const CC: u32 = 0x14;
/// Property offset of CSTS, Controller Status (4 bytes).
pub const CSTS: u32 = 0x1C;
/// Property offset of NSSR, NVM Subsystem Reset (4 bytes).
pub const NSSR: u32 = 0x20;

/// Controller Capabilities (NVMe Base 2.0 Figure 36).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cap {
    /// Maximum Queue Entries Supported, 0's based.
    pub mqes: u16,
    /// Contiguous Queues Required.
    pub cqr: bool,
    /// Timeout in 500 ms units: worst time to CSTS.RDY after CC.EN changes.
    pub to: u8,
    /// Command Sets Supported (bits 44:37); bit 0 = NVM command set.
    pub css: u8,
    /// Memory Page Size Minimum (2^(12+n)).
    pub mpsmin: u8,
    /// Memory Page Size Maximum (2^(12+n)).
    pub mpsmax: u8,
}

impl Cap {
    /// Decodes the 64-bit register.
    pub fn from_u64(v: u64) -> Self {
        Self {
            mqes: (v & 0xffff) as u16,
            cqr: v & (1 << 16) != 0,
            to: ((v >> 24) & 0xff) as u8,
            css: ((v >> 37) & 0xff) as u8,
            mpsmin: ((v >> 48) & 0xf) as u8,
            mpsmax: ((v >> 52) & 0xf) as u8,
        }
    }

    /// Encodes the 64-bit register.
    pub fn to_u64(self) -> u64 {
        u64::from(self.mqes)
            | (u64::from(self.cqr) << 16)
            | (u64::from(self.to) << 24)
            | (u64::from(self.css) << 37)
            | (u64::from(self.mpsmin & 0xf) << 48)
            | (u64::from(self.mpsmax & 0xf) << 52)
    }
}

/// Encodes a Version register (NVMe Base 2.0 Figure 37).
pub const fn version(major: u16, minor: u8, tertiary: u8) -> u32 {
    ((major as u32) << 16) | ((minor as u32) << 8) | tertiary as u32
}

/// Controller Configuration (NVMe Base 2.0 Figure 41).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cc {
    /// Enable.
    pub en: bool,
    /// I/O Command Set Selected.
    pub css: u8,
    /// Memory Page Size.
    pub mps: u8,
    /// Arbitration Mechanism Selected.
    pub ams: u8,
    /// Shutdown Notification: 0 none, 1 normal, 2 abrupt.
    pub shn: u8,
    /// I/O Submission Queue Entry Size (2^n).
    pub iosqes: u8,
    /// I/O Completion Queue Entry Size (2^n).
    pub iocqes: u8,
}

impl Cc {
    /// Decodes the register.
    pub fn from_u32(v: u32) -> Self {
        Self {
            en: v & 1 != 0,
            css: ((v >> 4) & 7) as u8,
            mps: ((v >> 7) & 0xf) as u8,
            ams: ((v >> 11) & 7) as u8,
            shn: ((v >> 14) & 3) as u8,
            iosqes: ((v >> 16) & 0xf) as u8,
            iocqes: ((v >> 20) & 0xf) as u8,
        }
    }

    /// Encodes the register.
    pub fn to_u32(self) -> u32 {
        u32::from(self.en)
            | (u32::from(self.css & 7) << 4)
            | (u32::from(self.mps & 0xf) << 7)
            | (u32::from(self.ams & 7) << 11)
            | (u32::from(self.shn & 3) << 14)
            | (u32::from(self.iosqes & 0xf) << 16)
            | (u32::from(self.iocqes & 0xf) << 20)
    }
}

/// Controller Status (NVMe Base 2.0 Figure 42).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Csts {
    /// Ready.
    pub rdy: bool,
    /// Controller Fatal Status.
    pub cfs: bool,
    /// Shutdown Status: 0 normal operation, 1 occurring, 2 complete.
    pub shst: u8,
}

impl Csts {
    /// Decodes the register.
    pub fn from_u32(v: u32) -> Self {
        Self {
            rdy: v & 1 != 0,
            cfs: v & 2 != 0,
            shst: ((v >> 2) & 3) as u8,
        }
    }

    /// Encodes the register.
    pub fn to_u32(self) -> u32 {
        u32::from(self.rdy) | (u32::from(self.cfs) << 1) | (u32::from(self.shst & 3) << 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cap = Cap {
            mqes: 127,
            cqr: true,
            to: 15,
            css: 1,
            mpsmin: 0,
            mpsmax: 0,
        };
        assert_eq!(Cap::from_u64(cap.to_u64()), cap);
        // CC as the Linux host writes it: IOCQES=4, IOSQES=6, EN=1.
        let cc = Cc::from_u32(0x0046_0001);
        assert!(cc.en);
        assert_eq!((cc.iosqes, cc.iocqes), (6, 4));
        assert_eq!(cc.to_u32(), 0x0046_0001);
        let csts = Csts {
            rdy: true,
            cfs: false,
            shst: 2,
        };
        assert_eq!(csts.to_u32(), 9);
        assert_eq!(Csts::from_u32(9), csts);
        assert_eq!(version(1, 3, 0), 0x0001_0300);
    }
}
