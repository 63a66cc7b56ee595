//! The read lease: an owner serves a read or accepts a write only while a majority of the
//! domain has heard from it within the lease bound, shorter than the failure timeout after
//! which they may fail it over.
//!
//! The proof rides on the heartbeats: each carries when it was sent on its sender's clock
//! (`sent`) and echoes the newest heartbeat its sender received from its receiver
//! ([`Echo`]). An echo of `sent` proves to this node that the peer heard it at `sent` or later,
//! on this node's own clock: no two nodes' clocks are compared. The peer marks this node down
//! only a failure timeout (on its clock) after it last heard it; this node keeps the lease
//! for the lease bound after `sent` (on its clock), and the bound leaves a margin for the
//! clocks' rates ([`DRIFT_MARGIN_PERCENT`]). Nothing is added to the write path: an owner
//! that holds the lease answers at once, one that does not answers `Unavailable`.

use super::Node;
use super::membership::Membership;
use super::store::newer;
use crate::config::NodeId;
use crate::message::{Echo, Epoch, Message, Snapshot};
use crate::slim::InlineSet;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Owners remembered for the next claim at most (`MissedOwners`; about 100 bytes each).
const MAX_MISSED_OWNERS: usize = 65_536;

/// The owners that claims of this node found (in the answers' copies) but did not reach, by
/// session: the next claim of the session names its owner (`over`) when this node considers
/// it gone, so that it is refused while a majority still hears it (see
/// `Node::claim_fences_owner`). Taken by the next claim; bounded by [`MAX_MISSED_OWNERS`]
/// (a claim given up beyond it only waits for its owner to be failed over).
#[derive(Debug, Default)]
pub(super) struct MissedOwners(BTreeMap<String, Epoch>);

impl MissedOwners {
    fn note(&mut self, session: &str, owner: &Epoch) {
        if self.0.len() < MAX_MISSED_OWNERS || self.0.contains_key(session) {
            self.0.insert(session.to_owned(), owner.clone());
        }
    }

    /// The owner the last claim of `session` missed, forgotten.
    pub(super) fn take(&mut self, session: &str) -> Option<Epoch> {
        if self.0.is_empty() {
            return None;
        }
        self.0.remove(session)
    }
}

/// The margin for the clocks' rates, in percent. A peer takes part in taking an owner's
/// sessions over only when it has not heard that owner for the failure timeout (the node
/// that takes over) or for the hearing window (a node that answers its claim), which is the
/// failure timeout less this margin; the lease bound is the hearing window less it again
/// (`failure_timeout * 0.9 * 0.9`). Safe while, over any interval, no node's clock measures
/// more than `100 / (100 - DRIFT_MARGIN_PERCENT)` (about 1.11) times what another node's clock
/// measures: clocks' rates within about 10% of each other.
pub(super) const DRIFT_MARGIN_PERCENT: u32 = 10;

/// `d` less the drift margin.
fn less_margin(d: Duration) -> Duration {
    d * (100 - DRIFT_MARGIN_PERCENT) / 100
}

/// What this node knows of one peer for the lease, both ways.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PeerLease {
    /// When (on this node's clock) the newest heartbeat of this node that the peer echoed was
    /// sent: the peer heard this node then or later.
    heard_us: Option<Instant>,
    /// The newest heartbeat received from the peer (its incarnation and `sent`): echoed back
    /// in this node's heartbeats to it.
    theirs: Option<Echo>,
}

impl PeerLease {
    /// What this node's heartbeat to the peer echoes.
    pub(super) fn echo(&self) -> Option<Echo> {
        self.theirs
    }

    /// The peer restarted, left or was failed: what it heard of this node no longer counts
    /// (a new incarnation has not heard it yet), and its old heartbeats are not echoed.
    pub(super) fn forget(&mut self) {
        *self = PeerLease::default();
    }
}

/// The lease's settings and this node's clock base for the heartbeats' `sent`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease {
    /// The instant `sent` counts from (this node's start).
    base: Instant,
    /// How long an echo keeps the lease (see [`DRIFT_MARGIN_PERCENT`]).
    bound: Duration,
    /// How recently a peer must have been heard to count as heard when a claim over it comes
    /// (`Node::hearing_window`).
    hearing: Duration,
    /// Whether the lease was held, by the majority rule, when the last echo was taken in: an
    /// echo that finds it lapsed since makes this node step down from what it owns
    /// (`Node::lease_heard`).
    held: bool,
}

