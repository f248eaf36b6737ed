//! The NBD request loop against our real target over loopback, with this test in
//! the kernel's place on the other end of the socket pair (the kernel's own NBD
//! driver is exercised in the QEMU guest: tests/interop, suite `block`).

use std::path::Path;
use std::sync::Arc;

use nvmf_blockdev::nbd::wire::{self, cmd, cmd_flag, errno, Request};
use nvmf_blockdev::nbd::{serve, ServeError, Target as NbdTarget};
use nvmf_controller::{Target, TargetConfig};
use nvmf_host::{ConnectOptions, Controller};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const NQN: &str = "nqn.2024-01.io.nvmf-rs:nbd";
const BS: u64 = 4096;

async fn setup() -> (Arc<Target>, Controller) {
    let cfg = TargetConfig::from_toml(
        &format!(
            "listen = [\"127.0.0.1:0\"]\n[[subsystem]]\nnqn = \"{NQN}\"\n[[subsystem.namespace]]\nmemory = \"16M\"\nblock_size = 4096\n"
        ),
        Path::new("t.toml"),
    )
    .unwrap();
    let t = Arc::new(Target::bind(&cfg).await.unwrap());
    tokio::spawn(t.clone().serve());
    let mut o = ConnectOptions::new(t.ports()[0], NQN);
    o.nr_io_queues = 2;
    let c = Controller::connect(o).await.unwrap();
    (t, c)
}

fn target(c: &Controller) -> NbdTarget {
    let ns = c.namespace(1).unwrap();
    NbdTarget::new(1, ns.block_size, ns.blocks)
}

fn req(cmd: u16, flags: u16, handle: u64, from: u64, len: u32) -> [u8; wire::REQUEST_SIZE] {
    Request {
        flags,
        cmd,
        handle,
        from,
        len,
    }
    .encode()
}

