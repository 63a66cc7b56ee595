//! The session store: a record per session (copy, promise, owner state) and the placed backups
//! of an owned one.

use crate::api::RequestId;
use crate::config::NodeId;
use crate::message::{Body, Epoch, Payload, Snapshot, Version};
use crate::session_key::{SessionKey, Sid};
use crate::slim::{SlimSet, SlimVec};
use crate::stamp::Stamp;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(super) struct Replica {
    /// Highest version acknowledged at the owner's current epoch.
    pub(super) acked: Option<Version>,
    pub(super) last_sent: Option<Stamp>,
    /// The peer's incarnation when placed; a change means it lost its copy.
    pub(super) inc: Option<u64>,
    /// The peer's `ups` when placed; a change means it may have missed messages.
    pub(super) ups: u64,
}

/// The placed backups of an owned session and their state, sorted by node (iterated in the
/// same order as a `BTreeMap`). A session has a few backups, and a `BTreeMap` allocates a
/// node for 11 entries (about 800 bytes here) even for one; this holds exactly what is there,
/// the first backup inline (in the owner state's allocation).
#[derive(Debug, Clone, Default)]
pub(super) struct ReplicaMap(SmallVec<[(NodeId, Replica); 1]>);

impl ReplicaMap {
    pub(super) fn find(&self, n: &NodeId) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(n))
    }

    pub(super) fn get(&self, n: &NodeId) -> Option<&Replica> {
        let i = self.find(n).ok()?;
        Some(&self.0[i].1)
    }

    pub(super) fn get_mut(&mut self, n: &NodeId) -> Option<&mut Replica> {
        let i = self.find(n).ok()?;
        Some(&mut self.0[i].1)
    }

    pub(super) fn remove(&mut self, n: &NodeId) -> Option<Replica> {
        let i = self.find(n).ok()?;
        Some(self.0.remove(i).1)
    }

    pub(super) fn get_or_insert_with(&mut self, n: &NodeId, f: impl FnOnce() -> Replica) -> &mut Replica {
        let i = match self.find(n) {
            Ok(i) => i,
            Err(i) => {
                // Exactly one more: `insert` would double the room once it is on the heap.
                self.0.reserve_exact(1);
                self.0.insert(i, (n.clone(), f()));
                i
            }
        };
        &mut self.0[i].1
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Replica)> {
        self.0.iter().map(|(n, r)| (n, r))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&NodeId, &mut Replica)> {
        self.0.iter_mut().map(|(n, r)| (&*n, r))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &NodeId> {
        self.0.iter().map(|(n, _)| n)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Replica> {
        self.0.iter().map(|(_, r)| r)
    }
}

#[derive(Debug, Clone)]
pub(super) struct OwnerState {
    pub(super) last_access: Stamp,
    pub(super) touched: bool,
    pub(super) last_touch: Stamp,
    pub(super) replicas: ReplicaMap,
    /// Former holders, told to drop once the placed backups hold the current version.
    pub(super) stale: SlimSet<NodeId>,
    pub(super) view_gen: u64,
    pub(super) under: bool,
    pub(super) waiting: SlimVec<RequestId>,
    /// When the oldest change not yet acknowledged by every placed backup was made (a backup
    /// placed later: its placement); `None` once all acknowledged. See [`Stats::oldest_unacked`].
    pub(super) unacked_since: Option<Stamp>,
    /// A synchronous write was applied that no backup has acknowledged yet: set by the write,
    /// cleared by an acknowledgement of the whole current copy. A read waits meanwhile (see
    /// `reads`): under synchronous acknowledgement a read never shows a write that a failover
    /// could still lose.
    pub(super) unconfirmed: bool,
    /// The node's lease-gap count when it took the session: an owner state of an older count
    /// is stale and serves nothing (see `lapse`).
    pub(super) gap: u32,
}

#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) promised: Option<Epoch>,
    pub(super) copy: Option<Snapshot>,
    pub(super) owner: Option<Box<OwnerState>>,
    /// Backup: last message about the session. Promise-only: creation time.
    pub(super) last_heard: Stamp,
    /// Removed then: a tombstone, or a promise learned in the restart quarantine.
    pub(super) tomb_until: Option<Stamp>,
}

