//! The ratios of the report: m2m's figures against the baselines measured in the same run,
//! each under its name in `m2m bench --json` (`ratios`).

use crate::cmd::bench::baselines::pingpong::Placement;
use crate::cmd::bench::figure::{
    Carrier, Conc, Figure, Figures, Latency, Link, Nodes, Pct, Rate, ScaleMetric, Sessions,
};

/// One figure divided by another.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ratio {
    /// The name in the report.
    pub(super) name: &'static str,
    of: Figure,
    to: Figure,
}

impl Ratio {
    /// The ratio in `figures` (NaN when either was not measured).
    pub(super) fn of(self, figures: &Figures) -> f64 {
        figures.get(self.of) / figures.get(self.to)
    }
}

const fn ratio(name: &'static str, of: Figure, to: Figure) -> Ratio {
    Ratio { name, of, to }
}

const TCP_P50: Figure = Figure::Latency(Latency::Sync(Carrier::Tcp), Pct::P50);
const TCP_P99: Figure = Figure::Latency(Latency::Sync(Carrier::Tcp), Pct::P99);
const RTT_P50: Figure = Figure::Latency(Latency::RawRtt(Placement::TwoCpus), Pct::P50);
const RTT_P99: Figure = Figure::Latency(Latency::RawRtt(Placement::TwoCpus), Pct::P99);
const RTT_ONE_CPU_P50: Figure = Figure::Latency(Latency::RawRtt(Placement::OneCpu), Pct::P50);
const TCP_C64: Figure = Figure::Rate(Rate::Sync(Carrier::Tcp, Conc::C64));
const QUIC_C64: Figure = Figure::Rate(Rate::Sync(Carrier::Quic, Conc::C64));
const RAW_TCP: Figure = Figure::Rate(Rate::Raw(Link::Tcp));
const RAW_TLS: Figure = Figure::Rate(Rate::Raw(Link::Tls));
const RAW_QUINN: Figure = Figure::Rate(Rate::Raw(Link::Quinn));
const TLS_ACKED: Figure = Figure::Rate(Rate::RawAcked(Link::Tls));
const QUINN_ACKED: Figure = Figure::Rate(Rate::RawAcked(Link::Quinn));
const REDIS_C16: Figure = Figure::Rate(Rate::Redis(Conc::C16));
const TCP_C1024: Figure = Figure::Rate(Rate::Sync(Carrier::Tcp, Conc::C1024));
const ASYNC_C64: Figure = Figure::Rate(Rate::Async(Conc::C64));
const REPLICAS2: Figure = Figure::Rate(Rate::Replicas2);
const NODES3: Figure = Figure::NodesRate(Nodes::N3);
const NODES12: Figure = Figure::NodesRate(Nodes::N12);
const MESH3: Figure = Figure::Rate(Rate::RawMesh(Nodes::N3));
const MESH12: Figure = Figure::Rate(Rate::RawMesh(Nodes::N12));
const REREP_10K: Figure = Figure::Scale(Sessions::K10, ScaleMetric::RereplicationPerS);
const REREP_1M: Figure = Figure::Scale(Sessions::M1, ScaleMetric::RereplicationPerS);

/// The synchronous update's median latency against the raw round trip's.
pub(super) const SYNC_P50: Ratio = ratio("tcp.sync.c1.p50 / raw.tcp.rtt.p50", TCP_P50, RTT_P50);
/// The same at the 99th percentile.
pub(super) const SYNC_P99: Ratio = ratio("tcp.sync.c1.p99 / raw.tcp.rtt.p99", TCP_P99, RTT_P99);
/// Synchronous updates at concurrency 64 against raw pipelined TCP.
pub(super) const SYNC_C64: Ratio = ratio("tcp.sync.c64 / raw.tcp pipelined", TCP_C64, RAW_TCP);
/// The same against Redis `SET` + `WAIT 1 0` with 16 clients.
pub(super) const SYNC_C64_REDIS: Ratio = ratio("tcp.sync.c64 / redis.c16", TCP_C64, REDIS_C16);
/// QUIC synchronous updates at concurrency 64 against raw quinn.
pub(super) const QUIC_SYNC_C64: Ratio = ratio("quic.sync.c64 / raw.quinn", QUIC_C64, RAW_QUINN);

/// Synchronous updates at concurrency 64 against the bare TLS acknowledged exchange.
pub(super) const SYNC_C64_ACKED: Ratio = ratio("tcp.sync.c64 / raw.tls.acked", TCP_C64, TLS_ACKED);
/// The same at 1,024 sessions.
pub(super) const SYNC_C1024_ACKED: Ratio = ratio("tcp.sync.c1024 / raw.tls.acked", TCP_C1024, TLS_ACKED);
/// QUIC synchronous updates at concurrency 64 against the bare quinn acknowledged exchange.
pub(super) const QUIC_SYNC_C64_ACKED: Ratio = ratio("quic.sync.c64 / raw.quinn.acked", QUIC_C64, QUINN_ACKED);
/// Asynchronous updates at concurrency 64 against raw pipelined TLS.
pub(super) const ASYNC_C64_TLS: Ratio = ratio("tcp.async.c64 / raw.tls pipelined", ASYNC_C64, RAW_TLS);
/// Two backups against one, 64 sessions.
pub(super) const REPLICAS2_TO_1: Ratio = ratio("tcp.replicas2.c64 / tcp.sync.c64", REPLICAS2, TCP_C64);
/// Twelve nodes against three, updates per second of all nodes.
pub(super) const NODES12_TO_3: Ratio = ratio("tcp.nodes12 / tcp.nodes3", NODES12, NODES3);
/// The same of the bare TLS mesh with the same requests in flight: what the cores and the
/// spread over more links explain.
pub(super) const MESH12_TO_3: Ratio = ratio("raw.tls.mesh12 / raw.tls.mesh3", MESH12, MESH3);
/// Re-replication at 1,000,000 sessions against at 10,000.
pub(super) const REREP_1M_TO_10K: Ratio =
    ratio("scale.1000000.rereplication / scale.10000.rereplication", REREP_1M, REREP_10K);

/// Every ratio of figures in the report.
pub(super) const RATIOS: [Ratio; 18] = [
    SYNC_P50,
    SYNC_P99,
    ratio("tcp.sync.c1.p50 / raw.tcp.rtt_one_cpu.p50", TCP_P50, RTT_ONE_CPU_P50),
    SYNC_C64,
    ratio("tcp.sync.c64 / raw.tls pipelined", TCP_C64, RAW_TLS),
    ratio("raw.tls / raw.tcp pipelined", RAW_TLS, RAW_TCP),
    SYNC_C64_REDIS,
    QUIC_SYNC_C64,
    SYNC_C64_ACKED,
    SYNC_C1024_ACKED,
    QUIC_SYNC_C64_ACKED,
    ASYNC_C64_TLS,
    REPLICAS2_TO_1,
    NODES12_TO_3,
    MESH12_TO_3,
    REREP_1M_TO_10K,
    ratio("raw.quinn.acked / raw.quinn", QUINN_ACKED, RAW_QUINN),
    ratio("raw.tls.acked / raw.tcp pipelined", TLS_ACKED, RAW_TCP),
];

/// The name of the memory ratio: m2m's bytes per copy against the `HashMap`'s per entry.
pub(super) const MEMORY: &str = "memory m2m / hashmap";
