//! `nvmf perf` against a real `nvmf target` process on loopback.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, spawn_listening, KillOnDrop};

const NVMF: &str = env!("CARGO_BIN_EXE_nvmf");

/// Starts a target on a free port (retrying if another process takes the port).
fn start_target() -> (KillOnDrop, u16) {
    start_target_with(&[])
}

/// Like [`start_target`] with extra `nvmf target` options.
fn start_target_with(extra: &[&str]) -> (KillOnDrop, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new(NVMF)
            .args([
                "target",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--memory",
                "64M",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nvmf target");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: port taken, retry
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (KillOnDrop(child), port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("could not start a target");
}

/// Runs `nvmf perf -s PORT ARGS -o json`, checks it succeeded and returns its report.
fn perf_json(port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new(NVMF)
        .args(["perf", "-s", &port.to_string()])
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nvmf perf {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn perf_randrw_verify_json() {
    let (_t, port) = start_target();
    let out = Command::new(NVMF)
        .args([
            "perf",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &port.to_string(),
            "-n",
            "nqn.2024-01.io.nvmf-rs:default",
            "--rw",
            "randrw",
            "--bs",
            "4k",
            "--iodepth",
            "8",
            "--numjobs",
            "2",
            "--size",
            "8M",
            "--runtime",
            "2",
            "--verify",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "perf failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert!(v["total"]["ios"].as_u64().unwrap() > 0, "{v}");
    assert!(v["read"]["ios"].as_u64().unwrap() > 0, "{v}");
    assert!(v["write"]["ios"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["verify_errors"].as_u64(), Some(0), "{v}");
    assert!(v["read"]["lat_us"]["p99"].as_f64().unwrap() > 0.0, "{v}");
}

/// Polling on both ends (`--busy-poll-us`, `--hipri`) and a chosen congestion
/// control: the data still verifies and the report says what was asked.
#[test]
fn perf_polling_and_congestion_control_verify() {
    let (_t, port) = start_target_with(&["--busy-poll-us", "100", "--tcp-congestion", "reno"]);
    let v = perf_json(
        port,
        &[
            "--rw",
            "randrw",
            "--bs",
            "8k",
            "--iodepth",
            "4",
            "--size",
            "4M",
            "--runtime",
            "1",
            "--verify",
            "--hipri",
            "--tcp-congestion",
            "reno",
        ],
    );
    assert!(v["total"]["ios"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["verify_errors"].as_u64(), Some(0), "{v}");
    assert_eq!(v["config"]["hipri"], serde_json::json!(true), "{v}");
    assert_eq!(
        v["config"]["tcp_congestion"],
        serde_json::json!("reno"),
        "{v}"
    );
}

/// A null namespace (`--null`): reads of zeroes and dropped writes, at full
/// speed, through the whole target.
#[test]
fn perf_on_a_null_namespace() {
    let (_t, port) = start_target_with(&["--null", "1G"]);
    for rw in ["randwrite", "randread"] {
        let v = perf_json(
            port,
            &[
                "--nsid",
                "2",
                "--rw",
                rw,
                "--bs",
                "4k",
                "--iodepth",
                "16",
                "--runtime",
                "0.5",
            ],
        );
        assert!(v["total"]["ios"].as_u64().unwrap() > 0, "{rw}: {v}");
    }
}

#[test]
fn perf_seq_read_digests_json() {
    let (_t, port) = start_target();
    let v = perf_json(
        port,
        &[
            "--rw",
            "read",
            "--bs",
            "128k",
            "--iodepth",
            "1",
            "--runtime",
            "1",
            "-g",
            "-G",
        ],
    );
    assert!(v["read"]["ios"].as_u64().unwrap() > 0);
    assert!(v["write"].is_null());
    assert_eq!(v["config"]["data_digest"], serde_json::json!(true));
}

/// An I/O larger than the controller's largest transfer (MDTS) goes as
/// several commands, whose data still verifies; a depth whose commands would
/// not fit the queue is refused with what to change. (Sent whole, a 60 KiB
/// read to a 16 KiB MDTS fails: Invalid Field in Command, as NVMe Base 2.0
/// §5.17.2.1 has it for MDTS; SPDK's target ends the connection instead.)
#[test]
fn perf_splits_io_above_mdts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let port = free_port();
    std::fs::write(
        &cfg,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\n[limits]\nmax_data_transfer = 16384\n\
             max_queue_depth = 32\n[[subsystem]]\nnqn = \"nqn.2024-01.io.test:mdts\"\n\
             [[subsystem.namespace]]\nmemory = \"8M\"\n"
        ),
    )
    .unwrap();
    let _t = spawn_listening(&["target", "--config", cfg.to_str().unwrap()], port);
    let v = perf_json(
        port,
        &[
            "-n",
            "nqn.2024-01.io.test:mdts",
            "--rw",
            "randrw",
            "--bs",
            "60k",
            "--iodepth",
            "4",
            "--runtime",
            "1",
            "--verify",
        ],
    );
    assert!(v["read"]["ios"].as_u64().unwrap() > 0, "{v}");
    assert!(v["write"]["ios"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["verify_errors"].as_u64(), Some(0), "{v}");

    let out = Command::new(NVMF)
        .args([
            "perf",
            "-s",
            &port.to_string(),
            "-n",
            "nqn.2024-01.io.test:mdts",
        ])
        .args(["--bs", "64k", "--iodepth", "10", "--runtime", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("40 commands in flight")
            && err.contains("MDTS, is 16384 bytes")
            && err.contains("lower --iodepth or --bs"),
        "{err}"
    );
}

#[test]
fn perf_closed_port_fails_helpfully() {
    let port = free_port();
    let out = Command::new(NVMF)
        .args([
            "perf",
            "-a",
            "127.0.0.1",
            "-s",
            &port.to_string(),
            "--runtime",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect to 127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(stderr.contains("nvmf target"), "{stderr}");
}

/// `nvmf perf … | head -1`: the reader has gone when the report is written.
/// The report is dropped; the run still succeeds, with no panic.
#[test]
fn perf_report_into_a_closed_pipe() {
    let (_t, port) = start_target();
    for format in ["normal", "json"] {
        let mut child = Command::new(NVMF)
            .args([
                "perf",
                "-s",
                &port.to_string(),
                "--runtime",
                "1",
                "--size",
                "16M",
            ])
            .args(["-o", format])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the pipe's only reader closes
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "-o {format}: {:?}: {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "-o {format}: {stderr}");
    }
}
