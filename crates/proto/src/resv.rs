//! Reservations: the command fields and data structures of Reservation
//! Register / Acquire / Release / Report (NVMe Base 2.0 §7.2–7.5 and §8.19,
//! NVM Command Set 1.0 Figure 18 opcodes 0Dh, 11h, 15h, 0Eh), the Reservation
//! Notification log page (log 80h, NVMe Base 2.0 §5.16.1.24) and the
//! Reservation Notification Mask / Persistence features (82h / 83h).
//!
//! Every decoder reads through checked slices and never panics; a short data
//! buffer decodes as `None`.

use crate::le::*;
use crate::sqe::{io_opcode, Sqe};

/// Reservation command opcodes (NVM Command Set 1.0 Figure 18).
pub mod opcode {
    /// Reservation Register (data host → controller, 16 bytes).
    pub const REGISTER: u8 = 0x0D;
    /// Reservation Report (data controller → host).
    pub const REPORT: u8 = 0x0E;
    /// Reservation Acquire (data host → controller, 16 bytes).
    pub const ACQUIRE: u8 = 0x11;
    /// Reservation Release (data host → controller, 8 bytes).
    pub const RELEASE: u8 = 0x15;
}

/// True for the four reservation opcodes.
pub fn is_reservation_opcode(op: u8) -> bool {
    matches!(
        op,
        opcode::REGISTER | opcode::REPORT | opcode::ACQUIRE | opcode::RELEASE
    )
}

/// Reservation types (NVMe Base 2.0 Figure 548 / §8.19.1; CDW10 bits 15:8 of
/// Acquire and Release, byte 4 of the Report data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResvType {
    /// 1h: Write Exclusive.
    WriteExclusive,
    /// 2h: Exclusive Access.
    ExclusiveAccess,
    /// 3h: Write Exclusive - Registrants Only.
    WriteExclusiveRegistrantsOnly,
    /// 4h: Exclusive Access - Registrants Only.
    ExclusiveAccessRegistrantsOnly,
    /// 5h: Write Exclusive - All Registrants.
    WriteExclusiveAllRegistrants,
    /// 6h: Exclusive Access - All Registrants.
    ExclusiveAccessAllRegistrants,
}

impl ResvType {
    /// All six, in code order.
    pub const ALL: [ResvType; 6] = [
        Self::WriteExclusive,
        Self::ExclusiveAccess,
        Self::WriteExclusiveRegistrantsOnly,
        Self::ExclusiveAccessRegistrantsOnly,
        Self::WriteExclusiveAllRegistrants,
        Self::ExclusiveAccessAllRegistrants,
    ];

    /// Decodes a type code; `None` for 0 and 7h–FFh (reserved).
    pub fn from_code(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v).checked_sub(1)?).copied()
    }

    /// The type code.
    pub fn code(self) -> u8 {
        match self {
            Self::WriteExclusive => 1,
            Self::ExclusiveAccess => 2,
            Self::WriteExclusiveRegistrantsOnly => 3,
            Self::ExclusiveAccessRegistrantsOnly => 4,
            Self::WriteExclusiveAllRegistrants => 5,
            Self::ExclusiveAccessAllRegistrants => 6,
        }
    }

    /// Exclusive Access types also deny reads to those they exclude.
    pub fn excludes_reads(self) -> bool {
        matches!(
            self,
            Self::ExclusiveAccess
                | Self::ExclusiveAccessRegistrantsOnly
                | Self::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants Only / All Registrants types let every registrant through
    /// (NVMe Base 2.0 Figure 549: registrants have the holder's access).
    pub fn registrants_have_access(self) -> bool {
        !matches!(self, Self::WriteExclusive | Self::ExclusiveAccess)
    }

    /// All Registrants types: every registrant is a reservation holder
    /// (NVMe Base 2.0 §8.19.4).
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            Self::WriteExclusiveAllRegistrants | Self::ExclusiveAccessAllRegistrants
        )
    }
}

