//! rdma-hostile: a deliberately bad NVMe/RDMA host, to check that an NVMe/RDMA
//! target ends a misbehaving connection the way NVMe-oF 1.1 §7.3 says and keeps
//! serving everybody else (the project's hostile-input rule, for RDMA).
//!
//! ```text
//! cargo build --release -p nvmf-transport --example rdma-hostile
//! rdma-hostile --addr 10.99.0.1:4430 --subnqn nqn.2024-01.io.nvmf-rdma:hostile
//! ```
//!
//! Each case prints one `PASS: ...` or `FAIL: ...` line; the exit status is 1
//! if any case failed (2 on a usage error). The cases, run in this order
//! (h last):
//!
//! * g: a correct admin queue: RDMA_CM_REQUEST (RECFMT 0, QID 0, HRQSIZE 32,
//!   HSQSIZE 31), then a Fabrics Connect whose keyed SGL names 1024 bytes of
//!   Connect data in our registered memory (the target RDMA READs it): a
//!   success CQE comes back by SEND with CNTLID in DW0. This proves the tool,
//!   so the failures below are the target's doing and not ours;
//! * a: RECFMT 1 → reject with STS Invalid RECFMT (§7.3.5.2);
//! * b: QID 1 with HSQSIZE 4095 → Invalid HSQSIZE;
//! * c: HRQSIZE below HSQSIZE + 1 → Invalid HRQSIZE;
//! * d: no private data, and 4 bytes of it → rejected. On InfiniBand and RoCE
//!   the CM pads a REQ's private data with zeros to 56 bytes (rdma_cm's IB
//!   REQ private data is 92 bytes less its 36-byte header), so the target reads
//!   RECFMT 0, QID 0, HRQSIZE 0, HSQSIZE 0 and rejects with Invalid HRQSIZE;
//!   on iWARP it sees the real length and rejects with Invalid Private Data
//!   Length. Either is accepted, anything else fails;
//! * e: a correct admin queue, then a SEND of 10 bytes (shorter than a 64-byte
//!   SQE) → the target disconnects (RDMA has no termination request);
//! * f: a correct admin queue, then a Connect whose keyed SGL names a bogus
//!   rkey, so the target's RDMA READ of the Connect data fails → the target
//!   disconnects; an error CQE before that is allowed, a success CQE is not;
//! * i: the Connect data in the capsule on the admin queue (one 1088-byte
//!   SEND; the target's admin receives are 64 bytes, as nvmet-rdma's) → the
//!   target's RECV fails (IB: local length error; rxe reports a local QP
//!   operation error) and it disconnects;
//! * j: a Connect whose SGL1 names 1024 bytes of in-capsule data, none sent,
//!   on the admin queue (our target takes no in-capsule data there) → an SGL
//!   Offset Invalid (16h) CQE, the status nvmet-rdma gives for in-capsule data
//!   beyond its in-capsule size (`nvmet_rdma_map_sgl_inline`);
//! * k: a Connect whose SGL1 is a plain Data Block with an address (type 0h
//!   subtype 0h, not an NVMe/RDMA descriptor) → SGL Descriptor Type Invalid
//!   (11h), our target's documented choice (`SglError::status`; nvmet answers
//!   Invalid Field for an unknown subtype of a known type);
//! * h: after all of them, a correct admin queue and Connect still succeed.
//!
//! Every wire structure comes from `nvmf_proto` (CM private data, Connect SQE
//! and data, keyed SGL, CQE); only the RDMA plumbing is here.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use nvmf_proto::fabrics::{ConnectCommand, ConnectData, CNTLID_DYNAMIC, CONNECT_DATA_SIZE};
use nvmf_proto::rdma::cm::{CmAccept, CmReject, CmRequest, RejectStatus, ADMIN_QUEUE_DEPTH};
use nvmf_proto::rdma::sgl::RdmaSgl;
use nvmf_proto::sqe::{SglDescriptor, SQE_SIZE};
use nvmf_proto::{cqe::CQE_SIZE, Cqe, Sqe, Status};
use nvmf_rdma::{Access, Completion, ConnParam, Connection, MemoryRegion, Opcode, QpAttrs};
use nvmf_rdma::{CmEventKind, RdmaError};

