//! Sparse, volatile in-memory backend whose reads are shared, not copied.
//!
//! The namespace is split into pages ([`MEMORY_CHUNK_SIZE`], 64 KiB, by
//! default), each in a slot: one cache line holding the slot's `RwLock`, its
//! page and a count of the reads that hold that page. A page is allocated on
//! its first write, unallocated pages read as zeroes, and discard frees the
//! pages it fully covers.
//!
//! **Reads without a copy.** [`MemoryBackend::read_shared`] hands out `Bytes`
//! that point into the pages themselves (each counted in its slot's holders),
//! so read data goes from the namespace to the socket with the kernel's copy
//! only. A write to a page that such a read still holds (its data not yet
//! sent) does not touch that page: it copies the page, changes the copy and
//! puts it in the slot (copy on write), and the old page is retired until its
//! last holder is done, so the read keeps exactly the data it saw. Pages are
//! small so that this copy is cheap and rare. Counting holders in the slot,
//! not in a reference count beside the page, makes a shared read touch one
//! cache line of metadata instead of three. Measured in docs/performance.md.
//!
//! **Slots prefetched.** A slot of a large namespace is rarely in the CPU
//! cache when a random read comes for it. The controller hands each batch of
//! commands it has taken in to [`Backend::prefetch`] before running the first,
//! which starts loading their slots' lines together: 4 KiB random reads over
//! 1 GiB went from 615 to 537 ns each in `examples/memory_reads.rs`.
//!
//! **Writes around the cache.** A namespace of 64 MiB or more takes written
//! data with streaming (non-temporal) stores, which do not read the cold
//! destination lines first (crate::nontemporal).
//!
//! **Huge pages.** Pages are carved out of 2 MiB slabs: anonymous mappings
//! aligned to 2 MiB and advised `MADV_HUGEPAGE`, so the kernel can back them
//! with transparent huge pages and random reads over a large namespace miss the
//! TLB far less (SPDK's Malloc bdev lives in hugepage memory for the same
//! reason). A freed page goes back to its slab for reuse; a slab whose pages
//! are all free is unmapped.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::nontemporal::copy_streaming;
use crate::{
    check_access, check_block_size, push_zeroes, whole_blocks, Backend, BackendError, BackendInfo,
    Result, SharedData,
};

/// Default page size of [`MemoryBackend`]: the unit of allocation, of locking
/// and of copy on write.
pub const MEMORY_CHUNK_SIZE: usize = 64 * 1024;

/// Namespaces at least this large are written with streaming stores: a random
/// block of them is rarely in the cache, and bypassing it made 4 KiB random
/// writes 17 % and 128 KiB writes 63 % faster (docs/performance.md). Smaller
/// namespaces (tests, scratch space) may fit in the last-level cache, where
/// ordinary stores keep rewritten blocks cached.
const STREAMING_MIN_CAPACITY: u64 = 64 << 20;

/// The x86-64 transparent huge page size: the size and alignment of a slab.
const HUGE_PAGE: usize = 2 << 20;

/// One mapping that pages are carved from.
struct Slab {
    map: memmap2::MmapRaw,
    /// Offset of the 2 MiB-aligned start inside `map`.
    start: usize,
    len: usize,
}

impl Slab {
    fn new(len: usize) -> std::io::Result<Self> {
        // Over-map by one huge page and use the aligned window inside; the
        // slack is never touched, so it costs address space only.
        let map: memmap2::MmapRaw = memmap2::MmapOptions::new()
            .len(len + HUGE_PAGE)
            .map_anon()?
            .into();
        let addr = map.as_ptr() as usize;
        let start = (HUGE_PAGE - addr % HUGE_PAGE) % HUGE_PAGE;
        // Best effort: without THP the slab works the same, with 4 KiB pages.
        let _ = map.advise_range(memmap2::Advice::HugePage, start, len);
        Ok(Self { map, start, len })
    }

    /// The first byte of the aligned window.
    fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr().wrapping_add(self.start)
    }
}

