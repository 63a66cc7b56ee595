//! The report of a benchmark: the median figures, ratios to the baselines and targets.

mod plot;
mod ratio;
mod text;

use std::collections::BTreeMap;

use serde::Serialize;

use self::ratio::{RATIOS, Ratio};
use super::figure::{
    Carrier, Cpu, FailoverMetric, Figure, Figures, Latency, Loss, Pct, Rate, RerepMetric, ScaleMetric,
    Sessions,
};
use super::memory::MemoryFigure;
use super::stats::{CURVE_POINTS, Curves};
use super::{FAILURE_TIMEOUT_MS, MemoryKind, Plan};

/// CPU microseconds per synchronous update (TCP, 64 sessions, owner + backup + load in one
/// process) of the data path with a task hand-off per step, which the target halves.
pub(crate) const CPU_PER_SYNC_UPDATE_BASE_US: f64 = 14.0;

/// The failover limit at `n` sessions moved: 50 ms and 0.1 ms per 1,000 sessions.
pub(crate) fn failover_limit_ms(n: usize) -> f64 {
    50.0 + 0.1 * n as f64 / 1000.0
}

/// A target of the benchmark and whether the run met it (`None`: not measured).
#[derive(Debug, Serialize)]
struct Target {
    name: String,
    value: f64,
    limit: f64,
    met: Option<bool>,
}

