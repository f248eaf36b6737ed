//! Discovery for operations (issue 15) with the real binary: `nvmf connect-all`
//! follows a referral to a second target process (and survives a referral
//! loop); `nvmf discover -p` reports a reload of the target's configuration
//! through the Discovery Log Change notice.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, nvmf, ok, spawn_listening, target, wait_listening, KillOnDrop, NVMF};

const A: &str = "nqn.2024-01.io.nvmf-rs:disco-a";
const B: &str = "nqn.2024-01.io.nvmf-rs:disco-b";
const C: &str = "nqn.2024-01.io.nvmf-rs:disco-c";

/// `nvmf target` in quick mode: subsystem `nqn` (16 MiB memory) on `port`,
/// discovery also on `disc`, referring to `referrals`.
fn quick_target(port: u16, disc: u16, nqn: &str, referrals: &[u16]) -> KillOnDrop {
    let refs: Vec<String> = referrals.iter().map(|r| format!("127.0.0.1:{r}")).collect();
    let mut args = vec!["--memory", "16M", "--subnqn", nqn];
    for r in &refs {
        args.extend(["--referral", r.as_str()]);
    }
    let t = target(port, disc, &args);
    wait_listening(disc);
    t
}

#[test]
fn connect_all_follows_referrals_through_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let (p1, d1, p2, d2) = (free_port(), free_port(), free_port(), free_port());
    // Target 1 refers to target 2 and to a closed port; target 2 refers back
    // to target 1: a loop the walk must cut.
    let closed = free_port();
    let _t2 = quick_target(p2, d2, C, &[d1]);
    let _t1 = quick_target(p1, d1, A, &[d2, closed]);

    // The log of target 1: current discovery entry, A, two referrals.
    let v: serde_json::Value = serde_json::from_str(&ok(
        run,
        &[
            "discover",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &d1.to_string(),
            "-o",
            "json",
        ],
    ))
    .unwrap();
    let subtypes: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["subtype"].as_str().unwrap())
        .collect();
    assert_eq!(
        subtypes,
        [
            "current discovery subsystem",
            "nvme subsystem",
            "discovery subsystem referral",
            "discovery subsystem referral"
        ],
        "{v}"
    );

    let o = nvmf(
        run,
        &[
            "connect-all",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &d1.to_string(),
            "-o",
            "json",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut got: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["subnqn"].as_str().unwrap().to_string(),
                d["trsvcid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (A.to_string(), p1.to_string()),
            (C.to_string(), p2.to_string())
        ],
        "each subsystem once, C through the referral; stderr: {stderr}"
    );
    // The closed referral is reported, not fatal.
    assert!(stderr.contains(&format!("127.0.0.1:{closed}")), "{stderr}");

    let list: serde_json::Value = serde_json::from_str(&ok(run, &["list", "-o", "json"])).unwrap();
    assert_eq!(list["Devices"].as_array().unwrap().len(), 2, "{list}");
    // Again: everything is already connected.
    let again = ok(
        run,
        &[
            "connect-all",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &d1.to_string(),
        ],
    );
    assert_eq!(again.matches("already connected").count(), 2, "{again}");
    ok(run, &["disconnect-all"]);
    ok(run, &["host-daemon", "--stop"]);
}

fn write_config(path: &Path, port: u16, with_b: bool, referral: Option<u16>) {
    let mut s = format!("listen = [\"127.0.0.1:{port}\"]\n");
    if let Some(r) = referral {
        s.push_str(&format!(
            "[[referral]]\naddress = \"127.0.0.1\"\nport = {r}\n"
        ));
    }
    for (nqn, on) in [(A, true), (B, with_b)] {
        if on {
            s.push_str(&format!(
                "[[subsystem]]\nnqn = \"{nqn}\"\n[[subsystem.namespace]]\nmemory = \"1M\"\n"
            ));
        }
    }
    std::fs::write(path, s).unwrap();
}

/// Starts `nvmf target --config CFG` listening on `port`; its pid too (for SIGHUP).
fn config_target(cfg: &Path, port: u16) -> (u32, KillOnDrop) {
    let t = spawn_listening(&["target", "--config", cfg.to_str().unwrap()], port);
    (t.0.id(), t)
}

/// Runs `nvmf ARGS` (its host daemon in `run` if given, logging at `log`) and
/// hands its standard output over line by line.
fn watch(args: &[&str], run: Option<&Path>, log: &str) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut c = Command::new(NVMF);
    c.args(args).env("NVMF_LOG", log);
    if let Some(r) = run {
        c.env("NVMF_RUN_DIR", r);
    }
    let mut p = c
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = p.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (KillOnDrop(p), rx)
}

/// Waits up to 20 s for a line of `rx` containing every one of `want`;
/// the lines read meanwhile go to `seen`.
fn expect_line(rx: &mpsc::Receiver<String>, want: &[&str], seen: &mut Vec<String>) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            let hit = want.iter().all(|w| l.contains(w));
            seen.push(l);
            if hit {
                return;
            }
        }
    }
    panic!(
        "no line with {want:?} within 20 s; output so far:\n{}",
        seen.join("\n")
    );
}

fn sighup(pid: u32) {
    let s = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(s.success());
}

