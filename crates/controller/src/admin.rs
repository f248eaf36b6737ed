//! Admin and Fabrics commands on an admin queue (NVMe Base 2.0 §5; NVMe-oF 1.1 §3).

use nvmf_transport::addr::TransportKind;
use nvmf_transport::ControllerQueuePair;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use nvmf_backend::SharedData;
use nvmf_proto::fabrics::{fctype, PropertyCommand};
use nvmf_proto::features::{fid, number_of_queues};
use nvmf_proto::identify::{
    cns, ctratt, encode_ns_list, fuses, ocfs, oncs, ControllerType, IdentifyController,
    IdentifyNamespace, LbaFormat, NsDescriptor,
};
use nvmf_proto::log::{
    effects, encode_changed_ns_list, lid, CommandEffectsLog, FirmwareSlotLog, SmartLog,
};
use nvmf_proto::registers::{self, Cap, Cc, Csts};
use nvmf_proto::sqe::{admin_opcode, io_opcode};
use nvmf_proto::{Cqe, Sqe, Status};
use tracing::{info, warn};

use crate::discovery::build_log;
use crate::queue::{Outcome, QueueTask, Role, AERL};

/// Firmware revision reported in Identify Controller and the firmware slot log.
pub const FIRMWARE_REVISION: &str = env!("CARGO_PKG_VERSION");
/// CAP.TO: 7.5 s (units of 500 ms) for CSTS.RDY to follow CC.EN.
const CAP_TO: u8 = 15;
/// Keep Alive Support granularity: 100 ms units, so 1 s.
const KAS: u16 = 10;

fn ok(cid: u16) -> Outcome {
    Outcome::Complete(Cqe::new(cid, Status::SUCCESS))
}

fn fail(cid: u16, st: Status) -> Outcome {
    Outcome::Complete(Cqe::new(cid, st))
}

impl<C: ControllerQueuePair> QueueTask<C> {
    fn cap(&self) -> Cap {
        Cap {
            mqes: self.ctx.limits.max_queue_depth.saturating_sub(1),
            cqr: true,
            to: CAP_TO,
            css: 1,
            mpsmin: 0,
            mpsmax: 0,
        }
    }

    pub(crate) fn admin_command(&mut self, sqe: &Sqe, data: &[Bytes], buffer_len: u32) -> Outcome {
        let cid = sqe.cid;
        if sqe.opcode == admin_opcode::FABRICS {
            return match sqe.fctype() {
                fctype::PROPERTY_GET => self.property_get(sqe),
                fctype::PROPERTY_SET => self.property_set(sqe),
                fctype::CONNECT => fail(cid, Status::COMMAND_SEQUENCE_ERROR.dnr()),
                fctype::DISCONNECT => fail(cid, Status::INVALID_QUEUE_TYPE.dnr()),
                fctype::AUTH_SEND => self.auth_command(sqe, data, buffer_len, true),
                fctype::AUTH_RECV => self.auth_command(sqe, data, buffer_len, false),
                _ => fail(cid, Status::INVALID_OPCODE.dnr()),
            };
        }
        let ready = matches!(&self.role, Role::Admin(a) if a.cc.en && a.csts.rdy);
        if !ready {
            return fail(cid, Status::COMMAND_SEQUENCE_ERROR.dnr());
        }
        let discovery = matches!(&self.role, Role::Admin(a) if a.discovery);
        match sqe.opcode {
            admin_opcode::IDENTIFY => self.identify(sqe, buffer_len, discovery),
            admin_opcode::GET_LOG_PAGE => self.get_log_page(sqe, buffer_len, discovery),
            admin_opcode::SET_FEATURES => self.set_features(sqe, data, discovery),
            admin_opcode::GET_FEATURES => self.get_features(sqe, buffer_len),
            admin_opcode::KEEP_ALIVE => ok(cid),
            admin_opcode::ASYNC_EVENT_REQUEST => self.async_event_request(cid),
            admin_opcode::ABORT => self.abort_command(sqe),
            _ => fail(cid, Status::INVALID_OPCODE.dnr()),
        }
    }

