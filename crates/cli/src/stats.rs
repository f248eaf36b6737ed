//! `nvmf stats`: reads a running target's metrics endpoint (`nvmf target
//! --metrics ADDR`, Prometheus text format) and prints per-namespace figures:
//! commands, bytes, mean and p99 latency (from the latency histogram), errors;
//! with `--interval N`, rates over N seconds (two scrapes N seconds apart).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::ValueEnum;
use serde_json::{json, Value};

/// Output format (`-o`), as nvme-cli's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// A table.
    #[default]
    Normal,
    /// JSON.
    Json,
}

/// Options of `nvmf stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// The target's metrics endpoint (`nvmf target --metrics ADDR:PORT`).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9100")]
    pub metrics: String,
    /// Rates over this many seconds (two scrapes); without it, totals since
    /// the target started.
    #[arg(long, short = 'i', value_name = "SECONDS")]
    pub interval: Option<f64>,
    /// Output format: normal or json.
    #[arg(short = 'o', long = "output-format", value_enum, default_value_t = Format::Normal)]
    pub output: Format,
}

/// One scrape: every sample, by metric name and label set.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Figures of one namespace (cumulative, or a difference of two scrapes).
#[derive(Debug, Default, Clone)]
struct Ns {
    reads: f64,
    writes: f64,
    other: f64,
    read_bytes: f64,
    written_bytes: f64,
    errors: f64,
    /// (le, cumulative count); le = +Inf last.
    buckets: Vec<(f64, f64)>,
    sum_s: f64,
    count: f64,
}

impl Ns {
    fn minus(&self, o: &Ns) -> Ns {
        Ns {
            reads: self.reads - o.reads,
            writes: self.writes - o.writes,
            other: self.other - o.other,
            read_bytes: self.read_bytes - o.read_bytes,
            written_bytes: self.written_bytes - o.written_bytes,
            errors: self.errors - o.errors,
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| {
                    let before = o.buckets.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1);
                    (*le, c - before)
                })
                .collect(),
            sum_s: self.sum_s - o.sum_s,
            count: self.count - o.count,
        }
    }

    fn mean_us(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum_s / self.count * 1e6)
    }

    /// The `q` quantile in microseconds, interpolated linearly within its
    /// bucket as Prometheus's `histogram_quantile` does; a quantile in the
    /// overflow bucket is reported as the largest finite bound.
    fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let mut prev = (0.0, 0.0);
        for &(le, c) in &self.buckets {
            if c >= rank {
                if le.is_infinite() {
                    return Some(prev.0 * 1e6);
                }
                let in_bucket = c - prev.1;
                let frac = if in_bucket > 0.0 {
                    (rank - prev.1) / in_bucket
                } else {
                    1.0
                };
                return Some((prev.0 + (le - prev.0) * frac) * 1e6);
            }
            prev = (le, c);
        }
        None
    }
}

