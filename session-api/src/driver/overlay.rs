//! The staged-write overlay: with manual or time-based write frequency a commit is applied to
//! an overlay on this node (reads see it at the logical version) and written to the engine by
//! the next flush, all of a session's staged commits as one engine write.
//!
//! Write frequency is a per-manager setting ([`crate::ManagerSettings::write_frequency`]): each
//! session manager of the node has a [`Lane`] with its frequency, the acknowledgement its
//! flushes ask for, its next due time (time-based) and its staged sessions. A write is staged
//! when its manager's frequency says so; [`crate::SessionManager::sync`] flushes the lane of
//! the handle's manager only; the driver's one flush timer is armed for the earliest due lane
//! ([`Lanes::next_due`]) and flushes every lane due then. A shutdown flushes every lane.

use std::collections::HashMap;

use replication_core::scope;
use replication_core::{Ack, Attributes, Change, Command, Outcome, Role, Version};
use tokio::time::Instant;

use super::{Driver, Kind, Reply, Responder};
use crate::config::WriteFrequency;
use crate::managers::ManagerTable;
use crate::metrics::NodeEvent;

/// What staged changes a flush wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Sessions written.
    pub sessions: usize,
    /// Staged commits they carried.
    pub commits: u64,
    /// Sessions whose write failed (moved to another node, invalidated, busy...): their staged
    /// changes are lost.
    pub failed: usize,
}

/// Changes committed on this node and not yet written to the engine.
#[derive(Debug, Default)]
pub(super) struct Overlay {
    changes: Vec<Change>,
    pub(super) commits: u64,
}

#[derive(Debug)]
pub(super) struct SyncWaiter {
    remaining: usize,
    pub(super) report: SyncReport,
    pub(super) reply: Responder,
}

/// One session manager's staged writes and when they go out.
#[derive(Debug)]
struct Lane {
    frequency: WriteFrequency,
    /// The acknowledgement a flush of this manager's sessions asks for (the manager's).
    ack: Ack,
    /// When a time-based lane flushes next.
    due: Option<Instant>,
    /// Staged sessions by engine key.
    overlays: HashMap<String, Overlay>,
}

/// Which lanes a flush writes.
#[derive(Clone, Copy, Debug)]
pub(super) enum FlushOf<'a> {
    /// Every lane (a shutdown).
    All,
    /// The lane of one manager (`None`: the anonymous one), for its handle's `sync`.
    Manager(Option<&'a str>),
    /// The time-based lanes due at this instant; each is due again one interval later.
    Due(Instant),
}

/// The lanes of every session manager of the node, by manager name (`""`: the anonymous one;
/// manager names are DNS labels, never empty).
#[derive(Debug, Default)]
pub(super) struct Lanes {
    lanes: HashMap<String, Lane>,
    /// Whether some manager stages its writes (when none does, a write is sent without a
    /// look at its key).
    any_staged: bool,
    /// The earliest due time of a time-based lane.
    next_due: Option<Instant>,
}

impl Lanes {
    /// A lane per manager of `table`, time-based ones due one interval after `now`.
    pub(super) fn new(table: &ManagerTable, now: Instant) -> Self {
        let lanes: HashMap<String, Lane> = table
            .iter()
            .map(|(name, s)| {
                let due = match s.write_frequency {
                    WriteFrequency::TimeBased(d) => Some(now + d),
                    _ => None,
                };
                let lane =
                    Lane { frequency: s.write_frequency, ack: s.core_ack(), due, overlays: HashMap::new() };
                (name.clone().unwrap_or_default(), lane)
            })
            .collect();
        let any_staged = lanes.values().any(|l| l.frequency != WriteFrequency::EndOfRequest);
        let mut lanes = Lanes { lanes, any_staged, next_due: None };
        lanes.next_due = lanes.earliest_due();
        lanes
    }

    /// When the driver's flush timer fires next: the earliest due time-based lane.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.next_due
    }

    fn earliest_due(&self) -> Option<Instant> {
        self.lanes.values().filter_map(|l| l.due).min()
    }

    /// Staged commits of every lane.
    pub(super) fn commits(&self) -> u64 {
        self.lanes.values().flat_map(|l| l.overlays.values()).map(|o| o.commits).sum()
    }

    /// Staged sessions of every lane.
    pub(super) fn sessions(&self) -> usize {
        self.lanes.values().map(|l| l.overlays.len()).sum()
    }

    /// The lane of the manager of engine key `session`.
    fn of(&self, session: &str) -> Option<&Lane> {
        self.lanes.get(scope::manager_of(session).unwrap_or_default())
    }

    fn of_mut(&mut self, session: &str) -> Option<&mut Lane> {
        self.lanes.get_mut(scope::manager_of(session).unwrap_or_default())
    }

    /// Whether a write of `session` is staged: its manager's frequency is manual or
    /// time-based (a manager the node does not host sends at once).
    fn stages(&self, session: &str) -> bool {
        self.any_staged && self.of(session).is_some_and(|l| l.frequency != WriteFrequency::EndOfRequest)
    }

    fn get(&self, session: &str) -> Option<&Overlay> {
        self.of(session)?.overlays.get(session)
    }

    fn remove(&mut self, session: &str) -> Option<Overlay> {
        self.of_mut(session)?.overlays.remove(session)
    }

    /// Takes the staged sessions `which` names, each with the acknowledgement its flush asks
    /// for.
    fn take(&mut self, which: FlushOf<'_>) -> Vec<(String, Overlay, Ack)> {
        let mut taken = Vec::new();
        for (name, lane) in &mut self.lanes {
            let due = match which {
                FlushOf::All => true,
                FlushOf::Manager(m) => name.as_str() == m.unwrap_or_default(),
                FlushOf::Due(now) => match (lane.due, lane.frequency) {
                    (Some(at), WriteFrequency::TimeBased(every)) if at <= now => {
                        lane.due = Some(now + every);
                        true
                    }
                    _ => false,
                },
            };
            if due {
                let ack = lane.ack;
                taken.extend(lane.overlays.drain().map(|(s, o)| (s, o, ack)));
            }
        }
        if matches!(which, FlushOf::Due(_)) {
            self.next_due = self.earliest_due();
        }
        taken
    }
}

