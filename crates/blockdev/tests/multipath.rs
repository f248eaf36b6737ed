//! [`Multipath`] against our real target over loopback: two paths to one
//! namespace (two ports of one target, then two target instances serving one
//! file, an HA pair), I/O running all along while one path is taken away by an
//! ANA change and by killing its target. No operation may fail, and every
//! block must read back as last written.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nvmf_blockdev::multipath::{IoPolicy, Multipath, PathUse};
use nvmf_blockdev::BlockOp;
use nvmf_controller::ana::{AnaPortState, AnaState};
use nvmf_controller::config::{BackendSpec, Limits, NamespaceConfig, SubsystemConfig};
use nvmf_controller::{Target, TargetConfig};
use nvmf_host::TransportAddr;
use nvmf_host::{ConnectOptions, Controller, LinkState};
use nvmf_proto::log::ana_state;

const NQN: &str = "nqn.2024-01.io.nvmf-rs:mpath";
const BS: usize = 512;
/// Blocks the writers cover (each writer its own stripe).
const BLOCKS: u64 = 2048;

fn config(listen: &[&str], backend: BackendSpec, states: Vec<AnaPortState>) -> TargetConfig {
    TargetConfig {
        listen: listen.iter().map(|a| a.parse().unwrap()).collect(),
        discovery_listen: vec![],
        subsystems: vec![SubsystemConfig {
            nqn: NQN.into(),
            serial: "mpath1".into(),
            model: "test".into(),
            cntlid_min: 1,
            cntlid_max: 0xFFEF,
            hosts: vec![],
            namespaces: vec![NamespaceConfig {
                nsid: 1,
                backend,
                block_size: BS as u32,
                direct: Default::default(),
                uuid: None,
                ana_group: 1,
            }],
        }],
        header_digest: false,
        data_digest: false,
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

async fn connect(addr: TransportAddr) -> Controller {
    let mut o = ConnectOptions::new(addr, NQN);
    o.nr_io_queues = 2;
    o.ctrl_loss_tmo = Some(Duration::from_secs(3));
    o.reconnect_delay = Duration::from_secs(1);
    Controller::connect(o).await.expect("connect")
}

/// `writers` tasks, each rewriting its own stripe of blocks with a counter
/// and reading each block back, until `stop`; any error or mismatch fails.
/// Returns the write-and-read-back rounds done and the longest one (how
/// long a failover held an operation up).
fn load(
    mp: &Multipath,
    writers: u64,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, Duration)>> {
    (0..writers)
        .map(|w| {
            let mp = mp.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut longest = Duration::ZERO;
                let stripe = BLOCKS / writers;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = std::time::Instant::now();
                    let lba = w * stripe + (n % (stripe / 4)) * 4;
                    let tag = format!("w{w} n{n} ");
                    let mut d = tag.as_bytes().repeat(BS * 4 / tag.len() + 1);
                    d.truncate(BS * 4);
                    mp.run(BlockOp::Write {
                        slba: lba,
                        data: Bytes::from(d.clone()),
                        fua: false,
                    })
                    .await
                    .unwrap_or_else(|e| panic!("write {n} of writer {w}: {e}"));
                    let r = mp
                        .run(BlockOp::Read { slba: lba, nlb: 4 })
                        .await
                        .unwrap_or_else(|e| panic!("read {n} of writer {w}: {e}"));
                    assert!(r == d, "writer {w}: block {lba} read back wrong");
                    longest = longest.max(t0.elapsed());
                    n += 1;
                }
                (n, longest)
            })
        })
        .collect()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn commands(mp: &Multipath) -> Vec<u64> {
    mp.paths().iter().map(|p| p.commands).collect()
}

