//! Re-replication and failover of many sessions over links like the transports': per link, a
//! bounded queue of keyed messages refusing what does not fit (fed back as
//! [`Input::Undelivered`] after the drain, as the runtime does) and a control queue served
//! first, both feeding one FIFO pipe (the sockets' buffers and the receiver's inbound queue,
//! where a heartbeat waits behind the copies sent before it) that delivers a fixed number of
//! messages per millisecond.

use crate::api::{Ack, Command, Input, Output, Settings};
use crate::config::{DomainConfig, NodeId};
use crate::harness::world::DomainText;
use crate::harness::*;
use crate::message::Message;
use crate::node::Node;
use crate::transport::WireMessage as _;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A domain of `names` keeping one backup, with the benchmark's timings (heartbeats every
/// 50 ms, failure timeout 300 ms, request timeout 2 s).
pub(super) fn bench_timings(names: &[&str]) -> DomainConfig {
    names
        .iter()
        .fold(
            DomainText::new("t", 1)
                .set("heartbeat_interval_ms", 50)
                .set("failure_timeout_ms", 300)
                .set("request_timeout_ms", 2000),
            |d, n| d.node(n, None),
        )
        .parse("t")
}

/// A link's sending queues and its pipe.
#[derive(Default)]
struct Link {
    data: VecDeque<Message>,
    control: VecDeque<Message>,
    pipe: VecDeque<Message>,
}

/// Engines whose links queue at most `cap` keyed messages each, hold up to `pipe` messages
/// between the queues and the receiver, and deliver `per_ms` of them per millisecond of
/// virtual time.
struct QueuedWorld {
    now: Instant,
    nodes: BTreeMap<NodeId, Node>,
    cap: usize,
    pipe: usize,
    per_ms: usize,
    links: BTreeMap<(NodeId, NodeId), Link>,
    refused: u64,
}

impl QueuedWorld {
    fn new(names: &[&str], settings: Settings, cap: usize, pipe: usize, per_ms: usize) -> Self {
        let cfg = bench_timings(names);
        let now = Instant::now();
        let nodes = names
            .iter()
            .map(|n| (id(n), Node::new(cfg.clone(), id(n), 1, settings.clone(), now).unwrap()))
            .collect();
        QueuedWorld { now, nodes, cap, pipe, per_ms, links: BTreeMap::new(), refused: 0 }
    }

    /// The outputs of `n`, then what the queues refused fed back to it, as the runtime's
    /// drain does (four rounds at most).
    fn drain(&mut self, n: &NodeId) {
        for _ in 0..5 {
            let Some(node) = self.nodes.get_mut(n) else { return };
            let mut refused = Vec::new();
            while let Some(o) = node.poll_output() {
                match o {
                    Output::Send { to, msg } => {
                        let link = self.links.entry((n.clone(), to.clone())).or_default();
                        if msg.is_control() {
                            link.control.push_back(msg);
                        } else if link.data.len() >= self.cap {
                            self.refused += 1;
                            if msg.resent_when_refused() {
                                refused.push((to, msg));
                            }
                        } else {
                            link.data.push_back(msg);
                        }
                    }
                    Output::Outcome { .. } | Output::Event(_) => {}
                }
            }
            if refused.is_empty() {
                return;
            }
            for (to, msg) in refused {
                node.handle_input(self.now, Input::Undelivered { to, msg });
            }
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, msg: Message) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&to) else { return };
        node.handle_input(now, Input::Message { from, msg });
        self.drain(&to);
    }

    /// One millisecond: the timeouts due, then each link's queues into its pipe (control
    /// first) and `per_ms` messages of the pipe delivered.
    fn step(&mut self) {
        self.now += Duration::from_millis(1);
        let names: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for n in &names {
            let now = self.now;
            let node = self.nodes.get_mut(n).unwrap();
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
                self.drain(n);
            }
        }
        let links: Vec<(NodeId, NodeId)> = self.links.keys().cloned().collect();
        for (from, to) in links {
            let Some(link) = self.links.get_mut(&(from.clone(), to.clone())) else { continue };
            while link.pipe.len() < self.pipe {
                let Some(m) = link.control.pop_front().or_else(|| link.data.pop_front()) else { break };
                link.pipe.push_back(m);
            }
            let batch: Vec<Message> = link.pipe.drain(..self.per_ms.min(link.pipe.len())).collect();
            for msg in batch {
                self.deliver(from.clone(), to.clone(), msg);
            }
        }
    }

    /// Steps until `done` or `limit` of virtual time; returns whether `done`.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + limit;
        let mut i = 0u64;
        while self.now < end {
            self.step();
            i += 1;
            if i % 10 == 0 && done(self) {
                return true;
            }
        }
        done(self)
    }

    fn backups(&self, n: &str) -> usize {
        self.nodes.get(&id(n)).map_or(0, |x| x.stats().backups)
    }
}

