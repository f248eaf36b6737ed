//! Target metrics: per-queue command counters aggregated on scrape, and a
//! Prometheus text-format endpoint (`GET /metrics`, exposition format 0.0.4).
//!
//! The I/O path takes no lock and shares no cache line per command: each queue
//! task owns one [`IoCounters`] block per namespace it touched (and one for
//! commands without a namespace, NSID 0). Only that task writes a block, so an
//! update is a relaxed load and store of an `AtomicU64` (a plain `mov` on
//! x86-64, no locked instruction); a scrape reads the blocks with relaxed loads
//! and adds them up. A block is registered with its subsystem when the queue
//! first completes a command for that namespace and folded into the
//! subsystem's retired totals when the queue ends, so per-namespace counters
//! stay monotonic across reconnects while per-queue series disappear with the
//! queue.
//!
//! The same blocks feed the SMART / Health Information log (NVMe Base 2.0
//! §5.16.1.3, Figure 207: Data Units Read/Written, Host Read/Write Commands).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::registry::{Registry, Subsystem};

/// Latency histogram buckets: upper bounds 2^0 .. 2^(BUCKETS-1) microseconds
/// (1 µs .. about 8.4 s), plus one overflow bucket (`+Inf`).
pub const BUCKETS: usize = 24;

/// Command kinds counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read (NVM Command Set 1.0 §3.2.4).
    Read = 0,
    /// Write (NVM Command Set 1.0 §3.2.6).
    Write = 1,
    /// Everything else (admin, Flush, Write Zeroes, Dataset Management, Copy, ...).
    Other = 2,
}

impl Kind {
    const NAMES: [&'static str; 3] = ["read", "write", "other"];
}

/// Names of the Status Code Type values (NVMe Base 2.0, Completion Queue
/// Entry Status Field; docs/spec-facts.md "Status Code Type values"),
/// the `sct` label of the error counters.
pub const SCT_NAMES: [&str; 8] = [
    "generic",
    "command_specific",
    "media",
    "path",
    "reserved_4",
    "reserved_5",
    "reserved_6",
    "vendor",
];

/// A single-writer counter: only the owning queue task adds to it, so a
/// relaxed load and store (no read-modify-write) is exact; readers on other
/// threads see a value at most one update old.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    #[inline]
    fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one (controller, queue, namespace), written only by that
/// queue's task.
#[derive(Debug)]
pub struct IoCounters {
    /// Controller ID.
    pub cntlid: u16,
    /// Queue ID (0: admin queue).
    pub qid: u16,
    /// Namespace ID (0: commands that named no namespace of the subsystem).
    pub nsid: u32,
    /// The controller's host NQN.
    pub hostnqn: Arc<str>,
    cmds: [Counter; 3],
    bytes_read: Counter,
    bytes_written: Counter,
    errors: [Counter; 8],
    buckets: [Counter; BUCKETS + 1],
    latency_ns: Counter,
}

impl IoCounters {
    fn new(cntlid: u16, qid: u16, nsid: u32, hostnqn: Arc<str>) -> Self {
        Self {
            cntlid,
            qid,
            nsid,
            hostnqn,
            cmds: Default::default(),
            bytes_read: Counter::default(),
            bytes_written: Counter::default(),
            errors: Default::default(),
            buckets: Default::default(),
            latency_ns: Counter::default(),
        }
    }

    /// Counts one completed command: its kind, the bytes it moved (successful
    /// reads and writes only), its status code type if it failed, and its
    /// latency from the command capsule being taken in to the completion.
    #[inline]
    pub fn record(&self, kind: Kind, bytes: u64, sct: Option<u8>, latency: Duration) {
        self.cmds[kind as usize].add(1);
        match (kind, sct) {
            (_, Some(t)) => self.errors[usize::from(t & 7)].add(1),
            (Kind::Read, None) => self.bytes_read.add(bytes),
            (Kind::Write, None) => self.bytes_written.add(bytes),
            (Kind::Other, None) => {}
        }
        let ns = latency.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.buckets[bucket_of(ns)].add(1);
        self.latency_ns.add(ns);
    }

