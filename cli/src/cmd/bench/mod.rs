//! `m2m bench`: the performance benchmark of m2m, with its baselines measured in the same run.
//!
//! - Baselines: raw TCP request/acknowledge ping-pong of 1 KiB on loopback (plain tokio
//!   `TcpStream`, no TLS), raw pipelined TCP throughput, the same over TLS 1.3 (rustls,
//!   what encryption alone costs) and raw quinn throughput of 1 KiB messages on one
//!   connection; the same three with an 8-byte acknowledgement per message and 64 in flight
//!   (the transport's share of a synchronous update at concurrency 64); and (with
//!   `--redis ADDR`) a Redis primary with one replica
//!   doing `SET` + `WAIT 1 0` from a small RESP client.
//! - m2m: synchronous session updates (1 KiB delta, 1 backup) over TLS/TCP and QUIC between
//!   nodes of this process on loopback (throw-away certificates): latency at concurrency 1,
//!   throughput at 1, 16 and 64 concurrent sessions; replicas 2; async acknowledgement.
//! - Memory: bytes per session copy (owner and backup) against a plain
//!   `HashMap<String, Vec<u8>>` holding the same data, each measured as the VmRSS growth of a
//!   fresh child process (`/proc/self/status`).
//! - Failover (the owner, a child process, is killed with SIGKILL) and re-replication after a
//!   backup holder is lost (stopped with `abort()` in-process, like a crash without a
//!   graceful leave).
//!
//! Every figure is the median over `--runs` runs (memory: one run).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use session_api::AckPolicy;

#[cfg(feature = "quic")]
use self::baselines::acked::raw_quinn_acked;
use self::baselines::acked::{WINDOW, raw_tcp_acked};
use self::baselines::acknowledger::acknowledge_child;
use self::baselines::mesh::raw_tls_mesh;
use self::baselines::pingpong::{Placement, raw_tcp_pingpong};
#[cfg(feature = "quic")]
use self::baselines::pipelined::raw_quinn;
use self::baselines::pipelined::{raw_tcp_pipelined, raw_tls_pipelined};
use self::baselines::redis::redis_set_wait;
use self::child::node_child;
use self::cluster::{Cluster, Timings, updates, updates_on};
use self::failover::failover;
use self::figure::{
    Carrier, Conc, Cpu, FailoverMetric, Figure, Figures, Latency, Link, Loss, Nodes, Pct, Rate, RerepMetric,
    ScaleMetric, Sessions,
};
use self::memory::{memory, memory_child};
use self::report::Report;
use self::rereplication::rereplication;
use self::stats::{Curves, Lat, curve, lat, median_figures};
use crate::output::{self, Format};
use crate::progress::Steps;

mod baselines;
mod child;
mod cluster;
mod cpu;
mod failover;
mod figure;
mod memory;
mod report;
mod rereplication;
mod stats;
mod trace;

/// The payload of every message and session: 1 KiB.
const PAYLOAD: usize = 1024;
/// Sessions updated at once in the rows of 3, 6 and 12 nodes, shared out evenly: each node
/// owns its share.
const NODES_SESSIONS: usize = 192;
/// Heartbeat and failure timeout of the benchmark domains (as in `m2m demo`).
const HEARTBEAT_MS: u64 = 50;
const FAILURE_TIMEOUT_MS: u64 = 300;

