//! Page-aligned buffers for `O_DIRECT` I/O, built without `unsafe`.
//!
//! `O_DIRECT` requires the user buffer to be aligned (to the device's DMA
//! alignment, at most a page on common hardware). Instead of a custom
//! allocator we over-allocate a `Vec<u8>` by [`DIRECT_IO_ALIGN`] bytes and
//! use the aligned sub-slice. The backends bounce unaligned caller buffers
//! through such a buffer; callers that want to avoid the copy can receive
//! data directly into an [`AlignedBuf`].

use std::cell::RefCell;
use std::fmt;

/// Alignment (bytes) of buffers handed to `O_DIRECT` system calls. A page is
/// sufficient for every Linux block device and filesystem.
pub const DIRECT_IO_ALIGN: usize = 4096;

/// Largest piece bounced through the per-thread scratch buffer in one system
/// call; bounds the scratch memory held per thread.
pub(crate) const BOUNCE_MAX: usize = 1 << 20;

/// `true` if `buf` starts at a [`DIRECT_IO_ALIGN`]-aligned address.
pub fn is_aligned(buf: &[u8]) -> bool {
    (buf.as_ptr() as usize).is_multiple_of(DIRECT_IO_ALIGN)
}

/// A zero-initialised byte buffer whose start address is aligned to
/// [`DIRECT_IO_ALIGN`], suitable for `O_DIRECT` reads and writes.
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// Allocate `len` zeroed bytes at an aligned address.
    pub fn zeroed(len: usize) -> Self {
        let storage = vec![0u8; len + DIRECT_IO_ALIGN];
        let addr = storage.as_ptr() as usize;
        let start = (DIRECT_IO_ALIGN - addr % DIRECT_IO_ALIGN) % DIRECT_IO_ALIGN;
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    /// Length of the usable (aligned) region in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if the buffer has length zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The aligned region.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// The aligned region, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

thread_local! {
    static SCRATCH: RefCell<Option<AlignedBuf>> = const { RefCell::new(None) };
}

/// Run `f` with an aligned scratch slice of exactly `len` bytes
/// (`len <= BOUNCE_MAX`). The buffer is cached per thread so bouncing does
/// not allocate on every I/O; its contents on entry are unspecified.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    debug_assert!(len <= BOUNCE_MAX);
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            if slot.as_ref().is_none_or(|b| b.len() < len) {
                *slot = Some(AlignedBuf::zeroed(len.clamp(64 * 1024, BOUNCE_MAX)));
            }
            let buf = slot.as_mut().expect("scratch allocated above");
            f(&mut buf.as_mut_slice()[..len])
        }
        // Re-entrant use (not expected): fall back to a fresh allocation.
        Err(_) => f(AlignedBuf::zeroed(len).as_mut_slice()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_is_aligned() {
        for len in [0, 1, 511, 4096, 65536, 1 << 20] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(is_aligned(&b));
            assert!(b.iter().all(|&x| x == 0));
            b.as_mut_slice().fill(7);
            assert!(b.as_slice().iter().all(|&x| x == 7));
        }
    }

    #[test]
    fn scratch_reuse() {
        with_scratch(4096, |s| {
            assert_eq!(s.len(), 4096);
            assert!(is_aligned(s));
        });
        with_scratch(BOUNCE_MAX, |s| {
            assert_eq!(s.len(), BOUNCE_MAX);
            assert!(is_aligned(s));
        });
        with_scratch(512, |s| assert!(is_aligned(s)));
    }
}