    fn snapshot(&self) -> Totals {
        let mut t = Totals::default();
        t.add_block(self);
        t
    }
}

/// The bucket of a latency of `ns` nanoseconds: the smallest `i` with
/// `ns <= 2^i µs`, or `BUCKETS` (overflow).
fn bucket_of(ns: u64) -> usize {
    let us = ns.div_ceil(1000);
    if us <= 1 {
        return 0;
    }
    ((64 - (us - 1).leading_zeros()) as usize).min(BUCKETS)
}

/// Upper bound of bucket `i` in seconds (`None`: +Inf).
pub fn bucket_le(i: usize) -> Option<f64> {
    (i < BUCKETS).then(|| (1u64 << i) as f64 * 1e-6)
}

/// Summed counters (of a namespace, a queue, or retired queues).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    /// Completed commands by [`Kind`].
    pub cmds: [u64; 3],
    /// Bytes read by successful reads.
    pub bytes_read: u64,
    /// Bytes written by successful writes.
    pub bytes_written: u64,
    /// Failed completions by status code type.
    pub errors: [u64; 8],
    /// Latency histogram, per bucket (not cumulative); the last is overflow.
    pub buckets: [u64; BUCKETS + 1],
    /// Sum of latencies, nanoseconds.
    pub latency_ns: u64,
}

impl Totals {
    fn add_block(&mut self, b: &IoCounters) {
        for (t, c) in self.cmds.iter_mut().zip(&b.cmds) {
            *t = t.wrapping_add(c.get());
        }
        self.bytes_read = self.bytes_read.wrapping_add(b.bytes_read.get());
        self.bytes_written = self.bytes_written.wrapping_add(b.bytes_written.get());
        for (t, c) in self.errors.iter_mut().zip(&b.errors) {
            *t = t.wrapping_add(c.get());
        }
        for (t, c) in self.buckets.iter_mut().zip(&b.buckets) {
            *t = t.wrapping_add(c.get());
        }
        self.latency_ns = self.latency_ns.wrapping_add(b.latency_ns.get());
    }

    fn add(&mut self, o: &Totals) {
        for (t, c) in self.cmds.iter_mut().zip(&o.cmds) {
            *t = t.wrapping_add(*c);
        }
        self.bytes_read = self.bytes_read.wrapping_add(o.bytes_read);
        self.bytes_written = self.bytes_written.wrapping_add(o.bytes_written);
        for (t, c) in self.errors.iter_mut().zip(&o.errors) {
            *t = t.wrapping_add(*c);
        }
        for (t, c) in self.buckets.iter_mut().zip(&o.buckets) {
            *t = t.wrapping_add(*c);
        }
        self.latency_ns = self.latency_ns.wrapping_add(o.latency_ns);
    }

    /// Completed commands of every kind (the histogram's count).
    pub fn count(&self) -> u64 {
        self.cmds.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }
}

/// Counters of a subsystem: connection events (each written rarely, so plain
/// shared atomics) and the registry of the queues' [`IoCounters`].
#[derive(Debug, Default)]
pub struct SubsysMetrics {
    /// Connect commands accepted (admin and I/O queues).
    pub connects_accepted: AtomicU64,
    /// Connect commands refused (host not allowed, bad parameters, no free CNTLID, ...).
    pub connects_rejected: AtomicU64,
    /// Controllers (associations) created.
    pub controllers_created: AtomicU64,
    /// Associations ended because the Keep Alive Timeout expired (NVMe Base 2.0 §3.9.5).
    pub keep_alive_expiries: AtomicU64,
    /// C2HTermReq PDUs sent on connections of this subsystem (TP 8000 §3.6.2.4).
    pub termreqs_sent: AtomicU64,
    blocks: Mutex<Blocks>,
}