/// Hands out pages from slabs and takes them back.
struct Arena {
    page: usize,
    slab_len: usize,
    inner: Mutex<ArenaInner>,
}

#[derive(Default)]
struct ArenaInner {
    slabs: HashMap<u64, SlabState>,
    /// Slabs with a page to give.
    partial: BTreeSet<u64>,
    next_id: u64,
}

struct SlabState {
    slab: Arc<Slab>,
    /// Offsets of pages that were used and freed (their bytes are stale).
    free: Vec<usize>,
    /// Offsets from here on were never handed out (still zero from the kernel).
    fresh: usize,
    used: usize,
}

impl Arena {
    fn lock(&self) -> std::sync::MutexGuard<'_, ArenaInner> {
        // The bookkeeping is updated in single statements; a panic elsewhere
        // cannot leave it half-changed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A page for the caller alone; zero-filled if `zeroed`, else of any content.
    fn alloc(self: &Arc<Self>, zeroed: bool) -> std::io::Result<PageMem> {
        let mut g = self.lock();
        let id = match g.partial.first().copied() {
            Some(id) => id,
            None => {
                let slab = Arc::new(Slab::new(self.slab_len)?);
                let id = g.next_id;
                g.next_id += 1;
                g.slabs.insert(
                    id,
                    SlabState {
                        slab,
                        free: Vec::new(),
                        fresh: 0,
                        used: 0,
                    },
                );
                g.partial.insert(id);
                id
            }
        };
        let (slab, off, stale, full) = {
            let Some(s) = g.slabs.get_mut(&id) else {
                unreachable!("partial slabs are in the map")
            };
            let (off, stale) = match s.free.pop() {
                Some(off) => (off, true),
                None => {
                    let off = s.fresh;
                    s.fresh += self.page;
                    (off, false)
                }
            };
            s.used += 1;
            let full = s.free.is_empty() && s.fresh + self.page > s.slab.len;
            (s.slab.clone(), off, stale, full)
        };
        if full {
            g.partial.remove(&id);
        }
        drop(g);
        let ptr = NonNull::new(slab.base().wrapping_add(off))
            .ok_or_else(|| std::io::Error::other("a slab mapping at address zero"))?;
        let mut p = PageMem {
            arena: self.clone(),
            slab,
            slab_id: id,
            ptr,
        };
        if stale && zeroed {
            p.bytes_mut().fill(0);
        }
        Ok(p)
    }

    /// Takes a page back; unmaps its slab once all the slab's pages are back.
    fn free(&self, id: u64, off: usize) {
        let mut g = self.lock();
        let Some(s) = g.slabs.get_mut(&id) else {
            return;
        };
        s.free.push(off);
        s.used -= 1;
        if s.used == 0 {
            g.slabs.remove(&id);
            g.partial.remove(&id);
        } else {
            g.partial.insert(id);
        }
    }
}

/// One page of namespace memory: `arena.page` bytes at `ptr`, in the slab
/// `slab_id`, owned by this value alone until it is dropped (then the arena may
/// hand them out again).
struct PageMem {
    arena: Arc<Arena>,
    /// Keeps the slab mapped while the page is in use.
    slab: Arc<Slab>,
    slab_id: u64,
    /// The page's first byte: `slab.base()` plus the page's offset. Kept here
    /// so that a read follows no pointer past its slot: following `slab` to its
    /// base was one of three cache misses of every shared read
    /// (docs/performance.md).
    ptr: NonNull<u8>,
}

// SAFETY: a PageMem owns its page's bytes alone, as a `Box<[u8]>` owns its
// buffer (see `bytes`); `ptr` is only an address in the slab mapping it holds,
// whose own types are `Send` and `Sync`. Sending it to or sharing it with another
// thread is as sound as for that box.
#[allow(unsafe_code)]
unsafe impl Send for PageMem {}
// SAFETY: as for `Send`: shared access only reads (`bytes` takes `&self`).
#[allow(unsafe_code)]
unsafe impl Sync for PageMem {}

