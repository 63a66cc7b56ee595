//! An `actix_session::storage::SessionStore` backed by replicated sessions (cargo feature
//! `actix`).
//!
//! Each actix session is an m2m session whose id is the session key (a fresh m2m id naming
//! this node and its failover target, so the route cookie and [`crate::id::route`] work for
//! it); each value is one attribute (`d:<key>`, the JSON string actix-session keeps) and the
//! expiry date is the attribute `m2m:expiry`, the layout the tower store uses. A load on a
//! node that does not hold the session fetches it from the domain, so instances behind a
//! plain (non-sticky) load balancer share sessions. A request waits (up to the domain's
//! request timeout) while the node's view of the domain settles (right after start), a fetch
//! lacks its peers' answers or another node fetches the same session; it fails only when the node holding the session stays out
//! of reach that long.
//!
//! actix-session answers every store error with a 500; the middleware function
//! [`unavailable_as_503`] (with `actix_web::middleware::from_fn`, outside the
//! `SessionMiddleware`) answers a `503 Service Unavailable` with `Retry-After` instead when the
//! session was unavailable ([`Error::Unavailable`]), another node's claim of it won
//! ([`Error::NotOwner`]) or the node was overloaded ([`Error::Busy`]).
//!
//! ```no_run
//! # fn demo(sessions: session_api::SessionManager, key: actix_web::cookie::Key) {
//! use actix_session::SessionMiddleware;
//! use actix_web::{App, middleware::from_fn};
//! use session_api::actix::{ActixStore, unavailable_as_503};
//! let app = App::new()
//!     .wrap(SessionMiddleware::new(ActixStore::new(sessions), key))
//!     // Registered last, so it runs first: it sees the 500 of a store error.
//!     .wrap(from_fn(unavailable_as_503));
//! # let _ = app; }
//! ```

use std::collections::HashMap;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::HttpResponse;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::time::Duration;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::middleware::Next;

use crate::error::Error;
use crate::manager::SessionManager;
use crate::web_store;

/// An actix-session store over a [`SessionManager`].
#[derive(Clone, Debug)]
pub struct ActixStore {
    sessions: SessionManager,
}

impl ActixStore {
    /// A store over this node's sessions.
    pub fn new(sessions: SessionManager) -> Self {
        ActixStore { sessions }
    }

    /// The session manager underneath.
    pub fn manager(&self) -> &SessionManager {
        &self.sessions
    }
}

/// A store error for actix-session, noted for [`unavailable_as_503`].
fn failed(e: Error) -> anyhow::Error {
    web_store::note(&e);
    anyhow::Error::new(e)
}

/// The expiry date `ttl` from now, in Unix seconds.
fn expiry(ttl: &Duration) -> i64 {
    (actix_web::cookie::time::OffsetDateTime::now_utc() + *ttl).unix_timestamp()
}

fn key(id: String) -> Result<SessionKey, anyhow::Error> {
    SessionKey::try_from(id).map_err(anyhow::Error::new)
}

type State = HashMap<String, String>;

fn attributes(state: &State, ttl: &Duration) -> Result<crate::Attributes, anyhow::Error> {
    web_store::record_attributes(state, expiry(ttl)).map_err(anyhow::Error::new)
}

impl SessionStore for ActixStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let Some(s) = web_store::load(&self.sessions, session_key.as_ref())
            .await
            .map_err(|e| LoadError::Other(failed(e)))?
        else {
            return Ok(None);
        };
        let mut state = HashMap::new();
        for (name, bytes) in web_store::record_values(&s) {
            let value =
                String::from_utf8(bytes.to_vec()).map_err(|e| LoadError::Deserialization(e.into()))?;
            state.insert(name.to_owned(), value);
        }
        Ok(Some(state))
    }

    async fn save(&self, session_state: State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        let attrs = attributes(&session_state, ttl).map_err(SaveError::Serialization)?;
        let s = self.sessions.create_with(attrs).await.map_err(|e| SaveError::Other(failed(e)))?;
        key(s.id().to_owned()).map_err(SaveError::Other)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: State,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let attrs = attributes(&session_state, ttl).map_err(UpdateError::Serialization)?;
        web_store::put(&self.sessions, session_key.as_ref(), &attrs)
            .await
            .map_err(|e| UpdateError::Other(failed(e)))?;
        Ok(session_key)
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
        let at = expiry(ttl);
        match self.sessions.update(session_key.as_ref(), |s| web_store::set_expiry(s, at)).await {
            // Nothing to extend: the session is gone.
            Ok(_) | Err(Error::NotFound) => Ok(()),
            Err(e) => Err(failed(e)),
        }
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        self.sessions.invalidate(session_key.as_ref()).await.map(|_| ()).map_err(failed)
    }
}

/// An actix-web middleware function (for `actix_web::middleware::from_fn`) that answers
/// `503 Service Unavailable`, with `Retry-After`, instead of the `500` actix-session answers
/// when [`ActixStore`] failed because a session was unavailable ([`Error::Unavailable`]),
/// another node's claim of it won ([`Error::NotOwner`]) or the node was overloaded
/// ([`Error::Busy`]). Register it after (outside) the
/// `SessionMiddleware`; other errors stay as they are.
pub async fn unavailable_as_503<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let (res, unavailable) = web_store::watch(next.call(req)).await;
    if !unavailable {
        return res.map(ServiceResponse::map_into_left_body);
    }
    let answer = || {
        HttpResponse::ServiceUnavailable().insert_header((RETRY_AFTER, web_store::RETRY_AFTER_SECS)).finish()
    };
    match res {
        // actix-session's store errors: answered by actix-web from the error's response.
        Err(e) if e.as_response_error().status_code() == StatusCode::INTERNAL_SERVER_ERROR => {
            Err(InternalError::from_response(e, answer()).into())
        }
        Ok(r) if r.status() == StatusCode::INTERNAL_SERVER_ERROR => {
            let (request, _) = r.into_parts();
            Ok(ServiceResponse::new(request, answer().map_into_right_body()))
        }
        other => other.map(ServiceResponse::map_into_left_body),
    }
}
