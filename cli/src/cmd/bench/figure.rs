//! The names of the benchmark's figures, as a type: a figure is looked up by what was
//! measured, not by a string, so a report cannot ask for a name no measurement writes. Their
//! text (`tcp.sync.c64.ops_per_s`, `raw.tls.acked.msgs_per_s`, ...) is the key of each figure
//! in `m2m bench --json`, which scripts read; `json_keys_match_the_published_report` in
//! `report` holds it to `docs/benchmarks/latest.json`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use super::baselines::pingpong::Placement;

/// An m2m transport between the benchmark's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Carrier {
    /// TLS over TCP.
    Tcp,
    /// QUIC.
    Quic,
}

impl Carrier {
    /// Both, in the order they are measured.
    pub(crate) const ALL: [Carrier; 2] = [Carrier::Tcp, Carrier::Quic];

    /// Those this build includes (cargo features `tcp`, `quic`), in the order they are
    /// measured.
    pub(crate) fn built_in() -> impl Iterator<Item = Carrier> {
        let available = session_api::carrier::available();
        Carrier::ALL.into_iter().filter(move |c| available.contains(&c.kind()))
    }

    /// The transport of the parts that measure one: TCP, or QUIC in a build without TCP.
    pub(crate) fn main() -> Carrier {
        Carrier::built_in().next().unwrap_or(Carrier::Tcp)
    }

    /// The domain file's transport.
    fn kind(self) -> replication_core::TransportKind {
        match self {
            Carrier::Tcp => replication_core::TransportKind::Tcp,
            Carrier::Quic => replication_core::TransportKind::Quic,
        }
    }

    /// The name in figures, in the domain file's `transport` and in `--only`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Carrier::Tcp => "tcp",
            Carrier::Quic => "quic",
        }
    }
}

/// The connection of a raw baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Link {
    /// Plain TCP.
    Tcp,
    /// TLS 1.3 over TCP (rustls).
    Tls,
    /// QUIC (quinn).
    Quinn,
}

impl Link {
    const ALL: [Link; 3] = [Link::Tcp, Link::Tls, Link::Quinn];
}

/// How many sessions (or Redis clients) run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Conc {
    /// One.
    C1,
    /// Sixteen.
    C16,
    /// Sixty-four.
    C64,
    /// 1,024 (TCP only).
    C1024,
}

impl Conc {
    /// The number.
    pub(crate) fn n(self) -> usize {
        match self {
            Conc::C1 => 1,
            Conc::C16 => 16,
            Conc::C64 => 64,
            Conc::C1024 => 1024,
        }
    }
}

/// A latency percentile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Pct {
    /// The median.
    P50,
    /// The 99th percentile.
    P99,
    /// The 99.9th percentile.
    P999,
}

impl Pct {
    /// All three.
    pub(crate) const ALL: [Pct; 3] = [Pct::P50, Pct::P99, Pct::P999];
}

/// A series of latencies, each sample one request at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Latency {
    /// The raw TCP round trip, the two threads placed as given.
    RawRtt(Placement),
    /// Redis `SET` + `WAIT 1 0`, one client.
    Redis,
    /// m2m synchronous updates, one session.
    Sync(Carrier),
    /// m2m synchronous updates with two backups (TCP), one session.
    Replicas2,
}

impl Latency {
    const ALL: [Latency; 6] = [
        Latency::RawRtt(Placement::TwoCpus),
        Latency::RawRtt(Placement::OneCpu),
        Latency::Redis,
        Latency::Sync(Carrier::Tcp),
        Latency::Sync(Carrier::Quic),
        Latency::Replicas2,
    ];
}

/// A rate: messages or operations per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rate {
    /// Pipelined raw messages.
    Raw(Link),
    /// Raw requests, each acknowledged, a window in flight.
    RawAcked(Link),
    /// Redis `SET` + `WAIT 1 0`.
    Redis(Conc),
    /// m2m synchronous updates.
    Sync(Carrier, Conc),
    /// m2m synchronous updates with two backups (TCP), 64 sessions.
    Replicas2,
    /// m2m updates acknowledged before replication (TCP).
    Async(Conc),
    /// Raw TLS requests, each acknowledged, between every two of this many endpoints, the
    /// nodes rows' requests in flight (see `baselines::mesh`).
    RawMesh(Nodes),
}

