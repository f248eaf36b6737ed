//! The host daemon: holds controller associations after `nvmf connect` returns,
//! like the kernel holds nvme-cli's. The CLI talks to it over a Unix socket with
//! one JSON object per line each way (see docs/host.md). Block data (`read`,
//! `write`) travels as raw bytes after the line that announces them
//! (`"payload": N`), never encoded: hex in JSON made an 8 MiB read cost seconds
//! of CPU on the daemon's runtime threads, long enough under an emulated CPU to
//! hold up its keep-alive timer.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use nvmf_blockdev::{Choice, Disk, IoPolicy, Multipath, Queues};
use nvmf_host::{ConnectOptions, Controller, LinkState, TransportAddr};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::fmt::{hex, unhex};

/// The control socket path: `$NVMF_RUN_DIR/host.sock`, else `/run/nvmf/host.sock`
/// when /run/nvmf is (or can be made) writable, else `$XDG_RUNTIME_DIR/nvmf/host.sock`,
/// else `/tmp/nvmf-$UID/host.sock`.
pub fn socket_path() -> PathBuf {
    if let Some(d) = std::env::var_os("NVMF_RUN_DIR") {
        return PathBuf::from(d).join("host.sock");
    }
    let run = Path::new("/run/nvmf");
    if dir_usable(run) {
        return run.join("host.sock");
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        let d = PathBuf::from(x).join("nvmf");
        if dir_usable(&d) {
            return d.join("host.sock");
        }
    }
    PathBuf::from(format!("/tmp/nvmf-{}", uid())).join("host.sock")
}

fn uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

fn dir_usable(d: &Path) -> bool {
    if d.is_dir() {
        // Writable by us?
        let probe = d.join(format!(".probe-{}", std::process::id()));
        let ok = std::fs::write(&probe, b"").is_ok();
        let _ = std::fs::remove_file(&probe);
        return ok;
    }
    std::fs::create_dir_all(d).is_ok() && {
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
        true
    }
}

/// Largest block data one request or answer may carry (a 256 MiB read or
/// write: 65,536 blocks of 4 KiB, the most `-c` allows).
pub const MAX_PAYLOAD: u64 = 256 << 20;

/// Sends one request to the daemon and returns its `result`, or its error.
pub fn request(req: &Value) -> anyhow::Result<Value> {
    Ok(request_data(req, None)?.0)
}

/// Like [`request`], with block data sent after the request and taken from
/// after the answer (`"payload": N` on either line says N raw bytes follow).
pub fn request_data(req: &Value, data: Option<&[u8]>) -> anyhow::Result<(Value, Vec<u8>)> {
    let path = socket_path();
    let s = UnixStream::connect(&path).map_err(|e| {
        anyhow!(
            "no nvmf host daemon is answering on {} ({e}) — connect a controller first (nvmf connect -t tcp -a ADDR -s PORT -n NQN)",
            path.display()
        )
    })?;
    call(s, req, data)
}

fn call(mut s: UnixStream, req: &Value, data: Option<&[u8]>) -> anyhow::Result<(Value, Vec<u8>)> {
    let mut req = req.clone();
    if let Some(d) = data {
        req["payload"] = json!(d.len());
    }
    let mut line = serde_json::to_vec(&req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    if let Some(d) = data {
        s.write_all(d)?;
    }
    let mut r = BufReader::new(s);
    let mut resp = String::new();
    r.read_line(&mut resp)
        .context("reading the host daemon's answer")?;
    if resp.is_empty() {
        bail!(
            "the host daemon closed the connection without answering (see its log next to {})",
            socket_path().display()
        );
    }
    let v: Value = serde_json::from_str(&resp).context("the host daemon's answer is not JSON")?;
    if v["ok"].as_bool() == Some(true) {
        let mut payload = Vec::new();
        if let Some(n) = u(&v, "payload") {
            if n > MAX_PAYLOAD {
                bail!("the host daemon announced {n} bytes of data, more than {MAX_PAYLOAD}");
            }
            payload.resize(n as usize, 0);
            r.read_exact(&mut payload)
                .context("reading the data of the host daemon's answer")?;
        }
        Ok((v["result"].clone(), payload))
    } else {
        bail!(
            "{}",
            v["error"]
                .as_str()
                .unwrap_or("the host daemon reported an unknown error")
        )
    }
}

/// True when a daemon answers on the socket.
pub fn running() -> bool {
    UnixStream::connect(socket_path())
        .ok()
        .and_then(|s| call(s, &json!({"op": "ping"}), None).ok())
        .is_some()
}

/// Starts the daemon (if none answers) and waits until it does.
pub fn ensure_running() -> anyhow::Result<()> {
    if running() {
        return Ok(());
    }
    let path = socket_path();
    let dir = path.parent().unwrap_or(Path::new("/tmp"));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let log = dir.join("host-daemon.log");
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let exe = std::env::current_exe().context("finding the nvmf binary")?;
    use std::os::unix::process::CommandExt;
    std::process::Command::new(exe)
        .arg("host-daemon")
        .arg("--socket")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(logf)
        .env("NO_COLOR", "1")
        .process_group(0)
        .spawn()
        .context("starting the nvmf host daemon")?;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        if running() {
            return Ok(());
        }
    }
    bail!("the nvmf host daemon did not start; see {}", log.display())
}

