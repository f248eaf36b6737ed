//! NVMe completion status (NVMe Base 2.0 §4.6.1 "Status Field Definition").
//!
//! The 15-bit status field of a completion queue entry carries a Status Code Type
//! (SCT), a Status Code (SC), Command Retry Delay, More and Do Not Retry. Named
//! constants cover the generic (§4.6.1.2.1), command-specific (§4.6.1.2.2 and the
//! Fabrics command-specific codes of NVMe-oF 1.1 §2.4.1), media and data integrity
//! (§4.6.1.2.3) and path-related (§4.6.1.2.4) codes that this stack produces or
//! must recognise.

use std::fmt;

/// Status Code Type (NVMe Base 2.0 Figure 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCodeType {
    /// 0h: generic command status.
    Generic,
    /// 1h: command-specific status.
    CommandSpecific,
    /// 2h: media and data integrity errors.
    MediaError,
    /// 3h: path-related status.
    Path,
    /// 7h: vendor specific.
    Vendor,
    /// Any other (reserved) value.
    Reserved(u8),
}

impl StatusCodeType {
    /// Decodes the 3-bit SCT value.
    pub fn from_bits(v: u8) -> Self {
        match v & 7 {
            0 => Self::Generic,
            1 => Self::CommandSpecific,
            2 => Self::MediaError,
            3 => Self::Path,
            7 => Self::Vendor,
            x => Self::Reserved(x),
        }
    }

    /// The 3-bit SCT value.
    pub fn bits(self) -> u8 {
        match self {
            Self::Generic => 0,
            Self::CommandSpecific => 1,
            Self::MediaError => 2,
            Self::Path => 3,
            Self::Vendor => 7,
            Self::Reserved(x) => x & 7,
        }
    }
}

/// An NVMe status: SCT and SC plus the DNR and More bits.
///
/// The phase tag is not part of this value; on fabrics it is always 0
/// (NVMe-oF 1.1 §2.2: "the Phase Tag is reserved").
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    /// Status Code Type.
    pub sct: u8,
    /// Status Code.
    pub sc: u8,
    /// Do Not Retry.
    pub dnr: bool,
    /// More information in the Error Information log page.
    pub more: bool,
    /// Command Retry Delay index (0..=3).
    pub crd: u8,
}