/// Fetches `GET /metrics` from `addr`.
fn fetch(addr: &str) -> anyhow::Result<String> {
    let sa = addr
        .to_socket_addrs()
        .with_context(|| format!("metrics address {addr}"))?
        .next()
        .with_context(|| format!("metrics address {addr} resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(5))
        .with_context(|| format!("connecting to the metrics endpoint {sa} (is the target running with --metrics {addr}?)"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut r = Vec::new();
    s.read_to_end(&mut r)
        .with_context(|| format!("reading from {sa}"))?;
    let r = String::from_utf8(r).context("the metrics answer is not UTF-8")?;
    let Some((head, body)) = r.split_once("\r\n\r\n") else {
        bail!("{sa} did not answer HTTP");
    };
    let status = head.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        bail!("{sa} answered {status}");
    }
    Ok(body.to_string())
}

/// Parses the text exposition format (sample lines; comments skipped).
fn parse(text: &str) -> anyhow::Result<Samples> {
    let mut out = Samples::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || anyhow::anyhow!("metrics line {}: cannot parse {line:?}", i + 1);
        let (nl, v) = line.rsplit_once(' ').ok_or_else(bad)?;
        let v: f64 = match v {
            "+Inf" => f64::INFINITY,
            v => v.parse().map_err(|_| bad())?,
        };
        let (name, labels) = match nl.split_once('{') {
            Some((n, l)) => (
                n,
                labels(l.strip_suffix('}').ok_or_else(bad)?).ok_or_else(bad)?,
            ),
            None => (nl, vec![]),
        };
        out.insert((name.to_string(), labels), v);
    }
    Ok(out)
}

fn labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut it = s.chars();
    loop {
        let mut k = String::new();
        for c in it.by_ref() {
            if c == '=' {
                break;
            }
            k.push(c);
        }
        if k.is_empty() {
            return (out.is_empty() && s.is_empty()).then_some(out);
        }
        if it.next()? != '"' {
            return None;
        }
        let mut v = String::new();
        loop {
            match it.next()? {
                '"' => break,
                '\\' => match it.next()? {
                    'n' => v.push('\n'),
                    c => v.push(c),
                },
                c => v.push(c),
            }
        }
        out.push((k, v));
        match it.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

fn label<'a>(l: &'a [(String, String)], k: &str) -> Option<&'a str> {
    l.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

/// Per-namespace figures by (subsystem, nsid).
fn namespaces(s: &Samples) -> BTreeMap<(String, u32), Ns> {
    let mut m: BTreeMap<(String, u32), Ns> = BTreeMap::new();
    for ((name, l), v) in s {
        let Some(short) = name.strip_prefix("nvmf_namespace_") else {
            continue;
        };
        let (Some(sub), Some(nsid)) = (label(l, "subsystem"), label(l, "nsid")) else {
            continue;
        };
        let Ok(nsid) = nsid.parse() else { continue };
        let e = m.entry((sub.to_string(), nsid)).or_default();
        match (short, label(l, "kind")) {
            ("commands_total", Some("read")) => e.reads += v,
            ("commands_total", Some("write")) => e.writes += v,
            ("commands_total", Some(_)) => e.other += v,
            ("read_bytes_total", _) => e.read_bytes += v,
            ("written_bytes_total", _) => e.written_bytes += v,
            ("errors_total", _) => e.errors += v,
            ("latency_seconds_sum", _) => e.sum_s += v,
            ("latency_seconds_count", _) => e.count += v,
            ("latency_seconds_bucket", _) => {
                let le = match label(l, "le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(x) => x.parse().unwrap_or(f64::NAN),
                    None => f64::NAN,
                };
                if !le.is_nan() {
                    e.buckets.push((le, *v));
                }
            }
            _ => {}
        }
    }
    for e in m.values_mut() {
        e.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    m
}

/// Per-subsystem counters and gauges by subsystem.
fn subsystems(s: &Samples) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut m: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for ((name, l), v) in s {
        let Some(short) = name.strip_prefix("nvmf_subsystem_") else {
            continue;
        };
        if let Some(sub) = label(l, "subsystem") {
            *m.entry(sub.to_string())
                .or_default()
                .entry(short.trim_end_matches("_total").to_string())
                .or_default() += v;
        }
    }
    m
}

fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |x| json!((x * 10.0).round() / 10.0))
}

