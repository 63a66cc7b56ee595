//! The session manager: the builder that starts a node, and the handles applications use.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use replication_core::placement::Placement;
use replication_core::transport::Transport;
use replication_core::{
    Attributes, Command, DomainConfig, Message, Node, NodeId, Outcome, SessionView, Version,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::{
    AckPolicy, DomainSource, SessionSettings, TransportSecurity, WriteContents, WriteFrequency, request_wait,
};
use crate::driver::{Driver, DriverParts, Reply, Request, Responder, SyncReport};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, NodeEvent};
use crate::session::Session;

/// How well a committed write is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replication {
    /// Applied on this node; replication follows in the background (async acknowledgement, or
    /// staged for a later write with manual / time-based frequency).
    Local,
    /// Held by `acks` backups.
    Replicated {
        /// Backups that acknowledged.
        acks: u32,
    },
    /// No backup is live: the session exists on this node only.
    Unreplicated,
    /// Fewer backups than requested acknowledged in time; it may not survive this node.
    Indeterminate {
        /// Backups that did acknowledge.
        acks: u32,
    },
}

/// The result of a successful commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The session's version after the write.
    pub version: Version,
    /// How well the write is protected.
    pub replication: Replication,
}

/// What a graceful shutdown did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaveReport {
    /// Owned sessions whose latest version a backup held when leaving.
    pub handed_off: usize,
    /// Owned sessions without an up-to-date backup (their latest writes are lost).
    pub unreplicated: usize,
}

/// Starts a node: the domain, this node's name, the settings and the transport security.
///
/// ```no_run
/// # async fn demo() -> Result<(), session_api::Error> {
/// use std::time::Duration;
/// use session_api::{AckPolicy, SessionManager, WriteFrequency};
/// let sessions = SessionManager::builder("web.toml", "app1")
///     .certs_dir("certs")
///     .write_frequency(WriteFrequency::EndOfRequest)
///     .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) })
///     .max_inactive(Duration::from_secs(1800))
///     .start()
///     .await?;
/// # let _ = sessions; Ok(()) }
/// ```
pub struct Builder {
    domain: DomainSource,
    node: NodeId,
    settings: SessionSettings,
    security: Option<TransportSecurity>,
    tcp_listener: Option<std::net::TcpListener>,
    udp_socket: Option<std::net::UdpSocket>,
    listen: Option<SocketAddr>,
    transport: Option<Arc<dyn Transport<Message>>>,
    incarnation: Option<u64>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("domain", &self.domain)
            .field("node", &self.node)
            .field("settings", &self.settings)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A builder for node `node` of the domain (a file path or a parsed [`DomainConfig`]).
    /// Transport security must be chosen: [`Builder::certs_dir`], or [`Builder::insecure`]
    /// for loopback demos (not needed with [`Builder::transport`]).
    pub fn new(domain: impl Into<DomainSource>, node: &str) -> Self {
        Builder {
            domain: domain.into(),
            node: NodeId::new(node),
            settings: SessionSettings::default(),
            security: None,
            tcp_listener: None,
            udp_socket: None,
            listen: None,
            transport: None,
            incarnation: None,
        }
    }

    /// Every session setting at once.
    pub fn settings(mut self, settings: SessionSettings) -> Self {
        self.settings = settings;
        self
    }

    /// When changes are sent to the backups.
    pub fn write_frequency(mut self, f: WriteFrequency) -> Self {
        self.settings.write_frequency = f;
        self
    }

    /// What a write sends.
    pub fn write_contents(mut self, c: WriteContents) -> Self {
        self.settings.write_contents = c;
        self
    }

    /// How writes wait for backups.
    pub fn ack(mut self, a: AckPolicy) -> Self {
        self.settings.ack = a;
        self
    }

    /// Inactivity after which sessions expire.
    pub fn max_inactive(mut self, d: Duration) -> Self {
        self.settings.max_inactive = d;
        self
    }

