//! The answering side of an ownership change: promises, deferred claims and refusals.

use super::Node;
use super::acquire::{CLAIMS_PER_MESSAGE, ClaimOf};
use super::store::{due, full_payload};
use super::writes::payload_size;
use crate::config::NodeId;
use crate::message::{Epoch, Message, Snapshot};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Claims whose answer waits at most this many at once (`Node::deferred`; about 120 bytes
/// each); beyond it a claim over an owner this node still hears is refused at once.
const MAX_DEFERRED_CLAIMS: usize = 65_536;

/// Claims of one [`Message::Claims`] (or [`Message::Claim`]) over an owner the receiver still
/// heard: answered when it stops hearing that owner, or refused at `until`.
#[derive(Debug)]
struct DeferredClaims {
    until: Instant,
    from: NodeId,
    claims: Vec<ClaimOf>,
}

/// The claims whose answer waits (see `Node::answer_claims`), in order of their deadline,
/// with the number of claims they hold (at most [`MAX_DEFERRED_CLAIMS`]).
#[derive(Debug, Default)]
pub(super) struct Deferred {
    queue: VecDeque<DeferredClaims>,
    count: usize,
}

impl Deferred {
    /// Whether `more` claims can wait too.
    fn has_room(&self, more: usize) -> bool {
        self.count + more < MAX_DEFERRED_CLAIMS
    }

    fn push(&mut self, d: DeferredClaims) {
        self.count += d.claims.len();
        self.queue.push_back(d);
    }

    fn take(&mut self) -> VecDeque<DeferredClaims> {
        self.count = 0;
        std::mem::take(&mut self.queue)
    }

    /// When the first deferred claims are refused if still waiting.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.queue.front().map(|d| d.until)
    }
}

/// Approximate bytes of copies per [`Message::ClaimAcks`] before another one is started.
pub(super) const CLAIM_ACK_BYTES: u64 = 1 << 20;

impl Node {
    /// Whether the node that owned at `epoch` is gone for this node: another node that is
    /// down, departed or unknown, or runs another incarnation now.
    pub(super) fn owner_gone(&self, epoch: &Epoch) -> bool {
        epoch.node != self.me
            && self
                .view
                .peers
                .get(&epoch.node)
                .is_none_or(|p| !p.up || p.incarnation.is_some_and(|i| i != epoch.incarnation))
    }

    /// Whether this node still hears the incarnation that owned at `epoch`: it is this node,
    /// or a live peer in that incarnation heard within the `hearing_window`. A node that
    /// crashed is silent for longer than that everywhere by the time a peer declares it down
    /// (the heartbeats reach every peer about together), so a genuine failover is not
    /// refused; a peer that only one link lost is still heard by the others.
    pub(super) fn hears_owner(&self, now: Instant, epoch: &Epoch) -> bool {
        if epoch.node == self.me {
            return epoch.incarnation == self.incarnation;
        }
        self.view.peers.get(&epoch.node).is_some_and(|p| {
            p.up && p.departed.is_none()
                && p.incarnation == Some(epoch.incarnation)
                && p.last_heard.is_some_and(|t| !due(now, t, self.hearing_window()))
        })
    }

    /// How recently a peer must have been heard to count as heard: nine tenths of the failure
    /// timeout, so a peer that answers a claim over an owner has not heard it for longer than
    /// the owner's read lease lasts, with the drift margin (see `lease`). It is at least 1.8
    /// heartbeat intervals (the failure timeout is at least two, `validate`): a live peer is
    /// heard every interval, give or take the network.
    pub(super) fn hearing_window(&self) -> Duration {
        self.lease.hearing_window()
    }

    pub(super) fn on_claim(
        &mut self,
        now: Instant,
        from: &NodeId,
        session: String,
        epoch: Epoch,
        over: Option<Epoch>,
    ) {
        if self.refuses(now, &session, &epoch, over.as_ref()) {
            // Deferred like a batch's; answered, if at all, in a `ClaimAcks`.
            self.on_claims(now, from, vec![(session, epoch, over)]);
        } else if let Some(copy) = self.promise(now, from, &session, &epoch) {
            self.out.send(from, Message::ClaimAck { session, epoch, copy });
        }
    }

    /// Whether a claim that fails `over` over is refused because this node still hears that
    /// owner: with one link broken, both of its ends see a majority, and the acquirer would
    /// take the session from an owner that keeps writing, unaware, to backups that may have
    /// forgotten every promise (test
    /// `split_owner_write_acknowledged_by_an_amnesiac_backup_survives`). Nothing is promised. A
    /// claim this node promised already, or is fenced by a higher promise, goes on to `promise`
    /// (answered again, or fenced).
    fn refuses(&self, now: Instant, session: &str, epoch: &Epoch, over: Option<&Epoch>) -> bool {
        over.is_some_and(|o| self.hears_owner(now, o))
            && self.sessions.get(session).and_then(|r| r.promised.as_ref()).is_none_or(|p| p < epoch)
    }

