//! The blocking handle, for threads without an async runtime.

use std::future::Future;

use replication_core::{Attributes, NodeId, SessionView};
use tokio::sync::broadcast;

use crate::client::Client;
use crate::driver::SyncReport;
use crate::error::Result;
use crate::manager::SessionManager;
use crate::metrics::{Metrics, NodeEvent};
use crate::report::{Commit, LeaveReport};
use crate::session::Session;

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

/// A blocking handle: the same operations as [`SessionManager`](crate::SessionManager), for
/// threads without an async runtime. Requests go to the driver over the bounded command
/// channel; replies come back on a crossbeam channel. Do not call it from async code (it
/// blocks the thread).
#[derive(Clone)]
pub struct BlockingSessionManager {
    pub(crate) client: Client,
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

    /// See [`SessionManager::create`](crate::SessionManager::create).
    pub fn create(&self) -> Result<Session> {
        block_on(self.client.create(None, Attributes::new())).map(|(s, _)| s)
    }

    /// See [`SessionManager::create_with`](crate::SessionManager::create_with).
    pub fn create_with(&self, attrs: Attributes) -> Result<Session> {
        block_on(self.client.create(None, attrs)).map(|(s, _)| s)
    }

    /// See [`SessionManager::create_with_id`](crate::SessionManager::create_with_id).
    pub fn create_with_id(&self, id: &str, attrs: Attributes) -> Result<Session> {
        block_on(self.client.create(Some(id.to_owned()), attrs)).map(|(s, _)| s)
    }

    /// See [`SessionManager::owned_sessions`](crate::SessionManager::owned_sessions).
    pub fn owned_sessions(&self) -> Result<Vec<String>> {
        block_on(self.client.owned())
    }

    /// See [`SessionManager::route`](crate::SessionManager::route).
    pub fn route(&self, session_id: &str, is_live: impl Fn(&NodeId) -> bool) -> Option<NodeId> {
        crate::id::route(&self.client.inner.placement(), session_id, is_live)
    }

    /// See [`SessionManager::subscribe`](crate::SessionManager::subscribe) (receive with `blocking_recv`).
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.client.inner.events.subscribe()
    }

    /// See [`SessionManager::abort`](crate::SessionManager::abort).
    pub fn abort(&self) -> Result<()> {
        block_on(self.client.abort())
    }

    /// See [`SessionManager::get`](crate::SessionManager::get).
    pub fn get(&self, id: &str) -> Result<Option<Session>> {
        block_on(self.client.get(id))
    }

    /// See [`SessionManager::commit`](crate::SessionManager::commit).
    pub fn commit(&self, session: &mut Session) -> Result<Commit> {
        block_on(self.client.commit(session))
    }

    /// See [`SessionManager::update`](crate::SessionManager::update).
    pub fn update<R>(&self, id: &str, f: impl FnMut(&mut Session) -> Result<R>) -> Result<(R, Commit)> {
        block_on(self.client.update(id, f))
    }

    /// See [`SessionManager::invalidate`](crate::SessionManager::invalidate).
    pub fn invalidate(&self, id: &str) -> Result<Option<Commit>> {
        block_on(self.client.invalidate(id))
    }

    /// See [`SessionManager::touch`](crate::SessionManager::touch).
    pub fn touch(&self, id: &str) -> Result<()> {
        block_on(self.client.touch(id))
    }

    /// See [`SessionManager::sync`](crate::SessionManager::sync).
    pub fn sync(&self) -> Result<SyncReport> {
        block_on(self.client.sync())
    }

    /// See [`SessionManager::view`](crate::SessionManager::view).
    pub fn view(&self, id: &str) -> Result<Option<SessionView>> {
        block_on(self.client.view(id))
    }

    /// See [`SessionManager::metrics`](crate::SessionManager::metrics).
    pub fn metrics(&self) -> Result<Metrics> {
        block_on(self.client.metrics())
    }

    /// See [`SessionManager::shutdown`](crate::SessionManager::shutdown).
    pub fn shutdown(&self) -> Result<LeaveReport> {
        block_on(self.client.shutdown())
    }
}

impl SessionManager {
    /// A blocking handle to the same node, for plain threads (not for async code: it blocks).
    pub fn blocking(&self) -> BlockingSessionManager {
        BlockingSessionManager { client: Client { inner: self.client.inner.clone(), blocking: true } }
    }
}
