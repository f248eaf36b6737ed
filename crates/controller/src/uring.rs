//! Asynchronous file I/O for an I/O queue: one io_uring per queue task.
//!
//! File and block-device namespaces used to run every command on tokio's
//! blocking pool: one thread hand-off there and one back per command, and a
//! thread per outstanding command (on the 2-core bench machine, 29k IOPS at
//! 4 KiB against SPDK's AIO bdev's 243k on the same tmpfs file;
//! docs/performance.md). Here Read, Write and Flush to a namespace whose
//! backend lends its file ([`nvmf_backend::Backend::file_io`]) become io_uring
//! requests (IORING_OP_READ, IORING_OP_WRITEV with RWF_DSYNC for FUA,
//! IORING_OP_FSYNC with IORING_FSYNC_DATASYNC), queued while the task works
//! through a batch of capsules and submitted with one `io_uring_enter` per
//! pass. Completions come back on the same task: reaped right after the
//! submit (a page-cache hit completes inside it) and otherwise when the
//! ring's eventfd wakes the task.
//!
//! Every request owns what the kernel reads or writes (its buffer, the write's
//! payload and iovec array) in its slot until its completion is reaped, and a
//! ring with requests in flight waits for them before it is freed, so the
//! kernel never touches memory we have let go of. Commands the ring does not
//! take (other opcodes, several namespaces, a fused pair holding the
//! namespace) still go to the blocking pool.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use io_uring::{opcode, squeue, types, IoUring};
use nvmf_backend::{aligned::is_aligned, BackendError, FileIo, SharedData};
use nvmf_proto::sqe::io_opcode;
use nvmf_proto::{Sqe, Status};
use tokio::io::unix::AsyncFd;

use crate::bufpool::PoolBuf;
use crate::io::backend_status;
use crate::queue::Done;
use crate::registry::Namespace;
use crate::reservation::InflightGuard;
use crate::write_order::SharedHold;

/// Submission queue entries: deeper than any queue we grant (MQES), so a full
/// queue of commands fits.
const ENTRIES: u32 = 256;

/// A queue's ring: absent until its first file command, unavailable for good
/// if the kernel refuses io_uring (then the blocking pool serves, as before).
#[derive(Default)]
pub(crate) enum QueueRing {
    /// Not needed yet.
    #[default]
    Untried,
    /// In use.
    Ready(Box<Ring>),
    /// io_uring_setup failed (disabled by sysctl, seccomp, old kernel).
    Unavailable,
}

impl QueueRing {
    /// The ring, made on first use.
    pub(crate) fn get(&mut self) -> Option<&mut Ring> {
        if matches!(self, QueueRing::Untried) {
            *self = match Ring::new() {
                Ok(r) => QueueRing::Ready(Box::new(r)),
                Err(e) => {
                    tracing::info!(
                        "io_uring unavailable ({e}); file namespaces use the blocking thread pool"
                    );
                    QueueRing::Unavailable
                }
            };
        }
        match self {
            QueueRing::Ready(r) => Some(r),
            _ => None,
        }
    }

    /// The ring if it exists and has requests in flight.
    pub(crate) fn busy(&mut self) -> Option<&mut Ring> {
        match self {
            QueueRing::Ready(r) if r.inflight > 0 => Some(r),
            _ => None,
        }
    }

    /// Waits, without blocking the thread, until the kernel has finished every
    /// request in flight, and drops what they return (the queue has ended:
    /// nobody is left to answer). Called as a queue task ends, so that the
    /// ring's drop, which must wait for them, has nothing left to wait for:
    /// a slow device then holds up only this task, not the other queues on
    /// its thread.
    pub(crate) async fn drain(&mut self) {
        let mut out = Vec::new();
        while let Some(r) = self.busy() {
            r.pump(&mut out);
            out.clear();
            if r.inflight > 0 {
                r.completions().await;
            }
        }
    }

    /// The ring if it exists.
    pub(crate) fn ready_mut(&mut self) -> Option<&mut Ring> {
        match self {
            QueueRing::Ready(r) => Some(r),
            _ => None,
        }
    }
}

/// What a command holds while the kernel works on it.
pub(crate) struct Hold {
    pub sqe: Sqe,
    pub start: Instant,
    /// Keeps the backend, and so the file descriptor, open.
    pub _ns: Arc<Namespace>,
    pub _resv: Vec<InflightGuard>,
    pub _order: Option<SharedHold>,
}

