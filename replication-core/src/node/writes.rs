//! Owner writes (create, update, invalidate) and their pending acknowledgements.

use super::Node;
use super::flow::Pace;
use super::outbox::Outbox;
use super::store::{OwnerState, Record, ReplicaMap};
use crate::api::{Ack, Event, Outcome, RequestId};
use crate::config::NodeId;
use crate::message::{Attributes, Body, Change, Epoch, Message, Payload, Snapshot, Version};
use crate::slim::{InlineSet, SlimSet, SlimVec};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(super) struct PendingWrite {
    session: String,
    pub(super) epoch: Epoch,
    pub(super) version: Version,
    needed: u32,
    /// Backups that acknowledged it (inline: no allocation for up to four).
    acks: InlineSet<NodeId>,
    /// When it is reported [`Outcome::Indeterminate`] if not acknowledged by then.
    deadline: Instant,
    /// Reads (`Get`) of the session that wait for it (see `reads`): served again once it is
    /// acknowledged, answered [`Outcome::Unavailable`] if it is not.
    pub(super) reads: Vec<RequestId>,
}

impl PendingWrite {
    /// How many backups acknowledged it.
    pub(super) fn acks_count(&self) -> u32 {
        u32::try_from(self.acks.len()).unwrap_or(u32::MAX)
    }
}

/// The sync writes waiting for their backups' acknowledgements, and their deadlines.
#[derive(Debug, Default)]
pub(super) struct Writes {
    pending: BTreeMap<RequestId, PendingWrite>,
    /// `(deadline, id)` of the writes, earliest first. A write that ends otherwise than at
    /// its deadline removes its entry, except one timed out early (`time_out`): that entry
    /// fires later for nothing.
    deadlines: BTreeSet<(Instant, RequestId)>,
}

impl Writes {
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn ids(&self) -> Vec<RequestId> {
        self.pending.keys().copied().collect()
    }

    pub(super) fn get(&self, id: RequestId) -> Option<&PendingWrite> {
        self.pending.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: RequestId) -> Option<&mut PendingWrite> {
        self.pending.get_mut(&id)
    }

    pub(super) fn insert(&mut self, id: RequestId, w: PendingWrite) {
        self.deadlines.insert((w.deadline, id));
        self.pending.insert(id, w);
    }

    /// Removes a write that ends (acknowledged, fenced), with its deadline.
    pub(super) fn remove(&mut self, id: RequestId) -> Option<PendingWrite> {
        let w = self.pending.remove(&id)?;
        self.deadlines.remove(&(w.deadline, id));
        Some(w)
    }

    /// Removes a write that times out (its deadline, or the end of its session or of the
    /// node): its deadline entry stays until it fires.
    fn time_out(&mut self, id: RequestId) -> Option<PendingWrite> {
        self.pending.remove(&id)
    }

