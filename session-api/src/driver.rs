//! The driver: one tokio task that owns the replication engine ([`Node`]) and the transport.
//!
//! It waits on three things at once: the transport's next event, the next batch of requests
//! from handles (a bounded channel), and the engine's next timer. After every input it drains
//! the engine's outputs: messages go to [`Transport::offer`] (a refusal is counted, and the
//! refused messages the engine wants back go to it after the drain, see
//! [`Message::resent_when_refused`]), outcomes complete the waiting request, events feed the
//! metrics, the hook and the subscribers. The staged-write overlay is in [`overlay`], the
//! requests handles send and the replies they get in [`request`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use replication_core::placement::Placement;
use replication_core::transport::{Transport, TransportEvent};
use replication_core::{
    Ack, Command, Epoch, Event, Input, Message, Node, NodeId, Outcome, Output, RequestId, Role, Version,
};
use tokio::sync::{broadcast, mpsc};

use crate::config::SessionSettings;
use crate::error::Error;
use crate::metrics::export::Export;
use crate::metrics::{Metrics, MetricsHook, NodeEvent, Peers};

mod acks;
mod free;
mod overlay;
mod reconfigure;
mod request;

pub use overlay::SyncReport;
use overlay::{FlushOf, Lanes, SyncWaiter};
pub(crate) use request::{Reply, Request, Responder, expect_outcome};
use request::{reply, request_reply};

#[derive(Debug)]
enum Kind {
    Plain,
    Write {
        session: String,
        started: Instant,
        sync: bool,
    },
    Create {
        id: String,
        started: Instant,
        sync: bool,
    },
    /// `claim`: when the read started, set when the engine could not answer it at once (the
    /// session is fetched from another node).
    Get {
        session: String,
        claim: Option<Instant>,
    },
    Flush {
        session: String,
        commits: u64,
        waiter: Option<u64>,
    },
    Leave,
}

#[derive(Debug)]
struct Pending {
    reply: Option<Responder>,
    kind: Kind,
}

/// Everything the driver task needs to start.
pub(crate) struct DriverParts {
    pub node: Node,
    pub transport: Arc<dyn Transport<Message>>,
    pub requests: mpsc::Receiver<Request>,
    pub events: broadcast::Sender<NodeEvent>,
    pub settings: SessionSettings,
    pub placement: Placement,
    pub export: Export,
    pub metrics_interval: Duration,
    /// The effective settings of every manager the node hosts (write frequency per manager).
    pub managers: Arc<crate::managers::ManagerTable>,
}

pub(crate) struct Driver {
    node: Node,
    transport: Arc<dyn Transport<Message>>,
    requests: mpsc::Receiver<Request>,
    events: broadcast::Sender<NodeEvent>,
    hook: Option<MetricsHook>,
    settings: SessionSettings,
    placement: Placement,
    pending: HashMap<RequestId, Pending>,
    waiters: HashMap<u64, SyncWaiter>,
    next_id: RequestId,
    metrics: Metrics,
    /// The `metrics` facade handles; counters and gauges are published at least every
    /// `metrics_interval` (next at `next_publish`) and with every snapshot.
    export: Export,
    metrics_interval: Duration,
    next_publish: Instant,
    connected: BTreeSet<NodeId>,
    /// Staged writes and their flush schedule, per session manager.
    lanes: Lanes,
    /// Staged mode: logical version = engine version + offset (a flush of k commits advances
    /// the engine by one version and the logical version by k).
    offsets: HashMap<String, u64>,
    leaving: bool,
    /// Every handle is gone.
    requests_done: bool,
    shutdown_reply: Vec<Responder>,
    left: Option<Outcome>,
    aborted: bool,
    /// The rest of a received batch ([`TransportEvent::Messages`]), fed to the engine
    /// `settings.batch` messages at a time with a yield in between, so that the transport's
    /// writers drain what the engine answers (a whole frame at once could overflow their
    /// queues). No further transport event is taken until it is empty (per-peer order).
    inbox: Option<(NodeId, std::vec::IntoIter<Message>)>,
    /// The time of this turn of the loop ([`Driver::now`]): read when first needed after the
    /// driver woke, cleared before it waits again.
    now: Option<Instant>,
    /// The acks of the drain under way, gathered per peer ([`acks`]).
    acks: acks::AckBatch,
}

