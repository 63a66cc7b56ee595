//! Export through the `metrics` crate's facade: every node records its counters, gauges
//! and histograms with the facade's handles, and the application chooses the exporter
//! (Prometheus, StatsD, OpenTelemetry... any `metrics` recorder).
//!
//! # Why the `metrics` facade
//!
//! It is the logging-style facade of the Rust ecosystem: a library records, the application
//! installs one recorder for everything it runs, and m2m's metrics appear beside the
//! application's own in the exporter it already has. (`prometheus-client` would tie the
//! application to one exporter and to passing its registry around.)
//!
//! # Which recorder, and several nodes in one process
//!
//! The handles are registered once, when the node starts
//! ([`Builder::start`](crate::Builder::start)): through the recorder given to
//! [`Builder::metrics_recorder`](crate::Builder::metrics_recorder), else through the global
//! recorder (`metrics::set_global_recorder`, or an exporter's `install_recorder`), which must
//! therefore be installed before the node starts; with neither they record nothing. Every
//! metric carries a `node` label (the node's name), so the nodes of one domain run in one
//! process share a global recorder correctly. Processes that run nodes of several domains with
//! the same node names (tests, simulations), or that want one exposition per node (`m2m node`'s
//! `/metrics`), give each node its own recorder.
//!
//! # When values change
//!
//! Histograms are recorded as things happen: synchronous writes ([`SYNC_WRITE_SECONDS`]) and
//! reads that had to fetch the session from another node ([`CLAIM_SECONDS`]). Counters and
//! gauges are the [`Metrics`] snapshot published to the recorder: whenever a snapshot is taken
//! ([`SessionManager::metrics`](crate::SessionManager::metrics)) and at least every
//! [`Builder::metrics_interval`](crate::Builder::metrics_interval) (the engine's counts
//! cost a pass over the sessions, so they are not published per event). Counters advance by
//! the difference since the last publication, so a node restarted in the same process continues
//! its counters.
//!
//! # Buckets
//!
//! Histograms are plain `metrics` histograms; the exporter decides how they are exposed. With
//! `metrics-exporter-prometheus` give them [`LATENCY_BUCKETS`], or they are rendered as
//! summaries:
//!
//! ```no_run
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use session_api::SessionManager;
//! use session_api::metrics::export::LATENCY_BUCKETS;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Before the node starts: its handles are registered when it starts.
//! let prometheus = PrometheusBuilder::new()
//!     .set_buckets_for_metric(Matcher::Prefix("m2m_".into()), LATENCY_BUCKETS)?
//!     .install_recorder()?;
//! let sessions = SessionManager::builder("web.toml", "app1").certs_dir("certs").start().await?;
//! // The application's scrape endpoint answers `prometheus.render()`, and something calls
//! // `prometheus.run_upkeep()` every few seconds (it drains histogram samples).
//! # let _ = sessions; Ok(()) }
//! ```

use ::metrics::{Counter, Gauge, Histogram, Recorder};
use replication_core::NodeId;

use super::Metrics;

/// Bucket upper bounds, in seconds, for the latency histograms: from half a millisecond (a
/// write acknowledged across a LAN) to ten seconds (a write waiting out its timeout).
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Histogram: latency of synchronous writes until the requested backups acknowledged.
pub const SYNC_WRITE_SECONDS: &str = "m2m_sync_write_seconds";

/// Histogram: reads this node could not answer at once, from the request until the session
/// arrived from another node and this node owned it (a claim: a fetch, or a take-over after
/// its owner failed).
pub const CLAIM_SECONDS: &str = "m2m_claim_seconds";

/// Gauge: whether a peer is considered live (1) or failed (0); labels `node` and `peer`.
pub const PEER_UP: &str = "m2m_peer_up";

/// The label naming the node on every metric.
pub const NODE_LABEL: &str = "node";

/// Gauge: live sessions a session manager owns on the node; labels `node` and `manager`
/// (`""`: the anonymous manager).
pub const MANAGER_OWNED: &str = "m2m_manager_sessions_owned";

