//! The contract between the core and the carriers (`transport-tcp`, `transport-quic`).
//!
//! A transport moves [`WireMessage`]s between the nodes of one domain: it authenticates each
//! peer (the peer's identity comes from its certificate, never from message contents), frames
//! and encodes messages with the shared codec, keeps one logical link per peer and reconnects
//! it, and bounds everything it queues. The runtime driver (`session-api`) pumps the core's
//! output into [`Transport::try_send`] and feeds [`Transport::recv`] into the core.
//!
//! The protocol tolerates lost messages (it retransmits and resynchronises), so a transport
//! whose queue to a peer is full refuses the message with [`Error::QueueFull`] rather than
//! blocking the driver: blocking there could deadlock two nodes sending to each other.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::NodeId;
use crate::error::Error;

/// A message a transport can carry.
pub trait WireMessage: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Messages with the same key are delivered in the order sent; messages with different
    /// keys may overtake one another (QUIC carries them on different streams, so one slow
    /// session does not hold up the others). `None` is control traffic, ordered among itself.
    fn ordering_key(&self) -> Option<u64>;
}

/// What [`Transport::recv`] yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum TransportEvent<M> {
    /// A message from an authenticated peer of this domain.
    Message {
        /// The sender, as named by its certificate.
        from: NodeId,
        /// The message.
        msg: M,
    },
    /// A link to the peer is up (handshake done).
    Connected(NodeId),
    /// The link to the peer went down; the transport keeps reconnecting.
    Disconnected(NodeId),
    /// A connection was refused: wrong CA, unknown node, another domain, a forbidden mode,
    /// bad frames. `peer` is the claimed or remote identity, for logs and metrics.
    Refused {
        /// Who tried (a node name or a socket address).
        peer: String,
        /// Why, naming the rule.
        reason: String,
    },
}

/// A carrier of messages between the nodes of one domain.
#[async_trait::async_trait]
pub trait Transport<M: WireMessage>: Send + Sync + 'static {
    /// This node.
    fn local(&self) -> &NodeId;

    /// Queues `msg` for `to` without waiting. Fails with [`Error::QueueFull`] when the peer's
    /// bounded queue is full, [`Error::UnknownPeer`] for a node outside the domain, and
    /// [`Error::Closed`] after shutdown; the message is dropped in each case.
    fn try_send(&self, to: &NodeId, msg: M) -> Result<(), Error>;

    /// Queues `msg` for `to`, waiting for room in the peer's queue (backpressure).
    async fn send(&self, to: &NodeId, msg: M) -> Result<(), Error>;

    /// The next event; `None` once the transport is shut down and drained.
    async fn recv(&self) -> Option<TransportEvent<M>>;

    /// Stops accepting and connecting, flushes what is queued (bounded by a grace period),
    /// and closes every link.
    async fn shutdown(&self);
}
