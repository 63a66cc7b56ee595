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
//! peer) and its own writer task: a stream waiting for flow-control credit does not hold up
//! the others. Messages queued together on a stream go out as one Batch frame in one write.
//! The control stream's queue is small ([`TransportSettings::control_queue_capacity`]) and
//! the control stream has a higher QUIC send priority than the data streams, so a flood of
//! session data neither fills it nor holds heartbeats back.
//!
//! [`Security::Insecure`] still speaks TLS (QUIC requires it) but with a throwaway
//! self-signed certificate and no verification; it logs a warning.
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
//! t.try_send(&NodeId::new("app2"), Message::Heartbeat { incarnation: 1 })?;
//! t.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use replication_core::config::DomainConfig;
use replication_core::transport::{
    Backoff, DELIVER_BATCH, Security, Transport, TransportEvent, TransportSettings, WireMessage, deliver,
};
use replication_core::wire::{ByteSource, Frame, FrameDecoder, FrameEncoder, Hello, WireError, refusal};
use replication_core::{NodeId, tls};
use rustls::pki_types::CertificateDer;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

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

/// Bytes a writer gathers into one round of writes.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

struct Shared {
    cfg: Arc<DomainConfig>,
    local: NodeId,
    hello: Hello,
    secure: bool,
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    max_frame: usize,
    handshake_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    grace: Duration,
    shutdown: watch::Receiver<bool>,
    /// Received messages that may wait for `recv` ([`TransportSettings::event_capacity`]):
    /// a reader takes an event's credits before queueing it, `recv` gives them back.
    credit: Semaphore,
    event_capacity: usize,
}

/// An established, authenticated link.
struct Link {
    conn: Connection,
    control_tx: SendStream,
    control_rx: RecvStream,
}

/// Per peer, one bounded queue per stream (index 0 = control, then one per key class), so a
/// stream that cannot make progress does not hold up the others.
struct Peer<M> {
    queues: Vec<mpsc::Sender<M>>,
}

type SharedQueue<M> = Arc<tokio::sync::Mutex<mpsc::Receiver<M>>>;

/// A [`Transport`] over QUIC.
pub struct QuicTransport<M: WireMessage> {
    shared: Arc<Shared>,
    peers: HashMap<NodeId, Peer<M>>,
    events: tokio::sync::Mutex<mpsc::Receiver<TransportEvent<M>>>,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
    tasks: std::sync::Mutex<Option<JoinSet<()>>>,
    local_addr: SocketAddr,
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
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
        settings.check()?;
        let cfg = settings.domain.clone();
        let local = settings.local.clone();
        let hello = Hello::for_node(&cfg, &local)
            .ok_or_else(|| replication_core::Error::Settings(format!("`{local}` is not in the domain")))?;
        let (server, client, secure) = match &settings.security {
            Security::Tls(pem) => {
                (tls::server_config(&cfg, &local, pem)?, tls::client_config(&cfg, &local, pem)?, true)
            }
            Security::Insecure => {
                warn!(node = %local, "m2m quic transport is INSECURE: throwaway certificate, no verification; loopback demos only");
                let (s, c) = tls::insecure_configs()?;
                (s, c, false)
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
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            local: local.clone(),
            hello,
            secure,
            endpoint,
            client,
            max_frame: settings.max_frame,
            handshake_timeout: settings.handshake_timeout,
            reconnect_min: settings.reconnect_min,
            reconnect_max: settings.reconnect_max,
            grace: settings.shutdown_grace,
            shutdown,
            credit: Semaphore::new(settings.event_capacity.min(Semaphore::MAX_PERMITS)),
            event_capacity: settings.event_capacity,
        });
        let (ev_tx, ev_rx) = mpsc::channel(settings.event_capacity);
        let mut tasks = JoinSet::new();
        let mut peers = HashMap::new();
        let mut routes = HashMap::new();
        for n in cfg.nodes.iter().filter(|n| n.name != local) {
            let (queues, queue_rxs): (Vec<_>, Vec<_>) = (0..=DATA_STREAMS)
                .map(|i| {
                    let capacity =
                        if i == 0 { settings.control_queue_capacity } else { settings.queue_capacity };
                    let (tx, rx) = mpsc::channel(capacity);
                    (tx, Arc::new(tokio::sync::Mutex::new(rx)))
                })
                .unzip();
            let (links, links_rx) = mpsc::channel(4);
            let dials = settings.dials(&n.name);
            tasks.spawn(peer_task(shared.clone(), n.name.clone(), dials, queue_rxs, links_rx, ev_tx.clone()));
            peers.insert(n.name.clone(), Peer { queues });
            routes.insert(n.name.clone(), links);
        }
        let sem = Arc::new(Semaphore::new(settings.max_unauthenticated));
        tasks.spawn(accept_loop(shared.clone(), sem, routes, ev_tx));
        info!(node = %local, addr = %local_addr, "m2m quic transport listening");
        Ok(QuicTransport {
            shared,
            peers,
            events: tokio::sync::Mutex::new(ev_rx),
            stop,
            closed: AtomicBool::new(false),
            tasks: std::sync::Mutex::new(Some(tasks)),
            local_addr,
        })
    }

    /// The address the UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn queue(&self, to: &NodeId, msg: &M) -> Result<&mpsc::Sender<M>, replication_core::Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(replication_core::Error::Closed);
        }
        let peer = self
            .peers
            .get(to)
            .ok_or_else(|| replication_core::Error::UnknownPeer { peer: to.to_string() })?;
        peer.queues.get(stream_index(msg.ordering_key())).ok_or(replication_core::Error::Closed)
    }
}

