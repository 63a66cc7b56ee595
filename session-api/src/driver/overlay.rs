//! The staged-write overlay: with manual or time-based write frequency a commit is applied to
//! an overlay on this node (reads see it at the logical version) and written to the engine by
//! the next flush, all of a session's staged commits as one engine write.

use replication_core::{Attributes, Change, Command, Outcome, Role, Version};

use super::{Driver, Kind, Reply, Responder};
use crate::config::WriteFrequency;
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

impl Driver {
    pub(super) fn staged(&self) -> bool {
        !matches!(self.settings.write_frequency, WriteFrequency::EndOfRequest)
    }

    /// Forgets the staged state of a session this node no longer owns (ownership lost,
    /// expired): its staged commits are lost, counted and reported.
    pub(super) fn drop_overlay(&mut self, session: &str) {
        self.offsets.remove(session);
        if let Some(o) = self.overlays.remove(session) {
            if o.commits > 0 {
                self.metrics.staged_lost += o.commits;
                self.emit(NodeEvent::StagedWritesLost { session: session.to_owned(), commits: o.commits });
            }
        }
    }

    /// Forgets the staged state of an invalidated session (nothing of it is lost).
    pub(super) fn forget_staged(&mut self, session: &str) {
        self.offsets.remove(session);
        self.overlays.remove(session);
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
        match self.overlays.get(session) {
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
        let commits = self.overlays.get(&session).map_or(0, |o| o.commits);
        let current = view.version + offset + commits;
        if let Some(e) = expected {
            if e != current {
                self.metrics.conflicts += 1;
                return reply.send(Reply::Outcome(Outcome::Conflict { current_version: current }));
            }
        }
        let o = self.overlays.entry(session).or_default();
        o.changes.extend(changes);
        o.commits += 1;
        let epoch = view.epoch.unwrap_or_else(|| {
            replication_core::Epoch::new(0, self.node.id().clone(), self.node.incarnation())
        });
        reply.send(Reply::Outcome(Outcome::Applied { epoch, version: current + 1 }));
    }

    /// Writes every staged change; `reply` gets the report once every write completed.
    pub(super) fn flush(&mut self, reply: Option<Responder>) {
        let overlays: Vec<(String, Overlay)> = self.overlays.drain().collect();
        let waiter = reply.map(|reply| {
            let w = self.next_id;
            self.next_id += 1;
            let report = SyncReport {
                sessions: overlays.len(),
                commits: overlays.iter().map(|(_, o)| o.commits).sum(),
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
        for (session, o) in overlays {
            // The engine advances by one version for the whole batch.
            *self.offsets.entry(session.clone()).or_default() += o.commits.saturating_sub(1);
            let cmd = Command::Update {
                session: session.clone(),
                expected_version: None,
                changes: o.changes,
                ack: self.ack,
            };
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
