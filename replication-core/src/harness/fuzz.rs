//! The world of the `core_inputs` fuzz target, shared with the regression tests that replay
//! what it found (`replication-core/tests/fuzz_repro.rs`): three `Node`s under a byte-decoded
//! sequence of commands, message deliveries, drops, duplicates and reorderings, time advances
//! (with one node paused), crashes and restarts. After every step: no panic, a holder's
//! `(epoch, version)` of a session never goes backwards, a node owns only at its own epochs, and
//! each epoch of a session has one owner (node and incarnation) ever.

use std::time::{Duration, Instant};

use super::invariants::CopyInvariants;
use super::world::{DomainText, Engine};
use crate::{Ack, Attributes, Change, Command, DomainConfig, Input, Message, NodeId, Output, Settings};

/// The nodes of the world, named `n0`, `n1`, ...
pub const NODES: usize = 3;
const SESSIONS: u8 = 16;
const MAX_NET: usize = 512;
const MAX_STEPS: usize = 400;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// Three engines, the messages in flight between them and what the invariants remember.
pub struct World {
    cfg: DomainConfig,
    /// The node names, by index.
    pub names: Vec<NodeId>,
    /// The engines by index.
    pub engines: Vec<Engine>,
    t0: Instant,
    ms: u64,
    net: Vec<(usize, usize, Message)>,
    next_rid: u64,
    created: Vec<String>,
    invariants: CopyInvariants,
}

impl World {
    fn new(replicas: u32) -> World {
        let names: Vec<NodeId> = (0..NODES).map(|i| NodeId::new(&format!("n{i}"))).collect();
        let cfg = names
            .iter()
            .fold(DomainText::new("f", replicas), |d, n| d.node(n.as_str(), None))
            .set("heartbeat_interval_ms", 50)
            .set("failure_timeout_ms", 200)
            .set("request_timeout_ms", 500)
            .parse("fuzz");
        let t0 = Instant::now();
        let engines = names.iter().map(|n| Engine::start(&cfg, n, &Settings::default(), t0)).collect();
        World {
            cfg,
            names,
            engines,
            t0,
            ms: 0,
            net: Vec::new(),
            next_rid: 1,
            created: Vec::new(),
            invariants: CopyInvariants::new(),
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.ms)
    }

    fn drain(&mut self, i: usize) {
        let Some(node) = self.engines[i].node.as_mut() else { return };
        let mut guard = 0;
        while let Some(out) = node.poll_output() {
            guard += 1;
            assert!(guard < 1_000_000, "poll_output never ends");
            if let Output::Send { to, msg } = out {
                let Some(j) = self.names.iter().position(|n| *n == to) else {
                    panic!("a node sends to {to}, not a member");
                };
                assert_ne!(i, j, "a node sends to itself");
                if self.net.len() < MAX_NET {
                    self.net.push((i, j, msg));
                }
            }
        }
    }