impl<M: WireMessage> Drop for QuicTransport<M> {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[async_trait::async_trait]
impl<M: WireMessage> Transport<M> for QuicTransport<M> {
    fn local(&self) -> &NodeId {
        &self.shared.local
    }

    fn offer(&self, to: &NodeId, msg: M) -> Result<(), (replication_core::Error, M)> {
        let queue = match self.queue(to, &msg) {
            Ok(q) => q,
            Err(e) => return Err((e, msg)),
        };
        queue.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) => {
                (replication_core::Error::QueueFull { peer: to.to_string() }, m)
            }
            mpsc::error::TrySendError::Closed(m) => (replication_core::Error::Closed, m),
        })
    }

    async fn send(&self, to: &NodeId, msg: M) -> Result<(), replication_core::Error> {
        self.queue(to, &msg)?.send(msg).await.map_err(|_| replication_core::Error::Closed)
    }

    async fn recv(&self) -> Option<TransportEvent<M>> {
        let ev = self.events.lock().await.recv().await;
        if let Some(ev) = &ev {
            self.shared.credit.add_permits(ev.credits(self.shared.event_capacity) as usize);
        }
        ev
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.stop.send(true);
        let tasks = self.tasks.lock().ok().and_then(|mut t| t.take());
        if let Some(mut tasks) = tasks {
            let all = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(self.shared.grace + Duration::from_millis(500), all).await.is_err() {
                warn!(node = %self.shared.local, "shutdown grace elapsed; aborting the remaining links");
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
            self.shared.endpoint.close(VarInt::from_u32(0), b"shutdown");
            let _ = tokio::time::timeout(Duration::from_millis(500), self.shared.endpoint.wait_idle()).await;
        }
    }
}

async fn wait_stop(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

fn refused<M>(events: &mpsc::Sender<TransportEvent<M>>, peer: String, reason: String) {
    warn!(%peer, %reason, "m2m connection refused");
    let _ = events.try_send(TransportEvent::Refused { peer, reason });
}

/// A QUIC receive stream as the frame decoder's byte source.
struct Source<'a>(&'a mut RecvStream);

impl ByteSource for Source<'_> {
    type Error = quinn::ReadError;
    async fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, quinn::ReadError> {
        // `None`: the peer finished the stream.
        Ok(self.0.read(buf).await?.unwrap_or(0))
    }
}

fn peer_node(shared: &Shared, conn: &Connection) -> Option<NodeId> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    tls::peer_node(&shared.cfg, certs.first()?)
}

async fn accept_loop<M: WireMessage>(
    shared: Arc<Shared>,
    sem: Arc<Semaphore>,
    routes: HashMap<NodeId, mpsc::Sender<Link>>,
    events: mpsc::Sender<TransportEvent<M>>,
) {
    let mut stop = shared.shutdown.clone();
    let mut handshakes = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            _ = wait_stop(&mut stop) => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
            i = shared.endpoint.accept() => match i { Some(i) => i, None => return },
        };
        let addr = incoming.remote_address();
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            incoming.refuse();
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
        let shared = shared.clone();
        let events = events.clone();
        let routes = routes.clone();
        handshakes.spawn(async move {
            let result = accept_handshake(&shared, incoming, addr).await;
            drop(permit);
            match result {
                Ok((node, link)) => match routes.get(&node) {
                    Some(route) => {
                        debug!(peer = %node, %addr, "accepted link");
                        let _ = route.send(link).await;
                    }
                    None => refused(&events, node.to_string(), "no link for this node".into()),
                },
                Err((peer, reason)) => refused(&events, peer, reason),
            }
        });
    }
}

