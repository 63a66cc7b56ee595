//! Helpers for hostile-traffic tests of the transports (feature `conformance`): connections
//! from a stranger's address, the process's file descriptors and memory, a count of the
//! warnings written, and the timing of a node's restart.
//!
//! Every node of a test domain runs on 127.0.0.1, which makes 127.0.0.1 a configured peer's
//! address with handshake slots of its own ([`admission`](super::admission)); hostile traffic
//! comes from other loopback addresses ([`STRANGER`] and up: on Linux all of 127.0.0.0/8 is
//! loopback), as it would from another host.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use super::conformance::{Cluster, Harness, connected_all, rss_kib, settings};
use crate::transport::Transport;

/// The loopback address hostile connections come from by default (`127.0.0.9`).
pub const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));

/// The `i`-th stranger's address: `127.0.0.(9 + i)`.
pub fn stranger(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9u8.saturating_add(i)))
}

/// A TCP connection to `addr` from `from` (any port).
pub async fn stranger_tcp(addr: SocketAddr, from: IpAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from, 0))?;
    s.connect(addr).await
}

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

/// Restarts `node` of `c` and waits until it reports a link up to every one of `peers`; how
/// long that took from the moment it started (after its socket was bound again: a stopped
/// QUIC endpoint keeps its UDP socket until its connections have drained).
pub async fn restart_and_link<H: Harness>(c: &mut Cluster<H>, node: &str, peers: &[&str]) -> Duration {
    if let Some(t) = c.nodes.remove(node) {
        t.shutdown().await;
    }
    let bound = H::bind(c.ports[node]);
    let t0 = Instant::now();
    let t = H::start(settings(&c.cfg, node, c.sec, c.certs.path()), bound).await.expect("restart");
    c.nodes.insert(node.to_owned(), t);
    connected_all(c.node(node), peers).await;
    t0.elapsed()
}
