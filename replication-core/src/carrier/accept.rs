//! The accept loop: takes new connections, refuses those beyond the cap on connections in
//! their handshake ([`TransportSettings::max_unauthenticated`]) at once, runs each other
//! handshake in its own task (bounded by the handshake timeout), and hands each accepted link
//! to the task of the peer it authenticated as.
//!
//! [`TransportSettings::max_unauthenticated`]: crate::transport::TransportSettings::max_unauthenticated

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::{refused, wait_stop};
use crate::config::NodeId;
use crate::transport::TransportEvent;
use crate::wire::refusal;

/// Where new connections come from (a TCP listener, a QUIC endpoint).
pub trait Listener: Send {
    /// A connection not yet authenticated.
    type Conn: Send + 'static;

    /// The next connection and its address; `None` when no more will come; an error is
    /// logged and retried after a pause.
    fn accept(&self) -> impl Future<Output = Option<std::io::Result<(Self::Conn, SocketAddr)>>> + Send;

    /// Turns away a connection beyond the cap (it is closed when dropped).
    fn turn_away(&self, conn: Self::Conn) {
        drop(conn);
    }
}

/// A connection's handshake: `None` when the connection turns out not to be an attempt at
/// a link (closed before its first byte: a probe), else the authenticated peer and its link,
/// or (who, why) for the refusal.
pub type Handshake<L> = Option<Result<(NodeId, L), (String, String)>>;

/// Accepts connections from `listener` until `stop`, at most `sem`'s permits of them in
/// their handshake (`handshake`) at a time, and sends each link to its peer's route.
pub async fn accept_loop<N, L, M, H, F>(
    listener: N,
    mut stop: watch::Receiver<bool>,
    sem: Arc<Semaphore>,
    routes: HashMap<NodeId, mpsc::Sender<L>>,
    events: mpsc::Sender<TransportEvent<M>>,
    handshake: H,
) where
    N: Listener,
    L: Send + 'static,
    M: Send + 'static,
    H: Fn(N::Conn, SocketAddr) -> F,
    F: Future<Output = Handshake<L>> + Send + 'static,
{
    let mut handshakes = JoinSet::new();
    loop {
        let (conn, addr) = tokio::select! {
            _ = wait_stop(&mut stop) => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
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
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            listener.turn_away(conn);
            refused(
                &events,
                addr.to_string(),
                format!(
                    "[{}] too many connections are in their handshake",
                    refusal::TOO_MANY_UNAUTHENTICATED
                ),
            );
            continue;
        };
        let work = handshake(conn, addr);
        let events = events.clone();
        let routes = routes.clone();
        handshakes.spawn(async move {
            let result = work.await;
            drop(permit);
            match result {
                None => {}
                Some(Ok((node, link))) => match routes.get(&node) {
                    Some(route) => {
                        debug!(peer = %node, %addr, "accepted link");
                        let _ = route.send(link).await;
                    }
                    None => refused(&events, node.to_string(), "no link for this node".into()),
                },
                Some(Err((peer, reason))) => refused(&events, peer, reason),
            }
        });
    }
}
