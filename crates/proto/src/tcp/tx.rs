//! Outgoing bytes of one connection, as a list of buffers for gather writes.
//!
//! Headers of consecutive PDUs are written into one growing buffer; large data is
//! queued as its own `Bytes` so it goes to the socket without being copied. The
//! shell writes [`TxQueue::chunks`] with one `writev` and calls [`TxQueue::advance`]
//! with what the kernel took: many responses leave in one system call.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::digest::crc32c_append;
use super::pdu::{Pdu, PduEncoder};

/// Data shorter than this is copied behind the header instead of queued on its own:
/// an extra iovec costs more than copying a few hundred bytes.
const COPY_BELOW: usize = 512;

/// Outgoing bytes, in order.
#[derive(Debug, Default)]
pub struct TxQueue {
    chunks: VecDeque<Bytes>,
    cur: BytesMut,
    len: usize,
}

impl TxQueue {
    /// Appends bytes by copying them into the current buffer.
    pub fn put_slice(&mut self, b: &[u8]) {
        self.cur.extend_from_slice(b);
        self.len += b.len();
    }

    /// Queues one PDU as `enc` writes it: header, header digest and padding are
    /// copied into the current buffer, the data is queued by reference (see
    /// [`Self::put_bytes`]) and the data digest follows it.
    pub fn push_pdu(&mut self, enc: &PduEncoder, pdu: Pdu) {
        // A reference count, not a copy of the data.
        let data = match &pdu {
            Pdu::CapsuleCmd { data, .. } => data.clone(),
            Pdu::H2CData(d) | Pdu::C2HData(d) => d.data.clone(),
            Pdu::H2CTermReq(t) | Pdu::C2HTermReq(t) => t.data.clone(),
            _ => Bytes::new(),
        };
        self.push_pdu_parts(enc, &pdu, data.len(), std::iter::once(data));
    }

    /// Queues one PDU whose data is `parts` in order, `len` bytes in all (the PDU's
    /// own data field is ignored): header, header digest and padding are copied
    /// into the current buffer, each part is queued by reference, and the data
    /// digest is computed over the parts as they are queued. This is how read data
    /// goes out straight from the namespace's memory, without being gathered into
    /// one buffer first.
    pub fn push_pdu_parts(
        &mut self,
        enc: &PduEncoder,
        pdu: &Pdu,
        len: usize,
        parts: impl Iterator<Item = Bytes>,
    ) {
        let (prefix_len, ddgst) = enc.encode_header(pdu, len, &mut self.cur);
        self.len += prefix_len;
        let mut crc = 0u32;
        let mut queued = 0usize;
        for p in parts {
            if ddgst {
                crc = crc32c_append(crc, &p);
            }
            queued += p.len();
            if !p.is_empty() {
                self.put_bytes(p);
            }
        }
        debug_assert_eq!(queued, len, "parts must hold the length in the header");
        if ddgst {
            self.put_slice(&crc.to_le_bytes());
        }
    }

    /// Appends a buffer without copying it (small ones are copied).
    pub fn put_bytes(&mut self, b: Bytes) {
        if b.len() < COPY_BELOW {
            self.put_slice(&b);
            return;
        }
        self.seal();
        self.len += b.len();
        self.chunks.push_back(b);
    }

    fn seal(&mut self) {
        if !self.cur.is_empty() {
            let c = self.cur.split().freeze();
            self.chunks.push_back(c);
        }
    }

    /// Total bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The waiting buffers, in order, for a gather write.
    pub fn chunks(&mut self) -> &VecDeque<Bytes> {
        self.seal();
        &self.chunks
    }

    /// Drops `n` bytes that were written.
    pub fn advance(&mut self, mut n: usize) {
        self.seal();
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Takes everything waiting as one contiguous buffer (tests and simple shells).
    pub fn take_all(&mut self) -> Vec<u8> {
        self.seal();
        let mut v = Vec::with_capacity(self.len);
        for c in self.chunks.drain(..) {
            v.extend_from_slice(&c);
        }
        self.len = 0;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_and_advance() {
        let mut t = TxQueue::default();
        t.put_slice(b"abc");
        t.put_bytes(Bytes::from(vec![7u8; 1000]));
        t.put_slice(b"de");
        assert_eq!(t.len(), 1005);
        assert_eq!(t.chunks().len(), 3);
        t.advance(4);
        assert_eq!(t.len(), 1001);
        let v = t.take_all();
        assert_eq!(v.len(), 1001);
        assert_eq!(&v[999..], b"de");
        assert!(t.is_empty());
    }
}
