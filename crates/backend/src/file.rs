//! Regular-file backend, plus the positional-I/O core shared with the block
//! device backend.
//!
//! All data transfers use `pread`/`pwrite`/`pwritev`/`pwritev2` with explicit
//! offsets, so there is no shared file cursor and no lock: concurrent
//! requests go straight to the kernel. With `O_DIRECT`, caller buffers that
//! are not [`crate::DIRECT_IO_ALIGN`]-aligned are bounced through a per-thread
//! aligned scratch buffer.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FallocateFlags, OFlags};
use rustix::io::{Errno, ReadWriteFlags};

use crate::aligned::{is_aligned, with_scratch, BOUNCE_MAX};
use crate::{check_access, check_block_size, Backend, BackendError, BackendInfo, Result};

/// Whether a file or block device is accessed with `O_DIRECT` (bypassing the
/// page cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum DirectIo {
    /// Use `O_DIRECT` if the filesystem supports it for this block size,
    /// otherwise fall back to buffered I/O (e.g. on ramfs, or older tmpfs).
    #[default]
    Auto,
    /// Require `O_DIRECT`; opening fails if it cannot be used.
    On,
    /// Always use buffered I/O through the page cache.
    Off,
}

/// Maximum number of iovecs per `pwritev` call (Linux `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// `true` for errors that mean "this kind of operation is not implemented
/// here" (as opposed to a genuine I/O failure).
pub(crate) fn is_unsupported(e: Errno) -> bool {
    e == Errno::OPNOTSUPP || e == Errno::NOSYS || e == Errno::NOTTY
}

/// An open file or device with the positional read/write logic shared by
/// [`FileBackend`] and [`crate::BlockDevBackend`].
#[derive(Debug)]
pub(crate) struct RawFile {
    file: File,
    direct: bool,
    /// `pwritev2(RWF_DSYNC)` was rejected: emulate FUA with `fdatasync`.
    no_dsync: AtomicBool,
}