struct Entry {
    name: String,
    ctrl: Controller,
    /// The block devices of every controller (shared with the other entries:
    /// a device may have paths through several controllers).
    heads: Heads,
    /// ublk or NBD for the devices this controller makes (`connect --block-kind`).
    kind: Choice,
    /// Keeps this controller's paths in step with its namespaces
    /// (`connect --block`).
    watcher: Option<tokio::task::JoinHandle<()>>,
}

/// A namespace exposed as a block device, over every controller of the
/// subsystem that the daemon holds with `--block` (Linux's native multipath
/// likewise gives one device per namespace of a subsystem, whatever the number
/// of controllers: NVMe Base 2.0 §8.1; the namespace is the same one when the
/// subsystem NQN, NSID and the Identify Namespace NGUID / EUI64 match).
struct Head {
    subnqn: String,
    nsid: u32,
    nguid: [u8; 16],
    eui64: [u8; 8],
    block_size: u32,
    mp: Multipath,
    dev: Disk,
}

/// What identifies a namespace across the controllers of a subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NsIdentity<'a> {
    subnqn: &'a str,
    nsid: u32,
    nguid: [u8; 16],
    eui64: [u8; 8],
    block_size: u32,
}

impl NsIdentity<'_> {
    /// True when both name the same namespace: same subsystem NQN, NSID and
    /// block size, and equal NGUID and EUI64 where both report one (an
    /// all-zero value is "not reported": NVM Command Set 1.0 Figure 97). Linux
    /// puts two controllers' namespaces under one head when the NSID matches
    /// and the identifiers are all equal (`nvme_ns_ids_equal`); here one side
    /// not reporting an identifier is no reason to make a second device.
    fn same_namespace(&self, o: &NsIdentity<'_>) -> bool {
        let same =
            |a: &[u8], b: &[u8]| a.iter().all(|&x| x == 0) || b.iter().all(|&x| x == 0) || a == b;
        self.subnqn == o.subnqn
            && self.nsid == o.nsid
            && self.block_size == o.block_size
            && same(&self.nguid, &o.nguid)
            && same(&self.eui64, &o.eui64)
    }
}

impl Head {
    /// True when namespace `ns` of a controller of `subnqn` is this device's
    /// namespace.
    fn matches(&self, subnqn: &str, ns: &nvmf_host::Namespace) -> bool {
        NsIdentity {
            subnqn: &self.subnqn,
            nsid: self.nsid,
            nguid: self.nguid,
            eui64: self.eui64,
            block_size: self.block_size,
        }
        .same_namespace(&NsIdentity {
            subnqn,
            nsid: ns.nsid,
            nguid: ns.id.nguid,
            eui64: ns.id.eui64,
            block_size: ns.block_size,
        })
    }
}

type Heads = Arc<Mutex<Vec<Head>>>;

/// Makes namespace `ns` of `ctrl` a path of its device, making the device if
/// it is the first path.
async fn join(
    heads: &mut Vec<Head>,
    ctrl: &Controller,
    ns: &nvmf_host::Namespace,
    name: &str,
    policy: Option<IoPolicy>,
    kind: Choice,
) -> anyhow::Result<()> {
    let subnqn = ctrl.options().subnqn.clone();
    if let Some(h) = heads.iter().find(|h| h.matches(&subnqn, ns)) {
        if !h.mp.has_path(ctrl) {
            h.mp.add_path(ctrl, ns.nsid);
            tracing::info!(
                "{name}: namespace {} is another path of {} ({} paths)",
                ns.nsid,
                h.dev.path().display(),
                h.mp.len()
            );
        }
        if let Some(p) = policy {
            h.mp.set_policy(p);
        }
        return Ok(());
    }
    let mp = Multipath::new(ctrl, ns.nsid, policy.unwrap_or_default());
    let g = mp.geometry()?;
    let dev = Disk::attach_io(kind, mp.clone(), g, Queues::of(ctrl)).await?;
    tracing::info!("{name}: namespace {} at {}", ns.nsid, dev.path().display());
    heads.push(Head {
        subnqn,
        nsid: ns.nsid,
        nguid: ns.id.nguid,
        eui64: ns.id.eui64,
        block_size: ns.block_size,
        mp,
        dev,
    });
    Ok(())
}

