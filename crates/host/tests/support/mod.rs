//! A tiny test-only NVMe/TCP controller: enough of the admin and NVM command sets
//! to exercise the host library over real TCP. One namespace (NSID 1, 512-byte
//! blocks) backed by a shared Vec, so a "killed" target can be restarted on the
//! same port with the same data.
#![allow(dead_code, missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nvmf_proto::fabrics::{fctype, ConnectCommand, ConnectData, PropertyCommand, DISCOVERY_NQN};
use nvmf_proto::features::{fid, number_of_queues};
use nvmf_proto::identify::{
    cns, encode_ns_list, ControllerType, IdentifyController, IdentifyNamespace, LbaFormat,
};
use nvmf_proto::log::{adrfam, lid, subtype, trtype, DiscoveryLog, DiscoveryLogEntry};
use nvmf_proto::registers::{self, Cap, Cc, Csts};
use nvmf_proto::sqe::{admin_opcode, io_opcode};
use nvmf_proto::tcp::{ControllerEvent, ControllerQueue, ControllerQueueConfig, IncomingCommand};
use nvmf_proto::{Cqe, Sqe, Status};
use nvmf_transport::{Connection, Listener, TransportAddr};
use tokio::task::AbortHandle;

pub const NQN: &str = "nqn.2024-01.io.test:mini";
pub const BS: usize = 512;

pub type Store = Arc<Mutex<Vec<u8>>>;

pub fn store(bytes: usize) -> Store {
    Arc::new(Mutex::new(vec![0u8; bytes]))
}

pub struct MiniTarget {
    pub addr: TransportAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    pub writes: Arc<std::sync::atomic::AtomicU64>,
    pub faults: Arc<Faults>,
}

/// Faults the mini target injects: commands it sits on (a lost completion), and
/// what it does with an Abort for them.
#[derive(Default)]
pub struct Faults {
    /// Reads and writes starting at these LBAs are never answered, the given
    /// number of times each.
    pub hold: Mutex<HashMap<u64, u32>>,
    /// Abort frees a held command (completes it with Command Abort Requested);
    /// otherwise Abort answers "not aborted" (DW0 bit 0 set).
    pub honour_abort: std::sync::atomic::AtomicBool,
    /// Every Abort received: (SQID, CID).
    pub aborts: Mutex<Vec<(u16, u16)>>,
    /// Admin queue Connects accepted (associations made).
    pub associations: std::sync::atomic::AtomicU64,
    /// Connects that asked to disable SQ flow control (CATTR bit 2).
    pub sqfc_disabled_connects: std::sync::atomic::AtomicU64,
    /// Reads completed by their last C2HData PDU (SUCCESS), without a response capsule.
    pub success_flag_reads: std::sync::atomic::AtomicU64,
    /// Every write executed, in order: (queue, SLBA).
    pub write_log: Mutex<Vec<(u16, u64)>>,
    /// Held commands: (queue, CID) -> the channel of the connection that holds it.
    held: Mutex<HashMap<(u16, u16), tokio::sync::mpsc::UnboundedSender<u16>>>,
}

impl Faults {
    /// Holds commands at `lba` `times` times.
    pub fn hold(&self, lba: u64, times: u32) {
        self.hold.lock().unwrap().insert(lba, times);
    }