    fn property_get(&mut self, sqe: &Sqe) -> Outcome {
        let p = PropertyCommand::from_sqe(sqe);
        let Role::Admin(a) = &self.role else {
            return fail(sqe.cid, Status::INVALID_FIELD.dnr());
        };
        let (value, eight) = match p.offset {
            registers::CAP => (self.cap().to_u64(), true),
            registers::VS => (u64::from(registers::version(1, 3, 0)), false),
            registers::CC => (u64::from(a.cc.to_u32()), false),
            registers::CSTS => (u64::from(a.csts.to_u32()), false),
            _ => return fail(sqe.cid, Status::INVALID_FIELD.dnr()),
        };
        if eight != p.eight_bytes && p.offset == registers::CAP && !p.eight_bytes {
            // A 4-byte read of CAP returns its low half, as registers do on PCIe.
        } else if eight != p.eight_bytes && p.eight_bytes {
            return fail(sqe.cid, Status::INVALID_FIELD.dnr());
        }
        let v = if p.eight_bytes {
            value
        } else {
            value & 0xffff_ffff
        };
        let mut c = Cqe::new(sqe.cid, Status::SUCCESS);
        c.dw0 = v as u32;
        c.dw1 = (v >> 32) as u32;
        Outcome::Complete(c)
    }

    fn property_set(&mut self, sqe: &Sqe) -> Outcome {
        let p = PropertyCommand::from_sqe(sqe);
        if p.eight_bytes || p.offset != registers::CC {
            return fail(sqe.cid, Status::INVALID_FIELD.dnr());
        }
        let new = Cc::from_u32(p.value as u32);
        let ctrl = self.ctrl.clone();
        let Role::Admin(a) = &mut self.role else {
            return fail(sqe.cid, Status::INVALID_FIELD.dnr());
        };
        let old = a.cc;
        a.cc = new;
        if new.en && !old.en {
            // NVMe Base 2.0 §3.5.1: check the configuration before becoming ready.
            let bad_sizes = !a.discovery && (new.iosqes != 6 || new.iocqes != 4);
            if new.mps != 0 || new.ams != 0 || new.css != 0 || bad_sizes {
                warn!(peer = %self.peer, cc = format!("{:#x}", p.value), "CC.EN with an unsupported configuration; reporting CSTS.CFS");
                a.csts.cfs = true;
            } else {
                a.csts.rdy = true;
                if let Some(c) = &ctrl {
                    c.ready.store(true, Ordering::Release);
                }
            }
        } else if !new.en && old.en {
            // Controller reset: I/O queues go away (NVMe Base 2.0 §3.7.2).
            a.csts = Csts::default();
            if let Some(c) = &ctrl {
                c.ready.store(false, Ordering::Release);
            }
        }
        if new.shn != 0 && old.shn == 0 {
            // Shutdown: make every namespace durable, then report complete.
            if let Some(c) = &ctrl {
                for ns in c.subsys.namespaces().values() {
                    if let Err(e) = ns.backend.flush() {
                        warn!(nsid = ns.nsid, "flush at shutdown failed: {e}");
                    }
                }
                info!(peer = %self.peer, cntlid = c.cntlid, "controller shutdown (CC.SHN)");
            }
            a.csts.shst = 2;
            a.csts.rdy = new.en && a.csts.rdy;
        }
        ok(sqe.cid)
    }