/// How the failover's owner is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Loss {
    /// A crashed process: its links close, its address refuses connections.
    Crashed,
    /// A silent node: failed at the failure timeout.
    Silent,
}

impl Loss {
    /// Both, in the order they are measured.
    pub(crate) const ALL: [Loss; 2] = [Loss::Crashed, Loss::Silent];

    /// The phase's name in the progress lines.
    pub(crate) fn phase(self) -> &'static str {
        match self {
            Loss::Crashed => "failover",
            Loss::Silent => "failover, silent node",
        }
    }
}

/// What the failover benchmark measures of one loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FailoverMetric {
    /// Sends dropped on a full transport queue.
    SendQueueFull,
    /// Milliseconds from the kill until every session is owned by a survivor.
    AllOwnedMs,
    /// Milliseconds from the kill until a read through the failover target returned.
    FirstReadMs,
}

/// What the re-replication benchmark measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RerepMetric {
    /// Sessions per second, from the failure detection to the last copy.
    SessionsPerS,
    /// Sessions re-replicated.
    Sessions,
    /// Milliseconds from the kill to the last copy.
    FromKillMs,
}

/// Whose CPU time per update: the process holding the owner, the backup and the load (the
/// nodes of the benchmark share one process), over a phase of 64 sessions over TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Cpu {
    /// Synchronous updates of a carrier.
    Sync(Carrier),
    /// Asynchronous updates (TCP).
    Async,
}

/// A number of sessions the cost-as-work-grows rows are measured at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Sessions {
    /// 10,000.
    K10,
    /// 100,000.
    K100,
    /// 1,000,000.
    M1,
}

impl Sessions {
    /// All three, smallest first.
    pub(crate) const ALL: [Sessions; 3] = [Sessions::K10, Sessions::K100, Sessions::M1];

    /// The number.
    pub(crate) fn n(self) -> usize {
        match self {
            Sessions::K10 => 10_000,
            Sessions::K100 => 100_000,
            Sessions::M1 => 1_000_000,
        }
    }
}

/// What is measured at each size of [`Sessions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ScaleMetric {
    /// Milliseconds from the SIGKILL of the owner (a crashed process) until the survivors own
    /// every session.
    FailoverMs,
    /// Milliseconds from the SIGKILL until a read of one session (the first created, so at a
    /// random place in the order the survivors claim in) through its failover target
    /// returned it: what a request for a session of the failed node waits while the others
    /// are still being claimed.
    FirstReadMs,
    /// CPU microseconds of the survivors' process per session taken over (see
    /// `failover::Failover::cpu_us_per_session`).
    FailoverCpuUs,
    /// Re-replication, sessions per second from the failure detection to the last copy.
    RereplicationPerS,
    /// CPU microseconds of the process (owner, remaining backup, the benchmark's polling) per
    /// session re-replicated, from the failure detection to the last copy.
    RereplicationCpuUs,
}

/// Nodes of one process that each own their share of the sessions (one backup each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Nodes {
    /// Three.
    N3,
    /// Six.
    N6,
    /// Twelve.
    N12,
}

impl Nodes {
    /// All three, fewest first.
    pub(crate) const ALL: [Nodes; 3] = [Nodes::N3, Nodes::N6, Nodes::N12];

    /// The number.
    pub(crate) fn n(self) -> usize {
        match self {
            Nodes::N3 => 3,
            Nodes::N6 => 6,
            Nodes::N12 => 12,
        }
    }
}

