//! Cost of a shared 4 KiB random read from a memory namespace, with and
//! without the prefetch hint the controller gives a batch of commands before
//! it runs them (`Backend::prefetch`). The read data is copied once, as the
//! kernel copies it into the socket.
//!
//! `cargo run --release -p nvmf-backend --example memory_reads [GiB] [batch] [rounds]`
//! (defaults 1, 16, 5). Prints ns per read for each mode, rounds interleaved.

use std::time::Instant;

use nvmf_backend::{Backend, MemoryBackend, SharedData};

/// xorshift64*, for random block numbers.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        ((u128::from(x.wrapping_mul(0x2545_F491_4F6C_DD1D)) * u128::from(n)) >> 64) as u64
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    None,
    Prefetch,
}

fn run(be: &MemoryBackend, mode: Mode, batch: usize, reads: usize, rng: &mut Rng) -> f64 {
    let blocks = be.info().num_blocks;
    let mut offs = vec![0u64; batch];
    let mut sink = vec![0u8; 4096];
    let mut check = 0u64;
    let t = Instant::now();
    for _ in 0..reads / batch {
        for o in offs.iter_mut() {
            *o = rng.below(blocks) * 4096;
        }
        if matches!(mode, Mode::Prefetch) {
            offs.iter().for_each(|&o| be.prefetch(o));
        }
        for &o in &offs {
            let Some(SharedData::One(b)) = be.read_shared(o, 4096).unwrap() else {
                panic!("a written 4 KiB block is one shared buffer");
            };
            sink.copy_from_slice(&b);
            check = check.wrapping_add(u64::from(sink[17]));
        }
    }
    std::hint::black_box(check);
    t.elapsed().as_nanos() as f64 / (reads / batch * batch) as f64
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: GiB batch rounds"))
        .collect();
    let gib = args.first().copied().unwrap_or(1);
    let batch = args.get(1).copied().unwrap_or(16) as usize;
    let rounds = args.get(2).copied().unwrap_or(5);
    let be = MemoryBackend::new(gib << 30, 4096).expect("memory namespace");
    let chunk = vec![0x5au8; 1 << 20];
    for off in (0..gib << 30).step_by(1 << 20) {
        be.write_at(off, &[&chunk], false).unwrap();
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let reads = 2_000_000;
    let modes = [Mode::None, Mode::Prefetch];
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for r in 0..rounds {
        for (i, m) in modes.iter().enumerate() {
            let ns = run(&be, *m, batch, reads, &mut rng);
            println!("round {r} {m:?}: {ns:.1} ns per read");
            all[i].push(ns);
        }
    }
    for (i, m) in modes.iter().enumerate() {
        let mut v = all[i].clone();
        v.sort_by(f64::total_cmp);
        println!(
            "{m:?}: median {:.1} ns per read ({gib} GiB, batches of {batch})",
            v[v.len() / 2]
        );
    }
}
