//! Helpers the transport's socket tests share.

use bytes::BytesMut;
use nvmf_proto::tcp::TxQueue;
use nvmf_transport::QueueIo;

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