// `unsafe` here (the crate's other use is the block-device ioctls): pages are
// disjoint pieces of a shared mapping, each owned by one `PageMem`, which safe
// code cannot express with `MmapMut` (a `&mut` to one page would borrow the
// whole mapping). The need is measured: pages in 2 MiB huge-page slabs made 4 KiB random reads 25 % faster
// than 4 KiB pages, and sharing them with read data (instead of copying) saved
// the 16-20 % of the target's time spent copying (docs/performance.md).
#[allow(unsafe_code)]
impl PageMem {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is the slab's base plus an offset `off` with
        // `off + page <= slab.len` (Arena::alloc hands out offsets below
        // `fresh`, which stops at the slab's length, or offsets it handed out
        // before), so the range lies in the slab's mapping, which stays mapped
        // while `self.slab` is held. The arena gives each page to one PageMem at a
        // time and takes it back only when that PageMem is dropped, so no other
        // value reaches these bytes; writing needs `&mut self` (`bytes_mut`), so no
        // `&mut` to them exists while this borrow lives. The mapping is readable
        // and zero-initialised by the kernel, so every byte is initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.arena.page) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only access to the
        // page for the borrow's lifetime, and the mapping is writable.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.arena.page) }
    }
}

impl Drop for PageMem {
    fn drop(&mut self) {
        let off = self.ptr.as_ptr() as usize - self.slab.base() as usize;
        self.arena.free(self.slab_id, off);
    }
}

/// What a slot's lock guards: its page and the shared reads holding that page.
///
/// The count of holders lives here, in the slot's own cache line, rather than
/// in a reference count beside the page: a shared read then touches one line
/// of metadata instead of two (docs/performance.md).
struct SlotState {
    /// The page, if the slot was written since it was last discarded.
    page: Option<PageMem>,
    /// How many times this slot has retired a held page: a read names the page
    /// it holds by this number.
    gen: u64,
    /// Shared reads in flight that hold `page` ([`HeldPage`]). Readers add and
    /// take away under the read lock; a writer, under the write lock, sees it
    /// steady.
    holders: AtomicU32,
}

/// One slot of a [`MemoryBackend`]: a page's lock, the page and its holders, in
/// one cache line.
#[repr(align(64))]
struct Slot(RwLock<SlotState>);

// The point of the layout; Linux's `RwLock` is two 32-bit words and a flag.
#[cfg(target_os = "linux")]
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

/// A page a write or discard took out of its slot while shared reads still held
/// it: it lives until the last of them is done.
struct Retired {
    holders: u32,
    _page: PageMem,
}

/// The part of a [`MemoryBackend`] that shared reads keep alive.
struct Pages {
    slots: Box<[Slot]>,
    /// Retired pages by (slot, generation). Rare: only a write to a page whose
    /// read data is still on its way to the host puts one here.
    retired: Mutex<HashMap<(usize, u64), Retired>>,
    arena: Arc<Arena>,
}

/// A share of the [`Pages`] that [`HeldPage`]s hold. A backend has
/// [`ANCHORS`] of them, each on its own cache line, and a read takes the one of
/// its slot: reads on different threads then rarely count on the same line.
#[repr(align(64))]
struct Anchor(Arc<Pages>);

/// Number of [`Anchor`]s per backend.
const ANCHORS: usize = 16;

impl Pages {
    /// Gives back a hold that [`MemoryBackend::read_shared`] took on page
    /// `gen` of slot `idx`.
    fn release(&self, idx: usize, gen: u64) {
        {
            let s = read_lock(&self.slots[idx]);
            if s.gen == gen {
                s.holders.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        }
        // The page was retired: that happened under the slot's write lock,
        // together with the change of `gen` seen above.
        let last = {
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            match retired.get_mut(&(idx, gen)) {
                Some(r) if r.holders > 1 => {
                    r.holders -= 1;
                    None
                }
                Some(_) => retired.remove(&(idx, gen)),
                None => None,
            }
        };
        // Free the page (the arena's lock) outside the map's lock.
        drop(last);
    }

    /// Takes slot `idx`'s page out (to replace or discard it): retired if
    /// reads hold it, else freed.
    fn take_page(&self, idx: usize, s: &mut SlotState) {
        let Some(page) = s.page.take() else {
            return;
        };
        let holders = std::mem::take(s.holders.get_mut());
        if holders > 0 {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    (idx, s.gen),
                    Retired {
                        holders,
                        _page: page,
                    },
                );
            s.gen += 1;
        }
    }
}

