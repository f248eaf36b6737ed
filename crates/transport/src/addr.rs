//! Transport addresses: `traddr` and `trsvcid` as the discovery log and nvme-cli name them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Default NVMe/TCP port for I/O controllers (IANA, NVMe/TCP 1.0 §3.2).
pub const DEFAULT_PORT: u16 = 4420;
/// Default port of the discovery service (NVMe/TCP 1.0 §3.2: 8009).
pub const DISCOVERY_PORT: u16 = 8009;

/// Which transport binding an address is served by (the discovery log's
/// TRTYPE, NVMe-oF 1.1 Figure 38).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TransportKind {
    /// NVMe/TCP (TRTYPE 3).
    #[default]
    Tcp,
    /// NVMe/RDMA over RDMA CM (TRTYPE 1, NVMe-oF 1.1 §7.3); the port is an
    /// RDMA CM port in the TCP port space (`RDMA_PS_TCP`).
    Rdma,
}

impl TransportKind {
    /// The name nvme-cli gives it (`-t tcp`, `-t rdma`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Rdma => "rdma",
        }
    }
}

/// A transport address: which transport, IP address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransportAddr {
    /// The socket address.
    pub socket: SocketAddr,
    /// The transport binding.
    pub kind: TransportKind,
}

impl TransportAddr {
    /// An NVMe/TCP address.
    pub fn tcp(socket: SocketAddr) -> Self {
        Self {
            socket,
            kind: TransportKind::Tcp,
        }
    }

    /// An NVMe/RDMA address.
    pub fn rdma(socket: SocketAddr) -> Self {
        Self {
            socket,
            kind: TransportKind::Rdma,
        }
    }

    /// The same transport at another socket address.
    pub fn with_socket(self, socket: SocketAddr) -> Self {
        Self { socket, ..self }
    }

    /// From a transport address (IPv4 or IPv6 text) and a service ID (port text).
    pub fn from_parts(traddr: &str, trsvcid: &str) -> Result<Self, String> {
        let ip: IpAddr = traddr
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| format!("'{traddr}' is not an IPv4 or IPv6 address"))?;
        let port: u16 = trsvcid
            .parse()
            .map_err(|_| format!("'{trsvcid}' is not a TCP port number"))?;
        Ok(Self::tcp(SocketAddr::new(ip, port)))
    }

    /// The address as the discovery log's TRADDR.
    pub fn traddr(&self) -> String {
        self.socket.ip().to_string()
    }

    /// The port as the discovery log's TRSVCID.
    pub fn trsvcid(&self) -> String {
        self.socket.port().to_string()
    }

    /// True for IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.socket.is_ipv6()
    }
}

impl FromStr for TransportAddr {
    type Err = String;

    /// Parses `ADDR:PORT`, `[V6ADDR]:PORT`, or an address alone (port 4420),
    /// each optionally prefixed by the transport: `tcp://` (the default) or
    /// `rdma://`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = if let Some(r) = s.strip_prefix("rdma://") {
            (TransportKind::Rdma, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (TransportKind::Tcp, r)
        } else if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "'{s}': unknown transport '{scheme}' (use tcp:// or rdma://, or no prefix for TCP)"
            ));
        } else {
            (TransportKind::Tcp, s)
        };
        if let Ok(socket) = rest.parse::<SocketAddr>() {
            return Ok(Self { socket, kind });
        }
        if let Ok(ip) = rest
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
        {
            return Ok(Self {
                socket: SocketAddr::new(ip, DEFAULT_PORT),
                kind,
            });
        }
        Err(format!(
            "'{s}' is not [tcp://|rdma://]ADDR:PORT (for example 127.0.0.1:4420, [::1]:4420 or rdma://10.0.0.1:4420)"
        ))
    }
}

impl fmt::Display for TransportAddr {
    /// TCP addresses print bare (as they always have); others with their
    /// scheme, so that the text parses back to the same address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TransportKind::Tcp => self.socket.fmt(f),
            TransportKind::Rdma => write!(f, "rdma://{}", self.socket),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(
            "127.0.0.1:4420".parse::<TransportAddr>().unwrap().trsvcid(),
            "4420"
        );
        assert_eq!(
            "[::1]:8009".parse::<TransportAddr>().unwrap().traddr(),
            "::1"
        );
        assert_eq!(
            "10.0.0.1".parse::<TransportAddr>().unwrap().socket.port(),
            4420
        );
        assert!("nope".parse::<TransportAddr>().is_err());
        assert!(TransportAddr::from_parts("::1", "99999").is_err());
        assert!(TransportAddr::from_parts("[::1]", "4420")
            .unwrap()
            .is_ipv6());
    }

    #[test]
    fn transport_prefix() {
        let r: TransportAddr = "rdma://10.99.0.1:4421".parse().unwrap();
        assert_eq!(r.kind, TransportKind::Rdma);
        assert_eq!(r.socket.port(), 4421);
        assert_eq!(r.to_string(), "rdma://10.99.0.1:4421");
        assert_eq!(r.to_string().parse::<TransportAddr>().unwrap(), r);
        let t: TransportAddr = "tcp://[::1]".parse().unwrap();
        assert_eq!((t.kind, t.socket.port()), (TransportKind::Tcp, 4420));
        assert_eq!(t.to_string(), "[::1]:4420");
        let e = "fc://1.2.3.4:1".parse::<TransportAddr>().unwrap_err();
        assert!(e.contains("unknown transport 'fc'"), "{e}");
        assert_ne!(r, TransportAddr::tcp(r.socket));
    }
}
