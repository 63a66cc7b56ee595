//! A `tower_sessions::SessionStore` backed by replicated sessions (cargo feature `tower`).
//!
//! Each tower session is an m2m session whose id is the tower id's string form; each value of
//! the record is one attribute (`d:<key>`, JSON as tower-sessions stores it) and the expiry
//! date is the attribute `m2m:expiry` (the layout the actix store shares). A load on a node
//! that does not hold the session fetches it from the domain, so instances behind a plain
//! (non-sticky) load balancer share sessions; with the route cookie ([`crate::route_cookie`]) a balancer keeps each session on
//! its owner and fetches are the exception. Saves are full replaces and last-writer-wins, as
//! tower-sessions expects.
//!
//! Expiry: the record's expiry date is checked on load; replicas expire after the manager's
//! `max_inactive`, so configure it at least as long as the tower session expiry.
//!
//! Errors: a request waits (up to the domain's request timeout) while the node's view of the
//! domain settles (right after start), a fetch lacks its peers' answers or another node
//! fetches the same session; the store fails
//! with [`Error::Unavailable`] only when the node holding the session stays out of reach that
//! long. tower-sessions answers every store error with a 500; wrap its layer in
//! [`UnavailableLayer`] to answer the errors a retry may cure (unavailable, busy, or another
//! node's claim of the session won: [`Error::NotOwner`]) with a `503 Service Unavailable`
//! (and `Retry-After`) instead, which balancers and clients retry.
//!
//! ```no_run
//! # async fn demo(sessions: session_api::SessionManager) {
//! use session_api::store::{ReplicatedStore, UnavailableLayer};
//! let sessions = tower_sessions::SessionManagerLayer::new(ReplicatedStore::new(sessions));
//! // The layer added last is the outermost: it sees the 500 tower-sessions answers with.
//! let app: axum::Router = axum::Router::new().layer(sessions).layer(UnavailableLayer);
//! # let _ = app; }
//! ```

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use http::{HeaderValue, Request, Response, StatusCode};
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, SessionStore};

use crate::error::Error;
use crate::manager::SessionManager;
use crate::route_cookie::{Learned, learn};
use crate::web_store;

/// A tower-sessions store over a [`SessionManager`].
#[derive(Clone, Debug)]
pub struct ReplicatedStore {
    sessions: SessionManager,
    loaded: Arc<Mutex<Loaded>>,
}

/// Records loaded and not saved since, at most [`LOADED`] (the oldest go first): the save
/// that ends a request writes, at the version its load read, only the values that changed
/// (one write, no second read); when the session changed since (a conflict), it falls back to
/// the full replace, last writer wins.
#[derive(Debug, Default)]
struct Loaded {
    by_id: HashMap<String, crate::Session>,
    order: VecDeque<String>,
}

/// Loaded records kept for their save: more than the requests a node serves at once.
const LOADED: usize = 4096;

impl Loaded {
    fn keep(&mut self, id: String, s: crate::Session) {
        if self.by_id.insert(id.clone(), s).is_none() {
            self.order.push_back(id);
        }
        while self.by_id.len() > LOADED {
            let Some(old) = self.order.pop_front() else { break };
            self.by_id.remove(&old);
        }
    }

    fn take(&mut self, id: &str) -> Option<crate::Session> {
        // `order` keeps the id until it comes up: it is skipped then if gone or kept again.
        let s = self.by_id.remove(id);
        if self.order.len() > 2 * LOADED {
            let by_id = &self.by_id;
            self.order.retain(|k| by_id.contains_key(k));
        }
        s
    }
}

impl ReplicatedStore {
    /// Writes `record` as the session `id`: at the version its load read, only the values
    /// that changed; the full replace when it was not loaded here or changed since.
    async fn save_record(&self, id: &str, record: &Record) -> session_store::Result<()> {
        let entries = entries(record)?;
        let loaded = self.loaded().take(id);
        let attrs = match loaded {
            Some(mut s) => {
                web_store::replace_with(&mut s, entries).map_err(backend)?;
                match self.sessions.commit(&mut s).await {
                    Ok(_) => return Ok(()),
                    // Changed or gone since it was loaded: replaced below, last writer wins.
                    Err(Error::Conflict { .. } | Error::NotFound | Error::TooManyConflicts { .. }) => {}
                    Err(e) => return Err(backend(e)),
                }
                // What the record is now: the replace applied to what was loaded.
                s.attributes()
            }
            None => web_store::attributes_of(&entries),
        };
        web_store::put(&self.sessions, id, &attrs).await.map_err(backend)
    }

