//! rdma-pingpong: a real round trip through nvmf-rdma over an RDMA device (soft-RoCE in
//! the QEMU guest: tests/interop/guest/rdma-verbs.sh, suite `rdmaverbs`).
//!
//! ```text
//! rdma-pingpong server 10.99.0.1:7471 [ROUNDS]
//! rdma-pingpong client 10.99.0.1:7471 [ROUNDS]
//! ```
//!
//! The client first connects with wrong private data and must be rejected with the
//! server's reject private data; then ROUNDS (default 2) connections each do:
//! private data exchanged in connect/accept; three SEND ping/pong messages into posted
//! receives; 2000 small SENDs streamed in chains of 8 (one ibv_post_send each, only the
//! last signaled) into reposted receives, checked in order, a credit SEND back per chain; the server's buffer descriptor (address, length, rkey) sent in a SEND; the
//! client RDMA WRITEs 32 KiB into it chained with a SEND in one ibv_post_send and RDMA
//! READs 32 KiB from it; the client's descriptor goes the other way and the server RDMA
//! READs and RDMA WRITEs the client's buffer; every byte is checked on both sides; the
//! client binds a type 2 memory window, the server READs through it and answers with a
//! SEND with Invalidate of its rkey, which the client's receive completion reports; the
//! client disconnects and both see DISCONNECTED, except in the last round where the
//! server first checks that a READ through the invalidated key fails with a remote
//! access error and then disconnects. The server checks that a second
//! connection leaves no more open fds or mappings than the first (no per-connection
//! leak). Every check prints a `PASS:` or `FAIL:` line; the exit status is 0 only if all
//! passed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::ExitCode;

use nvmf_rdma::{
    Access, Completion, ConnParam, Connection, MemoryRegion, Opcode, QpAttrs, QueuePair, RdmaError,
    RemoteBuf, SendWr,
};

const REQ_PD: &[u8; 32] = b"nvmf-rdma-pingpong:request......";
const BAD_PD: &[u8; 32] = b"nvmf-rdma-pingpong:bad-request..";
const ACC_PD: &[u8; 32] = b"nvmf-rdma-pingpong:accept.......";
const REJ_PD: &[u8; 4] = &[0x01, 0x00, 0x02, 0x00];

const SLOTS: usize = 16;
const SLOT: usize = 256;
const HALF: usize = 32 * 1024;
const DATA: usize = 3 * HALF;
const RECV_BASE: u64 = 1000;
const STREAM: u64 = 2000;

struct Checks {
    who: &'static str,
    failed: u32,
    passed: u32,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
            println!("PASS: {}: {what}", self.who);
        } else {
            self.failed += 1;
            println!("FAIL: {}: {what}", self.who);
        }
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(seed as u32 * 7 + (i >> 8) as u32) as u8
        })
        .collect()
}

/// The receive slots and a queue of completions (sends and receives share the CQ).
struct Peer<'c> {
    conn: &'c Connection,
    recv: MemoryRegion,
    send: MemoryRegion,
    data: MemoryRegion,
    pending: VecDeque<Completion>,
    next_id: u64,
}

type R<T> = Result<T, RdmaError>;

impl<'c> Peer<'c> {
    fn qp(&self) -> &QueuePair {
        self.conn.qp()
    }

    /// Waits for the completion `want` picks, keeping the others; an error status is
    /// an error.
    async fn wait(&mut self, want: impl Fn(&Completion) -> bool) -> R<Completion> {
        let c = self.wait_any(want).await?;
        c.result()?;
        Ok(c)
    }