impl RawFile {
    /// Open `path` read-write, with `O_DIRECT` according to `mode` (falling
    /// back to buffered on `EINVAL` in [`DirectIo::Auto`]). `extra_flags` are
    /// OR-ed into the open flags.
    pub(crate) fn open(
        path: &Path,
        create: bool,
        extra_flags: i32,
        mode: DirectIo,
    ) -> Result<Self> {
        let open = |direct: bool| {
            let mut flags = extra_flags | libc::O_CLOEXEC;
            if direct {
                flags |= libc::O_DIRECT;
            }
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .custom_flags(flags)
                .open(path)
        };
        let (file, direct) = match mode {
            DirectIo::Off => (open(false), false),
            DirectIo::On => (open(true), true),
            DirectIo::Auto => match open(true) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::info!(
                        path = %path.display(),
                        "O_DIRECT refused by filesystem, using buffered I/O"
                    );
                    (open(false), false)
                }
                other => (other, true),
            },
        };
        let file = file.map_err(|e| BackendError::io("open", e))?;
        Ok(RawFile {
            file,
            direct,
            no_dsync: AtomicBool::new(false),
        })
    }

    /// Whether the descriptor uses `O_DIRECT`.
    pub(crate) fn direct(&self) -> bool {
        self.direct
    }

    /// The descriptor, for asynchronous I/O ([`crate::Backend::file_io`]).
    pub(crate) fn file_io(&self) -> crate::FileIo {
        crate::FileIo {
            fd: std::os::fd::AsRawFd::as_raw_fd(&self.file),
            direct: self.direct,
        }
    }

    /// The underlying file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Turns `O_DIRECT` off.
    pub(crate) fn clear_direct(&mut self) -> Result<()> {
        let fl = rustix::fs::fcntl_getfl(&self.file)
            .map_err(|e| BackendError::io("fcntl(F_GETFL)", e))?;
        rustix::fs::fcntl_setfl(&self.file, fl - OFlags::DIRECT)
            .map_err(|e| BackendError::io("fcntl(F_SETFL) clearing O_DIRECT", e))?;
        self.direct = false;
        Ok(())
    }

    /// With `O_DIRECT`, check that a `block_size` read at offset 0 is
    /// accepted (some filesystems accept the open flag but reject the I/O, or
    /// need a larger alignment than the chosen block size). On failure,
    /// `Auto` switches the descriptor to buffered mode and `On` errors out.
    pub(crate) fn probe_direct(&mut self, block_size: u32, mode: DirectIo) -> Result<()> {
        if !self.direct {
            return Ok(());
        }
        let res = with_scratch(block_size as usize, |s| pread_retry(&self.file, s, 0));
        match res {
            Ok(_) => Ok(()),
            Err(e) if e == Errno::INVAL && mode == DirectIo::Auto => {
                tracing::info!(
                    block_size,
                    "O_DIRECT I/O rejected for this block size, using buffered I/O"
                );
                self.clear_direct()
            }
            Err(e) => Err(BackendError::io("O_DIRECT read probe", e)),
        }
    }

    /// Fill `buf` from `offset`. Bytes beyond end-of-file read as zeroes.
    pub(crate) fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let rest = &mut buf[done..];
            let n = if self.direct && !is_aligned(rest) {
                let piece = rest.len().min(BOUNCE_MAX);
                with_scratch(piece, |s| -> io::Result<usize> {
                    let got = pread_retry(&self.file, s, pos)?;
                    rest[..got].copy_from_slice(&s[..got]);
                    Ok(got)
                })?
            } else {
                pread_retry(&self.file, rest, pos)?
            };
            if n == 0 {
                // End of file: the namespace extends past the data (e.g. the
                // file was shortened behind our back) — read as unwritten.
                rest.fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }

    /// Write the concatenation of `data` at `offset`; durable on return if
    /// `fua`. `block_size` decides whether chunks can go to `O_DIRECT`
    /// unbounced.
    pub(crate) fn write_all_at(
        &self,
        offset: u64,
        data: &[&[u8]],
        fua: bool,
        block_size: u32,
    ) -> io::Result<()> {
        let total: usize = data.iter().map(|d| d.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let direct_ok = !self.direct
            || data
                .iter()
                .all(|d| is_aligned(d) && d.len() % block_size as usize == 0);
        if direct_ok {
            let mut slices: Vec<IoSlice<'_>> = data
                .iter()
                .filter(|d| !d.is_empty())
                .map(|d| IoSlice::new(d))
                .collect();
            return self.pwritev_all(&mut slices, offset, fua);
        }
        // Bounce through the aligned scratch buffer, BOUNCE_MAX at a time.
        let mut sources = data.iter().copied();
        let mut cur: &[u8] = &[];
        let mut pos = offset;
        let mut remaining = total;
        while remaining > 0 {
            let piece = remaining.min(BOUNCE_MAX);
            with_scratch(piece, |s| {
                let mut filled = 0;
                while filled < piece {
                    while cur.is_empty() {
                        cur = sources.next().expect("total covers all pieces");
                    }
                    let k = cur.len().min(piece - filled);
                    s[filled..filled + k].copy_from_slice(&cur[..k]);
                    cur = &cur[k..];
                    filled += k;
                }
                self.pwritev_all(&mut [IoSlice::new(s)], pos, fua)
            })?;
            pos += piece as u64;
            remaining -= piece;
        }
        Ok(())
    }

    /// Write all of `slices` at `offset`, handling short writes, `EINTR`,
    /// the iovec limit, and FUA via `RWF_DSYNC` (or `fdatasync` if the kernel
    /// rejects the flag).
    fn pwritev_all(
        &self,
        mut slices: &mut [IoSlice<'_>],
        offset: u64,
        fua: bool,
    ) -> io::Result<()> {
        let mut dsync = fua && !self.no_dsync.load(Ordering::Relaxed);
        let mut need_sync = fua && !dsync;
        let mut pos = offset;
        IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            let batch = &slices[..slices.len().min(IOV_MAX)];
            let res = if dsync {
                rustix::io::pwritev2(&self.file, batch, pos, ReadWriteFlags::DSYNC)
            } else if batch.len() == 1 {
                rustix::io::pwrite(&self.file, &batch[0], pos)
            } else {
                rustix::io::pwritev(&self.file, batch, pos)
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    pos += n as u64;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(Errno::INTR) => {}
                Err(e) if dsync && (e == Errno::OPNOTSUPP || e == Errno::NOSYS) => {
                    tracing::debug!(
                        "pwritev2(RWF_DSYNC) unsupported ({e}), using fdatasync for FUA"
                    );
                    self.no_dsync.store(true, Ordering::Relaxed);
                    dsync = false;
                    need_sync = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if need_sync {
            self.datasync()?;
        }
        Ok(())
    }

    /// Write zero bytes over `offset..offset+len` with ordinary writes (the
    /// fallback when no zeroing primitive is available).
    pub(crate) fn write_zeroes_manual(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let piece_max = len.min(BOUNCE_MAX as u64) as usize;
        with_scratch(piece_max, |s| {
            s.fill(0);
            let mut pos = offset;
            let end = offset + len;
            while pos < end {
                let n = (end - pos).min(piece_max as u64) as usize;
                self.pwritev_all(&mut [IoSlice::new(&s[..n])], pos, false)?;
                pos += n as u64;
            }
            Ok(())
        })
    }

    /// `fallocate` with `EINTR` retry.
    pub(crate) fn fallocate(
        &self,
        flags: FallocateFlags,
        offset: u64,
        len: u64,
    ) -> rustix::io::Result<()> {
        loop {
            match rustix::fs::fallocate(&self.file, flags, offset, len) {
                Err(Errno::INTR) => continue,
                other => return other,
            }
        }
    }

    /// `fdatasync` with `EINTR` retry.
    pub(crate) fn datasync(&self) -> io::Result<()> {
        loop {
            match rustix::fs::fdatasync(&self.file) {
                Err(Errno::INTR) => continue,
                other => return other.map_err(Into::into),
            }
        }
    }
}

/// Whether `file` lives on a filesystem whose data is memory (tmpfs, ramfs):
/// its reads and writes are copies that never wait for a device, cheaper on
/// the queue's own thread than any hand-off, as a memory namespace is (SPDK's
/// AIO bdev gets the same from the kernel, whose io_submit runs such files'
/// I/O inside the call). io_uring cannot do them without blocking
/// (IOCB_NOWAIT) on tmpfs and punts each to a kernel worker thread: 28.8 µs
/// at queue depth 1 against 22.2 for SPDK (docs/performance.md).
fn in_memory_fs(file: &File) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    rustix::fs::fstatfs(file).is_ok_and(|s| {
        let t = s.f_type as u64;
        t == TMPFS_MAGIC || t == RAMFS_MAGIC
    })
}

/// `pread` with `EINTR` retry.
fn pread_retry(file: &File, buf: &mut [u8], offset: u64) -> rustix::io::Result<usize> {
    loop {
        match rustix::io::pread(file, &mut *buf, offset) {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// A namespace stored in a regular file.
///
/// Uses lock-free positional I/O (`pread`/`pwritev`), optional `O_DIRECT`
/// with internal bouncing of unaligned buffers, `RWF_DSYNC` for FUA,
/// `fdatasync` for flush, `fallocate(PUNCH_HOLE)` for discard and
/// `fallocate(ZERO_RANGE)` for write zeroes (both falling back to writing
/// zeroes where the filesystem lacks them).
#[derive(Debug)]
pub struct FileBackend {
    info: BackendInfo,
    io: RawFile,
    path: PathBuf,
    /// `FALLOC_FL_PUNCH_HOLE` not supported by the filesystem.
    no_punch: AtomicBool,
    /// `FALLOC_FL_ZERO_RANGE` not supported by the filesystem.
    no_zero_range: AtomicBool,
}

impl FileBackend {
    /// Open (and with `size`, create/extend) a regular file; see
    /// [`crate::open_file`] for the sizing rules.
    pub fn open(path: &Path, size: Option<u64>, block_size: u32, direct: DirectIo) -> Result<Self> {
        check_block_size(block_size)?;
        let bs = u64::from(block_size);
        if let Some(s) = size {
            if s < bs {
                return Err(BackendError::InvalidConfig(format!(
                    "file size {s} is smaller than one {block_size}-byte block"
                )));
            }
        }
        let mut io = RawFile::open(path, size.is_some(), 0, direct)?;
        let meta = io
            .file()
            .metadata()
            .map_err(|e| BackendError::io("stat", e))?;
        if !meta.file_type().is_file() {
            let hint = if meta.file_type().is_block_device() {
                " (use open_block_device for block devices)"
            } else {
                ""
            };
            return Err(BackendError::InvalidConfig(format!(
                "{} is not a regular file{hint}",
                path.display()
            )));
        }
        let capacity = match size {
            Some(s) => {
                if meta.len() < s {
                    io.file()
                        .set_len(s)
                        .map_err(|e| BackendError::io("extend file", e))?;
                }
                s
            }
            None => meta.len(),
        };
        let num_blocks = capacity / bs;
        if num_blocks == 0 {
            return Err(BackendError::InvalidConfig(format!(
                "{} is empty or smaller than one {block_size}-byte block (give a size to create/extend it)",
                path.display()
            )));
        }
        io.probe_direct(block_size, direct)?;
        let in_memory = in_memory_fs(io.file());
        if in_memory && direct == DirectIo::Auto && io.direct() {
            // The page cache is the storage there: O_DIRECT bypasses
            // nothing and would only make unaligned writes bounce.
            io.clear_direct()?;
        }
        let info = BackendInfo {
            block_size,
            num_blocks,
            volatile: false,
            supports_discard: true,
            may_block: !in_memory,
            description: format!(
                "file {} ({}{}, {} x {block_size}-byte blocks)",
                path.display(),
                if io.direct() { "O_DIRECT" } else { "buffered" },
                if in_memory {
                    ", in memory: served inline"
                } else {
                    ""
                },
                num_blocks
            ),
        };
        Ok(FileBackend {
            info,
            io,
            path: path.to_owned(),
            no_punch: AtomicBool::new(false),
            no_zero_range: AtomicBool::new(false),
        })
    }

    /// Whether I/O bypasses the page cache (`O_DIRECT` in effect).
    pub fn is_direct(&self) -> bool {
        self.io.direct()
    }

    /// Path the backend was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Zero with ordinary writes (fallback path).
    fn zero_by_writing(&self, offset: u64, len: u64) -> Result<()> {
        self.io
            .write_zeroes_manual(offset, len)
            .map_err(|e| BackendError::io("write zeroes", e))
    }
}

impl Backend for FileBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_access(&self.info, offset, buf.len() as u64)?;
        self.io
            .read_exact_at(offset, buf)
            .map_err(|e| BackendError::io("read", e))
    }

    fn write_at(&self, offset: u64, data: &[&[u8]], fua: bool) -> Result<()> {
        let total: u64 = data.iter().map(|d| d.len() as u64).sum();
        check_access(&self.info, offset, total)?;
        self.io
            .write_all_at(offset, data, fua, self.info.block_size)
            .map_err(|e| BackendError::io("write", e))
    }

    fn flush(&self) -> Result<()> {
        self.io
            .datasync()
            .map_err(|e| BackendError::io("fdatasync", e))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        check_access(&self.info, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if !self.no_zero_range.load(Ordering::Relaxed) {
            let flags = FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE;
            match self.io.fallocate(flags, offset, len) {
                Ok(()) => return Ok(()),
                Err(e) if is_unsupported(e) => {
                    tracing::debug!(path = %self.path.display(), "FALLOC_FL_ZERO_RANGE unsupported ({e}), punching holes instead");
                    self.no_zero_range.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(BackendError::io("fallocate(ZERO_RANGE)", e)),
            }
        }
        // No ZERO_RANGE (tmpfs): a punched hole reads as zeroes too, and
        // deallocating is allowed (NVM Command Set 1.0 §3.3.8: the controller
        // may deallocate even with DEAC cleared; DLFEAT says deallocated
        // blocks read as zeroes). Writing zeroes is the last resort: on tmpfs
        // it would fill up to 256 MiB on the queue's thread.
        self.discard(offset, len)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_access(&self.info, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if !self.no_punch.load(Ordering::Relaxed) {
            let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            match self.io.fallocate(flags, offset, len) {
                Ok(()) => return Ok(()),
                Err(e) if is_unsupported(e) => {
                    tracing::debug!(path = %self.path.display(), "FALLOC_FL_PUNCH_HOLE unsupported ({e}), writing zeroes");
                    self.no_punch.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(BackendError::io("fallocate(PUNCH_HOLE)", e)),
            }
        }
        self.zero_by_writing(offset, len)
    }

    fn file_io(&self) -> Option<crate::FileIo> {
        Some(self.io.file_io())
    }
}
