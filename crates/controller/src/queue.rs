//! One connection's task: drives its [`ControllerQueue`], turns Connect into an
//! admin or I/O queue of a controller, and runs commands.
//!
//! Everything a queue does happens on this task, so the I/O path takes no lock:
//! memory namespaces are served inline; backends that may block (files, devices)
//! run on tokio's blocking pool and report back over a channel, so a slow disk
//! never stalls the queue's socket.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nvmf_backend::SharedData;
use nvmf_proto::fabrics::{
    connect_invalid_param_dw0, connect_response_dw0, fctype, ConnectCommand, ConnectData,
    CNTLID_DYNAMIC, DISCOVERY_NQN,
};
use nvmf_proto::log::ErrorLogEntry;
use nvmf_proto::registers::{Cc, Csts};
use nvmf_proto::sqe::{admin_opcode, io_opcode, DataDirection};
use nvmf_proto::tcp::idmap::CidMap;
use nvmf_proto::tcp::{ControllerEvent, IncomingCommand};
use nvmf_proto::{Cqe, Sqe, Status};
use nvmf_transport::{ControllerQueuePair, TransportAddr};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::Limits;
use crate::metrics::Kind;
use crate::registry::{AbortRequest, AdminSignal, CtrlShared, NsMap, Registry};

/// What every connection task shares.
#[derive(Debug)]
pub struct TargetCtx {
    /// Subsystems and controllers.
    pub registry: Arc<Registry>,
    /// Limits.
    pub limits: Limits,
    /// Addresses served, for the discovery log.
    pub ports: Vec<TransportAddr>,
    /// The `ports` require TLS (discovery log TREQ / TSAS).
    /// The TLS mode of each port in `ports` (`None`: plain).
    pub port_treq: Vec<Option<crate::config::Treq>>,
    /// When and how long every queue polls its socket.
    pub busy_poll: PollPolicy,
}

/// When a queue polls its socket instead of sleeping (config `busy_poll_us`,
/// `busy_poll_batch`). Never while responses wait for room in the socket: the
/// queue then sleeps until the kernel has freed a good part of the send buffer.
///
/// Why adaptive: polling after every pass cuts the wakeup out of a
/// queue-depth-1 round trip (31 → 17 µs here) but at high depth makes the
/// queue react to every trickle of commands, so its batches and system calls
/// shrink (4 KiB random writes at depth 128: −10 to −30 %). A pass that took in
/// only a PDU or two is the mark of a host that waits for each answer, so only
/// those passes are followed by a poll (A/B in docs/performance.md).
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    /// How long to poll before sleeping (zero: never poll).
    pub budget: Duration,
    /// Poll only after passes of at most this many PDUs (0: after every pass).
    pub batch: u32,
}

impl PollPolicy {
    /// The polling budget to start a connection with.
    pub fn initial(&self) -> Duration {
        self.budget
    }

    /// The budget after a pass that took in `pdus` PDUs; `None` keeps the
    /// current one (a pass that took in nothing says nothing about the host).
    /// `streaming`: the wait before the pass found the PDUs already there at
    /// its first look. Then the host did not wait on our answers, and polling
    /// would only make the queue take its commands one by one as they come:
    /// a polling queue's passes are small because it polls, so the size of a
    /// pass alone would keep it polling (4 KiB random reads at depth 128:
    /// 362k IOPS never polling, 306k polling after every small pass).
    pub fn after_pass(&self, pdus: u32, streaming: bool) -> Option<Duration> {
        if pdus == 0 || self.batch == 0 || self.budget.is_zero() {
            return None;
        }
        Some(if pdus <= self.batch && !streaming {
            self.budget
        } else {
            Duration::ZERO
        })
    }
}

/// The result of running a command.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send this completion.
    Complete(Cqe),
    /// Send this data, then the completion (or C2HData SUCCESS).
    Read(SharedData, Cqe),
    /// Running on the blocking pool; a [`Done`] will follow.
    Async,
    /// Held (an Asynchronous Event Request).
    Held,
}

/// A command finished on the blocking pool.
#[derive(Debug)]
pub(crate) struct Done {
    pub cid: u16,
    pub result: Result<Option<SharedData>, Status>,
    pub sqe: Sqe,
    /// When the command arrived (for the latency histogram).
    pub start: Instant,
}

/// Admin queue state that only its own task touches.
#[derive(Debug)]
pub(crate) struct AdminState {
    pub cc: Cc,
    pub csts: Csts,
    pub discovery: bool,
    pub aers: Vec<u16>,
    pub pending_aens: Vec<u32>,
    /// Abort commands handed to an I/O queue and not answered yet.
    pub aborts: u8,
}

#[derive(Debug)]
pub(crate) enum Role {
    New,
    Admin(AdminState),
    Io(u16),
}

