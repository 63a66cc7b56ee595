//! The session managers this node hosts, and the refusal of records of any other.
//!
//! A copy or hand-off of a session whose scoped key names a manager this node's `[[node]]`
//! entry does not declare ([`crate::scope`]) is refused, never stored. Placement sends them
//! only to nodes that declare the manager, so the domain file differs between nodes, and
//! mixing that manager's sessions into another namespace (or keeping copies nobody here
//! serves) would be silent damage. The refusal is counted
//! ([`Stats::manager_refused`](crate::Stats::manager_refused)) and reported once per peer and
//! manager as [`Event::ManagerRefused`] with the rule [`MANAGER_NOT_DECLARED`]. The sender
//! sees a silent backup and keeps the session under-replicated, as with a lost peer.
//!
//! Claims and restart epochs go to every live peer, so those of a manager this node does not
//! host are no sign of differing files and are not counted. Epochs are dropped. A claim is
//! answered without a copy and without recording a promise: this node never holds a copy of
//! that manager's sessions (it refuses them all), so it keeps the promise whatever it records,
//! and the acquirer does not wait out its request timeout for an answer that would never come.
//! A claim over an owner this node still hears is refused ([`Message::ClaimsRefused`]) as any
//! other (`answer`'s `refuses`).
//!
//! Keys of the anonymous manager (no separator) pass with one byte search.

use std::collections::BTreeSet;
use std::time::Instant;

use super::Node;
use super::acquire::{CLAIMS_PER_MESSAGE, ClaimOf};
use crate::api::Event;
use crate::config::{DomainConfig, NodeId};
use crate::message::Message;
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
    pub(super) fn admit_managers(&mut self, now: Instant, from: &NodeId, msg: Message) -> Option<Message> {
        let mut refused: Vec<String> = Vec::new();
        let mut keep = |m: &Managers, key: &str| match m.foreign(key) {
            Some(foreign) => {
                refused.push(foreign.to_owned());
                false
            }
            None => true,
        };
        let m = &self.managers;
        let mut foreign_claims = Vec::new();
        let msg = match msg {
            Message::Replicate { ref session, .. } => {
                if keep(m, session) {
                    Some(msg)
                } else {
                    None
                }
            }
            // Claims and epochs go to every live peer, also where a manager is declared on
            // some nodes only: answered or dropped without counting a refusal.
            Message::Claim { session, epoch, over } => {
                if m.hosts(&session) {
                    Some(Message::Claim { session, epoch, over })
                } else {
                    foreign_claims.push((session, epoch, over));
                    None
                }
            }
            Message::Claims { claims } => {
                let (kept, foreign): (Vec<_>, Vec<_>) = claims.into_iter().partition(|(s, ..)| m.hosts(s));
                foreign_claims = foreign;
                (!kept.is_empty()).then_some(Message::Claims { claims: kept })
            }
            Message::Handoff { mut copies } => {
                copies.retain(|(s, _)| keep(m, s));
                (!copies.is_empty()).then_some(Message::Handoff { copies })
            }
            Message::Epochs { incarnation, after, mut epochs, next } => {
                // Kept even when empty: the pages of the quarantine go on.
                epochs.retain(|(s, _)| m.hosts(s));
                Some(Message::Epochs { incarnation, after, epochs, next })
            }
            other => Some(other),
        };
        for manager in refused {
            self.refuse_manager(from, manager);
        }
        if !foreign_claims.is_empty() {
            self.answer_foreign_claims(now, from, foreign_claims);
        }
        msg
    }

    /// Answers claims of sessions of managers this node does not host: refused when this node
    /// still hears the owner they fail over from, else acknowledged without a copy and
    /// without a promise recorded (see the module docs).
    fn answer_foreign_claims(&mut self, now: Instant, from: &NodeId, claims: Vec<ClaimOf>) {
        let (refused, acked): (Vec<_>, Vec<_>) = claims
            .into_iter()
            .partition(|(_, _, over)| over.as_ref().is_some_and(|o| self.hears_owner(now, o)));
        let acks: Vec<_> = acked.into_iter().map(|(s, e, _)| (s, e, None)).collect();
        for chunk in acks.chunks(CLAIMS_PER_MESSAGE) {
            self.out.send(from, Message::ClaimAcks { acks: chunk.to_vec() });
        }
        if !refused.is_empty() {
            let claims = refused.into_iter().map(|(s, e, _)| (s, e)).collect();
            self.out.send(from, Message::ClaimsRefused { claims });
        }
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
}
