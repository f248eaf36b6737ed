//! Namespace storage backends for the nvmf-rs NVMe-oF target.
//!
//! A [`Backend`] is the byte-addressed store behind one NVMe namespace. The
//! controller translates LBA-based NVMe commands (Read, Write, Flush, Write
//! Zeroes, Dataset Management/Deallocate) into the byte-offset calls of this
//! trait; the backends take care of bounds checking, O_DIRECT buffer alignment,
//! durability (FUA / flush) and deallocation.
//!
//! Five implementations exist:
//!
//! * [`open_memory`] — a sparse, volatile RAM disk ([`MemoryBackend`]).
//! * [`open_file`] — a regular file accessed with positional I/O, optionally
//!   with `O_DIRECT` ([`FileBackend`]).
//! * [`open_block_device`] — a raw Linux block device ([`BlockDevBackend`]).
//! * [`open_null`] — reads zeroes, drops writes ([`NullBackend`]): the
//!   transport's ceiling, for benchmarks.
//! * [`rbd::open`] — a Ceph RBD image through librbd, loaded at run time
//!   ([`RbdBackend`]).
//!
//! All backends are `Send + Sync` and never serialise I/O behind a single
//! lock, so a controller may issue commands from many threads at once.
//!
//! Every operation checks that `offset` and the length are multiples of
//! [`BackendInfo::block_size`] ([`BackendError::Misaligned`]) and that the
//! range lies within the namespace ([`BackendError::OutOfRange`]), using
//! overflow-safe arithmetic.

use std::io;
use std::path::Path;
use std::sync::Arc;

pub mod aligned;
mod blockdev;
mod file;
mod memory;
mod nontemporal;
mod null;
pub mod rbd;

pub use aligned::{AlignedBuf, DIRECT_IO_ALIGN};
pub use blockdev::BlockDevBackend;
pub use file::{DirectIo, FileBackend};
pub use memory::{MemoryBackend, MEMORY_CHUNK_SIZE};
pub use null::NullBackend;
pub use rbd::{RbdBackend, RbdSpec};

/// Smallest logical block size accepted by the backends (bytes).
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest logical block size accepted by the backends (bytes).
pub const MAX_BLOCK_SIZE: u32 = 64 * 1024;

/// Static description of a backend, used by the controller to fill in the
/// Identify Namespace data structure and to decide which optional commands to
/// advertise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// Logical block (LBA) size in bytes; a power of two between
    /// [`MIN_BLOCK_SIZE`] and [`MAX_BLOCK_SIZE`].
    pub block_size: u32,
    /// Namespace capacity in logical blocks (NSZE/NCAP).
    pub num_blocks: u64,
    /// `true` if data does not survive a restart of the target (memory
    /// backend); the controller can report a volatile write cache accordingly.
    pub volatile: bool,
    /// `true` if [`Backend::discard`] deallocates efficiently, so Dataset
    /// Management / Deallocate can be advertised (ONCS.DSM). Reads of
    /// deallocated blocks always return zeroes.
    pub supports_discard: bool,
    /// `true` if operations may block the calling thread on real I/O (file
    /// and block device backends); the controller should then run them on a
    /// blocking-capable thread pool rather than on an async reactor.
    pub may_block: bool,
    /// Human-readable description for logs ("file /path (O_DIRECT)", ...).
    pub description: String,
}

impl BackendInfo {
    /// Namespace capacity in bytes (`block_size * num_blocks`).
    pub fn capacity_bytes(&self) -> u64 {
        u64::from(self.block_size) * self.num_blocks
    }
}

/// Errors returned by backend operations.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The byte range `offset..offset+len` does not lie within the namespace
    /// (or its end overflows `u64`). Maps to NVMe "LBA Out of Range".
    #[error("access beyond end of namespace: offset {offset} len {len} capacity {capacity}")]
    OutOfRange {
        /// Requested byte offset.
        offset: u64,
        /// Requested length in bytes.
        len: u64,
        /// Namespace capacity in bytes.
        capacity: u64,
    },
    /// `offset` or `len` is not a multiple of the logical block size. The
    /// controller always issues block-aligned requests, so this indicates a
    /// bug in the caller; maps to NVMe "Invalid Field in Command".
    #[error("unaligned access: offset {offset} len {len} block size {block_size}")]
    Misaligned {
        /// Requested byte offset.
        offset: u64,
        /// Requested length in bytes.
        len: u64,
        /// Logical block size of the namespace.
        block_size: u32,
    },
    /// An operating-system I/O call failed. See
    /// [`BackendError::is_media_error`] to distinguish media errors from
    /// other failures.
    #[error("{context}: {error}")]
    Io {
        /// What the backend was doing (static, for cheap construction).
        context: &'static str,
        /// The underlying OS error: part of this error's message, and so
        /// not also its `source()` (a printed chain names it once).
        error: io::Error,
    },
    /// The operation is not supported by this backend.
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    /// The backend could not be opened because of an invalid parameter
    /// (block size, size, file type, ...).
    #[error("invalid backend configuration: {0}")]
    InvalidConfig(String),
}

