//! One ublk queue: its own thread and io_uring, as the driver wants (the task
//! that fetched a tag must be the one that commits it). Every tag has a
//! FETCH_REQ or COMMIT_AND_FETCH_REQ outstanding while it waits for a request;
//! a request that arrives is decoded ([`super::map`]) and handed to the
//! [`BlockIo`] as a task on the tokio runtime, so the ring keeps turning while
//! up to `depth` requests are in flight. A finished task sends its result back
//! over a channel and rings the queue's eventfd, whose read sits in the same
//! ring; the thread then copies a read's data into the tag's buffer and commits.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use io_uring::{opcode, squeue, types, IoUring};

use super::map;
use super::uapi::{self, io_cmd, IoDesc, IO_DESC_LEN};
use crate::io::{BlockIo, BlockOp};

/// Wakes a queue thread from elsewhere: an eventfd the thread keeps a read on
/// in its ring, and a flag that asks it to end.
#[derive(Debug)]
pub struct Waker {
    efd: File,
    stop: AtomicBool,
}

impl Waker {
    /// A new eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd(2) takes no pointers; it returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd(2), is open, and nothing
        // else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            efd: File::from(owned),
            stop: AtomicBool::new(false),
        })
    }

    /// Rings the eventfd (adds 1 to its counter).
    pub fn wake(&self) {
        let _ = (&self.efd).write_all(&1u64.to_ne_bytes());
    }

    /// Asks the thread to end once no request of its is in flight.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }
}

/// A memory mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize, prot: i32, flags: i32, fd: RawFd, off: i64) -> io::Result<Self> {
        // SAFETY: a fresh mapping at an address the kernel chooses: it overlaps
        // no Rust object. `fd` is open (or -1 for an anonymous mapping).
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: p.cast(), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, unmapped
        // once; nothing refers to it after this thread's loop ended.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf takes no pointers.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096).max(4096)
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// What a queue thread needs.
pub struct Setup<B> {
    /// Queue ID.
    pub q_id: u16,
    /// Tags.
    pub depth: u16,
    /// Bytes of each tag's buffer (the device's max_io_buf_bytes).
    pub buf_bytes: usize,
    /// `/dev/ublkcN`, opened once for all queues (the driver allows one opener).
    pub cdev: Arc<File>,
    /// The namespace's operations.
    pub io: B,
    /// Logical block size.
    pub block_size: u32,
    /// The runtime the operations run on.
    pub handle: tokio::runtime::Handle,
    /// This queue's waker.
    pub waker: Arc<Waker>,
}

const EVENT: u64 = u64::MAX;

/// A finished request: tag, result to commit, a read's data.
type Done = (u16, i32, Vec<u8>);

