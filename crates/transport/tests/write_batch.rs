//! How many system calls a backlog of small responses takes, on real loopback
//! sockets: 300 responses of two buffers each (a header run and data of its
//! own, as a 4 KiB read's C2HData leaves the queue) must go in a handful of
//! `writev`s, not one per 32 responses as with SPDK's batch of 64 buffers.

use std::io::Read;
use std::time::Duration;

mod common;

use bytes::Bytes;
use common::{loopback_pair, Sink};
use nvmf_transport::Connection;

const RESPONSES: usize = 300;
const HEADER: usize = 24;
/// Large enough to be queued as its own buffer rather than copied behind the
/// header (`TxQueue::put_bytes`).
const DATA: usize = 512;

#[tokio::test]
async fn a_backlog_of_small_responses_leaves_in_few_writes() {
    let (server, client) = loopback_pair().await;
    let total = RESPONSES * (HEADER + DATA);
    let reader = std::thread::spawn(move || {
        let mut client = client;
        let mut got = vec![0u8; total];
        client.read_exact(&mut got).unwrap();
        got
    });

    let mut c = Connection::new(server, Sink::default());
    let data = Bytes::from(vec![0xa5u8; DATA]);
    for i in 0..RESPONSES {
        c.queue.tx.put_slice(&[i as u8; HEADER]);
        c.queue.tx.put_bytes(data.clone());
    }
    assert_eq!(c.queue.tx.chunks().len(), 2 * RESPONSES);
    tokio::time::timeout(Duration::from_secs(10), c.flush())
        .await
        .expect("the backlog must drain")
        .unwrap();
    let got = reader.join().unwrap();
    for (i, r) in got.chunks(HEADER + DATA).enumerate() {
        assert!(r[..HEADER].iter().all(|&b| b == i as u8), "header {i}");
        assert!(r[HEADER..].iter().all(|&b| b == 0xa5), "data {i}");
    }
    // 600 buffers at 256 a call: three writes when the socket takes each
    // whole (158 KiB fits a loopback socket's send buffer); one more for a
    // write the kernel took in part. 64 a call would need ten.
    assert!(
        c.write_calls() <= 4,
        "{} writev calls for {} buffers",
        c.write_calls(),
        2 * RESPONSES
    );
}
