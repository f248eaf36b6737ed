//! # nvmf-transport: async NVMe-oF connections
//!
//! The thin I/O shell around [`nvmf_proto`]'s sans-I/O queues: it moves bytes
//! between a socket and a queue state machine and nothing more. [`Transport`] is
//! the seam for more transports (RDMA later); [`TcpTransport`] is NVMe/TCP over tokio.
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

use std::future::Future;

use nvmf_proto::tcp::{ControllerQueueConfig, HostQueueConfig};

/// A way to reach controllers and accept hosts. Each transport (TCP now, RDMA
/// later) supplies connections that speak the same queue-level API.
pub trait Transport: Send + Sync + 'static {
    /// Opens one queue's connection to a controller and completes connection
    /// initialisation (ICReq/ICResp for TCP).
    fn connect(
        &self,
        addr: &TransportAddr,
        cfg: HostQueueConfig,
    ) -> impl Future<Output = Result<HostConnection, TransportError>> + Send;

    /// Starts listening for hosts.
    fn listen(
        &self,
        addr: &TransportAddr,
        cfg: ControllerQueueConfig,
    ) -> impl Future<Output = Result<Listener, TransportError>> + Send;
}

/// NVMe/TCP (NVMe/TCP Transport Specification 1.0) over tokio sockets.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpTransport;

impl Transport for TcpTransport {
    async fn connect(
        &self,
        addr: &TransportAddr,
        cfg: HostQueueConfig,
    ) -> Result<HostConnection, TransportError> {
        HostConnection::connect(addr, cfg).await
    }

    async fn listen(
        &self,
        addr: &TransportAddr,
        cfg: ControllerQueueConfig,
    ) -> Result<Listener, TransportError> {
        Listener::bind(addr, cfg).await
    }
}
