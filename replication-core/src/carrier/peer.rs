//! The task that keeps one peer's link. Links carry data in one direction of dialing only:
//! the node whose name sorts first dials (and redials with jittered exponential back-off),
//! the other takes the links its accept loop hands over, a newer one replacing the current
//! one (the peer restarted). So both ends always agree on which link is the link.
//!
//! **Wake-up.** A node that starts dials, once, each peer that dials it, runs the handshake
//! and closes that connection again: to the peer, an authenticated connection from a node it
//! dials means "I am (back) up". A dialer that is backing off then dials at once, with its
//! back-off reset; one that is dialing drops that dial and dials again unless it completes
//! within [`WAKE_UP_GRACE`] (the dial under way may have begun before the peer started, and
//! its lost first packets are sent again only after a while: regression test
//! `conformance::a_wake_up_while_dialing_dials_again_at_once`). Every Hello carries the
//! incarnation of its sender's run ([`Hello::incarnation`](crate::wire::Hello::incarnation)),
//! so the dialer knows which run of the peer its link reaches and which run sent a wake-up:
//! a wake-up from that same run is dropped (the peer started while this node dialed it, and
//! both ends take the link), one from another run means the link reaches a run that is gone
//! (its host went away without closing it, or it was killed and started again before the
//! link timed out): the dialer drops the link and dials at once (regression tests:
//! `conformance::a_peer_restarted_just_after_linking_is_linked_again_at_once`,
//! `transport-tcp/tests/hostile.rs` `a_wake_up_replaces_a_stale_link`). A dial that reaches
//! another run than a wake-up that came during it is dropped and made again. A restarted node
//! thus sees every live peer up within two handshakes, rather than when that peer's back-off
//! ends or its old link times out (regression test:
//! `conformance::restarted_node_sees_every_peer_within_a_handshake`).
//! A failed wake-up is logged at debug level only: the peer that dials reports its own
//! refusals.
//!
//! A dialer whose peer the current domain file no longer lists (a reload removed it) stops
//! dialing, quietly, until a later file lists it again.
//!
//! Dial failures are warnings, rate-limited ([`warn_throttled`]). The task reports
//! [`TransportEvent::Connected`] and [`TransportEvent::Disconnected`], refused dials as
//! [`TransportEvent::Refused`], and, for a carrier that can tell
//! ([`Carrier::PROBES_GONE`]), [`TransportEvent::Gone`].

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::handshake::dial_within;
use super::{Common, DialError, refused, wait_stop, warn_throttled};
use crate::config::NodeId;
use crate::transport::{Backoff, TransportEvent, WireMessage};

/// How long a dial under way when a wake-up arrives may still take before it is dropped for a
/// new one: a handshake between two nodes of a domain takes a few milliseconds, while a dial
/// begun before the peer started waits for its lost first packets to be sent again (a QUIC
/// Initial after 150 ms, a TCP SYN after a second). Dropped at once, a dial in the middle of a
/// good handshake would show at the peer as a refused connection.
const WAKE_UP_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

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

    /// The incarnation of the peer's run that `link` reaches: the one its Hello carried
    /// ([`Hello::incarnation`](crate::wire::Hello::incarnation)).
    fn incarnation(link: &Self::Link) -> u64;

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
    let cfg = common.cfg.load();
    let Some(node) = cfg.node(peer) else {
        return Err(DialError::Refused("not in the domain".into()));
    };
    dial_within(common.handshake_timeout, shared.dial(peer, node.address.as_str())).await
}

/// Keeps the link to `peer` until the transport stops: dials it when `dials`, else takes the
/// links accepted for it from `links` (after a wake-up dial).
pub async fn peer_task<C: Carrier<M>, M: WireMessage>(
    shared: Arc<C>,
    peer: NodeId,
    dials: bool,
    queues: C::Queues,
    links: mpsc::Receiver<C::Link>,
    events: mpsc::Sender<TransportEvent<M>>,
) {
    let mut task = PeerTask { stop: shared.common().shutdown.clone(), shared, peer, queues, links, events };
    if dials { task.dialer().await } else { task.acceptor().await }
}

