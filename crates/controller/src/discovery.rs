//! The Discovery Log Page this target serves (NVMe Base 2.0 §5.16.1.23).

use nvmf_proto::fabrics::DISCOVERY_NQN;
use nvmf_proto::log::{adrfam, subtype, trtype, DiscoveryLog, DiscoveryLogEntry, RdmaTsas};
use nvmf_transport::addr::TransportKind;
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
        Some(ip) if port.socket.ip().is_unspecified() && !ip.is_unspecified() => {
            port.with_socket(std::net::SocketAddr::new(ip, port.socket.port()))
        }
        _ => *port,
    }
}
/// TSAS of an NVMe/RDMA port as Linux nvmet fills it
/// (`nvmet_port_init_tsas_rdma`): reliable connected, provider type not
/// specified, RDMA CM, PKEY 0 (NVMe-oF 1.1 Figure 40).
fn rdma_tsas() -> [u8; 256] {
    RdmaTsas {
        qptype: RdmaTsas::QPTYPE_CONNECTED,
        prtype: RdmaTsas::PRTYPE_NOT_SPECIFIED,
        cms: RdmaTsas::CMS_RDMA_CM,
        pkey: 0,
    }
    .encode()
}

/// TREQ of a port that requires TLS: secure channel required (bits 1:0 = 01b,
/// `NVMF_TREQ_REQUIRED`), SQ flow control disable supported (bit 2).
pub const TREQ_TLS: u8 = 0x01 | 0x04;

/// TSAS.SECTYPE (byte 0 of the TCP transport specific address subtype) of a
/// TLS port: TLS 1.3 (`NVMF_TCP_SECTYPE_TLS13` = 2).
pub const SECTYPE_TLS13: u8 = 2;

/// Builds the log for `hostnqn`, in nvmet's order: first the current discovery
/// subsystem (SUBTYPE 3) at `local`, the address the host's discovery
/// connection reached; then one entry per subsystem the host may reach, on
/// every port (SUBTYPE 2); then one per referral to another discovery service
/// (SUBTYPE 1). NVMe Base 2.0 §5.16.1.23 and Figure 262; the current-discovery
/// entry as Linux nvmet writes it (`NVME_NQN_CURR`, captured in
/// `crates/proto/tests/vectors.rs` `discovery_log_page`).
pub fn build_log(
    reg: &Registry,
    ports: &[TransportAddr],
    local: Option<TransportAddr>,
    port_treq: &[Option<Treq>],
    hostnqn: &str,
    asqsz: u16,
) -> DiscoveryLog {
    let local_ip = local.map(|a| a.socket.ip());
    let family = |p: &TransportAddr| {
        if p.is_ipv6() {
            adrfam::IPV6
        } else {
            adrfam::IPV4
        }
    };
    let treq_of = |p: &TransportAddr, treq: Option<Treq>| match (p.kind, treq) {
        // NVMe/RDMA has no secure channel, and its queue pairs keep SQ flow
        // control: TREQ "not specified", as nvmet's RDMA ports.
        (TransportKind::Rdma, _) => 0,
        (TransportKind::Tcp, Some(Treq::Required)) => TREQ_TLS,
        // TREQ "not required" with SECTYPE TLS 1.3: TLS is offered.
        (TransportKind::Tcp, Some(Treq::NotRequired) | None) => TREQ,
    };
    let trtype_of = |p: &TransportAddr| match p.kind {
        TransportKind::Tcp => trtype::TCP,
        TransportKind::Rdma => trtype::RDMA,
    };
    let tsas_of = |p: &TransportAddr, treq: Option<Treq>| match p.kind {
        TransportKind::Rdma => rdma_tsas(),
        TransportKind::Tcp => {
            let mut t = [0; 256];
            if treq.is_some() {
                t[0] = SECTYPE_TLS13;
            }
            t
        }
    };
    let mut entries = Vec::new();
    if let Some(here) = local {
        // The port this connection came in on: a listen port (the same TCP port,
        // at the same or a wildcard address), or a discovery-only port, which
        // gets the PORTID after the listen ports.
        let i = ports.iter().position(|p| {
            p.kind == here.kind
                && p.socket.port() == here.socket.port()
                && (p.socket.ip() == here.socket.ip() || p.socket.ip().is_unspecified())
        });
        let treq = i.and_then(|i| port_treq.get(i).copied().flatten());
        entries.push(DiscoveryLogEntry {
            trtype: trtype_of(&here),
            adrfam: family(&here),
            subtype: subtype::CURRENT_DISCOVERY,
            treq: treq_of(&here, treq),
            portid: i.unwrap_or(ports.len()) as u16 + 1,
            cntlid: 0xffff,
            asqsz,
            eflags: 0,
            trsvcid: here.trsvcid(),
            subnqn: DISCOVERY_NQN.into(),
            traddr: here.traddr(),
            tsas: tsas_of(&here, treq),
        });
    }
    for s in reg.subsystems() {
        if !s.host_allowed(hostnqn) {
            continue;
        }
        for (i, p) in ports.iter().enumerate() {
            let p = &advertised(p, local_ip);
            let treq = port_treq.get(i).copied().flatten();
            entries.push(DiscoveryLogEntry {
                trtype: trtype_of(p),
                adrfam: family(p),
                subtype: subtype::NVME,
                treq: treq_of(p, treq),
                portid: i as u16 + 1,
                cntlid: 0xffff,
                asqsz,
                eflags: 0,
                trsvcid: p.trsvcid(),
                subnqn: s.nqn.clone(),
                traddr: p.traddr(),
                tsas: tsas_of(p, treq),
            });
        }
    }
    for (i, r) in reg.referrals().iter().enumerate() {
        // What the other service requires is not known here: TREQ "not
        // specified" (nvmet's default `addr_treq` of a referral).
        entries.push(DiscoveryLogEntry {
            trtype: trtype_of(r),
            adrfam: family(r),
            subtype: subtype::REFERRAL,
            treq: 0,
            portid: i as u16 + 1,
            cntlid: 0xffff,
            asqsz,
            eflags: 0,
            trsvcid: r.trsvcid(),
            subnqn: DISCOVERY_NQN.into(),
            traddr: r.traddr(),
            // An RDMA referral carries the RDMA TSAS, as nvmet fills it for
            // every RDMA port, referrals included.
            tsas: match r.kind {
                TransportKind::Rdma => rdma_tsas(),
                TransportKind::Tcp => [0; 256],
            },
        });
    }
    DiscoveryLog {
        genctr: reg.genctr(),
        numrec: entries.len() as u64,
        recfmt: 0,
        entries,
    }
}