#[test]
fn persistent_discover_reports_each_reload() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let port = free_port();
    write_config(&cfg, port, false, None);
    let (pid, _t) = config_target(&cfg, port);

    // KATO 2 s: the controller must keep the association alive across the
    // waits below (the target ends an association whose KATO expires).
    let port_s = port.to_string();
    let (_p, rx) = watch(
        &[
            "discover",
            "-p",
            "--foreground",
            "-k",
            "2",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &port_s,
        ],
        None,
        "warn",
    );
    let mut seen = Vec::new();
    expect_line(&rx, &["subnqn:", A], &mut seen);

    // A subsystem and a referral added.
    write_config(&cfg, port, true, Some(8009));
    sighup(pid);
    expect_line(&rx, &["discovery log changed: GENCTR"], &mut seen);
    expect_line(&rx, &["+ nvme subsystem", B], &mut seen);
    expect_line(
        &rx,
        &["+ discovery subsystem referral", "127.0.0.1:8009"],
        &mut seen,
    );

    // Past 2 x KATO with nothing to report: keep-alive holds the association.
    std::thread::sleep(Duration::from_secs(5));
    write_config(&cfg, port, false, Some(8009));
    sighup(pid);
    expect_line(&rx, &["- nvme subsystem", B], &mut seen);
    let changes = seen
        .iter()
        .filter(|l| l.starts_with("discovery log changed"))
        .count();
    assert_eq!(changes, 2, "{}", seen.join("\n"));
}

/// `nvmf connect-all -p`: connects what is there, then, on the notice a reload
/// raises, the subsystem it added (what nvme-cli's udev rule does).
#[test]
fn persistent_connect_all_connects_a_subsystem_added_by_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let cfg = dir.path().join("t.toml");
    let port = free_port();
    write_config(&cfg, port, false, None);
    let (pid, _t) = config_target(&cfg, port);

    let port_s = port.to_string();
    let (p, rx) = watch(
        &[
            "connect-all",
            "-p",
            "--foreground",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &port_s,
        ],
        Some(&run),
        "warn",
    );
    let mut seen = Vec::new();
    expect_line(&rx, &["device: nvme", A], &mut seen);
    write_config(&cfg, port, true, None);
    sighup(pid);
    expect_line(&rx, &["device: nvme", B], &mut seen);
    drop(p);
    let list: serde_json::Value = serde_json::from_str(&ok(&run, &["list", "-o", "json"])).unwrap();
    let mut nqns: Vec<&str> = list["Devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["SubsystemNQN"].as_str().unwrap_or(""))
        .collect();
    nqns.sort();
    assert_eq!(nqns, [A, B], "{list}");
    ok(&run, &["disconnect-all"]);
    ok(&run, &["host-daemon", "--stop"]);
}

/// `nvmf discover -p` outlives its target: after a restart (with one more
/// subsystem; GENCTR starts over) it reconnects and reports the difference.
#[test]
fn persistent_discover_reconnects_after_a_target_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let port = free_port();
    write_config(&cfg, port, false, None);
    let start = || config_target(&cfg, port).1;
    let t = start();
    let port_s = port.to_string();
    let (_p, rx) = watch(
        &[
            "discover",
            "-p",
            "--foreground",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &port_s,
        ],
        None,
        "error",
    );
    let mut seen = Vec::new();
    expect_line(&rx, &["subnqn:", A], &mut seen);
    drop(t);
    write_config(&cfg, port, true, None);
    let _t = start();
    expect_line(&rx, &["+ nvme subsystem", B], &mut seen);
}

/// Without --foreground the host daemon holds the persistent discovery
/// controller: `connect-all -p` returns, and the subsystem a later reload
/// adds gets connected by the daemon; `disconnect-all` stops it.
#[test]
fn the_daemon_holds_the_persistent_discovery_controller() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let cfg = dir.path().join("t.toml");
    let port = free_port();
    write_config(&cfg, port, false, None);
    let (pid, _t) = config_target(&cfg, port);
    let p = port.to_string();
    let o = nvmf(
        &run,
        &[
            "connect-all",
            "-p",
            "-k",
            "2",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &p,
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&o.stdout).contains(A));
    assert!(
        stderr.contains("now holds a persistent discovery controller"),
        "{stderr}"
    );
    // Asking again finds it there.
    let o = nvmf(
        &run,
        &["discover", "-p", "-t", "tcp", "-a", "127.0.0.1", "-s", &p],
    );
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds"));

    let nqns = || -> Vec<String> {
        let list: serde_json::Value =
            serde_json::from_str(&ok(&run, &["list", "-o", "json"])).unwrap();
        let mut v: Vec<String> = list["Devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["SubsystemNQN"].as_str().unwrap_or("").to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(nqns(), [A]);
    // Past 2 x KATO (2 s), then B added: the daemon's controller is still
    // there, gets the notice and connects B.
    std::thread::sleep(Duration::from_secs(5));
    write_config(&cfg, port, true, None);
    sighup(pid);
    let t0 = Instant::now();
    while nqns() != [A, B] {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "B not connected by the daemon: {:?}\n{}",
            nqns(),
            std::fs::read_to_string(run.join("host-daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(&run, &["disconnect-all"]);
    // Stopped: a subsystem added now is not connected.
    write_config(&cfg, port, false, None);
    sighup(pid);
    std::thread::sleep(Duration::from_secs(1));
    write_config(&cfg, port, true, None);
    sighup(pid);
    std::thread::sleep(Duration::from_secs(2));
    assert!(nqns().is_empty(), "{:?}", nqns());
    ok(&run, &["host-daemon", "--stop"]);
}
