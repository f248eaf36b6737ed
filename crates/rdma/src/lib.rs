//! nvmf-rdma: a small, safe, async binding of RDMA CM and verbs (rdma-core's librdmacm and
//! libibverbs) for the NVMe/RDMA transport (NVMe-oF 1.1 §7.3: command capsules over
//! SEND/RECV, data by RDMA READ and RDMA WRITE, SEND with Invalidate).
//!
//! This crate is the only place in nvmf-rs with RDMA `unsafe`. rdma-core is loaded with
//! `dlopen` on first use ([`Lib::get`]), so binaries depending on this crate run on
//! machines without it and get [`RdmaError::Unavailable`] when they try RDMA. See
//! docs/rdma.md.
//!
//! Passive side: [`CmListener::bind`] → [`CmListener::accept_request`] →
//! [`ConnectRequest::create_qp`] (post receives on [`Accepting::qp`]) →
//! [`Accepting::accept`] → [`Connection`]. Active side: [`resolve`] (post receives on
//! [`Connecting::qp`]) → [`Connecting::connect`]. Data: [`QueuePair::register`] gives a
//! [`MemoryRegion`]; post with [`QueuePair::post_recv`], [`QueuePair::post_send`],
//! [`QueuePair::post_rdma_read`], [`QueuePair::post_rdma_write`] or
//! [`QueuePair::post_send_batch`]; reap with [`QueuePair::poll`] or
//! [`QueuePair::wait_completions`].
#![allow(unsafe_code)]

pub mod cm;
pub mod error;
pub mod loader;
#[doc(hidden)]
pub mod sys;
pub mod verbs;

pub use cm::{
    resolve, Accepting, CmEventKind, CmListener, ConnParam, ConnectRequest, Connecting, Connection,
};
pub use error::{RdmaError, Result};
pub use loader::Lib;
pub use verbs::{
    Access, Completion, DeviceAttrs, MemoryRegion, MemoryWindow, Opcode, QpAttrs, QueuePair,
    RemoteBuf, SendWr, Sge,
};

/// Compile-time checks: the handles and the futures of the async API can move between
/// threads (tokio's multi-threaded runtime, `tokio::spawn`).
#[cfg(test)]
#[allow(dead_code)]
mod send_sync {
    use super::*;

    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}

    fn handles() {
        send_sync::<CmListener>();
        send_sync::<Connection>();
        send_sync::<QueuePair>();
        send_sync::<MemoryRegion>();
        send_sync::<MemoryWindow>();
        send_sync::<ConnectRequest>();
        send_sync::<Accepting>();
        send_sync::<Connecting>();
        send_sync::<RdmaError>();
    }

    async fn futures(
        l: &CmListener,
        a: Accepting,
        c: Connecting,
        conn: &Connection,
        out: &mut [Completion],
    ) {
        send(&l.accept_request());
        send(&a.accept(&[], ConnParam::default()));
        send(&c.connect(&[], ConnParam::default()));
        send(&resolve(
            "10.0.0.1:4420".parse().unwrap(),
            &QpAttrs::default(),
            1000,
        ));
        send(&conn.disconnected());
        send(&conn.next_event());
        send(&conn.qp().wait_completions(out));
    }
}
