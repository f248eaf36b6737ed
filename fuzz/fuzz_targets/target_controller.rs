//! The whole target (`nvmf_controller::Target`) over real loopback TCP: one
//! subsystem with two small memory namespaces (plus the discovery subsystem),
//! started once per process on a current-thread tokio runtime, so the target's
//! tasks run on the fuzzing thread while the harness waits for them.
//!
//! Input: a mode byte, then (mode >= 1) a few preamble bytes, then operations.
//!
//! * mode 0: the rest of the input as raw bytes on a fresh connection;
//! * mode 1: a valid ICReq (fuzzed digests and HPDA), then operations;
//! * mode 2: ICReq, admin Connect (to the NVM or the discovery subsystem) and
//!   Property Set CC.EN = 1, waited for, then operations on the admin queue;
//! * mode 3: as mode 2, then a second connection with an I/O queue Connect using
//!   the CNTLID the admin Connect returned; operations go to the I/O queue, or to
//!   the admin queue when the operation's tag has bit 7 set.
//!
//! Operations: raw bytes, any SQE with fuzzed fields and SGL (in-capsule data or
//! a transport data block), I/O commands (Read, Write, Compare, Flush, Write
//! Zeroes, Dataset Management) with fuzzed NSID/LBA/length, admin commands
//! (Identify, Get Log Page, Get/Set Features, Keep Alive, AER, Abort, Property
//! Get/Set), Fabrics commands (Connect, Disconnect, ...), H2CData answering the
//! next R2T (whole, split, or broken in one of several ways), free-form H2CData,
//! H2CTermReq, a write-then-read that must read back what it wrote, a sync
//! point (a command that must be answered) and a split point (send what is
//! buffered and let the target run).
//!
//! Oracles: no panic anywhere in the target (libfuzzer-sys' panic hook aborts,
//! also in tokio tasks); everything the target sends decodes with a host-side
//! decoder (headers, digests, HPDA alignment), nothing follows a C2HTermReq, and
//! ICResp holds what was configured; completions, R2Ts and C2HData name only CIDs
//! that were sent (unless raw bytes were); a sync command is answered or the
//! connection ends within 10 s; data written and acknowledged reads back the same;
//! after the harness half-closes, the target closes every connection within 10 s;
//! no controller outlives its admin connection; and every 64 inputs a fresh
//! connection still gets its ICResp.
//!
//! Byte format (multi-byte fields little-endian, missing bytes read as zero):
//! mode byte: bits 2:0 select the mode (0 raw, 1 ICReq, 2-4 admin, 5-7 I/O),
//! bits 4:3 the digests asked for, bit 5 the discovery subsystem (mode 2) or
//! closing the admin queue first (mode 3), bit 6 SQ flow control disabled, bit 7
//! an HPDA byte follows. Mode 1 then reads MAXR2T (one byte); mode 3 one byte with
//! QID - 1 (bits 1:0), the I/O queue's digests (bits 3:2) and SQSIZE (bits 7:4,
//! 2 to 32 entries). Each operation is a tag byte (bit 7: the admin queue in mode
//! 3; bits 6:0: 0-5 raw, 6-17 any SQE, 18-41 I/O command, 42-61 admin command,
//! 62-69 Fabrics, 70-81 answer an R2T, 82-85 free-form H2CData, 86-87
//! H2CTermReq, 88-95 write-then-read, 96-103 sync, 104-111 split, others
//! nothing) followed by its fields, read in `op`. The seeds named in
//! `fuzz/corpus/target_controller/` were written by hand in this format.
//!
//! Each input connects from its own address in 127.2.0.0/16, so that the
//! target's slowdown of addresses that keep misbehaving does not throttle the
//! fuzzer (the health check connects from 127.0.0.1). `TC_DEBUG=1` prints every
//! operation and every PDU the target sends, to read a reproducer.
#![no_main]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use nvmf_controller::config::{BackendSpec, Limits, NamespaceConfig, SubsystemConfig};
use nvmf_controller::registry::Subsystem;
use nvmf_controller::{Target, TargetConfig};
use nvmf_proto::cqe::Cqe;
use nvmf_proto::fabrics::{
    fctype, ConnectCommand, ConnectData, PropertyCommand, CNTLID_DYNAMIC, DISCOVERY_NQN,
};
use nvmf_proto::registers::{self, Cc};
use nvmf_proto::sqe::{admin_opcode, io_opcode, DataDirection, SglDescriptor, Sqe, PSDT_SGL};
use nvmf_proto::status::Status;
use nvmf_proto::tcp::pdu::{DataPdu, IcReq, IcResp, R2t, TermReq, PFV_1_0};
use nvmf_proto::tcp::{Decoder, DecoderConfig, Digests, Fes, Pdu, PduEncoder, Side};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[path = "common.rs"]
mod common;
use common::Reader;

const NQN: &str = "nqn.2024-01.io.nvmf-rs:fuzz";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000f0";
const HOSTID: [u8; 16] = [0xf0; 16];
/// NSID 1: 2 MiB of 512-byte blocks; NSID 2: 1 MiB of 4096-byte blocks.
const NS: [(u32, u64, u32); 2] = [(1, 2 << 20, 512), (2, 1 << 20, 4096)];
const MAX_H2C_DATA: u32 = 32 * 1024;
const MAX_ICD: u32 = 8192;

/// How long the target may take to answer a sync command or to close a
/// half-closed connection before the harness calls it a hang.
const HANG: Duration = Duration::from_secs(10);
/// How long to wait for an R2T that may legitimately never come (withheld
/// while earlier R2T data is missing).
const R2T_WAIT: Duration = Duration::from_millis(50);
/// Bytes one input may send on one connection, and operations per input.
const SEND_BUDGET: usize = 1 << 20;
const MAX_OPS: usize = 64;

