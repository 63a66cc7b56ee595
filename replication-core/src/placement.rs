//! Where copies of a session live: a pure function of the session id, the live membership and
//! the domain config.
//!
//! Placement uses rendezvous (highest-random-weight) hashing: every node that may hold backups
//! gets a score for each session from a stable hash of the pair, and the session's backups are
//! the highest-scoring live eligible nodes other than the owner. This spreads sessions evenly
//! and, when a node joins or leaves, moves only the sessions whose top ranks it enters or leaves.
//! The hash is fixed (FNV-1a with a 64-bit finaliser), so every node, build and platform places
//! a session the same way.
//!
//! Eligibility follows the topology: in peer-to-peer every node (`both`) holds backups and owns
//! sessions; in client-server `server` nodes hold backups and `client` nodes own sessions. A
//! session of a named session manager ([`crate::scope`]) is placed only on the nodes that
//! declare that manager, ranked by the hash of its id alone.
//!
//! ```
//! use replication_core::{DomainConfig, NodeId, placement::Placement};
//! let cfg = DomainConfig::parse(r#"
//!     [domain]
//!     name = "web"
//!     replicas = 2
//!     [[node]]
//!     name = "a"
//!     address = "127.0.0.1:7101"
//!     [[node]]
//!     name = "b"
//!     address = "127.0.0.1:7102"
//!     [[node]]
//!     name = "c"
//!     address = "127.0.0.1:7103"
//! "#, "example").unwrap();
//! let placement = Placement::new(&cfg);
//! let owner = NodeId::new("a");
//! let backups = placement.backups("session-1", &owner, |_| true);
//! assert_eq!(backups.len(), 2);
//! assert!(!backups.contains(&owner));
//! // The hot-failover target is the first live backup.
//! assert_eq!(placement.failover_owner("session-1", &owner, |n| n != &owner), Some(backups[0].clone()));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{DomainConfig, Mode, NodeId, Replicas, Topology};

/// A stable 64-bit hash of `bytes` (FNV-1a followed by a splitmix64 finaliser). Identical on
/// every platform and build; never change it, placement depends on it.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// The placement hash of a session, of its id alone whatever its manager (an id routes the
/// same in every manager, see [`crate::scope`]), and its manager.
fn session_hash(session: &str) -> (u64, Option<&str>) {
    let s = crate::scope::ScopedId::parse(session);
    (stable_hash(s.id().as_bytes()), s.manager())
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Clone, Debug)]
struct Member {
    id: NodeId,
    hash: u64,
    owns: bool,
    stores: bool,
    /// The named session managers the node declares.
    managers: BTreeSet<String>,
}

impl Member {
    /// Whether the node hosts `manager` (`None`, the anonymous one: every node).
    fn hosts(&self, manager: Option<&str>) -> bool {
        manager.is_none_or(|m| self.managers.contains(m))
    }
}

/// Placement for one domain config; cheap to query, build once per config.
#[derive(Clone, Debug)]
pub struct Placement {
    members: Vec<Member>,
    replicas: Replicas,
    topology: Topology,
}

impl Placement {
    /// Placement for `cfg`. Works on any config, valid or not (invalid ones place by the
    /// nodes' effective modes).
    pub fn new(cfg: &DomainConfig) -> Self {
        let topology = cfg.topology();
        let members = cfg
            .nodes
            .iter()
            .map(|n| {
                let mode = n.mode();
                Member {
                    id: n.name.clone(),
                    hash: stable_hash(n.name.as_str().as_bytes()),
                    owns: mode.owns_sessions(),
                    stores: match topology {
                        Topology::PeerToPeer => mode == Mode::Both,
                        Topology::ClientServer => mode == Mode::Server,
                    },
                    managers: n.managers.keys().cloned().collect(),
                }
            })
            .collect();
        Placement { members, replicas: cfg.domain.replicas, topology }
    }

    /// The domain's replica setting.
    pub fn replicas(&self) -> Replicas {
        self.replicas
    }