/// Arguments of `m2m bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 the benchmark ran; 1 a measurement failed; 2 bad arguments.")]
pub(crate) struct Args {
    /// A short smoke run (fewer rounds, shorter phases, 100,000 sessions for memory).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Runs to take the median of (default 3, 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) runs: Option<u32>,
    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Also write the plot (latency distribution, throughput by concurrency) as SVG here.
    #[arg(long, value_name = "FILE")]
    pub(crate) svg: Option<PathBuf>,
    /// Also write the plot as PNG here.
    #[arg(long, value_name = "FILE")]
    pub(crate) png: Option<PathBuf>,
    /// How the report is printed on stdout: a table, or the document `--json` writes.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// A Redis primary (with one replica attached) for the SET + WAIT 1 baseline.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) redis: Option<String>,
    /// Sessions for the memory figure (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    pub(crate) memory_sessions: Option<usize>,
    /// The largest number of sessions of the cost-as-work-grows rows (failover and
    /// re-replication at 10,000, 100,000 and 1,000,000 sessions; default 1,000,000, 10,000
    /// with --quick).
    #[arg(long)]
    pub(crate) scale_max: Option<usize>,
    /// The smallest number of sessions of the cost-as-work-grows rows (by default every size
    /// up to `--scale-max`, from 10,000); for profiling one size.
    #[arg(long)]
    pub(crate) scale_min: Option<usize>,
    /// Run only these parts (comma-separated: raw, redis, tcp, quic, replicas2, async,
    /// failover, rerep, scale, nodes, memory; `scale-failover` and `scale-rerep` for one half
    /// of `scale`); for profiling.
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Internal: measure memory of one kind in this (child) process and print it.
    #[arg(long, hide = true, value_enum)]
    pub(crate) memory_child: Option<MemoryKind>,
    /// Internal: run node `--child-node` of `DIR/bench.toml` in this (child) process until it
    /// is killed (the failover benchmark's owner, the re-replication benchmark's lost backup).
    #[arg(long, hide = true, value_name = "DIR")]
    pub(crate) child: Option<PathBuf>,
    /// Internal: the node `--child` runs.
    #[arg(long, hide = true, value_name = "NODE", default_value = "app1")]
    pub(crate) child_node: String,
    /// Internal: the sessions the child node creates.
    #[arg(long, hide = true)]
    pub(crate) child_sessions: Option<usize>,
    /// Internal: acknowledge every request sent over mutual TLS to the node
    /// `--acknowledge-node` of this domain file (certificates in `--acknowledge-certs`), until
    /// killed: the floor set-up of `scripts/bench-http.sh`.
    #[arg(long, hide = true, value_name = "FILE", requires_all = ["acknowledge_node", "acknowledge_certs"])]
    pub(crate) acknowledge_child: Option<PathBuf>,
    /// Internal: the node `--acknowledge-child` serves.
    #[arg(long, hide = true, value_name = "NODE")]
    pub(crate) acknowledge_node: Option<String>,
    /// Internal: the certificate folder of `--acknowledge-child`.
    #[arg(long, hide = true, value_name = "DIR")]
    pub(crate) acknowledge_certs: Option<PathBuf>,
}

/// What a memory child measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MemoryKind {
    /// A plain `HashMap<String, Vec<u8>>`.
    Hashmap,
    /// An owner and a backup node holding the sessions.
    M2m,
}

/// Phase lengths and counts.
#[derive(Clone, Copy, Debug)]
struct Plan {
    rounds: usize,
    messages: usize,
    phase: Duration,
    failover_sessions: usize,
    rerep_sessions: usize,
    memory_sessions: usize,
    scale_min: usize,
    scale_max: usize,
}

impl Plan {
    /// The phases of `--quick`.
    const QUICK: Plan = Plan {
        rounds: 2_000,
        messages: 50_000,
        phase: Duration::from_millis(700),
        failover_sessions: 1_000,
        rerep_sessions: 20_000,
        memory_sessions: 100_000,
        scale_min: 0,
        scale_max: 10_000,
    };

    /// The phases of a full run.
    const FULL: Plan = Plan {
        rounds: 20_000,
        messages: 200_000,
        phase: Duration::from_secs(3),
        failover_sessions: 10_000,
        rerep_sessions: 100_000,
        memory_sessions: 1_000_000,
        scale_min: 0,
        scale_max: 1_000_000,
    };

    fn new(args: &Args) -> Plan {
        let mut p = if args.quick { Plan::QUICK } else { Plan::FULL };
        if let Some(n) = args.memory_sessions {
            p.memory_sessions = n.max(1);
        }
        if let Some(n) = args.scale_max {
            p.scale_max = n;
        }
        if let Some(n) = args.scale_min {
            p.scale_min = n;
        }
        p
    }
}

