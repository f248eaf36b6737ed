//! RDMA CM private data of NVMe/RDMA (NVMe-oF 1.1 §7.3 "RDMA Transport",
//! Figures "RDMA_CM_REQUEST Private Data Format", "RDMA_CM_ACCEPT Private Data
//! Format" and "RDMA_CM_REJECT Private Data Format"; the same text is now the
//! NVMe RDMA Transport Specification 1.0). Section and figure numbers were not
//! re-read in the PDF.
//!
//! A host opens each queue with an RDMA CM connect request whose private data
//! names the queue (QID) and the sizes of the host's send and receive queues;
//! the controller accepts with its receive queue size or rejects with a status.
//! Every value here was checked against Linux `include/linux/nvme-rdma.h`
//! (`struct nvme_rdma_cm_req/_rep/_rej`, `enum nvme_rdma_cm_status`); see
//! docs/spec-facts.md §19.

use crate::le::*;

/// Length of the connect request and accept private data (Linux
/// `sizeof(struct nvme_rdma_cm_req)` = `sizeof(struct nvme_rdma_cm_rep)` = 32).
pub const PRIVATE_DATA_LEN: usize = 32;

/// Length of the reject private data Linux sends (`sizeof(struct nvme_rdma_cm_rej)`).
pub const REJECT_DATA_LEN: usize = 4;

/// RECFMT 0: the only record format defined (Linux `NVME_RDMA_CM_FMT_1_0`).
pub const RECFMT_1_0: u16 = 0;

/// Admin queue depth a Linux host asks for and nvmet allows at most:
/// `NVME_AQ_DEPTH` = 32 (HRQSIZE 32, HSQSIZE 31; Linux `include/linux/nvme.h`).
pub const ADMIN_QUEUE_DEPTH: u16 = 32;

/// Default I/O queue size of a Linux host (`NVME_RDMA_DEFAULT_QUEUE_SIZE`).
pub const DEFAULT_IO_QUEUE_SIZE: u16 = 128;

/// Largest I/O queue size a Linux host asks for (`NVME_RDMA_MAX_QUEUE_SIZE`, 256
/// since Linux 6.9; 128 before).
pub const LINUX_MAX_IO_QUEUE_SIZE: u16 = 256;

/// A connect request's private data could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CmError {
    /// Fewer bytes than the structure needs.
    #[error("RDMA CM private data of {got} bytes, {need} needed")]
    TooShort {
        /// Bytes received.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
}

/// Reject status codes (RDMA_CM_REJECT STS; Linux `enum nvme_rdma_cm_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectStatus {
    /// 01h: Invalid Private Data Length.
    InvalidLength,
    /// 02h: Invalid RECFMT.
    InvalidRecfmt,
    /// 03h: Invalid QID.
    InvalidQid,
    /// 04h: Invalid HSQSIZE.
    InvalidHsqsize,
    /// 05h: Invalid HRQSIZE.
    InvalidHrqsize,
    /// 06h: No or Insufficient Resources.
    NoResources,
    /// 07h: Invalid IRD.
    InvalidIrd,
    /// 08h: Invalid ORD.
    InvalidOrd,
    /// 09h: Invalid Controller ID (NVMe-oF 1.1; Linux `NVME_RDMA_CM_INVALID_CNTLID`).
    InvalidCntlid,
    /// Any other value, kept as received.
    Other(u16),
}

impl RejectStatus {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::InvalidLength => 0x01,
            Self::InvalidRecfmt => 0x02,
            Self::InvalidQid => 0x03,
            Self::InvalidHsqsize => 0x04,
            Self::InvalidHrqsize => 0x05,
            Self::NoResources => 0x06,
            Self::InvalidIrd => 0x07,
            Self::InvalidOrd => 0x08,
            Self::InvalidCntlid => 0x09,
            Self::Other(v) => v,
        }
    }

    /// From the wire value.
    pub fn from_u16(v: u16) -> Self {
        match v {
            0x01 => Self::InvalidLength,
            0x02 => Self::InvalidRecfmt,
            0x03 => Self::InvalidQid,
            0x04 => Self::InvalidHsqsize,
            0x05 => Self::InvalidHrqsize,
            0x06 => Self::NoResources,
            0x07 => Self::InvalidIrd,
            0x08 => Self::InvalidOrd,
            0x09 => Self::InvalidCntlid,
            v => Self::Other(v),
        }
    }

    /// The text Linux prints for it (`nvme_rdma_cm_msg`).
    pub fn message(self) -> &'static str {
        match self {
            Self::InvalidLength => "invalid length",
            Self::InvalidRecfmt => "invalid record format",
            Self::InvalidQid => "invalid queue ID",
            Self::InvalidHsqsize => "invalid host SQ size",
            Self::InvalidHrqsize => "invalid host RQ size",
            Self::NoResources => "resource not found",
            Self::InvalidIrd => "invalid IRD",
            Self::InvalidOrd => "Invalid ORD",
            Self::InvalidCntlid => "invalid controller ID",
            Self::Other(_) => "unrecognized reason",
        }
    }
}