    /// As `wait`, but returns the completion whatever its status.
    async fn wait_any(&mut self, want: impl Fn(&Completion) -> bool) -> R<Completion> {
        loop {
            if let Some(i) = self.pending.iter().position(&want) {
                return Ok(self.pending.remove(i).unwrap());
            }
            let mut buf = [Completion::default(); 16];
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                self.qp().wait_completions(&mut buf),
            )
            .await
            .map_err(|_| {
                RdmaError::InvalidArgument("timed out waiting for a completion".into())
            })??;
            self.pending.extend(&buf[..n]);
        }
    }

    /// Waits for the next received message; reposts its slot; returns its bytes.
    async fn recv_msg(&mut self) -> R<Vec<u8>> {
        Ok(self.recv_msg_c().await?.0)
    }

    /// As `recv_msg`, with the receive's completion.
    async fn recv_msg_c(&mut self) -> R<(Vec<u8>, Completion)> {
        let c = self
            .wait(|c| c.wr_id >= RECV_BASE && c.wr_id < RECV_BASE + SLOTS as u64)
            .await?;
        let slot = (c.wr_id - RECV_BASE) as usize;
        let msg = self.recv.as_slice()[slot * SLOT..slot * SLOT + c.byte_len as usize].to_vec();
        let sge = self.recv.sge(slot * SLOT, SLOT)?;
        self.qp().post_recv(c.wr_id, &[sge])?;
        Ok((msg, c))
    }

    async fn send_msg(&mut self, msg: &[u8]) -> R<()> {
        self.send.as_mut_slice()[..msg.len()].copy_from_slice(msg);
        let id = self.id();
        let sge = self.send.sge(0, msg.len())?;
        self.qp().post_send(id, &[sge], true, None)?;
        self.wait(|c| c.wr_id == id).await?;
        Ok(())
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn descriptor(&self, tag: u8, offset: usize, len: usize) -> R<Vec<u8>> {
        let r = self.data.remote(offset, len)?;
        let mut m = vec![tag];
        m.extend_from_slice(&r.addr.to_le_bytes());
        m.extend_from_slice(&r.len.to_le_bytes());
        m.extend_from_slice(&r.rkey.to_le_bytes());
        Ok(m)
    }
}

fn parse_descriptor(m: &[u8]) -> Option<(u8, RemoteBuf)> {
    let tag = *m.first()?;
    let addr = u64::from_le_bytes(m.get(1..9)?.try_into().ok()?);
    let len = u32::from_le_bytes(m.get(9..13)?.try_into().ok()?);
    let rkey = u32::from_le_bytes(m.get(13..17)?.try_into().ok()?);
    Some((tag, RemoteBuf { addr, len, rkey }))
}

fn attrs() -> QpAttrs {
    QpAttrs {
        max_send_wr: 16,
        max_recv_wr: SLOTS as u32,
        max_send_sge: 2,
        max_recv_sge: 1,
        max_inline_data: 0,
        cq_entries: 0,
    }
}

/// Registers the three regions on `qp` and posts the receive slots.
fn setup(qp: &QueuePair) -> R<(MemoryRegion, MemoryRegion, MemoryRegion)> {
    let recv = qp.register(SLOTS * SLOT, Access::LOCAL_WRITE)?;
    let send = qp.register(SLOT, Access::NONE)?;
    let data = qp.register(
        DATA,
        Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE | Access::MW_BIND,
    )?;
    let sges: Vec<_> = (0..SLOTS)
        .map(|i| recv.sge(i * SLOT, SLOT))
        .collect::<R<_>>()?;
    let wrs: Vec<(u64, &[nvmf_rdma::Sge])> = sges
        .iter()
        .enumerate()
        .map(|(i, s)| (RECV_BASE + i as u64, std::slice::from_ref(s)))
        .collect();
    qp.post_recv_batch(&wrs)?;
    Ok((recv, send, data))
}

fn proc_counts() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0);
    (fds, maps)
}