    /// The backups a session owned by `owner` should have: `replicas` as far as the config has
    /// eligible nodes other than the owner, or for `entire-domain` every eligible node that is
    /// live now. A node that is down does not count against `entire-domain`, but does against
    /// a fixed count (the session really has fewer copies than the operator asked for).
    pub fn target(&self, owner: &NodeId, live: impl Fn(&NodeId) -> bool) -> usize {
        let eligible = |m: &&Member| m.stores && &m.id != owner;
        match self.replicas {
            Replicas::Count(_) => self.replicas.wanted(self.members.iter().filter(eligible).count()),
            Replicas::EntireDomain => self.members.iter().filter(eligible).filter(|m| live(&m.id)).count(),
        }
    }

    /// The domain's topology.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Every node of the domain, in config order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeId> {
        self.members.iter().map(|m| &m.id)
    }

    /// Whether `node` may hold backups.
    pub fn stores_backups(&self, node: &NodeId) -> bool {
        self.members.iter().any(|m| &m.id == node && m.stores)
    }

    /// Whether `node` may own sessions.
    pub fn owns_sessions(&self, node: &NodeId) -> bool {
        self.members.iter().any(|m| &m.id == node && m.owns)
    }

    /// How many backups a session should have when `eligible` nodes other than its owner can
    /// hold them.
    pub fn wanted(&self, eligible: usize) -> usize {
        self.replicas.wanted(eligible)
    }

    /// Nodes passing `filter`, best rendezvous score for `session` first.
    fn ranked<'a>(&'a self, session: &str, filter: impl Fn(&Member) -> bool) -> Vec<&'a Member> {
        let (sh, manager) = session_hash(session);
        let mut v: Vec<(u64, &Member)> = self
            .members
            .iter()
            .filter(|m| filter(m) && m.hosts(manager))
            .map(|m| (mix(sh ^ m.hash), m))
            .collect();
        // Ties (astronomically rare) break by name so the order is total.
        v.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        v.into_iter().map(|(_, m)| m).collect()
    }

    /// The ordered backup nodes of `session` owned by `owner`, among nodes for which `live`
    /// is true: eligible backup holders only, never the owner, `replicas` of them (all for
    /// `entire-domain`). The first one is the hot-failover target.
    pub fn backups(&self, session: &str, owner: &NodeId, live: impl Fn(&NodeId) -> bool) -> Vec<NodeId> {
        let ranked = self.ranked(session, |m| m.stores && &m.id != owner && live(&m.id));
        let n = self.replicas.wanted(ranked.len());
        ranked.into_iter().take(n).map(|m| m.id.clone()).collect()
    }

    /// The node a session is first placed on when nothing else decides (synthetic sessions,
    /// the planner): the best-ranked live node that may own sessions.
    pub fn home(&self, session: &str, live: impl Fn(&NodeId) -> bool) -> Option<NodeId> {
        self.ranked(session, |m| m.owns && live(&m.id)).first().map(|m| m.id.clone())
    }

    /// Where ownership of `session` goes when `owner` is no longer live.
    ///
    /// Peer-to-peer: the hot-failover target, the first live backup (it already holds the
    /// session). Client-server: the best-ranked live client, which fetches the session from a
    /// server holding the backup. `None` when no live node can own it.
    pub fn failover_owner(
        &self,
        session: &str,
        owner: &NodeId,
        live: impl Fn(&NodeId) -> bool,
    ) -> Option<NodeId> {
        let live = |n: &NodeId| n != owner && live(n);
        match self.topology {
            Topology::PeerToPeer => {
                // The first of `backups` (without ranking them all into vectors: a mass
                // failover asks this for every session).
                let (sh, manager) = session_hash(session);
                let mut eligible = 0;
                let mut best: Option<(u64, &Member)> = None;
                for m in self
                    .members
                    .iter()
                    .filter(|m| m.stores && &m.id != owner && m.hosts(manager) && live(&m.id))
                {
                    eligible += 1;
                    let score = mix(sh ^ m.hash);
                    // The order of `ranked`: higher score first, ties by name.
                    if best.is_none_or(|(s, b)| score > s || (score == s && m.id < b.id)) {
                        best = Some((score, m));
                    }
                }
                best.filter(|_| self.replicas.wanted(eligible) > 0).map(|(_, m)| m.id.clone())
            }
            Topology::ClientServer => self.home(session, live),
        }
    }

    /// The "what if" analysis: for `sessions` (id and owner), where copies live with every node
    /// up, and what happens when the nodes in `failed` fail at once.
    pub fn what_if<'s>(
        &self,
        sessions: impl IntoIterator<Item = (&'s str, &'s NodeId)>,
        failed: &BTreeSet<NodeId>,
    ) -> WhatIf {
        let mut report = WhatIf::default();
        for m in &self.members {
            report.nodes.insert(m.id.clone(), NodeLoad::default());
        }
        let alive = |n: &NodeId| !failed.contains(n);
        for (sid, owner) in sessions {
            report.sessions += 1;
            let before = self.backups(sid, owner, |_| true);
            if let Some(load) = report.nodes.get_mut(owner) {
                load.owned += 1;
            }
            for b in &before {
                if let Some(load) = report.nodes.get_mut(b) {
                    load.backups += 1;
                }
            }
            if let Some(t) = before.first() {
                if let Some(load) = report.nodes.get_mut(t) {
                    load.failover_target_for += 1;
                }
            }
            // After the failure.
            let survivors: Vec<&NodeId> =
                std::iter::once(owner).chain(&before).filter(|n| alive(n)).collect();
            if survivors.is_empty() {
                report.lost += 1;
                continue;
            }
            let new_owner = if alive(owner) {
                owner.clone()
            } else {
                match self.failover_owner(sid, owner, alive) {
                    Some(o) => {
                        report.ownership_moved += 1;
                        o
                    }
                    None => {
                        // Copies survive on backups but no live node can own the session.
                        report.orphaned += 1;
                        continue;
                    }
                }
            };
            let after = self.backups(sid, &new_owner, alive);
            let wanted = self.target(&new_owner, alive);
            // Copies that exist right after the failure, before any re-replication: the
            // surviving holders. Under-replicated: fewer surviving backups than wanted.
            let surviving_backups = survivors.iter().filter(|n| **n != &new_owner).count();
            if surviving_backups < wanted {
                report.under_replicated += 1;
                if surviving_backups == 0 {
                    report.without_backup += 1;
                }
            }
            if let Some(load) = report.nodes.get_mut(&new_owner) {
                load.owned_after += 1;
            }
            for b in &after {
                if let Some(load) = report.nodes.get_mut(b) {
                    load.backups_after += 1;
                }
            }
            let restored = after.len();
            if restored < wanted {
                report.below_target_after_recovery += 1;
            }
        }
        for f in failed {
            if let Some(load) = report.nodes.get_mut(f) {
                load.failed = true;
            }
        }
        report
    }
}

