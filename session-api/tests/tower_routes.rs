//! The tower-sessions store tried as tower-sessions' own route tests try a store: every store
//! operation (insert, get, remove, cycle id, flush, expiry changes, unknown and malformed
//! cookies) through a real axum app, on one node, alternating between two nodes on every
//! request (a balancer without affinity), and right after the nodes start. No request may fail.
#![cfg(feature = "tower")]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use session_api::SessionManager;
use session_api::store::{ReplicatedStore, UnavailableLayer};
use support::Hub;
#[cfg(feature = "tcp")]
use support::web::start_tls_nodes;
use support::web::{Reply, http_request, start_domain, start_nodes};
use time::{Duration, OffsetDateTime};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// A store error: 500 with the error as the body.
fn failed<E: std::fmt::Display>(e: E) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// tower-sessions' test routes; a store error answers 500 (503 through `UnavailableLayer`).
fn routes() -> Router {
    Router::new()
        .route("/", get(|_: Session| async { "Hello, world!" }))
        .route("/insert", get(|s: Session| async move { s.insert("foo", 42).await.map_err(failed) }))
        .route(
            "/get",
            get(|s: Session| async move {
                let v: Option<usize> = s.get("foo").await.map_err(failed)?;
                v.map(|v| v.to_string()).ok_or((StatusCode::NOT_FOUND, String::new()))
            }),
        )
        .route(
            "/get_value",
            get(|s: Session| async move { s.get_value("foo").await.map(|v| format!("{v:?}")).map_err(failed) }),
        )
        .route("/remove", get(|s: Session| async move { s.remove::<usize>("foo").await.map(|_| ()).map_err(failed) }))
        .route("/remove_value", get(|s: Session| async move { s.remove_value("foo").await.map(|_| ()).map_err(failed) }))
        .route("/cycle_id", get(|s: Session| async move { s.cycle_id().await.map_err(failed) }))
        .route("/flush", get(|s: Session| async move { s.flush().await.map_err(failed) }))
        .route(
            "/set_expiry",
            get(|s: Session| async move {
                s.set_expiry(Some(Expiry::AtDateTime(OffsetDateTime::now_utc() + Duration::days(1))));
            }),
        )
        .route("/remove_expiry", get(|s: Session| async move { s.set_expiry(Some(Expiry::OnSessionEnd)) }))
}

