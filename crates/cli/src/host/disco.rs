//! `connect-all` (following referrals) and persistent discovery (`discover -p`,
//! `connect-all -p`): what nvme-cli's `connect-all` and its udev rule
//! (`70-nvmf-autoconnect.rules`, on a Discovery Log Change event) do together.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::anyhow;
use nvmf_host::{ConnectOptions, PersistentDiscovery, TransportAddr};
use nvmf_proto::log::{subtype, trtype, DiscoveryLog, DiscoveryLogEntry};
use serde_json::{json, Value};

use super::{connect_req, daemon, emit, fmt, print_json, ConnectTuning, OutputFormat};

/// How many referrals deep `connect-all` follows (the start is depth 0); a
/// referral loop ends at the first service already read.
pub const MAX_REFERRAL_DEPTH: usize = 8;

/// An NVM subsystem entry found while walking the discovery services.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Found {
    /// Where it is.
    pub addr: TransportAddr,
    /// Its NQN.
    pub subnqn: String,
    /// The discovery service whose log listed it.
    pub via: TransportAddr,
}

/// Reads the log at `start` and follows its referrals (SUBTYPE 1), breadth
/// first, each service once, at most [`MAX_REFERRAL_DEPTH`] deep; returns the
/// NVM subsystem entries (SUBTYPE 2, TCP) in the order found, without
/// duplicates, and one message per referred service that could not be read.
/// The current discovery subsystem entries (SUBTYPE 3) describe the service
/// being read and are skipped. A failure at `start` is an error.
pub async fn walk(d: &ConnectOptions) -> anyhow::Result<(Vec<Found>, Vec<String>)> {
    let mut seen: HashSet<TransportAddr> = HashSet::from([d.addr]);
    let mut todo = vec![(d.addr, 0usize)];
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let mut i = 0;
    while i < todo.len() {
        let (addr, depth) = todo[i];
        i += 1;
        let mut o = d.clone();
        o.addr = addr;
        let log = match nvmf_host::discover_with(&o).await {
            Ok(l) => l,
            Err(e) if depth == 0 => return Err(e.into()),
            Err(e) => {
                problems.push(format!("referral {addr} (depth {depth}): {e}"));
                continue;
            }
        };
        // The transports our host speaks; other entries (FC, loop) are skipped.
        for e in log
            .entries
            .iter()
            .filter(|e| e.trtype == trtype::TCP || e.trtype == trtype::RDMA)
        {
            let Ok(mut at) = TransportAddr::from_parts(&e.traddr, &e.trsvcid) else {
                problems.push(format!(
                    "{addr}: entry {} has an unusable address {}:{}",
                    e.subnqn, e.traddr, e.trsvcid
                ));
                continue;
            };
            if e.trtype == trtype::RDMA {
                at = TransportAddr::rdma(at.socket);
            }
            match e.subtype {
                subtype::NVME => {
                    let f = Found {
                        addr: at,
                        subnqn: e.subnqn.clone(),
                        via: addr,
                    };
                    if !found
                        .iter()
                        .any(|x: &Found| x.addr == f.addr && x.subnqn == f.subnqn)
                    {
                        found.push(f);
                    }
                }
                subtype::REFERRAL => {
                    if depth + 1 > MAX_REFERRAL_DEPTH {
                        problems.push(format!(
                            "referral {at} from {addr} not followed: deeper than {MAX_REFERRAL_DEPTH}"
                        ));
                    } else if seen.insert(at) {
                        todo.push((at, depth + 1));
                    }
                }
                _ => {}
            }
        }
    }
    Ok((found, problems))
}

/// Connects (through the host daemon) to every subsystem found; `template` is
/// a daemon `connect` request (options and tuning) whose address and NQN are
/// replaced. Returns what was connected as JSON objects (`device`, `subnqn`,
/// `traddr`, `trsvcid`, `already`). Failures are reported on stderr (in the
/// daemon: its log) and skipped.
fn connect_found(template: &Value, found: &[Found]) -> Vec<Value> {
    let mut devices = Vec::new();
    for f in found {
        let mut req = template.clone();
        req["trtype"] = json!(f.addr.kind.name());
        req["traddr"] = json!(f.addr.traddr());
        req["trsvcid"] = json!(f.addr.trsvcid());
        req["subnqn"] = json!(f.subnqn);
        let r = daemon::ensure_running().and_then(|()| daemon::request(&req));
        match r {
            Ok(r) => devices.push(json!({
                "device": r["name"],
                "subnqn": f.subnqn,
                "traddr": f.addr.traddr(),
                "trsvcid": f.addr.trsvcid(),
                "already": r["already"].as_bool().unwrap_or(false),
            })),
            Err(err) => {
                eprintln!(
                    "nvmf: could not connect to {} at {}: {err:#}",
                    f.subnqn, f.addr
                );
                tracing::warn!("could not connect to {} at {}: {err:#}", f.subnqn, f.addr);
            }
        }
    }
    devices
}