    fn input(&mut self, i: usize, input: Input) {
        let now = self.now();
        if let Some(node) = self.engines[i].node.as_mut() {
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
        if let Ok(s) = std::env::var("CORE_TRACE")
            && msg.session() == Some(s.as_str())
        {
            eprintln!("  deliver n{from}->n{to} {msg:?}");
        }
        let from = self.names[from].clone();
        self.input(to, Input::Message { from, msg });
    }

    fn advance(&mut self, ms: u64, paused: Option<usize>) {
        let end = self.ms + ms;
        // Step in 10 ms slices so timers fire in order.
        while self.ms < end {
            self.ms = (self.ms + 10).min(end);
            let now = self.now();
            for i in 0..NODES {
                if Some(i) == paused {
                    continue;
                }
                let Some(node) = self.engines[i].node.as_mut() else { continue };
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
        // Ids are unique (the runtime makes them so: random plus the owner's name): a create
        // makes a new one, other commands pick one of those created.
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
                changes: vec![Change::Set(format!("a{}", v % 4), vec![v].into())],
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
        if self.engines[i].is_up() {
            self.engines[i].crash();
        } else {
            let now = self.now();
            self.engines[i].restart(&self.cfg, &self.names[i], &Settings::default(), now);
            self.drain(i);
        }
    }

    fn check(&mut self) {
        let violations = self.invariants.check(self.names.iter().zip(&self.engines), |_, _, _, _| {});
        assert!(violations.is_empty(), "{}", violations.join("\n"));
    }
}

/// `CORE_TRACE=SESSION` prints every step and each node's view of SESSION (for minimizing a
/// crash: `CORE_TRACE=n0s6 cargo fuzz run -s none core_inputs CRASH_FILE`).
fn trace(w: &World, what: &str) {
    let Ok(s) = std::env::var("CORE_TRACE") else { return };
    let views: Vec<String> = (0..NODES)
        .map(|i| match w.engines[i].node.as_ref().and_then(|n| n.session(&s)) {
            Some(v) => format!(
                "n{i}#{}:{:?} {:?}/{} owner={:?} promised={:?} inv={}",
                w.engines[i].incarnation, v.role, v.epoch, v.version, v.owner, v.promised, v.invalidated
            ),
            None => format!("n{i}:{}", if w.engines[i].is_up() { "-" } else { "DOWN" }),
        })
        .collect();
    eprintln!("t={} {what}\n    {}", w.ms, views.join("\n    "));
}

/// Runs the input `data` with the invariants checked after every step (a violation panics);
/// the world at the end, or `None` for an empty input.
pub fn run(data: &[u8]) -> Option<World> {
    let mut b = Bytes(data);
    let first = b.next()?;
    let mut w = World::new(1 + u32::from(first & 1));
    // Let the nodes meet.
    w.advance(100, None);
    for _ in 0..10 {
        while !w.net.is_empty() {
            w.deliver(0, false);
        }
        w.advance(20, None);
    }
    w.check();
    let mut steps = 0;
    while let Some(op) = b.next() {
        steps += 1;
        if steps > MAX_STEPS {
            break;
        }
        let x = b.next().unwrap_or(0);
        let y = b.next().unwrap_or(0);
        if std::env::var_os("CORE_TRACE").is_some() {
            let peek = match op % 10 {
                2..=5 if !w.net.is_empty() => {
                    let (f, t, m) = &w.net[usize::from(x) % w.net.len()];
                    format!(" [n{f}->n{t} {m:?}]")
                }
                _ => String::new(),
            };
            eprintln!("op {} x={x} y={y}{peek}", op % 10);
        }
        match op % 10 {
            0 | 1 => {
                let i = usize::from(x) % NODES;
                w.command(i, x / 3, y % SESSIONS, y / SESSIONS);
            }
            2 | 3 => w.deliver(usize::from(x), false),
            4 => w.deliver(usize::from(x), true),
            5 if y % 4 == 0 => {
                // The runtime reports a node gone (its links closed, its address refused a
                // connection): true after a crash, wrong for a live node.
                let (to, peer) = (usize::from(x) % NODES, usize::from(y / 4) % NODES);
                if to != peer {
                    let peer = w.names[peer].clone();
                    w.input(to, Input::PeerGone { peer });
                }
            }
            5 => {
                if !w.net.is_empty() {
                    let k = usize::from(x) % w.net.len();
                    w.net.remove(k);
                }
            }
            6 => {
                // Deliver everything in flight, in order.
                let mut guard = 0;
                while !w.net.is_empty() && guard < 4 * MAX_NET {
                    w.deliver(0, false);
                    // Check after each message: a record that disappears and comes back as an
                    // older backup copy within one step would look like going back.
                    w.check();
                    guard += 1;
                }
            }
            7 => w.advance(u64::from(x) * 4, None),
            8 => w.advance(u64::from(x) * 8, Some(usize::from(y) % NODES)),
            _ => w.crash_or_restart(usize::from(x) % NODES),
        }
        trace(&w, "after");
        w.check();
    }
    Some(w)
}
