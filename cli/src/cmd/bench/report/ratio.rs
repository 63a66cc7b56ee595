//! The ratios of the report: m2m's figures against the baselines measured in the same run,
//! each under its name in `m2m bench --json` (`ratios`).

use crate::cmd::bench::baselines::pingpong::Placement;
use crate::cmd::bench::figure::{Carrier, Conc, Figure, Figures, Latency, Link, Pct, Rate};

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

/// Every ratio of figures in the report.
pub(super) const RATIOS: [Ratio; 12] = [
    SYNC_P50,
    SYNC_P99,
    ratio("tcp.sync.c1.p50 / raw.tcp.rtt_one_cpu.p50", TCP_P50, RTT_ONE_CPU_P50),
    SYNC_C64,
    ratio("tcp.sync.c64 / raw.tls pipelined", TCP_C64, RAW_TLS),
    ratio("raw.tls / raw.tcp pipelined", RAW_TLS, RAW_TCP),
    SYNC_C64_REDIS,
    QUIC_SYNC_C64,
    ratio("tcp.sync.c64 / raw.tls.acked", TCP_C64, TLS_ACKED),
    ratio("quic.sync.c64 / raw.quinn.acked", QUIC_C64, QUINN_ACKED),
    ratio("raw.quinn.acked / raw.quinn", QUINN_ACKED, RAW_QUINN),
    ratio("raw.tls.acked / raw.tcp pipelined", TLS_ACKED, RAW_TCP),
];

/// The name of the memory ratio: m2m's bytes per copy against the `HashMap`'s per entry.
pub(super) const MEMORY: &str = "memory m2m / hashmap";
