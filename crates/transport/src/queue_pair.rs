//! The transport-neutral controller end of a queue pair: what the controller
//! needs from any NVMe-oF transport, whatever moves the bytes.
//!
//! NVMe-oF 1.1 §2 defines the model every transport binding follows: the host
//! sends command capsules (an SQE and maybe in-capsule data), the controller
//! pulls write data it was not given in the capsule and pushes read data, and
//! answers each command with a response capsule (a CQE). How data moves is the
//! binding's business: NVMe/TCP (TCP transport 1.0 §3.3) asks for it with R2T
//! and pushes it with C2HData PDUs; NVMe/RDMA (NVMe-oF 1.1 §7.3) reads and writes
//! the host's memory with RDMA READ and RDMA WRITE. The controller's queue task
//! ([`nvmf_controller`'s `QueueTask`]) sees only this trait, so a second
//! transport adds an implementation, not a second controller.
//!
//! Why a trait with static dispatch (the task is generic over it) rather than
//! a `dyn` object: the hot path calls these methods several times per command;
//! monomorphised they inline exactly as the TCP calls did before the trait
//! existed (A/B figures in docs/performance.md, "Transport-neutral queue").
//!
//! [`nvmf_controller`'s `QueueTask`]: ../../nvmf_controller/index.html

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use nvmf_proto::tcp::{ControllerEvent, ControllerQueue, UsageError};
use nvmf_proto::{Cqe, Sqe, Status};

use crate::addr::{TransportAddr, TransportKind};
use crate::connection::Connection;
use crate::error::TransportError;

/// The controller end of one queue pair (one admin or I/O queue of one
/// association), as the controller's queue task drives it.
///
/// The protocol half (events in, answers out) is sans-I/O in each transport's
/// `nvmf_proto` module; the I/O half ([`Self::ready`], [`Self::drive`],
/// [`Self::write_available`]) moves what the protocol half queued. One task
/// owns a queue pair, so nothing here takes a lock.
pub trait ControllerQueuePair: Send + 'static {
    /// What [`Self::ready`] found ready, handed back to [`Self::drive`].
    type Ready: Send;
    /// The transport binding (what Identify Controller and the discovery log
    /// say about the queue depend on it: keyed SGLs are RDMA's).
    const KIND: TransportKind;

    // --- The protocol half: capsules in, data and responses out. ---

    /// The next thing the host asked for (a command, write data that arrived,
    /// the end of the queue), if any.
    fn poll_event(&mut self) -> Option<ControllerEvent>;
    /// True while [`Self::poll_event`] has more to give.
    fn has_events(&self) -> bool;
    /// Calls `f` with each command that [`Self::poll_event`] has yet to give,
    /// in order, without taking them (the controller prefetches what they
    /// will touch before it runs the first).
    fn for_each_pending_command(&self, f: impl FnMut(&Sqe));
    /// Asks the host for a write command's data (TCP: an R2T; RDMA: RDMA READ
    /// of the host's keyed buffer). An [`ControllerEvent::Data`] follows once
    /// it is all here.
    fn request_data(&mut self, cid: u16) -> Result<(), UsageError>;
    /// Withdraws a data request not yet started and completes the command with
    /// `status`; false if the transfer has begun (it then runs to its end).
    fn cancel_data_request(&mut self, cid: u16, status: Status) -> bool;
    /// Sends a read command's data. With `plain` (a success with no command
    /// specific result) the transport may fold the completion into the data
    /// (TCP: C2HData with SUCCESS) and returns true; false means the caller
    /// must still [`Self::complete`] the command.
    fn send_data_parts(
        &mut self,
        cid: u16,
        parts: &[Bytes],
        plain: bool,
    ) -> Result<bool, UsageError>;
    /// Sends a command's response capsule.
    fn complete(&mut self, cqe: Cqe);
    /// Records a successful Connect: the queue's ID, its SQ size, whether SQ
    /// flow control is on, and the in-capsule data size the controller allows.
    fn set_connected(&mut self, qid: u16, sq_size: u16, sq_flow_control: bool, max_icd: u32);
    /// True once the queue has ended (a fatal protocol error or the host's own
    /// termination): flush and close.
    fn is_terminated(&self) -> bool;
    /// Commands taken in and not yet completed.
    fn outstanding(&self) -> usize;
    /// Response bytes (TCP) or work (RDMA) queued and not yet handed to the
    /// wire: the controller stops taking commands while this is over its
    /// limit, so a host that does not read its responses bounds our memory.
    fn pending_send(&self) -> usize;

    // --- The I/O half. ---

    /// Hands queued responses to the wire without waiting.
    fn write_available(&mut self) -> Result<(), TransportError>;
    /// Waits until the queue can move data: incoming when `read`, outgoing
    /// when `write`. Returns what is ready and how many times the wait looked
    /// before it was (see [`Connection::ready_polled`]). Cancel safe.
    fn ready(
        &mut self,
        read: bool,
        write: bool,
    ) -> impl Future<Output = Result<(Self::Ready, u32), TransportError>> + Send;
    /// Moves what `ready` allows: takes in what arrived (new events follow)
    /// and sends what is queued.
    fn drive(&mut self, ready: Self::Ready) -> Result<(), TransportError>;
    /// How long [`Self::ready`] polls before it sleeps (zero: never).
    fn set_busy_poll(&mut self, budget: Duration);
    /// Sends everything queued, waiting as needed.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Ends the queue so that the host receives everything sent. Unbounded
    /// against a peer that never closes: the caller bounds it.
    fn close_gracefully(&mut self) -> impl Future<Output = ()> + Send;
    /// True once the host closed its end.
    fn is_eof(&self) -> bool;
    /// Bytes sent so far (progress, for the stall timer).
    fn bytes_written(&self) -> u64;
    /// Bytes received so far (diagnostics).
    fn bytes_read(&self) -> u64;
    /// The host's address.
    fn peer_addr(&self) -> Option<SocketAddr>;
    /// Our address on this queue, with its transport (the discovery log's
    /// current entry, the ANA port).
    fn local_addr(&self) -> Option<TransportAddr>;
}

