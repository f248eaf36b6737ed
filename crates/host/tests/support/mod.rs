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
}

impl MiniTarget {
    /// Serves `store` on `addr` ("127.0.0.1:0" for any port).
    pub async fn start(addr: &str, store: Store) -> Self {
        let addr: TransportAddr = addr.parse().unwrap();
        let l = Listener::bind(&addr, ControllerQueueConfig::default())
            .await
            .unwrap();
        let addr = l.local_addr();
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let t2 = tasks.clone();
        let w2 = writes.clone();
        let h = tokio::spawn(async move {
            loop {
                let Ok(c) = l.accept().await else { return };
                let h = tokio::spawn(serve(c, store.clone(), addr, w2.clone()));
                t2.lock().unwrap().push(h.abort_handle());
            }
        });
        tasks.lock().unwrap().push(h.abort_handle());
        Self {
            addr,
            tasks,
            writes,
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
}

async fn serve(
    mut c: Connection<ControllerQueue>,
    store: Store,
    addr: TransportAddr,
    writes: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut st = St {
        cc: 0,
        store,
        addr,
        pending: HashMap::new(),
        writes,
        qid: 0,
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
        if c.pump().await.is_err() {
            return;
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
    Status::SUCCESS
}

fn send(q: &mut ControllerQueue, cid: u16, mut data: Vec<u8>, buffer_len: u32) {
    data.resize(buffer_len as usize, 0);
    match q.send_data(cid, Bytes::from(data), true) {
        Ok(true) => {}
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
                q.set_connected(cc.qid, cc.sqsize + 1, true, 8192);
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
            send(q, cid, page, len);
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
            send(q, cid, p, len);
        }
        (admin_opcode::GET_LOG_PAGE, len) => send(q, cid, Vec::new(), len),
        (admin_opcode::SET_FEATURES, _) if s.cdw10 & 0xff == u32::from(fid::NUMBER_OF_QUEUES) => {
            ok(q, number_of_queues(4, 4))
        }
        (admin_opcode::KEEP_ALIVE, _) | (admin_opcode::SET_FEATURES, _) => ok(q, 0),
        (admin_opcode::ASYNC_EVENT_REQUEST, _) => {} // held until the connection ends
        _ => q.complete(Cqe::new(cid, Status::INVALID_OPCODE.dnr())),
    }
}

fn io(q: &mut ControllerQueue, st: &mut St, cmd: IncomingCommand) {
    let s = cmd.sqe;
    let cid = s.cid;
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
            send(q, cid, data, len);
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