/// Reservation Register Action (CDW10 bits 2:0, NVMe Base 2.0 Figure 557).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterAction {
    /// 000b: register the new key.
    Register,
    /// 001b: unregister.
    Unregister,
    /// 010b: replace the key.
    Replace,
}

/// Reservation Acquire Action (CDW10 bits 2:0, NVMe Base 2.0 Figure 552).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireAction {
    /// 000b: acquire.
    Acquire,
    /// 001b: preempt.
    Preempt,
    /// 010b: preempt and abort.
    PreemptAndAbort,
}

/// Reservation Release Action (CDW10 bits 2:0, NVMe Base 2.0 Figure 562).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseAction {
    /// 000b: release.
    Release,
    /// 001b: clear (every registration and the reservation).
    Clear,
}

/// Change Persist Through Power Loss State (Register CDW10 bits 31:30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cptpl {
    /// 00b: no change.
    NoChange,
    /// 10b: PTPL off (reservations released and registrations cleared on power loss).
    Clear,
    /// 11b: PTPL on (they persist).
    Set,
}

/// The decoded CDW10 of a reservation command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResvCdw10 {
    /// The action (bits 2:0), raw.
    pub action: u8,
    /// Ignore Existing Key (bit 3).
    pub iekey: bool,
    /// Reservation type (bits 15:8), raw (Acquire / Release).
    pub rtype: u8,
    /// CPTPL (bits 31:30), raw (Register).
    pub cptpl: u8,
}

impl ResvCdw10 {
    /// Splits CDW10.
    pub fn from_u32(v: u32) -> Self {
        Self {
            action: (v & 7) as u8,
            iekey: v & (1 << 3) != 0,
            rtype: ((v >> 8) & 0xff) as u8,
            cptpl: (v >> 30) as u8,
        }
    }

    /// Builds CDW10.
    pub fn to_u32(self) -> u32 {
        u32::from(self.action & 7)
            | (u32::from(self.iekey) << 3)
            | (u32::from(self.rtype) << 8)
            | (u32::from(self.cptpl & 3) << 30)
    }

    /// The Register action; `None` for reserved values.
    pub fn register_action(self) -> Option<RegisterAction> {
        match self.action {
            0 => Some(RegisterAction::Register),
            1 => Some(RegisterAction::Unregister),
            2 => Some(RegisterAction::Replace),
            _ => None,
        }
    }

    /// The Acquire action; `None` for reserved values.
    pub fn acquire_action(self) -> Option<AcquireAction> {
        match self.action {
            0 => Some(AcquireAction::Acquire),
            1 => Some(AcquireAction::Preempt),
            2 => Some(AcquireAction::PreemptAndAbort),
            _ => None,
        }
    }

    /// The Release action; `None` for reserved values.
    pub fn release_action(self) -> Option<ReleaseAction> {
        match self.action {
            0 => Some(ReleaseAction::Release),
            1 => Some(ReleaseAction::Clear),
            _ => None,
        }
    }

    /// The CPTPL field; `None` for the reserved 01b.
    pub fn cptpl(self) -> Option<Cptpl> {
        match self.cptpl {
            0 => Some(Cptpl::NoChange),
            2 => Some(Cptpl::Clear),
            3 => Some(Cptpl::Set),
            _ => None,
        }
    }
}

/// Two 8-byte keys: Register's CRKEY/NRKEY (NVMe Base 2.0 Figure 558) and
/// Acquire's CRKEY/PRKEY (Figure 553). Release sends only CRKEY (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResvKeys {
    /// Current Reservation Key.
    pub crkey: u64,
    /// New (Register) or Preempt (Acquire) Reservation Key.
    pub key2: u64,
}

