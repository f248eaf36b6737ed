//! One job: one I/O queue on its own OS thread and current-thread runtime, keeping
//! `iodepth` I/Os outstanding. An I/O larger than the controller's largest
//! transfer (MDTS) goes as several commands, all in flight at once, as
//! spdk_nvme_perf and the Linux block layer split it; its latency runs from
//! its first command to its last completion.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use nvmf_proto::sqe::io_opcode;
use nvmf_proto::tcp::{Completion, Digests, HostData};
use nvmf_proto::Sqe;
use nvmf_transport::{HostConnection, TransportAddr};

use super::session::{connect_queue, Controller};
use super::Rw;

/// How long a job waits for any completion before giving up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What every job shares (read only).
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Where to connect.
    pub addr: TransportAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Namespace.
    pub nsid: u32,
    /// Workload.
    pub rw: Rw,
    /// Percentage of reads for randrw.
    pub rwmixread: u32,
    /// Bytes per I/O.
    pub bs: u32,
    /// Bytes per command: `bs`, or less when `bs` is above the controller's
    /// largest transfer (then an I/O takes `bs.div_ceil(chunk)` commands).
    pub chunk: u32,
    /// I/Os outstanding per queue.
    pub iodepth: u16,
    /// Number of jobs.
    pub numjobs: u16,
    /// Bytes of the namespace used.
    pub size: u64,
    /// Run time.
    pub runtime: Duration,
    /// Digests.
    pub digests: Digests,
    /// Write a pattern first, check every read.
    pub verify: bool,
    /// Set CATTR bit 2 (disable SQ flow control) in the I/O queues' Connect.
    pub sqfc_disable: bool,
    /// Poll the socket instead of sleeping (`--hipri`).
    pub hipri: bool,
    /// TCP congestion control of the I/O connection, if not the system's.
    pub tcp_congestion: Option<String>,
    /// What the admin queue learnt.
    pub ctrl: Controller,
}

/// Counters the main thread samples once a second.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Completed I/Os.
    pub ios: AtomicU64,
    /// Bytes moved.
    pub bytes: AtomicU64,
}

/// What a job measured.
#[derive(Debug)]
pub struct JobResult {
    /// Read latencies, ns.
    pub read: Histogram<u64>,
    /// Write latencies, ns.
    pub write: Histogram<u64>,
    /// I/Os whose data did not match the pattern.
    pub verify_errors: u64,
    /// Time from start to the last completion.
    pub elapsed: Duration,
}

/// Latency histogram in nanoseconds (1 ns to 100 s, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

impl JobConfig {
    /// Commands per I/O.
    pub fn parts(&self) -> u32 {
        self.bs.div_ceil(self.chunk)
    }

    /// Commands outstanding per queue at most: the queue size asked for.
    pub fn queue_depth(&self) -> u32 {
        u32::from(self.iodepth) * self.parts()
    }
}

/// One command in flight: the part of I/O `tag` it carries.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    tag: u16,
    lba: u64,
    len: u32,
}

/// One I/O in flight.
#[derive(Debug, Clone, Copy, Default)]
struct Io {
    start_ns: u64,
    read: bool,
    /// Its commands not yet completed.
    left: u32,
}

/// xorshift64*: fast, good enough for offsets and the read/write mix.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with the pattern of the blocks starting at `lba`: every 8-byte word
/// depends on its LBA and its place in the block, so misplaced data is caught too.
pub fn fill_pattern(buf: &mut [u8], lba: u64, block_size: u32) {
    let words_per_block = (block_size / 8) as u64;
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        let i = i as u64;
        let b = lba + i / words_per_block;
        let v = mix(b) ^ (i % words_per_block).wrapping_mul(0x0100_0000_01B3);
        w.copy_from_slice(&v.to_le_bytes());
    }
}

/// True if the chunks hold exactly the pattern of `len` bytes at `lba`.
/// `scratch` is reused to avoid an allocation per I/O.
pub fn check_pattern(
    chunks: &[Bytes],
    lba: u64,
    block_size: u32,
    len: usize,
    scratch: &mut Vec<u8>,
) -> bool {
    scratch.resize(len, 0);
    fill_pattern(scratch, lba, block_size);
    let mut off = 0;
    for c in chunks {
        if off + c.len() > len || scratch[off..off + c.len()] != c[..] {
            return false;
        }
        off += c.len();
    }
    off == len
}

