//! m2m transport over QUIC (quinn 0.11, rustls with the ring provider, mutual TLS 1.3).
//!
//! [`QuicTransport`] implements [`Transport`] with the same construction API as
//! `transport_tcp::TcpTransport` (both take a [`TransportSettings`]), so an application
//! switches carriers with a cargo feature.
//!
//! Per peer there is one QUIC connection; the node whose name sorts first dials
//! ([`TransportSettings::dials`]). The handshake ([`replication_core::wire::Hello`] each
//! way) runs on the first bidirectional stream, which then carries control traffic
//! (`ordering_key() == None`). Messages with a key `k` travel on long-lived unidirectional
//! stream `k % DATA_STREAMS`, so independent sessions do not block each other on loss, while
//! each key keeps its order. Each data stream has its own bounded queue (of
//! [`TransportSettings::queue_capacity`] messages, so up to `DATA_STREAMS` times that per
//! peer). One task writes every stream of a link and one reads them all ([`link`]): a stream
//! waiting for flow-control credit does not hold up the others, the messages queued together
//! on a stream go out as one Batch frame in one write, and what all streams brought reaches
//! the application as one batch.
//! The control stream's queue is small ([`TransportSettings::control_queue_capacity`]) and
//! the control stream has a higher QUIC send priority than the data streams, so a flood of
//! session data neither fills it nor holds heartbeats back.
//!
//! New connections get fair handshake slots ([`replication_core::carrier::admission`]): each
//! configured peer's address has slots of its own; other sources share a capped pool, at most
//! 8 each, must finish the QUIC handshake within 2 s, and, once half the pool is busy, must
//! first answer a Retry (QUIC address validation: a flood of Initials from spoofed addresses
//! then holds at most half the pool). Excess connections are ignored, not refused, since a
//! refusal would be a datagram sent to an address that may be spoofed.
//!
//! [`Security::Insecure`] still speaks TLS (QUIC requires it) but with a throwaway
//! self-signed certificate and no verification; it logs a warning.
//!
//! What both transports share (the Hello exchange and its refusals, the per-peer task with
//! reconnect and back-off, the accept loop, the frame reader) is
//! [`replication_core::carrier`]; this crate holds what is QUIC's own: the endpoint, its
//! connections and streams.
//!
//! ```no_run
//! use std::sync::Arc;
//! use replication_core::transport::{Security, Transport, TransportSettings};
//! use replication_core::{DomainConfig, Message, NodeId, tls};
//! use transport_quic::QuicTransport;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let (cfg, _) = DomainConfig::load(&std::fs::read_to_string("web.toml")?, "web.toml")?;
//! let me = NodeId::new("app1");
//! let pem = tls::load_node(std::path::Path::new("certs"), &me)?;
//! let settings = TransportSettings::new(Arc::new(cfg), me, Security::Tls(pem));
//! let t: QuicTransport<Message> = QuicTransport::start(settings).await?;
//! t.try_send(&NodeId::new("app2"), Message::Heartbeat { incarnation: 1, sent: 0, echo: None })?;
//! t.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use replication_core::carrier::accept;
use replication_core::carrier::admission::Admission;
use replication_core::carrier::handshake::{self, Deadlines, HelloStream, accept_within};
use replication_core::carrier::members::Members;
use replication_core::carrier::peer::Carrier;
use replication_core::carrier::{AbortOnDrop, AppSide, Common, DialError, LinkEnd, wait_stop};
use replication_core::transport::{Security, Transport, TransportEvent, TransportSettings, WireMessage};
use replication_core::wire::refusal;
use replication_core::{DomainConfig, NodeId, tls};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

mod link;

/// Long-lived unidirectional streams per direction for keyed messages.
pub const DATA_STREAMS: usize = 8;

