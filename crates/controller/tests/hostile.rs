//! Hostile peers over raw TCP: each malformed input gets the termination request
//! the spec names, only that connection closes, and a well-behaved host doing I/O
//! at the same time sees no error. Cases and expected results: docs/reliability.md.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nvmf_controller::config::{BackendSpec, Limits, NamespaceConfig, SubsystemConfig};
use nvmf_controller::{Target, TargetConfig};
use nvmf_proto::fabrics::{ConnectCommand, ConnectData, PropertyCommand, CNTLID_DYNAMIC};
use nvmf_proto::registers::{self, Cc};
use nvmf_proto::sqe::io_opcode;
use nvmf_proto::tcp::pdu::{CommonHeader, DataPdu, IcReq, Pdu, PduEncoder, TermReq, PFV_1_0};
use nvmf_proto::tcp::{Digests, Fes, HostData, HostQueueConfig};
use nvmf_proto::{Sqe, Status};
use nvmf_transport::{HostConnection, TransportAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NQN: &str = "nqn.2024-01.io.nvmf-rs:hostile";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000aa";

async fn start(limits: Limits) -> (Arc<Target>, TransportAddr) {
    let cfg = TargetConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        discovery_listen: vec![],
        subsystems: vec![SubsystemConfig {
            nqn: NQN.into(),
            serial: "h".into(),
            model: "h".into(),
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
        limits,
        busy_poll_us: 0,
        busy_poll_batch: 0,
        tcp_congestion: None,
        cpu_latency_us: None,
        ana_states: vec![],
        referrals: vec![],
        metrics: None,
        tls: None,
    };
    let t = Arc::new(Target::bind(&cfg).await.unwrap());
    let a = t.ports()[0];
    tokio::spawn(t.clone().serve());
    (t, a)
}

fn connect_sqe(qid: u16, kato: u32) -> (Sqe, Bytes) {
    connect_sqe_for(qid, kato, CNTLID_DYNAMIC)
}

/// Connect for queue `qid` of controller `cntlid` (an I/O queue joins the admin
/// queue's controller), SQSIZE 31.
fn connect_sqe_for(qid: u16, kato: u32, cntlid: u16) -> (Sqe, Bytes) {
    let cmd = ConnectCommand {
        recfmt: 0,
        qid,
        sqsize: 31,
        cattr: 0,
        kato,
    };
    let data = ConnectData {
        hostid: [9; 16],
        cntlid,
        subnqn: NQN.into(),
        hostnqn: HOSTNQN.into(),
    };
    (cmd.to_sqe(), Bytes::copy_from_slice(&data.encode()))
}

/// First LBA of the region only the well-behaved host touches.
const GOOD_HOST_FIRST_LBA: u64 = 16384;

/// A well-behaved host: connects and does writes and reads until told to stop,
/// counting completions and errors.
async fn good_host(
    addr: TransportAddr,
    stop: Arc<AtomicBool>,
    ios: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) {
    let mut a = HostConnection::connect(&addr, HostQueueConfig::default())
        .await
        .unwrap();
    let (s, d) = connect_sqe(0, 0);
    let r = a.execute(s, HostData::ToController(d)).await.unwrap();
    let cntlid = r.cqe.dw0 as u16;
    let cc = Cc {
        en: true,
        iosqes: 6,
        iocqes: 4,
        ..Default::default()
    };
    a.execute(
        PropertyCommand::set_sqe(registers::CC, false, u64::from(cc.to_u32())),
        HostData::None,
    )
    .await
    .unwrap();
    let mut io = HostConnection::connect(&addr, HostQueueConfig::default())
        .await
        .unwrap();
    let (s, d) = connect_sqe_for(1, 0, cntlid);
    let r = io.execute(s, HostData::ToController(d)).await.unwrap();
    assert!(r.cqe.status.is_success());
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let pat: Vec<u8> = (0..8192).map(|k| (k as u64 + i) as u8).collect();
        // The upper half of the 16 MiB namespace (LBAs 16384..32383) is the good
        // host's alone: the hostile peers write below it, so its read-back check
        // cannot race their writes.
        let slba = GOOD_HOST_FIRST_LBA + (i % 1000) * 16;
        let w = io
            .execute(
                Sqe::rw(io_opcode::WRITE, 1, slba, 16, false),
                HostData::ToController(Bytes::from(pat.clone())),
            )
            .await;
        let r = io
            .execute(
                Sqe::rw(io_opcode::READ, 1, slba, 16, false),
                HostData::FromController(8192),
            )
            .await;
        match (w, r) {
            (Ok(w), Ok(r))
                if w.cqe.status.is_success()
                    && r.cqe.status.is_success()
                    && r.data_contiguous() == pat =>
            {
                ios.fetch_add(2, Ordering::Relaxed);
            }
            (w, r) => {
                eprintln!(
                    "good host: I/O {i} at LBA {slba} failed: write {:?}, read {:?}, data {}",
                    w.as_ref().map(|w| w.cqe.status),
                    r.as_ref().map(|r| r.cqe.status),
                    match &r {
                        Ok(r) if r.data_contiguous() != pat => "differs",
                        _ => "-",
                    }
                );
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        i += 1;
    }
}

fn icreq() -> Vec<u8> {
    icreq_with(Digests::default())
}

fn icreq_with(digests: Digests) -> Vec<u8> {
    PduEncoder::default()
        .to_bytes(&Pdu::IcReq(IcReq {
            pfv: PFV_1_0,
            hpda: 0,
            digests,
            maxr2t: 0,
        }))
        .to_vec()
}

/// Sends `prelude` then `bad`, and returns the C2HTermReq the target answered with
/// (None if it closed without one), after checking that it closed the connection.
async fn send_bad(addr: TransportAddr, prelude: &[u8], bad: &[u8]) -> Option<(Fes, u32)> {
    let mut s = TcpStream::connect(addr.socket).await.unwrap();
    s.write_all(prelude).await.unwrap();
    s.write_all(bad).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "the target did not close the connection after {:02x?}",
        &bad[..bad.len().min(16)]
    );
    // Skip ICResp and any responses, find the C2HTermReq (type 3).
    let mut off = 0;
    while off + 8 <= buf.len() {
        let ch = CommonHeader::decode(&buf[off..]);
        if ch.pdu_type == 3 {
            let (fes, fei) = termreq_fields(&buf[off..]);
            return Some((Fes::from_u16(fes), fei));
        }
        if ch.plen == 0 {
            break;
        }
        off += ch.plen as usize;
    }
    None
}

/// FES and FEI of the C2HTermReq at the start of `p`.
fn termreq_fields(p: &[u8]) -> (u16, u32) {
    (
        u16::from_le_bytes([p[8], p[9]]),
        u32::from_le_bytes([p[10], p[11], p[12], p[13]]),
    )
}

/// A whole 24-byte header (HLEN = PLEN = 24) of the given PDU type: the decoder
/// judges a header once min(HLEN, PLEN) bytes are in, so the whole header is sent.
fn header24(pdu_type: u8) -> Vec<u8> {
    let mut h = vec![0u8; 24];
    h[0] = pdu_type;
    h[2] = 24;
    h[4] = 24;
    h
}

fn raw_cmd(sqe: &Sqe, data: &[u8]) -> Vec<u8> {
    PduEncoder::default()
        .to_bytes(&Pdu::CapsuleCmd {
            sqe: *sqe,
            data: Bytes::copy_from_slice(data),
        })
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pdus_end_only_their_connection() {
    let (_t, addr) = start(Limits::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ios = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let good = tokio::spawn(good_host(addr, stop.clone(), ios.clone(), errors.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let ic = icreq();
    let (csqe, cdata) = connect_sqe(0, 0);
    let connect = raw_cmd(&csqe, &cdata);
    let mut after_connect = ic.clone();
    after_connect.extend_from_slice(&connect);

    // Unknown PDU type.
    assert_eq!(
        send_bad(addr, &ic, &header24(0x08)).await,
        Some((Fes::InvalidHeaderField, 0))
    );
    // A PDU type that flows the other way (CapsuleResp sent to a controller).
    assert_eq!(
        send_bad(addr, &ic, &header24(0x05)).await,
        Some((Fes::InvalidHeaderField, 0))
    );
    // A command before ICReq.
    assert_eq!(
        send_bad(addr, &[], &connect).await,
        Some((Fes::PduSequenceError, 0))
    );
    // A second ICReq.
    assert_eq!(
        send_bad(addr, &ic, &ic).await,
        Some((Fes::InvalidHeaderField, 0))
    );
    // Unsupported PFV.
    let mut pfv = ic.clone();
    pfv[8] = 1;
    assert_eq!(
        send_bad(addr, &[], &pfv).await,
        Some((Fes::UnsupportedParameter, 8))
    );
    // Bad HLEN on a CapsuleCmd.
    let mut h = connect.clone();
    h[2] = 71;
    assert_eq!(
        send_bad(addr, &ic, &h).await,
        Some((Fes::InvalidHeaderField, 2))
    );
    // PDO not past the header.
    let mut p = connect.clone();
    p[3] = 8;
    assert_eq!(
        send_bad(addr, &ic, &p).await,
        Some((Fes::InvalidHeaderField, 3))
    );
    // PLEN smaller than the header.
    let mut p = connect.clone();
    p[4..8].copy_from_slice(&10u32.to_le_bytes());
    p[3] = 0;
    assert_eq!(
        send_bad(addr, &ic, &p).await,
        Some((Fes::InvalidHeaderField, 4))
    );
    // PLEN of 4 GiB: refused before anything is buffered.
    let mut p = connect.clone();
    p[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        send_bad(addr, &ic, &p[..80]).await,
        Some((Fes::DataLimitExceeded, 4))
    );
    // Header digest flag without negotiation.
    let mut p = connect.clone();
    p[1] |= 1;
    assert_eq!(
        send_bad(addr, &ic, &p).await,
        Some((Fes::InvalidHeaderField, 1))
    );
    // Wrong header digest when digests are on.
    let mut icd = ic.clone();
    icd[11] = 1;
    let mut hd = PduEncoder::negotiated(
        Digests {
            header: true,
            data: false,
        },
        0,
    )
    .to_bytes(&Pdu::CapsuleCmd {
        sqe: csqe,
        data: cdata.clone(),
    })
    .to_vec();
    hd[72] ^= 0xff;
    assert_eq!(
        send_bad(addr, &icd, &hd).await,
        Some((Fes::HeaderDigestError, 0))
    );
    // H2CData for a command that does not exist, and H2CData without an R2T.
    let h2c = PduEncoder::default()
        .to_bytes(&Pdu::H2CData(DataPdu {
            cccid: 77,
            ttag: 0,
            datao: 0,
            datal: 4,
            last: true,
            success: false,
            data: Bytes::from_static(&[1, 2, 3, 4]),
        }))
        .to_vec();
    assert_eq!(
        send_bad(addr, &after_connect, &h2c).await,
        Some((Fes::InvalidHeaderField, 8))
    );
    // A malformed H2CTermReq (PLEN > 152) just closes.
    let mut tr = PduEncoder::default()
        .to_bytes(&Pdu::H2CTermReq(TermReq {
            fes: Fes::PduSequenceError,
            fei: 0,
            data: Bytes::new(),
        }))
        .to_vec();
    tr[4..8].copy_from_slice(&200u32.to_le_bytes());
    assert_eq!(send_bad(addr, &ic, &tr).await, None);

    stop.store(true, Ordering::Relaxed);
    good.await.unwrap();
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "the well-behaved host saw an error"
    );
    assert!(ios.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_and_sequence() {
    let (_t, addr) = start(Limits::default()).await;
    let mut c = HostConnection::connect(&addr, HostQueueConfig::default())
        .await
        .unwrap();
    // A command before Connect.
    let r = c
        .execute(
            PropertyCommand::get_sqe(registers::CAP, true),
            HostData::None,
        )
        .await
        .unwrap();
    assert_eq!(r.cqe.status, Status::COMMAND_SEQUENCE_ERROR.dnr());
    // Connect with a malformed host NQN: invalid parameter at HOSTNQN (offset 512, in data).
    let cmd = ConnectCommand {
        recfmt: 0,
        qid: 0,
        sqsize: 31,
        cattr: 0,
        kato: 0,
    };
    let data = ConnectData {
        hostid: [1; 16],
        cntlid: CNTLID_DYNAMIC,
        subnqn: NQN.into(),
        hostnqn: "bogus".into(),
    };
    let r = c
        .execute(
            cmd.to_sqe(),
            HostData::ToController(Bytes::copy_from_slice(&data.encode())),
        )
        .await
        .unwrap();
    assert_eq!(r.cqe.status, Status::CONNECT_INVALID_PARAMETERS.dnr());
    assert_eq!(r.cqe.dw0, 512 | (1 << 16));
    // A wrong record format.
    let bad = ConnectCommand { recfmt: 1, ..cmd };
    let data = ConnectData {
        hostid: [1; 16],
        cntlid: CNTLID_DYNAMIC,
        subnqn: NQN.into(),
        hostnqn: HOSTNQN.into(),
    };
    let r = c
        .execute(
            bad.to_sqe(),
            HostData::ToController(Bytes::copy_from_slice(&data.encode())),
        )
        .await
        .unwrap();
    assert_eq!(r.cqe.status, Status::CONNECT_INCOMPATIBLE_FORMAT.dnr());
    // A good Connect, then CC.EN with bad queue entry sizes reports CSTS.CFS.
    let r = c
        .execute(
            cmd.to_sqe(),
            HostData::ToController(Bytes::copy_from_slice(&data.encode())),
        )
        .await
        .unwrap();
    assert!(r.cqe.status.is_success());
    let cc = Cc {
        en: true,
        iosqes: 7,
        iocqes: 4,
        ..Default::default()
    };
    c.execute(
        PropertyCommand::set_sqe(registers::CC, false, u64::from(cc.to_u32())),
        HostData::None,
    )
    .await
    .unwrap();
    let s = c
        .execute(
            PropertyCommand::get_sqe(registers::CSTS, false),
            HostData::None,
        )
        .await
        .unwrap();
    assert_eq!(s.cqe.dw0 & 3, 2, "CSTS.CFS set, RDY clear");
    // Property Set of a read-only property.
    let r = c
        .execute(
            PropertyCommand::set_sqe(registers::CAP, true, 0),
            HostData::None,
        )
        .await
        .unwrap();
    assert_eq!(r.cqe.status, Status::INVALID_FIELD.dnr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expiry_ends_the_association() {
    let (_t, addr) = start(Limits::default()).await;
    let mut c = HostConnection::connect(&addr, HostQueueConfig::default())
        .await
        .unwrap();
    let (s, d) = connect_sqe(0, 1000);
    assert!(c
        .execute(s, HostData::ToController(d))
        .await
        .unwrap()
        .cqe
        .status
        .is_success());
    // Send nothing: the target must close within KATO plus its grace.
    let t0 = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(6), c.next_completion()).await;
    assert!(r.is_ok(), "the association outlived its keep-alive timeout");
    assert!(r.unwrap().is_err());
    assert!(t0.elapsed() >= Duration::from_millis(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_time_out_and_limits_hold() {
    let limits = Limits {
        icreq_timeout_ms: 300,
        max_connections_per_host: 4,
        ..Limits::default()
    };
    let (_t, addr) = start(limits).await;
    // A connection that never sends ICReq is closed.
    let mut s = TcpStream::connect(addr.socket).await.unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection not closed"
    );
    // More than four connections from one address: the fifth is refused.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr.socket).await.unwrap();
        s.write_all(&icreq()).await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = TcpStream::connect(addr.socket).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), fifth.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "fifth connection was not refused"
    );
}

/// This process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Reads one whole PDU (header and all) from a raw connection.
async fn read_pdu(s: &mut TcpStream) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    s.read_exact(&mut h).await.unwrap();
    let plen = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    h.resize(plen, 0);
    s.read_exact(&mut h[8..]).await.unwrap();
    h
}

/// Status of the CapsuleResp `pdu` (its CQE's status field, phase bit dropped).
fn resp_status(pdu: &[u8]) -> u16 {
    assert_eq!(
        pdu[0], 0x05,
        "expected a CapsuleResp, got PDU type {:#x}",
        pdu[0]
    );
    u16::from_le_bytes([pdu[8 + 14], pdu[8 + 15]]) >> 1
}

/// Brings up an association by hand (ICReq, Connect, CC.EN, I/O queue Connect)
/// and returns the admin and I/O sockets; the I/O socket's receive buffer is
/// small, so what the target can park in the kernel is small too.
async fn raw_association(addr: TransportAddr) -> (TcpStream, TcpStream) {
    raw_association_with(addr, PduEncoder::default()).await
}

/// [`raw_association`] with the digests of `enc` asked for in both ICReqs and
/// used on the I/O queue.
async fn raw_association_with(addr: TransportAddr, enc: PduEncoder) -> (TcpStream, TcpStream) {
    let mut admin = TcpStream::connect(addr.socket).await.unwrap();
    admin.write_all(&icreq()).await.unwrap();
    assert_eq!(read_pdu(&mut admin).await[0], 0x01, "ICResp");
    let (s, d) = connect_sqe(0, 0);
    admin.write_all(&raw_cmd(&s, &d)).await.unwrap();
    let r = read_pdu(&mut admin).await;
    assert_eq!(resp_status(&r), 0);
    let cntlid = u16::from_le_bytes([r[8], r[9]]);
    let cc = Cc {
        en: true,
        iosqes: 6,
        iocqes: 4,
        ..Default::default()
    };
    let set = PropertyCommand::set_sqe(registers::CC, false, u64::from(cc.to_u32()));
    admin.write_all(&raw_cmd(&set, &[])).await.unwrap();
    assert_eq!(resp_status(&read_pdu(&mut admin).await), 0);

    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    let mut io = sock.connect(addr.socket).await.unwrap();
    let ic = icreq_with(Digests {
        header: enc.hdgst,
        data: enc.ddgst,
    });
    io.write_all(&ic).await.unwrap();
    assert_eq!(read_pdu(&mut io).await[0], 0x01, "ICResp");
    let (sqe, data) = connect_sqe_for(1, 0, cntlid);
    let capsule = enc.to_bytes(&Pdu::CapsuleCmd { sqe, data });
    io.write_all(&capsule).await.unwrap();
    assert_eq!(resp_status(&read_pdu(&mut io).await), 0);
    (admin, io)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_stops_reading_is_held_back_then_closed() {
    let limits = Limits {
        max_pending_send_bytes: 1 << 20,
        send_stall_timeout_ms: 1500,
        ..Limits::default()
    };
    let (_t, addr) = start(limits).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ios = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let good = tokio::spawn(good_host(addr, stop.clone(), ios.clone(), errors.clone()));

    let (_admin, mut io) = raw_association(addr).await;
    let peak_before = peak_rss_kib();
    // 4,000 reads of 128 KiB (500 MiB of responses) and never a byte read back,
    // in bursts of a queue's worth, paced so that a target that kept executing
    // them would have freed their command IDs before they come round again.
    let cmds = 4000u32;
    let mut sent = 0u32;
    for i in 0..cmds {
        if i % 32 == 0 && i > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut s = Sqe::rw(io_opcode::READ, 1, u64::from(i % 128) * 256, 256, false);
        s.cid = (i % 32) as u16;
        s.sgl1 = nvmf_proto::sqe::SglDescriptor::transport(128 * 1024);
        match tokio::time::timeout(Duration::from_secs(2), io.write_all(&raw_cmd(&s, &[]))).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break,
            Err(_) => break, // our writes block: the target stopped reading them
        }
    }
    let ios_before = ios.load(Ordering::Relaxed);
    // Past the stall limit the target gives up on the connection.
    tokio::time::sleep(Duration::from_millis(1500 + 2500)).await;
    let ios_during = ios.load(Ordering::Relaxed) - ios_before;
    let peak_growth = peak_rss_kib() - peak_before;

    // Now read: what the target queued is bounded, then the connection is closed.
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => {
                got += n;
                if got > 64 << 20 {
                    break false;
                }
            }
            Err(_) => break false,
        }
    };
    eprintln!(
        "sent {sent} reads; peak RSS grew {peak_growth} KiB; read back {} KiB before the close; \
         good host did {ios_during} I/Os meanwhile",
        got / 1024
    );
    // (This process is the target: its peak RSS is the target's memory.)
    assert!(
        peak_growth < 48 * 1024,
        "the target's peak RSS grew {peak_growth} KiB for a host that was not reading"
    );
    assert!(
        closed,
        "the target kept a connection whose host read nothing for 4 s (read back {got} bytes)"
    );
    assert!(
        sent >= 32,
        "the target took fewer commands than the queue holds"
    );

    stop.store(true, Ordering::Relaxed);
    good.await.unwrap();
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "the well-behaved host saw an error"
    );
    assert!(
        ios_during > 0,
        "the well-behaved host made no progress meanwhile"
    );
}

/// A Write of `len` bytes at LBA `slba` with command ID `cid`, its data to come by R2T
/// (or in the capsule if `data` is not empty).
fn write_capsule(enc: &PduEncoder, cid: u16, slba: u64, len: u32, data: &[u8]) -> Vec<u8> {
    let mut s = Sqe::rw(io_opcode::WRITE, 1, slba, len / 512, false);
    s.cid = cid;
    s.sgl1 = if data.is_empty() {
        nvmf_proto::sqe::SglDescriptor::transport(len)
    } else {
        nvmf_proto::sqe::SglDescriptor::in_capsule(len)
    };
    enc.to_bytes(&Pdu::CapsuleCmd {
        sqe: s,
        data: Bytes::copy_from_slice(data),
    })
    .to_vec()
}

fn h2c(cid: u16, ttag: u16, datao: u32, data: &[u8]) -> Vec<u8> {
    PduEncoder::default()
        .to_bytes(&Pdu::H2CData(DataPdu {
            cccid: cid,
            ttag,
            datao,
            datal: data.len() as u32,
            last: true,
            success: false,
            data: Bytes::copy_from_slice(data),
        }))
        .to_vec()
}

/// Reads PDUs until one of type `t`, skipping others; panics on a C2HTermReq
/// unless that is what is wanted.
async fn read_until(s: &mut TcpStream, t: u8) -> Vec<u8> {
    loop {
        let p = tokio::time::timeout(Duration::from_secs(10), read_pdu(s))
            .await
            .expect("no PDU from the target");
        if p[0] == t {
            return p;
        }
        assert_ne!(p[0], 0x03, "unexpected C2HTermReq: {:02x?}", &p[..16]);
    }
}

/// Expects a C2HTermReq with `fes` (and `fei` if given), then the close.
async fn expect_termreq(s: &mut TcpStream, fes: u16, fei: Option<u32>, what: &str) {
    let (got_fes, got_fei) = termreq_fields(&read_until(s, 0x03).await);
    assert_eq!(got_fes, fes, "{what}: FES");
    if let Some(fei) = fei {
        assert_eq!(got_fei, fei, "{what}: FEI");
    }
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "{what}: the connection was not closed");
}

/// The data-phase and command-ID rules, against the real target over raw TCP on
/// an I/O queue (the same cases as crates/proto/tests/violations.rs, end to end),
/// while a well-behaved host does I/O.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_phase_and_command_id_violations_end_to_end() {
    let (_t, addr) = start(Limits::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ios = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let good = tokio::spawn(good_host(addr, stop.clone(), ios.clone(), errors.clone()));
    let enc = PduEncoder::default();
    let r2t_of = |p: &[u8]| {
        (
            u16::from_le_bytes([p[8], p[9]]),
            u16::from_le_bytes([p[10], p[11]]),
            u32::from_le_bytes([p[16], p[17], p[18], p[19]]),
        )
    };

    // H2CData with a transfer tag the R2T did not give: FES 01h, FEI 10 (TTAG).
    let (_a, mut io) = raw_association(addr).await;
    io.write_all(&write_capsule(&enc, 1, 0, 4096, &[]))
        .await
        .unwrap();
    let (cid, ttag, len) = r2t_of(&read_until(&mut io, 0x09).await);
    assert_eq!((cid, len), (1, 4096));
    io.write_all(&h2c(1, ttag ^ 0x5a5a, 0, &[0; 4096]))
        .await
        .unwrap();
    expect_termreq(&mut io, 0x01, Some(10), "wrong TTAG").await;

    // More data than the R2T asked for: FES 04h (data transfer out of range).
    let (_a, mut io) = raw_association(addr).await;
    io.write_all(&write_capsule(&enc, 1, 0, 4096, &[]))
        .await
        .unwrap();
    let (_, ttag, _) = r2t_of(&read_until(&mut io, 0x09).await);
    io.write_all(&h2c(1, ttag, 0, &[0; 8192])).await.unwrap();
    expect_termreq(&mut io, 0x04, None, "data past the R2T").await;

    // A command ID reused while its command waits for data: that command is
    // answered Command ID Conflict (DNR), the first one still completes, and the
    // connection stays.
    let (_a, mut io) = raw_association(addr).await;
    io.write_all(&write_capsule(&enc, 7, 8, 4096, &[]))
        .await
        .unwrap();
    let (_, ttag, _) = r2t_of(&read_until(&mut io, 0x09).await);
    let mut rd = Sqe::rw(io_opcode::READ, 1, 8, 8, false);
    rd.cid = 7;
    rd.sgl1 = nvmf_proto::sqe::SglDescriptor::transport(4096);
    io.write_all(&raw_cmd(&rd, &[])).await.unwrap();
    let p = read_until(&mut io, 0x05).await;
    assert_eq!(u16::from_le_bytes([p[8 + 12], p[8 + 13]]), 7, "CID");
    assert_eq!(resp_status(&p), 0x4003, "Command ID Conflict, DNR");
    io.write_all(&h2c(7, ttag, 0, &[0xab; 4096])).await.unwrap();
    let p = read_until(&mut io, 0x05).await;
    assert_eq!(resp_status(&p), 0, "the first command completes");

    // More commands than the submission queue holds (SQSIZE 31: 32 entries), all
    // waiting for data: FES 02h (PDU sequence error).
    let (_a, mut io) = raw_association(addr).await;
    let mut burst = Vec::new();
    for cid in 0..33u16 {
        burst.extend(write_capsule(&enc, cid, u64::from(cid) * 8, 4096, &[]));
    }
    io.write_all(&burst).await.unwrap();
    expect_termreq(&mut io, 0x02, None, "33 commands in a 32-entry queue").await;

    // A data digest that does not match: that command completes with Transient
    // Transport Error, its data is not written, and the connection stays.
    let dd = PduEncoder {
        ddgst: true,
        ..PduEncoder::default()
    };
    let (_a, mut io) = raw_association_with(addr, dd).await;
    io.write_all(&write_capsule(&dd, 1, 16, 4096, &[0x11; 4096]))
        .await
        .unwrap();
    assert_eq!(resp_status(&read_until(&mut io, 0x05).await), 0);
    let mut bad = write_capsule(&dd, 2, 16, 4096, &[0x22; 4096]);
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    io.write_all(&bad).await.unwrap();
    let p = read_until(&mut io, 0x05).await;
    assert_eq!(resp_status(&p), 0x0022, "Transient Transport Error");
    let mut rd = Sqe::rw(io_opcode::READ, 1, 16, 8, false);
    rd.cid = 3;
    rd.sgl1 = nvmf_proto::sqe::SglDescriptor::transport(4096);
    io.write_all(&raw_cmd(&rd, &[])).await.unwrap();
    let p = read_until(&mut io, 0x07).await;
    let pdo = p[3] as usize;
    assert_eq!(p.len(), pdo + 4096 + 4, "C2HData with a data digest");
    assert!(
        p[pdo..pdo + 4096].iter().all(|&b| b == 0x11),
        "the write with the bad digest changed the data"
    );

    stop.store(true, Ordering::Relaxed);
    good.await.unwrap();
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "the well-behaved host saw an error"
    );
    assert!(ios.load(Ordering::Relaxed) > 0);
}

/// Header fields judged for every PDU type a host may send, each on a connection
/// of its own while a well-behaved host does I/O: HLEN, PDO, PLEN below the
/// header and PLEN of 4 GiB get FES 01h with the field's byte offset as FEI
/// (05h, Data Transfer Limit Exceeded, for a data PDU longer than the limits);
/// PDU types that flow from the controller get FES 01h, FEI 0; a malformed
/// H2CTermReq is not answered, the connection just closes (NVMe/TCP 1.0
/// §3.6.2.3, §3.6.2.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_fields_of_every_pdu_type() {
    let (_t, addr) = start(Limits::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ios = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let good = tokio::spawn(good_host(addr, stop.clone(), ios.clone(), errors.clone()));

    let ic = icreq();
    let (csqe, cdata) = connect_sqe(0, 0);
    let connect = raw_cmd(&csqe, &cdata);
    let mut after_connect = ic.clone();
    after_connect.extend_from_slice(&connect);
    let h2c = PduEncoder::default()
        .to_bytes(&Pdu::H2CData(DataPdu {
            cccid: 1,
            ttag: 0,
            datao: 0,
            datal: 8,
            last: true,
            success: false,
            data: Bytes::from_static(&[7; 8]),
        }))
        .to_vec();
    let set = |p: &[u8], at: usize, v: &[u8]| {
        let mut p = p.to_vec();
        p[at..at + v.len()].copy_from_slice(v);
        p
    };
    let plen = |p: &[u8], v: u32| set(p, 4, &v.to_le_bytes());
    const HLEN: u32 = 2;
    const PDO: u32 = 3;
    const PLEN: u32 = 4;
    let inv = Fes::InvalidHeaderField;
    // (what, prelude, PDU, expected answer)
    type Case<'a> = (&'a str, &'a [u8], Vec<u8>, Option<(Fes, u32)>);
    let cases: Vec<Case> = vec![
        ("ICReq HLEN", &[], set(&ic, 2, &[127]), Some((inv, HLEN))),
        ("ICReq PDO", &[], set(&ic, 3, &[8]), Some((inv, PDO))),
        (
            "ICReq PLEN small",
            &[],
            plen(&ic, 8)[..8].to_vec(),
            Some((inv, PLEN)),
        ),
        (
            "ICReq PLEN 4 GiB",
            &[],
            plen(&ic, u32::MAX),
            Some((inv, PLEN)),
        ),
        (
            "CapsuleCmd HLEN",
            &ic,
            set(&connect, 2, &[71]),
            Some((inv, HLEN)),
        ),
        (
            "CapsuleCmd PDO",
            &ic,
            set(&connect, 3, &[8]),
            Some((inv, PDO)),
        ),
        (
            "CapsuleCmd PLEN small",
            &ic,
            set(&plen(&connect, 10), 3, &[0]),
            Some((inv, PLEN)),
        ),
        (
            "CapsuleCmd PLEN 4 GiB",
            &ic,
            plen(&connect, u32::MAX)[..72].to_vec(),
            Some((Fes::DataLimitExceeded, PLEN)),
        ),
        (
            "H2CData HLEN",
            &after_connect,
            set(&h2c, 2, &[23]),
            Some((inv, HLEN)),
        ),
        (
            "H2CData PDO",
            &after_connect,
            set(&h2c, 3, &[8]),
            Some((inv, PDO)),
        ),
        (
            "H2CData PLEN small",
            &after_connect,
            plen(&h2c, 24)[..24].to_vec(),
            Some((inv, PLEN)),
        ),
        (
            "H2CData PLEN 4 GiB",
            &after_connect,
            plen(&h2c, u32::MAX)[..24].to_vec(),
            Some((Fes::DataLimitExceeded, PLEN)),
        ),
        ("H2CTermReq HLEN", &ic, set(&header24(0x02), 2, &[16]), None),
        (
            "H2CTermReq PLEN small",
            &ic,
            plen(&header24(0x02), 8)[..8].to_vec(),
            None,
        ),
        (
            "H2CTermReq PLEN 4 GiB",
            &ic,
            plen(&header24(0x02), u32::MAX),
            None,
        ),
        (
            "ICResp to a controller",
            &ic,
            header24(0x01),
            Some((inv, 0)),
        ),
        (
            "C2HTermReq to a controller",
            &ic,
            header24(0x03),
            Some((inv, 0)),
        ),
        (
            "CapsuleResp to a controller",
            &ic,
            header24(0x05),
            Some((inv, 0)),
        ),
        (
            "C2HData to a controller",
            &ic,
            header24(0x07),
            Some((inv, 0)),
        ),
        ("R2T to a controller", &ic, header24(0x09), Some((inv, 0))),
    ];
    let mut wrong = Vec::new();
    for (what, prelude, pdu, want) in cases {
        let got = send_bad(addr, prelude, &pdu).await;
        if got != want {
            wrong.push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    stop.store(true, Ordering::Relaxed);
    good.await.unwrap();
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "the well-behaved host saw an error"
    );
    assert!(ios.load(Ordering::Relaxed) > 0);
}

/// Issue 13: a garbage common header is refused as soon as its 8 bytes are in,
/// not after the HLEN bytes it claims (the target used to wait for them, so a
/// peer could park a connection there): the C2HTermReq comes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_common_header_is_refused_on_its_8_bytes() {
    let (_t, addr) = start(Limits::default()).await;
    for (prelude, bad) in [
        // Before ICReq: an unknown type claiming a 128-byte header.
        (vec![], vec![0xEE, 0, 128, 0, 0, 0x10, 0, 0]),
        // After ICReq: a CapsuleCmd claiming HLEN 100 (must be 72).
        (icreq(), vec![0x04, 0, 100, 0, 0, 0x10, 0, 0]),
    ] {
        let started = std::time::Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(3), send_bad(addr, &prelude, &bad))
            .await
            .expect("no C2HTermReq within 3 s of an 8-byte garbage header");
        assert_eq!(
            got.map(|(f, _)| f),
            Some(Fes::InvalidHeaderField),
            "{bad:02x?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

/// Issue 13: after a C2HTermReq the target closes with FIN, not a reset, even
/// while the host goes on sending: the host reads the C2HTermReq and then a
/// clean end of stream (a close with unread bytes would reset the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termreq_then_fin_not_reset() {
    let (_t, addr) = start(Limits::default()).await;
    let s = TcpStream::connect(addr.socket).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let mut bad = icreq();
    bad.extend_from_slice(&[0x04, 0, 100, 0, 0, 0x10, 0, 0]);
    wr.write_all(&bad).await.unwrap();
    // Keep sending after the bad header, as a host with queued commands would.
    let writer = tokio::spawn(async move {
        let junk = vec![0x5Au8; 16 * 1024];
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < until {
            if wr.write_all(&junk).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wr
    });
    // Read only after the host's later bytes have reached the target.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut buf))
        .await
        .expect("the target did not close");
    let _ = writer.await;
    assert!(
        r.is_ok(),
        "the connection ended with {r:?}, not a clean close"
    );
    // ICResp is 128 bytes; the C2HTermReq follows it.
    assert!(buf.len() > 128 + 8, "only {} bytes came back", buf.len());
    let ch = CommonHeader::decode(&buf[128..]);
    assert_eq!(ch.pdu_type, 3, "the C2HTermReq follows the ICResp");
    assert_eq!(
        Fes::from_u16(termreq_fields(&buf[128..]).0),
        Fes::InvalidHeaderField
    );
}

/// Decodes a hex string (test vectors captured from SPDK's host).
fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// SPDK v26.05's host (spdk_nvme_identify, spdk_nvme_perf) at detach: it completes
/// its four outstanding AERs itself (`nvme_tcp_admin_qpair_abort_aers`, nothing on
/// the wire) and reuses their CIDs, so the shutdown's Property Get CC comes with
/// CID 3, the last AER's. Answered Command ID Conflict, SPDK logged "Failed to read
/// the CC register" and skipped the shutdown notification. The bytes are SPDK's,
/// from a capture against our target. The AER is forgotten: the Property Get and
/// the Property Set (CC.SHN, CID 2) that follow succeed, and no CQE for the dropped
/// AERs comes later.
#[tokio::test]
async fn spdk_detach_reuses_the_cids_of_its_aers() {
    let (_t, addr) = start(Limits::default()).await;
    let (mut admin, _io) = raw_association(addr).await;
    // Frame 26 of the capture: AERs with CIDs 0..=3, then Get Features (Keep Alive
    // Timer), CID 4; all 72-byte CapsuleCmds, SGL Transport Data Block (5Ah) of 0.
    let aers_and_get_features = unhex(concat!(
        "04004800480000000c400000000000000000000000000000000000000000000000000000",
        "00000000000000000000005a000000000000000000000000000000000000000000000000",
        "04004800480000000c400100000000000000000000000000000000000000000000000000",
        "00000000000000000000005a000000000000000000000000000000000000000000000000",
        "04004800480000000c400200000000000000000000000000000000000000000000000000",
        "00000000000000000000005a000000000000000000000000000000000000000000000000",
        "04004800480000000c400300000000000000000000000000000000000000000000000000",
        "00000000000000000000005a000000000000000000000000000000000000000000000000",
        "04004800480000000a400400000000000000000000000000000000000000000000000000",
        "00000000000000000000005a0f0000000000000000000000000000000000000000000000",
    ));
    assert_eq!(aers_and_get_features.len(), 5 * 72);
    admin.write_all(&aers_and_get_features).await.unwrap();
    let p = read_pdu(&mut admin).await;
    assert_eq!(
        u16::from_le_bytes([p[8 + 12], p[8 + 13]]),
        4,
        "Get Features' CQE first"
    );
    assert_eq!(resp_status(&p), 0);

    // Frame 50: Property Get, 4 bytes at 14h (CC), CID 3.
    let get_cc = unhex(concat!(
        "04004800480000007f400300040000000000000000000000000000000000000000000000",
        "00000000000000000000005a000000001400000000000000000000000000000000000000",
    ));
    admin.write_all(&get_cc).await.unwrap();
    let p = read_pdu(&mut admin).await;
    assert_eq!(u16::from_le_bytes([p[8 + 12], p[8 + 13]]), 3, "CID");
    assert_eq!(
        resp_status(&p),
        0,
        "Property Get CC succeeds (was 4003h, CID conflict)"
    );
    let cc = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
    assert_eq!(cc & 1, 1, "CC.EN as set");

    // Then the shutdown notification, CID 2 (another dropped AER's).
    let mut set = PropertyCommand::set_sqe(registers::CC, false, u64::from(cc | (1 << 14)));
    set.cid = 2;
    admin.write_all(&raw_cmd(&set, &[])).await.unwrap();
    let p = read_pdu(&mut admin).await;
    assert_eq!(u16::from_le_bytes([p[8 + 12], p[8 + 13]]), 2, "CID");
    assert_eq!(resp_status(&p), 0, "Property Set CC.SHN succeeds");

    // A new AER is held again, a Keep Alive after it answers, and nothing else
    // comes: no CQE for the AERs the host dropped.
    let aer = Sqe {
        opcode: 0x0c,
        cid: 9,
        sgl1: nvmf_proto::sqe::SglDescriptor::transport(0),
        ..Sqe::default()
    };
    admin.write_all(&raw_cmd(&aer, &[])).await.unwrap();
    let ka = Sqe {
        opcode: 0x18,
        cid: 10,
        sgl1: nvmf_proto::sqe::SglDescriptor::transport(0),
        ..Sqe::default()
    };
    admin.write_all(&raw_cmd(&ka, &[])).await.unwrap();
    let p = read_pdu(&mut admin).await;
    assert_eq!(
        u16::from_le_bytes([p[8 + 12], p[8 + 13]]),
        10,
        "only the Keep Alive answers"
    );
    assert_eq!(resp_status(&p), 0);
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(300), admin.read(&mut b)).await;
    assert!(r.is_err(), "no further PDU: {r:?}");
}