// CIDs: structured operations use 0x0000..=0x0FFF, sync commands 0xF000..,
// write-then-read checks 0xF800.., the preamble 0xFFF0...
const CID_SYNC: u16 = 0xF000;
const CID_VERIFY: u16 = 0xF800;
const CID_CONNECT: u16 = 0xFFF0;
const CID_PROPSET: u16 = 0xFFF1;
const CID_QUEUES: u16 = 0xFFF2;

struct Env {
    rt: Runtime,
    addr: SocketAddr,
    subsys: Arc<Subsystem>,
    discovery: Arc<Subsystem>,
    runs: AtomicU64,
    _target: Arc<Target>,
}

static ENV: OnceLock<Env> = OnceLock::new();

fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let cfg = TargetConfig {
            listen: vec!["127.0.0.1:0".parse().expect("listen address")],
            discovery_listen: vec![],
            subsystems: vec![SubsystemConfig {
                nqn: NQN.into(),
                serial: "fuzz".into(),
                model: "fuzz".into(),
                cntlid_min: 1,
                cntlid_max: 0xFFEF,
                hosts: vec![],
                namespaces: NS
                    .iter()
                    .map(|&(nsid, size, block_size)| NamespaceConfig {
                        nsid,
                        backend: BackendSpec::Memory { size },
                        block_size,
                        direct: Default::default(),
                        uuid: None,
                        ana_group: 1,
                    })
                    .collect(),
            }],
            header_digest: true,
            data_digest: true,
            // Small limits, so that an input can reach them.
            limits: Limits {
                max_io_queues: 4,
                max_queue_depth: 32,
                in_capsule_data_size: Some(MAX_ICD),
                max_data_transfer: 128 * 1024,
                max_h2c_data: MAX_H2C_DATA,
                max_pending_write_bytes: 256 * 1024,
                ..Limits::default()
            },
            busy_poll_us: 0,
            busy_poll_batch: 0,
            tcp_congestion: None,
            cpu_latency_us: None,
            ana_states: vec![],
            referrals: vec![],
            metrics: None,
            tls: None,
        };
        cfg.validate("fuzz").expect("valid configuration");
        let target = rt.block_on(async {
            let t = Arc::new(Target::bind(&cfg).await.expect("bind"));
            tokio::spawn(t.clone().serve());
            t
        });
        let addr = target.ports()[0].socket;
        let subsys = target.registry().subsystem(NQN).expect("subsystem");
        let discovery = target.registry().discovery.clone();
        Env {
            rt,
            addr,
            subsys,
            discovery,
            runs: AtomicU64::new(0),
            _target: target,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    let n = e.runs.fetch_add(1, Ordering::Relaxed);
    let start = std::time::Instant::now();
    e.rt.block_on(async {
        // 62,500 source addresses in 127.2.0.0/16, one per input in turn.
        let src = Ipv4Addr::new(127, 2, (n / 250 % 250) as u8 + 1, (n % 250) as u8 + 1);
        run(e, data, src).await;
        if debug() {
            eprintln!(
                "{:?} input of {} bytes took {:?}",
                t0().elapsed(),
                data.len(),
                start.elapsed()
            );
        }
        if n.is_multiple_of(64) {
            health_check(e).await;
        }
        if n % 4096 == 4095 {
            no_live_controllers(e);
        }
    });
});

/// What the reader task of a connection has seen.
#[derive(Default)]
struct State {
    /// HPDA and digests the host asked for in its ICReq (from the bytes sent).
    hpda: u8,
    asked: Digests,
    icresp: Option<IcResp>,
    /// R2Ts not yet answered by the harness.
    r2ts: VecDeque<R2t>,
    /// Last completion per CID.
    resps: HashMap<u16, Cqe>,
    /// Commands sent with a transport data block for write data and not completed.
    awaiting_r2t: HashSet<u16>,
    /// CIDs sent in capsules, for the "only CIDs that were sent" check.
    sent_cids: HashSet<u16>,
    /// Raw bytes were sent: CIDs and framing are unknown.
    raw: bool,
    /// C2HData collected for these CIDs.
    watch: HashSet<u16>,
    c2h: HashMap<u16, Vec<(u32, Bytes)>>,
    term: Option<(Fes, u32)>,
    closed: bool,
}

struct Shared {
    st: Mutex<State>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads everything the target sends on one connection, checking it decodes.
async fn reader(mut rd: OwnedReadHalf, sh: Arc<Shared>) {
    let mut dec = Decoder::new(Side::Host, DecoderConfig::default());
    loop {
        loop {
            let r = match dec.next_pdu() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => panic!("the target sent bytes a host decoder rejects: {e:?}"),
            };
            if debug() {
                eprintln!(
                    "{:?} {:p} <- {}",
                    t0().elapsed(),
                    Arc::as_ptr(&sh),
                    summary(&r.pdu)
                );
            }
            let mut st = sh.lock();
            assert!(
                st.term.is_none(),
                "the target sent {:?} after its C2HTermReq",
                r.pdu.pdu_type()
            );
            assert!(
                r.data_digest_ok,
                "data digest mismatch in {:?} from the target",
                r.pdu.pdu_type()
            );
            match r.pdu {
                Pdu::IcResp(ic) => {
                    assert!(st.icresp.is_none(), "second ICResp");
                    assert_eq!(ic.pfv, PFV_1_0, "ICResp PFV");
                    assert_eq!(ic.cpda, 0, "ICResp CPDA");
                    assert_eq!(ic.maxh2cdata, MAX_H2C_DATA, "ICResp MAXH2CDATA");
                    assert!(
                        (!ic.digests.header || st.asked.header)
                            && (!ic.digests.data || st.asked.data),
                        "ICResp enables digests the host did not ask for: {:?} vs {:?}",
                        ic.digests,
                        st.asked
                    );
                    dec.set_negotiated(DecoderConfig {
                        hdgst: ic.digests.header,
                        ddgst: ic.digests.data,
                        rx_pda: (usize::from(st.hpda) + 1) * 4,
                        max_icd: MAX_ICD,
                        max_data: 1 << 20,
                    });
                    st.icresp = Some(ic);
                }
                Pdu::C2HTermReq(t) => st.term = Some((t.fes, t.fei)),
                Pdu::CapsuleResp(c) => {
                    check_cid(&st, c.cid, "CapsuleResp");
                    st.awaiting_r2t.remove(&c.cid);
                    st.resps.insert(c.cid, c);
                }
                Pdu::R2T(r) => {
                    check_cid(&st, r.cccid, "R2T");
                    assert!(r.r2tl > 0, "R2T for 0 bytes: {r:?}");
                    st.r2ts.push_back(r);
                }
                Pdu::C2HData(d) => {
                    check_cid(&st, d.cccid, "C2HData");
                    if st.watch.contains(&d.cccid) {
                        st.c2h.entry(d.cccid).or_default().push((d.datao, d.data));
                    }
                    if d.success {
                        // SUCCESS stands for a successful completion (§3.3.2.1).
                        st.resps.insert(d.cccid, Cqe::new(d.cccid, Status::SUCCESS));
                    }
                }
                p => panic!("a host decoder returned {:?}", p.pdu_type()),
            }
            drop(st);
            sh.notify.notify_one();
        }
        match rd.read_buf(dec.buffer_mut()).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if debug() {
        eprintln!("{:p} <- closed", Arc::as_ptr(&sh));
    }
    sh.lock().closed = true;
    sh.notify.notify_one();
}

/// `TC_DEBUG=1` prints what the target sends, to read a reproducer.
fn debug() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| std::env::var_os("TC_DEBUG").is_some())
}

