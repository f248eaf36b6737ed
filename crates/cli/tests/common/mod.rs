//! Helpers shared by the cli crate's integration tests (each test file is its
//! own crate, so not every file uses every helper).
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::Child;
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
