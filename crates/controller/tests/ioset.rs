//! The rest of the NVM I/O command set over real loopback TCP: Verify, Copy,
//! fused Compare and Write, Abort, and the traffic-based keep-alive timer.

use std::time::Duration;

use bytes::Bytes;
use nvmf_controller::config::{BackendSpec, Limits, NamespaceConfig, SubsystemConfig};
use nvmf_controller::TargetConfig;
use nvmf_proto::fabrics::{ConnectCommand, ConnectData, CNTLID_DYNAMIC};
use nvmf_proto::identify::{cns, ctratt, fuses, ocfs, oncs, IdentifyController, IdentifyNamespace};
use nvmf_proto::sqe::{admin_opcode, io_opcode, CopySourceRange, Fuse};
use nvmf_proto::tcp::{Completion, HostData, HostQueueConfig};
use nvmf_proto::{Sqe, Status};
use nvmf_transport::{HostConnection, TransportAddr};

mod common;
use common::{enable, start};

const NQN: &str = "nqn.2024-01.io.nvmf-rs:ioset";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000a1";

/// NSID 1: 64 MiB memory, 512-byte blocks; NSID 2: 32 MiB file, 4 KiB blocks.
fn config(file: std::path::PathBuf) -> TargetConfig {
    TargetConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        discovery_listen: vec![],
        subsystems: vec![SubsystemConfig {
            nqn: NQN.into(),
            serial: "ioset1".into(),
            model: "test".into(),
            hosts: vec![],
            cntlid_min: 1,
            cntlid_max: 0xFFEF,
            namespaces: vec![
                NamespaceConfig {
                    nsid: 1,
                    backend: BackendSpec::Memory { size: 64 << 20 },
                    block_size: 512,
                    direct: Default::default(),
                    uuid: None,
                    ana_group: 1,
                },
                NamespaceConfig {
                    nsid: 2,
                    backend: BackendSpec::File {
                        path: file,
                        size: Some(32 << 20),
                    },
                    block_size: 4096,
                    direct: Default::default(),
                    uuid: None,
                    ana_group: 1,
                },
            ],
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

/// Block size of each namespace of [`config`].
fn bs(nsid: u32) -> usize {
    if nsid == 1 {
        512
    } else {
        4096
    }
}

async fn connect_queue(
    addr: &TransportAddr,
    qid: u16,
    cntlid: u16,
    kato: u32,
) -> (HostConnection, u16) {
    let depth = if qid == 0 { 32 } else { 128 };
    let mut c = HostConnection::connect(
        addr,
        HostQueueConfig {
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
        kato: if qid == 0 { kato } else { 0 },
    };
    let data = ConnectData {
        hostid: [0xa1; 16],
        cntlid,
        subnqn: NQN.into(),
        hostnqn: HOSTNQN.into(),
    };
    let r = common::send_connect(&mut c, &cmd, &data).await.unwrap();
    assert!(r.cqe.status.is_success(), "connect: {}", r.cqe.status);
    if qid != 0 {
        c.set_limits(8192, depth);
    }
    (c, r.cqe.dw0 as u16)
}

/// An enabled admin queue (KATO `kato` ms) and `n` I/O queues of one controller.
async fn controller(
    addr: &TransportAddr,
    n: u16,
    kato: u32,
) -> (HostConnection, Vec<HostConnection>) {
    let (mut admin, cntlid) = connect_queue(addr, 0, CNTLID_DYNAMIC, kato).await;
    enable(&mut admin).await;
    let mut nq = Sqe::new(admin_opcode::SET_FEATURES);
    nq.cdw10 = 0x07;
    nq.cdw11 = u32::from(n - 1) | (u32::from(n - 1) << 16);
    let r = admin.execute(nq, HostData::None).await.unwrap();
    assert!(r.cqe.status.is_success());
    let mut io = Vec::new();
    for q in 1..=n {
        io.push(connect_queue(addr, q, cntlid, kato).await.0);
    }
    (admin, io)
}

async fn run(q: &mut HostConnection, sqe: Sqe, data: HostData) -> Completion {
    q.execute(sqe, data).await.unwrap()
}

async fn write(q: &mut HostConnection, nsid: u32, slba: u64, data: &[u8]) {
    let nlb = (data.len() / bs(nsid)) as u32;
    let c = run(
        q,
        Sqe::rw(io_opcode::WRITE, nsid, slba, nlb, false),
        HostData::ToController(Bytes::copy_from_slice(data)),
    )
    .await;
    assert!(c.cqe.status.is_success(), "write: {}", c.cqe.status);
}

async fn read(q: &mut HostConnection, nsid: u32, slba: u64, nlb: u32) -> Vec<u8> {
    let len = nlb * bs(nsid) as u32;
    let c = run(
        q,
        Sqe::rw(io_opcode::READ, nsid, slba, nlb, false),
        HostData::FromController(len),
    )
    .await;
    assert!(c.cqe.status.is_success(), "read: {}", c.cqe.status);
    c.data_contiguous()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn copy_cmd(nsid: u32, sdlba: u64, ranges: &[CopySourceRange], fua: bool) -> (Sqe, HostData) {
    let mut list = Vec::new();
    for r in ranges {
        list.extend_from_slice(&r.encode());
    }
    (
        Sqe::copy(nsid, sdlba, ranges.len() as u32, fua),
        HostData::ToController(Bytes::from(list)),
    )
}

fn range(slba: u64, nlb: u32) -> CopySourceRange {
    CopySourceRange { slba, nlb }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_advertises_the_io_set() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, addr) = start(&config(dir.path().join("ns2.img"))).await;
    let (mut admin, _io) = controller(&addr, 1, 30_000).await;
    let id = run(
        &mut admin,
        Sqe::identify(cns::CONTROLLER, 0),
        HostData::FromController(4096),
    )
    .await;
    let id = IdentifyController::decode(&id.data_contiguous());
    for bit in [oncs::COMPARE, oncs::VERIFY, oncs::COPY] {
        assert_ne!(id.oncs & bit, 0, "ONCS {:#x} lacks {bit:#x}", id.oncs);
    }
    assert_eq!(id.fuses & fuses::COMPARE_AND_WRITE, 1);
    assert_eq!(id.ocfs, ocfs::FORMAT_0);
    assert_ne!(id.ctratt & ctratt::TBKAS, 0);
    assert_eq!(id.acl, 3);
    // 1 MiB MDTS over 4 KiB blocks (the largest served): 256 blocks, 0's based.
    assert_eq!(id.acwu, 255);
    for (nsid, mssrl, mcl) in [(1u32, 2048u16, 8192u32), (2, 256, 1024)] {
        let ns = run(
            &mut admin,
            Sqe::identify(cns::NAMESPACE, nsid),
            HostData::FromController(4096),
        )
        .await;
        let ns = IdentifyNamespace::decode(&ns.data_contiguous());
        assert_eq!(
            (ns.mssrl, ns.mcl, ns.msrc),
            (mssrl, mcl, 127),
            "nsid {nsid}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_in_and_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, addr) = start(&config(dir.path().join("ns2.img"))).await;
    let (_admin, mut io) = controller(&addr, 1, 30_000).await;
    let q = &mut io[0];
    for (nsid, blocks) in [(1u32, (64u64 << 20) / 512), (2, (32 << 20) / 4096)] {
        // The whole namespace's last 65536 blocks (or all of it), the most one Verify names.
        let nlb = blocks.min(65536) as u32;
        for (slba, n, want) in [
            (0, 1, Status::SUCCESS),
            (blocks - u64::from(nlb), nlb, Status::SUCCESS),
            (blocks - 1, 1, Status::SUCCESS),
            (blocks - 1, 2, Status::LBA_OUT_OF_RANGE.dnr()),
            (blocks, 1, Status::LBA_OUT_OF_RANGE.dnr()),
            (u64::MAX, 2, Status::LBA_OUT_OF_RANGE.dnr()),
        ] {
            let c = run(q, Sqe::verify(nsid, slba, n), HostData::None).await;
            assert_eq!(c.cqe.status, want, "nsid {nsid} slba {slba} nlb {n}");
            assert!(c.data.is_empty(), "Verify moves no data");
        }
    }
    let c = run(q, Sqe::verify(7, 0, 1), HostData::None).await;
    assert_eq!(c.cqe.status, Status::INVALID_NS.dnr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_ranges_then_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, addr) = start(&config(dir.path().join("ns2.img"))).await;
    let (_admin, mut io) = controller(&addr, 1, 30_000).await;
    let q = &mut io[0];
    for nsid in [1u32, 2] {
        let b = bs(nsid);
        let a = pattern(3 * b, 1);
        let c = pattern(5 * b, 2);
        let d = pattern(b, 3);
        write(q, nsid, 100, &a).await;
        write(q, nsid, 200, &c).await;
        write(q, nsid, 300, &d).await;
        // Three ranges, out of order, one of them used twice.
        let (s, data) = copy_cmd(
            nsid,
            1000,
            &[range(200, 5), range(100, 3), range(300, 1), range(100, 2)],
            nsid == 2,
        );
        let r = run(q, s, data).await;
        assert!(r.cqe.status.is_success(), "copy: {}", r.cqe.status);
        let got = read(q, nsid, 1000, 11).await;
        let want = [&c[..], &a[..], &d[..], &a[..2 * b]].concat();
        assert_eq!(got, want, "nsid {nsid}");
        // A copy onto its own source range reads everything before it writes.
        let (s, data) = copy_cmd(nsid, 1001, &[range(1000, 4)], false);
        assert!(run(q, s, data).await.cqe.status.is_success());
        let got = read(q, nsid, 1000, 5).await;
        assert_eq!(got, [&want[..b], &want[..4 * b]].concat());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_limits_and_errors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, addr) = start(&config(dir.path().join("ns2.img"))).await;
    let (_admin, mut io) = controller(&addr, 1, 30_000).await;
    let q = &mut io[0];
    // NSID 2: MSSRL 256, MCL 1024, MSRC 127 (128 ranges); 8192 blocks.
    let dest = 4000u64;
    let before = pattern(4096, 9);
    write(q, 2, dest, &before).await;
    let too_many: Vec<_> = (0..129).map(|i| range(i, 1)).collect();
    let just_enough: Vec<_> = (0..128).map(|i| range(i, 1)).collect();
    let size = Status::CMD_SIZE_LIMIT_EXCEEDED.dnr();
    let oor = Status::LBA_OUT_OF_RANGE.dnr();
    let cases: Vec<(&str, Vec<CopySourceRange>, u64, Status)> = vec![
        ("129 ranges", too_many, dest, size),
        ("range over MSSRL", vec![range(0, 257)], dest, size),
        ("total over MCL", vec![range(0, 256); 5], dest, size),
        ("source past the end", vec![range(8191, 2)], dest, oor),
        ("destination past the end", vec![range(0, 2)], 8191, oor),
        ("128 ranges", just_enough, 6000, Status::SUCCESS),
        ("MCL exactly", vec![range(0, 256); 4], 6000, Status::SUCCESS),
    ];
    for (what, ranges, sdlba, want) in cases {
        let (s, data) = copy_cmd(2, sdlba, &ranges, false);
        let c = run(q, s, data).await;
        assert_eq!(c.cqe.status, want, "{what}");
        if !want.is_success() {
            assert_eq!(c.cqe.dw0, 0, "{what}: nothing was copied");
        }
    }
    // Descriptor format 1 (not supported, OCFS bit 1 clear).
    let (mut s, data) = copy_cmd(2, dest, &[range(0, 1)], false);
    s.cdw12 |= 1 << 8;
    assert_eq!(
        run(q, s, data).await.cqe.status,
        Status::INVALID_FIELD.dnr()
    );
    // NR says two ranges, the list holds one.
    let (mut s, data) = copy_cmd(2, dest, &[range(0, 1)], false);
    s.cdw12 |= 1;
    assert_eq!(
        run(q, s, data).await.cqe.status,
        Status::DATA_SGL_LENGTH_INVALID.dnr()
    );
    // None of the refused copies wrote the destination.
    assert_eq!(read(q, 2, dest, 1).await, before);
}

/// Sends a fused Compare (`cmp`) and Write (`new`) of `nlb` blocks at `slba`,
/// back to back on `q`; returns both completions (first, second).
async fn compare_and_write(
    q: &mut HostConnection,
    nsid: u32,
    slba: u64,
    cmp: &[u8],
    new: &[u8],
) -> (Completion, Completion) {
    let nlb = (cmp.len() / bs(nsid)) as u32;
    let first = Sqe::rw(io_opcode::COMPARE, nsid, slba, nlb, false).with_fuse(Fuse::First);
    let second = Sqe::rw(io_opcode::WRITE, nsid, slba, nlb, false).with_fuse(Fuse::Second);
    let a = q
        .submit(first, HostData::ToController(Bytes::copy_from_slice(cmp)))
        .unwrap();
    let b = q
        .submit(second, HostData::ToController(Bytes::copy_from_slice(new)))
        .unwrap();
    q.kick().unwrap();
    let mut done = Vec::new();
    while done.len() < 2 {
        done.push(q.next_completion().await.unwrap());
    }
    done.sort_by_key(|c| c.cqe.cid != a);
    assert_eq!(done[0].cqe.cid, a);
    assert_eq!(done[1].cqe.cid, b);
    let second = done.pop().unwrap();
    (done.pop().unwrap(), second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fused_compare_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, addr) = start(&config(dir.path().join("ns2.img"))).await;
    let (_admin, mut io) = controller(&addr, 1, 30_000).await;
    let q = &mut io[0];
    // In-capsule halves (4 KiB) and halves that need R2T (64 KiB > 8 KiB ICD),
    // on the inline memory namespace and the blocking-pool file namespace.
    for nsid in [1u32, 2] {
        for len in [4096usize, 65536] {
            let nlb = (len / bs(nsid)) as u32;
            let old = pattern(len, 10);
            let new = pattern(len, 20);
            write(q, nsid, 64, &old).await;
            // Match: the write happens.
            let (a, b) = compare_and_write(q, nsid, 64, &old, &new).await;
            assert_eq!(a.cqe.status, Status::SUCCESS, "nsid {nsid} len {len}");
            assert_eq!(b.cqe.status, Status::SUCCESS);
            assert_eq!(read(q, nsid, 64, nlb).await, new);
            // Miscompare (against the old data): the write is not done.
            let newer = pattern(len, 30);
            let (a, b) = compare_and_write(q, nsid, 64, &old, &newer).await;
            assert_eq!(a.cqe.status, Status::COMPARE_FAILURE);
            assert_eq!(b.cqe.status, Status::ABORTED_FAILED_FUSED);
            assert_eq!(read(q, nsid, 64, nlb).await, new);
        }
    }
    let blk = pattern(512, 40);
    write(q, 1, 8, &blk).await;
    // A lone second half.
    let lone = Sqe::rw(io_opcode::WRITE, 1, 8, 1, false).with_fuse(Fuse::Second);
    let c = run(
        q,
        lone,
        HostData::ToController(Bytes::from(pattern(512, 1))),
    )
    .await;
    assert_eq!(c.cqe.status, Status::ABORTED_MISSING_FUSED);
    // A first half followed by a normal command: the first half fails, the
    // normal command runs, and the second half that comes after is alone.
    let first = Sqe::rw(io_opcode::COMPARE, 1, 8, 1, false).with_fuse(Fuse::First);
    let a = q
        .submit(first, HostData::ToController(Bytes::from(blk.clone())))
        .unwrap();
    let n = q
        .submit(
            Sqe::rw(io_opcode::READ, 1, 8, 1, false),
            HostData::FromController(512),
        )
        .unwrap();
    let s = q
        .submit(
            Sqe::rw(io_opcode::WRITE, 1, 8, 1, false).with_fuse(Fuse::Second),
            HostData::ToController(Bytes::from(pattern(512, 2))),
        )
        .unwrap();
    q.kick().unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let c = q.next_completion().await.unwrap();
        got.push((c.cqe.cid, c.cqe.status));
    }
    got.sort_by_key(|g| g.0);
    let mut want = vec![
        (a, Status::ABORTED_MISSING_FUSED),
        (n, Status::SUCCESS),
        (s, Status::ABORTED_MISSING_FUSED),
    ];
    want.sort_by_key(|w| w.0);
    assert_eq!(got, want);
    // A pair that is not Compare + Write of one range.
    let first = Sqe::rw(io_opcode::COMPARE, 1, 8, 1, false).with_fuse(Fuse::First);
    let second = Sqe::rw(io_opcode::WRITE, 1, 9, 1, false).with_fuse(Fuse::Second);
    q.submit(first, HostData::ToController(Bytes::from(blk.clone())))
        .unwrap();
    q.submit(second, HostData::ToController(Bytes::from(pattern(512, 3))))
        .unwrap();
    q.kick().unwrap();
    let mut st = vec![
        q.next_completion().await.unwrap().cqe.status,
        q.next_completion().await.unwrap().cqe.status,
    ];
    st.sort_by_key(|s| s.sc);
    assert_eq!(
        st,
        vec![Status::INVALID_FIELD.dnr(), Status::ABORTED_FAILED_FUSED]
    );
    // Nothing above wrote LBA 8.
    assert_eq!(read(q, 1, 8, 1).await, blk);
}

/// Two queues each add 1 to a counter block `n` times with fused Compare and
/// Write (read, compare with what was read, write the next value; retry on a
/// miscompare). If another queue could write between a pair's compare and its
/// write, two pairs would both succeed from the same value and an increment
/// would be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fused_pairs_are_atomic_across_queues() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, addr) = start(&config(dir.path().join("ns2.img"))).await;
    let (_admin, mut io) = controller(&addr, 2, 30_000).await;
    const N: u64 = 300;
    for nsid in [1u32, 2] {
        let b = bs(nsid);
        let block = move |v: u64| {
            let mut d = vec![0u8; b];
            for c in d.chunks_exact_mut(8) {
                c.copy_from_slice(&v.to_le_bytes());
            }
            d
        };
        write(&mut io[0], nsid, 0, &block(0)).await;
        let mut tasks = Vec::new();
        for mut q in io.drain(..) {
            tasks.push(tokio::spawn(async move {
                let mut done = 0;
                let mut misses = 0u64;
                while done < N {
                    let cur = read(&mut q, nsid, 0, 1).await;
                    let v = u64::from_le_bytes(cur[..8].try_into().unwrap());
                    let (a, w) = compare_and_write(&mut q, nsid, 0, &cur, &block(v + 1)).await;
                    if a.cqe.status.is_success() {
                        assert!(w.cqe.status.is_success());
                        done += 1;
                    } else {
                        assert_eq!(a.cqe.status, Status::COMPARE_FAILURE);
                        assert_eq!(w.cqe.status, Status::ABORTED_FAILED_FUSED);
                        misses += 1;
                    }
                }
                (q, misses)
            }));
        }
        let mut misses = 0;
        for t in tasks {
            let (q, m) = t.await.unwrap();
            io.push(q);
            misses += m;
        }
        let end = read(&mut io[0], nsid, 0, 1).await;
        assert_eq!(
            end,
            block(2 * N),
            "nsid {nsid}: increments lost ({misses} miscompares)"
        );
        // The two queues did race (otherwise this test proves nothing).
        assert!(misses > 0, "nsid {nsid}: the queues never collided");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_an_aer_and_an_open_fused_half() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, addr) = start(&config(dir.path().join("ns2.img"))).await;
    let (mut admin, mut io) = controller(&addr, 1, 30_000).await;
    let abort = |sqid: u16, cid: u16| {
        let mut s = Sqe::new(admin_opcode::ABORT);
        s.cdw10 = u32::from(sqid) | (u32::from(cid) << 16);
        s
    };
    // An outstanding Asynchronous Event Request.
    let aer = admin
        .submit(Sqe::new(admin_opcode::ASYNC_EVENT_REQUEST), HostData::None)
        .unwrap();
    admin.kick().unwrap();
    let c = run(&mut admin, abort(0, aer), HostData::None).await;
    assert!(c.cqe.status.is_success());
    assert_eq!(c.cqe.dw0 & 1, 0, "the AER was aborted");
    let a = admin.next_completion().await.unwrap();
    assert_eq!((a.cqe.cid, a.cqe.status), (aer, Status::ABORT_REQUESTED));
    // Nothing outstanding under that CID any more.
    let c = run(&mut admin, abort(0, aer), HostData::None).await;
    assert_eq!(c.cqe.dw0 & 1, 1);
    // A fused first half waiting for its second half on I/O queue 1.
    let q = &mut io[0];
    let first = Sqe::rw(io_opcode::COMPARE, 1, 0, 1, false).with_fuse(Fuse::First);
    let f = q
        .submit(first, HostData::ToController(Bytes::from(vec![0u8; 512])))
        .unwrap();
    q.kick().unwrap();
    // Let it reach the target before the Abort does.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = run(&mut admin, abort(1, f), HostData::None).await;
    assert!(c.cqe.status.is_success());
    assert_eq!(c.cqe.dw0 & 1, 0, "the fused half was aborted");
    let a = q.next_completion().await.unwrap();
    assert_eq!((a.cqe.cid, a.cqe.status), (f, Status::ABORT_REQUESTED));
    // A command that already completed, and a queue that does not exist.
    let done = q.submit(Sqe::verify(1, 0, 1), HostData::None).unwrap();
    q.kick().unwrap();
    assert!(q.next_completion().await.unwrap().cqe.status.is_success());
    for (sqid, cid) in [(1, done), (5, 1)] {
        let c = run(&mut admin, abort(sqid, cid), HostData::None).await;
        assert!(c.cqe.status.is_success());
        assert_eq!(c.cqe.dw0 & 1, 1, "sqid {sqid} cid {cid}: not aborted");
    }
    // The queue still works.
    write(q, 1, 0, &pattern(512, 5)).await;
}

/// TBKAS: I/O commands alone keep the association alive past its KATO; with
/// no command at all, it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_command_restarts_the_keep_alive_timer() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, addr) = start(&config(dir.path().join("ns2.img"))).await;
    // KATO 1 s: the target ends an association idle for 2.5 s (KATO + half + 1 s).
    let (mut admin, mut io) = controller(&addr, 1, 1000).await;
    let q = &mut io[0];
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        let c = run(q, Sqe::verify(1, 0, 1), HostData::None).await;
        assert!(c.cqe.status.is_success());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let c = run(
        &mut admin,
        Sqe::identify(cns::CONTROLLER, 0),
        HostData::FromController(4096),
    )
    .await;
    assert!(c.cqe.status.is_success(), "alive after 5 s of I/O only");
    // Now nothing: the keep-alive timer expires and the target closes both queues.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        admin.execute(
            Sqe::identify(cns::CONTROLLER, 0),
            HostData::FromController(4096),
        ),
    )
    .await
    .expect("the closed connection answers at once");
    assert!(
        r.is_err(),
        "the association outlived its keep-alive timeout"
    );
}

/// A write whose R2T waits (the queue already has `max_pending_write_bytes`
/// of write data asked for) has no data on its way: Abort ends it, and the
/// write before it still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_a_write_still_waiting_for_its_r2t() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path().join("ns2.img"));
    cfg.limits.max_pending_write_bytes = 64 << 10;
    let (_t, addr) = start(&cfg).await;
    let (mut admin, mut io) = controller(&addr, 1, 30_000).await;
    let q = &mut io[0];
    let before = pattern(64 << 10, 50);
    write(q, 1, 2048, &before).await;
    let a_data = pattern(64 << 10, 51);
    // 64 KiB each, beyond the 8 KiB in-capsule limit: both need an R2T, and
    // the second waits for the first's data, which this host does not send
    // until it reads again.
    let a = q
        .submit(
            Sqe::rw(io_opcode::WRITE, 1, 1024, 128, false),
            HostData::ToController(Bytes::from(a_data.clone())),
        )
        .unwrap();
    let b = q
        .submit(
            Sqe::rw(io_opcode::WRITE, 1, 2048, 128, false),
            HostData::ToController(Bytes::from(pattern(64 << 10, 52))),
        )
        .unwrap();
    q.kick().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut abort = Sqe::new(admin_opcode::ABORT);
    abort.cdw10 = 1 | (u32::from(b) << 16);
    let c = run(&mut admin, abort, HostData::None).await;
    assert_eq!(c.cqe.dw0 & 1, 0, "the waiting write was aborted");
    // And the write that had its R2T cannot be aborted any more.
    let mut abort = Sqe::new(admin_opcode::ABORT);
    abort.cdw10 = 1 | (u32::from(a) << 16);
    let c = run(&mut admin, abort, HostData::None).await;
    assert_eq!(c.cqe.dw0 & 1, 1, "a write with its R2T out is not aborted");
    let mut got = [
        q.next_completion().await.unwrap(),
        q.next_completion().await.unwrap(),
    ];
    got.sort_by_key(|c| c.cqe.cid != a);
    assert_eq!((got[0].cqe.cid, got[0].cqe.status), (a, Status::SUCCESS));
    assert_eq!(
        (got[1].cqe.cid, got[1].cqe.status),
        (b, Status::ABORT_REQUESTED)
    );
    assert_eq!(read(q, 1, 1024, 128).await, a_data);
    assert_eq!(
        read(q, 1, 2048, 128).await,
        before,
        "the aborted write wrote nothing"
    );
}