fn t0() -> std::time::Instant {
    static T: OnceLock<std::time::Instant> = OnceLock::new();
    *T.get_or_init(std::time::Instant::now)
}

fn summary(p: &Pdu) -> String {
    match p {
        Pdu::CapsuleResp(c) => format!(
            "CapsuleResp cid {:#x} status {:?} dw0 {:#x}",
            c.cid, c.status, c.dw0
        ),
        Pdu::C2HData(d) => format!(
            "C2HData cid {:#x} off {} len {} last {} success {}",
            d.cccid,
            d.datao,
            d.data.len(),
            d.last,
            d.success
        ),
        Pdu::C2HTermReq(t) => format!("C2HTermReq {:?} fei {}", t.fes, t.fei),
        p => format!("{p:?}"),
    }
}

fn check_cid(st: &State, cid: u16, what: &str) {
    assert!(
        st.raw || st.sent_cids.contains(&cid),
        "{what} for CID {cid:#x}, which was never sent"
    );
}

/// Write data the harness will send for a command when its R2T comes.
#[derive(Clone, Copy)]
struct WriteData {
    seed: u8,
}

struct Conn {
    wr: Option<OwnedWriteHalf>,
    sh: Arc<Shared>,
    rd: Option<JoinHandle<()>>,
    out: BytesMut,
    enc: PduEncoder,
    /// The first bytes sent, to learn the HPDA and digests of a raw ICReq.
    head: Vec<u8>,
    sent: usize,
    next_cid: u16,
    last_cid: u16,
    sync_n: u16,
    verify_n: u16,
    writes: HashMap<u16, WriteData>,
    /// Whether data digests were negotiated (for deliberately bad digests).
    ddgst: bool,
}

impl Conn {
    /// Connects from `src`: each input uses its own loopback source address, so
    /// the target's slowdown of addresses that keep misbehaving
    /// (nvmf_controller's admission) does not throttle the fuzzer.
    async fn open(addr: SocketAddr, src: Ipv4Addr) -> Conn {
        let sock = TcpSocket::new_v4().expect("socket");
        let s = match sock.bind(SocketAddr::from((src, 0))) {
            Ok(()) => sock.connect(addr).await,
            // No 127.0.0.0/8 on this host's loopback: connect from 127.0.0.1.
            Err(_) => TcpStream::connect(addr).await,
        }
        .expect("connect to the target");
        let _ = s.set_nodelay(true);
        let (rd, wr) = s.into_split();
        let sh = Arc::new(Shared {
            st: Mutex::new(State::default()),
            notify: Notify::new(),
        });
        let rd = tokio::spawn(reader(rd, sh.clone()));
        Conn {
            wr: Some(wr),
            sh,
            rd: Some(rd),
            out: BytesMut::new(),
            enc: PduEncoder::default(),
            head: Vec::new(),
            sent: 0,
            next_cid: 0,
            last_cid: 0,
            sync_n: 0,
            verify_n: 0,
            writes: HashMap::new(),
            ddgst: false,
        }
    }

    fn budget_left(&self) -> bool {
        self.sent + self.out.len() < SEND_BUDGET
    }

    /// Appends bytes to send, remembering the first 12 (ICReq HPDA and DGST).
    fn push(&mut self, b: &[u8]) {
        if self.head.len() < 12 {
            let n = (12 - self.head.len()).min(b.len());
            self.head.extend_from_slice(&b[..n]);
            if self.head.len() == 12 {
                let mut st = self.sh.lock();
                st.hpda = self.head[10];
                st.asked = Digests::from_u8(self.head[11]);
            }
        }
        self.out.extend_from_slice(b);
    }

    fn raw(&mut self, b: &[u8]) {
        self.sh.lock().raw = true;
        self.push(b);
    }

    fn pdu(&mut self, p: &Pdu) {
        let b = self.enc.to_bytes(p);
        self.push(&b);
    }

    fn icreq(&mut self, hpda: u8, digests: Digests, maxr2t: u32) {
        self.pdu(&Pdu::IcReq(IcReq {
            pfv: PFV_1_0,
            hpda,
            digests,
            maxr2t,
        }));
        // The target allows both digests and asks for CPDA 0.
        self.enc = PduEncoder::negotiated(digests, 0);
        self.ddgst = digests.data;
    }