/// Runs the queue until the driver aborts every tag (STOP_DEV) or the waker
/// asks it to stop with nothing in flight. Reports on `ready` once every tag
/// has its FETCH_REQ submitted (START_DEV waits for that). Returns the number of
/// requests served.
pub fn run<B: BlockIo>(s: Setup<B>, ready: mpsc::Sender<io::Result<()>>) -> io::Result<u64> {
    let depth = usize::from(s.depth);
    let page = page_size();
    let cdev_fd = s.cdev.as_raw_fd();
    // The descriptor array: the driver's, read-only to us, at the queue's offset
    // in the char device's mmap space (UBLKSRV_CMD_BUF_OFFSET + q_id * the size
    // of a UBLK_MAX_QUEUE_DEPTH array, page-rounded).
    let stride = round_up(uapi::MAX_QUEUE_DEPTH * IO_DESC_LEN, page);
    let setup = || -> io::Result<(Mapping, Mapping)> {
        let descs = Mapping::new(
            round_up(depth * IO_DESC_LEN, page),
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            cdev_fd,
            i64::from(s.q_id) * stride as i64,
        )?;
        // One buffer per tag, then a page for the eventfd's 8 bytes; all in one
        // mapping that outlives the ring (dropped after it).
        let bufs = Mapping::new(
            depth * s.buf_bytes + page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )?;
        Ok((descs, bufs))
    };
    let (descs, bufs) = match setup() {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(
                e.kind(),
                format!("queue {}: mmap: {e}", s.q_id),
            )));
            return Err(e);
        }
    };
    let buf_at = |tag: u16| -> *mut u8 {
        // SAFETY: tag < depth, so the offset stays inside the `bufs` mapping.
        unsafe { bufs.ptr.add(usize::from(tag) * s.buf_bytes) }
    };
    // SAFETY: the last page of the `bufs` mapping, past the tags' buffers.
    let event_buf = unsafe { bufs.ptr.add(depth * s.buf_bytes) };
    let entries = (u32::from(s.depth) + 1).next_power_of_two();
    let mut ring = match IoUring::new(entries) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(
                e.kind(),
                format!("queue {}: io_uring: {e}", s.q_id),
            )));
            return Err(e);
        }
    };
    let cmd_entry = |op: u32, tag: u16, result: i32| -> squeue::Entry {
        opcode::UringCmd16::new(types::Fd(cdev_fd), op)
            .cmd(uapi::io_cmd(s.q_id, tag, result, buf_at(tag) as u64))
            .build()
            .user_data(u64::from(tag))
    };
    let event_entry = || -> squeue::Entry {
        opcode::Read::new(types::Fd(s.waker.fd()), event_buf, 8)
            .build()
            .user_data(EVENT)
    };
    let push = |ring: &mut IoUring, e: &squeue::Entry| -> io::Result<()> {
        // SAFETY: the entries name `cdev_fd` (kept open by `s.cdev` until this
        // function returns, after the ring is dropped), the waker's eventfd
        // (likewise), and memory in `bufs`, which is dropped after the ring; so
        // nothing an entry points at goes away while the kernel may use it.
        unsafe { ring.submission().push(e) }.map_err(|_| io::Error::other("submission queue full"))
    };
    let mut first = || -> io::Result<()> {
        for tag in 0..s.depth {
            push(&mut ring, &cmd_entry(io_cmd::FETCH_REQ, tag, -1))?;
        }
        push(&mut ring, &event_entry())?;
        ring.submit()?;
        Ok(())
    };
    if let Err(e) = first() {
        let _ = ready.send(Err(io::Error::new(
            e.kind(),
            format!("queue {}: fetch: {e}", s.q_id),
        )));
        return Err(e);
    }
    let _ = ready.send(Ok(()));

    let (tx, rx) = mpsc::channel::<Done>();
    let (mut inflight, mut closed, mut served) = (0usize, 0usize, 0u64);
    let mut cqes = Vec::with_capacity(entries as usize * 2);
    let mut event_armed = true;
    loop {
        if closed >= depth || (s.waker.stop.load(Ordering::SeqCst) && inflight == 0) {
            break;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        cqes.clear();
        cqes.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &cqes {
            if ud == EVENT {
                event_armed = false;
                while let Ok((tag, result, data)) = rx.try_recv() {
                    inflight -= 1;
                    if !data.is_empty() {
                        let n = data.len().min(s.buf_bytes);
                        // SAFETY: the tag's buffer is ours until we commit it
                        // (the driver reads it only after COMMIT for a read);
                        // n <= buf_bytes, and `data` is a separate allocation.
                        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf_at(tag), n) };
                    }
                    push(
                        &mut ring,
                        &cmd_entry(io_cmd::COMMIT_AND_FETCH_REQ, tag, result),
                    )?;
                }
                continue;
            }
            let Ok(tag) = u16::try_from(ud) else { continue };
            if res < 0 {
                // UBLK_IO_RES_ABORT: the device is stopping; this tag is done.
                if res != uapi::IO_RES_ABORT {
                    tracing::warn!(
                        "ublk queue {} tag {tag}: {}",
                        s.q_id,
                        io::Error::from_raw_os_error(-res)
                    );
                }
                closed += 1;
                continue;
            }
            served += 1;
            // SAFETY: tag < depth so the 24 bytes are inside `descs`; the driver
            // wrote them before completing the fetch and leaves them alone until
            // we commit; a volatile read because the memory is shared with it.
            let raw: [u8; IO_DESC_LEN] = unsafe {
                std::ptr::read_volatile(
                    descs
                        .ptr
                        .add(usize::from(tag) * IO_DESC_LEN)
                        .cast::<[u8; IO_DESC_LEN]>(),
                )
            };
            let desc = IoDesc::from_bytes(&raw);
            let req = map::decode(&desc, s.block_size, s.buf_bytes, |n| {
                // SAFETY: the driver copied the write's data into the tag's
                // buffer before completing the fetch; n <= buf_bytes; the
                // buffer is not written until the tag is committed.
                Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(buf_at(tag), n) })
            });
            match req {
                Err(errno) => {
                    tracing::warn!(
                        "ublk queue {} tag {tag}: rejected {desc:?}: errno {}",
                        s.q_id,
                        -errno
                    );
                    push(
                        &mut ring,
                        &cmd_entry(io_cmd::COMMIT_AND_FETCH_REQ, tag, errno),
                    )?;
                }
                Ok(req) => {
                    inflight += 1;
                    let (io, tx, waker) = (s.io.clone(), tx.clone(), s.waker.clone());
                    let is_read = matches!(req.op, BlockOp::Read { .. });
                    let name = req.op.name();
                    s.handle.spawn(async move {
                        let (res, data) = match io.submit(req.op).await {
                            Ok(d) => (
                                map::result(is_read, req.bytes, Ok(d.len())),
                                if is_read { d } else { Vec::new() },
                            ),
                            Err(e) => {
                                tracing::warn!("ublk: {name} failed: {e}");
                                (map::result(is_read, req.bytes, Err(())), Vec::new())
                            }
                        };
                        let data = if res < 0 { Vec::new() } else { data };
                        let _ = tx.send((tag, res, data));
                        waker.wake();
                    });
                }
            }
        }
        if !event_armed {
            push(&mut ring, &event_entry())?;
            event_armed = true;
        }
    }
    drop(ring);
    drop(descs);
    drop(bufs);
    Ok(served)
}