/// Errors of [`QuicTransport::start`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid settings, unreadable certificates or TLS configuration (from the core).
    #[error(transparent)]
    Core(#[from] replication_core::Error),
    /// The UDP socket could not be bound or adopted.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address from the domain file, or `pre-bound socket`.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// rustls configs not usable for QUIC (e.g. missing TLS 1.3 cipher suites).
    #[error("QUIC crypto configuration: {0}")]
    Crypto(String),
}

/// QUIC send priority of the control stream (data streams keep the default, 0).
const CONTROL_PRIORITY: i32 = 1;

struct Shared {
    common: Common,
    endpoint: Endpoint,
    client: quinn::ClientConfig,
}

/// An established, authenticated link; during the handshake, its control stream is the
/// stream the Hello exchange runs on (reads from `control_rx`, writes to `control_tx`).
struct Link {
    conn: Connection,
    control_tx: SendStream,
    control_rx: RecvStream,
    /// The incarnation of the peer's run the link reaches (from its Hello; 0 until then).
    incarnation: u64,
}

impl AsyncRead for Link {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().control_rx).poll_read(cx, buf)
    }
}

impl AsyncWrite for Link {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.get_mut().control_tx), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().control_tx).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().control_tx).poll_shutdown(cx)
    }
}

impl HelloStream for Link {
    const NAME: &'static str = "stream";

    async fn close_refused(&mut self, sent: bool) {
        if sent {
            let _ = self.control_tx.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.control_tx.stopped()).await;
        }
        self.conn.close(VarInt::from_u32(1), b"refused");
    }
}

/// Per peer, one bounded queue per stream (index 0 = control, then one per key class), so a
/// stream that cannot make progress does not hold up the others.
struct Peer<M> {
    queues: Vec<mpsc::Sender<M>>,
}

type SharedQueue<M> = Arc<tokio::sync::Mutex<mpsc::Receiver<M>>>;

/// The capacities of a new peer's queues.
#[derive(Clone, Copy)]
struct Sizes {
    queue: usize,
    control: usize,
}

impl Sizes {
    /// A new peer's sending and receiving sides.
    fn peer<M>(self) -> (Peer<M>, Vec<SharedQueue<M>>) {
        let (queues, queue_rxs) = (0..=DATA_STREAMS)
            .map(|i| {
                let (tx, rx) = mpsc::channel(if i == 0 { self.control } else { self.queue });
                (tx, Arc::new(tokio::sync::Mutex::new(rx)))
            })
            .unzip();
        (Peer { queues }, queue_rxs)
    }
}

/// A [`Transport`] over QUIC.
pub struct QuicTransport<M: WireMessage> {
    shared: Arc<Shared>,
    peers: Members<Link, M, Peer<M>>,
    sizes: Sizes,
    app: AppSide<M>,
    local_addr: SocketAddr,
}

/// The round-trip time a new connection assumes until it has measured one: a lost first
/// handshake packet (a link that just came up, a peer not yet listening) is sent again after
/// three of them, 150 ms, instead of about a second with quinn's 333 ms default; the nodes of a
/// domain are on one network, far below it. In the fault matrix, a node restarted right as its
/// peer's link came back up linked to that peer 0.4 s after its start with it, 0.8-1.0 s
/// without.
const INITIAL_RTT: Duration = Duration::from_millis(50);

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.initial_rtt(INITIAL_RTT);
    t.max_concurrent_uni_streams(VarInt::from_u32(DATA_STREAMS as u32 * 4));
    t.max_concurrent_bidi_streams(VarInt::from_u32(4));
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(10)) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

