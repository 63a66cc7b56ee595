//! Pieces of the axum apps the tower tests serve: handlers and a started domain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use session_api::SessionManager;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_sessions::Session;

use super::{Hub, domain_text, eventually, parse};

/// `GET /`: counts the session's visits, answers `<node> <visits>`.
pub async fn visit(State(node): State<String>, session: Session) -> String {
    let visits: u64 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
    session.insert("visits", visits).await.expect("insert");
    format!("{node} {visits}")
}

/// `GET /logout`: deletes the session.
pub async fn logout(session: Session) -> &'static str {
    session.delete().await.expect("delete");
    "bye"
}

/// An HTTP answer: status, the first `Set-Cookie` header whole, and the body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub set_cookie: Option<String>,
    pub body: String,
}

impl Reply {
    /// The `name=value` part of the `Set-Cookie` header.
    pub fn cookie(&self) -> Option<String> {
        self.set_cookie.as_ref().map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
    }

    /// The value of the cookie set.
    pub fn cookie_value(&self) -> Option<String> {
        self.cookie().map(|c| c.split_once('=').map(|(_, v)| v.to_owned()).unwrap_or_default())
    }

    /// An attribute of the `Set-Cookie` header (`Some("")` for a flag such as `HttpOnly`).
    pub fn cookie_attribute(&self, name: &str) -> Option<String> {
        self.set_cookie.as_ref()?.split(';').skip(1).find_map(|a| {
            let (k, v) = a.trim().split_once('=').unwrap_or((a.trim(), ""));
            k.eq_ignore_ascii_case(name).then(|| v.to_owned())
        })
    }

    /// The cookie's `Max-Age` in seconds.
    pub fn max_age(&self) -> Option<i64> {
        self.cookie_attribute("Max-Age").and_then(|v| v.parse().ok())
    }
}

/// A tiny HTTP/1.1 client: one `GET`, with a `Cookie` header when given.
pub async fn http_request(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Reply {
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
    let set_cookie = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("set-cookie").then(|| value.trim().to_owned())
    });
    // Chunked bodies: keep the chunk payloads only.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body.split("\r\n").skip(1).step_by(2).collect::<Vec<_>>().join("")
    } else {
        body.to_owned()
    };
    Reply { status, set_cookie, body }
}

/// [`http_request`] as `(status, cookie name=value, body)`.
pub async fn http_get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
    let r = http_request(addr, path, cookie).await;
    let cookie = r.cookie();
    (r.status, cookie, r.body)
}

/// Peer-to-peer nodes `names` on `hub`, started and not waited for.
pub async fn start_nodes(hub: &Arc<Hub>, names: &[&str], first_port: u16) -> Vec<SessionManager> {
    let nodes: Vec<(&str, String, &str)> =
        names.iter().zip(first_port..).map(|(n, port)| (*n, format!("127.0.0.1:{port}"), "both")).collect();
    let cfg = parse(&domain_text("", &nodes));
    let mut managers = Vec::new();
    for n in names {
        let m = SessionManager::builder(cfg.clone(), n)
            .transport(hub.attach(n) as Arc<_>)
            .start()
            .await
            .expect("starts");
        managers.push(m);
    }
    managers
}

/// Peer-to-peer nodes `names` on loopback TCP with mutual TLS (certificates from
/// `tls::init_dir` in a temporary folder, returned to be kept while they run) and the default
/// timings, as a new user runs them; started and not waited for.
#[cfg(feature = "tcp")]
pub async fn start_tls_nodes(names: &[&str]) -> (Vec<SessionManager>, tempfile::TempDir) {
    let listeners: Vec<std::net::TcpListener> =
        names.iter().map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    let nodes: Vec<(&str, String, &str)> = names
        .iter()
        .zip(&listeners)
        .map(|(n, l)| (*n, l.local_addr().expect("bound").to_string(), "both"))
        .collect();
    let text = domain_text("transport = \"tcp\"\n", &nodes).replace(super::TIMING, "");
    let cfg = parse(&text);
    let dir = tempfile::tempdir().expect("tempdir");
    replication_core::tls::init_dir(&cfg, dir.path()).expect("certs");
    let mut managers = Vec::new();
    for (n, l) in names.iter().zip(listeners) {
        let m = SessionManager::builder(cfg.clone(), n)
            .tcp_listener(l)
            .certs_dir(dir.path())
            .start()
            .await
            .expect("starts");
        managers.push(m);
    }
    (managers, dir)
}

/// Peer-to-peer nodes `names` on `hub` (addresses from `first_port` on), each seeing the others up.
pub async fn start_domain(hub: &Arc<Hub>, names: &[&str], first_port: u16) -> Vec<SessionManager> {
    let managers = start_nodes(hub, names, first_port).await;
    let others = names.len() - 1;
    for m in &managers {
        eventually(10, "peers up", || async {
            (m.metrics().await.ok()?.core.peers_up == others).then_some(())
        })
        .await;
    }
    managers
}
