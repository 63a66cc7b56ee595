//! The owner side of replication: placing backups and sending them what they lack.

use super::Node;
use super::flow::Pace;
use super::membership::{Membership, Peer};
use super::outbox::Outbox;
use super::store::{OwnerState, Record, Replica, due, full_payload};
use super::writes::payload_size;
use crate::api::{Event, Settings};
use crate::config::NodeId;
use crate::message::{Epoch, Message, Snapshot};
use crate::slim::SlimSet;
use crate::stamp::{Stamp, StampBase};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Places an owned session's backups on `backups` for the view `view_gen` (see `Node::plan`):
/// the holders no longer placed become stale, a backup that restarted or was down is sent
/// everything again. Returns whether the session just became under-replicated (fewer than
/// `want` backups).
pub(super) fn place(
    o: &mut OwnerState,
    backups: &[NodeId],
    peers: &BTreeMap<NodeId, Peer>,
    view_gen: u64,
    now: Stamp,
    want: usize,
) -> bool {
    o.view_gen = view_gen;
    let removed: Vec<NodeId> = o.replicas.keys().filter(|n| !backups.contains(n)).cloned().collect();
    for n in removed {
        o.replicas.remove(&n);
        o.stale.insert(n);
    }
    for b in backups {
        let inc = peers.get(b).and_then(|p| p.incarnation);
        let ups = peers.get(b).map_or(0, |p| p.ups);
        o.stale.remove(b);
        let fresh = Replica { acked: None, last_sent: None, inc, ups };
        let r = o.replicas.get_or_insert_with(b, || fresh.clone());
        if r.inc != inc || r.ups != ups {
            // Restarted (empty) or was down (may have missed writes, or promised a higher
            // epoch to someone else): send it everything again.
            *r = fresh;
        }
        if r.acked.is_none() && o.unacked_since.is_none() {
            o.unacked_since = Some(now);
        }
    }
    if backups.len() < want {
        let newly = !o.under;
        o.under = true;
        newly
    } else {
        o.under = false;
        false
    }
}

impl Node {
    /// How many backups each owned session should have (see [`Placement::target`]).
    pub(super) fn replica_target(&self) -> usize {
        self.placement.target(&self.me, |n| self.view.is_up(n))
    }

    /// Recomputes the backups of an owned session when the view changed since last time.
    pub(super) fn plan(&mut self, session: &str, now: Instant) {
        let view_gen = self.view.generation;
        if !matches!(self.sessions.get(session), Some(Record { owner: Some(o), .. }) if o.view_gen != view_gen)
        {
            return;
        }
        let placed = (self.placed_backups(session), self.replica_target());
        let stamp = self.stamps.stamp(now);
        let mut cx =
            Copies::of(&mut self.view, &mut self.out, &self.stamps, &self.settings, self.hold_first_copies);
        let Some(Record { owner: Some(o), .. }) = self.sessions.get_mut(session) else { return };
        cx.place(o, session, placed, view_gen, stamp);
    }

    /// Sends a full copy to every live placed backup that has not acknowledged the current
    /// version and was not sent anything within the retransmit interval (`retransmit`), or
    /// never sent anything (`!retransmit`); see [`Pace`] for what may be held back. Returns how
    /// many were sent.
    pub(super) fn send_full_to_lagging(
        &mut self,
        session: &str,
        now: Instant,
        retransmit: bool,
        pace: Pace<'_>,
    ) -> u64 {
        let mut cx =
            Copies::of(&mut self.view, &mut self.out, &self.stamps, &self.settings, self.hold_first_copies);
        let Some(Record { owner: Some(o), copy: Some(copy), .. }) = self.sessions.get_mut(session) else {
            return 0;
        };
        cx.send_full(o, copy, session, now, retransmit, pace)
    }