/// RDMA_CM_REQUEST private data: 32 bytes, RECFMT @0, QID @2, HRQSIZE @4,
/// HSQSIZE @6, CNTLID @8, reserved to 32 (Linux `struct nvme_rdma_cm_req`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CmRequest {
    /// Record format (0).
    pub recfmt: u16,
    /// Queue ID: 0 for the admin queue.
    pub qid: u16,
    /// Host Receive Queue Size: responses the host can take at once (1-based).
    pub hrqsize: u16,
    /// Host Send Queue Size: the SQ size, 0's based (commands outstanding - 1).
    pub hsqsize: u16,
    /// Controller ID of the association (I/O queues; 0 on the admin queue).
    pub cntlid: u16,
}

impl CmRequest {
    /// Encodes the 32 bytes a host sends.
    pub fn encode(&self) -> [u8; PRIVATE_DATA_LEN] {
        let mut b = [0u8; PRIVATE_DATA_LEN];
        put_u16(&mut b, 0, self.recfmt);
        put_u16(&mut b, 2, self.qid);
        put_u16(&mut b, 4, self.hrqsize);
        put_u16(&mut b, 6, self.hsqsize);
        put_u16(&mut b, 8, self.cntlid);
        b
    }

    /// Decodes received private data (at least 32 bytes: InfiniBand CM pads it
    /// to 56 with zeros, iWARP delivers it as sent).
    pub fn decode(b: &[u8]) -> Result<Self, CmError> {
        let b = b.get(..PRIVATE_DATA_LEN).ok_or(CmError::TooShort {
            got: b.len(),
            need: PRIVATE_DATA_LEN,
        })?;
        Ok(Self {
            recfmt: u16_at(b, 0),
            qid: u16_at(b, 2),
            hrqsize: u16_at(b, 4),
            hsqsize: u16_at(b, 6),
            cntlid: u16_at(b, 8),
        })
    }
}

/// RDMA_CM_ACCEPT private data: 32 bytes, RECFMT @0, CRQSIZE @2 (Linux
/// `struct nvme_rdma_cm_rep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CmAccept {
    /// Record format (0).
    pub recfmt: u16,
    /// Controller Receive Queue Size: the command capsules the controller can
    /// receive at once (nvmet: HSQSIZE + 1).
    pub crqsize: u16,
}

impl CmAccept {
    /// Encodes the 32 bytes.
    pub fn encode(&self) -> [u8; PRIVATE_DATA_LEN] {
        let mut b = [0u8; PRIVATE_DATA_LEN];
        put_u16(&mut b, 0, self.recfmt);
        put_u16(&mut b, 2, self.crqsize);
        b
    }

    /// Decodes (at least 4 bytes; the rest is reserved).
    pub fn decode(b: &[u8]) -> Result<Self, CmError> {
        let b = b.get(..4).ok_or(CmError::TooShort {
            got: b.len(),
            need: 4,
        })?;
        Ok(Self {
            recfmt: u16_at(b, 0),
            crqsize: u16_at(b, 2),
        })
    }
}

/// RDMA_CM_REJECT private data: RECFMT @0, STS @2 (Linux `struct nvme_rdma_cm_rej`,
/// sent as 4 bytes with `IB_CM_REJ_CONSUMER_DEFINED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmReject {
    /// Record format (0).
    pub recfmt: u16,
    /// Why.
    pub status: RejectStatus,
}

impl CmReject {
    /// A reject in record format 0.
    pub fn new(status: RejectStatus) -> Self {
        Self {
            recfmt: RECFMT_1_0,
            status,
        }
    }

    /// Encodes the 4 bytes.
    pub fn encode(&self) -> [u8; REJECT_DATA_LEN] {
        let mut b = [0u8; REJECT_DATA_LEN];
        put_u16(&mut b, 0, self.recfmt);
        put_u16(&mut b, 2, self.status.to_u16());
        b
    }

    /// Decodes (at least 4 bytes).
    pub fn decode(b: &[u8]) -> Result<Self, CmError> {
        let b = b.get(..REJECT_DATA_LEN).ok_or(CmError::TooShort {
            got: b.len(),
            need: REJECT_DATA_LEN,
        })?;
        Ok(Self {
            recfmt: u16_at(b, 0),
            status: RejectStatus::from_u16(u16_at(b, 2)),
        })
    }
}

