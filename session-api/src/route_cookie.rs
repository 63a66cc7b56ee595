//! The route cookie: a tower layer that tells the load balancer where each session lives
//! (cargo feature `tower`).
//!
//! After the application answered, the layer finds the request's session id (the cookie the
//! session layer set on the response, else the one the request carried), and when this node
//! owns that session it sets the route cookie, `<owner>.<failover>` ([`Route`]), e.g.
//! `M2MROUTE=app1.app3`. A load balancer reads it without knowing m2m: send the request to the
//! first part, to the second when the first is down, to any node when neither is up (`m2m
//! lb-config` writes such configurations for HAProxy and nginx). When the session's owner
//! changes (failover, a fetch by another node), the next response from the new owner carries
//! the new route, so affinity follows the new owner and does not snap back when the old node
//! returns. The cookie is set only when its value changes. The owner comes from what the
//! session store learned during the request ([`learn`]: a load or a write of the session that
//! succeeded here means this node owns it, a delete that it is gone), so a request that used its
//! session costs no further trip to the node's driver; only a response about a session the store
//! did not touch (or touched without success) asks the node. A request that names this node as
//! the failover target came because the balancer found the owner down: while the link to the
//! owner is down it waits (at most the failure timeout) until this node's failure detector
//! agrees and the hot failover made it the owner, so the session is taken over from the backup
//! held here rather than claimed like a fetch.
//!
//! The route a client sends is never trusted: a cookie naming an unknown node, a node of
//! another domain, or garbage only makes the balancer pick any node, which fetches the
//! session and answers with the right route.
//!
//! Put the layer *outside* the session layer, so the session is saved (and its id cookie
//! set) when the layer looks:
//!
//! ```no_run
//! # async fn demo(sessions: session_api::SessionManager) {
//! use session_api::route_cookie::RouteCookieLayer;
//! use session_api::store::ReplicatedStore;
//! let app: axum::Router = axum::Router::new()
//!     .layer(tower_sessions::SessionManagerLayer::new(ReplicatedStore::new(sessions.clone())))
//!     .layer(RouteCookieLayer::new(sessions));
//! # let _ = app; }
//! ```

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cookie::{Cookie, SameSite};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, Response};
use replication_core::{NodeId, Role};

use crate::id::Route;
use crate::manager::SessionManager;

pub use crate::id::DEFAULT_ROUTE_COOKIE;

/// The session cookie's default name: tower-sessions' default.
pub const DEFAULT_SESSION_COOKIE: &str = "id";

/// How often a request for a session failing over to this node looks whether it did.
const FAILOVER_POLL: Duration = Duration::from_millis(5);

/// How long a request for a session failing over to this node waits for the link to its owner
/// to go down before it counts the owner alive.
const LINK_GRACE: Duration = Duration::from_millis(25);

/// How long the membership used for failover targets is reused before it is asked again.
const LIVE_SET_MAX_AGE: Duration = Duration::from_millis(250);

tokio::task_local! {
    /// What the session store learned of a session during the request the layer serves on
    /// this task ([`learn`]).
    static LEARNED: RefCell<Option<(String, Learned)>>;
}

/// What a session store call that succeeded says of its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learned {
    /// A load or a write of it succeeded: this node owns it.
    Owned,
    /// It was invalidated.
    Gone,
}

/// Notes, for the route cookie layer serving the request on this task (if any), what a store
/// call learned of session `id`; `None` (a call that failed, or says nothing of the owner)
/// forgets what an earlier call noted, so that the layer asks the node.
pub(crate) fn learn(id: &str, what: Option<Learned>) {
    // Outside a request the layer serves there is no note to take.
    let _ = LEARNED.try_with(|l| {
        let mut l = l.borrow_mut();
        match (what, l.as_mut()) {
            (None, _) => *l = None,
            (Some(what), Some((known, was))) if known == id => *was = what,
            (Some(what), _) => *l = Some((id.to_owned(), what)),
        }
    });
}

/// The layer (see the module documentation).
#[derive(Clone, Debug)]
pub struct RouteCookieLayer {
    router: Arc<Router>,
}

impl RouteCookieLayer {
    /// Sets [`DEFAULT_ROUTE_COOKIE`] for sessions named by the cookie
    /// [`DEFAULT_SESSION_COOKIE`].
    pub fn new(sessions: SessionManager) -> Self {
        RouteCookieLayer {
            router: Arc::new(Router {
                sessions,
                route_cookie: DEFAULT_ROUTE_COOKIE.to_owned(),
                session_cookie: DEFAULT_SESSION_COOKIE.to_owned(),
                secure: false,
                live: Arc::default(),
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Router)) -> Self {
        let mut router = (*self.router).clone();
        f(&mut router);
        self.router = Arc::new(router);
        self
    }

    /// The route cookie's name (as `jvmRoute` in Tomcat or an ALB stickiness cookie); the load
    /// balancer's configuration must read the same name.
    pub fn with_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with(|r| r.route_cookie = name)
    }

    /// The name of the cookie that holds the session id (tower-sessions'
    /// `SessionManagerLayer::with_name`, or the application's cookie of m2m ids).
    pub fn with_session_cookie(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with(|r| r.session_cookie = name)
    }

    /// Whether the route cookie is marked `Secure` (sent over HTTPS only). Off by default:
    /// the cookie names nodes, nothing secret, and the balancer in front may speak plain HTTP.
    pub fn with_secure(self, secure: bool) -> Self {
        self.with(|r| r.secure = secure)
    }
}

impl<S> tower_layer::Layer<S> for RouteCookieLayer {
    type Service = RouteCookie<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteCookie { inner, router: self.router.clone() }
    }
}

