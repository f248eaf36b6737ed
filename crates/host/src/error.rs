//! Errors of the host library.

use nvmf_proto::Status;
use nvmf_transport::TransportError;

/// Result with the host library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to a controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection could not be made (nothing listening, no route, ...).
    #[error("could not reach {addr}: {reason} — is a target listening there? (nvmf target --listen {addr} ...)")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why (the socket error).
        reason: String,
        /// The transport error.
        transport: TransportError,
    },
    /// The connection failed after it was made. (The transport error is kept as a
    /// field, not a `source`, so that `{:#}` does not print it twice.)
    #[error("transport error: {0}")]
    Transport(TransportError),
    /// The controller completed a command with an error status.
    #[error("{what} failed: {status}")]
    Nvme {
        /// What the command was for.
        what: String,
        /// The status the controller returned.
        status: Status,
    },
    /// The controller rejected the Fabrics Connect.
    #[error("the controller at {addr} refused to connect to {subnqn}: {status}{hint}")]
    ConnectRejected {
        /// The address.
        addr: String,
        /// The subsystem NQN asked for.
        subnqn: String,
        /// The status returned.
        status: Status,
        /// A hint on how to fix it.
        hint: String,
    },
    /// DH-HMAC-CHAP authentication of a queue failed or was required and not possible.
    #[error("authentication with {subnqn} at {addr} failed on queue {qid}: {reason}{hint}")]
    Authentication {
        /// The address.
        addr: String,
        /// The subsystem NQN.
        subnqn: String,
        /// The queue.
        qid: u16,
        /// What failed.
        reason: String,
        /// How to fix it.
        hint: String,
    },
    /// The controller did not become ready (CSTS.RDY) in time, or reported fatal status.
    #[error("the controller did not become ready: {0}")]
    NotReady(String),
    /// A command or step did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The association was lost and could not be re-established within ctrl_loss_tmo.
    #[error("controller lost: {0}")]
    ControllerLost(String),
    /// The controller was disconnected by the caller.
    #[error("the controller is disconnected")]
    Disconnected,
    /// The command was not carried out on this path: the association was
    /// lost (or was being re-established) and the command came through a
    /// [`crate::Controller::failfast`] handle, so it was not kept for the next
    /// association. Another path may run it.
    #[error("path unavailable: {0}")]
    PathUnavailable(String),
    /// A bad argument (no such namespace, buffer not a multiple of the block size, ...).
    #[error("{0}")]
    Invalid(String),
}

impl From<TransportError> for Error {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}

impl Error {
    /// The NVMe status the controller returned, if this error carries one.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Nvme { status, .. } | Self::ConnectRejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the command may succeed on another path to the same
    /// namespace, so that a multipath layer retries it there instead of
    /// failing it: any failure of the path itself (transport, lost or
    /// disconnected controller, timeout, [`Error::PathUnavailable`]) and a
    /// completion with a Path Related Status (SCT 3h, NVMe Base 2.0 §4.6.1.2.4:
    /// ANA Persistent Loss / Inaccessible / Transition 01h-03h, Internal Path
    /// Error 00h, Host Pathing Error 70h, Command Aborted By Host 71h ...)
    /// unless it has Do Not Retry set. This is Linux's nvme_decide_disposition
    /// for REQ_NVME_MPATH requests (DNR completes; `nvme_is_path_error`,
    /// status & 0x700 == 0x300, fails over). Media and data errors (SCT 0,
    /// 2) and bad arguments are not: another path reaches the same media.
    pub fn is_path_error(&self) -> bool {
        match self {
            Self::Nvme { status, .. } => status.sct == 3 && !status.dnr,
            Self::Invalid(_) | Self::ConnectRejected { .. } | Self::Authentication { .. } => false,
            Self::Transport(_)
            | Self::Unreachable { .. }
            | Self::NotReady(_)
            | Self::Timeout(_)
            | Self::ControllerLost(_)
            | Self::Disconnected
            | Self::PathUnavailable(_) => true,
        }
    }

    /// The ANA state an ANA status (SCT 3h, SC 01h-03h: Persistent Loss,
    /// Inaccessible, Transition) reports for the path, as the ANA state code
    /// of the ANA log page (NVMe Base 2.0 §8.1.3: 04h, 03h, 0Fh).
    pub fn ana_state(&self) -> Option<u8> {
        use nvmf_proto::log::ana_state;
        match self.status() {
            Some(s) if s.sct == 3 && s.sc == 0x01 => Some(ana_state::PERSISTENT_LOSS),
            Some(s) if s.sct == 3 && s.sc == 0x02 => Some(ana_state::INACCESSIBLE),
            Some(s) if s.sct == 3 && s.sc == 0x03 => Some(ana_state::CHANGE),
            _ => None,
        }
    }

    /// True for errors of the transport (which a reconnect may cure).
    pub fn is_transport(&self) -> bool {
        matches!(self, Self::Transport(_) | Self::Unreachable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nvme(status: Status) -> Error {
        Error::Nvme {
            what: "Read".into(),
            status,
        }
    }

    /// Path Related Status without DNR and path failures fail over; media,
    /// generic and DNR statuses and bad arguments go to the caller.
    #[test]
    fn path_errors() {
        use nvmf_proto::log::ana_state;
        for s in [
            Status::ANA_INACCESSIBLE,
            Status::ANA_PERSISTENT_LOSS,
            Status::ANA_TRANSITION,
            Status {
                sct: 3,
                sc: 0x70,
                ..Status::ANA_INACCESSIBLE
            },
        ] {
            assert!(nvme(s).is_path_error(), "{s}");
            assert!(!nvme(s.dnr()).is_path_error(), "{s} with DNR");
        }
        assert_eq!(
            nvme(Status::ANA_INACCESSIBLE).ana_state(),
            Some(ana_state::INACCESSIBLE)
        );
        assert_eq!(
            nvme(Status::ANA_TRANSITION).ana_state(),
            Some(ana_state::CHANGE)
        );
        assert_eq!(
            nvme(Status::ANA_PERSISTENT_LOSS).ana_state(),
            Some(ana_state::PERSISTENT_LOSS)
        );
        for s in [
            Status::LBA_OUT_OF_RANGE,
            Status::INVALID_FIELD,
            Status {
                sct: 2,
                sc: 0x81,
                ..Status::INVALID_FIELD
            },
        ] {
            assert!(!nvme(s).is_path_error(), "{s}");
            assert_eq!(nvme(s).ana_state(), None);
        }
        assert!(Error::PathUnavailable("x".into()).is_path_error());
        assert!(Error::ControllerLost("x".into()).is_path_error());
        assert!(Error::Disconnected.is_path_error());
        assert!(Error::Timeout("x".into()).is_path_error());
        assert!(!Error::Invalid("x".into()).is_path_error());
    }
}
