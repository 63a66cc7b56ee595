//! Maintenance: the tick (failure detection, the general scan: expiry, retransmission,
//! touches, orphans) and the replan pass after a view change.

use super::Node;
use super::failover::FailoverStep;
use super::store::{Record, due, max_inactive_of};
use super::writes::WriteKind;
use crate::api::Event;
use crate::message::{Body, Message, Payload};
use std::sync::Arc;
use std::time::Instant;

/// A replan pass examines up to this many times `scan_batch` records (see
/// `replan_batch`).
const REPLAN_EXAMINED: usize = 64;

/// What a replan pass does with a session it examined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replan {
    /// Owned here: place its backups (anew, `replace`, when the view changed since they were
    /// placed) and send what they lack.
    Plan { replace: bool },
    /// Not owned here: the `failover_step` decided while reading the map.
    Failover(FailoverStep),
    /// Owned by a state a lapse made stale: stepped down from (`settle`). The demoted owner
    /// resumes it at the pace of the maintenance scan (`maybe_resume`), not in this pass: a
    /// burst of claims (and of the first copies after them) right after a lapse would make the
    /// next step long and the lease lapse again.
    Settle,
}

impl Node {
    pub(super) fn maintenance(&mut self, now: Instant) {
        self.pacing.refill(now, &self.settings);
        // Failure detection.
        for n in self.view.failed(now) {
            self.peer_down(now, &n);
        }
        // The failovers a replan pass skipped while the view was not settled (a peer failed
        // before this node had seen enough of the domain for the failure timeout) are due when
        // it is: a new pass takes them all then, not the general scan, `scan_batch` a tick.
        if self.view.observe(now) {
            self.pacing.start_replan();
        }
        self.quarantine_tick(now);
        self.census_step();
        self.batching_claims(|node| {
            node.resend_claims(now);
            node.hold_first_copies = node.failovers_pending();
            node.replan_pass(now);
            // General scan: expiry, retransmission, touches, orphans.
            let batch = node.settings.scan_batch.max(1);
            let keys = node.keys_from(node.pacing.scan_cursor.as_deref(), batch);
            node.pacing.scan_cursor = if keys.len() < batch { None } else { keys.last().cloned() };
            for k in keys {
                node.maintain(now, &k);
            }
        });
        self.check_leave(now);
    }

    /// One batch of the replan pass after a view change (re-placement, re-replication within
    /// the token bucket, failover of sessions whose owner is gone).
    pub(super) fn replan_pass(&mut self, now: Instant) {
        self.flow_step(now);
        self.batching_claims(|node| node.replan_batch(now));
        self.resend_step(now);
    }

    /// The sessions of the pass's next batch, planned or failed over (see `replan_pass`).
    fn replan_batch(&mut self, now: Instant) {
        self.pacing.refill(now, &self.settings);
        let Some(cursor) = self.pacing.take_replan(now) else { return };
        // A pass examines up to `REPLAN_EXAMINED` times `scan_batch` records: an owned session
        // costs `REPLAN_EXAMINED` (at most `scan_batch` of them are planned per pass), a
        // failover candidate `REPLAN_EXAMINED / 8` (up to eight times `scan_batch` claims per
        // pass), any other record 1 (most need nothing: the backups of live owners, the
        // promises of other nodes' claims; they are only looked at, their ids not copied).
        let batch = self.settings.scan_batch.max(1);
        let mut budget = batch.saturating_mul(REPLAN_EXAMINED);
        let range = self.sessions.after(cursor.as_deref());
        let settled = self.failover_settled(now);
        let mut todo: Vec<(String, Replan)> = Vec::new();
        let mut exhausted = true;
        let mut last: Option<&str> = None;
        // Failover claims this batch may start: the window's room (`failover_window`).
        let mut room = self.failover_window().saturating_sub(self.acquires.failovers());
        for (k, rec) in range {
            let (cost, act) = if self.stale_owner(rec) {
                (REPLAN_EXAMINED / 8, Some(Replan::Settle))
            } else if let Some(o) = &rec.owner {
                (REPLAN_EXAMINED, Some(Replan::Plan { replace: o.view_gen != self.view.generation }))
            } else if self.failover_candidate(rec) {
                let step = self.failover_step(now, k, rec, settled);
                (REPLAN_EXAMINED / 8, (step != FailoverStep::Nothing).then_some(Replan::Failover(step)))
            } else {
                (1, None)
            };
            let claims = matches!(act, Some(Replan::Failover(_)));
            if cost > budget || (claims && room == 0) {
                // The pass goes on from here at its next batch: with the budget renewed, or
                // once answers to the claims in flight made room in the window.
                exhausted = false;
                break;
            }
            budget -= cost;
            room -= usize::from(claims);
            if let Some(act) = act {
                todo.push((k.to_owned(), act));
            }
            last = Some(k);
        }
        let last = last.map(str::to_owned).or(cursor);
        // Out of tokens, the pass still goes on: failovers send no copies, and the copies
        // of the owned sessions it could not send go out with the maintenance scan, within
        // the same token bucket. Failovers never wait behind re-replication.
        for (k, act) in todo {
            match act {
                Replan::Plan { replace } => self.maintain_owned(&k, now, false, replace),
                // Decided while reading the map: nothing about the session changed since
                // (the claims started before it concern other sessions).
                Replan::Failover(step) => self.take_failover_step(now, &k, step),
                Replan::Settle => {
                    self.settle(&k);
                }
            }
        }
        if exhausted {
            self.replan_pass_complete();
        } else {
            self.pacing.continue_replan(last);
        }
    }

