//! The acquiring side of an ownership change: claims sent, batched, answered and finished.

use super::Node;
use super::flow::Pace;
use super::replicate::place;
use super::store::{OwnerState, ReplicaMap, due, newer, record_or_empty};
use crate::api::{Event, Outcome, RequestId};
use crate::config::NodeId;
use crate::message::{Body, Epoch, Message, Snapshot};
use crate::session_key::{SessionKey, Sid};
use crate::slim::{InlineSet, SlimSet, SlimVec};
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

#[derive(Debug, Clone)]
pub(super) struct Acquire {
    pub(super) epoch: Epoch,
    /// Every node the claim went to.
    pub(super) asked: InlineSet<NodeId>,
    pub(super) waiting: InlineSet<NodeId>,
    best: Option<Snapshot>,
    holders: InlineSet<NodeId>,
    /// Peers that answered the claim (with a copy or without).
    answered: InlineSet<NodeId>,
    /// Commands waiting: id and whether the outcome carries the attributes.
    pub(super) requests: Vec<(RequestId, bool)>,
    deadline: Instant,
    /// When the claim last went to the peers still `waiting` (re-sent every
    /// `retransmit_interval`: a claim lost with a connection would otherwise wait out the
    /// deadline).
    pub(super) sent: Instant,
    retries: u32,
    pub(super) failover: bool,
    /// The epoch of the owner this claim fails over from, when this node considers it gone
    /// (sent with the claim, see [`Message::Claim`]).
    pub(super) over: Option<Epoch>,
    /// This node's promise before the claim, restored when the claim gets too few answers:
    /// it never owns at the claim's epoch, and keeping that promise would fence the owner it
    /// failed to take over from (a live owner, when peers refused the claim).
    prior: Option<Epoch>,
}

/// One claim of a [`Message::Claims`]: session, epoch, and the owner it fails over from.
pub(super) type ClaimOf = (String, Epoch, Option<Epoch>);

/// Claims per [`Message::Claims`] and answers per [`Message::ClaimAcks`] at most.
pub(super) const CLAIMS_PER_MESSAGE: usize = 512;

/// The acquires of this node: the claims it started and waits answers for, their deadlines,
/// the batch of claims of the pass under way, and the owners whose failover is held back.
#[derive(Debug, Default)]
pub(super) struct Acquires {
    /// Boxed: a map node moves its values on every insert and removal, and a mass failover
    /// inserts and removes thousands.
    by_session: BTreeMap<SessionKey, Box<Acquire>>,
    /// How many of them are failover claims (`Acquire::failover`), kept as they come and go
    /// so that the failover window (`Node::failover_window`) costs no walk.
    failovers: usize,
    /// The deadlines of the acquires started, in the order they were started: each is `now +
    /// request_timeout`, so they come in order and a queue keeps them (a mass failover starts
    /// thousands at one instant). A finished or restarted acquire is skipped when its entry
    /// comes due (`acquire_timed_out`).
    deadlines: VecDeque<(Instant, String)>,
    /// `Some` during a maintenance or replan pass: the claims it starts, per peer, sent in
    /// batches at its end ([`Message::Claims`]) instead of one message per session.
    batch: Option<BTreeMap<NodeId, Vec<ClaimOf>>>,
    /// Owners whose failover is held back until the instant: a peer refused a claim over
    /// it because it still hears it (`on_claims_refused`). Bounded by the peers.
    held_over: BTreeMap<NodeId, Instant>,
}

impl Acquires {
    pub(super) fn get(&self, session: &str) -> Option<&Acquire> {
        self.by_session.get(Sid::new(session)).map(|a| &**a)
    }

    pub(super) fn get_mut(&mut self, session: &str) -> Option<&mut Acquire> {
        self.by_session.get_mut(Sid::new(session)).map(|a| &mut **a)
    }

    pub(super) fn contains(&self, session: &str) -> bool {
        self.by_session.contains_key(Sid::new(session))
    }

    pub(super) fn insert(&mut self, session: &str, a: Box<Acquire>) {
        self.failovers += usize::from(a.failover);
        if let Some(old) = self.by_session.insert(SessionKey::from(session), a) {
            self.failovers -= usize::from(old.failover);
        }
    }

