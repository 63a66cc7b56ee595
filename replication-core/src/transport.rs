//! The contract between the core and the carriers (`transport-tcp`, `transport-quic`).
//!
//! A transport moves [`WireMessage`]s between the nodes of one domain: it authenticates each
//! peer (the peer's identity comes from its certificate, never from message contents), frames
//! and encodes messages with the shared codec, keeps one logical link per peer and reconnects
//! it, and bounds everything it queues. The runtime driver (`session-api`) pumps the core's
//! output into [`Transport::offer`] and feeds [`Transport::recv`] into the core.
//!
//! The protocol tolerates lost messages (it retransmits and resynchronises), so a transport
//! whose queue to a peer is full refuses the message with [`Error::QueueFull`] rather than
//! blocking the driver: blocking there could deadlock two nodes sending to each other. It
//! hands a refused message back, and the driver gives the engine those it re-sends
//! ([`crate::Input::Undelivered`]).
//!
//! Control traffic (`ordering_key() == None`: heartbeats, leave announcements) has its own
//! small bounded queue per peer ([`TransportSettings::control_queue_capacity`]), apart from
//! the data queue ([`TransportSettings::queue_capacity`]), and the transport serves it first.
//! A flood of session data that fills the data queue therefore never makes the transport
//! refuse or hold back a heartbeat (which would make the peer declare this node dead): at
//! most the data already being written (one write) goes out before a queued control message.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{DomainConfig, NodeId, TransportKind};
use crate::error::Error;

/// A message a transport can carry.
pub trait WireMessage: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Messages with the same key are delivered in the order sent; messages with different
    /// keys may overtake one another (QUIC carries them on different streams, so one slow
    /// session does not hold up the others). `None` is control traffic, ordered among itself;
    /// it may overtake keyed messages (it has its own queue, served first; see the module
    /// documentation).
    fn ordering_key(&self) -> Option<u64>;

    /// Whether this is control traffic (`ordering_key() == None`). A message type whose key
    /// costs a hash tells it without computing the key.
    fn is_control(&self) -> bool {
        self.ordering_key().is_none()
    }
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
    /// Messages from an authenticated peer of this domain, in the order sent: what one
    /// received frame carried (never empty). `transport-tcp` and `transport-quic` deliver every
    /// message this way, one event per frame rather than per message; a consumer handles both
    /// this and [`TransportEvent::Message`].
    Messages {
        /// The sender, as named by its certificate.
        from: NodeId,
        /// The messages, in the order sent.
        msgs: Vec<M>,
    },
    /// A link to the peer is up (handshake done).
    Connected(NodeId),
    /// The link to the peer went down; the transport keeps reconnecting.
    Disconnected(NodeId),
    /// After [`TransportEvent::Disconnected`]: the link closed without the peer leaving and
    /// a new connection to the peer's address was refused right away (nothing listens there)
    /// or reset before any byte (the listener closed with it in its backlog): the peer's
    /// process has exited. The runtime feeds it to the engine as
    /// [`crate::Input::PeerGone`], which fails the peer at once instead of at the failure
    /// timeout. A transport that cannot tell (a link that times out, a datagram carrier)
    /// never sends it; the failure timeout covers those cases.
    Gone(NodeId),
    /// A connection was refused: wrong CA, unknown node, another domain, a forbidden mode,
    /// bad frames. `peer` is the claimed or remote identity, for logs and metrics.
    Refused {
        /// Who tried (a node name or a socket address).
        peer: String,
        /// Why, naming the rule.
        reason: String,
    },
}

impl<M> TransportEvent<M> {
    /// The messages the event carries: 1 for [`TransportEvent::Message`], their number for
    /// [`TransportEvent::Messages`], 0 for the others.
    pub fn message_count(&self) -> usize {
        match self {
            TransportEvent::Message { .. } => 1,
            TransportEvent::Messages { msgs, .. } => msgs.len(),
            _ => 0,
        }
    }