impl<M: WireMessage> QuicTransport<M> {
    /// Binds (or adopts `settings.udp_socket`), starts accepting, and starts a link task per
    /// peer of the domain. Must be called inside a tokio runtime.
    pub async fn start(mut settings: TransportSettings) -> Result<Self, Error> {
        let (common, stop) = Common::new(&settings)?;
        let cfg = settings.domain.clone();
        let local = settings.local.clone();
        let (server, client) = match &settings.security {
            Security::Tls(pem) => (
                tls::server_config_following(&common.cfg, &local, pem)?,
                tls::client_config(&cfg, &local, pem)?,
            ),
            Security::Insecure => {
                warn!(node = %local, "m2m quic transport is INSECURE: throwaway certificate, no verification; loopback demos only");
                tls::insecure_configs()?
            }
        };
        let crypto = |e: &dyn std::fmt::Display| Error::Crypto(e.to_string());
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(server).map_err(|e| crypto(&e))?,
        ));
        server.transport_config(transport_config());
        let mut client =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client).map_err(|e| crypto(&e))?));
        client.transport_config(transport_config());
        let socket = match settings.udp_socket.take() {
            Some(s) => s,
            None => {
                let addr = cfg.node(&local).map(|n| n.address.to_string()).unwrap_or_default();
                std::net::UdpSocket::bind(&addr).map_err(|source| Error::Bind { addr, source })?
            }
        };
        let endpoint = Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| Error::Bind { addr: "pre-bound socket".into(), source })?;
        let local_addr =
            endpoint.local_addr().map_err(|source| Error::Bind { addr: "socket".into(), source })?;
        let shared = Arc::new(Shared { common, endpoint, client });
        let (ev_tx, ev_rx) = mpsc::channel(settings.event_capacity);
        let app = AppSide::new(ev_rx, stop, JoinSet::new());
        let admission = Admission::for_domain(&cfg, &local, settings.max_unauthenticated).await;
        let peers = Members::new(admission, &ev_tx);
        let sizes = Sizes { queue: settings.queue_capacity, control: settings.control_queue_capacity };
        for n in cfg.nodes.iter().filter(|n| n.name != local) {
            let (peer, queues) = sizes.peer();
            peers.add(&shared, &app, n.name.clone(), peer, queues)?;
        }
        let handshake = {
            let shared = shared.clone();
            move |incoming, addr, deadlines| {
                let shared = shared.clone();
                async move { Some(accept_handshake(&shared, incoming, addr, deadlines).await) }
            }
        };
        let incoming = Incoming(shared.endpoint.clone());
        let stop_accepting = shared.common.shutdown.clone();
        app.spawn(accept::accept_loop::<_, _, M, _, _>(
            incoming,
            shared.clone(),
            stop_accepting,
            peers.admission(),
            peers.routes(),
            ev_tx,
            handshake,
        ))?;
        info!(node = %local, addr = %local_addr, "m2m quic transport listening");
        Ok(QuicTransport { shared, peers, sizes, app, local_addr })
    }

    /// The address the UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The queue of `to` that `msg` goes to.
    fn queue(&self, to: &NodeId, msg: &M) -> Result<mpsc::Sender<M>, replication_core::Error> {
        self.app.check_open()?;
        let peers = self.peers.read();
        let peer = peers.get(to).ok_or_else(|| unknown(to))?;
        peer.queues.get(stream_index(msg.ordering_key())).cloned().ok_or(replication_core::Error::Closed)
    }
}

#[async_trait::async_trait]
impl<M: WireMessage> Transport<M> for QuicTransport<M> {
    fn local(&self) -> &NodeId {
        &self.shared.common.local
    }

    fn offer(&self, to: &NodeId, msg: M) -> Result<(), (replication_core::Error, M)> {
        if let Err(e) = self.app.check_open() {
            return Err((e, msg));
        }
        let peers = self.peers.read();
        let Some(peer) = peers.get(to) else { return Err((unknown(to), msg)) };
        match peer.queues.get(stream_index(msg.ordering_key())) {
            Some(queue) => replication_core::carrier::offer(queue, to, msg),
            None => Err((replication_core::Error::Closed, msg)),
        }
    }

    fn add_peers(&self, domain: Arc<DomainConfig>) -> Result<(), replication_core::Error> {
        let sizes = self.sizes;
        self.peers.add_peers(&self.shared, &self.app, domain, || sizes.peer())
    }

    async fn send(&self, to: &NodeId, msg: M) -> Result<(), replication_core::Error> {
        self.queue(to, &msg)?.send(msg).await.map_err(|_| replication_core::Error::Closed)
    }

