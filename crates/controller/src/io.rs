//! NVM command set I/O commands (NVM Command Set Specification 1.0 §3) and the
//! Fabrics commands allowed on an I/O queue.

use nvmf_transport::ControllerQueuePair;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use nvmf_backend::{BackendError, SharedData};
use nvmf_proto::fabrics::fctype;
use nvmf_proto::sqe::{admin_opcode, io_opcode};
use nvmf_proto::{Cqe, Sqe, Status};

use crate::bufpool::PoolBuf;
use crate::queue::{Done, Outcome, QueueTask};
use crate::registry::Namespace;
use crate::reservation::InflightGuard;
use crate::uring::{Hold, Kind};

/// Maps a backend failure to the NVMe status a host understands.
pub fn backend_status(e: &BackendError, write: bool) -> Status {
    match e {
        BackendError::OutOfRange { .. } => Status::LBA_OUT_OF_RANGE.dnr(),
        BackendError::Misaligned { .. } => Status::INVALID_FIELD.dnr(),
        BackendError::Unsupported(_) => Status::INVALID_OPCODE.dnr(),
        _ if e.is_media_error() => {
            if write {
                Status::WRITE_FAULT
            } else {
                Status::UNRECOVERED_READ_ERROR
            }
        }
        _ => Status::INTERNAL_ERROR,
    }
}

/// Checks an LBA range against the namespace and returns (byte offset, byte length).
pub(crate) fn lba_range(ns: &Namespace, slba: u64, nlb: u64) -> Result<(u64, u64), Status> {
    let info = ns.backend.info();
    let end = slba
        .checked_add(nlb)
        .ok_or(Status::LBA_OUT_OF_RANGE.dnr())?;
    if end > info.num_blocks {
        return Err(Status::LBA_OUT_OF_RANGE.dnr());
    }
    let bs = u64::from(info.block_size);
    Ok((slba * bs, nlb * bs))
}

/// Checks a Read's, Write's or Compare's LBA range and that the data the host
/// gave (or the buffer it offers) is exactly that long; returns (byte offset,
/// byte length).
fn transfer_range(ns: &Namespace, sqe: &Sqe, given: u64) -> Result<(u64, u64), Status> {
    let (off, len) = lba_range(ns, sqe.slba(), u64::from(sqe.nlb()))?;
    if given != len {
        return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
    }
    Ok((off, len))
}

/// Bytes of a command's write data.
fn data_len(data: &[Bytes]) -> u64 {
    data.iter().map(|b| b.len() as u64).sum()
}

/// Runs one I/O command against a namespace; returns read data for reads. Runs on
/// the queue's task for memory namespaces and on the blocking pool for the others.
/// Commands that write hold the namespace's `write_order` lock shared, so a fused
/// Compare and Write (which holds it exclusively) is atomic against them.
pub fn run_io(
    ns: &Namespace,
    sqe: &Sqe,
    data: &[Bytes],
    buffer_len: u32,
) -> Result<Option<SharedData>, Status> {
    match sqe.opcode {
        io_opcode::WRITE
        | io_opcode::WRITE_ZEROES
        | io_opcode::DATASET_MANAGEMENT
        | io_opcode::COPY => {
            let _shared = ns.write_order.shared();
            run_io_locked(ns, sqe, data, buffer_len)
        }
        _ => run_io_locked(ns, sqe, data, buffer_len),
    }
}