/// `nvmf stats`.
pub fn run(a: StatsArgs) -> anyhow::Result<()> {
    let first = parse(&fetch(&a.metrics)?)?;
    let t0 = Instant::now();
    let (now, before, secs) = match a.interval {
        Some(i) if i > 0.0 && i.is_finite() => {
            std::thread::sleep(Duration::from_secs_f64(i));
            let second = parse(&fetch(&a.metrics)?)?;
            (second, Some(first), t0.elapsed().as_secs_f64())
        }
        Some(i) => bail!("--interval {i}: give a positive number of seconds"),
        None => (first, None, 0.0),
    };
    let cur = namespaces(&now);
    let old = before.as_ref().map(namespaces).unwrap_or_default();
    let rows: Vec<((String, u32), Ns)> = cur
        .into_iter()
        .map(|(k, v)| {
            let d = match old.get(&k) {
                Some(o) if before.is_some() => v.minus(o),
                _ => v,
            };
            (k, d)
        })
        .collect();
    let subs = subsystems(&now);
    let rate = |x: f64| (before.is_some() && secs > 0.0).then(|| x / secs);
    const MIB: f64 = 1024.0 * 1024.0;
    // Printed at the end in one write; a closed stdout (`| head`) is not an error.
    let mut o = String::new();
    macro_rules! out {
        ($($t:tt)*) => {{
            let _ = writeln!(o, $($t)*);
        }};
    }
    match a.output {
        Format::Json => {
            let ns: Vec<Value> = rows
                .iter()
                .map(|((sub, nsid), n)| {
                    json!({
                        "subsystem": sub,
                        "nsid": nsid,
                        "reads": n.reads,
                        "writes": n.writes,
                        "other": n.other,
                        "read_bytes": n.read_bytes,
                        "written_bytes": n.written_bytes,
                        "errors": n.errors,
                        "latency_mean_us": opt(n.mean_us()),
                        "latency_p99_us": opt(n.quantile_us(0.99)),
                        "read_iops": opt(rate(n.reads)),
                        "write_iops": opt(rate(n.writes)),
                        "read_mib_s": opt(rate(n.read_bytes / MIB)),
                        "write_mib_s": opt(rate(n.written_bytes / MIB)),
                    })
                })
                .collect();
            let out = json!({
                "interval_s": before.as_ref().map(|_| secs),
                "namespaces": ns,
                "subsystems": subs,
            });
            out!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Normal => {
            let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.1}"));
            if before.is_some() {
                out!("over {secs:.1} s:");
                out!(
                    "{:<40} {:>5} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>7}",
                    "SUBSYSTEM",
                    "NSID",
                    "READ IOPS",
                    "WRITE IOPS",
                    "READ MiB/s",
                    "WRIT MiB/s",
                    "MEAN us",
                    "P99 us",
                    "ERRORS"
                );
                for ((sub, nsid), n) in &rows {
                    out!(
                        "{:<40} {:>5} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>7}",
                        sub,
                        nsid,
                        f(rate(n.reads)),
                        f(rate(n.writes)),
                        f(rate(n.read_bytes / MIB)),
                        f(rate(n.written_bytes / MIB)),
                        f(n.mean_us()),
                        f(n.quantile_us(0.99)),
                        n.errors
                    );
                }
            } else {
                out!("since the target started:");
                out!(
                    "{:<40} {:>5} {:>10} {:>10} {:>8} {:>10} {:>10} {:>9} {:>9} {:>7}",
                    "SUBSYSTEM",
                    "NSID",
                    "READS",
                    "WRITES",
                    "OTHER",
                    "READ MiB",
                    "WRIT MiB",
                    "MEAN us",
                    "P99 us",
                    "ERRORS"
                );
                for ((sub, nsid), n) in &rows {
                    out!(
                        "{:<40} {:>5} {:>10} {:>10} {:>8} {:>10.1} {:>10.1} {:>9} {:>9} {:>7}",
                        sub,
                        nsid,
                        n.reads,
                        n.writes,
                        n.other,
                        n.read_bytes / MIB,
                        n.written_bytes / MIB,
                        f(n.mean_us()),
                        f(n.quantile_us(0.99)),
                        n.errors
                    );
                }
            }
            out!();
            out!(
                "{:<40} {:>11} {:>9} {:>9} {:>10} {:>9}",
                "SUBSYSTEM",
                "CONTROLLERS",
                "CONNECTS",
                "REJECTED",
                "KA EXPIRED",
                "TERMREQS"
            );
            for (sub, m) in &subs {
                let g = |k: &str| m.get(k).copied().unwrap_or(0.0);
                out!(
                    "{:<40} {:>11} {:>9} {:>9} {:>10} {:>9}",
                    sub,
                    g("controllers"),
                    g("connects_accepted"),
                    g("connects_rejected"),
                    g("keep_alive_expiries"),
                    g("termreqs_sent")
                );
            }
        }
    }
    match std::io::stdout().lock().write_all(o.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x y\n# TYPE nvmf_namespace_latency_seconds histogram\n\
nvmf_namespace_commands_total{subsystem=\"s\\\"1\",nsid=\"1\",kind=\"read\"} 100\n\
nvmf_namespace_commands_total{subsystem=\"s\\\"1\",nsid=\"1\",kind=\"other\"} 2\n\
nvmf_namespace_read_bytes_total{subsystem=\"s\\\"1\",nsid=\"1\"} 409600\n\
nvmf_namespace_latency_seconds_bucket{subsystem=\"s\\\"1\",nsid=\"1\",le=\"0.000001\"} 0\n\
nvmf_namespace_latency_seconds_bucket{subsystem=\"s\\\"1\",nsid=\"1\",le=\"0.000002\"} 50\n\
nvmf_namespace_latency_seconds_bucket{subsystem=\"s\\\"1\",nsid=\"1\",le=\"0.000004\"} 100\n\
nvmf_namespace_latency_seconds_bucket{subsystem=\"s\\\"1\",nsid=\"1\",le=\"+Inf\"} 102\n\
nvmf_namespace_latency_seconds_sum{subsystem=\"s\\\"1\",nsid=\"1\"} 0.000306\n\
nvmf_namespace_latency_seconds_count{subsystem=\"s\\\"1\",nsid=\"1\"} 102\n";

    #[test]
    fn namespaces_mean_and_p99_from_the_histogram() {
        let s = parse(TEXT).unwrap();
        let m = namespaces(&s);
        let n = &m[&("s\"1".to_string(), 1)];
        assert_eq!((n.reads, n.other, n.read_bytes), (100.0, 2.0, 409600.0));
        assert!((n.mean_us().unwrap() - 3.0).abs() < 1e-9);
        // Rank 50.49 of 102 falls in (2, 4] µs: 2 + 2 * 0.49 / 50.
        let p50 = n.quantile_us(0.495).unwrap();
        assert!((p50 - (2.0 + 2.0 * 0.49 / 50.0)).abs() < 1e-6, "{p50}");
        // Rank 100.98 is past the last finite bound: reported as 4 µs.
        assert_eq!(n.quantile_us(0.99), Some(4.0));
        let d = n.minus(n);
        assert_eq!((d.count, d.quantile_us(0.99)), (0.0, None));
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse("a{b=\"c} 1\n").is_err());
        assert!(parse("a 1 2 x\n").is_err());
        assert!(parse("a{b=\"c\"} one\n").is_err());
    }
}