pub(crate) struct QueueTask<C> {
    /// The queue pair, whatever its transport.
    pub conn: C,
    pub ctx: Arc<TargetCtx>,
    pub role: Role,
    pub ctrl: Option<Arc<CtrlShared>>,
    pub ns: Arc<NsMap>,
    pub ns_gen: u64,
    /// Commands waiting for their data, with when they arrived.
    pub waiting_data: CidMap<(Sqe, Instant)>,
    pub done_tx: mpsc::UnboundedSender<Done>,
    pub peer: SocketAddr,
    pub close_after_flush: bool,
    pub digests: nvmf_proto::tcp::Digests,
    pub conn_initialised: bool,
    /// Send progress: bytes written at the last check, and since when nothing
    /// more was written while responses waited.
    pub send_progress: (u64, Instant),
    /// Receive progress: bytes read at the last tick, and when that count last
    /// changed (reported when the keep-alive timer expires).
    pub recv_progress: (u64, Instant),
    /// The host sent a malformed PDU or missed a deadline.
    pub misbehaved: bool,
    /// DH-HMAC-CHAP state of this queue, when its host must authenticate.
    pub auth: Option<Box<nvmf_proto::auth::ControllerAuth>>,
    /// When the queue's Connect asked for authentication: the queue must
    /// finish it within the Connect deadline (limits.connect_timeout_ms).
    pub auth_since: Option<Instant>,
    /// Fused Compare and Write halves this I/O queue holds.
    pub fused: crate::fused::FusedState,
    /// Abort requests for this I/O queue, from its controller's admin queue.
    pub abort_rx: Option<mpsc::UnboundedReceiver<AbortRequest>>,
    /// Commands handed to the blocking pool and not done yet, by CID.
    pub pool_queued: CidMap<crate::abort::PoolStart>,
    /// When the command being run arrived (its capsule was taken from the
    /// queue): the start of its latency (crate::metrics).
    pub cmd_start: Instant,
    /// This queue's command counters, one block per namespace.
    pub counters: crate::metrics::QueueCounters,
    /// Asynchronous I/O to file and block-device namespaces (crate::uring).
    pub uring: crate::uring::QueueRing,
    /// Commands the ring finished, being answered (kept to reuse its memory).
    pub ring_done: Vec<Done>,
}

/// While working through a batch of commands, responses go out at least every
/// this many (the host works on them meanwhile instead of waiting for the
/// whole batch).
const SEND_EVERY: u32 = 16;

/// How many events of a pass go by between writes of the responses so far,
/// for a pass that starts with `pending` commands taken in: every
/// [`SEND_EVERY`], or twice a pass when the pass is larger than that. A large
/// pass (deep queues) then pays fewer writes, and the host fewer wake-ups per
/// command, while a small one still hands its first half to the host early
/// (docs/performance.md: always every 64 lost 28 % at depth 32).
fn send_interval(pending: u32) -> u32 {
    SEND_EVERY.max(pending / 2)
}

/// Asynchronous Event Request Limit, 0's based (AERL): four outstanding.
pub(crate) const AERL: u8 = 3;