fn print_devices(out: OutputFormat, devices: &[Value]) -> anyhow::Result<()> {
    match out {
        OutputFormat::Json => print_json(&Value::Array(devices.to_vec())),
        OutputFormat::Normal => {
            for d in devices {
                emit(&format!(
                    "{}device: {} ({} at {}:{})\n",
                    if d["already"].as_bool() == Some(true) {
                        "already connected: "
                    } else {
                        ""
                    },
                    d["device"].as_str().unwrap_or("?"),
                    d["subnqn"].as_str().unwrap_or(""),
                    d["traddr"].as_str().unwrap_or(""),
                    d["trsvcid"].as_str().unwrap_or("")
                ));
            }
            Ok(())
        }
    }
}

/// `nvmf connect-all`: walk, connect, print.
pub fn connect_all(
    rt: &tokio::runtime::Runtime,
    d: &ConnectOptions,
    tuning: &ConnectTuning,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let (found, problems) = rt.block_on(walk(d))?;
    for p in &problems {
        eprintln!("nvmf: {p}");
    }
    let mut t = d.clone();
    t.subnqn = String::new();
    let devices = connect_found(&connect_req(&t, tuning), &found);
    print_devices(out, &devices)
}

/// Where persistent discovery reports: standard output (foreground) or the
/// host daemon's log.
#[derive(Debug, Clone, Copy)]
pub enum Sink {
    /// Print, in this format.
    Stdout(OutputFormat),
    /// `tracing::info!` (the daemon's log).
    Log,
}

fn key(e: &DiscoveryLogEntry) -> (u8, String, String, String) {
    (
        e.subtype,
        e.subnqn.clone(),
        e.traddr.clone(),
        e.trsvcid.clone(),
    )
}

/// The entries in `new` and not in `old` (`+`) and the reverse (`-`), one line
/// each: `+ nvme subsystem NQN at ADDR:PORT`.
pub fn diff(old: &DiscoveryLog, new: &DiscoveryLog) -> Vec<String> {
    let o: HashSet<_> = old.entries.iter().map(key).collect();
    let n: HashSet<_> = new.entries.iter().map(key).collect();
    let line = |sign: char, e: &DiscoveryLogEntry| {
        format!(
            "{sign} {} {} at {}:{}",
            fmt::subtype(e.subtype),
            e.subnqn,
            e.traddr,
            e.trsvcid
        )
    };
    let mut v: Vec<String> = new
        .entries
        .iter()
        .filter(|e| !o.contains(&key(e)))
        .map(|e| line('+', e))
        .collect();
    v.extend(
        old.entries
            .iter()
            .filter(|e| !n.contains(&key(e)))
            .map(|e| line('-', e)),
    );
    v
}

fn show_log(sink: Sink, log: &DiscoveryLog) -> anyhow::Result<()> {
    let out = match sink {
        Sink::Stdout(o) => o,
        Sink::Log => {
            let nqns: Vec<String> = log
                .entries
                .iter()
                .map(|e| format!("{} {}:{}", e.subnqn, e.traddr, e.trsvcid))
                .collect();
            tracing::info!("discovery log, GENCTR {}: {}", log.genctr, nqns.join(", "));
            return Ok(());
        }
    };
    match out {
        OutputFormat::Json => {
            emit(&(serde_json::to_string(&fmt::discovery_json(log))? + "\n"));
            Ok(())
        }
        OutputFormat::Normal => {
            emit(&fmt::discovery_text(log));
            Ok(())
        }
    }
}

/// `nvmf discover -p` / `nvmf connect-all -p`: holds a persistent discovery
/// controller in this process until interrupted (SIGINT/SIGTERM). Prints the
/// log, then on every Discovery Log Change notice re-reads it and prints what
/// changed (`discovery log changed: GENCTR a -> b` and `+`/`-` lines; with `-o
/// json` the whole log, one line); with `connect` (connect-all semantics)
/// also connects every subsystem now listed, following referrals, through
/// the host daemon. A lost association is re-established every 5 s.
pub fn persistent(
    rt: &tokio::runtime::Runtime,
    d: &ConnectOptions,
    connect: Option<&ConnectTuning>,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let template = connect.map(|t| {
        let mut o = d.clone();
        o.subnqn = String::new();
        connect_req(&o, t)
    });
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = persistent_loop(d, template, Sink::Stdout(out), true) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    })
}

/// The host daemon's task for `discover -p` / `connect-all -p` (`connect`: the
/// connect request template): runs until aborted (`disconnect-all`), reports
/// to the daemon's log, reconnects every 5 s.
pub async fn daemon_task(d: ConnectOptions, connect: Option<Value>) {
    tracing::info!("persistent discovery controller at {}: started", d.addr);
    if let Err(e) = persistent_loop(&d, connect, Sink::Log, false).await {
        tracing::warn!("persistent discovery controller at {}: {e:#}", d.addr);
    }
}

