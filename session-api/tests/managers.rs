//! Several session managers on one node, on the in-memory hub: one namespace of ids per
//! manager, per-manager settings, the error for an undeclared manager, per-manager counts.

mod support;

use std::sync::Arc;
use std::time::Duration;

use session_api::{AckPolicy, Attributes, Error, ManagerSettings, SessionManager};
use support::{Hub, eventually, managers_domain};

/// Nodes `a`, `b`, `c`, each declaring `cart` and `profile`.
fn cfg() -> replication_core::DomainConfig {
    const BOTH: &[&str] = &["cart", "profile"];
    managers_domain(7400, &[("a", BOTH), ("b", BOTH), ("c", BOTH)])
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
    let cfg = cfg();
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
    let cfg = cfg();
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

/// A manager's own max inactive interval: `cart`'s sessions expire after 400 ms idle, while
/// `profile`'s and the anonymous manager's session under the same id (the node's 30 minutes)
/// stay, on the owner and on the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_in_one_manager_leaves_the_others() {
    let hub = Hub::new();
    let cfg = cfg();
    let mut nodes = Vec::new();
    for n in ["a", "b"] {
        let m = SessionManager::builder(cfg.clone(), n)
            .transport(hub.attach(n) as Arc<_>)
            .manager("cart")
            .manager_settings("cart", ManagerSettings::default().max_inactive(Duration::from_millis(400)))
            .start()
            .await
            .expect("starts");
        nodes.push(m);
    }
    for n in &nodes {
        eventually(10, "peer up", || async { (n.metrics().await.ok()?.core.peers_up >= 1).then_some(()) })
            .await;
    }
    let (cart, b) = (&nodes[0], &nodes[1]);
    assert_eq!(cart.settings().max_inactive, Duration::from_millis(400));
    let profile = cart.manager("profile").expect("declared");
    assert_eq!(profile.settings().max_inactive, Duration::from_secs(30 * 60));
    let anon = cart.anonymous();
    cart.create_with_id("u1", attrs("cart")).await.expect("create");
    profile.create_with_id("u1", attrs("profile")).await.expect("create");
    anon.create_with_id("u1", attrs("anon")).await.expect("create");
    let gone = |v: Option<replication_core::SessionView>| v.is_none_or(|v| v.invalidated);
    eventually(10, "cart's u1 expired on every node", || async {
        let on_a = gone(cart.view("u1").await.ok()?);
        let on_b = gone(b.view("u1").await.ok()?);
        (on_a && on_b).then_some(())
    })
    .await;
    assert!(cart.get("u1").await.expect("read").is_none());
    for (h, want) in [(&profile, "profile"), (&anon, "anon")] {
        let v = h.view("u1").await.expect("view").expect("held");
        assert!(!v.invalidated, "{want}");
        assert_eq!(v.attrs.get("v"), Some(want.as_bytes()));
    }
    assert_eq!(value(&b.manager("profile").expect("declared"), "u1").await.as_deref(), Some("profile"));
}

/// Domain files that differ between nodes: `a`'s file declares `cart` on both nodes, `b`'s
/// declares it on `a` only. `b` refuses `a`'s copies of `cart` sessions with the rule named
/// (an event and a counter), stores nothing of them, and still backs up the anonymous
/// manager's sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_manager_its_file_does_not_declare() {
    // `b`'s file: `b` declares no manager.
    let file = |b_managers: &[&str]| managers_domain(7450, &[("a", &["cart"]), ("b", b_managers)]);
    let hub = Hub::new();
    let a = SessionManager::builder(file(&["cart"]), "a")
        .transport(hub.attach("a") as Arc<_>)
        .manager("cart")
        .ack(AckPolicy::Async)
        .start()
        .await
        .expect("a starts");
    let b = SessionManager::builder(file(&[]), "b")
        .transport(hub.attach("b") as Arc<_>)
        .start()
        .await
        .expect("b");
    let mut events = b.subscribe();
    for n in [&a, &b] {
        eventually(10, "peer up", || async { (n.metrics().await.ok()?.core.peers_up == 1).then_some(()) })
            .await;
    }
    assert!(b.manager("cart").is_err(), "b does not host cart");
    a.create_with_id("u1", attrs("cart")).await.expect("create");
    a.anonymous().create_with_id("u1", attrs("anon")).await.expect("create");
    let (from, manager, rule) = eventually(10, "b reports the refusal", || {
        let ev = events.try_recv();
        async move {
            match ev {
                Ok(session_api::NodeEvent::Core(replication_core::Event::ManagerRefused {
                    from,
                    manager,
                    rule,
                })) => Some((from, manager, rule)),
                _ => None,
            }
        }
    })
    .await;
    assert_eq!(
        (from.as_str(), manager.as_str(), rule),
        ("a", "cart", replication_core::node::MANAGER_NOT_DECLARED)
    );
    assert_eq!(rule, "manager-not-declared");
    assert!(b.metrics().await.expect("metrics").core.manager_refused >= 1);
    // Nothing of cart is stored on b; the anonymous u1 is backed up there.
    assert_eq!(b.metrics().await.expect("metrics").managers.get("cart"), None);
    eventually(10, "b backs up the anonymous u1", || async {
        let v = b.view("u1").await.ok()??;
        (v.attrs.get("v") == Some(b"anon".as_slice())).then_some(())
    })
    .await;
}

/// The managers of a node share its links and membership: two idle nodes declaring `cart`
/// and `profile` send about as many messages (heartbeats) as two declaring none, not one set
/// per manager.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_add_no_heartbeats() {
    let pair = |managers: &[&str]| managers_domain(7460, &[("a", managers), ("b", managers)]);
    let mut firsts = Vec::new();
    for managers in [&["cart", "profile"][..], &[]] {
        let (cfg, hub) = (pair(managers), Hub::new());
        let mut nodes = Vec::new();
        for n in ["a", "b"] {
            nodes.push(
                SessionManager::builder(cfg.clone(), n)
                    .transport(hub.attach(n) as Arc<_>)
                    .start()
                    .await
                    .expect("starts"),
            );
        }
        for n in &nodes {
            eventually(10, "peer up", || async {
                (n.metrics().await.ok()?.core.peers_up == 1).then_some(())
            })
            .await;
        }
        firsts.push(nodes);
    }
    // Both pairs idle over the same second.
    let sent = |n: &SessionManager| {
        let n = n.clone();
        async move { n.metrics().await.expect("metrics").messages_sent }
    };
    let (with0, without0) = (sent(&firsts[0][0]).await, sent(&firsts[1][0]).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with = sent(&firsts[0][0]).await - with0;
    let without = sent(&firsts[1][0]).await - without0;
    assert!(without > 0, "heartbeats flow");
    assert!(with * 4 <= without * 5 + 8, "with managers {with} messages, without {without}");
}
