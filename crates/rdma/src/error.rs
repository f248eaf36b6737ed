//! [`RdmaError`]: every failure of this crate, typed.

/// An error of the RDMA layer.
#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    /// rdma-core is not installed (or lacks a function this crate needs): the libraries
    /// are opened at run time, so a machine without them runs everything but RDMA.
    #[error(
        "RDMA is unavailable: cannot load {lib}: {reason}; install rdma-core \
         (Debian/Ubuntu: apt-get install libibverbs1 librdmacm1 ibverbs-providers; \
         Fedora: dnf install rdma-core libibverbs librdmacm)"
    )]
    Unavailable {
        /// The library (soname) that could not be loaded or lacks a symbol.
        lib: &'static str,
        /// dlopen/dlsym's message.
        reason: String,
    },
    /// A verbs or rdma_cm call failed; `source` is its errno.
    #[error("{call} failed: {source}{hint}", hint = hint(.call, .source))]
    Call {
        /// The rdma-core function, e.g. "rdma_bind_addr".
        call: &'static str,
        /// The OS error it set.
        source: std::io::Error,
    },
    /// A connection-manager event other than the one awaited arrived (rdma_cm(7)).
    #[error("rdma_cm: expected {expected}, got {got} (status {status})")]
    UnexpectedEvent {
        /// What the state machine waited for.
        expected: &'static str,
        /// rdma_event_str(3) of what came.
        got: &'static str,
        /// The event's status field (a negative errno, or a transport reject reason).
        status: i32,
    },
    /// The peer rejected the connection (RDMA_CM_EVENT_REJECTED); for NVMe/RDMA the
    /// private data is the RDMA_CM_REJECT structure (NVMe-oF 1.1 §7.3.5.2).
    #[error(
        "connection rejected (status {status}{}, {} bytes of private data)",
        reject_reason(*.status),
        private_data.len()
    )]
    Rejected {
        /// The event status (the IB/RoCE reject reason; 28 = consumer reject).
        status: i32,
        /// The peer's reject private data.
        private_data: Vec<u8>,
    },
    /// The connection went away (DISCONNECTED, DEVICE_REMOVAL, ...).
    #[error("RDMA connection closed ({event})")]
    Disconnected {
        /// rdma_event_str(3) of the event that ended it.
        event: &'static str,
    },
    /// A work request completed with an error status (ibv_poll_cq(3)).
    #[error("work request {wr_id:#x} completed with error: {text} (status {status}, vendor error {vendor_err:#x})")]
    WorkCompletion {
        /// The wr_id of the failed request.
        wr_id: u64,
        /// enum ibv_wc_status.
        status: u32,
        /// ibv_wc_status_str(3) of `status`.
        text: &'static str,
        /// Provider-specific detail.
        vendor_err: u32,
    },
    /// A caller-supplied value is out of range (too much private data, an SGE outside its
    /// memory region, more SGEs than the QP allows, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// The IB CM reject reasons seen in practice (IBTA CM REJ reason codes, as rdma_cm(7)
/// reports them in the REJECTED event's status on IB/RoCE).
fn reject_reason(status: i32) -> &'static str {
    match status {
        8 => ": invalid service id, nobody listens on that port",
        28 => ": by the peer (consumer reject)",
        _ => "",
    }
}

fn hint(call: &str, e: &std::io::Error) -> &'static str {
    match (call, e.raw_os_error()) {
        ("rdma_bind_addr", Some(libc::EADDRNOTAVAIL)) | ("rdma_bind_addr", Some(libc::ENODEV)) => {
            " (no RDMA device on that address: add one, e.g. `rdma link add rxe0 type rxe netdev eth0`)"
        }
        ("rdma_create_event_channel", Some(libc::ENOENT))
        | ("rdma_create_event_channel", Some(libc::ENODEV)) => {
            " (/dev/infiniband/rdma_cm is missing: modprobe rdma_ucm)"
        }
        _ => "",
    }
}

impl RdmaError {
    /// A `Call` error from the current `errno`.
    pub(crate) fn last(call: &'static str) -> RdmaError {
        RdmaError::Call {
            call,
            source: std::io::Error::last_os_error(),
        }
    }

    /// A `Call` error from a returned negative errno or (-1 and errno) convention.
    pub(crate) fn ret(call: &'static str, rc: i32) -> RdmaError {
        if rc < -1 {
            RdmaError::Call {
                call,
                source: std::io::Error::from_raw_os_error(-rc),
            }
        } else if rc > 0 {
            // the inline verbs return a positive errno
            RdmaError::Call {
                call,
                source: std::io::Error::from_raw_os_error(rc),
            }
        } else {
            RdmaError::last(call)
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = RdmaError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_how_to_fix() {
        let e = RdmaError::Unavailable {
            lib: "librdmacm.so.1",
            reason: "librdmacm.so.1: cannot open shared object file".into(),
        };
        let m = e.to_string();
        assert!(
            m.contains("librdmacm.so.1") && m.contains("install rdma-core"),
            "{m}"
        );
        let e = RdmaError::Call {
            call: "rdma_bind_addr",
            source: std::io::Error::from_raw_os_error(libc::EADDRNOTAVAIL),
        };
        let m = e.to_string();
        assert!(
            m.contains("rdma_bind_addr failed") && m.contains("rdma link add"),
            "{m}"
        );
        let e = RdmaError::Call {
            call: "rdma_create_event_channel",
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        };
        assert!(e.to_string().contains("modprobe rdma_ucm"), "{e}");
        let e = RdmaError::Rejected {
            status: 8,
            private_data: vec![0; 148],
        };
        assert!(e.to_string().contains("nobody listens"), "{e}");
        let e = RdmaError::ret("ibv_post_send", libc::ENOMEM);
        assert!(e.to_string().starts_with("ibv_post_send failed"), "{e}");
        let e = RdmaError::ret("ibv_post_send", -libc::EINVAL);
        let RdmaError::Call { source, .. } = e else {
            panic!()
        };
        assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
    }
}
