//! Online domain changes: switching this node to a new domain file while the domain runs,
//! the fingerprints nodes tell each other, and the joint rules that hold until every node runs
//! the new file (docs/design.md, "Online domain changes").
//!
//! - [`Node::reconfigure`] checks the new file ([`crate::change::check`]) and switches at once:
//!   placement, timings, the peers (new ones are added down until heard; removed ones stay
//!   known until the change completes), and a replan pass that places every owned session by
//!   the new file. Copies move make-before-break (`maybe_drop_stale`): a former holder drops
//!   its copy only once every placed backup holds the current version, so a new node gets its
//!   copies within the re-replication token bucket while the old holders keep theirs.
//! - **Fingerprints.** A node that reloaded, or heard a peer announce another file, is *aware*:
//!   it sends [`Message::Domain`] to every live peer each heartbeat while the domain changes,
//!   and otherwise to a peer whose last announcement from it said something else (a peer new,
//!   back or restarted, or told before its sessions were placed), until every live peer was
//!   told this node's file with its sessions placed. A node not changing answers every
//!   announcement of a peer still changing (its last answer may have been lost). A domain
//!   whose nodes all run the file they started with sends none.
//! - **Joint majority.** Until the change completes, a node that reloaded (or that heard a
//!   reloaded peer name the nodes of the former file) takes sessions over only with a
//!   majority of the former file's nodes *and* of the new file's (`Membership::joint`), so a
//!   node still on the former file and a node on the new one never both see "enough" on two
//!   sides of a partition.
//! - **Failover.** Until then, an orphaned copy is claimed by its failover target by the new
//!   placement or by the former one: a node that holds no copy never claims (it has nothing
//!   to fail over), so a new node becomes a failover target once it holds the copy.
//! - **Removal.** A node that reads a file without itself places the sessions it owns on that
//!   file's nodes with one copy more, and its leave ends once those copies are acknowledged
//!   and every live node of the file runs it with its sessions placed (`removal_waits`): a
//!   removal takes no copy with it. Meanwhile it takes nothing over (its view goes stale).
//! - **Completion.** The change is complete at this node when every node of the new file is
//!   live and announced this node's fingerprint with all its owned sessions placed, every
//!   node only in the former file has left or is down, and this node's owned sessions are
//!   placed too. Then the former file is forgotten, with the removed peers.

use super::Node;
use super::flow::Flow;
use super::lease::Lease;
use super::membership::Peer;
use super::store::Record;
use crate::api::{DomainView, NodeDomain};
use crate::change::{self, Plan};
use crate::config::{DomainConfig, NodeId};
use crate::error::Error;
use crate::message::Message;
use crate::placement::Placement;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What a peer announced last ([`Message::Domain`]), for its incarnation then.
#[derive(Debug, Clone)]
struct Announced {
    incarnation: Option<u64>,
    fingerprint: u64,
    placed: bool,
}

/// What this node told a peer last ([`Message::Domain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Told {
    incarnation: Option<u64>,
    fingerprint: u64,
    placed: bool,
    joint: bool,
}

/// The former file while a change runs at this node.
#[derive(Debug)]
struct Former {
    /// The former placement, when this node ran the former file itself (for failover).
    placement: Option<Placement>,
    /// The nodes of the former file.
    members: BTreeSet<NodeId>,
}

/// A file that does not list this node, read while it runs: it leaves once the copies have
/// moved (`Node::removal_waits`).
#[derive(Debug)]
struct Removal {
    /// The fingerprint of the file that removes this node.
    fingerprint: u64,
    /// The nodes of that file.
    members: BTreeSet<NodeId>,
    /// When this node stops waiting for the copies to move and leaves as it can.
    until: Instant,
}

/// The domain file this node runs and what it knows of its peers' files.
#[derive(Debug)]
pub(super) struct DomainState {
    config: DomainConfig,
    fingerprint: u64,
    /// Reloaded, or heard another fingerprint: fingerprints are exchanged.
    aware: bool,
    former: Option<Former>,
    heard: BTreeMap<NodeId, Announced>,
    /// What each peer was told last, with its incarnation then.
    told: BTreeMap<NodeId, Told>,
    /// The fingerprint whose change completed here last: a late announcement from a peer
    /// still changing to it does not start it again.
    completed: Option<u64>,
    /// The file that removes this node, while it waits to leave.
    removal: Option<Removal>,
    /// Every live node of this node's file announced it runs it (`Node::placed_backups`).
    all_run: bool,
}

