//! How an authentication transaction failed, for either side, and the random
//! number source the state machines draw challenges and DH keys from.

use rand::{CryptoRng, RngCore};

use super::ids::FailureReason;

/// Why an authentication transaction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// This side refused the peer and reports it (the controller with
    /// AUTH_Failure1, the host with AUTH_Failure2), or the peer broke the protocol.
    #[error("authentication refused: {0}")]
    Refused(FailureReason),
    /// The peer reported a failure (the host received AUTH_Failure1, or the
    /// controller AUTH_Failure2) with this explanation.
    #[error("the peer reported an authentication failure: {0}")]
    PeerReported(FailureReason),
    /// An Authentication Send or Receive command completed with this NVMe status
    /// field (host side; see [`HostAuth::command_failed`](super::HostAuth::command_failed)).
    #[error("an authentication command failed with NVMe status {0:#06x}")]
    Command(u16),
}

impl AuthFailure {
    /// The failure explanation, if the failure has one.
    pub fn reason(&self) -> Option<FailureReason> {
        match self {
            Self::Refused(r) | Self::PeerReported(r) => Some(*r),
            Self::Command(_) => None,
        }
    }
}

/// A cryptographically secure random source the state machines can own: challenges,
/// sequence numbers and DH private keys come from it. Implemented for every
/// `RngCore + CryptoRng + Send` type; the default is the OS generator.
pub trait AuthRng: RngCore + CryptoRng + Send {}
impl<T: RngCore + CryptoRng + Send> AuthRng for T {}

/// A non-zero sequence number (0 means "no bidirectional authentication" in
/// Reply, and Linux never uses it).
pub(crate) fn nonzero_seqnum(rng: &mut dyn AuthRng) -> u32 {
    loop {
        let s = rng.next_u32();
        if s != 0 {
            return s;
        }
    }
}