/// One figure of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Figure {
    /// A percentile of a latency series, in microseconds.
    Latency(Latency, Pct),
    /// A rate.
    Rate(Rate),
    /// Sessions the failover owner holds.
    FailoverSessions,
    /// A figure of one failover.
    Failover(Loss, FailoverMetric),
    /// A figure of re-replication.
    Rereplication(RerepMetric),
    /// CPU microseconds per update (user + system time of the process).
    CpuPerUpdate(Cpu),
    /// A figure at a number of sessions.
    Scale(Sessions, ScaleMetric),
    /// Synchronous updates per second of all nodes together, TCP.
    NodesRate(Nodes),
}

impl Figure {
    /// Every figure a full run (with `--redis`) measures.
    pub(crate) fn all() -> Vec<Figure> {
        let mut v = Vec::new();
        for l in Latency::ALL {
            v.extend(Pct::ALL.map(|p| Figure::Latency(l, p)));
        }
        for l in Link::ALL {
            v.extend([Rate::Raw(l), Rate::RawAcked(l)].map(Figure::Rate));
        }
        v.extend([Conc::C1, Conc::C16].map(|c| Figure::Rate(Rate::Redis(c))));
        for t in Carrier::ALL {
            v.extend([Conc::C1, Conc::C16, Conc::C64].map(|c| Figure::Rate(Rate::Sync(t, c))));
        }
        v.push(Figure::Rate(Rate::Sync(Carrier::Tcp, Conc::C1024)));
        v.push(Figure::Rate(Rate::Replicas2));
        v.extend([Conc::C1, Conc::C64].map(|c| Figure::Rate(Rate::Async(c))));
        v.push(Figure::FailoverSessions);
        for loss in Loss::ALL {
            v.extend(
                [FailoverMetric::SendQueueFull, FailoverMetric::AllOwnedMs, FailoverMetric::FirstReadMs]
                    .map(|m| Figure::Failover(loss, m)),
            );
        }
        v.extend(
            [RerepMetric::SessionsPerS, RerepMetric::Sessions, RerepMetric::FromKillMs]
                .map(Figure::Rereplication),
        );
        v.extend([Cpu::Sync(Carrier::Tcp), Cpu::Sync(Carrier::Quic), Cpu::Async].map(Figure::CpuPerUpdate));
        for s in Sessions::ALL {
            v.extend(
                [
                    ScaleMetric::FailoverMs,
                    ScaleMetric::FirstReadMs,
                    ScaleMetric::FailoverCpuUs,
                    ScaleMetric::RereplicationPerS,
                    ScaleMetric::RereplicationCpuUs,
                ]
                .map(|m| Figure::Scale(s, m)),
            );
        }
        v.extend(Nodes::ALL.map(Figure::NodesRate));
        v.extend(Nodes::ALL.map(|n| Figure::Rate(Rate::RawMesh(n))));
        v
    }
}

impl fmt::Display for Conc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.n())
    }
}

impl fmt::Display for Pct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pct::P50 => "p50",
            Pct::P99 => "p99",
            Pct::P999 => "p999",
        })
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Link::Tcp => "tcp",
            Link::Tls => "tls",
            Link::Quinn => "quinn",
        })
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::RawRtt(Placement::TwoCpus) => f.write_str("raw.tcp.rtt"),
            Latency::RawRtt(Placement::OneCpu) => f.write_str("raw.tcp.rtt_one_cpu"),
            Latency::Redis => f.write_str("redis.c1"),
            Latency::Sync(t) => write!(f, "{}.sync.c1", t.as_str()),
            Latency::Replicas2 => f.write_str("tcp.replicas2.c1"),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Raw(l) => write!(f, "raw.{l}.msgs_per_s"),
            Rate::RawAcked(l) => write!(f, "raw.{l}.acked.msgs_per_s"),
            Rate::Redis(c) => write!(f, "redis.{c}.ops_per_s"),
            Rate::Sync(t, c) => write!(f, "{}.sync.{c}.ops_per_s", t.as_str()),
            Rate::Replicas2 => f.write_str("tcp.replicas2.c64.ops_per_s"),
            Rate::Async(c) => write!(f, "tcp.async.{c}.ops_per_s"),
            Rate::RawMesh(n) => write!(f, "raw.tls.mesh{}.msgs_per_s", n.n()),
        }
    }
}