    pub(super) fn remove(&mut self, session: &str) -> Option<Box<Acquire>> {
        let a = self.by_session.remove(Sid::new(session))?;
        self.failovers -= usize::from(a.failover);
        Some(a)
    }

    pub(super) fn len(&self) -> usize {
        self.by_session.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_session.is_empty()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Acquire> {
        self.by_session.values().map(|a| &**a)
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Acquire)> {
        self.by_session.iter_mut().map(|(k, a)| (k.as_str(), &mut **a))
    }

    /// Every acquire, removed (the node leaves).
    pub(super) fn take_all(&mut self) -> BTreeMap<SessionKey, Box<Acquire>> {
        self.failovers = 0;
        std::mem::take(&mut self.by_session)
    }

    /// Whether failover claims of this node are pending (see `Node::failovers_pending`).
    pub(super) fn failovers_pending(&self) -> bool {
        self.failovers > 0
    }

    /// The failover claims pending.
    pub(super) fn failovers(&self) -> usize {
        self.failovers
    }

    /// Queues the deadline of an acquire started, in order even if `now` went back (a
    /// deadline kept late is checked when it fires).
    fn push_deadline(&mut self, deadline: Instant, session: &str) {
        let at = self.deadlines.back().map_or(deadline, |(last, _)| deadline.max(*last));
        self.deadlines.push_back((at, session.to_owned()));
    }

    /// The session of the next deadline due at `now`, removed from the queue.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<String> {
        if self.deadlines.front().is_none_or(|(at, _)| *at > now) {
            return None;
        }
        self.deadlines.pop_front().map(|(_, s)| s)
    }

    /// Forgets every deadline (the node left).
    pub(super) fn clear_deadlines(&mut self) {
        self.deadlines.clear();
    }

    /// Holds failovers from `owner` back until `until`.
    fn hold_over(&mut self, owner: &NodeId, until: Instant) {
        self.held_over.insert(owner.clone(), until);
    }

    /// Whether failovers from `owner` are held back at `now`.
    pub(super) fn held_over(&self, owner: &NodeId, now: Instant) -> bool {
        self.held_over.get(owner).is_some_and(|t| now < *t)
    }

    /// Ends the holds due at `now`; `true` if one ended (its failovers are due again).
    pub(super) fn end_holds(&mut self, now: Instant) -> bool {
        if self.held_over.values().any(|t| *t <= now) {
            self.held_over.retain(|_, t| *t > now);
            return true;
        }
        false
    }

    /// The next acquire deadline or end of a hold.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let deadline = self.deadlines.front().map(|(at, _)| *at);
        deadline.into_iter().chain(self.held_over.values().min().copied()).min()
    }
}

impl Node {
    /// Whether failover claims of this node are pending. Until they are all answered, the
    /// first copies of the sessions it owns (re-replication, paced by the token bucket) wait:
    /// a mass failover completes ownership of every session first, on a machine where the
    /// copies (1 KiB each, encoded, sent, stored and acknowledged) compete with the claims
    /// for the CPU. Bounded: a claim ends at the latest at its deadline (`request_timeout`).
    /// Writes are not held (`Pace::No`), nor retransmissions.
    pub(super) fn failovers_pending(&self) -> bool {
        self.acquires.failovers_pending()
    }

    pub(super) fn get(&mut self, now: Instant, id: RequestId, session: String, want_attrs: bool) {
        if !self.can_own {
            return self.out.outcome(id, Outcome::NotAllowed);
        }
        if want_attrs && self.read_waits(now, id, &session) {
            return;
        }
        let lease = self.holds_lease(now);
        if let Some(rec) = self.sessions.get_mut(&session) {
            if let (Some(o), Some(c)) = (&mut rec.owner, &rec.copy) {
                if !lease {
                    // Another node may have taken it over (see `lease`).
                    return self.out.outcome(id, Outcome::Unavailable);
                }
                let outcome = match &c.body {
                    Body::Tombstone => Outcome::NotFound,
                    Body::Live { attrs, .. } => {
                        o.last_access = self.stamps.stamp(now);
                        o.touched = true;
                        if want_attrs {
                            Outcome::Found {
                                epoch: c.epoch.clone(),
                                version: c.version,
                                attrs: attrs.clone(),
                            }
                        } else {
                            Outcome::Acquired { epoch: c.epoch.clone(), version: c.version }
                        }
                    }
                };
                return self.out.outcome(id, outcome);
            }
            if matches!(rec.copy, Some(Snapshot { body: Body::Tombstone, .. })) {
                return self.out.outcome(id, Outcome::NotFound);
            }
        }
        if let Some(a) = self.acquires.get_mut(&session) {
            a.requests.push((id, want_attrs));
            return;
        }
        if self.at_pending_limit() {
            return self.out.outcome(id, Outcome::Busy);
        }
        if !self.view.settled(now) {
            return self.out.outcome(id, Outcome::Unavailable);
        }
        self.start_acquire(now, &session, vec![(id, want_attrs)], false, 0, 0);
    }