/// Read data shared with a page (the owner of its `Bytes`): `len` bytes from
/// `within` of the page at `page`, page `gen` of slot `idx`, whose holders
/// count this value. The `Bytes` is made over exactly these bytes, so no
/// `slice` of it (a reference count up and down) is needed.
struct HeldPage {
    anchor: Arc<Anchor>,
    idx: usize,
    gen: u64,
    page: NonNull<u8>,
    within: usize,
    len: usize,
}

// SAFETY: the bytes at `page` are read-only while this value lives (see
// `as_ref`), so reading them from any thread is sound; everything else in it
// is `Send` and `Sync`.
#[allow(unsafe_code)]
unsafe impl Send for HeldPage {}
// SAFETY: as for `Send`.
#[allow(unsafe_code)]
unsafe impl Sync for HeldPage {}

#[allow(unsafe_code)]
impl AsRef<[u8]> for HeldPage {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `within + len` is at most the page size (`hold` takes a
        // segment of one page), so the range lies in the page this value holds,
        // which starts at `page` (a page's `ptr`). The hold keeps the page
        // allocated: while a slot's holders are above zero its page is neither
        // freed nor written in place (writes and discards go through
        // `page_for_write` and `take_page`, which retire a held page, and a
        // retired page is freed only when its last holder is released), and
        // `anchor` keeps the slots, the retired pages and the arena alive.
        unsafe { std::slice::from_raw_parts(self.page.as_ptr().add(self.within), self.len) }
    }
}

impl Drop for HeldPage {
    fn drop(&mut self) {
        self.anchor.0.release(self.idx, self.gen);
    }
}

/// Sparse RAM-backed namespace.
///
/// Storage is split into fixed-size pages, each slot behind its own `RwLock`;
/// a page is allocated on first write, unallocated pages read as zeroes, and
/// discard / write-zeroes free the pages they fully cover. Requests touching
/// different pages never contend. Volatile, never blocks on I/O.
pub struct MemoryBackend {
    info: BackendInfo,
    page: usize,
    capacity: u64,
    pages: Arc<Pages>,
    anchors: Box<[Arc<Anchor>]>,
    /// Write with streaming stores ([`copy_streaming`]): set when the namespace
    /// is larger than [`STREAMING_MIN_CAPACITY`], so that a written block is
    /// unlikely to be read again while it would still be cached.
    streaming: bool,
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("info", &self.info)
            .field("page", &self.page)
            .finish_non_exhaustive()
    }
}

/// Starts loading the cache line of `slot` (a slot is one line): at 4 KiB
/// random reads over a large namespace the slots are cold, and the load in
/// [`MemoryBackend::hold`] was most of its cost (docs/performance.md).
#[allow(unsafe_code)]
fn prefetch_line(slot: &Slot) {
    let p: *const Slot = slot;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: `_mm_prefetch` needs the `sse` target feature, which every
        // x86-64 CPU has (it is in the baseline this crate is built for); the
        // instruction only hints the cache, has no effect on memory and never
        // faults, and the address is that of a live slot anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn read_lock(c: &Slot) -> RwLockReadGuard<'_, SlotState> {
    // Pages hold plain bytes with no invariants, and the slot's fields are set
    // in single statements, so a poisoned lock (a panic in another thread
    // mid-copy) is harmless: keep going.
    c.0.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock(c: &Slot) -> RwLockWriteGuard<'_, SlotState> {
    c.0.write().unwrap_or_else(|e| e.into_inner())
}

/// One piece of a request that falls within a single page.
struct Segment {
    /// Page index.
    idx: usize,
    /// Byte offset within the page.
    within: usize,
    /// Length of the piece.
    len: usize,
}

