//! The graceful leave: taking over or handing off what only this node holds.

use super::Node;
use super::acquire::CLAIMS_PER_MESSAGE;
use super::answer::CLAIM_ACK_BYTES;
use super::flow::Pace;
use super::store::{Replica, due, full_payload};
use super::writes::payload_size;
use crate::api::{Outcome, RequestId};
use crate::config::{NodeId, Topology};
use crate::message::{Body, Epoch, Message, Snapshot, Version};
use std::collections::BTreeMap;
use std::time::Instant;

/// A copy being handed off at leave (see [`Message::Handoff`]).
#[derive(Debug, Clone)]
pub(super) struct Handoff {
    pub(super) epoch: Epoch,
    pub(super) version: Version,
    /// A receiver acknowledged holding it.
    pub(super) acked: bool,
    /// When it is due to be sent again (`None`: at once: not sent yet, or refused).
    pub(super) sent: Option<Instant>,
    /// When it was last tried, refused or not: the least recently tried go first.
    tried: Option<Instant>,
}

/// Where this node is in a graceful leave ([`Command::Leave`](crate::Command::Leave)): a
/// member, then leaving (`check_leave` at each maintenance takes over or hands off what only
/// this node holds), then gone for good.
#[derive(Debug)]
pub(super) enum Leave {
    Member,
    Leaving(Box<Leaving>),
    Left,
}

/// A leave under way.
#[derive(Debug)]
pub(super) struct Leaving {
    /// The `Leave` command, answered when the leave ends.
    id: RequestId,
    /// When the leave ends even with copies left to take over or hand off.
    deadline: Instant,
    /// The fewest copies left to take over or hand off seen so far; each new low moves the
    /// deadline to a request timeout later (a leave that progresses is not cut short, one
    /// that stalls ends).
    low: usize,
    /// The copies of ownerless sessions handed to other nodes ([`Message::Handoff`]) by a
    /// node that cannot take them over.
    handoffs: BTreeMap<String, Handoff>,
}

impl Leaving {
    pub(super) fn new(id: RequestId, deadline: Instant) -> Self {
        Leaving { id, deadline, low: usize::MAX, handoffs: BTreeMap::new() }
    }

    /// `stuck` copies are left: a new low moves the deadline to `later` at the earliest.
    /// Returns the deadline.
    fn progress(&mut self, stuck: usize, later: Instant) -> Instant {
        if stuck < self.low {
            self.low = stuck;
            self.deadline = self.deadline.max(later);
        }
        self.deadline
    }
}

impl Leave {
    pub(super) fn is_member(&self) -> bool {
        matches!(self, Leave::Member)
    }

    pub(super) fn is_leaving(&self) -> bool {
        matches!(self, Leave::Leaving(_))
    }

    pub(super) fn has_left(&self) -> bool {
        matches!(self, Leave::Left)
    }

    /// Receivers acknowledged holding these copies (`(session, epoch, version)`).
    pub(super) fn handoffs_acked(&mut self, acks: Vec<(String, Epoch, Version)>) {
        for (session, epoch, version) in acks {
            if let Some(h) = self.handoff_mut(&session) {
                if h.epoch == epoch && h.version == version {
                    h.acked = true;
                }
            }
        }
    }

    /// The hand-off of `session` under way, if leaving.
    pub(super) fn handoff_mut(&mut self, session: &str) -> Option<&mut Handoff> {
        match self {
            Leave::Leaving(l) => l.handoffs.get_mut(session),
            _ => None,
        }
    }
}

impl Node {
    /// Sessions a leaving node must take over before it goes, because its copy may be the only
    /// newest one (tests `a_leaving_demoted_owner_*`,
    /// `a_leaving_server_hands_ownerless_copies_to_another_server`): those it owned until a
    /// claim that produced no owner demoted it, and (peer-to-peer) live copies whose owner is
    /// gone with nobody taking them over. Each is claimed like a failover; once owned, it is
    /// handed off like every owned session (the leave waits for its backups). A live claimant
    /// is given the request timeout (its claim's own deadline) to complete first: it has this
    /// node's answer, and completing takes the copy with it.
    ///
    /// Returns the sessions to claim now and how many such copies are left in all (those
    /// whose claimant is still given its time included).
    fn leave_untaken(&self, now: Instant) -> (Vec<String>, usize) {
        if !self.can_own {
            return (Vec::new(), 0);
        }
        let p2p = self.placement.topology() == Topology::PeerToPeer;
        let patience = self.request_timeout;
        let mut ready = Vec::new();
        let mut left = 0;
        for (s, r) in self.sessions.iter().filter(|(s, _)| !self.acquires.contains(s)) {
            let demoted = self.demoted_owner(r);
            let orphan = p2p && self.orphaned(now, r, patience).is_some();
            if !(demoted || orphan) {
                continue;
            }
            left += 1;
            let claimant_busy =
                r.promised.as_ref().is_some_and(|p| p.node != self.me && self.is_live(&p.node))
                    && !due(now, self.stamps.instant(r.last_heard), patience);
            if !(demoted && claimant_busy) {
                ready.push(s.to_owned());
            }
        }
        (ready, left)
    }