impl ResvKeys {
    /// Encodes 16 bytes.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        put_u64(&mut b, 0, self.crkey);
        put_u64(&mut b, 8, self.key2);
        b
    }

    /// Decodes 16 bytes (`need2`) or 8 bytes (Release); `None` if shorter.
    pub fn decode(b: &[u8], need2: bool) -> Option<Self> {
        if b.len() < if need2 { 16 } else { 8 } {
            return None;
        }
        Some(Self {
            crkey: u64_at(b, 0),
            key2: if need2 { u64_at(b, 8) } else { 0 },
        })
    }
}

/// Builds a Reservation Register / Acquire / Release command (data length 16,
/// 16 and 8 bytes follow it).
pub fn resv_sqe(op: u8, nsid: u32, cdw10: ResvCdw10) -> Sqe {
    let mut s = Sqe::new(op);
    s.nsid = nsid;
    s.cdw10 = cdw10.to_u32();
    s
}

/// Builds a Reservation Report command for `len` bytes (a multiple of 4):
/// CDW10 NUMD (0's based dwords), CDW11 bit 0 EDS.
pub fn report_sqe(nsid: u32, len: u32, eds: bool) -> Sqe {
    let mut s = Sqe::new(opcode::REPORT);
    s.nsid = nsid;
    s.cdw10 = (len / 4).saturating_sub(1);
    s.cdw11 = u32::from(eds);
    s
}

/// One registrant in a Reservation Status data structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisteredController {
    /// Controller ID (FFFFh: dynamic controller model, as nvmet reports).
    pub cntlid: u16,
    /// Reservation Status bit 0: this registrant holds the reservation.
    pub holds: bool,
    /// Host Identifier (8 bytes used in the short form, 16 in the extended one).
    pub hostid: [u8; 16],
    /// Reservation Key.
    pub rkey: u64,
}

/// Reservation Status data structure (NVMe Base 2.0 Figures 565–568): the
/// 24-byte header + 24-byte entries (EDS = 0) or the extended 64-byte header +
/// 64-byte entries with 128-bit host identifiers (EDS = 1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReservationStatus {
    /// Generation: incremented by every Register/Preempt/Clear that succeeds.
    pub gen: u32,
    /// Reservation type held (0: none).
    pub rtype: u8,
    /// Persist Through Power Loss State.
    pub ptpls: bool,
    /// Number of registrants (REGCTL); may exceed `regctl.len()` if the
    /// buffer was short.
    pub regctl_count: u16,
    /// The registrants that fit.
    pub regctl: Vec<RegisteredController>,
}

impl ReservationStatus {
    /// Header and entry size of the extended form.
    pub const EXT_SIZE: usize = 64;
    /// Header and entry size of the short form.
    pub const SIZE: usize = 24;

    /// Encodes; `extended` selects the EDS = 1 layout.
    pub fn encode(&self, extended: bool) -> Vec<u8> {
        let unit = if extended { Self::EXT_SIZE } else { Self::SIZE };
        let mut b = vec![0u8; unit * (1 + self.regctl.len())];
        put_u32(&mut b, 0, self.gen);
        put_u8(&mut b, 4, self.rtype);
        put_u16(&mut b, 5, self.regctl_count);
        put_u8(&mut b, 9, u8::from(self.ptpls));
        for (i, r) in self.regctl.iter().enumerate() {
            let o = unit * (i + 1);
            put_u16(&mut b, o, r.cntlid);
            put_u8(&mut b, o + 2, u8::from(r.holds));
            if extended {
                put_u64(&mut b, o + 8, r.rkey);
                put(&mut b, o + 16, &r.hostid);
            } else {
                put(&mut b, o + 8, &r.hostid[..8]);
                put_u64(&mut b, o + 16, r.rkey);
            }
        }
        b
    }

