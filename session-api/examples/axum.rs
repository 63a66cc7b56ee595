//! Several instances of one web application sharing sessions through m2m, behind a load
//! balancer that keeps each session on its owner (the route cookie).
//!
//! ```text
//! cargo run -p session-api --features tower --example axum -- web.toml app1 127.0.0.1:8080 [certs-dir]
//! cargo run -p session-api --features tower --example axum -- web.toml app2 127.0.0.1:8081 [certs-dir]
//! curl -c jar -b jar http://127.0.0.1:8080/   # visits: 1 (served by app1)
//! curl -c jar -b jar http://127.0.0.1:8081/   # visits: 2 (app2 fetched the session)
//! ```
//!
//! The HTTP address may be left out when the domain file gives the node one (`http = ...`, as
//! in `examples/domains/load-balancer.toml`); options: `--http ADDR`, `--certs DIR`,
//! `--route-cookie NAME` (default `M2MROUTE`). Without a certificate folder the node runs
//! insecure (loopback demos only). Ctrl-C leaves the domain gracefully: the sessions this
//! instance owns are handed to their backups.
//!
//! Endpoints: `GET /` counts visits; `POST /counter` adds one to the session's counter and
//! `GET /counter` reads it (both answer `<node> <count>`); `POST /bench` adds one to the
//! counter and writes a 1 KiB attribute with it (what `scripts/bench-http.sh` drives);
//! `GET /logout` deletes the session; `GET /m2m/stats` is this node's counters as JSON
//! (sessions owned, ownerships acquired, failovers, peers up), for load-balancer tests.
//!
//! `axum --memory-store --http ADDR` serves the same application on tower-sessions'
//! `MemoryStore` (one process, nothing replicated): the baseline of `scripts/bench-http.sh`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use session_api::SessionManager;
use session_api::route_cookie::{DEFAULT_ROUTE_COOKIE, RouteCookieLayer};
use session_api::store::{ReplicatedStore, UnavailableLayer};
use tower_sessions::{MemoryStore, Session, SessionManagerLayer};

#[derive(Clone)]
struct App {
    node: String,
    /// `None` on the `MemoryStore`.
    sessions: Option<SessionManager>,
}

async fn visit(State(app): State<App>, session: Session) -> String {
    let visits: u64 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
    if let Err(e) = session.insert("visits", visits).await {
        return format!("{}: session error: {e}\n", app.node);
    }
    format!("{}: visits {visits}\n", app.node)
}

/// `POST /counter`: one more; the answer is sent after the session layer saved it (a failed
/// save answers 500), so a 200 means the count is held by this node and its backup.
async fn count(State(app): State<App>, session: Session) -> Result<String, Unavailable> {
    let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
    session.insert("counter", n).await?;
    Ok(format!("{} {n}\n", app.node))
}

/// `POST /bench`: one more on the counter and a 1 KiB attribute holding it, saved before the
/// answer `<node> <count>`.
async fn bench(State(app): State<App>, session: Session) -> Result<String, Unavailable> {
    let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
    session.insert("counter", n).await?;
    session.insert("data", format!("{n:0>1024}")).await?;
    Ok(format!("{} {n}\n", app.node))
}

async fn read_count(State(app): State<App>, session: Session) -> Result<String, Unavailable> {
    let n: u64 = session.get("counter").await?.unwrap_or(0);
    Ok(format!("{} {n}\n", app.node))
}

/// A session that cannot be read or written now: 503 with the reason.
struct Unavailable(String);

impl<E: std::fmt::Display> From<E> for Unavailable {
    fn from(e: E) -> Self {
        Unavailable(e.to_string())
    }
}

impl IntoResponse for Unavailable {
    fn into_response(self) -> Response {
        (StatusCode::SERVICE_UNAVAILABLE, format!("session error: {}\n", self.0)).into_response()
    }
}

async fn logout(State(app): State<App>, session: Session) -> String {
    match session.delete().await {
        Ok(()) => format!("{}: session invalidated\n", app.node),
        Err(e) => format!("{}: session error: {e}\n", app.node),
    }
}