    fn identify(&mut self, sqe: &Sqe, buffer_len: u32, discovery: bool) -> Outcome {
        let cid = sqe.cid;
        let c = (sqe.cdw10 & 0xff) as u8;
        if buffer_len < 4096 {
            return fail(cid, Status::DATA_SGL_LENGTH_INVALID.dnr());
        }
        self.refresh_ns();
        let page = match c {
            cns::CONTROLLER => self.identify_controller(discovery).encode(),
            cns::NAMESPACE if !discovery => match self.ns.get(&sqe.nsid) {
                Some(ns) => identify_namespace(ns).encode(),
                None if sqe.nsid == 0 || sqe.nsid == u32::MAX => {
                    return fail(cid, Status::INVALID_NS.dnr())
                }
                // An inactive NSID in range reads as zeroes (NVMe Base 2.0 §5.17.2.1).
                None => vec![0u8; 4096],
            },
            cns::ACTIVE_NS_LIST if !discovery => {
                if sqe.nsid >= 0xffff_fffe {
                    return fail(cid, Status::INVALID_NS.dnr());
                }
                encode_ns_list(self.ns.keys().copied(), sqe.nsid)
            }
            cns::NS_DESCRIPTORS if !discovery => match self.ns.get(&sqe.nsid) {
                Some(ns) => NsDescriptor::encode_list(&[
                    NsDescriptor::Eui64(ns.eui64),
                    NsDescriptor::Nguid(ns.nguid),
                    NsDescriptor::Uuid(ns.uuid),
                    NsDescriptor::Csi(0),
                ]),
                None => return fail(cid, Status::INVALID_NS.dnr()),
            },
            _ => return fail(cid, Status::INVALID_FIELD.dnr()),
        };
        let n = (buffer_len as usize).min(page.len());
        Outcome::Read(
            SharedData::One(Bytes::from(page).slice(..n)),
            Cqe::new(cid, Status::SUCCESS),
        )
    }

    fn identify_controller(&self, discovery: bool) -> IdentifyController {
        let Some(ctrl) = self.ctrl.as_ref() else {
            return IdentifyController::default();
        };
        let limits = &self.ctx.limits;
        let subsys = &ctrl.subsys;
        let mdts = (limits.max_data_transfer / 4096).trailing_zeros() as u8;
        let mut id = IdentifyController {
            vid: 0,
            ssvid: 0,
            sn: subsys.serial.clone(),
            mn: subsys.model.clone(),
            fr: FIRMWARE_REVISION.into(),
            rab: 6,
            ieee: [0; 3],
            cmic: if discovery { 0 } else { 1 << 1 },
            mdts,
            cntlid: ctrl.cntlid,
            ver: registers::version(1, 3, 0),
            oaes: if discovery { 1 << 31 } else { 1 << 8 },
            // Any command restarts the keep-alive timer (CtrlShared::touch).
            ctratt: ctratt::TBKAS,
            cntrltype: if discovery {
                ControllerType::Discovery
            } else {
                ControllerType::Io
            },
            oacs: 0,
            acl: crate::abort::ACL,
            aerl: AERL,
            frmw: 0x03,
            lpa: if discovery {
                1 << 2
            } else {
                (1 << 1) | (1 << 2)
            },
            elpe: (crate::registry::ERROR_LOG_ENTRIES - 1) as u8,
            npss: 0,
            wctemp: 343,
            cctemp: 373,
            tnvmcap: 0,
            kas: KAS,
            sqes: if discovery { 0 } else { 0x66 },
            cqes: if discovery { 0 } else { 0x44 },
            maxcmd: limits.max_queue_depth,
            nn: if discovery {
                0
            } else {
                self.ns.keys().max().copied().unwrap_or(0).max(1024)
            },
            oncs: if discovery {
                0
            } else {
                oncs::COMPARE
                    | oncs::DSM
                    | oncs::WRITE_ZEROES
                    | oncs::RESERVATIONS
                    | oncs::VERIFY
                    | oncs::COPY
            },
            fuses: if discovery {
                0
            } else {
                fuses::COMPARE_AND_WRITE
            },
            fna: 0,
            vwc: if discovery { 0 } else { 1 },
            awun: 0,
            awupf: 0,
            acwu: 0,
            ocfs: if discovery { 0 } else { ocfs::FORMAT_0 },
            // SGLS (NVMe Base 2.0 Figure 275): SGLs supported (bit 0), the
            // Offset subtype for in-capsule data (bit 20), and on NVMe/RDMA the
            // Keyed SGL Data Block (bit 2), which the Linux RDMA host requires
            // ("Mandatory keyed sgls are not supported!").
            sgls: 1
                | (1 << 20)
                | if C::KIND == TransportKind::Rdma {
                    1 << 2
                } else {
                    0
                },
            mnan: 0,
            subnqn: subsys.nqn.clone(),
            ioccsz: (64 + limits.in_capsule_data(C::KIND)) / 16,
            iorcsz: 1,
            icdoff: 0,
            fcatt: 0,
            msdbd: 1,
            ofcs: if discovery { 0 } else { 1 },
            ..Default::default()
        };
        if !discovery {
            crate::ana::fill_identify_controller(&mut id);
            // A fused Compare and Write is atomic at any size it can have (the
            // pair holds the namespace's writes off): ACWU is what MDTS allows
            // in the largest block size served, 0's based.
            let max_bs = self
                .ns
                .values()
                .map(|n| n.backend.info().block_size)
                .max()
                .unwrap_or(512)
                .max(512);
            id.acwu = (limits.max_data_transfer / max_bs)
                .clamp(1, u32::from(u16::MAX) + 1)
                .saturating_sub(1) as u16;
            id.tnvmcap = self
                .ns
                .values()
                .map(|n| u128::from(n.backend.info().capacity_bytes()))
                .sum();
        }
        id
    }