impl Driver {
    /// Whether a write of `session` is staged (its manager's write frequency).
    pub(super) fn staged(&self, session: &str) -> bool {
        self.lanes.stages(session)
    }

    /// Forgets the staged state of a session this node no longer owns (ownership lost,
    /// expired): its staged commits are lost, counted and reported.
    pub(super) fn drop_overlay(&mut self, session: &str) {
        self.offsets.remove(session);
        if let Some(o) = self.lanes.remove(session) {
            if o.commits > 0 {
                self.metrics.staged_lost += o.commits;
                self.emit(NodeEvent::StagedWritesLost { session: session.to_owned(), commits: o.commits });
            }
        }
    }

    /// Forgets the staged state of an invalidated session (nothing of it is lost).
    pub(super) fn forget_staged(&mut self, session: &str) {
        self.offsets.remove(session);
        self.lanes.remove(session);
    }

    /// The session as reads see it: the engine's state plus staged changes, at the logical
    /// version.
    pub(super) fn apply_overlay(
        &self,
        session: &str,
        version: Version,
        mut attrs: Attributes,
    ) -> (Version, Attributes) {
        let offset = self.offsets.get(session).copied().unwrap_or(0);
        match self.lanes.get(session) {
            Some(o) if o.commits > 0 => {
                attrs.apply(&o.changes);
                (version + offset + o.commits, attrs)
            }
            _ => (version + offset, attrs),
        }
    }

    pub(super) fn stage(
        &mut self,
        session: String,
        expected: Option<Version>,
        changes: Vec<Change>,
        reply: Responder,
    ) {
        let Some(view) = self.node.session(&session) else {
            return reply.send(Reply::Outcome(Outcome::NotFound));
        };
        if view.invalidated {
            return reply.send(Reply::Outcome(Outcome::NotFound));
        }
        if view.role != Role::Owner {
            return reply.send(Reply::Outcome(Outcome::NotOwner { owner: view.owner }));
        }
        let offset = self.offsets.get(&session).copied().unwrap_or(0);
        let commits = self.lanes.get(&session).map_or(0, |o| o.commits);
        let current = view.version + offset + commits;
        if let Some(e) = expected {
            if e != current {
                self.metrics.conflicts += 1;
                return reply.send(Reply::Outcome(Outcome::Conflict { current_version: current }));
            }
        }
        let epoch = view.epoch.unwrap_or_else(|| {
            replication_core::Epoch::new(0, self.node.id().clone(), self.node.incarnation())
        });
        let Some(lane) = self.lanes.of_mut(&session) else {
            // `staged` said this manager stages: its lane exists.
            return reply.send(Reply::Outcome(Outcome::NotFound));
        };
        let o = lane.overlays.entry(session).or_default();
        o.changes.extend(changes);
        o.commits += 1;
        reply.send(Reply::Outcome(Outcome::Applied { epoch, version: current + 1 }));
    }

    /// Writes the staged changes `which` names; `reply` gets the report once every write
    /// completed.
    pub(super) fn flush(&mut self, which: FlushOf<'_>, reply: Option<Responder>) {
        let overlays = self.lanes.take(which);
        let waiter = reply.map(|reply| {
            let w = self.next_id;
            self.next_id += 1;
            let report = SyncReport {
                sessions: overlays.len(),
                commits: overlays.iter().map(|(_, o, _)| o.commits).sum(),
                failed: 0,
            };
            self.waiters.insert(w, SyncWaiter { remaining: overlays.len(), report, reply });
            w
        });
        if let Some(w) = waiter {
            if overlays.is_empty() {
                return self.sync_done(w);
            }
        }
        for (session, o, ack) in overlays {
            // The engine advances by one version for the whole batch.
            *self.offsets.entry(session.clone()).or_default() += o.commits.saturating_sub(1);
            let cmd =
                Command::Update { session: session.clone(), expected_version: None, changes: o.changes, ack };
            self.command(cmd, None, Kind::Flush { session, commits: o.commits, waiter });
        }
    }

    /// The engine answered the flush of `commits` staged commits of `session`: `written` when
    /// the write was applied, else they are lost (counted and reported).
    pub(super) fn flushed(&mut self, session: String, commits: u64, waiter: Option<u64>, written: bool) {
        if !written {
            self.metrics.staged_lost += commits;
            self.emit(NodeEvent::StagedWritesLost { session, commits });
        }
        if let Some(w) = waiter {
            if let Some(waiter) = self.waiters.get_mut(&w) {
                waiter.remaining = waiter.remaining.saturating_sub(1);
                if !written {
                    waiter.report.failed += 1;
                }
                if waiter.remaining == 0 {
                    self.sync_done(w);
                }
            }
        }
    }

    /// Answers sync waiter `w` with its report.
    fn sync_done(&mut self, w: u64) {
        if let Some(waiter) = self.waiters.remove(&w) {
            waiter.reply.send(Reply::Synced(waiter.report));
        }
    }
}