impl DomainState {
    pub(super) fn new(config: DomainConfig) -> Self {
        DomainState {
            fingerprint: change::fingerprint(&config),
            config,
            aware: false,
            former: None,
            heard: BTreeMap::new(),
            told: BTreeMap::new(),
            completed: None,
            removal: None,
            all_run: true,
        }
    }
}

/// How long a removed node waits, at most, for the copies to move before it leaves, in
/// request timeouts (`Node::removal_waits`).
const REMOVAL_WAIT: u32 = 10;

/// The nodes of a file.
fn members(cfg: &DomainConfig) -> BTreeSet<NodeId> {
    cfg.nodes.iter().map(|n| n.name.clone()).collect()
}

impl Node {
    /// Switches this node to the domain file `config` while it runs (an online change; see
    /// the module docs of `node`, "Online domain changes"). Refused, with nothing changed,
    /// when the new file is invalid or changes what cannot change online: the report names
    /// each rule ([`crate::change::rule`], [`crate::validate::rule`]). A file that does not
    /// list this node says so ([`Plan::removes_this_node`]): this node places the copies of
    /// the sessions it owns on the nodes of that file, and the runtime leaves the domain
    /// ([`Command::Leave`](crate::Command::Leave), which hands the sessions off once the
    /// copies have moved, see `removal_waits`) and stops. The same file again changes
    /// nothing. Drain [`Node::poll_output`] afterwards.
    pub fn reconfigure(&mut self, config: DomainConfig) -> Result<Plan, Error> {
        let plan = change::check(&self.domain.config, &config, &self.me).map_err(Error::Invalid)?;
        if plan.unchanged() || !self.leave.is_member() {
            return Ok(plan);
        }
        if plan.removes_this_node {
            self.removed_by(&config, plan.to);
            return Ok(plan);
        }
        let old_members = members(&self.domain.config);
        let new_members = members(&config);
        let placement = Placement::new(&config);
        let former_placement = std::mem::replace(&mut self.placement, placement);
        // The oldest former file is kept through chained changes: every node that reloaded
        // still needs its majority, whichever file it went to.
        if self.domain.former.is_none() {
            self.domain.former = Some(Former { placement: Some(former_placement), members: old_members });
        } else if let Some(f) = self.domain.former.as_mut().filter(|f| f.placement.is_none()) {
            f.placement = Some(former_placement);
        }
        for n in new_members.iter().filter(|n| **n != self.me) {
            if !self.view.peers.contains_key(n) {
                self.view.peers.insert(n.clone(), Peer::new(Flow::new(self.settings.scan_batch.max(1))));
            }
        }
        self.apply_timings(&config);
        self.can_own = self.placement.owns_sessions(&self.me);
        self.domain.fingerprint = plan.to;
        self.domain.config = config;
        self.domain.aware = true;
        self.domain.told.clear();
        self.domain.all_run = false;
        self.set_joint();
        self.view_changed();
        self.note_all_run();
        let placed = self.domain_placed();
        let up: Vec<(NodeId, Option<u64>)> =
            self.view.peers.iter().filter(|(_, p)| p.up).map(|(n, p)| (n.clone(), p.incarnation)).collect();
        for (n, inc) in up {
            self.send_domain(&n, inc, placed);
        }
        Ok(plan)
    }

    /// This node read `config`, which does not list it (fingerprint `fingerprint`): the
    /// sessions it owns are placed on the nodes of `config` with one copy more than it asks
    /// for, the copy the node that takes each over after this one's leave holds. Each session
    /// then has, without this node, the copies it had with it: a removal does not take one
    /// with it (simulator seeds 40135, 40220; test
    /// `a_removed_owner_leaves_its_sessions_with_every_copy`).
    fn removed_by(&mut self, config: &DomainConfig, fingerprint: u64) {
        if self.domain.removal.as_ref().is_some_and(|r| r.fingerprint == fingerprint) {
            return;
        }
        let mut leaver = config.clone();
        if let crate::config::Replicas::Count(n) = leaver.domain.replicas {
            leaver.domain.replicas = crate::config::Replicas::Count(n.saturating_add(1));
        }
        self.placement = Placement::new(&leaver);
        // It takes nothing over any more (no claim: fetch, failover, taking back what a claim
        // demoted): the nodes of the new file stop talking to it as their changes complete,
        // so its view of them goes stale (simulator seeds 10005, 40283). Copies whose owner is
        // gone are handed off at its leave, as a node that cannot own does.
        self.can_own = false;
        self.domain.removal = Some(Removal {
            fingerprint,
            members: members(config),
            until: self.last_run + self.request_timeout * REMOVAL_WAIT,
        });
        self.domain.aware = true;
        self.set_joint();
        self.view_changed();
    }