    fn get_log_page(&mut self, sqe: &Sqe, buffer_len: u32, discovery: bool) -> Outcome {
        let cid = sqe.cid;
        let (id, len, offset) = sqe.log_page_params();
        if u64::from(buffer_len) < len || len > (1 << 20) {
            return fail(cid, Status::DATA_SGL_LENGTH_INVALID.dnr());
        }
        let rae = sqe.cdw10 & (1 << 15) != 0;
        let Some(ctrl) = self.ctrl.clone() else {
            return fail(cid, Status::INTERNAL_ERROR);
        };
        self.refresh_ns();
        let page: Vec<u8> = match id {
            lid::DISCOVERY if discovery => {
                ctrl.discovery_log_read(rae);
                build_log(
                    &self.ctx.registry,
                    &self.ctx.ports,
                    self.conn.local_addr(),
                    &self.ctx.port_treq,
                    &ctrl.hostnqn,
                    32,
                )
                .encode()
            }
            lid::ERROR => {
                let mut v = Vec::with_capacity(64 * crate::registry::ERROR_LOG_ENTRIES);
                for e in ctrl.errors() {
                    v.extend_from_slice(&e.encode());
                }
                v.resize(64 * crate::registry::ERROR_LOG_ENTRIES, 0);
                v
            }
            lid::SMART => self.smart_log(sqe.nsid, ctrl.error_total()).encode(),
            lid::FW_SLOT => {
                let mut f = FirmwareSlotLog {
                    afi: 1,
                    ..Default::default()
                };
                f.frs[0] = FIRMWARE_REVISION.into();
                f.encode()
            }
            lid::CHANGED_NS if !discovery => encode_changed_ns_list(&ctrl.take_changed_ns(rae)),
            lid::CMD_EFFECTS if !discovery => command_effects().encode(),
            lid::RESERVATION if !discovery => ctrl.resv.take(rae).encode().to_vec(),
            lid::ANA if !discovery => {
                ctrl.ana.log_read(rae);
                let rgo = sqe.cdw10 & nvmf_proto::log::ANA_LSP_RGO != 0;
                self.ctx
                    .registry
                    .ana
                    .log_page(ctrl.ana.port(), &self.ns, rgo)
            }
            _ => return fail(cid, Status::INVALID_LOG_PAGE.dnr()),
        };
        if offset > page.len() as u64 || offset % 4 != 0 {
            return fail(cid, Status::INVALID_FIELD.dnr());
        }
        let start = offset as usize;
        let mut out = page.get(start..).unwrap_or(&[]).to_vec();
        out.resize(len as usize, 0);
        // The buffer may be larger than NUMD; the host reads only what it asked for.
        out.truncate(buffer_len as usize);
        Outcome::Read(
            SharedData::One(Bytes::from(out)),
            Cqe::new(cid, Status::SUCCESS),
        )
    }