    /// A claim: `None` when refused (a `Fenced` was sent), else the promise is recorded and
    /// the copy to return.
    fn promise(
        &mut self,
        now: Instant,
        from: &NodeId,
        session: &str,
        epoch: &Epoch,
    ) -> Option<Option<Snapshot>> {
        if epoch.node != *from {
            return None;
        }
        // The promise kept shares the peer's name, as in `on_replicate`.
        let epoch = Epoch { node: from.clone(), ..epoch.clone() };
        let stamp = self.stamps.stamp(now);
        self.admit_then(now, from, session, &epoch, |rec| {
            rec.last_heard = stamp;
            rec.copy.clone()
        })
    }

    /// Claims in a batch: answered in batches of at most [`CLAIMS_PER_MESSAGE`] answers and
    /// about [`CLAIM_ACK_BYTES`] of copies.
    pub(super) fn on_claims(
        &mut self,
        now: Instant,
        from: &NodeId,
        claims: Vec<(String, Epoch, Option<Epoch>)>,
    ) {
        let until = now + self.heartbeat_interval;
        self.answer_claims(now, from, claims, Some(until));
    }

    /// Answers claims; those this node refuses because it still hears the owner they fail
    /// over from wait until `defer` (if given, and within [`MAX_DEFERRED_CLAIMS`]) instead of
    /// being refused at once. The survivors of a crash learn of it within moments of each
    /// other, not at once ([`Input::PeerGone`]): the first one's claims may reach another
    /// before its own news does. Refused at once, they would hold the acquirer's failover back
    /// for the hearing window; deferred, they are answered when this node fails the owner
    /// too (`peer_left`), or refused at the deadline if it still hears it.
    fn answer_claims(&mut self, now: Instant, from: &NodeId, claims: Vec<ClaimOf>, defer: Option<Instant>) {
        let mut acks = Vec::new();
        let mut refused = Vec::new();
        let mut deferred = Vec::new();
        let mut bytes = 0;
        for (session, epoch, over) in claims {
            if self.refuses(now, &session, &epoch, over.as_ref()) {
                if defer.is_some() && self.deferred.has_room(deferred.len()) {
                    deferred.push((session, epoch, over));
                } else {
                    refused.push((session, epoch));
                }
                continue;
            }
            let Some(copy) = self.promise(now, from, &session, &epoch) else { continue };
            let size = copy.as_ref().map_or(0, |c| payload_size(&full_payload(c)));
            if !acks.is_empty() && bytes + size > CLAIM_ACK_BYTES {
                // A large copy starts a message of its own: a message holds one session of
                // up to `max_session_bytes` at most, which fits a frame.
                self.out.send(from, Message::ClaimAcks { acks: std::mem::take(&mut acks) });
                bytes = 0;
            }
            bytes += size;
            acks.push((session, epoch, copy));
            if acks.len() >= CLAIMS_PER_MESSAGE || bytes >= CLAIM_ACK_BYTES {
                self.out.send(from, Message::ClaimAcks { acks: std::mem::take(&mut acks) });
                bytes = 0;
            }
        }
        if !acks.is_empty() {
            self.out.send(from, Message::ClaimAcks { acks });
        }
        if !refused.is_empty() {
            self.out.send(from, Message::ClaimsRefused { claims: refused });
        }
        if let Some(until) = defer.filter(|_| !deferred.is_empty()) {
            self.deferred.push(DeferredClaims { until, from: from.clone(), claims: deferred });
        }
    }

    /// Answers deferred claims again: all of them when `all` (an owner was failed: claims
    /// over it are promised now, the others deferred again until their deadline), else
    /// those whose deadline passed (refused if this node still hears their owner).
    pub(super) fn answer_deferred(&mut self, now: Instant, all: bool) {
        if self.deferred.next_deadline().is_none() {
            return;
        }
        let pending = self.deferred.take();
        for d in pending {
            if all || d.until <= now {
                let defer = (d.until > now).then_some(d.until);
                self.answer_claims(now, &d.from, d.claims, defer);
            } else {
                self.deferred.push(d);
            }
        }
    }

    /// A failed acquirer released its claim at `epoch`. Only a promise made for exactly that
    /// claim is affected, and no copy is ever deleted: a promise-only record made for it is
    /// forgotten (a later create of the id is not fenced by it), and an owner that the claim
    /// demoted takes the session back at once with a new claim (`resume`), since no owner
    /// exists at `epoch`. A promise cannot be lowered otherwise: it may have replaced a
    /// promise for another claim that did complete, and lowering it would let the owner the
    /// completed claim fenced be acknowledged again.
    pub(super) fn on_release(&mut self, now: Instant, from: &NodeId, session: &str, epoch: &Epoch) {
        if epoch.node != *from {
            return;
        }
        let Some(rec) = self.sessions.get(session) else { return };
        if rec.promised.as_ref() != Some(epoch) || rec.owner.is_some() || self.acquires.contains(session) {
            return;
        }
        if rec.copy.is_none() {
            self.sessions.remove(session);
        } else {
            self.resume(now, session);
        }
    }
}
