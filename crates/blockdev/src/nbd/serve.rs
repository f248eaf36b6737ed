//! The NBD request loop: reads the kernel's requests from its socket, runs each
//! as NVMe commands on the controller (concurrently: the kernel keeps many
//! requests outstanding, and the controller spreads them over its I/O queues),
//! and writes each reply, header and data together, as its commands complete.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::io::{BlockIo, BlockOp};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::wire::{self, cmd, cmd_flag, errno, Request};

/// Largest request served (the kernel's default max_sectors for nbd is far
/// below; anything larger means the stream is out of step).
pub const MAX_REQUEST: u32 = 64 << 20;

/// Why the loop ended.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket failed.
    #[error("NBD socket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not an NBD request.
    #[error("{0}")]
    BadMagic(#[from] wire::BadMagic),
    /// A write longer than [`MAX_REQUEST`].
    #[error("NBD write of {0} bytes, more than {MAX_REQUEST}")]
    TooLong(u32),
}

/// The namespace a device serves.
#[derive(Debug, Clone)]
pub struct Target {
    /// Namespace ID.
    pub nsid: u32,
    /// Logical block size.
    pub block_size: u32,
    /// Size in blocks; shared with [`super::NbdDevice::resize`], which changes it
    /// when the namespace grows or shrinks.
    pub blocks: Arc<AtomicU64>,
}

impl Target {
    /// A target of `blocks` blocks.
    pub fn new(nsid: u32, block_size: u32, blocks: u64) -> Self {
        Self {
            nsid,
            block_size,
            blocks: Arc::new(AtomicU64::new(blocks)),
        }
    }
}

/// Serves requests from `sock` until the peer sends DISC or closes; returns the
/// number of requests served.
pub async fn serve<S, B>(sock: S, ctrl: B, t: Target) -> Result<u64, ServeError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    B: BlockIo,
{
    let (mut rd, mut wr) = tokio::io::split(sock);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            wr.write_all(&frame).await?;
        }
        wr.flush().await?;
        Ok::<_, std::io::Error>(())
    });
    let mut served = 0u64;
    let res = loop {
        let mut hdr = [0u8; wire::REQUEST_SIZE];
        match rd.read_exact(&mut hdr).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(served),
            Err(e) => break Err(e.into()),
        }
        let req = match Request::decode(&hdr) {
            Ok(r) => r,
            Err(e) => break Err(e.into()),
        };
        if req.cmd == cmd::DISC {
            break Ok(served);
        }
        let data = if req.cmd == cmd::WRITE {
            if req.len > MAX_REQUEST {
                break Err(ServeError::TooLong(req.len));
            }
            let mut d = vec![0u8; req.len as usize];
            if let Err(e) = rd.read_exact(&mut d).await {
                break Err(e.into());
            }
            Some(Bytes::from(d))
        } else {
            None
        };
        served += 1;
        let (ctrl, tx, t) = (ctrl.clone(), tx.clone(), t.clone());
        tokio::spawn(async move {
            let (error, payload) = match execute(&ctrl, &t, &req, data).await {
                Ok(p) => (0, p),
                Err(e) => (e, Vec::new()),
            };
            let mut frame = Vec::with_capacity(wire::REPLY_SIZE + payload.len());
            frame.extend_from_slice(&wire::reply(req.handle, error));
            frame.extend_from_slice(&payload);
            let _ = tx.send(frame).await;
        });
    };
    drop(tx);
    // Replies of requests still running are written before the socket closes.
    let _ = writer.await;
    res
}

/// Runs one request; read data, or an errno.
async fn execute<B: BlockIo>(
    c: &B,
    t: &Target,
    req: &Request,
    data: Option<Bytes>,
) -> Result<Vec<u8>, u32> {
    let bs = u64::from(t.block_size);
    let aligned = req.from.is_multiple_of(bs) && u64::from(req.len).is_multiple_of(bs);
    let (slba, nlb) = (req.from / bs, u64::from(req.len) / bs);
    let in_range = slba
        .checked_add(nlb)
        .is_some_and(|e| e <= t.blocks.load(Ordering::Relaxed));
    let log = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(
            nsid = t.nsid,
            "NBD {what} at byte {} ({} bytes): {e}",
            req.from,
            req.len
        );
        errno::EIO
    };
    if req.cmd != cmd::FLUSH {
        if !aligned {
            return Err(errno::EINVAL);
        }
        if !in_range {
            return Err(errno::ENOSPC);
        }
    }
    let op = match req.cmd {
        cmd::READ => {
            if req.len > MAX_REQUEST {
                return Err(errno::EINVAL);
            }
            BlockOp::Read { slba, nlb }
        }
        cmd::WRITE => BlockOp::Write {
            slba,
            data: data.unwrap_or_default(),
            fua: req.flags & cmd_flag::FUA != 0,
        },
        cmd::FLUSH => BlockOp::Flush,
        cmd::TRIM => BlockOp::Discard { slba, nlb },
        cmd::WRITE_ZEROES => BlockOp::WriteZeroes {
            slba,
            nlb,
            deac: req.flags & cmd_flag::NO_HOLE == 0,
            fua: req.flags & cmd_flag::FUA != 0,
        },
        _ => return Err(errno::EOPNOTSUPP),
    };
    let what = op.name();
    c.submit(op).await.map_err(|e| log(what, &e))
}
