//! # nvmf-proto: the NVMe over Fabrics protocol core, without I/O
//!
//! Wire structures of NVMe (Base Specification 2.0), the Fabrics command set
//! (NVMe over Fabrics 1.1) and the NVMe/TCP transport (Transport Specification
//! 1.0), plus the queue-pair state machines of both ends of an NVMe/TCP connection.
//! Nothing here touches a socket, a clock or a thread: callers feed bytes in and
//! take bytes and events out (the sans-I/O pattern of quinn-proto and rustls), so
//! every rule is unit-tested and fuzzed without a network.
//!
//! Decoding never panics: fields are read through checked slices and every
//! protocol violation becomes a typed error carrying the NVMe/TCP termination
//! status to send.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cqe;
pub mod fabrics;
pub mod features;
pub mod identify;
mod le;
pub mod log;
pub mod rdma;
pub mod registers;
pub mod resv;
pub mod sqe;
pub mod status;
pub mod tcp;
pub mod tls;

pub use cqe::Cqe;
pub use sqe::Sqe;
pub use status::Status;
