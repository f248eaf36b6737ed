//! What a block device asks of a namespace, apart from how the kernel asks it
//! (NBD today, ublk next) and from how many paths lead to the namespace.
//!
//! Each kernel front end decodes its own requests into a [`BlockOp`] and hands
//! it to a [`BlockIo`]; [`SinglePath`] runs it as NVMe commands on one
//! controller. A multipath implementation of [`BlockIo`] picks a controller per
//! operation. The mapping follows NVM Command Set 1.0: Read §3.2.4, Write §3.2.6
//! (FUA in CDW12 bit 30), Flush §3.2.2 (base spec 2.0 §7.1), Dataset Management
//! §3.2.3, Write Zeroes §3.2.8.

use std::future::Future;

use bytes::Bytes;
use nvmf_host::Controller;

/// One block operation, in logical blocks of the namespace.
#[derive(Debug, Clone)]
pub enum BlockOp {
    /// Read `nlb` blocks from `slba`.
    Read {
        /// First block.
        slba: u64,
        /// Number of blocks (1-based).
        nlb: u64,
    },
    /// Write `data` (a whole number of blocks) at `slba`.
    Write {
        /// First block.
        slba: u64,
        /// The data.
        data: Bytes,
        /// Force Unit Access: on stable media before completion.
        fua: bool,
    },
    /// Commit volatile write cache contents to stable media.
    Flush,
    /// Deallocate (trim / discard) `nlb` blocks from `slba`.
    Discard {
        /// First block.
        slba: u64,
        /// Number of blocks.
        nlb: u64,
    },
    /// Write zeroes over `nlb` blocks from `slba`.
    WriteZeroes {
        /// First block.
        slba: u64,
        /// Number of blocks.
        nlb: u64,
        /// Let the controller deallocate instead of writing (DEAC).
        deac: bool,
        /// Force Unit Access.
        fua: bool,
    },
}

impl BlockOp {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            BlockOp::Read { .. } => "read",
            BlockOp::Write { .. } => "write",
            BlockOp::Flush => "flush",
            BlockOp::Discard { .. } => "discard",
            BlockOp::WriteZeroes { .. } => "write zeroes",
        }
    }
}

/// Runs [`BlockOp`]s against one namespace. Cheap to clone: every in-flight
/// request holds a clone.
pub trait BlockIo: Clone + Send + Sync + 'static {
    /// Runs `op`; the data read for [`BlockOp::Read`], empty otherwise.
    fn submit(&self, op: BlockOp) -> impl Future<Output = nvmf_host::Result<Vec<u8>>> + Send;
}

/// What a device must know of its namespace before serving it: Identify
/// Namespace's block size and size, and which optional commands Identify
/// Controller's ONCS (Base 2.0 Figure 275) says the controller supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Namespace ID.
    pub nsid: u32,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Size in logical blocks.
    pub blocks: u64,
    /// Dataset Management (deallocate) is supported: the device offers discard.
    pub discard: bool,
    /// Write Zeroes is supported.
    pub write_zeroes: bool,
}

impl Geometry {
    /// The geometry of namespace `nsid` of `ctrl`, from its cached Identify data.
    pub fn of(ctrl: &Controller, nsid: u32) -> nvmf_host::Result<Self> {
        let ns = ctrl.namespace(nsid)?;
        let oncs = ctrl.info().id.oncs;
        Ok(Self {
            nsid,
            block_size: ns.block_size,
            blocks: ns.blocks,
            discard: oncs & nvmf_proto::identify::oncs::DSM != 0,
            write_zeroes: oncs & nvmf_proto::identify::oncs::WRITE_ZEROES != 0,
        })
    }
}

/// One namespace over one controller (one path).
#[derive(Clone)]
pub struct SinglePath {
    /// The controller.
    pub ctrl: Controller,
    /// The namespace ID.
    pub nsid: u32,
}

impl SinglePath {
    /// Namespace `nsid` of `ctrl`.
    pub fn new(ctrl: Controller, nsid: u32) -> Self {
        Self { ctrl, nsid }
    }
}

impl BlockIo for SinglePath {
    async fn submit(&self, op: BlockOp) -> nvmf_host::Result<Vec<u8>> {
        run(&self.ctrl, self.nsid, op).await
    }
}

/// Runs `op` on namespace `nsid` of `c`; shared by every [`BlockIo`] that ends on
/// a controller.
pub async fn run(c: &Controller, nsid: u32, op: BlockOp) -> nvmf_host::Result<Vec<u8>> {
    match op {
        BlockOp::Read { slba, nlb } => c.read(nsid, slba, nlb).await,
        BlockOp::Write { slba, data, fua } => {
            c.write(nsid, slba, data, fua).await.map(|_| Vec::new())
        }
        BlockOp::Flush => c.flush(nsid).await.map(|_| Vec::new()),
        BlockOp::Discard { slba, nlb } => c.deallocate(nsid, slba, nlb).await.map(|_| Vec::new()),
        BlockOp::WriteZeroes {
            slba,
            nlb,
            deac,
            fua,
        } => c
            .write_zeroes(nsid, slba, nlb, deac, fua)
            .await
            .map(|_| Vec::new()),
    }
}
