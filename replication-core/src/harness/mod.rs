//! Worlds of engines for tests. [`Cluster`]: virtual time, in-memory delivery, links that can
//! be cut, messages that can be dropped (as a full transport queue refuses them); the engine's
//! unit tests run on it. [`world`] (the domain text, the engine slot with crash and restart)
//! and [`invariants`] (the per-step checks of every copy and epoch owner) are what the
//! simulator (`tests/sim`) and the fuzz world ([`fuzz`]) share with it. Integration tests, the
//! fuzz crate and other crates' tests get this module with the cargo feature `harness`.

pub mod fuzz;
pub mod invariants;
pub mod world;

use crate::api::{Ack, Command, Event, Input, Outcome, Output, RequestId, SessionView, Settings};
use crate::config::{DomainConfig, NodeId};
use crate::message::{Attributes, Change, Epoch, Message, Payload, Version};
use crate::node::Node;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use world::DomainText;

/// A peer-to-peer domain "t" of `names` (addresses 127.0.0.1:7000 on) keeping `replicas`
/// backups per session, with the default timings.
pub fn cfg(names: &[&str], replicas: u32) -> DomainConfig {
    names.iter().fold(DomainText::new("t", replicas), |d, n| d.node(n, None)).parse("t")
}

/// Engines of one domain under virtual time, with in-memory delivery: every output is
/// collected after each input (the drain rule), messages wait on the `wire` until `pump`.
pub struct Cluster {
    /// The instant the engines started at.
    pub t0: Instant,
    /// The virtual time now.
    pub now: Instant,
    /// The engines by name (remove one to crash it).
    pub nodes: BTreeMap<NodeId, Node>,
    /// Every outcome received: node, request, outcome.
    pub outcomes: Vec<(NodeId, RequestId, Outcome)>,
    /// Every event received, by node.
    pub events: Vec<(NodeId, Event)>,
    /// Messages in flight, delivered by `pump`.
    pub wire: VecDeque<(NodeId, NodeId, Message)>,
    /// Links that drop everything (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Delivered [`Message::ClaimsRefused`]: (from, to).
    pub refusals: Vec<(NodeId, NodeId)>,
    /// Messages `pump` loses (from, to, message), besides those over cut links.
    pub lose: Option<fn(&NodeId, &NodeId, &Message) -> bool>,
}

/// The node named `s`.
pub fn id(s: &str) -> NodeId {
    NodeId::new(s)
}

impl Cluster {
    /// Engines named `names` of the domain [`cfg`](fn@cfg), every peer heard by every other.
    pub fn new(names: &[&str], replicas: u32) -> Self {
        Self::from_config(cfg(names, replicas), Settings::default())
    }

    /// Every node of `c` as an engine with `settings`, every peer heard by every other.
    pub fn from_config(c: DomainConfig, settings: Settings) -> Self {
        let mut cl = Self::unstarted(c, settings);
        // Heartbeats make everyone live.
        cl.tick_all();
        cl.pump();
        cl
    }

