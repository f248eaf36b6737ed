//! Fabrics commands (NVMe-oF 1.1 §3): Connect, Property Get/Set, Disconnect and the
//! Authentication Send/Receive framing. All share opcode 7Fh and are named by FCTYPE
//! in byte 4 of the SQE.

use crate::le::*;
use crate::sqe::{admin_opcode, SglDescriptor, Sqe};

/// Fabrics command types (NVMe-oF 1.1 Figure 11; Disconnect from NVMe-oF 1.1a / TP 8021).
pub mod fctype {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
    /// Authentication Send.
    pub const AUTH_SEND: u8 = 0x05;
    /// Authentication Receive.
    pub const AUTH_RECV: u8 = 0x06;
    /// Disconnect (I/O queues only).
    pub const DISCONNECT: u8 = 0x08;
}

/// The well-known discovery subsystem NQN (NVMe Base 2.0 §4.5).
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Longest NQN in bytes, without the terminating NUL (NVMe Base 2.0 §4.5).
pub const NQN_MAX_LEN: usize = 223;
/// Controller ID value asking for the dynamic controller model (NVMe-oF 1.1 Figure 20).
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;
/// Size of the Connect command's data (NVMe-oF 1.1 Figure 20).
pub const CONNECT_DATA_SIZE: usize = 1024;

/// Checks an NQN for the form of NVMe Base 2.0 §4.5: at most 223 bytes of UTF-8,
/// starting with `nqn.` and a `yyyy-mm.` date, or the UUID form.
pub fn validate_nqn(nqn: &str) -> Result<(), &'static str> {
    if nqn.is_empty() {
        return Err("the NQN is empty");
    }
    if nqn.len() > NQN_MAX_LEN {
        return Err("the NQN is longer than 223 bytes");
    }
    let b = nqn.as_bytes();
    let date_ok = b.len() > 12
        && b.starts_with(b"nqn.")
        && b.get(4..8)
            .is_some_and(|y| y.iter().all(u8::is_ascii_digit))
        && b.get(8) == Some(&b'-')
        && b.get(9..11)
            .is_some_and(|m| m.iter().all(u8::is_ascii_digit))
        && b.get(11) == Some(&b'.');
    if !date_ok {
        return Err("an NQN looks like nqn.yyyy-mm.reverse.domain:name");
    }
    if nqn.chars().any(char::is_control) {
        return Err("the NQN holds a control character");
    }
    Ok(())
}

/// The Connect command's SQE fields (NVMe-oF 1.1 Figure 19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectCommand {
    /// Record Format (must be 0).
    pub recfmt: u16,
    /// Queue ID: 0 for the admin queue.
    pub qid: u16,
    /// Submission queue size, 0's based.
    pub sqsize: u16,
    /// Connect attributes: bits 1:0 priority, bit 2 disable SQ flow control.
    pub cattr: u8,
    /// Keep Alive Timeout in milliseconds (admin queue only; 0 disables).
    pub kato: u32,
}

impl ConnectCommand {
    /// CATTR bit 2: the host asks to disable SQ flow control (NVMe-oF 1.1 §3.3).
    pub const CATTR_DISABLE_SQ_FLOW_CONTROL: u8 = 0x04;

    /// True when CATTR has [`Self::CATTR_DISABLE_SQ_FLOW_CONTROL`] set.
    pub fn sq_flow_control_disabled(&self) -> bool {
        self.cattr & Self::CATTR_DISABLE_SQ_FLOW_CONTROL != 0
    }

    /// Reads the Connect fields from an SQE.
    pub fn from_sqe(s: &Sqe) -> Self {
        let b = s.encode();
        Self {
            recfmt: u16_at(&b, 40),
            qid: u16_at(&b, 42),
            sqsize: u16_at(&b, 44),
            cattr: u8_at(&b, 46),
            kato: u32_at(&b, 48),
        }
    }

