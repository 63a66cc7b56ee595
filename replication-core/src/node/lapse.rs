//! Stepping down after a lease lapse (or a long pause), in O(1) at the lapse.
//!
//! An owner serves a session only while it has held the lease without a gap since it took the
//! session (see `Node::lease_heard`). The node counts its gaps (`Lapses::count`, bumped at
//! each lapse) and each owner state remembers the count when it took its session
//! (`OwnerState::gap`): an owner state of an older count is stale, stepped down. The lapse
//! itself only bumps the count, ends the writes waiting for acknowledgements (a walk of the
//! pending-writes table, bounded by [`Settings::max_pending`](crate::Settings::max_pending),
//! not of the sessions) and starts a replan pass. A stale owner state is taken away
//! (`Node::settle`) when its session is touched (every command and message about a session
//! settles it first), by the replan pass and by the maintenance scan, all in bounded batches;
//! the demoted owner then resumes its sessions at the pace of the scan, with the claims of a
//! scan batch in one [`Message::Claims`](crate::Message::Claims) per peer. Until then a stale
//! owner state serves nothing: the queries count it as not owned. Regression test:
//! `a_lapse_at_scale_steps_down_in_bounded_steps_and_serves_nothing_across_the_gap`.

use super::Node;
use super::store::{OwnerState, Record};
use crate::api::{Command, Event, Outcome};
use crate::message::{Body, Message};

/// The lease gaps of this node.
#[derive(Debug, Default)]
pub(super) struct Lapses {
    /// How many times this node's lease lapsed (or it woke from a long pause) since it
    /// started: the owner states taken at a lower count are stale.
    count: u32,
    /// Whether stale owner states may remain: from a lapse until a replan pass (restarted at
    /// the lapse) has walked every record.
    sweeping: bool,
}

impl Lapses {
    /// The gap count an owner state taken now carries.
    pub(super) fn current(&self) -> u32 {
        self.count
    }
}

impl Node {
    /// Whether the owner state `o` may serve: it was taken (or created) since the last lapse.
    pub(super) fn current_owner(&self, o: &OwnerState) -> bool {
        o.gap == self.lapses.count
    }

    /// Whether this node owns the session of `rec` and may serve it (its owner state is not
    /// stale).
    pub(super) fn owns(&self, rec: &Record) -> bool {
        rec.owner.as_deref().is_some_and(|o| self.current_owner(o))
    }

    /// Whether `rec` holds an owner state that a lapse made stale (`settle` takes it away).
    pub(super) fn stale_owner(&self, rec: &Record) -> bool {
        rec.owner.as_deref().is_some_and(|o| !self.current_owner(o))
    }

    /// After a gap long enough for peers to have declared this node dead (and taken its
    /// sessions over), it stops owning anything: its copies stay, and the next fetch here
    /// claims the session again with a new epoch, which reaches every holder. Without this, a
    /// backup that restarted meanwhile (and so forgot the promises that fence this node) could
    /// acknowledge writes that the new owner later overwrites. O(pending writes): the owner
    /// states become stale at once and are taken away lazily (see the module docs).
    pub(super) fn step_down_all(&mut self) {
        self.lapses.count = self.lapses.count.wrapping_add(1);
        self.lapses.sweeping = true;
        let ids = self.writes.ids();
        self.writes.fail(ids, &mut self.out, |w| Outcome::Indeterminate {
            acks: w.acks_count(),
            epoch: w.epoch,
            version: w.version,
        });
        // Every record is looked at again, in batches: the stale owner states are taken away
        // (`replan_batch`); the maintenance scan resumes them (`maybe_resume`).
        self.pacing.restart_replan();
    }

    /// Takes away the owner state of `session` if a lapse made it stale: the session is
    /// stepped down from, at its own epoch (a demoted owner, which resumes it later, see
    /// `Node::demoted_owner`). Returns whether it did.
    pub(super) fn settle(&mut self, session: &str) -> bool {
        let count = self.lapses.count;
        let Some(rec) = self.sessions.get_mut(session) else { return false };
        if rec.owner.as_deref().is_none_or(|o| o.gap == count) {
            return false;
        }
        let Some(o) = rec.owner.take() else { return false };
        self.fenced += 1;
        let Some(copy) = &rec.copy else { return true };
        // The writes that waited ended at the lapse; any left end here.
        self.writes.fail(o.waiting, &mut self.out, |w| Outcome::Indeterminate {
            acks: w.acks_count(),
            epoch: w.epoch,
            version: w.version,
        });
        if matches!(copy.body, Body::Live { .. }) {
            let epoch = copy.epoch.clone();
            self.out.event(Event::OwnershipLost { session: session.to_owned(), epoch });
        }
        true
    }

    /// A replan pass walked every record: no stale owner state is left (each one it met was
    /// settled, and no owner state becomes stale but at a lapse, which restarts the pass).
    pub(super) fn replan_pass_complete(&mut self) {
        self.lapses.sweeping = false;
    }

    /// Settles the session a command is about (see `settle`).
    pub(super) fn settle_command(&mut self, cmd: &Command) {
        if !self.lapses.sweeping {
            return;
        }
        match cmd {
            Command::Create { session, .. }
            | Command::Update { session, .. }
            | Command::Invalidate { session, .. }
            | Command::Get { session }
            | Command::Acquire { session }
            | Command::Touch { session } => {
                self.settle(session);
            }
            Command::Leave => {}
        }
    }

    /// Settles the sessions a message is about (see `settle`), before it is handled.
    pub(super) fn settle_message(&mut self, msg: &Message) {
        if !self.lapses.sweeping {
            return;
        }
        let mut settle = |s: &str| {
            self.settle(s);
        };
        match msg {
            Message::Claims { claims } => claims.iter().for_each(|(s, ..)| settle(s)),
            Message::ClaimsRefused { claims } => claims.iter().for_each(|(s, _)| settle(s)),
            Message::ClaimAcks { acks } => acks.iter().for_each(|(s, ..)| settle(s)),
            Message::Handoff { copies } => copies.iter().for_each(|(s, _)| settle(s)),
            Message::Epochs { epochs, .. } => epochs.iter().for_each(|(s, _)| settle(s)),
            Message::HandoffAcks { acks } | Message::Acks { acks } => {
                acks.iter().for_each(|(s, ..)| settle(s))
            }
            _ => {
                if let Some(s) = msg.session() {
                    settle(s);
                }
            }
        }
    }
}
