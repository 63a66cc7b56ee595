//! The backup side: copies and deltas received, drops, and hand-offs received at a peer's leave.

use super::Node;
use super::acquire::CLAIMS_PER_MESSAGE;
use super::store::{Record, newer, record_or_empty};
use crate::config::NodeId;
use crate::message::{Body, Epoch, Message, Payload, Snapshot, Version};
use std::time::Instant;

/// A backup's answer to a copy or a delta (see `Node::on_replicate`).
enum ReplicaReply {
    /// Acknowledge the copy held now.
    Ack(Epoch, Version),
    /// The delta does not apply: ask for the whole session.
    NeedFull,
    /// Nothing held to acknowledge.
    Nothing,
}

impl Node {
    /// Records the promise of `epoch` from `from` (a copy or a claim at it), unless a higher
    /// one fences it (answered `Fenced`, and `None`); steps down from an owner or claim below
    /// it. Then `then` on the record, without another look-up unless the epoch demoted this
    /// node's ownership or aborted its own claim.
    pub(super) fn admit_then<R>(
        &mut self,
        now: Instant,
        from: &NodeId,
        session: &str,
        epoch: &Epoch,
        then: impl FnOnce(&mut Record) -> R,
    ) -> Option<R> {
        let stamp = self.stamps.stamp(now);
        let rec = record_or_empty!(self.sessions, session, stamp);
        if let Some(p) = &rec.promised {
            if p > epoch {
                let p = p.clone();
                self.out.send(from, Message::Fenced { session: session.to_owned(), epoch: p });
                return None;
            }
        }
        rec.promised = Some(epoch.clone());
        let owned_lower = rec.owner.is_some() && rec.copy.as_ref().is_some_and(|c| c.epoch < *epoch);
        let abort = self.acquires.get(session).is_some_and(|a| a.epoch < *epoch);
        if !owned_lower && !abort {
            return Some(then(rec));
        }
        if owned_lower {
            self.demote(session, epoch);
        }
        if abort {
            self.abort_acquire(now, session, epoch);
        }
        self.sessions.get_mut(session).map(then)
    }

    pub(super) fn on_replicate(
        &mut self,
        now: Instant,
        from: &NodeId,
        session: String,
        epoch: Epoch,
        payload: &Payload,
    ) {
        if epoch.node != *from || epoch.node == self.me {
            return;
        }
        if self.quarantine.is_some() {
            // No copy here yet: this incarnation may have forgotten a promise that fences the
            // sender. Fence it if a peer already told of a higher epoch; otherwise say nothing
            // (the owner retransmits) until the quarantine is over.
            let rec = self.sessions.get(&session);
            if rec.is_none_or(|r| r.copy.is_none()) {
                if let Some(p) = rec.and_then(|r| r.promised.as_ref()).filter(|p| **p > epoch) {
                    let msg = Message::Fenced { session: session.clone(), epoch: p.clone() };
                    self.out.send(from, msg);
                }
                return;
            }
        }
        // The stored epochs share the peer's name instead of each holding the decoded copy.
        let epoch = Epoch { node: from.clone(), ..epoch };
        let heard = self.stamps.stamp(now);
        let tomb_until = self.stamps.stamp(now + self.settings.tombstone_ttl);
        // One look-up for the promise and the copy (`admit_then`).
        let reply = self.admit_then(now, from, &session, &epoch, |rec| {
            rec.last_heard = heard;
            let same_epoch = rec.copy.as_ref().is_some_and(|c| c.epoch == epoch);
            let stored_version = rec.copy.as_ref().map_or(0, |c| c.version);
            let need_full = match payload {
                Payload::Full { version, body } => {
                    let incoming = Snapshot { epoch: epoch.clone(), version: *version, body: body.clone() };
                    if newer(&incoming, rec.copy.as_ref()) {
                        rec.tomb_until = matches!(body, Body::Tombstone).then_some(tomb_until);
                        rec.copy = Some(incoming);
                    }
                    false
                }
                Payload::Delta { base_version, version, changes } => {
                    if same_epoch && stored_version == *base_version {
                        if let Some(Snapshot { body: Body::Live { attrs, .. }, version: v, .. }) =
                            &mut rec.copy
                        {
                            attrs.apply(changes);
                            *v = *version;
                        }
                        false
                    } else {
                        !(same_epoch && stored_version >= *version)
                    }
                }
                Payload::Touch { version } => !(same_epoch && stored_version >= *version),
            };
            if need_full {
                ReplicaReply::NeedFull
            } else {
                rec.copy
                    .as_ref()
                    .map_or(ReplicaReply::Nothing, |c| ReplicaReply::Ack(c.epoch.clone(), c.version))
            }
        });
        let msg = match reply {
            None | Some(ReplicaReply::Nothing) => return,
            Some(ReplicaReply::NeedFull) => Message::NeedFull { session, epoch },
            Some(ReplicaReply::Ack(epoch, version)) => Message::Ack { session, epoch, version },
        };
        self.out.send(from, msg);
    }

