//! The tower-sessions store behind a real axum app: two instances on 127.0.0.1 share sessions.
#![cfg(feature = "tower")]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use session_api::SessionManager;
use session_api::store::ReplicatedStore;
use support::Hub;
use support::web::{logout, start_domain, visit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// A tiny HTTP/1.1 client: status, `Set-Cookie` value (name=value part) and body.
async fn http_get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{cookie}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8(buf).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let set_cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned());
    // Chunked bodies: keep the chunk payloads only.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body.split("\r\n").skip(1).step_by(2).collect::<Vec<_>>().join("")
    } else {
        body.to_owned()
    };
    (status, set_cookie, body)
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