    pub(super) fn start_acquire(
        &mut self,
        now: Instant,
        session: &str,
        requests: Vec<(RequestId, bool)>,
        failover: bool,
        retries: u32,
        min_term: u64,
    ) {
        self.start_claim(now, session, requests, failover, retries, min_term, None);
    }

    /// `start_acquire`, failing over from `over` when given (else from the owner of this
    /// node's copy, if it considers that owner gone).
    #[allow(clippy::too_many_arguments)]
    fn start_claim(
        &mut self,
        now: Instant,
        session: &str,
        requests: Vec<(RequestId, bool)>,
        failover: bool,
        retries: u32,
        min_term: u64,
        over: Option<Epoch>,
    ) {
        let stamp = self.stamps.stamp(now);
        let rec = record_or_empty!(self.sessions, session, stamp);
        let known = rec
            .promised
            .as_ref()
            .map(|e| e.term)
            .max(rec.copy.as_ref().map(|c| c.epoch.term))
            .unwrap_or(0)
            .max(min_term);
        let epoch = Epoch::new(known + 1, self.me.clone(), self.incarnation);
        let prior = rec.promised.replace(epoch.clone());
        rec.last_heard = stamp;
        let best = rec.copy.clone();
        let over = over
            .or_else(|| best.as_ref().map(|c| &c.epoch).filter(|e| self.owner_gone(e)).cloned())
            .or_else(|| self.missed_owner(session));
        let waiting: InlineSet<NodeId> = self.view.up().cloned().collect();
        for to in &waiting {
            self.queue_claim(to.clone(), session.to_owned(), epoch.clone(), over.clone());
        }
        let deadline = now + self.request_timeout;
        let empty = waiting.is_empty();
        self.acquires.insert(
            session,
            Box::new(Acquire {
                epoch,
                asked: waiting.clone(),
                waiting,
                best,
                holders: InlineSet::default(),
                answered: InlineSet::default(),
                requests,
                deadline,
                sent: now,
                retries,
                failover,
                over,
                prior,
            }),
        );
        if empty {
            self.finish_acquire(now, session);
        } else {
            self.acquires.push_deadline(deadline, session);
        }
    }

    /// Sends a claim, or adds it to the pass's batch (`batching_claims`).
    fn queue_claim(&mut self, to: NodeId, session: String, epoch: Epoch, over: Option<Epoch>) {
        match &mut self.acquires.batch {
            Some(buf) => buf.entry(to).or_default().push((session, epoch, over)),
            None => self.out.send(&to, Message::Claim { session, epoch, over }),
        }
    }

    /// Runs `pass` with its claims batched: sent at its end by `flush_claims`, unless a pass
    /// that encloses it batches them already (then at that one's end).
    pub(super) fn batching_claims(&mut self, pass: impl FnOnce(&mut Node)) {
        let start = self.acquires.batch.is_none();
        if start {
            self.acquires.batch = Some(BTreeMap::new());
        }
        pass(self);
        if start {
            self.flush_claims();
        }
    }

    /// Sends the claims batched by the pass: one [`Message::Claims`] per peer and
    /// [`CLAIMS_PER_MESSAGE`] sessions, so that a mass failover sends a few messages per peer
    /// instead of one per session: one per session overflows the transports' per-peer queues
    /// in a mass failover, and a lost claim waits out the request timeout (see the test
    /// `mass_failover_claims_in_batches`).
    fn flush_claims(&mut self) {
        let Some(buf) = self.acquires.batch.take() else { return };
        for (to, claims) in buf {
            self.send_claims(&to, claims);
        }
    }

