//! Helpers the transport's socket tests share.

use bytes::BytesMut;
use nvmf_proto::tcp::TxQueue;
use nvmf_transport::QueueIo;
use tokio::net::{TcpListener, TcpStream};

/// A fresh loopback connection: the accepted (server) side for a
/// `Connection`, and the client side as a blocking std stream.
pub async fn loopback_pair() -> (TcpStream, std::net::TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let client = std::net::TcpStream::connect(addr).unwrap();
    let (server, _) = l.accept().await.unwrap();
    (server, client)
}

/// A queue that takes whatever arrives and counts it.
#[derive(Default)]
pub struct Sink {
    pub tx: TxQueue,
    pub rx: BytesMut,
    pub got: u64,
}

impl QueueIo for Sink {
    fn tx(&mut self) -> &mut TxQueue {
        &mut self.tx
    }
    fn rx(&mut self) -> &mut BytesMut {
        &mut self.rx
    }
    fn wanted(&self) -> usize {
        1
    }
    fn process(&mut self) {
        self.got += self.rx.split().len() as u64;
    }
}