    /// What the event counts against a bound of `capacity` received messages waiting for
    /// [`Transport::recv`] ([`TransportSettings::event_capacity`]): its message count, at most
    /// `capacity` (so a frame larger than the bound still passes, alone).
    pub fn credits(&self, capacity: usize) -> u32 {
        u32::try_from(self.message_count().min(capacity)).unwrap_or(u32::MAX)
    }
}

/// Most messages a transport reader hands over in one [`TransportEvent::Messages`]: the
/// frames one read brought are joined into one event up to this many messages (a single
/// larger frame still passes whole).
pub const DELIVER_BATCH: usize = 1024;

/// Hands the messages of received frames (never empty) from `from` to the application as one
/// [`TransportEvent::Messages`]: waits for the event's credits in `credit`, the bound of
/// `capacity` received messages waiting for [`Transport::recv`] (which gives the credits
/// back), then queues the event. `false` when the application side is gone (the reader
/// stops).
#[cfg(feature = "carrier")]
pub async fn deliver<M>(
    events: &tokio::sync::mpsc::Sender<TransportEvent<M>>,
    credit: &tokio::sync::Semaphore,
    capacity: usize,
    from: &NodeId,
    msgs: Vec<M>,
) -> bool {
    let ev = TransportEvent::Messages { from: from.clone(), msgs };
    match credit.acquire_many(ev.credits(capacity)).await {
        Ok(c) => c.forget(),
        Err(_) => return false,
    }
    events.send(ev).await.is_ok()
}

/// A carrier of messages between the nodes of one domain.
#[async_trait::async_trait]
pub trait Transport<M: WireMessage>: Send + Sync + 'static {
    /// This node.
    fn local(&self) -> &NodeId;

    /// Queues `msg` for `to` without waiting, or hands it back with the reason: [`Error::QueueFull`]
    /// when the peer's bounded queue is full, [`Error::UnknownPeer`] for a node outside the
    /// domain, [`Error::Closed`] after shutdown. Control messages (`ordering_key() == None`)
    /// go to the peer's control queue, keyed ones to its data queue: a full data queue does
    /// not refuse control messages. (A caller that may re-send a refused message needs no
    /// copy of it.)
    fn offer(&self, to: &NodeId, msg: M) -> Result<(), (Error, M)>;

    /// [`Transport::offer`], dropping a refused message.
    fn try_send(&self, to: &NodeId, msg: M) -> Result<(), Error> {
        self.offer(to, msg).map_err(|(e, _)| e)
    }

    /// Queues `msg` for `to`, waiting for room in the peer's queue (backpressure).
    async fn send(&self, to: &NodeId, msg: M) -> Result<(), Error>;

    /// The next event; `None` once the transport is shut down and drained. One receiver at a
    /// time (here or in [`Transport::poll_recv`]): of two callers waiting at once, only the
    /// later one is sure to be woken.
    async fn recv(&self) -> Option<TransportEvent<M>>;

    /// [`Transport::recv`] as a poll, for a caller that waits for events again and again
    /// without a future (and its allocation) per event: the next event if one is ready, else
    /// `Pending` with `cx`'s waker registered.
    fn poll_recv(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<TransportEvent<M>>>;

    /// Stops accepting and connecting, flushes what is queued (bounded by a grace period),
    /// and closes every link.
    async fn shutdown(&self);

    /// Links to the nodes a new domain file adds, while the transport runs (an online domain
    /// change, [`crate::Node::reconfigure`]). A transport that cannot (the default) refuses:
    /// the runtime then refuses the change with rule [`crate::change::rule::TRANSPORT_PEERS`]
    /// and keeps running on the file it has. Changes that add no node need nothing here.
    fn add_peers(&self, domain: Arc<DomainConfig>) -> Result<(), Error> {
        let _ = domain;
        Err(Error::Settings("this transport cannot link to nodes added while it runs".into()))
    }
}

