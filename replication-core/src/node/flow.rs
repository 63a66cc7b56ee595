//! Flow control towards each peer (see [`Input::Undelivered`](crate::Input::Undelivered)):
//! re-sends and the pacing window.

use super::Node;
use super::store::Record;
use crate::config::NodeId;
use crate::message::{Body, Epoch, Message, Payload, Snapshot};
use std::collections::{BTreeSet, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

/// Flow control towards one peer, fed by [`Input::Undelivered`] and the peer's
/// acknowledgements: what the runtime could not hand to the transport is re-sent at the next
/// step, and full copies from maintenance are paced by a window per step and by the copies
/// the peer has not acknowledged yet ([`Flow::in_flight`]). Bounded: a cursor, a window,
/// claims of pending acquires (at most one per acquire) and [`RETRY_MESSAGES`] /
/// [`RETRY_BYTES`] of small replies.
#[derive(Debug, Clone)]
pub(super) struct Flow {
    /// Owned sessions from this one on (inclusive) may have a copy for this peer that was held
    /// back or dropped (`Replica::last_sent` is `None`): the next steps walk from here and send
    /// them, within the window. Sessions before it were sent or are due for the scan.
    pub(super) resend_from: Option<String>,
    /// Full copies from maintenance per step at most.
    pub(super) window: usize,
    /// What is left of the window in this step.
    pub(super) credit: usize,
    /// Paced full copies sent to it in this step.
    pub(super) offered: usize,
    /// Paced full copies sent to it and neither acknowledged nor refused yet (approximately:
    /// any acknowledgement that completes a send counts): at most [`Flow::limit`], so the
    /// copies waiting in the sockets and in the peer's inbound queue stay few, and a
    /// heartbeat sent after them reaches the peer well within the lease bound
    /// (`rereplication_keeps_the_lease_behind_a_deep_pipe`).
    in_flight: usize,
    /// The most paced copies in flight (the largest window, `scan_batch`).
    limit: usize,
    /// When `in_flight` last went down or was zero: a count that does not go down for a
    /// retransmit interval is of copies lost on the way (a link that reconnected), and
    /// starts again from zero.
    progress: Option<Instant>,
    /// Messages to it undelivered since the step began.
    refused: usize,
    /// Sessions whose claim to this peer was undelivered, re-sent at the next step (each has
    /// a pending acquire: bounded by them).
    claims: BTreeSet<String>,
    /// Small replies undelivered, re-sent at the next step.
    retry: VecDeque<Message>,
    /// Approximate bytes in `retry`.
    retry_bytes: usize,
}

impl Flow {
    /// Whether the peer refused a message in this step or has small replies waiting to be
    /// sent again: a link where what is optional waits.
    pub(super) fn congested(&self) -> bool {
        self.refused > 0 || !self.retry.is_empty()
    }

    pub(super) fn new(window: usize) -> Self {
        Flow {
            resend_from: None,
            window,
            credit: window,
            offered: 0,
            in_flight: 0,
            limit: window,
            progress: None,
            refused: 0,
            claims: BTreeSet::new(),
            retry: VecDeque::new(),
            retry_bytes: 0,
        }
    }

    fn pending(&self) -> bool {
        self.resend_from.is_some() || !self.claims.is_empty() || !self.retry.is_empty()
    }

    /// Lowers the resend cursor to `session`.
    pub(super) fn resend_at(&mut self, session: &str) {
        if self.resend_from.as_deref().is_none_or(|c| session < c) {
            self.resend_from = Some(session.to_owned());
        }
    }

    /// Whether a paced full copy may go to the peer now: credit left in this step, and fewer
    /// than `limit` unacknowledged.
    pub(super) fn may_send(&self) -> bool {
        self.credit > 0 && self.in_flight < self.limit
    }

    /// A paced full copy went to the peer.
    pub(super) fn sent(&mut self) {
        self.credit -= 1;
        self.offered += 1;
        self.in_flight += 1;
    }

    /// The peer acknowledged a send (or refused a copy) at `now`.
    pub(super) fn landed(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.progress = Some(now);
    }

    /// The peer refused a message: nothing more from maintenance until the next step.
    fn refuse(&mut self) {
        self.refused += 1;
        self.credit = 0;
    }

    /// A new step at `now`. After refusals, the window becomes what the peer accepted in the
    /// last step and a half (the queue drains between steps: offering a little more keeps it
    /// busy); after a step that used its whole window without a refusal, it doubles. Then the
    /// credit is the window. Copies in flight that saw no acknowledgement for `lost` are
    /// taken as lost.
    fn step(&mut self, max: usize, now: Instant, lost: Duration) {
        self.limit = max.max(MIN_WINDOW);
        if self.in_flight == 0 {
            self.progress = Some(now);
        } else if self.progress.is_none_or(|t| now.saturating_duration_since(t) >= lost) {
            self.in_flight = 0;
            self.progress = Some(now);
        }
        if self.refused > 0 {
            let accepted = self.offered.saturating_sub(self.refused);
            self.window = accepted.saturating_add(accepted / 2).clamp(MIN_WINDOW, max.max(MIN_WINDOW));
        } else if self.credit == 0 {
            self.window = self.window.saturating_mul(2).min(max);
        }
        self.offered = 0;
        self.refused = 0;
        self.credit = self.window;
    }
}

/// How [`Node::send_full_to_lagging`] paces full copies to a peer.
#[derive(Clone, Copy, Debug)]
pub(super) enum Pace<'a> {
    /// Not at all: the first copy of a write (create), a fetch's takeover, a leave.
    No,
    /// Maintenance (re-replication, retransmission, failover's first copies): within the
    /// peer's window; a copy beyond it, or beyond the peer's resend cursor, is held back for
    /// the resend walk.
    Window,
    /// The resend walk of this peer: only to it, within its window.
    Walk(&'a NodeId),
}

/// Sessions a resend walk reads from the map at a time.
const WALK_CHUNK: usize = 128;

/// Smallest pacing window (full copies per step to one peer).
const MIN_WINDOW: usize = 16;

/// Undelivered small replies kept per peer for a re-send, at most.
const RETRY_MESSAGES: usize = 256;

/// Approximate bytes of undelivered replies (claim answers carry copies) kept per peer.
const RETRY_BYTES: usize = 4 << 20;

/// Approximate size of a message kept for a re-send ([`Flow::retry`]).
fn approx_size(m: &Message) -> usize {
    let body = |c: &Option<Snapshot>| match c {
        Some(Snapshot { body: Body::Live { attrs, .. }, .. }) => {
            attrs.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
        }
        _ => 8,
    };
    match m {
        Message::ClaimAck { session, copy, .. } => 64 + session.len() + body(copy),
        Message::Handoff { copies } => {
            copies.iter().map(|(s, c)| 64 + s.len() + body(&Some(c.clone()))).sum()
        }
        Message::ClaimAcks { acks } => acks.iter().map(|(s, _, c)| 64 + s.len() + body(c)).sum(),
        Message::ClaimsRefused { claims } => claims.iter().map(|(s, _)| 64 + s.len()).sum(),
        Message::Acks { acks } => acks.iter().map(|(s, ..)| 64 + s.len()).sum(),
        m => 64 + m.session().map_or(0, str::len),
    }
}

impl Node {
    /// Whether something undelivered waits for a re-send.
    pub(super) fn flow_pending(&self) -> bool {
        self.view.peers.values().any(|p| p.up && p.flow.pending())
    }

    /// A new step at `now`: every peer's window is adjusted to what it accepted
    /// ([`Flow::step`]), up to `scan_batch`, and its credit refilled.
    pub(super) fn flow_step(&mut self, now: Instant) {
        let max = self.settings.scan_batch.max(1);
        let lost = self.settings.retransmit_interval;
        for p in self.view.peers.values_mut() {
            p.flow.step(max, now, lost);
        }
    }

    /// The runtime could not send `msg` to `to` (see [`Input::Undelivered`]). Which messages
    /// come back is decided once, by [`Message::resent_when_refused`]; the others are ignored
    /// here too.
    pub(super) fn on_undelivered(&mut self, now: Instant, to: &NodeId, msg: Message) {
        let Some(peer) = self.view.peers.get_mut(to) else { return };
        if !peer.up {
            // Its copies are planned again when it comes back; claims wait for no down peer.
            return;
        }
        match msg {
            Message::Replicate { session, epoch, payload } => {
                if matches!(*payload, Payload::Touch { .. }) {
                    // Touches and keep-alives repeat by themselves.
                    return;
                }
                peer.flow.refuse();
                if matches!(*payload, Payload::Full { .. }) {
                    peer.flow.landed(now);
                }
                let Some(Record { owner: Some(o), copy: Some(copy), .. }) = self.sessions.get_mut(&session)
                else {
                    return;
                };
                if copy.epoch != epoch {
                    return;
                }
                let Some(r) = o.replicas.get_mut(to) else { return };
                if r.acked >= Some(copy.version) {
                    return;
                }
                r.last_sent = None;
                peer.flow.resend_at(&session);
            }
            Message::Claim { session, epoch, .. } => self.retry_claims(to, vec![(session, epoch)]),
            Message::Claims { claims } => {
                self.retry_claims(to, claims.into_iter().map(|(s, e, _)| (s, e)).collect())
            }
            Message::Handoff { copies } => {
                // Again at the next maintenance tick, not after a whole retransmit interval.
                peer.flow.refuse();
                for (session, _) in copies {
                    if let Some(h) = self.leave.handoff_mut(&session) {
                        h.sent = None;
                    }
                }
            }
            m @ (Message::Ack { .. }
            | Message::NeedFull { .. }
            | Message::Fenced { .. }
            | Message::ClaimAck { .. }
            | Message::ClaimAcks { .. }
            | Message::ClaimsRefused { .. }
            | Message::Release { .. }
            | Message::Acks { .. }) => {
                let f = &mut peer.flow;
                f.refuse();
                let size = approx_size(&m);
                if f.retry.len() < RETRY_MESSAGES && f.retry_bytes.saturating_add(size) <= RETRY_BYTES {
                    f.retry_bytes += size;
                    f.retry.push_back(m);
                }
            }
            // Heartbeats and leave announcements repeat; a lost drop leaves an orphan that
            // expires; the quarantine asks again.
            _ => {}
        }
    }

    /// Keeps the claims of pending acquires that `to` did not get, for the next step.
    fn retry_claims(&mut self, to: &NodeId, claims: Vec<(String, Epoch)>) {
        let Some(peer) = self.view.peers.get_mut(to) else { return };
        peer.flow.refuse();
        for (s, e) in claims {
            if self.acquires.get(&s).is_some_and(|a| a.epoch == e && a.waiting.contains(to)) {
                peer.flow.claims.insert(s);
            }
        }
    }

    /// Re-sends what was undelivered: small replies, claims, and the copies of each peer's
    /// resend walk (within its window and the re-replication token bucket).
    pub(super) fn resend_step(&mut self, now: Instant) {
        let peers: Vec<NodeId> =
            self.view.peers.iter().filter(|(_, p)| p.flow.pending()).map(|(n, _)| n.clone()).collect();
        for n in peers {
            let Some(p) = self.view.peers.get_mut(&n) else { continue };
            if !p.up {
                p.flow = Flow::new(p.flow.window);
                continue;
            }
            let retry = std::mem::take(&mut p.flow.retry);
            p.flow.retry_bytes = 0;
            let claims = std::mem::take(&mut p.flow.claims);
            for m in retry {
                self.out.send(&n, m);
            }
            let claims: Vec<(String, Epoch, Option<Epoch>)> = claims
                .into_iter()
                .filter_map(|s| {
                    let a = self.acquires.get(&s)?;
                    let (epoch, over) = (a.epoch.clone(), a.over.clone());
                    a.waiting.contains(&n).then_some((s, epoch, over))
                })
                .collect();
            self.send_claims(&n, claims);
            if !self.hold_first_copies {
                self.resend_walk(now, &n);
            }
        }
    }

    /// Walks the owned sessions from the peer's resend cursor, sending the copies held back or
    /// dropped (examines at most eight times `scan_batch` sessions), and leaves the cursor
    /// where the window, the token bucket or the examination budget stopped it. The records
    /// are read in place: only those that lack a copy for the peer are looked up again (most
    /// of the sessions walked, backed up elsewhere or already sent, cost neither a look-up nor
    /// a copy of their id).
    fn resend_walk(&mut self, now: Instant, peer: &NodeId) {
        let Some(p) = self.view.peers.get_mut(peer) else { return };
        if !p.flow.may_send() {
            return;
        }
        let Some(from) = p.flow.resend_from.take() else { return };
        let mut budget = self.settings.scan_batch.max(1).saturating_mul(8);
        // A chunk at a time: the window usually stops the walk long before the budget.
        let mut cursor = Bound::Included(from);
        let stop = 'walk: loop {
            let (mut lacking, mut read, mut last, mut spent) = (Vec::new(), 0, None, None);
            for (k, rec) in self.sessions.range_from(cursor.as_ref().map(String::as_str)).take(WALK_CHUNK) {
                if budget == 0 {
                    spent = Some(k.to_owned());
                    break;
                }
                budget -= 1;
                read += 1;
                if lacks_first_copy(rec, peer) {
                    lacking.push(k.to_owned());
                }
                last = Some(k);
            }
            let last = last.map(str::to_owned);
            for k in lacking {
                let may = self.view.peers.get(peer).is_some_and(|p| p.flow.may_send());
                if !may || !self.pacing.has_token() {
                    break 'walk Some(k);
                }
                let n = self.send_full_to_lagging(&k, now, false, Pace::Walk(peer));
                self.pacing.spend(n);
            }
            match (spent, last) {
                (Some(k), _) => break Some(k),
                (None, Some(k)) if read == WALK_CHUNK => cursor = Bound::Excluded(k),
                _ => break None,
            }
        };
        if let (Some(k), Some(p)) = (stop, self.view.peers.get_mut(peer)) {
            p.flow.resend_at(&k);
        }
    }
}

