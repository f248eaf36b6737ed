//! ANA multipath (NVMe Base 2.0 §8.1) over real sockets with our host library:
//! the ANA log page on two ports, Identify fields, I/O statuses per state, the
//! ANA Change notice after a live change (reload), CNTLID ranges of two
//! targets serving one subsystem (an HA pair) and the same NGUID everywhere.

use std::sync::Arc;
use std::time::Duration;

use nvmf_controller::ana::{AnaPortState, AnaState};
use nvmf_controller::config::{BackendSpec, Limits, NamespaceConfig, SubsystemConfig};
use nvmf_controller::{Target, TargetConfig};
use nvmf_host::{ConnectOptions, Controller, Error, HostData};
use nvmf_proto::features::{aec, aen_notice, aen_type, fid};
use nvmf_proto::identify::cmic;
use nvmf_proto::log::{ana_state, decode_ana_log, lid, AnaGroup, ANA_LSP_RGO};
use nvmf_proto::sqe::admin_opcode;
use nvmf_proto::{Sqe, Status};
use nvmf_transport::TransportAddr;

const NQN: &str = "nqn.2024-01.io.nvmf-rs:ana";

fn ns(nsid: u32, backend: BackendSpec, group: u32) -> NamespaceConfig {
    NamespaceConfig {
        nsid,
        backend,
        block_size: 512,
        direct: Default::default(),
        uuid: None,
        ana_group: group,
    }
}

/// Two listen ports (distinct loopback addresses, so each can be named in
/// `ana_states` while the kernel picks the port numbers).
fn config(namespaces: Vec<NamespaceConfig>, states: Vec<AnaPortState>) -> TargetConfig {
    TargetConfig {
        listen: vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.2:0".parse().unwrap(),
        ],
        discovery_listen: vec![],
        subsystems: vec![SubsystemConfig {
            nqn: NQN.into(),
            serial: "ana1".into(),
            model: "test".into(),
            cntlid_min: 1,
            cntlid_max: 0xFFEF,
            hosts: vec![],
            namespaces,
        }],
        header_digest: true,
        data_digest: true,
        limits: Limits::default(),
        busy_poll_us: 0,
        busy_poll_batch: 0,
        tcp_congestion: None,
        cpu_latency_us: None,
        tls: None,
        ana_states: states,
        referrals: vec![],
        metrics: None,
    }
}

fn state(port: &str, group: u32, state: AnaState) -> AnaPortState {
    AnaPortState {
        port: port.parse().unwrap(),
        group,
        state,
    }
}

async fn start(cfg: &TargetConfig) -> (Arc<Target>, Vec<TransportAddr>) {
    let t = Arc::new(Target::bind(cfg).await.unwrap());
    let ports = t.ports().to_vec();
    tokio::spawn(t.clone().serve());
    (t, ports)
}

async fn connect(addr: TransportAddr) -> Controller {
    let mut o = ConnectOptions::new(addr, NQN);
    o.nr_io_queues = 1;
    o.ctrl_loss_tmo = Some(Duration::from_secs(1));
    Controller::connect(o).await.expect("connect")
}

async fn ana_log(c: &Controller, len: u32, offset: u64, rgo: bool) -> Vec<u8> {
    let mut sqe = Sqe::get_log_page(lid::ANA, 0xffff_ffff, len, offset, false);
    if rgo {
        sqe.cdw10 |= ANA_LSP_RGO;
    }
    let r = c
        .admin(sqe, HostData::FromController(len))
        .await
        .expect("ANA log");
    r.data_contiguous().to_vec()
}

