//! NVMe/RDMA (NVMe-oF 1.1 §7.3): the I/O shells that drive the sans-I/O
//! NVMe/RDMA queues of `nvmf_proto::rdma` over RC queue pairs of `nvmf_rdma`
//! (rdma-core, loaded at run time).
//!
//! - [`controller`]: the target's listener and queue pairs ([`RdmaListener`],
//!   [`RdmaQueuePair`], a [`crate::ControllerQueuePair`]);
//! - [`host`]: the host's queue pairs ([`RdmaHostQueuePair`], behind
//!   [`crate::HostConnection`]).
//!
//! Both post receives into fixed slots of one registered region and tag each
//! work request's `wr_id` with what it was for (this module's helpers).

pub mod controller;
pub mod host;

pub use controller::{RdmaIncoming, RdmaListenConfig, RdmaListener, RdmaQueuePair, RdmaReady};
pub use host::RdmaHostQueuePair;

use nvmf_rdma::verbs::{MemoryRegion, QueuePair, Sge};
use nvmf_rdma::RdmaError;

use crate::error::TransportError;

/// Completions taken per wait on a CQ: a stack array of them serves each
/// wait, so waiting allocates nothing.
const POLL_BATCH: usize = 64;

/// A batch of work completions, on the stack.
type Completions = [nvmf_rdma::verbs::Completion; POLL_BATCH];

/// `IBV_WC_WR_FLUSH_ERR` (`enum ibv_wc_status`, verbs.h): work flushed because
/// the queue pair went to the error state (the peer disconnected).
const WC_WR_FLUSH_ERR: u32 = 5;

/// `wr_id` tags (top byte): what a work completion is for; the rest of the
/// `wr_id` is the slot, CID or token.
const TAG_RECV: u64 = 1 << 56;
const TAG_READ: u64 = 2 << 56;
const TAG_SEND: u64 = 3 << 56;
const TAG_WRITE: u64 = 4 << 56;
const TAG_MASK: u64 = 0xff << 56;

/// An rdma-core error as a transport error, saying what was being done.
fn rdma_err(what: impl Into<String>, e: RdmaError) -> TransportError {
    TransportError::Io {
        context: what.into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Posts receive slots `slots` of `mr` (slot `n` is bytes `n × size ..
/// (n + 1) × size`), tagged [`TAG_RECV`] with their number, in one
/// ibv_post_recv.
fn post_recv_slots(
    qp: &QueuePair,
    mr: &MemoryRegion,
    size: usize,
    slots: impl Iterator<Item = u32>,
) -> Result<(), TransportError> {
    let slots: Vec<u32> = slots.collect();
    if slots.is_empty() {
        return Ok(());
    }
    let sges: Vec<Sge> = slots
        .iter()
        .map(|&s| mr.sge(s as usize * size, size))
        .collect::<Result<_, _>>()
        .map_err(|e| rdma_err("receive buffers", e))?;
    let wrs: Vec<(u64, &[Sge])> = slots
        .iter()
        .zip(&sges)
        .map(|(&s, g)| (TAG_RECV | u64::from(s), std::slice::from_ref(g)))
        .collect();
    qp.post_recv_batch(&wrs)
        .map_err(|e| rdma_err("posting receives", e))
}
