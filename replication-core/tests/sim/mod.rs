//! A deterministic cluster simulator for the replication engine, with invariant checks.
//!
//! Virtual time (a base `Instant` plus milliseconds), one seeded RNG (splitmix64), a network
//! that delays, drops, duplicates and reorders messages, crashes and restarts (a restart is a
//! new `Node` with a new incarnation and empty state), pauses (SIGSTOP: the node runs nothing
//! and its inbound messages wait), partitions including one-way ones, and random client
//! commands. After the fault phase every fault heals and the cluster runs quiet; then the
//! durability and convergence invariants are checked.
//!
//! The engine slots, the domain and the per-step copy invariants are those of every world of
//! engines (`replication_core::harness::{world, invariants}`); the network, the RNG draws and
//! the drain order are the simulator's own, and fix its trace hashes (`tests/trace_hashes.txt`).

#![allow(dead_code, clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use replication_core::harness::invariants::CopyInvariants;
use replication_core::harness::world::{DomainText, Engine};
use replication_core::transport::WireMessage as _;
use replication_core::{
    Ack, Attributes, Change, Command, DomainConfig, Epoch, Event, Input, Message, NodeId, Outcome, Output,
    Role, Settings, Version,
};

/// splitmix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() { None } else { v.get(self.below(v.len() as u64) as usize) }
    }
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

/// What a run is made of.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    /// Fault-phase steps (10 ms of virtual time each).
    pub steps: u64,
    /// Quiet steps after healing.
    pub quiet_steps: u64,
    pub nodes: usize,
    pub replicas: u32,
    pub client_server: bool,
    /// Per mille, per message.
    pub drop: u64,
    pub dup: u64,
    pub max_delay_ms: u64,
    /// Per mille, per step.
    pub fault_rate: u64,
    pub op_rate: u64,
    pub partitions: bool,
    pub verbose: bool,
    /// A bounded per-link queue like the transports': keyed (data) messages in flight on a
    /// link at most; a send beyond is refused and fed back as `Input::Undelivered` after the
    /// drain. `None`: unbounded.
    pub queue_cap: Option<usize>,
    /// Per mille of client operations sent to the session's believed owner (session
    /// affinity); the rest go to any running node, which takes the session over.
    pub affinity: u64,
    /// A rolling restart: every node in turn leaves gracefully and is restarted at once (no
    /// other fault); a clean leave does not count as a fault of the node's holdings.
    pub rolling: bool,
    /// The runtime reports a crashed node gone (`Input::PeerGone`) to the running nodes within
    /// 0-20 ms, as the TCP transport does when a crashed process's links close; and now and
    /// then it reports a live node gone to one node (a wrong report, which must cost nothing
    /// acknowledged).
    pub gone: bool,
    /// Named session managers every node declares (`m0`, `m1`, ...; 0: none, the anonymous
    /// manager only). With `k` of them, the n-th session created is id `s<n / (k+1)>` of
    /// the anonymous manager or of one of them in turn: every id exists in every manager, on
    /// purpose, and a record of one showing up as another is a violation (the attribute `c`
    /// names the scoped key). Opt-in: no seed draws it, so recorded traces stay as they are.
    pub managers: usize,
    /// Online domain changes (`Sim::reconfig_step`): nodes added (from two spares outside
    /// the domain at start) and removed, replicas raised and lowered, each new file reaching
    /// the nodes one at a time in random order, mixed with the other faults. Off in the seeds
    /// of `from_seed` and `rolling_from_seed` (their traces stay what they were).
    pub reconfig: bool,
    /// A partition of a single link cuts it one way only (from the node picked to the other):
    /// the stale-owner case where a majority still hears the owner while the node that takes
    /// the session over does not. Opt-in (`M2M_SIM_ONE_WAY=1`): no seed draws it, so recorded
    /// traces stay as they are.
    pub one_way_links: bool,
}

impl SimOptions {
    /// A varied configuration derived from the seed.
    pub fn from_seed(seed: u64, steps: u64) -> Self {
        let mut r = Rng::new(seed ^ 0x5eed);
        let client_server = r.chance(200);
        let nodes = if client_server { 4 + r.below(2) as usize } else { 3 + r.below(3) as usize };
        let opt = SimOptions {
            seed,
            steps,
            quiet_steps: 1500,
            nodes,
            replicas: 1 + r.below(2) as u32,
            client_server,
            drop: r.below(60),
            dup: r.below(30),
            max_delay_ms: 1 + r.below(40),
            fault_rate: if r.chance(400) { r.below(3) } else { 2 + r.below(8) },
            op_rate: 200 + r.below(400),
            partitions: r.chance(600),
            verbose: false,
            queue_cap: None,
            affinity: 750,
            rolling: false,
            gone: false,
            managers: 0,
            reconfig: false,
            one_way_links: false,
        };
        // Drawn last: the options above stay what they were for every seed.
        let queue_cap = if r.chance(500) { Some(4 + r.below(60) as usize) } else { None };
        let gone = r.chance(500);
        SimOptions { queue_cap, gone, reconfig: false, ..opt }
    }

    /// `from_seed` with online domain changes (`SimOptions::reconfig`).
    pub fn reconfig_from_seed(seed: u64, steps: u64) -> Self {
        SimOptions { reconfig: true, ..Self::from_seed(seed, steps) }
    }

    /// A rolling restart (the process tests' `tcp-rolling` shape): sessions written through
    /// every node (little affinity, so ownership moves all the time) while each node in turn
    /// leaves gracefully and comes back at once as a new incarnation. No crash, pause or
    /// partition: nothing acknowledged may be lost.
    pub fn rolling_from_seed(seed: u64, steps: u64) -> Self {
        let mut r = Rng::new(seed ^ 0x7011);
        let client_server = r.chance(200);
        let nodes = if client_server { 4 + r.below(2) as usize } else { 3 + r.below(3) as usize };
        SimOptions {
            nodes,
            replicas: 1 + r.below(2) as u32,
            client_server,
            drop: r.below(20),
            dup: r.below(20),
            max_delay_ms: 1 + r.below(20),
            fault_rate: 0,
            op_rate: 500 + r.below(500),
            partitions: false,
            queue_cap: if r.chance(500) { Some(4 + r.below(60) as usize) } else { None },
            affinity: r.below(400),
            rolling: true,
            ..Self::from_seed(seed, steps)
        }
    }
}

#[derive(Debug)]
struct Slot {
    engine: Engine,
    paused_until: Option<u64>,
    down_until: Option<u64>,
    /// Messages that arrived while paused.
    inbox: VecDeque<(NodeId, Message)>,
    leaving: bool,
    /// It left gracefully with everything handed off (`Outcome::Left` with nothing
    /// unreplicated): in a rolling restart its restart is not a fault.
    left_clean: bool,
    /// It left while the domain listed it (a leave, not a removal): its copies went with it,
    /// a fault counted when it comes back, or when a change removes it before it does.
    left_listed: bool,
}