/// Gauge: live backup copies of a session manager's sessions the node holds; labels `node`
/// and `manager`.
pub const MANAGER_BACKED_UP: &str = "m2m_manager_sessions_backed_up";

/// The label naming the session manager on the per-manager metrics.
pub const MANAGER_LABEL: &str = "manager";

type Read<T> = fn(&Metrics) -> T;

/// Gauges published from the snapshot: name, help, value.
const GAUGES: &[(&str, &str, Read<f64>)] = &[
    ("m2m_sessions_owned", "Sessions this node owns.", |m| m.core.owned as f64),
    ("m2m_sessions_backed_up", "Backup copies this node holds for other nodes.", |m| m.core.backups as f64),
    (
        "m2m_sessions_under_replicated",
        "Owned sessions with fewer up-to-date backups than the domain wants.",
        |m| m.core.under_replicated as f64,
    ),
    ("m2m_tombstones", "Tombstones held.", |m| m.core.tombstones as f64),
    (
        "m2m_domain_changing",
        "1 while an online domain change is under way as this node sees it (nodes run different domain files, or copies are still moving), else 0.",
        |m| m.domain.as_ref().map_or(0.0, |d| f64::from(u8::from(d.changing))),
    ),
    ("m2m_sessions_held", "Session records this node holds (owned, backup copies, tombstones).", |m| {
        m.core.held as f64
    }),
    (
        "m2m_sessions_max",
        "Session records this node holds at most before it refuses creates (max_sessions).",
        |m| m.core.max_sessions as f64,
    ),
    ("m2m_peers_up", "Peers considered live.", |m| m.core.peers_up as f64),
    ("m2m_peers_down", "Peers considered failed.", |m| m.core.peers_down as f64),
    (
        "m2m_replication_lag_seconds",
        "Age of the oldest change to an owned session not yet acknowledged by every placed backup.",
        |m| m.replication_lag.as_secs_f64(),
    ),
    ("m2m_staged_commits", "Commits staged on this node and not yet written.", |m| m.staged_commits as f64),
];

/// Counters published from the snapshot: name, help, value.
const COUNTERS: &[(&str, &str, Read<u64>)] = &[
    ("m2m_failovers_total", "Ownerships taken over after an owner failed.", |m| m.core.failovers),
    ("m2m_acquisitions_total", "Ownerships gained by claiming (failover, fetch).", |m| m.core.acquisitions),
    ("m2m_fenced_total", "Ownerships lost to a higher epoch.", |m| m.core.fenced),
    (
        "m2m_manager_refused_total",
        "Records of a session manager this node's domain file does not declare, refused (rule manager-not-declared).",
        |m| m.core.manager_refused,
    ),
    ("m2m_bytes_replicated_total", "Approximate payload bytes replicated.", |m| m.core.bytes_replicated),
    ("m2m_full_copies_sent_total", "Full copies sent by re-replication.", |m| m.core.full_copies_sent),
    ("m2m_messages_sent_total", "Messages handed to the transport.", |m| m.messages_sent),
    ("m2m_messages_received_total", "Messages received from peers.", |m| m.messages_received),
    ("m2m_send_queue_full_total", "Messages dropped on a full send queue.", |m| m.send_queue_full),
    (
        "m2m_peers_gone_total",
        "Peers failed at once because their link closed and a new connection to them was refused or reset.",
        |m| m.peers_gone,
    ),
    ("m2m_send_errors_total", "Messages dropped for other transport errors.", |m| m.send_errors),
    ("m2m_refused_connections_total", "Connections the transport refused.", |m| m.refused),
    ("m2m_unacknowledged_writes_total", "Writes completed without the requested acknowledgements.", |m| {
        m.unacked_writes
    }),
    ("m2m_conflicts_total", "Conflicting writes reported to callers.", |m| m.conflicts),
    ("m2m_requests_total", "Requests the node served.", |m| m.requests),
    ("m2m_staged_lost_total", "Staged commits dropped because the session moved or went away.", |m| {
        m.staged_lost
    }),
];