enum Op {
    Read {
        buf: PoolBuf,
        done: usize,
    },
    Write {
        /// The payload the iovecs point into (kept alive until completion).
        _data: Vec<Bytes>,
        /// The payload copied to an aligned buffer, for O_DIRECT.
        _bounce: Option<PoolBuf>,
        iov: Vec<IoVec>,
        total: usize,
        done: usize,
        /// Bytes already cut from the front of `iov`.
        trimmed: usize,
        dsync: bool,
    },
    Flush,
}

struct Slot {
    hold: Hold,
    fd: FileIo,
    offset: u64,
    op: Op,
}

/// One queue's io_uring, its eventfd, and the requests in flight.
pub(crate) struct Ring {
    ring: IoUring,
    event: AsyncFd<OwnedFd>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    inflight: usize,
    /// Entries pushed and not yet submitted.
    queued: usize,
    /// Completions being handled (kept to reuse its memory).
    cqes: Vec<(u64, i32)>,
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Write,
    Flush,
}

impl Kind {
    /// The request an NVM opcode becomes, if the ring runs it.
    pub(crate) fn of(opcode: u8) -> Option<Kind> {
        match opcode {
            io_opcode::READ => Some(Kind::Read),
            io_opcode::WRITE => Some(Kind::Write),
            io_opcode::FLUSH => Some(Kind::Flush),
            _ => None,
        }
    }
}

