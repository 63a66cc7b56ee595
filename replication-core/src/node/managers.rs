//! The session managers this node hosts, and the refusal of records of any other.
//!
//! A record, claim, hand-off or epoch of a session whose scoped key names a manager this
//! node's `[[node]]` entry does not declare ([`crate::scope`]) is refused, never stored: the
//! domain file differs between nodes, and mixing that manager's sessions into another
//! namespace (or keeping copies nobody here serves) would be silent damage. The refusal is
//! counted ([`Stats::manager_refused`](crate::Stats::manager_refused)) and reported once per
//! peer and manager as [`Event::ManagerRefused`] with the rule [`MANAGER_NOT_DECLARED`]. The
//! sender sees a silent backup and keeps the session under-replicated, as with a lost peer.
//! Keys of the anonymous manager (no separator) pass with one byte search.

use std::collections::{BTreeMap, BTreeSet};

use super::Node;
use crate::api::Event;
use crate::config::{DomainConfig, NodeId};
use crate::message::{Body, Message, Snapshot};
use crate::scope::ScopedId;

/// The rule a refused manager is reported with.
pub const MANAGER_NOT_DECLARED: &str = "manager-not-declared";

/// Pairs of (peer, manager) reported at most; later ones are counted only.
const MAX_REPORTED: usize = 256;

/// The managers this node declares, and what it refused.
#[derive(Debug, Default)]
pub(super) struct Managers {
    declared: BTreeSet<String>,
    reported: BTreeSet<(NodeId, String)>,
    pub(super) refused: u64,
}

impl Managers {
    pub(super) fn new(config: &DomainConfig, me: &NodeId) -> Self {
        let declared = config.node(me).map(|n| n.managers.keys().cloned().collect()).unwrap_or_default();
        Managers { declared, ..Managers::default() }
    }

    /// Whether the session of `key` belongs to a manager this node hosts.
    fn hosts(&self, key: &str) -> bool {
        ScopedId::parse(key).manager().is_none_or(|m| self.declared.contains(m))
    }

    /// The manager of `key` when this node does not host it.
    fn foreign<'k>(&self, key: &'k str) -> Option<&'k str> {
        ScopedId::parse(key).manager().filter(|m| !self.declared.contains(*m))
    }
}

impl Node {
    /// `msg` without what it carries of managers this node does not declare; `None` when
    /// nothing is left of it.
    pub(super) fn admit_managers(&mut self, from: &NodeId, msg: Message) -> Option<Message> {
        let mut refused: Vec<String> = Vec::new();
        let mut keep = |m: &Managers, key: &str| match m.foreign(key) {
            Some(foreign) => {
                refused.push(foreign.to_owned());
                false
            }
            None => true,
        };
        let m = &self.managers;
        let msg = match msg {
            Message::Replicate { ref session, .. } | Message::Claim { ref session, .. } => {
                if keep(m, session) { Some(msg) } else { None }
            }
            Message::Claims { mut claims } => {
                claims.retain(|(s, ..)| keep(m, s));
                (!claims.is_empty()).then_some(Message::Claims { claims })
            }
            Message::Handoff { mut copies } => {
                copies.retain(|(s, _)| keep(m, s));
                (!copies.is_empty()).then_some(Message::Handoff { copies })
            }
            Message::Epochs { incarnation, after, mut epochs, next } => {
                // Kept even when empty: the pages of the quarantine go on.
                epochs.retain(|(s, _)| keep(m, s));
                Some(Message::Epochs { incarnation, after, epochs, next })
            }
            other => Some(other),
        };
        for manager in refused {
            self.refuse_manager(from, manager);
        }
        msg
    }

    fn refuse_manager(&mut self, from: &NodeId, manager: String) {
        let m = &mut self.managers;
        m.refused += 1;
        if m.reported.len() < MAX_REPORTED && m.reported.insert((from.clone(), manager.clone())) {
            self.out.event(Event::ManagerRefused { from: from.clone(), manager, rule: MANAGER_NOT_DECLARED });
        }
    }

    /// Whether this node hosts the manager of session key `key` (the anonymous manager
    /// always; a named one when its `[[node]]` entry declares it).
    pub fn hosts_manager_of(&self, key: &str) -> bool {
        self.managers.hosts(key)
    }

    /// Per manager (`""`: the anonymous one), the live sessions this node owns and the live
    /// backup copies it holds. O(n).
    pub fn manager_counts(&self) -> BTreeMap<String, (usize, usize)> {
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (key, rec) in self.sessions.iter() {
            if !matches!(&rec.copy, Some(Snapshot { body: Body::Live { .. }, .. })) {
                continue;
            }
            let e = counts.entry(ScopedId::parse(key).manager().unwrap_or("").to_owned()).or_default();
            if rec.owner.is_some() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        counts
    }
}
