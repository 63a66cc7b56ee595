//! The replication engine of one node, sans-IO.
//!
//! A [`Node`] owns no socket, thread or clock. The runtime feeds it [`Input`]s with the current
//! time and carries out the [`Output`]s it produces:
//!
//! - **Drain rule:** after *every* [`Node::handle_input`] and [`Node::handle_timeout`], call
//!   [`Node::poll_output`] until it returns `None`, sending each [`Output::Send`], delivering
//!   each [`Output::Outcome`] to the command's waiter and handling each [`Output::Event`].
//!   Then ask [`Node::poll_timeout`] when to call [`Node::handle_timeout`] next (it can change
//!   after any input).
//! - Every [`Command`] gets exactly one [`Output::Outcome`] carrying its [`RequestId`], at once
//!   or later (sync writes, fetches, leave).
//! - **Undelivered sends:** a message the transport refuses (its per-peer queue is full) goes
//!   back as [`Input::Undelivered`], fed after the drain that produced it (not from inside the
//!   drain loop). The node re-sends promptly and within bounds: a dropped copy is marked not
//!   sent and a per-peer *resend walk* (a cursor, from the lowest session held back or dropped)
//!   sends it at the next step (a tenth of the tick, at most 5 ms); dropped claims of pending acquires and
//!   small replies (acks, claim answers, fencing; at most 256 messages and 4 MiB per peer) are
//!   re-sent at the next step. Full copies from maintenance (re-replication, retransmission,
//!   the first copies after a failover) go to a peer within a window per step: after a step
//!   with refusals, one and a half times what the peer accepted in it; doubled after a step
//!   that used it all without a refusal; at most [`Settings::scan_batch`]: re-replication goes
//!   at the pace the peer's queue drains instead of overflowing it. At most
//!   [`Settings::scan_batch`] of those copies are unacknowledged by a peer at a time (a count
//!   that no acknowledgement lowers for a retransmit interval starts again from zero), so the
//!   heartbeats sent after them are not held behind a deep backlog. Writes (deltas, a create's
//!   first copy), fetches and a leave are never held back. A runtime that never feeds it is
//!   still correct (losses are repaired by retransmission and the scan), only slower.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use replication_core::{Ack, Command, DomainConfig, Input, Node, NodeId, Outcome, Output, Settings};
//! let cfg = DomainConfig::parse(r#"
//!     [domain]
//!     name = "web"
//!     [[node]]
//!     name = "a"
//!     address = "127.0.0.1:7101"
//!     [[node]]
//!     name = "b"
//!     address = "127.0.0.1:7102"
//! "#, "example").expect("valid");
//! let now = Instant::now();
//! let mut a = Node::new(cfg, NodeId::new("a"), 1, Settings::default(), now).expect("member");
//! a.handle_input(now, Input::Command {
//!     id: 7,
//!     cmd: Command::Create {
//!         session: "s1".into(),
//!         attrs: Default::default(),
//!         max_inactive: Duration::from_secs(1800),
//!         ack: Ack::Sync { backups: 1 },
//!     },
//! });
//! let mut outcome = None;
//! while let Some(out) = a.poll_output() {
//!     match out {
//!         Output::Send { to, msg } => { /* transport.try_send(&to, msg) */ let _ = (to, msg); }
//!         Output::Outcome { id, outcome: o } => { assert_eq!(id, 7); outcome = Some(o); }
//!         Output::Event(_) => {}
//!     }
//! }
//! // "b" has not been heard from yet: no live backup, so the write reports one copy only.
//! assert!(matches!(outcome, Some(Outcome::Unreplicated { version: 1, .. })));
//! let next = a.poll_timeout().expect("heartbeats are due");
//! a.handle_timeout(next);
//! ```
//!
//! The protocol (per session): the owner writes at its epoch `(term, node)` and sends deltas
//! or full copies to the backups placed by [`Placement::backups`]; backups always acknowledge
//! and the owner retransmits full copies until they do. Ownership moves (fetch on get, hot
//! failover, hand-off) with a claim: the acquirer picks a higher epoch, every live peer
//! promises to refuse lower epochs and returns its copy, and the acquirer continues from the
//! highest `(epoch, version)` copy. A stale owner is fenced by the promises.
//!
//! What the runtime can rely on, and what it cannot:
//! - A write reported [`Outcome::Replicated`] with `acks = k` is held by the owner and `k`
//!   backups; it survives the crash of any `k` of them, provided the failure detector does not
//!   wrongly declare *all* surviving holders dead while another node takes the session over
//!   (ownership moves on the failure detector's word, not on a quorum).
//! - An owner answers a read or a write only while it holds the read lease: it and the peers
//!   that heard it within 81% of the failure timeout are a majority (in a domain of two, a peer
//!   it considers up must have heard it). Without it the command ends
//!   [`Outcome::Unavailable`]: a node cut off from the others stops serving before any other
//!   node may take its sessions over (with clock rates within about 10% of each other). An
//!   owner whose lease lapsed steps down from every session (the next read or write claims it
//!   again); a claim takes a session over only with the promise of the owner of the newest
//!   copy, or naming it (`over`). A `Get` of a session whose newest synchronous write no
//!   backup acknowledged yet waits for that acknowledgement (`Unavailable` if it does not
//!   come): a read never shows what a failover can lose.
//! - [`Outcome::Unreplicated`], [`Outcome::Indeterminate`], [`Outcome::Applied`] and
//!   [`Outcome::Fenced`] promise nothing beyond this node.
//! - Promises live in memory: a backup that restarts forgets the epochs it promised. A node
//!   that did not run for about the failure timeout steps down from all its sessions (see
//!   [`Event::OwnershipLost`](crate::Event::OwnershipLost)), which covers a paused stale owner.
//!   A stale owner that was *partitioned* (still running) while another node took over, and
//!   that then reaches a freshly restarted backup before it learns it was replaced, is fenced
//!   by the **restart quarantine**: a new incarnation acknowledges no copy of a session it
//!   holds nothing of (it answers `Fenced` when it already knows a higher epoch, and nothing
//!   otherwise: the owner retransmits) until it has asked every live peer
//!   ([`Message::EpochsRequest`]) for the highest epoch the peer promised or holds of every
//!   session whose ownership moved (term above 1; a session only ever owned by its creator has
//!   no stale owner), and each answered ([`Message::Epochs`], a page of up to 1024 per request,
//!   so the answer never floods a queue: the next page is asked for when one arrives). The
//!   epochs learned become promises, kept as long as a tombstone ([`Settings::tombstone_ttl`])
//!   also without a copy. The quarantine ends when every peer of the domain answered, or once
//!   the failure timeout has passed since the start and every live peer answered. Cost per
//!   start: ⌈moved sessions / 1024⌉ round trips per peer (O(sessions) work at the peer in all),
//!   promise-only records for the moved sessions, and backups that wait one round trip (at most
//!   about the failure timeout) before they acknowledge new copies. It cannot learn an epoch
//!   that only nodes it considers dead know (the failure-detector caveat of the first point).
//! - A node that sees fewer than half of the domain live does not take sessions over (neither
//!   hot failover nor fetch): it may be the one cut off. When it sees enough again, it takes
//!   nothing over until it sees every peer or has seen enough for the failure timeout: the
//!   peers it declared down while it heard nobody may be live and hold the newest copies.
//! - Versions grow by one per write and continue across ownership changes; the state order
//!   is `(epoch, version)`, so after a failover that lost unacknowledged writes a version
//!   number can be reused at the higher epoch.
//! - Per call, maintenance examines at most [`Settings::scan_batch`] sessions (a replan pass:
//!   that many owned ones and up to eight times as many others) and sends full copies within
//!   the re-replication token bucket, the first copies after a failover included; the claims
//!   of a pass go out in batches ([`Message::Claims`], one message per peer and 512
//!   sessions). [`Command::Leave`] is the exception (it looks at every owned session at each
//!   tick until it completes). [`Node::stats`] walks every record of a small store; a large
//!   one's counts come from a census taken in batches (see its docs).
//!
//! Online domain changes: [`Node::reconfigure`] switches a running node to a new domain file
//! (nodes added or removed, `replicas`, timings), refused with the rule broken when the file
//! is invalid or changes what cannot change online ([`crate::change`]). Until every node runs
//! the new file, a node that reloaded takes sessions over only with a majority of the former
//! file's nodes and of the new file's, and claims orphans by both placements; copies move make
//! before break (docs/design.md, "Online domain changes").
//!
//! Where things are (each file owns its state and the `impl Node` methods of its concern;
//! this one holds the [`Node`] made of those sub-states, the sans-IO entry points and the
//! dispatch of inputs, commands and messages; [`Node::poll_timeout`] is the earliest of the
//! sub-states' next deadlines):
//! - `store`: the records per session (copy, promise, owner state, placed backups);
//! - `membership`: the peers up or down, the majority rule, when the view is settled,
//!   failure detection, and a node that wakes from a pause;
//! - `writes`: owner writes (create, update, invalidate, touch), their pending
//!   acknowledgements and deadlines, stepping down;
//! - `replicate`: placing an owned session's backups and sending them what they lack;
//! - `backup`: what a backup does with a copy or a delta, a drop, a hand-off received;
//! - `acquire`: claims this node starts (fetch, failover, resume), batched, answered,
//!   decided; `answer`: claims it answers (promises, deferrals, refusals, releases);
//! - `failover`: which sessions are orphaned and whether this node claims or resumes them;
//! - `maintenance`: the tick (expiry, retransmission, touches, the scan) and the replan pass
//!   after a view change; `pacing`: its token bucket, cursors and interval;
//! - `flow`: flow control per peer (undelivered sends, the resend walk, the window);
//! - `lease`: the read lease (an owner serves reads and writes only while a majority heard it
//!   recently), carried by the heartbeats;
//! - `quarantine`: the restart quarantine; `leave`: the graceful leave;
//! - `managers`: the session managers hosted, and the refusal of records of others;
//! - `reconfigure`: online domain changes (the file run, the fingerprints heard, the former
//!   file kept until the change completes);
//! - `reads`: a read of an owned session waits for the acknowledgement of a synchronous
//!   write that no backup acknowledged yet;
//! - `queries`: read-only queries and statistics; `outbox`: the outputs to drain;
//! - `tests`: the unit tests on a cluster of engines with in-memory delivery.