    /// A store over the sessions of `sessions`' session manager: the anonymous one, or the
    /// manager of a handle from [`SessionManager::manager`] (one store per web module, each
    /// a namespace of its own; see [`crate::managers`]).
    pub fn new(sessions: SessionManager) -> Self {
        ReplicatedStore { sessions, loaded: Arc::default() }
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        // A panic while holding it leaves a cache that is still valid: keep using it.
        self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session manager underneath.
    pub fn manager(&self) -> &SessionManager {
        &self.sessions
    }
}

fn backend(e: Error) -> session_store::Error {
    web_store::note(&e);
    session_store::Error::Backend(e.to_string())
}

fn encode(e: impl ToString) -> session_store::Error {
    session_store::Error::Encode(e.to_string())
}

/// A record's attributes, owned ([`web_store::record_entries`]): each value as JSON.
fn entries(record: &Record) -> session_store::Result<Vec<(String, Vec<u8>)>> {
    let mut values = Vec::with_capacity(record.data.len());
    for (k, v) in &record.data {
        // Written once at its size: a 1 KiB string is not copied through growing buffers.
        let size = match v {
            serde_json::Value::String(s) => s.len() + 2,
            _ => 16,
        };
        let mut json = Vec::with_capacity(size);
        serde_json::to_writer(&mut json, v).map_err(encode)?;
        values.push((k, json));
    }
    web_store::record_entries(values, record.expiry_date.unix_timestamp()).map_err(encode)
}

fn attributes(record: &Record) -> session_store::Result<crate::Attributes> {
    Ok(web_store::attributes_of(&entries(record)?))
}

fn decode(e: impl ToString) -> session_store::Error {
    session_store::Error::Decode(e.to_string())
}

fn read_record(id: Id, s: &crate::Session) -> session_store::Result<Record> {
    let mut data = HashMap::new();
    for (name, bytes) in web_store::record_values(s) {
        data.insert(name.to_owned(), serde_json::from_slice(bytes).map_err(decode)?);
    }
    let ts = web_store::record_expiry(s).map_err(decode)?.ok_or_else(|| decode("no expiry date"))?;
    let expiry_date = time::OffsetDateTime::from_unix_timestamp(ts).map_err(decode)?;
    Ok(Record { id, data, expiry_date })
}

#[async_trait]
impl SessionStore for ReplicatedStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let attrs = attributes(record)?;
        let mut fresh = Vec::new();
        let fresh_id = || {
            let id = Id::default();
            fresh.push(id);
            id.to_string()
        };
        let id = web_store::create(&self.sessions, record.id.to_string(), fresh_id, &attrs).await;
        match &id {
            Ok(id) => learn(id, Some(Learned::Owned)),
            Err(_) => learn(&record.id.to_string(), None),
        }
        match id {
            Ok(_) => {
                if let Some(id) = fresh.last() {
                    record.id = *id;
                }
                Ok(())
            }
            Err(Error::AlreadyExists) => {
                Err(session_store::Error::Backend("could not draw an unused session id".into()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let id = record.id.to_string();
        let saved = self.save_record(&id, record).await;
        learn(&id, saved.as_ref().ok().map(|_| Learned::Owned));
        saved
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let id = session_id.to_string();
        let loaded = web_store::load(&self.sessions, &id).await;
        learn(&id, matches!(loaded, Ok(Some(_))).then_some(Learned::Owned));
        match loaded.map_err(backend)? {
            Some(s) => {
                let record = read_record(*session_id, &s)?;
                self.loaded().keep(id, s);
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let id = session_id.to_string();
        drop(self.loaded().take(&id));
        let deleted = self.sessions.invalidate(&id).await;
        learn(&id, matches!(deleted, Ok(Some(_))).then_some(Learned::Gone));
        deleted.map(|_| ()).map_err(backend)
    }
}

/// A layer that answers `503 Service Unavailable` (with `Retry-After`) instead of the
/// `500` tower-sessions answers when [`ReplicatedStore`] failed because a session was
/// unavailable ([`Error::Unavailable`]), another node's claim of it won
/// ([`Error::NotOwner`]) or the node was overloaded ([`Error::Busy`]). Put it
/// outside tower-sessions' `SessionManagerLayer`; other errors stay `500`s.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnavailableLayer;

impl<S> tower_layer::Layer<S> for UnavailableLayer {
    type Service = Unavailable503<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Unavailable503 { inner }
    }
}

/// The service [`UnavailableLayer`] wraps around the application.
#[derive(Clone, Debug)]
pub struct Unavailable503<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for Unavailable503<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let inner = self.inner.call(req);
        Box::pin(async move {
            let (res, unavailable) = web_store::watch(inner).await;
            let mut res = res?;
            if unavailable && res.status() == StatusCode::INTERNAL_SERVER_ERROR {
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                res.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static(web_store::RETRY_AFTER_SECS));
            }
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records kept for their save stay bounded, the oldest going first, and a save
    /// takes its record.
    #[test]
    fn loaded_records_are_bounded() {
        let mut l = Loaded::default();
        for i in 0..LOADED + 10 {
            l.keep(i.to_string(), crate::Session::loaded(i.to_string(), 1, crate::Attributes::new()));
        }
        assert_eq!(l.by_id.len(), LOADED);
        assert!(l.take("0").is_none(), "the oldest went first");
        assert!(l.take(&(LOADED + 9).to_string()).is_some());
        assert!(l.take(&(LOADED + 9).to_string()).is_none(), "taken once");
        for i in 0..3 * LOADED {
            l.keep("again".into(), crate::Session::loaded("again".into(), 1, crate::Attributes::new()));
            assert!(l.take("again").is_some());
            assert!(l.order.len() <= 2 * LOADED + 1, "{i}: {}", l.order.len());
        }
    }
}
