//! The async handle applications use, and what its writes and shutdown report.

use std::sync::Arc;

use replication_core::change::Plan;
use replication_core::placement::Placement;
use replication_core::{Attributes, DomainConfig, DomainView, NodeId, SessionView};
use tokio::sync::broadcast;

use crate::client::Client;
use crate::config::SessionSettings;
use crate::driver::SyncReport;
use crate::error::Result;
use crate::metrics::{Metrics, NodeEvent, Peers};
use crate::report::{Commit, LeaveReport};
use crate::session::Session;

/// The handle applications use: cheap to clone, usable from any task. The node leaves the
/// domain gracefully when [`SessionManager::shutdown`] is called or the last handle (async or
/// blocking) is dropped.
///
/// Reads fetch sessions this node does not hold and make this node their owner; writes are
/// checked against the version the session was read at (see
/// [`Error::Conflict`](crate::Error::Conflict) and [`SessionManager::update`]).
#[derive(Clone)]
pub struct SessionManager {
    pub(crate) client: Client,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("node", &self.client.inner.me)
            .field("manager", &self.client.inner.manager)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// This node.
    pub fn node(&self) -> &NodeId {
        &self.client.inner.me
    }

    /// The domain configuration the node started with ([`SessionManager::reconfigure`]
    /// switches the running node to another; [`SessionManager::domain_view`] names it).
    pub fn domain(&self) -> Arc<DomainConfig> {
        self.client.inner.domain()
    }

    /// Placement of the domain (backups, failover targets).
    pub fn placement(&self) -> Arc<Placement> {
        self.client.inner.placement()
    }

    /// The settings the node runs with.
    pub fn settings(&self) -> &SessionSettings {
        &self.client.inner.settings
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

    /// Creates a session under a caller-chosen id
    /// ([`Error::AlreadyExists`](crate::Error::AlreadyExists) when taken).
    pub async fn create_with_id(&self, id: &str, attrs: Attributes) -> Result<Session> {
        self.client.create(Some(id.to_owned()), attrs).await.map(|(s, _)| s)
    }

    /// A new session object under a fresh id `<random>.<owner>.<failover-target>` naming this
    /// node and the failover target placement gives it with every node up (a router goes to
    /// the next live node when that one is down: [`crate::id::route`]), written at its first
    /// [`commit`].
    ///
    /// [`commit`]: SessionManager::commit
    pub fn new_session(&self) -> Result<Session> {
        let id = crate::id::generate(&self.client.inner.placement(), &self.client.inner.me, |_| true)?;
        Ok(Session::new(id))
    }

    /// A new session object under a caller-chosen id, written at its first [`commit`]
    /// ([`Error::AlreadyExists`](crate::Error::AlreadyExists) then when the id is taken;
    /// [`Error::InvalidId`](crate::Error::InvalidId) now for an id no manager can hold).
    ///
    /// [`commit`]: SessionManager::commit
    pub fn new_session_with_id(&self, id: &str) -> Result<Session> {
        if !replication_core::scope::id_is_valid(id) {
            return Err(crate::Error::InvalidId { id: id.escape_default().to_string() });
        }
        Ok(Session::new(id.to_owned()))
    }

    /// Reads a session; fetches it (and becomes its owner) when another node holds it.
    /// `Ok(None)` when no node has it (or it was invalidated or expired).
    pub async fn get(&self, id: &str) -> Result<Option<Session>> {
        self.client.get(id).await
    }

    /// Writes the session's local changes ("end of request"), or stages them with manual or
    /// time-based write frequency. Fails with [`Error::Conflict`](crate::Error::Conflict) when
    /// the session changed since it was read.
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
    /// [`Replication::Indeterminate`](crate::Replication::Indeterminate) invalidation may not have reached the backups yet).
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

    /// Writes every staged change of this handle's session manager now (manual and
    /// time-based write frequency); other managers' staged changes stay staged.
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

    /// Resolves once the node answers for every session id: its view of the domain is
    /// settled (every peer seen up, or enough of the domain for one failure timeout). Requests
    /// made earlier are not refused: they wait for it (up to the request timeout). For a load
    /// balancer's readiness probe, see [`SessionManager::is_ready`].
    pub async fn ready(&self) -> Result<()> {
        self.client.ready().await
    }

    /// Whether the node answers for every session id now (see [`SessionManager::ready`]).
    pub async fn is_ready(&self) -> bool {
        self.client.is_ready().await.unwrap_or(false)
    }

    /// A metrics snapshot: engine counters, membership, transport and driver counters. It
    /// takes a pass over every session held; [`SessionManager::peers`] is the membership alone.
    pub async fn metrics(&self) -> Result<Metrics> {
        self.client.metrics().await
    }

    /// The membership as this node sees it: its peers up or down, and the links it has now.
    pub async fn peers(&self) -> Result<Peers> {
        self.client.peers().await
    }

    /// Switches the running node to a new domain file (an online domain change): reads and
    /// parses it, checks it ([`replication_core::change::check`]) and hands it to the
    /// transport (when it adds nodes) and the engine. Allowed online: nodes added or removed,
    /// `replicas`, timeouts and intervals; copies move to the new placement within the
    /// re-replication token bucket, and `under_replicated` in the metrics tells the progress.
    /// A file that does not list this node makes it leave the domain gracefully (its sessions
    /// are handed off) and stop. Refused, with the node still running on the file it has:
    /// an unreadable file ([`Error::Io`](crate::Error::Io)), a file that does not parse, is
    /// invalid, or changes what cannot change online
    /// ([`Error::Core`](crate::Error::Core) holding
    /// [`replication_core::Error::Invalid`], each violation with its rule code, see
    /// [`replication_core::change::rule`]).
    pub async fn reconfigure(&self, domain: impl Into<crate::DomainSource>) -> Result<Plan> {
        let config = match domain.into() {
            crate::DomainSource::File(path) => {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| crate::Error::Io { what: format!("reading {origin}"), source })?;
                DomainConfig::parse(&text, &origin)?
            }
            crate::DomainSource::Config(cfg) => cfg,
        };
        self.client.reconfigure(config).await
    }

    /// The fingerprint of the domain file the node runs, whether a change is under way, and
    /// which file each peer announced.
    pub async fn domain_view(&self) -> Result<DomainView> {
        self.client.domain_view().await
    }

    /// Events from now on (bounded: a subscriber that falls behind loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.client.inner.events.subscribe()
    }

    /// Where a router should send a request for `session_id` (see [`crate::id::route`]).
    pub fn route(&self, session_id: &str, is_live: impl Fn(&NodeId) -> bool) -> Option<NodeId> {
        crate::id::route(&self.client.inner.placement(), session_id, is_live)
    }

    /// Leaves the domain gracefully (owned sessions are handed to their backups), then shuts the
    /// transport down. Other handles get [`Error::ShuttingDown`](crate::Error::ShuttingDown)
    /// afterwards.
    pub async fn shutdown(&self) -> Result<LeaveReport> {
        self.client.shutdown().await
    }

    /// Stops the node at once, without handing sessions off: like a crash, for tests and
    /// failover demos. The transport is shut down.
    pub async fn abort(&self) -> Result<()> {
        self.client.abort().await
    }
}
