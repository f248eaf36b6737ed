//! Reservations (NVMe Base 2.0 §8.19) end to end: the target over loopback
//! TCP, driven by two (or three) hosts of the host library, each with its own
//! host NQN and 128-bit host identifier.

use std::path::PathBuf;
use std::time::Duration;

use nvmf_controller::config::{BackendSpec, Limits, NamespaceConfig, SubsystemConfig};
use nvmf_controller::TargetConfig;
use nvmf_host::{AsyncEvent, ConnectOptions, Controller, Error, HostData, TransportAddr};
use nvmf_proto::features::fid;
use nvmf_proto::identify::oncs;
use nvmf_proto::resv::{notify_mask, notify_type, rescap, ResvType};
use nvmf_proto::sqe::admin_opcode;
use nvmf_proto::{Sqe, Status};
use tokio::sync::mpsc;

mod common;
use common::start;

const NQN: &str = "nqn.2024-01.io.nvmf-rs:resv";
const MEM: u32 = 1;
const FILE: u32 = 2;

fn config(file: Option<PathBuf>) -> TargetConfig {
    let mut namespaces = vec![NamespaceConfig {
        nsid: MEM,
        backend: BackendSpec::Memory { size: 4 << 20 },
        block_size: 512,
        direct: Default::default(),
        uuid: None,
        ana_group: 1,
    }];
    if let Some(path) = file {
        namespaces.push(NamespaceConfig {
            nsid: FILE,
            backend: BackendSpec::File {
                path,
                size: Some(4 << 20),
            },
            block_size: 512,
            direct: Default::default(),
            uuid: None,
            ana_group: 1,
        });
    }
    TargetConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        discovery_listen: vec![],
        subsystems: vec![SubsystemConfig {
            nqn: NQN.into(),
            serial: "resv1".into(),
            model: "resv".into(),
            hosts: vec![],
            namespaces,
            cntlid_min: 1,
            cntlid_max: 0xFFEF,
        }],
        header_digest: false,
        data_digest: false,
        limits: Limits::default(),
        busy_poll_us: 0,
        busy_poll_batch: 0,
        tcp_congestion: None,
        cpu_latency_us: None,
        tls: None,
        ana_states: vec![],
        referrals: vec![],
        metrics: None,
    }
}

/// A host: its own host NQN and host ID (`n` in every byte of the ID).
struct Host {
    c: Controller,
    events: mpsc::Receiver<AsyncEvent>,
    hostid: [u8; 16],
}

async fn host(addr: TransportAddr, n: u8) -> Host {
    let mut o = ConnectOptions::new(addr, NQN);
    o.hostnqn =
        format!("nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000{n:02x}");
    o.hostid = [n; 16];
    o.nr_io_queues = 1;
    o.ctrl_loss_tmo = Some(Duration::from_secs(2));
    let c = Controller::connect(o).await.unwrap();
    let events = c.events().unwrap();
    Host {
        c,
        events,
        hostid: [n; 16],
    }
}

fn is_conflict(e: &Error) -> bool {
    e.status()
        .is_some_and(|s| s.sct == 0 && s.sc == Status::RESERVATION_CONFLICT.sc && s.dnr)
}

fn status_of<T: std::fmt::Debug>(r: Result<T, Error>) -> Status {
    r.unwrap_err().status().expect("an NVMe status")
}

/// (read allowed, write allowed) for a host on `nsid`.
async fn access(h: &Host, nsid: u32) -> (bool, bool) {
    let r = h.c.read(nsid, 8, 1).await;
    let w = h.c.write(nsid, 8, vec![h.hostid[0]; 512], false).await;
    for e in [r.as_ref().err(), w.as_ref().err()].into_iter().flatten() {
        assert!(
            is_conflict(e),
            "only Reservation Conflict expected, got {e}"
        );
    }
    (r.is_ok(), w.is_ok())
}

async fn no_event(h: &mut Host) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.events.try_recv().is_err(), "no event expected");
}

