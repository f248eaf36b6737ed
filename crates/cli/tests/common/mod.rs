//! Helpers shared by the cli crate's integration tests (each test file is its
//! own crate, so not every file uses every helper).
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process (a target, `nvmf perf`) killed and reaped when dropped, so a
/// failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 20 s until something accepts connections on 127.0.0.1:`port`.
pub fn wait_listening(port: u16) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "target did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal valid ICReq (PFV 0, no digests): type 0, HLEN = PLEN = 128.
pub fn icreq() -> [u8; 128] {
    let mut b = [0u8; 128];
    b[2] = 128;
    b[4] = 128;
    b
}

/// The `nvmf` binary under test.
pub const NVMF: &str = env!("CARGO_BIN_EXE_nvmf");

/// Starts `nvmf ARGS` with its output discarded and waits until something
/// listens on `port` (its pid: `.0.id()`).
pub fn spawn_listening(args: &[&str], port: u16) -> KillOnDrop {
    let child = Command::new(NVMF)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    wait_listening(port);
    child
}

/// Starts `nvmf target` on `port` (discovery also on `disc`) with the namespace
/// flags `ns`, and waits until it listens.
pub fn target(port: u16, disc: u16, ns: &[&str]) -> KillOnDrop {
    let (listen, disc) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{disc}"));
    let mut args = vec!["target", "--listen", &listen, "--discovery-listen", &disc];
    args.extend_from_slice(ns);
    spawn_listening(&args, port)
}

/// Runs `nvmf ARGS` with its host daemon in `run_dir`.
pub fn nvmf(run_dir: &Path, args: &[&str]) -> Output {
    Command::new(NVMF)
        .args(args)
        .env("NVMF_RUN_DIR", run_dir)
        .env("NVMF_LOG", "warn")
        .output()
        .unwrap()
}

/// Runs `nvmf ARGS`, which must succeed; its standard output.
pub fn ok(run_dir: &Path, args: &[&str]) -> String {
    let o = nvmf(run_dir, args);
    assert!(
        o.status.success(),
        "nvmf {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}