    /// Every node of `c` as an engine with `settings`, nothing sent yet: the first heartbeats
    /// go out at the first tick (a domain too large for one `pump`).
    pub fn unstarted(c: DomainConfig, settings: Settings) -> Self {
        let t0 = Instant::now();
        let nodes = c
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    Node::new(c.clone(), n.name.clone(), 1, settings.clone(), t0).expect("a member"),
                )
            })
            .collect();
        Cluster {
            t0,
            now: t0,
            nodes,
            outcomes: vec![],
            events: vec![],
            wire: VecDeque::new(),
            cut: BTreeSet::new(),
            refusals: vec![],
            lose: None,
        }
    }

    /// Drains the outputs of `n`: sends go on the wire, outcomes and events are kept.
    pub fn collect(&mut self, n: &NodeId) {
        let Some(node) = self.nodes.get_mut(n) else { return };
        while let Some(o) = node.poll_output() {
            match o {
                Output::Send { to, msg } => self.wire.push_back((n.clone(), to, msg)),
                Output::Outcome { id, outcome } => self.outcomes.push((n.clone(), id, outcome)),
                Output::Event(e) => self.events.push((n.clone(), e)),
            }
        }
    }

    /// Runs the timeouts due now on every engine.
    pub fn tick_all(&mut self) {
        let names: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for n in names {
            let now = self.now;
            let Some(node) = self.nodes.get_mut(&n) else { continue };
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
            }
            self.collect(&n);
        }
    }

    /// Delivers the wire until it is empty (what the deliveries send too), except over cut
    /// links.
    pub fn pump(&mut self) {
        let mut budget = 100_000;
        while let Some((from, to, msg)) = self.wire.pop_front() {
            budget -= 1;
            assert!(budget > 0, "message storm");
            if self.cut.contains(&(from.clone(), to.clone()))
                || self.lose.is_some_and(|f| f(&from, &to, &msg))
            {
                continue;
            }
            let now = self.now;
            if matches!(msg, Message::ClaimsRefused { .. }) {
                self.refusals.push((from.clone(), to.clone()));
            }
            if let Some(node) = self.nodes.get_mut(&to) {
                node.handle_input(now, Input::Message { from, msg });
                self.collect(&to);
            }
        }
    }

    /// Sessions claimed by the claims `n` has on the wire.
    pub fn claims_in_flight_from(&self, n: &str) -> usize {
        self.wire
            .iter()
            .filter(|(from, _, _)| from.as_str() == n)
            .map(|(_, _, m)| match m {
                Message::Claims { claims } => claims.len(),
                Message::Claim { .. } => 1,
                _ => 0,
            })
            .sum()
    }

    /// Advances virtual time in heartbeat-sized steps, delivering everything.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + Duration::from_millis(50)).min(end);
            self.tick_all();
            self.pump();
        }
    }

    /// One 50 ms step of `advance`, except that the messages `drop` picks are taken off
    /// the wire (as a full transport queue refuses them) and, with `feed`, handed back to
    /// their senders as [`Input::Undelivered`] after the delivery. Returns the dropped ones.
    pub fn step_dropping(
        &mut self,
        drop: impl Fn(&NodeId, &NodeId, &Message) -> bool,
        feed: bool,
    ) -> Vec<(NodeId, NodeId, Message)> {
        self.now += Duration::from_millis(50);
        self.tick_all();
        let mut dropped = Vec::new();
        self.wire.retain(|(from, to, msg)| {
            let hit = drop(from, to, msg);
            if hit {
                dropped.push((from.clone(), to.clone(), msg.clone()));
            }
            !hit
        });
        self.pump();
        if feed && !dropped.is_empty() {
            let now = self.now;
            for (from, to, msg) in dropped.clone() {
                if let Some(node) = self.nodes.get_mut(&from) {
                    node.handle_input(now, Input::Undelivered { to, msg });
                }
                self.collect(&from);
            }
            self.pump();
        }
        dropped
    }

    /// Node `n` runs command `rid`.
    pub fn cmd(&mut self, n: &str, rid: RequestId, cmd: Command) {
        let now = self.now;
        let node = self.nodes.get_mut(&id(n)).expect("a node of the cluster");
        node.handle_input(now, Input::Command { id: rid, cmd });
        self.collect(&id(n));
    }

    /// The outcome of request `rid`, once received.
    pub fn outcome(&self, rid: RequestId) -> Option<&Outcome> {
        self.outcomes.iter().find(|(_, i, _)| *i == rid).map(|(_, _, o)| o)
    }

    /// Node `n`'s view of session `s`.
    pub fn session(&self, n: &str, s: &str) -> Option<SessionView> {
        self.nodes[&id(n)].session(s)
    }
}

/// Attributes from `(name, value)` pairs.
pub fn attrs(pairs: &[(&str, &[u8])]) -> Attributes {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
}

/// A copy or delta of session `s` at `epoch` from `from`, as a message input.
pub fn replicate(from: &str, s: &str, epoch: Epoch, payload: Payload) -> Input {
    Input::Message {
        from: id(from),
        msg: Message::Replicate { session: s.into(), epoch, payload: Arc::new(payload) },
    }
}

/// Node `n` creates session `s` without attributes, inactive for `max_inactive` at most
/// (asynchronous).
pub fn create_inactive(cl: &mut Cluster, n: &str, rid: RequestId, s: &str, max_inactive: Duration) {
    let cmd = Command::Create { session: s.into(), attrs: Attributes::new(), max_inactive, ack: Ack::Async };
    cl.cmd(n, rid, cmd);
}

/// Node `n` creates session `s` with `k = v1`, inactive for a minute at most.
pub fn create(cl: &mut Cluster, n: &str, rid: RequestId, s: &str, ack: Ack) {
    cl.cmd(
        n,
        rid,
        Command::Create {
            session: s.into(),
            attrs: attrs(&[("k", b"v1")]),
            max_inactive: Duration::from_secs(60),
            ack,
        },
    );
}

/// Node `n` applies `changes` to session `s`.
pub fn update(
    cl: &mut Cluster,
    n: &str,
    rid: RequestId,
    s: &str,
    expected_version: Option<Version>,
    changes: Vec<Change>,
    ack: Ack,
) {
    cl.cmd(n, rid, Command::Update { session: s.into(), expected_version, changes, ack });
}

/// Node `n` sets attribute `k` of session `s` to `value` (no version check).
pub fn set_k(cl: &mut Cluster, n: &str, rid: RequestId, s: &str, value: &[u8], ack: Ack) {
    update(cl, n, rid, s, None, vec![Change::Set("k".into(), value.to_vec().into())], ack);
}