/// The record of `$session` in `$sessions` (a [`Sessions`]), inserted empty at the stamp
/// `$now` when there is none: one look-up where the record exists, and the id copied only
/// when it does not. A method cannot do that: returning the first `get_mut` from one branch
/// only is not accepted by the borrow checker.
macro_rules! record_or_empty {
    ($sessions:expr, $session:expr, $now:expr) => {
        match $sessions.get_mut($session) {
            Some(r) => r,
            None => $sessions.insert_new($session, $crate::node::store::Record::empty($now)),
        }
    };
}
pub(super) use record_or_empty;

impl Record {
    pub(super) fn empty(now: Stamp) -> Self {
        Record { promised: None, copy: None, owner: None, last_heard: now, tomb_until: None }
    }

    /// Raises the promise to `epoch` if it is lower (a promise never goes down).
    pub(super) fn promise_at_least(&mut self, epoch: &Epoch) {
        if self.promised.as_ref().is_none_or(|p| p < epoch) {
            self.promised = Some(epoch.clone());
        }
    }
}

/// The records by session id, each boxed: a `BTreeMap` node has room for 11 entries and is
/// about 70% full with random ids, so an unused slot costs a pointer instead of a `Record`
/// (about 40 bytes less per session), and a `Box<str>` key instead of a `String` (8 more).
/// The map's API, with ids as `&str` and records unboxed.
#[derive(Debug, Default)]
pub(super) struct Sessions(BTreeMap<SessionKey, Box<Record>>);

impl Sessions {
    /// Records held (copies, tombstones, promises).
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn get(&self, session: &str) -> Option<&Record> {
        self.0.get(Sid::new(session)).map(|r| &**r)
    }

    pub(super) fn get_mut(&mut self, session: &str) -> Option<&mut Record> {
        self.0.get_mut(Sid::new(session)).map(|r| &mut **r)
    }

    /// Inserts `rec` for `session`, which has none (see [`record_or_empty`]).
    pub(super) fn insert_new(&mut self, session: &str, rec: Record) -> &mut Record {
        self.0.entry(SessionKey::from(session)).or_insert_with(|| Box::new(rec))
    }

    pub(super) fn insert(&mut self, session: String, rec: Record) {
        self.0.insert(SessionKey::from(session), Box::new(rec));
    }

    pub(super) fn remove(&mut self, session: &str) -> Option<Record> {
        self.0.remove(Sid::new(session)).map(|r| *r)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Record)> {
        self.0.iter().map(|(k, r)| (k.as_str(), &**r))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(SessionKey::as_str)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Record> {
        self.0.values().map(|r| &**r)
    }

    /// The records in id order, from after `cursor` (from the first without one).
    pub(super) fn after(&self, cursor: Option<&str>) -> impl Iterator<Item = (&str, &Record)> {
        self.range_from(cursor.map_or(Bound::Unbounded, Bound::Excluded))
    }

    /// The records in id order, from `start` on.
    pub(super) fn range_from(&self, start: Bound<&str>) -> impl Iterator<Item = (&str, &Record)> {
        self.0.range::<Sid, _>((start.map(Sid::new), Bound::Unbounded)).map(|(k, r)| (k.as_str(), &**r))
    }
}

/// Whether `after` has passed since `since` (never, when that is beyond what `Instant` holds:
/// `max_inactive` may be huge).
pub(super) fn due(now: Instant, since: Instant, after: Duration) -> bool {
    since.checked_add(after).is_some_and(|t| now >= t)
}

pub(super) fn newer(a: &Snapshot, than: Option<&Snapshot>) -> bool {
    than.is_none_or(|b| a.key() > b.key())
}

pub(super) fn full_payload(copy: &Snapshot) -> Arc<Payload> {
    Arc::new(Payload::Full { version: copy.version, body: copy.body.clone() })
}

pub(super) fn max_inactive_of(copy: &Snapshot) -> Duration {
    match &copy.body {
        Body::Live { max_inactive_ms, .. } => Duration::from_millis(*max_inactive_ms),
        Body::Tombstone => Duration::ZERO,
    }
}
