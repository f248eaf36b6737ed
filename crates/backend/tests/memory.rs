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
    let m: Arc<dyn Backend> = Arc::new(MemoryBackend::new(16 * CHUNK, 512).unwrap());
    // Region A: each thread owns a contiguous 2 MiB slab (different chunks).
    // Region B: threads interleave 512-byte blocks inside the same chunks,
    // so writers constantly share chunk locks.
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let slab = t * CHUNK; // 1 MiB per thread in the first 8 MiB
                for r in 0..ROUNDS {
                    let off = slab + (r * IO) % CHUNK;
                    m.write_at(off, &[&pattern(t * 1000 + r, IO as usize)], false)
                        .unwrap();
                    let blk = 8 * CHUNK + (r * THREADS + t) * 512;
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
        let slab = t * CHUNK;
        for r in 0..ROUNDS {
            let off = slab + (r * IO) % CHUNK;
            let mut back = vec![0u8; IO as usize];
            m.read_at(off, &mut back).unwrap();
            assert_eq!(back, pattern(t * 1000 + r, IO as usize), "t{t} r{r}");
            let blk = 8 * CHUNK + (r * THREADS + t) * 512;
            let mut b = vec![0u8; 512];
            m.read_at(blk, &mut b).unwrap();
            assert_eq!(b, pattern(t * 7919 + r, 512), "interleaved t{t} r{r}");
        }
    }
}