/// A command of a file namespace waits for a blocking-pool thread: Abort
/// cancels it before it runs. The pool has one thread here, and the test
/// keeps it busy until the Abort is answered. Write Zeroes is such a command
/// (Read, Write and Flush go to the queue's io_uring instead, crate::uring).
#[test]
fn abort_a_command_queued_on_the_blocking_pool() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_t, addr) = start(&config(dir.path().join("ns2.img"))).await;
        let (mut admin, mut io) = controller(&addr, 1, 30_000).await;
        let q = &mut io[0];
        let before = pattern(4096, 60);
        write(q, 2, 77, &before).await;
        // Occupy the only pool thread.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (busy_tx, busy_rx) = tokio::sync::oneshot::channel();
        let blocker = tokio::task::spawn_blocking(move || {
            let _ = busy_tx.send(());
            let _ = wait.recv();
        });
        busy_rx.await.unwrap();
        let w = q
            .submit(
                Sqe::rw(io_opcode::WRITE_ZEROES, 2, 77, 1, false),
                HostData::None,
            )
            .unwrap();
        q.kick().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut abort = Sqe::new(admin_opcode::ABORT);
        abort.cdw10 = 1 | (u32::from(w) << 16);
        let c = run(&mut admin, abort, HostData::None).await;
        assert_eq!(c.cqe.dw0 & 1, 0, "the queued Write Zeroes was aborted");
        release.send(()).unwrap();
        blocker.await.unwrap();
        let c = q.next_completion().await.unwrap();
        assert_eq!((c.cqe.cid, c.cqe.status), (w, Status::ABORT_REQUESTED));
        assert_eq!(
            read(q, 2, 77, 1).await,
            before,
            "the aborted Write Zeroes wrote nothing"
        );
        // With the pool free, the same command runs.
        let c = run(
            q,
            Sqe::rw(io_opcode::WRITE_ZEROES, 2, 77, 1, false),
            HostData::None,
        )
        .await;
        assert!(c.cqe.status.is_success(), "{:?}", c.cqe.status);
        assert_eq!(read(q, 2, 77, 1).await, vec![0; 4096]);
    });
}