/// Takes `ctrl` away as a path of every device (of namespace `nsid` only
/// with `Some`); a device left without a path is removed.
async fn leave(heads: &mut Vec<Head>, ctrl: &Controller, nsid: Option<u32>, name: &str) {
    let mut i = 0;
    while i < heads.len() {
        let h = &heads[i];
        if !h.mp.has_path(ctrl) || nsid.is_some_and(|n| n != h.nsid) {
            i += 1;
            continue;
        }
        let left = h.mp.remove_path(ctrl);
        if left > 0 {
            tracing::info!(
                "{name}: no longer a path of {} ({left} left)",
                h.dev.path().display()
            );
            i += 1;
            continue;
        }
        let h = heads.remove(i);
        let p = h.dev.path().display().to_string();
        match h.dev.detach().await {
            Ok(()) => tracing::info!("{name}: {p} removed"),
            Err(e) => tracing::warn!("{name}: removing {p}: {e}"),
        }
    }
}

impl Entry {
    /// Exposes every namespace as a block device (or as one more path of the
    /// device that already exposes it) from now on, following namespaces
    /// that come, go or change size on the target.
    async fn expose(&mut self, policy: Option<IoPolicy>) -> anyhow::Result<()> {
        let mut heads = self.heads.lock().await;
        if let Some(p) = policy {
            let nqn = &self.ctrl.options().subnqn;
            for h in heads.iter().filter(|h| &h.subnqn == nqn) {
                h.mp.set_policy(p);
            }
        }
        if self.watcher.is_some() {
            return Ok(());
        }
        for ns in self.ctrl.namespaces() {
            if let Err(e) = join(&mut heads, &self.ctrl, &ns, &self.name, policy, self.kind).await {
                leave(&mut heads, &self.ctrl, None, &self.name).await;
                bail!("exposing namespace {} as a block device: {e}", ns.nsid);
            }
        }
        drop(heads);
        self.watcher = Some(tokio::spawn(watch_disks(
            self.ctrl.clone(),
            self.kind,
            self.heads.clone(),
            self.name.clone(),
        )));
        Ok(())
    }

    /// Takes this controller away from the block devices (removing those it
    /// was the last path of), then disconnects it.
    async fn disconnect(self) {
        if let Some(w) = self.watcher {
            w.abort();
        }
        leave(&mut *self.heads.lock().await, &self.ctrl, None, &self.name).await;
        if let Err(err) = self.ctrl.disconnect().await {
            tracing::warn!("{}: shutdown: {err}", self.name);
        }
    }
}

/// Every second, while the association is live: a namespace that is gone from
/// the controller (the target removed it; the host learnt it from a Namespace
/// Attribute Changed notice) stops being a path of its device (the device
/// goes with its last path), a new one gets a device (or joins one), and a
/// resized one gets its device resized (on a ublk device without live resize:
/// the device is made again at the new size, and the other controllers'
/// watchers join it again as paths).
async fn watch_disks(ctrl: Controller, kind: Choice, heads: Heads, name: String) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let subnqn = ctrl.options().subnqn.clone();
    loop {
        tick.tick().await;
        if ctrl.state() != LinkState::Live {
            continue;
        }
        let nss = ctrl.namespaces();
        let mut h = heads.lock().await;
        let gone: Vec<u32> = h
            .iter()
            .filter(|d| d.mp.has_path(&ctrl))
            .filter(|d| !nss.iter().any(|n| d.matches(&subnqn, n)))
            .map(|d| d.nsid)
            .collect();
        for nsid in gone {
            tracing::info!("{name}: namespace {nsid} is gone or changed; leaving its device");
            leave(&mut h, &ctrl, Some(nsid), &name).await;
        }
        for ns in &nss {
            if let Some(i) = h
                .iter()
                .position(|d| d.mp.has_path(&ctrl) && d.matches(&subnqn, ns))
            {
                let d = &h[i];
                if ns.blocks == d.dev.blocks() {
                    continue;
                }
                if d.dev.can_resize() {
                    if let Err(e) = d.dev.resize(ns.blocks).await {
                        tracing::warn!("{name}: {e}");
                    }
                    continue;
                }
                let d = h.remove(i);
                let p = d.dev.path().display().to_string();
                tracing::info!(
                    "{name}: namespace {} is now {} blocks; {p} cannot be resized live, making it again",
                    ns.nsid,
                    ns.blocks
                );
                if let Err(e) = d.dev.detach().await {
                    tracing::warn!("{name}: removing {p}: {e}");
                }
            }
            if let Err(e) = join(&mut h, &ctrl, ns, &name, None, kind).await {
                tracing::warn!("{name}: exposing new namespace {}: {e}", ns.nsid);
            }
        }
    }
}

