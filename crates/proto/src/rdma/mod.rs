//! NVMe/RDMA transport binding (NVMe-oF 1.1 §7.3 "RDMA Transport"; NVMe Base
//! 2.0 §4.3.2 for Keyed SGL Data Block descriptors), without I/O.
//!
//! * [`cm`]: the RDMA CM private data of connect request, accept and reject,
//!   and the check nvmet-rdma makes of a request;
//! * [`sgl`]: SGL1 of a command over RDMA: keyed host buffers or in-capsule data;
//! * [`controller`]: the controller end of a queue pair, driven by verbs
//!   completions and emitting the TCP queue's events and work requests for the
//!   shell to post.
//!
//! The verbs binding that posts the work lives in another crate; nothing here
//! touches a device.

pub mod cm;
pub mod controller;
pub mod sgl;

pub use cm::{
    validate_request, AcceptedQueue, CmAccept, CmError, CmLimits, CmReject, CmRequest, RejectStatus,
};
pub use controller::{RdmaControllerQueue, RdmaQueueConfig, RdmaWork, ShellError};
pub use sgl::{RdmaSgl, SglError};