    /// Builds the Connect SQE; the 1024-byte data goes in the capsule.
    pub fn to_sqe(&self) -> Sqe {
        let mut s = Sqe::new(admin_opcode::FABRICS);
        s.nsid = u32::from(fctype::CONNECT);
        s.sgl1 = SglDescriptor::in_capsule(CONNECT_DATA_SIZE as u32);
        s.cdw10 = u32::from(self.recfmt) | (u32::from(self.qid) << 16);
        s.cdw11 = u32::from(self.sqsize) | (u32::from(self.cattr) << 16);
        s.cdw12 = self.kato;
        s
    }
}

/// The 1024-byte Connect data (NVMe-oF 1.1 Figure 20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectData {
    /// Host Identifier.
    pub hostid: [u8; 16],
    /// Controller ID: 0xFFFF for dynamic on the admin queue, the admin queue's CNTLID on I/O queues.
    pub cntlid: u16,
    /// NQN of the subsystem to connect to.
    pub subnqn: String,
    /// NQN of the host.
    pub hostnqn: String,
}

impl ConnectData {
    /// Decodes; `None` if fewer than 1024 bytes are given.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < CONNECT_DATA_SIZE {
            return None;
        }
        Some(Self {
            hostid: array_at(b, 0),
            cntlid: u16_at(b, 16),
            subnqn: str_at(b, 256, 256),
            hostnqn: str_at(b, 512, 256),
        })
    }

    /// Encodes 1024 bytes; NQNs are NUL padded.
    pub fn encode(&self) -> [u8; CONNECT_DATA_SIZE] {
        let mut b = [0u8; CONNECT_DATA_SIZE];
        put(&mut b, 0, &self.hostid);
        put_u16(&mut b, 16, self.cntlid);
        put_str(&mut b, 256, 255, &self.subnqn, 0);
        put_str(&mut b, 512, 255, &self.hostnqn, 0);
        b
    }

    /// Byte offset of SUBNQN, reported in IPO when it is invalid.
    pub const SUBNQN_OFFSET: u16 = 256;
    /// Byte offset of HOSTNQN, reported in IPO when it is invalid.
    pub const HOSTNQN_OFFSET: u16 = 512;
    /// Byte offset of CNTLID, reported in IPO when it is invalid.
    pub const CNTLID_OFFSET: u16 = 16;
    /// Byte offset of HOSTID, reported in IPO when it is invalid.
    pub const HOSTID_OFFSET: u16 = 0;
}

/// Completion DW0 of a Connect that failed with Connect Invalid Parameters:
/// IPO (offset of the bad field) and IATTR (0 = in the SQE, 1 = in the data)
/// (NVMe-oF 1.1 Figure 21).
pub fn connect_invalid_param_dw0(ipo: u16, in_data: bool) -> u32 {
    u32::from(ipo) | (u32::from(in_data) << 16)
}

/// Property Get and Set fields (NVMe-oF 1.1 Figures 24-28).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyCommand {
    /// True for an 8-byte property (ATTRIB.SIZE = 1).
    pub eight_bytes: bool,
    /// Property offset.
    pub offset: u32,
    /// Value to set (Property Set only).
    pub value: u64,
}

impl PropertyCommand {
    /// Reads the property fields from an SQE.
    pub fn from_sqe(s: &Sqe) -> Self {
        Self {
            eight_bytes: s.cdw10 & 7 == 1,
            offset: s.cdw11,
            value: u64::from(s.cdw12) | (u64::from(s.cdw13) << 32),
        }
    }

    /// Builds a Property Get SQE.
    pub fn get_sqe(offset: u32, eight_bytes: bool) -> Sqe {
        let mut s = Sqe::new(admin_opcode::FABRICS);
        s.nsid = u32::from(fctype::PROPERTY_GET);
        s.cdw10 = u32::from(eight_bytes);
        s.cdw11 = offset;
        s
    }

    /// Builds a Property Set SQE.
    pub fn set_sqe(offset: u32, eight_bytes: bool, value: u64) -> Sqe {
        let mut s = Sqe::new(admin_opcode::FABRICS);
        s.nsid = u32::from(fctype::PROPERTY_SET);
        s.cdw10 = u32::from(eight_bytes);
        s.cdw11 = offset;
        s.cdw12 = value as u32;
        s.cdw13 = (value >> 32) as u32;
        s
    }
}