impl Lease {
    pub(super) fn new(base: Instant, failure_timeout: Duration) -> Self {
        let hearing = less_margin(failure_timeout);
        Lease { base, bound: less_margin(hearing), hearing, held: false }
    }

    /// The settings while an online change to a file with failure timeout `new` runs: the
    /// shorter of this lease bound and the new one, and the longer hearing window. Nodes on
    /// either file (or on any file of chained changes) then keep the lease rule between them:
    /// no node's lease outlasts another's hearing window
    /// (`a_changed_failure_timeout_keeps_the_lease_inside_every_hearing_window`). Once every
    /// node runs the new file, [`Lease::new`] with it.
    pub(super) fn changing(&self, new: Duration) -> Self {
        let next = Lease::new(self.base, new);
        Lease {
            base: self.base,
            bound: self.bound.min(next.bound),
            hearing: self.hearing.max(next.hearing),
            held: self.held,
        }
    }

    /// The instant `sent` counts from.
    pub(super) fn base(&self) -> Instant {
        self.base
    }

    /// The lease bound.
    #[cfg(test)]
    pub(super) fn bound(&self) -> Duration {
        self.bound
    }

    /// The hearing window: the failure timeout less the drift margin.
    pub(super) fn hearing_window(&self) -> Duration {
        self.hearing
    }

    /// The `sent` of a heartbeat sent at `now`: microseconds since this node started.
    pub(super) fn sent(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_micros()).unwrap_or(u64::MAX)
    }

    /// A heartbeat received at `now` from a peer of `peer` (this node's `incarnation`): keeps
    /// its `sent` to echo, and takes its echo as proof it heard this node, if the echo is of
    /// this incarnation and not from the future (a garbled value).
    pub(super) fn heard(
        &self,
        now: Instant,
        incarnation: u64,
        peer: &mut PeerLease,
        theirs: Echo,
        echo: Option<Echo>,
    ) {
        if peer.theirs.is_none_or(|t| t.incarnation != theirs.incarnation || t.sent < theirs.sent) {
            peer.theirs = Some(theirs);
        }
        let Some(e) = echo.filter(|e| e.incarnation == incarnation) else { return };
        let Some(at) = self.base.checked_add(Duration::from_micros(e.sent)).filter(|at| *at <= now) else {
            return;
        };
        if peer.heard_us.is_none_or(|t| t < at) {
            peer.heard_us = Some(at);
        }
    }

    /// Whether a peer whose lease state is `peer` heard this node within the bound before `now`.
    fn heard_recently(&self, now: Instant, peer: &PeerLease) -> bool {
        peer.heard_us.is_some_and(|t| now < t + self.bound)
    }

    /// Whether a majority of a domain of three or more (by [`Membership::majority`]) heard this
    /// node within the bound before `now`: what continuity is judged by (`Node::lease_heard`).
    /// A domain of two, where the lease also holds while the peer is considered down, is not
    /// judged: its two sides cannot be told apart (see [`Lease::holds`]), and a peer coming back
    /// or restarting would make its owner step down every time.
    fn held_by_majority(&self, now: Instant, view: &Membership) -> bool {
        let heard = view.peers.values().filter(|p| self.heard_recently(now, &p.lease)).count();
        view.counted() <= 2 || view.majority(1 + heard)
    }

    /// Whether this node holds the lease at `now` in the view `view`: with the peers that
    /// heard it within the bound, it is a majority by the rule that takes sessions over
    /// ([`Membership::majority`]), so no majority can have failed it over. In a domain of two,
    /// where that rule lets one node take over alone, the peer must have heard this node
    /// unless this node considers it down (a crashed peer cannot take over; a peer cut off
    /// both ways can, and the two sides of a domain of two cannot be told apart).
    pub(super) fn holds(&self, now: Instant, view: &Membership) -> bool {
        let heard = view.peers.values().filter(|p| self.heard_recently(now, &p.lease)).count();
        if view.counted() <= 2 {
            return view.peers.values().all(|p| !p.up || self.heard_recently(now, &p.lease));
        }
        view.majority(1 + heard)
    }
}

