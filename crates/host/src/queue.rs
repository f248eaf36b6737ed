//! The task that drives one queue: it owns the queue's connection, takes requests
//! from an mpsc channel and answers each on its oneshot. When the connection fails
//! the commands in flight go back to the front of the pending list and the task
//! reports the failure; the supervisor then hands it a new connection (and the
//! pending commands are sent again) or declares the controller lost.

use std::collections::{HashMap, VecDeque};

use nvmf_proto::tcp::{Completion, HostData};
use nvmf_proto::Sqe;
use nvmf_transport::{HostConnection, TransportError};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// One command for a queue task.
pub(crate) struct Request {
    pub sqe: Sqe,
    pub data: HostData,
    pub reply: oneshot::Sender<Result<Completion>>,
}

/// Control messages from the supervisor.
pub(crate) enum Ctl {
    /// A new connection of association generation `gen`.
    Conn(Box<HostConnection>, u64),
    /// Drop the connection (the association is being re-established); keep the commands.
    Reset,
    /// The controller is lost: fail everything, now and from now on.
    Dead(String),
    /// Close the connection and end the task.
    Close(oneshot::Sender<()>),
}

/// A failure report: (queue id, generation).
pub(crate) type Failure = (u16, u64);

async fn next(conn: &mut Option<Box<HostConnection>>) -> Result<Completion, TransportError> {
    match conn {
        Some(c) => c.next_completion().await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn run(
    qid: u16,
    mut conn: Option<Box<HostConnection>>,
    mut gen: u64,
    mut req_rx: mpsc::Receiver<Request>,
    mut ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    fail_tx: mpsc::UnboundedSender<Failure>,
) {
    let mut pending: VecDeque<Request> = VecDeque::new();
    let mut inflight: HashMap<u16, Request> = HashMap::new();
    let mut dead: Option<String> = None;
    loop {
        // Send what fits.
        if let Some(c) = conn.as_mut() {
            let mut failed = None;
            while c.queue().has_room() {
                let Some(r) = pending.pop_front() else { break };
                if r.reply.is_closed() {
                    continue;
                }
                match c.submit(r.sqe, r.data.clone()) {
                    Ok(cid) => {
                        inflight.insert(cid, r);
                    }
                    Err(e) => {
                        pending.push_front(r);
                        failed = Some(e);
                        break;
                    }
                }
            }
            let failed = failed.or_else(|| c.kick().err());
            if let Some(e) = failed {
                tracing::warn!(qid, "queue connection failed: {e}");
                requeue(&mut pending, &mut inflight);
                conn = None;
                let _ = fail_tx.send((qid, gen));
            }
        }
        tokio::select! {
            biased;
            ctl = ctl_rx.recv() => match ctl {
                Some(Ctl::Conn(c, g)) => {
                    conn = Some(c);
                    gen = g;
                    dead = None;
                }
                Some(Ctl::Reset) => {
                    requeue(&mut pending, &mut inflight);
                    if let Some(c) = conn.take() {
                        tokio::spawn(c.close());
                    }
                }
                Some(Ctl::Dead(msg)) => {
                    requeue(&mut pending, &mut inflight);
                    for r in pending.drain(..) {
                        let _ = r.reply.send(Err(Error::ControllerLost(msg.clone())));
                    }
                    if let Some(c) = conn.take() {
                        tokio::spawn(c.close());
                    }
                    dead = Some(msg);
                }
                Some(Ctl::Close(ack)) => {
                    requeue(&mut pending, &mut inflight);
                    for r in pending.drain(..) {
                        let _ = r.reply.send(Err(Error::Disconnected));
                    }
                    if let Some(c) = conn.take() {
                        c.close().await;
                    }
                    let _ = ack.send(());
                    return;
                }
                None => return,
            },
            r = req_rx.recv() => match r {
                Some(r) => match &dead {
                    Some(msg) => {
                        let _ = r.reply.send(Err(Error::ControllerLost(msg.clone())));
                    }
                    None => pending.push_back(r),
                },
                None => {
                    if let Some(c) = conn.take() {
                        c.close().await;
                    }
                    return;
                }
            },
            res = next(&mut conn) => match res {
                Ok(c) => {
                    if let Some(r) = inflight.remove(&c.cqe.cid) {
                        let _ = r.reply.send(Ok(c));
                    }
                }
                Err(e) => {
                    tracing::warn!(qid, "queue connection failed: {e}");
                    requeue(&mut pending, &mut inflight);
                    conn = None;
                    let _ = fail_tx.send((qid, gen));
                }
            },
        }
    }
}

/// Puts the commands in flight back at the front of the pending list, oldest CID first.
fn requeue(pending: &mut VecDeque<Request>, inflight: &mut HashMap<u16, Request>) {
    let mut v: Vec<(u16, Request)> = inflight.drain().collect();
    v.sort_by_key(|(cid, _)| *cid);
    for (_, r) in v.into_iter().rev() {
        pending.push_front(r);
    }
}