/// Runs `m2m bench`.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    crate::logging::init("error");
    let rt = super::runtime()?;
    let plan = Plan::new(args);
    if let Some(kind) = args.memory_child {
        let r = rt.block_on(memory_child(kind, plan.memory_sessions))?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let (Some(domain), Some(node), Some(certs)) =
        (&args.acknowledge_child, &args.acknowledge_node, &args.acknowledge_certs)
    {
        rt.block_on(acknowledge_child(domain, node, certs))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.child {
        rt.block_on(node_child(
            dir,
            &args.child_node,
            args.child_sessions.unwrap_or(plan.failover_sessions),
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 });
    let steps = Steps::new();
    let mut all: Vec<Figures> = Vec::new();
    let mut curves = Curves::default();
    for i in 0..runs {
        steps.note(format!("run {}/{runs}", i + 1));
        let (figs, c) = rt.block_on(one_run(&plan, args.redis.as_deref(), &args.only, &steps))?;
        all.push(figs);
        curves = c;
    }
    let memory = if args.only.is_empty() || args.only.iter().any(|o| o == "memory") {
        steps.step(format!("memory ({} sessions of 1 KiB, fresh child processes)", plan.memory_sessions));
        memory(args, plan.memory_sessions).unwrap_or_else(|e| {
            steps.note(format!("memory: {e:#}"));
            BTreeMap::new()
        })
    } else {
        BTreeMap::new()
    };
    drop(steps);
    let median = median_figures(&all);
    let report = Report::new(&plan, runs, median, all, memory, curves, args.redis.is_some());
    match args.format {
        Format::Text => output::emit(&report.render()),
        Format::Json => output::print_json(&report)?,
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, report.svg()?).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.png {
        report.png(path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

// ----- one run -----

async fn one_run(
    plan: &Plan,
    redis: Option<&str>,
    only: &[String],
    steps: &Steps,
) -> anyhow::Result<(Figures, Curves)> {
    let want = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    let mut f = Figures::default();
    let mut curves = Curves::default();
    let put_lat = |f: &mut Figures, series: Latency, l: Lat| {
        for p in Pct::ALL {
            f.insert(Figure::Latency(series, p), l.at(p));
        }
    };
    let put_rate = |f: &mut Figures, rate: Rate, v: f64| f.insert(Figure::Rate(rate), v);

    if want("raw") {
        steps.step("raw tcp");
        let rtt = raw_tcp_pingpong(plan.rounds, Placement::TwoCpus).await.context("raw TCP ping-pong")?;
        put_lat(&mut f, Latency::RawRtt(Placement::TwoCpus), lat(&rtt));
        let rtt1 = raw_tcp_pingpong(plan.rounds, Placement::OneCpu).await.context("raw TCP ping-pong")?;
        put_lat(&mut f, Latency::RawRtt(Placement::OneCpu), lat(&rtt1));
        curves.raw_tcp = curve(&rtt);
        put_rate(&mut f, Rate::Raw(Link::Tcp), raw_tcp_pipelined(plan.messages).await.context("raw TCP")?);
        steps.step("raw tls");
        put_rate(&mut f, Rate::Raw(Link::Tls), raw_tls_pipelined(plan.messages).await.context("raw TLS")?);
        #[cfg(feature = "quic")]
        {
            steps.step("raw quinn");
            put_rate(&mut f, Rate::Raw(Link::Quinn), raw_quinn(plan.messages).await.context("raw quinn")?);
        }
        steps.step(format!("raw acknowledged ({WINDOW} in flight)"));
        let n = plan.messages / 4;
        put_rate(&mut f, Rate::RawAcked(Link::Tcp), raw_tcp_acked(n, None).await.context("raw TCP acked")?);
        let tls = replication_core::tls::insecure_configs()?;
        put_rate(
            &mut f,
            Rate::RawAcked(Link::Tls),
            raw_tcp_acked(n, Some(tls)).await.context("raw TLS acked")?,
        );
        #[cfg(feature = "quic")]
        put_rate(&mut f, Rate::RawAcked(Link::Quinn), raw_quinn_acked(n).await.context("raw quinn acked")?);
    }

    if let Some(addr) = redis.filter(|_| want("redis")) {
        steps.step("redis");
        for c in [Conc::C1, Conc::C16] {
            let (rate, samples) =
                redis_set_wait(addr, c.n(), plan.phase).await.context("Redis SET + WAIT")?;
            put_rate(&mut f, Rate::Redis(c), rate);
            if c == Conc::C1 {
                put_lat(&mut f, Latency::Redis, lat(&samples));
                curves.redis = curve(&samples);
            }
        }
    }

    for carrier in Carrier::built_in().filter(|t| want(t.as_str())) {
        let transport = carrier.as_str();
        steps.step(format!("m2m {transport} sync"));
        let c = Cluster::start(transport, 2, 1, sync(1), None, None, Timings::Bench).await?;
        let owner = &c.nodes[0];
        let samples = updates(owner, 1, plan.phase, true).await?.samples;
        put_lat(&mut f, Latency::Sync(carrier), lat(&samples));
        match carrier {
            Carrier::Tcp => curves.tcp = curve(&samples),
            Carrier::Quic => curves.quic = curve(&samples),
        }
        let mut concs = vec![Conc::C1, Conc::C16, Conc::C64];
        if carrier == Carrier::Tcp {
            concs.push(Conc::C1024);
        }
        for conc in concs {
            let load = updates(owner, conc.n(), plan.phase, false).await?;
            put_rate(&mut f, Rate::Sync(carrier, conc), load.rate);
            if conc == Conc::C64 {
                f.insert(Figure::CpuPerUpdate(Cpu::Sync(carrier)), load.cpu_us_per_op);
            }
        }
        c.stop().await;
    }

    // The other m2m parts run over TCP (over QUIC in a build without TCP).
    let main = Carrier::main().as_str();
    if want("replicas2") {
        steps.step(format!("m2m {main} replicas 2"));
        let c = Cluster::start(main, 3, 2, sync(2), None, None, Timings::Bench).await?;
        let samples = updates(&c.nodes[0], 1, plan.phase, true).await?.samples;
        put_lat(&mut f, Latency::Replicas2, lat(&samples));
        let rate = updates(&c.nodes[0], 64, plan.phase, false).await?.rate;
        put_rate(&mut f, Rate::Replicas2, rate);
        c.stop().await;
    }

    if want("async") {
        steps.step(format!("m2m {main} async"));
        let c = Cluster::start(main, 2, 1, AckPolicy::Async, None, None, Timings::Bench).await?;
        for conc in [Conc::C1, Conc::C64] {
            let load = updates(&c.nodes[0], conc.n(), plan.phase, false).await?;
            put_rate(&mut f, Rate::Async(conc), load.rate);
            if conc == Conc::C64 {
                f.insert(Figure::CpuPerUpdate(Cpu::Async), load.cpu_us_per_op);
            }
        }
        c.stop().await;
    }

    if want("nodes") {
        for nodes in Nodes::ALL {
            let n = nodes.n();
            steps.step(format!("m2m {main} {n} nodes, {NODES_SESSIONS} sessions"));
            let c = Cluster::start(main, n, 1, sync(1), None, None, Timings::Bench).await?;
            let rate = updates_on(&c.nodes, NODES_SESSIONS / n, plan.phase, false).await?.rate;
            f.insert(Figure::NodesRate(nodes), rate);
            c.stop().await;
            steps.step(format!("raw tls mesh of {n} endpoints, {NODES_SESSIONS} in flight"));
            let tls = replication_core::tls::insecure_configs()?;
            let mesh = raw_tls_mesh(n, NODES_SESSIONS, plan.phase, tls).await.context("raw TLS mesh")?;
            put_rate(&mut f, Rate::RawMesh(nodes), mesh);
        }
    }

    if want("failover") {
        f.insert(Figure::FailoverSessions, plan.failover_sessions as f64);
        for loss in Loss::ALL {
            steps.step(loss.phase());
            let fo = failover(plan.failover_sessions, loss == Loss::Crashed, Timings::Bench).await?;
            f.insert(Figure::Failover(loss, FailoverMetric::SendQueueFull), fo.dropped);
            f.insert(Figure::Failover(loss, FailoverMetric::AllOwnedMs), fo.all_ms);
            f.insert(Figure::Failover(loss, FailoverMetric::FirstReadMs), fo.first_read_ms);
        }
    }

    if want("rerep") {
        steps.step("re-replication");
        let r = rereplication(plan.rerep_sessions, Timings::Bench).await?;
        f.insert(Figure::Rereplication(RerepMetric::SessionsPerS), r.per_s);
        f.insert(Figure::Rereplication(RerepMetric::Sessions), r.sessions);
        f.insert(Figure::Rereplication(RerepMetric::FromKillMs), r.from_kill_ms);
    }

    let (scale_failover, scale_rerep) =
        (want("scale") || want("scale-failover"), want("scale") || want("scale-rerep"));
    if scale_failover || scale_rerep {
        for size in Sessions::ALL.into_iter().filter(|s| (plan.scale_min..=plan.scale_max).contains(&s.n())) {
            let n = size.n();
            // A size that fails (setting up a million sessions on a loaded machine can time
            // out) leaves its figure unmeasured and the others measured.
            if scale_failover {
                steps.step(format!("failover of a crashed process, {n} sessions"));
                match failover(n, true, Timings::Product).await {
                    Ok(fo) => {
                        f.insert(Figure::Scale(size, ScaleMetric::FailoverMs), fo.all_ms);
                        f.insert(Figure::Scale(size, ScaleMetric::FirstReadMs), fo.first_read_ms);
                        f.insert(Figure::Scale(size, ScaleMetric::FailoverCpuUs), fo.cpu_us_per_session);
                    }
                    Err(e) => steps.note(format!("failover at {n} sessions not measured: {e:#}")),
                }
            }
            if scale_rerep {
                steps.step(format!("re-replication, {n} sessions"));
                match rereplication(n, Timings::Product).await {
                    Ok(r) => {
                        f.insert(Figure::Scale(size, ScaleMetric::RereplicationPerS), r.per_s);
                        f.insert(Figure::Scale(size, ScaleMetric::RereplicationCpuUs), r.cpu_us_per_session);
                    }
                    Err(e) => steps.note(format!("re-replication at {n} sessions not measured: {e:#}")),
                }
            }
        }
    }
    Ok((f, curves))
}

fn sync(backups: u32) -> AckPolicy {
    AckPolicy::Sync { backups, timeout: Duration::from_secs(5) }
}
