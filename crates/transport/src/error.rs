//! Transport errors.

use nvmf_proto::tcp::{Fes, SubmitError};

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A socket error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// The connection ended on a protocol error (ours or the peer's termination request).
    #[error("connection terminated: {reason}")]
    Terminated {
        /// What happened.
        reason: String,
        /// The fatal error status, if any.
        fes: Option<Fes>,
    },
    /// A command could not be submitted.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// TLS setup or handshake failed (the message says why).
    #[error("{0}")]
    Tls(String),
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl TransportError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