async fn reply(s: &mut UnixStream, data_len: usize) -> (u32, u64, Vec<u8>) {
    let mut h = [0u8; wire::REPLY_SIZE];
    s.read_exact(&mut h).await.unwrap();
    let (e, handle) = wire::decode_reply(&h).expect("reply magic");
    let mut d = vec![0u8; if e == 0 { data_len } else { 0 }];
    s.read_exact(&mut d).await.unwrap();
    (e, handle, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_and_its_errors() {
    let (_t, c) = setup().await;
    let (mut k, ours) = UnixStream::pair().unwrap();
    let srv = tokio::spawn(serve(
        ours,
        nvmf_blockdev::SinglePath::new(c.clone(), 1),
        target(&c),
    ));

    // Write with FUA, read back through NBD and through the controller.
    let data: Vec<u8> = (0..2 * BS).map(|i| (i * 7 % 251) as u8).collect();
    k.write_all(&req(
        cmd::WRITE,
        cmd_flag::FUA,
        1,
        8 * BS,
        data.len() as u32,
    ))
    .await
    .unwrap();
    k.write_all(&data).await.unwrap();
    assert_eq!(reply(&mut k, 0).await, (0, 1, vec![]));
    k.write_all(&req(cmd::READ, 0, 2, 8 * BS, data.len() as u32))
        .await
        .unwrap();
    assert_eq!(reply(&mut k, data.len()).await, (0, 2, data.clone()));
    assert_eq!(c.read(1, 8, 2).await.unwrap(), data);

    // Flush; trim and write zeroes read back as zeroes.
    k.write_all(&req(cmd::FLUSH, 0, 3, 0, 0)).await.unwrap();
    assert_eq!(reply(&mut k, 0).await.0, 0);
    k.write_all(&req(cmd::TRIM, 0, 4, 8 * BS, BS as u32))
        .await
        .unwrap();
    assert_eq!(reply(&mut k, 0).await.0, 0);
    k.write_all(&req(
        cmd::WRITE_ZEROES,
        cmd_flag::NO_HOLE,
        5,
        9 * BS,
        BS as u32,
    ))
    .await
    .unwrap();
    assert_eq!(reply(&mut k, 0).await.0, 0);
    assert_eq!(c.read(1, 8, 2).await.unwrap(), vec![0u8; 2 * BS as usize]);

    // Errors: beyond the end, misaligned, unknown command; the loop goes on.
    let end = c.namespace(1).unwrap().blocks * BS;
    k.write_all(&req(cmd::READ, 0, 6, end, BS as u32))
        .await
        .unwrap();
    assert_eq!(reply(&mut k, 0).await, (errno::ENOSPC, 6, vec![]));
    k.write_all(&req(cmd::READ, 0, 7, 100, BS as u32))
        .await
        .unwrap();
    assert_eq!(reply(&mut k, 0).await, (errno::EINVAL, 7, vec![]));
    k.write_all(&req(9, 0, 8, 0, 0)).await.unwrap();
    assert_eq!(reply(&mut k, 0).await, (errno::EOPNOTSUPP, 8, vec![]));

    // DISC ends the loop cleanly.
    k.write_all(&req(cmd::DISC, 0, 9, 0, 0)).await.unwrap();
    assert_eq!(srv.await.unwrap().unwrap(), 8);
    c.disconnect().await.unwrap();
}

/// The kernel keeps many requests outstanding; replies come back as their
/// commands complete, each with its handle and its own data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_matched_by_handle() {
    let (_t, c) = setup().await;
    let (k, ours) = UnixStream::pair().unwrap();
    let srv = tokio::spawn(serve(
        ours,
        nvmf_blockdev::SinglePath::new(c.clone(), 1),
        target(&c),
    ));
    let (mut rd, mut wr) = k.into_split();
    const N: u64 = 256;
    let writer = tokio::spawn(async move {
        for i in 0..N {
            wr.write_all(&req(cmd::WRITE, 0, i, i * BS, BS as u32))
                .await
                .unwrap();
            wr.write_all(&vec![i as u8; BS as usize]).await.unwrap();
        }
        wr
    });
    let mut seen = vec![false; N as usize];
    for _ in 0..N {
        let mut h = [0u8; wire::REPLY_SIZE];
        rd.read_exact(&mut h).await.unwrap();
        let (e, handle) = wire::decode_reply(&h).unwrap();
        assert_eq!(e, 0);
        assert!(!std::mem::replace(&mut seen[handle as usize], true));
    }
    let mut wr = writer.await.unwrap();
    for i in 0..N {
        wr.write_all(&req(cmd::READ, 0, 1000 + i, i * BS, BS as u32))
            .await
            .unwrap();
    }
    for _ in 0..N {
        let mut h = [0u8; wire::REPLY_SIZE];
        rd.read_exact(&mut h).await.unwrap();
        let (e, handle) = wire::decode_reply(&h).unwrap();
        assert_eq!(e, 0);
        let mut d = vec![0u8; BS as usize];
        rd.read_exact(&mut d).await.unwrap();
        assert_eq!(d, vec![(handle - 1000) as u8; BS as usize]);
    }
    drop(wr);
    drop(rd);
    assert_eq!(srv.await.unwrap().unwrap(), 2 * N);
    c.disconnect().await.unwrap();
}

/// Garbage instead of a request ends that device's loop with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_ends_the_loop() {
    let (_t, c) = setup().await;
    let (mut k, ours) = UnixStream::pair().unwrap();
    let srv = tokio::spawn(serve(
        ours,
        nvmf_blockdev::SinglePath::new(c.clone(), 1),
        target(&c),
    ));
    k.write_all(&[0x55u8; wire::REQUEST_SIZE]).await.unwrap();
    assert!(matches!(srv.await.unwrap(), Err(ServeError::BadMagic(_))));
    // The controller is untouched.
    assert_eq!(c.read(1, 0, 1).await.unwrap().len(), BS as usize);
    c.disconnect().await.unwrap();
}