async fn accept_handshake(
    shared: &Shared,
    incoming: quinn::Incoming,
    addr: SocketAddr,
) -> Result<(NodeId, Link), (String, String)> {
    let timeout = shared.handshake_timeout;
    let work = async {
        let tls_failed = |e: &dyn std::fmt::Display| {
            (addr.to_string(), format!("[{}] QUIC/TLS handshake failed: {e}", refusal::CERTIFICATE))
        };
        let conn = incoming.accept().map_err(|e| tls_failed(&e))?.await.map_err(|e| tls_failed(&e))?;
        let authenticated = if shared.secure {
            match peer_node(shared, &conn) {
                Some(n) => Some(n),
                None => return Err(tls_failed(&"no node certificate")),
            }
        } else {
            None
        };
        let who = authenticated.as_ref().map_or_else(|| addr.to_string(), |n| n.to_string());
        let (mut tx, mut rx) =
            conn.accept_bi().await.map_err(|e| (who.clone(), format!("handshake failed: {e}")))?;
        let mut dec = FrameDecoder::handshake(shared.max_frame);
        let hello = match dec.read_frame::<(), _>(&mut Source(&mut rx)).await {
            Ok(Ok(Some(Frame::Hello(h)))) => h,
            Ok(Ok(Some(other))) => {
                return Err((who, WireError::Unexpected { expected: "hello", got: other.kind() }.reason()));
            }
            Ok(Ok(None)) => return Err((who, "closed before its hello".into())),
            Ok(Err(e)) => return Err((who, e.reason())),
            Err(e) => return Err((who, e.to_string())),
        };
        let mut enc = FrameEncoder::new(shared.max_frame);
        if let Err(r) = hello.check(&shared.cfg, &shared.local, authenticated.as_ref()) {
            let reason = r.to_string();
            if enc.refuse(&reason).is_ok() {
                let _ = tx.write_all(enc.finish()).await;
                let _ = tx.finish();
                let _ = tokio::time::timeout(Duration::from_secs(1), tx.stopped()).await;
            }
            conn.close(VarInt::from_u32(1), b"refused");
            return Err((hello.node.to_string(), reason));
        }
        enc.hello(&shared.hello).map_err(|e| (who.clone(), e.to_string()))?;
        tx.write_all(enc.finish()).await.map_err(|e| (who, e.to_string()))?;
        Ok((hello.node, Link { conn, control_tx: tx, control_rx: rx }))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err((
            addr.to_string(),
            format!("[{}] no handshake within {timeout:?}", refusal::HANDSHAKE_TIMEOUT),
        )),
    }
}

enum DialError {
    Unreachable(String),
    Refused(String),
}

