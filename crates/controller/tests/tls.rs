//! NVMe/TCP over TLS 1.3 with PSK, loopback: our host library's transport to our
//! target on a TLS-required port (both key derivations), a wrong key, a plain
//! ICReq and garbage instead of a ClientHello.

use bytes::Bytes;
use nvmf_controller::config::{BackendSpec, Limits, NamespaceConfig, SubsystemConfig, TlsConfig};
use nvmf_controller::TargetConfig;
use nvmf_proto::fabrics::{ConnectCommand, ConnectData, CNTLID_DYNAMIC, DISCOVERY_NQN};
use nvmf_proto::sqe::io_opcode;
use nvmf_proto::tcp::{Digests, HostData, HostQueueConfig};
use nvmf_proto::tls::{ConfiguredPsk, Derivation, PskHash};
use nvmf_proto::Sqe;
use nvmf_transport::{HostConnection, TlsClientConfig, TransportAddr, TransportError};

mod common;
use common::{enable, read_discovery_log, start};

const NQN: &str = "nqn.2024-01.io.nvmf-rs:tls";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";

fn key(b: u8) -> ConfiguredPsk {
    ConfiguredPsk::new(&[b; 32], Some(PskHash::Sha256)).unwrap()
}

fn config(keys: Vec<ConfiguredPsk>, derivation: Derivation) -> TargetConfig {
    TargetConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        discovery_listen: vec![],
        subsystems: vec![SubsystemConfig {
            nqn: NQN.into(),
            serial: "sn1".into(),
            model: "test".into(),
            cntlid_min: 1,
            cntlid_max: 0xFFEF,
            hosts: vec![],
            namespaces: vec![NamespaceConfig {
                nsid: 1,
                backend: BackendSpec::Memory { size: 16 << 20 },
                block_size: 512,
                direct: Default::default(),
                uuid: None,
                ana_group: 1,
            }],
        }],
        header_digest: true,
        data_digest: true,
        limits: Limits::default(),
        busy_poll_us: 0,
        busy_poll_batch: 0,
        tcp_congestion: None,
        cpu_latency_us: None,
        ana_states: vec![],
        referrals: vec![],
        metrics: None,
        tls: Some(TlsConfig {
            treq: Default::default(),
            ports: vec![],
            keys,
            derivation,
        }),
    }
}

async fn connect(
    addr: &TransportAddr,
    tls: Option<&TlsClientConfig>,
    subnqn: &str,
    qid: u16,
    cntlid: u16,
) -> Result<(HostConnection, u16), TransportError> {
    let depth = if qid == 0 { 32 } else { 128 };
    let mut c = HostConnection::connect_with(
        addr,
        HostQueueConfig {
            digests: Digests::default(),
            queue_depth: depth,
            ..Default::default()
        },
        tls,
    )
    .await?;
    let cmd = ConnectCommand {
        recfmt: 0,
        qid,
        sqsize: depth - 1,
        cattr: 0,
        kato: if qid == 0 { 30_000 } else { 0 },
    };
    let data = ConnectData {
        hostid: [1; 16],
        cntlid,
        subnqn: subnqn.into(),
        hostnqn: HOSTNQN.into(),
    };
    let r = common::send_connect(&mut c, &cmd, &data).await?;
    assert!(r.cqe.status.is_success(), "{:?}", r.cqe.status);
    Ok((c, r.cqe.dw0 as u16))
}

fn key384(b: u8) -> ConfiguredPsk {
    ConfiguredPsk::new(&[b; 48], Some(PskHash::Sha384)).unwrap()
}