impl Driver {
    pub(crate) fn new(parts: DriverParts) -> Self {
        let metrics = Metrics { node: Some(parts.node.id().clone()), ..Metrics::default() };
        Driver {
            hook: parts.settings.metrics_hook.clone(),
            node: parts.node,
            transport: parts.transport,
            requests: parts.requests,
            events: parts.events,
            settings: parts.settings,
            placement: parts.placement,
            pending: HashMap::new(),
            waiters: HashMap::new(),
            next_id: 1,
            metrics,
            export: parts.export,
            metrics_interval: parts.metrics_interval,
            next_publish: Instant::now(),
            connected: BTreeSet::new(),
            lanes: Lanes::new(&parts.managers, tokio::time::Instant::now()),
            offsets: HashMap::new(),
            leaving: false,
            requests_done: false,
            shutdown_reply: Vec::new(),
            left: None,
            aborted: false,
            inbox: None,
            now: None,
            acks: acks::AckBatch::default(),
        }
    }

    /// Runs until the node has left the domain (shutdown requested, or every handle dropped).
    pub(crate) async fn run(mut self) {
        // The engine wants its first timeout at once (heartbeats).
        self.handle_timeout();
        let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
        // One timer for the engine's deadline, re-armed only when the deadline comes earlier
        // or the armed one fired (a new timer per loop costs a timer-wheel registration and
        // removal under the runtime's timer lock). Waking before a later deadline is harmless:
        // `handle_timeout` does only what is due.
        let core_timer = tokio::time::sleep_until(far());
        tokio::pin!(core_timer);
        let mut armed: Option<tokio::time::Instant> = None;
        // The transport's events are polled (`Transport::poll_recv`): no future, and no
        // allocation, per event or per wake-up.
        let transport = self.transport.clone();
        loop {
            if self.node.has_left() || self.aborted {
                break;
            }
            let core_deadline =
                self.node.poll_timeout().map(tokio::time::Instant::from_std).unwrap_or_else(far);
            if armed.is_none_or(|a| core_deadline < a || core_timer.is_elapsed()) {
                core_timer.as_mut().reset(core_deadline);
                armed = Some(core_deadline);
            }
            let next_flush = self.lanes.next_due();
            let requests_open = !self.requests_done;
            let inbox = self.inbox.is_some();
            self.now = None;
            tokio::select! {
                () = std::future::ready(()), if inbox => {
                    self.feed_inbox();
                    if self.inbox.is_some() {
                        tokio::task::yield_now().await;
                        self.now = None;
                    }
                }
                ev = std::future::poll_fn(|cx| transport.poll_recv(cx)), if !inbox => match ev {
                    Some(ev) => {
                        self.on_transport(ev);
                        // Take what else already arrived without another trip through select.
                        let mut closed = false;
                        for _ in 1..self.settings.batch {
                            if self.inbox.is_some() {
                                tokio::task::yield_now().await;
                                self.now = None;
                                break;
                            }
                            match ready_now(&*transport) {
                                Poll::Ready(Some(ev)) => self.on_transport(ev),
                                Poll::Ready(None) => {
                                    closed = true;
                                    break;
                                }
                                Poll::Pending => break,
                            }
                        }
                        if closed {
                            break;
                        }
                    }
                    None => break,
                },
                req = self.requests.recv(), if requests_open => match req {
                    Some(req) => {
                        self.on_request(req);
                        for _ in 1..self.settings.batch {
                            if self.aborted {
                                break;
                            }
                            match self.requests.try_recv() {
                                Ok(req) => self.on_request(req),
                                Err(_) => break,
                            }
                        }
                    }
                    // Every handle is gone: leave gracefully.
                    None => {
                        self.requests_done = true;
                        self.start_leave(None);
                    }
                },
                () = &mut core_timer => {
                    armed = None;
                    self.handle_timeout();
                }
                // The timer is made only when a flush is due (no clock reading, no timer
                // handle per turn otherwise).
                () = async {
                    if let Some(due) = next_flush {
                        tokio::time::sleep_until(due).await;
                    }
                }, if next_flush.is_some() => {
                    self.flush(FlushOf::Due(tokio::time::Instant::now()), None);
                }
            }
        }
        // Answer whoever still waits, then close the links.
        for (_, p) in self.pending.drain() {
            if let Some(r) = p.reply {
                r.send(Reply::Outcome(Outcome::ShuttingDown));
            }
        }
        for (_, w) in self.waiters.drain() {
            w.reply.send(Reply::Synced(w.report));
        }
        self.transport.shutdown().await;
        self.requests.close();
        while let Ok(req) = self.requests.try_recv() {
            request_reply(req).send(Reply::Failed(Error::ShuttingDown));
        }
        let left = self.left.take().unwrap_or(Outcome::ShuttingDown);
        for r in self.shutdown_reply.drain(..) {
            r.send(Reply::Outcome(left.clone()));
        }
        let records = self.node.held();
        free::drop_apart(self.node, records);
    }