/// One node's share in a [`WhatIf`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// Whether the node is among the failed ones.
    pub failed: bool,
    /// Sessions it owns with every node up.
    pub owned: usize,
    /// Backup copies it holds with every node up.
    pub backups: usize,
    /// Sessions for which it is the hot-failover target (first backup).
    pub failover_target_for: usize,
    /// Sessions it owns after the failure and failover.
    pub owned_after: usize,
    /// Backup copies it holds once replicas are re-created after the failure.
    pub backups_after: usize,
}

/// The result of [`Placement::what_if`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WhatIf {
    /// Sessions considered.
    pub sessions: usize,
    /// Per node.
    pub nodes: BTreeMap<NodeId, NodeLoad>,
    /// Sessions whose owner failed and whose ownership moves to another node.
    pub ownership_moved: usize,
    /// Sessions left, right after the failure, with fewer backups than wanted.
    pub under_replicated: usize,
    /// Of those, sessions left with no backup at all (one copy, on the owner).
    pub without_backup: usize,
    /// Sessions with a surviving copy but no live node that may own them.
    pub orphaned: usize,
    /// Sessions whose every copy was on failed nodes.
    pub lost: usize,
    /// Sessions that stay below the wanted replica count even after re-replication (not
    /// enough live eligible nodes).
    pub below_target_after_recovery: usize,
}
