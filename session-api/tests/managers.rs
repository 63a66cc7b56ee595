//! Several session managers on one node, on the in-memory hub: one namespace of ids per
//! manager, per-manager settings, the error for an undeclared manager, per-manager counts.

mod support;

use std::sync::Arc;
use std::time::Duration;

use session_api::{AckPolicy, Attributes, Error, ManagerSettings, SessionManager};
use support::{Hub, eventually, parse};

/// Nodes `a`, `b`, `c`, each declaring `cart` and `profile`.
fn text() -> String {
    let mut t = format!("[domain]\nname = \"test\"\n{}", support::TIMING);
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        t.push_str(&format!(
            "[[node]]\nname = \"{n}\"\naddress = \"127.0.0.1:{}\"\nmanagers = {{ cart = \"both\", profile = \"both\" }}\n",
            7400 + i
        ));
    }
    t
}

async fn start(hub: &Arc<Hub>, cfg: &replication_core::DomainConfig, n: &str) -> SessionManager {
    SessionManager::builder(cfg.clone(), n)
        .transport(hub.attach(n) as Arc<_>)
        .manager("cart")
        .manager_settings("profile", ManagerSettings::default().ack(AckPolicy::Async))
        .start()
        .await
        .expect("starts")
}

/// Nodes `a`, `b` and `c` on `hub`, each seeing the others up (handles of `cart`).
async fn start_all(hub: &Arc<Hub>) -> Vec<SessionManager> {
    let cfg = parse(&text());
    let mut nodes = Vec::new();
    for n in ["a", "b", "c"] {
        nodes.push(start(hub, &cfg, n).await);
    }
    for n in &nodes {
        eventually(10, "peers up", || async { (n.metrics().await.ok()?.core.peers_up == 2).then_some(()) })
            .await;
    }
    nodes
}

fn attrs(v: &str) -> Attributes {
    let mut a = Attributes::new();
    a.insert("v", v);
    a
}