async fn io_over_tls(derivation: Derivation, hash: PskHash) {
    // The target holds a key of each hash; the host uses the one of `hash`.
    // (For identity version 0 the first key of the identity's hash is taken:
    // version 0 cannot tell two keys apart.)
    let (k, other) = match hash {
        PskHash::Sha256 => (key(7), key384(8)),
        PskHash::Sha384 => (key384(8), key(7)),
    };
    let (_t, addr) = start(&config(vec![other, k.clone()], derivation)).await;
    let tls = TlsClientConfig::from_configured(&k, HOSTNQN, NQN, derivation).unwrap();
    let (id, suite) = match hash {
        PskHash::Sha256 => ("NVMe0R01 ", "TLS_AES_128_GCM_SHA256"),
        PskHash::Sha384 => ("NVMe0R02 ", "TLS_AES_256_GCM_SHA384"),
    };
    assert!(tls.identity().starts_with(id), "{}", tls.identity());
    let (mut admin, cntlid) = connect(&addr, Some(&tls), NQN, 0, CNTLID_DYNAMIC)
        .await
        .unwrap();
    assert_eq!(admin.tcp_connection().unwrap().tls_cipher(), Some(suite));
    enable(&mut admin).await;
    let (mut io, _) = connect(&addr, Some(&tls), NQN, 1, cntlid).await.unwrap();
    // large (R2T / multi-record) and small transfers
    for (slba, len) in [(0u64, 1usize << 20), (4096, 512), (8192, 128 << 10)] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + slba as usize) as u8).collect();
        let nlb = (len / 512) as u32;
        let w = io
            .execute(
                Sqe::rw(io_opcode::WRITE, 1, slba, nlb, false),
                HostData::ToController(Bytes::from(data.clone())),
            )
            .await
            .unwrap();
        assert!(w.cqe.status.is_success(), "{:?}", w.cqe.status);
        let r = io
            .execute(
                Sqe::rw(io_opcode::READ, 1, slba, nlb, false),
                HostData::FromController(len as u32),
            )
            .await
            .unwrap();
        assert!(r.cqe.status.is_success());
        assert_eq!(r.data_contiguous(), data);
    }
    // the discovery log of a TLS port: TREQ required, TSAS.SECTYPE TLS 1.3
    let (mut d, _) = connect(&addr, Some(&tls), DISCOVERY_NQN, 0, CNTLID_DYNAMIC)
        .await
        .unwrap();
    let log = read_discovery_log(&mut d).await;
    assert_eq!(log.entries[0].treq & 0x3, 0x1);
    assert_eq!(log.entries[0].tsas[0], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_io_spec_derivation() {
    io_over_tls(Derivation::Spec, PskHash::Sha256).await;
}

/// SHA-384 PSKs (`NVMeTLSkey-1:02:`) with TLS_AES_256_GCM_SHA384, beside a
/// SHA-256 key on the same target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_io_sha384_both_derivations() {
    io_over_tls(Derivation::Spec, PskHash::Sha384).await;
    io_over_tls(Derivation::Compat, PskHash::Sha384).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_io_compat_derivation() {
    io_over_tls(Derivation::Compat, PskHash::Sha256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refusals() {
    let (_t, addr) = start(&config(vec![key(1)], Derivation::Spec)).await;
    // wrong key: the handshake fails, with a message naming the identity
    let bad = TlsClientConfig::from_configured(&key(2), HOSTNQN, NQN, Derivation::Spec).unwrap();
    match connect(&addr, Some(&bad), NQN, 0, CNTLID_DYNAMIC).await {
        Err(TransportError::Tls(m)) => assert!(m.contains("NVMe0R01"), "{m}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a wrong PSK connected"),
    }
    // same key, other derivation: fails too
    let other =
        TlsClientConfig::from_configured(&key(1), HOSTNQN, NQN, Derivation::Compat).unwrap();
    assert!(connect(&addr, Some(&other), NQN, 0, CNTLID_DYNAMIC)
        .await
        .is_err());
    // a plain ICReq on the TLS-required port: connection closed
    assert!(connect(&addr, None, NQN, 0, CNTLID_DYNAMIC).await.is_err());
    // garbage instead of a ClientHello ends that connection only
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr.socket).await.unwrap();
        s.write_all(&[0x5a; 600]).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the target closes a garbage connection")
            .unwrap_or(0);
        assert!(n < 64, "no NVMe/TCP answer to garbage");
    }
    let good = TlsClientConfig::from_configured(&key(1), HOSTNQN, NQN, Derivation::Spec).unwrap();
    connect(&addr, Some(&good), NQN, 0, CNTLID_DYNAMIC)
        .await
        .unwrap();
    // A SHA-384 key the target does not hold is refused.
    let k384 = key384(3);
    let bad = TlsClientConfig::from_configured(&k384, HOSTNQN, NQN, Derivation::Spec).unwrap();
    assert!(connect(&addr, Some(&bad), NQN, 0, CNTLID_DYNAMIC)
        .await
        .is_err());
}

#[test]
fn toml_tls_keys() {
    let k = "NVMeTLSkey-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
    let p = std::path::Path::new("t.toml");
    let c =
        TargetConfig::from_toml(&format!("tls = \"required\"\ntls_key = \"{k}\"\n"), p).unwrap();
    let t = c.tls.unwrap();
    assert_eq!(t.keys, vec![ConfiguredPsk::parse(k).unwrap()]);
    assert_eq!(t.derivation, Derivation::Spec);
    let c = TargetConfig::from_toml(
        &format!("tls = \"required\"\ntls_key = [\"{k}\"]\ntls_compat = true\n"),
        p,
    )
    .unwrap();
    assert_eq!(c.tls.unwrap().derivation, Derivation::Compat);
    assert!(TargetConfig::from_toml("", p).unwrap().tls.is_none());
    for (text, needle) in [
        ("tls = \"required\"\n".to_string(), "tls_key"),
        (format!("tls_key = \"{k}\"\n"), "add tls"),
        ("tls = \"maybe\"\n".to_string(), "\"maybe\""),
        (
            "tls = \"required\"\ntls_key = \"NVMeTLSkey-1:01:AAAA:\"\n".to_string(),
            "tls_key[0]",
        ),
    ] {
        let e = TargetConfig::from_toml(&text, p).unwrap_err().to_string();
        assert!(e.contains(needle), "{text:?}: {e}");
    }
    // Per-port TLS: tls_ports names listen addresses; "not-required" offers TLS.
    let c = TargetConfig::from_toml(
        &format!(
            "listen = [\"127.0.0.1:4420\", \"127.0.0.1:4430\"]\ntls = \"not-required\"\ntls_key = \"{k}\"\ntls_ports = [\"127.0.0.1:4430\"]\n"
        ),
        p,
    )
    .unwrap();
    let t = c.tls.unwrap();
    assert_eq!(t.treq, nvmf_controller::config::Treq::NotRequired);
    assert_eq!(t.treq_for(&"127.0.0.1:4420".parse().unwrap()), None);
    assert!(t.treq_for(&"127.0.0.1:4430".parse().unwrap()).is_some());
    let e = TargetConfig::from_toml(
        &format!("tls = \"required\"\ntls_key = \"{k}\"\ntls_ports = [\"127.0.0.1:9999\"]\n"),
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("tls_ports[0]") && e.contains("not one of the listen"),
        "{e}"
    );
}

/// Per-port TLS (issue 11): one target with a plain port, a port that requires
/// TLS and one that only offers it. A plain host reaches the plain and the
/// offering port, not the requiring one; a TLS host reaches both TLS ports;
/// the discovery log gives each port its own TREQ and SECTYPE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_port_tls_required_not_required_and_plain() {
    use nvmf_controller::config::Treq;
    for treq in [Treq::Required, Treq::NotRequired] {
        let mut cfg = config(vec![key(5)], Derivation::Spec);
        // Fixed free ports: TLS applies per listen address.
        let free = |_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (p1, p2) = (free(0), free(1));
        let plain: TransportAddr = format!("127.0.0.1:{p1}").parse().unwrap();
        let secure: TransportAddr = format!("127.0.0.1:{p2}").parse().unwrap();
        cfg.listen = vec![plain, secure];
        if let Some(t) = cfg.tls.as_mut() {
            t.treq = treq;
            t.ports = vec![secure];
        }
        let (_t, _) = start(&cfg).await;
        let tls =
            TlsClientConfig::from_configured(&key(5), HOSTNQN, NQN, Derivation::Spec).unwrap();
        // The plain port: plain works.
        connect(&plain, None, NQN, 0, CNTLID_DYNAMIC).await.unwrap();
        // The TLS port: TLS works; plain only when TLS is not required.
        let (_c, _) = connect(&secure, Some(&tls), NQN, 0, CNTLID_DYNAMIC)
            .await
            .unwrap();
        let plain_on_secure = connect(&secure, None, NQN, 0, CNTLID_DYNAMIC).await;
        assert_eq!(
            plain_on_secure.is_ok(),
            treq == Treq::NotRequired,
            "plain ICReq on a {treq:?} TLS port"
        );
        // The discovery log, read on the plain port.
        let (mut d, _) = connect(&plain, None, DISCOVERY_NQN, 0, CNTLID_DYNAMIC)
            .await
            .unwrap();
        let log = read_discovery_log(&mut d).await;
        let by_port = |p: &TransportAddr| {
            log.entries
                .iter()
                .find(|e| e.trsvcid.trim() == p.trsvcid())
                .map(|e| (e.treq & 3, e.tsas[0]))
                .unwrap()
        };
        assert_eq!(
            by_port(&plain),
            (0x2, 0),
            "plain port: not required, no TLS"
        );
        let want = match treq {
            Treq::Required => (0x1, 2),
            Treq::NotRequired => (0x2, 2),
        };
        assert_eq!(by_port(&secure), want, "{treq:?} port");
    }
}