/// Serves the routes over `sessions`, with the sessions expiring after an hour of inactivity
/// (`hourly`) or at the end of the browser session.
async fn serve(sessions: SessionManager, hourly: bool) -> SocketAddr {
    let mut layer = SessionManagerLayer::new(ReplicatedStore::new(sessions));
    if hourly {
        layer = layer.with_expiry(Expiry::OnInactivity(Duration::hours(1)));
    }
    let app = routes().layer(layer).layer(UnavailableLayer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The app on every node, both expiry settings; each request goes to the next node when
/// `alternate`, else to the first.
struct Apps {
    hourly: Vec<SocketAddr>,
    session_end: Vec<SocketAddr>,
    alternate: bool,
    next: AtomicUsize,
}

impl Apps {
    async fn new(managers: &[SessionManager], alternate: bool) -> Apps {
        let (mut hourly, mut session_end) = (Vec::new(), Vec::new());
        for m in managers {
            hourly.push(serve(m.clone(), true).await);
            session_end.push(serve(m.clone(), false).await);
        }
        Apps { hourly, session_end, alternate, next: AtomicUsize::new(0) }
    }

    /// A request that must succeed (200).
    async fn get(&self, hourly: bool, path: &str, cookie: Option<&str>) -> Reply {
        let addrs = if hourly { &self.hourly } else { &self.session_end };
        let i = if self.alternate { self.next.fetch_add(1, Ordering::Relaxed) % addrs.len() } else { 0 };
        let started = std::time::Instant::now();
        let r = http_request(addrs[i], path, cookie).await;
        assert_eq!(
            r.status,
            200,
            "{path} on node {i} (cookie {cookie:?}) after {:?}: {r:?}",
            started.elapsed()
        );
        r
    }
}

fn near(actual: Option<i64>, expected: i64) -> bool {
    actual.is_some_and(|a| (a - expected).abs() <= 1)
}

/// The scenarios of tower-sessions' `route_tests!`, and `/remove`.
async fn scenarios(apps: &Apps) {
    // No session used: no cookie.
    let r = apps.get(true, "/", None).await;
    assert!(r.set_cookie.is_none(), "no session, no cookie: {r:?}");

    // A well-formed cookie for a session no node has: a new session.
    let bogus = tower_sessions::session::Id::default().to_string();
    let r = apps.get(true, "/insert", Some(&format!("id={bogus}"))).await;
    let value = r.cookie_value().expect("a new session's cookie");
    assert!(value != bogus && !value.is_empty(), "{r:?}");

    // A malformed cookie: ignored.
    let r = apps.get(true, "/", Some("id=malformed")).await;
    assert!(r.cookie_value().is_none_or(|v| v != "malformed"), "{r:?}");

    // A new session's cookie.
    let r = apps.get(true, "/insert", None).await;
    assert_eq!(r.cookie().and_then(|c| c.split_once('=').map(|(n, _)| n.to_owned())).as_deref(), Some("id"));
    assert_eq!(r.cookie_attribute("HttpOnly").as_deref(), Some(""));
    assert_eq!(r.cookie_attribute("SameSite").as_deref(), Some("Strict"));
    assert_eq!(r.cookie_attribute("Path").as_deref(), Some("/"));
    assert!(r.max_age().is_some_and(|a| a <= HOUR), "{r:?}");
    let r = apps.get(false, "/insert", None).await;
    assert!(r.cookie().is_some() && r.max_age().is_none(), "a session-end cookie has no Max-Age: {r:?}");

    // Insert, then get.
    let cookie = apps.get(true, "/insert", None).await.cookie().expect("cookie");
    assert_eq!(apps.get(true, "/get", Some(&cookie)).await.body, "42");

    // No value.
    assert_eq!(apps.get(true, "/get_value", None).await.body, "None");

    // Insert, remove the last value, get: none.
    let cookie = apps.get(true, "/insert", None).await.cookie().expect("cookie");
    apps.get(true, "/remove_value", Some(&cookie)).await;
    assert_eq!(apps.get(true, "/get_value", Some(&cookie)).await.body, "None");

    // Insert, remove (typed), get: none.
    let cookie = apps.get(true, "/insert", None).await.cookie().expect("cookie");
    apps.get(true, "/remove", Some(&cookie)).await;
    assert_eq!(apps.get(true, "/get_value", Some(&cookie)).await.body, "None");

    // Cycle the id: the data moves to the new id, the old one is gone.
    let first = apps.get(true, "/insert", None).await.cookie().expect("cookie");
    let second = apps.get(true, "/cycle_id", Some(&first)).await.cookie().expect("a new cookie");
    assert_ne!(first, second);
    assert_eq!(apps.get(true, "/get", Some(&second)).await.body, "42");
    assert_eq!(apps.get(true, "/get_value", Some(&first)).await.body, "None");

    // Flush: the cookie is removed, the session gone.
    let cookie = apps.get(true, "/insert", None).await.cookie().expect("cookie");
    let r = apps.get(true, "/flush", Some(&cookie)).await;
    assert_eq!(r.cookie_value().as_deref(), Some(""), "{r:?}");
    assert_eq!(r.max_age(), Some(0));
    assert_eq!(apps.get(true, "/get_value", Some(&cookie)).await.body, "None");

    // Expiry set to a day.
    let r = apps.get(true, "/insert", None).await;
    assert!(near(r.max_age(), HOUR), "{r:?}");
    let r = apps.get(true, "/set_expiry", Some(&r.cookie().expect("cookie"))).await;
    assert!(near(r.max_age(), DAY), "{r:?}");

    // Expiry type changes: session end to a date, inactivity to session end.
    let r = apps.get(false, "/insert", None).await;
    assert_eq!(r.max_age(), None);
    let r = apps.get(false, "/set_expiry", Some(&r.cookie().expect("cookie"))).await;
    assert!(near(r.max_age(), DAY), "{r:?}");
    let r = apps.get(true, "/insert", None).await;
    let cookie = r.cookie().expect("cookie");
    let r = apps.get(true, "/remove_expiry", Some(&cookie)).await;
    assert!(r.cookie().is_some() && r.max_age().is_none(), "{r:?}");
    assert_eq!(apps.get(true, "/get", Some(&cookie)).await.body, "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_tests_on_one_node() {
    let hub = Hub::new();
    let managers = start_domain(&hub, &["a", "b"], 7101).await;
    scenarios(&Apps::new(&managers, false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_tests_alternating_between_two_nodes() {
    let hub = Hub::new();
    let managers = start_domain(&hub, &["a", "b"], 7111).await;
    let apps = Apps::new(&managers, true).await;
    for _ in 0..3 {
        scenarios(&apps).await;
    }
}

/// Two nodes on loopback TCP with mutual TLS, requests alternating from the moment `start()`
/// returns: they wait for the node's view of the domain to settle instead of failing.
#[cfg(feature = "tcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_tests_over_tls_alternating_right_after_start() {
    for _ in 0..2 {
        let (managers, _certs) = start_tls_nodes(&["a", "b"]).await;
        let apps = Apps::new(&managers, true).await;
        for _ in 0..3 {
            scenarios(&apps).await;
        }
        for m in &managers {
            m.shutdown().await.expect("leaves");
        }
    }
}

/// Two nodes on loopback TCP with mutual TLS, once both are ready, requests alternating: a
/// session moves to the other node on every request, at once.
#[cfg(feature = "tcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_tests_over_tls_alternating_once_ready() {
    let (managers, _certs) = start_tls_nodes(&["a", "b"]).await;
    for m in &managers {
        m.ready().await.expect("ready");
    }
    let apps = std::sync::Arc::new(Apps::new(&managers, true).await);
    // As a test harness runs a suite: its tests at once, each alternating.
    let runs: Vec<_> = (0..13)
        .map(|_| {
            let apps = apps.clone();
            tokio::spawn(async move { scenarios(&apps).await })
        })
        .collect();
    for r in runs {
        r.await.expect("scenarios pass");
    }
}

/// Requests from the moment `start()` returns: they wait for the node's view of the domain
/// to settle instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_tests_right_after_start() {
    for round in 0..3u16 {
        let hub = Hub::new();
        let managers = start_nodes(&hub, &["a", "b"], 7121 + 2 * round).await;
        scenarios(&Apps::new(&managers, true).await).await;
    }
}

/// Each node answers for every session once `ready()` resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_resolves_once_the_node_answers_for_every_id() {
    let hub = Hub::new();
    let managers = start_nodes(&hub, &["a", "b"], 7131).await;
    for m in &managers {
        tokio::time::timeout(std::time::Duration::from_secs(5), m.ready())
            .await
            .expect("ready in time")
            .expect("ready");
        assert!(m.is_ready().await);
    }
    assert!(managers[1].get("not-a-session").await.expect("answered").is_none());
}

/// Reads of one session from both nodes at once (a page's parallel requests behind a balancer
/// without affinity), for a session that exists and for one that does not: every read is
/// answered, none fenced.
#[cfg(feature = "tcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_reads_of_one_session_from_two_nodes() {
    let (managers, _certs) = start_tls_nodes(&["a", "b"]).await;
    for m in &managers {
        m.ready().await.expect("ready");
    }
    for exists in [true, false] {
        let id = if exists {
            managers[0].create().await.expect("created").id().to_owned()
        } else {
            tower_sessions::session::Id::default().to_string()
        };
        let reads: Vec<_> = (0..12)
            .map(|i| {
                let (m, id) = (managers[i % 2].clone(), id.clone());
                tokio::spawn(async move { m.get(&id).await.map(|s| s.is_some()) })
            })
            .collect();
        for r in reads {
            assert_eq!(r.await.expect("joined").expect("answered"), exists);
        }
    }
}

/// A node whose peer never starts is ready once its view settles (one failure timeout), and
/// answers then; with every peer up it is ready at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_with_a_peer_down() {
    let hub = Hub::new();
    let nodes = [("a", "127.0.0.1:7141".to_owned(), "both"), ("b", "127.0.0.1:7142".to_owned(), "both")];
    let cfg = support::parse(&support::domain_text("", &nodes));
    let a = SessionManager::builder(cfg, "a")
        .transport(hub.attach("a") as std::sync::Arc<_>)
        .start()
        .await
        .expect("a");
    tokio::time::timeout(std::time::Duration::from_secs(5), a.ready())
        .await
        .expect("ready in time")
        .expect("ready");
    assert!(a.is_ready().await);
    assert!(a.get("not-a-session").await.expect("answered").is_none());
}