    /// Decodes what fits in `b`; `None` if even the header does not.
    pub fn decode(b: &[u8], extended: bool) -> Option<Self> {
        let unit = if extended { Self::EXT_SIZE } else { Self::SIZE };
        if b.len() < unit {
            return None;
        }
        let count = u16_at(b, 5);
        let fits = (b.len() / unit - 1).min(usize::from(count));
        let regctl = (0..fits)
            .map(|i| {
                let o = unit * (i + 1);
                let mut hostid = [0u8; 16];
                let rkey = if extended {
                    hostid = array_at(b, o + 16);
                    u64_at(b, o + 8)
                } else {
                    hostid[..8].copy_from_slice(&array_at::<8>(b, o + 8));
                    u64_at(b, o + 16)
                };
                RegisteredController {
                    cntlid: u16_at(b, o),
                    holds: u8_at(b, o + 2) & 1 != 0,
                    hostid,
                    rkey,
                }
            })
            .collect();
        Some(Self {
            gen: u32_at(b, 0),
            rtype: u8_at(b, 4),
            ptpls: u8_at(b, 9) & 1 != 0,
            regctl_count: count,
            regctl,
        })
    }
}

/// Reservation Notification log page types (NVMe Base 2.0 Figure 262).
pub mod notify_type {
    /// 0h: empty log page.
    pub const EMPTY: u8 = 0;
    /// 1h: Registration Preempted.
    pub const REGISTRATION_PREEMPTED: u8 = 1;
    /// 2h: Reservation Released.
    pub const RESERVATION_RELEASED: u8 = 2;
    /// 3h: Reservation Preempted.
    pub const RESERVATION_PREEMPTED: u8 = 3;
}

/// Reservation Notification Mask bits (Set Features 82h CDW11; NVMe Base 2.0
/// §5.27.1.21): a set bit suppresses that notification for the namespace.
pub mod notify_mask {
    /// Mask Registration Preempted Notification.
    pub const REGPRE: u32 = 1 << 1;
    /// Mask Reservation Released Notification.
    pub const RESREL: u32 = 1 << 2;
    /// Mask Reservation Preempted Notification.
    pub const RESPRE: u32 = 1 << 3;
    /// Every defined bit.
    pub const ALL: u32 = REGPRE | RESREL | RESPRE;

    /// The mask bit of a notification type (0 for unknown types).
    pub fn bit_of(ty: u8) -> u32 {
        match ty {
            super::notify_type::REGISTRATION_PREEMPTED => REGPRE,
            super::notify_type::RESERVATION_RELEASED => RESREL,
            super::notify_type::RESERVATION_PREEMPTED => RESPRE,
            _ => 0,
        }
    }
}

/// One Reservation Notification log page, 64 bytes (NVMe Base 2.0 Figure 261).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReservationNotification {
    /// Log Page Count: increments per notification, wraps to 1; 0 = empty page.
    pub count: u64,
    /// Reservation Notification Log Page Type ([`notify_type`]).
    pub log_type: u8,
    /// Number of Available Log Pages after this one (capped at 255).
    pub available: u8,
    /// Namespace ID.
    pub nsid: u32,
}

impl ReservationNotification {
    /// Size of the page.
    pub const SIZE: usize = 64;

    /// Encodes 64 bytes.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put_u64(&mut b, 0, self.count);
        put_u8(&mut b, 8, self.log_type);
        put_u8(&mut b, 9, self.available);
        put_u32(&mut b, 12, self.nsid);
        b
    }

    /// Decodes; `None` if shorter than 16 bytes.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < 16 {
            return None;
        }
        Some(Self {
            count: u64_at(b, 0),
            log_type: u8_at(b, 8),
            available: u8_at(b, 9),
            nsid: u32_at(b, 12),
        })
    }
}

/// Identify Namespace RESCAP bits (byte 31; NVM Command Set 1.0 Figure 97).
pub mod rescap {
    /// Persist Through Power Loss supported.
    pub const PTPL: u8 = 1 << 0;
    /// The six reservation types, bits 1..=6.
    pub const ALL_TYPES: u8 = 0x7e;
    /// Ignore Existing Key: the NVMe 1.3+ behaviour (IEKEY ignored by Acquire
    /// and Release only for keys they do not check).
    pub const IEKEY13: u8 = 1 << 7;
}

