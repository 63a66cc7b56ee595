//! Events and metrics of a node: what the replication engine reports, what the transport
//! reports, and the counters the driver keeps. [`Metrics`] is the snapshot an application
//! polls; [`export`] records the same counters and gauges, and latency histograms, through the
//! `metrics` facade for the application's exporter.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use replication_core::{Event, NodeId, PeerView, Stats};

pub mod export;

/// Refusals remembered in [`Metrics::recent_refusals`] at most.
pub const RECENT_REFUSALS: usize = 16;

/// Something that happened on a node; delivered to [`crate::SessionManager::subscribe`]rs and to
/// the metrics hook.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// From the replication engine (peer up/down, ownership, expiry, under-replication).
    Core(Event),
    /// The transport's link to a peer is up.
    Connected(NodeId),
    /// The transport's link to a peer went down (it keeps reconnecting).
    Disconnected(NodeId),
    /// The peer's process is gone: its link closed without a leave and a new connection to it
    /// was refused or reset ([`replication_core::Input::PeerGone`]); the engine failed it at once
    /// (reported only when the peer was live until then).
    Gone(NodeId),
    /// The transport refused a connection (wrong CA, unknown node, other domain...).
    Refused {
        /// Who tried.
        peer: String,
        /// Why, naming the rule.
        reason: String,
    },
    /// Changes staged on this node (manual or time-based write frequency) were dropped before
    /// they were written, because the session moved to another node or went away.
    StagedWritesLost {
        /// The session.
        session: String,
        /// Staged commits dropped.
        commits: u64,
    },
}

/// The metrics hook: called from the driver task for every event. Keep it short.
pub type MetricsHook = Arc<dyn Fn(&NodeEvent) + Send + Sync>;

/// Latency statistics of synchronous writes (from the command to the backups' acknowledgement).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Writes measured.
    pub count: u64,
    /// Sum of their latencies.
    pub total: Duration,
    /// The largest.
    pub max: Duration,
    /// The most recent.
    pub last: Duration,
}

impl Latency {
    pub(crate) fn record(&mut self, d: Duration) {
        self.count += 1;
        self.total += d;
        self.max = self.max.max(d);
        self.last = d;
    }

    /// The mean latency; zero when nothing was measured.
    pub fn mean(&self) -> Duration {
        match u32::try_from(self.count) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total / n,
            Err(_) => self.total / u32::MAX,
        }
    }
}

/// The membership as this node sees it, without the counters of [`Metrics`] (which take a
/// pass over every session): [`crate::SessionManager::peers`].
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Peers {
    /// Every peer, up or down, with its incarnation.
    pub peers: Vec<replication_core::PeerView>,
    /// Peers the transport has a link to now.
    pub connected: Vec<NodeId>,
}

/// A snapshot of a node's metrics ([`crate::SessionManager::metrics`]).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// This node.
    pub node: Option<NodeId>,
    /// The domain file this node runs (its fingerprint), whether an online domain change is
    /// under way, and the file each peer announced ([`crate::SessionManager::reconfigure`]).
    pub domain: Option<replication_core::DomainView>,
    /// Counters and gauges of the replication engine: sessions owned, backups held,
    /// under-replicated sessions, failovers, bytes replicated...
    pub core: Stats,
    /// The membership as the failure detector sees it.
    pub peers: Vec<PeerView>,
    /// Peers whose transport link is up.
    pub connected: Vec<NodeId>,
    /// Messages handed to the transport.
    pub messages_sent: u64,
    /// Messages dropped because a peer's send queue was full (the protocol repairs this).
    pub send_queue_full: u64,
    /// Messages dropped for other transport errors.
    pub send_errors: u64,
    /// Messages received from peers.
    pub messages_received: u64,
    /// Connections the transport refused.
    pub refused: u64,
    /// Peers failed at once because their process was gone (their link closed and a new
    /// connection to them was refused or reset), without waiting for the failure timeout.
    pub peers_gone: u64,
    /// The most recent refusals (peer, reason), oldest first.
    pub recent_refusals: VecDeque<(String, String)>,
    /// Synchronous writes acknowledged by the requested backups, and their latency: the
    /// replication lag as seen by requests.
    pub sync_write_latency: Latency,
    /// How far the backups are behind: the age of the oldest change to an owned session that
    /// not every placed backup has acknowledged yet (zero when they hold every current
    /// version). Grows while a backup is slow, unreachable or being re-created.
    pub replication_lag: Duration,
    /// Writes that completed without the requested acknowledgements (indeterminate or one
    /// copy only).
    pub unacked_writes: u64,
    /// Commits staged on this node and not yet written (manual or time-based frequency).
    pub staged_commits: u64,
    /// Sessions with staged, unwritten changes.
    pub staged_sessions: usize,
    /// Staged commits dropped because the session moved or went away.
    pub staged_lost: u64,
    /// Conflicting writes reported to callers.
    pub conflicts: u64,
    /// Requests the driver served.
    pub requests: u64,
    /// Per session manager (`""`: the anonymous one), the live sessions owned and the backup
    /// copies held (see [`crate::managers`]); managers with none are absent.
    pub managers: std::collections::BTreeMap<String, crate::managers::ManagerCounts>,
}

impl Metrics {
    pub(crate) fn refused(&mut self, peer: String, reason: String) {
        self.refused += 1;
        if self.recent_refusals.len() == RECENT_REFUSALS {
            self.recent_refusals.pop_front();
        }
        self.recent_refusals.push_back((peer, reason));
    }

    /// Sessions owned by this node.
    pub fn sessions_owned(&self) -> usize {
        self.core.owned
    }

    /// Backup copies held for other nodes.
    pub fn sessions_backed_up(&self) -> usize {
        self.core.backups
    }

    /// Owned sessions with fewer up-to-date backups than the domain wants (whether the
    /// missing backup nodes are down or merely behind).
    pub fn under_replicated(&self) -> usize {
        self.core.under_replicated
    }

    /// Approximate payload bytes of replicated changes and copies sent.
    pub fn bytes_sent(&self) -> u64 {
        self.core.bytes_replicated
    }

    /// Ownerships taken over after an owner failed.
    pub fn failovers(&self) -> u64 {
        self.core.failovers
    }
}