/// The name of an ANA state code, as nvme-cli prints it.
fn ana_name(s: Option<u8>) -> &'static str {
    use nvmf_proto::log::ana_state;
    match s {
        None => "-",
        Some(ana_state::OPTIMIZED) => "optimized",
        Some(ana_state::NON_OPTIMIZED) => "non-optimized",
        Some(ana_state::INACCESSIBLE) => "inaccessible",
        Some(ana_state::PERSISTENT_LOSS) => "persistent-loss",
        Some(ana_state::CHANGE) => "change",
        Some(_) => "reserved",
    }
}

/// One block device with its paths, for `list`.
fn head_json(h: &Head, ctrls: &BTreeMap<u32, Entry>) -> Value {
    let paths: Vec<Value> =
        h.mp.paths()
            .iter()
            .map(|p| {
                let name = ctrls
                    .values()
                    .find(|e| e.ctrl.same_association(&p.ctrl))
                    .map(|e| e.name.clone());
                let o = p.ctrl.options();
                json!({"controller": name, "traddr": o.addr.traddr(), "trsvcid": o.addr.trsvcid(),
                   "state": state_str(&p.link), "ana_state": ana_name(p.ana),
                   "usable": format!("{:?}", p.usable).to_lowercase(),
                   "commands": p.commands, "outstanding": p.outstanding, "failovers": p.failovers})
            })
            .collect();
    json!({"device": h.dev.path().display().to_string(), "subnqn": h.subnqn, "nsid": h.nsid,
           "iopolicy": h.mp.policy().name(), "paths": paths})
}

#[derive(Default)]
struct State {
    ctrls: BTreeMap<u32, Entry>,
    /// Persistent discovery controllers (`discover -p`, `connect-all -p`),
    /// by "ADDR HOSTNQN": each a task that holds one (host/disco.rs).
    persistent: Vec<(String, tokio::task::JoinHandle<()>)>,
    heads: Heads,
}

type Shared = Arc<Mutex<State>>;

/// Runs the daemon in the foreground until `stop` (or SIGTERM/SIGINT).
pub async fn serve(path: PathBuf) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if UnixStream::connect(&path).is_ok() {
        bail!("a host daemon already answers on {}", path.display());
    }
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!("nvmf host daemon listening on {}", path.display());
    let st: Shared = Arc::default();
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            c = l.accept() => {
                let Ok((s, _)) = c else { continue };
                let st = st.clone();
                let stop = stop_tx.clone();
                tokio::spawn(async move { let _ = client(s, st, stop).await; });
            }
            _ = stop_rx.recv() => break,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {}
        }
    }
    let all: Vec<Entry> = std::mem::take(&mut st.lock().await.ctrls)
        .into_values()
        .collect();
    for e in all {
        e.disconnect().await;
    }
    let _ = std::fs::remove_file(&path);
    tracing::info!("nvmf host daemon stopped");
    Ok(())
}

async fn client(
    s: tokio::net::UnixStream,
    st: Shared,
    stop: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let (r, mut w) = s.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut out = Vec::new();
        let resp = match serde_json::from_str::<Value>(&line) {
            Ok(req) => {
                // Block data of a write follows its line.
                let n = u(&req, "payload").unwrap_or(0);
                if n > MAX_PAYLOAD {
                    let e =
                        format!("a request may carry at most {MAX_PAYLOAD} bytes of data, not {n}");
                    w.write_all(format!("{}\n", json!({"ok": false, "error": e})).as_bytes())
                        .await?;
                    return Ok(());
                }
                let mut payload = vec![0u8; n as usize];
                r.read_exact(&mut payload).await?;
                match handle(&req, payload, &mut out, &st).await {
                    Ok(Some(v)) if out.is_empty() => json!({"ok": true, "result": v}),
                    Ok(Some(v)) => json!({"ok": true, "result": v, "payload": out.len()}),
                    Ok(None) => {
                        w.write_all(b"{\"ok\":true,\"result\":null}\n").await?;
                        let _ = stop.send(()).await;
                        return Ok(());
                    }
                    Err(e) => {
                        out.clear();
                        json!({"ok": false, "error": format!("{e:#}")})
                    }
                }
            }
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
        };
        let mut b = serde_json::to_vec(&resp)?;
        b.push(b'\n');
        w.write_all(&b).await?;
        if !out.is_empty() {
            w.write_all(&out).await?;
        }
    }
}

