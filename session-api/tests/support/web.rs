//! Pieces of the axum apps the tower tests serve: handlers and a started domain.

use std::sync::Arc;

use axum::extract::State;
use session_api::SessionManager;
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

/// Peer-to-peer nodes `names` on `hub` (addresses from `first_port` on), each seeing the others up.
pub async fn start_domain(hub: &Arc<Hub>, names: &[&str], first_port: u16) -> Vec<SessionManager> {
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
    let others = names.len() - 1;
    for m in &managers {
        eventually(10, "peers up", || async {
            (m.metrics().await.ok()?.core.peers_up == others).then_some(())
        })
        .await;
    }
    managers
}