    /// Called from the driver for every event (keep it short).
    pub fn metrics_hook(mut self, hook: impl Fn(&NodeEvent) + Send + Sync + 'static) -> Self {
        self.settings.metrics_hook = Some(Arc::new(hook));
        self
    }

    /// Transport security.
    pub fn security(mut self, s: TransportSecurity) -> Self {
        self.security = Some(s);
        self
    }

    /// Mutual TLS with the certificates in `dir` (`ca.pem`, `<node>.pem`, `<node>.key`).
    pub fn certs_dir(self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.security(TransportSecurity::CertsDir(dir.into()))
    }

    /// No authentication, no encryption: loopback demos and tests only.
    pub fn insecure(self) -> Self {
        self.security(TransportSecurity::Insecure)
    }

    /// A TCP listener bound in advance (tests bind port 0, then write the domain file).
    pub fn tcp_listener(mut self, l: std::net::TcpListener) -> Self {
        self.tcp_listener = Some(l);
        self
    }

    /// A UDP socket bound in advance, for QUIC.
    pub fn udp_socket(mut self, s: std::net::UdpSocket) -> Self {
        self.udp_socket = Some(s);
        self
    }

    /// Listens on this address instead of the node's address in the domain file (peers still
    /// dial the address in the file).
    pub fn listen_address(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Uses this transport instead of the one the domain file names (simulations, tests).
    pub fn transport(mut self, t: Arc<dyn Transport<Message>>) -> Self {
        self.transport = Some(t);
        self
    }

    /// The incarnation the node starts with (default: the wall clock in nanoseconds, so each
    /// start differs).
    pub fn incarnation(mut self, i: u64) -> Self {
        self.incarnation = Some(i);
        self
    }

    /// Starts the node on the current tokio runtime: loads the domain, starts the transport and
    /// spawns the driver task.
    pub async fn start(self) -> Result<SessionManager> {
        Ok(self.start_inner().await?.0)
    }

    async fn start_inner(self) -> Result<(SessionManager, tokio::task::JoinHandle<()>)> {
        let settings = self.settings.clone();
        settings.check()?;
        let cfg = self.domain.clone().load()?;
        if cfg.node(&self.node).is_none() {
            return Err(Error::Config(format!(
                "node `{}` is not listed in domain `{}`",
                self.node, cfg.domain.name
            )));
        }
        let cfg = Arc::new(cfg);
        let transport = match self.transport {
            Some(t) => t,
            None => {
                let security = self.security.ok_or_else(|| {
                    Error::Config(
                        "transport security not chosen: give a certificate folder (certs_dir) or run insecure \
                         (loopback demos only)"
                            .into(),
                    )
                })?;
                crate::carrier::start(
                    &cfg,
                    &self.node,
                    security,
                    self.tcp_listener,
                    self.udp_socket,
                    self.listen,
                )
                .await?
            }
        };
        let incarnation = self.incarnation.unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(1);
            u64::try_from(nanos).unwrap_or(u64::MAX)
        });
        let node =
            Node::new((*cfg).clone(), self.node.clone(), incarnation, settings.core.clone(), Instant::now())
                .map_err(|e| Error::Config(e.to_string()))?;
        let (tx, rx) = mpsc::channel(settings.command_capacity);
        let (events, _) = broadcast::channel(settings.event_capacity);
        let placement = Placement::new(&cfg);
        let driver = Driver::new(DriverParts {
            node,
            transport,
            requests: rx,
            events: events.clone(),
            settings: settings.clone(),
            placement: placement.clone(),
        });
        let task = tokio::spawn(driver.run());
        let manager = SessionManager {
            client: Client {
                inner: Arc::new(Inner { tx, events, me: self.node, domain: cfg, placement, settings }),
                blocking: false,
            },
        };
        Ok((manager, task))
    }

    /// Starts the node on a dedicated thread with its own single-threaded tokio runtime, for
    /// applications without one, and returns a blocking handle.
    pub fn start_blocking(self) -> Result<BlockingSessionManager> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let name = format!("m2m-{}", self.node);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(source) => {
                        let _ = tx.send(Err(Error::Io { what: "tokio runtime".into(), source }));
                        return;
                    }
                };
                rt.block_on(async move {
                    match self.start_inner().await {
                        Ok((m, task)) => {
                            let _ = tx.send(Ok(m.blocking()));
                            drop(m);
                            // The driver ends after a shutdown or once every handle is gone.
                            let _ = task.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|source| Error::Io { what: "spawning the driver thread".into(), source })?;
        rx.recv().map_err(|_| Error::ShuttingDown)?
    }
}

struct Inner {
    tx: mpsc::Sender<Request>,
    events: broadcast::Sender<NodeEvent>,
    me: NodeId,
    domain: Arc<DomainConfig>,
    placement: Placement,
    settings: SessionSettings,
}

/// The request logic shared by the async and the blocking handles.
#[derive(Clone)]
struct Client {
    inner: Arc<Inner>,
    /// Blocking handles send with `blocking_send` and wait on a crossbeam channel; their
    /// futures are ready at the first poll.
    blocking: bool,
}

fn outcome_error(o: Outcome) -> Error {
    match o {
        Outcome::Conflict { current_version } => Error::Conflict { current_version },
        Outcome::Fenced { .. } => Error::Fenced,
        Outcome::NotOwner { owner } => Error::NotOwner { owner },
        Outcome::NotFound => Error::NotFound,
        Outcome::AlreadyExists => Error::AlreadyExists,
        Outcome::Unavailable => Error::Unavailable,
        Outcome::Busy => Error::Busy,
        Outcome::NotAllowed => Error::NotAllowed,
        _ => Error::ShuttingDown,
    }
}

fn commit_of(o: Outcome) -> Result<Commit> {
    match o {
        Outcome::Applied { version, .. } => Ok(Commit { version, replication: Replication::Local }),
        Outcome::Replicated { version, acks, .. } => {
            Ok(Commit { version, replication: Replication::Replicated { acks } })
        }
        Outcome::Unreplicated { version, .. } => {
            Ok(Commit { version, replication: Replication::Unreplicated })
        }
        Outcome::Indeterminate { version, acks, .. } => {
            Ok(Commit { version, replication: Replication::Indeterminate { acks } })
        }
        other => Err(outcome_error(other)),
    }
}

impl Client {
    async fn call(&self, make: impl FnOnce(Responder) -> Request, wait: Duration) -> Result<Reply> {
        if self.blocking {
            let (tx, rx) = crossbeam_channel::bounded(1);
            self.inner.tx.blocking_send(make(Responder::Blocking(tx))).map_err(|_| Error::ShuttingDown)?;
            return match rx.recv_timeout(wait) {
                Ok(r) => Ok(r),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(Error::Timeout),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(Error::ShuttingDown),
            };
        }
        let (tx, rx) = oneshot::channel();
        self.inner.tx.send(make(Responder::Async(tx))).await.map_err(|_| Error::ShuttingDown)?;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::Timeout),
        }
    }

    fn request_wait(&self) -> Duration {
        request_wait(&self.inner.domain)
    }

    fn write_wait(&self) -> Duration {
        self.inner.settings.write_wait(&self.inner.domain)
    }

    async fn outcome(&self, make: impl FnOnce(Responder) -> Request, wait: Duration) -> Result<Outcome> {
        crate::driver::expect_outcome(self.call(make, wait).await?)
    }

    async fn core(&self, cmd: Command, wait: Duration) -> Result<Outcome> {
        self.outcome(|reply| Request::Core { cmd, reply }, wait).await
    }

    async fn acquire(&self, session: &str) -> Result<()> {
        match self.core(Command::Acquire { session: session.to_owned() }, self.request_wait()).await? {
            Outcome::Acquired { .. } | Outcome::Found { .. } => Ok(()),
            other => Err(outcome_error(other)),
        }
    }

    async fn create(&self, id: Option<String>, attrs: Attributes) -> Result<(Session, Commit)> {
        let max_inactive = self.inner.settings.max_inactive;
        let make = |reply| Request::Create { id, attrs: attrs.clone(), max_inactive, reply };
        match self.call(make, self.write_wait()).await? {
            Reply::Created { id, outcome } => {
                let c = commit_of(outcome)?;
                Ok((Session::loaded(id, c.version, attrs), c))
            }
            Reply::Failed(e) => Err(e),
            _ => Err(Error::ShuttingDown),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Session>> {
        let session = id.to_owned();
        match self.outcome(|reply| Request::Get { session, reply }, self.request_wait()).await? {
            Outcome::Found { version, attrs, .. } => Ok(Some(Session::loaded(id.to_owned(), version, attrs))),
            Outcome::NotFound => Ok(None),
            // Another live node owns it at a higher epoch and keeps it: say who, so a router
            // can send the request there.
            Outcome::Fenced { epoch } => Err(Error::NotOwner { owner: Some(epoch.node) }),
            other => Err(outcome_error(other)),
        }
    }

    async fn commit(&self, s: &mut Session) -> Result<Commit> {
        if s.is_invalidated() {
            return Err(Error::Invalidated);
        }
        if s.is_new() {
            let (_, c) = self.create(Some(s.id().to_owned()), s.attributes()).await?;
            s.committed(c.version);
            return Ok(c);
        }
        if !s.is_modified() {
            return Ok(Commit { version: s.version(), replication: Replication::Local });
        }
        let contents = self.inner.settings.write_contents;
        let mut acquired = false;
        loop {
            // Built per attempt (the session does not change in between): one copy of the
            // values per write, not a copy kept for a retry plus a clone of it.
            let (session, changes) = (s.id().to_owned(), s.to_changes(contents));
            let expected = Some(s.version());
            let (outcome, attrs) = match self
                .call(|reply| Request::Write { session, expected, changes, reply }, self.write_wait())
                .await?
            {
                Reply::Written { outcome, attrs } => (outcome, attrs),
                other => (crate::driver::expect_outcome(other)?, None),
            };
            match outcome {
                // The session moved (e.g. this node restarted, or a router sent the request
                // here): take it over and write if nobody changed it meanwhile.
                Outcome::NotOwner { .. } if !acquired => {
                    acquired = true;
                    self.acquire(s.id()).await?;
                }
                other => {
                    let c = commit_of(other)?;
                    match attrs {
                        // What the engine holds at the written version: base and changes
                        // applied, as the handle would build them.
                        Some(attrs) => s.committed_as(c.version, attrs),
                        None => s.committed(c.version),
                    }
                    return Ok(c);
                }
            }
        }
    }

    /// Runs `cmd` on a session this node may not own yet: acquires it on `NotOwner`, once.
    async fn owned_command(&self, session: &str, cmd: Command, wait: Duration) -> Result<Outcome> {
        match self.core(cmd.clone(), wait).await? {
            Outcome::NotOwner { .. } => {
                self.acquire(session).await?;
                self.core(cmd, wait).await
            }
            other => Ok(other),
        }
    }

    async fn invalidate(&self, id: &str) -> Result<Option<Commit>> {
        let ack = self.inner.settings.core_ack();
        let cmd = Command::Invalidate { session: id.to_owned(), ack };
        match self.owned_command(id, cmd, self.write_wait()).await {
            Ok(o) => commit_of(o).map(Some),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn touch(&self, id: &str) -> Result<()> {
        let cmd = Command::Touch { session: id.to_owned() };
        match self.owned_command(id, cmd, self.request_wait()).await? {
            Outcome::Touched => Ok(()),
            other => Err(outcome_error(other)),
        }
    }

    async fn update<R>(&self, id: &str, mut f: impl FnMut(&mut Session) -> Result<R>) -> Result<(R, Commit)> {
        let attempts = self.inner.settings.update_retries.saturating_add(1);
        for _ in 0..attempts {
            let Some(mut s) = self.get(id).await? else { return Err(Error::NotFound) };
            let r = f(&mut s)?;
            match self.commit(&mut s).await {
                Ok(c) => return Ok((r, c)),
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::TooManyConflicts { attempts })
    }

    async fn sync(&self) -> Result<SyncReport> {
        match self.call(|reply| Request::Sync { reply }, self.write_wait().max(self.request_wait())).await? {
            Reply::Synced(r) => Ok(r),
            Reply::Failed(e) => Err(e),
            _ => Err(Error::ShuttingDown),
        }
    }

    async fn view(&self, id: &str) -> Result<Option<SessionView>> {
        let session = id.to_owned();
        match self.call(|reply| Request::Inspect { session, reply }, self.request_wait()).await? {
            Reply::View(v) => Ok(v.map(|b| *b)),
            Reply::Failed(e) => Err(e),
            _ => Err(Error::ShuttingDown),
        }
    }

    async fn owned(&self) -> Result<Vec<String>> {
        match self.call(|reply| Request::Owned { reply }, self.request_wait()).await? {
            Reply::Ids(v) => Ok(v),
            Reply::Failed(e) => Err(e),
            _ => Err(Error::ShuttingDown),
        }
    }

    async fn metrics(&self) -> Result<Metrics> {
        match self.call(|reply| Request::Metrics { reply }, self.request_wait()).await? {
            Reply::Metrics(m) => Ok(*m),
            Reply::Failed(e) => Err(e),
            _ => Err(Error::ShuttingDown),
        }
    }

    async fn abort(&self) -> Result<()> {
        match self.call(|reply| Request::Abort { reply }, self.request_wait()).await {
            Ok(_) | Err(Error::ShuttingDown) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn shutdown(&self) -> Result<LeaveReport> {
        let wait = self.request_wait() + Duration::from_secs(5);
        match self.outcome(|reply| Request::Shutdown { reply }, wait).await {
            Ok(Outcome::Left { handed_off, unreplicated }) => Ok(LeaveReport { handed_off, unreplicated }),
            Ok(Outcome::ShuttingDown) | Err(Error::ShuttingDown) => Ok(LeaveReport::default()),
            Ok(other) => Err(outcome_error(other)),
            Err(e) => Err(e),
        }
    }
}

/// Polls a future that completes without waiting (the blocking client's).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// The handle applications use: cheap to clone, usable from any task. The node leaves the
/// domain gracefully when [`SessionManager::shutdown`] is called or the last handle (async or
/// blocking) is dropped.
///
/// Reads fetch sessions this node does not hold and make this node their owner; writes are
/// checked against the version the session was read at (see [`Error::Conflict`] and
/// [`SessionManager::update`]).
#[derive(Clone)]
pub struct SessionManager {
    client: Client,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager").field("node", &self.client.inner.me).finish_non_exhaustive()
    }
}

impl SessionManager {
    /// A [`Builder`] for node `node` of a domain (file path or [`DomainConfig`]).
    pub fn builder(domain: impl Into<DomainSource>, node: &str) -> Builder {
        Builder::new(domain, node)
    }

    /// This node.
    pub fn node(&self) -> &NodeId {
        &self.client.inner.me
    }

    /// The domain configuration.
    pub fn domain(&self) -> &DomainConfig {
        &self.client.inner.domain
    }

    /// Placement of the domain (backups, failover targets).
    pub fn placement(&self) -> &Placement {
        &self.client.inner.placement
    }

    /// The settings the node runs with.
    pub fn settings(&self) -> &SessionSettings {
        &self.client.inner.settings
    }

    /// A blocking handle to the same node, for plain threads (not for async code: it blocks).
    pub fn blocking(&self) -> BlockingSessionManager {
        BlockingSessionManager { client: Client { inner: self.client.inner.clone(), blocking: true } }
    }

    /// Creates a session with no attributes, owned by this node, under a fresh id naming this
    /// node and its failover target. It is written (and acknowledged per the settings) at once.
    pub async fn create(&self) -> Result<Session> {
        self.client.create(None, Attributes::new()).await.map(|(s, _)| s)
    }

    /// Creates a session with these attributes.
    pub async fn create_with(&self, attrs: Attributes) -> Result<Session> {
        self.client.create(None, attrs).await.map(|(s, _)| s)
    }

    /// Creates a session under a caller-chosen id ([`Error::AlreadyExists`] when taken).
    pub async fn create_with_id(&self, id: &str, attrs: Attributes) -> Result<Session> {
        self.client.create(Some(id.to_owned()), attrs).await.map(|(s, _)| s)
    }

    /// A new session object under a fresh random id, written at its first [`commit`]
    /// (the id does not name the failover target: use [`SessionManager::create`] for that).
    ///
    /// [`commit`]: SessionManager::commit
    pub fn new_session(&self) -> Result<Session> {
        let id = format!("{}.{}", crate::id::random_part()?, self.client.inner.me);
        Ok(Session::new(id))
    }

    /// Reads a session; fetches it (and becomes its owner) when another node holds it.
    /// `Ok(None)` when no node has it (or it was invalidated or expired).
    pub async fn get(&self, id: &str) -> Result<Option<Session>> {
        self.client.get(id).await
    }

    /// Writes the session's local changes ("end of request"), or stages them with manual or
    /// time-based write frequency. Fails with [`Error::Conflict`] when the session changed
    /// since it was read.
    pub async fn commit(&self, session: &mut Session) -> Result<Commit> {
        self.client.commit(session).await
    }

    /// Reads the session, applies `f`, commits; re-reads and retries on conflict (at most
    /// `update_retries` times). `f` may run several times.
    pub async fn update<R>(&self, id: &str, f: impl FnMut(&mut Session) -> Result<R>) -> Result<(R, Commit)> {
        self.client.update(id, f).await
    }

    /// Invalidates a session everywhere. `Ok(None)` when it did not exist; otherwise the
    /// [`Commit`] says how the tombstone was acknowledged, like any write (an
    /// [`Replication::Indeterminate`] invalidation may not have reached the backups yet).
    pub async fn invalidate(&self, id: &str) -> Result<Option<Commit>> {
        self.client.invalidate(id).await
    }

    /// Invalidates the session of this handle (it can no longer be changed).
    pub async fn invalidate_session(&self, session: &mut Session) -> Result<Option<Commit>> {
        let r = self.client.invalidate(session.id()).await?;
        session.mark_invalidated();
        Ok(r)
    }

    /// Marks a session as used, resetting its inactivity clock.
    pub async fn touch(&self, id: &str) -> Result<()> {
        self.client.touch(id).await
    }

    /// Writes every staged change now (manual and time-based write frequency).
    pub async fn sync(&self) -> Result<SyncReport> {
        self.client.sync().await
    }

    /// What this node holds about a session, without fetching it.
    pub async fn view(&self, id: &str) -> Result<Option<SessionView>> {
        self.client.view(id).await
    }

    /// Ids of the live sessions this node owns.
    pub async fn owned_sessions(&self) -> Result<Vec<String>> {
        self.client.owned().await
    }

    /// A metrics snapshot: engine counters, membership, transport and driver counters.
    pub async fn metrics(&self) -> Result<Metrics> {
        self.client.metrics().await
    }

    /// Events from now on (bounded: a subscriber that falls behind loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.client.inner.events.subscribe()
    }

    /// Where a router should send a request for `session_id` (see [`crate::id::route`]).
    pub fn route(&self, session_id: &str, is_live: impl Fn(&NodeId) -> bool) -> Option<NodeId> {
        crate::id::route(&self.client.inner.placement, session_id, is_live)
    }

    /// Leaves the domain gracefully (owned sessions are handed to their backups), then shuts the
    /// transport down. Other handles get [`Error::ShuttingDown`] afterwards.
    pub async fn shutdown(&self) -> Result<LeaveReport> {
        self.client.shutdown().await
    }

    /// Stops the node at once, without handing sessions off: like a crash, for tests and
    /// failover demos. The transport is shut down.
    pub async fn abort(&self) -> Result<()> {
        self.client.abort().await
    }
}

/// A blocking handle: the same operations as [`SessionManager`], for threads without an async
/// runtime. Requests go to the driver over the bounded command channel; replies come back on a
/// crossbeam channel. Do not call it from async code (it blocks the thread).
#[derive(Clone)]
pub struct BlockingSessionManager {
    client: Client,
}

impl std::fmt::Debug for BlockingSessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingSessionManager").field("node", &self.client.inner.me).finish_non_exhaustive()
    }
}

impl BlockingSessionManager {
    /// This node.
    pub fn node(&self) -> &NodeId {
        &self.client.inner.me
    }

    /// See [`SessionManager::create`].
    pub fn create(&self) -> Result<Session> {
        block_on(self.client.create(None, Attributes::new())).map(|(s, _)| s)
    }

    /// See [`SessionManager::create_with`].
    pub fn create_with(&self, attrs: Attributes) -> Result<Session> {
        block_on(self.client.create(None, attrs)).map(|(s, _)| s)
    }

    /// See [`SessionManager::create_with_id`].
    pub fn create_with_id(&self, id: &str, attrs: Attributes) -> Result<Session> {
        block_on(self.client.create(Some(id.to_owned()), attrs)).map(|(s, _)| s)
    }

    /// See [`SessionManager::owned_sessions`].
    pub fn owned_sessions(&self) -> Result<Vec<String>> {
        block_on(self.client.owned())
    }

    /// See [`SessionManager::route`].
    pub fn route(&self, session_id: &str, is_live: impl Fn(&NodeId) -> bool) -> Option<NodeId> {
        crate::id::route(&self.client.inner.placement, session_id, is_live)
    }

    /// See [`SessionManager::subscribe`] (receive with `blocking_recv`).
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.client.inner.events.subscribe()
    }

    /// See [`SessionManager::abort`].
    pub fn abort(&self) -> Result<()> {
        block_on(self.client.abort())
    }

    /// See [`SessionManager::get`].
    pub fn get(&self, id: &str) -> Result<Option<Session>> {
        block_on(self.client.get(id))
    }

    /// See [`SessionManager::commit`].
    pub fn commit(&self, session: &mut Session) -> Result<Commit> {
        block_on(self.client.commit(session))
    }

    /// See [`SessionManager::update`].
    pub fn update<R>(&self, id: &str, f: impl FnMut(&mut Session) -> Result<R>) -> Result<(R, Commit)> {
        block_on(self.client.update(id, f))
    }

    /// See [`SessionManager::invalidate`].
    pub fn invalidate(&self, id: &str) -> Result<Option<Commit>> {
        block_on(self.client.invalidate(id))
    }

    /// See [`SessionManager::touch`].
    pub fn touch(&self, id: &str) -> Result<()> {
        block_on(self.client.touch(id))
    }

    /// See [`SessionManager::sync`].
    pub fn sync(&self) -> Result<SyncReport> {
        block_on(self.client.sync())
    }

    /// See [`SessionManager::view`].
    pub fn view(&self, id: &str) -> Result<Option<SessionView>> {
        block_on(self.client.view(id))
    }

    /// See [`SessionManager::metrics`].
    pub fn metrics(&self) -> Result<Metrics> {
        block_on(self.client.metrics())
    }

    /// See [`SessionManager::shutdown`].
    pub fn shutdown(&self) -> Result<LeaveReport> {
        block_on(self.client.shutdown())
    }
}
