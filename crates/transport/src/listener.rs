//! Accepting host connections.

use nvmf_proto::tcp::{ControllerQueue, ControllerQueueConfig};
use tokio::net::TcpListener;

use crate::addr::TransportAddr;
use crate::connection::Connection;
use crate::error::TransportError;

/// A listening TCP socket that hands out controller-side connections.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    cfg: ControllerQueueConfig,
    addr: TransportAddr,
    tls: Option<std::sync::Arc<crate::tls::TlsServerConfig>>,
    tls_optional: bool,
}

impl Listener {
    /// Binds with SO_REUSEADDR (a restarted target must get its port back at once);
    /// IPv6 sockets are IPv6-only so that `[::]` and `0.0.0.0` can both be bound.
    pub async fn bind(
        addr: &TransportAddr,
        cfg: ControllerQueueConfig,
    ) -> Result<Self, TransportError> {
        let domain = if addr.is_ipv6() {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let err = |e| TransportError::io(format!("listening on {addr}"), e);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
            .map_err(err)?;
        s.set_reuse_address(true).map_err(err)?;
        if addr.is_ipv6() {
            s.set_only_v6(true).map_err(err)?;
        }
        s.set_nonblocking(true).map_err(err)?;
        s.bind(&addr.socket.into()).map_err(err)?;
        s.listen(1024).map_err(err)?;
        let inner = TcpListener::from_std(s.into()).map_err(err)?;
        let local = inner.local_addr().map_err(err)?;
        Ok(Self {
            inner,
            cfg,
            addr: TransportAddr::tcp(local),
            tls: None,
            tls_optional: false,
        })
    }

    /// Sets the TCP congestion control of the connections accepted from now on
    /// (see [`crate::sockopt::set_tcp_congestion`]).
    pub fn set_tcp_congestion(&self, name: &str) -> Result<(), TransportError> {
        crate::sockopt::set_tcp_congestion(&self.inner, name)
    }

    /// Requires TLS on this port (nvmet `addr_treq=required`, `addr_tsas=tls1.3`):
    /// the caller runs [`Connection::start_tls_server`] with [`tls`](Self::tls)
    /// before serving an accepted connection, so a plain ICReq ends it.
    pub fn require_tls(&mut self, cfg: std::sync::Arc<crate::tls::TlsServerConfig>) {
        self.tls = Some(cfg);
    }

    /// Offers TLS on this port without requiring it (nvmet `addr_treq=not
    /// required`): a connection that starts with a TLS handshake record gets
    /// TLS, one that starts with an ICReq stays plain.
    pub fn allow_tls(&mut self, cfg: std::sync::Arc<crate::tls::TlsServerConfig>) {
        self.tls = Some(cfg);
        self.tls_optional = true;
    }

    /// The TLS settings of a port that requires or offers TLS.
    pub fn tls(&self) -> Option<&std::sync::Arc<crate::tls::TlsServerConfig>> {
        self.tls.as_ref()
    }

    /// True when TLS is offered but not required.
    pub fn tls_optional(&self) -> bool {
        self.tls_optional
    }

    /// The bound address (with the real port if 0 was asked for).
    pub fn local_addr(&self) -> TransportAddr {
        self.addr
    }

    /// Waits for a host and returns its connection, waiting for ICReq.
    pub async fn accept(&self) -> Result<Connection<ControllerQueue>, TransportError> {
        let (stream, _) = self
            .inner
            .accept()
            .await
            .map_err(|e| TransportError::io("accepting a connection", e))?;
        Ok(Connection::new(stream, ControllerQueue::new(self.cfg)))
    }
}