    /// Sends `claims` to `to`: [`CLAIMS_PER_MESSAGE`] a [`Message::Claims`] (one alone as a
    /// [`Message::Claim`]), moved into the messages.
    pub(super) fn send_claims(&mut self, to: &NodeId, claims: Vec<ClaimOf>) {
        let mut claims = claims.into_iter();
        loop {
            let chunk: Vec<ClaimOf> = claims.by_ref().take(CLAIMS_PER_MESSAGE).collect();
            if chunk.is_empty() {
                break;
            }
            let msg = match <[_; 1]>::try_from(chunk) {
                Ok([(session, epoch, over)]) => Message::Claim { session, epoch, over },
                Err(chunk) => Message::Claims { claims: chunk },
            };
            self.out.send(to, msg);
        }
    }

    /// Ends an acquire that lost to `higher`: retry with a higher term when allowed.
    pub(super) fn abort_acquire(&mut self, now: Instant, session: &str, higher: &Epoch) {
        let Some(a) = self.acquires.remove(session) else { return };
        if !a.failover && !a.requests.is_empty() && a.retries < self.settings.claim_retries {
            self.start_acquire(now, session, a.requests, false, a.retries + 1, higher.term);
            return;
        }
        for (id, _) in a.requests {
            self.out.outcome(id, Outcome::Fenced { epoch: higher.clone() });
        }
        self.release_claim(session, &a.epoch, &a.asked);
        self.forget_if_empty(session);
    }

    /// Tells the nodes a given-up claim went to, and every live peer, that this node never
    /// owns at `epoch` ([`Message::Release`]): a late claim may have demoted the owner, which
    /// then takes the session back (see `on_release`). The live peers too: an owner this node
    /// could not reach when it claimed (one broken link, now healed) may have been fenced by
    /// this node's promise of the claim since.
    pub(super) fn release_claim(&mut self, session: &str, epoch: &Epoch, asked: &InlineSet<NodeId>) {
        let live = self.view.peers.iter().filter(|(n, p)| p.up && !asked.contains(*n)).map(|(n, _)| n);
        for to in asked.iter().chain(live) {
            self.out.send(to, Message::Release { session: session.to_owned(), epoch: epoch.clone() });
        }
    }

    fn forget_if_empty(&mut self, session: &str) {
        if self.acquires.contains(session) {
            return;
        }
        if self.sessions.get(session).is_some_and(|r| r.copy.is_none() && r.owner.is_none()) {
            self.sessions.remove(session);
        }
    }

    /// Ends the acquire of `session`, all of whose answers are in (or will not come): see
    /// `decide_acquire`.
    fn finish_acquire(&mut self, now: Instant, session: &str) {
        let Some(a) = self.acquires.remove(session) else { return };
        self.decide_acquire(now, session, a);
    }

