//! The request plumbing the async and the blocking handles share: a request to the driver
//! task, the wait for its reply, and the translation of outcomes to results.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use replication_core::change::Plan;
use replication_core::placement::Placement;
use replication_core::scope::{self, ScopedId};
use replication_core::{Attributes, Command, DomainConfig, DomainView, NodeId, Outcome, SessionView};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::{SessionSettings, request_wait};
use crate::driver::{Reply, Request, Responder, SyncReport};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, NodeEvent, Peers};
use crate::report::{Commit, LeaveReport, Replication};
use crate::session::Session;

pub(crate) struct Inner {
    pub(crate) tx: mpsc::Sender<Request>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    pub(crate) me: NodeId,
    /// The domain file the node runs and its placement, replaced by a reload; one for every
    /// manager's handle of the node.
    pub(crate) current: Arc<RwLock<Current>>,
    pub(crate) settings: SessionSettings,
    /// The session manager of this handle (`None`: the anonymous one); every id it passes to
    /// the engine is scoped by it ([`replication_core::scope`]).
    pub(crate) manager: Option<String>,
    /// The effective settings of every manager the node hosts.
    pub(crate) managers: Arc<crate::managers::ManagerTable>,
}

/// The domain file a node runs, with its placement (ids, routes, waits read them).
pub(crate) struct Current {
    pub(crate) domain: Arc<DomainConfig>,
    pub(crate) placement: Arc<Placement>,
}

impl Current {
    pub(crate) fn new(domain: Arc<DomainConfig>) -> Self {
        let placement = Arc::new(Placement::new(&domain));
        Current { domain, placement }
    }
}

impl Inner {
    /// The domain file the node runs now.
    pub(crate) fn domain(&self) -> Arc<DomainConfig> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).domain.clone()
    }

    /// The placement of the domain file the node runs now.
    pub(crate) fn placement(&self) -> Arc<Placement> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).placement.clone()
    }
}

/// The request logic shared by the async and the blocking handles.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) inner: Arc<Inner>,
    /// Blocking handles send with `blocking_send` and wait on a crossbeam channel; their
    /// futures are ready at the first poll.
    pub(crate) blocking: bool,
}

/// The first pause before a request answered [`Error::Unavailable`] is tried again.
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two tries of a request answered [`Error::Unavailable`].
const RETRY_MAX_PAUSE: Duration = Duration::from_millis(200);
/// The session id `is_ready` reads when a peer is down: never a session's (ids the library
/// draws have no `:`).
const READY_PROBE: &str = "m2m:ready-probe";