/// Commands the reservation access rules classify (NVMe Base 2.0 Figure 549:
/// "read" and "write" command groups; everything else is not restricted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessClass {
    /// Reads media (Read, Compare, Verify, Copy's source).
    Read,
    /// Changes media (Write, Write Zeroes, Dataset Management, Flush, Write Uncorrectable, Copy).
    Write,
    /// Not restricted by a reservation.
    Other,
}

/// The access class of an NVM command set I/O opcode.
pub fn access_class(op: u8) -> AccessClass {
    match op {
        io_opcode::READ | io_opcode::COMPARE | 0x0C /* Verify */ => AccessClass::Read,
        io_opcode::WRITE
        | io_opcode::WRITE_ZEROES
        | io_opcode::DATASET_MANAGEMENT
        | io_opcode::FLUSH
        | 0x04 /* Write Uncorrectable */
        | 0x19 /* Copy */ => AccessClass::Write,
        _ => AccessClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdw10_round_trip() {
        let c = ResvCdw10 {
            action: 2,
            iekey: true,
            rtype: 5,
            cptpl: 3,
        };
        assert_eq!(c.to_u32(), 0xC000_050A);
        assert_eq!(ResvCdw10::from_u32(c.to_u32()), c);
        assert_eq!(c.cptpl(), Some(Cptpl::Set));
        assert_eq!(ResvCdw10::from_u32(1 << 30).cptpl(), None);
        assert_eq!(ResvCdw10::from_u32(3).register_action(), None);
    }

    #[test]
    fn types() {
        assert_eq!(ResvType::from_code(0), None);
        assert_eq!(ResvType::from_code(7), None);
        for t in ResvType::ALL {
            assert_eq!(ResvType::from_code(t.code()), Some(t));
        }
    }

    #[test]
    fn status_layouts() {
        let s = ReservationStatus {
            gen: 7,
            rtype: 1,
            ptpls: true,
            regctl_count: 2,
            regctl: vec![
                RegisteredController {
                    cntlid: 0xffff,
                    holds: true,
                    hostid: [0xaa; 16],
                    rkey: 0x1122,
                },
                RegisteredController {
                    cntlid: 0xffff,
                    holds: false,
                    hostid: [0xbb; 16],
                    rkey: 0x3344,
                },
            ],
        };
        let e = s.encode(true);
        assert_eq!(e.len(), 192);
        assert_eq!(&e[5..7], &[2, 0]);
        assert_eq!(e[64 + 2], 1);
        assert_eq!(&e[64 + 8..64 + 16], &0x1122u64.to_le_bytes());
        assert_eq!(&e[64 + 16..64 + 32], &[0xaa; 16]);
        assert_eq!(ReservationStatus::decode(&e, true), Some(s.clone()));
        let short = s.encode(false);
        assert_eq!(short.len(), 72);
        assert_eq!(&short[24 + 16..24 + 24], &0x1122u64.to_le_bytes());
        // A buffer too short for every entry decodes what fits and keeps the count.
        let part = ReservationStatus::decode(&e[..128], true).unwrap();
        assert_eq!(part.regctl_count, 2);
        assert_eq!(part.regctl.len(), 1);
        assert_eq!(ReservationStatus::decode(&e[..10], true), None);
    }

    #[test]
    fn notification_page() {
        let n = ReservationNotification {
            count: 3,
            log_type: notify_type::RESERVATION_PREEMPTED,
            available: 1,
            nsid: 9,
        };
        let b = n.encode();
        assert_eq!(b[8], 3);
        assert_eq!(&b[12..16], &9u32.to_le_bytes());
        assert_eq!(ReservationNotification::decode(&b), Some(n));
        assert_eq!(ReservationNotification::decode(&b[..8]), None);
    }
}