/// The service [`RouteCookieLayer`] wraps around the application.
#[derive(Clone, Debug)]
pub struct RouteCookie<S> {
    inner: S,
    router: Arc<Router>,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for RouteCookie<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let sent = Sent::of(req.headers(), &self.router.session_cookie, &self.router.route_cookie);
        let router = self.router.clone();
        // The service that was polled ready serves this request; its clone the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            router.await_failover(&sent).await;
            let (res, learned) = LEARNED
                .scope(RefCell::new(None), async move {
                    let res = inner.call(req).await;
                    (res, LEARNED.with(RefCell::take))
                })
                .await;
            let mut res = res?;
            router.stamp(sent, learned, res.headers_mut()).await;
            Ok(res)
        })
    }
}

/// The cookies a request carried.
#[derive(Debug, PartialEq)]
struct Sent {
    session: Option<String>,
    route: Option<String>,
}

impl Sent {
    /// The cookies `session` and `route` among a request's `Cookie` headers, in one pass (the
    /// first of each name counts).
    fn of(headers: &HeaderMap, session: &str, route: &str) -> Sent {
        let mut sent = Sent { session: None, route: None };
        let cookies = headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok());
        for c in cookies.flat_map(Cookie::split_parse_encoded).filter_map(Result::ok) {
            let slot = if c.name() == session {
                &mut sent.session
            } else if c.name() == route {
                &mut sent.route
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(c.value().to_owned());
            }
            if sent.session.is_some() && sent.route.is_some() {
                break;
            }
        }
        sent
    }
}

/// The nodes up (this one included), and when the driver was asked.
type LiveSet = (Instant, Arc<BTreeSet<NodeId>>);

/// What the layer knows: the node, the cookie names, and a recent membership.
#[derive(Clone)]
struct Router {
    sessions: SessionManager,
    route_cookie: String,
    session_cookie: String,
    secure: bool,
    /// The live nodes (this one included) and when they were asked for.
    live: Arc<Mutex<Option<LiveSet>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("node", self.sessions.node())
            .field("route_cookie", &self.route_cookie)
            .field("session_cookie", &self.session_cookie)
            .finish_non_exhaustive()
    }
}

/// What this node knows of a session's route.
enum Known {
    /// It owns the session: this is the route.
    Owned(Route),
    /// The session was invalidated.
    Gone,
    /// Another node owns it, or this node holds nothing of it.
    NotHere,
}

enum SessionCookie {
    /// The session the response is about.
    Id(String),
    /// The response removes the session cookie (the session was deleted).
    Removed,
    /// The response does not mention it.
    Unchanged,
}

impl Router {
    /// A request whose route names this node as the failover target reached it because the
    /// balancer found the owner down. Serving it before this node's failure detector noticed
    /// would claim the session from its backup like a fetch; while the link to the owner is
    /// down, waiting (for at most the domain's failure timeout) lets the hot failover make this
    /// node the owner first. With the link up for [`LINK_GRACE`], the owner is alive (a
    /// balancer without affinity sent the request here) and the request goes on at once.
    async fn await_failover(&self, sent: &Sent) {
        let me = self.sessions.node();
        let (Some(session), Some(route)) = (&sent.session, sent.route.as_deref().and_then(Route::parse))
        else {
            return;
        };
        if route.failover.as_ref() != Some(me) || &route.owner == me {
            return;
        }
        let started = Instant::now();
        let limit = self.sessions.domain().failure_timeout();
        while started.elapsed() < limit {
            let Ok(Some(view)) = self.sessions.view(session).await else { return };
            if view.role == Role::Owner || view.invalidated {
                return;
            }
            let Ok(m) = self.sessions.peers().await else { return };
            if !m.peers.iter().any(|p| p.node == route.owner && p.up) {
                // Failed: the failover is under way, the request's read waits for it.
                return;
            }
            if m.connected.contains(&route.owner) && started.elapsed() >= LINK_GRACE {
                return;
            }
            tokio::time::sleep(FAILOVER_POLL).await;
        }
    }