    /// Ends the writes `ids` (an owner state's waiting ones) with the outcome `outcome` makes
    /// of each.
    pub(super) fn fail(
        &mut self,
        ids: impl IntoIterator<Item = RequestId>,
        out: &mut Outbox,
        outcome: impl Fn(PendingWrite) -> Outcome,
    ) {
        for id in ids {
            if let Some(mut w) = self.remove(id) {
                unavailable(out, &mut w.reads);
                out.outcome(id, outcome(w));
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The next write whose deadline is due at `now`, its deadline entry removed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<RequestId> {
        if self.deadlines.first().is_none_or(|(at, _)| *at > now) {
            return None;
        }
        self.deadlines.pop_first().map(|(_, id)| id)
    }

    /// Forgets every deadline (the node left).
    pub(super) fn clear_deadlines(&mut self) {
        self.deadlines.clear();
    }
}

/// Answers the reads that waited for a write that was not acknowledged: tried again by the
/// caller within its request timeout.
fn unavailable(out: &mut Outbox, reads: &mut Vec<RequestId>) {
    for id in reads.drain(..) {
        out.outcome(id, Outcome::Unavailable);
    }
}

pub(super) enum WriteKind {
    Changes(Vec<Change>),
    Tombstone,
}

pub(super) fn payload_size(p: &Payload) -> u64 {
    let n = match p {
        Payload::Delta { changes, .. } => changes.iter().map(Change::size).sum(),
        Payload::Full { body: Body::Live { attrs, .. }, .. } => {
            attrs.iter().map(|(k, v)| k.len() + v.len() + 8).sum()
        }
        Payload::Full { body: Body::Tombstone, .. } | Payload::Touch { .. } => 8,
    };
    n as u64
}

impl Node {
    /// Whether the sync writes and acquires pending reach [`Settings::max_pending`]: a new
    /// one is refused ([`Outcome::Busy`]) or waits (a failover, a resume).
    pub(super) fn at_pending_limit(&self) -> bool {
        self.writes.len() + self.acquires.len() >= self.settings.max_pending
    }

    fn owner_hint(&self, session: &str) -> Option<NodeId> {
        let rec = self.sessions.get(session)?;
        if rec.owner.is_some() {
            return Some(self.me.clone());
        }
        rec.promised
            .as_ref()
            .or(rec.copy.as_ref().map(|c| &c.epoch))
            .map(|e| e.node.clone())
            .filter(|n| *n != self.me)
    }

    pub(super) fn create(
        &mut self,
        now: Instant,
        id: RequestId,
        session: String,
        attrs: Attributes,
        max_inactive: Duration,
        ack: Ack,
    ) {
        if !self.can_own {
            return self.out.outcome(id, Outcome::NotAllowed);
        }
        if !self.holds_lease(now) {
            // A node cut off from the majority may not know the id is taken (see `lease`).
            return self.out.outcome(id, Outcome::Unavailable);
        }
        let held = self.sessions.len();
        if held >= self.settings.max_sessions && self.sessions.get(&session).is_none() {
            let (held, limit) = (held as u64, self.settings.max_sessions as u64);
            return self.out.outcome(id, Outcome::Full { held, limit });
        }
        let size = attrs.encoded_size() as u64;
        if size > self.max_session_bytes {
            return self.out.outcome(id, Outcome::TooLarge { size, limit: self.max_session_bytes });
        }
        // A promise without data (a fetch of an unknown id passed by) does not make it exist,
        // but the new epoch must be above it.
        let promised_term = match self.sessions.get(&session) {
            Some(r) if r.copy.is_some() || r.owner.is_some() => None,
            Some(r) => Some(r.promised.as_ref().map_or(0, |p| p.term)),
            None => Some(0),
        };
        let Some(promised_term) = promised_term.filter(|_| !self.acquires.contains(&session)) else {
            return self.out.outcome(id, Outcome::AlreadyExists);
        };
        if matches!(ack, Ack::Sync { backups } if backups > 0) && self.at_pending_limit() {
            return self.out.outcome(id, Outcome::Busy);
        }
        let epoch = Epoch::new(promised_term + 1, self.me.clone(), self.incarnation);
        let max_inactive_ms = u64::try_from(max_inactive.as_millis()).unwrap_or(u64::MAX);
        let copy = Snapshot { epoch: epoch.clone(), version: 1, body: Body::Live { attrs, max_inactive_ms } };
        let mut rec = Record::empty(self.stamps.stamp(now));
        rec.promised = Some(epoch.clone());
        rec.copy = Some(copy);
        rec.owner = Some(Box::new(self.new_owner_state(now)));
        self.sessions.insert(session.clone(), rec);
        self.plan(&session, now);
        self.send_full_to_lagging(&session, now, false, Pace::No);
        self.complete_write(now, Some(id), &session, ack);
    }

    fn new_owner_state(&self, now: Instant) -> OwnerState {
        let now = self.stamps.stamp(now);
        OwnerState {
            last_access: now,
            touched: false,
            last_touch: now,
            replicas: ReplicaMap::default(),
            stale: SlimSet::default(),
            view_gen: u64::MAX, // forces a plan
            under: false,
            waiting: SlimVec::default(),
            unacked_since: None,
            unconfirmed: false,
            gap: self.lapses.current(),
        }
    }

    pub(super) fn update(
        &mut self,
        now: Instant,
        id: RequestId,
        session: &str,
        expected: Option<Version>,
        kind: WriteKind,
        ack: Ack,
    ) {
        let hint = self.owner_hint(session);
        let busy = matches!(ack, Ack::Sync { backups } if backups > 0) && self.at_pending_limit();
        let Some(Record { owner: Some(_), copy: Some(copy), .. }) = self.sessions.get(session) else {
            return self.out.outcome(id, Outcome::NotOwner { owner: hint });
        };
        if !self.holds_lease(now) {
            // Another node may have taken it over (see `lease`).
            return self.out.outcome(id, Outcome::Unavailable);
        }
        if matches!(copy.body, Body::Tombstone) {
            return self.out.outcome(id, Outcome::NotFound);
        }
        if let Some(v) = expected {
            if v != copy.version {
                return self.out.outcome(id, Outcome::Conflict { current_version: copy.version });
            }
        }
        if let (WriteKind::Changes(changes), Body::Live { attrs, .. }) = (&kind, &copy.body) {
            // A session larger than a frame could not be fetched, re-replicated or handed over:
            // an acknowledged write would become unreadable. Refused before anything is applied.
            let size = attrs.encoded_size_after(changes);
            if size as u64 > self.max_session_bytes && size > attrs.encoded_size() {
                return self
                    .out
                    .outcome(id, Outcome::TooLarge { size: size as u64, limit: self.max_session_bytes });
            }
        }
        if busy {
            return self.out.outcome(id, Outcome::Busy);
        }
        let invalidating = matches!(kind, WriteKind::Tombstone);
        self.apply_owner_write(now, session, kind);
        if invalidating {
            self.out.event(Event::SessionInvalidated { session: session.to_owned() });
        }
        self.complete_write(now, Some(id), session, ack);
    }

    /// Applies a write on an owned live session and sends it to the backups.
    pub(super) fn apply_owner_write(&mut self, now: Instant, session: &str, kind: WriteKind) {
        self.plan(session, now);
        let ttl = self.settings.tombstone_ttl;
        let Some(Record { owner: Some(o), copy: Some(copy), tomb_until, .. }) =
            self.sessions.get_mut(session)
        else {
            return;
        };
        let base = copy.version;
        let stamp = self.stamps.stamp(now);
        if o.unacked_since.is_none() || o.replicas.values().all(|r| r.acked >= Some(base)) {
            o.unacked_since = Some(stamp);
        }
        copy.version += 1;
        let payload = match kind {
            WriteKind::Changes(changes) => {
                if let Body::Live { attrs, .. } = &mut copy.body {
                    attrs.apply(&changes);
                }
                Payload::Delta { base_version: base, version: copy.version, changes }
            }
            WriteKind::Tombstone => {
                copy.body = Body::Tombstone;
                *tomb_until = Some(self.stamps.stamp(now + ttl));
                Payload::Full { version: copy.version, body: Body::Tombstone }
            }
        };
        o.last_access = stamp;
        o.last_touch = stamp;
        o.touched = false;
        let payload = Arc::new(payload);
        let size = payload_size(&payload);
        for (to, r) in o.replicas.iter_mut() {
            if !self.view.is_up(to) {
                continue;
            }
            r.last_sent = Some(stamp);
            self.out.bytes += size;
            self.out.send(
                to,
                Message::Replicate {
                    session: session.to_owned(),
                    epoch: copy.epoch.clone(),
                    payload: payload.clone(),
                },
            );
        }
    }

    /// Reports a write just applied, per `ack`; `id` is `None` for internal writes (expiry).
    fn complete_write(&mut self, now: Instant, id: Option<RequestId>, session: &str, ack: Ack) {
        let Some(Record { owner: Some(o), copy: Some(copy), .. }) = self.sessions.get_mut(session) else {
            return;
        };
        let Some(id) = id else { return };
        let (epoch, version) = (copy.epoch.clone(), copy.version);
        let k = match ack {
            Ack::Async | Ack::Sync { backups: 0 } => {
                return self.out.outcome(id, Outcome::Applied { epoch, version });
            }
            Ack::Sync { backups } => backups,
        };
        o.unconfirmed = true;
        let live = o.replicas.keys().filter(|n| self.view.is_up(n)).count();
        if live == 0 {
            return self.out.outcome(id, Outcome::Unreplicated { epoch, version });
        }
        let needed = k.min(u32::try_from(live).unwrap_or(u32::MAX));
        o.waiting.push(id);
        let deadline = now + self.request_timeout;
        self.writes.insert(
            id,
            PendingWrite {
                session: session.to_owned(),
                epoch,
                version,
                needed,
                acks: InlineSet::default(),
                deadline,
                reads: Vec::new(),
            },
        );
    }

    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        from: &NodeId,
        session: &str,
        epoch: &Epoch,
        version: Version,
    ) {
        let Some(Record { owner: Some(o), copy: Some(copy), .. }) = self.sessions.get_mut(session) else {
            return;
        };
        if copy.epoch < *epoch {
            let e = epoch.clone();
            self.demote(session, &e);
            return;
        }
        if copy.epoch != *epoch {
            return;
        }
        let Some(r) = o.replicas.get_mut(from) else {
            self.drop_unplaced(from, session);
            return;
        };
        if r.acked < Some(copy.version) && version >= copy.version && r.last_sent.is_some() {
            // A send completed: room for another paced copy (`Flow::in_flight`).
            if let Some(p) = self.view.peers.get_mut(from) {
                p.flow.landed(now);
            }
        }
        if r.acked < Some(version) {
            r.acked = Some(version);
        }
        if o.replicas.values().all(|r| r.acked >= Some(copy.version)) {
            o.unacked_since = None;
        }
        if version >= copy.version {
            o.unconfirmed = false;
        }
        let acked = version;
        let mut still = Vec::new();
        let mut reads = Vec::new();
        for id in std::mem::take(&mut o.waiting) {
            let Some(w) = self.writes.get_mut(id) else { continue };
            if w.version <= acked && w.epoch == *epoch {
                w.acks.insert(from.clone());
            }
            if w.acks.len() >= w.needed as usize {
                let acks = w.acks_count();
                if let Some(mut w) = self.writes.remove(id) {
                    reads.append(&mut w.reads);
                    self.out.outcome(id, Outcome::Replicated { epoch: w.epoch, version: w.version, acks });
                }
            } else {
                still.push(id);
            }
        }
        o.waiting = still.into();
        self.maybe_drop_stale(session);
        for id in reads {
            self.get(now, id, session.to_owned(), true);
        }
    }

    pub(super) fn on_fenced(&mut self, now: Instant, session: &str, epoch: &Epoch) {
        let Some(rec) = self.sessions.get_mut(session) else { return };
        let owned_lower = rec.owner.is_some() && rec.copy.as_ref().is_some_and(|c| c.epoch < *epoch);
        if owned_lower {
            self.demote(session, epoch);
        }
        if self.acquires.get(session).is_some_and(|a| a.epoch < *epoch) {
            self.abort_acquire(now, session, epoch);
        }
    }

    /// Marks an owned session accessed (it does not expire, and the backups hear of it).
    pub(super) fn touch(&mut self, now: Instant, id: RequestId, session: &str) {
        let outcome = match self.sessions.get_mut(session) {
            Some(Record { owner: Some(o), copy: Some(c), .. }) => {
                if matches!(c.body, Body::Tombstone) {
                    Outcome::NotFound
                } else {
                    o.last_access = self.stamps.stamp(now);
                    o.touched = true;
                    Outcome::Touched
                }
            }
            _ => Outcome::NotOwner { owner: self.owner_hint(session) },
        };
        self.out.outcome(id, outcome);
    }

    /// A sync write's deadline passed (or its session or the node ended): reported
    /// [`Outcome::Indeterminate`].
    pub(super) fn write_timed_out(&mut self, id: RequestId) {
        let Some(mut w) = self.writes.time_out(id) else { return };
        unavailable(&mut self.out, &mut w.reads);
        if let Some(Record { owner: Some(o), .. }) = self.sessions.get_mut(&w.session) {
            o.waiting.retain(|x| *x != id);
        }
        let acks = w.acks_count();
        self.out.outcome(id, Outcome::Indeterminate { epoch: w.epoch, version: w.version, acks });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(deadline: Instant) -> PendingWrite {
        PendingWrite {
            session: "s".into(),
            epoch: Epoch::new(1, NodeId::new("a"), 1),
            version: 2,
            needed: 1,
            acks: InlineSet::default(),
            deadline,
            reads: Vec::new(),
        }
    }

    #[test]
    fn deadlines_come_due_in_order_and_leave_with_their_write() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = Writes::default();
        w.insert(1, write(t0 + ms(20)));
        w.insert(2, write(t0 + ms(10)));
        w.insert(3, write(t0 + ms(30)));
        assert!(w.remove(3).is_some());
        assert_eq!(w.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(w.pop_due(t0 + ms(5)), None);
        assert_eq!(w.pop_due(t0 + ms(25)), Some(2));
        assert_eq!(w.pop_due(t0 + ms(25)), Some(1));
        assert_eq!(w.pop_due(t0 + ms(60)), None, "the removed write's deadline went with it");
        assert_eq!(w.len(), 2, "popping a deadline leaves the write to `time_out`");
    }

    #[test]
    fn a_write_timed_out_early_keeps_its_deadline_and_failed_writes_get_one_outcome() {
        let t0 = Instant::now();
        let mut w = Writes::default();
        w.insert(1, write(t0));
        w.insert(2, write(t0));
        assert!(w.time_out(1).is_some());
        assert_eq!(w.next_deadline(), Some(t0), "fires later for nothing");
        let mut out = Outbox::default();
        w.fail([1, 2, 2], &mut out, |w| Outcome::Indeterminate {
            epoch: w.epoch,
            version: w.version,
            acks: 0,
        });
        assert_eq!(out.q.len(), 1, "write 1 was gone already, write 2 ends once");
        assert_eq!(w.len(), 0);
        assert_eq!(w.pop_due(t0), Some(1));
        assert_eq!(w.pop_due(t0), None);
    }
}