    fn keys_from(&self, cursor: Option<&str>, n: usize) -> Vec<String> {
        self.sessions.after(cursor).take(n).map(|(k, _)| k.to_owned()).collect()
    }

    fn maintain(&mut self, now: Instant, session: &str) {
        if self.acquires.contains(session) {
            return;
        }
        self.settle(session);
        let Some(rec) = self.sessions.get(session) else { return };
        if rec.tomb_until.is_some_and(|t| now >= self.stamps.instant(t)) {
            if let Some(o) = &rec.owner {
                let ids = o.waiting.clone();
                for id in ids {
                    self.write_timed_out(id);
                }
            }
            self.sessions.remove(session);
            return;
        }
        match (&rec.owner, &rec.copy) {
            (Some(o), Some(copy)) => {
                let live = matches!(copy.body, Body::Live { .. });
                let mi = max_inactive_of(copy);
                if live && due(now, self.stamps.instant(o.last_access), mi) {
                    self.apply_owner_write(now, session, WriteKind::Tombstone);
                    self.out.event(Event::SessionExpired { session: session.to_owned() });
                    return;
                }
                let touch_every = self.settings.touch_interval.min(mi / 3);
                let last_touch = self.stamps.instant(o.last_touch);
                let touch_due = o.touched && due(now, last_touch, touch_every);
                let replace = o.view_gen != self.view.generation;
                if live && (touch_due || due(now, last_touch, self.settings.keepalive_interval)) {
                    self.send_touch(now, session);
                }
                self.maintain_owned(session, now, true, replace);
            }
            (None, Some(copy)) => {
                if matches!(copy.body, Body::Live { .. }) {
                    let limit = max_inactive_of(copy).saturating_add(self.settings.orphan_grace);
                    if due(now, self.stamps.instant(rec.last_heard), limit) {
                        self.sessions.remove(session);
                        return;
                    }
                    self.maybe_confirm_placement(now, session);
                    self.maybe_failover(now, session);
                }
            }
            (_, None) => {
                if rec.tomb_until.is_none()
                    && now >= self.stamps.instant(rec.last_heard) + self.request_timeout * 2
                {
                    self.sessions.remove(session);
                }
            }
        }
    }

    /// A backup copy whose owner (the node of its epoch) is up but silent for twice the
    /// keep-alive interval (an owner sends its placed backups a keep-alive at least that often)
    /// is acknowledged to it again ([`Message::Ack`] of what this node holds): an owner that
    /// still owns the session at that epoch and does not place this node answers with a `Drop`
    /// (`Node::drop_unplaced`), so a holder whose `Drop` was lost does not keep a stray copy
    /// until the orphan timeout. At most one such acknowledgement per copy per maintenance
    /// scan, within the re-replication token bucket, and none over a link that refused a
    /// message in this step or has replies waiting to be sent again. Regression test:
    /// `a_holder_whose_drop_was_lost_drops_on_confirmation`.
    fn maybe_confirm_placement(&mut self, now: Instant, session: &str) {
        if self.quarantine.is_some() {
            return;
        }
        let Some(Record { copy: Some(copy), last_heard, owner: None, .. }) = self.sessions.get(session)
        else {
            return;
        };
        let owner = &copy.epoch.node;
        if *owner == self.me
            || !due(now, self.stamps.instant(*last_heard), self.settings.keepalive_interval * 2)
            || !self.pacing.has_token()
        {
            return;
        }
        // Only over a link that takes what it is given: a congested one carries the
        // acknowledgements and copies that matter first.
        let Some(peer) = self.view.peers.get(owner) else { return };
        if !peer.up || peer.flow.congested() {
            return;
        }
        self.pacing.spend(1);
        let msg =
            Message::Ack { session: session.to_owned(), epoch: copy.epoch.clone(), version: copy.version };
        let to = owner.clone();
        self.out.send(&to, msg);
    }

    fn send_touch(&mut self, now: Instant, session: &str) {
        let Some(Record { owner: Some(o), copy: Some(copy), .. }) = self.sessions.get_mut(session) else {
            return;
        };
        o.touched = false;
        o.last_touch = self.stamps.stamp(now);
        let payload = Arc::new(Payload::Touch { version: copy.version });
        for to in o.replicas.keys() {
            if self.view.is_up(to) {
                let msg = Message::Replicate {
                    session: session.to_owned(),
                    epoch: copy.epoch.clone(),
                    payload: payload.clone(),
                };
                self.out.send(to, msg);
            }
        }
    }
}