/// Splits `nvme0n1` / `/dev/nvme0n1` into (0, Some(1)), `nvme0` into (0, None).
pub fn parse_dev(dev: &str) -> anyhow::Result<(u32, Option<u32>)> {
    let d = dev.trim_start_matches("/dev/");
    let bad = || anyhow!("'{dev}' is not a device name like nvme0 or nvme0n1 (see nvmf list)");
    let rest = d.strip_prefix("nvme").ok_or_else(bad)?;
    match rest.split_once('n') {
        Some((c, n)) => Ok((
            c.parse().map_err(|_| bad())?,
            Some(n.parse().map_err(|_| bad())?),
        )),
        None => Ok((rest.parse().map_err(|_| bad())?, None)),
    }
}

async fn get(st: &Shared, dev: &str) -> anyhow::Result<(Controller, Option<u32>)> {
    let (i, ns) = parse_dev(dev)?;
    let s = st.lock().await;
    let e = s.ctrls.get(&i).ok_or_else(|| {
        anyhow!("no controller nvme{i} (connected: {})", {
            let v: Vec<&str> = s.ctrls.values().map(|e| e.name.as_str()).collect();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        })
    })?;
    Ok((e.ctrl.clone(), ns))
}

fn state_str(s: &LinkState) -> String {
    match s {
        LinkState::Live => "live".into(),
        LinkState::Reconnecting {
            attempt,
            last_error,
        } => format!("connecting (attempt {attempt}; last error: {last_error})"),
        LinkState::Lost(m) => format!("lost: {m}"),
        LinkState::Disconnected => "deleting".into(),
    }
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

fn s<'a>(v: &'a Value, k: &str) -> anyhow::Result<&'a str> {
    v.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("missing field '{k}'"))
}

/// Builds connect options from a request (also used by `io-check`'s callers).
pub fn options_from(req: &Value) -> anyhow::Result<ConnectOptions> {
    let mut addr =
        TransportAddr::from_parts(s(req, "traddr")?, s(req, "trsvcid")?).map_err(|e| anyhow!(e))?;
    if req.get("trtype").and_then(Value::as_str) == Some("rdma") {
        addr = TransportAddr::rdma(addr.socket);
    }
    let mut o = ConnectOptions::new(addr, s(req, "subnqn")?);
    if let Some(h) = req.get("hostnqn").and_then(Value::as_str) {
        o.hostnqn = h.into();
    }
    if let Some(h) = req.get("hostid").and_then(Value::as_str) {
        o.hostid = unhex(h)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| anyhow!("bad hostid"))?;
    }
    if let Some(n) = u(req, "nr_io_queues") {
        o.nr_io_queues = n as u16;
    }
    if let Some(n) = u(req, "queue_size") {
        o.queue_size = n as u16;
    }
    if let Some(n) = u(req, "kato_ms") {
        o.kato_ms = n as u32;
    }
    if let Some(n) = req.get("ctrl_loss_tmo").and_then(Value::as_i64) {
        o.ctrl_loss_tmo = (n >= 0).then(|| Duration::from_secs(n as u64));
    }
    if let Some(n) = u(req, "reconnect_delay") {
        o.reconnect_delay = Duration::from_secs(n.max(1));
    }
    o.hdr_digest = req
        .get("hdr_digest")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    o.data_digest = req
        .get("data_digest")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    o.dhchap_secret = super::parse_secret(
        req.get("dhchap_secret").and_then(Value::as_str),
        "dhchap_secret",
    )?;
    o.dhchap_ctrl_secret = super::parse_secret(
        req.get("dhchap_ctrl_secret").and_then(Value::as_str),
        "dhchap_ctrl_secret",
    )?;
    o.tls_key = super::parse_tls_key(req.get("tls_key").and_then(Value::as_str), "tls_key")?;
    o.disable_sqflow = req.get("disable_sqflow").and_then(Value::as_bool) == Some(true);
    if req.get("tls_compat").and_then(Value::as_bool) == Some(true) {
        o.tls_derivation = nvmf_proto::tls::Derivation::Compat;
    }
    Ok(o)
}

async fn ctrl_json(e: &Entry) -> Value {
    let devs: Vec<(u32, String)> = e
        .heads
        .lock()
        .await
        .iter()
        .filter(|h| h.mp.has_path(&e.ctrl))
        .map(|h| (h.nsid, h.dev.path().display().to_string()))
        .collect();
    let info = e.ctrl.info();
    let o = e.ctrl.options();
    let nss: Vec<Value> = e
        .ctrl
        .namespaces()
        .iter()
        .map(|n| {
            let dev = devs.iter().find(|d| d.0 == n.nsid).map(|d| d.1.clone());
            json!({"name": format!("{}n{}", e.name, n.nsid), "nsid": n.nsid, "block_size": n.block_size,
                   "blocks": n.blocks, "nuse": n.id.nuse, "size": n.size_bytes(), "block_device": dev,
                   "ana_state": ana_name(e.ctrl.ana_state(n.nsid))})
        })
        .collect();
    json!({
        "name": e.name, "subnqn": o.subnqn, "trtype": o.addr.kind.name(), "traddr": o.addr.traddr(), "trsvcid": o.addr.trsvcid(),
        "hostnqn": o.hostnqn, "cntlid": info.cntlid, "sn": info.id.sn, "mn": info.id.mn, "fr": info.id.fr,
        "state": state_str(&e.ctrl.state()), "nr_io_queues": info.nr_io_queues,
        "queue_size": info.io_queue_size, "namespaces": nss,
    })
}