/// Receive slots we post: enough for the responses of the few commands we send.
const RECV_SLOTS: usize = 4;
/// A receive slot: a response is a 16-byte CQE; 64 leaves room to see a
/// target that sends more than it should.
const RECV_SLOT: usize = 64;
/// wr_id of our SEND of a command.
const WR_SEND: u64 = 1 << 32;

struct Args {
    addr: SocketAddr,
    subnqn: String,
    hostnqn: String,
    /// How long the target gets for each step (TCG guests are slow).
    wait: Duration,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: rdma-hostile --addr IP:PORT --subnqn NQN [--hostnqn NQN] [--wait-secs N]\n\
         runs bad NVMe/RDMA hosts against the target; PASS:/FAIL: lines, exit 1 on a FAIL"
    );
    ExitCode::from(2)
}

fn parse_args() -> Option<Args> {
    let mut addr = None;
    let mut subnqn = None;
    let mut hostnqn = "nqn.2024-01.io.nvmf-rs:rdma-hostile".to_string();
    let mut wait = Duration::from_secs(10);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next()?;
        match a.as_str() {
            "--addr" => addr = Some(v.parse().ok()?),
            "--subnqn" => subnqn = Some(v),
            "--hostnqn" => hostnqn = v,
            "--wait-secs" => wait = Duration::from_secs(v.parse().ok()?),
            _ => return None,
        }
    }
    Some(Args {
        addr: addr?,
        subnqn: subnqn?,
        hostnqn,
        wait,
    })
}

/// The outcome of one case: Ok(what was seen) or Err(what went wrong).
type Outcome = Result<String, String>;

/// Our side of one queue: the connection and the memory it uses.
struct HostQueue {
    // Declared first: the QP goes before the regions it uses.
    conn: Connection,
    recv_mr: MemoryRegion,
    send_mr: MemoryRegion,
    data_mr: MemoryRegion,
}

fn qp_attrs() -> QpAttrs {
    QpAttrs {
        max_send_wr: 8,
        max_recv_wr: RECV_SLOTS as u32,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 0,
        cq_entries: 16,
    }
}

/// The RDMA_CM_REQUEST of a correct admin queue, as the Linux host sends it
/// (HRQSIZE = NVME_AQ_DEPTH, HSQSIZE = NVME_AQ_DEPTH - 1).
fn admin_request() -> CmRequest {
    CmRequest {
        recfmt: 0,
        qid: 0,
        hrqsize: ADMIN_QUEUE_DEPTH,
        hsqsize: ADMIN_QUEUE_DEPTH - 1,
        cntlid: 0,
    }
}

/// Resolves, creates the QP and connects with `private_data`; returns the
/// connection or rdma-core's error (a reject is [`RdmaError::Rejected`]).
async fn try_connect(a: &Args, private_data: &[u8]) -> Result<HostQueue, RdmaError> {
    let c = nvmf_rdma::resolve(a.addr, &qp_attrs(), 5000).await?;
    let qp = c.qp();
    let recv_mr = qp.register(RECV_SLOTS * RECV_SLOT, Access::LOCAL_WRITE)?;
    let send_mr = qp.register(SQE_SIZE, Access::LOCAL_WRITE)?;
    // The Connect data the target fetches with RDMA READ.
    let data_mr = qp.register(CONNECT_DATA_SIZE, Access::LOCAL_WRITE | Access::REMOTE_READ)?;
    for i in 0..RECV_SLOTS {
        qp.post_recv(i as u64, &[recv_mr.sge(i * RECV_SLOT, RECV_SLOT)?])?;
    }
    let conn = c.connect(private_data, ConnParam::default()).await?;
    Ok(HostQueue {
        conn,
        recv_mr,
        send_mr,
        data_mr,
    })
}

