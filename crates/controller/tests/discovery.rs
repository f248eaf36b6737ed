//! Discovery for operations (issue 15): a persistent discovery controller gets a
//! Discovery Log Change notice (NVMe Base 2.0 Figure 147, Notice F0h, log page
//! 70h) when its host's log changes by a reload, GENCTR grows, the log lists the
//! current discovery subsystem (SUBTYPE 3) and the referrals (SUBTYPE 1).

mod common;

use std::time::Duration;

use nvmf_controller::config::{BackendSpec, HostConfig, Limits, NamespaceConfig, SubsystemConfig};
use nvmf_controller::{Target, TargetConfig};
use nvmf_proto::fabrics::DISCOVERY_NQN;
use nvmf_proto::fabrics::{ConnectCommand, ConnectData, PropertyCommand, CNTLID_DYNAMIC};
use nvmf_proto::features::{aec, fid};
use nvmf_proto::identify::{cns, IdentifyController};
use nvmf_proto::log::{lid, subtype, DiscoveryLog};
use nvmf_proto::registers::{self, Cc};
use nvmf_proto::sqe::admin_opcode;
use nvmf_proto::tcp::{HostData, HostQueueConfig};
use nvmf_proto::Sqe;
use nvmf_transport::{HostConnection, TransportAddr};

use common::start;

const A: &str = "nqn.2024-01.io.nvmf-rs:disco-a";
const B: &str = "nqn.2024-01.io.nvmf-rs:disco-b";
const ME: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000d1";
const OTHER: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000d2";
/// DW0 of a Discovery Log Page Change notice: type 2 (notice), info F0h, log 70h.
const DISC_CHANGE_DW0: u32 = 0x0070_F002;

fn subsystem(nqn: &str, hosts: &[&str]) -> SubsystemConfig {
    SubsystemConfig {
        nqn: nqn.into(),
        serial: nvmf_controller::config::default_serial(nqn),
        model: "test".into(),
        cntlid_min: 1,
        cntlid_max: 0xFFEF,
        hosts: hosts.iter().map(|h| HostConfig::plain(*h)).collect(),
        namespaces: vec![NamespaceConfig {
            nsid: 1,
            backend: BackendSpec::Memory { size: 1 << 20 },
            block_size: 512,
            direct: Default::default(),
            uuid: None,
            ana_group: 1,
        }],
    }
}

fn config(subsystems: Vec<SubsystemConfig>, referrals: &[&str]) -> TargetConfig {
    TargetConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        discovery_listen: vec![],
        subsystems,
        header_digest: true,
        data_digest: true,
        limits: Limits::default(),
        busy_poll_us: 0,
        busy_poll_batch: 0,
        tcp_congestion: None,
        cpu_latency_us: None,
        ana_states: vec![],
        referrals: referrals.iter().map(|r| r.parse().unwrap()).collect(),
        metrics: None,
        tls: None,
    }
}

/// A discovery controller as `nvme discover -p` makes one: KATO 30 s, enabled,
/// Discovery Log Change notices enabled when `notices`.
async fn persistent_discovery(addr: &TransportAddr, notices: bool) -> HostConnection {
    let mut c = HostConnection::connect(
        addr,
        HostQueueConfig {
            queue_depth: 32,
            ..Default::default()
        },
    )
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
        hostid: [0xd1; 16],
        cntlid: CNTLID_DYNAMIC,
        subnqn: DISCOVERY_NQN.into(),
        hostnqn: ME.into(),
    };
    let r = common::send_connect(&mut c, &cmd, &data).await.unwrap();
    assert!(r.cqe.status.is_success(), "{}", r.cqe.status);
    let cc = Cc {
        en: true,
        ..Default::default()
    };
    c.execute(
        PropertyCommand::set_sqe(registers::CC, false, u64::from(cc.to_u32())),
        HostData::None,
    )
    .await
    .unwrap();
    let id = c
        .execute(
            Sqe::identify(cns::CONTROLLER, 0),
            HostData::FromController(4096),
        )
        .await
        .unwrap();
    let id = IdentifyController::decode(&id.data_contiguous());
    assert_ne!(
        id.oaes & aec::DISCOVERY_LOG_CHANGE,
        0,
        "OAES bit 31: Discovery Log Page Change notices supported"
    );
    if notices {
        let mut s = Sqe::new(admin_opcode::SET_FEATURES);
        s.cdw10 = u32::from(fid::ASYNC_EVENT_CONFIG);
        s.cdw11 = aec::DISCOVERY_LOG_CHANGE;
        let r = c.execute(s, HostData::None).await.unwrap();
        assert!(r.cqe.status.is_success(), "{}", r.cqe.status);
    }
    c
}