/// Runs one request. `payload` is the block data that came with it (a write's);
/// block data to send back (a read's) goes into `out`.
async fn handle(
    req: &Value,
    payload: Vec<u8>,
    out: &mut Vec<u8>,
    st: &Shared,
) -> anyhow::Result<Option<Value>> {
    let op = s(req, "op")?;
    Ok(Some(match op {
        "ping" => json!({"pid": std::process::id()}),
        "stop" => return Ok(None),
        "connect" => {
            let o = options_from(req)?;
            let block = req.get("block").and_then(Value::as_bool).unwrap_or(false);
            let kind: Choice = match req.get("block_kind").and_then(Value::as_str) {
                Some(k) => k.parse().map_err(anyhow::Error::msg)?,
                None => Choice::Auto,
            };
            let policy = match req.get("iopolicy").and_then(Value::as_str) {
                Some(p) => Some(p.parse::<IoPolicy>().map_err(|e| anyhow!(e))?),
                None => None,
            };
            {
                let mut s = st.lock().await;
                if let Some(e) = s.ctrls.values_mut().find(|e| {
                    let x = e.ctrl.options();
                    x.addr == o.addr && x.subnqn == o.subnqn && x.hostnqn == o.hostnqn
                }) {
                    if block {
                        e.kind = kind;
                        e.expose(policy).await?;
                    }
                    return Ok(Some(json!({"name": e.name, "already": true})));
                }
            }
            let ctrl = Controller::connect(o).await?;
            let mut s = st.lock().await;
            let i = (0..).find(|i| !s.ctrls.contains_key(i)).unwrap_or(0);
            let name = format!("nvme{i}");
            tracing::info!(
                "{name}: connected to {} at {}",
                ctrl.options().subnqn,
                ctrl.options().addr
            );
            let mut e = Entry {
                name: name.clone(),
                ctrl,
                heads: s.heads.clone(),
                kind,
                watcher: None,
            };
            if block {
                if let Err(err) = e.expose(policy).await {
                    e.disconnect().await;
                    return Err(err);
                }
            }
            s.ctrls.insert(i, e);
            json!({"name": name, "already": false})
        }
        "list" => {
            let s = st.lock().await;
            let mut v = Vec::new();
            for e in s.ctrls.values() {
                v.push(ctrl_json(e).await);
            }
            Value::Array(v)
        }
        "block-devices" => {
            let s = st.lock().await;
            let h = s.heads.lock().await;
            Value::Array(h.iter().map(|h| head_json(h, &s.ctrls)).collect())
        }
        "id-ctrl" => {
            let (c, _) = get(st, s(req, "dev")?).await?;
            let d = c
                .admin(
                    nvmf_proto::Sqe::identify(1, 0),
                    nvmf_host::HostData::FromController(4096),
                )
                .await?;
            json!({"data": hex(&d.data_contiguous())})
        }
        "id-ns" => {
            let (c, ns) = get(st, s(req, "dev")?).await?;
            let nsid = u(req, "nsid").map(|n| n as u32).or(ns).unwrap_or(1);
            let d = c
                .admin(
                    nvmf_proto::Sqe::identify(0, nsid),
                    nvmf_host::HostData::FromController(4096),
                )
                .await?;
            json!({"nsid": nsid, "data": hex(&d.data_contiguous())})
        }
        "get-log" => {
            let (c, ns) = get(st, s(req, "dev")?).await?;
            let nsid = u(req, "nsid")
                .map(|n| n as u32)
                .or(ns)
                .unwrap_or(0xffff_ffff);
            let lid = u(req, "lid").ok_or_else(|| anyhow!("missing lid"))? as u8;
            let len = u(req, "len").unwrap_or(512) as u32;
            json!({"data": hex(&c.get_log_page(lid, nsid, len).await?)})
        }
        "read" | "write" => {
            let dev = s(req, "dev")?;
            let (c, ns) = get(st, dev).await?;
            let nsid = u(req, "nsid").map(|n| n as u32).or(ns).ok_or_else(|| {
                anyhow!(
                    "'{dev}' names a controller; read and write need a namespace such as {dev}n1"
                )
            })?;
            let slba = u(req, "slba").unwrap_or(0);
            if op == "read" {
                let n = u(req, "nblocks").unwrap_or(1);
                *out = c.read(nsid, slba, n).await?;
                json!({})
            } else {
                if payload.is_empty() {
                    bail!("write without data (the request must announce \"payload\": N and send N bytes)");
                }
                let fua = req.get("fua").and_then(Value::as_bool).unwrap_or(false);
                c.write(nsid, slba, payload, fua).await?;
                json!({})
            }
        }
        "resv-register" | "resv-acquire" | "resv-release" | "resv-report" => {
            let dev = s(req, "dev")?;
            let (c, ns) = get(st, dev).await?;
            let nsid = u(req, "nsid").map(|n| n as u32).or(ns).ok_or_else(|| {
                anyhow!("'{dev}' names a controller; give -n NSID or a namespace such as {dev}n1")
            })?;
            let f = |k: &str| u(req, k).unwrap_or(0);
            let iekey = req.get("iekey").and_then(Value::as_bool).unwrap_or(false);
            match op {
                "resv-register" => {
                    c.resv_register(
                        nsid,
                        f("rrega") as u8,
                        iekey,
                        f("cptpl") as u8,
                        f("crkey"),
                        f("nrkey"),
                    )
                    .await?;
                    json!({})
                }
                "resv-acquire" => {
                    c.resv_acquire(
                        nsid,
                        f("racqa") as u8,
                        iekey,
                        f("rtype") as u8,
                        f("crkey"),
                        f("prkey"),
                    )
                    .await?;
                    json!({})
                }
                "resv-release" => {
                    c.resv_release(nsid, f("rrela") as u8, iekey, f("rtype") as u8, f("crkey"))
                        .await?;
                    json!({})
                }
                _ => {
                    let eds = req.get("eds").and_then(Value::as_bool).unwrap_or(false);
                    let len = u(req, "len").unwrap_or(4096) as u32;
                    let r = c.resv_report(nsid, len, eds).await?;
                    json!({"data": hex(&r.encode(eds)), "eds": eds})
                }
            }
        }
        "verify" | "compare" | "copy" | "write-zeroes" | "dsm" => {
            let dev = s(req, "dev")?;
            let (c, ns) = get(st, dev).await?;
            let nsid = u(req, "nsid").map(|n| n as u32).or(ns).ok_or_else(|| {
                anyhow!("'{dev}' names a controller; {op} needs a namespace such as {dev}n1")
            })?;
            match op {
                "verify" => {
                    c.verify(
                        nsid,
                        u(req, "slba").unwrap_or(0),
                        u(req, "nblocks").unwrap_or(1),
                    )
                    .await?
                }
                "write-zeroes" => {
                    let flag = |k| req.get(k).and_then(Value::as_bool).unwrap_or(false);
                    c.write_zeroes(
                        nsid,
                        u(req, "slba").unwrap_or(0),
                        u(req, "nblocks").unwrap_or(1),
                        flag("deac"),
                        flag("fua"),
                    )
                    .await?
                }
                "dsm" => {
                    let ranges: Vec<nvmf_proto::sqe::DsmRange> = req
                        .get("ranges")
                        .and_then(Value::as_array)
                        .ok_or_else(|| anyhow!("dsm without \"ranges\""))?
                        .iter()
                        .map(|r| {
                            let f = |i| r.get(i).and_then(Value::as_u64);
                            match (f(0), f(1), f(2)) {
                                (Some(a), Some(n), Some(slba))
                                    if a <= u64::from(u32::MAX) && n <= u64::from(u32::MAX) =>
                                {
                                    Ok(nvmf_proto::sqe::DsmRange {
                                        attributes: a as u32,
                                        nlb: n as u32,
                                        slba,
                                    })
                                }
                                _ => Err(anyhow!(
                                    "a dsm range is [attributes, blocks, slba] with 32-bit attributes and blocks"
                                )),
                            }
                        })
                        .collect::<anyhow::Result<_>>()?;
                    let attributes = u(req, "attributes").unwrap_or(0) as u32;
                    c.dsm(nsid, &ranges, attributes).await?
                }
                "compare" => {
                    if payload.is_empty() {
                        bail!("compare without data (the request must announce \"payload\": N and send N bytes)");
                    }
                    c.compare(nsid, u(req, "slba").unwrap_or(0), payload)
                        .await?
                }
                _ => {
                    let ranges: Vec<nvmf_proto::sqe::CopySourceRange> = req
                        .get("ranges")
                        .and_then(Value::as_array)
                        .ok_or_else(|| anyhow!("copy without \"ranges\""))?
                        .iter()
                        .map(|r| {
                            let slba = r.get(0).and_then(Value::as_u64);
                            let nlb = r.get(1).and_then(Value::as_u64);
                            match (slba, nlb) {
                                (Some(slba), Some(nlb)) if nlb <= 65536 => {
                                    Ok(nvmf_proto::sqe::CopySourceRange {
                                        slba,
                                        nlb: nlb as u32,
                                    })
                                }
                                _ => Err(anyhow!(
                                    "a copy range is [slba, blocks] with 1..=65536 blocks"
                                )),
                            }
                        })
                        .collect::<anyhow::Result<_>>()?;
                    let fua = req.get("fua").and_then(Value::as_bool).unwrap_or(false);
                    c.copy(nsid, u(req, "sdlba").unwrap_or(0), &ranges, fua)
                        .await?
                }
            }
            json!({})
        }
        "namespace" => {
            let dev = s(req, "dev")?;
            let (c, ns) = get(st, dev).await?;
            let n = c.namespace(ns.unwrap_or(1))?;
            json!({"nsid": n.nsid, "block_size": n.block_size, "blocks": n.blocks})
        }
        "discover-persistent" => {
            // A persistent discovery controller held here; with "connect" (a
            // connect request used as template) new subsystems get connected.
            let o = options_from(req)?;
            let key = format!("{} {}", o.addr, o.hostnqn);
            let mut g = st.lock().await;
            g.persistent.retain(|(_, t)| !t.is_finished());
            if g.persistent.iter().any(|(k, _)| *k == key) {
                return Ok(Some(json!({"already": true})));
            }
            let connect = req.get("connect").filter(|v| v.is_object()).cloned();
            let task = tokio::spawn(super::disco::daemon_task(o, connect));
            g.persistent.push((key, task));
            json!({"already": false})
        }
        "disconnect" | "disconnect-all" => {
            let victims: Vec<Entry> = {
                let mut g = st.lock().await;
                if op == "disconnect-all" {
                    for (k, t) in g.persistent.drain(..) {
                        t.abort();
                        tracing::info!("persistent discovery controller at {k}: stopped");
                    }
                }
                let keys: Vec<u32> = if op == "disconnect-all" {
                    g.ctrls.keys().copied().collect()
                } else if let Some(dev) = req.get("dev").and_then(Value::as_str) {
                    let (i, _) = parse_dev(dev)?;
                    if !g.ctrls.contains_key(&i) {
                        bail!("no controller {dev} (see nvmf list)");
                    }
                    vec![i]
                } else {
                    let nqn = s(req, "subnqn")?;
                    g.ctrls
                        .iter()
                        .filter(|(_, e)| e.ctrl.options().subnqn == nqn)
                        .map(|(k, _)| *k)
                        .collect()
                };
                keys.iter().filter_map(|k| g.ctrls.remove(k)).collect()
            };
            let mut names = Vec::new();
            for e in victims {
                let name = e.name.clone();
                e.disconnect().await;
                tracing::info!("{name}: disconnected");
                names.push(name);
            }
            json!({"disconnected": names})
        }
        other => bail!("unknown request '{other}'"),
    }))
}

