//! The membership view: peers up, down or gone, the majority rule, and when the view is settled
//! enough to take sessions over.

use super::Node;
use super::flow::Flow;
use super::lease::PeerLease;

use crate::api::Event;
use crate::config::NodeId;
use crate::message::Message;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

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
    /// What it heard of this node, and what to echo to it (the read lease).
    pub(super) lease: PeerLease,
    /// When this node first heard its current incarnation, if it knew a former one (see
    /// `Node::answers_over_owners`).
    pub(super) restarted_at: Option<Instant>,
}

impl Peer {
    /// Whether it counts in a majority: up, or not gone by a graceful leave (`majority`).
    pub(super) fn counts(&self) -> bool {
        self.up || self.departed.is_none()
    }

    /// A peer not heard from yet: down.
    pub(super) fn new(flow: Flow) -> Self {
        Peer {
            up: false,
            incarnation: None,
            last_heard: None,
            departed: None,
            ups: 0,
            gone: false,
            flow,
            lease: PeerLease::default(),
            restarted_at: None,
        }
    }
}

/// The view of the domain this node acts on: its peers, up or down, and how long it has seen
/// enough of them to take sessions over (see [`Membership::settled`]).
#[derive(Debug)]
pub(super) struct Membership {
    pub(super) peers: BTreeMap<NodeId, Peer>,
    pub(super) failure_timeout: Duration,
    /// Bumped at every change of the view: an owned session is placed again when its
    /// `OwnerState::view_gen` differs.
    pub(super) generation: u64,
    /// Since when this node has seen more than half the domain live, at maintenance (`None`
    /// while it does not): a node that was cut off hears its peers again one by one, and must
    /// not take a live owner's sessions over before that owner's heartbeat had the time to
    /// arrive too.
    pub(super) seen_enough_since: Option<Instant>,
    /// When this node last saw every peer up (or announced as leaving), at maintenance or
    /// when a peer came up. From then on its view holds every peer that was live: a peer
    /// marked down later was heard before (`settled`).
    complete_since: Option<Instant>,
    /// Whether the view was settled at the last maintenance (see `settled`).
    was_settled: bool,
    /// While an online domain change runs at this node: the peers of the former file and of
    /// the new one, each with whether this node is listed too; a majority must be one in
    /// each (`majority`). Empty otherwise.
    pub(super) joint: Vec<(BTreeSet<NodeId>, bool)>,
}

impl Membership {
    pub(super) fn new(peers: BTreeMap<NodeId, Peer>, failure_timeout: Duration) -> Self {
        Membership {
            peers,
            failure_timeout,
            generation: 0,
            seen_enough_since: None,
            complete_since: None,
            was_settled: false,
            joint: Vec::new(),
        }
    }

    /// Whether `node` (a peer) is up.
    pub(super) fn is_up(&self, node: &NodeId) -> bool {
        self.peers.get(node).is_some_and(|p| p.up)
    }

    /// The peers that are up.
    pub(super) fn up(&self) -> impl Iterator<Item = &NodeId> {
        self.peers.iter().filter(|(_, p)| p.up).map(|(n, _)| n)
    }

    /// The peers that are up and whose silence reached the failure timeout, or that were
    /// reported gone: the failure detection of the maintenance.
    pub(super) fn failed(&self, now: Instant) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.up && (p.gone || p.last_heard.is_none_or(|t| now >= t + self.failure_timeout)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A new view: owned sessions are placed again.
    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == u64::MAX {
            self.generation = 0;
        }
    }

    /// A peer came up: this node may now see enough, or every peer.
    pub(super) fn came_up(&mut self, now: Instant) {
        if self.sees_enough() {
            self.seen_enough_since.get_or_insert(now);
        }
        if self.complete() {
            self.complete_since = Some(now);
        }
    }

    /// The view at maintenance, after its failure detection: whether this node sees enough
    /// (since when), every peer, and whether the view just became settled.
    pub(super) fn observe(&mut self, now: Instant) -> bool {
        self.seen_enough_since =
            if self.sees_enough() { Some(self.seen_enough_since.unwrap_or(now)) } else { None };
        if self.complete() {
            self.complete_since = Some(now);
        }
        let settled = self.settled(now);
        let newly = settled && !self.was_settled;
        self.was_settled = settled;
        newly
    }

