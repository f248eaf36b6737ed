//! The Discovery Log Page this target serves (NVMe Base 2.0 §5.16.1.23).

use nvmf_proto::log::{adrfam, subtype, trtype, DiscoveryLog, DiscoveryLogEntry};
use nvmf_transport::TransportAddr;

use crate::config::Treq;
use crate::registry::Registry;

/// TREQ bits 1:0 = 10b (secure channel not required); bit 2: SQ flow control
/// disable supported (TP 8005), so hosts may ask for the C2HData SUCCESS path.
pub const TREQ: u8 = 0x02 | 0x04;

/// The address a port is advertised at: a wildcard listener (`0.0.0.0` or
/// `[::]`) is shown with the address the host reached us on (`local`, the
/// discovery connection's own address), as nvmet does
/// (`nvmet_tcp_disc_port_addr`); a host cannot connect to 0.0.0.0.
pub fn advertised(port: &TransportAddr, local: Option<std::net::IpAddr>) -> TransportAddr {
    match local {
        Some(ip) if port.socket.ip().is_unspecified() && !ip.is_unspecified() => TransportAddr {
            socket: std::net::SocketAddr::new(ip, port.socket.port()),
        },
        _ => *port,
    }
}
/// TREQ of a port that requires TLS: secure channel required (bits 1:0 = 01b,
/// `NVMF_TREQ_REQUIRED`), SQ flow control disable supported (bit 2).
pub const TREQ_TLS: u8 = 0x01 | 0x04;

/// TSAS.SECTYPE (byte 0 of the TCP transport specific address subtype) of a
/// TLS port: TLS 1.3 (`NVMF_TCP_SECTYPE_TLS13` = 2).
pub const SECTYPE_TLS13: u8 = 2;

/// Builds the log for `hostnqn`: one entry per subsystem the host may reach, on
/// every port; `local` is the address of the host's discovery connection.
pub fn build_log(
    reg: &Registry,
    ports: &[TransportAddr],
    local: Option<std::net::IpAddr>,
    port_treq: &[Option<Treq>],
    hostnqn: &str,
    asqsz: u16,
) -> DiscoveryLog {
    let mut entries = Vec::new();
    for s in reg.subsystems() {
        if !s.host_allowed(hostnqn) {
            continue;
        }
        for (i, p) in ports.iter().enumerate() {
            let p = &advertised(p, local);
            let treq = port_treq.get(i).copied().flatten();
            entries.push(DiscoveryLogEntry {
                trtype: trtype::TCP,
                adrfam: if p.is_ipv6() {
                    adrfam::IPV6
                } else {
                    adrfam::IPV4
                },
                subtype: subtype::NVME,
                treq: match treq {
                    Some(Treq::Required) => TREQ_TLS,
                    // TREQ "not required" with SECTYPE TLS 1.3: TLS is offered.
                    Some(Treq::NotRequired) | None => TREQ,
                },
                portid: i as u16 + 1,
                cntlid: 0xffff,
                asqsz,
                eflags: 0,
                trsvcid: p.trsvcid(),
                subnqn: s.nqn.clone(),
                traddr: p.traddr(),
                tsas: {
                    let mut t = [0; 256];
                    if treq.is_some() {
                        t[0] = SECTYPE_TLS13;
                    }
                    t
                },
            });
        }
    }
    DiscoveryLog {
        genctr: reg.genctr(),
        numrec: entries.len() as u64,
        recfmt: 0,
        entries,
    }
}