    async fn recv(&self) -> Option<TransportEvent<M>> {
        self.app.recv(&self.shared.common).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent<M>>> {
        self.app.poll_recv(cx, &self.shared.common)
    }

    async fn shutdown(&self) {
        self.app.close();
        let common = &self.shared.common;
        if self.app.stop_and_join(common.grace, &common.local).await {
            self.shared.endpoint.close(VarInt::from_u32(0), b"shutdown");
            let _ = tokio::time::timeout(Duration::from_millis(500), self.shared.endpoint.wait_idle()).await;
        }
    }
}

fn unknown(to: &NodeId) -> replication_core::Error {
    replication_core::Error::UnknownPeer { peer: to.to_string() }
}

/// The endpoint as the accept loop's source of connections.
struct Incoming(Endpoint);

impl accept::Listener for Incoming {
    type Conn = quinn::Incoming;

    async fn accept(&self) -> Option<std::io::Result<(quinn::Incoming, SocketAddr)>> {
        let incoming = self.0.accept().await?;
        let addr = incoming.remote_address();
        Some(Ok((incoming, addr)))
    }

    fn validated(&self, incoming: &quinn::Incoming) -> bool {
        incoming.remote_address_validated()
    }

    /// A stateless Retry: the source gets a slot only once it answers from its address.
    fn validate(&self, incoming: quinn::Incoming) {
        if let Err(e) = incoming.retry() {
            e.into_incoming().ignore();
        }
    }

    /// Ignored, not refused: a refusal would be a datagram sent to a source that may be
    /// spoofed.
    fn turn_away(&self, incoming: quinn::Incoming) {
        incoming.ignore();
    }
}

fn peer_node(shared: &Shared, conn: &Connection) -> Option<NodeId> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    tls::peer_node(&shared.common.cfg.load(), certs.first()?)
}

/// The acceptor's side: the QUIC handshake (by the start deadline), then the Hello exchange
/// on the first bidirectional stream (by the end).
async fn accept_handshake(
    shared: &Shared,
    incoming: quinn::Incoming,
    addr: SocketAddr,
    deadlines: Deadlines,
) -> Result<(NodeId, Link), (String, String)> {
    let common = &shared.common;
    let work = async {
        let tls_failed = |e: &dyn std::fmt::Display| {
            (addr.to_string(), format!("[{}] QUIC/TLS handshake failed: {e}", refusal::CERTIFICATE))
        };
        let connecting = incoming.accept().map_err(|e| tls_failed(&e))?;
        let conn = deadlines.started(addr, async { connecting.await.map_err(|e| tls_failed(&e)) }).await?;
        let authenticated = if common.secure {
            match peer_node(shared, &conn) {
                Some(n) => Some(n),
                None => return Err(tls_failed(&"no node certificate")),
            }
        } else {
            None
        };
        let who = handshake::who(authenticated.as_ref(), addr);
        let (tx, rx) = conn.accept_bi().await.map_err(|e| (who.clone(), format!("handshake failed: {e}")))?;
        let mut link = Link { conn, control_tx: tx, control_rx: rx, incarnation: 0 };
        let hello = handshake::accept_hello(common, &mut link, authenticated.as_ref(), who).await?;
        link.incarnation = hello.incarnation;
        Ok((hello.node, link))
    };
    accept_within(common, deadlines.end, addr, work).await
}

impl<M: WireMessage> Carrier<M> for Shared {
    type Link = Link;
    type Queues = Vec<SharedQueue<M>>;

    fn common(&self) -> &Common {
        &self.common
    }

    fn incarnation(link: &Link) -> u64 {
        link.incarnation
    }