    fn capsule(&mut self, sqe: Sqe, data: Bytes) {
        {
            let mut st = self.sh.lock();
            st.sent_cids.insert(sqe.cid);
            st.resps.remove(&sqe.cid);
            let len = sqe.sgl1.length;
            if sqe.data_direction() == DataDirection::HostToController
                && sqe.sgl1.type_byte == nvmf_proto::sqe::SGL_TRANSPORT_DATA_BLOCK
                && len > 0
            {
                st.awaiting_r2t.insert(sqe.cid);
            }
        }
        self.last_cid = sqe.cid;
        self.pdu(&Pdu::CapsuleCmd { sqe, data });
    }

    fn cid(&mut self, reuse: bool) -> u16 {
        if reuse {
            return self.last_cid;
        }
        let c = self.next_cid;
        self.next_cid = (self.next_cid + 1) & 0x0FFF;
        c
    }

    /// Sends what is buffered. Write errors are expected (the target may have
    /// closed); later writes are then skipped.
    async fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let b = self.out.split().freeze();
        self.sent += b.len();
        if let Some(w) = self.wr.as_mut() {
            // The harness reads everything the target sends, so the target has no
            // reason to stop reading for long.
            match tokio::time::timeout(HANG, w.write_all(&b)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => self.wr = None,
                Err(_) => panic!(
                    "the target read nothing for {HANG:?} while {} bytes waited",
                    b.len()
                ),
            }
        }
    }

    /// Waits until `f` returns something, the connection ends, or `limit` passes.
    async fn wait<T>(
        &mut self,
        limit: Duration,
        mut f: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<Option<T>, ()> {
        self.flush().await;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            {
                let mut st = self.sh.lock();
                if let Some(v) = f(&mut st) {
                    return Ok(Some(v));
                }
                if st.closed || st.term.is_some() {
                    return Ok(None);
                }
            }
            if tokio::time::timeout_at(deadline, self.sh.notify.notified())
                .await
                .is_err()
            {
                if debug() {
                    eprintln!("{:p} wait timed out after {limit:?}", Arc::as_ptr(&self.sh));
                }
                return Err(());
            }
        }
    }

    /// Waits for the completion of `cid`. A hang (no completion, connection still
    /// up) panics when the byte stream is known to be well framed.
    async fn wait_resp(&mut self, cid: u16, what: &str) -> Option<Cqe> {
        self.flush().await;
        if self.sh.lock().raw || self.wr.is_none() {
            // The stream may be mis-framed, or the command was not sent (the
            // connection broke): no completion is owed. Let the target run a little.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            return self.sh.lock().resps.get(&cid).copied();
        }
        match self.wait(HANG, |st| st.resps.get(&cid).copied()).await {
            Ok(c) => c,
            Err(()) => panic!("no completion for {what} (CID {cid:#x}) within {HANG:?}"),
        }
    }

    /// A command that must be answered: Keep Alive on an admin queue, Flush on
    /// an I/O queue (either gets at least an error completion in any state).
    async fn sync(&mut self, io: bool) {
        let cid = CID_SYNC | (self.sync_n & 0x7FF);
        self.sync_n = self.sync_n.wrapping_add(1);
        let mut s = Sqe::new(if io {
            io_opcode::FLUSH
        } else {
            admin_opcode::KEEP_ALIVE
        });
        s.cid = cid;
        s.nsid = 1;
        self.capsule(s, Bytes::new());
        self.wait_resp(cid, "a sync command").await;
    }

    /// Answers the next R2T with H2CData, split and possibly broken as `policy` says.
    async fn serve_r2t(&mut self, policy: u8) {
        let r2t = self
            .wait(R2T_WAIT, |st| {
                if let Some(r) = st.r2ts.pop_front() {
                    return Some(Some(r));
                }
                if st.awaiting_r2t.is_empty() {
                    return Some(None);
                }
                None
            })
            .await;
        let Ok(Some(Some(r2t))) = r2t else { return };
        let seed = self.writes.get(&r2t.cccid).map_or(0, |w| w.seed);
        let chunk = match policy & 3 {
            0 => MAX_H2C_DATA,
            1 => 4096,
            2 => 512 + 4 * u32::from(policy >> 5),
            _ => r2t.r2tl, // may exceed MAXH2CDATA
        }
        .max(4);
        let broken = (policy >> 2) & 7;
        let mut off = 0u32;
        let mut first = true;
        while off < r2t.r2tl && self.budget_left() {
            let n = chunk.min(r2t.r2tl - off);
            let last = off + n == r2t.r2tl;
            if last && broken == 6 {
                break; // the last piece never comes
            }
            let d = DataPdu {
                cccid: r2t.cccid,
                ttag: if broken == 4 {
                    r2t.ttag.wrapping_add(1)
                } else {
                    r2t.ttag
                },
                datao: r2t
                    .r2to
                    .wrapping_add(off)
                    .wrapping_add(if broken == 5 { 4 } else { 0 }),
                datal: n.wrapping_add(if broken == 7 { 4 } else { 0 }),
                last,
                success: false,
                data: pattern(seed, r2t.r2to.wrapping_add(off), n as usize),
            };
            let mut b = self.enc.to_bytes(&Pdu::H2CData(d)).to_vec();
            if first && self.ddgst && policy & 0x80 != 0 {
                let l = b.len();
                b[l - 1] ^= 0x5a; // a data digest error fails the command only
            }
            self.push(&b);
            first = false;
            off += n;
        }
    }
}

/// Data that depends on its offset, so misplaced data reads back different.
fn pattern(seed: u8, off: u32, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    for i in 0..len {
        let x = off as usize + i;
        v.push((x as u8) ^ ((x >> 8) as u8).wrapping_mul(31) ^ seed);
    }
    Bytes::from(v)
}

fn nsid(sel: u8) -> u32 {
    match sel % 8 {
        0..=2 => 1,
        3 | 4 => 2,
        5 => 0,
        6 => u32::MAX,
        _ => 3, // inactive
    }
}