/// What one peer's task holds.
struct PeerTask<C: Carrier<M>, M: WireMessage> {
    shared: Arc<C>,
    peer: NodeId,
    queues: C::Queues,
    /// Links the accept loop authenticated as `peer`.
    links: mpsc::Receiver<C::Link>,
    events: mpsc::Sender<TransportEvent<M>>,
    stop: watch::Receiver<bool>,
}

/// What happened while a task waited.
enum Woke<L> {
    /// The transport shuts down.
    Stop,
    /// The wait ended.
    Done,
    /// A link arrived from the accept loop.
    Link(L),
}

impl<C: Carrier<M>, M: WireMessage> PeerTask<C, M> {
    /// The side that dials: every accepted link is a wake-up.
    async fn dialer(&mut self) {
        let mut backoff = {
            let common = self.shared.common();
            Backoff::new(common.reconnect_min, common.reconnect_max)
        };
        // The dialer's links never replace each other: run_link gets a queue nothing arrives on.
        let (_none_tx, mut none) = mpsc::channel(1);
        loop {
            if self.shared.common().cfg.load().node(&self.peer).is_none() {
                // A reload removed the peer: the engine no longer addresses it; dial again
                // only if a later file lists it again.
                match self.wait(self.shared.common().reconnect_max).await {
                    Woke::Stop => return,
                    Woke::Link(_) | Woke::Done => continue,
                }
            }
            // The incarnation of the last wake-up that came during the dial.
            let mut woke = None;
            let r = {
                let mut dialing = Box::pin(dial(&*self.shared, &self.peer));
                // After a wake-up: when the dial under way is dropped for a new one.
                let mut redial: Option<tokio::time::Instant> = None;
                loop {
                    tokio::select! {
                        _ = wait_stop(&mut self.stop) => return,
                        Some(wake) = self.links.recv() => {
                            woke = Some(C::incarnation(&wake));
                            if redial.is_none() {
                                redial = Some(tokio::time::Instant::now() + WAKE_UP_GRACE);
                            }
                        }
                        _ = tokio::time::sleep_until(redial.unwrap_or_else(tokio::time::Instant::now)),
                            if redial.is_some() =>
                        {
                            debug!(peer = %self.peer, "wake-up while dialing: dialing again");
                            redial = None;
                            dialing = Box::pin(dial(&*self.shared, &self.peer));
                        }
                        r = &mut dialing => break r,
                    }
                }
            };
            let link = match r {
                Ok(l) => l,
                Err(e) => {
                    match e {
                        DialError::Unreachable(why) => {
                            if warn_throttled(self.shared.common(), "unreachable", self.peer.as_str()) {
                                warn!(peer = %self.peer, %why, "m2m peer unreachable");
                            }
                        }
                        DialError::Refused(why) => {
                            refused(self.shared.common(), &self.events, self.peer.to_string(), why);
                        }
                    }
                    match self.wait(backoff.next_delay()).await {
                        Woke::Stop => return,
                        Woke::Link(_) => backoff.reset(),
                        Woke::Done => {}
                    }
                    continue;
                }
            };
            backoff.reset();
            let reached = C::incarnation(&link);
            if woke.is_some_and(|w| w != reached) {
                // The dial reached another run of the peer than the one that woke this node
                // up: one of the two is gone; dial again.
                debug!(peer = %self.peer, "the dial reached another run of the peer than its wake-up: dialing again");
                continue;
            }
            let end = {
                let PeerTask { shared, peer, queues, links, events, .. } = self;
                let run = run(shared, peer, link, queues, &mut none, events);
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        end = &mut run => break Some(end),
                        Some(wake) = links.recv() => {
                            if C::incarnation(&wake) != reached {
                                break None;
                            }
                            debug!(%peer, "wake-up from the run this link reaches: dropped");
                        }
                    }
                }
            };
            let Some(end) = end else {
                // The link ends with `run` dropped; redial at once.
                info!(peer = %self.peer, "m2m link down: the peer started again, so this link reaches a run that is gone");
                if self.events.send(TransportEvent::Disconnected(self.peer.clone())).await.is_err() {
                    return;
                }
                continue;
            };
            match end {
                None | Some(LinkEnd::Stop) => return,
                Some(LinkEnd::Failed | LinkEnd::Replaced(_)) => match self.after_failure().await {
                    Woke::Stop => return,
                    Woke::Link(_) => backoff.reset(),
                    // Do not hammer a peer that accepts and drops at once.
                    Woke::Done => match self.wait(backoff.next_delay()).await {
                        Woke::Stop => return,
                        Woke::Link(_) => backoff.reset(),
                        Woke::Done => {}
                    },
                },
            }
        }
    }

    /// The side that is dialed: wakes the peer up once, then runs the links it dials.
    async fn acceptor(&mut self) {
        let mut next = {
            let waking = dial(&*self.shared, &self.peer);
            tokio::select! {
                _ = wait_stop(&mut self.stop) => return,
                Some(l) = self.links.recv() => Some(l),
                r = waking => {
                    match r {
                        Ok(_) => debug!(peer = %self.peer, "wake-up sent"),
                        Err(DialError::Unreachable(why) | DialError::Refused(why)) => {
                            debug!(peer = %self.peer, %why, "wake-up failed; the peer dials when it is up");
                        }
                    }
                    None
                }
            }
        };
        loop {
            let link = match next.take() {
                Some(l) => l,
                None => tokio::select! {
                    _ = wait_stop(&mut self.stop) => return,
                    l = self.links.recv() => match l { Some(l) => l, None => return },
                },
            };
            let PeerTask { shared, peer, queues, links, events, .. } = self;
            match run(shared, peer, link, queues, links, events).await {
                None | Some(LinkEnd::Stop) => return,
                Some(LinkEnd::Replaced(l)) => next = Some(l),
                Some(LinkEnd::Failed) => match self.after_failure().await {
                    Woke::Stop => return,
                    Woke::Link(l) => next = Some(l),
                    Woke::Done => {}
                },
            }
        }
    }

    /// Waits `delay`, or for the stop signal or a link.
    async fn wait(&mut self, delay: std::time::Duration) -> Woke<C::Link> {
        tokio::select! {
            _ = wait_stop(&mut self.stop) => Woke::Stop,
            Some(l) = self.links.recv() => Woke::Link(l),
            _ = tokio::time::sleep(delay) => Woke::Done,
        }
    }

    /// After a link failed: asks whether the peer's process is gone, when the carrier can
    /// tell and the domain wants to know, and reports it.
    async fn after_failure(&mut self) -> Woke<C::Link> {
        let common = self.shared.common();
        if !(C::PROBES_GONE && common.cfg.load().domain.closed_link_detection) {
            return Woke::Done;
        }
        let gone = tokio::select! {
            _ = wait_stop(&mut self.stop) => return Woke::Stop,
            Some(l) = self.links.recv() => return Woke::Link(l),
            gone = self.shared.peer_process_gone(&self.peer) => gone,
        };
        if gone {
            info!(peer = %self.peer, "m2m peer gone: its link closed and a new connection was refused or reset");
            if self.events.send(TransportEvent::Gone(self.peer.clone())).await.is_err() {
                return Woke::Stop;
            }
        }
        Woke::Done
    }
}

/// Runs `link` to its end, reporting it up and down; `None` when the application is gone.
async fn run<C: Carrier<M>, M: WireMessage>(
    shared: &Arc<C>,
    peer: &NodeId,
    link: C::Link,
    queues: &mut C::Queues,
    links: &mut mpsc::Receiver<C::Link>,
    events: &mpsc::Sender<TransportEvent<M>>,
) -> Option<LinkEnd<C::Link>> {
    info!(%peer, "m2m link up");
    if events.send(TransportEvent::Connected(peer.clone())).await.is_err() {
        return None;
    }
    let end = C::run_link(shared, peer, link, queues, links, events).await;
    info!(%peer, "m2m link down");
    let _ = events.send(TransportEvent::Disconnected(peer.clone())).await;
    Some(end)
}
