//! `nvmf stats` against a real `nvmf target --metrics` process, loaded by `nvmf perf`.

use std::process::Command;

mod common;
use common::{free_port, spawn_listening, wait_listening, NVMF};

const NQN: &str = "nqn.2024-01.io.nvmf-rs:default";

fn stats(metrics: &str, args: &[&str]) -> std::process::Output {
    Command::new(NVMF)
        .args(["stats", "--metrics", metrics])
        .args(args)
        .output()
        .unwrap()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "nvmf stats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn stats_reports_what_perf_did() {
    let (port, mport) = (free_port(), free_port());
    let metrics = format!("127.0.0.1:{mport}");
    let _t = spawn_listening(
        &[
            "target",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--memory",
            "32M",
            "--block-size",
            "4096",
            "--metrics",
            &metrics,
        ],
        port,
    );
    wait_listening(mport);

    // Before any I/O: namespace 1 is listed with zeros.
    let v = json_of(&stats(&metrics, &["-o", "json"]));
    let ns = &v["namespaces"][0];
    assert_eq!(
        (ns["subsystem"].as_str(), ns["nsid"].as_u64()),
        (Some(NQN), Some(1)),
        "{v}"
    );
    assert_eq!(ns["reads"].as_f64(), Some(0.0), "{v}");
    assert!(ns["latency_p99_us"].is_null(), "{v}");

    let out = Command::new(NVMF)
        .args([
            "perf",
            "-a",
            "127.0.0.1",
            "-s",
            &port.to_string(),
            "-n",
            NQN,
        ])
        .args([
            "--rw",
            "randread",
            "--bs",
            "4k",
            "--iodepth",
            "4",
            "--size",
            "8M",
        ])
        .args(["--runtime", "1", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "perf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let perf_reads = p["read"]["ios"].as_f64().unwrap();
    assert!(perf_reads > 0.0, "{p}");

    let v = json_of(&stats(&metrics, &["-o", "json"]));
    let ns = &v["namespaces"][0];
    let reads = ns["reads"].as_f64().unwrap();
    // perf counts the reads that completed within its run; the target also
    // counts those still in flight at the end (at most the queue depth).
    assert!(
        reads >= perf_reads && reads <= perf_reads + 4.0,
        "target {reads}, perf {perf_reads}"
    );
    assert_eq!(ns["read_bytes"].as_f64(), Some(reads * 4096.0), "{v}");
    assert_eq!(ns["errors"].as_f64(), Some(0.0), "{v}");
    let mean = ns["latency_mean_us"].as_f64().unwrap();
    let p99 = ns["latency_p99_us"].as_f64().unwrap();
    assert!(mean > 0.0 && p99 >= mean * 0.5, "mean {mean} p99 {p99}");
    assert!(ns["read_iops"].is_null(), "no rate without --interval: {v}");
    let sub = &v["subsystems"][NQN];
    assert!(sub["connects_accepted"].as_f64().unwrap() >= 2.0, "{v}");
    assert_eq!(sub["controllers_created"].as_f64(), Some(1.0), "{v}");
    assert_eq!(sub["connects_rejected"].as_f64(), Some(0.0), "{v}");

    // Over an idle second: zero rates, no latency.
    let v = json_of(&stats(&metrics, &["-o", "json", "--interval", "0.5"]));
    let ns = &v["namespaces"][0];
    assert!(v["interval_s"].as_f64().unwrap() >= 0.5, "{v}");
    assert_eq!(ns["read_iops"].as_f64(), Some(0.0), "{v}");
    assert_eq!(ns["reads"].as_f64(), Some(0.0), "{v}");
    assert!(ns["latency_p99_us"].is_null(), "{v}");

    // The table.
    let out = stats(&metrics, &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("READS") && text.contains("P99 us"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with(NQN) && l.split_whitespace().nth(1) == Some("1"))
        .unwrap_or_else(|| panic!("no row for namespace 1:\n{text}"));
    assert_eq!(
        row.split_whitespace().nth(2),
        Some(reads.to_string().as_str()),
        "{text}"
    );
}

#[test]
fn stats_without_a_target_says_why() {
    let out = stats(&format!("127.0.0.1:{}", free_port()), &[]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--metrics"), "{e}");
}
