//! The host library against a tiny test controller over real TCP.

mod support;

use std::time::Duration;

use nvmf_host::{discover, ConnectOptions, Controller, Error, LinkState};
use support::{MiniTarget, NQN};

fn opts(t: &MiniTarget) -> ConnectOptions {
    let mut o = ConnectOptions::new(t.addr, NQN);
    o.nr_io_queues = 2;
    o.reconnect_delay = Duration::from_millis(200);
    o.ctrl_loss_tmo = Some(Duration::from_secs(10));
    o
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_identify_write_read() {
    let t = MiniTarget::start("127.0.0.1:0", support::store(8 << 20)).await;
    for (hd, dd) in [(false, false), (true, true)] {
        let mut o = opts(&t);
        o.hdr_digest = hd;
        o.data_digest = dd;
        let c = Controller::connect(o).await.unwrap();
        let info = c.info();
        assert_eq!(info.cntlid, 1);
        assert_eq!(info.nr_io_queues, 2);
        assert_eq!(info.max_transfer, 128 * 1024);
        assert_eq!(info.io_icd, 8192);
        assert_eq!(info.id.subnqn, NQN);
        let ns = c.namespaces();
        assert_eq!(ns.len(), 1);
        assert_eq!(ns[0].block_size, 512);
        assert_eq!(ns[0].size_bytes(), 8 << 20);
        assert_eq!(c.active_namespaces().await.unwrap(), vec![1]);
        assert_eq!(c.identify_controller().await.unwrap().sn, "mini0001");
        // 1 MiB + 1 block: split by MDTS (128 KiB) over both queues, R2T path.
        let data = pattern((1 << 20) + 512, 7);
        c.write(1, 10, data.clone(), false).await.unwrap();
        assert_eq!(c.read(1, 10, data.len() as u64 / 512).await.unwrap(), data);
        // Small write: in-capsule path.
        c.write(1, 0, vec![0xabu8; 512], true).await.unwrap();
        assert_eq!(c.read(1, 0, 1).await.unwrap(), vec![0xab; 512]);
        c.flush(1).await.unwrap();
        // Errors carry the status or say what is wrong.
        let e = c.read(1, (8 << 20) / 512, 1).await.unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        let e = c.read(7, 0, 1).await.unwrap_err();
        assert!(e.to_string().contains("namespace 7"), "{e}");
        assert!(c.get_log_page(2, 0xffff_ffff, 512).await.unwrap().len() == 512);
        c.disconnect().await.unwrap();
        assert_eq!(c.state(), LinkState::Disconnected);
        assert!(matches!(c.read(1, 0, 1).await, Err(Error::Disconnected)));
    }
}

/// `disable_sqflow` (nvme-cli's --disable-sqflow): every queue's Connect
/// carries CATTR bit 2, the controller completes reads with C2HData SUCCESS
/// (no response capsule), and the host completes them from that PDU.
/// Without it, no read completes that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_sqflow_reads_complete_with_success() {
    use std::sync::atomic::Ordering::Relaxed;
    let t = MiniTarget::start("127.0.0.1:0", support::store(8 << 20)).await;
    let data = pattern(256 * 1024, 3);
    for disable in [false, true] {
        let (connects, successes) = (
            t.faults.sqfc_disabled_connects.load(Relaxed),
            t.faults.success_flag_reads.load(Relaxed),
        );
        let mut o = opts(&t);
        o.disable_sqflow = disable;
        let c = Controller::connect(o).await.unwrap();
        c.write(1, 100, data.clone(), false).await.unwrap();
        for _ in 0..8 {
            assert_eq!(c.read(1, 100, 512).await.unwrap(), data);
            assert_eq!(c.read(1, 101, 1).await.unwrap(), data[512..1024]);
        }
        let connects = t.faults.sqfc_disabled_connects.load(Relaxed) - connects;
        let successes = t.faults.success_flag_reads.load(Relaxed) - successes;
        if disable {
            assert_eq!(connects, 3, "admin and both I/O queues ask for it");
            assert!(
                successes >= 8 * 3,
                "reads completed with SUCCESS: {successes}"
            );
        } else {
            assert_eq!((connects, successes), (0, 0));
        }
        c.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_share_a_controller() {
    let t = MiniTarget::start("127.0.0.1:0", support::store(4 << 20)).await;
    let c = Controller::connect(opts(&t)).await.unwrap();
    let mut hs = Vec::new();
    for i in 0..16u64 {
        let c = c.clone();
        hs.push(tokio::spawn(async move {
            let d = pattern(64 * 1024, i + 1);
            c.write(1, i * 128, d.clone(), false).await.unwrap();
            assert_eq!(c.read(1, i * 128, 128).await.unwrap(), d);
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_log() {
    let t = MiniTarget::start("127.0.0.1:0", support::store(1 << 20)).await;
    let log = discover(t.addr, None).await.unwrap();
    assert_eq!(log.numrec, 1);
    assert_eq!(log.entries[0].subnqn, NQN);
    assert_eq!(log.entries[0].trsvcid, t.addr.trsvcid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_fix() {
    let t = MiniTarget::start("127.0.0.1:0", support::store(1 << 20)).await;
    let mut o = opts(&t);
    o.subnqn = "nqn.2024-01.io.test:nope".into();
    let e = Controller::connect(o).await.unwrap_err();
    assert!(e.status().is_some());
    assert!(e.to_string().contains("no subsystem named"), "{e}");
    let port = t.addr.socket.port();
    t.kill();
    drop(t);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let e = Controller::connect(ConnectOptions::new(addr, NQN))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(
        e.to_string().contains("is a target listening there?"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_keeps_acknowledged_writes() {
    let store = support::store(8 << 20);
    let t = MiniTarget::start("127.0.0.1:0", store.clone()).await;
    let addr = t.addr.to_string();
    let c = Controller::connect(opts(&t)).await.unwrap();
    let first = pattern(1 << 20, 3);
    c.write(1, 0, first.clone(), false).await.unwrap();
    // Writes keep going while the target dies and comes back.
    let c2 = c.clone();
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..40u64 {
            let d = pattern(64 * 1024, 100 + i);
            c2.write(1, 4096 + i * 128, d.clone(), false).await.unwrap();
            acked.push((4096 + i * 128, d));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    t.kill();
    drop(t);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        matches!(c.state(), LinkState::Reconnecting { .. }),
        "{:?}",
        c.state()
    );
    let t = MiniTarget::start(&addr, store.clone()).await;
    let acked = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.state(), LinkState::Live);
    assert_eq!(c.read(1, 0, 2048).await.unwrap(), first);
    for (lba, d) in acked {
        assert_eq!(c.read(1, lba, 128).await.unwrap(), d, "lba {lba}");
    }
    c.disconnect().await.unwrap();
    drop(t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_loss_tmo_fails_commands() {
    let t = MiniTarget::start("127.0.0.1:0", support::store(1 << 20)).await;
    let mut o = opts(&t);
    o.ctrl_loss_tmo = Some(Duration::from_secs(1));
    let c = Controller::connect(o).await.unwrap();
    t.kill();
    drop(t);
    let start = std::time::Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(10), c.read(1, 0, 1))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::ControllerLost(_)), "{e}");
    assert!(e.to_string().contains("ctrl-loss-tmo"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(c.state(), LinkState::Lost(_)));
    // Later commands fail at once.
    assert!(matches!(
        c.read(1, 0, 1).await,
        Err(Error::ControllerLost(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_io_queue() {
    use nvmf_host::HostData;
    use nvmf_proto::sqe::io_opcode;
    use nvmf_proto::Sqe;
    let t = MiniTarget::start("127.0.0.1:0", support::store(1 << 20)).await;
    let mut o = opts(&t);
    o.nr_io_queues = 1;
    let c = Controller::connect(o).await.unwrap();
    let mut q = c.connect_raw_io_queue(2).await.unwrap();
    for i in 0..8u64 {
        q.submit(
            Sqe::rw(io_opcode::WRITE, 1, i, 1, false),
            HostData::ToController(vec![i as u8; 512].into()),
        )
        .unwrap();
    }
    for _ in 0..8 {
        assert!(q.next_completion().await.unwrap().cqe.status.is_success());
    }
    q.submit(
        Sqe::rw(io_opcode::READ, 1, 5, 1, false),
        HostData::FromController(512),
    )
    .unwrap();
    assert_eq!(
        q.next_completion().await.unwrap().data_contiguous(),
        vec![5u8; 512]
    );
    q.close().await;
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_loss_tmo_zero_fails_at_once() {
    let t = MiniTarget::start("127.0.0.1:0", support::store(1 << 20)).await;
    let mut o = opts(&t);
    o.ctrl_loss_tmo = Some(Duration::ZERO);
    o.reconnect_delay = Duration::from_secs(10);
    let c = Controller::connect(o).await.unwrap();
    t.kill();
    drop(t);
    let e = tokio::time::timeout(Duration::from_secs(3), c.read(1, 0, 1))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::ControllerLost(_)), "{e}");
}

/// A command the controller sits on is aborted after `io_timeout` and sent
/// again; the caller gets its data, and the association is never reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_command_is_aborted_and_sent_again() {
    use std::sync::atomic::Ordering;
    let t = MiniTarget::start("127.0.0.1:0", support::store(1 << 20)).await;
    t.faults.honour_abort.store(true, Ordering::Relaxed);
    let mut o = opts(&t);
    o.io_timeout = Some(Duration::from_millis(400));
    let c = Controller::connect(o).await.unwrap();
    let d = pattern(512, 9);
    c.write(1, 7, d.clone(), false).await.unwrap();
    t.faults.hold(7, 1);
    let start = std::time::Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(10), c.read(1, 7, 1))
        .await
        .expect("a held read must not hang the caller")
        .unwrap();
    assert_eq!(got, d);
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    let aborts = t.faults.aborts.lock().unwrap().clone();
    assert_eq!(aborts.len(), 1, "{aborts:?}");
    assert!(aborts[0].0 >= 1, "Abort names the I/O queue: {aborts:?}");
    assert_eq!(t.faults.associations.load(Ordering::Relaxed), 1, "no reset");
    assert_eq!(c.state(), LinkState::Live);
    c.disconnect().await.unwrap();
}

/// When Abort does not free the command, the association is reset and the
/// commands in flight are sent again on the new one, in submission order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unabortable_commands_reset_the_association_and_resend_in_order() {
    use std::sync::atomic::Ordering;
    let t = MiniTarget::start("127.0.0.1:0", support::store(1 << 20)).await;
    let mut o = opts(&t);
    o.nr_io_queues = 1;
    o.io_timeout = Some(Duration::from_millis(300));
    o.reconnect_delay = Duration::from_millis(100);
    let c = Controller::connect(o).await.unwrap();
    for lba in [20u64, 21, 22] {
        t.faults.hold(lba, 1);
    }
    let mut writes = Vec::new();
    for lba in [20u64, 21, 22] {
        let c = c.clone();
        writes.push(tokio::spawn(async move {
            c.write(1, lba, pattern(512, lba), false).await
        }));
        // Submitted one after the other on the one I/O queue.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in writes {
        tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("held writes must not hang the caller")
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        t.faults.associations.load(Ordering::Relaxed),
        2,
        "one reset"
    );
    assert_eq!(t.faults.aborts.lock().unwrap().len(), 3);
    let log = t.faults.write_log.lock().unwrap().clone();
    let lbas: Vec<u64> = log.iter().map(|w| w.1).collect();
    assert_eq!(lbas, vec![20, 21, 22], "re-sent in submission order");
    for lba in [20u64, 21, 22] {
        assert_eq!(c.read(1, lba, 1).await.unwrap(), pattern(512, lba));
    }
    assert_eq!(c.state(), LinkState::Live);
    c.disconnect().await.unwrap();
}

/// Without a timeout a held command stays outstanding (the old behaviour, now
/// only on request) and no Abort is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_io_timeout_waits() {
    let t = MiniTarget::start("127.0.0.1:0", support::store(1 << 20)).await;
    let mut o = opts(&t);
    o.io_timeout = None;
    let c = Controller::connect(o).await.unwrap();
    t.faults.hold(3, 1);
    let r = tokio::time::timeout(Duration::from_millis(800), c.read(1, 3, 1)).await;
    assert!(r.is_err(), "held without a timeout");
    assert!(t.faults.aborts.lock().unwrap().is_empty());
    c.disconnect().await.unwrap();
}

/// A failfast handle (for multipath): its command in flight when the
/// association dies fails at once with PathUnavailable and is never sent
/// again after the reconnect, and a command sent while reconnecting fails at
/// once; a plain handle's command on the same association waits and is sent
/// again on the new association.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failfast_commands_fail_at_once_and_are_not_resent() {
    let store = support::store(1 << 20);
    let faults = std::sync::Arc::new(support::Faults::default());
    faults.hold(100, 1);
    faults.hold(200, 1);
    let t = MiniTarget::start_with("127.0.0.1:0", store.clone(), faults.clone()).await;
    let addr = t.addr.to_string();
    let c = Controller::connect(opts(&t)).await.unwrap();
    let ff = c.failfast();
    assert!(ff.same_association(&c));
    let w_ff = {
        let ff = ff.clone();
        tokio::spawn(async move { ff.write(1, 100, vec![1u8; 512], false).await })
    };
    let w_plain = {
        let c = c.clone();
        tokio::spawn(async move { c.write(1, 200, vec![2u8; 512], false).await })
    };
    // Both are held by the target; then it dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!w_ff.is_finished() && !w_plain.is_finished());
    t.kill();
    drop(t);
    let e = tokio::time::timeout(Duration::from_secs(3), w_ff)
        .await
        .expect("the failfast write ends at once")
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::PathUnavailable(_)), "{e}");
    assert!(e.is_path_error());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        matches!(c.state(), LinkState::Reconnecting { .. }),
        "{:?}",
        c.state()
    );
    let e = tokio::time::timeout(Duration::from_secs(1), ff.read(1, 0, 1))
        .await
        .expect("a failfast read while reconnecting ends at once")
        .unwrap_err();
    assert!(matches!(e, Error::PathUnavailable(_)), "{e}");
    assert!(
        !w_plain.is_finished(),
        "the plain write waits for the reconnect"
    );
    let f2 = std::sync::Arc::new(support::Faults::default());
    let t = MiniTarget::start_with(&addr, store.clone(), f2.clone()).await;
    tokio::time::timeout(Duration::from_secs(20), w_plain)
        .await
        .expect("the plain write completes after the reconnect")
        .unwrap()
        .unwrap();
    let log: Vec<u64> = f2.write_log.lock().unwrap().iter().map(|w| w.1).collect();
    assert!(log.contains(&200), "{log:?}");
    assert!(
        !log.contains(&100),
        "the failfast write was sent again: {log:?}"
    );
    // Live again: the failfast handle works.
    ff.write(1, 100, vec![3u8; 512], false).await.unwrap();
    assert_eq!(c.read(1, 100, 1).await.unwrap(), vec![3u8; 512]);
    c.disconnect().await.unwrap();
    drop(t);
}
