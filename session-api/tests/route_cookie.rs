//! The route cookie layer in front of an axum app with the tower-sessions store: the route
//! names the node that owns the session and its failover target, follows a fetch, ignores
//! what the client claims, and is set only when it changes.
#![cfg(feature = "tower")]

mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::get;
use session_api::SessionManager;
use session_api::id::{Route, SessionIdParts};
use session_api::route_cookie::{DEFAULT_ROUTE_COOKIE, RouteCookieLayer};
use session_api::store::ReplicatedStore;
use support::Hub;
use support::web::{logout, start_domain, visit};
use tower_service::Service as _;
use tower_sessions::SessionManagerLayer;

fn app(sessions: &SessionManager) -> Router {
    let layer = SessionManagerLayer::new(ReplicatedStore::new(sessions.clone())).with_secure(false);
    Router::new()
        .route("/", get(visit))
        .route("/logout", get(logout))
        .route("/static", get(|| async { "no session used" }))
        .layer(layer)
        .layer(RouteCookieLayer::new(sessions.clone()))
        .with_state(sessions.node().to_string())
}

/// One request; the body and the cookies set (`name=value`, `name=` for a removal).
async fn call(app: &Router, path: &str, cookies: &[String]) -> (String, Vec<(String, String)>) {
    let mut req = Request::get(path);
    if !cookies.is_empty() {
        req = req.header(header::COOKIE, cookies.join("; "));
    }
    let res = app.clone().call(req.body(Body::empty()).expect("request")).await.expect("infallible");
    assert_eq!(res.status(), 200);
    let set: Vec<(String, String)> = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| {
            let v = v.to_str().ok()?;
            let (k, rest) = v.split_once('=')?;
            let value = if v.contains("Max-Age=0") { "" } else { rest.split(';').next()? };
            Some((k.to_owned(), value.to_owned()))
        })
        .collect();
    let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.expect("body");
    (String::from_utf8(body.to_vec()).expect("utf-8"), set)
}

fn cookie<'a>(set: &'a [(String, String)], name: &str) -> Option<&'a str> {
    set.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_cookie_names_the_owner_and_follows_it() {
    let hub = Hub::new();
    let managers = start_domain(&hub, &["a", "b", "c"], 7001).await;
    let (a, b) = (app(&managers[0]), app(&managers[1]));
    let placement = managers[0].placement().clone();
    let r = DEFAULT_ROUTE_COOKIE;

    // Created on a: the route is a and the failover target placement gives the session.
    let (body, set) = call(&a, "/", &[]).await;
    assert_eq!(body, "a 1");
    let id = cookie(&set, "id").expect("a session cookie").to_owned();
    let route = Route::parse(cookie(&set, r).expect("a route cookie")).expect("a route");
    assert_eq!(route, Route::current(&placement, &id, managers[0].node().clone(), |_| true));
    assert!(route.failover.is_some(), "{route}");
    let mut jar = vec![format!("id={id}"), format!("{r}={route}")];

    // Unchanged route: not set again.
    let (body, set) = call(&a, "/", &jar).await;
    assert_eq!(body, "a 2");
    assert_eq!(cookie(&set, r), None, "{set:?}");

    // A fetch by b: the next response names b.
    let (body, set) = call(&b, "/", &jar).await;
    assert_eq!(body, "b 3");
    let moved = Route::parse(cookie(&set, r).expect("the new route")).expect("a route");
    assert_eq!(moved.owner.as_str(), "b");
    jar[1] = format!("{r}={moved}");

    // A response that did not use the session, from a node that does not own it: no route.
    let (_, set) = call(&a, "/static", &jar).await;
    assert_eq!(cookie(&set, r), None, "a does not own the session: {set:?}");

    // What the client claims is never trusted: b answers with the real route.
    for bad in ["evil.zzz", "a.b", "%%%", ""] {
        let claimed = vec![jar[0].clone(), format!("{r}={bad}")];
        let (_, set) = call(&b, "/", &claimed).await;
        assert_eq!(cookie(&set, r), Some(moved.to_string().as_str()), "claimed {bad:?}");
    }

    // Deleting the session removes the route.
    let (_, set) = call(&b, "/logout", &jar).await;
    assert_eq!(cookie(&set, r), Some(""), "{set:?}");
}

/// Ids made by `new_session` name the owner and its failover target, as the README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_session_ids_name_the_failover_target() {
    let hub = Hub::new();
    let managers = start_domain(&hub, &["a", "b", "c"], 7101).await;
    let m = &managers[0];
    for _ in 0..20 {
        let s = m.new_session().expect("a new session");
        let parts = SessionIdParts::parse(s.id()).expect("an m2m id");
        assert_eq!(parts.owner.as_str(), "a");
        assert_eq!(
            parts.failover,
            m.placement().failover_owner(s.id(), &parts.owner, |_| true),
            "{}",
            s.id()
        );
    }
}

/// A response about a session the store loaded and saved gets its route from what the store
/// learned during the request: the node's driver serves the load and the write, and no look-up
/// of the owner. After a crash, the response of the node that took the session over names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_cookie_costs_no_driver_trip() {
    let hub = Hub::new();
    let managers = start_domain(&hub, &["a", "b", "c"], 7201).await;
    let apps: Vec<Router> = managers.iter().map(app).collect();
    let r = DEFAULT_ROUTE_COOKIE;
    let (_, set) = call(&apps[0], "/", &[]).await;
    let id = cookie(&set, "id").expect("a session cookie").to_owned();
    let route = Route::parse(cookie(&set, r).expect("a route cookie")).expect("a route");
    let jar = vec![format!("id={id}"), format!("{r}={route}")];

    // The layer refreshes the membership it caches every 250 ms (one more request): the fewest
    // requests over a few rounds count. Each round's second snapshot counts itself.
    let requests = || async { managers[0].metrics().await.expect("metrics").requests };
    let mut fewest = u64::MAX;
    for visits in 2..7 {
        let before = requests().await;
        let (body, set) = call(&apps[0], "/", &jar).await;
        let after = requests().await;
        assert_eq!(body, format!("a {visits}"));
        assert_eq!(cookie(&set, r), None, "unchanged route: {set:?}");
        fewest = fewest.min(after - before - 1);
    }
    assert_eq!(fewest, 2, "the load and the write only");

    // The owner crashes: its failover target takes the session over and names itself.
    let target = route.failover.clone().expect("a failover target");
    let i = managers.iter().position(|m| m.node() == &target).expect("a node of the domain");
    managers[0].abort().await.expect("abort");
    let (body, set) = call(&apps[i], "/", &jar).await;
    assert_eq!(body, format!("{target} 7"));
    let moved = Route::parse(cookie(&set, r).expect("the new route")).expect("a route");
    assert_eq!(moved.owner, target);
}
