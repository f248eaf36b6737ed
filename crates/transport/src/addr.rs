//! Transport addresses: `traddr` and `trsvcid` as the discovery log and nvme-cli name them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Default NVMe/TCP port for I/O controllers (IANA, NVMe/TCP 1.0 §3.2).
pub const DEFAULT_PORT: u16 = 4420;
/// Default port of the discovery service (NVMe/TCP 1.0 §3.2: 8009).
pub const DISCOVERY_PORT: u16 = 8009;

/// An NVMe/TCP transport address: IP address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransportAddr {
    /// The socket address.
    pub socket: SocketAddr,
}

impl TransportAddr {
    /// From a transport address (IPv4 or IPv6 text) and a service ID (port text).
    pub fn from_parts(traddr: &str, trsvcid: &str) -> Result<Self, String> {
        let ip: IpAddr = traddr
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| format!("'{traddr}' is not an IPv4 or IPv6 address"))?;
        let port: u16 = trsvcid
            .parse()
            .map_err(|_| format!("'{trsvcid}' is not a TCP port number"))?;
        Ok(Self {
            socket: SocketAddr::new(ip, port),
        })
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

    /// Parses `ADDR:PORT`, `[V6ADDR]:PORT`, or an address alone (port 4420).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Self { socket: sa });
        }
        if let Ok(ip) = s.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
            return Ok(Self {
                socket: SocketAddr::new(ip, DEFAULT_PORT),
            });
        }
        Err(format!(
            "'{s}' is not ADDR:PORT (for example 127.0.0.1:4420 or [::1]:4420)"
        ))
    }
}

impl fmt::Display for TransportAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket.fmt(f)
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
}
