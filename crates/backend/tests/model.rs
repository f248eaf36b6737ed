//! Property test: random sequences of writes, discards, write-zeroes and
//! reads on the memory and file backends behave like a plain `Vec<u8>`.

mod common;

use common::{pattern, split};
use nvmf_backend::{AlignedBuf, Backend, BackendError, DirectIo, FileBackend, MemoryBackend};
use proptest::prelude::*;

/// Namespace size in blocks used by every model run.
const BLOCKS: u64 = 48;

#[derive(Debug, Clone)]
enum Op {
    Write {
        blk: u64,
        n: u64,
        seed: u64,
        /// Scatter-gather chunk sizes; empty = one chunk.
        chunks: Vec<usize>,
        /// Use an aligned buffer (zero-copy O_DIRECT path) when unsplit.
        aligned: bool,
        fua: bool,
    },
    Discard {
        blk: u64,
        n: u64,
    },
    WriteZeroes {
        blk: u64,
        n: u64,
    },
    Read {
        blk: u64,
        n: u64,
    },
    /// `read_shared`, its buffers kept for `hold` further operations (as read
    /// data waiting to be sent while writes go on).
    ReadShared {
        blk: u64,
        n: u64,
        hold: usize,
    },
    Flush,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    // Ranges may run past the end (blk + n > BLOCKS) to check OutOfRange.
    let range = (0..BLOCKS + 2, 0..16u64);
    prop_oneof![
        4 => (range.clone(), any::<u64>(), prop::collection::vec(1..3000usize, 0..4), any::<bool>(), any::<bool>())
            .prop_map(|((blk, n), seed, chunks, aligned, fua)| Op::Write { blk, n, seed, chunks, aligned, fua }),
        2 => range.clone().prop_map(|(blk, n)| Op::Discard { blk, n }),
        2 => range.clone().prop_map(|(blk, n)| Op::WriteZeroes { blk, n }),
        2 => range.clone().prop_map(|(blk, n)| Op::Read { blk, n }),
        3 => (range, 0..8usize).prop_map(|((blk, n), hold)| Op::ReadShared { blk, n, hold }),
        1 => Just(Op::Flush),
    ]
}

fn run_model(b: &dyn Backend, ops: &[Op]) -> Result<(), TestCaseError> {
    let bs = u64::from(b.info().block_size);
    prop_assert_eq!(b.info().num_blocks, BLOCKS);
    let mut model = vec![0u8; (BLOCKS * bs) as usize];
    // Shared reads still held: (operations left, what they must still hold, the buffers).
    let mut held: Vec<(usize, Vec<u8>, nvmf_backend::SharedData)> = Vec::new();
    for op in ops {
        for (left, want, data) in &mut held {
            let got: Vec<u8> = data
                .parts()
                .iter()
                .flat_map(|p| p.iter().copied())
                .collect();
            prop_assert!(&got == want, "a held shared read changed under {:?}", op);
            *left = left.saturating_sub(1);
        }
        held.retain(|(left, _, _)| *left > 0);
        let (blk, n) = match *op {
            Op::Write { blk, n, .. }
            | Op::Discard { blk, n }
            | Op::WriteZeroes { blk, n }
            | Op::Read { blk, n }
            | Op::ReadShared { blk, n, .. } => (blk, n),
            Op::Flush => (0, 0),
        };
        let (off, len) = (blk * bs, n * bs);
        let in_range = blk + n <= BLOCKS;
        let range = off as usize..(off + len) as usize;
        let res = match op {
            Op::Write {
                seed,
                chunks,
                aligned,
                fua,
                ..
            } => {
                let data = pattern(*seed, len as usize);
                let res = if chunks.is_empty() && *aligned {
                    let mut ab = AlignedBuf::zeroed(data.len());
                    ab.copy_from_slice(&data);
                    b.write_at(off, &[&ab], *fua)
                } else if chunks.is_empty() {
                    b.write_at(off, &[&data], *fua)
                } else {
                    b.write_at(off, &split(&data, chunks), *fua)
                };
                if in_range {
                    model[range].copy_from_slice(&data);
                }
                res
            }
            Op::Discard { .. } => {
                let res = b.discard(off, len);
                if in_range {
                    model[range].fill(0);
                }
                res
            }
            Op::WriteZeroes { .. } => {
                let res = b.write_zeroes(off, len);
                if in_range {
                    model[range].fill(0);
                }
                res
            }
            Op::Read { .. } => {
                let mut buf = vec![0xA5u8; len as usize];
                let res = b.read_at(off, &mut buf);
                if in_range && res.is_ok() {
                    prop_assert_eq!(&buf[..], &model[range], "read {:?}", op);
                }
                res
            }
            Op::ReadShared { hold, .. } => match b.read_shared(off, len) {
                Ok(Some(data)) => {
                    prop_assert!(in_range, "{:?} should be out of range", op);
                    let got: Vec<u8> = data
                        .parts()
                        .iter()
                        .flat_map(|p| p.iter().copied())
                        .collect();
                    prop_assert_eq!(&got[..], &model[range.clone()], "shared read {:?}", op);
                    if *hold > 0 {
                        held.push((*hold, got, data));
                    }
                    Ok(())
                }
                // Not supported by this backend: it reads by copy instead.
                Ok(None) => b.read_at(off, &mut vec![0u8; len as usize]),
                Err(e) => Err(e),
            },
            Op::Flush => b.flush(),
        };
        if in_range {
            prop_assert!(res.is_ok(), "{:?} failed: {:?}", op, res);
        } else {
            prop_assert!(
                matches!(res, Err(BackendError::OutOfRange { .. })),
                "{:?} should be out of range, got {:?}",
                op,
                res
            );
        }
    }
    let mut all = vec![0xA5u8; model.len()];
    b.read_at(0, &mut all).unwrap();
    prop_assert!(all == model, "final contents differ from model");
    Ok(())
}

proptest! {
    #[test]
    fn memory_matches_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        // Small chunks so requests straddle chunk boundaries and whole-chunk
        // frees happen.
        let m = MemoryBackend::with_chunk_size(BLOCKS * 512, 512, 2048).unwrap();
        run_model(&m, &ops)?;
    }

    #[test]
    fn memory_streaming_writes_match_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        // Small namespaces write with ordinary stores by default; force the
        // streaming copy (unaligned head and tail included: 512-byte blocks
        // split across several data slices).
        let m = MemoryBackend::with_chunk_size(BLOCKS * 512, 512, 2048).unwrap().with_streaming_writes(true);
        run_model(&m, &ops)?;
    }

    #[test]
    fn memory_4k_matches_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let m = MemoryBackend::with_chunk_size(BLOCKS * 4096, 4096, 16384).unwrap();
        run_model(&m, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn file_buffered_matches_model(ops in prop::collection::vec(op_strategy(), 1..30)) {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let f = FileBackend::open(&dir.path().join("ns"), Some(BLOCKS * 512), 512, DirectIo::Off).unwrap();
        run_model(&f, &ops)?;
    }

    #[test]
    fn file_direct_matches_model(ops in prop::collection::vec(op_strategy(), 1..30)) {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let f = FileBackend::open(&dir.path().join("ns"), Some(BLOCKS * 4096), 4096, DirectIo::Auto).unwrap();
        run_model(&f, &ops)?;
    }
}