impl Ring {
    fn new() -> std::io::Result<Self> {
        let ring = IoUring::builder().setup_clamp().build(ENTRIES)?;
        let efd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
        )?;
        ring.submitter().register_eventfd(efd.as_raw_fd())?;
        Ok(Self {
            ring,
            event: watch(efd)?,
            slots: Vec::new(),
            free: Vec::new(),
            inflight: 0,
            queued: 0,
            cqes: Vec::new(),
        })
    }

    /// Whether another request fits (else the blocking pool takes it).
    pub(crate) fn has_room(&self) -> bool {
        self.inflight < ENTRIES as usize
    }

    /// Queues a read, write or flush of the namespace `hold` keeps (when
    /// [`Ring::has_room`]). The caller has checked the LBA range and lengths;
    /// `offset` is in bytes.
    pub(crate) fn start(
        &mut self,
        kind: Kind,
        fd: FileIo,
        offset: u64,
        len: usize,
        hold: Hold,
        data: Vec<Bytes>,
    ) {
        let op = match kind {
            Kind::Read => Op::Read {
                buf: PoolBuf::take(len),
                done: 0,
            },
            Kind::Write => {
                let aligned = data
                    .iter()
                    .all(|d| is_aligned(d) && d.len() % nvmf_backend::DIRECT_IO_ALIGN == 0);
                let (bounce, iov) = if fd.direct && !aligned {
                    let mut b = PoolBuf::take(len);
                    let mut at = 0;
                    for d in &data {
                        b.as_mut_slice()[at..at + d.len()].copy_from_slice(d);
                        at += d.len();
                    }
                    let iov = vec![iovec(b.as_ref())];
                    (Some(b), iov)
                } else {
                    let iov = data
                        .iter()
                        .filter(|d| !d.is_empty())
                        .map(|d| iovec(d))
                        .collect();
                    (None, iov)
                };
                Op::Write {
                    _data: data,
                    _bounce: bounce,
                    iov,
                    total: len,
                    done: 0,
                    trimmed: 0,
                    dsync: hold.sqe.fua(),
                }
            }
            Kind::Flush => Op::Flush,
        };
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[idx as usize] = Some(Slot {
            hold,
            fd,
            offset,
            op,
        });
        self.inflight += 1;
        self.push(idx);
    }

    /// Pushes the request for slot `idx` (its next part, after a short read
    /// or write), submitting first if the submission queue is full.
    fn push(&mut self, idx: u32) {
        let s = self.slots[idx as usize].as_mut().expect("live slot");
        let fd = types::Fd(s.fd.fd);
        let entry = match &mut s.op {
            Op::Read { buf, done } => {
                let rest = &mut buf.as_mut_slice()[*done..];
                opcode::Read::new(fd, rest.as_mut_ptr(), rest.len() as u32)
                    .offset(s.offset + *done as u64)
                    .build()
            }
            Op::Write {
                iov,
                done,
                trimmed,
                dsync,
                ..
            } => {
                advance(iov, *done - *trimmed);
                *trimmed = *done;
                let mut w = opcode::Writev::new(fd, iov.as_ptr().cast(), iov.len() as u32)
                    .offset(s.offset + *done as u64);
                if *dsync {
                    w = w.rw_flags(libc::RWF_DSYNC);
                }
                w.build()
            }
            Op::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        }
        .user_data(u64::from(idx));
        self.push_entry(&entry);
    }

    #[allow(unsafe_code)]
    fn push_entry(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: the entry points only at memory its slot owns (the read
            // buffer, or the write's iovec array and the payload it points
            // into, all on the heap), and the slot stays in `self.slots`
            // untouched until this request's completion is reaped; a ring
            // with requests in flight waits for them before it is dropped.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                self.queued += 1;
                return;
            }
            // Full: hand the queued entries to the kernel and try again.
            if let Err(e) = self.ring.submit() {
                tracing::warn!("io_uring_enter: {e}");
            }
            self.queued = 0;
        }
    }

    /// Submits what is queued and returns the commands that have finished.
    pub(crate) fn pump(&mut self, out: &mut Vec<Done>) {
        loop {
            if self.queued > 0 {
                match self.ring.submit() {
                    Ok(_) => self.queued = 0,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) => tracing::warn!("io_uring_enter: {e}"),
                }
            }
            let mut again = false;
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            for &(idx, res) in &cqes {
                if let Some(d) = self.complete(idx as u32, res) {
                    out.push(d);
                } else {
                    again = true;
                }
            }
            cqes.clear();
            self.cqes = cqes;
            if !again {
                return;
            }
        }
    }

    /// Handles one completion: the finished command, or `None` if its next
    /// part was queued (a short read or write).
    fn complete(&mut self, idx: u32, res: i32) -> Option<Done> {
        let s = self.slots.get_mut(idx as usize)?.as_mut()?;
        let err = |e: i32, write| {
            let e = BackendError::Io {
                context: "io_uring",
                error: std::io::Error::from_raw_os_error(-e),
            };
            backend_status(&e, write)
        };
        let result = match &mut s.op {
            Op::Read { buf, done } => {
                if res < 0 {
                    Err(err(res, false))
                } else if res == 0 {
                    // End of file: past the data, the namespace reads as
                    // unwritten (as FileBackend::read_at does).
                    buf.as_mut_slice()[*done..].fill(0);
                    Ok(())
                } else {
                    *done += res as usize;
                    if *done < buf.as_ref().len() {
                        self.push(idx);
                        return None;
                    }
                    Ok(())
                }
            }
            Op::Write { total, done, .. } => {
                if res < 0 {
                    Err(err(res, true))
                } else if res == 0 {
                    Err(Status::WRITE_FAULT)
                } else {
                    *done += res as usize;
                    if *done < *total {
                        self.push(idx);
                        return None;
                    }
                    Ok(())
                }
            }
            Op::Flush => {
                if res < 0 {
                    Err(err(res, true))
                } else {
                    Ok(())
                }
            }
        };
        let s = self.slots[idx as usize].take().expect("live slot");
        self.free.push(idx);
        self.inflight -= 1;
        let Hold { sqe, start, .. } = s.hold;
        let result = result.map(|()| match s.op {
            Op::Read { buf, .. } => Some(SharedData::One(buf.freeze())),
            _ => None,
        });
        Some(Done {
            cid: sqe.cid,
            result,
            sqe,
            start,
        })
    }

    /// Waits until a completion has been posted (the caller then reaps with
    /// [`Ring::pump`]). Each poll first looks at the completion queue itself,
    /// so a queue task that is busy-polling its socket (which re-polls every
    /// branch of its select between looks) sees a completion as soon as the
    /// kernel posts it, without waiting for the reactor to report the
    /// eventfd; otherwise it sleeps until the eventfd is signalled.
    pub(crate) async fn completions(&mut self) {
        std::future::poll_fn(|cx| {
            if !self.ring.completion().is_empty() {
                return std::task::Poll::Ready(());
            }
            match self.event.poll_read_ready(cx) {
                std::task::Poll::Ready(Ok(mut g)) => {
                    let mut b = [0u8; 8];
                    let _ = rustix::io::read(self.event.get_ref().as_fd(), &mut b);
                    g.clear_ready();
                    std::task::Poll::Ready(())
                }
                std::task::Poll::Ready(Err(_)) => std::task::Poll::Pending,
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
        .await
    }
}

impl Drop for Ring {
    /// Waits for the requests in flight: their buffers must outlive them. A
    /// queue task drains its ring asynchronously before it ends
    /// ([`QueueRing::drain`]), so this blocks only when the task itself is
    /// dropped mid-way (the runtime shutting down).
    fn drop(&mut self) {
        while self.inflight > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    // The kernel will not give them back: leak the buffers
                    // rather than free memory it may still write.
                    tracing::error!("io_uring: waiting for {} requests: {e}", self.inflight);
                    std::mem::forget(std::mem::take(&mut self.slots));
                    return;
                }
            }
            let done: Vec<u64> = self.ring.completion().map(|c| c.user_data()).collect();
            for idx in done {
                if let Some(Some(_)) = self.slots.get_mut(idx as usize).map(Option::take) {
                    self.inflight -= 1;
                }
            }
        }
    }
}