/// The key of each figure in `m2m bench --json`.
impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Figure::Latency(l, p) => write!(f, "{l}.{p}_us"),
            Figure::Rate(r) => write!(f, "{r}"),
            Figure::FailoverSessions => f.write_str("failover.sessions"),
            Figure::Failover(loss, m) => {
                f.write_str(match loss {
                    Loss::Crashed => "failover.",
                    Loss::Silent => "failover.silent.",
                })?;
                f.write_str(match m {
                    FailoverMetric::SendQueueFull => "send_queue_full",
                    FailoverMetric::AllOwnedMs => "all_owned_ms",
                    FailoverMetric::FirstReadMs => "first_read_ms",
                })
            }
            Figure::Rereplication(m) => f.write_str(match m {
                RerepMetric::SessionsPerS => "rereplication.sessions_per_s",
                RerepMetric::Sessions => "rereplication.sessions",
                RerepMetric::FromKillMs => "rereplication.from_kill_ms",
            }),
            Figure::CpuPerUpdate(Cpu::Sync(t)) => write!(f, "{}.sync.c64.cpu_us_per_op", t.as_str()),
            Figure::CpuPerUpdate(Cpu::Async) => f.write_str("tcp.async.c64.cpu_us_per_op"),
            Figure::Scale(s, m) => write!(
                f,
                "scale.{}.{}",
                s.n(),
                match m {
                    ScaleMetric::FailoverMs => "failover_ms",
                    ScaleMetric::FirstReadMs => "failover.first_read_ms",
                    ScaleMetric::FailoverCpuUs => "failover.cpu_us_per_session",
                    ScaleMetric::RereplicationPerS => "rereplication.sessions_per_s",
                    ScaleMetric::RereplicationCpuUs => "rereplication.cpu_us_per_session",
                }
            ),
            Figure::NodesRate(n) => write!(f, "tcp.nodes{}.ops_per_s", n.n()),
        }
    }
}

/// One run's figures (or their medians). In JSON an object from each figure's key to its
/// value, in the order of the keys.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Figures(BTreeMap<Figure, f64>);

impl Figures {
    /// Records `value` as `figure`.
    pub(crate) fn insert(&mut self, figure: Figure, value: f64) {
        debug_assert!(Figure::all().contains(&figure), "{figure} is not a figure of the benchmark");
        self.0.insert(figure, value);
    }

    /// The value of `figure`, NaN when it was not measured.
    pub(crate) fn get(&self, figure: Figure) -> f64 {
        debug_assert!(Figure::all().contains(&figure), "{figure} is not a figure of the benchmark");
        self.0.get(&figure).copied().unwrap_or(f64::NAN)
    }

    /// The value of `figure` if it was measured.
    pub(crate) fn measured(&self, figure: Figure) -> Option<f64> {
        self.0.get(&figure).copied()
    }

    /// The figures measured, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = Figure> + '_ {
        self.0.keys().copied()
    }
}

impl FromIterator<(Figure, f64)> for Figures {
    fn from_iter<I: IntoIterator<Item = (Figure, f64)>>(iter: I) -> Figures {
        Figures(iter.into_iter().collect())
    }
}

impl Serialize for Figures {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let by_key: BTreeMap<String, f64> = self.0.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        by_key.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_in_the_published_form() {
        let all = Figure::all();
        let keys: std::collections::BTreeSet<String> = all.iter().map(Figure::to_string).collect();
        assert_eq!(keys.len(), all.len(), "two figures share a key");
        for k in [
            "tcp.sync.c64.ops_per_s",
            "raw.tls.acked.msgs_per_s",
            "raw.tcp.rtt_one_cpu.p999_us",
            "failover.silent.all_owned_ms",
            "tcp.sync.c1024.ops_per_s",
            "tcp.sync.c64.cpu_us_per_op",
            "scale.1000000.failover_ms",
            "scale.10000.rereplication.sessions_per_s",
            "tcp.nodes12.ops_per_s",
        ] {
            assert!(keys.contains(k), "{k}");
        }
    }
}
