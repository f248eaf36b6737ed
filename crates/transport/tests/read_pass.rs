//! How much one pass of [`Connection::drive`] reads, on real loopback sockets:
//! a queue that has ended reads nothing more (a host that keeps sending after
//! its connection failed cannot grow the buffer), and a peer that keeps the
//! socket full is read in bounded passes whose readiness carries over, so the
//! rest is read without a new event.

use std::io::Write;
use std::time::Duration;

mod common;

use common::{loopback_pair, Sink};
use nvmf_proto::tcp::controller::{ControllerQueue, ControllerQueueConfig};
use nvmf_transport::Connection;

/// The first read of a fresh connection takes at most this much (the
/// connection's smallest read chunk).
const FIRST_READ: u64 = 4096;
/// Largest read of one pass the connection allows (four 256 KiB chunks) and
/// one more read that may start below it.
const PASS_BOUND: u64 = 4 * 256 * 1024 + 256 * 1024;

#[tokio::test]
async fn a_failed_queue_reads_nothing_more() {
    let (server, mut client) = loopback_pair().await;
    // A CapsuleResp is a PDU only a controller sends: the controller ends the
    // connection on it. 60 KiB of more bytes follow in the same send.
    let mut bytes = vec![0x05u8, 0, 24, 0, 24, 0, 0, 0];
    bytes.resize(24, 0);
    bytes.resize(24 + 60 * 1024, 0xa5);
    client.write_all(&bytes).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut c = Connection::new(
        server,
        ControllerQueue::new(ControllerQueueConfig::default()),
    );
    let ready = c.ready(false).await.unwrap();
    c.drive(ready).unwrap();
    assert!(
        c.queue.is_terminated(),
        "the controller must end the connection"
    );
    assert!(
        c.bytes_read() <= FIRST_READ,
        "read {} bytes after the queue failed on its first PDU (at most {FIRST_READ} expected)",
        c.bytes_read()
    );
    // A second pass reads nothing either.
    c.drive(ready).unwrap();
    assert!(c.bytes_read() <= FIRST_READ);
}

#[tokio::test]
async fn a_full_socket_is_read_in_bounded_passes() {
    const TOTAL: usize = 16 * 1024 * 1024;
    let (server, mut client) = loopback_pair().await;
    let writer = std::thread::spawn(move || {
        let chunk = vec![0x5au8; 1024 * 1024];
        for _ in 0..TOTAL / chunk.len() {
            client.write_all(&chunk).unwrap();
        }
        client
    });
    let mut c = Connection::new(server, Sink::default());
    let mut passes = 0u32;
    let mut largest = 0u64;
    tokio::time::timeout(Duration::from_secs(30), async {
        while c.queue.got < TOTAL as u64 {
            let ready = c.ready(false).await.unwrap();
            let before = c.bytes_read();
            c.drive(ready).unwrap();
            largest = largest.max(c.bytes_read() - before);
            passes += 1;
        }
    })
    .await
    .expect("the whole stream must be read: a pass cut short keeps its readiness");
    let _client = writer.join().unwrap();
    assert_eq!(c.queue.got, TOTAL as u64);
    assert!(
        largest <= PASS_BOUND,
        "one pass read {largest} bytes (at most {PASS_BOUND} expected)"
    );
    assert!(passes >= (TOTAL as u64 / PASS_BOUND) as u32);
}