    /// Whether this node, removed by the file it read (`removed_by`), still waits before its
    /// leave ends: until every live node of that file announced it runs it (or a later file)
    /// with its sessions placed (their copies are no longer placed on this node), and every
    /// session this node
    /// owns is held by the nodes that file places it on; at most `REMOVAL_WAIT` request
    /// timeouts (a node of that file that never reads it does not keep this one forever).
    pub(super) fn removal_waits(&self, now: Instant) -> bool {
        let Some(r) = &self.domain.removal else { return false };
        if now >= r.until {
            return false;
        }
        // That file, or a later one (a change after it): any but this node's.
        let moved = r.members.iter().all(|n| {
            !self.view.is_up(n)
                || self.announced(n).is_some_and(|a| a.fingerprint != self.domain.fingerprint && a.placed)
        });
        !(moved && self.domain_placed())
    }

    /// The backups a session this node owns is placed on: by the file it runs, and while a
    /// change runs here and a live node of that file may still run the former one (it has
    /// not announced this file), by the former file too. A node on the former file does not
    /// know the nodes the change adds: a claim of its own finds the newest copy only on
    /// nodes it knows, so the former placement's backups stay current until every live node
    /// runs the new file; only then are they dropped, make before break (test
    /// `a_node_on_the_former_file_does_not_take_an_older_copy_over`).
    pub(super) fn placed_backups(&self, session: &str) -> Vec<NodeId> {
        let view = &self.view;
        let live = |n: &NodeId| view.is_up(n);
        let mut backups = self.placement.backups(session, &self.me, live);
        if self.domain.all_run {
            return backups;
        }
        if let Some(former) = self.domain.former.as_ref().and_then(|f| f.placement.as_ref()) {
            for n in former.backups(session, &self.me, live) {
                if !backups.contains(&n) {
                    backups.push(n);
                }
            }
        }
        backups
    }

    /// Recomputes whether every live node of this node's file announced it runs it; when
    /// that changes, the owned sessions are placed again (`placed_backups`).
    fn note_all_run(&mut self) {
        let fp = self.domain.fingerprint;
        let all_run = self.domain.config.nodes.iter().filter(|n| n.name != self.me).all(|n| {
            !self.view.is_up(&n.name) || self.announced(&n.name).is_some_and(|a| a.fingerprint == fp)
        });
        if all_run != self.domain.all_run {
            self.domain.all_run = all_run;
            self.view_changed();
        }
    }

    /// The timings and limits of `config`.
    fn apply_timings(&mut self, config: &DomainConfig) {
        self.heartbeat_interval = config.heartbeat_interval().max(Duration::from_millis(1));
        self.tick =
            self.heartbeat_interval.min(self.settings.retransmit_interval).max(Duration::from_millis(1));
        self.request_timeout = config.request_timeout();
        self.max_session_bytes = config.domain.max_session_bytes;
        self.view.failure_timeout = config.failure_timeout();
        self.lease = self.lease.changing(config.failure_timeout());
    }

    /// The member sets whose majority a takeover needs (`Membership::majority`): while a
    /// change runs, the former file's and this one's; for a node removed by the file it read
    /// (while it waits to leave, when it takes nothing over anyway), that file's nodes too,
    /// among which it does not count.
    fn set_joint(&mut self) {
        let set = |m: &BTreeSet<NodeId>| {
            (m.iter().filter(|n| **n != self.me).cloned().collect(), m.contains(&self.me))
        };
        let mut joint = Vec::new();
        if let Some(f) = &self.domain.former {
            joint.push(set(&f.members));
            joint.push(set(&members(&self.domain.config)));
        }
        if let Some(r) = &self.domain.removal {
            joint.push(set(&r.members));
        }
        self.view.joint = joint;
    }

