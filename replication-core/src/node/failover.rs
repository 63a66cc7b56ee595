//! Failover decisions: orphaned sessions, demoted owners that resume, claims of orphans.

use super::Node;
use super::store::{Record, due};
use crate::config::{NodeId, Topology};
use crate::message::Body;
use std::time::{Duration, Instant};

/// What `maybe_failover` does with a session (see `Node::failover_step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailoverStep {
    /// A demoted owner: `maybe_resume`.
    Resume,
    /// An orphan whose failover target is this node: claim it.
    Claim,
    Nothing,
}

impl Node {
    /// Whether this node is a demoted owner: it is not the owner, and holds the live copy it
    /// wrote itself (this incarnation) with a promise for its epoch or a higher one: demoted
    /// by a higher claim, or stepped down at its own epoch (`step_down_all`, after its lease
    /// lapsed or a gap). A real new owner would have replaced that copy (it is a placed
    /// backup) or dropped it (it is a former holder); until then the copy may be the newest
    /// one, and nobody else re-replicates it, so the session is resumed (`maybe_resume`).
    /// Regression test: `a_stepped_down_owner_resumes_and_restores_its_copies`.
    pub(super) fn demoted_owner(&self, rec: &Record) -> bool {
        let Some(copy) = &rec.copy else { return false };
        rec.owner.is_none()
            && matches!(copy.body, Body::Live { .. })
            && copy.epoch.node == self.me
            && copy.epoch.incarnation == self.incarnation
            && rec.promised.as_ref().is_some_and(|p| *p >= copy.epoch)
    }

    /// Takes back a session this node owned before a higher claim demoted it, when that claim
    /// did not produce an owner: a new claim at a higher epoch, to every live peer, as any
    /// acquisition (so fencing by epochs stays intact: it collects every live copy and
    /// continues from the newest, and demotes an owner it did not know of).
    pub(super) fn resume(&mut self, now: Instant, session: &str) {
        if !self.can_own
            || self.leave.is_leaving()
            || self.leave.has_left()
            || self.acquires.contains(session)
            || !self.sessions.get(session).is_some_and(|r| self.demoted_owner(r))
            || self.at_pending_limit()
            || !self.view.settled(now)
        {
            return;
        }
        self.start_acquire(now, session, Vec::new(), true, 0, 0);
    }

    /// The fallback of [`Message::Release`] (lost, or the claim that demoted this node was
    /// seen first by a backup whose `Fenced` answer demoted it): a demoted owner that, twice
    /// the request timeout after it was demoted, has heard of no new owner (no copy at a newer
    /// epoch, no `Drop`) resumes. If an owner does exist and only its `Drop` was lost, the new
    /// claim moves the session here, safely.
    fn maybe_resume(&mut self, now: Instant, session: &str) {
        let Some(rec) = self.sessions.get(session) else { return };
        if due(now, self.stamps.instant(rec.last_heard), self.request_timeout * 2) {
            self.resume(now, session);
        }
    }

    /// Whether `maybe_failover` may act on this record (its cheap part, without the view):
    /// a live copy that this node does not own, whose owner is this node (a demoted owner
    /// may resume) or is gone (down, unknown, or restarted since the copy's epoch).
    pub(super) fn failover_candidate(&self, rec: &Record) -> bool {
        let Some(copy) = &rec.copy else { return false };
        if rec.owner.is_some() || !matches!(copy.body, Body::Live { .. }) {
            return false;
        }
        copy.epoch.node == self.me || self.owner_gone(&copy.epoch)
    }

    /// Peer-to-peer hot failover: acquires a backed-up session whose owner failed when this
    /// node is its failover target.
    /// Also resumes a demoted owner's session (any topology), see `maybe_resume`.
    pub(super) fn maybe_failover(&mut self, now: Instant, session: &str) {
        let Some(rec) = self.sessions.get(session) else { return };
        let settled = self.failover_settled(now);
        let step = self.failover_step(now, session, rec, settled);
        self.take_failover_step(now, session, step);
    }

