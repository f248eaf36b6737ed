//! The final report: table and JSON.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::job::{new_histogram, JobConfig, JobResult};
use super::{PerfArgs, Rw};

/// Figures of one direction (or both).
#[derive(Debug)]
pub struct DirStats {
    /// Completed I/Os.
    pub ios: u64,
    /// I/Os per second.
    pub iops: f64,
    /// MiB per second.
    pub mib_s: f64,
    /// Latency, µs: mean, p50, p99, p99.9, max.
    pub lat_us: [f64; 5],
}

impl DirStats {
    fn new(h: &Histogram<u64>, secs: f64, bs: u32) -> Self {
        let ios = h.len();
        let us = |ns: u64| ns as f64 / 1000.0;
        let lat_us = if ios == 0 {
            [0.0; 5]
        } else {
            [
                h.mean() / 1000.0,
                us(h.value_at_quantile(0.50)),
                us(h.value_at_quantile(0.99)),
                us(h.value_at_quantile(0.999)),
                us(h.max()),
            ]
        };
        Self {
            ios,
            iops: ios as f64 / secs,
            mib_s: ios as f64 * f64::from(bs) / secs / 1048576.0,
            lat_us,
        }
    }

    fn to_json(&self) -> Value {
        let r = |v: f64| (v * 10.0).round() / 10.0;
        json!({
            "ios": self.ios,
            "iops": r(self.iops),
            "mib_s": r(self.mib_s),
            "lat_us": {
                "mean": r(self.lat_us[0]),
                "p50": r(self.lat_us[1]),
                "p99": r(self.lat_us[2]),
                "p99_9": r(self.lat_us[3]),
                "max": r(self.lat_us[4]),
            }
        })
    }
}

/// The whole run.
#[derive(Debug)]
pub struct Report {
    config: Value,
    /// Reads, if any were done.
    pub read: Option<DirStats>,
    /// Writes, if any were done.
    pub write: Option<DirStats>,
    /// Both.
    pub total: DirStats,
    /// Seconds measured (longest job).
    pub secs: f64,
    /// CPU seconds (user, sys) of the process during the run.
    pub cpu: (f64, f64),
    /// Reads that did not match the pattern.
    pub verify_errors: u64,
}

impl Report {
    /// Merges the jobs' histograms.
    pub fn new(
        args: &PerfArgs,
        cfg: &JobConfig,
        results: &[JobResult],
        wall: Duration,
        cpu: (f64, f64),
    ) -> Self {
        let mut rd = new_histogram();
        let mut wr = new_histogram();
        let mut all = new_histogram();
        let mut verify_errors = 0;
        let mut secs: f64 = 0.0;
        for r in results {
            let _ = rd.add(&r.read);
            let _ = wr.add(&r.write);
            let _ = all.add(&r.read);
            let _ = all.add(&r.write);
            verify_errors += r.verify_errors;
            secs = secs.max(r.elapsed.as_secs_f64());
        }
        if secs <= 0.0 {
            secs = wall.as_secs_f64();
        }
        let reads = matches!(cfg.rw, Rw::Read | Rw::RandRead | Rw::RandRw);
        let writes = matches!(cfg.rw, Rw::Write | Rw::RandWrite | Rw::RandRw);
        let config = json!({
            "traddr": cfg.addr.traddr(),
            "trsvcid": cfg.addr.trsvcid(),
            "nqn": cfg.subnqn,
            "nsid": cfg.nsid,
            "rw": cfg.rw,
            "rwmixread": if cfg.rw == Rw::RandRw { Some(cfg.rwmixread) } else { None },
            "bs": cfg.bs,
            "iodepth": cfg.iodepth,
            "numjobs": cfg.numjobs,
            "runtime_s": cfg.runtime.as_secs_f64(),
            "size": cfg.size,
            "block_size": cfg.ctrl.block_size,
            "hdr_digest": cfg.digests.header,
            "data_digest": cfg.digests.data,
            "verify": cfg.verify,
            "sq_flow_control_disabled": cfg.sqfc_disable,
            "hipri": cfg.hipri,
            "tcp_congestion": cfg.tcp_congestion,
            "cpus": args.cpus.as_ref().map(|c| c.0.clone()),
        });
        Self {
            config,
            read: reads.then(|| DirStats::new(&rd, secs, cfg.bs)),
            write: writes.then(|| DirStats::new(&wr, secs, cfg.bs)),
            total: DirStats::new(&all, secs, cfg.bs),
            secs,
            cpu,
            verify_errors,
        }
    }

    /// CPU use as a percentage of one core.
    pub fn cpu_percent(&self) -> f64 {
        (self.cpu.0 + self.cpu.1) / self.secs * 100.0
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        let r = |v: f64| (v * 10.0).round() / 10.0;
        json!({
            "config": self.config,
            "runtime_s": (self.secs * 1000.0).round() / 1000.0,
            "read": self.read.as_ref().map(DirStats::to_json),
            "write": self.write.as_ref().map(DirStats::to_json),
            "total": self.total.to_json(),
            "cpu": {
                "user_s": self.cpu.0,
                "sys_s": self.cpu.1,
                "percent_of_one_core": r(self.cpu_percent()),
                "us_per_io": if self.total.ios > 0 {
                    r((self.cpu.0 + self.cpu.1) * 1e6 / self.total.ios as f64)
                } else { 0.0 },
            },
            "verify_errors": self.verify_errors,
        })
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<6} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "", "IOPS", "MiB/s", "mean µs", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
        );
        let mut row = |name: &str, d: &DirStats| {
            let _ = writeln!(
                s,
                "{:<6} {:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                name,
                d.iops,
                d.mib_s,
                d.lat_us[0],
                d.lat_us[1],
                d.lat_us[2],
                d.lat_us[3],
                d.lat_us[4]
            );
        };
        if let Some(d) = &self.read {
            row("read", d);
        }
        if let Some(d) = &self.write {
            row("write", d);
        }
        if self.read.is_some() && self.write.is_some() {
            row("total", &self.total);
        }
        let _ = writeln!(
            s,
            "{} I/Os in {:.2} s; CPU {:.0}% of one core (user {:.2} s, sys {:.2} s)",
            self.total.ios,
            self.secs,
            self.cpu_percent(),
            self.cpu.0,
            self.cpu.1
        );
        if self.config["verify"] == json!(true) {
            let _ = writeln!(s, "verify: {} mismatches", self.verify_errors);
        }
        s
    }
}
