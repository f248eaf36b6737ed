//! `nvmf target --cpu-latency-us`: the PM QoS request is in force while the
//! target runs and gone once it ends, however it ends (here: SIGKILL).

mod common;

use std::fs::OpenOptions;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, spawn_listening, NVMF};

use nvmf_controller::cpu_latency::{current_limit, CPU_DMA_LATENCY as DEVICE};

/// The CPU latency limit in force, in microseconds.
fn limit() -> u32 {
    current_limit().unwrap()
}

#[test]
fn the_request_holds_while_the_target_runs_and_goes_with_it() {
    // Only root may make a request (the device is mode 0600).
    if let Err(e) = OpenOptions::new().write(true).open(DEVICE) {
        eprintln!("SKIP: {DEVICE} cannot be opened for writing ({e}); run as root");
        return;
    }
    let before = limit();
    assert!(
        before > 3,
        "another process holds a CPU latency request of {before} µs; this test needs none"
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let target = spawn_listening(
        &[
            "target",
            "--listen",
            &listen,
            "--memory",
            "16M",
            "--cpu-latency-us",
            "3",
        ],
        port,
    );
    assert_eq!(limit(), 3, "the target's request must be in force");
    drop(target); // SIGKILL: the kernel withdraws the request as the file closes.
    let t0 = Instant::now();
    while limit() != before {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the limit stayed at {} µs after the target was killed (was {before})",
            limit()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_out_of_range_latency_is_refused_with_the_bound() {
    let port = free_port();
    let out = Command::new(NVMF)
        .args([
            "target",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--memory",
            "16M",
            "--cpu-latency-us",
            "2000000",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cpu_latency_us") && err.contains("at most 1000000"),
        "{err}"
    );
}
