//! The report as a text table.

use super::{CPU_PER_SYNC_UPDATE_BASE_US, Report, failover_limit_ms};
use crate::cmd::bench::baselines::acked::WINDOW;
use crate::cmd::bench::baselines::pingpong::Placement;
use crate::cmd::bench::figure::{
    Carrier, Conc, Cpu, FailoverMetric, Figure, Latency, Link, Loss, Nodes, Pct, Rate, RerepMetric,
    ScaleMetric, Sessions,
};
use crate::cmd::bench::{FAILURE_TIMEOUT_MS, MemoryKind, NODES_SESSIONS};
use crate::output::Table;

impl Report {
    /// The report as text: a table of every figure with its ratio to a baseline, then the
    /// targets.
    pub(crate) fn render(&self) -> String {
        let us = |v: f64| if v.is_finite() { format!("{v:.0} us") } else { "-".into() };
        // CPU per session, a few microseconds: one decimal.
        let us1 = |v: f64| if v.is_finite() { format!("{v:.1} us") } else { "-".into() };
        let rate = |v: f64| if v.is_finite() { format!("{v:.0}/s") } else { "-".into() };
        let ratio = |v: f64| if v.is_finite() { format!("{v:.2}x") } else { "-".into() };
        let ms = |v: f64| if v.is_finite() { format!("{v:.0} ms") } else { "-".into() };
        let mut t = Table::new(["measurement", "value", "ratio", "to baseline"]);
        let rtt50 = self.lat(Latency::RawRtt(Placement::TwoCpus), Pct::P50);
        let rtt99 = self.lat(Latency::RawRtt(Placement::TwoCpus), Pct::P99);
        let raw_tcp = self.per_s(Rate::Raw(Link::Tcp));
        let raw_quinn = self.per_s(Rate::Raw(Link::Quinn));
        let redis16 = self.per_s(Rate::Redis(Conc::C16));
        t.row([
            "raw TCP 1 KiB round trip p50 / p99, two CPUs".into(),
            format!("{} / {}", us(rtt50), us(rtt99)),
            String::new(),
            String::new(),
        ]);
        let rtt1_50 = self.lat(Latency::RawRtt(Placement::OneCpu), Pct::P50);
        t.row([
            "raw TCP 1 KiB round trip p50 / p99, one CPU".into(),
            format!("{} / {}", us(rtt1_50), us(self.lat(Latency::RawRtt(Placement::OneCpu), Pct::P99))),
            String::new(),
            String::new(),
        ]);
        t.row(["raw TCP pipelined 1 KiB".into(), rate(raw_tcp), String::new(), String::new()]);
        let raw_tls = self.per_s(Rate::Raw(Link::Tls));
        t.row([
            "raw TLS 1.3 (TCP) pipelined 1 KiB".into(),
            rate(raw_tls),
            ratio(raw_tls / raw_tcp),
            "raw TCP".into(),
        ]);
        t.row(["raw quinn 1 KiB, one connection".into(), rate(raw_quinn), String::new(), String::new()]);
        let tcp_acked = self.per_s(Rate::RawAcked(Link::Tcp));
        let tls_acked = self.per_s(Rate::RawAcked(Link::Tls));
        let quinn_acked = self.per_s(Rate::RawAcked(Link::Quinn));
        t.row([
            format!("raw TCP 1 KiB + 8 B ack, {WINDOW} in flight"),
            rate(tcp_acked),
            ratio(tcp_acked / raw_tcp),
            "raw TCP".into(),
        ]);
        t.row([
            format!("raw TLS 1 KiB + 8 B ack, {WINDOW} in flight"),
            rate(tls_acked),
            ratio(tls_acked / raw_tcp),
            "raw TCP".into(),
        ]);
        t.row([
            format!("raw quinn 1 KiB + 8 B ack, {WINDOW} in flight"),
            rate(quinn_acked),
            ratio(quinn_acked / raw_quinn),
            "raw quinn".into(),
        ]);
        if self.redis {
            t.row([
                "Redis SET+WAIT 1, 1 client (p50 / p99)".into(),
                format!(
                    "{} ({} / {})",
                    rate(self.per_s(Rate::Redis(Conc::C1))),
                    us(self.lat(Latency::Redis, Pct::P50)),
                    us(self.lat(Latency::Redis, Pct::P99))
                ),
                String::new(),
                String::new(),
            ]);
            t.row(["Redis SET+WAIT 1, 16 clients".into(), rate(redis16), String::new(), String::new()]);
        } else {
            t.row(["Redis SET+WAIT 1".into(), "skipped (no --redis)".into(), String::new(), String::new()]);
        }
        for (tr, raw, raw_name) in
            [(Carrier::Tcp, raw_tcp, "raw TCP"), (Carrier::Quic, raw_quinn, "raw quinn")]
        {
            let name = tr.as_str().to_uppercase();
            let p50 = self.lat(Latency::Sync(tr), Pct::P50);
            let p99 = self.lat(Latency::Sync(tr), Pct::P99);
            let p999 = self.lat(Latency::Sync(tr), Pct::P999);
            t.row([
                format!("m2m {name} sync update p50"),
                us(p50),
                format!("{}; {}", ratio(p50 / rtt50), ratio(p50 / rtt1_50)),
                "raw TCP p50, two CPUs; one CPU".into(),
            ]);
            t.row([format!("m2m {name} sync update p99"), us(p99), ratio(p99 / rtt99), "raw TCP p99".into()]);
            t.row([format!("m2m {name} sync update p999"), us(p999), String::new(), String::new()]);
            let concs: &[Conc] = match tr {
                Carrier::Tcp => &[Conc::C1, Conc::C16, Conc::C64, Conc::C1024],
                Carrier::Quic => &[Conc::C1, Conc::C16, Conc::C64],
            };
            for &c in concs {
                let v = self.per_s(Rate::Sync(tr, c));
                let (r2, n2) = if c == Conc::C64 && tr == Carrier::Tcp && self.redis {
                    (
                        format!(
                            "{}; {}; {}; {}",
                            ratio(v / raw),
                            ratio(v / raw_tls),
                            ratio(v / tls_acked),
                            ratio(v / redis16)
                        ),
                        format!("{raw_name}; raw TLS; raw TLS acked; Redis c16"),
                    )
                } else if c == Conc::C64 && tr == Carrier::Tcp {
                    (
                        format!("{}; {}; {}", ratio(v / raw), ratio(v / raw_tls), ratio(v / tls_acked)),
                        format!("{raw_name}; raw TLS; raw TLS acked"),
                    )
                } else if c == Conc::C1024 {
                    (
                        format!("{}; {}", ratio(v / raw), ratio(v / tls_acked)),
                        format!("{raw_name}; raw TLS acked"),
                    )
                } else if c == Conc::C64 {
                    (
                        format!("{}; {}", ratio(v / raw), ratio(v / quinn_acked)),
                        format!("{raw_name}; raw quinn acked"),
                    )
                } else {
                    (ratio(v / raw), raw_name.into())
                };
                t.row([format!("m2m {name} sync updates, {} sessions", c.n()), rate(v), r2, n2]);
            }
            let cpu = self.g(Figure::CpuPerUpdate(Cpu::Sync(tr)));
            t.row([
                format!("m2m {name} CPU per sync update, 64 sessions (owner + backup)"),
                us(cpu),
                ratio(cpu / CPU_PER_SYNC_UPDATE_BASE_US),
                format!("{CPU_PER_SYNC_UPDATE_BASE_US} us"),
            ]);
        }
        let p50 = self.lat(Latency::Replicas2, Pct::P50);
        t.row([
            "m2m TCP replicas 2 sync update p50 / p99".into(),
            format!("{} / {}", us(p50), us(self.lat(Latency::Replicas2, Pct::P99))),
            ratio(p50 / rtt50),
            "raw TCP p50".into(),
        ]);
        let v = self.per_s(Rate::Replicas2);
        t.row([
            "m2m TCP replicas 2 sync updates, 64 sessions".into(),
            rate(v),
            ratio(v / raw_tcp),
            "raw TCP".into(),
        ]);
        for c in [Conc::C1, Conc::C64] {
            let v = self.per_s(Rate::Async(c));
            t.row([
                format!("m2m TCP async updates, {} sessions", c.n()),
                rate(v),
                ratio(v / raw_tcp),
                "raw TCP".into(),
            ]);
        }
        t.row([
            "m2m TCP CPU per async update, 64 sessions (owner + backup)".into(),
            us(self.g(Figure::CpuPerUpdate(Cpu::Async))),
            String::new(),
            String::new(),
        ]);
        let nodes3 = self.g(Figure::NodesRate(Nodes::N3));
        let mesh3 = self.per_s(Rate::RawMesh(Nodes::N3));
        for n in Nodes::ALL {
            let v = self.g(Figure::NodesRate(n));
            t.row([
                format!("m2m TCP sync updates, {} nodes, {NODES_SESSIONS} sessions", n.n()),
                rate(v),
                ratio(v / nodes3),
                "3 nodes".into(),
            ]);
            let m = self.per_s(Rate::RawMesh(n));
            t.row([
                format!("raw TLS acked mesh, {} endpoints, {NODES_SESSIONS} in flight", n.n()),
                rate(m),
                ratio(m / mesh3),
                "3 endpoints".into(),
            ]);
        }
        if let (Some(h), Some(m)) = (self.memory.get(&MemoryKind::Hashmap), self.memory.get(&MemoryKind::M2m))
        {
            t.row([
                format!("HashMap<String, Vec<u8>>, {} x 1 KiB (RSS)", h.sessions),
                format!("{:.0} B/entry", h.bytes_per_copy),
                String::new(),
                String::new(),
            ]);
            t.row([
                format!("m2m owner + backup, {} x 1 KiB (RSS)", m.sessions),
                format!("{:.0} B/copy", m.bytes_per_copy),
                ratio(m.bytes_per_copy / h.bytes_per_copy),
                "HashMap".into(),
            ]);
        }
        for (what, loss) in [("crashed process", Loss::Crashed), ("silent node", Loss::Silent)] {
            let fo = self.g(Figure::Failover(loss, FailoverMetric::AllOwnedMs));
            t.row([
                format!("failover, {what}: all sessions owned by survivors"),
                format!("{fo:.0} ms"),
                ratio(fo / FAILURE_TIMEOUT_MS as f64),
                format!("failure timeout {FAILURE_TIMEOUT_MS} ms"),
            ]);
            t.row([
                format!("failover, {what}: first read via failover target"),
                format!("{:.0} ms", self.g(Figure::Failover(loss, FailoverMetric::FirstReadMs))),
                String::new(),
                String::new(),
            ]);
            t.row([
                format!(
                    "failover, {what}: sends dropped on a full queue ({:.0} sessions)",
                    self.g(Figure::FailoverSessions)
                ),
                format!("{:.0}", self.g(Figure::Failover(loss, FailoverMetric::SendQueueFull))),
                String::new(),
                String::new(),
            ]);
        }
        t.row([
            format!("re-replication ({:.0} sessions)", self.g(Figure::Rereplication(RerepMetric::Sessions))),
            rate(self.g(Figure::Rereplication(RerepMetric::SessionsPerS))),
            String::new(),
            format!("{:.0} ms from the kill", self.g(Figure::Rereplication(RerepMetric::FromKillMs))),
        ]);
        let rerep10k = self.g(Figure::Scale(Sessions::K10, ScaleMetric::RereplicationPerS));
        for s in Sessions::ALL {
            let fo = self.g(Figure::Scale(s, ScaleMetric::FailoverMs));
            t.row([
                format!("failover, crashed process, {} sessions", s.n()),
                ms(fo),
                ratio(fo / failover_limit_ms(s.n())),
                format!("limit {:.0} ms", failover_limit_ms(s.n())),
            ]);
            let first = self.g(Figure::Scale(s, ScaleMetric::FirstReadMs));
            t.row([
                format!("failover, crashed process, {} sessions: first read via failover target", s.n()),
                ms(first),
                String::new(),
                String::new(),
            ]);
            let cpu = self.g(Figure::Scale(s, ScaleMetric::FailoverCpuUs));
            // The wall time the CPU alone takes on the two cores: the floor of a failover
            // that claims each session on its own, whatever the waits.
            let floor = cpu * s.n() as f64 / 2e3;
            t.row([
                format!("failover, crashed process, {} sessions: CPU per session (survivors)", s.n()),
                us1(cpu),
                String::new(),
                if floor.is_finite() { format!("{floor:.0} ms of two cores") } else { String::new() },
            ]);
            let v = self.g(Figure::Scale(s, ScaleMetric::RereplicationPerS));
            t.row([
                format!("re-replication, {} sessions", s.n()),
                rate(v),
                ratio(v / rerep10k),
                "at 10000 sessions".into(),
            ]);
            let cpu = self.g(Figure::Scale(s, ScaleMetric::RereplicationCpuUs));
            t.row([
                format!("re-replication, {} sessions: CPU per session (owner and backup)", s.n()),
                us1(cpu),
                ratio(cpu / self.g(Figure::Scale(Sessions::K10, ScaleMetric::RereplicationCpuUs))),
                "at 10000 sessions".into(),
            ]);
        }
        let mut out = format!(
            "m2m bench: median of {} run(s), phases of {} ms; nodes in this process on 127.0.0.1, mutual TLS; \
             raw TCP without TLS; allocator: {}\n\n",
            self.runs, self.phase_ms, self.allocator
        );
        out.push_str(&t.render());
        out.push_str("\ntargets:\n");
        for tg in &self.targets {
            let state = match tg.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            };
            out.push_str(&format!("  {:<40} {:>12.3} (limit {}) {state}\n", tg.name, tg.value, tg.limit));
        }
        out
    }
}