    /// Copies a leaving node that cannot take sessions over (a server of a client-server
    /// domain, where clients fetch sessions on demand) must hand to the others: sessions
    /// whose owner is gone, so that this copy may be the newest left.
    fn leave_handoffs(&self, now: Instant) -> Vec<(String, Epoch, Version)> {
        // A peer-to-peer node takes live copies over instead (`leave_untaken`); a tombstone
        // is handed off by every node: a claim would not make it owned, and without it an
        // older live copy elsewhere would bring the invalidated session back.
        let tombstones_only = self.can_own && self.placement.topology() == Topology::PeerToPeer;
        self.sessions
            .iter()
            .filter(|(_, r)| r.owner.is_none() && r.tomb_until.is_none_or(|t| now < self.stamps.instant(t)))
            .filter_map(|(s, r)| {
                let c = r.copy.as_ref()?;
                if tombstones_only && !matches!(c.body, Body::Tombstone) {
                    return None;
                }
                let owner_live = c.epoch.node != self.me
                    && self
                        .view
                        .peers
                        .get(&c.epoch.node)
                        .is_some_and(|p| p.up && p.incarnation == Some(c.epoch.incarnation));
                (!owner_live).then(|| (s.to_owned(), c.epoch.clone(), c.version))
            })
            .collect()
    }

    /// Sends the handoffs not acknowledged yet, each every `retransmit_interval`, to the nodes
    /// that would back the session up without this one. Returns how many are not acknowledged.
    fn send_handoffs(&mut self, now: Instant) -> usize {
        let wanted = self.leave_handoffs(now);
        let Leave::Leaving(leaving) = &mut self.leave else { return 0 };
        let handoffs = &mut leaving.handoffs;
        for (session, epoch, version) in wanted {
            let h = handoffs.entry(session).or_insert_with(|| Handoff {
                epoch: epoch.clone(),
                version,
                acked: false,
                sent: None,
                tried: None,
            });
            if h.epoch != epoch || h.version != version {
                *h = Handoff { epoch, version, acked: false, sent: None, tried: h.tried };
            }
        }
        let every = self.settings.retransmit_interval;
        let pending = handoffs.values().filter(|h| !h.acked).count();
        // At most `CLAIMS_PER_MESSAGE` copies a tick, the least recently tried first, so that a
        // large leave neither floods the peers' queues (a refused batch is due again at the
        // next tick) nor retries the same few while others wait.
        let mut due_now: Vec<(Option<Instant>, String)> = handoffs
            .iter()
            .filter(|(_, h)| !h.acked && h.sent.is_none_or(|t| due(now, t, every)))
            .map(|(s, h)| (h.tried, s.clone()))
            .collect();
        due_now.sort();
        due_now.truncate(CLAIMS_PER_MESSAGE);
        let mut sends: BTreeMap<NodeId, Vec<(String, Snapshot)>> = BTreeMap::new();
        for (_, session) in due_now {
            let Some(h) = handoffs.get_mut(&session) else { continue };
            h.sent = Some(now);
            h.tried = Some(now);
            let Some(copy) = self.sessions.get(&session).and_then(|r| r.copy.clone()) else { continue };
            let me = &self.me;
            let view = &self.view;
            let to = self.placement.backups(&session, &copy.epoch.node, |n| n != me && view.is_up(n));
            for n in to {
                sends.entry(n).or_default().push((session.clone(), copy.clone()));
            }
        }
        // A message per recipient and about `CLAIM_ACK_BYTES` of copies.
        for (to, copies) in sends {
            let mut batch = Vec::new();
            let mut bytes = 0;
            for (session, copy) in copies {
                let size = payload_size(&full_payload(&copy));
                if !batch.is_empty() && bytes + size > CLAIM_ACK_BYTES {
                    // A large copy starts a message of its own (see `answer_claims`).
                    self.out.send(&to, Message::Handoff { copies: std::mem::take(&mut batch) });
                    bytes = 0;
                }
                bytes += size;
                batch.push((session, copy));
                if bytes >= CLAIM_ACK_BYTES {
                    self.out.send(&to, Message::Handoff { copies: std::mem::take(&mut batch) });
                    bytes = 0;
                }
            }
            if !batch.is_empty() {
                self.out.send(&to, Message::Handoff { copies: batch });
            }
        }
        pending
    }