/// What a controller allows in a connect request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmLimits {
    /// Largest admin queue (HSQSIZE + 1); nvmet: `NVME_AQ_DEPTH` = 32.
    pub max_admin_queue_size: u16,
    /// Largest I/O queue (HSQSIZE + 1). nvmet sets no limit here ("XXX: Should
    /// we enforce some kind of max for IO queues?"); SPDK rejects above its
    /// max queue depth. The verbs resources are sized from it, so we check.
    pub max_io_queue_size: u16,
    /// Largest QID accepted (the number of I/O queues a controller offers).
    pub max_qid: u16,
}

impl Default for CmLimits {
    fn default() -> Self {
        Self {
            max_admin_queue_size: ADMIN_QUEUE_DEPTH,
            max_io_queue_size: 1024,
            max_qid: 128,
        }
    }
}

/// A connect request the controller takes, with the queue sizes that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptedQueue {
    /// The request as received.
    pub request: CmRequest,
    /// Receive slots to post for command capsules: HSQSIZE + 1 (nvmet
    /// `recv_queue_size`); also the most commands outstanding.
    pub recv_queue_size: u16,
    /// Responses the host can take at once: HRQSIZE (nvmet `send_queue_size`).
    pub send_queue_size: u16,
}

impl AcceptedQueue {
    /// The accept private data: CRQSIZE = the receive slots posted (nvmet
    /// `nvmet_rdma_cm_accept`: `crqsize = recv_queue_size`).
    pub fn accept(&self) -> CmAccept {
        CmAccept {
            recfmt: RECFMT_1_0,
            crqsize: self.recv_queue_size,
        }
    }
}