    /// Decides an acquire taken out of `acquires`: this node owns the session from the newest
    /// copy the answers brought, or gives up.
    fn decide_acquire(&mut self, now: Instant, session: &str, a: Box<Acquire>) {
        // The claim must have been answered by enough of the domain: peers asked that went
        // down before answering may have promised and hold the newest copy (a one-way
        // partition, or a node that was paused and wakes up to a silent domain). Taking the
        // session over without their copies would fence them and lose what they hold.
        let majority = self.view.majority(1 + a.answered.len());
        if let Some(owner) = self.unasked_owner(&a).filter(|_| majority) {
            // The newest copy names an owner this claim did not reach (down in this node's
            // view: never heard since this node started, or failed): claimed again over it, so
            // that the peers that still hear it refuse (`answer::refuses`) rather than let this
            // node take the session from a live owner that keeps serving it. Regression test:
            // `a_restarted_node_does_not_fetch_from_a_live_owner_it_has_not_reached`.
            self.release_claim(session, &a.epoch, &a.asked);
            if let Some(rec) = self.sessions.get_mut(session) {
                if rec.promised.as_ref() == Some(&a.epoch) {
                    rec.promised = a.prior.clone();
                }
            }
            let Acquire { requests, failover, retries, epoch, .. } = *a;
            self.start_claim(now, session, requests, failover, retries, epoch.term, Some(owner));
            return;
        }
        // A claim that missed an owner still heard elsewhere gives up (`claim_fences_owner`).
        if !majority || !self.claim_fences_owner(session, a.best.as_ref(), &a.holders, a.over.as_ref()) {
            for (id, _) in a.requests {
                self.out.outcome(id, Outcome::Unavailable);
            }
            if let Some(rec) = self.sessions.get_mut(session) {
                if rec.promised.as_ref() == Some(&a.epoch) {
                    rec.promised = a.prior;
                }
            }
            self.release_claim(session, &a.epoch, &a.asked);
            self.forget_if_empty(session);
            return;
        }
        let me = self.me.clone();
        let stamp = self.stamps.stamp(now);
        // Where its backups go (as `plan` would place them right after), before the record is
        // borrowed: a failover places them here, without looking the session up again.
        let view_gen = self.view.generation;
        let want = self.replica_target();
        let backups = self.placed_backups(session);
        let rec = record_or_empty!(self.sessions, session, stamp);
        if rec.promised.as_ref().is_some_and(|p| *p > a.epoch) {
            let higher = rec.promised.clone().unwrap_or_else(|| a.epoch.clone());
            for (id, _) in a.requests {
                self.out.outcome(id, Outcome::Fenced { epoch: higher.clone() });
            }
            return;
        }
        let mut best = a.best.clone();
        if let Some(c) = &rec.copy {
            if newer(c, best.as_ref()) {
                best = Some(c.clone());
            }
        }
        // The new owner's epoch must be above every copy it continues from, or a later claim
        // would prefer that older copy to what this owner writes. (Every holder promises the
        // epoch of the copy it stores, so its answer fences a claim below it; this is the
        // guard if one did not.)
        if let Some(b) = best.as_ref().filter(|b| b.epoch > a.epoch) {
            let higher = b.epoch.clone();
            rec.promise_at_least(&higher);
            self.acquires.insert(session, a);
            self.abort_acquire(now, session, &higher);
            return;
        }
        match best {
            Some(Snapshot { epoch: prev, version, body: Body::Live { attrs, max_inactive_ms } }) => {
                let copy = Snapshot {
                    epoch: a.epoch.clone(),
                    version,
                    body: Body::Live { attrs: attrs.clone(), max_inactive_ms },
                };
                rec.copy = Some(copy);
                rec.tomb_until = None;
                let mut o = OwnerState {
                    last_access: self.stamps.stamp(now),
                    touched: false,
                    last_touch: self.stamps.stamp(now),
                    replicas: ReplicaMap::default(),
                    stale: SlimSet::default(),
                    view_gen: u64::MAX,
                    under: false,
                    waiting: SlimVec::default(),
                    unacked_since: None,
                    unconfirmed: false,
                    gap: self.lapses.current(),
                };
                o.stale = a.holders.into_iter().filter(|n| *n != me).collect();
                // The previous owner may be alive without knowing (it missed the claim).
                if prev.node != me {
                    o.stale.insert(prev.node);
                }
                let under = place(&mut o, &backups, &self.view.peers, view_gen, stamp, want);
                let unacked = o.replicas.keys().next().is_some();
                if a.failover {
                    // Many sessions fail over at once: ownership of them all first. Their
                    // first copies are re-replication: from the next step on, each backup's
                    // resend walk sends them within its window and the token bucket (and the
                    // maintenance scan those left).
                    for to in o.replicas.keys() {
                        if let Some(p) = self.view.peers.get_mut(to).filter(|p| p.up) {
                            p.flow.resend_at(session);
                        }
                    }
                }
                rec.owner = Some(Box::new(o));
                self.acquisitions += 1;
                if a.failover {
                    self.failovers += 1;
                }
                self.out
                    .event(Event::OwnershipGained { session: session.to_owned(), epoch: a.epoch.clone() });
                if under {
                    let have = backups.len();
                    self.out.event(Event::UnderReplicated { session: session.to_owned(), have, want });
                }
                if a.failover {
                    // No former holder is told to drop before the backups acknowledge.
                    if !unacked {
                        self.maybe_drop_stale(session);
                    }
                } else {
                    self.send_full_to_lagging(session, now, false, Pace::No);
                    self.maybe_drop_stale(session);
                }
                for (id, want) in a.requests {
                    let outcome = if want {
                        Outcome::Found { epoch: a.epoch.clone(), version, attrs: attrs.clone() }
                    } else {
                        Outcome::Acquired { epoch: a.epoch.clone(), version }
                    };
                    self.out.outcome(id, outcome);
                }
            }
            Some(tomb @ Snapshot { body: Body::Tombstone, .. }) => {
                if newer(&tomb, rec.copy.as_ref()) {
                    rec.copy = Some(tomb);
                    rec.tomb_until = Some(self.stamps.stamp(now + self.settings.tombstone_ttl));
                }
                rec.last_heard = self.stamps.stamp(now);
                for (id, _) in a.requests {
                    self.out.outcome(id, Outcome::NotFound);
                }
            }
            None => {
                // Release the promises made for nothing, so that a later create of this id is
                // not fenced by them (a lost release only costs that create its ownership), and
                // so that an owner demoted by this claim arriving late takes the session back.
                self.release_claim(session, &a.epoch, &a.asked);
                let outcome = if self.absent(now, session, &a.answered) {
                    Outcome::NotFound
                } else {
                    Outcome::Unavailable
                };
                for (id, _) in a.requests {
                    self.out.outcome(id, outcome.clone());
                }
                self.forget_if_empty(session);
            }
        }
    }