mod acquire;
mod answer;
mod backup;
mod census;
mod failover;
mod flow;
mod lapse;
mod lease;
mod leave;
mod maintenance;
mod managers;
mod membership;
mod outbox;
mod pacing;
mod quarantine;
mod queries;
mod reads;
mod reconfigure;
mod replicate;
mod store;
#[cfg(test)]
mod tests;
mod writes;

use self::acquire::Acquires;
use self::answer::Deferred;
use self::census::Census;
use self::flow::Flow;
use self::lapse::Lapses;
use self::lease::{Lease, MissedOwners};
use self::leave::Leave;
pub use self::managers::MANAGER_NOT_DECLARED;
use self::managers::Managers;
use self::membership::{Heard, Membership, Peer};
use self::outbox::Outbox;
use self::pacing::Pacing;
use self::quarantine::Quarantine;
use self::reconfigure::DomainState;
use self::store::Sessions;
use self::writes::{WriteKind, Writes};
use crate::api::{Command, Input, Outcome, Output, RequestId, Settings};
use crate::config::{DomainConfig, NodeId};
use crate::error::Error;
use crate::message::{Echo, Message};
use crate::placement::Placement;
use crate::stamp::StampBase;
use std::time::{Duration, Instant};

/// The replication engine of one node. See the [module docs](self) for the drain rule.
#[derive(Debug)]
pub struct Node {
    me: NodeId,
    incarnation: u64,
    placement: Placement,
    settings: Settings,
    heartbeat_interval: Duration,
    request_timeout: Duration,
    tick: Duration,
    can_own: bool,
    /// The domain's `max_session_bytes`: larger sessions are refused ([`Outcome::TooLarge`]).
    max_session_bytes: u64,
    /// The peers and what this node can act on (see [`Membership`]).
    view: Membership,
    /// The read lease's bound and clock base (the per-peer state is in `view`).
    lease: Lease,
    /// Owners that claims found but did not reach: the next claim names them.
    missed_owners: MissedOwners,
    /// The lease gaps: owner states taken before the last are stale (see `lapse`).
    lapses: Lapses,
    /// The counts of the records by kind for the queries of a large store.
    census: Census,
    sessions: Sessions,
    /// Sync writes waiting for acknowledgements.
    writes: Writes,
    /// Claims this node started.
    acquires: Acquires,
    out: Outbox,
    next_heartbeat: Instant,
    next_tick: Instant,
    /// Re-replication pacing, the scan and the replan pass.
    pacing: Pacing,
    /// Where this node is in a graceful leave.
    leave: Leave,
    /// When this node last ran (any input or timeout): a long gap means it was paused.
    last_run: Instant,
    acquisitions: u64,
    failovers: u64,
    fenced: u64,
    /// `Some` until this incarnation has learned from its peers which epochs they know.
    quarantine: Option<Quarantine>,
    /// Claims over an owner this node still hears, answered later rather than refused at
    /// once (`answer_claims`).
    deferred: Deferred,
    /// The base of the instants kept per session (the `now` of [`Node::new`]).
    stamps: StampBase,
    /// Set for a timeout step while failover claims of this node are pending: the paced
    /// first copies of owned sessions wait for the next step without (see
    /// `failovers_pending`).
    hold_first_copies: bool,
    /// The session managers this node hosts, and what it refused of others.
    managers: Managers,
    /// The domain file this node runs, and its peers' (online domain changes).
    domain: DomainState,
}