/// An online domain change on its way to the nodes (`SimOptions::reconfig`).
#[derive(Debug, Default)]
struct Rollout {
    /// The nodes still to reload the current file, each at a time (ms), in that order.
    due: VecDeque<(u64, NodeId)>,
    /// Every node with two more: the addresses of all the files of the run.
    universe: Option<DomainConfig>,
    changes: u64,
    /// When the last change's rollout ended.
    ended: u64,
}

#[derive(Clone, Debug)]
enum Kind {
    Create,
    Update { key: String },
    Get,
    Invalidate,
    Touch,
    Leave,
    FinalGet,
}

#[derive(Clone, Debug)]
struct Pending {
    node: NodeId,
    incarnation: u64,
    session: String,
    kind: Kind,
    /// When it was sent (ms).
    at: u64,
}

/// A read that showed a synchronous write held by the answering node only (no other node
/// held a copy with it), while that node had a live backup placed: if the write is then lost,
/// the read showed what a failover lost (see `Sim::check_unbacked_reads`).
#[derive(Clone, Debug)]
struct UnbackedRead {
    session: String,
    key: String,
    node: NodeId,
    /// When the write was sent, and when the read was answered (ms).
    written: u64,
    at: u64,
}

#[derive(Clone, Debug)]
struct Acked {
    session: String,
    key: String,
    k: u32,
    at: u64,
    epoch: Epoch,
    version: Version,
    /// Nodes that held a copy at or above `(epoch, version)` at some time since the ack.
    holders: BTreeSet<NodeId>,
    /// Acknowledging backups already gone when the ack arrived (crashed in between).
    missing: usize,
}

/// Figures of one run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub rolling: bool,
    pub client_server: bool,
    pub trace_hash: u64,
    pub steps: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub pauses: u64,
    /// Live nodes wrongly reported gone (`SimOptions::gone`).
    pub false_gone: u64,
    /// Reads of an invalidated session answered by a node whose outbound links are cut (a
    /// stale owner that has not learned it was replaced); a violation too unless the
    /// invalidation lost more holders than it was acknowledged by.
    pub isolated_stale_reads: u64,
    /// Online domain changes started (`SimOptions::reconfig`).
    pub reconfigs: u64,
    pub partitions: u64,
    pub leaves: u64,
    pub messages: u64,
    pub dropped: u64,
    pub duplicated: u64,
    /// Sends refused by a full link queue (`SimOptions::queue_cap`).
    pub refused: u64,
    pub commands: u64,
    pub acked_writes: u64,
    pub checked_writes: u64,
    pub sessions: u64,
    pub violations: Vec<String>,
}

pub struct Sim {
    opt: SimOptions,
    rng: Rng,
    t0: Instant,
    now: u64,
    cfg: DomainConfig,
    settings: Settings,
    names: Vec<NodeId>,
    owners: Vec<NodeId>,
    slots: BTreeMap<NodeId, Slot>,
    queue: BTreeMap<(u64, u64), (NodeId, NodeId, Message)>,
    /// Keyed messages in `queue` per link (from, to).
    inflight: HashMap<(NodeId, NodeId), usize>,
    /// Sends refused during the current drain, fed back after it.
    refused: Vec<(NodeId, Message)>,
    /// Gone reports due: (time, to, the node reported gone).
    gone_due: Vec<(u64, NodeId, NodeId)>,
    seq: u64,
    /// Directed links cut until a time.
    cut: BTreeMap<(NodeId, NodeId), u64>,
    next_req: u64,
    next_session: u64,
    next_op: u64,
    pending: BTreeMap<u64, Pending>,
    sessions: Vec<String>,
    believed_owner: BTreeMap<String, NodeId>,
    acked: Vec<Acked>,
    acked_by_session: BTreeMap<String, Vec<usize>>,
    /// Acked invalidations (the tombstone's write), by session.
    invalidated: BTreeMap<String, Acked>,
    /// Sessions with any invalidation or expiry attempt (not subject to durability checks).
    maybe_gone: BTreeSet<String>,
    /// (node, time from, time to) of faults touching a node.
    faults: Vec<(NodeId, u64, u64)>,
    /// The per-step invariants of the copies and the epochs' owners.
    invariants: CopyInvariants,
    final_found: BTreeMap<String, Option<Attributes>>,
    /// Keys written by synchronous updates, and when each was sent (ms).
    sync_keys: HashMap<String, u64>,
    /// Reads that showed a synchronous write no other node held (see [`UnbackedRead`]).
    unbacked_reads: Vec<UnbackedRead>,
    report: Report,
    trace: u64,
    phase_quiet: bool,
    /// Rolling restart: when the next node leaves, and which.
    next_roll: u64,
    roll_idx: usize,
    /// `M2M_SIM_WATCH=s13`: print every delivered message naming that session.
    watch: Option<String>,
    /// Online domain changes (`SimOptions::reconfig`).
    rollout: Rollout,
}

const STEP_MS: u64 = 10;

impl Sim {
    pub fn new(opt: SimOptions) -> Self {
        let spares = if opt.reconfig { 2 } else { 0 };
        let names: Vec<NodeId> = (0..opt.nodes + spares).map(|i| NodeId::new(&format!("n{i}"))).collect();
        let mut domain = DomainText::new("sim", opt.replicas)
            .set("request_timeout_ms", 2000)
            .set("heartbeat_interval_ms", 100)
            .set("failure_timeout_ms", 600);
        if opt.client_server {
            domain = domain.set("topology", "\"client-server\"");
        }
        for (i, n) in names.iter().enumerate() {
            let mode =
                if opt.client_server { if i < opt.nodes / 2 { "client" } else { "server" } } else { "both" };
            domain = domain.node(n.as_str(), Some(mode));
        }
        let mut cfg = domain.parse("sim");
        for n in &mut cfg.nodes {
            n.managers = (0..opt.managers).map(|m| (format!("m{m}"), n.mode())).collect();
        }
        let mut rollout = Rollout::default();
        if opt.reconfig {
            rollout.universe = Some(cfg.clone());
            cfg.nodes.truncate(opt.nodes);
        }
        let mut settings = Settings::default();
        settings.retransmit_interval = Duration::from_millis(250);
        settings.keepalive_interval = Duration::from_secs(1);
        settings.touch_interval = Duration::from_millis(500);
        settings.scan_batch = 64;
        settings.rereplication_per_sec = 400;
        settings.rereplication_burst = 100;
        settings.tombstone_ttl = Duration::from_secs(3600);
        let owners: Vec<NodeId> =
            cfg.nodes.iter().filter(|n| n.mode().owns_sessions()).map(|n| n.name.clone()).collect();
        let t0 = Instant::now();
        let mut slots = BTreeMap::new();
        for n in &names {
            let engine = if cfg.node(n).is_some() {
                Engine::start(&cfg, n, &settings, t0)
            } else {
                Engine { node: None, incarnation: 0 }
            };
            slots.insert(
                n.clone(),
                Slot {
                    engine,
                    paused_until: None,
                    down_until: None,
                    inbox: VecDeque::new(),
                    leaving: false,
                    left_clean: false,
                    left_listed: false,
                },
            );
        }
        let report = Report {
            seed: opt.seed,
            rolling: opt.rolling,
            client_server: opt.client_server,
            ..Report::default()
        };
        Sim {
            rng: Rng::new(opt.seed),
            opt,
            t0,
            now: 0,
            cfg,
            settings,
            names,
            owners,
            slots,
            queue: BTreeMap::new(),
            inflight: HashMap::new(),
            refused: Vec::new(),
            gone_due: Vec::new(),
            seq: 0,
            cut: BTreeMap::new(),
            next_req: 1,
            next_session: 0,
            next_op: 0,
            pending: BTreeMap::new(),
            sessions: Vec::new(),
            believed_owner: BTreeMap::new(),
            acked: Vec::new(),
            acked_by_session: BTreeMap::new(),
            invalidated: BTreeMap::new(),
            maybe_gone: BTreeSet::new(),
            faults: Vec::new(),
            invariants: CopyInvariants::new(),
            final_found: BTreeMap::new(),
            sync_keys: HashMap::new(),
            unbacked_reads: Vec::new(),
            report,
            trace: 0xcbf2_9ce4_8422_2325,
            phase_quiet: false,
            next_roll: 1000,
            roll_idx: 0,
            watch: std::env::var("M2M_SIM_WATCH").ok().map(|w| format!("\"{w}\"")),
            rollout,
        }
    }

