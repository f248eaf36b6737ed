//! A large transfer over a TLS connection on loopback, both ways at once,
//! checked with a CRC32C of each direction: many records, PDU-like framing
//! (small headers and large data, so both the gathered small-record path and
//! the large-chunk path of the user-space record layer are used, and the exact
//! reads of large PDUs), for each cipher suite and for the kernel TLS setting
//! on and off. Where the kernel has the `tls` ULP, kernel TLS must be in use;
//! where it has not, the connection must fall back to OpenSSL in user space.

use bytes::{Bytes, BytesMut};
use nvmf_proto::tcp::digest::crc32c_append;
use nvmf_proto::tcp::TxQueue;
use nvmf_proto::tls::{ConfiguredPsk, Derivation, PskHash};
use nvmf_transport::{Connection, KtlsState, QueueIo, TlsClientConfig, TlsServerConfig};
use tokio::net::{TcpListener, TcpStream};

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
const SUBNQN: &str = "nqn.2024-01.io.nvmf-rs:test";
/// Sizes of the "PDUs" each side sends, in turn: headers, 4 KiB and 128 KiB
/// data, odd sizes, one larger than READ_CHUNK_MAX.
const FRAMES: [usize; 9] = [24, 131_072, 24, 4096, 16, 65_544, 1000, 300_000, 513];

/// A queue that sends `data` in FRAMES-sized pieces and hashes what it receives,
/// asking the connection for exactly the rest of the current frame.
struct Stream {
    tx: TxQueue,
    rx: BytesMut,
    got: usize,
    crc: u32,
    frame: usize,
    frame_left: usize,
}

impl Stream {
    fn new(data: &[u8]) -> Self {
        let mut tx = TxQueue::default();
        let (mut off, mut i) = (0, 0);
        while off < data.len() {
            let n = FRAMES[i % FRAMES.len()].min(data.len() - off);
            tx.put_bytes(Bytes::copy_from_slice(&data[off..off + n]));
            off += n;
            i += 1;
        }
        Self {
            tx,
            rx: BytesMut::new(),
            got: 0,
            crc: 0,
            frame: 0,
            frame_left: FRAMES[0],
        }
    }
}

impl QueueIo for Stream {
    fn tx(&mut self) -> &mut TxQueue {
        &mut self.tx
    }
    fn rx(&mut self) -> &mut BytesMut {
        &mut self.rx
    }
    fn wanted(&self) -> usize {
        self.frame_left.saturating_sub(self.rx.len()).max(1)
    }
    fn process(&mut self) {
        let b = self.rx.split();
        self.crc = crc32c_append(self.crc, &b);
        self.got += b.len();
        let mut n = b.len();
        while n > 0 {
            let k = n.min(self.frame_left);
            n -= k;
            self.frame_left -= k;
            if self.frame_left == 0 {
                self.frame += 1;
                self.frame_left = FRAMES[self.frame % FRAMES.len()];
            }
        }
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs one side: sends everything, receives `expect` bytes, then closes
/// gracefully. Returns (bytes received, their CRC, kernel TLS state).
async fn side(mut c: Connection<Stream>, expect: usize) -> (usize, u32, Option<KtlsState>) {
    let ktls = c.kernel_tls();
    while c.queue.got < expect || !c.queue.tx.is_empty() {
        c.pump().await.expect("pump");
        assert!(
            !(c.is_eof() && c.queue.got < expect),
            "peer closed early after {} of {expect} bytes",
            c.queue.got
        );
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), c.close_gracefully())
        .await
        .expect("close");
    (c.queue.got, c.queue.crc, ktls)
}

fn kernel_has_tls_ulp() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .is_ok_and(|s| s.split_whitespace().any(|u| u == "tls"))
}

async fn transfer(hash: PskHash, ktls: bool) {
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        transfer_inner(hash, ktls),
    )
    .await
    .expect("the transfer hung");
}

async fn transfer_inner(hash: PskHash, ktls: bool) {
    const LEN: usize = 6 << 20;
    let key_len = if hash == PskHash::Sha256 { 32 } else { 48 };
    let key = ConfiguredPsk::new(&vec![7u8; key_len], Some(hash)).expect("key");
    let mut server_cfg = TlsServerConfig::new(vec![key.clone()], Derivation::Spec).expect("srv");
    server_cfg.set_kernel_tls(ktls);
    let mut client_cfg =
        TlsClientConfig::from_configured(&key, HOSTNQN, SUBNQN, Derivation::Spec).expect("cli");
    client_cfg.set_kernel_tls(ktls);

    let (a, b) = (data(LEN, 1), data(LEN + 12_345, 2));
    let (crc_a, crc_b) = (crc32c_append(0, &a), crc32c_append(0, &b));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.expect("accept");
        let mut c = Connection::new(s, Stream::new(&b));
        c.start_tls_server(&server_cfg)
            .await
            .expect("server handshake");
        side(c, LEN).await
    });
    let s = TcpStream::connect(addr).await.expect("connect");
    let mut c = Connection::new(s, Stream::new(&a));
    c.start_tls_client(&client_cfg)
        .await
        .expect("client handshake");
    let client = side(c, LEN + 12_345).await;
    let server = server.await.expect("server task");

    assert_eq!((server.0, server.1), (LEN, crc_a), "client -> server");
    assert_eq!(
        (client.0, client.1),
        (LEN + 12_345, crc_b),
        "server -> client"
    );
    let want = if ktls && kernel_has_tls_ulp() {
        KtlsState { tx: true, rx: true }
    } else {
        KtlsState {
            tx: false,
            rx: false,
        }
    };
    assert_eq!(client.2, Some(want), "client record layer");
    assert_eq!(server.2, Some(want), "server record layer");
}

#[tokio::test]
async fn large_transfer_both_ways_sha256() {
    transfer(PskHash::Sha256, true).await;
}

#[tokio::test]
async fn large_transfer_both_ways_sha384() {
    transfer(PskHash::Sha384, true).await;
}

#[tokio::test]
async fn large_transfer_both_ways_user_space_record_layer() {
    transfer(PskHash::Sha256, false).await;
}
