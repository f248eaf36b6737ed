//! The target over real loopback TCP, driven by the protocol core's host queue.

use bytes::Bytes;
use nvmf_controller::config::{BackendSpec, Limits, NamespaceConfig, SubsystemConfig};
use nvmf_controller::{Target, TargetConfig};
use nvmf_proto::fabrics::{ConnectCommand, ConnectData, CNTLID_DYNAMIC, DISCOVERY_NQN};
use nvmf_proto::identify::{cns, decode_ns_list, IdentifyController, IdentifyNamespace};
use nvmf_proto::log::{lid, subtype, DiscoveryLog};
use nvmf_proto::sqe::{admin_opcode, io_opcode, Fuse};
use nvmf_proto::tcp::{Digests, HostData, HostQueueConfig};
use nvmf_proto::{Sqe, Status};
use nvmf_transport::{HostConnection, TransportAddr};

mod common;
use common::{enable, read_discovery_log, start};

const NQN: &str = "nqn.2024-01.io.nvmf-rs:test";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";

fn config(file: Option<std::path::PathBuf>) -> TargetConfig {
    let mut namespaces = vec![NamespaceConfig {
        nsid: 1,
        backend: BackendSpec::Memory { size: 64 << 20 },
        block_size: 512,
        direct: Default::default(),
        uuid: None,
        ana_group: 1,
    }];
    if let Some(path) = file {
        namespaces.push(NamespaceConfig {
            nsid: 2,
            backend: BackendSpec::File {
                path,
                size: Some(32 << 20),
            },
            block_size: 4096,
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
            serial: "sn1".into(),
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
        ana_states: vec![],
        referrals: vec![],
        metrics: None,
        tls: None,
    }
}

async fn connect_queue(
    addr: &TransportAddr,
    subnqn: &str,
    qid: u16,
    cntlid: u16,
    digests: Digests,
) -> (HostConnection, Result<u16, Status>) {
    connect_queue_as(addr, subnqn, HOSTNQN, qid, cntlid, digests).await
}

/// Connects one queue as `hostnqn`; the result is the CNTLID or the status.
async fn connect_queue_as(
    addr: &TransportAddr,
    subnqn: &str,
    hostnqn: &str,
    qid: u16,
    cntlid: u16,
    digests: Digests,
) -> (HostConnection, Result<u16, Status>) {
    let depth = if qid == 0 { 32 } else { 128 };
    let mut c = HostConnection::connect(
        addr,
        HostQueueConfig {
            digests,
            queue_depth: depth,
            ..Default::default()
        },
    )
    .await
    .unwrap();
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
        hostnqn: hostnqn.into(),
    };
    let r = common::send_connect(&mut c, &cmd, &data).await.unwrap();
    let res = if r.cqe.status.is_success() {
        Ok(r.cqe.dw0 as u16)
    } else {
        Err(r.cqe.status)
    };
    (c, res)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bring_up_identify_write_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Some(dir.path().join("ns2.img")));
    let (_t, addr) = start(&cfg).await;
    for digests in [
        Digests::default(),
        Digests {
            header: true,
            data: true,
        },
    ] {
        let (mut admin, cntlid) = connect_queue(&addr, NQN, 0, CNTLID_DYNAMIC, digests).await;
        let cntlid = cntlid.unwrap();
        // Admin commands before CC.EN fail with Command Sequence Error.
        let early = admin
            .execute(
                Sqe::identify(cns::CONTROLLER, 0),
                HostData::FromController(4096),
            )
            .await
            .unwrap();
        assert_eq!(early.cqe.status, Status::COMMAND_SEQUENCE_ERROR.dnr());
        enable(&mut admin).await;
        let id = admin
            .execute(
                Sqe::identify(cns::CONTROLLER, 0),
                HostData::FromController(4096),
            )
            .await
            .unwrap();
        let id = IdentifyController::decode(&id.data_contiguous());
        assert_eq!(id.subnqn, NQN);
        assert_eq!(id.cntlid, cntlid);
        assert_eq!(
            id.in_capsule_data_size(),
            nvmf_controller::config::TCP_IN_CAPSULE_DATA
        );
        let list = admin
            .execute(
                Sqe::identify(cns::ACTIVE_NS_LIST, 0),
                HostData::FromController(4096),
            )
            .await
            .unwrap();
        assert_eq!(decode_ns_list(&list.data_contiguous()), vec![1, 2]);
        let ns2 = admin
            .execute(
                Sqe::identify(cns::NAMESPACE, 2),
                HostData::FromController(4096),
            )
            .await
            .unwrap();
        let ns2 = IdentifyNamespace::decode(&ns2.data_contiguous());
        assert_eq!(ns2.block_size(), 4096);
        assert_eq!(ns2.nsze, 8192);
        let mut nq = Sqe::new(admin_opcode::SET_FEATURES);
        nq.cdw10 = 0x07;
        nq.cdw11 = 0x0001_0001;
        let r = admin.execute(nq, HostData::None).await.unwrap();
        assert_eq!(r.cqe.dw0, 0x0001_0001);

        let (mut io, r) = connect_queue(&addr, NQN, 1, cntlid, digests).await;
        assert_eq!(r, Ok(cntlid));
        // In-capsule data up to what the target advertised (128 KiB on TCP).
        io.set_limits(nvmf_controller::config::TCP_IN_CAPSULE_DATA, 128);
        // In-capsule writes (4 KiB, and 128 KiB: the whole limit), an R2T
        // write (256 KiB), on both namespaces, then read back.
        for (nsid, bs) in [(1u32, 512u64), (2, 4096)] {
            for len in [4096usize, 128 * 1024, 256 * 1024] {
                let data: Vec<u8> = (0..len)
                    .map(|i| (i * 7 + nsid as usize + len) as u8)
                    .collect();
                let slba = 64;
                let nlb = (len as u64 / bs) as u32;
                let w = io
                    .execute(
                        Sqe::rw(io_opcode::WRITE, nsid, slba, nlb, false),
                        HostData::ToController(Bytes::from(data.clone())),
                    )
                    .await
                    .unwrap();
                assert!(w.cqe.status.is_success(), "{:?}", w.cqe.status);
                let r = io
                    .execute(
                        Sqe::rw(io_opcode::READ, nsid, slba, nlb, false),
                        HostData::FromController(len as u32),
                    )
                    .await
                    .unwrap();
                assert!(r.cqe.status.is_success());
                assert_eq!(r.data_contiguous(), data);
            }
        }
        // Out of range and bad namespace.
        let r = io
            .execute(
                Sqe::rw(io_opcode::READ, 1, (64 << 20) / 512, 1, false),
                HostData::FromController(512),
            )
            .await
            .unwrap();
        assert_eq!(r.cqe.status, Status::LBA_OUT_OF_RANGE.dnr());
        let r = io
            .execute(
                Sqe::rw(io_opcode::READ, 9, 0, 1, false),
                HostData::FromController(512),
            )
            .await
            .unwrap();
        assert_eq!(r.cqe.status, Status::INVALID_NS.dnr());
        // Flush and the SMART log.
        let mut f = Sqe::new(io_opcode::FLUSH);
        f.nsid = 2;
        assert!(io
            .execute(f, HostData::None)
            .await
            .unwrap()
            .cqe
            .status
            .is_success());
        let smart = admin
            .execute(
                Sqe::get_log_page(lid::SMART, u32::MAX, 512, 0, false),
                HostData::FromController(512),
            )
            .await
            .unwrap();
        let smart = nvmf_proto::log::SmartLog::decode(&smart.data_contiguous());
        assert!(smart.host_writes >= 4);
        io.close().await;
        admin.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_connect_errors() {
    let cfg = config(None);
    let (_t, addr) = start(&cfg).await;
    let (mut d, r) =
        connect_queue(&addr, DISCOVERY_NQN, 0, CNTLID_DYNAMIC, Digests::default()).await;
    r.unwrap();
    let log = read_discovery_log(&mut d).await;
    // The current discovery subsystem first (as nvmet), then the subsystem.
    assert_eq!(log.numrec, 2);
    assert_eq!(log.entries[0].subtype, subtype::CURRENT_DISCOVERY);
    assert_eq!(log.entries[0].subnqn, DISCOVERY_NQN);
    assert_eq!(log.entries[1].subtype, subtype::NVME);
    assert_eq!(log.entries[1].subnqn, NQN);
    assert_eq!(log.entries[1].trsvcid, addr.trsvcid());

    // Unknown subsystem: Connect Invalid Parameters pointing at SUBNQN in the data.
    let (_c, r) = connect_queue(
        &addr,
        "nqn.2024-01.io.nvmf-rs:nope",
        0,
        CNTLID_DYNAMIC,
        Digests::default(),
    )
    .await;
    assert_eq!(r, Err(Status::CONNECT_INVALID_PARAMETERS.dnr()));
    // I/O queue for a controller that does not exist.
    let (_c, r) = connect_queue(&addr, NQN, 1, 77, Digests::default()).await;
    assert_eq!(r, Err(Status::CONNECT_INVALID_PARAMETERS.dnr()));
    // I/O queue before the controller is enabled.
    let (_a, r) = connect_queue(&addr, NQN, 0, CNTLID_DYNAMIC, Digests::default()).await;
    let (_c, r2) = connect_queue(&addr, NQN, 1, r.unwrap(), Digests::default()).await;
    assert_eq!(r2, Err(Status::COMMAND_SEQUENCE_ERROR.dnr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_namespace_and_raises_an_event() {
    let mut cfg = config(None);
    let (t, addr) = start(&cfg).await;
    let (mut admin, cntlid) =
        connect_queue(&addr, NQN, 0, CNTLID_DYNAMIC, Digests::default()).await;
    cntlid.unwrap();
    enable(&mut admin).await;
    // Enable Namespace Attribute notices and leave an Asynchronous Event Request outstanding.
    let mut aec = Sqe::new(admin_opcode::SET_FEATURES);
    aec.cdw10 = 0x0B;
    aec.cdw11 = nvmf_proto::features::aec::NS_ATTRIBUTE;
    assert!(admin
        .execute(aec, HostData::None)
        .await
        .unwrap()
        .cqe
        .status
        .is_success());
    let aer = admin
        .submit(Sqe::new(admin_opcode::ASYNC_EVENT_REQUEST), HostData::None)
        .unwrap();
    admin.kick().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    cfg.subsystems[0].namespaces.push(NamespaceConfig {
        nsid: 7,
        backend: BackendSpec::Memory { size: 8 << 20 },
        block_size: 4096,
        direct: Default::default(),
        uuid: None,
        ana_group: 1,
    });
    let summary = t.reload(&cfg).unwrap();
    assert_eq!(summary.changed_namespaces, vec![(NQN.to_string(), vec![7])]);

    let c = tokio::time::timeout(std::time::Duration::from_secs(5), admin.next_completion())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.cqe.cid, aer);
    assert_eq!(
        nvmf_proto::features::aen_fields(c.cqe.dw0),
        (2, 0, lid::CHANGED_NS)
    );
    let log = admin
        .execute(
            Sqe::get_log_page(lid::CHANGED_NS, 0, 4096, 0, false),
            HostData::FromController(4096),
        )
        .await
        .unwrap();
    assert_eq!(decode_ns_list(&log.data_contiguous()), vec![7]);
    let list = admin
        .execute(
            Sqe::identify(cns::ACTIVE_NS_LIST, 0),
            HostData::FromController(4096),
        )
        .await
        .unwrap();
    assert_eq!(decode_ns_list(&list.data_contiguous()), vec![1, 7]);

    // Removing it again is a change too; the log was read, so the event fires again.
    cfg.subsystems[0].namespaces.pop();
    let summary = t.reload(&cfg).unwrap();
    assert_eq!(summary.changed_namespaces, vec![(NQN.to_string(), vec![7])]);
    let aer2 = admin
        .submit(Sqe::new(admin_opcode::ASYNC_EVENT_REQUEST), HostData::None)
        .unwrap();
    admin.kick().unwrap();
    let c = tokio::time::timeout(std::time::Duration::from_secs(5), admin.next_completion())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.cqe.cid, aer2);
    let list = admin
        .execute(
            Sqe::identify(cns::ACTIVE_NS_LIST, 0),
            HostData::FromController(4096),
        )
        .await
        .unwrap();
    assert_eq!(decode_ns_list(&list.data_contiguous()), vec![1]);
}

/// An enabled admin queue and I/O queue 1 of one controller, no digests.
async fn admin_and_io(addr: &TransportAddr) -> (HostConnection, HostConnection) {
    let (mut admin, cntlid) = connect_queue(addr, NQN, 0, CNTLID_DYNAMIC, Digests::default()).await;
    enable(&mut admin).await;
    let (io, r) = connect_queue(addr, NQN, 1, cntlid.unwrap(), Digests::default()).await;
    r.unwrap();
    (admin, io)
}

/// CPU time (user + system) of this process, which is the target here.
fn process_cpu() -> std::time::Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 (here 11 and 12), in clock ticks.
    let hz = 100; // USER_HZ on Linux
    std::time::Duration::from_millis((f[11] + f[12]) * 1000 / hz)
}

/// The congestion control `ss` reports for the established connection(s) on
/// local port `port` (iproute2's ss prints the algorithm's name in its -i info).
fn congestion_of(port: u16) -> String {
    let out = std::process::Command::new("ss")
        .args(
            ["-tinH", "state", "established", "( sport = :PORT )"]
                .map(|a| a.replace("PORT", &port.to_string())),
        )
        .output()
        .expect("ss (iproute2) is needed: scripts/install-deps.sh installs it");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `busy_poll_us` and `tcp_congestion`: I/O works with both; accepted
/// connections use the configured congestion control; a polling queue that goes
/// idle stops polling (the target's CPU time stays flat while nothing happens),
/// both when it polls after every pass and with the default adaptive policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_poll_and_congestion_control() {
    for (us, batch) in [
        (200, 0),
        (
            nvmf_controller::config::DEFAULT_BUSY_POLL_US,
            nvmf_controller::config::DEFAULT_BUSY_POLL_BATCH,
        ),
    ] {
        poll_then_idle(us, batch).await;
    }

    // A congestion control the kernel lacks is refused at start with a clear error.
    let mut bad = config(None);
    bad.tcp_congestion = Some("nosuchcc".into());
    let e = Target::bind(&bad).await.unwrap_err().to_string();
    assert!(e.contains("nosuchcc") && e.contains("available"), "{e}");
}

async fn poll_then_idle(busy_poll_us: u32, busy_poll_batch: u32) {
    let mut cfg = config(None);
    cfg.busy_poll_us = busy_poll_us;
    cfg.busy_poll_batch = busy_poll_batch;
    cfg.tcp_congestion = Some("reno".into());
    let (_t, addr) = start(&cfg).await;
    let (admin, mut io) = admin_and_io(&addr).await;
    for i in 0..200u64 {
        let data: Vec<u8> = (0..4096).map(|k| (k as u64 * 7 + i) as u8).collect();
        let w = io
            .execute(
                Sqe::rw(io_opcode::WRITE, 1, i * 8, 8, false),
                HostData::ToController(Bytes::from(data.clone())),
            )
            .await
            .unwrap();
        assert!(w.cqe.status.is_success());
        let r = io
            .execute(
                Sqe::rw(io_opcode::READ, 1, i * 8, 8, false),
                HostData::FromController(4096),
            )
            .await
            .unwrap();
        assert!(r.cqe.status.is_success());
        assert_eq!(r.data_contiguous(), data);
    }
    let ss = congestion_of(addr.socket.port());
    assert!(
        ss.contains("reno") && !ss.contains("cubic") && !ss.contains("bbr"),
        "accepted connections should use reno; ss -ti says:\n{ss}"
    );
    // Idle: both queues (admin and I/O) stop polling within their budget.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before = process_cpu();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let used = process_cpu() - before;
    assert!(
        used < std::time::Duration::from_millis(300),
        "the target used {used:?} of CPU in 1.5 s with nothing to do \
         (busy_poll_us {busy_poll_us}, busy_poll_batch {busy_poll_batch}): is a queue still polling?"
    );
    io.close().await;
    admin.close().await;
}

/// More read data outstanding on one queue than `max_pending_send_bytes` (8 MiB):
/// the target holds back while its send backlog is over the limit, and must
/// pick up the commands it held once the backlog drains, even when the host has
/// nothing more to send (it waits for those very responses). Before the fix the
/// queue waited for the host forever, in every run of this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_beyond_the_send_backlog_limit_all_complete() {
    let cfg = config(None);
    let (_t, addr) = start(&cfg).await;
    let (admin, mut io) = admin_and_io(&addr).await;
    const MIB: u32 = 1 << 20;
    // Rounds of a full queue (128 reads of 1 MiB, 16 times the limit): whether
    // the backlog drains at a moment that used to stall depends on timing.
    for round in 0..10 {
        let n = 128u16;
        for i in 0..n {
            io.submit(
                Sqe::rw(io_opcode::READ, 1, u64::from(i % 64) * 2048, 2048, false),
                HostData::FromController(MIB),
            )
            .unwrap();
        }
        io.kick().unwrap();
        let all = async {
            for _ in 0..n {
                let c = io.next_completion().await.unwrap();
                assert!(c.cqe.status.is_success());
                assert_eq!(c.data.iter().map(|b| b.len()).sum::<usize>(), MIB as usize);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), all)
            .await
            .unwrap_or_else(|_| {
                panic!("round {round}: the target stopped answering with reads still outstanding")
            });
    }
    io.close().await;
    admin.close().await;
}

/// The discovery log `hostnqn` gets through `addr`.
async fn discovery_log_as(addr: &TransportAddr, hostnqn: &str) -> DiscoveryLog {
    let (mut d, r) = connect_queue_as(
        addr,
        DISCOVERY_NQN,
        hostnqn,
        0,
        CNTLID_DYNAMIC,
        Digests::default(),
    )
    .await;
    r.unwrap();
    read_discovery_log(&mut d).await
}

/// The subsystem NQNs the discovery log lists for `hostnqn`, sorted, and GENCTR.
async fn discovery_log_of(addr: &TransportAddr, hostnqn: &str) -> (Vec<String>, u64) {
    let log = discovery_log_as(addr, hostnqn).await;
    let mut nqns: Vec<String> = log
        .entries
        .iter()
        .filter(|e| e.subtype == subtype::NVME)
        .map(|e| e.subnqn.clone())
        .collect();
    nqns.sort();
    (nqns, log.genctr)
}

/// Allowed hosts (issue 11): enforced at Connect, reflected in each host's
/// discovery log, and a reload that takes a host off the list ends its
/// controller at once. An empty Host NQN (SPDK's initiator sends one) reaches
/// only a subsystem open to any host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_at_connect_in_discovery_and_on_reload() {
    const H1: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000b1";
    const H2: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000b2";
    const OPEN: &str = "nqn.2024-01.io.nvmf-rs:open";
    let mut cfg = config(None);
    cfg.subsystems[0].hosts = vec![nvmf_controller::config::HostConfig::plain(H1)];
    let mut open = cfg.subsystems[0].clone();
    open.nqn = OPEN.into();
    open.serial = "sn2".into();
    open.hosts = vec![];
    cfg.subsystems.push(open);
    let (t, addr) = start(&cfg).await;

    let (_c, r) = connect_queue_as(&addr, NQN, H2, 0, CNTLID_DYNAMIC, Digests::default()).await;
    assert_eq!(r, Err(Status::CONNECT_INVALID_HOST.dnr()));
    let (_c, r) = connect_queue_as(&addr, NQN, "", 0, CNTLID_DYNAMIC, Digests::default()).await;
    assert_eq!(r, Err(Status::CONNECT_INVALID_HOST.dnr()));
    let (mut empty, r) =
        connect_queue_as(&addr, OPEN, "", 0, CNTLID_DYNAMIC, Digests::default()).await;
    r.expect("an empty Host NQN reaches a subsystem open to any host");
    enable(&mut empty).await;

    let (nqns, gen1) = discovery_log_of(&addr, H1).await;
    assert_eq!(nqns, vec![OPEN.to_string(), NQN.to_string()]);
    let (nqns, _) = discovery_log_of(&addr, H2).await;
    assert_eq!(nqns, vec![OPEN.to_string()]);

    let (mut a1, r) = connect_queue_as(&addr, NQN, H1, 0, CNTLID_DYNAMIC, Digests::default()).await;
    r.unwrap();
    enable(&mut a1).await;

    // Swap H1 for H2: H1's controller ends, H2 may connect, the logs follow.
    cfg.subsystems[0].hosts = vec![nvmf_controller::config::HostConfig::plain(H2)];
    t.reload(&cfg).unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let r = a1
                .execute(Sqe::new(admin_opcode::KEEP_ALIVE), HostData::None)
                .await;
            if r.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(ended.is_ok(), "the removed host's controller still answers");
    let (_c, r) = connect_queue_as(&addr, NQN, H1, 0, CNTLID_DYNAMIC, Digests::default()).await;
    assert_eq!(r, Err(Status::CONNECT_INVALID_HOST.dnr()));
    let (nqns, gen2) = discovery_log_of(&addr, H1).await;
    assert_eq!(nqns, vec![OPEN.to_string()]);
    assert_ne!(
        gen1, gen2,
        "GENCTR must change when the allowed hosts change"
    );
    let (nqns, _) = discovery_log_of(&addr, H2).await;
    assert_eq!(nqns, vec![OPEN.to_string(), NQN.to_string()]);
    // The host with the empty NQN on the open subsystem is untouched.
    let r = empty
        .execute(Sqe::new(admin_opcode::KEEP_ALIVE), HostData::None)
        .await
        .unwrap();
    assert!(r.cqe.status.is_success());
}

