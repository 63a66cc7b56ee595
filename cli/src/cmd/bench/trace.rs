//! Timestamps of a failover's steps per node, recorded by the nodes' metrics hooks: where the
//! time goes between the kill and the last session owned.

use std::collections::BTreeMap;
use std::time::Instant;

/// When the failover's steps happened on one node (from its metrics hook: an event is seen
/// when the driver drains the engine after the step that produced it).
#[derive(Clone, Debug, Default)]
pub(super) struct NodeTrace {
    pub(super) down: Option<Instant>,
    pub(super) first_gained: Option<Instant>,
    pub(super) last_gained: Option<Instant>,
    pub(super) gained: usize,
}

/// Timestamps of the failover's steps per node, recorded by the nodes' metrics hooks from
/// `start` on (where the time goes between the kill and the last session owned).
#[derive(Debug, Default)]
pub(crate) struct Trace {
    nodes: std::sync::Mutex<(Option<Instant>, BTreeMap<String, NodeTrace>)>,
}

impl Trace {
    pub(super) fn start(&self, t0: Instant) {
        if let Ok(mut g) = self.nodes.lock() {
            *g = (Some(t0), BTreeMap::new());
        }
    }

    pub(crate) fn record(&self, node: &str, ev: &session_api::NodeEvent) {
        let Ok(mut g) = self.nodes.lock() else { return };
        if g.0.is_none() {
            return;
        }
        let now = Instant::now();
        let t = g.1.entry(node.to_owned()).or_default();
        match ev {
            session_api::NodeEvent::Core(replication_core::Event::PeerDown { .. }) => {
                t.down.get_or_insert(now);
            }
            session_api::NodeEvent::Core(replication_core::Event::OwnershipGained { .. }) => {
                t.first_gained.get_or_insert(now);
                t.last_gained = Some(now);
                t.gained += 1;
            }
            other => {
                if std::env::var_os("M2M_BENCH_TRACE").is_some() {
                    let t0 = g.0.unwrap_or(now);
                    eprintln!(
                        "    trace {node} {:.1} ms: {other:?}",
                        now.saturating_duration_since(t0).as_secs_f64() * 1e3
                    );
                }
            }
        }
    }

    pub(super) fn of(&self, node: &str) -> NodeTrace {
        self.nodes.lock().ok().and_then(|g| g.1.get(node).cloned()).unwrap_or_default()
    }

    /// Ownerships gained on every node since `start`, and when the last one was.
    pub(super) fn gained(&self) -> (usize, Option<Instant>) {
        let Ok(g) = self.nodes.lock() else { return (0, None) };
        (g.1.values().map(|t| t.gained).sum(), g.1.values().filter_map(|t| t.last_gained).max())
    }
}