impl MemoryBackend {
    /// Create a namespace of `size_bytes` (rounded down to whole blocks) with
    /// the default page size. Nothing is allocated for data until written.
    pub fn new(size_bytes: u64, block_size: u32) -> Result<Self> {
        Self::with_chunk_size(size_bytes, block_size, MEMORY_CHUNK_SIZE)
    }

    /// Like [`MemoryBackend::new`] with an explicit page size (`chunk_size`),
    /// which must be a power of two and a multiple of `block_size`. Smaller
    /// pages mean finer-grained locking, sparser allocation and cheaper copy on
    /// write at the cost of more bookkeeping; mainly useful for tests.
    pub fn with_chunk_size(size_bytes: u64, block_size: u32, chunk_size: usize) -> Result<Self> {
        check_block_size(block_size)?;
        if !chunk_size.is_power_of_two() || !chunk_size.is_multiple_of(block_size as usize) {
            return Err(BackendError::InvalidConfig(format!(
                "chunk size {chunk_size} must be a power of two and a multiple of the block size {block_size}"
            )));
        }
        let num_blocks = whole_blocks(size_bytes, block_size, || {
            format!("memory namespace size {size_bytes}")
        })?;
        let capacity = num_blocks * u64::from(block_size);
        let n_pages = usize::try_from(capacity.div_ceil(chunk_size as u64)).map_err(|_| {
            BackendError::InvalidConfig(format!("memory namespace size {size_bytes} too large"))
        })?;
        let mut slots = Vec::new();
        slots.try_reserve_exact(n_pages).map_err(|_| {
            BackendError::InvalidConfig(format!(
                "memory namespace size {size_bytes} too large: cannot allocate {n_pages} page slots"
            ))
        })?;
        slots.resize_with(n_pages, || {
            Slot(RwLock::new(SlotState {
                page: None,
                gen: 0,
                holders: AtomicU32::new(0),
            }))
        });
        let info = BackendInfo {
            block_size,
            num_blocks,
            volatile: true,
            supports_discard: true,
            may_block: false,
            description: format!("memory ({capacity} bytes, {block_size}-byte blocks)"),
        };
        let pages = Arc::new(Pages {
            slots: slots.into_boxed_slice(),
            retired: Mutex::new(HashMap::new()),
            arena: Arc::new(Arena {
                page: chunk_size,
                slab_len: chunk_size.max(HUGE_PAGE),
                inner: Mutex::new(ArenaInner::default()),
            }),
        });
        Ok(MemoryBackend {
            info,
            page: chunk_size,
            capacity,
            anchors: (0..ANCHORS)
                .map(|_| Arc::new(Anchor(pages.clone())))
                .collect(),
            pages,
            streaming: capacity >= STREAMING_MIN_CAPACITY,
        })
    }

    /// Overrides whether writes use streaming stores (by default only
    /// namespaces of at least 64 MiB do); lets tests and A/B runs cover both
    /// copies on any namespace size.
    pub fn with_streaming_writes(mut self, on: bool) -> Self {
        self.streaming = on;
        self
    }

