//! Inputs found by the `core_inputs` fuzz target (`fuzz/fuzz_targets/core_inputs.rs`),
//! replayed with the same world (three nodes, the same domain, the same step decoding) as
//! deterministic regression tests, so `cargo test` covers them without cargo-fuzz.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use replication_core::{
    Ack, Attributes, Change, Command, DomainConfig, Input, Message, Node, NodeId, Output, Role, Settings,
};

const NODES: usize = 3;
const SESSIONS: u8 = 16;
const MAX_NET: usize = 512;
const MAX_STEPS: usize = 400;

/// The world of `core_inputs`, step for step (kept in sync with the fuzz target by hand).
struct World {
    cfg: DomainConfig,
    names: Vec<NodeId>,
    nodes: Vec<Option<Node>>,
    incarnations: Vec<u64>,
    t0: Instant,
    ms: u64,
    net: Vec<(usize, usize, Message)>,
    next_rid: u64,
    created: Vec<String>,
}

impl World {
    fn new(replicas: u32) -> World {
        let mut text = format!(
            "[domain]\nname = \"f\"\nreplicas = {replicas}\nheartbeat_interval_ms = 50\nfailure_timeout_ms = 200\nrequest_timeout_ms = 500\n"
        );
        for i in 0..NODES {
            text.push_str(&format!("[[node]]\nname = \"n{i}\"\naddress = \"127.0.0.1:{}\"\n", 7000 + i));
        }
        let cfg = DomainConfig::parse(&text, "fuzz").unwrap();
        let names: Vec<NodeId> = (0..NODES).map(|i| NodeId::new(&format!("n{i}"))).collect();
        let t0 = Instant::now();
        let nodes = names
            .iter()
            .map(|n| Some(Node::new(cfg.clone(), n.clone(), 1, Settings::default(), t0).unwrap()))
            .collect();
        World {
            cfg,
            names,
            nodes,
            incarnations: vec![1; NODES],
            t0,
            ms: 0,
            net: Vec::new(),
            next_rid: 1,
            created: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.ms)
    }

    fn drain(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else { return };
        while let Some(out) = node.poll_output() {
            if let Output::Send { to, msg } = out {
                let j = self.names.iter().position(|n| *n == to).unwrap();
                if self.net.len() < MAX_NET {
                    self.net.push((i, j, msg));
                }
            }
        }
    }

    fn input(&mut self, i: usize, input: Input) {
        let now = self.now();
        if let Some(node) = self.nodes[i].as_mut() {
            node.handle_input(now, input);
            self.drain(i);
        }
    }

    fn deliver(&mut self, k: usize, keep: bool) {
        if self.net.is_empty() {
            return;
        }
        let k = k % self.net.len();
        let (from, to, msg) = if keep { self.net[k].clone() } else { self.net.remove(k) };
        let from = self.names[from].clone();
        self.input(to, Input::Message { from, msg });
    }

    fn advance(&mut self, ms: u64, paused: Option<usize>) {
        let end = self.ms + ms;
        while self.ms < end {
            self.ms = (self.ms + 10).min(end);
            let now = self.now();
            for i in 0..NODES {
                if Some(i) == paused {
                    continue;
                }
                let Some(node) = self.nodes[i].as_mut() else { continue };
                let mut guard = 0;
                while node.poll_timeout().is_some_and(|t| t <= now) && guard < 8 {
                    node.handle_timeout(now);
                    guard += 1;
                }
                self.drain(i);
            }
        }
    }

    fn command(&mut self, i: usize, op: u8, s: u8, v: u8) {
        let session = if op % 6 == 0 {
            let id = format!("n{i}s{}", self.created.len());
            self.created.push(id.clone());
            id
        } else if self.created.is_empty() {
            return;
        } else {
            self.created[usize::from(s) % self.created.len()].clone()
        };
        let ack = if v & 1 == 0 { Ack::Sync { backups: 1 } } else { Ack::Async };
        let cmd = match op % 6 {
            0 => {
                let mut attrs = Attributes::new();
                attrs.insert("k", vec![v]);
                Command::Create { session, attrs, max_inactive: Duration::from_secs(60), ack }
            }
            1 => Command::Update {
                session,
                expected_version: None,
                changes: vec![Change::Set(format!("a{}", v % 4), vec![v])],
                ack,
            },
            2 => Command::Get { session },
            3 => Command::Acquire { session },
            4 => Command::Invalidate { session, ack },
            _ => Command::Touch { session },
        };
        let id = self.next_rid;
        self.next_rid += 1;
        self.input(i, Input::Command { id, cmd });
    }