/// Cases a-d: a connect request the target must reject with `want` (any of).
async fn expect_reject(a: &Args, private_data: &[u8], want: &[RejectStatus]) -> Outcome {
    let r = tokio::time::timeout(a.wait, try_connect(a, private_data)).await;
    match r {
        Err(_) => Err(format!(
            "no answer to the connect request within {:?}",
            a.wait
        )),
        Ok(Ok(_q)) => Err("the target accepted the connection".into()),
        Ok(Err(RdmaError::Rejected {
            status,
            private_data,
        })) => {
            let rej = CmReject::decode(&private_data).map_err(|e| {
                format!("rejected (CM status {status}) without NVMe/RDMA reject data: {e}")
            })?;
            if rej.recfmt != 0 {
                return Err(format!("reject RECFMT {} (0 expected)", rej.recfmt));
            }
            if want.contains(&rej.status) {
                Ok(format!(
                    "rejected, STS {:#04x} ({})",
                    rej.status.to_u16(),
                    rej.status.message()
                ))
            } else {
                Err(format!(
                    "rejected with STS {:#04x} ({}), expected {}",
                    rej.status.to_u16(),
                    rej.status.message(),
                    want.iter()
                        .map(|s| format!("{:#04x}", s.to_u16()))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))
            }
        }
        Ok(Err(e)) => Err(format!("connect failed otherwise: {e}")),
    }
}

/// Connects a correct admin queue and checks the accept's private data.
async fn admin_queue(a: &Args) -> Result<HostQueue, String> {
    let q = tokio::time::timeout(a.wait, try_connect(a, &admin_request().encode()))
        .await
        .map_err(|_| format!("admin queue: no connection within {:?}", a.wait))?
        .map_err(|e| format!("admin queue: {e}"))?;
    let acc = CmAccept::decode(q.conn.peer_private_data())
        .map_err(|e| format!("admin queue: accept private data: {e}"))?;
    // CRQSIZE: the target can hold at least the HSQSIZE + 1 commands we may send.
    if acc.recfmt != 0 || acc.crqsize < ADMIN_QUEUE_DEPTH {
        return Err(format!(
            "admin queue: accept RECFMT {} CRQSIZE {} (0 and >= {ADMIN_QUEUE_DEPTH} expected)",
            acc.recfmt, acc.crqsize
        ));
    }
    Ok(q)
}

/// The Connect command of an admin queue of HSQSIZE + 1 entries.
fn admin_connect_command() -> ConnectCommand {
    ConnectCommand {
        recfmt: 0,
        qid: 0,
        sqsize: ADMIN_QUEUE_DEPTH - 1,
        cattr: 0,
        // Keep Alive disabled: each case ends long before any timer would.
        kato: 0,
    }
}

/// The Connect SQE for the admin queue (NVMe-oF 1.1 §3.3) with SGL1 a keyed
/// data block descriptor naming our 1024 bytes of Connect data under `rkey`
/// (§7.3.2: the target fetches it with RDMA READ).
fn connect_sqe(q: &mut HostQueue, a: &Args, cid: u16, rkey: u32) -> Sqe {
    let data = ConnectData {
        hostid: *b"rdma-hostile\0\0\0\x01",
        cntlid: CNTLID_DYNAMIC,
        subnqn: a.subnqn.clone(),
        hostnqn: a.hostnqn.clone(),
    };
    q.data_mr.as_mut_slice()[..CONNECT_DATA_SIZE].copy_from_slice(&data.encode());
    let mut sqe = admin_connect_command().to_sqe();
    sqe.cid = cid;
    sqe.sgl1 = RdmaSgl::Keyed {
        addr: q.data_mr.addr(),
        len: CONNECT_DATA_SIZE as u32,
        key: rkey,
        invalidate: false,
    }
    .to_descriptor();
    sqe
}

/// Sends `bytes` as one message (SEND).
fn send(q: &mut HostQueue, bytes: &[u8]) -> Result<(), String> {
    q.send_mr.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
    let sge = q
        .send_mr
        .sge(0, bytes.len())
        .map_err(|e| format!("send buffer: {e}"))?;
    q.conn
        .qp()
        .post_send(WR_SEND, &[sge], true, None)
        .map_err(|e| format!("post SEND: {e}"))
}