#[cfg(test)]
mod tests {
    use super::NsIdentity;

    fn id(subnqn: &str, nsid: u32, nguid: u8, eui64: u8) -> NsIdentity<'_> {
        NsIdentity {
            subnqn,
            nsid,
            nguid: [nguid; 16],
            eui64: [eui64; 8],
            block_size: 4096,
        }
    }

    /// Paths join one device only for the same subsystem, NSID, block size
    /// and reported identifiers.
    #[test]
    fn same_namespace_rule() {
        let a = id("nqn.a", 1, 7, 0);
        assert!(a.same_namespace(&id("nqn.a", 1, 7, 0)));
        assert!(
            a.same_namespace(&id("nqn.a", 1, 0, 0)),
            "NGUID not reported"
        );
        assert!(
            a.same_namespace(&id("nqn.a", 1, 7, 9)),
            "EUI64 reported by one only"
        );
        assert!(!a.same_namespace(&id("nqn.a", 1, 8, 0)), "another NGUID");
        assert!(!a.same_namespace(&id("nqn.a", 2, 7, 0)), "another NSID");
        assert!(
            !a.same_namespace(&id("nqn.b", 1, 7, 0)),
            "another subsystem"
        );
        assert!(
            !id("nqn.a", 1, 0, 3).same_namespace(&id("nqn.a", 1, 0, 4)),
            "another EUI64"
        );
        let mut b = id("nqn.a", 1, 7, 0);
        b.block_size = 512;
        assert!(!a.same_namespace(&b), "another block size");
    }
}