    async fn dial(&self, peer: &NodeId, address: &str) -> Result<Link, DialError> {
        let common = &self.common;
        let addr = tokio::net::lookup_host(address)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| DialError::Unreachable(format!("cannot resolve {address}")))?;
        let name = if common.secure {
            tls::server_name(&common.cfg.load().domain.name, peer)
                .map_err(|e| DialError::Refused(e.to_string()))?
                .to_str()
                .into_owned()
        } else {
            "insecure.m2m".to_owned()
        };
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), addr, &name)
            .map_err(|e| DialError::Unreachable(format!("connect {addr}: {e}")))?;
        let conn = connecting.await.map_err(|e| match e {
            quinn::ConnectionError::TimedOut | quinn::ConnectionError::LocallyClosed => {
                DialError::Unreachable(format!("connect {addr}: {e}"))
            }
            e => DialError::Refused(format!("[{}] QUIC/TLS handshake failed: {e}", refusal::CERTIFICATE)),
        })?;
        let exchange = async {
            let (tx, rx) =
                conn.open_bi().await.map_err(|e| DialError::Refused(format!("handshake failed: {e}")))?;
            let mut link = Link { conn: conn.clone(), control_tx: tx, control_rx: rx, incarnation: 0 };
            link.incarnation = handshake::dial_hello(common, &mut link, peer, address).await?.incarnation;
            Ok(link)
        };
        exchange.await.map_err(|e| match conn.close_reason() {
            // In TLS 1.3 the acceptor checks our certificate after our side of the TLS
            // handshake is done: its verdict closes the connection with a crypto error.
            Some(why) if why.to_string().contains("cryptographic handshake") => {
                DialError::certificate_refused(why)
            }
            _ => e,
        })
    }

    async fn run_link(
        shared: &Arc<Self>,
        peer: &NodeId,
        link: Link,
        queues: &mut Vec<SharedQueue<M>>,
        links: &mut mpsc::Receiver<Link>,
        events: &mpsc::Sender<TransportEvent<M>>,
    ) -> LinkEnd<Link> {
        let Link { conn, control_tx, control_rx, .. } = link;
        // Control traffic (heartbeats) goes out before data waiting on the connection.
        if let Err(e) = control_tx.set_priority(CONTROL_PRIORITY) {
            debug!(%peer, error = %e, "cannot raise the control stream's priority");
        }
        let mut reader = AbortOnDrop(tokio::spawn(link::read_link(
            conn.clone(),
            control_rx,
            peer.clone(),
            events.clone(),
            shared.clone(),
        )));
        // Dropping it (link down, replaced) aborts the writer and frees the queues.
        let mut writer = AbortOnDrop(tokio::spawn(link::write_link(
            conn.clone(),
            control_tx,
            queues.clone(),
            peer.clone(),
            shared.common.max_frame,
            shared.common.shutdown.clone(),
        )));
        let mut writing = true;
        let mut stop = shared.common.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                _ = wait_stop(&mut stop) => {
                    // The writer flushes on its own; give it the grace period.
                    if writing && tokio::time::timeout(shared.common.grace, &mut writer.0).await.is_err() {
                        debug!(%peer, "flush at shutdown: grace elapsed");
                    }
                    conn.close(VarInt::from_u32(0), b"shutdown");
                    return LinkEnd::Stop;
                }
                _ = &mut reader.0 => {
                    conn.close(VarInt::from_u32(2), b"link failed");
                    return LinkEnd::Failed;
                }
                r = &mut writer.0, if writing => {
                    writing = false;
                    if let Ok(Err(e)) = r {
                        debug!(%peer, error = %e, "write failed");
                        conn.close(VarInt::from_u32(2), b"write failed");
                        return LinkEnd::Failed;
                    }
                }
                Some(l) = links.recv() => {
                    debug!(%peer, "a new connection replaces the link");
                    conn.close(VarInt::from_u32(3), b"replaced");
                    return LinkEnd::Replaced(l);
                }
            }
        }
    }
}

/// The stream index for a message: 0 = control, 1..=DATA_STREAMS by key.
fn stream_index(key: Option<u64>) -> usize {
    match key {
        None => 0,
        Some(k) => 1 + (k % DATA_STREAMS as u64) as usize,
    }
}