    /// Does what `failover_step` decided.
    pub(super) fn take_failover_step(&mut self, now: Instant, session: &str, step: FailoverStep) {
        match step {
            FailoverStep::Resume => self.maybe_resume(now, session),
            FailoverStep::Claim => self.claim_orphan(now, session),
            FailoverStep::Nothing => {}
        }
    }

    /// Whether the view allows taking sessions over: settled, and (back from isolation)
    /// every live peer heard first (two heartbeats, or a complete view since). The same for
    /// every session of a pass.
    pub(super) fn failover_settled(&self, now: Instant) -> bool {
        self.view.settled(now)
            && (self.view.seen_enough_since.is_some_and(|t| due(now, t, self.heartbeat_interval * 2))
                || self.view.complete_since_enough())
    }

    /// What `maybe_failover` does with the record `rec` of `session`, decided without
    /// changing anything (so that a replan pass decides while it reads the session map, and
    /// looks up only the sessions it claims). `settled` is `failover_settled`. The number of
    /// pending commands is checked when the claim starts (`claim_orphan`).
    pub(super) fn failover_step(
        &self,
        now: Instant,
        session: &str,
        rec: &Record,
        settled: bool,
    ) -> FailoverStep {
        if self.demoted_owner(rec) {
            return FailoverStep::Resume;
        }
        if !self.can_own
            || self.leave.is_leaving()
            || self.placement.topology() != Topology::PeerToPeer
            || !settled
            || self.acquires.contains(session)
        {
            return FailoverStep::Nothing;
        }
        let Some(owner) = self.orphaned(now, rec, self.request_timeout * 2) else {
            return FailoverStep::Nothing;
        };
        if self.acquires.held_over(&owner, now) {
            return FailoverStep::Nothing;
        }
        if self.failover_target_is_me(session, &owner) || self.unclaimed_after_change(now, rec, &owner) {
            FailoverStep::Claim
        } else {
            FailoverStep::Nothing
        }
    }

    /// Starts the failover claim `failover_step` decided on, if there is room for it (in the
    /// pending commands, and in the failover window).
    fn claim_orphan(&mut self, now: Instant, session: &str) {
        if !self.at_pending_limit() && self.acquires.failovers() < self.failover_window() {
            self.start_acquire(now, session, Vec::new(), true, 0, 0);
        }
    }

    /// How many failover claims (and resumptions) may be in flight at once: eight times
    /// `scan_batch`, what one replan batch may start. A mass failover (a node that owned
    /// a million sessions) claims in a stream bounded by it, each batch as answers make room,
    /// not all at once: the claims and their answers never queue up by the hundred thousand
    /// between two nodes, so no step of either grows long enough for its lease to lapse (a
    /// lapse steps it down from what it claimed, and it claims again), and a session requested
    /// meanwhile is claimed behind at most one window (its fetch starts its own claim at once,
    /// see `get`). Regression test: `a_mass_failover_claims_within_its_window`.
    pub(super) fn failover_window(&self) -> usize {
        self.settings.scan_batch.max(1).saturating_mul(8)
    }

    /// The failed owner of a session this node holds a live backup copy of, when nobody
    /// takes care of it: the owner is down, left or restarted, and no live claimant is taking
    /// it over (a claimant's promise counts for `patience`: a claim that failed and whose
    /// `Release` was lost must not keep the session ownerless).
    pub(super) fn orphaned(&self, now: Instant, rec: &Record, patience: Duration) -> Option<NodeId> {
        if rec.owner.is_some() {
            return None;
        }
        let copy = rec.copy.as_ref()?;
        if matches!(copy.body, Body::Tombstone) {
            return None;
        }
        let owner = &copy.epoch.node;
        if *owner == self.me {
            return None;
        }
        // Someone with a higher epoch (a claimant) that is live takes care of it.
        if let Some(p) = &rec.promised {
            if p.node != *owner
                && p.node != self.me
                && self.is_live(&p.node)
                && !due(now, self.stamps.instant(rec.last_heard), patience)
            {
                return None;
            }
        }
        // The epoch names the incarnation that owned at it: a restarted owner is gone too
        // (even when this node had not heard its incarnation when the copy came).
        self.owner_gone(&copy.epoch).then(|| owner.clone())
    }
}