/// Whether `rec` is an owned session whose placed backup `peer` lacks its current version and
/// was sent nothing since (held back, or dropped on a full queue): what the resend walk sends.
fn lacks_first_copy(rec: &Record, peer: &NodeId) -> bool {
    let (Some(o), Some(copy)) = (rec.owner.as_deref(), rec.copy.as_ref()) else { return false };
    o.replicas.get(peer).is_some_and(|r| r.acked < Some(copy.version) && r.last_sent.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_doubles_when_used_up_and_follows_what_the_peer_accepted_after_refusals() {
        let (now, lost) = (Instant::now(), Duration::from_millis(500));
        let mut f = Flow::new(MIN_WINDOW);
        f.credit = 0;
        f.step(1000, now, lost);
        assert_eq!((f.window, f.credit), (2 * MIN_WINDOW, 2 * MIN_WINDOW), "used up: doubled");
        f.step(1000, now, lost);
        assert_eq!(f.window, 2 * MIN_WINDOW, "not used up: kept");
        f.offered = 100;
        f.refuse();
        f.refuse();
        assert_eq!(f.credit, 0, "nothing more in this step");
        f.step(1000, now, lost);
        assert_eq!(f.window, 98 + 49, "one and a half times what was accepted");
        f.offered = 3;
        f.refuse();
        f.step(1000, now, lost);
        assert_eq!(f.window, MIN_WINDOW, "never below the minimum");
    }

    #[test]
    fn copies_in_flight_are_bounded_until_acknowledged_or_taken_as_lost() {
        let (t0, lost) = (Instant::now(), Duration::from_millis(500));
        let mut f = Flow::new(64);
        f.step(64, t0, lost);
        while f.may_send() {
            f.sent();
        }
        assert_eq!(f.in_flight, 64);
        f.step(64, t0 + Duration::from_millis(10), lost);
        assert!(!f.may_send(), "credit, but 64 unacknowledged");
        f.landed(t0 + Duration::from_millis(20));
        assert!(f.may_send(), "one acknowledged: one more may go");
        f.sent();
        f.step(64, t0 + Duration::from_millis(519), lost);
        assert!(!f.may_send(), "acknowledged within the retransmit interval");
        f.step(64, t0 + Duration::from_millis(520), lost);
        assert!(f.may_send(), "nothing acknowledged for a retransmit interval: taken as lost");
    }

    #[test]
    fn the_resend_cursor_only_goes_down() {
        let mut f = Flow::new(MIN_WINDOW);
        assert!(!f.pending());
        f.resend_at("m");
        f.resend_at("t");
        assert_eq!(f.resend_from.as_deref(), Some("m"));
        f.resend_at("c");
        assert_eq!(f.resend_from.as_deref(), Some("c"));
        assert!(f.pending());
    }
}