/// Everything a benchmark found; its JSON form is `m2m bench --json`.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    quick: bool,
    runs: u32,
    phase_ms: u128,
    median: Figures,
    memory: BTreeMap<MemoryKind, MemoryFigure>,
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
    /// The report of `runs` runs of `plan`: `median` of the figures of `each_run`, the memory
    /// figures, the latency curves of the last run; ratios and targets computed from them.
    pub(crate) fn new(
        plan: &Plan,
        runs: u32,
        median: Figures,
        each_run: Vec<Figures>,
        memory: BTreeMap<MemoryKind, MemoryFigure>,
        curves: Curves,
        redis: bool,
    ) -> Report {
        let g = |k: Figure| median.get(k);
        let mem = |k: MemoryKind| memory.get(&k).map_or(f64::NAN, |m| m.bytes_per_copy);
        let mut ratios: BTreeMap<String, f64> =
            RATIOS.iter().map(|r| (r.name.to_owned(), r.of(&median))).collect();
        let memory_ratio = mem(MemoryKind::M2m) / mem(MemoryKind::Hashmap);
        ratios.insert(ratio::MEMORY.into(), memory_ratio);
        let target = |name: &str, value: f64, limit: f64, at_most: bool| Target {
            name: name.into(),
            value,
            limit,
            met: value.is_finite().then_some(if at_most { value <= limit } else { value >= limit }),
        };
        let r = |ratio: Ratio| ratio.of(&median);
        let failover_limit = (FAILURE_TIMEOUT_MS + 50) as f64;
        let all_owned = |loss| g(Figure::Failover(loss, FailoverMetric::AllOwnedMs));
        let targets = vec![
            target("sync p50 <= 2x raw TCP round trip", r(ratio::SYNC_P50), 2.0, true),
            target("sync p99 <= 3x raw TCP round trip", r(ratio::SYNC_P99), 3.0, true),
            target("sync c64 >= 25% raw pipelined TCP", r(ratio::SYNC_C64), 0.25, false),
            target("sync c64 >= 20x Redis SET+WAIT c16", r(ratio::SYNC_C64_REDIS), 20.0, false),
            target("QUIC sync c64 >= 50% raw quinn", r(ratio::QUIC_SYNC_C64), 0.5, false),
            target("memory per copy <= 1.15x HashMap", memory_ratio, 1.15, true),
            target("failover <= failure timeout + 50 ms", all_owned(Loss::Crashed), failover_limit, true),
            target(
                "failover, silent node <= failure timeout + 50 ms",
                all_owned(Loss::Silent),
                failover_limit,
                true,
            ),
            target(
                "re-replication >= 50,000 sessions/s",
                g(Figure::Rereplication(RerepMetric::SessionsPerS)),
                50_000.0,
                false,
            ),
            target("sync c64 >= 0.5x raw TLS acked", r(ratio::SYNC_C64_ACKED), 0.5, false),
            target("sync c1024 >= 0.6x raw TLS acked", r(ratio::SYNC_C1024_ACKED), 0.6, false),
            target("QUIC sync c64 >= 0.6x raw quinn acked", r(ratio::QUIC_SYNC_C64_ACKED), 0.6, false),
            target("async c64 >= 0.3x raw TLS pipelined", r(ratio::ASYNC_C64_TLS), 0.3, false),
            target(
                "CPU per sync update <= half of 14 us",
                g(Figure::CpuPerUpdate(Cpu::Sync(Carrier::Tcp))),
                CPU_PER_SYNC_UPDATE_BASE_US / 2.0,
                true,
            ),
            target("sync p50 <= raw TCP round trip p50", r(ratio::SYNC_P50), 1.0, true),
            target("sync p99 <= 1.5x raw TCP round trip p99", r(ratio::SYNC_P99), 1.5, true),
            target("replicas 2 c64 >= 0.7x replicas 1", r(ratio::REPLICAS2_TO_1), 0.7, false),
            target(
                "12 nodes / 3 nodes >= 0.8x the same of the bare TLS mesh",
                r(ratio::NODES12_TO_3) / r(ratio::MESH12_TO_3),
                0.8,
                false,
            ),
            target("re-replication at 1,000,000 >= 0.8x at 10,000", r(ratio::REREP_1M_TO_10K), 0.8, false),
        ];
        let mut targets = targets;
        for s in Sessions::ALL {
            targets.push(target(
                &format!("failover at {} sessions <= 50 ms + 0.1 ms per 1,000", s.n()),
                g(Figure::Scale(s, ScaleMetric::FailoverMs)),
                failover_limit_ms(s.n()),
                true,
            ));
        }
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

    /// The median of figure `k` (NaN when it was not measured).
    fn g(&self, k: Figure) -> f64 {
        self.median.get(k)
    }

    /// The median of a latency percentile, in microseconds.
    fn lat(&self, series: Latency, p: Pct) -> f64 {
        self.g(Figure::Latency(series, p))
    }

    /// The median of a rate, per second.
    fn per_s(&self, rate: Rate) -> f64 {
        self.g(Figure::Rate(rate))
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    /// A report in which every figure of the benchmark was measured (value 1).
    fn full_report() -> Report {
        let plan = Plan::QUICK;
        let run: Figures = Figure::all().into_iter().map(|f| (f, 1.0)).collect();
        let mut fig = MemoryFigure::default();
        (fig.sessions, fig.bytes_per_copy) = (1, 1.0);
        let memory = BTreeMap::from([(MemoryKind::Hashmap, fig.clone()), (MemoryKind::M2m, fig)]);
        let curve: Vec<f64> = (1..=CURVE_POINTS.len()).map(|i| 10.0 * i as f64).collect();
        let curves = Curves { raw_tcp: curve.clone(), tcp: curve.clone(), quic: curve.clone(), redis: curve };
        Report::new(&plan, 1, run.clone(), vec![run], memory, curves, true)
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    }

    fn target_names(v: &Value) -> BTreeSet<String> {
        let targets = v["targets"].as_array().cloned().unwrap_or_default();
        targets.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect()
    }

    /// The scale steps (`scale.<sessions>.`) the published run measured: it may stop below
    /// the largest (`--scale-max`).
    fn scale_sizes(keys: &BTreeSet<String>) -> BTreeSet<String> {
        keys.iter().filter_map(|k| k.strip_prefix("scale.")?.split('.').next().map(str::to_owned)).collect()
    }

    /// `keys` without those of scale steps beyond `sizes`.
    fn within(keys: BTreeSet<String>, sizes: &BTreeSet<String>) -> BTreeSet<String> {
        keys.into_iter()
            .filter(|k| {
                k.strip_prefix("scale.").and_then(|r| r.split('.').next()).is_none_or(|n| sizes.contains(n))
            })
            .collect()
    }

    /// The names in `m2m bench --json` are read by scripts: the report of a run that measured
    /// every figure has exactly the keys of the published one, but for the scale steps beyond
    /// the published run's `--scale-max`.
    #[test]
    fn json_keys_match_the_published_report() -> anyhow::Result<()> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/benchmarks/latest.json");
        let published: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let ours = serde_json::to_value(full_report())?;
        assert_eq!(keys(&ours), keys(&published), "top-level keys");
        let sizes = scale_sizes(&keys(&published["median"]));
        assert!(sizes.contains("10000"), "the published run measured the first scale step");
        for part in ["median", "ratios", "memory", "latency_curves_us"] {
            assert_eq!(
                within(keys(&ours[part]), &sizes),
                within(keys(&published[part]), &sizes),
                "keys of {part}"
            );
        }
        assert_eq!(
            keys(&ours["memory"]["m2m"]),
            keys(&published["memory"]["m2m"]),
            "keys of a memory figure"
        );
        assert_eq!(
            within(keys(&ours["each_run"][0]), &sizes),
            keys(&published["each_run"][0]),
            "keys of a run"
        );
        assert_eq!(keys(&ours["targets"][0]), keys(&published["targets"][0]), "keys of a target");
        assert_eq!(target_names(&ours), target_names(&published), "target names");
        Ok(())
    }

    /// Every ratio and target of a full report is computed from figures that were measured,
    /// and the text and the plot look up only figures of the benchmark (`Figures::get`
    /// asserts it in debug builds).
    #[test]
    fn a_full_report_has_every_ratio_and_target() -> anyhow::Result<()> {
        let report = full_report();
        for (name, v) in &report.ratios {
            assert!(v.is_finite(), "ratio {name}: {v}");
        }
        for t in &report.targets {
            assert!(t.met.is_some(), "target {}: {}", t.name, t.value);
        }
        let text = report.render();
        assert!(!text.contains("NaN") && !text.contains(" - "), "{text}");
        let svg = report.svg()?;
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        for label in ["Latency at concurrency 1", "m2m QUIC sync update", "Redis SET+WAIT 1, 16 clients"] {
            assert!(svg.contains(label), "the plot shows `{label}`");
        }
        Ok(())
    }

    /// A run that measured no latency curve (`--only failover --svg FILE`) still gets its
    /// plot, as SVG and as PNG.
    #[test]
    fn a_plot_without_latency_curves_is_drawn() -> anyhow::Result<()> {
        let mut report = full_report();
        report.latency_curves_us = Curves::default();
        assert!(report.svg()?.trim_end().ends_with("</svg>"));
        let dir = tempfile::tempdir()?;
        let png = dir.path().join("plot.png");
        report.png(&png)?;
        assert!(std::fs::read(&png)?.starts_with(b"\x89PNG"), "a PNG file");
        Ok(())
    }
}