/// The error a runtime returns when the domain file names a transport this build does not
/// include (see the cargo features `tcp` and `quic` of the runtime crate).
pub fn unsupported(kind: TransportKind) -> Error {
    Error::Unsupported { kind }
}

/// PEM text of one node's credentials: the domain CA certificate, the node's certificate
/// (signed by that CA, naming the node; see `tls` with the `tls` feature) and its private key.
#[derive(Clone)]
pub struct PemMaterial {
    /// The domain CA certificate (`ca.pem`).
    pub ca_cert: String,
    /// This node's certificate (`<node>.pem`).
    pub cert: String,
    /// This node's private key (`<node>.key`), PKCS#8.
    pub key: String,
}

impl std::fmt::Debug for PemMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemMaterial").field("key", &"<redacted>").finish_non_exhaustive()
    }
}

/// How a transport authenticates its peers.
#[derive(Clone, Debug)]
pub enum Security {
    /// Mutual TLS 1.3: a peer is accepted only with a certificate from the domain CA naming a
    /// node of the domain.
    Tls(PemMaterial),
    /// No authentication, no encryption: plain TCP, or QUIC with a throwaway self-signed
    /// certificate and verification off. The Hello is taken at its word. For loopback demos
    /// only; the transport logs a warning when it starts.
    Insecure,
}

/// Everything a transport needs to start; the same struct for every transport, so an
/// application switches transports with a cargo feature and nothing else.
#[derive(Debug)]
#[non_exhaustive]
pub struct TransportSettings {
    /// The domain (validated).
    pub domain: Arc<DomainConfig>,
    /// This node; must be listed in `domain`.
    pub local: NodeId,
    /// Authentication.
    pub security: Security,
    /// Largest frame payload sent or accepted, in bytes (default 16 MiB).
    pub max_frame: usize,
    /// Keyed (data) messages queued per peer before `try_send` reports `QueueFull` (default
    /// 1024; QUIC has one such queue per data stream).
    pub queue_capacity: usize,
    /// Control messages (`ordering_key() == None`) queued per peer, apart from the data, before
    /// `try_send` reports `QueueFull` (default 64). The writer serves this queue first.
    pub control_queue_capacity: usize,
    /// How long a new connection has to finish TLS and the Hello exchange (default 5 s).
    pub handshake_timeout: Duration,
    /// Connections from strangers still in their handshake at any time, shared by every source
    /// (at most 8 from one IP, which must start its handshake within 2 s); more are dropped at
    /// once (default 64). Each configured peer's IP has 2 reserved slots on top, which
    /// strangers cannot take (see `carrier::admission`).
    pub max_unauthenticated: usize,
    /// First reconnect delay; doubles up to `reconnect_max`, with jitter (default 50 ms).
    pub reconnect_min: Duration,
    /// Longest reconnect delay (default 5 s).
    pub reconnect_max: Duration,
    /// How long `shutdown` may spend flushing queued messages (default 2 s).
    pub shutdown_grace: Duration,
    /// Received messages buffered before readers wait for the application (default 4096),
    /// however many events carry them (one event holds the messages of one received frame);
    /// also the number of events buffered.
    pub event_capacity: usize,
    /// A TCP listener bound in advance (tests bind port 0, then write the domain file); when
    /// `None`, the TCP transport binds this node's address from the domain file.
    pub tcp_listener: Option<std::net::TcpListener>,
    /// A UDP socket bound in advance, for QUIC, like `tcp_listener`.
    pub udp_socket: Option<std::net::UdpSocket>,
}

impl TransportSettings {
    /// Settings with the defaults above.
    pub fn new(domain: Arc<DomainConfig>, local: NodeId, security: Security) -> Self {
        TransportSettings {
            domain,
            local,
            security,
            max_frame: crate::wire::DEFAULT_MAX_FRAME,
            queue_capacity: 1024,
            control_queue_capacity: 64,
            handshake_timeout: Duration::from_secs(5),
            max_unauthenticated: 64,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(2),
            event_capacity: 4096,
            tcp_listener: None,
            udp_socket: None,
        }
    }