#[derive(Debug, Default)]
struct Blocks {
    live: Vec<Arc<IoCounters>>,
    /// Totals of ended queues, by NSID.
    retired: BTreeMap<u32, Totals>,
}

impl SubsysMetrics {
    /// Registers a new counter block (once per queue and namespace).
    pub fn register(&self, cntlid: u16, qid: u16, nsid: u32, hostnqn: Arc<str>) -> Arc<IoCounters> {
        let b = Arc::new(IoCounters::new(cntlid, qid, nsid, hostnqn));
        self.blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .live
            .push(b.clone());
        b
    }

    /// Folds a queue's blocks into the retired totals (the queue ended).
    pub fn retire(&self, blocks: &[Arc<IoCounters>]) {
        let mut g = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        for b in blocks {
            if let Some(i) = g.live.iter().position(|x| Arc::ptr_eq(x, b)) {
                g.live.swap_remove(i);
                g.retired.entry(b.nsid).or_default().add(&b.snapshot());
            }
        }
    }

    /// Totals by NSID (live queues plus retired ones); NSID 0 holds commands
    /// that named no namespace.
    pub fn by_namespace(&self) -> BTreeMap<u32, Totals> {
        let g = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        let mut m = g.retired.clone();
        for b in &g.live {
            m.entry(b.nsid).or_default().add_block(b);
        }
        m
    }

    /// Totals of one namespace (`None`: every namespace), for the SMART log.
    pub fn namespace(&self, nsid: Option<u32>) -> Totals {
        let mut t = Totals::default();
        for (n, v) in self.by_namespace() {
            if n != 0 && nsid.is_none_or(|x| x == n) {
                t.add(&v);
            }
        }
        t
    }

    /// Totals of each live queue: (cntlid, qid, hostnqn).
    pub fn by_queue(&self) -> BTreeMap<(u16, u16), (Arc<str>, Totals)> {
        let g = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        let mut m: BTreeMap<(u16, u16), (Arc<str>, Totals)> = BTreeMap::new();
        for b in &g.live {
            m.entry((b.cntlid, b.qid))
                .or_insert_with(|| (b.hostnqn.clone(), Totals::default()))
                .1
                .add_block(b);
        }
        m
    }
}

/// Target-wide counters (events before a subsystem is known).
#[derive(Debug, Default)]
pub struct TargetMetrics {
    /// TCP connections accepted by the admission control.
    pub tcp_accepted: AtomicU64,
    /// TCP connections refused by the admission control (connection limits).
    pub tcp_refused: AtomicU64,
    /// C2HTermReq PDUs sent on any connection, before Connect included.
    pub termreqs_sent: AtomicU64,
    /// Connect commands naming a subsystem this target does not serve.
    pub connects_unknown_subsystem: AtomicU64,
}

/// A completion counted at the end of its queue's pass.
#[derive(Debug)]
struct Pending {
    block: usize,
    kind: Kind,
    bytes: u64,
    sct: Option<u8>,
    start: Instant,
}

/// A queue's own view of its counter blocks: looked up by NSID on every
/// completion (a short vector: a queue touches few namespaces). Completions
/// wait in `pending` until the end of the queue task's pass over its events,
/// when one clock read gives all of them their latency: the completions of a
/// pass go out in one write, so that moment is when they leave.
#[derive(Debug, Default)]
pub(crate) struct QueueCounters {
    blocks: Vec<Arc<IoCounters>>,
    pending: Vec<Pending>,
}

