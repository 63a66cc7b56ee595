//! The cost of the domain's full mesh as it grows, by simulation (no sockets): domains of 16,
//! 64 and 256 engines under virtual time with in-memory delivery
//! (`replication_core::harness::Cluster`), default timings (heartbeat 200 ms, failure timeout
//! 1 s). For each size: membership and heartbeat messages per node per second and their bytes
//! (MessagePack, as on the wire, without the frame), the engine's bytes of state per node (the
//! growth of the process's resident memory over the engines, divided by their number), the
//! engine's CPU per node (one thread runs them all: its time over the virtual time, which
//! includes the simulator's delivery), and the time until every survivor has failed one
//! silent node (a settled view).
//!
//! `cargo test --release -p replication-core --test domain_size -- --ignored --nocapture`
//! prints the table `docs/design.md` ("Domain size") quotes. `M2M_DOMAIN_SIZES=16,64` picks
//! the sizes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use replication_core::harness::{Cluster, cfg, id};
use replication_core::message::Message;
use replication_core::{Input, NodeId, Output, Settings};

/// Virtual seconds the steady state is counted over.
const STEADY_S: u64 = 10;
/// The step of virtual time (the resolution of the settle time).
const STEP: Duration = Duration::from_millis(10);

/// Messages and bytes by kind.
#[derive(Default)]
struct Traffic {
    by_kind: BTreeMap<&'static str, (u64, u64)>,
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Heartbeat { .. } => "heartbeat",
        Message::Leaving { .. } => "leaving",
        _ => "other",
    }
}

/// Delivers the wire until it is empty, counting every message (what `Cluster::pump` does,
/// without its budget, which a domain of 256 nodes exceeds).
fn pump(cl: &mut Cluster, traffic: &mut Traffic) {
    while let Some((from, to, msg)) = cl.wire.pop_front() {
        let bytes = rmp_serde::to_vec(&msg).map_or(0, |v| v.len() as u64);
        let e = traffic.by_kind.entry(kind(&msg)).or_default();
        e.0 += 1;
        e.1 += bytes;
        let now = cl.now;
        if let Some(node) = cl.nodes.get_mut(&to) {
            node.handle_input(now, Input::Message { from, msg });
            drain(cl, &to);
        }
    }
}

/// The outputs of `n`: sends on the wire; outcomes and events dropped.
fn drain(cl: &mut Cluster, n: &NodeId) {
    let Some(node) = cl.nodes.get_mut(n) else { return };
    while let Some(o) = node.poll_output() {
        if let Output::Send { to, msg } = o {
            cl.wire.push_back((n.clone(), to, msg));
        }
    }
}

/// One step of virtual time: timers due on every engine, then delivery.
fn step(cl: &mut Cluster, traffic: &mut Traffic) {
    cl.now += STEP;
    let now = cl.now;
    let names: Vec<NodeId> = cl.nodes.keys().cloned().collect();
    for n in names {
        if let Some(node) = cl.nodes.get_mut(&n)
            && node.poll_timeout().is_some_and(|t| t <= now)
        {
            node.handle_timeout(now);
        }
        drain(cl, &n);
    }
    pump(cl, traffic);
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// What one domain size measured.
struct Figures {
    nodes: usize,
    msgs_per_node_s: f64,
    heartbeat_bytes_per_node_s: f64,
    state_bytes_per_node: f64,
    cpu_share_per_node: f64,
    settle_ms: f64,
}

fn measure(n: usize) -> Figures {
    let names: Vec<String> = (1..=n).map(|i| format!("n{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let config = cfg(&refs, 1);
    let before = rss_bytes();
    let mut cl = Cluster::unstarted(config, Settings::default());
    let mut traffic = Traffic::default();
    // A second of warm-up: every view complete, timers spread as they run.
    for _ in 0..100 {
        step(&mut cl, &mut traffic);
    }
    let state = rss_bytes().saturating_sub(before) as f64 / n as f64;
    for node in cl.nodes.values() {
        assert_eq!(node.peers().iter().filter(|p| p.up).count(), n - 1, "a complete view");
    }
    let mut traffic = Traffic::default();
    let steps = STEADY_S * 1000 / STEP.as_millis() as u64;
    let wall = Instant::now();
    for _ in 0..steps {
        step(&mut cl, &mut traffic);
    }
    // One thread runs every engine: its time over the virtual time is their CPU share.
    let cpu_share = wall.elapsed().as_secs_f64() / (n as u64 * STEADY_S) as f64;
    let per_node_s = |v: u64| v as f64 / n as f64 / STEADY_S as f64;
    let msgs: u64 = traffic.by_kind.values().map(|(m, _)| m).sum();
    let hb_bytes = traffic.by_kind.get("heartbeat").map_or(0, |(_, b)| *b);
    // One node goes silent (a host that stops answering: nothing closes its links).
    let victim = id(&names[n / 2]);
    cl.nodes.remove(&victim);
    let t0 = cl.now;
    let settled = loop {
        step(&mut cl, &mut traffic);
        if cl.nodes.values().all(|node| !node.is_live(&victim)) {
            break cl.now;
        }
        assert!(cl.now - t0 < Duration::from_secs(30), "the view did not settle in 30 s");
    };
    Figures {
        nodes: n,
        msgs_per_node_s: per_node_s(msgs),
        heartbeat_bytes_per_node_s: per_node_s(hb_bytes),
        state_bytes_per_node: state,
        cpu_share_per_node: cpu_share,
        settle_ms: (settled - t0).as_secs_f64() * 1e3,
    }
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture (release)"]
fn domain_size() {
    let sizes: Vec<usize> = std::env::var("M2M_DOMAIN_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 64, 256]);
    println!(
        "{:>6} {:>18} {:>24} {:>14} {:>24} {:>16}",
        "nodes",
        "msgs sent/node/s",
        "heartbeat B sent/node/s",
        "state B/node",
        "engine CPU/node (core %)",
        "settled view ms"
    );
    for n in sizes {
        let f = measure(n);
        println!(
            "{:>6} {:>18.0} {:>24.0} {:>14.0} {:>24.3} {:>16.0}",
            f.nodes,
            f.msgs_per_node_s,
            f.heartbeat_bytes_per_node_s,
            f.state_bytes_per_node,
            f.cpu_share_per_node * 100.0,
            f.settle_ms
        );
        // Heartbeats to every peer every 200 ms: the full mesh's cost is linear per node.
        let expected = 5.0 * (n - 1) as f64;
        assert!(f.msgs_per_node_s >= expected * 0.9, "{} msgs/node/s for {expected}", f.msgs_per_node_s);
        assert!(f.settle_ms <= 1_500.0, "settled after {} ms", f.settle_ms);
    }
}