    /// The owner named by the newest copy a claim collected, when the claim did not reach it
    /// and did not name it (`over`): see `decide_acquire`.
    fn unasked_owner(&self, a: &Acquire) -> Option<Epoch> {
        let best = a.best.as_ref().filter(|b| matches!(b.body, Body::Live { .. }))?;
        let owner = &best.epoch;
        (a.over.is_none() && owner.node != self.me && !a.asked.contains(&owner.node)).then(|| owner.clone())
    }

    /// Whether the answers of a claim that found no copy show that the session exists nowhere:
    /// for every node that may own it, that node or one of the backups placement gives it
    /// answered (this node counting as an answer once its memory does, see
    /// `memory_counts`). Otherwise, for some owner, every node that may hold the session is
    /// among the nodes not heard (a restarted node linked to some of its peers only, or nodes
    /// down), and the fetch is [`Outcome::Unavailable`] rather than `NotFound`. Regression test:
    /// `a_restarted_node_answers_unavailable_for_a_session_its_peers_may_hold`.
    fn absent(&self, now: Instant, session: &str, answered: &InlineSet<NodeId>) -> bool {
        let me = self.memory_counts(now).then_some(&self.me);
        let heard = |n: &NodeId| answered.contains(n) || Some(n) == me;
        self.placement
            .nodes()
            .filter(|o| self.placement.owns_sessions(o))
            .all(|owner| heard(owner) || self.placement.backups(session, owner, |_| true).iter().any(&heard))
    }

    /// Whether this node having no copy of a session says it holds none: not while this
    /// incarnation may have lost copies placed on it before its restart and a peer that
    /// holds them too is live and not yet heard, that is until it has heard every peer of the
    /// domain, or for twice the failure timeout after its start (a live peer links within a
    /// heartbeat interval and a handshake of it; a peer not heard by then is down on the
    /// failure detector's word).
    fn memory_counts(&self, now: Instant) -> bool {
        self.view.was_complete() || now >= self.stamps.base() + self.view.failure_timeout * 2
    }

    /// Steps down from owning `session`: a higher epoch exists.
    pub(super) fn demote(&mut self, session: &str, higher: &Epoch) {
        let Some(rec) = self.sessions.get_mut(session) else { return };
        rec.promise_at_least(higher);
        let Some(o) = rec.owner.take() else { return };
        // Counts the grace before this node resumes ownership (see `maybe_resume`).
        rec.last_heard = self.stamps.stamp(self.last_run);
        self.fenced += 1;
        self.writes.fail(o.waiting, &mut self.out, |_| Outcome::Fenced { epoch: higher.clone() });
        self.out.event(Event::OwnershipLost { session: session.to_owned(), epoch: higher.clone() });
    }

    /// Pending claims stop waiting for `node`'s answer.
    pub(super) fn forget_answers(&mut self, now: Instant, node: &NodeId) {
        let done: Vec<String> = self
            .acquires
            .iter_mut()
            .filter_map(|(s, a)| (a.waiting.remove(node) && a.waiting.is_empty()).then(|| s.to_owned()))
            .collect();
        for s in done {
            self.finish_acquire(now, &s);
        }
    }

