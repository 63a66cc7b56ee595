//! m2m transport over TCP, with mutual TLS 1.3 (tokio + tokio-rustls, ring provider).
//!
//! [`TcpTransport`] implements [`Transport`]: one logical link per peer, the node whose name
//! sorts first dials ([`TransportSettings::dials`]), reconnects with jittered exponential
//! backoff, bounded per-peer queues, fair handshake slots (reserved for each configured peer's
//! address; others share a capped pool, at most 8 per source address, and must send their
//! first byte within 2 s: [`replication_core::carrier::admission`]) and a handshake timeout,
//! and a `shutdown` that flushes what is queued. Frames use the shared codec
//! ([`replication_core::wire`]); when a peer's queue holds several messages they go out as one
//! Batch frame in one write and one flush.
//!
//! Each peer has two queues: control messages (`ordering_key() == None`) in a small one, keyed
//! messages in the data queue. The writer takes control messages first, whenever it starts a
//! write and before each further message it adds to that write, so a heartbeat waits for at
//! most one write already under way, never for the data backlog.
//!
//! What both transports share (the Hello exchange and its refusals, the per-peer task with
//! reconnect and back-off, the accept loop, the frame reader) is
//! [`replication_core::carrier`]; this crate holds what is TCP's own: the listener, TLS over
//! TCP, the link task that both reads and writes its stream (one task, the stream never split:
//! `link.rs`), and the probe that tells a peer's process is gone
//! ([`TransportEvent::Gone`]).
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
//! t.try_send(&NodeId::new("app2"), Message::Heartbeat { incarnation: 1, sent: 0, echo: None })?;
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

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use replication_core::carrier::accept::{self, Handshake};
use replication_core::carrier::admission::Admission;
use replication_core::carrier::handshake::{self, Deadlines, HelloStream, accept_within};
use replication_core::carrier::members::Members;
use replication_core::carrier::peer::Carrier;
use replication_core::carrier::{AppSide, Common, DialError, LinkEnd, refused, wait_stop};
use replication_core::transport::{
    Security, Transport, TransportEvent, TransportSettings, WireMessage, deliver,
};
use replication_core::wire::{FrameEncoder, refusal};
use replication_core::{DomainConfig, NodeId, tls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

mod link;

use link::{Delivery, LinkIo, Step, try_deliver};

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

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type Stream = Box<dyn Io>;

/// An established, authenticated link: its stream and the incarnation of the peer's run it
/// reaches (from that peer's Hello).
struct Link {
    stream: Stream,
    incarnation: u64,
}

impl HelloStream for Box<dyn Io + '_> {
    const NAME: &'static str = "connection";

    async fn close_refused(&mut self, sent: bool) {
        if sent {
            let _ = self.shutdown().await;
        }
    }

    fn read_failed(e: std::io::Error) -> DialError {
        // In TLS 1.3 the acceptor checks our certificate after our side of the TLS
        // handshake is done: its verdict arrives as an alert on the first read.
        if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
            DialError::certificate_refused(e)
        } else {
            DialError::Refused(format!("handshake failed: {e}"))
        }
    }
}

struct Shared {
    common: Common,
    tls: Option<(tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector)>,
}

struct Peer<M> {
    /// Keyed messages, in the order sent.
    queue: mpsc::Sender<M>,
    /// Control messages (`ordering_key() == None`), served before `queue`.
    control: mpsc::Sender<M>,
}