/// Reads the whole log with Retain Asynchronous Event clear (unmasks the notice).
async fn read_log(c: &mut HostConnection) -> DiscoveryLog {
    let r = c
        .execute(
            Sqe::get_log_page(lid::DISCOVERY, 0, 16 * 1024, 0, false),
            HostData::FromController(16 * 1024),
        )
        .await
        .unwrap();
    assert!(r.cqe.status.is_success(), "{}", r.cqe.status);
    DiscoveryLog::decode(&r.data_contiguous())
}

fn nqns(log: &DiscoveryLog, st: u8) -> Vec<String> {
    let mut v: Vec<String> = log
        .entries
        .iter()
        .filter(|e| e.subtype == st)
        .map(|e| format!("{}@{}:{}", e.subnqn, e.traddr, e.trsvcid))
        .collect();
    v.sort();
    v
}

/// Submits an Asynchronous Event Request; returns its CID.
fn submit_aer(c: &mut HostConnection) -> u16 {
    let cid = c
        .submit(Sqe::new(admin_opcode::ASYNC_EVENT_REQUEST), HostData::None)
        .unwrap();
    c.kick().unwrap();
    cid
}

/// Waits for the AER `cid` to complete; returns its DW0.
async fn aen(c: &mut HostConnection, cid: u16) -> u32 {
    let r = tokio::time::timeout(Duration::from_secs(10), c.next_completion())
        .await
        .expect("no Asynchronous Event within 10 s")
        .unwrap();
    assert_eq!(r.cqe.cid, cid);
    assert!(r.cqe.status.is_success(), "{}", r.cqe.status);
    r.cqe.dw0
}