impl<C: ControllerQueuePair> QueueTask<C> {
    /// Runs the connection to its end.
    /// Returns true if the host misbehaved: a protocol error (the connection
    /// ended with a C2HTermReq) or no ICReq/Connect in time. The server counts
    /// these per address and slows down addresses that keep doing it.
    pub(crate) async fn run(conn: C, ctx: Arc<TargetCtx>) -> bool {
        let mut poll_budget = ctx.busy_poll.initial();
        // The host's next PDUs were already there when the queue looked
        // (see PollPolicy::after_pass).
        let mut streaming = false;
        let peer = conn
            .peer_addr()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut t = QueueTask {
            conn,
            ctx,
            role: Role::New,
            ctrl: None,
            ns: Arc::new(NsMap::new()),
            ns_gen: 0,
            waiting_data: Default::default(),
            done_tx,
            peer,
            close_after_flush: false,
            digests: Default::default(),
            conn_initialised: false,
            send_progress: (0, Instant::now()),
            recv_progress: (0, Instant::now()),
            misbehaved: false,
            auth: None,
            auth_since: None,
            fused: Default::default(),
            abort_rx: None,
            pool_queued: Default::default(),
            cmd_start: Instant::now(),
            counters: Default::default(),
            uring: Default::default(),
            ring_done: Vec::new(),
        };
        let started = Instant::now();
        let mut admin_rx: Option<mpsc::UnboundedReceiver<AdminSignal>> = None;
        let mut close_rx: Option<watch::Receiver<bool>> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut connected = false;
        let mut graceful = false;
        let reason: String = loop {
            let pdus = t.handle_events();
            // The file I/O this pass started goes to the kernel in one call.
            t.pump_ring();
            if let Some(budget) = t.ctx.busy_poll.after_pass(pdus, streaming) {
                poll_budget = budget;
            }
            // Completions of this pass (and of the events handled since the
            // last one) get their latency now, just before they are written.
            t.counters.flush();
            if close_rx.is_none() {
                if let Some(c) = &t.ctrl {
                    close_rx = Some(c.close_watch());
                    if matches!(t.role, Role::Admin(_)) {
                        admin_rx = c.take_admin_rx();
                    }
                }
            }
            if let Err(e) = t.conn.write_available() {
                break format!("{e}");
            }
            if t.conn.is_terminated() || t.close_after_flush {
                let _ = tokio::time::timeout(Duration::from_secs(1), t.conn.flush()).await;
                graceful = true;
                break "closed".into();
            }
            if t.conn.is_eof() {
                break "host closed the connection".into();
            }
            // Commands held back while the backlog was over the limit: if the
            // write above drained it, run them now. (Waiting instead would wait
            // for a host that has nothing more to send: it waits for these
            // very responses.) Yield first, so a queue that keeps finding work
            // does not starve the other tasks on its thread.
            if t.conn.has_events() && !t.backlogged() {
                tokio::task::yield_now().await;
                continue;
            }
            let has_tx = t.conn.pending_send() != 0;
            // Backpressure: while the host leaves responses unread, take no new
            // commands (they wait in the socket, in the host's send buffer).
            let read = !t.backlogged() && !t.conn.has_events();
            let needs_tick = !matches!(t.role, Role::Io(_)) || has_tx || t.auth_pending();
            // Responses waiting for room in the socket: sleep until the kernel
            // has freed a good part of the send buffer. Polling would write
            // each sliver of room as it frees up, in many small system calls
            // (128 KiB reads at depth 16: 4.4 → 2.3 GB/s).
            // File I/O in flight: the spin looks at the ring's completion
            // queue as well, between its looks at the socket.
            let polls = !has_tx && !poll_budget.is_zero();
            t.conn
                .set_busy_poll(if polls { poll_budget } else { Duration::ZERO });
            tokio::select! {
                r = t.conn.ready(read, has_tx) => match r {
                    Ok((r, looks)) => {
                        // A wait that slept says nothing: the next small
                        // pass may poll again.
                        streaming = polls && looks <= 1;
                        if let Err(e) = t.conn.drive(r) { break format!("{e}") }
                    }
                    Err(e) => break format!("{e}"),
                },
                Some(d) = done_rx.recv() => t.on_done(d),
                _ = async { match t.uring.busy() { Some(r) => r.completions().await, None => std::future::pending().await } } => {
                    t.pump_ring();
                }
                Some(sig) = async { match admin_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    t.on_admin_signal(sig);
                }
                Some(req) = async { match t.abort_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    t.on_abort_request(req);
                }
                _ = async { match close_rx.as_mut() { Some(r) => { let _ = r.wait_for(|v| *v).await; } None => std::future::pending().await } } => {
                    break "controller closed".into();
                }
                _ = tick.tick(), if needs_tick => {
                    if let Some(why) = t.on_tick(started, &mut connected) { break why; }
                }
            }
        };
        // The association is gone before the host can see our FIN (a host
        // that reconnects at once must not find the old controller).
        t.finish(&reason);
        if graceful {
            // FIN, not a reset: the host must get the last responses or the
            // C2HTermReq (closing with unread bytes resets the connection).
            let _ = tokio::time::timeout(Duration::from_secs(1), t.conn.close_gracefully()).await;
        }
        // File I/O still in the kernel: wait for it here, where waiting does
        // not hold up the other queues on this thread (the ring's drop would
        // block the thread until a slow device answered).
        t.uring.drain().await;
        t.misbehaved
    }

    fn finish(&mut self, reason: &str) {
        if let Some(c) = &self.ctrl {
            self.counters.retire(&c.subsys);
        }
        match (&self.role, &self.ctrl) {
            (Role::Admin(a), Some(c)) => {
                info!(peer = %self.peer, cntlid = c.cntlid, subnqn = %c.subsys.nqn, hostnqn = %c.hostnqn, discovery = a.discovery, "association ended: {reason}");
                c.close();
                c.subsys.remove_controller(c.cntlid);
            }
            (Role::Io(qid), Some(c)) => {
                debug!(peer = %self.peer, cntlid = c.cntlid, qid, "I/O queue closed: {reason}");
                c.remove_io_queue(*qid);
                // Aborts that reached this queue too late: nothing was aborted.
                if let Some(rx) = self.abort_rx.as_mut() {
                    rx.close();
                    while let Ok(req) = rx.try_recv() {
                        c.signal_admin(AdminSignal::AbortDone {
                            cid: req.abort_cid,
                            aborted: false,
                        });
                    }
                }
            }
            _ => debug!(peer = %self.peer, "connection closed before Connect: {reason}"),
        }
    }