    fn take_hold(&self, lba: u64) -> bool {
        let mut h = self.hold.lock().unwrap();
        match h.get_mut(&lba) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

impl MiniTarget {
    /// Serves `store` on `addr` ("127.0.0.1:0" for any port).
    pub async fn start(addr: &str, store: Store) -> Self {
        Self::start_with(addr, store, Arc::default()).await
    }

    /// Serves `store` on `addr`, injecting `faults`.
    pub async fn start_with(addr: &str, store: Store, faults: Arc<Faults>) -> Self {
        let addr: TransportAddr = addr.parse().unwrap();
        let l = Listener::bind(&addr, ControllerQueueConfig::default())
            .await
            .unwrap();
        let addr = l.local_addr();
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let t2 = tasks.clone();
        let w2 = writes.clone();
        let f2 = faults.clone();
        let h = tokio::spawn(async move {
            loop {
                let Ok(c) = l.accept().await else { return };
                let h = tokio::spawn(serve(c, store.clone(), addr, w2.clone(), f2.clone()));
                t2.lock().unwrap().push(h.abort_handle());
            }
        });
        tasks.lock().unwrap().push(h.abort_handle());
        Self {
            addr,
            tasks,
            writes,
            faults,
        }
    }

    /// Drops every socket at once, like SIGKILL.
    pub fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for MiniTarget {
    fn drop(&mut self) {
        self.kill();
    }
}

struct St {
    cc: u32,
    store: Store,
    addr: TransportAddr,
    pending: HashMap<u16, Sqe>,
    qid: u16,
    writes: Arc<std::sync::atomic::AtomicU64>,
    faults: Arc<Faults>,
    abort_tx: tokio::sync::mpsc::UnboundedSender<u16>,
}

async fn serve(
    mut c: Connection<ControllerQueue>,
    store: Store,
    addr: TransportAddr,
    writes: Arc<std::sync::atomic::AtomicU64>,
    faults: Arc<Faults>,
) {
    let (abort_tx, mut abort_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut st = St {
        cc: 0,
        store,
        addr,
        pending: HashMap::new(),
        writes,
        qid: 0,
        faults,
        abort_tx,
    };
    loop {
        while let Some(ev) = c.queue.poll_event() {
            match ev {
                ControllerEvent::Command(cmd) => handle(&mut c.queue, &mut st, cmd),
                ControllerEvent::Data { cid, data } => {
                    if let Some(sqe) = st.pending.remove(&cid) {
                        let mut buf = Vec::new();
                        for d in data {
                            buf.extend_from_slice(&d);
                        }
                        let s = do_write(&st, &sqe, &buf);
                        c.queue.complete(Cqe::new(cid, s));
                    }
                }
                ControllerEvent::Terminated { .. } => {
                    let _ = c.flush().await;
                    return;
                }
                _ => {}
            }
        }
        if c.is_eof() {
            return;
        }
        tokio::select! {
            r = c.pump() => if r.is_err() {
                return;
            },
            Some(cid) = abort_rx.recv() => {
                c.queue.complete(Cqe::new(cid, Status::ABORT_REQUESTED));
            }
        }
    }
}

fn do_write(st: &St, sqe: &Sqe, data: &[u8]) -> Status {
    let off = sqe.slba() as usize * BS;
    let len = sqe.nlb() as usize * BS;
    let mut s = st.store.lock().unwrap();
    if off + len > s.len() || data.len() != len {
        return Status::LBA_OUT_OF_RANGE.dnr();
    }
    s[off..off + len].copy_from_slice(data);
    st.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    st.faults
        .write_log
        .lock()
        .unwrap()
        .push((st.qid, sqe.slba()));
    Status::SUCCESS
}

fn send(q: &mut ControllerQueue, st: &St, cid: u16, mut data: Vec<u8>, buffer_len: u32) {
    data.resize(buffer_len as usize, 0);
    match q.send_data(cid, Bytes::from(data), true) {
        Ok(true) => {
            st.faults
                .success_flag_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(false) => q.complete(Cqe::new(cid, Status::SUCCESS)),
        Err(_) => q.complete(Cqe::new(cid, Status::DATA_SGL_LENGTH_INVALID.dnr())),
    }
}

fn handle(q: &mut ControllerQueue, st: &mut St, cmd: IncomingCommand) {
    let s = cmd.sqe;
    let cid = s.cid;
    let ok = |q: &mut ControllerQueue, dw0: u32| {
        let mut c = Cqe::new(cid, Status::SUCCESS);
        c.dw0 = dw0;
        q.complete(c);
    };
    if s.opcode == admin_opcode::FABRICS {
        match s.fctype() {
            fctype::CONNECT => {
                let cc = ConnectCommand::from_sqe(&s);
                let Some(d) = ConnectData::decode(&cmd.data) else {
                    return q.complete(Cqe::new(cid, Status::INVALID_FIELD.dnr()));
                };
                if d.subnqn != NQN && d.subnqn != DISCOVERY_NQN {
                    let mut c = Cqe::new(cid, Status::CONNECT_INVALID_PARAMETERS.dnr());
                    c.dw0 = nvmf_proto::fabrics::connect_invalid_param_dw0(256, true);
                    return q.complete(c);
                }
                st.qid = cc.qid;
                if cc.qid == 0 {
                    st.faults
                        .associations
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if cc.sq_flow_control_disabled() {
                    st.faults
                        .sqfc_disabled_connects
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                q.set_connected(cc.qid, cc.sqsize + 1, !cc.sq_flow_control_disabled(), 8192);
                ok(q, 1);
            }
            fctype::PROPERTY_GET => {
                let p = PropertyCommand::from_sqe(&s);
                let v: u64 = match p.offset {
                    registers::CAP => Cap {
                        mqes: 127,
                        cqr: true,
                        to: 2,
                        css: 1,
                        mpsmin: 0,
                        mpsmax: 0,
                    }
                    .to_u64(),
                    registers::VS => u64::from(registers::version(1, 3, 0)),
                    registers::CC => u64::from(st.cc),
                    registers::CSTS => {
                        let cc = Cc::from_u32(st.cc);
                        u64::from(
                            Csts {
                                rdy: cc.en,
                                cfs: false,
                                shst: if cc.shn != 0 { 2 } else { 0 },
                            }
                            .to_u32(),
                        )
                    }
                    _ => 0,
                };
                let mut c = Cqe::new(cid, Status::SUCCESS);
                c.dw0 = v as u32;
                c.dw1 = (v >> 32) as u32;
                q.complete(c);
            }
            fctype::PROPERTY_SET => {
                st.cc = PropertyCommand::from_sqe(&s).value as u32;
                ok(q, 0);
            }
            _ => q.complete(Cqe::new(cid, Status::INVALID_OPCODE.dnr())),
        }
        return;
    }
    let nsze = (st.store.lock().unwrap().len() / BS) as u64;
    if st.qid == 0 {
        admin(q, st, cmd, nsze)
    } else {
        io(q, st, cmd)
    }
}

fn admin(q: &mut ControllerQueue, st: &mut St, cmd: IncomingCommand, nsze: u64) {
    let s = cmd.sqe;
    let cid = s.cid;
    let ok = |q: &mut ControllerQueue, dw0: u32| {
        let mut c = Cqe::new(cid, Status::SUCCESS);
        c.dw0 = dw0;
        q.complete(c);
    };
    match (s.opcode, cmd.buffer_len) {
        (admin_opcode::IDENTIFY, len) => {
            let page = match (s.cdw10 & 0xff) as u8 {
                cns::CONTROLLER => IdentifyController {
                    vid: 0x1b36,
                    sn: "mini0001".into(),
                    mn: "nvmf-host test target".into(),
                    fr: "0.1".into(),
                    mdts: 5,
                    cntlid: 1,
                    ver: registers::version(1, 3, 0),
                    cntrltype: ControllerType::Io,
                    kas: 10,
                    sqes: 0x66,
                    cqes: 0x44,
                    maxcmd: 128,
                    nn: 1,
                    subnqn: NQN.into(),
                    ioccsz: (8192 + 64) / 16,
                    iorcsz: 1,
                    msdbd: 1,
                    sgls: 1 | (1 << 20),
                    ..Default::default()
                }
                .encode(),
                cns::NAMESPACE if s.nsid == 1 => IdentifyNamespace {
                    nsze,
                    ncap: nsze,
                    nuse: nsze,
                    nlbaf: 0,
                    lbaf: vec![LbaFormat {
                        ms: 0,
                        lbads: 9,
                        rp: 0,
                    }],
                    ..Default::default()
                }
                .encode(),
                cns::ACTIVE_NS_LIST => encode_ns_list([1], s.nsid),
                _ => return q.complete(Cqe::new(cid, Status::INVALID_NS.dnr())),
            };
            send(q, st, cid, page, len);
        }
        (admin_opcode::GET_LOG_PAGE, len) if s.cdw10 & 0xff == u32::from(lid::DISCOVERY) => {
            let (_, _, off) = s.log_page_params();
            let log = DiscoveryLog {
                genctr: 1,
                numrec: 1,
                recfmt: 0,
                entries: vec![DiscoveryLogEntry {
                    trtype: trtype::TCP,
                    adrfam: adrfam::IPV4,
                    subtype: subtype::NVME,
                    treq: 2,
                    portid: 1,
                    cntlid: 0xffff,
                    asqsz: 32,
                    trsvcid: st.addr.trsvcid(),
                    subnqn: NQN.into(),
                    traddr: st.addr.traddr(),
                    ..Default::default()
                }],
            }
            .encode();
            let p = log.get(off as usize..).unwrap_or(&[]).to_vec();
            send(q, st, cid, p, len);
        }
        (admin_opcode::GET_LOG_PAGE, len) => send(q, st, cid, Vec::new(), len),
        (admin_opcode::SET_FEATURES, _) if s.cdw10 & 0xff == u32::from(fid::NUMBER_OF_QUEUES) => {
            ok(q, number_of_queues(4, 4))
        }
        (admin_opcode::KEEP_ALIVE, _) | (admin_opcode::SET_FEATURES, _) => ok(q, 0),
        (admin_opcode::ABORT, _) => {
            let (sqid, acid) = ((s.cdw10 & 0xffff) as u16, (s.cdw10 >> 16) as u16);
            st.faults.aborts.lock().unwrap().push((sqid, acid));
            let holder = st.faults.held.lock().unwrap().remove(&(sqid, acid));
            let aborted = match holder {
                Some(tx)
                    if st
                        .faults
                        .honour_abort
                        .load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    tx.send(acid).is_ok()
                }
                Some(tx) => {
                    st.faults.held.lock().unwrap().insert((sqid, acid), tx);
                    false
                }
                None => false,
            };
            ok(q, u32::from(!aborted))
        }
        (admin_opcode::ASYNC_EVENT_REQUEST, _) => {} // held until the connection ends
        _ => q.complete(Cqe::new(cid, Status::INVALID_OPCODE.dnr())),
    }
}

fn io(q: &mut ControllerQueue, st: &mut St, cmd: IncomingCommand) {
    let s = cmd.sqe;
    let cid = s.cid;
    if matches!(s.opcode, io_opcode::READ | io_opcode::WRITE) && st.faults.take_hold(s.slba()) {
        st.faults
            .held
            .lock()
            .unwrap()
            .insert((st.qid, cid), st.abort_tx.clone());
        return;
    }
    match (s.opcode, cmd.buffer_len) {
        (io_opcode::READ, len) => {
            let off = s.slba() as usize * BS;
            let n = s.nlb() as usize * BS;
            let data = {
                let st = st.store.lock().unwrap();
                if off + n > st.len() {
                    return q.complete(Cqe::new(cid, Status::LBA_OUT_OF_RANGE.dnr()));
                }
                st[off..off + n].to_vec()
            };
            send(q, st, cid, data, len);
        }
        (io_opcode::WRITE, _) => {
            if !cmd.data.is_empty() {
                let r = do_write(st, &s, &cmd.data);
                q.complete(Cqe::new(cid, r));
            } else {
                st.pending.insert(cid, s);
                if q.request_data(cid).is_err() {
                    st.pending.remove(&cid);
                    q.complete(Cqe::new(cid, Status::INVALID_FIELD.dnr()));
                }
            }
        }
        (io_opcode::FLUSH, _) => q.complete(Cqe::new(cid, Status::SUCCESS)),
        _ => q.complete(Cqe::new(cid, Status::INVALID_OPCODE.dnr())),
    }
}