/// Issue 13: a wildcard listener is advertised in the discovery log at the
/// address the host reached, never as 0.0.0.0 (which no host can connect to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_listener_is_advertised_at_the_reached_address() {
    let mut cfg = config(None);
    cfg.listen = vec!["0.0.0.0:0".parse().unwrap()];
    let (_t, wild) = start(&cfg).await;
    assert!(wild.socket.ip().is_unspecified());
    let addr = TransportAddr::from_parts("127.0.0.1", &wild.trsvcid()).unwrap();
    let log = discovery_log_as(&addr, HOSTNQN).await;
    for e in &log.entries {
        assert_eq!(e.traddr.trim(), "127.0.0.1", "SUBTYPE {}", e.subtype);
        assert_eq!(e.trsvcid.trim(), wild.trsvcid(), "SUBTYPE {}", e.subtype);
    }
    assert_eq!(log.numrec, 2);
}

/// Issue 13: a reload is applied whole or not at all. One subsystem gains a
/// namespace, the other one whose file cannot be created: the reload fails
/// and neither subsystem changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_changes_nothing() {
    const OTHER: &str = "nqn.2024-01.io.nvmf-rs:other";
    let mut cfg = config(None);
    let mut other = cfg.subsystems[0].clone();
    other.nqn = OTHER.into();
    other.serial = "sn2".into();
    cfg.subsystems.push(other);
    let (t, addr) = start(&cfg).await;
    let (mut admin, r) = connect_queue(&addr, NQN, 0, CNTLID_DYNAMIC, Digests::default()).await;
    r.unwrap();
    enable(&mut admin).await;

    let mut bad = cfg.clone();
    bad.subsystems[0].namespaces.push(NamespaceConfig {
        nsid: 2,
        backend: BackendSpec::Memory { size: 8 << 20 },
        block_size: 512,
        direct: Default::default(),
        uuid: None,
        ana_group: 1,
    });
    bad.subsystems[1].namespaces.push(NamespaceConfig {
        nsid: 2,
        backend: BackendSpec::File {
            path: "/nonexistent-dir/nvmf-rs/x.img".into(),
            size: Some(1 << 20),
        },
        block_size: 512,
        direct: Default::default(),
        uuid: None,
        ana_group: 1,
    });
    assert!(t.reload(&bad).is_err());
    let list = admin
        .execute(
            Sqe::identify(cns::ACTIVE_NS_LIST, 0),
            HostData::FromController(4096),
        )
        .await
        .unwrap();
    assert_eq!(
        decode_ns_list(&list.data_contiguous()),
        vec![1],
        "the first subsystem took its half of a failed reload"
    );
}