    fn smart_log(&self, nsid: u32, errors: u64) -> SmartLog {
        let mut s = SmartLog {
            temperature: 273 + 35,
            avail_spare: 100,
            spare_thresh: 10,
            power_on_hours: u128::from(self.ctx.registry.started.elapsed().as_secs() / 3600),
            power_cycles: 1,
            num_err_log_entries: u128::from(errors),
            ..Default::default()
        };
        // The queues' counter blocks (crate::metrics) of the subsystem's namespaces.
        let Some(c) = &self.ctrl else { return s };
        for (n, t) in c.subsys.metrics.by_namespace() {
            if n == 0 || !(nsid == 0 || nsid == u32::MAX || n == nsid) || !self.ns.contains_key(&n)
            {
                continue;
            }
            s.host_reads += u128::from(t.cmds[crate::metrics::Kind::Read as usize]);
            s.host_writes += u128::from(t.cmds[crate::metrics::Kind::Write as usize]);
            // Data units are thousands of 512-byte units, rounded up (NVMe Base 2.0 Figure 207).
            s.data_units_read += u128::from(t.bytes_read.div_ceil(512_000));
            s.data_units_written += u128::from(t.bytes_written.div_ceil(512_000));
        }
        s
    }

    fn set_features(&mut self, sqe: &Sqe, _data: &[Bytes], discovery: bool) -> Outcome {
        let cid = sqe.cid;
        let Some(ctrl) = self.ctrl.clone() else {
            return fail(cid, Status::INTERNAL_ERROR);
        };
        if sqe.cdw10 & (1 << 31) != 0 {
            return fail(cid, Status::FEATURE_NOT_SAVEABLE.dnr());
        }
        match (sqe.cdw10 & 0xff) as u8 {
            fid::NUMBER_OF_QUEUES if !discovery => {
                let nsq = (sqe.cdw11 & 0xffff) + 1;
                let ncq = (sqe.cdw11 >> 16) + 1;
                if nsq == 0x1_0000 || ncq == 0x1_0000 {
                    return fail(cid, Status::INVALID_FIELD.dnr());
                }
                let max = u32::from(self.ctx.limits.max_io_queues);
                let granted = nsq.min(ncq).min(max);
                // Once queues exist the count cannot change (NVMe Base 2.0 §5.27.1.5); report what stands.
                let g = if ctrl.io_queue_count() > 0 {
                    ctrl.granted_io_queues.load(Ordering::Acquire)
                } else {
                    granted
                };
                ctrl.granted_io_queues.store(g, Ordering::Release);
                let mut c = Cqe::new(cid, Status::SUCCESS);
                c.dw0 = number_of_queues(g as u16, g as u16);
                Outcome::Complete(c)
            }
            fid::ASYNC_EVENT_CONFIG => {
                ctrl.aec.store(sqe.cdw11, Ordering::Relaxed);
                ok(cid)
            }
            fid::KEEP_ALIVE_TIMER => {
                ctrl.kato_ms.store(sqe.cdw11, Ordering::Relaxed);
                ok(cid)
            }
            fid::VOLATILE_WRITE_CACHE if !discovery => {
                if sqe.cdw11 & 1 == 0 {
                    // The cache cannot be turned off; writes become durable on Flush or FUA.
                    return fail(cid, Status::FEATURE_NOT_CHANGEABLE.dnr());
                }
                ok(cid)
            }
            fid::HOST_IDENTIFIER => fail(cid, Status::COMMAND_SEQUENCE_ERROR.dnr()),
            fid::RESERVATION_NOTIFICATION_MASK | fid::RESERVATION_PERSISTENCE if !discovery => {
                self.set_reservation_feature(sqe, &ctrl)
            }
            _ => fail(cid, Status::INVALID_FIELD.dnr()),
        }
    }

    fn get_features(&mut self, sqe: &Sqe, buffer_len: u32) -> Outcome {
        let cid = sqe.cid;
        let Some(ctrl) = self.ctrl.clone() else {
            return fail(cid, Status::INTERNAL_ERROR);
        };
        let mut c = Cqe::new(cid, Status::SUCCESS);
        match (sqe.cdw10 & 0xff) as u8 {
            fid::NUMBER_OF_QUEUES => {
                let g = ctrl.granted_io_queues.load(Ordering::Acquire).max(1) as u16;
                c.dw0 = number_of_queues(g, g);
            }
            fid::ASYNC_EVENT_CONFIG => c.dw0 = ctrl.aec.load(Ordering::Relaxed),
            fid::KEEP_ALIVE_TIMER => c.dw0 = ctrl.kato_ms.load(Ordering::Relaxed),
            fid::VOLATILE_WRITE_CACHE => c.dw0 = 1,
            fid::ARBITRATION
            | fid::POWER_MANAGEMENT
            | fid::ERROR_RECOVERY
            | fid::INTERRUPT_COALESCING
            | fid::WRITE_ATOMICITY => c.dw0 = 0,
            fid::TEMPERATURE_THRESHOLD => c.dw0 = 343,
            fid::HOST_IDENTIFIER => {
                // EXHID (CDW11 bit 0) selects the 128-bit identifier, the only one fabrics use.
                if sqe.cdw11 & 1 == 0 || buffer_len < 16 {
                    return fail(cid, Status::INVALID_FIELD.dnr());
                }
                return Outcome::Read(SharedData::One(Bytes::copy_from_slice(&ctrl.hostid)), c);
            }
            fid::RESERVATION_NOTIFICATION_MASK | fid::RESERVATION_PERSISTENCE => {
                return self.get_reservation_feature(sqe, &ctrl)
            }
            _ => return fail(cid, Status::INVALID_FIELD.dnr()),
        }
        Outcome::Complete(c)
    }

