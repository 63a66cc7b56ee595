//! The tower-sessions store behind a real axum app: two instances on 127.0.0.1 share sessions.
#![cfg(feature = "tower")]

mod support;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use session_api::SessionManager;
use session_api::store::ReplicatedStore;
use support::Hub;
use support::web::{http_get, logout, start_domain, visit};
use tower_sessions::SessionManagerLayer;

async fn serve(sessions: SessionManager) -> SocketAddr {
    let node = sessions.node().to_string();
    let layer = SessionManagerLayer::new(ReplicatedStore::new(sessions)).with_secure(false);
    let app =
        Router::new().route("/", get(visit)).route("/logout", get(logout)).layer(layer).with_state(node);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_instances_share_sessions_through_the_store() {
    let hub = Hub::new();
    let managers = start_domain(&hub, &["a", "b"], 7001).await;
    let a = serve(managers[0].clone()).await;
    let b = serve(managers[1].clone()).await;

    let (status, cookie, body) = http_get(a, "/", None).await;
    assert_eq!((status, body.as_str()), (200, "a 1"));
    let cookie = cookie.expect("a session cookie");
    let (_, _, body) = http_get(b, "/", Some(&cookie)).await;
    assert_eq!(body, "b 2", "b continues the session created on a");
    let (_, _, body) = http_get(a, "/", Some(&cookie)).await;
    assert_eq!(body, "a 3");

    let (status, _, _) = http_get(b, "/logout", Some(&cookie)).await;
    assert_eq!(status, 200);
    let (_, _, body) = http_get(a, "/", Some(&cookie)).await;
    assert_eq!(body, "a 1", "a deleted session starts over");
}
