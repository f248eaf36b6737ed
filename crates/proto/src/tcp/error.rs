//! Fatal transport errors: what went wrong and the termination request that reports it.

use bytes::Bytes;

use super::pdu::Fes;

/// A fatal NVMe/TCP transport error (NVMe/TCP 1.0 §3.6.2.3, §3.7).
///
/// The connection must end: if `fes` is set, the side that found the error sends a
/// termination request carrying `fes`, `fei` and `header` (the offending PDU header)
/// and then closes; if it is `None`, it closes without one (a malformed TermReq,
/// §3.6.2.3, or a TermReq received from the peer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct FatalError {
    /// Fatal Error Status to report, if a TermReq is to be sent.
    pub fes: Option<Fes>,
    /// Fatal Error Information: for FES 01h and 06h the byte offset of the bad field.
    pub fei: u32,
    /// The header of the PDU in error (at most 128 bytes), sent as the TermReq's data.
    pub header: Bytes,
    /// What went wrong, for logs and error messages.
    pub reason: String,
}

impl FatalError {
    /// An error reported with a TermReq.
    pub fn new(fes: Fes, fei: u32, header: &[u8], reason: impl Into<String>) -> Self {
        let n = header.len().min(128);
        Self {
            fes: Some(fes),
            fei,
            header: Bytes::copy_from_slice(header.get(..n).unwrap_or(&[])),
            reason: reason.into(),
        }
    }

    /// An error after which the connection closes without a TermReq.
    pub fn silent(reason: impl Into<String>) -> Self {
        Self {
            fes: None,
            fei: 0,
            header: Bytes::new(),
            reason: reason.into(),
        }
    }
}