    /// The earliest of the failure and settle deadlines: the maintenance runs then.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [self.failure_deadline(), self.settle_deadline()].into_iter().flatten().min()
    }

    /// Whether the failure detection is due at `now`.
    pub(super) fn due(&self, now: Instant) -> bool {
        self.failure_deadline().is_some_and(|d| now >= d)
            || self.peers.values().any(|p| p.up && p.gone)
            || self.settle_deadline().is_some_and(|d| now >= d)
    }

    /// Whether this node sees more than half of the domain live (itself included). An
    /// isolated node must not take sessions over on its own view: it may be the one cut off.
    pub(super) fn sees_enough(&self) -> bool {
        self.majority(1 + self.peers.values().filter(|p| p.up).count())
    }

    /// Whether `nodes` (this one included) are more than half of the domain: two such sets
    /// always share a node, so the two sides of a split domain cannot both take a session over
    /// (with exactly half, as in a four-node domain split two and two, both could: see the test
    /// `an_even_split_leaves_the_sessions_with_their_owners`). Peers that left gracefully and
    /// have not come back do not count: they hold nothing and promise nothing (a domain scaled
    /// down by leaves keeps failing over), and a quorum of the rest still meets any quorum that
    /// counts them. A domain of two is the exception: one node is enough there, or the survivor
    /// of a crash could never take over.
    ///
    /// While an online domain change runs (`joint`), `nodes` must also be a majority of the
    /// former file's nodes and of the new file's, counted in the worst case (the nodes outside
    /// a file among them first): a node still on the former file and a node on the new one
    /// then never both see a majority on two sides of a partition.
    pub(super) fn majority(&self, nodes: usize) -> bool {
        let domain = self.counted();
        let enough = |n: usize, of: usize| if of <= 2 { n >= 1 } else { n * 2 > of };
        enough(nodes, domain)
            && self.joint.iter().all(|(set, me)| {
                let inside = usize::from(*me)
                    + self.peers.iter().filter(|(n, p)| p.counts() && set.contains(*n)).count();
                enough(nodes.saturating_sub(domain - inside), inside)
            })
    }

    /// The nodes a majority is counted among (`majority`): this one and every peer but those
    /// that left and have not come back.
    pub(super) fn counted(&self) -> usize {
        1 + self.peers.values().filter(|p| p.counts()).count()
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
    pub(super) fn settled(&self, now: Instant) -> bool {
        self.sees_enough()
            && (self.complete()
                || self.seen_enough_since.is_some_and(|t| now >= t + self.failure_timeout)
                || self.complete_since_enough())
    }

    /// Whether every peer was up (or leaving) at some instant since this node began to see
    /// enough of the domain: every live peer was heard after any deafness ended.
    pub(super) fn complete_since_enough(&self) -> bool {
        matches!((self.complete_since, self.seen_enough_since), (Some(c), Some(s)) if c >= s)
    }

    /// Whether every peer was up (or leaving) at some instant since this node started.
    pub(super) fn was_complete(&self) -> bool {
        self.complete_since.is_some()
    }

    /// Every peer is up or announced that it leaves.
    fn complete(&self) -> bool {
        self.peers.values().all(|p| p.up || p.departed.is_some())
    }

    /// When the first live peer's silence reaches the failure timeout (it is then declared
    /// down, see `maintenance`).
    fn failure_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter(|p| p.up)
            .filter_map(|p| p.last_heard)
            .min()
            .map(|t| t + self.failure_timeout)
    }

    /// While the view is not settled, when it will be if nothing changes (`settled`: the
    /// failure timeout after this node began to see enough of the domain): the maintenance
    /// runs then, not up to a tick later, and its new replan pass takes over the failovers
    /// skipped until then.
    fn settle_deadline(&self) -> Option<Instant> {
        if self.was_settled {
            return None;
        }
        self.seen_enough_since.map(|t| t + self.failure_timeout)
    }
}

/// What a message says of its sender (see `Node::peer_heard`).
pub(super) enum Heard {
    /// A live peer: the message is taken.
    Live,
    /// The peer announced it leaves: only its answers to this node's claims are taken.
    Departed,
    /// Nothing more to do with the message (an unknown sender, a heartbeat of a departed
    /// incarnation, a `Leaving`).
    Nothing,
}

impl Node {
    /// The membership side of a message from `from`: a restart seen in a heartbeat, a
    /// `Leaving`, and a peer heard (up, if it was down). Returns what the rest of the message
    /// is worth.
    pub(super) fn peer_heard(&mut self, now: Instant, from: &NodeId, msg: &Message) -> Heard {
        let Some(peer) = self.view.peers.get_mut(from) else { return Heard::Nothing };
        match msg {
            Message::Heartbeat { incarnation, .. } => {
                if peer.departed == Some(*incarnation) {
                    return Heard::Nothing;
                }
                peer.departed = None;
                let restarted = peer.incarnation.is_some_and(|i| i != *incarnation);
                peer.incarnation = Some(*incarnation);
                if restarted {
                    peer.restarted_at = Some(now);
                }
                if restarted && peer.up {
                    self.peer_down(now, from);
                } else if restarted {
                    // Down already (it left): the new incarnation never answers the old one's
                    // claims.
                    self.forget_answers(now, from);
                }
            }
            Message::Leaving { incarnation } => {
                peer.departed = Some(*incarnation);
                if peer.up {
                    self.peer_left(now, from);
                }
                return Heard::Nothing;
            }
            _ => {
                if peer.departed.is_some() && peer.departed == peer.incarnation {
                    return Heard::Departed;
                }
            }
        }
        let Some(peer) = self.view.peers.get_mut(from) else { return Heard::Nothing };
        peer.last_heard = Some(now);
        if !peer.up {
            peer.up = true;
            peer.ups += 1;
            let incarnation = peer.incarnation;
            self.out.event(Event::PeerUp { node: from.clone(), incarnation });
            self.view.came_up(now);
            self.view_changed();
            self.quarantine_ask(now, from);
        }
        Heard::Live
    }