impl BackendError {
    /// `true` if the error indicates a problem with the stored data or the
    /// medium (EIO, ENODATA, EILSEQ, EBADMSG, EUCLEAN) rather than with the
    /// request or the host system. The controller can map media errors to
    /// NVMe "Unrecovered Read Error" / "Write Fault" and everything else to
    /// "Internal Error" (or the more specific out-of-range/invalid-field
    /// status codes).
    pub fn is_media_error(&self) -> bool {
        match self {
            BackendError::Io { error, .. } => matches!(
                error.raw_os_error(),
                Some(libc::EIO | libc::ENODATA | libc::EILSEQ | libc::EBADMSG | libc::EUCLEAN)
            ),
            _ => false,
        }
    }

    /// Wrap an OS error with a static context string.
    pub(crate) fn io(context: &'static str, source: impl Into<io::Error>) -> Self {
        BackendError::Io {
            context,
            error: source.into(),
        }
    }
}

/// Result type used throughout this crate.
pub type Result<T> = std::result::Result<T, BackendError>;

/// Read data that shares the backend's own memory instead of a copy of it
/// ([`Backend::read_shared`]): the buffers, in order.
#[derive(Debug, Clone)]
pub enum SharedData {
    /// One buffer (a read within one page).
    One(bytes::Bytes),
    /// Several buffers, to be sent one after another.
    Parts(Vec<bytes::Bytes>),
}

impl SharedData {
    /// Wraps `parts` (one buffer stays [`SharedData::One`]).
    pub fn from_parts(mut parts: Vec<bytes::Bytes>) -> Self {
        if parts.len() == 1 {
            Self::One(parts.remove(0))
        } else {
            Self::Parts(parts)
        }
    }

    /// The buffers, in order.
    pub fn parts(&self) -> &[bytes::Bytes] {
        match self {
            Self::One(b) => std::slice::from_ref(b),
            Self::Parts(v) => v,
        }
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.parts().iter().map(|b| b.len()).sum()
    }

    /// True if there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Zeroes that reads of unwritten or null storage refer to.
static ZEROES: [u8; 128 * 1024] = [0; 128 * 1024];

/// Appends `len` zero bytes to `parts`, as slices of one static buffer.
pub(crate) fn push_zeroes(parts: &mut Vec<bytes::Bytes>, mut len: usize) {
    while len > 0 {
        let n = len.min(ZEROES.len());
        parts.push(bytes::Bytes::from_static(&ZEROES[..n]));
        len -= n;
    }
}

/// Storage behind one NVMe namespace.
///
/// Offsets and lengths are in bytes and must be multiples of
/// [`BackendInfo::block_size`]. Implementations are safe to call concurrently
/// from many threads; no method serialises all I/O behind one lock.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// Static information about the namespace (size, block size, features).
    fn info(&self) -> &BackendInfo;

    /// Read `buf.len()` bytes at byte `offset` (multiple of block size):
    /// every byte of `buf` is overwritten, or an error is returned (the
    /// controller reuses read buffers and relies on this, so that no data of
    /// an earlier read can leak).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Reads `len` bytes at `offset` as buffers that share the backend's memory,
    /// for backends that keep their data in memory: no copy is made, and the
    /// data stays as it was at this call however long the buffers are held
    /// (later writes do not change it). `Ok(None)`: this backend cannot, use
    /// [`Backend::read_at`]. The default is `Ok(None)`.
    fn read_shared(&self, offset: u64, len: u64) -> Result<Option<SharedData>> {
        let _ = (offset, len);
        Ok(None)
    }

    /// A hint that a command for the block at byte `offset` is about to run:
    /// a backend whose metadata for it is likely out of the CPU cache starts
    /// loading it now, so that the misses of a batch of commands overlap
    /// instead of each stalling its command in turn. The controller calls it
    /// for every read and write it has taken in, before running the first of
    /// them. Never blocks, never fails; out-of-range offsets are ignored. The
    /// default does nothing.
    fn prefetch(&self, offset: u64) {
        let _ = offset;
    }

    /// Write the concatenation of `data` chunks at `offset`; if `fua`,
    /// durable before returning.
    ///
    /// The total length must be a multiple of the block size; the
    /// individual chunks may have any length and alignment (so PDU payloads
    /// can be passed without first copying them together).
    fn write_at(&self, offset: u64, data: &[&[u8]], fua: bool) -> Result<()>;

