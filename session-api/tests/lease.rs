//! The read lease through the library: an owner cut off from the majority answers
//! `Error::Unavailable` (the admin API's 503) instead of its stale copy.

mod support;

use std::sync::Arc;
use std::time::Duration;

use replication_core::{DomainConfig, Role};
use session_api::{AckPolicy, Error, SessionManager};
use support::{Hub, domain_text, eventually, parse};

fn cfg(names: &[&str]) -> DomainConfig {
    let nodes: Vec<(&str, String, &str)> =
        names.iter().enumerate().map(|(i, n)| (*n, format!("127.0.0.1:{}", 7400 + i), "both")).collect();
    parse(&domain_text("", &nodes))
}

async fn start(hub: &Arc<Hub>, cfg: &DomainConfig, name: &str) -> SessionManager {
    SessionManager::builder(cfg.clone(), name)
        .transport(hub.attach(name))
        .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) })
        .start()
        .await
        .expect("starts")
}

#[tokio::test]
async fn a_cut_off_owner_answers_unavailable_not_its_stale_copy() {
    let hub = Hub::new();
    let cfg = cfg(&["a", "b", "c"]);
    let mut nodes = Vec::new();
    for n in ["a", "b", "c"] {
        nodes.push(start(&hub, &cfg, n).await);
    }
    for n in &nodes {
        eventually(10, "every peer up", || async {
            (n.metrics().await.ok()?.core.peers_up == 2).then_some(())
        })
        .await;
    }
    let a = &nodes[0];
    let mut s = eventually(10, "a creates", || async { a.create().await.ok() }).await;
    s.set("v", "a1").expect("encode");
    a.commit(&mut s).await.expect("commit");
    let id = s.id().to_owned();
    let target = session_api::id::SessionIdParts::parse(&id).expect("ours").failover.expect("has a target");
    let t = nodes.iter().find(|n| n.node() == &target).expect("target is a node");

    hub.partition("a", &["b", "c"], true);
    eventually(10, "target owns the session", || async {
        let v = t.view(&id).await.ok()??;
        (v.role == Role::Owner).then_some(())
    })
    .await;
    let ((), _) = t.update(&id, |s| s.set("v", "target")).await.expect("target writes");
    // The old owner still believes it owns the session, but holds no lease.
    assert_eq!(a.view(&id).await.expect("view").expect("held").role, Role::Owner);
    let read = a.get(&id).await.map(|s| s.map(|s| s.get::<String>("v")));
    assert!(matches!(read, Err(Error::Unavailable)), "a stale read: {read:?}");
    let write = a.update(&id, |s| s.set("v", "stale")).await;
    assert!(matches!(write, Err(Error::Unavailable)), "a write without the lease: {write:?}");

    hub.partition("a", &["b", "c"], false);
    let on_a = eventually(10, "the old owner reads the session", || async { a.get(&id).await.ok()? }).await;
    assert_eq!(on_a.get::<String>("v").expect("decode").as_deref(), Some("target"));
}