/// Two ports of one target; round-robin uses both; port 2 goes Inaccessible
/// mid-I/O (a reload, which sends ANA Change notices) and then Non-Optimized
/// while port 1 goes Optimized... all without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ana_change_moves_io_without_errors() {
    let listen = ["127.0.0.1:0", "127.0.0.2:0"];
    let cfg = config(&listen, BackendSpec::Memory { size: 1 << 20 }, vec![]);
    let t = Arc::new(Target::bind(&cfg).await.unwrap());
    let ports = t.ports().to_vec();
    tokio::spawn(t.clone().serve());
    let (a, b) = (connect(ports[0]).await, connect(ports[1]).await);
    assert_eq!(a.ana_state(1), Some(ana_state::OPTIMIZED));
    let mp = Multipath::new(&a, 1, IoPolicy::RoundRobin);
    mp.add_path(&b, 1);
    mp.add_path(&b, 1);
    assert_eq!(mp.len(), 2, "a path is added once");

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&mp, 4, stop.clone());
    wait_until("I/O on both paths", || {
        commands(&mp).iter().all(|&c| c > 50)
    })
    .await;
    let c = commands(&mp);
    let (lo, hi) = (c[0].min(c[1]), c[0].max(c[1]));
    assert!(hi - lo <= hi / 4 + 8, "round-robin spreads evenly: {c:?}");

    // Port 2 inaccessible: its path stops getting I/O once the ANA Change
    // notice was handled (or the first ANA status made us read the log).
    let st = |s| {
        vec![AnaPortState {
            port: listen[1].parse().unwrap(),
            group: 1,
            state: s,
        }]
    };
    t.reload(&config(
        &listen,
        BackendSpec::Memory { size: 1 << 20 },
        st(AnaState::Inaccessible),
    ))
    .unwrap();
    wait_until("path 2 inaccessible", || {
        mp.paths()[1].ana == Some(ana_state::INACCESSIBLE)
    })
    .await;
    assert_eq!(mp.paths()[1].usable, PathUse::Waiting);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = commands(&mp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = commands(&mp);
    assert!(
        after[0] > before[0] + 20,
        "path 1 carries on: {before:?} {after:?}"
    );
    assert_eq!(after[1], before[1], "no I/O to the inaccessible path");

    // Port 2 non-optimized and port 1 inaccessible: everything moves to 2.
    t.reload(&config(
        &listen,
        BackendSpec::Memory { size: 1 << 20 },
        vec![
            AnaPortState {
                port: listen[0].parse().unwrap(),
                group: 1,
                state: AnaState::Inaccessible,
            },
            st(AnaState::NonOptimized)[0].clone(),
        ],
    ))
    .unwrap();
    wait_until("path 1 inaccessible, 2 non-optimized", || {
        let p = mp.paths();
        p[0].usable == PathUse::Waiting && p[1].usable == PathUse::NonOptimized
    })
    .await;
    let before = commands(&mp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = commands(&mp);
    assert!(after[1] > before[1] + 20, "{before:?} {after:?}");
    assert_eq!(after[0], before[0], "no I/O to the inaccessible path");

    // Queue depth picks the optimized path over the non-optimized one.
    t.reload(&config(
        &listen,
        BackendSpec::Memory { size: 1 << 20 },
        st(AnaState::NonOptimized),
    ))
    .unwrap();
    mp.set_policy(IoPolicy::QueueDepth);
    wait_until("path 1 optimized again", || {
        mp.paths()[0].usable == PathUse::Optimized
    })
    .await;
    let before = commands(&mp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = commands(&mp);
    assert!(after[0] > before[0] + 20, "{before:?} {after:?}");
    assert_eq!(
        after[1], before[1],
        "non-optimized unused while optimized is usable"
    );

    stop.store(true, Ordering::Relaxed);
    let mut longest = Duration::ZERO;
    for t in tasks {
        let (n, l) = t.await.expect("no I/O error");
        assert!(n > 0);
        longest = longest.max(l);
    }
    // ANA statuses seen before the notices were handled went elsewhere.
    let p = mp.paths();
    eprintln!(
        "FIGURE: ANA changes: commands per path {:?}, failovers {:?}, longest write+read round {longest:?}",
        commands(&mp),
        p.iter().map(|p| p.failovers).collect::<Vec<_>>()
    );
}

/// A target instance in its own runtime on its own thread, so that it can be
/// killed (the runtime dropped: every socket closes at once, as when the
/// process dies).
struct Instance {
    port: TransportAddr,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Instance {
    fn start(cfg: TargetConfig) -> Self {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (kill, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let t = Arc::new(Target::bind(&cfg).await.unwrap());
                port_tx.send(t.ports()[0]).unwrap();
                tokio::select! {
                    _ = t.serve() => {}
                    _ = kill_rx => {}
                }
            });
            rt.shutdown_background();
        });
        Self {
            port: port_rx.recv().unwrap(),
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ha_config(path: &Path, lo: u16, hi: u16) -> TargetConfig {
    let mut c = config(
        &["127.0.0.1:0"],
        BackendSpec::File {
            path: path.to_path_buf(),
            size: Some(1 << 20),
        },
        vec![],
    );
    c.subsystems[0].cntlid_min = lo;
    c.subsystems[0].cntlid_max = hi;
    c
}

/// Two target instances serving one file (an HA pair with distinct CNTLID
/// ranges); one is killed mid-I/O: the operations in flight on it fail over
/// to the other, none fails, and the dead path is reported lost after its
/// ctrl-loss-tmo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_target_of_two_loses_no_io() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.img");
    let mut t1 = Instance::start(ha_config(&path, 1, 99));
    let t2 = Instance::start(ha_config(&path, 100, 199));
    let (a, b) = (connect(t1.port).await, connect(t2.port).await);
    let (na, nb) = (a.namespace(1).unwrap(), b.namespace(1).unwrap());
    assert_eq!((na.id.nguid, na.id.eui64), (nb.id.nguid, nb.id.eui64));
    let mp = Multipath::new(&a, 1, IoPolicy::QueueDepth);
    mp.add_path(&b, 1);

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&mp, 4, stop.clone());
    wait_until("I/O on both paths", || {
        commands(&mp).iter().all(|&c| c > 50)
    })
    .await;
    t1.kill();
    wait_until("path 1 down", || mp.paths()[0].link != LinkState::Live).await;
    let before = commands(&mp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = commands(&mp);
    assert!(
        after[1] > before[1] + 20,
        "path 2 carries on: {before:?} {after:?}"
    );
    // ctrl-loss-tmo (3 s) ends the reconnect attempts: the path is gone.
    for _ in 0..100 {
        if mp.paths()[0].usable == PathUse::Gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        mp.paths()[0].usable,
        PathUse::Gone,
        "{:?}",
        mp.paths()[0].link
    );
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut longest = Duration::ZERO;
    for t in tasks {
        let (n, l) = t.await.expect("no I/O error");
        total += n;
        longest = longest.max(l);
    }
    assert!(total > 100);
    eprintln!(
        "FIGURE: target killed: longest write+read round {longest:?}, commands per path {:?}, failovers {:?}",
        commands(&mp),
        mp.paths().iter().map(|p| p.failovers).collect::<Vec<_>>()
    );
}

/// With every path gone an operation fails (after the wait bound), rather
/// than hanging; a media error is not retried on another path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_left_fails_and_caller_errors_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.img");
    let mut t1 = Instance::start(ha_config(&path, 1, 99));
    let mut o = ConnectOptions::new(t1.port, NQN);
    o.nr_io_queues = 1;
    o.ctrl_loss_tmo = Some(Duration::from_secs(1));
    o.reconnect_delay = Duration::from_secs(1);
    let a = Controller::connect(o).await.unwrap();
    let mp = Multipath::new(&a, 1, IoPolicy::RoundRobin);
    // Out of range: Invalid, straight to the caller, counted on one path once.
    let e = mp
        .run(BlockOp::Read {
            slba: BLOCKS * 100,
            nlb: 1,
        })
        .await
        .unwrap_err();
    assert!(!e.is_path_error(), "{e}");
    assert_eq!(commands(&mp), [1]);
    t1.kill();
    let start = std::time::Instant::now();
    let e = mp.run(BlockOp::Read { slba: 0, nlb: 1 }).await.unwrap_err();
    assert!(e.is_path_error(), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "failed within about ctrl-loss-tmo, took {:?}",
        start.elapsed()
    );
}