/// Waits for the reservation event and reads the log page it names.
async fn notification(h: &mut Host) -> (u8, u32, u8) {
    let ev = tokio::time::timeout(Duration::from_secs(5), h.events.recv())
        .await
        .expect("a reservation AEN")
        .unwrap();
    assert_eq!((ev.event_type, ev.info, ev.log_page), (6, 0, 0x80));
    let n = h.c.resv_notification().await.unwrap();
    assert_ne!(n.count, 0);
    (n.log_type, n.nsid, n.available)
}

async fn get_feature(h: &Host, f: u8, nsid: u32) -> Result<u32, Error> {
    let mut s = Sqe::new(admin_opcode::GET_FEATURES);
    s.nsid = nsid;
    s.cdw10 = u32::from(f);
    h.c.admin(s, HostData::None).await.map(|c| c.cqe.dw0)
}

async fn set_feature(h: &Host, f: u8, nsid: u32, v: u32) -> Result<(), Error> {
    let mut s = Sqe::new(admin_opcode::SET_FEATURES);
    s.nsid = nsid;
    s.cdw10 = u32::from(f);
    s.cdw11 = v;
    h.c.admin(s, HostData::None).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_of_every_type_for_holder_registrant_and_other() {
    let (_t, addr) = start(&config(None)).await;
    let a = host(addr, 0xa1).await;
    let b = host(addr, 0xb2).await;
    let c = host(addr, 0xc3).await;
    // (registrant read, registrant write, non-registrant read, non-registrant write),
    // NVMe Base 2.0 Figure 549.
    let table = [
        (ResvType::WriteExclusive, (true, false, true, false)),
        (ResvType::ExclusiveAccess, (false, false, false, false)),
        (
            ResvType::WriteExclusiveRegistrantsOnly,
            (true, true, true, false),
        ),
        (
            ResvType::ExclusiveAccessRegistrantsOnly,
            (true, true, false, false),
        ),
        (
            ResvType::WriteExclusiveAllRegistrants,
            (true, true, true, false),
        ),
        (
            ResvType::ExclusiveAccessAllRegistrants,
            (true, true, false, false),
        ),
    ];
    a.c.resv_register(MEM, 0, false, 0, 0, 0xaaaa)
        .await
        .unwrap();
    b.c.resv_register(MEM, 0, false, 0, 0, 0xbbbb)
        .await
        .unwrap();
    for (t, (rr, rw, nr, nw)) in table {
        // Registered but no reservation: everyone may do everything.
        assert_eq!(access(&c, MEM).await, (true, true), "{t:?}");
        a.c.resv_acquire(MEM, 0, false, t.code(), 0xaaaa, 0)
            .await
            .unwrap();
        assert_eq!(access(&a, MEM).await, (true, true), "holder, {t:?}");
        assert_eq!(access(&b, MEM).await, (rr, rw), "registrant, {t:?}");
        assert_eq!(access(&c, MEM).await, (nr, nw), "non-registrant, {t:?}");
        let rep = a.c.resv_report(MEM, 4096, true).await.unwrap();
        assert_eq!(rep.rtype, t.code());
        // Release with the wrong type is refused and changes nothing.
        let other = if t.code() == 1 { 2 } else { 1 };
        let st = status_of(a.c.resv_release(MEM, 0, false, other, 0xaaaa).await);
        assert_eq!((st.sct, st.sc), (0, Status::INVALID_FIELD.sc));
        a.c.resv_release(MEM, 0, false, t.code(), 0xaaaa)
            .await
            .unwrap();
        assert_eq!(a.c.resv_report(MEM, 4096, true).await.unwrap().rtype, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_report_identify_and_shared_host_registration() {
    let (_t, addr) = start(&config(None)).await;
    let a = host(addr, 0xa1).await;
    let b = host(addr, 0xb2).await;
    // Identify: ONCS reservations, RESCAP every type + IEKEY, no PTPL on memory.
    let id = a.c.identify_controller().await.unwrap();
    assert_ne!(id.oncs & oncs::RESERVATIONS, 0);
    let ns = a.c.identify_namespace(MEM).await.unwrap();
    assert_eq!(ns.rescap, rescap::ALL_TYPES | rescap::IEKEY13);
    assert_eq!(ns.nmic & 1, 1);

    a.c.resv_register(MEM, 0, false, 0, 0, 0x1111)
        .await
        .unwrap();
    b.c.resv_register(MEM, 0, false, 0, 0, 0x2222)
        .await
        .unwrap();
    // Registering again with another key, a wrong CRKEY, an unregistered host.
    assert!(is_conflict(
        &a.c.resv_register(MEM, 0, false, 0, 0, 0x9999)
            .await
            .unwrap_err()
    ));
    assert!(is_conflict(
        &a.c.resv_acquire(MEM, 0, false, 1, 0x2222, 0)
            .await
            .unwrap_err()
    ));
    assert!(is_conflict(
        &a.c.resv_register(MEM, 2, false, 0, 0x5, 0x3333)
            .await
            .unwrap_err()
    ));
    assert!(is_conflict(
        &a.c.resv_release(MEM, 0, false, 1, 0x2222)
            .await
            .unwrap_err()
    ));
    // Replace with IEKEY ignores the current key.
    a.c.resv_register(MEM, 2, true, 0, 0xdead, 0x1112)
        .await
        .unwrap();
    // Invalid type, IEKEY on Acquire, CPTPL on a namespace that cannot persist.
    let st = status_of(a.c.resv_acquire(MEM, 0, false, 7, 0x1112, 0).await);
    assert_eq!(st.sc, Status::INVALID_FIELD.sc);
    let st = status_of(a.c.resv_acquire(MEM, 0, true, 1, 0x1112, 0).await);
    assert_eq!(st.sc, Status::INVALID_FIELD.sc);
    let st = status_of(a.c.resv_register(MEM, 2, false, 3, 0x1112, 0x1112).await);
    assert_eq!(st.sc, Status::INVALID_FIELD.sc);
    assert_eq!(
        get_feature(&a, fid::RESERVATION_PERSISTENCE, MEM)
            .await
            .unwrap(),
        0
    );
    let st = status_of(set_feature(&a, fid::RESERVATION_PERSISTENCE, MEM, 1).await);
    assert_eq!(st.sc, Status::INVALID_FIELD.sc);
    // Host Identifier: readable, not settable over Fabrics.
    let st = status_of(set_feature(&a, fid::HOST_IDENTIFIER, 0, 1).await);
    assert_eq!(st.sc, Status::COMMAND_SEQUENCE_ERROR.sc);

    a.c.resv_acquire(MEM, 0, false, 1, 0x1112, 0).await.unwrap();
    // Another host cannot acquire; the holder cannot change the type by Acquire.
    assert!(is_conflict(
        &b.c.resv_acquire(MEM, 0, false, 1, 0x2222, 0)
            .await
            .unwrap_err()
    ));
    assert!(is_conflict(
        &a.c.resv_acquire(MEM, 0, false, 2, 0x1112, 0)
            .await
            .unwrap_err()
    ));
    // Report, extended structure: both registrants with their 128-bit IDs and keys.
    let rep = b.c.resv_report(MEM, 4096, true).await.unwrap();
    assert_eq!((rep.rtype, rep.regctl_count, rep.ptpls), (1, 2, false));
    let ra = rep.regctl.iter().find(|r| r.hostid == a.hostid).unwrap();
    let rb = rep.regctl.iter().find(|r| r.hostid == b.hostid).unwrap();
    assert_eq!((ra.rkey, ra.holds, ra.cntlid), (0x1112, true, 0xffff));
    assert_eq!((rb.rkey, rb.holds), (0x2222, false));
    // Register, register, replace: the generation counts them.
    assert_eq!(rep.gen, 3);
    // A buffer with room for the header only still reports the count.
    let short = b.c.resv_report(MEM, 64, true).await.unwrap();
    assert_eq!((short.regctl_count, short.regctl.len()), (2, 0));
    // EDS = 0 needs 64-bit host IDs, which NVMe-oF does not have.
    let st = status_of(b.c.resv_report(MEM, 4096, false).await);
    assert_eq!((st.sct, st.sc), (0, Status::HOSTID_INCONSISTENT.sc));
    // A namespace that does not exist.
    let st = status_of(b.c.resv_report(7, 4096, true).await);
    assert_eq!(st.sc, Status::INVALID_NS.sc);

    // A second controller of host A (same host ID) shares its registration:
    // it holds the reservation too and may write.
    let a2 = host(addr, 0xa1).await;
    assert_eq!(access(&a2, MEM).await, (true, true));
    assert_eq!(access(&b, MEM).await, (true, false));
    a2.c.resv_release(MEM, 0, false, 1, 0x1112).await.unwrap();
    assert_eq!(access(&b, MEM).await, (true, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preempt_release_clear_notify_the_right_hosts() {
    let (_t, addr) = start(&config(None)).await;
    let mut a = host(addr, 0xa1).await;
    let mut b = host(addr, 0xb2).await;
    let mut c = host(addr, 0xc3).await;
    a.c.resv_register(MEM, 0, false, 0, 0, 0xa).await.unwrap();
    b.c.resv_register(MEM, 0, false, 0, 0, 0xb).await.unwrap();
    c.c.resv_register(MEM, 0, false, 0, 0, 0xc).await.unwrap();

    // Registrants Only, released by its holder: the other registrants are told.
    a.c.resv_acquire(MEM, 0, false, 3, 0xa, 0).await.unwrap();
    a.c.resv_release(MEM, 0, false, 3, 0xa).await.unwrap();
    assert_eq!(
        notification(&mut b).await,
        (notify_type::RESERVATION_RELEASED, MEM, 0)
    );
    assert_eq!(
        notification(&mut c).await,
        (notify_type::RESERVATION_RELEASED, MEM, 0)
    );
    no_event(&mut a).await;
    // Write Exclusive released: nobody is told.
    a.c.resv_acquire(MEM, 0, false, 1, 0xa, 0).await.unwrap();
    a.c.resv_release(MEM, 0, false, 1, 0xa).await.unwrap();
    no_event(&mut b).await;

    // Preempt: B takes A's reservation; A loses its registration and is told.
    a.c.resv_acquire(MEM, 0, false, 1, 0xa, 0).await.unwrap();
    b.c.resv_acquire(MEM, 1, false, 2, 0xb, 0xa).await.unwrap();
    assert_eq!(
        notification(&mut a).await,
        (notify_type::REGISTRATION_PREEMPTED, MEM, 0)
    );
    no_event(&mut b).await;
    // The type changed (1 to 2): the remaining registrants see the old
    // reservation released (as nvmet does).
    assert_eq!(
        notification(&mut c).await,
        (notify_type::RESERVATION_RELEASED, MEM, 0)
    );
    let rep = b.c.resv_report(MEM, 4096, true).await.unwrap();
    assert_eq!((rep.rtype, rep.regctl_count), (2, 2));
    assert!(rep.regctl.iter().all(|r| r.hostid != a.hostid));
    // A's key no longer works; B now has Exclusive Access.
    assert!(is_conflict(
        &a.c.resv_release(MEM, 0, false, 2, 0xa).await.unwrap_err()
    ));
    assert_eq!(access(&a, MEM).await, (false, false));
    assert_eq!(access(&c, MEM).await, (false, false));
    assert_eq!(access(&b, MEM).await, (true, true));
    // Preempt with a key nobody has: conflict.
    assert!(is_conflict(
        &c.c.resv_acquire(MEM, 1, false, 1, 0xc, 0x77)
            .await
            .unwrap_err()
    ));

    // Preempt and Abort while the preempted host keeps writing: its writes
    // succeed until the preempt and conflict after it; the command completes.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let writer = {
        let bc = b.c.clone();
        tokio::spawn(async move {
            let mut first_tx = Some(first_tx);
            let mut ok = 0u64;
            for i in 0..1_000_000u64 {
                match bc.write(MEM, i % 64, vec![0xbb; 4096], false).await {
                    Ok(()) => {
                        ok += 1;
                        if let Some(t) = first_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Err(e) if is_conflict(&e) => return ok,
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("no write conflicted");
        })
    };
    first_rx.await.unwrap();
    c.c.resv_acquire(MEM, 2, false, 1, 0xc, 0xb).await.unwrap();
    let ok = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the preempted host's writes conflict")
        .unwrap();
    assert!(ok > 0);
    assert_eq!(
        notification(&mut b).await,
        (notify_type::REGISTRATION_PREEMPTED, MEM, 0)
    );
    assert_eq!(access(&b, MEM).await, (true, false));
    let rep = c.c.resv_report(MEM, 4096, true).await.unwrap();
    assert_eq!((rep.rtype, rep.regctl_count), (1, 1));

    // Clear: every other registrant gets Reservation Preempted, unless masked.
    a.c.resv_register(MEM, 0, false, 0, 0, 0xa).await.unwrap();
    b.c.resv_register(MEM, 0, false, 0, 0, 0xb).await.unwrap();
    set_feature(
        &b,
        fid::RESERVATION_NOTIFICATION_MASK,
        MEM,
        notify_mask::RESPRE,
    )
    .await
    .unwrap();
    assert_eq!(
        get_feature(&b, fid::RESERVATION_NOTIFICATION_MASK, MEM)
            .await
            .unwrap(),
        notify_mask::RESPRE
    );
    let st = status_of(set_feature(&b, fid::RESERVATION_NOTIFICATION_MASK, MEM, 1).await);
    assert_eq!(st.sc, Status::INVALID_FIELD.sc);
    c.c.resv_release(MEM, 1, false, 0, 0xc).await.unwrap();
    assert_eq!(
        notification(&mut a).await,
        (notify_type::RESERVATION_PREEMPTED, MEM, 0)
    );
    no_event(&mut b).await;
    no_event(&mut c).await;
    let rep = c.c.resv_report(MEM, 4096, true).await.unwrap();
    assert_eq!((rep.rtype, rep.regctl_count), (0, 0));
    // The log is empty now: a page with count 0.
    assert_eq!(a.c.resv_notification().await.unwrap().count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_namespace_reservation_survives_a_target_restart_memory_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ns.img");
    let cfg = config(Some(img.clone()));
    let state = dir.path().join("ns.img.resv");
    {
        let (t, addr) = start(&cfg).await;
        let a = host(addr, 0xa1).await;
        let b = host(addr, 0xb2).await;
        let ns = a.c.identify_namespace(FILE).await.unwrap();
        assert_eq!(ns.rescap & rescap::PTPL, rescap::PTPL);
        // Register with CPTPL = 11b (persist), on both namespaces.
        a.c.resv_register(FILE, 0, false, 3, 0, 0xfeed)
            .await
            .unwrap();
        a.c.resv_register(MEM, 0, false, 0, 0, 0xfeed)
            .await
            .unwrap();
        b.c.resv_register(FILE, 0, false, 0, 0, 0xbeef)
            .await
            .unwrap();
        a.c.resv_acquire(FILE, 0, false, 1, 0xfeed, 0)
            .await
            .unwrap();
        a.c.resv_acquire(MEM, 0, false, 1, 0xfeed, 0).await.unwrap();
        assert!(state.exists());
        assert_eq!(
            get_feature(&a, fid::RESERVATION_PERSISTENCE, FILE)
                .await
                .unwrap(),
            1
        );
        assert_eq!(access(&b, FILE).await, (true, false));
        a.c.disconnect().await.unwrap();
        b.c.disconnect().await.unwrap();
        drop(t);
    }
    // A new target (new registry, namespaces opened again from the config).
    let (_t2, addr) = start(&cfg).await;
    let a = host(addr, 0xa1).await;
    let b = host(addr, 0xb2).await;
    let rep = b.c.resv_report(FILE, 4096, true).await.unwrap();
    assert_eq!((rep.rtype, rep.regctl_count, rep.ptpls), (1, 2, true));
    assert!(rep
        .regctl
        .iter()
        .any(|r| r.hostid == a.hostid && r.holds && r.rkey == 0xfeed));
    assert_eq!(access(&b, FILE).await, (true, false));
    assert_eq!(access(&a, FILE).await, (true, true));
    // The memory namespace forgot everything.
    let rep = b.c.resv_report(MEM, 4096, true).await.unwrap();
    assert_eq!((rep.rtype, rep.regctl_count), (0, 0));
    assert_eq!(access(&b, MEM).await, (true, true));
    // PTPL off (Set Features 83h) removes the state file.
    set_feature(&a, fid::RESERVATION_PERSISTENCE, FILE, 0)
        .await
        .unwrap();
    assert!(!state.exists());
}