struct Job {
    cfg: Arc<JobConfig>,
    conn: HostConnection,
    slots: Vec<Slot>,
    ios: Vec<Io>,
    /// Tags of `ios` not in flight.
    free: Vec<u16>,
    rng: Rng,
    /// The shared write payload (cloned by reference count per write).
    write_buf: Bytes,
    scratch: Vec<u8>,
    nlb: u32,
    /// This job's stripe, in I/O units.
    stripe: (u64, u64),
    seq_next: u64,
    base: Instant,
    read: Histogram<u64>,
    write: Histogram<u64>,
    verify_errors: u64,
    live: Arc<LiveCounters>,
}

impl Job {
    fn is_read(&mut self) -> bool {
        match self.cfg.rw {
            Rw::Read | Rw::RandRead => true,
            Rw::Write | Rw::RandWrite => false,
            Rw::RandRw => self.rng.below(100) < u64::from(self.cfg.rwmixread),
        }
    }

    fn next_unit(&mut self) -> u64 {
        let units = self.cfg.size / u64::from(self.cfg.bs);
        if self.cfg.rw.is_random() {
            self.rng.below(units)
        } else {
            let (lo, hi) = self.stripe;
            let u = self.seq_next;
            self.seq_next = if u + 1 >= hi { lo } else { u + 1 };
            u
        }
    }

    /// Write data of the `len` bytes at `off` of an I/O, which start at `lba`.
    fn payload(&self, lba: u64, off: u32, len: u32) -> Bytes {
        if self.cfg.verify {
            let mut b = BytesMut::zeroed(len as usize);
            fill_pattern(&mut b, lba, self.cfg.ctrl.block_size);
            b.freeze()
        } else if len == self.cfg.bs {
            self.write_buf.clone()
        } else {
            self.write_buf.slice(off as usize..(off + len) as usize)
        }
    }

    /// Submits the I/O of `bs` bytes at `lba`: one command per `chunk`.
    fn issue_at(&mut self, lba: u64, read: bool, now_ns: u64) -> anyhow::Result<()> {
        let Some(tag) = self.free.pop() else {
            bail!("more than --iodepth I/Os in flight (a bug in nvmf perf)");
        };
        let (bs, chunk, bsz) = (self.cfg.bs, self.cfg.chunk, self.cfg.ctrl.block_size);
        self.ios[usize::from(tag)] = Io {
            start_ns: now_ns,
            read,
            left: self.cfg.parts(),
        };
        let mut off = 0;
        while off < bs {
            let len = chunk.min(bs - off);
            let plba = lba + u64::from(off / bsz);
            let (op, data) = if read {
                (io_opcode::READ, HostData::FromController(len))
            } else {
                (
                    io_opcode::WRITE,
                    HostData::ToController(self.payload(plba, off, len)),
                )
            };
            let sqe = Sqe::rw(op, self.cfg.nsid, plba, len / bsz, false);
            let cid = self.conn.submit(sqe, data)?;
            self.slots[usize::from(cid)] = Slot {
                tag,
                lba: plba,
                len,
            };
            off += len;
        }
        Ok(())
    }

    fn issue(&mut self, now_ns: u64) -> anyhow::Result<()> {
        let read = self.is_read();
        let lba = self.next_unit() * u64::from(self.nlb);
        self.issue_at(lba, read, now_ns)
    }

    /// Accounts one command's completion (checking read data with
    /// `--verify`); returns its I/O once that I/O's last command is done.
    fn settle(&mut self, c: &Completion) -> anyhow::Result<Option<Io>> {
        let slot = self.slots[usize::from(c.cqe.cid)];
        let io = &mut self.ios[usize::from(slot.tag)];
        if !c.cqe.status.is_success() {
            bail!(
                "{} of LBA {} failed: {}",
                if io.read { "read" } else { "write" },
                slot.lba,
                c.cqe.status
            );
        }
        if io.read
            && self.cfg.verify
            && !check_pattern(
                &c.data,
                slot.lba,
                self.cfg.ctrl.block_size,
                slot.len as usize,
                &mut self.scratch,
            )
        {
            if self.verify_errors < 5 {
                eprintln!("nvmf perf: verify: data mismatch at LBA {}", slot.lba);
            }
            self.verify_errors += 1;
        }
        io.left -= 1;
        if io.left > 0 {
            return Ok(None);
        }
        let io = *io;
        self.free.push(slot.tag);
        Ok(Some(io))
    }