impl QueueCounters {
    /// Notes a completion (counted at the next [`QueueCounters::flush`]).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn push(
        &mut self,
        subsys: &Subsystem,
        (cntlid, qid, nsid): (u16, u16, u32),
        hostnqn: &str,
        kind: Kind,
        bytes: u64,
        sct: Option<u8>,
        start: Instant,
    ) {
        let block = self.index(subsys, cntlid, qid, nsid, hostnqn);
        self.pending.push(Pending {
            block,
            kind,
            bytes,
            sct,
            start,
        });
    }

    /// Counts the pending completions, all with the latency up to now.
    #[inline]
    pub(crate) fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        for p in self.pending.drain(..) {
            if let Some(b) = self.blocks.get(p.block) {
                b.record(
                    p.kind,
                    p.bytes,
                    p.sct,
                    now.saturating_duration_since(p.start),
                );
            }
        }
    }

    /// The index of the block of `nsid`, registered with `subsys` on first use.
    fn index(
        &mut self,
        subsys: &Subsystem,
        cntlid: u16,
        qid: u16,
        nsid: u32,
        hostnqn: &str,
    ) -> usize {
        match self.blocks.iter().position(|b| b.nsid == nsid) {
            Some(i) => i,
            None => {
                let host: Arc<str> = match self.blocks.first() {
                    Some(b) => b.hostnqn.clone(),
                    None => Arc::from(hostnqn),
                };
                self.blocks
                    .push(subsys.metrics.register(cntlid, qid, nsid, host));
                self.blocks.len() - 1
            }
        }
    }

    /// Folds the blocks into `subsys`'s retired totals.
    pub(crate) fn retire(&mut self, subsys: &Subsystem) {
        self.flush();
        subsys.metrics.retire(&self.blocks);
        self.blocks.clear();
    }
}

/// Escapes a label value (exposition format 0.0.4: backslash, double quote, newline).
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, ty: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {ty}");
    }
    fn line(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {v}");
    }
}

fn secs(ns: u64) -> String {
    format!("{:.9}", ns as f64 / 1e9)
}

/// Writes the families of one label set kind (namespace or queue) for `rows`.
fn io_families(
    f: &mut Family<'_>,
    prefix: &str,
    what: &str,
    rows: &[(Vec<(&str, &str)>, &Totals)],
) {
    let name = format!("nvmf_{prefix}_commands_total");
    f.head(
        &name,
        "counter",
        &format!("Commands completed per {what}, by kind (read, write, other)."),
    );
    for (l, t) in rows {
        for (k, n) in Kind::NAMES.iter().zip(t.cmds) {
            let mut l = l.clone();
            l.push(("kind", k));
            f.line(&name, &l, n);
        }
    }
    let name = format!("nvmf_{prefix}_read_bytes_total");
    f.head(
        &name,
        "counter",
        &format!("Bytes read by successful Read commands per {what}."),
    );
    for (l, t) in rows {
        f.line(&name, l, t.bytes_read);
    }
    let name = format!("nvmf_{prefix}_written_bytes_total");
    f.head(
        &name,
        "counter",
        &format!("Bytes written by successful Write commands per {what}."),
    );
    for (l, t) in rows {
        f.line(&name, l, t.bytes_written);
    }
    let name = format!("nvmf_{prefix}_errors_total");
    f.head(
        &name,
        "counter",
        &format!("Completions with a non-zero status per {what}, by status code type."),
    );
    for (l, t) in rows {
        for (sct, n) in SCT_NAMES.iter().zip(t.errors) {
            if n != 0 || !sct.starts_with("reserved") {
                let mut l = l.clone();
                l.push(("sct", sct));
                f.line(&name, &l, n);
            }
        }
    }
    let name = format!("nvmf_{prefix}_latency_seconds");
    f.head(&name, "histogram", &format!("Command latency per {what}, from the command capsule being taken in to its completion being written."));
    for (l, t) in rows {
        let mut cum = 0u64;
        for (i, n) in t.buckets.iter().enumerate() {
            cum = cum.wrapping_add(*n);
            let le = bucket_le(i).map_or_else(|| "+Inf".to_string(), |s| format!("{s}"));
            let mut l = l.clone();
            l.push(("le", &le));
            f.line(&format!("{name}_bucket"), &l, cum);
        }
        f.line(&format!("{name}_sum"), l, secs(t.latency_ns));
        f.line(&format!("{name}_count"), l, t.count());
    }
}