    /// A peer's [`Message::Domain`].
    pub(super) fn on_domain(&mut self, from: &NodeId, fingerprint: u64, placed: bool, joint: Vec<NodeId>) {
        let incarnation = self.view.peers.get(from).and_then(|p| p.incarnation);
        let has_joint = !joint.is_empty();
        self.domain.heard.insert(from.clone(), Announced { incarnation, fingerprint, placed });
        self.note_all_run();
        if fingerprint != self.domain.fingerprint {
            self.domain.aware = true;
        }
        // A node that started with the new file learns the former file's nodes from one that
        // reloaded, and needs their majority too until the change completes.
        if has_joint
            && fingerprint == self.domain.fingerprint
            && self.domain.former.is_none()
            && self.domain.completed != Some(fingerprint)
        {
            self.domain.former = Some(Former { placement: None, members: joint.into_iter().collect() });
            self.domain.aware = true;
            self.set_joint();
            self.view_changed();
        }
        // A peer still changing (it keeps a former file, or runs another) announces every
        // heartbeat and waits for this node's word: a node not changing itself (which does
        // not announce every heartbeat) answers each time, as what it told the peer last may
        // have been lost (test `a_lost_announcement_does_not_stall_the_change`).
        let waits = (has_joint || fingerprint != self.domain.fingerprint) && !self.domain_changing();
        if waits || self.domain.told.get(from).is_none_or(|t| t.incarnation != incarnation) {
            let placed = self.domain_placed();
            self.send_domain(from, incarnation, placed);
        }
        self.check_change_complete();
    }

    /// At each heartbeat: the change may have completed; while it runs, every live peer is
    /// told this node's fingerprint again (the message is not re-sent when lost); otherwise a
    /// peer is told when what it was told last differs from what this node would say now
    /// (whether its owned sessions are placed is computed only while some live peer was not
    /// told they are).
    pub(super) fn domain_heartbeat(&mut self) {
        if !self.domain.aware {
            return;
        }
        let changing = self.domain_changing();
        self.note_all_run();
        self.check_change_complete();
        let settled = |t: Option<&Told>, inc: Option<u64>, fp: u64| {
            t.is_some_and(|t| t.incarnation == inc && t.fingerprint == fp && t.placed && !t.joint)
        };
        let fp = self.domain.fingerprint;
        let joint = self.domain.former.is_some();
        let unsettled = changing
            || joint
            || self
                .view
                .peers
                .iter()
                .any(|(n, p)| p.up && !settled(self.domain.told.get(n), p.incarnation, fp));
        if !unsettled {
            return;
        }
        let placed = self.domain_placed();
        let now = Told { incarnation: None, fingerprint: fp, placed, joint };
        let up: Vec<(NodeId, Option<u64>)> = self
            .view
            .peers
            .iter()
            .filter(|(n, p)| {
                p.up && (changing
                    || self.domain.told.get(*n) != Some(&Told { incarnation: p.incarnation, ..now.clone() }))
            })
            .map(|(n, p)| (n.clone(), p.incarnation))
            .collect();
        for (n, inc) in up {
            self.send_domain(&n, inc, placed);
        }
    }

    fn send_domain(&mut self, to: &NodeId, incarnation: Option<u64>, placed: bool) {
        let joint: Vec<NodeId> =
            self.domain.former.as_ref().map(|f| f.members.iter().cloned().collect()).unwrap_or_default();
        let told =
            Told { incarnation, fingerprint: self.domain.fingerprint, placed, joint: !joint.is_empty() };
        self.domain.told.insert(to.clone(), told);
        self.out.send(to, Message::Domain { fingerprint: self.domain.fingerprint, placed, joint });
    }

    /// What `peer` announced, if it was in its current incarnation (or before this node knew
    /// any incarnation of it).
    fn announced(&self, peer: &NodeId) -> Option<&Announced> {
        let inc = self.view.peers.get(peer).and_then(|p| p.incarnation);
        // Heard before the peer's first heartbeat: from the incarnation that heartbeat names.
        self.domain.heard.get(peer).filter(|a| a.incarnation.is_none() || a.incarnation == inc)
    }

    /// Whether the domain is changing as this node sees it: it keeps a former file (its own
    /// change has not completed), or a live peer announced another fingerprint.
    pub(super) fn domain_changing(&self) -> bool {
        self.domain.former.is_some()
            || self.view.peers.iter().any(|(n, p)| {
                p.up && self.announced(n).is_some_and(|a| a.fingerprint != self.domain.fingerprint)
            })
    }

    /// Whether every session this node owns is placed by the current file and held at its
    /// current version by every live placed backup, with no live former holder left.
    pub(super) fn domain_placed(&self) -> bool {
        self.sessions.iter().all(|(k, rec)| self.record_placed(k, rec))
    }

