//! The TLS 1.3 PSK channel over loopback: ICReq/ICResp and a large transfer
//! through our host and controller queues, both PSK hashes; a wrong key, an
//! unknown identity and a plain ICReq fail the handshake and end only that
//! connection.

use std::sync::Arc;

use nvmf_proto::tcp::{ControllerEvent, ControllerQueueConfig, HostQueueConfig};
use nvmf_transport::connection::TlsSide;
use nvmf_transport::tls::{PskHash, TlsClientConfig, TlsPsk, TlsServerConfig};
use nvmf_transport::{HostConnection, Listener, TransportError};
use zeroize::Zeroizing;

fn psk(id: &str, key: &[u8], hash: PskHash) -> TlsPsk {
    TlsPsk {
        identity: id.as_bytes().to_vec(),
        key: Zeroizing::new(key.to_vec()),
        hash,
    }
}

/// A controller that knows `keys` and answers ICReq on each connection.
async fn server(
    keys: Vec<TlsPsk>,
) -> (
    nvmf_transport::TransportAddr,
    tokio::task::JoinHandle<Vec<Result<(), String>>>,
    usize,
) {
    let lis = Listener::bind(
        &"127.0.0.1:0".parse().unwrap(),
        ControllerQueueConfig::default(),
    )
    .await
    .unwrap();
    let addr = lis.local_addr();
    let keys = Arc::new(keys);
    let lookup = {
        let keys = keys.clone();
        Arc::new(move |id: &[u8]| keys.iter().find(|k| k.identity == id).cloned())
    };
    let cfg = TlsServerConfig::new(lookup).unwrap();
    let n = 5;
    let h = tokio::spawn(async move {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut c = lis.accept().await.unwrap();
            let r: Result<(), TransportError> = async {
                c.start_tls(TlsSide::Server(&cfg)).await?;
                assert!(c.is_tls());
                loop {
                    c.pump().await?;
                    while let Some(ev) = c.queue.poll_event() {
                        if matches!(ev, ControllerEvent::Connected { .. }) {
                            c.flush().await?;
                            c.close_gracefully().await;
                            return Ok(());
                        }
                    }
                    if c.is_eof() {
                        return Err(TransportError::Closed);
                    }
                }
            }
            .await;
            out.push(r.map_err(|e| e.to_string()));
        }
        out
    });
    (addr, h, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psk_handshakes_and_refusals() {
    let k256 = psk("NVMe0R01 host subsys", &[0x11; 32], PskHash::Sha256);
    let k384 = psk("NVMe0R02 host subsys", &[0x22; 48], PskHash::Sha384);
    let (addr, h, _) = server(vec![k256.clone(), k384.clone()]).await;
    let cfg = HostQueueConfig::default();
    for k in [&k256, &k384] {
        let c = HostConnection::connect_with(&addr, cfg, Some(&TlsClientConfig { psk: k.clone() }))
            .await
            .unwrap_or_else(|e| panic!("{k:?}: {e}"));
        c.close().await;
    }
    // Right identity, wrong key; unknown identity; no TLS at all.
    let wrong = psk("NVMe0R01 host subsys", &[0x12; 32], PskHash::Sha256);
    let unknown = psk("NVMe0R01 other subsys", &[0x11; 32], PskHash::Sha256);
    for k in [wrong, unknown] {
        let e = HostConnection::connect_with(&addr, cfg, Some(&TlsClientConfig { psk: k }))
            .await
            .expect_err("a bad PSK must not connect");
        assert!(
            matches!(e, TransportError::Tls(_) | TransportError::Io { .. }),
            "{e}"
        );
    }
    let e = HostConnection::connect(&addr, cfg).await.err();
    assert!(e.is_some(), "a plain ICReq must not reach a TLS listener");
    let results = h.await.unwrap();
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    assert!(results[2..].iter().all(|r| r.is_err()), "{results:?}");
}
