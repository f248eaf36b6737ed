//! `nvmf io-check`: connect, write a pattern over every I/O queue, read it back, compare.

use crate::stdout::outln;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use nvmf_host::Controller;
use serde_json::json;

use super::{parse_size, Fabric, Out, OutputFormat};

/// Flags of `io-check`.
#[derive(Debug, Args)]
pub struct IoCheckArgs {
    #[command(flatten)]
    fabric: Fabric,
    /// Subsystem NQN.
    #[arg(short = 'n', long = "nqn")]
    nqn: String,
    /// Number of I/O queues.
    #[arg(short = 'i', long = "nr-io-queues", default_value_t = 4)]
    nr_io_queues: u16,
    /// I/O queue size.
    #[arg(short = 'Q', long = "queue-size", default_value_t = 128)]
    queue_size: u16,
    /// Namespace ID.
    #[arg(long, default_value_t = 1)]
    nsid: u32,
    /// Bytes to write and read back (k, M, G suffixes).
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    bytes: u64,
    /// Byte offset into the namespace (a multiple of the block size).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    offset: u64,
    /// Also write the pattern to this file.
    #[arg(long = "pattern-out")]
    pattern_out: Option<PathBuf>,
    /// Seed of the pattern (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    out: Out,
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Runs `io-check`.
pub fn run(a: IoCheckArgs, rt: tokio::runtime::Runtime) -> anyhow::Result<()> {
    nvmf_proto::fabrics::validate_nqn(&a.nqn)
        .map_err(|e| anyhow!("subsystem NQN '{}': {e}", a.nqn))?;
    let mut o = a
        .fabric
        .options(&a.nqn, nvmf_transport::addr::DEFAULT_PORT)?;
    o.nr_io_queues = a.nr_io_queues.max(1);
    o.queue_size = a.queue_size;
    o.ctrl_loss_tmo = Some(std::time::Duration::from_secs(0));
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(42)
    });
    rt.block_on(async move {
        let t0 = Instant::now();
        let c = Controller::connect(o.clone()).await?;
        let connect_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let r = check(&c, &a, seed).await;
        let _ = c.disconnect().await;
        let (wsecs, rsecs, bs, queues) = r?;
        let mib = a.bytes as f64 / (1 << 20) as f64;
        let info = c.info();
        match a.out.output {
            OutputFormat::Json => outln!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "result": "pass", "subnqn": a.nqn, "traddr": o.addr.traddr(), "trsvcid": o.addr.trsvcid(),
                    "nsid": a.nsid, "bytes": a.bytes, "offset": a.offset, "block_size": bs,
                    "io_queues": queues, "hdr_digest": info.digests.header, "data_digest": info.digests.data,
                    "max_transfer": info.max_transfer, "connect_ms": connect_ms,
                    "write_mib_s": mib / wsecs, "read_mib_s": mib / rsecs, "seed": seed,
                }))?
            ),
            OutputFormat::Normal => {
                outln!("io-check: {} at {} (cntlid {}), nsid {}, {} I/O queue(s), header digest {}, data digest {}",
                    a.nqn, o.addr, info.cntlid, a.nsid, queues,
                    if info.digests.header { "on" } else { "off" }, if info.digests.data { "on" } else { "off" });
                outln!("  wrote {} bytes at offset {} in {:.1} ms ({:.1} MiB/s), {}-byte blocks, {} KiB per command",
                    a.bytes, a.offset, wsecs * 1000.0, mib / wsecs, bs, info.max_transfer / 1024);
                outln!("  read back in {:.1} ms ({:.1} MiB/s)", rsecs * 1000.0, mib / rsecs);
                outln!("  PASS: all {} bytes match (seed {seed})", a.bytes);
            }
        }
        Ok(())
    })
}

async fn check(c: &Controller, a: &IoCheckArgs, seed: u64) -> anyhow::Result<(f64, f64, u32, u16)> {
    let ns = c.namespace(a.nsid)?;
    let bs = u64::from(ns.block_size);
    if a.bytes == 0 || !a.bytes.is_multiple_of(bs) || !a.offset.is_multiple_of(bs) {
        bail!("--bytes {} and --offset {} must be multiples of the {bs}-byte block size (and bytes > 0)", a.bytes, a.offset);
    }
    if a.offset + a.bytes > ns.size_bytes() {
        bail!(
            "{} bytes at offset {} do not fit namespace {} ({} bytes)",
            a.bytes,
            a.offset,
            a.nsid,
            ns.size_bytes()
        );
    }
    let data = pattern(a.bytes as usize, seed);
    if let Some(p) = &a.pattern_out {
        std::fs::write(p, &data).with_context(|| format!("writing {}", p.display()))?;
    }
    const SEG: u64 = 64 << 20;
    let t = Instant::now();
    let mut off = 0u64;
    while off < a.bytes {
        let n = SEG.min(a.bytes - off);
        let part = data[off as usize..(off + n) as usize].to_vec();
        c.write(a.nsid, (a.offset + off) / bs, part, false).await?;
        off += n;
    }
    let wsecs = t.elapsed().as_secs_f64().max(1e-9);
    let t = Instant::now();
    let mut off = 0u64;
    while off < a.bytes {
        let n = SEG.min(a.bytes - off);
        let got = c.read(a.nsid, (a.offset + off) / bs, n / bs).await?;
        let want = &data[off as usize..(off + n) as usize];
        if got != want {
            let i = got
                .iter()
                .zip(want)
                .position(|(x, y)| x != y)
                .unwrap_or(got.len().min(want.len()));
            let bad = got.iter().zip(want).filter(|(x, y)| x != y).count();
            bail!(
                "MISMATCH: byte {} (LBA {}) reads {:#04x}, {:#04x} was written; {bad} bytes differ in this {n}-byte segment",
                a.offset + off + i as u64,
                (a.offset + off + i as u64) / bs,
                got.get(i).copied().unwrap_or(0),
                want.get(i).copied().unwrap_or(0)
            );
        }
        off += n;
    }
    let rsecs = t.elapsed().as_secs_f64().max(1e-9);
    Ok((wsecs, rsecs, ns.block_size, c.nr_io_queues()))
}
