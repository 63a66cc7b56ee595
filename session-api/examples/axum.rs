//! Several instances of one web application sharing sessions through m2m.
//!
//! ```text
//! cargo run -p session-api --features tower --example axum -- web.toml app1 127.0.0.1:8080 [certs-dir]
//! cargo run -p session-api --features tower --example axum -- web.toml app2 127.0.0.1:8081 [certs-dir]
//! curl -c jar -b jar http://127.0.0.1:8080/   # visits: 1 (served by app1)
//! curl -c jar -b jar http://127.0.0.1:8081/   # visits: 2 (app2 fetched the session)
//! ```
//!
//! Without a certificate folder the node runs insecure (loopback demos only). Ctrl-C leaves the
//! domain gracefully: the sessions this instance owns are handed to their backups.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use session_api::SessionManager;
use session_api::store::ReplicatedStore;
use tower_sessions::{Session, SessionManagerLayer};

async fn visit(State(node): State<String>, session: Session) -> String {
    let visits: u64 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
    if let Err(e) = session.insert("visits", visits).await {
        return format!("{node}: session error: {e}\n");
    }
    format!("{node}: visits {visits}\n")
}

async fn logout(State(node): State<String>, session: Session) -> String {
    match session.delete().await {
        Ok(()) => format!("{node}: session invalidated\n"),
        Err(e) => format!("{node}: session error: {e}\n"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(domain), Some(node), Some(http)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: axum <domain.toml> <node> <http-address> [certs-dir]");
        std::process::exit(2);
    };
    let builder = SessionManager::builder(domain.as_str(), &node);
    let builder = match args.next() {
        Some(dir) => builder.certs_dir(dir),
        None => {
            eprintln!("warning: no certificate folder given: replication runs without TLS (loopback only)");
            builder.insecure()
        }
    };
    let sessions = builder.start().await?;
    let layer = SessionManagerLayer::new(ReplicatedStore::new(sessions.clone())).with_secure(false);
    let app = Router::new()
        .route("/", get(visit))
        .route("/logout", get(logout))
        .layer(layer)
        .with_state(node.clone());
    let listener = tokio::net::TcpListener::bind(&http).await?;
    println!("{node}: http on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let report = sessions.shutdown().await?;
    println!(
        "{node}: left the domain ({} sessions handed off, {} unreplicated)",
        report.handed_off, report.unreplicated
    );
    Ok(())
}
