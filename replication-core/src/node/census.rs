//! The counts of the records by kind ([`Stats`] and [`Node::manager_counts`]): a walk of
//! every record, which a large store cannot afford within one step.
//!
//! Up to [`WALKED_AT_ONCE`] records, a query walks them all (exact, a few milliseconds).
//! Above, it answers with the last complete census and asks for the next: the maintenance
//! tick walks [`CENSUS_BATCH`] records per call while a census is asked for, so no step of
//! the driver walks more than that (a walk of a million records takes longer than the read
//! lease's bound, and a node whose driver does not run loses the lease, or its peers'). The
//! counts are then at most one census old: about `records / CENSUS_BATCH` ticks.

use super::Node;
use super::store::Record;
use crate::api::Stats;
use crate::message::{Body, Snapshot};
use crate::scope::ScopedId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Records a query walks at once at most; above, the census answers.
pub(super) const WALKED_AT_ONCE: usize = 1 << 17;

/// Records a census walks per maintenance tick.
const CENSUS_BATCH: usize = 1 << 15;

/// The counts of one walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Counts {
    owned: usize,
    backups: usize,
    tombstones: usize,
    under_replicated: usize,
    oldest_unacked: Option<Instant>,
    /// Per manager, the live sessions owned and the live backup copies.
    managers: BTreeMap<String, (usize, usize)>,
    /// Owned sessions not placed by the current file (`Node::record_placed`); a census only.
    unplaced: usize,
}

/// The census of a large store: the last complete counts and the walk under way.
#[derive(Debug, Default)]
pub(super) struct Census {
    /// A query asked for counts since the last census began.
    wanted: AtomicBool,
    /// The census under way: its counts so far and the last record it walked.
    running: Option<(Counts, Option<String>)>,
    /// The last complete census (empty before the first).
    last: Counts,
}

