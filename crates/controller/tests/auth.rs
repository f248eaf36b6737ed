//! DH-HMAC-CHAP (NVMe Base 2.0 §8.13) end to end over loopback TCP: our host
//! library against our target, every hash and DH group, one-way and
//! bidirectional, and the refusals (wrong host key, wrong controller key, no
//! key, a host that skips authentication). Each refusal ends only that
//! connection: a good host keeps working beside it.

use bytes::Bytes;
use nvmf_controller::config::{
    BackendSpec, HostConfig, Limits, NamespaceConfig, Secret, SubsystemConfig,
};
use nvmf_controller::TargetConfig;
use nvmf_host::{ConnectOptions, Controller, Error};
use nvmf_proto::auth::DhchapSecret;
use nvmf_proto::fabrics::{authreq, AuthCommand, ConnectCommand, ConnectData, CNTLID_DYNAMIC};
use nvmf_proto::registers;
use nvmf_proto::tcp::{HostData, HostQueueConfig};
use nvmf_proto::{fabrics::PropertyCommand, Status};
use nvmf_transport::{HostConnection, TransportAddr};

mod common;
use common::start;

const NQN: &str = "nqn.2024-01.io.nvmf-rs:auth";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:0a000000-0000-0000-0000-0000000000a1";
const OTHER: &str = "nqn.2014-08.org.nvmexpress:uuid:0a000000-0000-0000-0000-0000000000a2";
/// Host keys with each transformation (hh 01/02/03) and none.
const KEY_SHA256: &str = "DHHC-1:01:JTA7RlFcZ3J9iJOeqbS/ytXg6/YBDBciLThDTllkb3qr02o2:";
const KEY_SHA384: &str =
    "DHHC-1:02:SlVga3aBjJeirbjDztnk7/oFEBsmMTxHUl1oc36JlJ+qtcDL1uHs9wINGCMuOURPT+31Dw==:";
const KEY_SHA512: &str = "DHHC-1:03:b3qFkJumsbzH0t3o8/4JFB8qNUBLVmFsd4KNmKOuucTP2uXw+wYRHCcyPUhTXml0f4qVoKu2wczX4u34Aw4ZJCk1sqQ=:";
const KEY_PLAIN: &str = "DHHC-1:00:lJ+qtcDL1uHs9wINGCMuOURPWmVwe4aRnKeyvcjT3umPEMwW:";
/// A controller key.
const CTRL_KEY: &str = "DHHC-1:00:ucTP2uXw+wYRHCcyPUhTXml0f4qVoKu2wczX4u34Aw6FfhDf:";

fn host(key: &str, ctrl: Option<&str>, hash: &[&str], group: &[&str]) -> HostConfig {
    HostConfig {
        nqn: HOST.into(),
        dhchap_secret: Some(Secret(key.into())),
        dhchap_ctrl_secret: ctrl.map(|c| Secret(c.into())),
        dhchap_hashes: hash.iter().map(|s| s.to_string()).collect(),
        dhchap_dhgroups: group.iter().map(|s| s.to_string()).collect(),
    }
}

