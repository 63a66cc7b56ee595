//! Helpers for hostile-traffic tests of the transports (feature `conformance`): connections
//! from a stranger's address, the process's file descriptors and memory, a count of the
//! warnings written, and the timing of a node's restart.
//!
//! Every node of a test domain runs on 127.0.0.1, which makes 127.0.0.1 a configured peer's
//! address with handshake slots of its own ([`admission`](super::admission)); hostile traffic
//! comes from other loopback addresses ([`STRANGER`] and up: on Linux all of 127.0.0.0/8 is
//! loopback), as it would from another host.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use super::conformance::{Cluster, Harness, rss_kib};
pub use super::conformance::{STRANGER, restart_and_link, stranger, stranger_tcp};
use crate::transport::Transport;

/// The number of file descriptors this process has open (0 when /proc is not there).
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// "fds N, RSS M KiB" of this process, for a test's report.
pub fn process_figures() -> String {
    format!("fds {}, RSS {} KiB", fd_count(), rss_kib())
}

/// Counts the events at WARN level or above, in the whole process.
#[derive(Debug, Clone, Default)]
pub struct WarnCounter(Arc<AtomicUsize>);

impl WarnCounter {
    /// Installs a counter as the process's default subscriber (once per test binary; `None`
    /// when another one is installed already).
    pub fn install() -> Option<WarnCounter> {
        let counter = WarnCounter::default();
        let subscriber = tracing_subscriber::registry().with(counter.clone());
        tracing::subscriber::set_global_default(subscriber).ok()?;
        Some(counter)
    }

    /// The warnings so far.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl<S: Subscriber> Layer<S> for WarnCounter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() <= Level::WARN {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What [`restarts_during_flood`] measured.
#[derive(Debug)]
pub struct FloodRun {
    /// How long `a`, restarted, took to link to the flooded `b`.
    pub a_took: Duration,
    /// How long `b`, restarted into the flood, took to link to `a`.
    pub b_took: Duration,
    /// The bound on both: three heartbeat intervals and a second.
    pub bound: Duration,
    /// Warnings written since the flood started.
    pub warnings: usize,
    /// [`process_figures`] once the flood has run for a while.
    pub during: String,
}

impl FloodRun {
    /// Asserts the bounds: both links within [`FloodRun::bound`], at most 20 warnings.
    pub fn check(&self) {
        let FloodRun { a_took, b_took, bound, warnings, .. } = self;
        assert!(a_took < bound, "a linked to the flooded b after {a_took:?}, bound {bound:?}");
        assert!(b_took < bound, "b, restarted into the flood, linked after {b_took:?}, bound {bound:?}");
        assert!(*warnings <= 20, "{warnings} warnings during the flood");
    }
}

impl std::fmt::Display for FloodRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let FloodRun { a_took, b_took, bound, warnings, during } = self;
        write!(
            f,
            "a linked {a_took:?} after its restart, b {b_took:?} after its own (bound {bound:?}); \
             {warnings} warnings during the flood; during: {during}"
        )
    }
}

/// With a flood on node `b` of `c` (nodes `a` and `b`) just started, and `warned` warnings
/// counted by `counter` before it: lets it run 3 s (long enough for what it holds to be cut at
/// the first-bytes deadline), restarts `a` (which dials `b`), then `b`, checks a message
/// flows, lets the flood run 2 s more.
pub async fn restarts_during_flood<H: Harness>(
    c: &mut Cluster<H>,
    counter: &WarnCounter,
    warned: usize,
) -> FloodRun {
    use super::conformance::{msg, n, receive};
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = process_figures();
    let bound = 3 * c.cfg.heartbeat_interval() + Duration::from_secs(1);
    let a_took = restart_and_link(c, "a", &["b"]).await;
    let b_took = restart_and_link(c, "b", &["a"]).await;
    c.node("a").send(&n("b"), msg(Some(1), 1)).await.expect("queued");
    assert_eq!(receive(c.node("b"), "a", 1).await, vec![msg(Some(1), 1)]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    FloodRun { a_took, b_took, bound, warnings: counter.count() - warned, during }
}