    /// Accounts one completion; true if it finished an I/O.
    fn complete(&mut self, c: &Completion, now_ns: u64) -> anyhow::Result<bool> {
        let Some(io) = self.settle(c)? else {
            return Ok(false);
        };
        let lat = now_ns.saturating_sub(io.start_ns).max(1);
        if io.read {
            self.read.saturating_record(lat);
        } else {
            self.write.saturating_record(lat);
        }
        self.live.ios.fetch_add(1, Ordering::Relaxed);
        self.live
            .bytes
            .fetch_add(u64::from(self.cfg.bs), Ordering::Relaxed);
        Ok(true)
    }

    /// The next completion, or an error if the target goes quiet for
    /// [`STALL_TIMEOUT`] (the timer is only armed when the call has to wait).
    async fn next_completion(&mut self) -> anyhow::Result<Completion> {
        let outstanding = self.conn.outstanding();
        match tokio::time::timeout(STALL_TIMEOUT, self.conn.next_completion()).await {
            Ok(r) => Ok(r?),
            Err(_) => bail!(
                "no completion from the target in {} s ({outstanding} commands outstanding)",
                STALL_TIMEOUT.as_secs()
            ),
        }
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Writes the pattern over this job's stripe, `iodepth` at a time.
    async fn prefill(&mut self) -> anyhow::Result<()> {
        let (lo, hi) = self.stripe;
        let mut next = lo;
        let mut outstanding = 0u32;
        loop {
            while next < hi && outstanding < u32::from(self.cfg.iodepth) {
                let now = self.now_ns();
                self.issue_at(next * u64::from(self.nlb), false, now)?;
                next += 1;
                outstanding += 1;
            }
            if outstanding == 0 {
                return Ok(());
            }
            let c = self.next_completion().await?;
            if self.settle(&c)?.is_some() {
                outstanding -= 1;
            }
        }
    }

    async fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<Duration> {
        self.base = Instant::now();
        self.live.ios.store(0, Ordering::Relaxed);
        self.live.bytes.store(0, Ordering::Relaxed);
        let deadline = self.cfg.runtime.as_nanos() as u64;
        for _ in 0..self.cfg.iodepth {
            self.issue(0)?;
        }
        self.conn.kick()?;
        let mut stopping = false;
        let mut outstanding = u32::from(self.cfg.iodepth);
        let mut last = 0;
        while outstanding > 0 {
            let c = self.next_completion().await?;
            let now = self.now_ns();
            last = now;
            if !stopping && (now >= deadline || stop.load(Ordering::Relaxed)) {
                stopping = true;
            }
            if self.complete(&c, now)? {
                if stopping {
                    outstanding -= 1;
                } else {
                    self.issue(now)?;
                }
            }
            let mut n = 0u32;
            while let Some(c) = self.conn.try_completion()? {
                if !self.complete(&c, now)? {
                    continue;
                }
                if stopping {
                    outstanding -= 1;
                } else {
                    self.issue(now)?;
                }
                n += 1;
                if n.is_multiple_of(KICK_EVERY) {
                    // Send these while the rest are handled: the target starts
                    // on them instead of waiting for the whole batch.
                    self.conn.kick()?;
                }
            }
        }
        Ok(Duration::from_nanos(last))
    }
}

/// While draining a batch of completions, new commands go out every this many.
const KICK_EVERY: u32 = 16;

/// Messages from a job thread to the main thread.
#[derive(Debug)]
pub enum JobMsg {
    /// Connected (and prefilled with `--verify`); waiting for the start signal.
    Ready,
    /// Finished.
    Done(usize, Box<anyhow::Result<JobResult>>),
}

/// The body of job `index`'s thread.
pub fn thread_main(
    index: usize,
    cfg: Arc<JobConfig>,
    cpu: Option<usize>,
    live: Arc<LiveCounters>,
    stop: Arc<AtomicBool>,
    tx: tokio::sync::mpsc::UnboundedSender<JobMsg>,
    mut go: tokio::sync::watch::Receiver<u8>,
) {
    let result = (|| {
        if let Some(cpu) = cpu {
            let mut set = rustix::thread::CpuSet::new();
            set.set(cpu);
            rustix::thread::sched_setaffinity(None, &set)
                .with_context(|| format!("cannot pin job {index} to CPU {cpu}"))?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a runtime")?;
        rt.block_on(async {
            let qid = index as u16 + 1;
            let depth = u16::try_from(cfg.queue_depth()).context("queue depth")?;
            let (mut conn, _) = connect_queue(
                &cfg.addr,
                &cfg.subnqn,
                qid,
                cfg.ctrl.cntlid,
                depth,
                cfg.digests,
                cfg.sqfc_disable,
            )
            .await?;
            conn.set_limits(cfg.ctrl.max_icd, depth);
            if let Some(tcp) = conn.tcp_connection() {
                if let Some(cc) = &cfg.tcp_congestion {
                    tcp.set_tcp_congestion(cc)?;
                }
                if cfg.hipri {
                    tcp.set_busy_poll(Duration::MAX);
                }
            }
            let units = cfg.size / u64::from(cfg.bs);
            let n = u64::from(cfg.numjobs);
            let i = index as u64;
            let stripe = (
                units * i / n,
                (units * (i + 1) / n).max(units * i / n + 1).min(units),
            );
            let mut wb = vec![0u8; cfg.bs as usize];
            fill_pattern(&mut wb, index as u64 * 0x1_0000_0000, cfg.ctrl.block_size);
            let mut job = Job {
                conn,
                slots: vec![Slot::default(); 1 << 16],
                ios: vec![Io::default(); usize::from(cfg.iodepth)],
                free: (0..cfg.iodepth).rev().collect(),
                rng: Rng(mix(0x5eed ^ (index as u64 + 1)) | 1),
                write_buf: Bytes::from(wb),
                scratch: Vec::with_capacity(cfg.bs as usize),
                nlb: cfg.bs / cfg.ctrl.block_size,
                seq_next: stripe.0,
                stripe,
                base: Instant::now(),
                read: new_histogram(),
                write: new_histogram(),
                verify_errors: 0,
                live,
                cfg: cfg.clone(),
            };
            if cfg.verify {
                job.prefill().await.context("verify prefill")?;
            }
            let _ = tx.send(JobMsg::Ready);
            loop {
                match *go.borrow_and_update() {
                    1 => break,
                    2 => bail!("aborted"),
                    _ => {}
                }
                if go.changed().await.is_err() {
                    bail!("aborted");
                }
            }
            let elapsed = job.run(&stop).await?;
            job.conn.close().await;
            Ok(JobResult {
                read: job.read,
                write: job.write,
                verify_errors: job.verify_errors,
                elapsed,
            })
        })
    })();
    let _ = tx.send(JobMsg::Done(
        index,
        Box::new(result.map_err(|e: anyhow::Error| e.context(format!("job {index}")))),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_pattern_roundtrip() {
        let mut b = vec![0u8; 8192];
        fill_pattern(&mut b, 100, 512);
        let chunks = vec![
            Bytes::copy_from_slice(&b[..3000]),
            Bytes::copy_from_slice(&b[3000..]),
        ];
        let mut s = Vec::new();
        assert!(check_pattern(&chunks, 100, 512, 8192, &mut s));
        assert!(!check_pattern(&chunks, 101, 512, 8192, &mut s));
        // The second half of the buffer is the pattern of LBA 108 onwards.
        assert!(check_pattern(
            &[Bytes::copy_from_slice(&b[4096..])],
            108,
            512,
            4096,
            &mut s
        ));
        let mut bad = b.clone();
        bad[5000] ^= 1;
        assert!(!check_pattern(&[Bytes::from(bad)], 100, 512, 8192, &mut s));
    }

    #[test]
    fn perf_rng_below_in_range() {
        let mut r = Rng(12345);
        for _ in 0..10_000 {
            assert!(r.below(7) < 7);
        }
    }
}
