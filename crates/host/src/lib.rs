//! # nvmf-host: the NVMe over Fabrics host (NVMe/TCP)
//!
//! [`Controller::connect`] brings up an association the way Linux and FreeBSD
//! hosts do (Connect, CAP/VS, CC.EN, CSTS.RDY, Identify, Number of Queues, one TCP
//! connection per I/O queue), then keeps it alive: Keep Alive every KATO/2,
//! Asynchronous Event Requests outstanding, and, when a connection fails, the whole
//! association is re-established every `reconnect_delay` until `ctrl_loss_tmo`,
//! with the commands in flight sent again on the new association.
//!
//! Each queue is driven by its own tokio task; a [`Controller`] is a cheap handle
//! that sends requests to those tasks, so it can be cloned into many tasks.
//! [`IoQueue`] is the lower-level alternative for a load generator: one
//! connection driven directly by its owner. [`discover`] reads a discovery log.

mod assoc;
mod auth;
mod controller;
mod discovery;
mod error;
mod options;
mod queue;
mod resv;

pub use assoc::{max_transfer, ControllerInfo, MAX_TRANSFER_CAP};
pub use controller::{AsyncEvent, Controller, LinkState, Namespace};
pub use discovery::{discover, discover_with, PersistentDiscovery, PERSISTENT_DISCOVERY_KATO_MS};
pub use error::{Error, Result};
pub use options::{
    default_hostid, default_hostnqn, ConnectOptions, ADMIN_QUEUE_DEPTH, DEFAULT_ADMIN_TIMEOUT,
    DEFAULT_CTRL_LOSS_TMO, DEFAULT_IO_TIMEOUT, DEFAULT_KATO_MS, DEFAULT_QUEUE_SIZE,
    DEFAULT_RECONNECT_DELAY,
};

pub use nvmf_proto::tcp::{Completion, HostData};
pub use nvmf_transport::TransportAddr;

use nvmf_proto::Sqe;
use nvmf_transport::HostConnection;

/// One I/O queue on its own connection, driven by its owner without channels or
/// tasks: [`IoQueue::submit`] queues commands, [`IoQueue::next_completion`] sends
/// them and returns completions in arrival order.
#[derive(Debug)]
pub struct IoQueue {
    conn: HostConnection,
    qid: u16,
}

impl IoQueue {
    /// Queue ID.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Queues a command (sent by the next [`Self::next_completion`] or [`Self::kick`]); returns its CID.
    pub fn submit(&mut self, sqe: Sqe, data: HostData) -> Result<u16> {
        Ok(self.conn.submit(sqe, data)?)
    }

    /// Writes queued commands without waiting.
    pub fn kick(&mut self) -> Result<()> {
        Ok(self.conn.kick()?)
    }

    /// The next completion (status not checked).
    pub async fn next_completion(&mut self) -> Result<Completion> {
        Ok(self.conn.next_completion().await?)
    }

    /// True while another command may be submitted.
    pub fn has_room(&mut self) -> bool {
        self.conn.has_room()
    }

    /// Commands outstanding.
    pub fn outstanding(&mut self) -> usize {
        self.conn.outstanding()
    }

    /// The underlying connection.
    pub fn connection(&mut self) -> &mut HostConnection {
        &mut self.conn
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.conn.close().await;
    }
}

/// Connects one I/O queue `qid` to the controller `cntlid` of an existing association
/// (TCP, ICReq, Fabrics Connect with SQSIZE `queue_size - 1`), with the in-capsule
/// data limit `icd` (see [`ControllerInfo::io_icd`]).
pub async fn connect_io_queue(
    opts: &ConnectOptions,
    cntlid: u16,
    qid: u16,
    icd: u32,
    queue_size: u16,
) -> Result<IoQueue> {
    let conn = assoc::connect_io(opts, cntlid, qid, icd, queue_size).await?;
    Ok(IoQueue { conn, qid })
}