/// [`run_io`] for a caller that already holds the namespace's `write_order`
/// lock (a fused pair holds it exclusively).
pub(crate) fn run_io_locked(
    ns: &Namespace,
    sqe: &Sqe,
    data: &[Bytes],
    buffer_len: u32,
) -> Result<Option<SharedData>, Status> {
    let be = &ns.backend;
    match sqe.opcode {
        io_opcode::READ => {
            let (off, len) = transfer_range(ns, sqe, u64::from(buffer_len))?;
            // Memory namespaces lend their pages (no copy); the others read
            // into a reused buffer, which read_at overwrites all of or fails.
            let d = match be
                .read_shared(off, len)
                .map_err(|e| backend_status(&e, false))?
            {
                Some(d) => d,
                None => {
                    let mut buf = PoolBuf::take(len as usize);
                    be.read_at(off, buf.as_mut_slice())
                        .map_err(|e| backend_status(&e, false))?;
                    SharedData::One(buf.freeze())
                }
            };
            Ok(Some(d))
        }
        io_opcode::WRITE => {
            let (off, _) = transfer_range(ns, sqe, data_len(data))?;
            let parts: Vec<&[u8]> = data.iter().map(|b| b.as_ref()).collect();
            be.write_at(off, &parts, sqe.fua())
                .map_err(|e| backend_status(&e, true))?;
            Ok(None)
        }
        io_opcode::FLUSH => {
            be.flush().map_err(|e| backend_status(&e, true))?;
            Ok(None)
        }
        io_opcode::WRITE_ZEROES => {
            let (off, len) = lba_range(ns, sqe.slba(), u64::from(sqe.nlb()))?;
            let deac = sqe.cdw12 & (1 << 25) != 0;
            if deac && be.info().supports_discard {
                be.discard(off, len).map_err(|e| backend_status(&e, true))?;
            } else {
                be.write_zeroes(off, len)
                    .map_err(|e| backend_status(&e, true))?;
            }
            if sqe.fua() {
                be.flush().map_err(|e| backend_status(&e, true))?;
            }
            Ok(None)
        }
        io_opcode::DATASET_MANAGEMENT => {
            let nr = (sqe.cdw10 & 0xff) as usize + 1;
            let raw: Vec<u8> = data.iter().flat_map(|b| b.iter().copied()).collect();
            let list = nvmf_proto::sqe::DsmRange::decode_list(&raw, nr)
                .ok_or(Status::DATA_SGL_LENGTH_INVALID.dnr())?;
            if sqe.cdw11 & nvmf_proto::sqe::dsm_attr::AD == 0 {
                return Ok(None);
            }
            let mut ranges = Vec::with_capacity(nr);
            for r in &list {
                ranges.push(lba_range(ns, r.slba, u64::from(r.nlb))?);
            }
            if be.info().supports_discard {
                for (off, len) in ranges.into_iter().filter(|r| r.1 > 0) {
                    be.discard(off, len).map_err(|e| backend_status(&e, true))?;
                }
            }
            Ok(None)
        }
        io_opcode::COMPARE => {
            let (off, len) = transfer_range(ns, sqe, data_len(data))?;
            let got: Vec<u8> = data.iter().flat_map(|b| b.iter().copied()).collect();
            let mut buf = PoolBuf::take(len as usize);
            be.read_at(off, buf.as_mut_slice())
                .map_err(|e| backend_status(&e, false))?;
            if buf.as_ref() != got.as_slice() {
                return Err(Status::COMPARE_FAILURE);
            }
            Ok(None)
        }
        io_opcode::VERIFY => crate::nvm::verify(ns, sqe).map(|()| None),
        io_opcode::COPY => {
            crate::nvm::copy(ns, sqe, data)?;
            Ok(None)
        }
        _ => Err(Status::INVALID_OPCODE.dnr()),
    }
}

impl<C: ControllerQueuePair> QueueTask<C> {
    pub(crate) fn io_command(&mut self, sqe: &Sqe, data: &[Bytes], buffer_len: u32) -> Outcome {
        let cid = sqe.cid;
        if sqe.opcode == admin_opcode::FABRICS {
            return match sqe.fctype() {
                fctype::DISCONNECT => {
                    self.close_after_flush = true;
                    Outcome::Complete(Cqe::new(cid, Status::SUCCESS))
                }
                fctype::AUTH_SEND => self.auth_command(sqe, data, buffer_len, true),
                fctype::AUTH_RECV => self.auth_command(sqe, data, buffer_len, false),
                _ => Outcome::Complete(Cqe::new(cid, Status::COMMAND_SEQUENCE_ERROR.dnr())),
            };
        }
        if let Some(c) = &self.ctrl {
            if !c.ready.load(Ordering::Relaxed) {
                return Outcome::Complete(Cqe::new(cid, Status::COMMAND_SEQUENCE_ERROR));
            }
        }
        self.refresh_ns();
        if sqe.opcode == io_opcode::FLUSH && sqe.nsid == u32::MAX {
            // Flush of all namespaces (NVM Command Set 1.0 §3.2.2).
            let all: Vec<Arc<Namespace>> = self.ns.values().cloned().collect();
            if let Some(st) = all.iter().find_map(|n| self.ana_status(n)) {
                return Outcome::Complete(Cqe::new(cid, st));
            }
            return self.dispatch(sqe, Vec::new(), 0, all);
        }
        let Some(ns) = self.ns.get(&sqe.nsid).cloned() else {
            return Outcome::Complete(Cqe::new(cid, Status::INVALID_NS.dnr()));
        };
        if let Some(st) = self.ana_status(&ns) {
            return Outcome::Complete(Cqe::new(cid, st));
        }
        if nvmf_proto::resv::is_reservation_opcode(sqe.opcode) {
            return self.reservation_command(ns, sqe, data, buffer_len);
        }
        self.dispatch(sqe, data.to_vec(), buffer_len, vec![ns])
    }

