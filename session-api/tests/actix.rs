//! The actix-session store behind real actix-web apps on two in-process nodes (loopback TCP,
//! mutual TLS, default timings): every store
//! operation (insert, get, remove, renew, purge, TTL refresh, unknown and malformed cookies)
//! alternating between the nodes on every request, right after start; then the owner of a
//! session is stopped at once (`SessionManager::abort`, the in-process stand-in for a
//! SIGKILL) and the other node still serves the session intact.
#![cfg(all(feature = "actix", feature = "tcp"))]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_session::config::{PersistentSession, TtlExtensionPolicy};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::cookie::time::Duration;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use session_api::SessionManager;
use session_api::actix::{ActixStore, unavailable_as_503};
use support::web::{Reply, http_request, start_tls_nodes};

const HOUR: i64 = 3600;

async fn insert(session: Session) -> actix_web::Result<HttpResponse> {
    session.insert("foo", 42)?;
    Ok(HttpResponse::Ok().finish())
}

async fn read(session: Session) -> actix_web::Result<String> {
    Ok(format!("{:?}", session.get::<usize>("foo")?))
}

async fn remove(session: Session) -> HttpResponse {
    session.remove("foo");
    HttpResponse::Ok().finish()
}

async fn renew(session: Session) -> HttpResponse {
    session.renew();
    HttpResponse::Ok().finish()
}

async fn purge(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().finish()
}

/// Serves the routes over `sessions` (one worker), cookies signed with `key`, sessions living
/// an hour, refreshed on every request.
fn serve(sessions: SessionManager, key: Key) -> SocketAddr {
    let store = ActixStore::new(sessions);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = HttpServer::new(move || {
        let lifecycle = PersistentSession::default()
            .session_ttl(Duration::hours(1))
            .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest);
        App::new()
            .route("/", web::get().to(HttpResponse::Ok))
            .route("/insert", web::get().to(insert))
            .route("/get", web::get().to(read))
            .route("/remove", web::get().to(remove))
            .route("/renew", web::get().to(renew))
            .route("/purge", web::get().to(purge))
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_secure(false)
                    .session_lifecycle(lifecycle)
                    .build(),
            )
            .wrap(from_fn(unavailable_as_503))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    actix_web::rt::spawn(server);
    addr
}

/// The app on every node; each request goes to the next one.
struct Apps {
    addrs: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Apps {
    fn new(managers: &[SessionManager]) -> Apps {
        let key = Key::generate();
        Apps {
            addrs: managers.iter().map(|m| serve(m.clone(), key.clone())).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A request that must succeed (200), on the next node.
    async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len();
        self.on(i, path, cookie).await
    }

    /// A request that must succeed (200), on node `i`.
    async fn on(&self, i: usize, path: &str, cookie: Option<&str>) -> Reply {
        let r = http_request(self.addrs[i], path, cookie).await;
        assert_eq!(r.status, 200, "{path} on node {i} (cookie {cookie:?}): {r:?}");
        r
    }
}

/// The store operations, each request on the next node.
async fn scenarios(apps: &Apps) {
    // No session used: no cookie.
    assert!(apps.get("/", None).await.set_cookie.is_none());

    // Insert, then get.
    let r = apps.get("/insert", None).await;
    let cookie = r.cookie().expect("a session cookie");
    assert!(r.max_age().is_some_and(|a| (a - HOUR).abs() <= 1), "{r:?}");
    assert_eq!(apps.get("/get", Some(&cookie)).await.body, "Some(42)");
    // The TTL is refreshed on every request (`update_ttl`), the session still there.
    let r = apps.get("/", Some(&cookie)).await;
    assert!(r.max_age().is_some_and(|a| (a - HOUR).abs() <= 1), "refreshed: {r:?}");
    assert_eq!(apps.get("/get", Some(&cookie)).await.body, "Some(42)");

    // Remove the value.
    let r = apps.get("/remove", Some(&cookie)).await;
    let cookie = r.cookie().unwrap_or(cookie);
    assert_eq!(apps.get("/get", Some(&cookie)).await.body, "None");

    // Renew: the data moves to a new key, the old key is gone.
    let first = apps.get("/insert", None).await.cookie().expect("cookie");
    let second = apps.get("/renew", Some(&first)).await.cookie().expect("a new cookie");
    assert_ne!(first, second);
    assert_eq!(apps.get("/get", Some(&second)).await.body, "Some(42)");
    assert_eq!(apps.get("/get", Some(&first)).await.body, "None");

    // Purge: the cookie is removed, the session gone.
    let cookie = apps.get("/insert", None).await.cookie().expect("cookie");
    let r = apps.get("/purge", Some(&cookie)).await;
    assert_eq!(r.cookie_value().as_deref(), Some(""), "{r:?}");
    assert_eq!(apps.get("/get", Some(&cookie)).await.body, "None");

    // A cookie signed with another key, and a malformed one: a new session.
    let r = apps
        .get("/insert", Some("id=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .await;
    assert!(r.cookie().is_some());
    let r = apps.get("/get", Some("id=malformed")).await;
    assert_eq!(r.body, "None");
}

#[test]
fn actix_store_alternating_between_two_nodes_from_start() {
    actix_web::rt::System::new().block_on(async {
        let (managers, _certs) = start_tls_nodes(&["a", "b"]).await;
        let apps = Apps::new(&managers);
        for _ in 0..3 {
            scenarios(&apps).await;
        }
    });
}

#[test]
fn actix_session_survives_its_owner_stopped_at_once() {
    actix_web::rt::System::new().block_on(async {
        let (managers, _certs) = start_tls_nodes(&["a", "b"]).await;
        for m in &managers {
            m.ready().await.expect("ready");
        }
        let apps = Apps::new(&managers);
        // Created on a (its owner), read on b, written on a again.
        let cookie = apps.on(0, "/insert", None).await.cookie().expect("cookie");
        assert_eq!(apps.on(1, "/get", Some(&cookie)).await.body, "Some(42)");
        let cookie = apps.on(0, "/remove", Some(&cookie)).await.cookie().unwrap_or(cookie);
        let cookie = apps.on(0, "/insert", Some(&cookie)).await.cookie().unwrap_or(cookie);
        assert_eq!(managers[0].owned_sessions().await.expect("owned").len(), 1, "a owns the session");
        // a stops at once; b serves the session from its backup.
        managers[0].abort().await.expect("abort");
        assert_eq!(apps.on(1, "/get", Some(&cookie)).await.body, "Some(42)");
    });
}