/// Renders every metric of `reg` in the Prometheus text exposition format 0.0.4.
pub fn render(reg: &Registry) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let m = &reg.metrics;
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    f.head(
        "nvmf_tcp_connections_accepted_total",
        "counter",
        "TCP connections accepted.",
    );
    f.line(
        "nvmf_tcp_connections_accepted_total",
        &[],
        ld(&m.tcp_accepted),
    );
    f.head(
        "nvmf_tcp_connections_refused_total",
        "counter",
        "TCP connections refused by the connection limits.",
    );
    f.line(
        "nvmf_tcp_connections_refused_total",
        &[],
        ld(&m.tcp_refused),
    );
    f.head(
        "nvmf_termreqs_sent_total",
        "counter",
        "C2HTermReq PDUs sent (protocol errors), on any connection.",
    );
    f.line("nvmf_termreqs_sent_total", &[], ld(&m.termreqs_sent));
    f.head(
        "nvmf_connects_unknown_subsystem_total",
        "counter",
        "Connect commands naming a subsystem not served.",
    );
    f.line(
        "nvmf_connects_unknown_subsystem_total",
        &[],
        ld(&m.connects_unknown_subsystem),
    );

    let mut subs = vec![reg.discovery.clone()];
    subs.extend(reg.subsystems());
    type Get = fn(&SubsysMetrics) -> &AtomicU64;
    let per_sub: [(&str, &str, Get); 4] = [
        (
            "nvmf_subsystem_controllers_created_total",
            "Controllers (associations) created.",
            |s| &s.controllers_created,
        ),
        (
            "nvmf_subsystem_keep_alive_expiries_total",
            "Associations ended by an expired Keep Alive Timeout.",
            |s| &s.keep_alive_expiries,
        ),
        (
            "nvmf_subsystem_termreqs_sent_total",
            "C2HTermReq PDUs sent on connections of the subsystem.",
            |s| &s.termreqs_sent,
        ),
        (
            "nvmf_subsystem_connects_rejected_total",
            "Connect commands rejected.",
            |s| &s.connects_rejected,
        ),
    ];
    f.head(
        "nvmf_subsystem_connects_accepted_total",
        "counter",
        "Connect commands accepted (admin and I/O queues).",
    );
    for s in &subs {
        f.line(
            "nvmf_subsystem_connects_accepted_total",
            &[("subsystem", &s.nqn)],
            ld(&s.metrics.connects_accepted),
        );
    }
    for (name, help, get) in per_sub {
        f.head(name, "counter", help);
        for s in &subs {
            f.line(name, &[("subsystem", &s.nqn)], ld(get(&s.metrics)));
        }
    }
    f.head(
        "nvmf_subsystem_controllers",
        "gauge",
        "Controllers (associations) live now.",
    );
    for s in &subs {
        f.line(
            "nvmf_subsystem_controllers",
            &[("subsystem", &s.nqn)],
            s.all_controllers().len(),
        );
    }

    // Namespaces: every configured one (zeros included) plus retired NSIDs with counts.
    let mut ns_rows: Vec<(String, String, Totals)> = Vec::new();
    let mut q_rows: Vec<(String, String, String, String, Totals)> = Vec::new();
    for s in &subs {
        let mut by = s.metrics.by_namespace();
        by.remove(&0);
        for n in s.namespaces().keys() {
            by.entry(*n).or_default();
        }
        for (n, t) in by {
            ns_rows.push((s.nqn.clone(), n.to_string(), t));
        }
        for ((c, q), (h, t)) in s.metrics.by_queue() {
            q_rows.push((
                s.nqn.clone(),
                c.to_string(),
                q.to_string(),
                h.to_string(),
                t,
            ));
        }
    }
    let rows: Vec<(Vec<(&str, &str)>, &Totals)> = ns_rows
        .iter()
        .map(|(s, n, t)| (vec![("subsystem", s.as_str()), ("nsid", n.as_str())], t))
        .collect();
    io_families(&mut f, "namespace", "namespace", &rows);
    let rows: Vec<(Vec<(&str, &str)>, &Totals)> = q_rows
        .iter()
        .map(|(s, c, q, h, t)| {
            (
                vec![
                    ("subsystem", s.as_str()),
                    ("ctrl", c.as_str()),
                    ("qid", q.as_str()),
                    ("hostnqn", h.as_str()),
                ],
                t,
            )
        })
        .collect();
    io_families(&mut f, "queue", "queue", &rows);
    out
}

