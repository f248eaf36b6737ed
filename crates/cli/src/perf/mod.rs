//! `nvmf perf`: the load generator.
//!
//! Options follow fio's names. Each job (`--numjobs`) is one I/O queue on its own
//! OS thread with its own current-thread runtime; the main thread keeps the admin
//! queue alive and prints progress once a second. Latencies go into per-job
//! HDR histograms that are merged at the end.

mod job;
mod report;
mod session;

use crate::stdout::{emit, outln};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nvmf_proto::sqe::admin_opcode;
use nvmf_proto::tcp::{Digests, HostData};
use nvmf_proto::Sqe;
use nvmf_transport::TransportAddr;

use job::{JobConfig, JobMsg, LiveCounters};

/// The I/O pattern (fio's `--rw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(clippy::enum_variant_names)]
pub enum Rw {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    #[value(name = "randread")]
    RandRead,
    /// Random writes.
    #[value(name = "randwrite")]
    RandWrite,
    /// Random mixed reads and writes (`--rwmixread` percent reads).
    #[value(name = "randrw")]
    RandRw,
}

impl Rw {
    fn is_random(self) -> bool {
        matches!(self, Rw::RandRead | Rw::RandWrite | Rw::RandRw)
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table for people.
    Normal,
    /// One JSON object on stdout.
    Json,
}

fn parse_size(s: &str) -> Result<u64, String> {
    nvmf_backend::parse_size(s)
}

/// A CPU list (`0,1` or `2-3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    parse_cpus(s).map(CpuList)
}

fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: usize = a.parse().map_err(|_| format!("bad CPU '{a}'"))?;
            let b: usize = b.parse().map_err(|_| format!("bad CPU '{b}'"))?;
            if a > b {
                return Err(format!("bad CPU range '{part}'"));
            }
            v.extend(a..=b);
        } else {
            v.push(part.parse().map_err(|_| format!("bad CPU '{part}'"))?);
        }
    }
    if v.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(v)
}

/// Options of `nvmf perf` (named after fio's).
#[derive(Debug, clap::Args)]
pub struct PerfArgs {
    /// Transport type (only tcp).
    #[arg(short = 't', long = "transport", default_value = "tcp")]
    pub transport: String,
    /// Target address.
    #[arg(short = 'a', long = "traddr", default_value = "127.0.0.1")]
    pub traddr: String,
    /// Target port.
    #[arg(short = 's', long = "trsvcid", default_value = "4420")]
    pub trsvcid: String,
    /// Subsystem NQN.
    #[arg(short = 'n', long = "nqn", default_value = nvmf_controller::config::DEFAULT_SUBNQN)]
    pub nqn: String,
    /// I/O pattern.
    #[arg(long, value_enum, default_value = "randread")]
    pub rw: Rw,
    /// Percentage of reads in randrw.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub rwmixread: u32,
    /// Bytes per I/O (4k, 128k, 1m, ...); a multiple of the namespace block
    /// size. Above the controller's largest transfer (MDTS) an I/O goes as
    /// several commands, all in flight together.
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    pub bs: u64,
    /// I/Os outstanding per I/O queue.
    #[arg(long, default_value_t = 1)]
    pub iodepth: u16,
    /// Jobs: I/O queues, each on its own thread.
    #[arg(long, default_value_t = 1)]
    pub numjobs: u16,
    /// Pin job i to the i-th CPU of this list (e.g. 0,1 or 2-3).
    #[arg(long, value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub runtime: f64,
    /// Bytes of the namespace to use, from LBA 0 (default: all of it).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Namespace ID.
    #[arg(long, default_value_t = 1)]
    pub nsid: u32,
    /// Ask for the header digest.
    #[arg(short = 'g', long = "hdr-digest")]
    pub hdr_digest: bool,
    /// Ask for the data digest.
    #[arg(short = 'G', long = "data-digest")]
    pub data_digest: bool,
    /// Write a deterministic pattern over the range first, then check every read.
    #[arg(long)]
    pub verify: bool,
    /// Keep SQ flow control on (do not set CATTR bit 2), so the target must send a
    /// response capsule for every command instead of C2HData with SUCCESS.
    #[arg(long)]
    pub sq_flow_control: bool,
    /// Poll for completions instead of sleeping until they arrive (fio's option
    /// of the same name; spdk_nvme_perf always polls): each job's thread spins
    /// at 100 % of its CPU and a round trip saves the wakeup.
    #[arg(long)]
    pub hipri: bool,
    /// TCP congestion control of the I/O queues' connections (e.g. cubic; see
    /// /proc/sys/net/ipv4/tcp_available_congestion_control). Default: the system's.
    #[arg(long, value_name = "NAME")]
    pub tcp_congestion: Option<String>,
    /// Run every queue over TLS 1.3 with the TLS PSK derived from this
    /// configured PSK (`NVMeTLSkey-1:01:…:`) for the perf host NQN.
    #[arg(long = "tls-key", value_name = "KEY")]
    pub tls_key: Option<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output-format",
        value_enum,
        default_value = "normal"
    )]
    pub output: Output,
}

