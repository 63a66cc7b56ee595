//! The accept loop: takes new connections, gives each a handshake slot ([`Admission`]: a
//! configured peer's reserved slots, or a shared one within the per-source cap) or asks its
//! source to prove its address or turns it away at once, runs each handshake in its own task
//! (bounded by [`Deadlines`]), and hands each accepted link to the task of the peer it
//! authenticated as. Refusals are reported as events and logged through the transport's
//! [`Throttle`](super::throttle::Throttle), whose summaries this loop also writes when a flood
//! stops.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::admission::{Admission, Admit};
use super::handshake::Deadlines;
use super::members::Routes;
use super::peer::Carrier;
use super::throttle::SUMMARY_INTERVAL;
use super::{refused, wait_stop, warn_summary};
use crate::config::NodeId;
use crate::transport::{TransportEvent, WireMessage};

/// Where new connections come from (a TCP listener, a QUIC endpoint).
pub trait Listener: Send {
    /// A connection not yet authenticated.
    type Conn: Send + 'static;

    /// The next connection and its address; `None` when no more will come; an error is
    /// logged and retried after a pause.
    fn accept(&self) -> impl Future<Output = Option<std::io::Result<(Self::Conn, SocketAddr)>>> + Send;

    /// Whether the source address of `conn` is proven (TCP's own handshake proves it; a QUIC
    /// Initial's may be spoofed).
    fn validated(&self, conn: &Self::Conn) -> bool {
        let _ = conn;
        true
    }

    /// Asks the source of `conn` to prove its address (a QUIC Retry); by default, turns it
    /// away.
    fn validate(&self, conn: Self::Conn) {
        self.turn_away(conn);
    }

    /// Turns away a connection beyond the slots it may use (it is closed when dropped).
    fn turn_away(&self, conn: Self::Conn) {
        drop(conn);
    }
}

/// A connection's handshake: `None` when the connection turns out not to be an attempt at
/// a link (closed before its first byte: a probe), else the authenticated peer and its link,
/// or (who, why) for the refusal.
pub type Handshake<L> = Option<Result<(NodeId, L), (String, String)>>;

/// Accepts connections from `listener` until `stop`, runs the handshake (`handshake`) of
/// those [`Admission`] gives a slot, and sends each link to its peer's route.
pub async fn accept_loop<N, C, M, H, F>(
    listener: N,
    shared: Arc<C>,
    mut stop: watch::Receiver<bool>,
    admission: Admission,
    routes: Routes<C::Link>,
    events: mpsc::Sender<TransportEvent<M>>,
    handshake: H,
) where
    N: Listener,
    C: Carrier<M>,
    M: WireMessage,
    H: Fn(N::Conn, SocketAddr, Deadlines) -> F,
    F: Future<Output = Handshake<C::Link>> + Send + 'static,
{
    let mut handshakes = JoinSet::new();
    let mut summaries = tokio::time::interval(SUMMARY_INTERVAL);
    loop {
        let (conn, addr) = tokio::select! {
            _ = wait_stop(&mut stop) => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
            _ = summaries.tick() => {
                warn_summary(shared.common().warnings.flush(std::time::Instant::now()));
                continue;
            }
            r = listener.accept() => match r {
                Some(Ok(x)) => x,
                Some(Err(e)) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                None => return,
            },
        };
        let slot = match admission.admit(addr.ip(), listener.validated(&conn)) {
            Admit::Slot(slot) => slot,
            Admit::Validate => {
                debug!(%addr, "asking the source to prove its address");
                listener.validate(conn);
                continue;
            }
            Admit::Full(rule) => {
                listener.turn_away(conn);
                let why = if admission.is_peer(addr.ip()) {
                    "too many connections from this address are in their handshake"
                } else {
                    "too many connections are in their handshake"
                };
                refused(shared.common(), &events, addr.to_string(), format!("[{rule}] {why}"));
                continue;
            }
        };
        let work = handshake(conn, addr, Deadlines::new(shared.common(), slot.reserved()));
        let events = events.clone();
        let routes = routes.clone();
        let shared = shared.clone();
        handshakes.spawn(async move {
            let result = work.await;
            drop(slot);
            match result {
                None => {}
                Some(Ok((node, link))) => match route(&routes, &node) {
                    Some(route) => {
                        debug!(peer = %node, %addr, "accepted link");
                        let _ = route.send(link).await;
                    }
                    None => {
                        refused(shared.common(), &events, node.to_string(), "no link for this node".into())
                    }
                },
                Some(Err((peer, reason))) => {
                    let node = NodeId::new(peer.as_str());
                    if route(&routes, &node).is_some() && shared.common().local < node {
                        // A wake-up from a peer this node dials (`peer`): its own dial
                        // reports the refusal.
                        debug!(%peer, %reason, "wake-up refused");
                    } else {
                        refused(shared.common(), &events, peer, reason);
                    }
                }
            }
        });
    }
}

/// The route of `node`'s links, if it is a peer.
fn route<L>(routes: &Routes<L>, node: &NodeId) -> Option<mpsc::Sender<L>> {
    routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(node).cloned()
}