    /// With `M2M_SIM_WATCH`: a message about the watched session that is lost (`what`: cut,
    /// refused by a full queue, dropped); deliveries are printed by `deliver`.
    fn watch_loss(&self, what: &str, from: &NodeId, to: &NodeId, msg: &Message) {
        let Some(w) = &self.watch else { return };
        let text = format!("{msg:?}");
        if text.contains(w.as_str()) {
            eprintln!("[{}ms] {what} {from} -> {to}: {text:.300}", self.now);
        }
    }

    fn instant(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now)
    }

    fn violation(&mut self, v: String) {
        if self.opt.verbose {
            eprintln!("[{}ms] VIOLATION {v}", self.now);
        }
        if self.report.violations.len() < 50 {
            self.report.violations.push(format!("seed {} t={}ms: {v}", self.opt.seed, self.now));
        }
    }

    fn running(&self, n: &NodeId) -> bool {
        self.slots.get(n).is_some_and(|s| s.engine.is_up() && s.paused_until.is_none())
    }

    /// Runs the whole scenario and returns the figures.
    pub fn run(mut self) -> Report {
        for _ in 0..self.opt.steps {
            self.step(true);
        }
        self.heal();
        self.phase_quiet = true;
        for _ in 0..self.opt.quiet_steps {
            self.step(false);
        }
        self.final_checks();
        self.report.trace_hash = self.trace;
        self.report.steps = self.opt.steps + self.opt.quiet_steps;
        self.report.sessions = self.sessions.len() as u64;
        self.report
    }

    fn step(&mut self, faults: bool) {
        self.now += STEP_MS;
        // Resume paused nodes, restart crashed ones when due.
        let names = self.names.clone();
        for n in &names {
            let now = self.now;
            let slot = self.slots.get_mut(n).unwrap();
            if slot.paused_until.is_some_and(|t| t <= now) {
                slot.paused_until = None;
                // Overdue timers run first, as after a SIGCONT.
                self.run_timeout(n);
                let inbox: Vec<(NodeId, Message)> = self.slots.get_mut(n).unwrap().inbox.drain(..).collect();
                for (from, msg) in inbox {
                    self.deliver(from, n.clone(), msg);
                }
            }
            let at = self.instant();
            let slot = self.slots.get_mut(n).unwrap();
            if slot.down_until.is_some_and(|t| t <= now) && self.cfg.node(n).is_none() {
                // Removed from the domain: it does not come back. A node that had left while
                // listed took its copies with it (a leave, counted when it comes back).
                slot.down_until = None;
                slot.leaving = false;
                if std::mem::take(&mut slot.left_listed) {
                    self.faults.push((n.clone(), now, now));
                }
            }
            if slot.down_until.is_some_and(|t| t <= now) {
                slot.down_until = None;
                slot.leaving = false;
                let clean = std::mem::take(&mut slot.left_clean) && self.opt.rolling;
                slot.left_listed = false;
                slot.engine.restart(&self.cfg, n, &self.settings, at);
                let inc = slot.engine.incarnation;
                self.report.restarts += 1;
                if !clean {
                    self.faults.push((n.clone(), self.now, self.now));
                }
                self.trace_str(&format!("restart {n} {inc}"));
            }
        }
        // Gone reports due (to a paused node: lost, as it would read them late).
        if !self.gone_due.is_empty() {
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = self.gone_due.drain(..).partition(|(t, _, _)| *t <= now);
            self.gone_due = later;
            for (_, to, peer) in due {
                if !self.running(&to) {
                    continue;
                }
                self.trace_str(&format!("gone {peer} at {to}"));
                let at = self.instant();
                let node = self.slots.get_mut(&to).unwrap().engine.node.as_mut().unwrap();
                node.handle_input(at, Input::PeerGone { peer });
                self.drain(&to);
            }
        }
        // Deliver due messages.
        while let Some((&(t, s), _)) = self.queue.first_key_value() {
            if t > self.now {
                break;
            }
            let (from, to, msg) = self.queue.remove(&(t, s)).unwrap();
            if msg.ordering_key().is_some() {
                if let Some(c) = self.inflight.get_mut(&(from.clone(), to.clone())) {
                    *c = c.saturating_sub(1);
                }
            }
            if self.cut.get(&(from.clone(), to.clone())).is_some_and(|until| *until > self.now) {
                self.watch_loss("cut", &from, &to, &msg);
                self.report.dropped += 1;
                continue;
            }
            self.deliver(from, to, msg);
        }
        // Timers.
        for n in &names {
            self.run_timeout(n);
        }
        if let Some(w) = &self.watch {
            if self.now % 100 == 0 {
                let id = w.trim_matches('"');
                for (n, slot) in &self.slots {
                    if let Some(v) = slot.engine.node.as_ref().and_then(|x| x.session(id)) {
                        eprintln!(
                            "[{}ms] view {n}: {:?} {:?}/{} owner {:?} promised {:?}",
                            self.now, v.role, v.epoch, v.version, v.owner, v.promised
                        );
                    }
                }
            }
        }
        if self.opt.reconfig {
            self.reconfig_step(faults);
        }
        if faults {
            if self.rng.chance(self.opt.op_rate) {
                self.client_op();
            }
            if self.rng.chance(self.opt.fault_rate) {
                self.inject_fault();
            }
            if self.opt.gone && self.rng.chance(self.opt.fault_rate) {
                // A live node wrongly reported gone to another.
                let (a, b) = (self.rng.pick(&self.names).cloned(), self.rng.pick(&self.names).cloned());
                if let (Some(a), Some(b)) = (a, b) {
                    if a != b && self.running(&a) && self.running(&b) {
                        self.report.false_gone += 1;
                        self.gone_due.push((self.now, a, b));
                    }
                }
            }
            if self.opt.rolling {
                self.roll();
            }
        }
        self.check_step();
    }

    fn run_timeout(&mut self, n: &NodeId) {
        if !self.running(n) {
            return;
        }
        let at = self.instant();
        let slot = self.slots.get_mut(n).unwrap();
        let node = slot.engine.node.as_mut().unwrap();
        if node.poll_timeout().is_some_and(|t| t <= at) {
            node.handle_timeout(at);
            self.drain(n);
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, msg: Message) {
        let Some(slot) = self.slots.get_mut(&to) else { return };
        if slot.engine.node.is_none() {
            self.report.dropped += 1;
            return;
        }
        if slot.paused_until.is_some() {
            if slot.inbox.len() < 10_000 {
                slot.inbox.push_back((from, msg));
            }
            return;
        }
        let at = self.t0 + Duration::from_millis(self.now);
        let mut h = self.trace;
        fnv(&mut h, &self.now.to_le_bytes());
        fnv(&mut h, from.as_str().as_bytes());
        fnv(&mut h, to.as_str().as_bytes());
        match &msg {
            Message::Heartbeat { incarnation, .. } => fnv(&mut h, &incarnation.to_le_bytes()),
            other => fnv(&mut h, &rmp_serde::to_vec(other).unwrap()),
        }
        self.trace = h;
        if let Some(w) = &self.watch {
            let text = format!("{msg:?}");
            if text.contains(w.as_str()) {
                eprintln!("[{}ms] {from} -> {to}: {text:.300}", self.now);
            }
        }
        slot.engine.node.as_mut().unwrap().handle_input(at, Input::Message { from, msg });
        self.drain(&to);
    }

    fn trace_str(&mut self, s: &str) {
        let mut h = self.trace;
        fnv(&mut h, &self.now.to_le_bytes());
        fnv(&mut h, s.as_bytes());
        self.trace = h;
        if self.opt.verbose {
            eprintln!("[{}ms] {s}", self.now);
        }
    }

    fn drain(&mut self, n: &NodeId) {
        self.drain_outputs(n);
        // What a full link queue refused goes back to the node after the drain.
        for _ in 0..4 {
            if self.refused.is_empty() {
                return;
            }
            let at = self.instant();
            let refused = std::mem::take(&mut self.refused);
            let Some(node) = self.slots.get_mut(n).and_then(|s| s.engine.node.as_mut()) else { return };
            for (to, msg) in refused {
                node.handle_input(at, Input::Undelivered { to, msg });
            }
            self.drain_outputs(n);
        }
        self.refused.clear();
    }

    fn drain_outputs(&mut self, n: &NodeId) {
        loop {
            let Some(slot) = self.slots.get_mut(n) else { return };
            let Some(node) = slot.engine.node.as_mut() else { return };
            let Some(out) = node.poll_output() else { break };
            match out {
                Output::Send { to, msg } => self.send(n.clone(), to, msg),
                Output::Outcome { id, outcome } => self.on_outcome(n, id, outcome),
                Output::Event(e) => {
                    self.trace_str(&format!("{n} {e:?}"));
                    if let Event::SessionExpired { session } = &e {
                        self.maybe_gone.insert(session.clone());
                    }
                }
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Message) {
        self.report.messages += 1;
        let keyed = msg.ordering_key().is_some();
        if let Some(cap) = self.opt.queue_cap {
            if keyed && self.inflight.get(&(from.clone(), to.clone())).is_some_and(|c| *c >= cap) {
                self.watch_loss("refused", &from, &to, &msg);
                self.report.refused += 1;
                self.refused.push((to, msg));
                return;
            }
        }
        let (drop, dup) = if self.phase_quiet { (0, 0) } else { (self.opt.drop, self.opt.dup) };
        if self.rng.chance(drop) {
            self.watch_loss("drop", &from, &to, &msg);
            self.report.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(dup) {
            self.report.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.below(self.opt.max_delay_ms);
            self.seq += 1;
            if keyed {
                *self.inflight.entry((from.clone(), to.clone())).or_default() += 1;
            }
            self.queue.insert((self.now + delay, self.seq), (from.clone(), to.clone(), msg.clone()));
        }
    }

    fn command(&mut self, n: &NodeId, session: &str, kind: Kind, cmd: Command) {
        let id = self.next_req;
        self.next_req += 1;
        self.report.commands += 1;
        let inc = self.slots[n].engine.incarnation;
        self.pending.insert(
            id,
            Pending { node: n.clone(), incarnation: inc, session: session.to_owned(), kind, at: self.now },
        );
        self.trace_str(&format!("cmd {id} {n} {cmd:?}"));
        let at = self.instant();
        let node = self.slots.get_mut(n).unwrap().engine.node.as_mut().unwrap();
        node.handle_input(at, Input::Command { id, cmd });
        self.drain(n);
    }

    fn random_ack(&mut self) -> Ack {
        if self.rng.chance(600) { Ack::Sync { backups: 1 + self.rng.below(2) as u32 } } else { Ack::Async }
    }

    /// The scoped key of the n-th session created (see [`SimOptions::managers`]).
    fn session_key(&self, n: u64) -> String {
        let k = self.opt.managers as u64 + 1;
        let manager = (n % k).checked_sub(1).map(|m| format!("m{m}"));
        replication_core::scope::key(manager.as_deref(), &format!("s{}", n / k))
    }

    fn client_op(&mut self) {
        let running: Vec<NodeId> =
            self.owners.iter().filter(|n| self.running(n) && !self.slots[*n].leaving).cloned().collect();
        let Some(node) = self.rng.pick(&running).cloned() else { return };
        let roll = self.rng.below(100);
        if roll < 15 || self.sessions.is_empty() {
            let session = self.session_key(self.next_session);
            self.next_session += 1;
            self.sessions.push(session.clone());
            self.believed_owner.insert(session.clone(), node.clone());
            let ack = self.random_ack();
            let attrs: Attributes = [("c".to_owned(), session.as_bytes().to_vec())].into_iter().collect();
            // A few sessions expire during the run (they are not checked for durability).
            let max_inactive = if self.rng.chance(100) {
                self.maybe_gone.insert(session.clone());
                Duration::from_millis(2000 + self.rng.below(6000))
            } else {
                Duration::from_secs(3600)
            };
            let cmd = Command::Create { session: session.clone(), attrs, max_inactive, ack };
            self.command(&node, &session, Kind::Create, cmd);
            return;
        }
        let session = self.rng.pick(&self.sessions).cloned().unwrap();
        // Mostly talk to the believed owner, as session affinity would.
        let target = match self.believed_owner.get(&session) {
            Some(o) if running.contains(o) && self.rng.chance(self.opt.affinity) => o.clone(),
            _ => node,
        };
        if roll < 70 {
            let key = format!("op{}", self.next_op);
            self.next_op += 1;
            let ack = self.random_ack();
            if matches!(ack, Ack::Sync { .. }) {
                self.sync_keys.insert(key.clone(), self.now);
            }
            let cmd = Command::Update {
                session: session.clone(),
                expected_version: None,
                changes: vec![Change::Set(key.clone(), self.next_op.to_le_bytes().to_vec().into())],
                ack,
            };
            self.command(&target, &session, Kind::Update { key }, cmd);
        } else if roll < 90 {
            self.command(&target, &session, Kind::Get, Command::Get { session: session.clone() });
        } else if roll < 93 {
            self.maybe_gone.insert(session.clone());
            let ack = self.random_ack();
            self.command(
                &target,
                &session,
                Kind::Invalidate,
                Command::Invalidate { session: session.clone(), ack },
            );
        } else if roll < 99 {
            self.command(&target, &session, Kind::Touch, Command::Touch { session: session.clone() });
        } else if !self.opt.rolling && self.rng.chance(300) {
            self.report.leaves += 1;
            self.slots.get_mut(&target).unwrap().leaving = true;
            self.command(&target, "", Kind::Leave, Command::Leave);
        }
    }

    fn on_outcome(&mut self, n: &NodeId, id: u64, outcome: Outcome) {
        self.trace_str(&format!("out {id} {n} {outcome:?}"));
        let Some(p) = self.pending.remove(&id) else {
            self.violation(format!("outcome for unknown or finished request {id}: {outcome:?}"));
            return;
        };
        if p.node != *n {
            self.violation(format!("outcome of {id} from {n}, sent to {}", p.node));
        }
        let inc = self.slots[n].engine.incarnation;
        // Epoch ownership: only the epoch's node and incarnation writes or serves at it.
        let epoch = match &outcome {
            Outcome::Applied { epoch, .. }
            | Outcome::Replicated { epoch, .. }
            | Outcome::Unreplicated { epoch, .. }
            | Outcome::Indeterminate { epoch, .. }
            | Outcome::Found { epoch, .. }
            | Outcome::Acquired { epoch, .. } => Some(epoch.clone()),
            _ => None,
        };
        if let Some(e) = epoch {
            if e.node != *n || e.incarnation != inc {
                self.violation(format!("{n}#{inc} reports epoch {e:?} for {}", p.session));
            }
            if let Err(prev) = self.invariants.use_epoch(&p.session, &e, n, inc) {
                self.violation(format!("epoch {e:?} of {} used by {n}#{inc} and {prev:?}", p.session));
            }
            self.believed_owner.insert(p.session.clone(), n.clone());
        }
        match (&p.kind, &outcome) {
            (Kind::Update { .. } | Kind::Create, Outcome::Replicated { epoch, version, acks }) => {
                let key = match &p.kind {
                    Kind::Update { key } => key.clone(),
                    _ => "c".to_owned(),
                };
                self.report.acked_writes += 1;
                let a = self.make_acked(&p.session, key, *acks, epoch, *version);
                self.acked_by_session.entry(p.session.clone()).or_default().push(self.acked.len());
                self.acked.push(a);
            }
            (Kind::Invalidate, Outcome::Replicated { epoch, version, acks }) => {
                let a = self.make_acked(&p.session, String::new(), *acks, epoch, *version);
                self.invalidated.entry(p.session.clone()).or_insert(a);
            }
            (Kind::Get | Kind::FinalGet, Outcome::Found { attrs, .. }) => {
                // Every record names the scoped key it was created under: no cross-talk
                // between session managers (or sessions).
                if let Some(c) = attrs.get("c").filter(|c| *c != p.session.as_bytes()) {
                    let c = String::from_utf8_lossy(c).escape_default().to_string();
                    self.violation(format!("{} answered with the record of {c}", p.session.escape_default()));
                }
                if let Some(a) = self.invalidated.get(&p.session) {
                    // A node whose messages do not reach the others (its outbound links cut)
                    // may be a stale owner that has not learned it was replaced: the read
                    // lease keeps it from serving its old state (docs/design.md, "The read
                    // lease"). Counted in the report line too.
                    let isolated = self.cut.iter().any(|((from, _), until)| from == n && *until > self.now);
                    if isolated {
                        self.report.isolated_stale_reads += 1;
                    }
                    if self.faulted_holders(a) <= a.k as usize {
                        let cut = if isolated { " (cut off)" } else { "" };
                        self.violation(format!("invalidated session {} came back at {n}{cut}", p.session));
                    }
                }
                self.check_stale_read(n, &p, attrs);
                if matches!(p.kind, Kind::FinalGet) {
                    self.final_found.insert(p.session.clone(), Some(attrs.clone()));
                } else {
                    self.note_unbacked_read(n, &p.session, attrs);
                }
            }
            (Kind::FinalGet, other) => {
                if self.opt.verbose {
                    eprintln!("final get of {} gave {other:?}", p.session);
                }
                self.final_found.insert(p.session.clone(), None);
            }
            (Kind::Leave, Outcome::Left { unreplicated, .. }) => {
                // The node is gone; bring it back later as a new incarnation (at once in a
                // rolling restart, and the next node leaves a little later).
                let slot = self.slots.get_mut(n).unwrap();
                slot.engine.crash();
                slot.inbox.clear();
                slot.left_clean = *unreplicated == 0;
                slot.left_listed = self.cfg.node(n).is_some();
                let until = if self.opt.rolling {
                    let until = self.now + self.rng.below(300);
                    self.next_roll = until + 300 + self.rng.below(1000);
                    until
                } else {
                    self.now + 500 + self.rng.below(3000)
                };
                self.slots.get_mut(n).unwrap().down_until = Some(until);
                if self.opt.reconfig
                    && (*unreplicated > 0 || self.opt.client_server)
                    && self.cfg.node(n).is_none()
                {
                    // A removed node does not come back: what it could not hand off is a
                    // fault of its holdings now (a node that comes back counts at its restart).
                    // A removed client of a client-server domain takes its copy away: its
                    // sessions keep their backups on the servers, and no node owns them until
                    // their next read (servers do not take sessions over).
                    self.faults.push((n.clone(), self.now, self.now));
                }
                self.trace_str(&format!("left {n} unreplicated {unreplicated}"));
            }
            _ => {}
        }
    }

    /// A read must show every write acknowledged before it was sent, unless the write could
    /// be lost (more of its holders faulted than it was acknowledged by): a read that misses
    /// one came from a stale owner (one that a majority still heard while another node took
    /// the session over, or one whose lease lapsed while it was failed over).
    fn check_stale_read(&mut self, n: &NodeId, p: &Pending, attrs: &Attributes) {
        if self.maybe_gone.contains(&p.session) {
            return;
        }
        let missed: Vec<String> = self
            .acked_by_session
            .get(&p.session)
            .into_iter()
            .flatten()
            .map(|&i| &self.acked[i])
            .filter(|a| a.at < p.at && !attrs.contains_key(&a.key))
            .filter(|a| self.faulted_holders(a) <= a.k as usize)
            .map(|a| {
                format!(
                    "stale read: {} read at {n} (sent at {}ms) misses {} acknowledged at {}ms ({:?}/{})",
                    p.session, p.at, a.key, a.at, a.epoch, a.version
                )
            })
            .collect();
        for m in missed {
            self.violation(m);
        }
    }

    /// Notes the synchronous writes a read at `n` showed that no other node held, when `n` had
    /// a live backup of the session (with none, its writes were reported unreplicated and an
    /// owner reads its one copy).
    fn note_unbacked_read(&mut self, n: &NodeId, session: &str, attrs: &Attributes) {
        let Some(node) = self.slots[n].engine.node.as_ref() else { return };
        let backed = node.session(session).is_some_and(|v| v.backups.iter().any(|(b, _)| node.is_live(b)));
        if !backed || !attrs.keys().any(|k| self.sync_keys.contains_key(k)) {
            return;
        }
        let others: Vec<Attributes> = self
            .slots
            .iter()
            .filter(|(m, _)| *m != n)
            .filter_map(|(_, s)| s.engine.node.as_ref()?.session(session).map(|v| v.attrs))
            .collect();
        for k in attrs.keys() {
            let Some(&written) = self.sync_keys.get(k) else { continue };
            if !others.iter().any(|o| o.contains_key(k)) {
                let (key, node, at) = (k.to_owned(), n.clone(), self.now);
                self.unbacked_reads.push(UnbackedRead {
                    session: session.to_owned(),
                    key,
                    node,
                    written,
                    at,
                });
            }
        }
    }

    /// A read that showed a synchronous write no backup held, which the session's final state
    /// then lacks, showed what a failover lost: a violation unless a node other than the one
    /// that answered faulted since the write (a backup that held it may have lost it).
    fn check_unbacked_reads(&mut self) {
        let mut lost = Vec::new();
        for r in std::mem::take(&mut self.unbacked_reads) {
            if self.maybe_gone.contains(&r.session) {
                continue;
            }
            let Some(Some(fin)) = self.final_found.get(&r.session) else { continue };
            let others_faulted = self.faults.iter().any(|(m, _, to)| *m != r.node && *to >= r.written);
            if !fin.contains_key(&r.key) && !others_faulted {
                lost.push(format!(
                    "read of {} at {} ({}ms) showed {} (sent at {}ms), which no backup held and which was lost",
                    r.session, r.node, r.at, r.key, r.written
                ));
            }
        }
        for l in lost {
            self.violation(l);
        }
    }

    /// Holders of an acknowledged write touched by a fault (crash, restart, pause, partition)
    /// since it was acknowledged.
    fn faulted_holders(&self, a: &Acked) -> usize {
        a.missing
            + self
                .faults
                .iter()
                .filter(|(n, _, to)| *to >= a.at && a.holders.contains(n))
                .map(|(n, _, _)| n)
                .collect::<BTreeSet<_>>()
                .len()
    }

    fn make_acked(&self, session: &str, key: String, k: u32, epoch: &Epoch, version: Version) -> Acked {
        // While a lowered replica count rolls out, the extra copy of a write acknowledged by
        // more backups is dropped on purpose: it survives the faults the new count allows.
        let k = match self.cfg.domain.replicas {
            replication_core::Replicas::Count(n) if self.opt.reconfig => k.min(n),
            _ => k,
        };
        let holders = self.holders_now(session, epoch, version);
        // An acknowledging backup that crashed before the ack arrived is a faulted holder.
        let missing = (k as usize + 1).saturating_sub(holders.len());
        Acked {
            session: session.to_owned(),
            key,
            k,
            at: self.now,
            epoch: epoch.clone(),
            version,
            holders,
            missing,
        }
    }

    fn fail_pending_of(&mut self, n: &NodeId) {
        // Commands in flight on a crashed node never complete: forget them.
        let inc = self.slots[n].engine.incarnation;
        self.pending.retain(|_, p| !(p.node == *n && p.incarnation == inc));
    }

    fn inject_fault(&mut self) {
        let n = self.rng.pick(&self.names).cloned().unwrap();
        let live_count = self.slots.values().filter(|s| s.engine.is_up()).count();
        let roll = self.rng.below(100);
        if roll < 40 {
            // Crash, restart later.
            if self.slots[&n].engine.node.is_none() || live_count <= 1 {
                return;
            }
            self.fail_pending_of(&n);
            let until = self.now + 300 + self.rng.below(4000);
            let slot = self.slots.get_mut(&n).unwrap();
            slot.engine.crash();
            slot.paused_until = None;
            slot.inbox.clear();
            slot.down_until = Some(until);
            self.report.crashes += 1;
            self.faults.push((n.clone(), self.now, until));
            self.trace_str(&format!("crash {n}"));
            if self.opt.gone {
                for m in self.names.clone() {
                    if m != n {
                        let at = self.now + self.rng.below(3) * STEP_MS;
                        self.gone_due.push((at, m, n.clone()));
                    }
                }
            }
        } else if roll < 60 {
            // Pause (SIGSTOP).
            if !self.running(&n) {
                return;
            }
            let until = self.now + 200 + self.rng.below(2500);
            self.slots.get_mut(&n).unwrap().paused_until = Some(until);
            self.report.pauses += 1;
            self.faults.push((n.clone(), self.now, until));
            self.trace_str(&format!("pause {n}"));
        } else if self.opt.partitions {
            // Partition: isolate a node, one way or both, or cut a single link.
            let until = self.now + 300 + self.rng.below(4000);
            let mode = self.rng.below(3);
            let other = self.rng.pick(&self.names).cloned().unwrap();
            let names = self.names.clone();
            for m in &names {
                if *m == n || (mode == 2 && *m != other) {
                    continue;
                }
                if mode != 1 {
                    self.cut.insert((n.clone(), m.clone()), until);
                }
                if (mode != 0 || mode == 2) && !(mode == 2 && self.opt.one_way_links) {
                    self.cut.insert((m.clone(), n.clone()), until);
                }
            }
            // Only the node cut off (and, for a single link, the other end) counts as faulted:
            // a holder on the connected side keeps what it acknowledged, so the partition +
            // amnesia case (a stale owner cut off from the new owner only, acknowledged by a
            // backup that restarted meanwhile) is checked (`partition_amnesia_seed`).
            self.faults.push((n.clone(), self.now, until));
            if mode == 2 && other != n {
                self.faults.push((other.clone(), self.now, until));
            }
            self.report.partitions += 1;
            self.trace_str(&format!("partition {n} mode {mode} other {other}"));
        }
    }

    /// Rolling restart: the next node in turn leaves when the previous one is back.
    fn roll(&mut self) {
        if self.now < self.next_roll || self.slots.values().any(|s| s.leaving || s.engine.node.is_none()) {
            return;
        }
        let n = self.names[self.roll_idx % self.names.len()].clone();
        self.roll_idx += 1;
        if !self.running(&n) {
            return;
        }
        self.report.leaves += 1;
        self.slots.get_mut(&n).unwrap().leaving = true;
        self.trace_str(&format!("roll {n}"));
        self.command(&n, "", Kind::Leave, Command::Leave);
    }

    fn heal(&mut self) {
        self.cut.clear();
        let now = self.now;
        for slot in self.slots.values_mut() {
            if slot.paused_until.is_some() {
                slot.paused_until = Some(now);
            }
            if slot.down_until.is_some() {
                slot.down_until = Some(now);
            }
        }
        // Nodes that left have down_until set by the Left outcome; nodes still leaving finish.
        self.trace_str("heal");
    }

    /// Invariants checked after every step (`CopyInvariants`: versions never go backwards at a
    /// holder, only an epoch's node and incarnation owns at it); the holders of acked writes
    /// are tracked.
    fn check_step(&mut self) {
        let engines = self.slots.iter().map(|(n, slot)| (n, &slot.engine));
        let (acked, acked_by_session, invalidated) =
            (&mut self.acked, &self.acked_by_session, &mut self.invalidated);
        let violations = self.invariants.check(engines, |n, s, e, ver| {
            for &i in acked_by_session.get(s).map(Vec::as_slice).unwrap_or(&[]) {
                let a = &mut acked[i];
                if (e, ver) >= (&a.epoch, a.version) {
                    a.holders.insert(n.clone());
                }
            }
            if let Some(a) = invalidated.get_mut(s) {
                if (e, ver) >= (&a.epoch, a.version) {
                    a.holders.insert(n.clone());
                }
            }
        });
        for v in violations {
            self.violation(v);
        }
    }

    /// Nodes holding `session` at or above `(epoch, version)` right now.
    fn holders_now(&self, session: &str, epoch: &Epoch, version: Version) -> BTreeSet<NodeId> {
        let mut h = BTreeSet::new();
        for (n, slot) in &self.slots {
            let Some(node) = slot.engine.node.as_ref() else { continue };
            if let Some(v) = node.session(session) {
                if v.epoch.as_ref().is_some_and(|e| (e, v.version) >= (epoch, version)) {
                    h.insert(n.clone());
                }
            }
        }
        h
    }

    fn final_checks(&mut self) {
        if self.opt.reconfig {
            for _ in 0..1000 {
                if self.rollout.due.is_empty() {
                    break;
                }
                self.step(false);
            }
            let changing: Vec<String> = self
                .slots
                .iter()
                .filter_map(|(n, s)| s.engine.node.as_ref().map(|x| (n, x.domain())))
                .filter(|(_, d)| d.changing)
                .map(|(n, d)| format!("{n}: {d:?}"))
                .collect();
            for c in changing {
                self.violation(format!("the change did not complete after healing: {c}"));
            }
        }
        // Convergence: one owner per session, holding its target replica count.
        let mut owners: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
        for (n, slot) in &self.slots {
            let Some(node) = slot.engine.node.as_ref() else { continue };
            for s in node.owned_sessions() {
                owners.entry(s.to_owned()).or_default().push(n.clone());
            }
        }
        let live: BTreeSet<NodeId> =
            self.slots.iter().filter(|(_, s)| s.engine.is_up()).map(|(n, _)| n.clone()).collect();
        let mut problems = Vec::new();
        for (s, os) in &owners {
            if os.len() > 1 {
                problems.push(format!("{s} has {} owners after healing: {os:?}", os.len()));
                continue;
            }
            let o = &os[0];
            let node = self.slots[o].engine.node.as_ref().unwrap();
            let view = node.session(s).unwrap();
            let eligible = self
                .cfg
                .nodes
                .iter()
                .filter(|c| c.name != *o && live.contains(&c.name))
                .filter(|c| {
                    if self.opt.client_server { c.mode() == replication_core::Mode::Server } else { true }
                })
                .count();
            let want = self.cfg.domain.replicas.wanted(eligible);
            let held: Vec<&NodeId> = view.backups.iter().filter(|(_, h)| *h).map(|(n, _)| n).collect();
            if view.backups.len() != want || held.len() != want {
                problems.push(format!("{s} owned by {o}: backups {:?}, want {want}", view.backups));
            }
            for b in held {
                let bv = self.slots[b].engine.node.as_ref().and_then(|x| x.session(s));
                if bv.as_ref().map(|v| (v.epoch.clone(), v.version))
                    != Some((view.epoch.clone(), view.version))
                {
                    problems.push(format!(
                        "{s}: backup {b} has {:?}, owner {o} has {:?}/{}",
                        bv.map(|v| (v.epoch, v.version)),
                        view.epoch,
                        view.version
                    ));
                }
            }
        }
        problems.extend(self.stray_copies(&owners));
        for p in problems {
            self.violation(p);
        }
        // Durability: fetch every session that has an acked write or invalidation and check.
        let mut to_check: BTreeSet<String> = self.acked.iter().map(|a| a.session.clone()).collect();
        to_check.extend(self.invalidated.keys().cloned());
        let runnable: Vec<NodeId> = self.owners.iter().filter(|n| self.running(n)).cloned().collect();
        for s in &to_check {
            let target =
                owners.get(s).and_then(|v| v.first().cloned()).or_else(|| self.rng.pick(&runnable).cloned());
            let Some(t) = target else { continue };
            self.command(&t, s, Kind::FinalGet, Command::Get { session: s.clone() });
        }
        for _ in 0..500 {
            if !self.pending.values().any(|p| matches!(p.kind, Kind::FinalGet)) {
                break;
            }
            self.step(false);
        }
        self.check_unbacked_reads();
        let acked = std::mem::take(&mut self.acked);
        self.acked_by_session.clear();
        for a in &acked {
            if self.maybe_gone.contains(&a.session) {
                continue;
            }
            if self.faulted_holders(a) > a.k as usize {
                continue;
            }
            self.report.checked_writes += 1;
            match self.final_found.get(&a.session) {
                Some(Some(attrs)) if attrs.contains_key(&a.key) => {}
                other => {
                    let got = other.map(|o| o.as_ref().map(|a| a.len()));
                    self.violation(format!(
                        "acked write {} of {} (k={}, {:?}/{}, acked at {}ms, holders {:?}) lost: final get gave {got:?} attrs",
                        a.key, a.session, a.k, a.epoch, a.version, a.at, a.holders
                    ));
                }
            }
        }
        let inv: Vec<Acked> = self.invalidated.values().cloned().collect();
        for a in inv {
            if self.faulted_holders(&a) <= a.k as usize {
                self.report.checked_writes += 1;
                if let Some(Some(_)) = self.final_found.get(&a.session) {
                    self.violation(format!("invalidated session {} is back after healing", a.session));
                }
            }
        }
        // Every command got its one outcome (except those on nodes that crashed).
        let left: Vec<String> =
            self.pending.iter().map(|(id, p)| format!("{id} on {} ({:?})", p.node, p.kind)).collect();
        for l in left {
            self.violation(format!("no outcome for command {l}"));
        }
    }

    /// No stray copies after healing: every live backup copy of an owned session at its
    /// owner's epoch is on a node the owner places it on (a lowered replica count or a shrunk
    /// domain leaves no copy behind, a lost `Drop` included). Copies at an older epoch (of a
    /// session that moved) are left to the orphan timeout (docs/design.md, "Online domain
    /// changes"), and copies of sessions nobody owns are not counted here.
    fn stray_copies(&self, owners: &BTreeMap<String, Vec<NodeId>>) -> Vec<String> {
        let mut problems = Vec::new();
        for (n, slot) in &self.slots {
            let Some(node) = slot.engine.node.as_ref() else { continue };
            if !slot.engine.is_up() {
                continue;
            }
            for (s, epoch, version, owned) in node.copies() {
                let Some([o]) = owners.get(s).map(Vec::as_slice) else { continue };
                if owned || o == n || node.session(s).is_none_or(|v| v.role != Role::Backup) {
                    continue;
                }
                let Some(view) = self.slots[o].engine.node.as_ref().and_then(|x| x.session(s)) else {
                    continue;
                };
                if view.epoch.as_ref() == Some(epoch) && !view.backups.iter().any(|(b, _)| b == n) {
                    problems.push(format!(
                        "stray copy of {s} on {n} ({epoch:?}/{version}): owner {o} places {:?}",
                        view.backups
                    ));
                }
            }
        }
        problems
    }

    /// Online domain changes (`SimOptions::reconfig`): in the fault phase, now and then a new
    /// file (a node added or removed, replicas up or down) when no rollout runs; in every
    /// phase, the rollout's next node reloads when due (a node down restarts with the new
    /// file; a paused one reloads when it resumes).
    fn reconfig_step(&mut self, faults: bool) {
        if let Some(&(t, ref n)) = self.rollout.due.front() {
            if t <= self.now {
                let n = n.clone();
                self.rollout.due.pop_front();
                if self.slots[&n].paused_until.is_some() {
                    self.rollout.due.push_back((self.now + 100, n));
                } else if self.running(&n) {
                    self.reload(&n);
                }
                if self.rollout.due.is_empty() {
                    self.rollout.ended = self.now;
                }
            }
            return;
        }
        if faults && self.now > self.rollout.ended + 2000 && self.rng.chance(4) {
            self.start_change();
        }
    }

    /// A new file, and the order and times at which it reaches the nodes.
    fn start_change(&mut self) {
        let Some(universe) = self.rollout.universe.clone() else { return };
        let mut new = self.cfg.clone();
        let listed: Vec<NodeId> = new.nodes.iter().map(|n| n.name.clone()).collect();
        let spare: Vec<NodeId> = universe
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| !listed.contains(n) && !self.slots[n].engine.is_up())
            .collect();
        let what = self.rng.below(4);
        let desc = match what {
            0 if !spare.is_empty() => {
                let n = self.rng.pick(&spare).cloned().unwrap();
                new.nodes.push(universe.node(&n).unwrap().clone());
                format!("add {n}")
            }
            // At least three nodes stay: a domain of two takes sessions over on one node's
            // word (the exception of the majority rule), outside what the runs check.
            1 if listed.len() > 3 => {
                let n = self.rng.pick(&listed).cloned().unwrap();
                new.nodes.retain(|c| c.name != n);
                format!("remove {n}")
            }
            2 if self.cfg.domain.replicas == replication_core::Replicas::Count(1) => {
                new.domain.replicas = replication_core::Replicas::Count(2);
                "replicas 2".to_owned()
            }
            3 if self.cfg.domain.replicas == replication_core::Replicas::Count(2) => {
                new.domain.replicas = replication_core::Replicas::Count(1);
                // The extra copies of every session are dropped on purpose: a write
                // acknowledged by two backups now survives the faults of one.
                for a in self.acked.iter_mut().chain(self.invalidated.values_mut()) {
                    a.k = a.k.min(1);
                }
                "replicas 1".to_owned()
            }
            _ => return,
        };
        // Every file keeps a node that owns sessions and one that holds backups.
        let has = |f: fn(replication_core::Mode) -> bool| new.nodes.iter().any(|c| f(c.mode()));
        if replication_core::validate::validate(&new).has_errors()
            || !has(replication_core::Mode::owns_sessions)
            || !has(replication_core::Mode::stores_backups)
        {
            return;
        }
        self.trace_str(&format!("reconfig {desc}"));
        self.report.reconfigs += 1;
        self.rollout.changes += 1;
        // Order the new file's nodes and the removed ones at random; the new nodes start
        // first, with the new file (the others refuse them until they reload).
        let mut order = listed.clone();
        for i in (1..order.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let at = self.instant();
        for c in &new.nodes {
            let slot = self.slots.get_mut(&c.name).unwrap();
            if !listed.contains(&c.name) {
                if std::mem::take(&mut slot.left_listed) {
                    self.faults.push((c.name.clone(), self.now, self.now));
                }
                slot.engine.restart(&new, &c.name, &self.settings, at);
                // A new incarnation, not leaving (it may have left shortly before): a file
                // that removes it again makes it leave (`reload`).
                slot.leaving = false;
                slot.down_until = None;
                slot.paused_until = None;
                slot.inbox.clear();
                let inc = slot.engine.incarnation;
                self.trace_str(&format!("start {} {inc}", c.name));
            }
        }
        self.cfg = new;
        self.owners =
            self.cfg.nodes.iter().filter(|n| n.mode().owns_sessions()).map(|n| n.name.clone()).collect();
        let mut t = self.now;
        for n in order {
            t += self.rng.below(1500);
            self.rollout.due.push_back((t, n));
        }
    }

    /// Node `n` reloads the current file: a node it does not list leaves the domain and
    /// does not come back.
    fn reload(&mut self, n: &NodeId) {
        let cfg = self.cfg.clone();
        let node = self.slots.get_mut(n).unwrap().engine.node.as_mut().unwrap();
        let res = node.reconfigure(cfg);
        self.drain(n);
        match res {
            Ok(plan) => {
                self.trace_str(&format!("reload {n}"));
                if plan.removes_this_node && !self.slots[n].leaving {
                    self.slots.get_mut(n).unwrap().leaving = true;
                    self.report.leaves += 1;
                    self.command(n, "", Kind::Leave, Command::Leave);
                }
            }
            Err(e) => self.violation(format!("{n} refused the sim's new file: {e}")),
        }
    }
}