/// The benchmark's re-replication settings: a token bucket that does not limit and a scan
/// batch of 1000.
fn bench_settings() -> Settings {
    Settings {
        rereplication_per_sec: 1_000_000,
        rereplication_burst: 1000,
        scan_batch: 1000,
        ..Settings::default()
    }
}

/// `a` owns `n` sessions with one backup each on `b` or `c`, over links that queue 1024
/// messages, hold 8192 more in the pipe and carry 20 a millisecond (a heartbeat behind a full
/// pipe waits 400 ms, longer than the lease bound of 243 ms); `c` crashes. Returns the world
/// once `b` holds every backup or 20 s after the crash, and how long it took.
fn rereplication_after_a_crash(n: usize) -> (QueuedWorld, Duration) {
    let mut w = QueuedWorld::new(&["a", "b", "c"], bench_settings(), 1024, 8192, 20);
    assert!(w.run_until(Duration::from_secs(1), |w| w.nodes[&id("a")].stats().peers_up == 2));
    // Created as a client does with synchronous creates a few at a time: at most 512 ahead
    // of the backups.
    for i in 0..n {
        while i >= w.backups("b") + w.backups("c") + 512 {
            w.step();
        }
        let cmd = Command::Create {
            session: format!("s{i:06}"),
            attrs: attrs(&[("k", &[7u8; 64])]),
            max_inactive: Duration::from_secs(3600),
            ack: Ack::Async,
        };
        let now = w.now;
        w.nodes.get_mut(&id("a")).unwrap().handle_input(now, Input::Command { id: i as u64, cmd });
        w.drain(&id("a"));
    }
    let initial = w.run_until(Duration::from_secs(20), |w| w.backups("b") + w.backups("c") == n);
    assert!(initial, "initial replication: b {} c {} of {n}", w.backups("b"), w.backups("c"));
    w.nodes.remove(&id("c"));
    w.links.retain(|(from, to), _| from.as_str() != "c" && to.as_str() != "c");
    let crash = w.now;
    w.run_until(Duration::from_secs(20), |w| w.backups("b") == n);
    let took = w.now - crash;
    (w, took)
}

/// Paced copies in flight are bounded by the acknowledgements (`Flow::in_flight`): the
/// heartbeats behind them keep the owner's lease, so it never steps down from its sessions
/// (and takes them back one claim each) while it re-replicates.
#[test]
fn rereplication_keeps_the_lease_behind_a_deep_pipe() {
    let n = 20_000;
    let (w, took) = rereplication_after_a_crash(n);
    let a = w.nodes[&id("a")].stats();
    assert_eq!(
        (w.backups("b"), a.under_replicated, a.owned, a.fenced),
        (n, 0, n, 0),
        "b holds every backup, a owns every session and never stepped down ({} sends refused, \
         {} full copies, {took:?})",
        w.refused,
        a.full_copies_sent
    );
    // The failure timeout, then about 10,000 copies at 20 a millisecond.
    assert!(took < Duration::from_millis(1500), "{took:?}");
}