fn group(grpid: u32, state: u8, nsids: Vec<u32>, chgcnt: u64) -> AnaGroup {
    AnaGroup {
        grpid,
        chgcnt,
        state,
        nsids,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ana_log_and_identify_on_two_ports() {
    let cfg = config(
        vec![
            ns(1, BackendSpec::Memory { size: 1 << 20 }, 1),
            ns(2, BackendSpec::Memory { size: 1 << 20 }, 2),
            ns(3, BackendSpec::Memory { size: 1 << 20 }, 1),
        ],
        vec![
            state("127.0.0.2:0", 1, AnaState::NonOptimized),
            state("127.0.0.2:0", 2, AnaState::Inaccessible),
        ],
    );
    let (_t, ports) = start(&cfg).await;
    let a = connect(ports[0]).await;
    let b = connect(ports[1]).await;

    let (ida, idb) = (
        a.identify_controller().await.unwrap(),
        b.identify_controller().await.unwrap(),
    );
    assert_ne!(
        ida.cntlid, idb.cntlid,
        "CNTLIDs are unique in the subsystem"
    );
    for id in [&ida, &idb] {
        assert_eq!(
            id.cmic & (cmic::MULTI_PORT | cmic::MULTI_CTRL | cmic::ANA),
            0x0b
        );
        assert_ne!(id.oaes & aec::ANA_CHANGE, 0, "OAES: ANA Change notices");
        assert_eq!(id.anacap & 0x1f, 0x1f, "every ANA state is reported");
        assert_eq!((id.anagrpmax, id.nanagrpid, id.anatt), (128, 128, 10));
        assert!(
            id.mnan != 0 && id.mnan <= id.nn,
            "Linux needs 0 < MNAN <= NN"
        );
    }

    // Identify Namespace: ANAGRPID and NMIC shared; the same NGUID/EUI-64 and
    // UUID through both ports.
    for nsid in [1u32, 2, 3] {
        let (na, nb) = (
            a.identify_namespace(nsid).await.unwrap(),
            b.identify_namespace(nsid).await.unwrap(),
        );
        assert_eq!(na.anagrpid, if nsid == 2 { 2 } else { 1 });
        assert_eq!(na.nmic & 1, 1);
        assert_eq!((na.nguid, na.eui64), (nb.nguid, nb.eui64));
        assert_ne!(na.nguid, [0; 16]);
        let descs = |c: Controller| async move {
            let r = c
                .admin(
                    Sqe::identify(nvmf_proto::identify::cns::NS_DESCRIPTORS, nsid),
                    HostData::FromController(4096),
                )
                .await
                .unwrap();
            r.data_contiguous().to_vec()
        };
        let (da, db) = (descs(a.clone()).await, descs(b.clone()).await);
        assert_eq!(da, db, "namespace descriptors of NSID {nsid}");
    }

    // The log through each port: one descriptor per group, NSIDs ascending.
    let (chg, groups) = decode_ana_log(&ana_log(&a, 4096, 0, false).await);
    assert_eq!(chg, 0, "no change yet");
    assert_eq!(
        groups,
        [
            group(1, ana_state::OPTIMIZED, vec![1, 3], 0),
            group(2, ana_state::OPTIMIZED, vec![2], 0)
        ]
    );
    let page = ana_log(&b, 4096, 0, false).await;
    let (_, groups) = decode_ana_log(&page);
    assert_eq!(
        groups,
        [
            group(1, ana_state::NON_OPTIMIZED, vec![1, 3], 0),
            group(2, ana_state::INACCESSIBLE, vec![2], 0)
        ]
    );
    // Groups only (RGO): no NSIDs.
    let (_, groups) = decode_ana_log(&ana_log(&b, 4096, 0, true).await);
    assert_eq!(
        groups,
        [
            group(1, ana_state::NON_OPTIMIZED, vec![], 0),
            group(2, ana_state::INACCESSIBLE, vec![], 0)
        ]
    );
    // Offset and length are honoured: the bytes are the page's.
    let part = ana_log(&b, 32, 16, false).await;
    assert_eq!(part, page[16..48]);
    assert_eq!(u32::from_le_bytes(part[0..4].try_into().unwrap()), 1);

    // I/O: served on optimized and non-optimized paths, refused on an
    // inaccessible one with the path-related status and DNR clear.
    let data = vec![0x5au8; 512];
    a.write(2, 0, data.clone(), false).await.unwrap();
    b.write(1, 0, data.clone(), false).await.unwrap();
    assert_eq!(b.read(1, 0, 1).await.unwrap(), data);
    let e = b.write(2, 0, data.clone(), false).await.unwrap_err();
    let st = e.status().expect("an NVMe status");
    assert_eq!((st.sct, st.sc, st.dnr), (3, 0x02, false), "{e}");
    let e = b.read(2, 0, 1).await.unwrap_err();
    assert_eq!(e.status(), Some(Status::ANA_INACCESSIBLE));
    assert_eq!(a.read(2, 0, 1).await.unwrap(), data);
}

async fn enable_ana_aen(c: &Controller) {
    let mut sqe = Sqe::new(admin_opcode::SET_FEATURES);
    sqe.cdw10 = u32::from(fid::ASYNC_EVENT_CONFIG);
    sqe.cdw11 = aec::ANA_CHANGE | aec::NS_ATTRIBUTE;
    c.admin(sqe, HostData::None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_change_sends_ana_change_and_sets_io_status() {
    let mut cfg = config(
        vec![
            ns(1, BackendSpec::Memory { size: 1 << 20 }, 1),
            ns(2, BackendSpec::Memory { size: 1 << 20 }, 2),
        ],
        vec![],
    );
    let (t, ports) = start(&cfg).await;
    let a = connect(ports[0]).await;
    let b = connect(ports[1]).await;
    let mut ev_a = a.events().unwrap();
    let mut ev_b = b.events().unwrap();
    enable_ana_aen(&a).await;
    enable_ana_aen(&b).await;
    let data = vec![7u8; 512];

    // Each state of group 1 on the second port, through a reload.
    let expect: [(AnaState, Option<(u8, u8)>); 5] = [
        (AnaState::Inaccessible, Some((3, 0x02))),
        (AnaState::NonOptimized, None),
        (AnaState::PersistentLoss, Some((3, 0x01))),
        (AnaState::Change, Some((3, 0x03))),
        (AnaState::Optimized, None),
    ];
    for (i, (st, status)) in expect.into_iter().enumerate() {
        cfg.ana_states = vec![state("127.0.0.2:0", 1, st)];
        let s = t.reload(&cfg).unwrap();
        assert_eq!(
            s.ana_changed,
            [format!("127.0.0.2:0 group 1: {st}")],
            "reload summary"
        );
        // The controller on that port gets the notice; the host library reads
        // log 0Ch on it (RAE clear), which re-arms the next one.
        let ev = tokio::time::timeout(Duration::from_secs(5), ev_b.recv())
            .await
            .expect("an ANA Change notice in time")
            .unwrap();
        assert_eq!(
            (ev.event_type, ev.info, ev.log_page),
            (aen_type::NOTICE, aen_notice::ANA_CHANGE, lid::ANA)
        );
        let (chg, groups) = decode_ana_log(&ana_log(&b, 4096, 0, false).await);
        assert_eq!(chg, i as u64 + 1, "CHGCNT counts changes");
        assert_eq!(groups[0].state, st.code());
        assert_eq!(groups[0].chgcnt, i as u64 + 1);
        assert_eq!(groups[1].state, ana_state::OPTIMIZED);
        match status {
            None => {
                b.write(1, 1, data.clone(), false).await.unwrap();
                assert_eq!(b.read(1, 1, 1).await.unwrap(), data);
            }
            Some((sct, sc)) => {
                for e in [
                    b.write(1, 1, data.clone(), false).await.unwrap_err(),
                    b.read(1, 1, 1).await.unwrap_err(),
                ] {
                    let s = e.status().expect("an NVMe status");
                    assert_eq!((s.sct, s.sc, s.dnr), (sct, sc, false), "{st}: {e}");
                }
                // Group 2 on the same port is untouched.
                b.write(2, 1, data.clone(), false).await.unwrap();
            }
        }
        // The first port's controller saw no change of its own.
        a.write(1, 1, data.clone(), false).await.unwrap();
    }
    assert!(
        ev_a.try_recv().is_err(),
        "the other port's controller got no ANA notice"
    );

    // A reload that changes nothing sends nothing.
    let s = t.reload(&cfg).unwrap();
    assert!(s.ana_changed.is_empty());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ev_b.recv())
            .await
            .is_err(),
        "no notice without a change"
    );

    // Without AEC bit 11 there is no notice, but the log still changes. (Our
    // host enables the notices the controller offers at connect, as Linux
    // does, so this one turns them off again.)
    let c = connect(ports[1]).await;
    let mut ev_c = c.events().unwrap();
    let mut off = Sqe::new(admin_opcode::SET_FEATURES);
    off.cdw10 = u32::from(fid::ASYNC_EVENT_CONFIG);
    off.cdw11 = 0;
    c.admin(off, HostData::None).await.unwrap();
    cfg.ana_states = vec![state("127.0.0.2:0", 2, AnaState::Inaccessible)];
    t.reload(&cfg).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), ev_b.recv())
        .await
        .expect("b enabled the notice");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ev_c.recv())
            .await
            .is_err(),
        "c did not enable the notice"
    );
    let (_, groups) = decode_ana_log(&ana_log(&c, 4096, 0, false).await);
    assert_eq!(groups[1].state, ana_state::INACCESSIBLE);
    assert_eq!(
        c.write(2, 0, data.clone(), false)
            .await
            .unwrap_err()
            .status(),
        Some(Status::ANA_INACCESSIBLE)
    );

    let chg = decode_ana_log(&ana_log(&b, 4096, 0, false).await).0;

    // A reload that moves NSID 2 into group 1 changes the log too: CHGCNT
    // moves and the notice comes (with the Namespace Attribute notice).
    cfg.subsystems[0].namespaces[1].ana_group = 1;
    t.reload(&cfg).unwrap();
    let mut saw_ana = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(2), ev_b.recv()).await {
        saw_ana |= e.info == aen_notice::ANA_CHANGE;
    }
    assert!(saw_ana, "an ANA Change notice after the group move");
    let (chg2, groups) = decode_ana_log(&ana_log(&b, 4096, 0, false).await);
    assert!(chg2 > chg);
    assert_eq!(
        groups,
        [group(1, ana_state::OPTIMIZED, vec![1, 2], groups[0].chgcnt)]
    );
    assert_eq!(b.identify_namespace(2).await.unwrap().anagrpid, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_pair_disjoint_cntlids_same_identity_shared_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.img");
    let mk = |lo: u16, hi: u16| {
        let mut c = config(
            vec![ns(
                1,
                BackendSpec::File {
                    path: path.clone(),
                    size: Some(4 << 20),
                },
                1,
            )],
            vec![],
        );
        c.listen.truncate(1);
        c.subsystems[0].cntlid_min = lo;
        c.subsystems[0].cntlid_max = hi;
        c
    };
    let (_t1, p1) = start(&mk(1, 3)).await;
    let (_t2, p2) = start(&mk(100, 199)).await;

    let mut first = Vec::new();
    let mut second = Vec::new();
    for _ in 0..3 {
        first.push(connect(p1[0]).await);
        second.push(connect(p2[0]).await);
    }
    let ids = |v: &Vec<Controller>| {
        let v = v.clone();
        async move {
            let mut out = Vec::new();
            for c in &v {
                out.push(c.identify_controller().await.unwrap().cntlid);
            }
            out
        }
    };
    let (i1, i2) = (ids(&first).await, ids(&second).await);
    assert_eq!(i1, [1, 2, 3], "the first target hands out 1..=3");
    assert!(i2.iter().all(|i| (100..=199).contains(i)), "{i2:?}");
    // The range is full: a fourth controller on the first target is refused
    // with Controller Busy.
    let mut o = ConnectOptions::new(p1[0], NQN);
    o.nr_io_queues = 1;
    let e = Controller::connect(o).await.unwrap_err();
    assert!(
        matches!(&e, Error::ConnectRejected { status, .. } if *status == Status::CONNECT_CONTROLLER_BUSY),
        "{e}"
    );
    // A controller that goes away frees its ID.
    first.pop().unwrap().disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = connect(p1[0]).await;
    assert_eq!(again.identify_controller().await.unwrap().cntlid, 3);

    // Both targets describe the namespace identically and serve the same bytes.
    let (na, nb) = (
        first[0].identify_namespace(1).await.unwrap(),
        second[0].identify_namespace(1).await.unwrap(),
    );
    assert_eq!((na.nguid, na.eui64), (nb.nguid, nb.eui64));
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    first[0].write(1, 8, data.clone(), true).await.unwrap();
    assert_eq!(second[0].read(1, 8, 8).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_changes_states_live() {
    let cfg = config(
        vec![ns(1, BackendSpec::Memory { size: 1 << 20 }, 1)],
        vec![],
    );
    let (t, ports) = start(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let l = nvmf_controller::control::bind(&sock).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    tokio::spawn(nvmf_controller::control::serve(t.registry().clone(), l));
    let b = connect(ports[1]).await;
    let mut ev = b.events().unwrap();
    enable_ana_aen(&b).await;
    let ask = |line: &'static str| {
        let sock = sock.clone();
        async move {
            nvmf_controller::control::request(&sock, line)
                .await
                .unwrap()
        }
    };

    assert_eq!(ask("ana-state 127.0.0.2:0 1").await, "ok optimized");
    assert_eq!(
        ask("ana-state 127.0.0.2:0 1 inaccessible").await,
        "ok changed"
    );
    let e = tokio::time::timeout(Duration::from_secs(5), ev.recv())
        .await
        .expect("an ANA Change notice in time")
        .unwrap();
    assert_eq!((e.info, e.log_page), (aen_notice::ANA_CHANGE, lid::ANA));
    assert_eq!(
        b.read(1, 0, 1).await.unwrap_err().status(),
        Some(Status::ANA_INACCESSIBLE)
    );
    assert_eq!(
        ask("ana-state 127.0.0.2:0 1 inaccessible").await,
        "ok unchanged"
    );
    assert_eq!(ask("ana-state 127.0.0.2:0 1").await, "ok inaccessible");
    assert_eq!(ask("ana-state 127.0.0.2:0 1 optimized").await, "ok changed");
    b.read(1, 0, 1).await.unwrap();
    for (bad, why) in [
        ("ana-state 127.0.0.9:0 1 optimized", "not a listen address"),
        ("ana-state 127.0.0.2:0 0 optimized", "between 1 and 128"),
        ("ana-state 127.0.0.2:0 1 sideways", "not an ANA state"),
        ("ana-state nowhere 1 optimized", "error"),
        ("frobnicate", "unknown request"),
    ] {
        let a = ask(bad).await;
        assert!(a.starts_with("error") && a.contains(why), "{bad}: {a}");
    }
    // A line that never ends is cut off, not buffered without bound.
    let long = "x".repeat(10_000);
    let s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = s.into_split();
    let _ = w.write_all(long.as_bytes()).await;
    let _ = w.shutdown().await;
    let mut out = String::new();
    let _ = r.read_to_string(&mut out).await;
    assert_eq!(out, "error request line too long\n");
}