    /// The path-related status of I/O to `ns` on this controller's port, if its
    /// ANA group is not accessible there (crate::ana).
    fn ana_status(&self, ns: &Namespace) -> Option<Status> {
        let c = self.ctrl.as_ref()?;
        self.ctx.registry.ana.io_status(c.ana.port(), ns)
    }

    /// Starts a Read, Write or Flush of one file or block-device namespace
    /// on the queue's io_uring (crate::uring); gives the payload and guards
    /// back when the ring does not take it, for the blocking pool.
    #[allow(clippy::type_complexity)]
    fn try_ring(
        &mut self,
        sqe: &Sqe,
        data: Vec<Bytes>,
        buffer_len: u32,
        nss: &[Arc<Namespace>],
        resv: Vec<InflightGuard>,
    ) -> Result<Outcome, (Vec<Bytes>, Vec<InflightGuard>)> {
        let ([ns], Some(kind)) = (nss, Kind::of(sqe.opcode)) else {
            return Err((data, resv));
        };
        let Some(fd) = ns.backend.file_io() else {
            return Err((data, resv));
        };
        let cid = sqe.cid;
        let (offset, len) = if kind == Kind::Flush {
            (0, 0)
        } else {
            let given = if kind == Kind::Read {
                u64::from(buffer_len)
            } else {
                data_len(&data)
            };
            match transfer_range(ns, sqe, given) {
                Ok((off, len)) => (off, len as usize),
                Err(st) => return Ok(Outcome::Complete(Cqe::new(cid, st))),
            }
        };
        // A write shares the namespace's write order (a fused pair waits for
        // it); while a pair holds or waits for it, the pool's thread waits.
        let Some(ring) = self.uring.get().filter(|r| r.has_room()) else {
            return Err((data, resv));
        };
        let order = if kind == Kind::Write {
            match ns.write_order.try_shared() {
                Some(h) => Some(h),
                None => return Err((data, resv)),
            }
        } else {
            None
        };
        let hold = Hold {
            sqe: *sqe,
            start: self.cmd_start,
            _ns: ns.clone(),
            _resv: resv,
            _order: order,
        };
        ring.start(kind, fd, offset, len, hold, data);
        Ok(Outcome::Async)
    }

    fn dispatch(
        &mut self,
        sqe: &Sqe,
        data: Vec<Bytes>,
        buffer_len: u32,
        nss: Vec<Arc<Namespace>>,
    ) -> Outcome {
        let cid = sqe.cid;
        // Reservation access rules (NVMe Base 2.0 §8.19), and the count of
        // running commands that Preempt and Abort waits for.
        let hostid = self.ctrl.as_ref().map_or([0; 16], |c| c.hostid);
        let mut guards = Vec::new();
        for ns in &nss {
            // Counted before the check, so a Preempt and Abort either waits
            // for this command or this command sees the new reservation.
            guards.extend(ns.resv.enter());
            if let Err(st) = ns.resv.check(&hostid, sqe.opcode) {
                return Outcome::Complete(Cqe::new(cid, st));
            }
        }
        let blocking = nss.iter().any(|n| n.backend.info().may_block);
        if !blocking {
            let mut out = Ok(None);
            for ns in &nss {
                out = run_io(ns, sqe, &data, buffer_len);
                if out.is_err() {
                    break;
                }
            }
            return match out {
                Ok(Some(d)) => Outcome::Read(d, Cqe::new(cid, Status::SUCCESS)),
                Ok(None) => Outcome::Complete(Cqe::new(cid, Status::SUCCESS)),
                Err(st) => Outcome::Complete(Cqe::new(cid, st)),
            };
        }
        let (data, guards) = match self.try_ring(sqe, data, buffer_len, &nss, guards) {
            Ok(outcome) => return outcome,
            Err(back) => back,
        };
        let tx = self.done_tx.clone();
        let sqe = *sqe;
        // Until a blocking-pool thread takes it, an Abort may still cancel it.
        let start = crate::abort::PoolStart::new();
        let arrived = self.cmd_start;
        self.pool_queued.insert(cid, start.clone());
        tokio::task::spawn_blocking(move || {
            let mut out = Ok(None);
            let nss = if start.begin() {
                &nss[..]
            } else {
                out = Err(Status::ABORT_REQUESTED);
                &[]
            };
            for ns in nss {
                out = run_io(ns, &sqe, &data, buffer_len);
                if out.is_err() {
                    break;
                }
            }
            drop(guards);
            let _ = tx.send(Done {
                cid,
                result: out,
                sqe,
                start: arrived,
            });
        });
        Outcome::Async
    }
}