    /// The time of this turn of the loop: one clock reading for everything the driver does
    /// between two waits (the engine's inputs, the start and end of the writes it times).
    fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }

    fn handle_timeout(&mut self) {
        let now = self.now();
        self.node.handle_timeout(now);
        self.drain();
        if now >= self.next_publish {
            self.snapshot();
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        self.node.handle_input(now, input);
        self.drain();
    }

    fn command(&mut self, cmd: Command, reply: Option<Responder>, kind: Kind) {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, Pending { reply, kind });
        self.input(Input::Command { id, cmd });
    }

    fn on_transport(&mut self, ev: TransportEvent<Message>) {
        match ev {
            TransportEvent::Message { from, msg } => {
                self.metrics.messages_received += 1;
                self.input(Input::Message { from, msg });
            }
            TransportEvent::Messages { from, msgs } => {
                self.metrics.messages_received += msgs.len() as u64;
                self.inbox = Some((from, msgs.into_iter()));
                self.feed_inbox();
            }
            TransportEvent::Connected(n) => {
                self.connected.insert(n.clone());
                self.emit(NodeEvent::Connected(n));
            }
            TransportEvent::Disconnected(n) => {
                self.connected.remove(&n);
                self.emit(NodeEvent::Disconnected(n));
            }
            TransportEvent::Gone(n) => {
                self.connected.remove(&n);
                // Counted and reported when it failed the peer (not after a graceful leave,
                // whose links close too).
                let live = self.node.is_live(&n);
                self.input(Input::PeerGone { peer: n.clone() });
                if live && !self.node.is_live(&n) {
                    self.metrics.peers_gone += 1;
                    self.emit(NodeEvent::Gone(n));
                }
            }
            TransportEvent::Refused { peer, reason } => {
                self.metrics.refused(peer.clone(), reason.clone());
                self.emit(NodeEvent::Refused { peer, reason });
            }
            _ => {}
        }
    }

    /// Feeds up to `settings.batch` messages of the received batch to the engine (one clock
    /// reading), draining the outputs after each.
    fn feed_inbox(&mut self) {
        let Some((from, mut msgs)) = self.inbox.take() else { return };
        let now = self.now();
        for msg in msgs.by_ref().take(self.settings.batch) {
            self.node.handle_input(now, Input::Message { from: from.clone(), msg });
            self.drain_gathering_acks(true);
        }
        // The acks of the whole batch, one message per peer.
        self.drain();
        if msgs.len() > 0 {
            self.inbox = Some((from, msgs));
        }
    }

    fn emit(&self, ev: NodeEvent) {
        if let Some(hook) = &self.hook {
            // A panicking hook must not take the node down with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&ev)));
        }
        // No subscriber is fine; a lagging one loses the oldest events (bounded).
        let _ = self.events.send(ev);
    }

    /// Drains the engine's outputs. A refused message the engine wants back
    /// ([`Message::resent_when_refused`], which states the contract) goes to it as
    /// [`Input::Undelivered`] after the drain. Feeding it produces no sends by itself; the
    /// rounds are bounded anyway.
    fn drain(&mut self) {
        self.drain_gathering_acks(false);
    }

    /// [`Driver::drain`]; with `keep`, the acks the engine made stay gathered for a drain
    /// without it (a batch of received messages is answered with one [`Message::Acks`] per
    /// peer, see [`acks`]).
    fn drain_gathering_acks(&mut self, keep: bool) {
        for _ in 0..4 {
            let mut undelivered = Vec::new();
            while let Some(out) = self.node.poll_output() {
                match out {
                    Output::Send { to, msg } => {
                        let Some(msg) = self.acks.gather(&to, msg) else { continue };
                        if let Some(acks) = self.acks.take(&to, &msg) {
                            self.offer(to.clone(), acks, &mut undelivered);
                        }
                        self.offer(to, msg, &mut undelivered);
                    }
                    Output::Outcome { id, outcome } => self.on_outcome(id, outcome),
                    Output::Event(ev) => self.on_event(ev),
                }
            }
            if !keep {
                let mut acks = std::mem::take(&mut self.acks);
                for (to, msg) in acks.drain() {
                    self.offer(to, msg, &mut undelivered);
                }
                self.acks = acks;
            }
            if undelivered.is_empty() {
                return;
            }
            let now = self.now();
            for (to, msg) in undelivered {
                self.node.handle_input(now, Input::Undelivered { to, msg });
            }
        }
        // Whatever the last round produced (nothing, by the engine's contract).
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Send { to, msg } => match self.transport.try_send(&to, msg) {
                    Ok(()) => self.metrics.messages_sent += 1,
                    Err(replication_core::Error::QueueFull { .. }) => self.metrics.send_queue_full += 1,
                    Err(_) => self.metrics.send_errors += 1,
                },
                Output::Outcome { id, outcome } => self.on_outcome(id, outcome),
                Output::Event(ev) => self.on_event(ev),
            }
        }
    }

    /// Offers `msg` to the transport; a refused message the engine wants back joins
    /// `undelivered`.
    fn offer(&mut self, to: NodeId, msg: Message, undelivered: &mut Vec<(NodeId, Message)>) {
        match self.transport.offer(&to, msg) {
            Ok(()) => self.metrics.messages_sent += 1,
            Err((e, msg)) => {
                if matches!(e, replication_core::Error::QueueFull { .. }) {
                    self.metrics.send_queue_full += 1;
                } else {
                    self.metrics.send_errors += 1;
                }
                if msg.resent_when_refused() {
                    undelivered.push((to, msg));
                }
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match &ev {
            Event::OwnershipLost { session, .. } | Event::SessionExpired { session } => {
                self.drop_overlay(session)
            }
            Event::SessionInvalidated { session } => self.forget_staged(session),
            _ => {}
        }
        self.emit(NodeEvent::Core(ev));
    }

    /// What the outcome of a write of `session` sent now with `ack` completes (the latency
    /// of writes that wait for backups is recorded).
    fn write_kind(&mut self, session: String, ack: Ack) -> Kind {
        Kind::Write { session, started: self.now(), sync: matches!(ack, Ack::Sync { .. }) }
    }

    /// Records the latency of a sync write the backups acknowledged.
    fn record_sync_write(&mut self, sync: bool, started: Instant, outcome: &Outcome) {
        if sync && matches!(outcome, Outcome::Replicated { .. }) {
            let latency = self.now().saturating_duration_since(started);
            self.metrics.sync_write_latency.record(latency);
            self.export.sync_write.record(latency);
        }
    }

    fn on_outcome(&mut self, id: RequestId, outcome: Outcome) {
        let Some(p) = self.pending.remove(&id) else { return };
        match &outcome {
            Outcome::Replicated { .. } => {}
            Outcome::Indeterminate { .. } | Outcome::Unreplicated { .. } => self.metrics.unacked_writes += 1,
            Outcome::Conflict { .. } => self.metrics.conflicts += 1,
            _ => {}
        }
        match p.kind {
            Kind::Plain => reply(p.reply, Reply::Outcome(outcome)),
            Kind::Write { session, started, sync } => {
                self.record_sync_write(sync, started, &outcome);
                let attrs = written_at(&outcome).and_then(|(epoch, version)| {
                    self.node.owned_attributes(&session, epoch, version).cloned()
                });
                reply(p.reply, Reply::Written { outcome, attrs });
            }
            Kind::Create { id, started, sync } => {
                self.record_sync_write(sync, started, &outcome);
                reply(p.reply, Reply::Created { id, outcome });
            }
            Kind::Get { session, claim } => {
                let outcome = match outcome {
                    Outcome::Found { epoch, version, attrs } => {
                        if let Some(started) = claim {
                            let waited = self.now().saturating_duration_since(started);
                            self.export.claim.record(waited);
                        }
                        let (version, attrs) = self.apply_overlay(&session, version, attrs);
                        Outcome::Found { epoch, version, attrs }
                    }
                    other => other,
                };
                reply(p.reply, Reply::Outcome(outcome));
            }
            Kind::Flush { session, commits, waiter } => {
                self.flushed(session, commits, waiter, written_at(&outcome).is_some());
            }
            // Answered once the transport is shut down too.
            Kind::Leave => self.left = Some(outcome),
        }
    }

    fn on_request(&mut self, req: Request) {
        self.metrics.requests += 1;
        if let Request::Shutdown { reply } = req {
            return self.start_leave(Some(reply));
        }
        if let Request::Abort { reply } = req {
            self.aborted = true;
            return self.shutdown_reply.push(reply);
        }
        if self.leaving {
            let r = request_reply(req);
            r.send(Reply::Outcome(Outcome::ShuttingDown));
            return;
        }
        match req {
            Request::Core { cmd, reply } => {
                let kind = match &cmd {
                    Command::Invalidate { session, .. } => {
                        self.forget_staged(session);
                        Kind::Plain
                    }
                    Command::Update { session, ack, .. } => self.write_kind(session.clone(), *ack),
                    _ => Kind::Plain,
                };
                self.command(cmd, Some(reply), kind);
            }
            Request::Create { id, manager, attrs, max_inactive, ack, reply } => {
                let id = match id {
                    Some(id) => id,
                    None => {
                        let me = self.node.id().clone();
                        let node = &self.node;
                        match crate::id::generate(&self.placement, &me, |n| node.is_live(n)) {
                            Ok(id) => replication_core::scope::key(manager.as_deref(), &id),
                            Err(e) => return reply.send(Reply::Failed(e)),
                        }
                    }
                };
                let cmd = Command::Create { session: id.clone(), attrs, max_inactive, ack };
                let kind = Kind::Create { id, started: self.now(), sync: matches!(ack, Ack::Sync { .. }) };
                self.command(cmd, Some(reply), kind);
            }
            Request::Get { session, reply } => {
                let (id, started) = (self.next_id, self.now());
                let kind = Kind::Get { session: session.clone(), claim: None };
                self.command(Command::Get { session }, Some(reply), kind);
                // Still waiting: the engine asked other nodes for the session (a claim).
                if let Some(Pending { kind: Kind::Get { claim, .. }, .. }) = self.pending.get_mut(&id) {
                    *claim = Some(started);
                }
            }
            Request::Write { session, expected, changes, ack, reply } => {
                if self.staged(&session) {
                    self.stage(session, expected, changes, reply);
                } else {
                    let kind = self.write_kind(session.clone(), ack);
                    let cmd = Command::Update { session, expected_version: expected, changes, ack };
                    self.command(cmd, Some(reply), kind);
                }
            }
            Request::Sync { manager, reply } => self.flush(FlushOf::Manager(manager.as_deref()), Some(reply)),
            Request::Inspect { session, reply } => {
                let view = self.node.session(&session).map(|mut v| {
                    if v.role == Role::Owner {
                        let (version, attrs) = self.apply_overlay(&session, v.version, v.attrs.clone());
                        v.version = version;
                        v.attrs = attrs;
                    }
                    Box::new(v)
                });
                reply.send(Reply::View(view));
            }
            Request::Owned { reply } => {
                reply.send(Reply::Ids(self.node.owned_sessions().map(str::to_owned).collect()));
            }
            Request::Metrics { reply } => {
                reply.send(Reply::Metrics(Box::new(self.snapshot())));
            }
            Request::Peers { reply } => {
                let connected = self.connected.iter().cloned().collect();
                reply.send(Reply::Peers(Peers { peers: self.node.peers(), connected }));
            }
            Request::Reconfigure { config, reply } => self.reconfigure(*config, reply),
            Request::Domain { reply } => reply.send(Reply::Domain(Box::new(self.node.domain()))),
            Request::Shutdown { reply } => self.start_leave(Some(reply)),
            Request::Abort { reply } => self.shutdown_reply.push(reply),
        }
    }

    /// The metrics now, also published to the `metrics` recorder.
    fn snapshot(&mut self) -> Metrics {
        let mut m = self.metrics.clone();
        m.core = self.node.stats();
        m.replication_lag =
            m.core.oldest_unacked.map_or(Duration::ZERO, |t| Instant::now().saturating_duration_since(t));
        m.peers = self.node.peers();
        m.domain = Some(self.node.domain());
        m.connected = self.connected.iter().cloned().collect();
        m.staged_commits = self.lanes.commits();
        m.staged_sessions = self.lanes.sessions();
        m.managers = crate::managers::counts(&self.node);
        self.export.publish(&m);
        self.next_publish = Instant::now() + self.metrics_interval;
        m
    }

    fn start_leave(&mut self, reply: Option<Responder>) {
        if let Some(r) = reply {
            self.shutdown_reply.push(r);
        }
        if self.leaving {
            return;
        }
        // Staged changes go out before the hand-off.
        self.flush(FlushOf::All, None);
        self.leaving = true;
        self.command(Command::Leave, None, Kind::Leave);
    }
}

/// The epoch and version a successful write left (applied, whatever its backups did).
fn written_at(outcome: &Outcome) -> Option<(&Epoch, Version)> {
    match outcome {
        Outcome::Applied { epoch, version }
        | Outcome::Replicated { epoch, version, .. }
        | Outcome::Unreplicated { epoch, version }
        | Outcome::Indeterminate { epoch, version, .. } => Some((epoch, *version)),
        _ => None,
    }
}

/// The transport's next event if one is there now, without a waker (the next poll with one, in
/// the driver's `select!`, registers that one).
fn ready_now(transport: &dyn Transport<Message>) -> Poll<Option<TransportEvent<Message>>> {
    transport.poll_recv(&mut Context::from_waker(std::task::Waker::noop()))
}