/// A file namespace at depth: writes of several sizes and alignments (FUA on
/// some), fused Compare and Write pairs among them, then reads of everything,
/// all outstanding at once, so the queue's io_uring (crate::uring) has many
/// requests in flight and reuses its slots; every block reads back as
/// written, and the file on disk holds the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_namespace_at_depth_reads_back_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns2.img");
    let cfg = config(Some(path.clone()));
    let (_t, addr) = start(&cfg).await;
    let (admin, mut io) = admin_and_io(&addr).await;
    io.set_limits(8192, 128);
    let pattern = |round: u64, lba: u64, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| (round * 131 + lba * 7 + i as u64 / 3) as u8)
            .collect()
    };
    // (slba, blocks): 4 KiB blocks, 1 to 16 blocks, non-overlapping.
    let extents: Vec<(u64, u32)> = (0..96u64).map(|i| (i * 20, 1 + (i % 16) as u32)).collect();
    let fused = |k: usize, round: u64| k % 16 == 1 && round == 1;
    for round in 0..2u64 {
        // CID -> the extent whose write it is (None: a fused half).
        let mut cids = std::collections::HashMap::new();
        for (k, &(slba, nlb)) in extents.iter().enumerate() {
            let data = pattern(round, slba, nlb as usize * 4096);
            let cid = io
                .submit(
                    Sqe::rw(io_opcode::WRITE, 2, slba, nlb, k % 5 == 0),
                    HostData::ToController(Bytes::from(data)),
                )
                .unwrap();
            cids.insert(cid, Some(k));
        }
        while !cids.is_empty() {
            let c = io.next_completion().await.unwrap();
            assert!(
                c.cqe.status.is_success(),
                "cid {}: {:?}",
                c.cqe.cid,
                c.cqe.status
            );
            // Every 16th extent, once its write is done, gets a fused Compare
            // and Write of its first block while the other writes are still
            // in flight: the pair's exclusive hold of the namespace waits for
            // their shares, which the ring keeps until each has completed.
            if let Some(k) = cids.remove(&c.cqe.cid).expect("an outstanding CID") {
                if fused(k, round) {
                    let slba = extents[k].0;
                    let c = io
                        .submit(
                            Sqe::rw(io_opcode::COMPARE, 2, slba, 1, false).with_fuse(Fuse::First),
                            HostData::ToController(Bytes::from(pattern(round, slba, 4096))),
                        )
                        .unwrap();
                    let w = io
                        .submit(
                            Sqe::rw(io_opcode::WRITE, 2, slba, 1, false).with_fuse(Fuse::Second),
                            HostData::ToController(Bytes::from(pattern(7, slba, 4096))),
                        )
                        .unwrap();
                    cids.insert(c, None);
                    cids.insert(w, None);
                }
            }
        }
        let mut reads = std::collections::HashMap::new();
        for &(slba, nlb) in &extents {
            let cid = io
                .submit(
                    Sqe::rw(io_opcode::READ, 2, slba, nlb, false),
                    HostData::FromController(nlb * 4096),
                )
                .unwrap();
            reads.insert(cid, (slba, nlb));
        }
        let mut file_bytes = None;
        while !reads.is_empty() {
            let c = io.next_completion().await.unwrap();
            assert!(c.cqe.status.is_success(), "{:?}", c.cqe.status);
            let (slba, nlb) = reads.remove(&c.cqe.cid).unwrap();
            let mut want = pattern(round, slba, nlb as usize * 4096);
            let k = extents.iter().position(|e| e.0 == slba).unwrap();
            if fused(k, round) {
                want[..4096].copy_from_slice(&pattern(7, slba, 4096));
            }
            assert!(
                c.data_contiguous() == want,
                "extent at LBA {slba}, round {round}"
            );
            let f = file_bytes.get_or_insert_with(|| std::fs::read(&path).unwrap());
            let at = slba as usize * 4096;
            assert!(f[at..at + want.len()] == want[..], "file at LBA {slba}");
        }
    }
    // Flush goes through the ring too.
    let mut f = Sqe::new(io_opcode::FLUSH);
    f.nsid = 2;
    let r = io.execute(f, HostData::None).await.unwrap();
    assert!(r.cqe.status.is_success());
    io.close().await;
    admin.close().await;
}