async fn value(m: &SessionManager, id: &str) -> Option<String> {
    eventually(15, "a definite read", || async {
        match m.get(id).await {
            Ok(s) => Some(s.map(|s| String::from_utf8_lossy(s.get_bytes("v").expect("set")).into_owned())),
            Err(Error::Unavailable | Error::Busy | Error::Timeout | Error::NotOwner { .. }) => None,
            Err(e) => panic!("get {id}: {e}"),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_ids_in_two_managers_are_two_sessions_through_a_failover() {
    let hub = Hub::new();
    let nodes = start_all(&hub).await;
    let cart = &nodes[0];
    assert_eq!(cart.manager_name(), Some("cart"));
    assert_eq!(cart.managers(), ["cart", "profile"]);
    let profile = cart.manager("profile").expect("declared");
    let anon = cart.anonymous();
    // Per-manager settings: profile writes asynchronously, cart waits for a backup.
    cart.create_with_id("u1", attrs("cart-1")).await.expect("cart create");
    profile.create_with_id("u1", attrs("profile-1")).await.expect("profile create");
    anon.create_with_id("u1", attrs("anon-1")).await.expect("anon create");
    for id in ["u2", "u3"] {
        cart.create_with_id(id, attrs(&format!("cart-{id}"))).await.expect("create");
        profile.create_with_id(id, attrs(&format!("profile-{id}"))).await.expect("create");
    }
    assert_eq!(profile.settings().ack, AckPolicy::Async);
    assert!(matches!(cart.settings().ack, AckPolicy::Sync { .. }));
    // A fresh id is scoped too: it exists in profile only.
    let fresh = profile.create().await.expect("fresh");
    assert!(!fresh.id().contains(replication_core::scope::SEPARATOR));
    assert!(cart.get(fresh.id()).await.expect("read").is_none());
    // Listing is per manager, with plain ids.
    let mut owned = cart.owned_sessions().await.expect("owned");
    owned.sort();
    assert_eq!(owned, ["u1", "u2", "u3"]);
    // Counts per manager.
    let m = cart.metrics().await.expect("metrics");
    assert_eq!(m.managers["cart"].owned, 3);
    assert_eq!(m.managers["profile"].owned, 4);
    assert_eq!(m.managers[""].owned, 1);
    // Invalidating in one manager leaves the other.
    cart.invalidate("u2").await.expect("invalidate").expect("existed");
    assert!(cart.get("u2").await.expect("read").is_none());
    assert_eq!(value(&profile, "u2").await.as_deref(), Some("profile-u2"));

    // The owner crashes: both managers' sessions are read back on the survivors.
    nodes[0].abort().await.expect("abort");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b_cart = &nodes[1];
    let b_profile = b_cart.manager("profile").expect("declared");
    let c_cart = &nodes[2];
    assert_eq!(value(b_cart, "u1").await.as_deref(), Some("cart-1"));
    assert_eq!(value(b_cart, "u3").await.as_deref(), Some("cart-u3"));
    assert_eq!(value(&b_profile, "u1").await.as_deref(), Some("profile-1"));
    assert_eq!(
        value(&c_cart.manager("profile").expect("declared"), "u3").await.as_deref(),
        Some("profile-u3")
    );
    assert_eq!(value(&b_cart.anonymous(), "u1").await.as_deref(), Some("anon-1"));
    assert_eq!(value(c_cart, "u2").await, None, "invalidated in cart");
    assert_eq!(value(&b_profile, "u2").await.as_deref(), Some("profile-u2"));
}

#[tokio::test]
async fn an_undeclared_manager_is_an_error_at_start() {
    let cfg = parse(&text());
    let hub = Hub::new();
    let e = SessionManager::builder(cfg.clone(), "a")
        .transport(hub.attach("a") as Arc<_>)
        .manager("orders")
        .start()
        .await
        .expect_err("orders is not declared");
    let msg = e.to_string();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(msg.contains("`orders`") && msg.contains("cart, profile"), "{msg}");
    let e = SessionManager::builder(cfg.clone(), "a")
        .transport(hub.attach("a") as Arc<_>)
        .manager_settings("orders", ManagerSettings::default())
        .start()
        .await
        .expect_err("orders is not declared");
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    let a =
        SessionManager::builder(cfg, "a").transport(hub.attach("a") as Arc<_>).start().await.expect("starts");
    assert_eq!(a.manager_name(), None);
    assert!(a.manager("orders").is_err());
    // Ids cannot carry the separator.
    let bad = format!("x{}cart", replication_core::scope::SEPARATOR);
    assert!(matches!(a.get(&bad).await, Err(Error::InvalidId { .. })));
}

/// The tower-sessions store takes a manager's handle: two stores of one node, one per
/// manager, keep a record under the same tower id apart.
#[cfg(feature = "tower")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tower_store_per_manager() {
    use session_api::store::ReplicatedStore;
    use tower_sessions_core::session::{Id, Record};
    use tower_sessions_core::session_store::SessionStore;

    let hub = Hub::new();
    let nodes = start_all(&hub).await;
    let cart = nodes[0].clone();
    let (cart_store, profile_store) = (
        ReplicatedStore::new(cart.clone()),
        ReplicatedStore::new(cart.manager("profile").expect("declared")),
    );
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let id = Id(42);
    let mut data = std::collections::HashMap::new();
    data.insert("who".to_owned(), serde_json::json!("cart"));
    cart_store.save(&Record { id, data, expiry_date: expiry }).await.expect("save");
    assert!(cart_store.load(&id).await.expect("load").is_some());
    assert!(profile_store.load(&id).await.expect("load").is_none());
    assert_eq!(cart.owned_sessions().await.expect("owned").len(), 1);
    assert!(cart.manager("profile").expect("declared").owned_sessions().await.expect("owned").is_empty());
}