    fn async_event_request(&mut self, cid: u16) -> Outcome {
        let Role::Admin(a) = &mut self.role else {
            return fail(cid, Status::INVALID_OPCODE.dnr());
        };
        if let Some(dw0) = a.pending_aens.pop() {
            let mut c = Cqe::new(cid, Status::SUCCESS);
            c.dw0 = dw0;
            return Outcome::Complete(c);
        }
        if a.aers.len() > usize::from(AERL) {
            return fail(cid, Status::AER_LIMIT_EXCEEDED.dnr());
        }
        a.aers.push(cid);
        Outcome::Held
    }
}

fn identify_namespace(ns: &crate::registry::Namespace) -> IdentifyNamespace {
    let info = ns.backend.info();
    let lbads = info.block_size.trailing_zeros() as u8;
    let copy = crate::nvm::CopyLimits::for_block_size(info.block_size);
    IdentifyNamespace {
        nsze: info.num_blocks,
        ncap: info.num_blocks,
        nuse: info.num_blocks,
        nsfeat: 0,
        nlbaf: 0,
        flbas: 0,
        nmic: 1,
        rescap: nvmf_proto::resv::rescap::ALL_TYPES
            | nvmf_proto::resv::rescap::IEKEY13
            | if ns.resv.ptpl_capable() {
                nvmf_proto::resv::rescap::PTPL
            } else {
                0
            },
        dlfeat: if info.supports_discard {
            0x01 | 0x08
        } else {
            0
        },
        noiob: 0,
        nvmcap: u128::from(info.capacity_bytes()),
        mssrl: copy.mssrl,
        mcl: copy.mcl,
        msrc: copy.msrc,
        anagrpid: ns.config.ana_group,
        nguid: ns.nguid,
        eui64: ns.eui64,
        lbaf: vec![LbaFormat {
            ms: 0,
            lbads,
            rp: 0,
        }],
    }
}

fn command_effects() -> CommandEffectsLog {
    let mut l = CommandEffectsLog::default();
    for op in [
        admin_opcode::GET_LOG_PAGE,
        admin_opcode::IDENTIFY,
        admin_opcode::ABORT,
        admin_opcode::SET_FEATURES,
        admin_opcode::GET_FEATURES,
        admin_opcode::ASYNC_EVENT_REQUEST,
        admin_opcode::KEEP_ALIVE,
    ] {
        l.acs[usize::from(op)] = effects::CSUPP;
    }
    for op in [
        io_opcode::FLUSH,
        io_opcode::READ,
        io_opcode::COMPARE,
        nvmf_proto::resv::opcode::REGISTER,
        nvmf_proto::resv::opcode::REPORT,
        nvmf_proto::resv::opcode::ACQUIRE,
        nvmf_proto::resv::opcode::RELEASE,
        io_opcode::VERIFY,
    ] {
        l.iocs[usize::from(op)] = effects::CSUPP;
    }
    for op in [
        io_opcode::WRITE,
        io_opcode::WRITE_ZEROES,
        io_opcode::DATASET_MANAGEMENT,
        io_opcode::COPY,
    ] {
        l.iocs[usize::from(op)] = effects::CSUPP | effects::LBCC;
    }
    l
}
