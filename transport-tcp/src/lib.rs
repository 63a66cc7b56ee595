//! m2m transport over TCP, with mutual TLS 1.3 (tokio + tokio-rustls, ring provider).
//!
//! [`TcpTransport`] implements [`Transport`]: one logical link per peer, the node whose name
//! sorts first dials ([`TransportSettings::dials`]), reconnects with jittered exponential
//! backoff, bounded per-peer queues, a cap on connections in their handshake and a handshake
//! timeout, and a `shutdown` that flushes what is queued. Frames use the shared codec
//! ([`replication_core::wire`]); when a peer's queue holds several messages they go out as one
//! Batch frame in one write and one flush.
//!
//! Each peer has two queues: control messages (`ordering_key() == None`) in a small one, keyed
//! messages in the data queue. The writer takes control messages first, whenever it starts a
//! write and before each further message it adds to that write, so a heartbeat waits for at
//! most one write already under way, never for the data backlog.
//!
//! ```no_run
//! use std::sync::Arc;
//! use replication_core::transport::{Security, Transport, TransportEvent, TransportSettings};
//! use replication_core::{DomainConfig, Message, NodeId, tls};
//! use transport_tcp::TcpTransport;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let (cfg, _) = DomainConfig::load(&std::fs::read_to_string("web.toml")?, "web.toml")?;
//! let me = NodeId::new("app1");
//! let pem = tls::load_node(std::path::Path::new("certs"), &me)?;
//! let settings = TransportSettings::new(Arc::new(cfg), me, Security::Tls(pem));
//! let t: TcpTransport<Message> = TcpTransport::start(settings).await?;
//! t.try_send(&NodeId::new("app2"), Message::Heartbeat { incarnation: 1 })?;
//! while let Some(ev) = t.recv().await {
//!     if let TransportEvent::Messages { from, msgs } = ev {
//!         for msg in msgs {
//!             println!("{from}: {msg:?}");
//!         }
//!     }
//! }
//! t.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use replication_core::config::DomainConfig;
use replication_core::transport::{
    Backoff, DELIVER_BATCH, Security, Transport, TransportEvent, TransportSettings, WireMessage, deliver,
};
use replication_core::wire::{ByteSource, Frame, FrameDecoder, FrameEncoder, Hello, WireError, refusal};
use replication_core::{NodeId, tls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Errors of [`TcpTransport::start`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid settings, unreadable certificates or TLS configuration (from the core).
    #[error(transparent)]
    Core(#[from] replication_core::Error),
    /// The listener could not be bound or adopted.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the domain file, or `pre-bound listener`.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Bytes a writer gathers into one write before writing (it never waits to gather more).
const WRITE_BATCH_BYTES: usize = 256 * 1024;

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type Stream = Box<dyn Io>;

struct Shared {
    cfg: Arc<DomainConfig>,
    local: NodeId,
    hello: Hello,
    tls: Option<(tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector)>,
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

struct Peer<M> {
    /// Keyed messages, in the order sent.
    queue: mpsc::Sender<M>,
    /// Control messages (`ordering_key() == None`), served before `queue`.
    control: mpsc::Sender<M>,
    links: mpsc::Sender<Stream>,
}

impl<M> Peer<M> {
    fn queue_for(&self, msg: &M) -> &mpsc::Sender<M>
    where
        M: WireMessage,
    {
        if msg.ordering_key().is_none() { &self.control } else { &self.queue }
    }
}

/// The receiving ends of a peer's queues.
struct Queues<M> {
    data: mpsc::Receiver<M>,
    control: mpsc::Receiver<M>,
}

impl<M> Queues<M> {
    /// A queued message without waiting, control first.
    fn try_next(&mut self) -> Option<M> {
        self.control.try_recv().or_else(|_| self.data.try_recv()).ok()
    }
}

/// A [`Transport`] over TCP (mutual TLS 1.3, or plain TCP with [`Security::Insecure`]).
pub struct TcpTransport<M: WireMessage> {
    shared: Arc<Shared>,
    peers: HashMap<NodeId, Peer<M>>,
    events: tokio::sync::Mutex<mpsc::Receiver<TransportEvent<M>>>,
    stop: watch::Sender<bool>,
    /// Stops the accept loop, which `shutdown` ends before the links (see there).
    stop_accepting: watch::Sender<bool>,
    accepting: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: AtomicBool,
    tasks: std::sync::Mutex<Option<JoinSet<()>>>,
    local_addr: SocketAddr,
}

impl<M: WireMessage> TcpTransport<M> {
    /// Binds (or adopts `settings.tcp_listener`), starts accepting, and starts a link task per
    /// peer of the domain. Must be called inside a tokio runtime.
    pub async fn start(mut settings: TransportSettings) -> Result<Self, Error> {
        settings.check()?;
        let cfg = settings.domain.clone();
        let local = settings.local.clone();
        let hello = Hello::for_node(&cfg, &local)
            .ok_or_else(|| replication_core::Error::Settings(format!("`{local}` is not in the domain")))?;
        let tls = match &settings.security {
            Security::Tls(pem) => {
                let server = tls::server_config(&cfg, &local, pem)?;
                let client = tls::client_config(&cfg, &local, pem)?;
                Some((tokio_rustls::TlsAcceptor::from(server), tokio_rustls::TlsConnector::from(client)))
            }
            Security::Insecure => {
                warn!(node = %local, "m2m tcp transport is INSECURE: no authentication, no encryption; loopback demos only");
                None
            }
        };
        let listener = match settings.tcp_listener.take() {
            Some(l) => {
                let bind = |source| Error::Bind { addr: "pre-bound listener".into(), source };
                l.set_nonblocking(true).map_err(bind)?;
                TcpListener::from_std(l).map_err(bind)?
            }
            None => {
                let addr = cfg.node(&local).map(|n| n.address.to_string()).unwrap_or_default();
                TcpListener::bind(&addr).await.map_err(|source| Error::Bind { addr, source })?
            }
        };
        let local_addr =
            listener.local_addr().map_err(|source| Error::Bind { addr: "listener".into(), source })?;
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            local: local.clone(),
            hello,
            tls,
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
        for n in cfg.nodes.iter().filter(|n| n.name != local) {
            let (queue, data) = mpsc::channel(settings.queue_capacity);
            let (control, control_rx) = mpsc::channel(settings.control_queue_capacity);
            let (links, links_rx) = mpsc::channel(4);
            let dials = settings.dials(&n.name);
            let queues = Queues { data, control: control_rx };
            tasks.spawn(peer_task(shared.clone(), n.name.clone(), dials, queues, links_rx, ev_tx.clone()));
            peers.insert(n.name.clone(), Peer { queue, control, links });
        }
        let routes: HashMap<NodeId, mpsc::Sender<Stream>> =
            peers.iter().map(|(k, p): (&NodeId, &Peer<M>)| (k.clone(), p.links.clone())).collect();
        let sem = Arc::new(Semaphore::new(settings.max_unauthenticated));
        let (stop_accepting, accept_stop) = watch::channel(false);
        let accepting = tokio::spawn(accept_loop(shared.clone(), listener, accept_stop, sem, routes, ev_tx));
        info!(node = %local, addr = %local_addr, "m2m tcp transport listening");
        Ok(TcpTransport {
            shared,
            peers,
            events: tokio::sync::Mutex::new(ev_rx),
            stop,
            stop_accepting,
            accepting: std::sync::Mutex::new(Some(accepting)),
            closed: AtomicBool::new(false),
            tasks: std::sync::Mutex::new(Some(tasks)),
            local_addr,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn peer(&self, to: &NodeId) -> Result<&Peer<M>, replication_core::Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(replication_core::Error::Closed);
        }
        self.peers.get(to).ok_or_else(|| replication_core::Error::UnknownPeer { peer: to.to_string() })
    }
}

impl<M: WireMessage> Drop for TcpTransport<M> {
    fn drop(&mut self) {
        let _ = self.stop_accepting.send(true);
        let _ = self.stop.send(true);
    }
}

#[async_trait::async_trait]
impl<M: WireMessage> Transport<M> for TcpTransport<M> {
    fn local(&self) -> &NodeId {
        &self.shared.local
    }

    fn offer(&self, to: &NodeId, msg: M) -> Result<(), (replication_core::Error, M)> {
        let peer = match self.peer(to) {
            Ok(p) => p,
            Err(e) => return Err((e, msg)),
        };
        peer.queue_for(&msg).try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) => {
                (replication_core::Error::QueueFull { peer: to.to_string() }, m)
            }
            mpsc::error::TrySendError::Closed(m) => (replication_core::Error::Closed, m),
        })
    }

    async fn send(&self, to: &NodeId, msg: M) -> Result<(), replication_core::Error> {
        self.peer(to)?.queue_for(&msg).send(msg).await.map_err(|_| replication_core::Error::Closed)
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
        // The listener closes before the links do: a peer that sees its link close probes the
        // address at once (closed-link detection) and must find nothing listening, as after
        // a crash.
        let _ = self.stop_accepting.send(true);
        let accepting = self.accepting.lock().ok().and_then(|mut a| a.take());
        if let Some(accepting) = accepting {
            let _ = accepting.await;
        }
        let _ = self.stop.send(true);
        let tasks = self.tasks.lock().ok().and_then(|mut t| t.take());
        if let Some(mut tasks) = tasks {
            let all = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(self.shared.grace + Duration::from_millis(500), all).await.is_err() {
                warn!(node = %self.shared.local, "shutdown grace elapsed; aborting the remaining links");
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
    }
}

async fn wait_stop(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

fn refused<M>(events: &mpsc::Sender<TransportEvent<M>>, peer: String, reason: String) {
    warn!(%peer, %reason, "m2m connection refused");
    // Never block on a refusal: a flood of bad connections must not stall the transport.
    let _ = events.try_send(TransportEvent::Refused { peer, reason });
}

/// A stream as the frame decoder's byte source.
struct Source<'a, R>(&'a mut R);

impl<R: AsyncRead + Unpin + Send> ByteSource for Source<'_, R> {
    type Error = std::io::Error;
    async fn read_into(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).await
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

async fn accept_loop<M: WireMessage>(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    sem: Arc<Semaphore>,
    routes: HashMap<NodeId, mpsc::Sender<Stream>>,
    events: mpsc::Sender<TransportEvent<M>>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        let (tcp, addr) = tokio::select! {
            _ = wait_stop(&mut stop) => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            refused(
                &events,
                addr.to_string(),
                format!(
                    "[{}] too many connections are in their handshake",
                    refusal::TOO_MANY_UNAUTHENTICATED
                ),
            );
            continue; // dropping `tcp` closes it
        };
        let shared = shared.clone();
        let events = events.clone();
        let routes = routes.clone();
        handshakes.spawn(async move {
            // A connection closed before its first byte is a peer's probe
            // (`peer_process_gone`) or a port check, not a refused handshake.
            let deadline = tokio::time::Instant::now() + shared.handshake_timeout;
            let first = tokio::time::timeout_at(deadline, tcp.peek(&mut [0u8; 1])).await;
            if matches!(first, Ok(Ok(0))) {
                debug!(%addr, "connection closed before its first byte (a probe)");
                return;
            }
            let result = accept_handshake(&shared, tcp, addr, deadline).await;
            drop(permit);
            match result {
                Ok((node, stream)) => match routes.get(&node) {
                    Some(route) => {
                        debug!(peer = %node, %addr, "accepted link");
                        let _ = route.send(stream).await;
                    }
                    None => refused(&events, node.to_string(), "no link for this node".into()),
                },
                Err((peer, reason)) => refused(&events, peer, reason),
            }
        });
    }
}

/// The acceptor's side of the handshake: TLS, then the Hello exchange, all under the
/// handshake timeout. On failure: (who, why).
async fn accept_handshake(
    shared: &Shared,
    tcp: TcpStream,
    addr: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<(NodeId, Stream), (String, String)> {
    let timeout = shared.handshake_timeout;
    let work = async {
        let _ = tcp.set_nodelay(true);
        let (mut stream, authenticated): (Stream, Option<NodeId>) = match &shared.tls {
            Some((acceptor, _)) => {
                let s = acceptor.accept(tcp).await.map_err(|e| {
                    (addr.to_string(), format!("[{}] TLS handshake failed: {e}", refusal::CERTIFICATE))
                })?;
                let id = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| tls::peer_node(&shared.cfg, c));
                let Some(id) = id else {
                    return Err((
                        addr.to_string(),
                        format!("[{}] no node certificate", refusal::CERTIFICATE),
                    ));
                };
                (Box::new(s), Some(id))
            }
            None => (Box::new(tcp), None),
        };
        let who = authenticated.as_ref().map_or_else(|| addr.to_string(), |n| n.to_string());
        let mut dec = FrameDecoder::handshake(shared.max_frame);
        let hello = match dec.read_frame::<(), _>(&mut Source(&mut stream)).await {
            Ok(Ok(Some(Frame::Hello(h)))) => h,
            Ok(Ok(Some(other))) => {
                let e = WireError::Unexpected { expected: "hello", got: other.kind() };
                return Err((who, e.reason()));
            }
            Ok(Ok(None)) => return Err((who, "closed before its hello".into())),
            Ok(Err(e)) => return Err((who, e.reason())),
            Err(e) => return Err((who, e.to_string())),
        };
        let mut enc = FrameEncoder::new(shared.max_frame);
        if let Err(r) = hello.check(&shared.cfg, &shared.local, authenticated.as_ref()) {
            let reason = r.to_string();
            if enc.refuse(&reason).is_ok() {
                let _ = write_frames(&mut stream, enc.finish()).await;
                let _ = stream.shutdown().await;
            }
            return Err((hello.node.to_string(), reason));
        }
        enc.hello(&shared.hello).map_err(|e| (who.clone(), e.to_string()))?;
        write_frames(&mut stream, enc.finish()).await.map_err(|e| (who, e.to_string()))?;
        Ok((hello.node, stream))
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err((
            addr.to_string(),
            format!("[{}] no handshake within {timeout:?}", refusal::HANDSHAKE_TIMEOUT),
        )),
    }
}

enum DialError {
    /// Could not reach the peer (down, restarting): retry quietly.
    Unreachable(String),
    /// The peer was reached and the link refused, by either side.
    Refused(String),
}

/// The dialer's side: TCP connect, TLS naming the peer, Hello exchange.
async fn dial(shared: &Shared, peer: &NodeId) -> Result<Stream, DialError> {
    let Some(node) = shared.cfg.node(peer) else {
        return Err(DialError::Refused("not in the domain".into()));
    };
    let timeout = shared.handshake_timeout;
    let work = async {
        let tcp = TcpStream::connect(node.address.as_str())
            .await
            .map_err(|e| DialError::Unreachable(format!("connect {}: {e}", node.address)))?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Stream = match &shared.tls {
            Some((_, connector)) => {
                let name = tls::server_name(&shared.cfg.domain.name, peer)
                    .map_err(|e| DialError::Refused(e.to_string()))?;
                Box::new(connector.connect(name, tcp).await.map_err(|e| {
                    DialError::Refused(format!("[{}] TLS handshake failed: {e}", refusal::CERTIFICATE))
                })?)
            }
            None => Box::new(tcp),
        };
        let mut enc = FrameEncoder::new(shared.max_frame);
        enc.hello(&shared.hello).map_err(|e| DialError::Refused(e.to_string()))?;
        write_frames(&mut stream, enc.finish())
            .await
            .map_err(|e| DialError::Refused(format!("handshake failed: {e}")))?;
        let mut dec = FrameDecoder::handshake(shared.max_frame);
        match dec.read_frame::<(), _>(&mut Source(&mut stream)).await {
            Ok(Ok(Some(Frame::Hello(h)))) => {
                if &h.node != peer {
                    return Err(DialError::Refused(format!(
                        "[{}] dialed `{peer}` at {}, but `{}` answered",
                        refusal::UNEXPECTED_PEER,
                        node.address,
                        h.node
                    )));
                }
                let auth = shared.tls.as_ref().map(|_| peer);
                h.check(&shared.cfg, &shared.local, auth).map_err(|r| DialError::Refused(r.to_string()))?;
                Ok(stream)
            }
            Ok(Ok(Some(Frame::Refuse(reason)))) => {
                Err(DialError::Refused(format!("refused by the peer: {reason}")))
            }
            Ok(Ok(Some(other))) => Err(DialError::Refused(
                WireError::Unexpected { expected: "hello", got: other.kind() }.reason(),
            )),
            Ok(Ok(None)) => {
                Err(DialError::Refused("the peer closed the connection during the handshake".into()))
            }
            Ok(Err(e)) => Err(DialError::Refused(format!("handshake failed: {}", e.reason()))),
            // In TLS 1.3 the acceptor checks our certificate after our side of the TLS
            // handshake is done: its verdict arrives as an alert on the first read.
            Err(e) if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => Err(DialError::Refused(
                format!("[{}] the peer refused the TLS handshake: {e}", refusal::CERTIFICATE),
            )),
            Err(e) => Err(DialError::Refused(format!("handshake failed: {e}"))),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(DialError::Unreachable(format!("no handshake within {timeout:?}"))),
    }
}

/// Whether the peer's process is gone, asked right after its link closed without a leave:
/// its address refuses a TCP connection (nothing listens there), or the connection is reset
/// before any byte (the listener of a process that is exiting, whose kernel resets what it
/// had not accepted yet when the listener closes: a SIGKILL closes the established link and
/// the listener moments apart). A connection that stays open means a live listener (it is
/// closed before any byte, which the acceptor takes as a probe); no answer within the
/// handshake timeout (a host down, a partition) is not taken as gone: the failure timeout
/// decides then.
async fn peer_process_gone(shared: &Shared, peer: &NodeId) -> bool {
    let Some(node) = shared.cfg.node(peer) else { return false };
    address_gone(node.address.as_str(), shared.handshake_timeout).await
}

/// How long a probe's connection waits for a reset (see `peer_process_gone`).
const PROBE_RESET_WAIT: Duration = Duration::from_millis(250);

/// Whether a TCP connection to `address` is refused within `timeout`, or reset within
/// [`PROBE_RESET_WAIT`] after it opened without a byte sent.
async fn address_gone(address: &str, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(Ok(mut tcp)) => {
            let mut byte = [0u8; 1];
            matches!(
                tokio::time::timeout(PROBE_RESET_WAIT, tcp.read(&mut byte)).await,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset
            )
        }
        Err(_) => false,
    }
}

enum LinkEnd {
    Stop,
    Failed,
    Replaced(Stream),
}

async fn peer_task<M: WireMessage>(
    shared: Arc<Shared>,
    peer: NodeId,
    dials: bool,
    mut queues: Queues<M>,
    mut links: mpsc::Receiver<Stream>,
    events: mpsc::Sender<TransportEvent<M>>,
) {
    let mut stop = shared.shutdown.clone();
    let mut backoff = Backoff::new(shared.reconnect_min, shared.reconnect_max);
    let mut enc = FrameEncoder::new(shared.max_frame);
    let mut next: Option<Stream> = None;
    loop {
        let stream = match next.take() {
            Some(s) => s,
            None if dials => {
                let r = tokio::select! {
                    _ = wait_stop(&mut stop) => return,
                    Some(s) = links.recv() => Ok(s),
                    r = dial(&shared, &peer) => r,
                };
                match r {
                    Ok(s) => s,
                    Err(e) => {
                        match e {
                            DialError::Unreachable(why) => debug!(%peer, %why, "peer unreachable"),
                            DialError::Refused(why) => refused(&events, peer.to_string(), why),
                        }
                        let delay = backoff.next_delay();
                        tokio::select! {
                            _ = wait_stop(&mut stop) => return,
                            Some(s) = links.recv() => next = Some(s),
                            _ = tokio::time::sleep(delay) => {}
                        }
                        continue;
                    }
                }
            }
            None => tokio::select! {
                _ = wait_stop(&mut stop) => return,
                s = links.recv() => match s { Some(s) => s, None => return },
            },
        };
        backoff.reset();
        info!(%peer, "m2m link up");
        if events.send(TransportEvent::Connected(peer.clone())).await.is_err() {
            return;
        }
        let end = run_link(&shared, &peer, stream, &mut queues, &mut links, &events, &mut enc).await;
        info!(%peer, "m2m link down");
        let _ = events.send(TransportEvent::Disconnected(peer.clone())).await;
        match end {
            LinkEnd::Stop => return,
            LinkEnd::Failed => {
                if shared.cfg.domain.closed_link_detection {
                    let gone = tokio::select! {
                        _ = wait_stop(&mut stop) => return,
                        Some(s) = links.recv() => {
                            next = Some(s);
                            false
                        }
                        gone = peer_process_gone(&shared, &peer) => gone,
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
                        Some(s) = links.recv() => next = Some(s),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
            LinkEnd::Replaced(s) => next = Some(s),
        }
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_link<M: WireMessage>(
    shared: &Arc<Shared>,
    peer: &NodeId,
    stream: Stream,
    queues: &mut Queues<M>,
    links: &mut mpsc::Receiver<Stream>,
    events: &mpsc::Sender<TransportEvent<M>>,
    enc: &mut FrameEncoder,
) -> LinkEnd {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = AbortOnDrop(tokio::spawn(read_loop(rd, peer.clone(), events.clone(), shared.clone())));
    let mut stop = shared.shutdown.clone();
    loop {
        let first = tokio::select! {
            biased;
            _ = wait_stop(&mut stop) => {
                let flush = async {
                    enc.clear();
                    while let Some(m) = queues.try_next() {
                        encode(enc, peer, &m);
                    }
                    if !enc.is_empty() {
                        write_frames(&mut wr, enc.finish()).await?;
                    }
                    wr.shutdown().await?;
                    // Wait for the peer to close its side, so nothing we sent is reset.
                    let _ = (&mut reader.0).await;
                    Ok::<_, std::io::Error>(())
                };
                if let Err(e) = tokio::time::timeout(shared.grace, flush).await.unwrap_or_else(|_| {
                    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "shutdown grace elapsed"))
                }) {
                    debug!(%peer, error = %e, "flush at shutdown incomplete");
                }
                return LinkEnd::Stop;
            }
            _ = &mut reader.0 => return LinkEnd::Failed,
            Some(s) = links.recv() => {
                debug!(%peer, "a new connection replaces the link");
                return LinkEnd::Replaced(s);
            }
            // Control before data (the select is biased).
            m = queues.control.recv() => m,
            m = queues.data.recv() => m,
        };
        let Some(first) = first else { return LinkEnd::Stop };
        if let Err(end) = write_batch(&mut wr, enc, peer, queues, first).await {
            return end;
        }
    }
}

/// Writes `first` and what else is queued (control first, up to [`WRITE_BATCH_BYTES`]) in
/// one write.
async fn write_batch<M: WireMessage, W: AsyncWrite + Unpin>(
    wr: &mut W,
    enc: &mut FrameEncoder,
    peer: &NodeId,
    queues: &mut Queues<M>,
    first: M,
) -> Result<(), LinkEnd> {
    enc.clear();
    encode(enc, peer, &first);
    while enc.len() < WRITE_BATCH_BYTES {
        match queues.try_next() {
            Some(m) => encode(enc, peer, &m),
            None => break,
        }
    }
    if enc.is_empty() {
        return Ok(());
    }
    if let Err(e) = write_frames(wr, enc.finish()).await {
        debug!(%peer, error = %e, "write failed");
        return Err(LinkEnd::Failed);
    }
    Ok(())
}

fn encode<M: WireMessage>(enc: &mut FrameEncoder, peer: &NodeId, m: &M) {
    if let Err(e) = enc.push(m) {
        warn!(%peer, error = %e, "message dropped: cannot be framed");
    }
}

async fn read_loop<M: WireMessage, R: AsyncRead + Unpin + Send>(
    mut rd: R,
    peer: NodeId,
    events: mpsc::Sender<TransportEvent<M>>,
    shared: Arc<Shared>,
) {
    let mut dec = FrameDecoder::new(shared.max_frame);
    loop {
        match dec.read_frame::<M, _>(&mut Source(&mut rd)).await {
            Ok(Ok(None)) => return,
            Ok(Ok(Some(Frame::Batch(mut msgs)))) => {
                // One event for every batch this read brought: one channel operation.
                dec.take_buffered_batches(&mut msgs, DELIVER_BATCH);
                if msgs.is_empty() {
                    continue;
                }
                if !deliver(&events, &shared.credit, shared.event_capacity, &peer, msgs).await {
                    return;
                }
            }
            Ok(Ok(Some(other))) => {
                let e = WireError::Unexpected { expected: "batch", got: other.kind() };
                refused(&events, peer.to_string(), e.reason());
                return;
            }
            Ok(Err(e)) => {
                refused(&events, peer.to_string(), e.reason());
                return;
            }
            Err(e) => {
                debug!(%peer, error = %e, "read failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_is_gone_only_when_nothing_listens_or_the_listener_closes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        assert!(!address_gone(&addr, Duration::from_secs(5)).await, "a listener that stays");
        // The probe's connection waits in the backlog (nothing accepts it) and the listener
        // closes, as in a process being killed: the kernel resets the connection.
        let probe = tokio::spawn({
            let addr = addr.clone();
            async move { address_gone(&addr, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(listener);
        assert!(probe.await.expect("probe"), "the listener closed with the probe in its backlog");
        assert!(address_gone(&addr, Duration::from_secs(5)).await, "nothing listens");
    }
}