fn config(hosts: Vec<HostConfig>) -> TargetConfig {
    TargetConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        discovery_listen: vec![],
        subsystems: vec![SubsystemConfig {
            nqn: NQN.into(),
            serial: "auth1".into(),
            model: "test".into(),
            cntlid_min: 1,
            cntlid_max: 0xFFEF,
            hosts,
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
        tls: None,
    }
}

fn opts(
    addr: TransportAddr,
    hostnqn: &str,
    key: Option<&str>,
    ctrl: Option<&str>,
) -> ConnectOptions {
    let mut o = ConnectOptions::new(addr, NQN);
    o.hostnqn = hostnqn.into();
    o.nr_io_queues = 2;
    o.ctrl_loss_tmo = Some(std::time::Duration::ZERO);
    o.dhchap_secret = key.map(|k| DhchapSecret::parse(k).unwrap());
    o.dhchap_ctrl_secret = ctrl.map(|k| DhchapSecret::parse(k).unwrap());
    o
}

/// Connects (admin queue and both I/O queues authenticate), writes, reads back.
async fn write_read(o: ConnectOptions, seed: u8) {
    let c = Controller::connect(o).await.expect("authenticated connect");
    assert_eq!(c.nr_io_queues(), 2);
    let data: Vec<u8> = (0..64 * 1024)
        .map(|i| (i as u8).wrapping_mul(seed))
        .collect();
    c.write(1, u64::from(seed) * 256, data.clone(), false)
        .await
        .unwrap();
    let back = c.read(1, u64::from(seed) * 256, 128).await.unwrap();
    assert_eq!(back, data);
    c.disconnect().await.unwrap();
}

fn auth_error(r: Result<Controller, Error>) -> String {
    match r {
        Err(e @ Error::Authentication { .. }) => e.to_string(),
        Err(e) => panic!("expected an authentication error, got {e}"),
        Ok(_) => panic!("connected without the right keys"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hash_and_dh_group_one_way_and_bidirectional() {
    // Each hash with the null group, each FFDHE group once (the larger ones
    // cost a few seconds of modular exponentiation in a debug build).
    let cases: [(&str, &str, &str, bool); 8] = [
        (KEY_SHA256, "sha256", "null", false),
        (KEY_SHA384, "sha384", "null", true),
        (KEY_SHA512, "hmac(sha512)", "null", false),
        (KEY_PLAIN, "sha256", "ffdhe2048", true),
        (KEY_SHA256, "sha384", "ffdhe3072", false),
        (KEY_SHA384, "sha512", "ffdhe4096", true),
        (KEY_SHA512, "sha256", "ffdhe6144", false),
        (KEY_PLAIN, "sha512", "ffdhe8192", true),
    ];
    for (i, (key, hash, group, bidi)) in cases.into_iter().enumerate() {
        let ctrl = bidi.then_some(CTRL_KEY);
        let (_t, addr) = start(&config(vec![host(key, ctrl, &[hash], &[group])])).await;
        write_read(opts(addr, HOST, Some(key), ctrl), i as u8 + 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_end_only_that_connection() {
    let cfg = config(vec![
        host(KEY_SHA256, Some(CTRL_KEY), &[], &["null", "ffdhe2048"]),
        HostConfig::plain(OTHER),
    ]);
    let (_t, addr) = start(&cfg).await;
    // A good host without authentication, connected throughout.
    let good = Controller::connect(opts(addr, OTHER, None, None))
        .await
        .unwrap();

    // Wrong host key: the controller answers AUTH_Failure1.
    let e = auth_error(Controller::connect(opts(addr, HOST, Some(KEY_PLAIN), None)).await);
    assert!(e.contains("--dhchap-secret"), "{e}");
    // Right host key, wrong controller key: the host refuses (AUTH_Failure2).
    let e =
        auth_error(Controller::connect(opts(addr, HOST, Some(KEY_SHA256), Some(KEY_PLAIN))).await);
    assert!(e.contains("--dhchap-ctrl-secret"), "{e}");
    // No key at all.
    let e = auth_error(Controller::connect(opts(addr, HOST, None, None)).await);
    assert!(e.contains("requires DH-HMAC-CHAP"), "{e}");
    // A host without a key on the target asking to check the controller.
    let e =
        auth_error(Controller::connect(opts(addr, OTHER, Some(KEY_PLAIN), Some(CTRL_KEY))).await);
    assert!(e.contains("does not authenticate this host"), "{e}");
    // The right keys still work, one-way and bidirectional.
    write_read(opts(addr, HOST, Some(KEY_SHA256), None), 3).await;
    write_read(opts(addr, HOST, Some(KEY_SHA256), Some(CTRL_KEY)), 4).await;

    let d = vec![7u8; 4096];
    good.write(1, 0, d.clone(), false).await.unwrap();
    assert_eq!(good.read(1, 0, 8).await.unwrap(), d);
}

/// An admin queue Connect as `HOST`, without authenticating: the completion
/// must succeed and ask for authentication (AUTHREQ.ATR).
async fn raw_admin_connect(addr: &TransportAddr) -> HostConnection {
    let mut c = HostConnection::connect(addr, HostQueueConfig::default())
        .await
        .unwrap();
    let cmd = ConnectCommand {
        recfmt: 0,
        qid: 0,
        sqsize: 31,
        cattr: 0,
        kato: 30_000,
    };
    let data = ConnectData {
        hostid: [9; 16],
        cntlid: CNTLID_DYNAMIC,
        subnqn: NQN.into(),
        hostnqn: HOST.into(),
    };
    let r = common::send_connect(&mut c, &cmd, &data).await.unwrap();
    assert!(r.cqe.status.is_success());
    assert_ne!(
        r.cqe.dw0 & authreq::ATR,
        0,
        "Connect must ask for authentication"
    );
    c
}

/// A host that skips authentication after a Connect that required it gets
/// Authentication Required for everything else, and malformed messages make
/// the controller answer AUTH_Failure1 and end the association.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_or_malformed_authentication() {
    let mut cfg = config(vec![host(KEY_SHA256, None, &[], &[])]);
    cfg.limits.connect_timeout_ms = 1500;
    let (_t, addr) = start(&cfg).await;
    let raw_connect = || raw_admin_connect(&addr);

    // Skipped: Property Get is refused with Authentication Required.
    let mut c = raw_connect().await;
    let r = c
        .execute(
            PropertyCommand::get_sqe(registers::CAP, true),
            HostData::None,
        )
        .await
        .unwrap();
    assert_eq!(r.cqe.status, Status::AUTH_REQUIRED.dnr());

    // Bad SECP: Invalid Field in Command.
    let mut bad = AuthCommand::dhchap(8);
    bad.secp = 0x01;
    let r = c
        .execute(
            bad.to_sqe(true),
            HostData::ToController(Bytes::from(vec![0u8; 8])),
        )
        .await
        .unwrap();
    assert_eq!(r.cqe.status, Status::INVALID_FIELD.dnr());

    // Garbage instead of AUTH_Negotiate: the Send succeeds (as nvmet), the
    // next Receive carries AUTH_Failure1, and the connection then closes.
    let r = c
        .execute(
            AuthCommand::dhchap(16).to_sqe(true),
            HostData::ToController(Bytes::from(vec![0xAAu8; 16])),
        )
        .await
        .unwrap();
    assert!(r.cqe.status.is_success());
    let r = c
        .execute(
            AuthCommand::dhchap(4096).to_sqe(false),
            HostData::FromController(4096),
        )
        .await
        .unwrap();
    assert!(r.cqe.status.is_success());
    let msg = r.data_contiguous();
    assert_eq!(
        nvmf_proto::auth::Message::decode(&msg).map(|m| m.name()),
        Ok("AUTH_Failure1")
    );
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        c.execute(
            PropertyCommand::get_sqe(registers::CAP, true),
            HostData::None,
        )
        .await
        .is_err()
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "the association must end after AUTH_Failure1"
    );

    // A host that connects and never authenticates is closed at the Connect
    // deadline.
    let mut c = raw_connect().await;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if c.execute(
                PropertyCommand::get_sqe(registers::CAP, true),
                HostData::None,
            )
            .await
            .is_err()
            {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "an unauthenticated queue outlived the deadline"
    );

    // The target still authenticates the next host.
    write_read(opts(addr, HOST, Some(KEY_SHA256), None), 9).await;
}

/// Runs one DH-HMAC-CHAP transaction on a raw queue; true if it succeeded.
async fn transaction(c: &mut HostConnection, key: &str, t_id: u16) -> bool {
    use nvmf_proto::auth::{HostAuth, HostConfig as AuthHost, Step};
    let mut a = HostAuth::new(AuthHost::new(
        DhchapSecret::parse(key).unwrap(),
        HOST,
        NQN,
        0,
        t_id,
    ));
    loop {
        match a.next_step() {
            Step::Send(m) => {
                let r = c
                    .execute(
                        AuthCommand::dhchap(m.len() as u32).to_sqe(true),
                        HostData::ToController(Bytes::from(m)),
                    )
                    .await
                    .unwrap();
                assert!(r.cqe.status.is_success());
            }
            Step::Receive(al) => {
                let r = c
                    .execute(
                        AuthCommand::dhchap(al).to_sqe(false),
                        HostData::FromController(al),
                    )
                    .await
                    .unwrap();
                assert!(r.cqe.status.is_success());
                a.received(&r.data_contiguous());
            }
            Step::Done => return true,
            Step::Failed(_) => return false,
        }
    }
}

/// Re-authentication (NVMe Base 2.0 §8.13.5): a new AUTH_Negotiate on a queue
/// that has authenticated starts a new transaction, and the queue works after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthentication_on_a_live_queue() {
    let (_t, addr) = start(&config(vec![host(KEY_SHA384, None, &[], &["ffdhe2048"])])).await;
    let mut c = raw_admin_connect(&addr).await;
    let cap = || PropertyCommand::get_sqe(registers::CAP, true);
    assert!(transaction(&mut c, KEY_SHA384, 1).await);
    assert!(c
        .execute(cap(), HostData::None)
        .await
        .unwrap()
        .cqe
        .status
        .is_success());
    assert!(
        transaction(&mut c, KEY_SHA384, 2).await,
        "re-authentication failed"
    );
    assert!(c
        .execute(cap(), HostData::None)
        .await
        .unwrap()
        .cqe
        .status
        .is_success());
    // A re-authentication with the wrong key fails and ends the association.
    assert!(!transaction(&mut c, KEY_PLAIN, 3).await);
    let gone = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        c.execute(cap(), HostData::None).await.is_err()
    })
    .await;
    assert_eq!(gone, Ok(true));
}
