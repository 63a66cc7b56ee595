//! The membership view: peers up, down or gone, the majority rule, and when the view is settled enough to take sessions over.

use super::Node;
use super::flow::Flow;
use super::maintenance::Timer;
use crate::api::{Event, Outcome};
use crate::config::NodeId;
use crate::message::Body;
use std::time::Instant;

#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) up: bool,
    pub(super) incarnation: Option<u64>,
    pub(super) last_heard: Option<Instant>,
    /// Incarnation that announced it leaves; its messages are ignored.
    pub(super) departed: Option<u64>,
    /// How many times it came up; a backup that was down may have missed messages.
    pub(super) ups: u64,
    /// Reported gone by the runtime ([`Input::PeerGone`]): failed at the next maintenance,
    /// which that input runs at once, without waiting for the failure timeout.
    pub(super) gone: bool,
    /// Flow control of what goes to it (see [`Input::Undelivered`]).
    pub(super) flow: Flow,
}

impl Node {
    /// When the first live peer's silence reaches the failure timeout (it is then declared
    /// down, see `maintenance`).
    pub(super) fn failure_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter(|p| p.up)
            .filter_map(|p| p.last_heard)
            .min()
            .map(|t| t + self.failure_timeout)
    }

    /// While the view is not settled, when it will be if nothing changes (`view_settled`: the
    /// failure timeout after this node began to see enough of the domain): the maintenance
    /// runs then, not up to a tick later, and its new replan pass takes over the failovers
    /// skipped until then.
    pub(super) fn settle_deadline(&self) -> Option<Instant> {
        if self.was_settled {
            return None;
        }
        self.seen_enough_since.map(|t| t + self.failure_timeout)
    }

    /// After a long gap without running (the process was paused, the machine slept), peers'
    /// silence says nothing about them: give each a fresh window before suspecting it.
    pub(super) fn woke(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_run);
        self.last_run = now;
        let threshold = self.failure_timeout.saturating_sub(self.heartbeat_interval);
        if gap >= threshold && !threshold.is_zero() {
            self.step_down_all();
        }
        if gap > self.failure_timeout / 2 {
            let floor = now.checked_sub(self.failure_timeout / 2).unwrap_or(now);
            for p in self.peers.values_mut() {
                if let Some(t) = &mut p.last_heard {
                    *t = (*t).max(floor);
                }
            }
        }
    }

    /// After a gap long enough for peers to have declared this node dead (and taken its
    /// sessions over), it stops owning anything: its copies stay, and the next fetch here
    /// claims the session again with a new epoch, which reaches every holder. Without this, a
    /// backup that restarted meanwhile (and so forgot the promises that fence this node) could
    /// acknowledge writes that the new owner later overwrites.
    pub(super) fn step_down_all(&mut self) {
        let owned: Vec<String> =
            self.sessions.iter().filter(|(_, r)| r.owner.is_some()).map(|(k, _)| k.to_owned()).collect();
        for s in owned {
            let Some(rec) = self.sessions.get_mut(&s) else { continue };
            let Some(o) = rec.owner.take() else { continue };
            let Some(copy) = &rec.copy else { continue };
            self.fenced += 1;
            for id in o.waiting {
                if let Some(w) = self.writes.remove(&id) {
                    self.timers.remove(&(w.deadline, Timer::Write(id)));
                    let acks = u32::try_from(w.acks.len()).unwrap_or(u32::MAX);
                    self.out.outcome(id, Outcome::Indeterminate { epoch: w.epoch, version: w.version, acks });
                }
            }
            if matches!(copy.body, Body::Live { .. }) {
                self.out.event(Event::OwnershipLost { session: s.clone(), epoch: copy.epoch.clone() });
            }
        }
    }

    /// Whether this node sees more than half of the domain live (itself included). An
    /// isolated node must not take sessions over on its own view: it may be the one cut off.
    pub(super) fn sees_enough(&self) -> bool {
        self.majority(1 + self.peers.values().filter(|p| p.up).count())
    }

    /// Whether `nodes` (this one included) are more than half of the domain: two such sets
    /// always share a node, so the two sides of a split domain cannot both take a session
    /// over (with exactly half, as in a four-node domain split two and two, both could;
    /// finding 9 of docs/reliability.md). Peers that left gracefully and have not come back
    /// do not count: they hold nothing and promise nothing (a domain scaled down by leaves
    /// keeps failing over), and a quorum of the rest still meets any quorum that counts them.
    /// A domain of two is the exception: one node is enough there, or the survivor of a crash
    /// could never take over.
    pub(super) fn majority(&self, nodes: usize) -> bool {
        let domain = 1 + self.peers.values().filter(|p| p.up || p.departed.is_none()).count();
        if domain <= 2 { nodes >= 1 } else { nodes * 2 > domain }
    }

    /// Whether this node's view of the domain can be acted on to take sessions over (hot
    /// failover, fetch, resume): it sees enough of the domain (`sees_enough`), and either
    /// every peer is up (or announced that it leaves) or it has seen enough for the failure
    /// timeout without a break (`seen_enough_since`). A node that did not see enough may have
    /// been the one cut off (a one-way partition: it hears nobody and declares every peer
    /// down); when it hears again, the first peers back make it see enough while the others,
    /// as live as they, are still marked down by its deafness. A claim then goes to the first
    /// ones only and can complete without the owner and the backups that acknowledged its
    /// latest writes (in a four-node domain, itself and one peer are enough). Every live peer
    /// is heard within the failure timeout, so after it a peer still down is down on the
    /// failure detector's word, as for any node.
    ///
    /// A view that was complete (every peer up or leaving, `complete_since`) at some instant
    /// since this node began to see enough is settled too: a peer marked down after that was
    /// heard after any deafness ended, so it is down on the failure detector's word. This is
    /// what lets a young domain (or a node that restarted less than the failure timeout ago)
    /// fail a crashed node over at once.
    pub(super) fn view_settled(&self, now: Instant) -> bool {
        self.sees_enough()
            && (self.view_complete()
                || self.seen_enough_since.is_some_and(|t| now >= t + self.failure_timeout)
                || self.complete_since_enough())
    }

    /// Whether every peer was up (or leaving) at some instant since this node began to see
    /// enough of the domain: every live peer was heard after any deafness ended.
    pub(super) fn complete_since_enough(&self) -> bool {
        matches!((self.complete_since, self.seen_enough_since), (Some(c), Some(s)) if c >= s)
    }

    /// Every peer is up or announced that it leaves.
    pub(super) fn view_complete(&self) -> bool {
        self.peers.values().all(|p| p.up || p.departed.is_some())
    }

    pub(super) fn view_changed(&mut self) {
        self.view_gen = self.view_gen.wrapping_add(1);
        if self.view_gen == u64::MAX {
            self.view_gen = 0;
        }
        self.replan_cursor = Some(None);
    }

    /// A failed peer: down, and its answers to pending claims will not come.
    pub(super) fn peer_down(&mut self, now: Instant, node: &NodeId) {
        self.peer_left(now, node);
        self.forget_answers(now, node);
    }

    /// A peer that announced it leaves: down, but its answers to pending claims may still
    /// arrive (they were sent before its `Leaving`, which may overtake them): the claims keep
    /// waiting for them, until the answer, the peer's restart or the claim's deadline.
    pub(super) fn peer_left(&mut self, now: Instant, node: &NodeId) {
        if let Some(p) = self.peers.get_mut(node) {
            p.up = false;
            p.gone = false;
            // Its copies are planned again when it comes back.
            p.flow = Flow::new(p.flow.window);
        }
        if let Some(q) = &mut self.quarantine {
            q.asked.remove(node);
        }
        self.out.event(Event::PeerDown { node: node.clone() });
        self.view_changed();
        // Claims over it that waited for this node to stop hearing it.
        self.answer_deferred(now, true);
    }
}
