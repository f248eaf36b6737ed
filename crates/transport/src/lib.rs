//! # nvmf-transport: async NVMe-oF connections
//!
//! The thin I/O shell around [`nvmf_proto`]'s sans-I/O queues: it moves bytes
//! between the wire and a queue state machine and nothing more. The controller
//! sees every transport through [`ControllerQueuePair`] (capsules in, data
//! pulled and pushed by the transport, responses out): NVMe/TCP is a
//! [`Connection`] over a tokio socket, NVMe/RDMA an [`rdma::RdmaQueuePair`]
//! over an RC queue pair (rdma-core, loaded at run time).
//!
//! A connection is driven by one task: [`Connection::ready`] waits until the
//! socket can move bytes in the direction needed, [`Connection::drive`] reads every
//! byte available into the decoder's buffer and writes every queued PDU with one
//! gather write, so many PDUs share a system call in both directions.

pub mod addr;
pub mod connection;
pub mod error;
pub mod host;
mod ktls;
pub mod listener;
pub mod queue_pair;
pub mod rdma;
pub mod sockopt;
pub mod tls;
mod tls_session;

pub use addr::TransportAddr;
pub use connection::{Connection, QueueIo};
pub use error::TransportError;
pub use host::HostConnection;
pub use ktls::KtlsState;
pub use listener::Listener;
pub use queue_pair::ControllerQueuePair;
pub use tls::{TlsClientConfig, TlsServerConfig};
