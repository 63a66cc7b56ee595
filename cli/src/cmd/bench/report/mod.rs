//! The report of a benchmark: the median figures, ratios to the baselines and targets.

mod plot;
mod text;

use std::collections::BTreeMap;

use serde::Serialize;

use super::memory::MemoryFigure;
use super::stats::{CURVE_POINTS, Curves, Figures};
use super::{FAILURE_TIMEOUT_MS, Plan};

#[derive(Debug, Serialize)]
struct Target {
    name: String,
    value: f64,
    limit: f64,
    met: Option<bool>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    quick: bool,
    runs: u32,
    phase_ms: u128,
    median: Figures,
    memory: BTreeMap<String, MemoryFigure>,
    ratios: BTreeMap<String, f64>,
    targets: Vec<Target>,
    latency_curves_percentiles: Vec<f64>,
    latency_curves_us: Curves,
    each_run: Vec<Figures>,
    redis: bool,
    /// The memory allocator the figures were taken with: `system`, or what `LD_PRELOAD`
    /// loaded (see `scripts/bench-allocators.sh`).
    allocator: String,
}

impl Report {
    pub(crate) fn new(
        plan: &Plan,
        runs: u32,
        median: Figures,
        each_run: Vec<Figures>,
        memory: BTreeMap<String, MemoryFigure>,
        curves: Curves,
        redis: bool,
    ) -> Report {
        let g = |k: &str| median.get(k).copied().unwrap_or(f64::NAN);
        let mem = |k: &str| memory.get(k).map_or(f64::NAN, |m| m.bytes_per_copy);
        let mut ratios = BTreeMap::new();
        ratios.insert(
            "tcp.sync.c1.p50 / raw.tcp.rtt.p50".into(),
            g("tcp.sync.c1.p50_us") / g("raw.tcp.rtt.p50_us"),
        );
        ratios.insert(
            "tcp.sync.c1.p99 / raw.tcp.rtt.p99".into(),
            g("tcp.sync.c1.p99_us") / g("raw.tcp.rtt.p99_us"),
        );
        ratios.insert(
            "tcp.sync.c1.p50 / raw.tcp.rtt_one_cpu.p50".into(),
            g("tcp.sync.c1.p50_us") / g("raw.tcp.rtt_one_cpu.p50_us"),
        );
        ratios.insert(
            "tcp.sync.c64 / raw.tcp pipelined".into(),
            g("tcp.sync.c64.ops_per_s") / g("raw.tcp.msgs_per_s"),
        );
        ratios.insert(
            "tcp.sync.c64 / raw.tls pipelined".into(),
            g("tcp.sync.c64.ops_per_s") / g("raw.tls.msgs_per_s"),
        );
        ratios
            .insert("raw.tls / raw.tcp pipelined".into(), g("raw.tls.msgs_per_s") / g("raw.tcp.msgs_per_s"));
        ratios.insert(
            "tcp.sync.c64 / redis.c16".into(),
            g("tcp.sync.c64.ops_per_s") / g("redis.c16.ops_per_s"),
        );
        ratios.insert(
            "quic.sync.c64 / raw.quinn".into(),
            g("quic.sync.c64.ops_per_s") / g("raw.quinn.msgs_per_s"),
        );
        for (k, m2m, raw) in [
            ("tcp.sync.c64 / raw.tls.acked", "tcp.sync.c64.ops_per_s", "raw.tls.acked.msgs_per_s"),
            ("quic.sync.c64 / raw.quinn.acked", "quic.sync.c64.ops_per_s", "raw.quinn.acked.msgs_per_s"),
            ("raw.quinn.acked / raw.quinn", "raw.quinn.acked.msgs_per_s", "raw.quinn.msgs_per_s"),
            ("raw.tls.acked / raw.tcp pipelined", "raw.tls.acked.msgs_per_s", "raw.tcp.msgs_per_s"),
        ] {
            ratios.insert(k.into(), g(m2m) / g(raw));
        }
        ratios.insert("memory m2m / hashmap".into(), mem("m2m") / mem("hashmap"));
        let target = |name: &str, value: f64, limit: f64, at_most: bool| Target {
            name: name.into(),
            value,
            limit,
            met: value.is_finite().then_some(if at_most { value <= limit } else { value >= limit }),
        };
        let r = |k: &str| ratios.get(k).copied().unwrap_or(f64::NAN);
        let targets = vec![
            target("sync p50 <= 2x raw TCP round trip", r("tcp.sync.c1.p50 / raw.tcp.rtt.p50"), 2.0, true),
            target("sync p99 <= 3x raw TCP round trip", r("tcp.sync.c1.p99 / raw.tcp.rtt.p99"), 3.0, true),
            target("sync c64 >= 25% raw pipelined TCP", r("tcp.sync.c64 / raw.tcp pipelined"), 0.25, false),
            target("sync c64 >= 20x Redis SET+WAIT c16", r("tcp.sync.c64 / redis.c16"), 20.0, false),
            target("QUIC sync c64 >= 50% raw quinn", r("quic.sync.c64 / raw.quinn"), 0.5, false),
            target("memory per copy <= 1.15x HashMap", r("memory m2m / hashmap"), 1.15, true),
            target(
                "failover <= failure timeout + 50 ms",
                g("failover.all_owned_ms"),
                (FAILURE_TIMEOUT_MS + 50) as f64,
                true,
            ),
            target(
                "failover, silent node <= failure timeout + 50 ms",
                g("failover.silent.all_owned_ms"),
                (FAILURE_TIMEOUT_MS + 50) as f64,
                true,
            ),
            target("re-replication >= 50,000 sessions/s", g("rereplication.sessions_per_s"), 50_000.0, false),
        ];
        Report {
            quick: plan.rounds < 20_000,
            runs,
            phase_ms: plan.phase.as_millis(),
            median,
            memory,
            ratios,
            targets,
            latency_curves_percentiles: CURVE_POINTS.to_vec(),
            latency_curves_us: curves,
            each_run,
            redis,
            allocator: allocator(),
        }
    }

    pub(crate) fn g(&self, k: &str) -> f64 {
        self.median.get(k).copied().unwrap_or(f64::NAN)
    }
}

/// The allocator of this process: `system`, or the libraries `LD_PRELOAD` names (jemalloc,
/// mimalloc...), which replace it.
fn allocator() -> String {
    match std::env::var("LD_PRELOAD") {
        Ok(v) if !v.trim().is_empty() => format!("LD_PRELOAD={}", v.trim()),
        _ => "system".into(),
    }
}