    /// Checks what a transport relies on: this node is listed, limits are not zero.
    pub fn check(&self) -> Result<(), Error> {
        if self.domain.node(&self.local).is_none() {
            return Err(Error::Settings(format!(
                "this node `{}` is not listed in domain `{}`",
                self.local, self.domain.domain.name
            )));
        }
        if self.max_frame < crate::wire::MIN_MAX_FRAME || self.max_frame > u32::MAX as usize {
            return Err(Error::Settings(format!(
                "max_frame must be between {} and {} bytes",
                crate::wire::MIN_MAX_FRAME,
                u32::MAX
            )));
        }
        if self.queue_capacity == 0
            || self.control_queue_capacity == 0
            || self.max_unauthenticated == 0
            || self.event_capacity == 0
        {
            return Err(Error::Settings(
                "queue_capacity, control_queue_capacity, max_unauthenticated and event_capacity must be at least 1"
                    .into(),
            ));
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(Error::Settings("need 0 < reconnect_min <= reconnect_max".into()));
        }
        Ok(())
    }

    /// Whether this node dials `peer` (the other side waits for the call): the node whose
    /// name sorts first dials, so each pair has exactly one link and no simultaneous connects.
    pub fn dials(&self, peer: &NodeId) -> bool {
        self.local < *peer
    }
}

/// Jittered exponential backoff for reconnects, without a random-number dependency.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    state: u64,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u64) | 1;
        Backoff { min, max, current: min, state: seed }
    }

    /// The next delay: uniformly in [d/2, d] for the current step d, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(self.state % span)
    }

    /// Back to the first step (after a successful connect).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let d: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        assert!(d[5] <= Duration::from_millis(800));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn settings_check_and_dial_rule() {
        let cfg = DomainConfig::parse(
            "[domain]\nname='w'\n[[node]]\nname='a'\naddress='127.0.0.1:1'\n[[node]]\nname='b'\naddress='127.0.0.1:2'\n",
            "t",
        )
        .expect("valid");
        let cfg = Arc::new(cfg);
        let s = TransportSettings::new(cfg.clone(), NodeId::new("a"), Security::Insecure);
        s.check().expect("defaults are valid");
        assert!(s.dials(&NodeId::new("b")));
        let b = TransportSettings::new(cfg.clone(), NodeId::new("b"), Security::Insecure);
        assert!(!b.dials(&NodeId::new("a")), "exactly one side of a pair dials");
        let x = TransportSettings::new(cfg.clone(), NodeId::new("x"), Security::Insecure);
        assert!(x.check().expect_err("not listed").to_string().contains("not listed"));
        let mut z = TransportSettings::new(cfg, NodeId::new("a"), Security::Insecure);
        z.queue_capacity = 0;
        assert!(z.check().is_err());
        z.queue_capacity = 1;
        z.control_queue_capacity = 0;
        assert!(z.check().is_err());
        z.control_queue_capacity = 1;
        z.max_frame = 10;
        assert!(z.check().is_err());
    }

    #[test]
    fn events_count_their_messages_against_the_bound() {
        let one: TransportEvent<u8> = TransportEvent::Message { from: NodeId::new("a"), msg: 1 };
        let many: TransportEvent<u8> = TransportEvent::Messages { from: NodeId::new("a"), msgs: vec![1; 10] };
        let link: TransportEvent<u8> = TransportEvent::Connected(NodeId::new("a"));
        assert_eq!((one.message_count(), many.message_count(), link.message_count()), (1, 10, 0));
        assert_eq!((one.credits(4), many.credits(4), many.credits(64), link.credits(4)), (1, 4, 10, 0));
    }

    #[test]
    fn unsupported_names_the_feature() {
        let e = unsupported(TransportKind::Quic).to_string();
        assert!(e.contains("feature `quic`"), "{e}");
    }
}