impl Node {
    /// Adds `rec` (of session `key`) to `c`.
    fn count(&self, c: &mut Counts, key: &str, rec: &Record, want: usize) {
        let owner = rec.owner.as_deref().filter(|o| self.current_owner(o));
        if let (Some(copy), Some(o)) = (&rec.copy, owner) {
            if o.replicas.values().any(|r| r.acked < Some(copy.version)) {
                let since = o.unacked_since.map_or(self.last_run, |t| self.stamps.instant(t));
                c.oldest_unacked = Some(c.oldest_unacked.map_or(since, |t| t.min(since)));
            }
        }
        match (&rec.copy, owner) {
            (Some(Snapshot { body: Body::Tombstone, .. }), _) => c.tombstones += 1,
            (Some(copy), Some(o)) => {
                c.owned += 1;
                let held = o.replicas.values().filter(|r| r.acked >= Some(copy.version)).count();
                if held < want {
                    c.under_replicated += 1;
                }
            }
            (Some(_), None) => c.backups += 1,
            (None, _) => {}
        }
        if matches!(&rec.copy, Some(Snapshot { body: Body::Live { .. }, .. })) {
            // No allocation per session but one per manager.
            let m = ScopedId::parse(key).manager().unwrap_or("");
            let e = match c.managers.get_mut(m) {
                Some(e) => e,
                None => c.managers.entry(m.to_owned()).or_default(),
            };
            if owner.is_some() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
    }

    /// The last complete census when the store is too large for a query to walk, and then a
    /// new census is asked for; `None` when a walk answers.
    fn census_answers(&self) -> Option<&Counts> {
        if self.sessions.len() <= WALKED_AT_ONCE {
            return None;
        }
        self.census.wanted.store(true, Ordering::Relaxed);
        Some(&self.census.last)
    }

    /// The counts now: a walk of every record, or the last census (see the module docs).
    fn counts(&self) -> Counts {
        if let Some(last) = self.census_answers() {
            return last.clone();
        }
        // The same target as `Event::UnderReplicated`: the configured count, not what happens
        // to be live (a session whose only backup node is down is under-replicated).
        let want = self.replica_target();
        let mut c = Counts::default();
        for (key, rec) in self.sessions.iter() {
            self.count(&mut c, key, rec, want);
        }
        c
    }

    /// One batch of the census, when one is asked for or under way (at the maintenance tick).
    pub(super) fn census_step(&mut self) {
        self.census_batch(CENSUS_BATCH);
    }

    /// Walks the next `batch` records of the census asked for or under way.
    fn census_batch(&mut self, batch: usize) {
        let (mut c, cursor) = match self.census.running.take() {
            Some(r) => r,
            None if self.census.wanted.swap(false, Ordering::Relaxed) => (Counts::default(), None),
            None => return,
        };
        let want = self.replica_target();
        let mut last = None;
        let mut walked = 0;
        for (key, rec) in self.sessions.after(cursor.as_deref()).take(batch) {
            self.count(&mut c, key, rec, want);
            if !self.record_placed(key, rec) {
                c.unplaced += 1;
            }
            walked += 1;
            last = Some(key);
        }
        if walked < batch {
            self.census.last = c;
        } else {
            let last = last.map(str::to_owned);
            self.census.running = Some((c, last));
        }
    }

    /// Whether every session this node owns is placed by the current file, for the queries
    /// ([`Node::domain`]): a walk of every record, or the last census above
    /// [`WALKED_AT_ONCE`] records (the walk computes each owned session's placement, so a
    /// metrics snapshot of a million sessions would hold the driver past the lease bound).
    pub(super) fn placed_for_queries(&self) -> bool {
        if let Some(last) = self.census_answers() {
            return last.unplaced == 0;
        }
        self.domain_placed()
    }

    /// Adds the record counts to `s` (see the module docs).
    pub(super) fn add_counts(&self, s: &mut Stats) {
        let c = self.counts();
        s.owned = c.owned;
        s.backups = c.backups;
        s.tombstones = c.tombstones;
        s.under_replicated = c.under_replicated;
        s.oldest_unacked = c.oldest_unacked;
    }

    /// Per manager (`""`: the anonymous one), the live sessions this node owns and the live
    /// backup copies it holds: a walk of every record, or the last census above 131,072
    /// records (see [`Node::stats`]).
    pub fn manager_counts(&self) -> BTreeMap<String, (usize, usize)> {
        self.counts().managers
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::Ack;
    use crate::harness::*;
    use std::time::Duration;

    #[test]
    fn a_census_in_batches_counts_what_a_walk_counts_and_only_when_asked() {
        let mut cl = Cluster::new(&["a", "b", "c"], 1);
        for i in 0..100 {
            create(&mut cl, "a", i, &format!("s{i:03}"), Ack::Async);
            create(&mut cl, "b", 1000 + i, &format!("t{i:03}"), Ack::Async);
        }
        cl.advance(Duration::from_secs(1));
        let a = cl.nodes.get_mut(&id("a")).unwrap();
        let walk = a.counts();
        assert_eq!(walk.owned, 100);
        assert!(walk.backups > 0, "{walk:?}");
        a.census_batch(7);
        assert!(a.census.running.is_none(), "nobody asked");
        a.census.wanted.store(true, Ordering::Relaxed);
        let mut steps = 0;
        loop {
            a.census_batch(7);
            steps += 1;
            if a.census.running.is_none() {
                break;
            }
        }
        assert_eq!(steps, a.sessions.len() / 7 + 1);
        assert_eq!(a.census.last, walk);
        assert_eq!(walk.managers.get("").copied(), Some((walk.owned, walk.backups)));
    }

    #[test]
    fn a_census_counts_the_owned_sessions_not_yet_placed() {
        let mut cl = Cluster::new(&["a", "b", "c"], 1);
        for i in 0..20 {
            create(&mut cl, "a", i, &format!("s{i:03}"), Ack::Async);
        }
        cl.advance(Duration::from_secs(1));
        let census = |cl: &mut Cluster| {
            let a = cl.nodes.get_mut(&id("a")).unwrap();
            a.census.wanted.store(true, Ordering::Relaxed);
            while {
                a.census_batch(3);
                a.census.running.is_some()
            } {}
            (a.census.last.unplaced, a.domain_placed())
        };
        assert_eq!(census(&mut cl), (0, true));
        // Two changes that reach no backup (a's links cut, its peers still up for it).
        cl.cut.insert((id("a"), id("b")));
        cl.cut.insert((id("a"), id("c")));
        set_k(&mut cl, "a", 100, "s003", b"v", Ack::Async);
        set_k(&mut cl, "a", 101, "s011", b"v", Ack::Async);
        cl.pump();
        assert_eq!(census(&mut cl), (2, false));
    }
}