/// What happened after a command was sent.
enum Answer {
    /// A response arrived (and how many bytes it had).
    Cqe(Cqe, u32),
    /// The target disconnected first.
    Disconnected(CmEventKind),
    /// Our receive or send failed (the QP went to the error state: the target
    /// broke the connection), with the completion's text.
    Broken(&'static str),
    /// Nothing within the wait.
    Timeout,
}

/// Waits for the next response or the end of the connection.
async fn next_answer(q: &HostQueue, wait: Duration) -> Answer {
    let work = async {
        let mut wc = vec![Completion::default(); 8];
        loop {
            let n = match q.conn.qp().wait_completions(&mut wc).await {
                Ok(n) => n,
                Err(_) => return Answer::Broken("waiting for completions failed"),
            };
            for c in &wc[..n] {
                if c.result().is_err() {
                    return Answer::Broken(c.status_text);
                }
                if c.opcode == Opcode::Recv {
                    let at = c.wr_id as usize * RECV_SLOT;
                    let mut b = [0u8; CQE_SIZE];
                    b.copy_from_slice(&q.recv_mr.as_slice()[at..at + CQE_SIZE]);
                    return Answer::Cqe(Cqe::decode(&b), c.byte_len);
                }
            }
        }
    };
    let r = tokio::time::timeout(wait, async {
        tokio::select! {
            a = work => a,
            e = q.conn.disconnected() => match e {
                Ok(k) => Answer::Disconnected(k),
                Err(_) => Answer::Disconnected(CmEventKind::Other("event channel error")),
            },
        }
    })
    .await;
    r.unwrap_or(Answer::Timeout)
}

/// Waits for the DISCONNECTED event (after our QP broke, it still comes).
async fn wait_disconnect(q: &HostQueue, wait: Duration) -> Result<CmEventKind, String> {
    match tokio::time::timeout(wait, q.conn.disconnected()).await {
        Ok(Ok(k)) => Ok(k),
        Ok(Err(e)) => Err(format!("CM event channel: {e}")),
        Err(_) => Err(format!("no DISCONNECTED within {wait:?}")),
    }
}

/// Cases g and h: a correct Connect gets a success CQE by SEND.
async fn good_connect(a: &Args) -> Outcome {
    let mut q = admin_queue(a).await?;
    let rkey = q.data_mr.rkey();
    let sqe = connect_sqe(&mut q, a, 0x11, rkey);
    send(&mut q, &sqe.encode())?;
    match next_answer(&q, a.wait).await {
        Answer::Cqe(cqe, len) => {
            if len as usize != CQE_SIZE {
                return Err(format!("a response of {len} bytes (16 expected)"));
            }
            if cqe.cid != 0x11 || !cqe.status.is_success() || cqe.sqid != 0 {
                return Err(format!(
                    "Connect response cid {:#x} sqid {} status {} (cid 0x11, sqid 0, success expected)",
                    cqe.cid, cqe.sqid, cqe.status
                ));
            }
            Ok(format!(
                "Connect (keyed SGL, RDMA READ of the data) answered by SEND: success, CNTLID {}",
                cqe.dw0 & 0xffff
            ))
        }
        Answer::Disconnected(k) => Err(format!("the target disconnected ({k:?}) instead")),
        Answer::Broken(t) => Err(format!("the queue broke: {t}")),
        Answer::Timeout => Err(format!("no response within {:?}", a.wait)),
    }
}

/// Waits for the target to end the queue after a bad message: PASS on
/// DISCONNECTED (also after our own QP broke, as it does when the target's
/// RDMA operation against us fails); an error CQE first is allowed when
/// `error_cqe_ok`; a success CQE, any CQE otherwise, or a hang fail.
async fn expect_disconnect(q: &HostQueue, wait: Duration, error_cqe_ok: bool) -> Outcome {
    match next_answer(q, wait).await {
        Answer::Cqe(cqe, _) if cqe.status.is_success() || !error_cqe_ok => Err(format!(
            "a CQE (cid {:#x}, {}) instead of a disconnect",
            cqe.cid, cqe.status
        )),
        Answer::Cqe(cqe, _) => {
            let k = wait_disconnect(q, wait).await?;
            Ok(format!(
                "the target disconnected ({k:?}) after an error CQE: {}",
                cqe.status
            ))
        }
        Answer::Disconnected(k) => Ok(format!("the target disconnected ({k:?})")),
        Answer::Broken(t) => {
            let k = wait_disconnect(q, wait).await?;
            Ok(format!("the target disconnected ({k:?}; our QP: {t})"))
        }
        Answer::Timeout => Err(format!(
            "neither a response nor a disconnect within {wait:?} (a hang)"
        )),
    }
}

/// Case e: a 10-byte SEND, shorter than an SQE: no command to answer, so
/// any CQE is wrong.
async fn short_capsule(a: &Args) -> Outcome {
    let mut q = admin_queue(a).await?;
    send(&mut q, &[0x7f, 0, 0x11, 0, 1, 0, 0, 0, 0, 0])?;
    expect_disconnect(&q, a.wait, false).await
}

/// Case f: a Connect whose keyed SGL names an rkey we never registered. The
/// responder (us) NAKs the target's RDMA READ and our QP goes to the error
/// state too; the target must still end the connection.
async fn bogus_rkey(a: &Args) -> Outcome {
    let mut q = admin_queue(a).await?;
    // Flip the key's top byte (rxe, mlx5 and others keep the MR index there):
    // no region of ours has that key.
    let rkey = q.data_mr.rkey() ^ 0x5a00_0000;
    let sqe = connect_sqe(&mut q, a, 0x22, rkey);
    send(&mut q, &sqe.encode())?;
    expect_disconnect(&q, a.wait, true).await
}

/// Case i: the Connect data in the capsule on the admin queue, one SEND of
/// 64 + 1024 bytes. The target posts 64-byte receives there (the Linux host
/// never sends in-capsule data on the admin queue; nvmet-rdma allocates no
/// inline pages for it either: `nvmet_rdma_alloc_cmd(.., admin)`), so its RECV
/// completes in error and it must disconnect.
async fn oversized_send(a: &Args) -> Outcome {
    let mut q = admin_queue(a).await?;
    let data = ConnectData {
        hostid: *b"rdma-hostile\0\0\0\x02",
        cntlid: CNTLID_DYNAMIC,
        subnqn: a.subnqn.clone(),
        hostnqn: a.hostnqn.clone(),
    };
    // ConnectCommand::to_sqe names 1024 bytes of in-capsule data in SGL1.
    let mut sqe = admin_connect_command().to_sqe();
    sqe.cid = 0x44;
    let mut capsule = sqe.encode().to_vec();
    capsule.extend_from_slice(&data.encode());
    send(&mut q, &capsule)?;
    expect_disconnect(&q, a.wait, true).await
}

/// Cases j and k: a Connect whose SGL1 the target cannot honour must be
/// answered with `want` (NVMe Base 2.0 §4.3.2; the status `SglError::status`
/// gives), not with a disconnect or silence.
async fn bad_sgl(a: &Args, sgl1: SglDescriptor, want: Status) -> Outcome {
    let mut q = admin_queue(a).await?;
    let mut sqe = admin_connect_command().to_sqe();
    sqe.cid = 0x55;
    sqe.sgl1 = sgl1;
    send(&mut q, &sqe.encode())?;
    match next_answer(&q, a.wait).await {
        Answer::Cqe(cqe, _)
            if cqe.cid == 0x55 && cqe.status.sct == want.sct && cqe.status.sc == want.sc =>
        {
            Ok(format!("answered {}", cqe.status))
        }
        Answer::Cqe(cqe, _) => Err(format!(
            "answered cid {:#x} {}, expected cid 0x55 {want}",
            cqe.cid, cqe.status
        )),
        Answer::Disconnected(k) => Err(format!(
            "the target disconnected ({k:?}) without a response"
        )),
        Answer::Broken(t) => Err(format!("the queue broke without a response: {t}")),
        Answer::Timeout => Err(format!("no response within {:?}", a.wait)),
    }
}

fn report(name: &str, r: Outcome, failed: &mut u32) {
    match r {
        Ok(what) => println!("PASS: {name}: {what}"),
        Err(why) => {
            *failed += 1;
            println!("FAIL: {name}: {why}");
        }
    }
}

async fn run(a: Args) -> u32 {
    let mut failed = 0;
    report(
        "g valid admin queue and Connect (the tool works)",
        good_connect(&a).await,
        &mut failed,
    );
    let recfmt1 = CmRequest {
        recfmt: 1,
        ..admin_request()
    };
    report(
        "a RDMA_CM_REQUEST RECFMT 1",
        expect_reject(&a, &recfmt1.encode(), &[RejectStatus::InvalidRecfmt]).await,
        &mut failed,
    );
    let big = CmRequest {
        recfmt: 0,
        qid: 1,
        hrqsize: 4096,
        hsqsize: 4095,
        cntlid: 0,
    };
    report(
        "b I/O queue HSQSIZE 4095",
        expect_reject(&a, &big.encode(), &[RejectStatus::InvalidHsqsize]).await,
        &mut failed,
    );
    let small_rq = CmRequest {
        hrqsize: ADMIN_QUEUE_DEPTH / 2,
        ..admin_request()
    };
    report(
        "c HRQSIZE 16 < HSQSIZE + 1 = 32",
        expect_reject(&a, &small_rq.encode(), &[RejectStatus::InvalidHrqsize]).await,
        &mut failed,
    );
    // See the module comment: IB/RoCE pad to 56 zero bytes, iWARP does not.
    let short_ok = [RejectStatus::InvalidLength, RejectStatus::InvalidHrqsize];
    report(
        "d1 no private data",
        expect_reject(&a, &[], &short_ok).await,
        &mut failed,
    );
    report(
        "d2 4 bytes of private data",
        expect_reject(&a, &admin_request().encode()[..4], &short_ok).await,
        &mut failed,
    );
    report(
        "e SEND of 10 bytes on the admin queue",
        short_capsule(&a).await,
        &mut failed,
    );
    report(
        "f Connect with a bogus rkey in its keyed SGL",
        bogus_rkey(&a).await,
        &mut failed,
    );
    report(
        "i Connect data in the capsule on the admin queue (a 1088-byte SEND into 64-byte receives)",
        oversized_send(&a).await,
        &mut failed,
    );
    // An in-capsule descriptor where the admin queue takes no in-capsule data.
    report(
        "j Connect with in-capsule SGL1 on the admin queue and no data",
        bad_sgl(
            &a,
            SglDescriptor::in_capsule(CONNECT_DATA_SIZE as u32),
            Status::SGL_OFFSET_INVALID,
        )
        .await,
        &mut failed,
    );
    // Type 0h subtype 0h: a Data Block with an address, a host-memory
    // descriptor NVMe/RDMA does not carry in SGL1 (only keyed or offset ones).
    let plain = SglDescriptor {
        address: 0x1000,
        length: CONNECT_DATA_SIZE as u32,
        reserved: [0; 3],
        type_byte: 0x00,
    };
    report(
        "k Connect with a plain Data Block (address) SGL1",
        bad_sgl(&a, plain, Status::SGL_DESCRIPTOR_TYPE_INVALID).await,
        &mut failed,
    );
    report(
        "h valid admin queue and Connect after all the above (the target survived)",
        good_connect(&a).await,
        &mut failed,
    );
    failed
}

fn main() -> ExitCode {
    let Some(a) = parse_args() else {
        return usage();
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rdma-hostile: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let failed = rt.block_on(run(a));
    if failed == 0 {
        println!("rdma-hostile: all cases passed");
        ExitCode::SUCCESS
    } else {
        println!("rdma-hostile: {failed} case(s) failed");
        ExitCode::from(1)
    }
}