    /// Make all previously completed writes durable (NVMe Flush).
    fn flush(&self) -> Result<()>;

    /// Set `len` bytes at `offset` to zero (NVMe Write Zeroes). The range may
    /// or may not stay allocated, depending on the backend.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()>;

    /// Deallocate (Dataset Management AD): punch holes in files, zeroing
    /// discard on devices, drop chunks in memory; reads afterwards return
    /// zeroes.
    fn discard(&self, offset: u64, len: u64) -> Result<()>;

    /// The open file behind the namespace, for a caller that reads, writes
    /// and flushes it asynchronously itself (the controller's io_uring path)
    /// instead of through [`Backend::read_at`] and [`Backend::write_at`] on a
    /// blocking thread. `None` (the default): this backend has no such file.
    fn file_io(&self) -> Option<FileIo> {
        None
    }
}

/// A backend's open file, as [`Backend::file_io`] lends it.
///
/// The descriptor stays open as long as the backend does: a caller keeps the
/// backend alive until its I/O on `fd` has completed. Reads and writes must
/// cover whole blocks, and with `direct` their buffers must be aligned to
/// [`DIRECT_IO_ALIGN`] (as [`Backend::write_at`] arranges by bouncing).
/// Bytes past the file's end read as zeroes, as in [`Backend::read_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIo {
    /// The descriptor, opened read-write.
    pub fd: std::os::fd::RawFd,
    /// Opened with `O_DIRECT`.
    pub direct: bool,
}

/// Validate a request against the namespace geometry: `offset` and `len`
/// must be block multiples and `offset + len` must not exceed the capacity
/// (computed without overflow).
pub(crate) fn check_access(info: &BackendInfo, offset: u64, len: u64) -> Result<()> {
    let bs = u64::from(info.block_size);
    let capacity = info.capacity_bytes();
    match offset.checked_add(len) {
        Some(end) if end <= capacity => {}
        _ => {
            return Err(BackendError::OutOfRange {
                offset,
                len,
                capacity,
            })
        }
    }
    if !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
        return Err(BackendError::Misaligned {
            offset,
            len,
            block_size: info.block_size,
        });
    }
    Ok(())
}

/// Validate a logical block size: power of two in
/// [`MIN_BLOCK_SIZE`]`..=`[`MAX_BLOCK_SIZE`].
pub(crate) fn check_block_size(block_size: u32) -> Result<()> {
    if block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        Ok(())
    } else {
        Err(BackendError::InvalidConfig(format!(
            "block size {block_size} is not a power of two between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}"
        )))
    }
}

/// The whole blocks of `block_size` in `size` bytes (a partial last block is
/// left out), or an error naming the storage (`what`) if there is not one.
pub(crate) fn whole_blocks(
    size: u64,
    block_size: u32,
    what: impl FnOnce() -> String,
) -> Result<u64> {
    match size / u64::from(block_size) {
        0 => Err(BackendError::InvalidConfig(format!(
            "{} is smaller than one {block_size}-byte block",
            what()
        ))),
        n => Ok(n),
    }
}

/// Create a sparse in-memory namespace of `size_bytes` (rounded down to whole
/// blocks). Memory is only allocated for chunks that are written, so large
/// namespaces are cheap to create. Data is lost when the backend is dropped.
pub fn open_memory(size_bytes: u64, block_size: u32) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(MemoryBackend::new(size_bytes, block_size)?))
}

/// Create a null namespace of `size_bytes`: reads return zeroes, writes are
/// dropped (the transport's ceiling, as SPDK's Null bdev).
pub fn open_null(size_bytes: u64, block_size: u32) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(NullBackend::new(size_bytes, block_size)?))
}

/// Open a regular file as a namespace.
///
/// If `size` is given the file is created when missing and extended (never
/// truncated) to at least `size` bytes, and the namespace capacity is `size`
/// rounded down to whole blocks. If `size` is `None` the file must exist and
/// its current length (rounded down to whole blocks) is the capacity; an
/// empty file is an error. `direct` selects `O_DIRECT` (see [`DirectIo`]).
pub fn open_file(
    path: &Path,
    size: Option<u64>,
    block_size: u32,
    direct: DirectIo,
) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(FileBackend::open(path, size, block_size, direct)?))
}

/// Open a Linux block device (e.g. `/dev/nvme0n1`, `/dev/loop0`) as a
/// namespace.
///
/// The device is opened exclusively (`O_EXCL`, fails if it is mounted or in
/// use by another exclusive opener) with `O_DIRECT` when possible. The size
/// comes from `BLKGETSIZE64`; `block_size` defaults to the device's logical
/// block size (`BLKSSZGET`) and, if given, must be a multiple of it.
pub fn open_block_device(path: &Path, block_size: Option<u32>) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(BlockDevBackend::open(path, block_size)?))
}