    /// True while more response bytes wait to be sent than the limit allows.
    fn backlogged(&mut self) -> bool {
        self.conn.pending_send() > self.ctx.limits.max_pending_send_bytes as usize
    }

    /// Timers: ICReq and Connect deadlines, keep-alive expiry, a host that
    /// stopped reading.
    fn on_tick(&mut self, started: Instant, connected: &mut bool) -> Option<String> {
        let written = self.conn.bytes_written();
        let waiting = self.conn.pending_send();
        if waiting == 0 || written != self.send_progress.0 {
            self.send_progress = (written, Instant::now());
        } else {
            let stalled = self.send_progress.1.elapsed().as_millis() as u64;
            let limit = self.ctx.limits.send_stall_timeout_ms;
            if stalled > limit {
                warn!(peer = %self.peer, "the host read no response for {stalled} ms ({waiting} bytes waiting); closing");
                return Some("host stopped reading responses".into());
            }
        }
        let read = self.conn.bytes_read();
        if read != self.recv_progress.0 {
            self.recv_progress = (read, Instant::now());
        }
        let elapsed = started.elapsed().as_millis() as u64;
        if self.auth_pending() {
            let waited = self
                .auth_since
                .map_or(0, |t| t.elapsed().as_millis() as u64);
            let limit = self.ctx.limits.connect_timeout_ms;
            if waited > limit {
                warn!(peer = %self.peer, "authentication failed: not completed within {limit} ms of Connect; closing");
                self.misbehaved = true;
                return Some("authentication not completed in time".into());
            }
        }
        match &self.role {
            Role::New => {
                let limit = if self.digests_known() {
                    self.ctx.limits.connect_timeout_ms
                } else {
                    self.ctx.limits.icreq_timeout_ms
                };
                if elapsed > limit && !*connected {
                    warn!(peer = %self.peer, "no {} within {limit} ms; closing", if self.digests_known() { "Connect" } else { "ICReq" });
                    self.misbehaved = true;
                    return Some("timeout before Connect".into());
                }
                None
            }
            Role::Admin(_) => {
                *connected = true;
                let c = self.ctrl.as_ref()?;
                let kato = u64::from(c.kato_ms.load(Ordering::Relaxed));
                // Grace of half a KATO plus a second: a Keep Alive delayed by TCP
                // retransmission under loss must not end a live association (the
                // netfault suite saw 5 s KATO expire at +10 %); nvmet's timer
                // likewise allows up to about twice KATO.
                let idle = c.idle_ms();
                if kato != 0 && idle > kato + kato / 2 + 1000 {
                    // What the admin connection saw, so that a log tells a host that
                    // sent nothing from one whose bytes did not make a command.
                    let quiet = self.recv_progress.1.elapsed().as_millis();
                    warn!(
                        peer = %self.peer, cntlid = c.cntlid, hostnqn = %c.hostnqn,
                        "keep-alive timeout ({kato} ms) expired: no command for {idle} ms, \
                         nothing received on the admin queue for {quiet} ms \
                         ({} commands outstanding there, {} bytes waiting to be sent); \
                         ending the association",
                        self.conn.outstanding(),
                        self.conn.pending_send()
                    );
                    c.subsys
                        .metrics
                        .keep_alive_expiries
                        .fetch_add(1, Ordering::Relaxed);
                    return Some("keep-alive timeout".into());
                }
                None
            }
            Role::Io(_) => None,
        }
    }

