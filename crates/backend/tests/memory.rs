//! Memory backend tests.

mod common;

use std::sync::Arc;

use common::{pattern, split};
use nvmf_backend::{open_memory, Backend, BackendError, MemoryBackend, MEMORY_CHUNK_SIZE};

const CHUNK: u64 = MEMORY_CHUNK_SIZE as u64;

#[test]
fn one_gib_is_cheap_and_sparse() {
    let m = MemoryBackend::new(1 << 30, 512).unwrap();
    let info = m.info();
    assert_eq!(info.block_size, 512);
    assert_eq!(info.num_blocks, (1 << 30) / 512);
    assert_eq!(info.capacity_bytes(), 1 << 30);
    assert!(info.volatile);
    assert!(!info.may_block);
    assert!(info.supports_discard);
    assert_eq!(m.allocated_bytes(), 0);
    let mut buf = vec![0xAAu8; 8192];
    m.read_at((1 << 30) - 8192, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(m.allocated_bytes(), 0, "reads must not allocate");
    m.write_at(5 * CHUNK + 512, &[&[1u8; 512]], false).unwrap();
    assert_eq!(m.allocated_bytes(), CHUNK);
}

#[test]
fn open_memory_returns_trait_object() {
    let b: Arc<dyn Backend> = open_memory(1 << 20, 4096).unwrap();
    assert_eq!(b.info().num_blocks, 256);
    assert!(format!("{b:?}").contains("MemoryBackend"));
}

#[test]
fn size_rounds_down_and_rejects_tiny() {
    let m = MemoryBackend::new(1000, 512).unwrap();
    assert_eq!(m.info().num_blocks, 1);
    assert!(matches!(
        MemoryBackend::new(511, 512),
        Err(BackendError::InvalidConfig(_))
    ));
    assert!(matches!(
        MemoryBackend::new(1 << 20, 1000),
        Err(BackendError::InvalidConfig(_))
    ));
}

#[test]
fn round_trips_at_various_offsets() {
    let m = MemoryBackend::new(8 * CHUNK, 512).unwrap();
    let cases: &[(u64, usize)] = &[
        (0, 512),
        (512, 4096),
        (CHUNK - 512, 1024),                    // straddles a chunk boundary
        (CHUNK, CHUNK as usize),                // exactly one chunk
        (2 * CHUNK - 4096, 3 * CHUNK as usize), // spans four chunks
        (8 * CHUNK - 512, 512),                 // last block
    ];
    for (i, &(off, len)) in cases.iter().enumerate() {
        let data = pattern(i as u64, len);
        let chunks = split(&data, &[1, 511, 3000, 7]);
        m.write_at(off, &chunks, i % 2 == 0).unwrap();
        let mut back = vec![0u8; len];
        m.read_at(off, &mut back).unwrap();
        assert_eq!(back, data, "case {i}");
    }
    m.flush().unwrap();
}

#[test]
fn unwritten_neighbours_read_zero() {
    let m = MemoryBackend::new(4 * CHUNK, 512).unwrap();
    m.write_at(CHUNK + 4096, &[&pattern(1, 4096)], false)
        .unwrap();
    let mut buf = vec![0xFFu8; 4 * CHUNK as usize];
    m.read_at(0, &mut buf).unwrap();
    let (w0, w1) = ((CHUNK + 4096) as usize, (CHUNK + 8192) as usize);
    assert!(buf[..w0].iter().all(|&b| b == 0));
    assert_eq!(&buf[w0..w1], &pattern(1, 4096)[..]);
    assert!(buf[w1..].iter().all(|&b| b == 0));
}

#[test]
fn discard_frees_covered_chunks_and_zeroes_partial() {
    let m = MemoryBackend::new(8 * CHUNK, 512).unwrap();
    let data = pattern(7, 4 * CHUNK as usize);
    m.write_at(0, &[&data], false).unwrap();
    assert_eq!(m.allocated_bytes(), 4 * CHUNK);

    // Covers chunk 1 and 2 fully, parts of chunks 0 and 3.
    let (d0, dlen) = (CHUNK - 4096, 2 * CHUNK + 8192);
    m.discard(d0, dlen).unwrap();
    assert_eq!(m.allocated_bytes(), 2 * CHUNK);

    let mut back = vec![0u8; 4 * CHUNK as usize];
    m.read_at(0, &mut back).unwrap();
    let mut expect = data.clone();
    expect[d0 as usize..(d0 + dlen) as usize].fill(0);
    assert_eq!(back, expect);

    // Discarding never-written space is fine and allocates nothing.
    m.discard(6 * CHUNK, 2 * CHUNK).unwrap();
    assert_eq!(m.allocated_bytes(), 2 * CHUNK);
}

#[test]
fn write_zeroes_zeroes_range() {
    let m = MemoryBackend::new(4 * CHUNK, 4096).unwrap();
    let data = pattern(3, 3 * CHUNK as usize);
    m.write_at(0, &[&data], false).unwrap();
    m.write_zeroes(4096, 2 * CHUNK).unwrap();
    let mut back = vec![0u8; data.len()];
    m.read_at(0, &mut back).unwrap();
    let mut expect = data;
    expect[4096..(2 * CHUNK + 4096) as usize].fill(0);
    assert_eq!(back, expect);
    // chunk 1 was fully covered and is released.
    assert_eq!(m.allocated_bytes(), 2 * CHUNK);
}

#[test]
fn out_of_range_and_misaligned() {
    let m = MemoryBackend::new(CHUNK, 512).unwrap();
    let mut buf = vec![0u8; 1024];
    let oor = |r: Result<(), BackendError>| matches!(r, Err(BackendError::OutOfRange { .. }));
    assert!(oor(m.read_at(CHUNK - 512, &mut buf)));
    assert!(oor(m.read_at(CHUNK, &mut buf[..512])));
    assert!(oor(m.read_at(u64::MAX - 511, &mut buf)));
    assert!(oor(m.write_at(
        CHUNK - 512,
        &[&buf[..512], &buf[..512]],
        false
    )));
    assert!(oor(m.discard(512, u64::MAX)));
    assert!(oor(m.write_zeroes(u64::MAX - 511, 1024)));
    assert!(matches!(
        m.read_at(100, &mut buf),
        Err(BackendError::Misaligned { .. })
    ));
    assert!(matches!(
        m.write_at(0, &[&buf[..100]], false),
        Err(BackendError::Misaligned { .. })
    ));
    let e = m.read_at(CHUNK, &mut buf).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("access beyond end of namespace: offset {CHUNK} len 1024 capacity {CHUNK}")
    );
    assert!(!e.is_media_error());
    // Zero-length accesses at the end are fine.
    m.read_at(CHUNK, &mut []).unwrap();
    m.write_at(CHUNK, &[], false).unwrap();
    assert_eq!(m.allocated_bytes(), 0);
}

