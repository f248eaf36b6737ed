//! A spin that reads the socket directly, on real loopback sockets: bytes the
//! runtime's reactor has not reported yet are still read (the spin finds them
//! itself, not through the reactor), and after they are read a wait sleeps
//! again instead of finding stale readiness forever.

use std::io::Write;
use std::time::Duration;

mod common;

use common::{loopback_pair, Sink};
use nvmf_transport::Connection;
use tokio::io::Ready;

/// A connection over a fresh loopback pair whose initial readiness (a socket
/// the runtime has just registered counts as ready) is spent: a read found
/// the socket empty, so the runtime waits for its reactor to say otherwise.
async fn pair() -> (Connection<Sink>, std::net::TcpStream) {
    let (server, client) = loopback_pair().await;
    let mut c = Connection::new(server, Sink::default());
    c.drive(Ready::READABLE).unwrap();
    assert_eq!(c.queue.got, 0);
    (c, client)
}

#[tokio::test]
async fn bytes_the_reactor_has_not_reported_are_read() {
    let (mut c, mut client) = pair().await;
    client.write_all(&[0x5a; 3000]).unwrap();
    // Block the thread without yielding to the runtime: its reactor does not
    // run, so it has not seen the socket readable when the read comes.
    std::thread::sleep(Duration::from_millis(30));
    c.drive(Ready::READABLE).unwrap();
    assert_eq!(
        c.queue.got, 3000,
        "a read the spin asked for must take the bytes even before the reactor reports them"
    );
}

#[tokio::test]
async fn a_spin_catches_late_bytes_and_the_next_wait_sleeps() {
    let (mut c, mut client) = pair().await;
    c.set_busy_poll(Duration::from_secs(2));
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        client.write_all(&[0xa5; 100]).unwrap();
        client
    });
    let (ready, looks) = tokio::time::timeout(Duration::from_secs(5), c.ready_polled(true, false))
        .await
        .expect("the spin must see the bytes")
        .unwrap();
    assert!(
        looks > 1,
        "the bytes came 30 ms into the spin ({looks} looks)"
    );
    // The spin has read them (an empty readiness) or left them to the read.
    c.drive(ready).unwrap();
    assert_eq!(c.queue.got, 100);
    let _client = writer.join().unwrap();

    // Nothing more comes: readiness the reactor raised for bytes already read
    // may wake one wait (whose read finds nothing); the next must sleep.
    c.set_busy_poll(Duration::ZERO);
    let mut woke = 0;
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_millis(100), c.ready_polled(true, false)).await {
            Ok(r) => {
                woke += 1;
                c.drive(r.unwrap().0).unwrap();
                assert_eq!(c.queue.got, 100, "no bytes were sent");
            }
            Err(_) => break,
        }
    }
    assert!(
        woke <= 1,
        "with nothing sent, a wait woke {woke} times in a row"
    );
}
