//! Reused read buffers.
//!
//! A read needs a buffer the size of its transfer that lives until the socket
//! has taken the data. A fresh `vec![0; len]` per read costs an allocation and a
//! zero-fill (or, at 128 KiB and up, fresh pages from the kernel: 32 page faults
//! and a page clear each); the profile in docs/performance.md put them at 18 %
//! of the target's time for 128 KiB reads. Here buffers come from a per-thread
//! free list in power-of-two size classes and go back to it when the last
//! [`Bytes`] referring to them is dropped (`Bytes::from_owner`), so a queue in a
//! steady state allocates nothing.
//!
//! Buffers start on a page boundary ([`AlignedBuf`]), so a namespace file
//! opened with `O_DIRECT` can be read straight into them (crate::uring).
//!
//! Only the first `len` bytes of a buffer are ever exposed, and every user
//! overwrites all of them before that (backends' `read_at` fills the whole
//! buffer or fails, in which case the buffer is not sent), so no data of an
//! earlier read can leak.

use std::cell::RefCell;

use bytes::Bytes;
use nvmf_backend::AlignedBuf;

/// Smallest size class.
const MIN_CLASS: usize = 4096;
/// Number of classes: 4 KiB .. 4 MiB. Larger buffers are not pooled.
const CLASSES: usize = 11;
/// Bytes kept per class per thread, beyond which freed buffers are released.
const KEEP_BYTES: usize = 16 << 20;

thread_local! {
    static POOL: RefCell<[Vec<AlignedBuf>; CLASSES]> = RefCell::new(Default::default());
}

fn class_of(len: usize) -> Option<usize> {
    let cap = len.max(MIN_CLASS).next_power_of_two();
    let c = (cap / MIN_CLASS).trailing_zeros() as usize;
    (c < CLASSES).then_some(c)
}

/// A pooled buffer of which the first `len` bytes are in use.
pub(crate) struct PoolBuf {
    /// `None` only while being dropped.
    buf: Option<AlignedBuf>,
    len: usize,
}

impl PoolBuf {
    /// A buffer of `len` bytes with unspecified (but initialised) contents: the
    /// caller must overwrite all of them before exposing any.
    pub(crate) fn take(len: usize) -> Self {
        let buf = match class_of(len) {
            Some(c) => POOL
                .try_with(|p| p.borrow_mut()[c].pop())
                .ok()
                .flatten()
                .unwrap_or_else(|| AlignedBuf::zeroed(MIN_CLASS << c)),
            None => AlignedBuf::zeroed(len),
        };
        Self {
            buf: Some(buf),
            len,
        }
    }

    /// The bytes in use.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.buf.as_mut().expect("live buffer")[..len]
    }

    /// Freezes the buffer into `Bytes`; it returns to the pool when the last
    /// clone is dropped.
    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf.as_ref().expect("live buffer")[..self.len]
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let Some(buf) = self.buf.take() else {
            return;
        };
        let Some(c) = class_of(buf.len()) else {
            return;
        };
        if buf.len() != MIN_CLASS << c {
            return; // not one of ours (unpooled size)
        }
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if (p[c].len() + 1) * buf.len() <= KEEP_BYTES {
                p[c].push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class_of(1), Some(0));
        assert_eq!(class_of(4096), Some(0));
        assert_eq!(class_of(4097), Some(1));
        assert_eq!(class_of(128 * 1024), Some(5));
        assert_eq!(class_of(4 << 20), Some(10));
        assert_eq!(class_of((4 << 20) + 1), None);
    }

    #[test]
    fn buffers_are_reused_and_exposed_to_len() {
        let mut b = PoolBuf::take(5000);
        b.as_mut_slice().fill(7);
        let ptr = b.as_ref().as_ptr();
        assert!(nvmf_backend::aligned::is_aligned(b.as_ref()));
        let bytes = b.freeze();
        assert_eq!(bytes.len(), 5000);
        assert!(bytes.iter().all(|&x| x == 7));
        let half = bytes.slice(100..200);
        drop(bytes);
        // Still referenced by `half`: not back in the pool yet.
        let other = PoolBuf::take(6000);
        assert_ne!(other.as_ref().as_ptr(), ptr);
        drop(other);
        drop(half);
        // Now it is: the same 8 KiB buffer comes back (LIFO).
        let again = PoolBuf::take(8192);
        assert_eq!(again.as_ref().as_ptr(), ptr);
        assert_eq!(again.as_ref().len(), 8192);
    }

    #[test]
    fn oversized_buffers_are_not_pooled() {
        let b = PoolBuf::take((4 << 20) + 512);
        assert_eq!(b.as_ref().len(), (4 << 20) + 512);
        drop(b.freeze());
    }
}