impl Node {
    /// A node named `me` of the domain `config`, started with `incarnation` (must differ at
    /// every start of the same node, e.g. a start timestamp). Peers are considered down until
    /// heard from.
    pub fn new(
        config: DomainConfig,
        me: NodeId,
        incarnation: u64,
        settings: Settings,
        now: Instant,
    ) -> Result<Node, Error> {
        if config.node(&me).is_none() {
            return Err(Error::UnknownPeer { peer: me.to_string() });
        }
        let placement = Placement::new(&config);
        let max_session_bytes = config.domain.max_session_bytes;
        let request_timeout = config.request_timeout();
        let failure_timeout = config.failure_timeout();
        let can_own = placement.owns_sessions(&me);
        let peers = placement
            .nodes()
            .filter(|n| **n != me)
            .map(|n| (n.clone(), Peer::new(Flow::new(settings.scan_batch.max(1)))))
            .collect();
        let heartbeat_interval = config.heartbeat_interval().max(Duration::from_millis(1));
        let tick = heartbeat_interval.min(settings.retransmit_interval).max(Duration::from_millis(1));
        Ok(Node {
            incarnation,
            placement,
            heartbeat_interval,
            request_timeout,
            tick,
            can_own,
            max_session_bytes,
            view: Membership::new(peers, failure_timeout),
            lease: Lease::new(now, failure_timeout),
            missed_owners: MissedOwners::default(),
            lapses: Lapses::default(),
            census: Census::default(),
            sessions: Sessions::default(),
            writes: Writes::default(),
            acquires: Acquires::default(),
            out: Outbox::default(),
            next_heartbeat: now,
            next_tick: now + tick,
            pacing: Pacing::new(&settings, tick, now),
            leave: Leave::Member,
            last_run: now,
            acquisitions: 0,
            failovers: 0,
            fenced: 0,
            quarantine: Some(Quarantine::new(now + failure_timeout)),
            deferred: Deferred::default(),
            stamps: StampBase::new(now),
            hold_first_copies: false,
            managers: Managers::new(&config, &me),
            domain: DomainState::new(config),
            me,
            settings,
        })
    }