    /// Tells former holders to drop their copies once every placed backup holds the current
    /// version (make before break).
    pub(super) fn maybe_drop_stale(&mut self, session: &str) {
        let mut cx =
            Copies::of(&mut self.view, &mut self.out, &self.stamps, &self.settings, self.hold_first_copies);
        let Some(Record { owner: Some(o), copy: Some(copy), .. }) = self.sessions.get_mut(session) else {
            return;
        };
        cx.drop_stale(o, copy, session);
    }

    /// What maintenance does for an owned session, with one look-up of its record: places its
    /// backups anew when the view changed since (`replace`, as the caller read the record:
    /// see `plan`), sends what they lack within the token bucket and the peers' windows
    /// (again after the retransmit interval with `retransmit`), and tells the former holders
    /// to drop theirs once the backups hold it (`maybe_drop_stale`). A replan pass after a view
    /// change does this for every owned session, a million of them on a large node, where
    /// each look-up is a walk of cold memory.
    pub(super) fn maintain_owned(&mut self, session: &str, now: Instant, retransmit: bool, replace: bool) {
        let view_gen = self.view.generation;
        let placed = replace.then(|| (self.placed_backups(session), self.replica_target()));
        let stamp = self.stamps.stamp(now);
        let token = self.pacing.has_token();
        let mut cx =
            Copies::of(&mut self.view, &mut self.out, &self.stamps, &self.settings, self.hold_first_copies);
        let Some(Record { owner: Some(o), copy, .. }) = self.sessions.get_mut(session) else { return };
        if let Some(placed) = placed.filter(|_| o.view_gen != view_gen) {
            cx.place(o, session, placed, view_gen, stamp);
        }
        let Some(copy) = copy else { return };
        if token {
            let n = cx.send_full(o, copy, session, now, retransmit, Pace::Window);
            self.pacing.spend(n);
        }
        cx.drop_stale(o, copy, session);
    }

    /// Tells `from`, which acknowledged this node's copy of an owned session at its current
    /// epoch, to drop it when this node does not place it: a holder whose `Drop` was lost. A
    /// former holder still waiting for the placed backups (`stale`, make before break) is told
    /// by `maybe_drop_stale` instead, and none is told before at least one backup is placed
    /// and every placed backup holds the current version, nor while the placement predates the
    /// view (the holder asks again). A copy of an older epoch is never dropped this way: it may
    /// hold what this node's claim did not find.
    pub(super) fn drop_unplaced(&mut self, from: &NodeId, session: &str) {
        let Some(Record { owner: Some(o), copy: Some(copy), .. }) = self.sessions.get(session) else {
            return;
        };
        // Make before break, as for the former holders: not before every placed backup holds
        // the current version (an owner that resumed at its epoch places its backups anew),
        // and never the only copy besides this node's (no backup placed: none live).
        if o.view_gen != self.view.generation
            || o.replicas.find(from).is_ok()
            || o.stale.iter().any(|n| n == from)
            || o.replicas.keys().next().is_none()
            || o.replicas.values().any(|r| r.acked < Some(copy.version))
        {
            return;
        }
        self.out.send(from, Message::Drop { session: session.to_owned(), epoch: copy.epoch.clone() });
    }

    pub(super) fn on_need_full(&mut self, now: Instant, from: &NodeId, session: &str, epoch: &Epoch) {
        let Some(Record { owner: Some(o), copy: Some(copy), .. }) = self.sessions.get_mut(session) else {
            return;
        };
        if copy.epoch != *epoch {
            return;
        }
        let Some(r) = o.replicas.get_mut(from) else { return };
        // It does not hold what it acknowledged (a delta's base, or a copy it dropped).
        r.acked = None;
        r.last_sent = Some(self.stamps.stamp(now));
        let p = full_payload(copy);
        self.out.bytes += payload_size(&p);
        self.out.fulls += 1;
        let msg = Message::Replicate { session: session.to_owned(), epoch: copy.epoch.clone(), payload: p };
        self.out.send(from, msg);
    }
}