/// The first pause before a read fenced by another node's claim of the session is tried again:
/// about the time that claim takes to complete on a loaded LAN.
const FENCED_FIRST_PAUSE: Duration = Duration::from_millis(300);

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
        Outcome::TooLarge { size, limit } => Error::TooLarge { size, limit },
        Outcome::Full { held, limit } => Error::Full { held, limit },
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
        request_wait(&self.inner.domain())
    }

    fn write_wait(&self) -> Duration {
        self.inner.settings.write_wait(&self.inner.domain())
    }

    /// Runs `op` again while it fails with [`Error::Unavailable`], pausing a little longer
    /// each time (from [`RETRY_FIRST_PAUSE`] up to [`RETRY_MAX_PAUSE`]), until the request
    /// timeout has passed since the first attempt. The engine answers `Unavailable` while its
    /// view of the domain is not settled yet (right after start) and when a claim ends
    /// without an answer from enough of the domain: both pass once the peers are heard, so a
    /// request waits for them as it would for a slow answer and fails only when the holder
    /// stays out of reach for the whole request timeout (tests `tower_routes`). A fenced read
    /// is tried again by [`Client::get`], later.
    async fn while_unavailable<T, F>(&self, mut op: impl FnMut() -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let deadline = std::time::Instant::now() + self.request_wait();
        let mut pause = RETRY_FIRST_PAUSE;
        loop {
            match op().await {
                Err(Error::Unavailable) if std::time::Instant::now() + pause < deadline => {
                    self.pause(pause).await;
                    pause = (pause * 2).min(RETRY_MAX_PAUSE);
                }
                r => return r,
            }
        }
    }

    async fn pause(&self, pause: Duration) {
        if self.blocking {
            std::thread::sleep(pause);
        } else {
            tokio::time::sleep(pause).await;
        }
    }

    async fn outcome(&self, make: impl FnOnce(Responder) -> Request, wait: Duration) -> Result<Outcome> {
        crate::driver::expect_outcome(self.call(make, wait).await?)
    }

    async fn core(&self, cmd: Command, wait: Duration) -> Result<Outcome> {
        self.outcome(|reply| Request::Core { cmd, reply }, wait).await
    }

    /// The engine key of `id` in this handle's manager; ids containing the scope separator
    /// are refused.
    fn key(&self, id: &str) -> Result<String> {
        if !scope::id_is_valid(id) {
            return Err(Error::InvalidId { id: id.escape_default().to_string() });
        }
        Ok(scope::key(self.inner.manager.as_deref(), id))
    }

    /// `session`'s id when it belongs to this handle's manager.
    fn own_id<'k>(&self, key: &'k str) -> Option<&'k str> {
        let s = ScopedId::parse(key);
        (s.manager() == self.inner.manager.as_deref()).then(|| s.id())
    }

    async fn acquire(&self, key: &str) -> Result<()> {
        self.while_unavailable(|| async {
            match self.core(Command::Acquire { session: key.to_owned() }, self.request_wait()).await? {
                Outcome::Acquired { .. } | Outcome::Found { .. } => Ok(()),
                other => Err(outcome_error(other)),
            }
        })
        .await
    }

    pub(crate) async fn create(&self, id: Option<String>, attrs: Attributes) -> Result<(Session, Commit)> {
        let max_inactive = self.inner.settings.max_inactive;
        let id = id.map(|id| self.key(&id)).transpose()?;
        let (manager, ack) = (self.inner.manager.clone(), self.inner.settings.core_ack());
        // Tried again while `Unavailable`: a node without the read lease (it hears no
        // majority yet, right after start) refuses creates.
        let (id, outcome) = self
            .while_unavailable(|| async {
                let make = |reply| Request::Create {
                    id: id.clone(),
                    manager: manager.clone(),
                    attrs: attrs.clone(),
                    max_inactive,
                    ack,
                    reply,
                };
                match self.call(make, self.write_wait()).await? {
                    Reply::Created { outcome: Outcome::Unavailable, .. } => Err(Error::Unavailable),
                    Reply::Created { id, outcome } => Ok((id, outcome)),
                    other => Err(other.into_error()),
                }
            })
            .await?;
        let c = commit_of(outcome)?;
        Ok((Session::loaded(ScopedId::parse(&id).id().to_owned(), c.version, attrs), c))
    }

    /// Reads a session, fetching it when another node holds it. A fetch fenced by another
    /// node's claim of the same session (two nodes fetching it at once) is tried again after
    /// [`FENCED_FIRST_PAUSE`], then twice as long each time, within the request timeout: at
    /// once, it would fence that claim in turn, and the two would keep fencing each other
    /// (test `contended_reads_of_one_session_from_two_nodes`).
    pub(crate) async fn get(&self, id: &str) -> Result<Option<Session>> {
        let deadline = std::time::Instant::now() + self.request_wait();
        let mut pause = FENCED_FIRST_PAUSE;
        loop {
            match self.while_unavailable(|| self.get_once(id)).await {
                Err(Error::NotOwner { .. }) if std::time::Instant::now() + pause < deadline => {
                    self.pause(pause).await;
                    pause *= 2;
                }
                r => return r,
            }
        }
    }

    async fn get_once(&self, id: &str) -> Result<Option<Session>> {
        let session = self.key(id)?;
        match self.outcome(|reply| Request::Get { session, reply }, self.request_wait()).await? {
            Outcome::Found { version, attrs, .. } => Ok(Some(Session::loaded(id.to_owned(), version, attrs))),
            Outcome::NotFound => Ok(None),
            // Another live node owns it at a higher epoch and keeps it: say who, so a router
            // can send the request there.
            Outcome::Fenced { epoch } => Err(Error::NotOwner { owner: Some(epoch.node) }),
            other => Err(outcome_error(other)),
        }
    }

    pub(crate) async fn commit(&self, s: &mut Session) -> Result<Commit> {
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
        let ack = self.inner.settings.core_ack();
        let key = self.key(s.id())?;
        let mut acquired = false;
        loop {
            // Built per attempt (the session does not change in between): one copy of the
            // values per write, not a copy kept for a retry plus a clone of it.
            // Tried again while `Unavailable` (an owner without the read lease refuses writes).
            let (outcome, attrs) = self
                .while_unavailable(|| async {
                    let (session, changes) = (key.clone(), s.to_changes(contents));
                    let expected = Some(s.version());
                    let make = |reply| Request::Write { session, expected, changes, ack, reply };
                    let (outcome, attrs) = match self.call(make, self.write_wait()).await? {
                        Reply::Written { outcome, attrs } => (outcome, attrs),
                        other => (crate::driver::expect_outcome(other)?, None),
                    };
                    match outcome {
                        Outcome::Unavailable => Err(Error::Unavailable),
                        outcome => Ok((outcome, attrs)),
                    }
                })
                .await?;
            match outcome {
                // The session moved (e.g. this node restarted, or a router sent the request
                // here): take it over and write if nobody changed it meanwhile.
                Outcome::NotOwner { .. } if !acquired => {
                    acquired = true;
                    self.acquire(&key).await?;
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
        let once = || async {
            match self.core(cmd.clone(), wait).await? {
                Outcome::Unavailable => Err(Error::Unavailable),
                other => Ok(other),
            }
        };
        match self.while_unavailable(once).await? {
            Outcome::NotOwner { .. } => {
                self.acquire(session).await?;
                self.core(cmd, wait).await
            }
            other => Ok(other),
        }
    }

    pub(crate) async fn invalidate(&self, id: &str) -> Result<Option<Commit>> {
        let ack = self.inner.settings.core_ack();
        let key = self.key(id)?;
        let cmd = Command::Invalidate { session: key.clone(), ack };
        match self.owned_command(&key, cmd, self.write_wait()).await {
            Ok(o) => commit_of(o).map(Some),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn touch(&self, id: &str) -> Result<()> {
        let key = self.key(id)?;
        let cmd = Command::Touch { session: key.clone() };
        match self.owned_command(&key, cmd, self.request_wait()).await? {
            Outcome::Touched => Ok(()),
            other => Err(outcome_error(other)),
        }
    }

    pub(crate) async fn update<R>(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Session) -> Result<R>,
    ) -> Result<(R, Commit)> {
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

    pub(crate) async fn sync(&self) -> Result<SyncReport> {
        let manager = self.inner.manager.clone();
        let wait = self.write_wait().max(self.request_wait());
        match self.call(|reply| Request::Sync { manager, reply }, wait).await? {
            Reply::Synced(r) => Ok(r),
            other => Err(other.into_error()),
        }
    }

    pub(crate) async fn view(&self, id: &str) -> Result<Option<SessionView>> {
        let session = self.key(id)?;
        match self.call(|reply| Request::Inspect { session, reply }, self.request_wait()).await? {
            Reply::View(v) => Ok(v.map(|b| {
                let mut v = *b;
                v.id = id.to_owned();
                v
            })),
            other => Err(other.into_error()),
        }
    }

    pub(crate) async fn owned(&self) -> Result<Vec<String>> {
        match self.call(|reply| Request::Owned { reply }, self.request_wait()).await? {
            Reply::Ids(v) => Ok(v.iter().filter_map(|k| self.own_id(k)).map(str::to_owned).collect()),
            other => Err(other.into_error()),
        }
    }

    pub(crate) async fn peers(&self) -> Result<Peers> {
        match self.call(|reply| Request::Peers { reply }, self.request_wait()).await? {
            Reply::Peers(p) => Ok(p),
            other => Err(other.into_error()),
        }
    }

    pub(crate) async fn reconfigure(&self, config: DomainConfig) -> Result<Plan> {
        let next = Arc::new(config.clone());
        let config = Box::new(config);
        match self.call(|reply| Request::Reconfigure { config, reply }, self.request_wait()).await? {
            Reply::Reconfigured(p) => {
                if !p.unchanged() && !p.removes_this_node {
                    *self.inner.current.write().unwrap_or_else(PoisonError::into_inner) = Current::new(next);
                }
                Ok(*p)
            }
            other => Err(other.into_error()),
        }
    }

    pub(crate) async fn domain_view(&self) -> Result<DomainView> {
        match self.call(|reply| Request::Domain { reply }, self.request_wait()).await? {
            Reply::Domain(d) => Ok(*d),
            other => Err(other.into_error()),
        }
    }

    pub(crate) async fn metrics(&self) -> Result<Metrics> {
        match self.call(|reply| Request::Metrics { reply }, self.request_wait()).await? {
            Reply::Metrics(m) => Ok(*m),
            other => Err(other.into_error()),
        }
    }

    /// Whether the node answers for every session id: it sees every peer up, or the engine
    /// answers a read of [`READY_PROBE`] (an id no session has) with something other than
    /// `Unavailable`, which it answers while its view of the domain is not settled (for one
    /// failure timeout after start, or while it sees no majority of the domain). With every
    /// peer up the view is settled, and no probe is sent.
    pub(crate) async fn is_ready(&self) -> Result<bool> {
        let m = self.peers().await?;
        if m.peers.iter().all(|p| p.up) {
            return Ok(true);
        }
        match self.get_once(READY_PROBE).await {
            Err(Error::Unavailable | Error::Timeout) => Ok(false),
            Err(e @ Error::ShuttingDown) => Err(e),
            _ => Ok(true),
        }
    }

    /// Waits until [`Client::is_ready`].
    pub(crate) async fn ready(&self) -> Result<()> {
        let mut pause = RETRY_FIRST_PAUSE;
        while !self.is_ready().await? {
            self.pause(pause).await;
            pause = (pause * 2).min(RETRY_MAX_PAUSE);
        }
        Ok(())
    }

    pub(crate) async fn abort(&self) -> Result<()> {
        match self.call(|reply| Request::Abort { reply }, self.request_wait()).await {
            Ok(_) | Err(Error::ShuttingDown) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn shutdown(&self) -> Result<LeaveReport> {
        let wait = self.request_wait() + Duration::from_secs(5);
        match self.outcome(|reply| Request::Shutdown { reply }, wait).await {
            Ok(Outcome::Left { handed_off, unreplicated }) => Ok(LeaveReport { handed_off, unreplicated }),
            Ok(Outcome::ShuttingDown) | Err(Error::ShuttingDown) => Ok(LeaveReport::default()),
            Ok(other) => Err(outcome_error(other)),
            Err(e) => Err(e),
        }
    }
}