    /// [`Command::Leave`](crate::Command::Leave) `id`: the leave starts.
    pub(super) fn start_leave(&mut self, now: Instant, id: RequestId) {
        // Time to take over what only this node may hold (a claim), then to hand it off.
        self.leave = Leave::Leaving(Box::new(Leaving::new(id, now + self.request_timeout * 2)));
        // Push the latest versions out now rather than at the next retransmit.
        let owned: Vec<String> = self.owned_sessions().map(str::to_owned).collect();
        for s in owned {
            self.plan(&s, now);
            self.send_full_to_lagging(&s, now, false, Pace::No);
        }
        self.check_leave(now);
    }

    /// Moves the leave forward (at each maintenance): claims what only this node may hold,
    /// hands off the ownerless copies, and ends the leave when every copy is held elsewhere
    /// or at its deadline.
    pub(super) fn check_leave(&mut self, now: Instant) {
        let Leave::Leaving(leaving) = &self.leave else { return };
        let id = leaving.id;
        let (takeovers, _) = self.leave_untaken(now);
        self.batching_claims(|node| {
            for session in &takeovers {
                if node.at_pending_limit() || !node.view.sees_enough() {
                    break;
                }
                node.start_acquire(now, session, Vec::new(), true, 0, 0);
            }
        });
        let mut handed_off = 0;
        // Copies that may be the newest and that this node has not taken over (yet) to hand
        // them off; claims started by commands before the leave are waited for too.
        let stuck = self.leave_untaken(now).1 + self.acquires.failovers() + self.send_handoffs(now);
        let mut unreplicated = stuck;
        let mut all_done = stuck == 0 && self.acquires.is_empty();
        for rec in self.sessions.values() {
            // Tombstones too: a backup left with an older live copy would bring the session back.
            let (Some(o), Some(c)) = (&rec.owner, &rec.copy) else { continue };
            let live: Vec<&Replica> =
                o.replicas.iter().filter(|(n, _)| self.view.is_up(n)).map(|(_, r)| r).collect();
            let held = live.iter().filter(|r| r.acked >= Some(c.version)).count();
            if held < live.len() {
                all_done = false;
            }
            if held > 0 {
                handed_off += 1;
            } else {
                unreplicated += 1;
            }
        }
        // A node removed by the file it read first lets the copies move (`removal_waits`).
        let moving = self.removal_waits(now);
        all_done &= !moving;
        let later = now + self.request_timeout;
        let Leave::Leaving(leaving) = &mut self.leave else { return };
        let deadline = leaving.progress(stuck, later);
        if !all_done && (now < deadline || moving) {
            return;
        }
        // A session this node owned until a claim demoted it may exist nowhere else in its
        // newest version: answer that claim once more (its first answer may have been lost on
        // a full queue), so the claimant, still waiting for this node's answer, gets the copy.
        let demoted: Vec<(String, Epoch, Snapshot)> = self
            .sessions
            .iter()
            .filter(|(_, r)| self.demoted_owner(r))
            .filter_map(|(k, r)| Some((k.to_owned(), r.promised.clone()?, r.copy.clone()?)))
            .collect();
        for (session, epoch, copy) in demoted {
            // Not to itself: a demoted owner taking the session back claims it at its own
            // epoch (that acquisition ends with the leave).
            let to = epoch.node.clone();
            if to != self.me && self.view.peers.contains_key(&to) {
                self.out.send(&to, Message::ClaimAck { session, epoch, copy: Some(copy) });
            }
        }
        for p in self.view.peers.keys() {
            self.out.send(p, Message::Leaving { incarnation: self.incarnation });
        }
        for w in self.writes.ids() {
            self.write_timed_out(w);
        }
        for (session, a) in self.acquires.take_all() {
            for (rid, _) in a.requests {
                self.out.outcome(rid, Outcome::Unavailable);
            }
            self.release_claim(session.as_str(), &a.epoch, &a.asked);
        }
        self.writes.clear_deadlines();
        self.acquires.clear_deadlines();
        self.out.outcome(id, Outcome::Left { handed_off, unreplicated });
        self.leave = Leave::Left;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_leave_that_progresses_moves_its_deadline_one_that_stalls_does_not() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Leaving::new(1, t0 + s(4));
        assert_eq!(l.progress(10, t0 + s(2)), t0 + s(4), "never earlier");
        assert_eq!(l.progress(5, t0 + s(6)), t0 + s(6), "a new low");
        assert_eq!(l.progress(5, t0 + s(9)), t0 + s(6), "no progress");
        assert_eq!(l.progress(7, t0 + s(9)), t0 + s(6));
    }
}