async fn keep_alive(c: &mut HostConnection) {
    let r = c
        .execute(Sqe::new(admin_opcode::KEEP_ALIVE), HostData::None)
        .await
        .unwrap();
    assert!(r.cqe.status.is_success(), "{}", r.cqe.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_discovery_entry_and_referrals_are_listed() {
    let cfg = config(
        vec![subsystem(A, &[])],
        &["127.0.0.9:8009", "[fd00::9]:4430"],
    );
    let (_t, addr) = start(&cfg).await;
    let mut d = persistent_discovery(&addr, false).await;
    let log = read_log(&mut d).await;
    assert_eq!(log.numrec, 4);
    assert_eq!(log.entries.len(), 4);
    // nvmet's order: current discovery subsystem, subsystems, referrals.
    let st: Vec<u8> = log.entries.iter().map(|e| e.subtype).collect();
    assert_eq!(
        st,
        [
            subtype::CURRENT_DISCOVERY,
            subtype::NVME,
            subtype::REFERRAL,
            subtype::REFERRAL
        ]
    );
    let cur = &log.entries[0];
    assert_eq!(cur.subnqn, DISCOVERY_NQN);
    assert_eq!(
        (cur.traddr.as_str(), cur.trsvcid.clone()),
        ("127.0.0.1", addr.trsvcid())
    );
    assert_eq!(
        (cur.trtype, cur.adrfam, cur.portid, cur.cntlid),
        (3, 1, 1, 0xffff)
    );
    assert_eq!(
        nqns(&log, subtype::REFERRAL),
        [
            format!("{DISCOVERY_NQN}@127.0.0.9:8009"),
            format!("{DISCOVERY_NQN}@fd00::9:4430"),
        ]
    );
    let v6 = log.entries.iter().find(|e| e.traddr == "fd00::9").unwrap();
    assert_eq!((v6.adrfam, v6.trtype, v6.portid), (2, 3, 2));
    d.close().await;
}

/// An NVMe/RDMA referral is listed as RDMA: TRTYPE 1, the RDMA TSAS nvmet
/// writes (QPTYPE connected, PRTYPE not specified, CMS RDMA CM), its address
/// and RDMA CM port. (The RDMA ports themselves are tested against the Linux
/// RDMA host in the guest: tests/interop, suite rdma.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rdma_referral_is_listed_with_the_rdma_fields() {
    let cfg = config(vec![subsystem(A, &[])], &["rdma://10.0.0.9:4420"]);
    let (_t, addr) = start(&cfg).await;
    let mut d = persistent_discovery(&addr, false).await;
    let log = read_log(&mut d).await;
    let r = log
        .entries
        .iter()
        .find(|e| e.subtype == subtype::REFERRAL)
        .expect("the referral is listed");
    assert_eq!((r.trtype, r.adrfam), (1, 1));
    assert_eq!(
        (r.traddr.as_str(), r.trsvcid.as_str()),
        ("10.0.0.9", "4420")
    );
    let t = r.rdma_tsas().expect("an RDMA entry");
    assert_eq!((t.qptype, t.prtype, t.cms, t.pkey), (1, 1, 1, 0));
    // The TCP entries keep TRTYPE 3 and no RDMA TSAS.
    let cur = &log.entries[0];
    assert_eq!(cur.trtype, 3);
    assert!(cur.rdma_tsas().is_none());
    d.close().await;
}

/// A persistent discovery controller gets one notice per change it can see,
/// masked until it reads the log (nvmet's behaviour), whatever changed: a
/// subsystem added or removed, its host allowed or refused, the referrals.
/// Changes that leave its log alone (another host's subsystem) send nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_discovery_gets_a_notice_per_change_of_its_log() {
    let mut cfg = config(vec![subsystem(A, &[])], &[]);
    let (t, addr) = start(&cfg).await;
    let mut d = persistent_discovery(&addr, true).await;
    let mut quiet = persistent_discovery(&addr, false).await;
    let log0 = read_log(&mut d).await;
    assert_eq!(nqns(&log0, subtype::NVME).len(), 1);
    let mut aer = submit_aer(&mut d);

    // 1. A subsystem added by a reload.
    cfg.subsystems.push(subsystem(B, &[]));
    let s = Target::reload(&t, &cfg).unwrap();
    assert_eq!(s.added, [B.to_string()]);
    assert_eq!(
        s.discovery_notices, 1,
        "only the controller that enabled it"
    );
    assert_eq!(aen(&mut d, aer).await, DISC_CHANGE_DW0);
    // 2. Masked until the log is read: removing B again sends nothing more.
    cfg.subsystems.pop();
    let s = t.reload(&cfg).unwrap();
    assert_eq!(s.removed, [B.to_string()]);
    assert_eq!(s.discovery_notices, 0, "masked until the log is read");
    let log1 = read_log(&mut d).await;
    assert!(
        log1.genctr >= log0.genctr + 2,
        "{} -> {}",
        log0.genctr,
        log1.genctr
    );
    assert_eq!(nqns(&log1, subtype::NVME).len(), 1);
    keep_alive(&mut d).await;

    // 3. A subsystem only another host may reach: this host's log is the
    // same, no notice; GENCTR still moves (one counter for every host).
    aer = submit_aer(&mut d);
    cfg.subsystems.push(subsystem(B, &[OTHER]));
    let s = t.reload(&cfg).unwrap();
    assert_eq!(s.discovery_notices, 0);
    let log2 = read_log(&mut d).await;
    assert!(log2.genctr > log1.genctr);
    assert_eq!(nqns(&log2, subtype::NVME), nqns(&log1, subtype::NVME));

    // 4. This host added to B's allowed hosts: notice, B listed.
    cfg.subsystems[1].hosts.push(HostConfig::plain(ME));
    let s = t.reload(&cfg).unwrap();
    assert_eq!(s.discovery_notices, 1);
    assert_eq!(aen(&mut d, aer).await, DISC_CHANGE_DW0);
    let log3 = read_log(&mut d).await;
    assert!(log3.genctr > log2.genctr);
    assert!(nqns(&log3, subtype::NVME)
        .iter()
        .any(|n| n.starts_with(&format!("{B}@"))));

    // 5. A referral added: notice, SUBTYPE 1 entry.
    aer = submit_aer(&mut d);
    cfg.referrals = vec!["127.0.0.9:8009".parse().unwrap()];
    let s = t.reload(&cfg).unwrap();
    assert!(s.referrals_changed);
    assert_eq!(s.discovery_notices, 1);
    assert_eq!(aen(&mut d, aer).await, DISC_CHANGE_DW0);
    let log4 = read_log(&mut d).await;
    assert!(log4.genctr > log3.genctr);
    assert_eq!(
        nqns(&log4, subtype::REFERRAL),
        [format!("{DISCOVERY_NQN}@127.0.0.9:8009")]
    );

    // 6. The same configuration again: nothing changed, no notice, same GENCTR.
    aer = submit_aer(&mut d);
    let s = t.reload(&cfg).unwrap();
    assert!(!s.referrals_changed);
    assert_eq!(s.discovery_notices, 0);
    assert_eq!(read_log(&mut d).await.genctr, log4.genctr);

    // 7. This host taken off B: notice, B gone from its log.
    cfg.subsystems[1].hosts.retain(|h| h.nqn != ME);
    let s = t.reload(&cfg).unwrap();
    assert_eq!(s.discovery_notices, 1);
    assert_eq!(aen(&mut d, aer).await, DISC_CHANGE_DW0);
    let log5 = read_log(&mut d).await;
    assert!(!nqns(&log5, subtype::NVME)
        .iter()
        .any(|n| n.starts_with(&format!("{B}@"))));

    // The controller that did not enable the notice still works and reads
    // the current log.
    keep_alive(&mut quiet).await;
    assert_eq!(read_log(&mut quiet).await.genctr, log5.genctr);
    d.close().await;
    quiet.close().await;
}