/// Registers the eventfd with the reactor.
#[allow(unsafe_code)]
fn watch(efd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, which keeps the descriptor open
    // and returns the same one from as_raw_fd until the AsyncFd drops it.
    Ok(unsafe { AsyncFd::register_with_interest(efd, tokio::io::Interest::READABLE) }?)
}

/// One `struct iovec`, held as plain numbers so that a request (and the task
/// that owns it) stays `Send`; the kernel is handed a pointer to an array of
/// these as `*const libc::iovec`, which has the same layout.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct IoVec {
    base: usize,
    len: usize,
}

const _: () = assert!(
    std::mem::size_of::<IoVec>() == std::mem::size_of::<libc::iovec>()
        && std::mem::align_of::<IoVec>() == std::mem::align_of::<libc::iovec>()
);

fn iovec(b: &[u8]) -> IoVec {
    IoVec {
        base: b.as_ptr() as usize,
        len: b.len(),
    }
}

/// Drops the first `n` bytes from an iovec array (after a short write).
fn advance(iov: &mut Vec<IoVec>, mut n: usize) {
    if n == 0 {
        return;
    }
    let mut skip = 0;
    for v in iov.iter_mut() {
        if n >= v.len {
            n -= v.len;
            skip += 1;
        } else {
            v.base += n;
            v.len -= n;
            break;
        }
    }
    iov.drain(..skip);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendSpec, NamespaceConfig};
    use nvmf_backend::DirectIo;

    fn namespace(path: &std::path::Path, direct: DirectIo) -> Arc<Namespace> {
        let cfg = NamespaceConfig {
            nsid: 1,
            backend: BackendSpec::File {
                path: path.to_owned(),
                size: Some(1 << 20),
            },
            block_size: 4096,
            direct,
            uuid: None,
            ana_group: 1,
        };
        Arc::new(Namespace::open("nqn.test", &cfg).unwrap())
    }

    fn hold(ns: &Arc<Namespace>, opcode: u8, cid: u16, fua: bool) -> Hold {
        let mut sqe = Sqe::rw(opcode, 1, 0, 1, fua);
        sqe.cid = cid;
        Hold {
            sqe,
            start: Instant::now(),
            _ns: ns.clone(),
            _resv: Vec::new(),
            _order: None,
        }
    }

    /// Runs the ring until `n` commands have finished.
    async fn finish(ring: &mut Ring, n: usize) -> Vec<Done> {
        let mut out = Vec::new();
        loop {
            ring.pump(&mut out);
            if out.len() >= n {
                return out;
            }
            tokio::time::timeout(std::time::Duration::from_secs(10), ring.completions())
                .await
                .expect("a completion within 10 s");
        }
    }

    #[tokio::test]
    async fn unaligned_payloads_write_through_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        for direct in [DirectIo::Auto, DirectIo::Off] {
            let path = dir.path().join(format!("{direct:?}.img"));
            let ns = namespace(&path, direct);
            let fd = ns.backend.file_io().expect("a file backend lends its file");
            let mut ring = Ring::new().unwrap();
            // 12 KiB in three parts, none page-aligned: an O_DIRECT file
            // gets them bounced, a buffered one as iovecs.
            let whole: Vec<u8> = (0..12288 + 1).map(|i| (i * 13 % 251) as u8).collect();
            let whole = Bytes::from(whole).slice(1..);
            let parts = vec![
                whole.slice(..100),
                whole.slice(100..5000),
                whole.slice(5000..),
            ];
            ring.start(
                Kind::Write,
                fd,
                8192,
                12288,
                hold(&ns, io_opcode::WRITE, 1, true),
                parts,
            );
            ring.start(
                Kind::Flush,
                fd,
                0,
                0,
                hold(&ns, io_opcode::FLUSH, 2, false),
                vec![],
            );
            let done = finish(&mut ring, 2).await;
            assert!(
                done.iter().all(|d| d.result.is_ok()),
                "{direct:?}: {done:?}"
            );
            ring.start(
                Kind::Read,
                fd,
                8192,
                12288,
                hold(&ns, io_opcode::READ, 3, false),
                vec![],
            );
            let mut done = finish(&mut ring, 1).await;
            let Ok(Some(SharedData::One(got))) = done.remove(0).result else {
                panic!("{direct:?}: read failed");
            };
            assert!(got == whole, "{direct:?}: read back differs");
            assert_eq!(std::fs::read(&path).unwrap()[8192..8192 + 12288], whole[..]);
            assert_eq!(ring.inflight, 0);
        }
    }

    #[tokio::test]
    async fn past_the_end_of_a_shortened_file_reads_zeroes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.img");
        let ns = namespace(&path, DirectIo::Off);
        std::fs::write(&path, vec![0xAB; 4096]).unwrap(); // shortened behind our back
        let fd = ns.backend.file_io().unwrap();
        let mut ring = Ring::new().unwrap();
        ring.start(
            Kind::Read,
            fd,
            0,
            16384,
            hold(&ns, io_opcode::READ, 9, false),
            vec![],
        );
        let mut done = finish(&mut ring, 1).await;
        let d = done.remove(0);
        assert_eq!(d.cid, 9);
        let Ok(Some(SharedData::One(got))) = d.result else {
            panic!("read failed: {:?}", d.result);
        };
        assert!(got[..4096].iter().all(|&b| b == 0xAB));
        assert!(got[4096..].iter().all(|&b| b == 0));
    }

    #[tokio::test]
    async fn errors_come_back_as_nvme_statuses() {
        let dir = tempfile::tempdir().unwrap();
        let ns = namespace(&dir.path().join("e.img"), DirectIo::Off);
        let mut ring = Ring::new().unwrap();
        // A descriptor that is not open: EBADF, an internal error.
        let bad = FileIo {
            fd: 1 << 20,
            direct: false,
        };
        ring.start(
            Kind::Read,
            bad,
            0,
            4096,
            hold(&ns, io_opcode::READ, 4, false),
            vec![],
        );
        let done = finish(&mut ring, 1).await;
        assert_eq!(
            done[0].result.as_ref().unwrap_err(),
            &Status::INTERNAL_ERROR
        );
    }

    #[tokio::test]
    async fn a_ring_dropped_with_requests_in_flight_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let ns = namespace(&dir.path().join("d.img"), DirectIo::Auto);
        let fd = ns.backend.file_io().unwrap();
        let mut ring = Ring::new().unwrap();
        for cid in 0..64 {
            ring.start(
                Kind::Read,
                fd,
                0,
                65536,
                hold(&ns, io_opcode::READ, cid, false),
                vec![],
            );
        }
        let mut out = Vec::new();
        ring.pump(&mut out); // submitted; some may still be in the kernel
        let left = ring.inflight;
        drop(ring);
        assert!(out.len() + left == 64);
    }

    /// A ring with one read of pipe `rx` in the kernel: with nothing
    /// written to the pipe, it stays there, the stand-in for a device that
    /// does not answer. `rx` must outlive the request.
    fn stalled_read(ns: &Arc<Namespace>, rx: &OwnedFd) -> QueueRing {
        let mut q = QueueRing::default();
        let ring = q.get().unwrap();
        let fd = FileIo {
            fd: rx.as_raw_fd(),
            direct: false,
        };
        ring.start(
            Kind::Read,
            fd,
            0,
            4096,
            hold(ns, io_opcode::READ, 7, false),
            vec![],
        );
        let mut out = Vec::new();
        ring.pump(&mut out);
        assert!(out.is_empty(), "a read of an empty pipe cannot finish");
        q
    }

    #[test]
    fn draining_a_ring_leaves_its_thread_free_for_other_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let ns = namespace(&dir.path().join("d.img"), DirectIo::Off);
        let (rx, tx) = rustix::pipe::pipe().unwrap();
        let (ticked_tx, ticked) = std::sync::mpsc::channel();
        // One single-threaded runtime: the draining task and a task that
        // counts ticks share its thread.
        let worker = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut q = stalled_read(&ns, &rx);
                let drained = tokio::spawn(async move {
                    q.drain().await;
                    drop(rx);
                    q
                });
                for _ in 0..20 {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                ticked_tx.send(drained.is_finished()).unwrap();
                let mut q = drained.await.unwrap();
                q.busy().is_none()
            })
        });
        // A drain that blocked the thread until the device answered (as the
        // ring's drop does) would stop the ticks.
        let ticks = ticked.recv_timeout(std::time::Duration::from_secs(5));
        // Now the "device" answers, either way, so the thread can end.
        rustix::io::write(&tx, &[0x5a; 4096]).unwrap();
        let idle = worker.join().unwrap();
        assert_eq!(
            ticks,
            Ok(false),
            "another task on the thread ran while the read was in the kernel"
        );
        assert!(idle, "the ring has nothing in flight once drained");
    }
}