    /// Whether record `rec` of session `k` is, if this node owns it, placed by the current
    /// file and held at its current version by every live placed backup, with no live former
    /// holder left (see `domain_placed`).
    pub(super) fn record_placed(&self, k: &str, rec: &Record) -> bool {
        let view = &self.view;
        match rec {
            Record { owner: Some(o), copy: Some(c), .. } => {
                let want = self.placement.backups(k, &self.me, |n| view.is_up(n));
                // Placed by this file alone: a former file's backups still placed while nodes
                // may run it (`placed_backups`) are holders to drop.
                want.iter().all(|b| o.replicas.iter().any(|(n, r)| n == b && r.acked >= Some(c.version)))
                    && o.replicas.keys().all(|n| want.contains(n) || !view.is_up(n))
                    && o.stale.iter().all(|n| !view.is_up(n))
            }
            _ => true,
        }
    }

    /// Ends the change at this node when it is complete (see the module docs).
    fn check_change_complete(&mut self) {
        let Some(former) = &self.domain.former else { return };
        let current = members(&self.domain.config);
        let fp = self.domain.fingerprint;
        let ready = current.iter().filter(|n| **n != self.me).all(|n| {
            self.view.is_up(n) && self.announced(n).is_some_and(|a| a.fingerprint == fp && a.placed)
        });
        let removed_gone = former
            .members
            .iter()
            .filter(|n| !current.contains(*n) && **n != self.me)
            .all(|n| self.view.peers.get(n).is_none_or(|p| !p.up || p.departed.is_some()));
        if !(ready && removed_gone && self.domain_placed()) {
            return;
        }
        self.domain.former = None;
        self.domain.completed = Some(self.domain.fingerprint);
        self.lease = Lease::new(self.lease.base(), self.domain.config.failure_timeout());
        self.view.peers.retain(|n, _| current.contains(n));
        self.domain.heard.retain(|n, _| current.contains(n));
        // Every peer is told again, without the former file's nodes: it may wait for that.
        self.domain.told.clear();
        self.set_joint();
        self.view_changed();
    }

    /// Whether this node is the failover target of `session` after `owner`: by the current
    /// placement, or by the former one while a change runs.
    pub(super) fn failover_target_is_me(&self, session: &str, owner: &NodeId) -> bool {
        let view = &self.view;
        let me = &self.me;
        let live = |n: &NodeId| n == me || view.is_up(n);
        let mine = |p: &Placement| p.failover_owner(session, owner, live).as_ref() == Some(me);
        mine(&self.placement)
            || self.domain.former.as_ref().and_then(|f| f.placement.as_ref()).is_some_and(mine)
    }

    /// Whether this holder of an orphaned copy claims it although it is not its failover
    /// target, after a domain change was seen: the target by this node's placements may hold
    /// no copy (the owner placed its backups by another file, or with other nodes live), and
    /// a node without a copy never claims. A holder claims at once when the owner left the
    /// domain (it announced its leave, or the file no longer lists it: it handed its sessions
    /// to their backups, so the holders are the ones to take them), and otherwise once nobody
    /// spoke of the session for twice the request timeout. Claims race safely: the higher
    /// epoch wins.
    pub(super) fn unclaimed_after_change(
        &self,
        now: std::time::Instant,
        rec: &Record,
        owner: &NodeId,
    ) -> bool {
        if !self.domain.aware {
            return false;
        }
        let left = self.view.peers.get(owner).is_none_or(|p| !p.up && p.departed.is_some());
        left || super::store::due(now, self.stamps.instant(rec.last_heard), self.request_timeout * 2)
    }

    /// The fingerprint of the file this node runs, and what it knows of its peers'.
    pub fn domain(&self) -> DomainView {
        let current = members(&self.domain.config);
        let nodes = self
            .view
            .peers
            .iter()
            .map(|(n, p)| {
                let a = self.announced(n);
                NodeDomain {
                    node: n.clone(),
                    up: p.up,
                    fingerprint: a.map(|a| a.fingerprint),
                    placed: a.map(|a| a.placed),
                    listed: current.contains(n),
                }
            })
            .collect();
        DomainView {
            fingerprint: self.domain.fingerprint,
            changing: self.domain_changing(),
            placed: self.placed_for_queries(),
            nodes,
        }
    }

    /// The domain file this node runs.
    pub fn config(&self) -> &DomainConfig {
        &self.domain.config
    }
}