/// Builds a Disconnect SQE (record format 0) for an I/O queue.
pub fn disconnect_sqe() -> Sqe {
    let mut s = Sqe::new(admin_opcode::FABRICS);
    s.nsid = u32::from(fctype::DISCONNECT);
    s
}

/// Authentication Send / Receive fields (NVMe-oF 1.1a Figures 32 and 35; TP 8006).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthCommand {
    /// Security Protocol Specific 0.
    pub spsp0: u8,
    /// Security Protocol Specific 1.
    pub spsp1: u8,
    /// Security Protocol (E9h for NVMe in-band authentication).
    pub secp: u8,
    /// Transfer Length (Send) or Allocation Length (Receive).
    pub length: u32,
}

impl AuthCommand {
    /// Reads the fields from an SQE.
    pub fn from_sqe(s: &Sqe) -> Self {
        let b = s.encode();
        Self {
            spsp0: u8_at(&b, 41),
            spsp1: u8_at(&b, 42),
            secp: u8_at(&b, 43),
            length: u32_at(&b, 44),
        }
    }

    /// The fields of a DH-HMAC-CHAP Authentication Send (TL = `len`) or
    /// Receive (AL = `len`): SECP E9h, SPSP0 01h, SPSP1 01h, as the Linux host
    /// sends them (`nvme_auth_submit`).
    pub fn dhchap(len: u32) -> Self {
        Self {
            spsp0: crate::auth::SPSP0_DHCHAP,
            spsp1: crate::auth::SPSP1_DHCHAP,
            secp: crate::auth::SECP_NVME_AUTH,
            length: len,
        }
    }

    /// nvmet's checks of an Authentication Send/Receive before it looks at the
    /// data: SECP E9h, SPSP0 01h, SPSP1 01h and a non-zero TL/AL. `Err` holds
    /// the byte offset of the bad field in the SQE, for the error log; complete
    /// the command with Invalid Field in Command and DNR.
    pub fn check_dhchap(&self) -> Result<(), u16> {
        if self.secp != crate::auth::SECP_NVME_AUTH {
            Err(AUTH_SECP_OFFSET)
        } else if self.spsp0 != crate::auth::SPSP0_DHCHAP {
            Err(AUTH_SPSP0_OFFSET)
        } else if self.spsp1 != crate::auth::SPSP1_DHCHAP {
            Err(AUTH_SPSP1_OFFSET)
        } else if self.length == 0 {
            Err(AUTH_LENGTH_OFFSET)
        } else {
            Ok(())
        }
    }

    /// Builds the SQE for Authentication Send (`send`) or Receive.
    pub fn to_sqe(&self, send: bool) -> Sqe {
        let mut s = Sqe::new(admin_opcode::FABRICS);
        s.nsid = u32::from(if send {
            fctype::AUTH_SEND
        } else {
            fctype::AUTH_RECV
        });
        s.cdw10 = (u32::from(self.spsp0) << 8)
            | (u32::from(self.spsp1) << 16)
            | (u32::from(self.secp) << 24);
        s.cdw11 = self.length;
        s.sgl1 = if send {
            SglDescriptor::in_capsule(self.length)
        } else {
            SglDescriptor::transport(self.length)
        };
        s
    }
}

/// Byte offset of SPSP0 in an Authentication Send/Receive SQE.
pub const AUTH_SPSP0_OFFSET: u16 = 41;
/// Byte offset of SPSP1 in an Authentication Send/Receive SQE.
pub const AUTH_SPSP1_OFFSET: u16 = 42;
/// Byte offset of SECP in an Authentication Send/Receive SQE.
pub const AUTH_SECP_OFFSET: u16 = 43;
/// Byte offset of TL (Send) / AL (Receive) in an Authentication Send/Receive SQE.
pub const AUTH_LENGTH_OFFSET: u16 = 44;

/// AUTHREQ bits of a successful Connect's completion DW0 (NVMe-oF 1.1a Figure 21,
/// TP 8006; Linux `NVME_CONNECT_AUTHREQ_*`): bits 15:0 are CNTLID, bits 31:16
/// AUTHREQ.
pub mod authreq {
    /// ATR, DW0 bit 17: authentication required (DH-HMAC-CHAP on this queue
    /// before other commands; nvmet answers them with Authentication Required).
    pub const ATR: u32 = 1 << 17;
    /// ASCR, DW0 bit 18: authentication and secure channel required (secure
    /// channel concatenation, TP 8018).
    pub const ASCR: u32 = 1 << 18;
}