/// `fail_first`: a first connection that fails is an error (foreground);
/// else it is retried like a lost one (daemon).
async fn persistent_loop(
    d: &ConnectOptions,
    connect: Option<Value>,
    sink: Sink,
    fail_first: bool,
) -> anyhow::Result<()> {
    let mut first = true;
    let mut last: Option<DiscoveryLog> = None;
    loop {
        let mut pd = match PersistentDiscovery::connect(d).await {
            Ok(p) => p,
            Err(e) if first && fail_first => {
                return Err(anyhow!(e).context(format!("discovery controller at {}", d.addr)))
            }
            Err(e) => {
                tracing::warn!("discovery controller at {}: {e}; retrying in 5 s", d.addr);
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if first && !pd.notices() {
            tracing::warn!(
                "the discovery controller at {} sends no Discovery Log Change notices; polling it",
                d.addr
            );
            eprintln!(
                "nvmf: the discovery controller at {} sends no Discovery Log Change notices; polling it",
                d.addr
            );
        }
        let r: anyhow::Result<()> = async {
            loop {
                let log = pd.log().await?;
                match &last {
                    None => show_log(sink, &log)?,
                    // After a reconnect to a restarted target GENCTR may
                    // start over: a changed entry list counts too.
                    Some(old) if old.genctr != log.genctr || !diff(old, &log).is_empty() => {
                        match sink {
                            Sink::Stdout(OutputFormat::Json) => show_log(sink, &log)?,
                            Sink::Log => tracing::info!(
                                "discovery log at {} changed: GENCTR {} -> {}: {}",
                                d.addr,
                                old.genctr,
                                log.genctr,
                                diff(old, &log).join("; ")
                            ),
                            Sink::Stdout(OutputFormat::Normal) => {
                                let mut s = format!(
                                    "discovery log changed: GENCTR {} -> {}\n",
                                    old.genctr, log.genctr
                                );
                                for l in diff(old, &log) {
                                    s.push_str(&l);
                                    s.push('\n');
                                }
                                emit(&s);
                            }
                        }
                    }
                    Some(_) => {}
                }
                first = false;
                if let Some(t) = &connect {
                    // nvme-cli + udev: connect-all on every change.
                    let (found, problems) = walk(d).await?;
                    for p in &problems {
                        eprintln!("nvmf: {p}");
                        tracing::warn!("{p}");
                    }
                    let t2 = t.clone();
                    let devices =
                        tokio::task::spawn_blocking(move || connect_found(&t2, &found)).await?;
                    let new: Vec<Value> = devices
                        .into_iter()
                        .filter(|v| v["already"].as_bool() != Some(true))
                        .collect();
                    match sink {
                        Sink::Stdout(out) => print_devices(out, &new)?,
                        Sink::Log => {
                            for v in &new {
                                tracing::info!(
                                    "connect-all: {} connected to {} at {}:{}",
                                    v["device"].as_str().unwrap_or("?"),
                                    v["subnqn"].as_str().unwrap_or(""),
                                    v["traddr"].as_str().unwrap_or(""),
                                    v["trsvcid"].as_str().unwrap_or("")
                                );
                            }
                        }
                    }
                }
                let genctr = log.genctr;
                last = Some(log);
                pd.wait_change(genctr).await?;
            }
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(
                "discovery controller at {}: {e:#}; reconnecting in 5 s",
                d.addr
            );
            pd.close().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(st: u8, nqn: &str, port: &str) -> DiscoveryLogEntry {
        DiscoveryLogEntry {
            trtype: 3,
            adrfam: 1,
            subtype: st,
            trsvcid: port.into(),
            traddr: "127.0.0.1".into(),
            subnqn: nqn.into(),
            ..Default::default()
        }
    }

    #[test]
    fn diff_lists_added_and_removed_entries() {
        let log = |e: Vec<DiscoveryLogEntry>| DiscoveryLog {
            genctr: 1,
            numrec: e.len() as u64,
            recfmt: 0,
            entries: e,
        };
        let a = log(vec![
            entry(3, "d", "4420"),
            entry(2, "nqn.a", "4420"),
            entry(1, "d", "8009"),
        ]);
        let b = log(vec![
            entry(3, "d", "4420"),
            entry(2, "nqn.a", "4420"),
            entry(2, "nqn.b", "4420"),
        ]);
        assert_eq!(
            diff(&a, &b),
            [
                "+ nvme subsystem nqn.b at 127.0.0.1:4420",
                "- discovery subsystem referral d at 127.0.0.1:8009"
            ]
        );
        assert!(diff(&a, &a).is_empty());
    }
}