/// The facade handles of one node, registered when it starts.
pub(crate) struct Export {
    gauges: Vec<Gauge>,
    counters: Vec<(Counter, u64)>,
    peers: Vec<(NodeId, Gauge)>,
    /// Per manager: [`MANAGER_OWNED`] and [`MANAGER_BACKED_UP`].
    managers: Vec<(String, Gauge, Gauge)>,
    /// See [`SYNC_WRITE_SECONDS`].
    pub(crate) sync_write: Histogram,
    /// See [`CLAIM_SECONDS`].
    pub(crate) claim: Histogram,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export").field("peers", &self.peers.len()).finish_non_exhaustive()
    }
}

impl Export {
    /// Describes and registers node `node`'s metrics (`peers`: the other nodes of the domain)
    /// with `recorder`, or with the global recorder.
    pub(crate) fn register(
        node: &NodeId,
        peers: impl Iterator<Item = NodeId>,
        managers: &[String],
        recorder: Option<&(dyn Recorder + Send + Sync)>,
    ) -> Export {
        let register = || {
            let me = node.to_string();
            let gauges = GAUGES
                .iter()
                .map(|&(name, help, _)| {
                    ::metrics::describe_gauge!(name, help);
                    ::metrics::gauge!(name, NODE_LABEL => me.clone())
                })
                .collect();
            let counters = COUNTERS
                .iter()
                .map(|&(name, help, _)| {
                    ::metrics::describe_counter!(name, help);
                    (::metrics::counter!(name, NODE_LABEL => me.clone()), 0)
                })
                .collect();
            ::metrics::describe_gauge!(PEER_UP, "Whether a peer is considered live (1) or failed (0).");
            let peers = peers
                .filter(|p| p != node)
                .map(|p| {
                    let gauge = ::metrics::gauge!(PEER_UP, NODE_LABEL => me.clone(), "peer" => p.to_string());
                    (p, gauge)
                })
                .collect();
            ::metrics::describe_gauge!(MANAGER_OWNED, "Live sessions a session manager owns on this node.");
            ::metrics::describe_gauge!(
                MANAGER_BACKED_UP,
                "Backup copies of a session manager's sessions held."
            );
            let managers = managers
                .iter()
                .map(|m| {
                    let labels = [(NODE_LABEL, me.clone()), (MANAGER_LABEL, m.clone())];
                    (
                        m.clone(),
                        ::metrics::gauge!(MANAGER_OWNED, &labels),
                        ::metrics::gauge!(MANAGER_BACKED_UP, &labels),
                    )
                })
                .collect();
            ::metrics::describe_histogram!(
                SYNC_WRITE_SECONDS,
                ::metrics::Unit::Seconds,
                "Latency of synchronous writes until the backups acknowledged."
            );
            ::metrics::describe_histogram!(
                CLAIM_SECONDS,
                ::metrics::Unit::Seconds,
                "Reads of a session held elsewhere, until it arrived and this node owned it."
            );
            Export {
                gauges,
                counters,
                peers,
                managers,
                sync_write: ::metrics::histogram!(SYNC_WRITE_SECONDS, NODE_LABEL => me.clone()),
                claim: ::metrics::histogram!(CLAIM_SECONDS, NODE_LABEL => me),
            }
        };
        match recorder {
            Some(r) => ::metrics::with_local_recorder(r, register),
            None => register(),
        }
    }

    /// Publishes the counters and gauges of snapshot `m`.
    pub(crate) fn publish(&mut self, m: &Metrics) {
        for (gauge, (_, _, read)) in self.gauges.iter().zip(GAUGES) {
            gauge.set(read(m));
        }
        for ((counter, last), (_, _, read)) in self.counters.iter_mut().zip(COUNTERS) {
            let now = read(m);
            counter.increment(now.saturating_sub(*last));
            *last = now;
        }
        for (peer, gauge) in &self.peers {
            let up = m.peers.iter().any(|p| &p.node == peer && p.up);
            gauge.set(f64::from(u8::from(up)));
        }
        for (name, owned, backups) in &self.managers {
            let c = m.managers.get(name).copied().unwrap_or_default();
            owned.set(c.owned as f64);
            backups.set(c.backups as f64);
        }
    }
}
