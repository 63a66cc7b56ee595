//! The task that keeps one peer's link: the node whose name sorts first dials (and redials
//! with jittered exponential back-off), the other waits for the links its accept loop hands
//! over; a newer link replaces the current one. It reports [`TransportEvent::Connected`] and
//! [`TransportEvent::Disconnected`], refused dials as [`TransportEvent::Refused`], and, for a
//! carrier that can tell ([`Carrier::PROBES_GONE`]), [`TransportEvent::Gone`].

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, info};

use super::handshake::dial_within;
use super::{Common, DialError, refused, wait_stop};
use crate::config::NodeId;
use crate::transport::{Backoff, TransportEvent, WireMessage};

/// How a link ended.
#[derive(Debug)]
pub enum LinkEnd<L> {
    /// The transport shuts down.
    Stop,
    /// The link failed or the peer closed it.
    Failed,
    /// A newer link to the same peer replaces it.
    Replaced(L),
}

/// What a carrier supplies to [`peer_task`].
pub trait Carrier<M: WireMessage>: Send + Sync + Sized + 'static {
    /// An established, authenticated link.
    type Link: Send + 'static;
    /// The receiving ends of one peer's queues (and whatever else the peer's writer keeps
    /// from one link to the next).
    type Queues: Send + 'static;
    /// Whether, after a link failed without a leave, [`Carrier::peer_process_gone`] can tell
    /// that the peer's process is gone (asked when the domain enables closed-link detection).
    const PROBES_GONE: bool = false;

    /// What every task reads.
    fn common(&self) -> &Common;

    /// Connects to `peer` at `address` and runs both handshakes (cut at the handshake
    /// timeout by the caller).
    fn dial(
        &self,
        peer: &NodeId,
        address: &str,
    ) -> impl Future<Output = Result<Self::Link, DialError>> + Send;

    /// Carries messages both ways on `link` until it ends: the transport stops, the link
    /// fails, or a newer link arrives on `links`.
    fn run_link(
        shared: &Arc<Self>,
        peer: &NodeId,
        link: Self::Link,
        queues: &mut Self::Queues,
        links: &mut mpsc::Receiver<Self::Link>,
        events: &mpsc::Sender<TransportEvent<M>>,
    ) -> impl Future<Output = LinkEnd<Self::Link>> + Send;

    /// Whether `peer`'s process is gone, asked right after its link failed (see
    /// [`Carrier::PROBES_GONE`]).
    fn peer_process_gone(&self, peer: &NodeId) -> impl Future<Output = bool> + Send {
        let _ = peer;
        async { false }
    }
}

/// Dials `peer` at its address from the domain, all of it within the handshake timeout.
async fn dial<C: Carrier<M>, M: WireMessage>(shared: &C, peer: &NodeId) -> Result<C::Link, DialError> {
    let common = shared.common();
    let Some(node) = common.cfg.node(peer) else {
        return Err(DialError::Refused("not in the domain".into()));
    };
    dial_within(common.handshake_timeout, shared.dial(peer, node.address.as_str())).await
}

/// Keeps the link to `peer` until the transport stops: dials it when `dials`, else takes the
/// links accepted for it from `links`.
pub async fn peer_task<C: Carrier<M>, M: WireMessage>(
    shared: Arc<C>,
    peer: NodeId,
    dials: bool,
    mut queues: C::Queues,
    mut links: mpsc::Receiver<C::Link>,
    events: mpsc::Sender<TransportEvent<M>>,
) {
    let common = shared.common();
    let mut stop = common.shutdown.clone();
    let mut backoff = Backoff::new(common.reconnect_min, common.reconnect_max);
    let mut next: Option<C::Link> = None;
    loop {
        let link = match next.take() {
            Some(l) => l,
            None if dials => {
                let r = tokio::select! {
                    _ = wait_stop(&mut stop) => return,
                    Some(l) = links.recv() => Ok(l),
                    r = dial(&*shared, &peer) => r,
                };
                match r {
                    Ok(l) => l,
                    Err(e) => {
                        match e {
                            DialError::Unreachable(why) => debug!(%peer, %why, "peer unreachable"),
                            DialError::Refused(why) => refused(&events, peer.to_string(), why),
                        }
                        let delay = backoff.next_delay();
                        tokio::select! {
                            _ = wait_stop(&mut stop) => return,
                            Some(l) = links.recv() => next = Some(l),
                            _ = tokio::time::sleep(delay) => {}
                        }
                        continue;
                    }
                }
            }
            None => tokio::select! {
                _ = wait_stop(&mut stop) => return,
                l = links.recv() => match l { Some(l) => l, None => return },
            },
        };
        backoff.reset();
        info!(%peer, "m2m link up");
        if events.send(TransportEvent::Connected(peer.clone())).await.is_err() {
            return;
        }
        let end = C::run_link(&shared, &peer, link, &mut queues, &mut links, &events).await;
        info!(%peer, "m2m link down");
        let _ = events.send(TransportEvent::Disconnected(peer.clone())).await;
        match end {
            LinkEnd::Stop => return,
            LinkEnd::Failed => {
                if C::PROBES_GONE && common.cfg.domain.closed_link_detection {
                    let gone = tokio::select! {
                        _ = wait_stop(&mut stop) => return,
                        Some(l) = links.recv() => {
                            next = Some(l);
                            false
                        }
                        gone = shared.peer_process_gone(&peer) => gone,
                    };
                    if gone {
                        info!(%peer, "m2m peer gone: its link closed and a new connection was refused or reset");
                        if events.send(TransportEvent::Gone(peer.clone())).await.is_err() {
                            return;
                        }
                    }
                }
                if dials && next.is_none() {
                    // Do not hammer a peer that accepts and drops at once.
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = wait_stop(&mut stop) => return,
                        Some(l) = links.recv() => next = Some(l),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
            LinkEnd::Replaced(l) => next = Some(l),
        }
    }
}