/// Completion DW0 of a successful Connect: CNTLID and, when the queue must be
/// authenticated, ATR (nvmet's `nvmet_connect_result`).
pub fn connect_response_dw0(cntlid: u16, auth_required: bool) -> u32 {
    u32::from(cntlid) | if auth_required { authreq::ATR } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_round_trip() {
        let c = ConnectCommand {
            recfmt: 0,
            qid: 3,
            sqsize: 127,
            cattr: 4,
            kato: 0,
        };
        let s = c.to_sqe();
        assert_eq!(s.fctype(), fctype::CONNECT);
        assert_eq!(ConnectCommand::from_sqe(&s), c);
        assert!(c.sq_flow_control_disabled());
        let d = ConnectData {
            hostid: [7; 16],
            cntlid: CNTLID_DYNAMIC,
            subnqn: "nqn.2024-01.io.test:sub1".into(),
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
        };
        let b = d.encode();
        assert_eq!(b.len(), CONNECT_DATA_SIZE);
        assert_eq!(ConnectData::decode(&b), Some(d));
        assert_eq!(ConnectData::decode(&b[..1000]), None);
    }

    #[test]
    fn property_and_auth() {
        let s = PropertyCommand::set_sqe(crate::registers::CC, false, 0x460001);
        let p = PropertyCommand::from_sqe(&s);
        assert_eq!((p.eight_bytes, p.offset, p.value), (false, 0x14, 0x460001));
        assert_eq!(s.data_direction(), crate::sqe::DataDirection::None);
        let a = AuthCommand {
            spsp0: 1,
            spsp1: 2,
            secp: 0xe9,
            length: 100,
        };
        assert_eq!(AuthCommand::from_sqe(&a.to_sqe(true)), a);
        assert_eq!(
            a.to_sqe(true).data_direction(),
            crate::sqe::DataDirection::HostToController
        );
        assert_eq!(
            a.to_sqe(false).data_direction(),
            crate::sqe::DataDirection::ControllerToHost
        );
    }

    #[test]
    fn dhchap_auth_fields_where_linux_puts_them() {
        let s = AuthCommand::dhchap(72).to_sqe(true);
        let b = s.encode();
        assert_eq!((b[0], b[4]), (0x7F, fctype::AUTH_SEND));
        assert_eq!(
            &b[40..48],
            &[0x00, 0x01, 0x01, 0xE9, 72, 0, 0, 0],
            "rsvd @40, SPSP0 @41, SPSP1 @42, SECP @43, TL @44"
        );
        assert_eq!(AuthCommand::from_sqe(&s).check_dhchap(), Ok(()));
        let r = AuthCommand::dhchap(4096).to_sqe(false);
        assert_eq!(r.encode()[4], fctype::AUTH_RECV);
        assert_eq!(&r.encode()[44..48], &4096u32.to_le_bytes());
        let mut bad = AuthCommand::dhchap(8);
        bad.spsp1 = 2;
        assert_eq!(bad.check_dhchap(), Err(AUTH_SPSP1_OFFSET));
        assert_eq!(
            AuthCommand::dhchap(0).check_dhchap(),
            Err(AUTH_LENGTH_OFFSET)
        );
        bad.secp = 0xEA;
        assert_eq!(bad.check_dhchap(), Err(AUTH_SECP_OFFSET));
        // Linux 6.12 nvmet answered a Connect needing authentication with 0x00020001.
        assert_eq!(connect_response_dw0(1, true), 0x0002_0001);
        assert_eq!(connect_response_dw0(1, false), 1);
    }

    #[test]
    fn nqn_rules() {
        assert!(validate_nqn(DISCOVERY_NQN).is_ok());
        assert!(validate_nqn("nqn.2024-01.io.test:sub1").is_ok());
        assert!(validate_nqn("").is_err());
        assert!(validate_nqn("foo").is_err());
        assert!(validate_nqn(&format!("nqn.2024-01.{}", "a".repeat(300))).is_err());
    }
}