    /// True while the queue must still authenticate.
    fn auth_pending(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| !a.is_authenticated())
    }

    fn digests_known(&self) -> bool {
        self.conn_initialised
    }

    /// Takes the queue's events, stopping early while backlogged.
    /// Returns how many it took.
    fn handle_events(&mut self) -> u32 {
        let every = send_interval(self.prefetch_pending());
        let mut n = 0u32;
        // The commands of one pass arrived together (one read of the socket):
        // they share one arrival time, which saves a clock read per command.
        let mut arrived: Option<Instant> = None;
        while !self.backlogged() {
            let Some(ev) = self.conn.poll_event() else {
                break;
            };
            n += 1;
            if n.is_multiple_of(every) {
                // Let the host start on the first responses while the rest run.
                let _ = self.conn.write_available();
            }
            match ev {
                ControllerEvent::Connected { digests, hpda, .. } => {
                    self.digests = digests;
                    self.conn_initialised = true;
                    debug!(peer = %self.peer, ?digests, hpda, "connection initialised");
                }
                ControllerEvent::Command(cmd) => {
                    self.cmd_start = *arrived.get_or_insert_with(Instant::now);
                    self.on_command(cmd)
                }
                ControllerEvent::Data { cid, data } => {
                    if let Some((sqe, start)) = self.waiting_data.remove(&cid) {
                        self.cmd_start = start;
                        self.execute(sqe, data, 0);
                    } else {
                        self.fused_data(cid, data);
                    }
                }
                ControllerEvent::Aborted { cid } => {
                    if self.waiting_data.remove(&cid).is_none() {
                        self.fused_transport_abort(cid);
                    }
                }
                ControllerEvent::Abandoned { cid } => {
                    if let Role::Admin(a) = &mut self.role {
                        a.aers.retain(|&c| c != cid);
                    }
                    debug!(peer = %self.peer, cid, "the host reused an outstanding AER's CID; AER dropped");
                }
                ControllerEvent::Terminated { reason, fes } => match fes {
                    Some(f) => {
                        self.misbehaved = true;
                        self.count_termreq();
                        warn!(peer = %self.peer, ?f, "protocol error, terminating the connection: {reason}")
                    }
                    None => info!(peer = %self.peer, "connection terminated: {reason}"),
                },
            }
        }
        // Commands keep the association alive (KATO counts in milliseconds):
        // one clock read per pass, not one per command (it was 1.3 % of the
        // target's time at 4 KiB random reads, depth 128).
        if arrived.is_some() {
            if let Some(c) = &self.ctrl {
                c.touch();
            }
        }
        n
    }

    /// Lets the namespaces of the reads and writes taken in but not yet run
    /// start loading what those commands will touch, all before the first
    /// runs: the cache misses of one pass then overlap. At 4 KiB random reads
    /// a memory namespace's page slot missed the cache on nearly every read
    /// (docs/performance.md). Returns how many commands are pending (on an
    /// I/O queue; 0 on others).
    fn prefetch_pending(&self) -> u32 {
        if !matches!(self.role, Role::Io(_)) {
            return 0;
        }
        let ns = &self.ns;
        let mut pending = 0u32;
        self.conn.for_each_pending_command(|sqe| {
            pending += 1;
            if sqe.opcode == io_opcode::READ || sqe.opcode == io_opcode::WRITE {
                if let Some(n) = ns.get(&sqe.nsid) {
                    let bs = u64::from(n.backend.info().block_size);
                    n.backend.prefetch(sqe.slba().wrapping_mul(bs));
                }
            }
        });
        pending
    }

    /// Runs a command capsule; `cmd_start` holds when it was taken in.
    fn on_command(&mut self, cmd: IncomingCommand) {
        if self.fused_capsule(&cmd) {
            return;
        }
        let sqe = cmd.sqe;
        let h2c = sqe.data_direction() == DataDirection::HostToController;
        if cmd.buffer_len > 0 && h2c {
            // Write data comes by R2T; run the command once it is all here.
            match self.conn.request_data(sqe.cid) {
                Ok(()) => {
                    self.waiting_data.insert(sqe.cid, (sqe, self.cmd_start));
                }
                Err(e) => {
                    warn!(peer = %self.peer, "cannot request data: {e}");
                    self.finish_cmd(
                        &sqe,
                        Outcome::Complete(Cqe::new(sqe.cid, Status::INTERNAL_ERROR)),
                    );
                }
            }
            return;
        }
        let data = if cmd.data.is_empty() {
            Vec::new()
        } else {
            vec![cmd.data]
        };
        self.execute(sqe, data, cmd.buffer_len);
    }

    /// Runs a command whose data (if it sends any) is all here.
    fn execute(&mut self, sqe: Sqe, data: Vec<Bytes>, buffer_len: u32) {
        if self.auth_blocks(&sqe) {
            let st = Status::AUTH_REQUIRED.dnr();
            self.finish_cmd(&sqe, Outcome::Complete(Cqe::new(sqe.cid, st)));
            return;
        }
        let outcome = match &self.role {
            Role::New => self.before_connect(&sqe, &data),
            Role::Admin(_) => self.admin_command(&sqe, &data, buffer_len),
            Role::Io(_) => self.io_command(&sqe, &data, buffer_len),
        };
        self.finish_cmd(&sqe, outcome);
    }

    /// Sends a command's result.
    pub(crate) fn finish_cmd(&mut self, sqe: &Sqe, outcome: Outcome) {
        match outcome {
            Outcome::Complete(cqe) => {
                self.note_error(sqe, &cqe);
                self.count(sqe, &cqe);
                self.conn.complete(cqe);
            }
            Outcome::Read(data, cqe) => {
                self.count(sqe, &cqe);
                let plain = cqe.status.is_success() && cqe.dw0 == 0 && cqe.dw1 == 0;
                match self.conn.send_data_parts(sqe.cid, data.parts(), plain) {
                    Ok(true) => {}
                    Ok(false) => self.conn.complete(cqe),
                    Err(e) => {
                        warn!(peer = %self.peer, "sending data: {e}");
                        self.conn
                            .complete(Cqe::new(sqe.cid, Status::INTERNAL_ERROR));
                    }
                }
            }
            Outcome::Async | Outcome::Held => {}
        }
    }

    /// Counts a completed command in this queue's counters (crate::metrics):
    /// only the queue's own task writes them, so this takes no lock.
    fn count(&mut self, sqe: &Sqe, cqe: &Cqe) {
        let Some(c) = &self.ctrl else { return };
        let (qid, io) = match self.role {
            Role::Io(q) => (q, true),
            _ => (0, false),
        };
        // Fabrics commands carry FCTYPE where the NSID would be.
        let ns = if io && sqe.opcode != admin_opcode::FABRICS {
            self.ns.get(&sqe.nsid)
        } else {
            None
        };
        let kind = match sqe.opcode {
            io_opcode::READ if io => Kind::Read,
            io_opcode::WRITE if io => Kind::Write,
            _ => Kind::Other,
        };
        let ok = cqe.status.is_success();
        let bytes = match (ns, kind, ok) {
            (Some(n), Kind::Read | Kind::Write, true) => {
                u64::from(sqe.nlb()) * u64::from(n.backend.info().block_size)
            }
            _ => 0,
        };
        let nsid = ns.map_or(0, |n| n.nsid);
        let sct = (!ok).then_some(cqe.status.sct);
        self.counters.push(
            &c.subsys,
            (c.cntlid, qid, nsid),
            &c.hostnqn,
            kind,
            bytes,
            sct,
            self.cmd_start,
        );
    }

    fn note_error(&self, sqe: &Sqe, cqe: &Cqe) {
        if cqe.status.is_success() {
            return;
        }
        if let Some(c) = &self.ctrl {
            let sqid = match self.role {
                Role::Io(q) => q,
                _ => 0,
            };
            c.log_error(ErrorLogEntry {
                error_count: 0,
                sqid,
                cid: sqe.cid,
                status: cqe.status.to_field(),
                param_error_location: 0xffff,
                lba: if sqid != 0 { sqe.slba() } else { 0 },
                nsid: sqe.nsid,
            });
        }
    }

    /// Submits the queued file I/O and answers the commands it finished.
    fn pump_ring(&mut self) {
        let Some(r) = self.uring.ready_mut() else {
            return;
        };
        let mut done = std::mem::take(&mut self.ring_done);
        r.pump(&mut done);
        for d in done.drain(..) {
            self.on_done(d);
        }
        self.ring_done = done;
    }

    fn on_done(&mut self, d: Done) {
        self.pool_queued.remove(&d.cid);
        self.cmd_start = d.start;
        let outcome = match d.result {
            Ok(Some(data)) => Outcome::Read(data, Cqe::new(d.cid, Status::SUCCESS)),
            Ok(None) => Outcome::Complete(Cqe::new(d.cid, Status::SUCCESS)),
            Err(st) => Outcome::Complete(Cqe::new(d.cid, st)),
        };
        self.finish_cmd(&d.sqe, outcome);
    }

    fn on_admin_signal(&mut self, sig: AdminSignal) {
        let dw0 = match sig {
            AdminSignal::Aen(dw0) => dw0,
            AdminSignal::AbortDone { cid, aborted } => return self.abort_done(cid, aborted),
        };
        if let Role::Admin(a) = &mut self.role {
            if let Some(cid) = a.aers.pop() {
                let mut cqe = Cqe::new(cid, Status::SUCCESS);
                cqe.dw0 = dw0;
                self.conn.complete(cqe);
            } else {
                a.pending_aens.push(dw0);
            }
        }
    }

    /// Counts a C2HTermReq this queue sent (crate::metrics).
    fn count_termreq(&self) {
        let m = &self.ctx.registry.metrics;
        m.termreqs_sent.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &self.ctrl {
            c.subsys
                .metrics
                .termreqs_sent
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Before Connect, only Connect is allowed (NVMe-oF 1.1 §3.3).
    fn before_connect(&mut self, sqe: &Sqe, data: &[Bytes]) -> Outcome {
        if sqe.opcode != admin_opcode::FABRICS || sqe.fctype() != fctype::CONNECT {
            return Outcome::Complete(Cqe::new(sqe.cid, Status::COMMAND_SEQUENCE_ERROR.dnr()));
        }
        let cqe = self.connect(sqe, data);
        self.count_connect(data, cqe.status.is_success());
        Outcome::Complete(cqe)
    }

    /// Counts a Connect, accepted or not, in its subsystem's counters (or the
    /// target's, when it names no subsystem served here).
    fn count_connect(&self, data: &[Bytes], accepted: bool) {
        let reg = &self.ctx.registry;
        let subsys = match &self.ctrl {
            Some(c) if accepted => Some(c.subsys.clone()),
            _ => {
                let raw: Vec<u8> = data.iter().flat_map(|b| b.iter().copied()).collect();
                ConnectData::decode(&raw).and_then(|cd| {
                    if cd.subnqn == DISCOVERY_NQN {
                        Some(reg.discovery.clone())
                    } else {
                        reg.subsystem(&cd.subnqn)
                    }
                })
            }
        };
        match subsys {
            Some(s) if accepted => s.metrics.connects_accepted.fetch_add(1, Ordering::Relaxed),
            Some(s) => s.metrics.connects_rejected.fetch_add(1, Ordering::Relaxed),
            None => reg
                .metrics
                .connects_unknown_subsystem
                .fetch_add(1, Ordering::Relaxed),
        };
    }

    fn connect(&mut self, sqe: &Sqe, data: &[Bytes]) -> Cqe {
        let cid = sqe.cid;
        let invalid = |ipo: u16, in_data: bool| {
            let mut c = Cqe::new(cid, Status::CONNECT_INVALID_PARAMETERS.dnr());
            c.dw0 = connect_invalid_param_dw0(ipo, in_data);
            c
        };
        let cmd = ConnectCommand::from_sqe(sqe);
        let raw: Vec<u8> = data.iter().flat_map(|b| b.iter().copied()).collect();
        let Some(cd) = ConnectData::decode(&raw) else {
            return Cqe::new(cid, Status::DATA_SGL_LENGTH_INVALID.dnr());
        };
        if cmd.recfmt != 0 {
            return Cqe::new(cid, Status::CONNECT_INCOMPATIBLE_FORMAT.dnr());
        }
        // An empty Host NQN is accepted, as nvmet and SPDK's target accept it:
        // SPDK's initiator sends one unless its transport ID names a host NQN.
        // Such a host can only reach subsystems that allow any host.
        if !cd.hostnqn.is_empty() && nvmf_proto::fabrics::validate_nqn(&cd.hostnqn).is_err() {
            return invalid(ConnectData::HOSTNQN_OFFSET, true);
        }
        let limits = &self.ctx.limits;
        let sq_size = u32::from(cmd.sqsize) + 1;
        let is_disc = cd.subnqn == DISCOVERY_NQN;
        let subsys = if is_disc {
            Some(self.ctx.registry.discovery.clone())
        } else {
            self.ctx.registry.subsystem(&cd.subnqn)
        };
        let Some(subsys) = subsys else {
            warn!(peer = %self.peer, subnqn = %cd.subnqn, hostnqn = %cd.hostnqn, "Connect to an unknown subsystem");
            return invalid(ConnectData::SUBNQN_OFFSET, true);
        };
        if !subsys.host_allowed(&cd.hostnqn) {
            warn!(peer = %self.peer, subnqn = %cd.subnqn, hostnqn = %cd.hostnqn, "host not allowed");
            return Cqe::new(cid, Status::CONNECT_INVALID_HOST.dnr());
        }
        let sqfc = !cmd.sq_flow_control_disabled();
        if cmd.qid == 0 {
            // Admin queue: 32 entries at most is what ASQSZ advertises, but hosts may ask for fewer.
            if cmd.sqsize == 0 || sq_size > 32.max(u32::from(limits.max_queue_depth)) {
                return invalid(44, false);
            }
            if cd.cntlid != CNTLID_DYNAMIC {
                return invalid(ConnectData::CNTLID_OFFSET, true);
            }
            let Some(ctrl) =
                subsys.add_controller(&cd.hostnqn, cd.hostid, if is_disc { 0 } else { cmd.kato })
            else {
                return Cqe::new(cid, Status::CONNECT_CONTROLLER_BUSY);
            };
            if is_disc {
                // Discovery controllers keep the KATO the host asks for (persistent discovery), default none.
                ctrl.kato_ms.store(cmd.kato, Ordering::Relaxed);
                self.ctx.registry.add_discovery_ctrl(&ctrl);
            }
            ctrl.touch();
            // The controller's ANA states are those of the port it came through.
            if let Some(local) = self.conn.local_addr() {
                ctrl.ana
                    .set_port(crate::ana::port_of(&self.ctx.ports, local));
            }
            self.conn.set_connected(0, sq_size as u16, sqfc, 8192);
            self.role = Role::Admin(AdminState {
                cc: Cc::default(),
                csts: Csts::default(),
                discovery: is_disc,
                aers: Vec::new(),
                pending_aens: Vec::new(),
                aborts: 0,
            });
            info!(
                peer = %self.peer, subnqn = %subsys.nqn, hostnqn = %cd.hostnqn, cntlid = ctrl.cntlid,
                kato_ms = cmd.kato, sqsize = sq_size, digests = ?self.digests, sq_flow_control = sqfc,
                "association created (admin queue)"
            );
            let mut c = Cqe::new(cid, Status::SUCCESS);
            self.auth = if is_disc {
                None
            } else {
                crate::auth::queue_auth(subsys.host(&cd.hostnqn).as_ref(), &subsys.nqn, 0)
            };
            c.dw0 = connect_response_dw0(ctrl.cntlid, self.auth.is_some());
            self.auth_since = self.auth.as_ref().map(|_| Instant::now());
            self.ctrl = Some(ctrl);
            self.refresh_ns();
            return c;
        }
        // I/O queue.
        if is_disc {
            return invalid(42, false);
        }
        let Some(ctrl) = subsys.controller(cd.cntlid) else {
            warn!(peer = %self.peer, cntlid = cd.cntlid, "I/O queue Connect for an unknown controller");
            return invalid(ConnectData::CNTLID_OFFSET, true);
        };
        if ctrl.hostnqn != cd.hostnqn {
            return invalid(ConnectData::HOSTNQN_OFFSET, true);
        }
        if ctrl.hostid != cd.hostid {
            return invalid(ConnectData::HOSTID_OFFSET, true);
        }
        if !ctrl.ready.load(Ordering::Acquire) {
            return Cqe::new(cid, Status::COMMAND_SEQUENCE_ERROR.dnr());
        }
        let granted = ctrl.granted_io_queues.load(Ordering::Acquire).max(1);
        if u32::from(cmd.qid) > granted || u32::from(cmd.qid) > u32::from(limits.max_io_queues) {
            return invalid(42, false);
        }
        if cmd.sqsize == 0 || sq_size > u32::from(limits.max_queue_depth) {
            return invalid(44, false);
        }
        if !ctrl.add_io_queue(cmd.qid) {
            return invalid(42, false);
        }
        self.conn.set_connected(
            cmd.qid,
            sq_size as u16,
            sqfc,
            limits.in_capsule_data(C::KIND),
        );
        self.role = Role::Io(cmd.qid);
        let (abort_tx, abort_rx) = mpsc::unbounded_channel();
        ctrl.set_abort_sender(cmd.qid, abort_tx);
        self.abort_rx = Some(abort_rx);
        info!(
            peer = %self.peer, subnqn = %subsys.nqn, cntlid = ctrl.cntlid, qid = cmd.qid, sqsize = sq_size,
            digests = ?self.digests, sq_flow_control = sqfc, "I/O queue connected"
        );
        let mut c = Cqe::new(cid, Status::SUCCESS);
        // Every I/O queue authenticates too, as Linux's host and nvmet do.
        self.auth =
            crate::auth::queue_auth(subsys.host(&cd.hostnqn).as_ref(), &subsys.nqn, cmd.qid);
        c.dw0 = connect_response_dw0(ctrl.cntlid, self.auth.is_some());
        self.auth_since = self.auth.as_ref().map(|_| Instant::now());
        ctrl.touch();
        self.ctrl = Some(ctrl);
        self.refresh_ns();
        c
    }

    /// Picks up a new namespace snapshot after a reload.
    pub(crate) fn refresh_ns(&mut self) {
        if let Some(c) = &self.ctrl {
            let g = c.subsys.ns_generation();
            if g != self.ns_gen {
                self.ns = c.subsys.namespaces();
                self.ns_gen = g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_writes_every_16_commands_or_twice_when_larger() {
        assert_eq!(send_interval(0), SEND_EVERY);
        assert_eq!(send_interval(1), SEND_EVERY);
        assert_eq!(send_interval(32), 16);
        assert_eq!(send_interval(33), 16);
        assert_eq!(send_interval(64), 32);
        assert_eq!(send_interval(128), 64);
        assert_eq!(send_interval(u32::MAX), u32::MAX / 2);
    }

    #[test]
    fn polling_follows_the_size_of_the_last_pass() {
        let us = Duration::from_micros;
        let adaptive = PollPolicy {
            budget: us(50),
            batch: 2,
        };
        assert_eq!(adaptive.initial(), us(50));
        assert_eq!(adaptive.after_pass(1, false), Some(us(50)));
        assert_eq!(adaptive.after_pass(2, false), Some(us(50)));
        assert_eq!(adaptive.after_pass(3, false), Some(Duration::ZERO));
        assert_eq!(
            adaptive.after_pass(1, true),
            Some(Duration::ZERO),
            "a small pass whose PDUs were already waiting: the host streams"
        );
        assert_eq!(
            adaptive.after_pass(0, false),
            None,
            "an empty pass keeps the choice"
        );
        let always = PollPolicy {
            budget: us(50),
            batch: 0,
        };
        assert_eq!(always.after_pass(500, false), None);
        assert_eq!(always.after_pass(1, true), None);
        assert_eq!(always.initial(), us(50));
        let never = PollPolicy {
            budget: Duration::ZERO,
            batch: 2,
        };
        assert_eq!(never.initial(), Duration::ZERO);
        assert_eq!(never.after_pass(1, false), None);
    }
}
