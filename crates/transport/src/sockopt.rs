//! Socket options chosen by configuration.

use std::os::fd::AsFd;

use crate::error::TransportError;

/// Sets the TCP congestion control algorithm of a socket (`TCP_CONGESTION`,
/// tcp(7)). Set on a listening socket, it is inherited by the connections it
/// accepts.
///
/// Why it is configurable: the system default applies to every connection, and a
/// default chosen for wide-area traffic may not suit storage traffic. BBR paces
/// its sends with timers; on this project's loopback benchmarks that pacing left
/// both ends idle part of the time, and `cubic` moved 128 KiB reads 46 %
/// faster (docs/performance.md).
pub fn set_tcp_congestion(sock: &impl AsFd, name: &str) -> Result<(), TransportError> {
    let s = socket2::SockRef::from(sock);
    s.set_tcp_congestion(name.as_bytes()).map_err(|e| {
        // ENOENT: no such algorithm; EPERM: not in the allowed list.
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "the kernel has no congestion control '{name}' (available: {}; a module such as tcp_{name} may need loading)",
                read_sys("tcp_available_congestion_control")
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "congestion control '{name}' is not allowed for this process (allowed: {}; run as root or add it to net.ipv4.tcp_allowed_congestion_control)",
                read_sys("tcp_allowed_congestion_control")
            ),
            _ => format!("cannot set TCP congestion control '{name}'"),
        };
        TransportError::io(hint, e)
    })
}

fn read_sys(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
