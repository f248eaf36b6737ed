//! Sparse, volatile in-memory backend.
//!
//! The namespace is split into fixed-size chunks ([`MEMORY_CHUNK_SIZE`] by
//! default), each behind its own `RwLock<Option<ChunkMem>>`. A chunk is
//! allocated (zero-filled) on its first write, unallocated chunks read as
//! zeroes, and discard frees chunks it fully covers. I/O touching different
//! chunks never contends; reads of the same chunk proceed in parallel.
//!
//! Chunks of 2 MiB and more are anonymous mappings aligned to 2 MiB and
//! advised `MADV_HUGEPAGE`, so the kernel can back them with transparent huge
//! pages: random 4 KiB reads over a large namespace then miss the TLB far less
//! (SPDK's Malloc bdev lives in hugepage memory for the same reason). Measured
//! in docs/performance.md.

use std::fmt;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{check_access, check_block_size, Backend, BackendError, BackendInfo, Result};

/// Default allocation granularity of [`MemoryBackend`] (2 MiB: one huge page).
pub const MEMORY_CHUNK_SIZE: usize = HUGE_PAGE;

/// The x86-64 transparent huge page size.
const HUGE_PAGE: usize = 2 << 20;

type Chunk = RwLock<Option<ChunkMem>>;

/// One chunk's memory: an anonymous mapping (zero-filled by the kernel), of
/// which `len` bytes from `off` are used; `off` aligns huge-page-sized chunks
/// to a huge page boundary.
struct ChunkMem {
    map: memmap2::MmapMut,
    off: usize,
    len: usize,
}

impl ChunkMem {
    fn new(len: usize) -> std::io::Result<Self> {
        if len < HUGE_PAGE {
            let map = memmap2::MmapOptions::new().len(len).map_anon()?;
            return Ok(Self { map, off: 0, len });
        }
        // Over-map by one huge page and use the aligned window inside; the
        // slack is never touched, so it costs address space only.
        let map = memmap2::MmapOptions::new()
            .len(len + HUGE_PAGE)
            .map_anon()?;
        let addr = map.as_ptr() as usize;
        let off = (HUGE_PAGE - addr % HUGE_PAGE) % HUGE_PAGE;
        // Best effort: without THP the chunk works the same, with 4 KiB pages.
        let _ = map.advise_range(memmap2::Advice::HugePage, off, len);
        Ok(Self { map, off, len })
    }

    fn bytes(&self) -> &[u8] {
        &self.map[self.off..self.off + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map[self.off..self.off + self.len]
    }
}

/// Sparse RAM-backed namespace.
///
/// Storage is split into fixed-size chunks, each behind its own `RwLock`;
/// a chunk is allocated (zeroed) on first write, unallocated chunks read as
/// zeroes, and discard / write-zeroes free the chunks they fully cover.
/// Requests touching different chunks never contend. Volatile, never blocks
/// on I/O.
pub struct MemoryBackend {
    info: BackendInfo,
    chunk_size: usize,
    capacity: u64,
    chunks: Box<[Chunk]>,
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("info", &self.info)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

fn read_lock(c: &Chunk) -> RwLockReadGuard<'_, Option<ChunkMem>> {
    // Chunks hold plain bytes with no invariants, so a poisoned lock (a
    // panic in another thread mid-copy) is harmless: keep going.
    c.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock(c: &Chunk) -> RwLockWriteGuard<'_, Option<ChunkMem>> {
    c.write().unwrap_or_else(|e| e.into_inner())
}

/// One piece of a request that falls within a single chunk.
struct Segment {
    /// Chunk index.
    idx: usize,
    /// Byte offset within the chunk.
    within: usize,
    /// Length of the piece.
    len: usize,
}

impl MemoryBackend {
    /// Create a namespace of `size_bytes` (rounded down to whole blocks) with
    /// the default chunk size. Nothing is allocated for data until written.
    pub fn new(size_bytes: u64, block_size: u32) -> Result<Self> {
        Self::with_chunk_size(size_bytes, block_size, MEMORY_CHUNK_SIZE)
    }