/// NVMe/TCP: a socket and its [`ControllerQueue`].
impl ControllerQueuePair for Connection<ControllerQueue> {
    type Ready = tokio::io::Ready;
    const KIND: TransportKind = TransportKind::Tcp;

    #[inline]
    fn poll_event(&mut self) -> Option<ControllerEvent> {
        self.queue.poll_event()
    }
    #[inline]
    fn has_events(&self) -> bool {
        self.queue.has_events()
    }
    #[inline]
    fn for_each_pending_command(&self, f: impl FnMut(&Sqe)) {
        self.queue.pending_commands().for_each(f)
    }
    #[inline]
    fn request_data(&mut self, cid: u16) -> Result<(), UsageError> {
        self.queue.request_data(cid)
    }
    fn cancel_data_request(&mut self, cid: u16, status: Status) -> bool {
        self.queue.cancel_data_request(cid, status)
    }
    #[inline]
    fn send_data_parts(
        &mut self,
        cid: u16,
        parts: &[Bytes],
        plain: bool,
    ) -> Result<bool, UsageError> {
        self.queue.send_data_parts(cid, parts, plain)
    }
    #[inline]
    fn complete(&mut self, cqe: Cqe) {
        self.queue.complete(cqe)
    }
    fn set_connected(&mut self, qid: u16, sq_size: u16, sq_flow_control: bool, max_icd: u32) {
        self.queue
            .set_connected(qid, sq_size, sq_flow_control, max_icd)
    }
    #[inline]
    fn is_terminated(&self) -> bool {
        self.queue.is_terminated()
    }
    fn outstanding(&self) -> usize {
        self.queue.outstanding()
    }
    #[inline]
    fn pending_send(&self) -> usize {
        self.queue.tx_len()
    }
    #[inline]
    fn write_available(&mut self) -> Result<(), TransportError> {
        Connection::write_available(self)
    }
    fn ready(
        &mut self,
        read: bool,
        write: bool,
    ) -> impl Future<Output = Result<(Self::Ready, u32), TransportError>> + Send {
        self.ready_polled(read, write)
    }
    #[inline]
    fn drive(&mut self, ready: Self::Ready) -> Result<(), TransportError> {
        Connection::drive(self, ready)
    }
    fn set_busy_poll(&mut self, budget: Duration) {
        Connection::set_busy_poll(self, budget)
    }
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send {
        Connection::flush(self)
    }
    fn close_gracefully(&mut self) -> impl Future<Output = ()> + Send {
        Connection::close_gracefully(self)
    }
    fn is_eof(&self) -> bool {
        Connection::is_eof(self)
    }
    fn bytes_written(&self) -> u64 {
        Connection::bytes_written(self)
    }
    fn bytes_read(&self) -> u64 {
        Connection::bytes_read(self)
    }
    fn peer_addr(&self) -> Option<SocketAddr> {
        Connection::peer_addr(self).ok()
    }
    fn local_addr(&self) -> Option<TransportAddr> {
        self.stream().local_addr().ok().map(TransportAddr::tcp)
    }
}