async fn server(addr: SocketAddr, rounds: u32, ck: &mut Checks) -> R<()> {
    let listener = nvmf_rdma::CmListener::bind(addr, 8)?;
    println!("server: listening on {:?}", listener.local_addr());
    // the client's first attempt carries bad private data: reject it
    let req = listener.accept_request().await?;
    ck.check(
        req.private_data().starts_with(BAD_PD),
        format!(
            "connect request 1 from {:?} carries the (bad) private data",
            req.peer_addr()
        ),
    );
    req.reject(REJ_PD)?;
    ck.check(true, "rejected request 1 with 4 bytes of private data");

    let mut counts = Vec::new();
    for round in 1..=rounds {
        let req = listener.accept_request().await?;
        ck.check(
            req.private_data().starts_with(REQ_PD),
            format!(
                "round {round}: connect request private data ({} bytes delivered, peer {:?}, initiator_depth {}, responder_resources {})",
                req.private_data().len(),
                req.peer_addr(),
                req.initiator_depth(),
                req.responder_resources()
            ),
        );
        let dev = req.device_attrs()?;
        ck.check(
            dev.max_qp_wr >= attrs().max_send_wr && dev.max_sge >= 2 && dev.max_qp_rd_atom > 0,
            format!(
                "round {round}: device: fw {:?}, max_qp_wr {}, max_sge {}, max_cqe {}, max_qp_rd_atom {}, max_qp_init_rd_atom {}, max_mw {}",
                dev.fw_ver, dev.max_qp_wr, dev.max_sge, dev.max_cqe, dev.max_qp_rd_atom, dev.max_qp_init_rd_atom, dev.max_mw
            ),
        );
        let acc = req.create_qp(&attrs())?;
        let (recv, send, mut data) = setup(acc.qp())?;
        data.as_mut_slice()[HALF..2 * HALF].copy_from_slice(&pattern(0xB0 + round as u8, HALF));
        let conn = acc.accept(ACC_PD, ConnParam::default()).await?;
        ck.check(
            true,
            format!(
                "round {round}: accepted, ESTABLISHED (qp {})",
                conn.qp().qp_num()
            ),
        );
        let mut p = Peer {
            conn: &conn,
            recv,
            send,
            data,
            pending: VecDeque::new(),
            next_id: 0,
        };
        for n in 0..3 {
            let m = p.recv_msg().await?;
            ck.check(
                m == format!("ping {n}").as_bytes(),
                format!(
                    "round {round}: SEND received: {:?}",
                    String::from_utf8_lossy(&m)
                ),
            );
            p.send_msg(format!("pong {n}").as_bytes()).await?;
        }
        // a stream of STREAM small SENDs posted in chains of 8 (only the last signaled),
        // received in order into reposted slots; a credit SEND back after each 8 (flow
        // control, as NVMe's responses are: without it the sender outruns the reposting
        // and each receiver-not-ready NAK stalls the QP for the RNR timer)
        let mut bad = None;
        for i in 0..STREAM {
            let m = p.recv_msg().await?;
            if m.len() != 8 || u64::from_le_bytes(m[..8].try_into().unwrap()) != i {
                bad = Some((i, m));
                break;
            }
            if i % 8 == 7 || i == STREAM - 1 {
                p.send_msg(&(i + 1).to_le_bytes()).await?;
            }
        }
        ck.check(
            bad.is_none(),
            format!("round {round}: {STREAM} streamed SENDs received in order ({bad:?})"),
        );
        // our buffer: [0, HALF) for the client's WRITE, [HALF, 2 HALF) for its READ
        let d = p.descriptor(b'D', 0, 2 * HALF)?;
        p.send_msg(&d).await?;
        // the client's WRITE, then its descriptor
        let m = p.recv_msg().await?;
        ck.check(
            m == b"W",
            "client says its RDMA WRITE is done (SEND chained after it)",
        );
        ck.check(
            p.data.as_slice()[..HALF] == pattern(0xA0 + round as u8, HALF)[..],
            format!(
                "round {round}: the client's RDMA WRITE of {HALF} bytes landed, every byte right"
            ),
        );
        let m = p.recv_msg().await?;
        let Some((b'D', remote)) = parse_descriptor(&m) else {
            ck.check(
                false,
                format!("expected the client's descriptor, got {m:?}"),
            );
            return Ok(());
        };
        ck.check(
            remote.len as usize == 2 * HALF,
            format!("client descriptor: {remote:?}"),
        );
        // RDMA READ the client's first half into our third
        let id = p.id();
        let sge = p.data.sge(2 * HALF, HALF)?;
        p.qp().post_rdma_read(
            id,
            &[sge],
            RemoteBuf {
                addr: remote.addr,
                len: HALF as u32,
                rkey: remote.rkey,
            },
        )?;
        let c = p.wait(|c| c.wr_id == id).await?;
        ck.check(
            c.opcode == Opcode::RdmaRead
                && p.data.as_slice()[2 * HALF..] == pattern(0xC0 + round as u8, HALF)[..],
            format!("round {round}: RDMA READ of {HALF} bytes from the client, every byte right"),
        );
        // RDMA WRITE our second half into the client's second half + SEND, one post
        p.send.as_mut_slice()[0] = b'W';
        let (wsge, ssge) = (p.data.sge(HALF, HALF)?, p.send.sge(0, 1)?);
        let id = p.id();
        p.qp().post_send_batch(&[
            SendWr::Write {
                wr_id: id + 1000,
                sges: &[wsge],
                remote: RemoteBuf {
                    addr: remote.addr + HALF as u64,
                    len: HALF as u32,
                    rkey: remote.rkey,
                },
                signaled: false,
            },
            SendWr::Send {
                wr_id: id,
                sges: &[ssge],
                signaled: true,
                invalidate_rkey: None,
            },
        ])?;
        p.wait(|c| c.wr_id == id).await?;
        ck.check(
            true,
            format!("round {round}: RDMA WRITE + SEND posted as one chain, completed"),
        );
        // the client's memory window: READ through it, then SEND with Invalidate of it
        let m = p.recv_msg().await?;
        let Some((b'I', mw)) = parse_descriptor(&m) else {
            ck.check(false, format!("expected the client's window, got {m:?}"));
            return Ok(());
        };
        let id = p.id();
        let sge = p.data.sge(2 * HALF, mw.len as usize)?;
        p.qp().post_rdma_read(id, &[sge], mw)?;
        p.wait(|c| c.wr_id == id).await?;
        ck.check(
            p.data.as_slice()[2 * HALF..2 * HALF + mw.len as usize]
                == pattern(0xC0 + round as u8, HALF)[..mw.len as usize],
            format!("round {round}: RDMA READ of {} bytes through the client's memory window (rkey {:#x})", mw.len, mw.rkey),
        );
        p.send.as_mut_slice()[..3].copy_from_slice(b"INV");
        let (id, sge) = (p.id(), p.send.sge(0, 3)?);
        p.qp().post_send(id, &[sge], true, Some(mw.rkey))?;
        let c = p.wait(|c| c.wr_id == id).await?;
        ck.check(
            c.opcode == Opcode::Send,
            format!(
                "round {round}: SEND with Invalidate of rkey {:#x} completed",
                mw.rkey
            ),
        );
        let m = p.recv_msg().await?;
        ck.check(
            m == b"R",
            "client verified our RDMA WRITE and the invalidation",
        );
        if round < rounds {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(20), conn.disconnected())
                .await
                .map_err(|_| RdmaError::InvalidArgument("no DISCONNECTED".into()))??;
            ck.check(true, format!("round {round}: client disconnected: {ev:?}"));
        } else {
            // the invalidated key must no longer grant access: the READ fails with a
            // remote access error (which also ends the connection), then we disconnect
            let id = p.id();
            let sge = p.data.sge(2 * HALF, mw.len as usize)?;
            p.qp().post_rdma_read(id, &[sge], mw)?;
            let c = p.wait_any(|c| c.wr_id == id).await?;
            ck.check(
                c.status == 10,
                format!(
                    "round {round}: RDMA READ through the invalidated rkey fails: status {} ({})",
                    c.status, c.status_text
                ),
            );
            conn.disconnect()?;
            let ev = tokio::time::timeout(std::time::Duration::from_secs(20), conn.disconnected())
                .await
                .map_err(|_| RdmaError::InvalidArgument("no DISCONNECTED".into()))??;
            ck.check(true, format!("round {round}: we disconnected: {ev:?}"));
        }
        drop(p);
        drop(conn);
        counts.push(proc_counts());
        println!(
            "server: after round {round}: (fds, maps) = {:?}",
            counts.last().unwrap()
        );
    }
    if counts.len() >= 2 {
        let (a, b) = (counts[0], counts[counts.len() - 1]);
        ck.check(
            b.0 <= a.0 && b.1 <= a.1,
            format!("no per-connection leak: (fds, maps) after round 1 {a:?}, after round {rounds} {b:?}"),
        );
    }
    drop(listener);
    Ok(())
}