    /// Adds the route cookie to a response when this node owns its session and the client's
    /// route differs. `learned`: what the store learned of a session while serving it.
    async fn stamp(&self, sent: Sent, learned: Option<(String, Learned)>, headers: &mut HeaderMap) {
        let session = match self.response_session_cookie(headers) {
            SessionCookie::Id(id) => Some(id),
            SessionCookie::Removed => None,
            SessionCookie::Unchanged => sent.session,
        };
        let route = match session {
            Some(id) => match self.route(&id, learned).await {
                Known::Owned(route) => route.to_string(),
                Known::Gone => String::new(),
                // Another node owns it, or this node knows nothing: the client's route stays.
                Known::NotHere => return,
            },
            None => String::new(),
        };
        // An empty route removes the cookie, when the client has one.
        if route.is_empty() && sent.route.is_none() {
            return;
        }
        if sent.route.as_deref() == Some(route.as_str()) {
            return;
        }
        let mut cookie = Cookie::build((self.route_cookie.as_str(), route.as_str()))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .build();
        if route.is_empty() {
            cookie.make_removal();
        }
        if let Ok(value) = HeaderValue::from_str(&cookie.encoded().to_string()) {
            headers.append(SET_COOKIE, value);
        }
    }

    /// The session cookie the response sets, if any.
    fn response_session_cookie(&self, headers: &HeaderMap) -> SessionCookie {
        let mut found = SessionCookie::Unchanged;
        for value in headers.get_all(SET_COOKIE) {
            let Some(c) = value.to_str().ok().and_then(|v| Cookie::parse_encoded(v).ok()) else { continue };
            if c.name() != self.session_cookie {
                continue;
            }
            let removed = c.value().is_empty()
                || c.max_age().is_some_and(|a| a.is_zero() || a.is_negative())
                || c.expires_datetime().is_some_and(|t| t <= time::OffsetDateTime::now_utc());
            found = if removed { SessionCookie::Removed } else { SessionCookie::Id(c.value().to_owned()) };
        }
        found
    }

    /// The session's route when this node owns it: from what the store learned of it during
    /// the request, else from the node (test `the_route_cookie_costs_no_driver_trip`).
    async fn route(&self, session: &str, learned: Option<(String, Learned)>) -> Known {
        match learned {
            Some((id, Learned::Owned)) if id == session => return self.owned(session).await,
            Some((id, Learned::Gone)) if id == session => return Known::Gone,
            _ => {}
        }
        let Some(view) = self.sessions.view(session).await.ok().flatten() else { return Known::NotHere };
        if view.invalidated {
            return Known::Gone;
        }
        let me = self.sessions.node();
        if view.role != Role::Owner || view.owner.as_ref() != Some(me) {
            return Known::NotHere;
        }
        self.owned(session).await
    }

    /// The route of a session this node owns.
    async fn owned(&self, session: &str) -> Known {
        let live = self.live().await;
        let me = self.sessions.node().clone();
        Known::Owned(Route::current(&self.sessions.placement(), session, me, |n| live.contains(n)))
    }

    /// The nodes up now (as of at most [`LIVE_SET_MAX_AGE`] ago).
    async fn live(&self) -> Arc<BTreeSet<NodeId>> {
        let cached = self.live.lock().ok().and_then(|g| g.clone());
        if let Some((at, set)) = &cached {
            if at.elapsed() < LIVE_SET_MAX_AGE {
                return set.clone();
            }
        }
        let set: Arc<BTreeSet<NodeId>> = match self.sessions.peers().await {
            Ok(m) => Arc::new(
                m.peers
                    .iter()
                    .filter(|p| p.up)
                    .map(|p| p.node.clone())
                    .chain(std::iter::once(self.sessions.node().clone()))
                    .collect(),
            ),
            // Shutting down: the last known membership is as good as any.
            Err(_) => return cached.map(|(_, s)| s).unwrap_or_default(),
        };
        if let Ok(mut g) = self.live.lock() {
            *g = Some((Instant::now(), set.clone()));
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer takes the last word of the store's calls on the session it asks about; a
    /// failed call leaves nothing, and outside the layer nothing is noted.
    #[tokio::test]
    async fn the_last_store_call_is_what_the_layer_learns() {
        learn("a", Some(Learned::Owned));
        let learned = |calls: Vec<(&'static str, Option<Learned>)>| {
            LEARNED.scope(RefCell::new(None), async move {
                for (id, what) in calls {
                    learn(id, what);
                }
                LEARNED.with(RefCell::take)
            })
        };
        let owned = Some(Learned::Owned);
        assert_eq!(learned(vec![("a", owned)]).await, Some(("a".into(), Learned::Owned)));
        assert_eq!(
            learned(vec![("a", owned), ("a", Some(Learned::Gone))]).await,
            Some(("a".into(), Learned::Gone))
        );
        assert_eq!(
            learned(vec![("a", Some(Learned::Gone)), ("b", owned)]).await,
            Some(("b".into(), Learned::Owned))
        );
        assert_eq!(learned(vec![("a", owned), ("a", None)]).await, None);
    }

    #[test]
    fn request_cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; id=abc%2Bd"));
        h.append(COOKIE, HeaderValue::from_static("M2MROUTE=app1.app2; id=second"));
        let sent = Sent::of(&h, "id", "M2MROUTE");
        assert_eq!(sent, Sent { session: Some("abc+d".into()), route: Some("app1.app2".into()) });
        assert_eq!(Sent::of(&h, "b", "c"), Sent { session: None, route: None });
    }
}