async fn dial(shared: &Shared, peer: &NodeId) -> Result<Link, DialError> {
    let Some(node) = shared.cfg.node(peer) else {
        return Err(DialError::Refused("not in the domain".into()));
    };
    let timeout = shared.handshake_timeout;
    let work = async {
        let addr = tokio::net::lookup_host(node.address.as_str())
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| DialError::Unreachable(format!("cannot resolve {}", node.address)))?;
        let name = if shared.secure {
            tls::server_name(&shared.cfg.domain.name, peer)
                .map_err(|e| DialError::Refused(e.to_string()))?
                .to_str()
                .into_owned()
        } else {
            "insecure.m2m".to_owned()
        };
        let connecting = shared
            .endpoint
            .connect_with(shared.client.clone(), addr, &name)
            .map_err(|e| DialError::Unreachable(format!("connect {addr}: {e}")))?;
        let conn = connecting.await.map_err(|e| match e {
            quinn::ConnectionError::TimedOut | quinn::ConnectionError::LocallyClosed => {
                DialError::Unreachable(format!("connect {addr}: {e}"))
            }
            e => DialError::Refused(format!("[{}] QUIC/TLS handshake failed: {e}", refusal::CERTIFICATE)),
        })?;
        let exchange = async {
            let (mut tx, mut rx) =
                conn.open_bi().await.map_err(|e| DialError::Refused(format!("handshake failed: {e}")))?;
            let mut enc = FrameEncoder::new(shared.max_frame);
            enc.hello(&shared.hello).map_err(|e| DialError::Refused(e.to_string()))?;
            tx.write_all(enc.finish())
                .await
                .map_err(|e| DialError::Refused(format!("handshake failed: {e}")))?;
            let mut dec = FrameDecoder::handshake(shared.max_frame);
            match dec.read_frame::<(), _>(&mut Source(&mut rx)).await {
                Ok(Ok(Some(Frame::Hello(h)))) => {
                    if &h.node != peer {
                        return Err(DialError::Refused(format!(
                            "[{}] dialed `{peer}` at {}, but `{}` answered",
                            refusal::UNEXPECTED_PEER,
                            node.address,
                            h.node
                        )));
                    }
                    let auth = shared.secure.then_some(peer);
                    h.check(&shared.cfg, &shared.local, auth)
                        .map_err(|r| DialError::Refused(r.to_string()))?;
                    Ok(Link { conn: conn.clone(), control_tx: tx, control_rx: rx })
                }
                Ok(Ok(Some(Frame::Refuse(reason)))) => {
                    Err(DialError::Refused(format!("refused by the peer: {reason}")))
                }
                Ok(Ok(Some(other))) => Err(DialError::Refused(
                    WireError::Unexpected { expected: "hello", got: other.kind() }.reason(),
                )),
                Ok(Ok(None)) => {
                    Err(DialError::Refused("the peer closed the stream during the handshake".into()))
                }
                Ok(Err(e)) => Err(DialError::Refused(format!("handshake failed: {}", e.reason()))),
                Err(e) => Err(DialError::Refused(format!("handshake failed: {e}"))),
            }
        };
        exchange.await.map_err(|e| match conn.close_reason() {
            // In TLS 1.3 the acceptor checks our certificate after our side of the TLS
            // handshake is done: its verdict closes the connection with a crypto error.
            Some(why) if why.to_string().contains("cryptographic handshake") => DialError::Refused(format!(
                "[{}] the peer refused the TLS handshake: {why}",
                refusal::CERTIFICATE
            )),
            _ => e,
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(DialError::Unreachable(format!("no handshake within {timeout:?}"))),
    }
}

enum LinkEnd {
    Stop,
    Failed,
    Replaced(Link),
}

async fn peer_task<M: WireMessage>(
    shared: Arc<Shared>,
    peer: NodeId,
    dials: bool,
    queues: Vec<SharedQueue<M>>,
    mut links: mpsc::Receiver<Link>,
    events: mpsc::Sender<TransportEvent<M>>,
) {
    let mut stop = shared.shutdown.clone();
    let mut backoff = Backoff::new(shared.reconnect_min, shared.reconnect_max);
    let mut next: Option<Link> = None;
    loop {
        let link = match next.take() {
            Some(l) => l,
            None if dials => {
                let r = tokio::select! {
                    _ = wait_stop(&mut stop) => return,
                    Some(l) = links.recv() => Ok(l),
                    r = dial(&shared, &peer) => r,
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
        let end = run_link(&shared, &peer, link, &queues, &mut links, &events).await;
        info!(%peer, "m2m link down");
        let _ = events.send(TransportEvent::Disconnected(peer.clone())).await;
        match end {
            LinkEnd::Stop => return,
            LinkEnd::Failed => {
                if dials {
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

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The stream index for a message: 0 = control, 1..=DATA_STREAMS by key.
fn stream_index(key: Option<u64>) -> usize {
    match key {
        None => 0,
        Some(k) => 1 + (k % DATA_STREAMS as u64) as usize,
    }
}

/// Writes one stream: takes what its queue holds (one Batch frame, one write), until the link
/// ends. At shutdown, writes what is left, finishes the stream and waits until the peer has
/// acknowledged all of it.
async fn stream_writer<M: WireMessage>(
    conn: Connection,
    mut stream: Option<SendStream>,
    queue: SharedQueue<M>,
    peer: NodeId,
    max_frame: usize,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut queue = queue.lock().await;
    let mut enc = FrameEncoder::new(max_frame);
    loop {
        let first = tokio::select! {
            biased;
            _ = wait_stop(&mut stop) => None,
            m = queue.recv() => match m { Some(m) => Some(m), None => return Ok(()) },
        };
        enc.clear();
        let stopping = first.is_none();
        if let Some(m) = first {
            encode(&mut enc, &peer, &m);
            if queue.is_empty() {
                // Let producers that are mid-burst add to this batch before it is written.
                tokio::task::yield_now().await;
            }
        }
        while stopping || enc.len() < WRITE_BATCH_BYTES {
            match queue.try_recv() {
                Ok(m) => encode(&mut enc, &peer, &m),
                Err(_) => break,
            }
        }
        if !enc.is_empty() {
            if stream.is_none() {
                stream = Some(conn.open_uni().await.map_err(|e| e.to_string())?);
            }
            if let Some(s) = stream.as_mut() {
                s.write_all(enc.finish()).await.map_err(|e| e.to_string())?;
            }
        }
        if stopping {
            if let Some(mut s) = stream.take() {
                let _ = s.finish();
                let _ = s.stopped().await;
            }
            return Ok(());
        }
    }
}

async fn run_link<M: WireMessage>(
    shared: &Arc<Shared>,
    peer: &NodeId,
    link: Link,
    queues: &[SharedQueue<M>],
    links: &mut mpsc::Receiver<Link>,
    events: &mpsc::Sender<TransportEvent<M>>,
) -> LinkEnd {
    let Link { conn, control_tx, control_rx } = link;
    // Control traffic (heartbeats) goes out before data waiting on the connection.
    if let Err(e) = control_tx.set_priority(CONTROL_PRIORITY) {
        debug!(%peer, error = %e, "cannot raise the control stream's priority");
    }
    let mut reader = AbortOnDrop(tokio::spawn(read_link(
        conn.clone(),
        control_rx,
        peer.clone(),
        events.clone(),
        shared.clone(),
    )));
    // Dropping the set (link down, replaced) aborts the writers and frees their queues.
    let mut writers = JoinSet::new();
    let mut control = Some(control_tx);
    for q in queues {
        writers.spawn(stream_writer(
            conn.clone(),
            control.take(),
            q.clone(),
            peer.clone(),
            shared.max_frame,
            shared.shutdown.clone(),
        ));
    }
    let mut stop = shared.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            _ = wait_stop(&mut stop) => {
                // The writers flush on their own; give them the grace period.
                let all = async { while writers.join_next().await.is_some() {} };
                if tokio::time::timeout(shared.grace, all).await.is_err() {
                    debug!(%peer, "flush at shutdown: grace elapsed");
                }
                conn.close(VarInt::from_u32(0), b"shutdown");
                return LinkEnd::Stop;
            }
            _ = &mut reader.0 => {
                conn.close(VarInt::from_u32(2), b"link failed");
                return LinkEnd::Failed;
            }
            Some(r) = writers.join_next() => {
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

fn encode<M: WireMessage>(enc: &mut FrameEncoder, peer: &NodeId, m: &M) {
    if let Err(e) = enc.push(m) {
        warn!(%peer, error = %e, "message dropped: cannot be framed");
    }
}

/// Reads the control stream and every data stream the peer opens, until the connection ends
/// or a stream breaks the framing rules (which closes the connection).
async fn read_link<M: WireMessage>(
    conn: Connection,
    control: RecvStream,
    peer: NodeId,
    events: mpsc::Sender<TransportEvent<M>>,
    shared: Arc<Shared>,
) {
    let mut streams = JoinSet::new();
    streams.spawn(read_stream(control, peer.clone(), events.clone(), shared.clone()));
    loop {
        tokio::select! {
            s = conn.accept_uni() => match s {
                Ok(s) => {
                    streams.spawn(read_stream(s, peer.clone(), events.clone(), shared.clone()));
                }
                Err(e) => {
                    // Streams already received stay readable on a closed connection: drain
                    // them, so a peer that flushed and closed loses nothing.
                    debug!(%peer, error = %e, "connection ended; draining its streams");
                    while let Some(r) = streams.join_next().await {
                        if let Ok(Err(reason)) = r {
                            refused(&events, peer.to_string(), reason);
                        }
                    }
                    return;
                }
            },
            Some(r) = streams.join_next() => {
                if let Ok(Err(reason)) = r {
                    refused(&events, peer.to_string(), reason);
                    conn.close(VarInt::from_u32(4), b"framing");
                    return;
                }
            }
        }
    }
}

/// Reads one stream to its end; `Err(reason)` on a framing error.
async fn read_stream<M: WireMessage>(
    mut rx: RecvStream,
    peer: NodeId,
    events: mpsc::Sender<TransportEvent<M>>,
    shared: Arc<Shared>,
) -> Result<(), String> {
    let mut dec = FrameDecoder::new(shared.max_frame);
    loop {
        match dec.read_frame::<M, _>(&mut Source(&mut rx)).await {
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(Frame::Batch(mut msgs)))) => {
                // One event for every batch this read brought: one channel operation.
                dec.take_buffered_batches(&mut msgs, DELIVER_BATCH);
                if msgs.is_empty() {
                    continue;
                }
                if !deliver(&events, &shared.credit, shared.event_capacity, &peer, msgs).await {
                    return Ok(());
                }
            }
            Ok(Ok(Some(other))) => {
                return Err(WireError::Unexpected { expected: "batch", got: other.kind() }.reason());
            }
            Ok(Err(e)) => return Err(e.reason()),
            Err(e) => {
                debug!(%peer, error = %e, "stream read failed");
                return Ok(());
            }
        }
    }
}