    /// Whether `peer`'s answer to a claim over an owner counts: not for the hearing window
    /// after this node first heard the peer's current incarnation, when it knew a former one.
    /// The owner's [read lease](super::lease) may rest on echoes the former incarnation sent
    /// until it went away, and the new one does not know which owners it heard (it answers
    /// such a claim as a node that does not hear the owner). Only a restart this node saw
    /// counts: it slows the failovers that need the restarted peer's answer by at most the
    /// hearing window, and not those of a young domain. Regression test:
    /// `a_peer_restarted_within_the_hearing_window_does_not_vouch_for_a_failover`.
    pub(super) fn answers_over_owners(&self, now: Instant, peer: &NodeId) -> bool {
        self.view
            .peers
            .get(peer)
            .and_then(|p| p.restarted_at)
            .is_none_or(|t| now.saturating_duration_since(t) >= self.hearing_window())
    }

    /// After a long gap without running (the process was paused, the machine slept), peers'
    /// silence says nothing about them: give each a fresh window before suspecting it.
    pub(super) fn woke(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_run);
        self.last_run = now;
        let threshold = self.view.failure_timeout.saturating_sub(self.heartbeat_interval);
        if gap >= threshold && !threshold.is_zero() {
            self.step_down_all();
        }
        if gap > self.view.failure_timeout / 2 {
            let floor = now.checked_sub(self.view.failure_timeout / 2).unwrap_or(now);
            for p in self.view.peers.values_mut() {
                if let Some(t) = &mut p.last_heard {
                    *t = (*t).max(floor);
                }
            }
        }
    }

    pub(super) fn view_changed(&mut self) {
        self.view.bump();
        self.pacing.restart_replan();
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
        if let Some(p) = self.view.peers.get_mut(node) {
            p.up = false;
            p.gone = false;
            p.lease.forget();
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn view(n: usize) -> Membership {
        let peers = (1..n).map(|i| (NodeId::new(&format!("p{i}")), Peer::new(Flow::new(8)))).collect();
        Membership::new(peers, Duration::from_millis(600))
    }

    fn up(v: &mut Membership, i: usize, at: Instant) {
        let p = v.peers.get_mut(&NodeId::new(&format!("p{i}"))).unwrap();
        p.up = true;
        p.last_heard = Some(at);
    }

    #[test]
    fn a_majority_is_more_than_half_except_in_a_domain_of_two() {
        assert!(view(2).majority(1), "the survivor of a crash in a domain of two");
        let mut v = view(4);
        assert!(!v.majority(2), "exactly half is not enough");
        assert!(v.majority(3));
        // A peer that left gracefully and is down does not count.
        v.peers.get_mut(&NodeId::new("p3")).unwrap().departed = Some(1);
        assert!(v.majority(2), "two of three");
    }

    #[test]
    fn a_view_is_settled_once_complete_or_after_the_failure_timeout() {
        let t0 = Instant::now();
        let mut v = view(3);
        assert!(!v.observe(t0), "sees itself only");
        up(&mut v, 1, t0);
        assert!(!v.observe(t0), "sees enough, but p2 may be live and unheard");
        assert_eq!(v.settle_deadline(), Some(t0 + v.failure_timeout));
        assert!(v.observe(t0 + v.failure_timeout), "seen enough for the failure timeout");
        assert!(!v.observe(t0 + v.failure_timeout), "newly settled once");
        assert_eq!(v.settle_deadline(), None);
    }

    #[test]
    fn a_complete_view_is_settled_at_once_and_a_silent_peer_is_due_at_its_timeout() {
        let t0 = Instant::now();
        let mut v = view(3);
        up(&mut v, 1, t0);
        up(&mut v, 2, t0 + Duration::from_millis(100));
        v.came_up(t0);
        assert!(v.settled(t0));
        assert_eq!(v.failure_deadline(), Some(t0 + v.failure_timeout));
        assert!(!v.due(t0));
        assert!(v.due(t0 + v.failure_timeout));
        assert_eq!(v.failed(t0 + v.failure_timeout), vec![NodeId::new("p1")]);
    }
}
