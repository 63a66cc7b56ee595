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
use crate::config::NodeId;
use crate::message::{Echo, Message};
use std::time::{Duration, Instant};

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
}

impl Lease {
    pub(super) fn new(base: Instant, failure_timeout: Duration) -> Self {
        let hearing = less_margin(failure_timeout);
        Lease { base, bound: less_margin(hearing), hearing }
    }

    /// The settings while an online change to a file with failure timeout `new` runs: the
    /// shorter of this lease bound and the new one, and the longer hearing window. Nodes on
    /// either file (or on any file of chained changes) then keep the lease rule between them:
    /// no node's lease outlasts another's hearing window
    /// (`a_changed_failure_timeout_keeps_the_lease_inside_every_hearing_window`). Once every
    /// node runs the new file, [`Lease::new`] with it.
    pub(super) fn changing(&self, new: Duration) -> Self {
        let next = Lease::new(self.base, new);
        Lease { base: self.base, bound: self.bound.min(next.bound), hearing: self.hearing.max(next.hearing) }
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
    pub(super) fn lease_heard(
        &mut self,
        now: Instant,
        from: &NodeId,
        theirs: Echo,
        echo: Option<Echo>,
        came_up: bool,
    ) {
        let incarnation = self.incarnation;
        if let Some(p) = self.view.peers.get_mut(from) {
            self.lease.heard(now, incarnation, &mut p.lease, theirs, echo);
        }
        if came_up {
            self.heartbeat_to(now, from);
        }
    }

    /// Sends `to` this node's heartbeat, with its echo.
    pub(super) fn heartbeat_to(&mut self, now: Instant, to: &NodeId) {
        let Some(peer) = self.view.peers.get(to) else { return };
        let (sent, echo) = (self.lease.sent(now), peer.lease.echo());
        self.out.send(to, Message::Heartbeat { incarnation: self.incarnation, sent, echo });
    }
}