fn block_size(nsid: u32) -> u32 {
    NS.iter().find(|n| n.0 == nsid).map_or(512, |n| n.2)
}

fn num_blocks(nsid: u32) -> u64 {
    NS.iter()
        .find(|n| n.0 == nsid)
        .map_or(4096, |n| n.1 / u64::from(n.2))
}

fn connect_data(cntlid: u16, subnqn: &str) -> Bytes {
    Bytes::copy_from_slice(
        &ConnectData {
            hostid: HOSTID,
            cntlid,
            subnqn: subnqn.into(),
            hostnqn: HOSTNQN.into(),
        }
        .encode(),
    )
}

/// The harness's view of one input's connections.
struct Session {
    /// Operations go here (the admin queue in modes 1-2, the I/O queue in mode 3).
    main: Conn,
    /// The admin queue in mode 3.
    admin: Option<Conn>,
    cntlid: Option<u16>,
    discovery: bool,
}

impl Session {
    fn conn(&mut self, admin: bool) -> (&mut Conn, bool) {
        match (&mut self.admin, admin) {
            (Some(a), true) => (a, false),
            (Some(_), false) => (&mut self.main, true),
            (None, _) => (&mut self.main, false),
        }
    }
}

/// ICReq, admin Connect and CC.EN = 1 on a new connection; the completions are
/// waited for and must be successful.
async fn admin_preamble(
    addr: SocketAddr,
    src: Ipv4Addr,
    hpda: u8,
    digests: Digests,
    discovery: bool,
    sqfc_off: bool,
    queues: bool,
) -> (Conn, u16) {
    let mut c = Conn::open(addr, src).await;
    c.icreq(hpda, digests, 0);
    let cmd = ConnectCommand {
        recfmt: 0,
        qid: 0,
        sqsize: 31,
        cattr: if sqfc_off { 4 } else { 0 },
        kato: 0,
    };
    let mut s = cmd.to_sqe();
    s.cid = CID_CONNECT;
    let subnqn = if discovery { DISCOVERY_NQN } else { NQN };
    c.capsule(s, connect_data(CNTLID_DYNAMIC, subnqn));
    let cc = Cc {
        en: true,
        iosqes: 6,
        iocqes: 4,
        ..Default::default()
    };
    let mut s = PropertyCommand::set_sqe(registers::CC, false, u64::from(cc.to_u32()));
    s.cid = CID_PROPSET;
    c.capsule(s, Bytes::new());
    if queues {
        let mut s = Sqe::new(admin_opcode::SET_FEATURES);
        s.cid = CID_QUEUES;
        s.cdw10 = u32::from(nvmf_proto::features::fid::NUMBER_OF_QUEUES);
        s.cdw11 = 3 | (3 << 16);
        c.capsule(s, Bytes::new());
    }
    let last = if queues { CID_QUEUES } else { CID_PROPSET };
    c.wait_resp(last, "the admin preamble").await;
    let st = c.sh.lock();
    assert!(st.icresp.is_some(), "no ICResp to a valid ICReq");
    let conn = st.resps.get(&CID_CONNECT).expect("Connect completion");
    assert!(
        conn.status.is_success(),
        "a valid admin Connect failed: {conn:?}"
    );
    let cntlid = conn.dw0 as u16;
    for cid in [CID_PROPSET, CID_QUEUES] {
        if let Some(r) = st.resps.get(&cid) {
            assert!(r.status.is_success(), "preamble command failed: {r:?}");
        }
    }
    drop(st);
    (c, cntlid)
}

async fn run(e: &Env, data: &[u8], src: Ipv4Addr) {
    let mut r = Reader::new(data);
    let m = r.u8();
    let mode = match m & 7 {
        0 => 0,
        1 => 1,
        2..=4 => 2,
        _ => 3,
    };
    if mode == 0 {
        let mut c = Conn::open(e.addr, src).await;
        c.raw(r.rest());
        close_all(vec![c]).await;
        return;
    }
    let digests = Digests::from_u8(m >> 3);
    let flag_a = m & 0x20 != 0; // mode 2: discovery; mode 3: close the admin queue first
    let sqfc_off = m & 0x40 != 0;
    let hpda = if m & 0x80 != 0 { r.u8() & 31 } else { 0 };
    let mut ses = match mode {
        1 => {
            let mut c = Conn::open(e.addr, src).await;
            let maxr2t = u32::from(r.u8() & 3);
            c.icreq(hpda, digests, maxr2t);
            Session {
                main: c,
                admin: None,
                cntlid: None,
                discovery: false,
            }
        }
        2 => {
            let (c, cntlid) =
                admin_preamble(e.addr, src, hpda, digests, flag_a, sqfc_off, false).await;
            Session {
                main: c,
                admin: None,
                cntlid: Some(cntlid),
                discovery: flag_a,
            }
        }
        _ => {
            let b = r.u8();
            let qid = 1 + u16::from(b & 3);
            let io_digests = Digests::from_u8(b >> 2);
            let sqsize = u16::from(b >> 4) * 2 + 1; // 2 to 32 entries
            let (a, cntlid) = admin_preamble(e.addr, src, 0, digests, false, false, qid > 1).await;
            let mut c = Conn::open(e.addr, src).await;
            c.icreq(hpda, io_digests, 0);
            let cmd = ConnectCommand {
                recfmt: 0,
                qid,
                sqsize,
                cattr: if sqfc_off { 4 } else { 0 },
                kato: 0,
            };
            let mut s = cmd.to_sqe();
            s.cid = CID_CONNECT;
            c.capsule(s, connect_data(cntlid, NQN));
            Session {
                main: c,
                admin: Some(a),
                cntlid: Some(cntlid),
                discovery: false,
            }
        }
    };
    let mut ops = 0;
    while !r.is_empty() && ops < MAX_OPS {
        ops += 1;
        let tag = r.u8();
        op(&mut ses, tag, &mut r).await;
    }
    let cntlid = ses.cntlid;
    let discovery = ses.discovery;
    let conns = match ses.admin {
        Some(a) if flag_a => vec![a, ses.main],
        Some(a) => vec![ses.main, a],
        None => vec![ses.main],
    };
    close_all(conns).await;
    if let Some(id) = cntlid {
        let s = if discovery { &e.discovery } else { &e.subsys };
        assert!(
            s.controller(id).is_none(),
            "controller {id} outlived its admin connection"
        );
    }
}