    fn crash_or_restart(&mut self, i: usize) {
        if self.nodes[i].is_some() {
            self.nodes[i] = None;
        } else {
            self.incarnations[i] += 1;
            let node = Node::new(
                self.cfg.clone(),
                self.names[i].clone(),
                self.incarnations[i],
                Settings::default(),
                self.now(),
            )
            .unwrap();
            self.nodes[i] = Some(node);
            self.drain(i);
        }
    }

    /// Replays a fuzz input (the decoding of `core_inputs`).
    fn replay(data: &[u8]) -> World {
        let mut it = data.iter().copied();
        let first = it.next().unwrap();
        let mut w = World::new(1 + u32::from(first & 1));
        w.advance(100, None);
        for _ in 0..10 {
            while !w.net.is_empty() {
                w.deliver(0, false);
            }
            w.advance(20, None);
        }
        let mut steps = 0;
        while let Some(op) = it.next() {
            steps += 1;
            if steps > MAX_STEPS {
                break;
            }
            let x = it.next().unwrap_or(0);
            let y = it.next().unwrap_or(0);
            match op % 10 {
                0 | 1 => {
                    let i = usize::from(x) % NODES;
                    w.command(i, x / 3, y % SESSIONS, y / SESSIONS);
                }
                2 | 3 => w.deliver(usize::from(x), false),
                4 => w.deliver(usize::from(x), true),
                5 => {
                    if !w.net.is_empty() {
                        let k = usize::from(x) % w.net.len();
                        w.net.remove(k);
                    }
                }
                6 => {
                    let mut guard = 0;
                    while !w.net.is_empty() && guard < 4 * MAX_NET {
                        w.deliver(0, false);
                        guard += 1;
                    }
                }
                7 => w.advance(u64::from(x) * 4, None),
                8 => w.advance(u64::from(x) * 8, Some(usize::from(y) % NODES)),
                _ => w.crash_or_restart(usize::from(x) % NODES),
            }
        }
        w
    }
}

/// `fuzz/repro/core_inputs-ownerless` (docs/reliability.md, finding 3): a claim that reached
/// the owner n2 after its acquirer n1 had given up demoted n2, and n1's release (then the same
/// `Drop` message as "you were replaced") deleted n2's copy; the session stayed without an owner
/// for the 70 s of quiet virtual time that end the input. Every node is up at the end; without
/// any client request, exactly one of them must own the session again, with the newest data.
#[test]
fn late_claim_then_release_leaves_one_owner() {
    let w = World::replay(include_bytes!("../../fuzz/repro/core_inputs-ownerless"));
    let s = "n0s6";
    assert!(w.nodes.iter().all(Option::is_some), "every node is up at the end");
    let views: Vec<_> = w.nodes.iter().map(|n| n.as_ref().unwrap().session(s)).collect();
    let dump = format!("{views:#?}");
    let owners: Vec<usize> =
        (0..NODES).filter(|&i| views[i].as_ref().is_some_and(|v| v.role == Role::Owner)).collect();
    assert_eq!(owners.len(), 1, "one owner of {s}:\n{dump}");
    let owner = views[owners[0]].as_ref().unwrap();
    // With the fix, n2 owns the session again soon enough for a later `Invalidate` of the
    // input to reach it; either way the owner holds the session's data.
    assert!(owner.invalidated || owner.attrs.contains_key("k"), "the created attribute is there: {dump}");
    // The owner continues from the newest copy: nothing held anywhere is newer.
    for v in views.iter().flatten() {
        assert!(v.version <= owner.version, "{dump}");
    }
    // ... and its backup holds the owner's state.
    for (b, held) in &owner.backups {
        assert!(held, "backup {b} holds the current version: {dump}");
        let i = w.names.iter().position(|n| n == b).unwrap();
        let bv = views[i].as_ref().unwrap();
        assert_eq!((bv.epoch.as_ref(), bv.version), (owner.epoch.as_ref(), owner.version), "{dump}");
    }
}