    /// Feeds one input. Drain [`Node::poll_output`] afterwards.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        self.woke(now);
        match input {
            Input::Timeout => self.handle_timeout(now),
            Input::Command { id, cmd } => {
                if !self.leave.is_member() {
                    self.out.outcome(id, Outcome::ShuttingDown);
                } else {
                    self.on_command(now, id, cmd);
                }
            }
            Input::Message { from, msg } => {
                if !self.leave.has_left() {
                    self.on_message(now, from, msg);
                }
            }
            Input::Undelivered { to, msg } => {
                if !self.leave.has_left() {
                    self.on_undelivered(now, &to, msg);
                }
            }
            Input::PeerGone { peer } => {
                if let Some(p) = self.view.peers.get_mut(&peer).filter(|p| p.up) {
                    p.gone = true;
                    // The failure detection of the maintenance, and its replan pass with the
                    // failovers, now rather than at the failure timeout.
                    self.handle_timeout(now);
                }
            }
        }
    }

    /// The next output, `None` when drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.q.pop_front()
    }

    /// When [`Node::handle_timeout`] is due; `None` after the node left.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.leave.has_left() {
            return None;
        }
        let t = self.next_heartbeat.min(self.next_tick);
        let deadlines = [
            self.view.next_deadline(),
            self.pacing.next_deadline(self.flow_pending()),
            self.writes.next_deadline(),
            self.acquires.next_deadline(),
            self.deferred.next_deadline(),
        ];
        Some(deadlines.into_iter().flatten().fold(t, Instant::min))
    }

    /// Runs what is due at `now`: heartbeats, request deadlines, failure detection,
    /// retransmission, re-replication, expiry. Drain [`Node::poll_output`] afterwards.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.leave.has_left() {
            return;
        }
        self.woke(now);
        if now >= self.next_heartbeat {
            let peers: Vec<NodeId> = self.view.peers.keys().cloned().collect();
            for p in &peers {
                self.heartbeat_to(now, p);
            }
            self.domain_heartbeat();
            self.next_heartbeat = now + self.heartbeat_interval;
        }
        while let Some(id) = self.writes.pop_due(now) {
            self.write_timed_out(id);
        }
        while let Some(session) = self.acquires.pop_due(now) {
            self.acquire_timed_out(now, &session);
        }
        if self.deferred.next_deadline().is_some_and(|d| d <= now) {
            self.answer_deferred(now, false);
        }
        // Failovers held back by a refusal are due again when the hold ends: a new replan
        // pass takes them, not the general scan (`scan_batch` records a tick).
        if self.acquires.end_holds(now) {
            self.pacing.start_replan();
        }
        // Failure detection runs at the tick and also exactly when a live peer's silence
        // reaches the failure timeout (not up to a tick later): the maintenance, with the
        // failovers of the replan pass, comes forward to that instant.
        if now >= self.next_tick || self.view.due(now) {
            self.maintenance(now);
            self.next_tick = now + self.tick;
        } else if self.pacing.next_deadline(self.flow_pending()).is_some_and(|d| now >= d) {
            self.hold_first_copies = self.failovers_pending();
            self.replan_pass(now);
        }
        self.hold_first_copies = false;
    }

    fn on_command(&mut self, now: Instant, id: RequestId, cmd: Command) {
        self.settle_command(&cmd);
        match cmd {
            Command::Create { session, attrs, max_inactive, ack } => {
                self.create(now, id, session, attrs, max_inactive, ack)
            }
            Command::Update { session, expected_version, changes, ack } => {
                self.update(now, id, &session, expected_version, WriteKind::Changes(changes), ack)
            }
            Command::Invalidate { session, ack } => {
                self.update(now, id, &session, None, WriteKind::Tombstone, ack)
            }
            Command::Get { session } => self.get(now, id, session, true),
            Command::Acquire { session } => self.get(now, id, session, false),
            Command::Touch { session } => self.touch(now, id, &session),
            Command::Leave => self.start_leave(now, id),
        }
    }

    fn on_message(&mut self, now: Instant, from: NodeId, msg: Message) {
        let was_up = self.view.is_up(&from);
        let take = match self.peer_heard(now, &from, &msg) {
            Heard::Live => true,
            // A peer that left answered our claims before its `Leaving`, but the answer may
            // arrive after it (transports carry control messages ahead of data): its copy
            // still counts, as it may be the newest (a demoted owner). Nothing else from a
            // departed incarnation is taken.
            Heard::Departed => matches!(msg, Message::ClaimAck { .. } | Message::ClaimAcks { .. }),
            Heard::Nothing => false,
        };
        if !take {
            return;
        }
        let Some(msg) = self.admit_managers(now, &from, msg) else { return };
        self.settle_message(&msg);
        match msg {
            Message::Heartbeat { incarnation, sent, echo } => {
                self.lease_heard(now, &from, Echo { incarnation, sent }, echo, !was_up)
            }
            Message::Leaving { .. } => {}
            Message::Replicate { session, epoch, payload } => {
                self.on_replicate(now, &from, session, epoch, &payload)
            }
            Message::Ack { session, epoch, version } => self.on_ack(now, &from, &session, &epoch, version),
            Message::Acks { acks } => {
                for (session, epoch, version) in acks {
                    self.on_ack(now, &from, &session, &epoch, version);
                }
            }
            Message::NeedFull { session, epoch } => self.on_need_full(now, &from, &session, &epoch),
            Message::Fenced { session, epoch } => self.on_fenced(now, &session, &epoch),
            Message::Claim { session, epoch, over } => self.on_claim(now, &from, session, epoch, over),
            Message::ClaimAck { session, epoch, copy } => {
                self.on_claim_ack(now, &from, &session, &epoch, copy)
            }
            Message::Claims { claims } => self.on_claims(now, &from, claims),
            Message::ClaimsRefused { claims } => self.on_claims_refused(now, &from, claims),
            Message::ClaimAcks { acks } => {
                for (session, epoch, copy) in acks {
                    self.on_claim_ack(now, &from, &session, &epoch, copy);
                }
            }
            Message::Drop { session, epoch } => self.on_drop(now, &from, &session, &epoch),
            Message::Release { session, epoch } => self.on_release(now, &from, &session, &epoch),
            Message::Handoff { copies } => self.on_handoff(now, &from, copies),
            Message::HandoffAcks { acks } => self.leave.handoffs_acked(acks),
            Message::EpochsRequest { incarnation, after } => {
                self.on_epochs_request(&from, incarnation, after)
            }
            Message::Epochs { incarnation, after, epochs, next } => {
                self.on_epochs(now, &from, incarnation, after, epochs, next)
            }
            Message::Domain { fingerprint, placed, joint } => {
                self.on_domain(&from, fingerprint, placed, joint)
            }
        }
    }
}