/// Parse a human-readable size such as `"4096"`, `"512K"`, `"256M"`,
/// `"1G"`, `"1GiB"`, `"2TB"` or `"1.5G"`.
///
/// Units are binary (powers of 1024) and case-insensitive: `K`, `M`, `G`,
/// `T`, `P`, each optionally followed by `B` or `iB`; a bare `B` or no suffix
/// means bytes. Whitespace between number and unit is allowed. A fractional
/// number must denote a whole number of bytes (`"1.5K"` = 1536 is fine,
/// `"0.1K"` is rejected). Used by the CLI/config for namespace sizes.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    let unit = unit.trim_start();
    if num.is_empty() {
        return Err(format!("invalid size {s:?}: missing number"));
    }
    let shift: u32 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(format!("invalid size {s:?}: unknown unit {unit:?}")),
    };
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
        return Err(format!("invalid size {s:?}: malformed number"));
    }
    let too_large = || format!("invalid size {s:?}: too large");
    let int: u64 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| too_large())?
    };
    let mut bytes = int.checked_mul(1u64 << shift).ok_or_else(too_large)?;
    let frac_digits = frac_part.trim_end_matches('0');
    if !frac_digits.is_empty() {
        // fraction = F / 10^n; bytes += F * 2^shift / 10^n, which must be exact.
        if frac_digits.len() > 19 {
            return Err(format!("invalid size {s:?}: too many fractional digits"));
        }
        let f: u128 = frac_digits.parse().map_err(|_| too_large())?;
        let denom = 10u128.pow(frac_digits.len() as u32);
        let scaled = f * (1u128 << shift);
        if !scaled.is_multiple_of(denom) {
            return Err(format!("invalid size {s:?}: not a whole number of bytes"));
        }
        let extra = u64::try_from(scaled / denom).map_err(|_| too_large())?;
        bytes = bytes.checked_add(extra).ok_or_else(too_large)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_size_cases() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("512k"), Ok(512 * 1024));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("1P"), Ok(1 << 50));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("1.50K"), Ok(1536));
        assert_eq!(parse_size(".5K"), Ok(512));
        assert_eq!(parse_size("2."), Ok(2));
        assert_eq!(parse_size(" 64 MiB "), Ok(64 << 20));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("16383P"), Ok(16383 << 50));
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("1.2.3G").is_err());
        assert!(parse_size(".").is_err());
        assert!(parse_size("0.1K").is_err());
        assert!(parse_size("1.5").is_err());
        assert!(parse_size("16384P").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("1 G B").is_err());
    }

    #[test]
    fn check_access_bounds() {
        let info = BackendInfo {
            block_size: 512,
            num_blocks: 8,
            volatile: true,
            supports_discard: true,
            may_block: false,
            description: String::new(),
        };
        assert!(check_access(&info, 0, 4096).is_ok());
        assert!(check_access(&info, 4096, 0).is_ok());
        assert!(check_access(&info, 3584, 512).is_ok());
        assert!(matches!(
            check_access(&info, 3584, 1024),
            Err(BackendError::OutOfRange {
                offset: 3584,
                len: 1024,
                capacity: 4096
            })
        ));
        assert!(matches!(
            check_access(&info, u64::MAX - 511, 1024),
            Err(BackendError::OutOfRange { .. })
        ));
        assert!(matches!(
            check_access(&info, 4608, 0),
            Err(BackendError::OutOfRange { .. })
        ));
        assert!(matches!(
            check_access(&info, 1, 512),
            Err(BackendError::Misaligned { .. })
        ));
        assert!(matches!(
            check_access(&info, 0, 100),
            Err(BackendError::Misaligned { .. })
        ));
    }

    #[test]
    fn media_error_classification() {
        let eio = BackendError::io("read", io::Error::from_raw_os_error(libc::EIO));
        assert!(eio.is_media_error());
        let enodata = BackendError::io("read", io::Error::from_raw_os_error(libc::ENODATA));
        assert!(enodata.is_media_error());
        let enospc = BackendError::io("write", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(!enospc.is_media_error());
        assert!(!BackendError::Unsupported("x").is_media_error());
        assert!(!BackendError::OutOfRange {
            offset: 0,
            len: 0,
            capacity: 0
        }
        .is_media_error());
        assert_eq!(
            enospc.to_string(),
            format!("write: {}", io::Error::from_raw_os_error(libc::ENOSPC))
        );
    }

    #[test]
    fn block_size_validation() {
        for bs in [512, 1024, 4096, 65536] {
            assert!(check_block_size(bs).is_ok());
        }
        for bs in [0, 256, 1000, 131072] {
            assert!(check_block_size(bs).is_err());
        }
    }
}