async fn stats(State(app): State<App>) -> Result<Json<serde_json::Value>, Unavailable> {
    let Some(sessions) = &app.sessions else { return Err(Unavailable("no m2m node".into())) };
    let m = sessions.metrics().await?;
    Ok(Json(serde_json::json!({
        "node": app.node,
        "owned": m.sessions_owned(),
        "acquisitions": m.core.acquisitions,
        "failovers": m.failovers(),
        "peers_up": m.peers.iter().filter(|p| p.up).count(),
    })))
}

struct Options {
    domain: String,
    node: String,
    http: Option<String>,
    certs: Option<String>,
    route_cookie: String,
}

/// `--memory-store --http ADDR`: the address of the unreplicated baseline.
fn memory_store_option() -> Option<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match &args[..] {
        [flag, http, addr] | [http, addr, flag] if flag == "--memory-store" && http == "--http" => {
            Some(addr.clone())
        }
        _ => None,
    }
}

fn options() -> Option<Options> {
    let mut positional = Vec::new();
    let (mut http, mut certs, mut route_cookie) = (None, None, DEFAULT_ROUTE_COOKIE.to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--http" => http = Some(args.next()?),
            "--certs" => certs = Some(args.next()?),
            "--route-cookie" => route_cookie = args.next()?,
            _ if a.starts_with("--") => return None,
            _ => positional.push(a),
        }
    }
    let mut positional = positional.into_iter();
    let (domain, node) = (positional.next()?, positional.next()?);
    http = http.or_else(|| positional.next());
    certs = certs.or_else(|| positional.next());
    positional.next().is_none().then_some(Options { domain, node, http, certs, route_cookie })
}

/// The application's routes (the session layer goes on by the caller).
fn routes() -> Router<App> {
    Router::new()
        .route("/", get(visit))
        .route("/counter", get(read_count).post(count))
        .route("/bench", post(bench))
        .route("/logout", get(logout))
        .route("/m2m/stats", get(stats))
}

/// Serves the application on tower-sessions' `MemoryStore` at `http` until Ctrl-C.
async fn serve_memory_store(http: &str) -> Result<(), Box<dyn std::error::Error>> {
    let layer = SessionManagerLayer::new(MemoryStore::default()).with_secure(false);
    let app = routes().layer(layer).with_state(App { node: "memory".into(), sessions: None });
    let listener = tokio::net::TcpListener::bind(http).await?;
    println!("memory: http on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(http) = memory_store_option() {
        return serve_memory_store(&http).await;
    }
    let Some(opts) = options() else {
        eprintln!(
            "usage: axum <domain.toml> <node> [<http-address>] [<certs-dir>] \
             [--http ADDR] [--certs DIR] [--route-cookie NAME]\n       axum --memory-store --http ADDR"
        );
        std::process::exit(2);
    };
    let builder = SessionManager::builder(opts.domain.as_str(), &opts.node);
    let builder = match &opts.certs {
        Some(dir) => builder.certs_dir(dir),
        None => {
            eprintln!("warning: no certificate folder given: replication runs without TLS (loopback only)");
            builder.insecure()
        }
    };
    let sessions = builder.start().await?;
    let http = match opts.http {
        Some(a) => a,
        None => {
            let domain = sessions.domain();
            let me = domain.nodes.iter().find(|n| n.name.as_str() == opts.node);
            match me.and_then(|n| n.http.as_ref()) {
                Some(a) => a.to_string(),
                None => {
                    eprintln!("{}: no HTTP address: give one, or `http = ...` in the domain file", opts.node);
                    std::process::exit(2);
                }
            }
        }
    };
    let layer = SessionManagerLayer::new(ReplicatedStore::new(sessions.clone())).with_secure(false);
    let app = routes()
        .layer(layer)
        // Outside the session layer: a session that cannot be reached now answers 503.
        .layer(UnavailableLayer)
        // Outside the session layer: it reads the session's id once the session is saved.
        .layer(RouteCookieLayer::new(sessions.clone()).with_name(opts.route_cookie))
        .with_state(App { node: opts.node.clone(), sessions: Some(sessions.clone()) });
    let listener = tokio::net::TcpListener::bind(&http).await?;
    println!("{}: http on {}", opts.node, listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let report = sessions.shutdown().await?;
    println!(
        "{}: left the domain ({} sessions handed off, {} unreplicated)",
        opts.node, report.handed_off, report.unreplicated
    );
    Ok(())
}
