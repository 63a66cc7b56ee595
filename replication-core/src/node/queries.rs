//! Read-only queries and statistics.

use super::Node;
use super::store::{Record, max_inactive_of};
use crate::api::{PeerView, Role, SessionView, Stats};
use crate::config::NodeId;
use crate::message::{Attributes, Body, Epoch, Snapshot, Version};
use std::time::Duration;

impl Node {
    /// This node.
    pub fn id(&self) -> &NodeId {
        &self.me
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether [`Command::Leave`](crate::Command::Leave) completed.
    pub fn has_left(&self) -> bool {
        self.leave.has_left()
    }

    /// Whether the failure detector considers `node` live (this node always is).
    pub fn is_live(&self, node: &NodeId) -> bool {
        *node == self.me || self.view.is_up(node)
    }

    /// The membership view: every peer of the config.
    pub fn peers(&self) -> Vec<PeerView> {
        self.view
            .peers
            .iter()
            .map(|(n, p)| PeerView {
                node: n.clone(),
                up: p.up,
                incarnation: p.incarnation,
                last_heard: p.last_heard,
            })
            .collect()
    }

    /// Ids of the sessions this node knows (owned, backed up, tombstones, promises).
    pub fn session_ids(&self) -> impl Iterator<Item = &str> {
        self.sessions.keys()
    }

    /// Ids of the live sessions this node owns.
    pub fn owned_sessions(&self) -> impl Iterator<Item = &str> {
        self.sessions
            .iter()
            .filter(|(_, r)| self.owns(r) && matches!(r.copy, Some(Snapshot { body: Body::Live { .. }, .. })))
            .map(|(k, _)| k)
    }

    /// Every stored copy, cheaply: `(session, epoch, version, owned by this node)`. Tombstones
    /// included; promises without data are not.
    pub fn copies(&self) -> impl Iterator<Item = (&str, &Epoch, Version, bool)> {
        self.sessions
            .iter()
            .filter_map(|(k, r)| r.copy.as_ref().map(|c| (k, &c.epoch, c.version, self.owns(r))))
    }

    /// What this node holds about `session`.
    pub fn session(&self, session: &str) -> Option<SessionView> {
        let rec = self.sessions.get(session)?;
        let owned = self.owns(rec);
        let role = if owned {
            Role::Owner
        } else if self.acquires.contains(session) {
            Role::Acquiring
        } else if matches!(rec.copy, Some(Snapshot { body: Body::Live { .. }, .. })) {
            Role::Backup
        } else {
            Role::None
        };
        let (epoch, version, attrs, invalidated, max_inactive) = match &rec.copy {
            Some(c) => {
                let (attrs, inv) = match &c.body {
                    Body::Live { attrs, .. } => (attrs.clone(), false),
                    Body::Tombstone => (Attributes::new(), true),
                };
                (Some(c.epoch.clone()), c.version, attrs, inv, max_inactive_of(c))
            }
            None => (None, 0, Attributes::new(), false, Duration::ZERO),
        };
        let backups = rec
            .owner
            .as_ref()
            .filter(|_| owned)
            .map(|o| o.replicas.iter().map(|(n, r)| (n.clone(), r.acked >= Some(version))).collect())
            .unwrap_or_default();
        let owner = if owned {
            Some(self.me.clone())
        } else {
            rec.promised.as_ref().or(epoch.as_ref()).map(|e| e.node.clone())
        };
        Some(SessionView {
            id: session.to_owned(),
            role,
            epoch,
            version,
            attrs,
            invalidated,
            max_inactive,
            owner,
            backups,
            promised: rec.promised.clone(),
        })
    }

    /// The attributes of a live session this node owns, if its copy is at exactly
    /// `(epoch, version)`: what a write reported at that epoch and version left (a shared
    /// buffer, not a copy), for the handle that made it.
    pub fn owned_attributes(&self, session: &str, epoch: &Epoch, version: Version) -> Option<&Attributes> {
        match self.sessions.get(session)? {
            Record {
                owner: Some(o),
                copy: Some(Snapshot { epoch: e, version: v, body: Body::Live { attrs, .. } }),
                ..
            } if e == epoch && *v == version && self.current_owner(o) => Some(attrs),
            _ => None,
        }
    }

    /// Session records held (copies, tombstones, promises): [`Stats::held`], without walking
    /// anything.
    pub fn held(&self) -> usize {
        self.sessions.len()
    }

    /// Counters and gauges. The counts of records by kind (`owned`, `backups`, `tombstones`,
    /// `under_replicated`, `oldest_unacked`) walk every record up to 131,072 of them; above,
    /// they are those of the last census, which the maintenance ticks take in batches while
    /// queries ask for it (at most one census old, so that no step walks a large store).
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            acquisitions: self.acquisitions,
            failovers: self.failovers,
            fenced: self.fenced,
            pending: self.writes.len()
                + self.acquires.values().map(|a| a.requests.len().max(1)).sum::<usize>(),
            messages_sent: self.out.messages_sent,
            bytes_replicated: self.out.bytes,
            full_copies_sent: self.out.fulls,
            held: self.held(),
            max_sessions: self.settings.max_sessions,
            manager_refused: self.managers.refused,
            ..Stats::default()
        };
        s.peers_up = self.view.peers.values().filter(|p| p.up).count();
        s.peers_down = self.view.peers.len() - s.peers_up;
        self.add_counts(&mut s);
        s
    }
}