/// Half-closes each connection in turn and waits for the target to close it.
async fn close_all(conns: Vec<Conn>) {
    for mut c in conns {
        c.flush().await;
        if let Some(mut w) = c.wr.take() {
            let _ = w.shutdown().await;
        }
        if let Some(rd) = c.rd.take() {
            match tokio::time::timeout(HANG, rd).await {
                Ok(r) => r.expect("reader task"),
                Err(_) => {
                    let st = c.sh.lock();
                    panic!(
                        "the target did not close a half-closed connection within {HANG:?} \
                         (ICResp {:?}, term {:?}, {} bytes sent)",
                        st.icresp.is_some(),
                        st.term,
                        c.sent
                    );
                }
            }
        }
    }
}

async fn op(ses: &mut Session, tag: u8, r: &mut Reader<'_>) {
    if debug() {
        eprintln!("{:?} op {tag:#x}", t0().elapsed());
    }
    let admin_tag = tag & 0x80 != 0;
    let cntlid = ses.cntlid;
    let (c, io) = ses.conn(admin_tag);
    if !c.budget_left() {
        return;
    }
    match tag & 0x7f {
        // Raw bytes.
        0..=5 => {
            let n = r.u8();
            let b = r.bytes(usize::from(n)).to_vec();
            c.raw(&b);
        }
        // Any SQE with fuzzed fields.
        6..=17 => {
            let opcode = r.u8();
            let flags = r.u8();
            let mut s = Sqe::new(opcode);
            s.flags = if flags & 4 != 0 {
                flags & 0xC3
            } else {
                PSDT_SGL | (flags & 3)
            };
            s.cid = if flags & 8 != 0 {
                r.u16() & 0x0FFF
            } else {
                c.cid(flags & 0x10 != 0)
            };
            s.nsid = if opcode == admin_opcode::FABRICS {
                u32::from(r.u8())
            } else {
                nsid(r.u8())
            };
            s.cdw10 = r.u32();
            s.cdw11 = r.u32();
            s.cdw12 = r.u32();
            if flags & 0x20 != 0 {
                s.cdw13 = r.u32();
                s.cdw14 = r.u32();
                s.cdw15 = r.u32();
                s.mptr = u64::from(r.u32());
                s.cdw2 = r.u32();
            }
            let sgl = r.u8();
            let len = u32::from(r.u16());
            let seed = r.u8();
            let mut data = Bytes::new();
            s.sgl1 = match sgl & 3 {
                0 => SglDescriptor::transport(len),
                1 => {
                    let dlen = if sgl & 4 != 0 { len ^ 4 } else { len };
                    data = pattern(seed, 0, dlen.min(MAX_ICD + 64) as usize);
                    SglDescriptor::in_capsule(len)
                }
                2 => SglDescriptor::default(),
                _ => SglDescriptor {
                    address: u64::from(r.u32()),
                    length: len,
                    reserved: [0; 3],
                    type_byte: r.u8(),
                },
            };
            c.writes.insert(s.cid, WriteData { seed });
            c.capsule(s, data);
            if sgl & 0x80 != 0 {
                c.serve_r2t(sgl >> 3).await;
            }
        }
        // I/O commands.
        18..=41 => {
            let k = r.u8();
            let opcode = [
                io_opcode::READ,
                io_opcode::WRITE,
                io_opcode::READ,
                io_opcode::WRITE,
                io_opcode::COMPARE,
                io_opcode::FLUSH,
                io_opcode::WRITE_ZEROES,
                io_opcode::DATASET_MANAGEMENT,
            ][usize::from(k & 7)];
            let flags = r.u8();
            let ns = nsid(r.u8());
            let bs = block_size(ns);
            let nb = num_blocks(ns);
            let slba = match flags & 3 {
                0 | 1 => u64::from(r.u16()) % nb,
                2 => nb.saturating_sub(u64::from(r.u8())),
                _ => u64::from(r.u32()) | (u64::from(r.u32()) << 32),
            };
            let nlb = if flags & 4 != 0 {
                u32::from(r.u16()) + 1
            } else {
                u32::from(r.u8() & 0x3f) + 1
            };
            let fua = flags & 8 != 0;
            let in_capsule = flags & 0x10 != 0;
            let mismatch = flags & 0x20 != 0;
            let serve = flags & 0x40 != 0;
            let seed = r.u8();
            let mut s = Sqe::rw(opcode, ns, slba, nlb, fua);
            s.cid = c.cid(k & 0x80 != 0);
            let mut len = nlb.saturating_mul(bs);
            if mismatch {
                len = len.wrapping_add(u32::from(r.u8()) * 4).wrapping_sub(512);
            }
            let mut data = Bytes::new();
            match opcode {
                io_opcode::READ => s.sgl1 = SglDescriptor::transport(len),
                io_opcode::WRITE | io_opcode::COMPARE => {
                    if in_capsule {
                        data = pattern(seed, 0, len.min(MAX_ICD + 512) as usize);
                        s.sgl1 = SglDescriptor::in_capsule(data.len() as u32);
                    } else {
                        s.sgl1 = SglDescriptor::transport(len);
                    }
                }
                io_opcode::WRITE_ZEROES => {
                    s.cdw12 |= u32::from(k & 0x40) << 19; // DEAC (bit 25)
                }
                io_opcode::DATASET_MANAGEMENT => {
                    let nr = usize::from(k >> 3 & 3) + 1;
                    s.cdw10 = (nr - 1) as u32;
                    s.cdw11 = if k & 0x40 != 0 { 1 << 2 } else { 0 };
                    let mut v = Vec::with_capacity(nr * 16);
                    for _ in 0..nr {
                        let rl = u32::from(r.u16());
                        let rs = u64::from(r.u16());
                        v.extend_from_slice(&0u32.to_le_bytes());
                        v.extend_from_slice(&rl.to_le_bytes());
                        v.extend_from_slice(&rs.to_le_bytes());
                    }
                    if mismatch {
                        v.truncate(v.len() - 8);
                    }
                    if in_capsule {
                        s.sgl1 = SglDescriptor::in_capsule(v.len() as u32);
                        data = Bytes::from(v);
                    } else {
                        s.sgl1 = SglDescriptor::transport(v.len() as u32);
                    }
                }
                _ => {}
            }
            c.writes.insert(s.cid, WriteData { seed });
            c.capsule(s, data);
            if serve {
                c.serve_r2t(seed).await;
            }
        }
        // Admin commands.
        42..=61 => {
            let k = r.u8();
            let cid = c.cid(k & 0x80 != 0);
            let mut s;
            match k & 7 {
                0 => {
                    let cns = r.u8();
                    s = Sqe::identify(if cns & 0x80 != 0 { cns } else { cns & 3 }, nsid(r.u8()));
                    if k & 8 != 0 {
                        s.sgl1 = SglDescriptor::transport(u32::from(r.u16()));
                    }
                    s.cdw10 |= u32::from(r.u16()) << 16 & if k & 0x10 != 0 { !0 } else { 0 };
                }
                1 => {
                    let l = r.u8();
                    let lid = [1, 2, 3, 4, 5, 0x0c, 0x70, l][usize::from(l & 7)];
                    let len = if k & 8 != 0 {
                        u32::from(r.u16()) * 4 + 4
                    } else {
                        [512, 64, 4096, 1024][usize::from(l >> 3 & 3)]
                    };
                    let offset = if k & 0x10 != 0 {
                        u64::from(r.u32())
                    } else {
                        u64::from(r.u8()) * 4
                    };
                    s = Sqe::get_log_page(lid, nsid(r.u8()), len, offset, k & 0x20 != 0);
                    if k & 0x40 != 0 {
                        s.sgl1 = SglDescriptor::transport(u32::from(r.u16()));
                    }
                }
                2 | 3 => {
                    let f = r.u8();
                    let fid = [7, 0x0b, 0x0f, 6, 0x81, 1, 4, f][usize::from(f & 7)];
                    s = Sqe::new(if k & 1 == 0 {
                        admin_opcode::SET_FEATURES
                    } else {
                        admin_opcode::GET_FEATURES
                    });
                    s.cdw10 = u32::from(fid) | u32::from(f & 0x80) << 24;
                    s.cdw11 = if fid == 0x0f {
                        // Keep Alive Timer: keep it long enough not to fire mid-input.
                        u32::from(r.u16()) * 100 + 10_000
                    } else {
                        r.u32()
                    };
                    if fid == 0x81 {
                        s.sgl1 = SglDescriptor::transport(16 + (u32::from(f) & 0x40));
                    }
                }
                4 => s = Sqe::new(admin_opcode::KEEP_ALIVE),
                5 => s = Sqe::new(admin_opcode::ASYNC_EVENT_REQUEST),
                6 => {
                    s = Sqe::new(admin_opcode::ABORT);
                    s.cdw10 = u32::from(r.u16()) | u32::from(c.last_cid) << 16;
                }
                _ => {
                    let p = r.u8();
                    let offset = [
                        registers::CAP,
                        registers::VS,
                        registers::CC,
                        registers::CSTS,
                        registers::CC,
                        registers::NSSR,
                        0x0c,
                        u32::from(p),
                    ][usize::from(p & 7)];
                    let eight = p & 8 != 0;
                    s = if p & 0x10 != 0 {
                        let v = if p & 0x20 != 0 {
                            r.u32()
                        } else {
                            let b = r.u8();
                            Cc {
                                en: b & 1 != 0,
                                shn: b >> 1 & 3,
                                iosqes: 6,
                                iocqes: 4,
                                mps: u8::from(b & 0x80 != 0),
                                ..Default::default()
                            }
                            .to_u32()
                        };
                        PropertyCommand::set_sqe(offset, eight, u64::from(v))
                    } else {
                        PropertyCommand::get_sqe(offset, eight)
                    };
                }
            }
            s.cid = cid;
            c.capsule(s, Bytes::new());
        }
        // Fabrics commands.
        62..=69 => {
            let k = r.u8();
            let mut s = Sqe::new(admin_opcode::FABRICS);
            s.cid = c.cid(false);
            let mut data = Bytes::new();
            match k & 3 {
                0 | 1 => {
                    let b = r.u8();
                    let cmd = ConnectCommand {
                        recfmt: u16::from(b & 0x80 != 0),
                        qid: u16::from(b & 7).wrapping_add(if b & 8 != 0 { r.u16() } else { 0 }),
                        sqsize: if b & 0x10 != 0 { r.u16() } else { 31 },
                        cattr: r.u8() & 7,
                        kato: if b & 0x20 != 0 { 10_000 } else { 0 },
                    };
                    s = cmd.to_sqe();
                    s.cid = c.cid(false);
                    let n = r.u8();
                    let subnqn = match n & 3 {
                        0 | 1 => NQN.to_string(),
                        2 => DISCOVERY_NQN.to_string(),
                        _ => format!("nqn.2024-01.io.nvmf-rs:x{}", n >> 2),
                    };
                    let cntlid = match n >> 2 & 3 {
                        0 => CNTLID_DYNAMIC,
                        1 => cntlid.unwrap_or(1),
                        _ => r.u16(),
                    };
                    let mut cd = ConnectData {
                        hostid: HOSTID,
                        cntlid,
                        subnqn,
                        hostnqn: HOSTNQN.into(),
                    };
                    if n & 0x10 != 0 {
                        cd.hostid[0] ^= 1;
                    }
                    if n & 0x20 != 0 {
                        cd.hostnqn = "bogus".into();
                    }
                    let mut v = cd.encode().to_vec();
                    if n & 0x80 != 0 {
                        // Not NUL terminated: a 256-byte NQN.
                        v[256..512].fill(b'n');
                    }
                    if n & 0x40 != 0 {
                        v.truncate(usize::from(r.u16()) % 1024);
                    }
                    s.sgl1 = SglDescriptor::in_capsule(v.len() as u32);
                    data = Bytes::from(v);
                }
                2 => s.nsid = u32::from(fctype::DISCONNECT),
                _ => {
                    s.nsid = u32::from(r.u8());
                    s.cdw10 = r.u32();
                    s.cdw11 = r.u32();
                    let len = u32::from(r.u16() & 0x3fff);
                    if k & 4 != 0 {
                        data = pattern(k, 0, len as usize);
                        s.sgl1 = SglDescriptor::in_capsule(len);
                    } else {
                        s.sgl1 = SglDescriptor::transport(len);
                    }
                }
            }
            c.capsule(s, data);
        }
        // H2CData answering the next R2T.
        70..=81 => {
            let policy = r.u8();
            c.serve_r2t(policy).await;
        }
        // Free-form H2CData.
        82..=85 => {
            let k = r.u8();
            let cccid = if k & 1 != 0 { c.last_cid } else { r.u16() };
            let ttag = r.u16();
            let datao = u32::from(r.u16());
            let n = u32::from(r.u16() & 0x7fff);
            let datal = if k & 2 != 0 { r.u32() } else { n };
            let d = DataPdu {
                cccid,
                ttag,
                datao,
                datal,
                last: k & 4 != 0,
                success: k & 8 != 0,
                data: pattern(k, datao, n as usize),
            };
            c.pdu(&Pdu::H2CData(d));
        }
        // H2CTermReq.
        86 | 87 => {
            let fes = Fes::from_u16(u16::from(r.u8() % 8));
            let fei = r.u32();
            let n = usize::from(r.u8());
            let data = Bytes::copy_from_slice(r.bytes(n));
            c.pdu(&Pdu::H2CTermReq(TermReq { fes, fei, data }));
        }
        // Write, then read back: what was acknowledged must read the same.
        88..=95 => {
            let k = r.u8();
            let ns = if k & 1 != 0 { 2 } else { 1 };
            let bs = block_size(ns);
            let nlb = if ns == 2 {
                1 + u32::from(k >> 1 & 1)
            } else {
                1 + u32::from(k >> 1 & 15)
            };
            let slba = u64::from(r.u16()) % (num_blocks(ns) - u64::from(nlb) + 1);
            let seed = r.u8();
            let len = nlb * bs;
            let wcid = CID_VERIFY | (c.verify_n & 0x3FF) << 1;
            let rcid = wcid | 1;
            c.verify_n = c.verify_n.wrapping_add(1);
            let mut w = Sqe::rw(io_opcode::WRITE, ns, slba, nlb, k & 0x80 != 0);
            w.cid = wcid;
            w.sgl1 = SglDescriptor::in_capsule(len);
            let mut rd = Sqe::rw(io_opcode::READ, ns, slba, nlb, false);
            rd.cid = rcid;
            rd.sgl1 = SglDescriptor::transport(len);
            let want = pattern(seed, (slba as u32).wrapping_mul(bs), len as usize);
            {
                let mut st = c.sh.lock();
                st.watch.insert(rcid);
                st.c2h.remove(&rcid);
            }
            c.capsule(w, want.clone());
            c.capsule(rd, Bytes::new());
            let wr = c.wait_resp(wcid, "a verify write").await;
            let rr = c.wait_resp(rcid, "a verify read").await;
            let mut st = c.sh.lock();
            st.watch.remove(&rcid);
            let got = st.c2h.remove(&rcid).unwrap_or_default();
            let ok = |x: &Option<Cqe>| x.is_some_and(|c| c.status.is_success());
            if io && !st.raw && ok(&wr) && ok(&rr) {
                let mut buf = vec![0u8; len as usize];
                let mut covered = 0;
                for (off, d) in got {
                    let o = off as usize;
                    assert!(o + d.len() <= buf.len(), "C2HData past the read buffer");
                    buf[o..o + d.len()].copy_from_slice(&d);
                    covered += d.len();
                }
                assert_eq!(covered, len as usize, "C2HData did not cover the read");
                assert!(
                    buf == want[..],
                    "NSID {ns} LBA {slba} x{nlb}: read back differs from what was written"
                );
            }
        }
        // Sync point.
        96..=103 => c.sync(io).await,
        // Split point: send what is buffered and let the target run.
        104..=111 => {
            c.flush().await;
            for _ in 0..(r.u8() & 3) + 1 {
                tokio::task::yield_now().await;
            }
        }
        _ => {}
    }
}

/// A fresh connection still gets its ICResp.
async fn health_check(e: &Env) {
    let mut c = Conn::open(e.addr, Ipv4Addr::LOCALHOST).await;
    c.icreq(0, Digests::default(), 0);
    let got = c.wait(HANG, |st| st.icresp).await;
    assert!(
        matches!(got, Ok(Some(_))),
        "a fresh connection got no ICResp within {HANG:?}"
    );
    close_all(vec![c]).await;
}

/// Between inputs no connection of the harness is open, so no controller may exist.
fn no_live_controllers(e: &Env) {
    for id in 1..=0xFFEF {
        assert!(e.subsys.controller(id).is_none(), "controller {id} leaked");
        assert!(
            e.discovery.controller(id).is_none(),
            "discovery controller {id} leaked"
        );
    }
}