impl Node {
    /// Whether this node may serve a read or accept a write of a session it owns at `now`
    /// (see [`Lease::holds`]).
    pub(super) fn holds_lease(&self, now: Instant) -> bool {
        self.lease.holds(now, &self.view)
    }

    /// The lease side of a heartbeat from `from`. A peer that `came_up` with it gets this
    /// node's heartbeat at once, echoing it: both hold their lease one round trip after they
    /// first hear each other, not a heartbeat interval later.
    ///
    /// **Continuity.** An echo is the only thing that extends the lease, so a lease that
    /// lapsed is noticed at the latest by the echo that would give it back. A node whose
    /// lease lapsed since the last echo steps down from every session it owns
    /// (`step_down_all`; the copies stay, and its next read or write of one claims it again):
    /// while it did not hold the lease a majority may have taken them over without reaching
    /// it, and the lease it regains may rest on peers that promised that takeover. An owner
    /// thus serves a session only while it has held the lease without a gap since it took
    /// the session (test `an_owner_whose_lease_lapsed_steps_down_before_serving_again`).
    pub(super) fn lease_heard(
        &mut self,
        now: Instant,
        from: &NodeId,
        theirs: Echo,
        echo: Option<Echo>,
        came_up: bool,
    ) {
        let incarnation = self.incarnation;
        if self.lease.held && !self.lease.held_by_majority(now, &self.view) {
            self.step_down_all();
        }
        if let Some(p) = self.view.peers.get_mut(from) {
            self.lease.heard(now, incarnation, &mut p.lease, theirs, echo);
        }
        self.lease.held = self.lease.held_by_majority(now, &self.view);
        if came_up {
            self.heartbeat_to(now, from);
        }
    }

    /// Whether a claim of `session` may take it from the owner of the newest copy found
    /// (`best`, from the answers, or this node's own copy if newer), given the peers that
    /// answered with a copy (`holders`) and the owner the claim named (`over`). It may when
    /// that owner is this node, is gone for good (not a peer, departed, or restarted since),
    /// answered the claim (and so promised it: it no longer serves at its epoch), or was
    /// named by the claim: every answer then came from a peer that had not heard it for the
    /// hearing window, so its lease had lapsed (and it steps down, see `lease_heard`).
    /// Otherwise the owner may still hold the lease, heard by a majority, and serve its copy
    /// after this node acknowledged newer writes: a claim that names no owner (this node held
    /// no copy, or considered the owner up when it claimed, and the owner went down for it
    /// before it answered) is given up, answered `Unavailable`; the next one names the owner
    /// once this node considers it gone ([`MissedOwners`]; test
    /// `a_claim_that_missed_a_heard_owner_gives_up`).
    pub(super) fn claim_fences_owner(
        &mut self,
        session: &str,
        best: Option<&Snapshot>,
        holders: &InlineSet<NodeId>,
        over: Option<&Epoch>,
    ) -> bool {
        let own = self.sessions.get(session).and_then(|r| r.copy.as_ref());
        let Some(best) = own.filter(|c| newer(c, best)).or(best) else { return true };
        let owner = &best.epoch;
        let named = over.is_some_and(|o| o.node == owner.node && o.incarnation == owner.incarnation);
        let may_live =
            self.view.peers.get(&owner.node).is_some_and(|p| {
                p.departed.is_none() && p.incarnation.is_none_or(|i| i == owner.incarnation)
            });
        let fenced = owner.node == self.me || named || !may_live || holders.contains(&owner.node);
        if !fenced {
            let owner = owner.clone();
            self.missed_owners.note(session, &owner);
        }
        fenced
    }

    /// The owner a claim of `session` names: the one the last claim of it missed, if this
    /// node considers it gone (see [`MissedOwners`]).
    pub(super) fn missed_owner(&mut self, session: &str) -> Option<Epoch> {
        self.missed_owners.take(session).filter(|e| self.owner_gone(e))
    }

    /// Sends `to` this node's heartbeat, with its echo.
    pub(super) fn heartbeat_to(&mut self, now: Instant, to: &NodeId) {
        let Some(peer) = self.view.peers.get(to) else { return };
        let (sent, echo) = (self.lease.sent(now), peer.lease.echo());
        self.out.send(to, Message::Heartbeat { incarnation: self.incarnation, sent, echo });
    }
}