impl<M> Peer<M> {
    fn queue_for(&self, msg: &M) -> &mpsc::Sender<M>
    where
        M: WireMessage,
    {
        if msg.is_control() { &self.control } else { &self.queue }
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

/// What a peer's writer keeps from one link to the next: its queues and its encoder.
struct Writer<M> {
    queues: Queues<M>,
    enc: FrameEncoder,
}

/// The capacities of a new peer's queues and its encoder's frame limit.
#[derive(Clone, Copy)]
struct Sizes {
    queue: usize,
    control: usize,
    max_frame: usize,
}

impl Sizes {
    /// A new peer's sending and receiving sides.
    fn peer<M>(self) -> (Peer<M>, Writer<M>) {
        let (queue, data) = mpsc::channel(self.queue);
        let (control, control_rx) = mpsc::channel(self.control);
        let writer =
            Writer { queues: Queues { data, control: control_rx }, enc: FrameEncoder::new(self.max_frame) };
        (Peer { queue, control }, writer)
    }
}

/// A [`Transport`] over TCP (mutual TLS 1.3, or plain TCP with [`Security::Insecure`]).
pub struct TcpTransport<M: WireMessage> {
    shared: Arc<Shared>,
    peers: Members<Link, M, Peer<M>>,
    sizes: Sizes,
    app: AppSide<M>,
    /// Stops the accept loop, which `shutdown` ends before the links (see there).
    stop_accepting: watch::Sender<bool>,
    accepting: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    local_addr: SocketAddr,
}

impl<M: WireMessage> TcpTransport<M> {
    /// Binds (or adopts `settings.tcp_listener`), starts accepting, and starts a link task per
    /// peer of the domain. Must be called inside a tokio runtime.
    pub async fn start(mut settings: TransportSettings) -> Result<Self, Error> {
        let (common, stop) = Common::new(&settings)?;
        let cfg = settings.domain.clone();
        let local = settings.local.clone();
        let tls = match &settings.security {
            Security::Tls(pem) => {
                let server = tls::server_config_following(&common.cfg, &local, pem)?;
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
        let shared = Arc::new(Shared { common, tls });
        let (ev_tx, ev_rx) = mpsc::channel(settings.event_capacity);
        let app = AppSide::new(ev_rx, stop, JoinSet::new());
        let admission = Admission::for_domain(&cfg, &local, settings.max_unauthenticated).await;
        let peers = Members::new(admission, &ev_tx);
        let sizes = Sizes {
            queue: settings.queue_capacity,
            control: settings.control_queue_capacity,
            max_frame: settings.max_frame,
        };
        for n in cfg.nodes.iter().filter(|n| n.name != local) {
            let (peer, writer) = sizes.peer();
            peers.add(&shared, &app, n.name.clone(), peer, writer)?;
        }
        let (stop_accepting, accept_stop) = watch::channel(false);
        let handshake = {
            let shared = shared.clone();
            move |tcp, addr, deadlines| accept_connection(shared.clone(), tcp, addr, deadlines)
        };
        let accepting = tokio::spawn(accept::accept_loop::<_, _, M, _, _>(
            Incoming(listener),
            shared.clone(),
            accept_stop,
            peers.admission(),
            peers.routes(),
            ev_tx,
            handshake,
        ));
        info!(node = %local, addr = %local_addr, "m2m tcp transport listening");
        Ok(TcpTransport {
            shared,
            peers,
            sizes,
            app,
            stop_accepting,
            accepting: std::sync::Mutex::new(Some(accepting)),
            local_addr,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The queue of `to` that `msg` goes to.
    fn queue(&self, to: &NodeId, msg: &M) -> Result<mpsc::Sender<M>, replication_core::Error> {
        self.app.check_open()?;
        let peers = self.peers.read();
        let peer = peers.get(to).ok_or_else(|| unknown(to))?;
        Ok(peer.queue_for(msg).clone())
    }
}

impl<M: WireMessage> Drop for TcpTransport<M> {
    fn drop(&mut self) {
        // The links stop when `app` is dropped, right after.
        let _ = self.stop_accepting.send(true);
    }
}

#[async_trait::async_trait]
impl<M: WireMessage> Transport<M> for TcpTransport<M> {
    fn local(&self) -> &NodeId {
        &self.shared.common.local
    }

    fn offer(&self, to: &NodeId, msg: M) -> Result<(), (replication_core::Error, M)> {
        if let Err(e) = self.app.check_open() {
            return Err((e, msg));
        }
        let peers = self.peers.read();
        let Some(peer) = peers.get(to) else { return Err((unknown(to), msg)) };
        replication_core::carrier::offer(peer.queue_for(&msg), to, msg)
    }

    async fn send(&self, to: &NodeId, msg: M) -> Result<(), replication_core::Error> {
        self.queue(to, &msg)?.send(msg).await.map_err(|_| replication_core::Error::Closed)
    }

    fn add_peers(&self, domain: Arc<DomainConfig>) -> Result<(), replication_core::Error> {
        let sizes = self.sizes;
        self.peers.add_peers(&self.shared, &self.app, domain, || sizes.peer())
    }

    async fn recv(&self) -> Option<TransportEvent<M>> {
        self.app.recv(&self.shared.common).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent<M>>> {
        self.app.poll_recv(cx, &self.shared.common)
    }

    async fn shutdown(&self) {
        self.app.close();
        // The listener closes before the links do: a peer that sees its link close probes the
        // address at once (closed-link detection) and must find nothing listening, as after
        // a crash.
        let _ = self.stop_accepting.send(true);
        let accepting = self.accepting.lock().ok().and_then(|mut a| a.take());
        if let Some(accepting) = accepting {
            let _ = accepting.await;
        }
        let common = &self.shared.common;
        self.app.stop_and_join(common.grace, &common.local).await;
    }
}

fn unknown(to: &NodeId) -> replication_core::Error {
    replication_core::Error::UnknownPeer { peer: to.to_string() }
}

/// The TCP listener as the accept loop's source of connections.
struct Incoming(TcpListener);

impl accept::Listener for Incoming {
    type Conn = TcpStream;

    async fn accept(&self) -> Option<std::io::Result<(TcpStream, SocketAddr)>> {
        Some(self.0.accept().await)
    }
}

/// One accepted connection: `None` for a probe, else its handshake. Its first byte (of a
/// TLS ClientHello, or of a Hello without TLS) must come by the start deadline.
async fn accept_connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    addr: SocketAddr,
    deadlines: Deadlines,
) -> Handshake<Link> {
    // A connection closed before its first byte is a peer's probe
    // (`peer_process_gone`) or a port check, not a refused handshake.
    match deadlines.started(addr, async { Ok(tcp.peek(&mut [0u8; 1]).await) }).await {
        Ok(Ok(0)) => {
            debug!(%addr, "connection closed before its first byte (a probe)");
            return None;
        }
        Err(refusal) => return Some(Err(refusal)),
        Ok(_) => {}
    }
    Some(accept_handshake(&shared, tcp, addr, deadlines.end).await)
}

/// The acceptor's side of the handshake: TLS, then the Hello exchange, all under the
/// handshake timeout. On failure: (who, why).
async fn accept_handshake(
    shared: &Shared,
    tcp: TcpStream,
    addr: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<(NodeId, Link), (String, String)> {
    let common = &shared.common;
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
                    .and_then(|c| tls::peer_node(&common.cfg.load(), c));
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
        let who = handshake::who(authenticated.as_ref(), addr);
        let hello = handshake::accept_hello(common, &mut stream, authenticated.as_ref(), who).await?;
        Ok((hello.node, Link { stream, incarnation: hello.incarnation }))
    };
    accept_within(common, deadline, addr, work).await
}

/// How long a probe's connection waits for a reset (see `peer_process_gone`).
const PROBE_RESET_WAIT: Duration = Duration::from_millis(250);

/// Probes of a peer's address after its link closed, at most ([`Carrier::peer_process_gone`]).
const PROBES: usize = 3;

/// Time between two probes of a peer's address.
const PROBE_INTERVAL: Duration = Duration::from_millis(30);

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

impl<M: WireMessage> Carrier<M> for Shared {
    type Link = Link;
    type Queues = Writer<M>;
    const PROBES_GONE: bool = true;

    fn common(&self) -> &Common {
        &self.common
    }

    fn incarnation(link: &Link) -> u64 {
        link.incarnation
    }

    /// The dialer's side: TCP connect, TLS naming the peer, Hello exchange.
    async fn dial(&self, peer: &NodeId, address: &str) -> Result<Link, DialError> {
        let common = &self.common;
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| DialError::Unreachable(format!("connect {address}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Stream = match &self.tls {
            Some((_, connector)) => {
                let name = tls::server_name(&common.cfg.load().domain.name, peer)
                    .map_err(|e| DialError::Refused(e.to_string()))?;
                Box::new(connector.connect(name, tcp).await.map_err(|e| {
                    DialError::Refused(format!("[{}] TLS handshake failed: {e}", refusal::CERTIFICATE))
                })?)
            }
            None => Box::new(tcp),
        };
        let hello = handshake::dial_hello(common, &mut stream, peer, address).await?;
        Ok(Link { stream, incarnation: hello.incarnation })
    }

    async fn run_link(
        shared: &Arc<Self>,
        peer: &NodeId,
        link: Link,
        writer: &mut Writer<M>,
        links: &mut mpsc::Receiver<Link>,
        events: &mpsc::Sender<TransportEvent<M>>,
    ) -> LinkEnd<Link> {
        let common = &shared.common;
        let Writer { queues, enc } = writer;
        let mut io = LinkIo::new(link.stream, common.max_frame, enc, queues, peer);
        // Received messages waiting for credits or room in the event queue; no further read
        // until they are queued (the writes go on meanwhile).
        let mut delivery: Option<Pin<Box<dyn Future<Output = bool> + Send + '_>>> = None;
        // One stop future for the life of the link (a new one per turn would register with
        // the stop signal, under its lock, every time the task wakes).
        let mut stop = common.shutdown.clone();
        let stopped = wait_stop(&mut stop);
        tokio::pin!(stopped);
        loop {
            let reading = delivery.is_none();
            let woke = tokio::select! {
                biased;
                () = &mut stopped => Woke::Stop,
                Some(s) = links.recv() => Woke::Replaced(s),
                queued = async {
                    match delivery.as_mut() {
                        Some(d) => d.await,
                        None => std::future::pending().await,
                    }
                }, if !reading => Woke::Delivered(queued),
                step = std::future::poll_fn(|cx| io.poll_step(cx, reading)) => Woke::Step(step),
            };
            match woke {
                Woke::Stop => {
                    let pending = delivery.take();
                    let flush = async {
                        if let Some(d) = pending
                            && !d.await
                        {
                            return Ok(());
                        }
                        io.finish_writes().await?;
                        // Read until the peer closes its side, so nothing we sent is reset.
                        while let Step::Received(msgs) = std::future::poll_fn(|cx| io.poll_read(cx)).await {
                            if !deliver(events, &common.credit, common.event_capacity, peer, msgs).await {
                                break;
                            }
                        }
                        Ok::<_, std::io::Error>(())
                    };
                    if let Err(e) = tokio::time::timeout(common.grace, flush).await.unwrap_or_else(|_| {
                        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "shutdown grace elapsed"))
                    }) {
                        debug!(%peer, error = %e, "flush at shutdown incomplete");
                    }
                    return LinkEnd::Stop;
                }
                Woke::Replaced(s) => {
                    debug!(%peer, "a new connection replaces the link");
                    return LinkEnd::Replaced(s);
                }
                Woke::Delivered(true) => delivery = None,
                Woke::Delivered(false) => return LinkEnd::Failed,
                Woke::Step(Step::Received(msgs)) => match try_deliver(events, common, peer, msgs) {
                    Delivery::Done => {}
                    Delivery::Gone => return LinkEnd::Failed,
                    Delivery::Wait(msgs) => {
                        delivery = Some(Box::pin(deliver(
                            events,
                            &common.credit,
                            common.event_capacity,
                            peer,
                            msgs,
                        )));
                    }
                },
                Woke::Step(Step::Failed) => return LinkEnd::Failed,
                Woke::Step(Step::Refused(reason)) => {
                    refused(common, events, peer.to_string(), reason);
                    return LinkEnd::Failed;
                }
                Woke::Step(Step::Closed) => return LinkEnd::Stop,
            }
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
    async fn peer_process_gone(&self, peer: &NodeId) -> bool {
        let Some(address) = self.common.cfg.load().node(peer).map(|n| n.address.to_string()) else {
            return false;
        };
        // A probe right after the link closed can race the dying process (a connection to its
        // listener in the moment before the kernel closes it ends without a reset). A live
        // peer never answers refused or reset, so a probe that ended at once without an answer
        // is made again a little later; one that waited (a listener that stays, a connect
        // that hangs) is not.
        for _ in 0..PROBES {
            let started = tokio::time::Instant::now();
            if address_gone(&address, self.common.handshake_timeout).await {
                return true;
            }
            if started.elapsed() >= PROBE_RESET_WAIT / 2 {
                return false;
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        false
    }
}

/// What woke a link's task.
enum Woke<M> {
    Stop,
    Replaced(Link),
    /// The messages waiting for the application were queued (`false`: it is gone).
    Delivered(bool),
    Step(Step<M>),
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