/// Longest request head read.
const MAX_HEAD: usize = 8192;

/// Serves `GET /metrics` on `listener` until the process ends: one request per
/// connection, `Connection: close`. Other paths get 404, other methods 405.
pub async fn serve(reg: Arc<Registry>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((s, peer)) => {
                let reg = reg.clone();
                tokio::spawn(async move {
                    let r = tokio::time::timeout(Duration::from_secs(10), answer(&reg, s)).await;
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => debug!(%peer, "metrics request: {e}"),
                        Err(_) => debug!(%peer, "metrics request timed out"),
                    }
                });
            }
            Err(e) => {
                warn!("metrics accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(reg: &Registry, mut s: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_HEAD {
            return respond(
                &mut s,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request head too long\n",
                true,
            )
            .await;
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut w = line.split_whitespace();
    let (method, target) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let body_too = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut s,
            "405 Method Not Allowed",
            "text/plain",
            b"only GET\n",
            true,
        )
        .await;
    }
    if path != "/metrics" {
        return respond(
            &mut s,
            "404 Not Found",
            "text/plain",
            b"not found: try /metrics\n",
            body_too,
        )
        .await;
    }
    let body = render(reg);
    respond(
        &mut s,
        "200 OK",
        "text/plain; version=0.0.4; charset=utf-8",
        body.as_bytes(),
        body_too,
    )
    .await
}

async fn respond(
    s: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        r.extend_from_slice(body);
    }
    s.write_all(&r).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log2_microseconds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1000), 0);
        assert_eq!(bucket_of(1001), 1);
        assert_eq!(bucket_of(2000), 1);
        assert_eq!(bucket_of(2001), 2);
        assert_eq!(bucket_of(1_000_000), 10); // 1 ms <= 1024 µs
        assert_eq!(bucket_of(u64::MAX), BUCKETS);
        assert_eq!(bucket_le(0), Some(1e-6));
        assert_eq!(bucket_le(BUCKETS), None);
        for i in 0..BUCKETS {
            let le_ns = (1u64 << i) * 1000;
            assert_eq!(bucket_of(le_ns), i);
            assert_eq!(bucket_of(le_ns + 1), i + 1);
        }
    }

    #[test]
    fn single_writer_counts_and_retires() {
        let m = SubsysMetrics::default();
        let b = m.register(1, 1, 1, Arc::from("h"));
        for _ in 0..5 {
            b.record(Kind::Read, 4096, None, Duration::from_micros(3));
        }
        b.record(Kind::Read, 4096, Some(0), Duration::from_micros(3));
        b.record(Kind::Write, 512, None, Duration::from_millis(2));
        let t = m.namespace(Some(1));
        assert_eq!(t.cmds, [6, 1, 0]);
        assert_eq!(t.bytes_read, 5 * 4096);
        assert_eq!(t.bytes_written, 512);
        assert_eq!(t.errors[0], 1);
        assert_eq!(t.buckets[2], 6);
        assert_eq!(t.buckets[11], 1);
        assert_eq!(t.count(), 7);
        assert_eq!(m.by_queue().len(), 1);
        m.retire(&[b]);
        assert!(m.by_queue().is_empty());
        assert_eq!(m.namespace(Some(1)), t);
        assert_eq!(m.namespace(None), t);
        assert_eq!(m.namespace(Some(2)), Totals::default());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