async fn client(addr: SocketAddr, rounds: u32, ck: &mut Checks) -> R<()> {
    // nobody listens on the next port: a typed error, not a hang
    let closed = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1));
    let c = nvmf_rdma::resolve(closed, &attrs(), 5000).await?;
    match tokio::time::timeout(
        std::time::Duration::from_secs(20),
        c.connect(REQ_PD, ConnParam::default()),
    )
    .await
    {
        Ok(Err(e @ (RdmaError::Rejected { .. } | RdmaError::UnexpectedEvent { .. }))) => ck.check(
            true,
            format!("connect to {closed} (no listener) fails: {e}"),
        ),
        Ok(Err(e)) => ck.check(false, format!("connect to {closed}: unexpected error {e}")),
        Ok(Ok(_)) => ck.check(false, format!("connect to {closed} succeeded")),
        Err(_) => ck.check(false, format!("connect to {closed} hung for 20 s")),
    }

    let c = nvmf_rdma::resolve(addr, &attrs(), 5000).await?;
    match c.connect(BAD_PD, ConnParam::default()).await {
        Err(RdmaError::Rejected {
            status,
            private_data,
        }) => ck.check(
            private_data.starts_with(REJ_PD),
            format!(
                "connect with bad private data rejected (status {status}), reject private data {:02x?}",
                &private_data[..private_data.len().min(4)]
            ),
        ),
        Err(e) => ck.check(false, format!("bad connect: {e}")),
        Ok(_) => ck.check(false, "bad connect was accepted"),
    }

    for round in 1..=rounds {
        let c = nvmf_rdma::resolve(addr, &attrs(), 5000).await?;
        let (recv, send, mut data) = setup(c.qp())?;
        data.as_mut_slice()[..HALF].copy_from_slice(&pattern(0xC0 + round as u8, HALF));
        let conn = c.connect(REQ_PD, ConnParam::default()).await?;
        ck.check(
            conn.peer_private_data().starts_with(ACC_PD),
            format!(
                "round {round}: ESTABLISHED with accept private data ({} bytes delivered) from {:?}",
                conn.peer_private_data().len(),
                conn.peer_addr()
            ),
        );
        let mut p = Peer {
            conn: &conn,
            recv,
            send,
            data,
            pending: VecDeque::new(),
            next_id: 0,
        };
        for n in 0..3 {
            p.send_msg(format!("ping {n}").as_bytes()).await?;
            let m = p.recv_msg().await?;
            ck.check(
                m == format!("pong {n}").as_bytes(),
                format!(
                    "round {round}: reply received: {:?}",
                    String::from_utf8_lossy(&m)
                ),
            );
        }
        let t0 = std::time::Instant::now();
        let mut i = 0u64;
        while i < STREAM {
            let n = (STREAM - i).min(8) as usize;
            let mut sges = Vec::with_capacity(n);
            for k in 0..n {
                let off = k * 8;
                p.send.as_mut_slice()[off..off + 8].copy_from_slice(&(i + k as u64).to_le_bytes());
                sges.push(p.send.sge(off, 8)?);
            }
            let id = p.id();
            let wrs: Vec<SendWr> = sges
                .iter()
                .enumerate()
                .map(|(k, s)| SendWr::Send {
                    wr_id: id,
                    sges: std::slice::from_ref(s),
                    signaled: k == n - 1,
                    invalidate_rkey: None,
                })
                .collect();
            p.qp().post_send_batch(&wrs)?;
            p.wait(|c| c.wr_id == id).await?;
            i += n as u64;
            let credit = p.recv_msg().await?;
            if credit != i.to_le_bytes() {
                ck.check(false, format!("credit after {i}: {credit:?}"));
                return Ok(());
            }
        }
        let dt = t0.elapsed();
        ck.check(
            i == STREAM,
            format!(
                "round {round}: {STREAM} SENDs streamed in chains of 8, each chain credited back ({:.0} msg/s under this VM, not a benchmark)",
                STREAM as f64 / dt.as_secs_f64()
            ),
        );
        let m = p.recv_msg().await?;
        let Some((b'D', remote)) = parse_descriptor(&m) else {
            ck.check(
                false,
                format!("expected the server's descriptor, got {m:?}"),
            );
            return Ok(());
        };
        ck.check(
            remote.len as usize == 2 * HALF,
            format!("server descriptor: {remote:?}"),
        );
        // RDMA WRITE pattern A into the server's first half, chained with the SEND "W"
        let a = pattern(0xA0 + round as u8, HALF);
        p.data.as_mut_slice()[2 * HALF..].copy_from_slice(&a);
        p.send.as_mut_slice()[0] = b'W';
        let (wsge, ssge) = (p.data.sge(2 * HALF, HALF)?, p.send.sge(0, 1)?);
        let id = p.id();
        p.qp().post_send_batch(&[
            SendWr::Write {
                wr_id: id + 1000,
                sges: &[wsge],
                remote: RemoteBuf {
                    addr: remote.addr,
                    len: HALF as u32,
                    rkey: remote.rkey,
                },
                signaled: false,
            },
            SendWr::Send {
                wr_id: id,
                sges: &[ssge],
                signaled: true,
                invalidate_rkey: None,
            },
        ])?;
        p.wait(|c| c.wr_id == id).await?;
        ck.check(
            true,
            format!("round {round}: RDMA WRITE + SEND posted as one chain, completed"),
        );
        // RDMA READ the server's second half into our second half
        let id = p.id();
        let sge = p.data.sge(HALF, HALF)?;
        p.qp().post_rdma_read(
            id,
            &[sge],
            RemoteBuf {
                addr: remote.addr + HALF as u64,
                len: HALF as u32,
                rkey: remote.rkey,
            },
        )?;
        let c = p.wait(|c| c.wr_id == id).await?;
        ck.check(
            c.opcode == Opcode::RdmaRead
                && p.data.as_slice()[HALF..2 * HALF] == pattern(0xB0 + round as u8, HALF)[..],
            format!("round {round}: RDMA READ of {HALF} bytes from the server, every byte right"),
        );
        p.data.as_mut_slice()[HALF..2 * HALF].fill(0);
        // our descriptor: the server READs [0, HALF) and WRITEs [HALF, 2 HALF)
        let d = p.descriptor(b'D', 0, 2 * HALF)?;
        p.send_msg(&d).await?;
        let m = p.recv_msg().await?;
        ck.check(m == b"W", "server says its RDMA WRITE is done");
        ck.check(
            p.data.as_slice()[HALF..2 * HALF] == pattern(0xB0 + round as u8, HALF)[..],
            format!(
                "round {round}: the server's RDMA WRITE of {HALF} bytes landed, every byte right"
            ),
        );
        // a type 2 memory window on our first 64 bytes, for the server to READ through
        // and then invalidate with SEND with Invalidate
        let mw = p.qp().alloc_mw()?;
        let id = p.id();
        let rb = p.qp().post_bind_mw(
            id,
            &mw,
            &p.data,
            0,
            64,
            Access::REMOTE_READ | Access::REMOTE_WRITE,
        )?;
        let c = p.wait(|c| c.wr_id == id).await?;
        ck.check(
            c.opcode == Opcode::BindMw && mw.rkey() == rb.rkey,
            format!("round {round}: memory window bound (rkey {:#x})", rb.rkey),
        );
        let mut m = vec![b'I'];
        m.extend_from_slice(&rb.addr.to_le_bytes());
        m.extend_from_slice(&rb.len.to_le_bytes());
        m.extend_from_slice(&rb.rkey.to_le_bytes());
        p.send_msg(&m).await?;
        let (m, c) = p.recv_msg_c().await?;
        // verbs.h: IBV_WC_WITH_INV and the rkey; soft-RoCE instead sets the kernel's
        // IB_WC_WITH_INVALIDATE (1 << 2) with the rkey in the same union (docs/rdma.md)
        let how = if c.invalidated_rkey == Some(rb.rkey) {
            Some("IBV_WC_WITH_INV")
        } else if c.wc_flags & (1 << 2) != 0 && c.ex_data == rb.rkey {
            Some("rxe's kernel IB_WC_WITH_INVALIDATE bit 1<<2")
        } else {
            None
        };
        ck.check(
            m == b"INV" && how.is_some(),
            format!(
                "round {round}: received a SEND with Invalidate of rkey {:#x}: {:?}, flagged by {} (wc_flags {:#x}, ex_data {:#x})",
                rb.rkey,
                String::from_utf8_lossy(&m),
                how.unwrap_or("nothing"),
                c.wc_flags,
                c.ex_data
            ),
        );
        p.send_msg(b"R").await?;
        if round < rounds {
            conn.disconnect()?;
        }
        // (in the last round the server disconnects, after checking that the window's
        // key no longer works)
        let ev = tokio::time::timeout(std::time::Duration::from_secs(20), conn.disconnected())
            .await
            .map_err(|_| RdmaError::InvalidArgument("no DISCONNECTED".into()))??;
        ck.check(
            true,
            format!(
                "round {round}: disconnected ({}): {ev:?}",
                if round < rounds {
                    "by us"
                } else {
                    "by the server"
                }
            ),
        );
        drop(mw);
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        eprintln!("usage: rdma-pingpong server|client ADDR:PORT [ROUNDS]");
        ExitCode::from(2)
    };
    let (Some(role), Some(addr)) = (args.get(1), args.get(2)) else {
        return usage();
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return usage();
    };
    let rounds = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(2);
    let is_server = match role.as_str() {
        "server" => true,
        "client" => false,
        _ => return usage(),
    };
    // run as a spawned task on the multi-threaded runtime: the handles and futures must
    // be Send, and the task may move between worker threads at every await
    let task = tokio::spawn(async move {
        let mut ck = Checks {
            who: if is_server { "server" } else { "client" },
            failed: 0,
            passed: 0,
        };
        let r = if is_server {
            server(addr, rounds, &mut ck).await
        } else {
            client(addr, rounds, &mut ck).await
        };
        if let Err(e) = r {
            ck.check(false, format!("error: {e}"));
        }
        ck
    });
    let ck = match task.await {
        Ok(ck) => ck,
        Err(e) => {
            println!("FAIL: {role}: task: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}: {} passed, {} failed", ck.who, ck.passed, ck.failed);
    if ck.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