    /// Number of bytes of namespace memory currently allocated (for diagnostics
    /// and tests of sparseness / discard).
    pub fn allocated_bytes(&self) -> u64 {
        self.pages
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| read_lock(s).page.is_some())
            .map(|(i, _)| self.page_len(i) as u64)
            .sum()
    }

    /// Length of page `idx` within the namespace (the last page may be shorter).
    fn page_len(&self, idx: usize) -> usize {
        let start = idx as u64 * self.page as u64;
        (self.capacity - start).min(self.page as u64) as usize
    }

    /// Split an already bounds-checked byte range into per-page segments.
    fn segments(&self, offset: u64, len: u64) -> impl Iterator<Item = Segment> + '_ {
        let ps = self.page as u64;
        let end = offset + len;
        let mut pos = offset;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let idx = (pos / ps) as usize;
            let within = (pos % ps) as usize;
            let n = (ps - within as u64).min(end - pos) as usize;
            pos += n as u64;
            Some(Segment {
                idx,
                within,
                len: n,
            })
        })
    }

    /// The page of slot `idx` (whose state `s` the caller holds locked for
    /// writing) for writing: allocated (zeroed) if absent, copied if a read
    /// still holds it. `whole` says the caller overwrites all of it.
    fn page_for_write<'a>(
        &self,
        idx: usize,
        s: &'a mut SlotState,
        whole: bool,
    ) -> Result<&'a mut PageMem> {
        let alloc_err = |e| BackendError::io("allocating namespace memory", e);
        let arena = &self.pages.arena;
        if s.page.is_none() {
            s.page = Some(arena.alloc(!whole).map_err(alloc_err)?);
        } else if *s.holders.get_mut() > 0 {
            // A read in flight holds this page: copy on write.
            let mut copy = arena.alloc(false).map_err(alloc_err)?;
            if let (false, Some(p)) = (whole, &s.page) {
                copy.bytes_mut().copy_from_slice(p.bytes());
            }
            self.pages.take_page(idx, s);
            s.page = Some(copy);
        }
        match s.page.as_mut() {
            Some(p) => Ok(p),
            None => unreachable!("the slot was given a page above"),
        }
    }

    /// `seg` of its page as read data that holds the page (see [`HeldPage`]),
    /// or `None` if the page was never written (it reads as zeroes).
    fn hold(&self, seg: &Segment) -> Option<Bytes> {
        let s = read_lock(&self.pages.slots[seg.idx]);
        let page = s.page.as_ref()?;
        s.holders.fetch_add(1, Ordering::Relaxed);
        let held = HeldPage {
            anchor: self.anchors[seg.idx % ANCHORS].clone(),
            idx: seg.idx,
            gen: s.gen,
            page: page.ptr,
            within: seg.within,
            len: seg.len,
        };
        drop(s);
        Some(Bytes::from_owner(held))
    }

    /// Zero a range, freeing pages that are fully covered.
    fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        check_access(&self.info, offset, len)?;
        for seg in self.segments(offset, len) {
            let mut guard = write_lock(&self.pages.slots[seg.idx]);
            if seg.within == 0 && seg.len == self.page_len(seg.idx) {
                self.pages.take_page(seg.idx, &mut guard);
            } else if guard.page.is_some() {
                let p = self.page_for_write(seg.idx, &mut guard, false)?;
                p.bytes_mut()[seg.within..seg.within + seg.len].fill(0);
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
            match read_lock(&self.pages.slots[seg.idx]).page.as_ref() {
                Some(p) => dst.copy_from_slice(&p.bytes()[seg.within..seg.within + seg.len]),
                None => dst.fill(0),
            }
            done += seg.len;
        }
        Ok(())
    }

    fn prefetch(&self, offset: u64) {
        if let Some(slot) = self.pages.slots.get((offset / self.page as u64) as usize) {
            prefetch_line(slot);
        }
    }

    fn read_shared(&self, offset: u64, len: u64) -> Result<Option<SharedData>> {
        check_access(&self.info, offset, len)?;
        let mut segs = self.segments(offset, len);
        match (segs.next(), segs.next()) {
            // Within one page (every 4 KiB read of 64 KiB pages): no vector.
            (Some(seg), None) => Ok(Some(match self.hold(&seg) {
                Some(b) => SharedData::One(b),
                None => {
                    let mut parts = Vec::new();
                    push_zeroes(&mut parts, seg.len);
                    SharedData::from_parts(parts)
                }
            })),
            (first, second) => {
                let mut parts = Vec::new();
                for seg in first.into_iter().chain(second).chain(segs) {
                    match self.hold(&seg) {
                        Some(b) => parts.push(b),
                        None => push_zeroes(&mut parts, seg.len),
                    }
                }
                Ok(Some(SharedData::from_parts(parts)))
            }
        }
    }

    fn write_at(&self, offset: u64, data: &[&[u8]], _fua: bool) -> Result<()> {
        let total: u64 = data.iter().map(|d| d.len() as u64).sum();
        check_access(&self.info, offset, total)?;
        let mut sources = data.iter().copied();
        let mut cur: &[u8] = &[];
        for seg in self.segments(offset, total) {
            let mut guard = write_lock(&self.pages.slots[seg.idx]);
            let whole = seg.within == 0 && seg.len == self.page;
            let page = self.page_for_write(seg.idx, &mut guard, whole)?;
            let dst = &mut page.bytes_mut()[seg.within..seg.within + seg.len];
            let mut filled = 0;
            while filled < dst.len() {
                while cur.is_empty() {
                    cur = sources.next().expect("total length covers all segments");
                }
                let k = cur.len().min(dst.len() - filled);
                if self.streaming {
                    copy_streaming(&mut dst[filled..filled + k], &cur[..k]);
                } else {
                    dst[filled..filled + k].copy_from_slice(&cur[..k]);
                }
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
    fn prefetch_takes_any_offset_and_changes_nothing() {
        let m = MemoryBackend::with_chunk_size(3 * 4096 + 512, 512, 4096).unwrap();
        m.write_at(4096, &[&[7u8; 512]], false).unwrap();
        for off in [0, 4096, 3 * 4096, 3 * 4096 + 512, 1 << 40, u64::MAX] {
            m.prefetch(off);
        }
        assert_eq!(m.allocated_bytes(), 4096, "a hint allocates nothing");
        let mut b = [0u8; 512];
        m.read_at(4096, &mut b).unwrap();
        assert_eq!(b, [7u8; 512]);
    }

    #[test]
    fn small_namespace_last_page_is_short() {
        let m = MemoryBackend::with_chunk_size(3 * 4096 + 512, 512, 4096).unwrap();
        assert_eq!(m.pages.slots.len(), 4);
        assert_eq!(m.page_len(3), 512);
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

    #[test]
    fn pages_are_reused_zeroed_and_slabs_unmapped() {
        let m = MemoryBackend::with_chunk_size(8 << 20, 512, 64 << 10).unwrap();
        m.write_at(0, &[&[0xabu8; 64 << 10]], false).unwrap();
        m.discard(0, 64 << 10).unwrap();
        // The slab's only page came back: the slab is gone.
        assert!(m.pages.arena.lock().slabs.is_empty());
        m.write_at(0, &[&[0xcdu8; 64 << 10]], false).unwrap();
        m.write_at(64 << 10, &[&[0xefu8; 64 << 10]], false).unwrap();
        m.discard(0, 64 << 10).unwrap();
        // A freed page of a live slab is reused, zeroed for a partial write.
        m.write_at(512, &[&[1u8; 512]], false).unwrap();
        let mut b = vec![0xffu8; 64 << 10];
        m.read_at(0, &mut b).unwrap();
        assert!(b[..512].iter().all(|&x| x == 0));
        assert!(b[512..1024].iter().all(|&x| x == 1));
        assert!(b[1024..].iter().all(|&x| x == 0));
        assert_eq!(m.pages.arena.lock().slabs.len(), 1);
    }

    #[test]
    fn a_held_read_keeps_its_data_while_the_page_is_rewritten() {
        let m = MemoryBackend::with_chunk_size(1 << 20, 512, 64 << 10).unwrap();
        m.write_at(0, &[&[1u8; 8192]], false).unwrap();
        let held = m.read_shared(0, 8192).unwrap().unwrap();
        m.write_at(4096, &[&[2u8; 512]], false).unwrap();
        m.discard(0, 64 << 10).unwrap();
        assert!(held.parts().iter().all(|p| p.iter().all(|&b| b == 1)));
        let mut now = vec![0xffu8; 8192];
        m.read_at(0, &mut now).unwrap();
        assert!(now.iter().all(|&b| b == 0));
        drop(held);
        assert!(
            m.pages.arena.lock().slabs.is_empty(),
            "every page came back"
        );
    }

    fn retired_count(m: &MemoryBackend) -> usize {
        m.pages.retired.lock().unwrap().len()
    }

    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(std::mem::align_of::<Slot>(), 64);
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn reads_held_across_several_rewrites_keep_each_its_own_data() {
        let m = MemoryBackend::with_chunk_size(1 << 20, 512, 4096).unwrap();
        let mut held = Vec::new();
        for round in 0..5u8 {
            m.write_at(0, &[&[round; 4096]], false).unwrap();
            // Two holders of the same generation, one of them a sub-range.
            held.push((round, m.read_shared(0, 4096).unwrap().unwrap()));
            held.push((round, m.read_shared(512, 1024).unwrap().unwrap()));
        }
        // Each rewrite retired the page its reads held.
        assert_eq!(retired_count(&m), 4);
        // Release in an order unrelated to the one they were taken in.
        held.swap(1, 6);
        held.swap(3, 8);
        while let Some((round, data)) = held.pop() {
            assert!(data.parts().iter().all(|p| p.iter().all(|&b| b == round)));
            assert!(data.len() == 4096 || data.len() == 1024);
        }
        assert_eq!(retired_count(&m), 0);
        assert_eq!(*write_lock(&m.pages.slots[0]).holders.get_mut(), 0);
        // Only the slot's current page is still allocated.
        assert_eq!(
            m.pages
                .arena
                .lock()
                .slabs
                .values()
                .map(|s| s.used)
                .sum::<usize>(),
            1
        );
        m.discard(0, 4096).unwrap();
        assert!(m.pages.arena.lock().slabs.is_empty());
    }

    #[test]
    fn a_read_held_past_its_namespace_keeps_its_data_and_frees_it_after() {
        let m = MemoryBackend::with_chunk_size(1 << 20, 512, 64 << 10).unwrap();
        m.write_at(65536, &[&[7u8; 65536]], false).unwrap();
        let held = m.read_shared(65536 + 4096, 8192).unwrap().unwrap();
        let pages = Arc::downgrade(&m.pages);
        drop(m);
        assert!(held.parts().iter().all(|p| p.iter().all(|&b| b == 7)));
        assert!(pages.upgrade().is_some(), "the hold keeps the pages");
        drop(held);
        assert!(pages.upgrade().is_none(), "the last hold frees them");
    }

    #[test]
    fn concurrent_writes_never_tear_a_block_that_a_shared_read_holds() {
        const BLOCKS: u64 = 64;
        let m = Arc::new(MemoryBackend::with_chunk_size(BLOCKS * 512, 512, 4096).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..2u8)
            .map(|w| {
                let (m, stop) = (m.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut v = w;
                    while !stop.load(Ordering::Relaxed) {
                        for b in 0..BLOCKS {
                            v = v.wrapping_add(2);
                            if b % 7 == 3 {
                                m.discard(b * 512, 512).unwrap();
                            } else {
                                m.write_at(b * 512, &[&[v; 512]], false).unwrap();
                            }
                        }
                        m.discard(0, 4096).unwrap();
                    }
                })
            })
            .collect();
        let mut kept = std::collections::VecDeque::new();
        for i in 0..20_000u64 {
            let off = (i * 13 % (BLOCKS - 4)) * 512;
            let data = m.read_shared(off, 2048).unwrap().unwrap();
            kept.push_back(data);
            if kept.len() > 32 {
                let old = kept.pop_front().unwrap();
                let bytes: Vec<u8> = old.parts().iter().flat_map(|p| p.iter().copied()).collect();
                for block in bytes.chunks(512) {
                    assert!(block.iter().all(|&b| b == block[0]), "a torn block");
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        drop(kept);
        assert_eq!(retired_count(&m), 0);
        for slot in m.pages.slots.iter() {
            assert_eq!(read_lock(slot).holders.load(Ordering::Relaxed), 0);
        }
        m.discard(0, BLOCKS * 512).unwrap();
        assert!(
            m.pages.arena.lock().slabs.is_empty(),
            "every page came back"
        );
    }
}
