//! The restart quarantine of a new incarnation (see the [module docs](super)).

use super::Node;
use super::store::{due, record_or_empty};
use crate::config::NodeId;
use crate::message::{Epoch, Message};
use std::collections::BTreeMap;
use std::time::Instant;

/// The restart quarantine of a new incarnation (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct Quarantine {
    /// Not over before this (unless every peer answered): the failure detector has not had
    /// the time to hear every live peer yet.
    until: Instant,
    /// Peers asked, and how far their answer got.
    pub(super) asked: BTreeMap<NodeId, Asked>,
}

impl Quarantine {
    /// A quarantine that lasts at least until `until` (see `until`).
    pub(super) fn new(until: Instant) -> Self {
        Quarantine { until, asked: BTreeMap::new() }
    }
}

/// A quarantine round with one peer: its answer comes a page per request.
#[derive(Debug, Clone)]
pub(super) struct Asked {
    /// When the page wanted was last asked for.
    at: Instant,
    /// The page wanted (the `after` of its request).
    cursor: Option<String>,
    /// The last page arrived.
    done: bool,
}

/// Sessions per [`Message::Epochs`] page.
const EPOCHS_PER_PAGE: usize = 1024;

impl Node {
    /// Asks `peer` for the next page of the epochs it knows, while in quarantine.
    pub(super) fn quarantine_ask(&mut self, now: Instant, peer: &NodeId) {
        let Some(q) = &mut self.quarantine else { return };
        let a = q.asked.entry(peer.clone()).or_insert_with(|| Asked { at: now, cursor: None, done: false });
        if a.done {
            return;
        }
        a.at = now;
        let after = a.cursor.clone();
        self.out.send(peer, Message::EpochsRequest { incarnation: self.incarnation, after });
    }

    /// Whether `peer` answered the quarantine round completely.
    fn quarantine_answered(q: &Quarantine, peer: &NodeId) -> bool {
        q.asked.get(peer).is_some_and(|a| a.done)
    }

    /// Each tick while in quarantine: asks again the live peers that have not answered
    /// completely, and ends the quarantine when every peer of the domain answered, or when
    /// the failure detector had its time and every live peer answered.
    pub(super) fn quarantine_tick(&mut self, now: Instant) {
        let Some(q) = &self.quarantine else { return };
        let every = self.settings.retransmit_interval;
        let up: Vec<NodeId> = self.view.up().cloned().collect();
        let again: Vec<NodeId> = up
            .iter()
            .filter(|n| {
                !Self::quarantine_answered(q, n) && q.asked.get(*n).is_none_or(|a| due(now, a.at, every))
            })
            .cloned()
            .collect();
        for n in &again {
            self.quarantine_ask(now, n);
        }
        self.quarantine_check(now);
    }

    fn quarantine_check(&mut self, now: Instant) {
        let Some(q) = &self.quarantine else { return };
        let all = self.view.peers.keys().all(|n| Self::quarantine_answered(q, n));
        let live = now >= q.until
            && self.view.peers.iter().filter(|(_, p)| p.up).all(|(n, _)| Self::quarantine_answered(q, n));
        if all || live {
            self.quarantine = None;
        }
    }

    /// Answers a quarantine round: the highest epoch this node promised or holds a copy at,
    /// for every session whose ownership moved (term above 1: a session only ever owned by
    /// its creator has no stale owner to fence).
    pub(super) fn on_epochs_request(&mut self, from: &NodeId, incarnation: u64, after: Option<String>) {
        let epochs: Vec<(String, Epoch)> = self
            .sessions
            .after(after.as_deref())
            .filter_map(|(k, r)| {
                let e = match (&r.promised, &r.copy) {
                    (Some(p), Some(c)) => p.max(&c.epoch),
                    (Some(p), None) => p,
                    (None, Some(c)) => &c.epoch,
                    (None, None) => return None,
                };
                (e.term > 1).then(|| (k.to_owned(), e.clone()))
            })
            .take(EPOCHS_PER_PAGE)
            .collect();
        let next = if epochs.len() == EPOCHS_PER_PAGE { epochs.last().map(|(k, _)| k.clone()) } else { None };
        self.out.send(from, Message::Epochs { incarnation, after, epochs, next });
    }

    /// Learns the epochs a peer knows: each becomes a promise here, kept (also without a
    /// copy) as long as a tombstone, so a stale owner's later copy is fenced. The page the
    /// round waits for moves the round on: the next page is asked for at once.
    pub(super) fn on_epochs(
        &mut self,
        now: Instant,
        from: &NodeId,
        incarnation: u64,
        after: Option<String>,
        epochs: Vec<(String, Epoch)>,
        next: Option<String>,
    ) {
        if incarnation != self.incarnation {
            return;
        }
        let Some(q) = &mut self.quarantine else { return };
        let mut more = false;
        if let Some(a) = q.asked.get_mut(from) {
            if !a.done && a.cursor == after {
                match next {
                    // A page that does not move forward (a faulty peer) ends the round.
                    Some(n) if after.as_ref().is_none_or(|a| n > *a) => {
                        a.cursor = Some(n);
                        more = true;
                    }
                    _ => a.done = true,
                }
            }
        }
        let keep = self.stamps.stamp(now + self.settings.tombstone_ttl);
        let stamp = self.stamps.stamp(now);
        for (session, epoch) in epochs {
            let rec = record_or_empty!(self.sessions, &session, stamp);
            if rec.promised.as_ref().is_some_and(|p| *p >= epoch) {
                continue;
            }
            rec.promised = Some(epoch.clone());
            if rec.copy.is_none() && rec.owner.is_none() {
                rec.tomb_until = Some(keep);
            }
            self.on_fenced(now, &session, &epoch);
        }
        if more {
            self.quarantine_ask(now, from);
        }
        self.quarantine_check(now);
    }
}