/// The parts of the node that sending an owned session's copies reads and writes, borrowed
/// apart from the session map: a caller that holds the record sends without looking it up
/// again (`Node::maintain_owned`).
struct Copies<'a> {
    peers: &'a mut BTreeMap<NodeId, Peer>,
    out: &'a mut Outbox,
    stamps: &'a StampBase,
    /// `retransmit_interval`.
    every: Duration,
    /// `Node::hold_first_copies`.
    hold_first: bool,
}

impl<'a> Copies<'a> {
    fn of(
        view: &'a mut Membership,
        out: &'a mut Outbox,
        stamps: &'a StampBase,
        settings: &Settings,
        hold_first: bool,
    ) -> Self {
        Copies { peers: &mut view.peers, out, stamps, every: settings.retransmit_interval, hold_first }
    }

    /// Places the owned session's backups on `backups` for the view `view_gen` (see [`place`]),
    /// and reports it when it just became under-replicated (fewer than `want`).
    fn place(
        &mut self,
        o: &mut OwnerState,
        session: &str,
        (backups, want): (Vec<NodeId>, usize),
        view_gen: u64,
        now: Stamp,
    ) {
        if place(o, &backups, self.peers, view_gen, now, want) {
            let have = backups.len();
            self.out.event(Event::UnderReplicated { session: session.to_owned(), have, want });
        }
    }

    /// See `Node::send_full_to_lagging`.
    fn send_full(
        &mut self,
        o: &mut OwnerState,
        copy: &Snapshot,
        session: &str,
        now: Instant,
        retransmit: bool,
        pace: Pace<'_>,
    ) -> u64 {
        let only = match pace {
            Pace::Walk(n) => Some(n),
            _ => None,
        };
        let mut payload = None;
        let mut sent = 0;
        for (to, r) in o.replicas.iter_mut() {
            if only.is_some_and(|n| n != to) {
                continue;
            }
            let Some(peer) = self.peers.get_mut(to) else { continue };
            if r.acked >= Some(copy.version) || !peer.up {
                continue;
            }
            let due = match r.last_sent {
                None => true,
                Some(t) => retransmit && due(now, self.stamps.instant(t), self.every),
            };
            if !due {
                continue;
            }
            let flow = &mut peer.flow;
            if matches!(pace, Pace::No) {
                // A write, a fetch or a leave: not held back.
            } else if flow.resend_from.as_deref().is_some_and(|c| c <= session) {
                // The peer's resend walk reaches this session later.
                r.last_sent = None;
                continue;
            } else if !flow.may_send() || (self.hold_first && r.last_sent.is_none()) {
                r.last_sent = None;
                flow.resend_at(session);
                continue;
            } else {
                flow.sent();
            }
            let p = payload.get_or_insert_with(|| full_payload(copy)).clone();
            r.last_sent = Some(self.stamps.stamp(now));
            self.out.bytes += payload_size(&p);
            self.out.fulls += 1;
            sent += 1;
            self.out.send(
                to,
                Message::Replicate { session: session.to_owned(), epoch: copy.epoch.clone(), payload: p },
            );
        }
        sent
    }

    /// See `Node::maybe_drop_stale`.
    fn drop_stale(&mut self, o: &mut OwnerState, copy: &Snapshot, session: &str) {
        if o.stale.is_empty() || o.replicas.values().any(|r| r.acked < Some(copy.version)) {
            return;
        }
        // Holders that are down now keep their place: they are told when they come back (a
        // former owner cut off during the takeover learns it was replaced).
        let peers = &*self.peers;
        let replicas = &o.replicas;
        // A placed backup is never dropped, even if it was a former holder too (its copy was
        // just replaced: a `Drop` after the `Replicate` would delete it while it counts).
        let (up, down): (SlimSet<NodeId>, SlimSet<NodeId>) = std::mem::take(&mut o.stale)
            .into_iter()
            .filter(|n| replicas.find(n).is_err())
            .partition(|n| peers.get(n).is_some_and(|p| p.up));
        o.stale = down;
        for n in up {
            self.out.send(&n, Message::Drop { session: session.to_owned(), epoch: copy.epoch.clone() });
        }
    }
}