/// The host library's persistent discovery controller against the target:
/// KATO 1 s kept across 3 s with nothing to report (Keep Alive every KATO/2;
/// the target ends an association whose KATO expires), then a reload that adds
/// a subsystem ends the wait and the new log lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_persistent_discovery_waits_for_the_notice() {
    let mut cfg = config(vec![subsystem(A, &[])], &[]);
    let (t, addr) = start(&cfg).await;
    let mut o = nvmf_host::ConnectOptions::new(addr, DISCOVERY_NQN);
    o.hostnqn = ME.into();
    o.kato_ms = 1000;
    let mut pd = nvmf_host::PersistentDiscovery::connect(&o).await.unwrap();
    assert!(pd.notices());
    let log = pd.log().await.unwrap();
    assert_eq!(nqns(&log, subtype::NVME).len(), 1);
    let quiet = tokio::time::timeout(Duration::from_secs(3), pd.wait_change(log.genctr)).await;
    assert!(
        quiet.is_err(),
        "no change yet, but wait_change returned {quiet:?}"
    );
    cfg.subsystems.push(subsystem(B, &[]));
    let s = t.reload(&cfg).unwrap();
    assert_eq!(s.discovery_notices, 1, "the association is still there");
    tokio::time::timeout(Duration::from_secs(10), pd.wait_change(log.genctr))
        .await
        .expect("no notice within 10 s")
        .unwrap();
    let log2 = pd.log().await.unwrap();
    assert!(log2.genctr > log.genctr);
    assert_eq!(nqns(&log2, subtype::NVME).len(), 2);
    pd.close().await;
}
