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

    /// True for errors of the transport (which a reconnect may cure).
    pub fn is_transport(&self) -> bool {
        matches!(self, Self::Transport(_) | Self::Unreachable { .. })
    }
}