    /// Claims a peer refused because it still hears the owner they fail over from: its
    /// answer does not count (an acquire without enough answers gives up, see
    /// `finish_acquire`), and failovers from that owner wait the `hearing_window`, by when
    /// the peer stops hearing an owner that is really gone.
    pub(super) fn on_claims_refused(&mut self, now: Instant, from: &NodeId, claims: Vec<(String, Epoch)>) {
        let hold = now + self.hearing_window();
        for (session, epoch) in claims {
            let Some(a) = self.acquires.get_mut(&session) else { continue };
            if a.epoch != epoch || !a.waiting.remove(from) {
                continue;
            }
            let owner = a.over.as_ref().map(|o| o.node.clone());
            let answered = a.waiting.is_empty();
            if let Some(owner) = owner {
                self.acquires.hold_over(&owner, hold);
            }
            if answered {
                self.finish_acquire(now, &session);
            }
        }
    }

    pub(super) fn on_claim_ack(
        &mut self,
        now: Instant,
        from: &NodeId,
        session: &str,
        epoch: &Epoch,
        copy: Option<Snapshot>,
    ) {
        let counts = self.acquires.get(session).is_some_and(|a| a.over.is_none())
            || self.answers_over_owners(now, from);
        let Some(a) = self.acquires.get_mut(session) else { return };
        if a.epoch != *epoch || !a.waiting.remove(from) {
            return;
        }
        if counts {
            a.answered.insert(from.clone());
        }
        if let Some(c) = copy {
            a.holders.insert(from.clone());
            if newer(&c, a.best.as_ref()) {
                a.best = Some(c);
            }
        }
        if a.waiting.is_empty() {
            self.finish_acquire(now, session);
        }
    }

    /// Claims again to the peers that have not answered yet, every `retransmit_interval`.
    pub(super) fn resend_claims(&mut self, now: Instant) {
        let every = self.settings.retransmit_interval;
        let mut again = Vec::new();
        for (session, a) in self.acquires.iter_mut() {
            if !due(now, a.sent, every) {
                continue;
            }
            a.sent = now;
            for to in &a.waiting {
                if self.view.is_up(to) {
                    again.push((to.clone(), session.to_owned(), a.epoch.clone(), a.over.clone()));
                }
            }
        }
        for (to, session, epoch, over) in again {
            self.queue_claim(to, session, epoch, over);
        }
    }
    /// An acquire's deadline passed: it ends [`Outcome::Unavailable`] unless it finished or
    /// was restarted with a later deadline meanwhile.
    pub(super) fn acquire_timed_out(&mut self, now: Instant, session: &str) {
        let Some(a) = self.acquires.get(session) else { return };
        if a.deadline > now {
            return;
        }
        if let Some(a) = self.acquires.remove(session) {
            for (id, _) in a.requests {
                self.out.outcome(id, Outcome::Unavailable);
            }
            self.release_claim(session, &a.epoch, &a.asked);
        }
        self.forget_if_empty(session);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_stay_in_order_even_if_time_goes_back() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut a = Acquires::default();
        a.push_deadline(t0 + ms(20), "s1");
        a.push_deadline(t0 + ms(10), "s2");
        assert_eq!(a.next_deadline(), Some(t0 + ms(20)));
        assert_eq!(a.pop_due(t0 + ms(15)), None);
        assert_eq!(a.pop_due(t0 + ms(20)).as_deref(), Some("s1"));
        assert_eq!(a.pop_due(t0 + ms(20)).as_deref(), Some("s2"), "kept late, checked when it fires");
        a.clear_deadlines();
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn a_hold_on_an_owner_ends_at_its_instant() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (b, c) = (NodeId::new("b"), NodeId::new("c"));
        let mut a = Acquires::default();
        a.hold_over(&b, t0 + ms(50));
        a.hold_over(&c, t0 + ms(80));
        a.push_deadline(t0 + ms(60), "s");
        assert_eq!(a.next_deadline(), Some(t0 + ms(50)));
        assert!(a.held_over(&b, t0 + ms(49)));
        assert!(!a.end_holds(t0 + ms(49)));
        assert!(a.end_holds(t0 + ms(50)));
        assert!(!a.held_over(&b, t0 + ms(50)));
        assert!(a.held_over(&c, t0 + ms(50)));
        assert_eq!(a.next_deadline(), Some(t0 + ms(60)));
    }
}