macro_rules! statuses {
    ($( $(#[$m:meta])* $name:ident = ($sct:expr, $sc:expr, $text:expr); )*) => {
        impl Status {
            $( $(#[$m])* pub const $name: Status = Status { sct: $sct, sc: $sc, dnr: false, more: false, crd: 0 }; )*

            /// The spec's name for this status, if it is one this crate knows.
            pub fn name(&self) -> Option<&'static str> {
                match (self.sct, self.sc) {
                    $( ($sct, $sc) => Some($text), )*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    /// Generic 00h: Successful Completion.
    SUCCESS = (0, 0x00, "Successful Completion");
    /// Generic 01h: Invalid Command Opcode.
    INVALID_OPCODE = (0, 0x01, "Invalid Command Opcode");
    /// Generic 02h: Invalid Field in Command.
    INVALID_FIELD = (0, 0x02, "Invalid Field in Command");
    /// Generic 03h: Command ID Conflict.
    CID_CONFLICT = (0, 0x03, "Command ID Conflict");
    /// Generic 04h: Data Transfer Error.
    DATA_TRANSFER_ERROR = (0, 0x04, "Data Transfer Error");
    /// Generic 05h: Commands Aborted due to Power Loss Notification.
    ABORTED_POWER_LOSS = (0, 0x05, "Commands Aborted due to Power Loss Notification");
    /// Generic 06h: Internal Error.
    INTERNAL_ERROR = (0, 0x06, "Internal Error");
    /// Generic 07h: Command Abort Requested.
    ABORT_REQUESTED = (0, 0x07, "Command Abort Requested");
    /// Generic 08h: Command Aborted due to SQ Deletion.
    ABORTED_SQ_DELETION = (0, 0x08, "Command Aborted due to SQ Deletion");
    /// Generic 09h: Command Aborted due to Failed Fused Command.
    ABORTED_FAILED_FUSED = (0, 0x09, "Command Aborted due to Failed Fused Command");
    /// Generic 0Ah: Command Aborted due to Missing Fused Command.
    ABORTED_MISSING_FUSED = (0, 0x0A, "Command Aborted due to Missing Fused Command");
    /// Generic 0Bh: Invalid Namespace or Format.
    INVALID_NS = (0, 0x0B, "Invalid Namespace or Format");
    /// Generic 0Ch: Command Sequence Error.
    COMMAND_SEQUENCE_ERROR = (0, 0x0C, "Command Sequence Error");
    /// Generic 0Dh: Invalid SGL Segment Descriptor.
    INVALID_SGL_SEGMENT = (0, 0x0D, "Invalid SGL Segment Descriptor");
    /// Generic 0Eh: Invalid Number of SGL Descriptors.
    INVALID_SGL_COUNT = (0, 0x0E, "Invalid Number of SGL Descriptors");
    /// Generic 0Fh: Data SGL Length Invalid.
    DATA_SGL_LENGTH_INVALID = (0, 0x0F, "Data SGL Length Invalid");
    /// Generic 11h: SGL Descriptor Type Invalid.
    SGL_DESCRIPTOR_TYPE_INVALID = (0, 0x11, "SGL Descriptor Type Invalid");
    /// Generic 15h: Operation Denied.
    OPERATION_DENIED = (0, 0x15, "Operation Denied");
    /// Generic 16h: SGL Offset Invalid.
    SGL_OFFSET_INVALID = (0, 0x16, "SGL Offset Invalid");
    /// Generic 18h: Host Identifier Inconsistent Format.
    HOSTID_INCONSISTENT = (0, 0x18, "Host Identifier Inconsistent Format");
    /// Generic 19h: Keep Alive Timer Expired.
    KEEP_ALIVE_EXPIRED = (0, 0x19, "Keep Alive Timer Expired");
    /// Generic 1Ah: Keep Alive Timeout Invalid.
    KEEP_ALIVE_INVALID = (0, 0x1A, "Keep Alive Timeout Invalid");
    /// Generic 20h: Namespace is Write Protected.
    NS_WRITE_PROTECTED = (0, 0x20, "Namespace is Write Protected");
    /// Generic 22h: Transient Transport Error.
    TRANSIENT_TRANSPORT_ERROR = (0, 0x22, "Transient Transport Error");
    /// NVM generic 80h: LBA Out of Range.
    LBA_OUT_OF_RANGE = (0, 0x80, "LBA Out of Range");
    /// NVM generic 81h: Capacity Exceeded.
    CAPACITY_EXCEEDED = (0, 0x81, "Capacity Exceeded");
    /// NVM generic 82h: Namespace Not Ready.
    NS_NOT_READY = (0, 0x82, "Namespace Not Ready");
    /// NVM generic 83h: Reservation Conflict (NVMe Base 2.0 §8.19: a command the
    /// namespace's reservation does not allow this host).
    RESERVATION_CONFLICT = (0, 0x83, "Reservation Conflict");
    /// Command specific 01h: Invalid Queue Identifier.
    INVALID_QUEUE_ID = (1, 0x01, "Invalid Queue Identifier");
    /// Command specific 02h: Invalid Queue Size.
    INVALID_QUEUE_SIZE = (1, 0x02, "Invalid Queue Size");
    /// Command specific 03h: Abort Command Limit Exceeded.
    ABORT_LIMIT_EXCEEDED = (1, 0x03, "Abort Command Limit Exceeded");
    /// Command specific 05h: Asynchronous Event Request Limit Exceeded.
    AER_LIMIT_EXCEEDED = (1, 0x05, "Asynchronous Event Request Limit Exceeded");
    /// Command specific 09h: Invalid Log Page.
    INVALID_LOG_PAGE = (1, 0x09, "Invalid Log Page");
    /// Command specific 0Dh: Feature Identifier Not Saveable.
    FEATURE_NOT_SAVEABLE = (1, 0x0D, "Feature Identifier Not Saveable");
    /// Command specific 0Eh: Feature Not Changeable.
    FEATURE_NOT_CHANGEABLE = (1, 0x0E, "Feature Not Changeable");
    /// Fabrics 80h: Connect Incompatible Format.
    CONNECT_INCOMPATIBLE_FORMAT = (1, 0x80, "Incompatible Format");
    /// Fabrics 81h: Connect Controller Busy.
    CONNECT_CONTROLLER_BUSY = (1, 0x81, "Controller Busy");
    /// Fabrics 82h: Connect Invalid Parameters.
    CONNECT_INVALID_PARAMETERS = (1, 0x82, "Connect Invalid Parameters");
    /// Fabrics 83h: Connect Restart Discovery.
    CONNECT_RESTART_DISCOVERY = (1, 0x83, "Connect Restart Discovery");
    /// Fabrics 84h: Connect Invalid Host.
    CONNECT_INVALID_HOST = (1, 0x84, "Connect Invalid Host");
    /// Fabrics 85h: Invalid Queue Type.
    INVALID_QUEUE_TYPE = (1, 0x85, "Invalid Queue Type");
    /// Fabrics 90h: Discover Restart.
    DISCOVER_RESTART = (1, 0x90, "Discover Restart");
    /// Fabrics 91h: Authentication Required.
    AUTH_REQUIRED = (1, 0x91, "Authentication Required");
    /// Media 80h: Write Fault.
    WRITE_FAULT = (2, 0x80, "Write Fault");
    /// Media 81h: Unrecovered Read Error.
    UNRECOVERED_READ_ERROR = (2, 0x81, "Unrecovered Read Error");
    /// Media 85h: Compare Failure.
    COMPARE_FAILURE = (2, 0x85, "Compare Failure");
    /// Media 86h: Access Denied.
    ACCESS_DENIED = (2, 0x86, "Access Denied");
    /// Media 87h: Deallocated or Unwritten Logical Block.
    DEALLOCATED_OR_UNWRITTEN = (2, 0x87, "Deallocated or Unwritten Logical Block");
    /// Path 00h: Internal Path Error.
    INTERNAL_PATH_ERROR = (3, 0x00, "Internal Path Error");
    /// Path 01h: Asymmetric Access Persistent Loss.
    ANA_PERSISTENT_LOSS = (3, 0x01, "Asymmetric Access Persistent Loss");
    /// Path 02h: Asymmetric Access Inaccessible.
    ANA_INACCESSIBLE = (3, 0x02, "Asymmetric Access Inaccessible");
    /// Path 03h: Asymmetric Access Transition.
    ANA_TRANSITION = (3, 0x03, "Asymmetric Access Transition");
    /// Path 71h: Command Aborted By Host.
    ABORTED_BY_HOST = (3, 0x71, "Command Aborted By Host");
}

impl Status {
    /// NVM command specific 83h: Command Size Limit Exceeded (a Copy beyond
    /// MSRC, MSSRL or MCL; NVM Command Set 1.0 §3.3.1). Defined outside the
    /// named table because command-specific 83h of a Fabrics command is
    /// Connect Restart Discovery, which [`Status::name`] reports for (1, 83h).
    pub const CMD_SIZE_LIMIT_EXCEEDED: Status = Status {
        sct: 1,
        sc: 0x83,
        dnr: false,
        more: false,
        crd: 0,
    };

    /// Decodes the status field: bits 15:1 of CQE DW3\[31:16\] (bit 0 is the phase tag).
    pub fn from_field(field: u16) -> Self {
        Self {
            sc: ((field >> 1) & 0xff) as u8,
            sct: ((field >> 9) & 0x7) as u8,
            crd: ((field >> 12) & 0x3) as u8,
            more: field & (1 << 14) != 0,
            dnr: field & (1 << 15) != 0,
        }
    }

    /// Encodes the status field with a zero phase tag.
    pub fn to_field(self) -> u16 {
        (u16::from(self.sc) << 1)
            | (u16::from(self.sct & 7) << 9)
            | (u16::from(self.crd & 3) << 12)
            | (u16::from(self.more) << 14)
            | (u16::from(self.dnr) << 15)
    }

    /// The same status with Do Not Retry set: the error will not go away on retry.
    pub fn dnr(mut self) -> Self {
        self.dnr = true;
        self
    }

    /// True for Successful Completion.
    pub fn is_success(&self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// The status code type.
    pub fn code_type(&self) -> StatusCodeType {
        StatusCodeType::from_bits(self.sct)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} (sct {:#x}, sc {:#04x})", self.sct, self.sc)?,
            None => write!(f, "status sct {:#x} sc {:#04x}", self.sct, self.sc)?,
        }
        if self.dnr {
            f.write_str(", do not retry")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_round_trip() {
        for s in [
            Status::SUCCESS,
            Status::LBA_OUT_OF_RANGE.dnr(),
            Status::AUTH_REQUIRED,
        ] {
            assert_eq!(Status::from_field(s.to_field()), s);
        }
        // Invalid Field in Command with DNR: SC 02h at bits 8:1, DNR at bit 15.
        assert_eq!(Status::INVALID_FIELD.dnr().to_field(), 0x8004);
        assert_eq!(Status::from_field(0x8004), Status::INVALID_FIELD.dnr());
        assert_eq!(
            Status::from_field(0x0004).name(),
            Some("Invalid Field in Command")
        );
        assert_eq!(
            Status::from_field(0x0104).code_type(),
            StatusCodeType::Generic
        );
        assert_eq!(
            Status::from_field(0x0304),
            Status::CONNECT_INVALID_PARAMETERS
        );
    }
}