#[test]
fn concurrent_writers_distinct_regions() {
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 64;
    const IO: u64 = 8192;
    // Region A: each thread owns ROUNDS * IO bytes (many pages of its own).
    // Region B: threads interleave 512-byte blocks inside the same pages, so
    // writers constantly share page locks.
    const REGION: u64 = ROUNDS * IO;
    let b_start = THREADS * REGION;
    let size = b_start + (ROUNDS * THREADS * 512).div_ceil(CHUNK) * CHUNK;
    let m: Arc<dyn Backend> = Arc::new(MemoryBackend::new(size, 512).unwrap());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                for r in 0..ROUNDS {
                    let off = t * REGION + r * IO;
                    m.write_at(off, &[&pattern(t * 1000 + r, IO as usize)], false)
                        .unwrap();
                    let blk = b_start + (r * THREADS + t) * 512;
                    m.write_at(blk, &[&pattern(t * 7919 + r, 512)], false)
                        .unwrap();
                    let mut back = vec![0u8; IO as usize];
                    m.read_at(off, &mut back).unwrap();
                    assert_eq!(back, pattern(t * 1000 + r, IO as usize));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for t in 0..THREADS {
        for r in 0..ROUNDS {
            let off = t * REGION + r * IO;
            let mut back = vec![0u8; IO as usize];
            m.read_at(off, &mut back).unwrap();
            assert_eq!(back, pattern(t * 1000 + r, IO as usize), "t{t} r{r}");
            let blk = b_start + (r * THREADS + t) * 512;
            let mut b = vec![0u8; 512];
            m.read_at(blk, &mut b).unwrap();
            assert_eq!(b, pattern(t * 7919 + r, 512), "interleaved t{t} r{r}");
        }
    }
}

/// Threads write, discard and hold shared reads in regions of their own while
/// the page allocator serves them all: pages freed by one thread are reused by
/// another, slabs come and go, and no thread ever sees another's data.
#[test]
fn concurrent_allocation_copy_on_write_and_reuse() {
    const THREADS: u64 = 4;
    const PAGE: u64 = 4096;
    const PAGES: u64 = 600; // per thread: more than one 2 MiB slab each
    let m = Arc::new(
        MemoryBackend::with_chunk_size(THREADS * PAGES * PAGE, 512, PAGE as usize).unwrap(),
    );
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let base = t * PAGES * PAGE;
                let mut model = vec![0u8; (PAGES * PAGE) as usize];
                let mut held: Vec<(Vec<u8>, nvmf_backend::SharedData)> = Vec::new();
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                let mut rnd = |n: u64| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % n
                };
                for i in 0..3000u64 {
                    let blk = rnd(PAGES * PAGE / 512);
                    let n = 1 + rnd(24).min(PAGES * PAGE / 512 - blk - 1);
                    let (off, len) = (blk * 512, n * 512);
                    let r = off as usize..(off + len) as usize;
                    match rnd(4) {
                        0 => {
                            let d = pattern(t << 32 | i, len as usize);
                            m.write_at(base + off, &[&d], false).unwrap();
                            model[r].copy_from_slice(&d);
                        }
                        1 => {
                            m.discard(base + off, len).unwrap();
                            model[r].fill(0);
                        }
                        _ => {
                            let s = m.read_shared(base + off, len).unwrap().unwrap();
                            let got: Vec<u8> =
                                s.parts().iter().flat_map(|p| p.iter().copied()).collect();
                            assert_eq!(got, model[r], "thread {t} op {i}");
                            held.push((got, s));
                            if held.len() > 16 {
                                let (want, s) = held.remove(rnd(held.len() as u64) as usize);
                                let got: Vec<u8> =
                                    s.parts().iter().flat_map(|p| p.iter().copied()).collect();
                                assert_eq!(got, want, "thread {t}: a held read changed");
                            }
                        }
                    }
                }
                for (want, s) in held {
                    let got: Vec<u8> = s.parts().iter().flat_map(|p| p.iter().copied()).collect();
                    assert_eq!(got, want, "thread {t}: a held read changed");
                }
                let mut all = vec![0xa5u8; model.len()];
                m.read_at(base, &mut all).unwrap();
                assert!(all == model, "thread {t}: final contents differ");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    m.discard(0, THREADS * PAGES * PAGE).unwrap();
    assert_eq!(m.allocated_bytes(), 0);
}