/// Checks a connect request's private data the way Linux nvmet-rdma does
/// (`nvmet_rdma_parse_cm_connect_req`), plus the limits nvmet leaves to later:
///
/// * no or short private data: Invalid Private Data Length (nvmet rejects only
///   a missing one; 32 bytes is the structure, so less cannot be honoured);
/// * RECFMT other than 0: Invalid RECFMT;
/// * QID above `max_qid`: Invalid QID (nvmet finds it at Connect instead);
/// * the receive queue is HSQSIZE + 1; above `max_admin_queue_size` on the admin
///   queue (nvmet: `NVME_AQ_DEPTH`) or `max_io_queue_size` on an I/O queue:
///   Invalid HSQSIZE (HSQSIZE FFFFh, a 65536-entry queue, is always too big);
/// * HRQSIZE below HSQSIZE + 1 (the host could not take a response for every
///   command it may have outstanding; the Linux host always sends HRQSIZE =
///   HSQSIZE + 1, "at minimum you make hrqsize sqsize+1"): Invalid HRQSIZE.
///
/// The error is the status to put in the reject ([`CmReject::new`]).
pub fn validate_request(data: &[u8], limits: &CmLimits) -> Result<AcceptedQueue, RejectStatus> {
    let req = CmRequest::decode(data).map_err(|_| RejectStatus::InvalidLength)?;
    if req.recfmt != RECFMT_1_0 {
        return Err(RejectStatus::InvalidRecfmt);
    }
    if req.qid > limits.max_qid {
        return Err(RejectStatus::InvalidQid);
    }
    let recv = u32::from(req.hsqsize) + 1;
    let max = if req.qid == 0 {
        limits.max_admin_queue_size
    } else {
        limits.max_io_queue_size
    };
    if recv > u32::from(max) {
        return Err(RejectStatus::InvalidHsqsize);
    }
    if u32::from(req.hrqsize) < recv {
        return Err(RejectStatus::InvalidHrqsize);
    }
    Ok(AcceptedQueue {
        request: req,
        recv_queue_size: recv as u16,
        send_queue_size: req.hrqsize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_matches_linux() {
        // Linux host, I/O queue 3 of controller 1, queue_size 128:
        // recfmt 0, qid 3, hrqsize 128, hsqsize 127, cntlid 1.
        let r = CmRequest {
            recfmt: 0,
            qid: 3,
            hrqsize: 128,
            hsqsize: 127,
            cntlid: 1,
        };
        let b = r.encode();
        assert_eq!(b.len(), 32);
        assert_eq!(&b[..10], &[0, 0, 3, 0, 128, 0, 127, 0, 1, 0]);
        assert!(b[10..].iter().all(|&x| x == 0));
        assert_eq!(CmRequest::decode(&b), Ok(r));
        // InfiniBand CM pads private data to 56 bytes.
        let mut padded = b.to_vec();
        padded.resize(56, 0);
        assert_eq!(CmRequest::decode(&padded), Ok(r));
        assert_eq!(
            CmRequest::decode(&b[..31]),
            Err(CmError::TooShort { got: 31, need: 32 })
        );
        assert!(CmRequest::decode(&[]).is_err());
    }

    #[test]
    fn accept_and_reject_layout() {
        let a = CmAccept {
            recfmt: 0,
            crqsize: 32,
        };
        let b = a.encode();
        assert_eq!(&b[..4], &[0, 0, 32, 0]);
        assert!(b[4..].iter().all(|&x| x == 0));
        assert_eq!(CmAccept::decode(&b), Ok(a));
        assert!(CmAccept::decode(&b[..3]).is_err());
        let r = CmReject::new(RejectStatus::InvalidHsqsize);
        assert_eq!(r.encode(), [0, 0, 4, 0]);
        assert_eq!(CmReject::decode(&r.encode()), Ok(r));
        assert!(CmReject::decode(&[0, 0, 4]).is_err());
    }

    #[test]
    fn reject_codes_match_linux() {
        let all = [
            (RejectStatus::InvalidLength, 1),
            (RejectStatus::InvalidRecfmt, 2),
            (RejectStatus::InvalidQid, 3),
            (RejectStatus::InvalidHsqsize, 4),
            (RejectStatus::InvalidHrqsize, 5),
            (RejectStatus::NoResources, 6),
            (RejectStatus::InvalidIrd, 7),
            (RejectStatus::InvalidOrd, 8),
            (RejectStatus::InvalidCntlid, 9),
        ];
        for (s, v) in all {
            assert_eq!(s.to_u16(), v);
            assert_eq!(RejectStatus::from_u16(v), s);
        }
        assert_eq!(RejectStatus::from_u16(0x77), RejectStatus::Other(0x77));
        assert_eq!(RejectStatus::Other(0x77).to_u16(), 0x77);
        assert_eq!(
            RejectStatus::InvalidCntlid.message(),
            "invalid controller ID"
        );
    }

    fn req(qid: u16, hrqsize: u16, hsqsize: u16) -> [u8; 32] {
        CmRequest {
            recfmt: 0,
            qid,
            hrqsize,
            hsqsize,
            cntlid: 0,
        }
        .encode()
    }

    #[test]
    fn validation_follows_nvmet() {
        let l = CmLimits {
            max_admin_queue_size: 32,
            max_io_queue_size: 256,
            max_qid: 4,
        };
        // What the Linux host sends: admin 32/31, I/O queue_size/queue_size-1.
        let a = validate_request(&req(0, 32, 31), &l).unwrap();
        assert_eq!((a.recv_queue_size, a.send_queue_size), (32, 32));
        assert_eq!(a.accept().encode()[..4], [0, 0, 32, 0]);
        let io = validate_request(&req(4, 128, 127), &l).unwrap();
        assert_eq!((io.recv_queue_size, io.send_queue_size), (128, 128));
        assert_eq!(io.accept().crqsize, 128);
        // A bigger receive queue than HSQSIZE + 1 is fine.
        assert!(validate_request(&req(1, 200, 127), &l).is_ok());

        assert_eq!(validate_request(&[], &l), Err(RejectStatus::InvalidLength));
        assert_eq!(
            validate_request(&req(0, 32, 31)[..16], &l),
            Err(RejectStatus::InvalidLength)
        );
        let mut bad = req(0, 32, 31);
        bad[0] = 1;
        assert_eq!(validate_request(&bad, &l), Err(RejectStatus::InvalidRecfmt));
        assert_eq!(
            validate_request(&req(5, 32, 31), &l),
            Err(RejectStatus::InvalidQid)
        );
        // Admin: at most NVME_AQ_DEPTH entries; I/O: at most the configured size.
        assert_eq!(
            validate_request(&req(0, 33, 32), &l),
            Err(RejectStatus::InvalidHsqsize)
        );
        assert!(validate_request(&req(1, 256, 255), &l).is_ok());
        assert_eq!(
            validate_request(&req(1, 257, 256), &l),
            Err(RejectStatus::InvalidHsqsize)
        );
        assert_eq!(
            validate_request(&req(1, u16::MAX, u16::MAX), &l),
            Err(RejectStatus::InvalidHsqsize)
        );
        assert_eq!(
            validate_request(&req(1, 127, 127), &l),
            Err(RejectStatus::InvalidHrqsize)
        );
        assert_eq!(
            validate_request(&req(1, 0, 0), &l),
            Err(RejectStatus::InvalidHrqsize)
        );
    }
}