    pub(super) fn on_drop(&mut self, now: Instant, from: &NodeId, session: &str, epoch: &Epoch) {
        if epoch.node != *from {
            return;
        }
        let Some(rec) = self.sessions.get(session) else { return };
        if self.acquires.contains(session) {
            return;
        }
        if rec.owner.is_some() {
            // A newer owner tells a stale one: step down (the copy goes below).
            if rec.copy.as_ref().is_some_and(|c| c.epoch < *epoch) {
                self.demote(session, epoch);
            } else {
                return;
            }
        }
        let Some(rec) = self.sessions.get(session) else { return };
        let keep = match &rec.copy {
            Some(c) => c.epoch > *epoch || matches!(c.body, Body::Tombstone),
            None => rec.promised.as_ref().is_some_and(|p| p > epoch),
        };
        if !keep {
            let same_epoch = rec.copy.as_ref().is_some_and(|c| c.epoch == *epoch);
            // The copy goes; the promise stays a while (a promise-only record, removed by the
            // maintenance scan after twice the request timeout): forgetting it at once let a
            // stale owner's copy, still in flight, be stored and acknowledged here.
            let stamps = self.stamps;
            if let Some(rec) = self.sessions.get_mut(session) {
                rec.copy = None;
                rec.tomb_until = None;
                rec.last_heard = stamps.stamp(now);
                rec.promise_at_least(epoch);
            }
            if same_epoch {
                // The owner may have placed this node again since it sent the drop (messages
                // can be reordered): it then counts a copy that is gone. Tell it; an owner
                // that placed this node sends the copy again, any other ignores it.
                self.out.send(from, Message::NeedFull { session: session.to_owned(), epoch: epoch.clone() });
            }
        }
    }

    /// A leaving node's copy of a session whose owner is gone ([`Message::Handoff`]): kept as
    /// a backup copy when newer than this node's, and acknowledged when this node then holds
    /// it (or something newer). An owner never replaces its own copy with one: it
    /// acknowledges only when its copy is at least as new.
    pub(super) fn on_handoff(&mut self, now: Instant, from: &NodeId, copies: Vec<(String, Snapshot)>) {
        let ttl = self.settings.tombstone_ttl;
        let stamps = self.stamps;
        let mut acks = Vec::with_capacity(copies.len());
        for (session, copy) in copies {
            let (epoch, version) = (copy.epoch.clone(), copy.version);
            let rec = record_or_empty!(self.sessions, &session, stamps.stamp(now));
            if newer(&copy, rec.copy.as_ref()) {
                if rec.owner.is_some() {
                    continue;
                }
                rec.tomb_until = matches!(copy.body, Body::Tombstone).then(|| stamps.stamp(now + ttl));
                // As every holder: no claim below the copy it holds (see `finish_acquire`).
                rec.promise_at_least(&copy.epoch);
                rec.copy = Some(copy);
                rec.last_heard = stamps.stamp(now);
            }
            acks.push((session, epoch, version));
        }
        for chunk in acks.chunks(CLAIMS_PER_MESSAGE) {
            self.out.send(from, Message::HandoffAcks { acks: chunk.to_vec() });
        }
    }
}