    /// Like [`MemoryBackend::new`] with an explicit allocation granularity.
    /// `chunk_size` must be a power of two and a multiple of `block_size`.
    /// Smaller chunks mean finer-grained locking and sparser allocation at the
    /// cost of more per-chunk bookkeeping; mainly useful for tests.
    pub fn with_chunk_size(size_bytes: u64, block_size: u32, chunk_size: usize) -> Result<Self> {
        check_block_size(block_size)?;
        if !chunk_size.is_power_of_two() || chunk_size % block_size as usize != 0 {
            return Err(BackendError::InvalidConfig(format!(
                "chunk size {chunk_size} must be a power of two and a multiple of the block size {block_size}"
            )));
        }
        let num_blocks = size_bytes / u64::from(block_size);
        if num_blocks == 0 {
            return Err(BackendError::InvalidConfig(format!(
                "memory namespace size {size_bytes} is smaller than one {block_size}-byte block"
            )));
        }
        let capacity = num_blocks * u64::from(block_size);
        let n_chunks = usize::try_from(capacity.div_ceil(chunk_size as u64)).map_err(|_| {
            BackendError::InvalidConfig(format!("memory namespace size {size_bytes} too large"))
        })?;
        let mut chunks = Vec::new();
        chunks.try_reserve_exact(n_chunks).map_err(|_| {
            BackendError::InvalidConfig(format!(
                "memory namespace size {size_bytes} too large: cannot allocate {n_chunks} chunk slots"
            ))
        })?;
        chunks.resize_with(n_chunks, || RwLock::new(None));
        let info = BackendInfo {
            block_size,
            num_blocks,
            volatile: true,
            supports_discard: true,
            may_block: false,
            description: format!("memory ({capacity} bytes, {block_size}-byte blocks)"),
        };
        Ok(MemoryBackend {
            info,
            chunk_size,
            capacity,
            chunks: chunks.into_boxed_slice(),
        })
    }

    /// Number of bytes of chunk memory currently allocated (for diagnostics
    /// and tests of sparseness / discard).
    pub fn allocated_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| read_lock(c).as_ref().map_or(0, |b| b.len as u64))
            .sum()
    }

    /// Length of chunk `idx` (the last chunk may be shorter).
    fn chunk_len(&self, idx: usize) -> usize {
        let start = idx as u64 * self.chunk_size as u64;
        (self.capacity - start).min(self.chunk_size as u64) as usize
    }

    /// Split an already bounds-checked byte range into per-chunk segments.
    fn segments(&self, offset: u64, len: u64) -> impl Iterator<Item = Segment> + '_ {
        let cs = self.chunk_size as u64;
        let end = offset + len;
        let mut pos = offset;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let idx = (pos / cs) as usize;
            let within = (pos % cs) as usize;
            let n = (cs - within as u64).min(end - pos) as usize;
            pos += n as u64;
            Some(Segment {
                idx,
                within,
                len: n,
            })
        })
    }

    /// Zero a range, freeing chunks that are fully covered.
    fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        check_access(&self.info, offset, len)?;
        for seg in self.segments(offset, len) {
            let mut guard = write_lock(&self.chunks[seg.idx]);
            if seg.within == 0 && seg.len == self.chunk_len(seg.idx) {
                *guard = None;
            } else if let Some(chunk) = guard.as_mut() {
                chunk.bytes_mut()[seg.within..seg.within + seg.len].fill(0);
            }
        }
        Ok(())
    }
}

impl Backend for MemoryBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_access(&self.info, offset, buf.len() as u64)?;
        let mut done = 0;
        for seg in self.segments(offset, buf.len() as u64) {
            let dst = &mut buf[done..done + seg.len];
            match read_lock(&self.chunks[seg.idx]).as_ref() {
                Some(chunk) => {
                    dst.copy_from_slice(&chunk.bytes()[seg.within..seg.within + seg.len])
                }
                None => dst.fill(0),
            }
            done += seg.len;
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[&[u8]], _fua: bool) -> Result<()> {
        let total: u64 = data.iter().map(|d| d.len() as u64).sum();
        check_access(&self.info, offset, total)?;
        let mut sources = data.iter().copied();
        let mut cur: &[u8] = &[];
        for seg in self.segments(offset, total) {
            let mut guard = write_lock(&self.chunks[seg.idx]);
            if guard.is_none() {
                let mem = ChunkMem::new(self.chunk_len(seg.idx))
                    .map_err(|e| BackendError::io("allocating namespace memory", e))?;
                *guard = Some(mem);
            }
            let Some(chunk) = guard.as_mut() else {
                unreachable!("allocated above")
            };
            let dst = &mut chunk.bytes_mut()[seg.within..seg.within + seg.len];
            let mut filled = 0;
            while filled < dst.len() {
                while cur.is_empty() {
                    cur = sources.next().expect("total length covers all segments");
                }
                let k = cur.len().min(dst.len() - filled);
                dst[filled..filled + k].copy_from_slice(&cur[..k]);
                cur = &cur[k..];
                filled += k;
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.zero_range(offset, len)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.zero_range(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_namespace_last_chunk_is_short() {
        let m = MemoryBackend::with_chunk_size(3 * 4096 + 512, 512, 4096).unwrap();
        assert_eq!(m.chunks.len(), 4);
        assert_eq!(m.chunk_len(3), 512);
        m.write_at(3 * 4096, &[&[9u8; 512]], false).unwrap();
        assert_eq!(m.allocated_bytes(), 512);
        m.discard(3 * 4096, 512).unwrap();
        assert_eq!(m.allocated_bytes(), 0);
    }

    #[test]
    fn bad_chunk_size() {
        assert!(MemoryBackend::with_chunk_size(1 << 20, 4096, 2048).is_err());
        assert!(MemoryBackend::with_chunk_size(1 << 20, 512, 3 * 512).is_err());
    }
}