/// Process CPU time (user, system) in seconds, from /proc/self/stat.
fn cpu_times() -> (f64, f64) {
    // utime and stime are fields 14 and 15, in USER_HZ (100 on Linux).
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return (0.0, 0.0);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    // `rest` starts at field 3 (state).
    (get(11), get(12))
}

/// Runs a load.
pub fn run(args: PerfArgs) -> anyhow::Result<()> {
    if let Some(k) = crate::host::parse_tls_key(args.tls_key.as_deref(), "--tls-key")? {
        session::set_tls_key(k);
    }
    if !args.transport.eq_ignore_ascii_case("tcp") {
        bail!("transport '{}' is not supported (only tcp)", args.transport);
    }
    let addr =
        TransportAddr::from_parts(&args.traddr, &args.trsvcid).map_err(anyhow::Error::msg)?;
    if args.iodepth == 0 || args.numjobs == 0 {
        bail!("--iodepth and --numjobs must be at least 1");
    }
    if args.runtime.is_nan() || args.runtime <= 0.0 {
        bail!("--runtime must be positive");
    }
    let bs = u32::try_from(args.bs)
        .ok()
        .filter(|b| *b > 0)
        .context("--bs out of range")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args, addr, bs))
}

async fn run_async(args: PerfArgs, addr: TransportAddr, bs: u32) -> anyhow::Result<()> {
    let digests = Digests {
        header: args.hdr_digest,
        data: args.data_digest,
    };
    let (mut admin, ctrl) =
        session::bring_up(&addr, &args.nqn, args.nsid, args.numjobs, digests).await?;
    if !bs.is_multiple_of(ctrl.block_size) || bs / ctrl.block_size > 65536 {
        bail!(
            "--bs {bs} is not a multiple of the namespace's {}-byte blocks (or above 65536 blocks)",
            ctrl.block_size
        );
    }
    // An I/O above the largest transfer goes as several commands (MDTS).
    let chunk = if bs <= ctrl.max_transfer {
        bs
    } else {
        ctrl.max_transfer / ctrl.block_size * ctrl.block_size
    };
    if chunk == 0 {
        bail!(
            "the controller's largest transfer (MDTS) of {} bytes is below one {}-byte block",
            ctrl.max_transfer,
            ctrl.block_size
        );
    }
    let parts = bs.div_ceil(chunk);
    let depth = u32::from(args.iodepth) * parts;
    if depth > u32::from(ctrl.max_queue_depth) {
        if parts == 1 {
            bail!(
                "--iodepth {} is above the controller's queue size {}",
                args.iodepth,
                ctrl.max_queue_depth
            );
        }
        bail!(
            "--iodepth {} with --bs {bs} needs {depth} commands in flight (each I/O is split \
             into {parts} commands: the controller's largest transfer, MDTS, is {} bytes), \
             above its queue size {}; lower --iodepth or --bs",
            args.iodepth,
            ctrl.max_transfer,
            ctrl.max_queue_depth
        );
    }
    if parts > 1 {
        eprintln!(
            "nvmf perf: --bs {bs} is above the controller's largest transfer (MDTS, {} bytes): \
             each I/O goes as {parts} commands",
            ctrl.max_transfer
        );
    }
    let ns_bytes = ctrl.nsze * u64::from(ctrl.block_size);
    let size = args.size.unwrap_or(ns_bytes);
    if size > ns_bytes {
        bail!(
            "--size {size} is larger than namespace {} ({ns_bytes} bytes)",
            args.nsid
        );
    }
    let size = size / u64::from(bs) * u64::from(bs);
    if size < u64::from(bs) * u64::from(args.numjobs) {
        bail!(
            "--size is too small for --bs {bs} and --numjobs {}",
            args.numjobs
        );
    }
    let cfg = Arc::new(JobConfig {
        addr,
        subnqn: args.nqn.clone(),
        nsid: args.nsid,
        rw: args.rw,
        rwmixread: args.rwmixread,
        bs,
        chunk,
        iodepth: args.iodepth,
        numjobs: args.numjobs,
        size,
        runtime: Duration::from_secs_f64(args.runtime),
        digests,
        verify: args.verify,
        sqfc_disable: !args.sq_flow_control,
        hipri: args.hipri,
        tcp_congestion: args.tcp_congestion.clone(),
        ctrl: ctrl.clone(),
    });

    // Keep the association alive from its own task.
    let (ka_stop, mut ka_rx) = tokio::sync::oneshot::channel::<()>();
    let keepalive = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut ka_rx => break,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            if let Err(e) = admin
                .execute(Sqe::new(admin_opcode::KEEP_ALIVE), HostData::None)
                .await
            {
                eprintln!("nvmf perf: keep alive failed: {e}");
                break;
            }
        }
        admin.close().await;
    });

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (go_tx, go_rx) = tokio::sync::watch::channel(0u8);
    let n = usize::from(args.numjobs);
    let mut lives = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let live = Arc::new(LiveCounters::default());
        lives.push(live.clone());
        let cpu = args.cpus.as_ref().map(|c| c.0[i % c.0.len()]);
        let (cfg, stop, tx, go) = (cfg.clone(), stop.clone(), tx.clone(), go_rx.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("perf-job-{i}"))
                .spawn(move || job::thread_main(i, cfg, cpu, live, stop, tx, go))
                .context("cannot start a job thread")?,
        );
    }
    drop(tx);

    let mut ready = 0;
    let mut results: Vec<Option<job::JobResult>> = (0..n).map(|_| None).collect();
    let mut first_err: Option<anyhow::Error> = None;
    let mut done = 0;
    while ready < n && first_err.is_none() {
        match rx.recv().await {
            Some(JobMsg::Ready) => ready += 1,
            Some(JobMsg::Done(i, r)) => {
                done += 1;
                match *r {
                    Ok(r) => results[i] = Some(r),
                    Err(e) => first_err = Some(e),
                }
            }
            None => break,
        }
    }
    if let Some(e) = first_err {
        let _ = go_tx.send(2);
        for t in threads {
            let _ = t.join();
        }
        let _ = ka_stop.send(());
        let _ = keepalive.await;
        return Err(e);
    }

    let (u0, s0) = cpu_times();
    let start = Instant::now();
    let _ = go_tx.send(1);
    let show_progress =
        args.output == Output::Normal || std::env::var_os("NVMF_PERF_PROGRESS").is_some();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut last = (0u64, 0u64, Instant::now());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while done < n {
        tokio::select! {
            m = rx.recv() => match m {
                Some(JobMsg::Done(i, r)) => {
                    done += 1;
                    match *r {
                        Ok(r) => results[i] = Some(r),
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            first_err.get_or_insert(e);
                        }
                    }
                }
                Some(JobMsg::Ready) => {}
                None => break,
            },
            _ = tick.tick() => {
                let ios: u64 = lives.iter().map(|l| l.ios.load(Ordering::Relaxed)).sum();
                let bytes: u64 = lives.iter().map(|l| l.bytes.load(Ordering::Relaxed)).sum();
                let now = Instant::now();
                let dt = now.duration_since(last.2).as_secs_f64().max(1e-9);
                if show_progress {
                    eprintln!(
                        "[{:>4.0}s] {:>10.0} IOPS {:>9.1} MiB/s",
                        start.elapsed().as_secs_f64(),
                        (ios - last.0) as f64 / dt,
                        (bytes - last.1) as f64 / dt / 1048576.0
                    );
                }
                last = (ios, bytes, now);
            }
            _ = &mut ctrl_c => {
                eprintln!("nvmf perf: interrupted, stopping");
                stop.store(true, Ordering::Relaxed);
            }
        }
    }
    let wall = start.elapsed();
    let (u1, s1) = cpu_times();
    for t in threads {
        let _ = t.join();
    }
    let _ = ka_stop.send(());
    let _ = keepalive.await;
    if let Some(e) = first_err {
        return Err(e);
    }
    let results: Vec<job::JobResult> = results.into_iter().flatten().collect();
    let rep = report::Report::new(&args, &cfg, &results, wall, (u1 - u0, s1 - s0));
    match args.output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&rep.to_json())?),
        Output::Normal => emit(&rep.table()),
    }
    if rep.verify_errors > 0 {
        bail!(
            "{} reads did not match the written pattern",
            rep.verify_errors
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_parse_cpus() {
        assert_eq!(parse_cpus("0,1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpus("2-4,7").unwrap(), vec![2, 3, 4, 7]);
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[derive(Debug, clap::Parser)]
    struct T {
        #[command(flatten)]
        a: PerfArgs,
    }

    #[test]
    fn perf_args_parse() {
        use clap::Parser;
        let t = T::try_parse_from([
            "t",
            "-a",
            "10.0.0.1",
            "-s",
            "4421",
            "--rw",
            "randrw",
            "--rwmixread",
            "70",
            "--bs",
            "128k",
            "--iodepth",
            "16",
            "--numjobs",
            "2",
            "--cpus",
            "0,1",
            "--runtime",
            "2.5",
            "--size",
            "1G",
            "-g",
            "-G",
            "--verify",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(t.a.cpus, Some(CpuList(vec![0, 1])));
        assert_eq!(t.a.bs, 128 << 10);
        assert_eq!(t.a.size, Some(1 << 30));
        assert_eq!(t.a.rw, Rw::RandRw);
        assert!(t.a.hdr_digest && t.a.data_digest && t.a.verify);
        assert_eq!(t.a.output, Output::Json);
        assert!(T::try_parse_from(["t", "--rwmixread", "101"]).is_err());
        assert!(T::try_parse_from(["t", "--rw", "trim"]).is_err());
    }

    #[test]
    fn perf_cpu_times_reads_proc() {
        let (u, s) = cpu_times();
        assert!(u >= 0.0 && s >= 0.0);
    }
}
