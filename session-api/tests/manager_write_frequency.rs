//! Write frequency per session manager, on the in-memory hub: two nodes, each declaring
//! `cart`, `profile` and `orders`; node `a` gives each manager its own frequency. A write of
//! an end-of-request manager reaches the backup at once, a time-based manager's after its own
//! interval, a manual one's on its handle's `sync` only; the same id in every manager stays
//! three sessions.

mod support;

use std::sync::Arc;
use std::time::Duration;

use replication_core::{DomainConfig, Role};
use session_api::{
    AckPolicy, Attributes, Error, ManagerSettings, Replication, SessionManager, WriteFrequency,
};
use support::{Hub, eventually, managers_domain};

const MANAGERS: [&str; 3] = ["cart", "profile", "orders"];

/// Nodes `a` and `b`, each declaring `cart`, `profile` and `orders`.
fn cfg() -> DomainConfig {
    managers_domain(7600, &[("a", &MANAGERS), ("b", &MANAGERS)])
}

fn sync_ack() -> AckPolicy {
    AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) }
}

/// Node `a` with `profile` and `orders` at the frequencies given (`cart` keeps the node's end
/// of request), and node `b` with the defaults; both see each other up. Returns the `cart`
/// handles of `a` and `b`.
async fn start(
    hub: &Arc<Hub>,
    profile: WriteFrequency,
    orders: WriteFrequency,
) -> (SessionManager, SessionManager) {
    let cfg = cfg();
    let a = SessionManager::builder(cfg.clone(), "a")
        .transport(hub.attach("a") as Arc<_>)
        .ack(sync_ack())
        .manager("cart")
        .manager_settings("profile", ManagerSettings::default().write_frequency(profile))
        .manager_settings("orders", ManagerSettings::default().write_frequency(orders))
        .start()
        .await
        .expect("a starts");
    let b = SessionManager::builder(cfg, "b")
        .transport(hub.attach("b") as Arc<_>)
        .ack(sync_ack())
        .manager("cart")
        .start()
        .await
        .expect("b starts");
    for n in [&a, &b] {
        eventually(10, "peer up", || async { (n.metrics().await.ok()?.core.peers_up == 1).then_some(()) })
            .await;
    }
    (a, b)
}

fn attrs(v: &str) -> Attributes {
    let mut a = Attributes::new();
    a.insert("v", v);
    a
}

/// Session `u1` created on `a` in every manager (creation is written at once whatever the
/// frequency), each with its manager's name as value, and held as a backup on `b`.
async fn create_u1_everywhere(a: &SessionManager, b: &SessionManager) {
    for m in MANAGERS {
        a.manager(m).expect("declared").create_with_id("u1", attrs(m)).await.expect("create");
    }
    for m in MANAGERS {
        let b = b.manager(m).expect("declared");
        eventually(10, "b holds the backup", || async {
            let v = b.view("u1").await.ok()??;
            (v.role == Role::Backup).then_some(())
        })
        .await;
    }
}

/// Sets `k` = `value` on `u1` through handle `m` and returns how the commit replicated.
async fn set_k(m: &SessionManager, value: &str) -> Replication {
    let ((), c) = m.update("u1", |s| s.set_bytes("k", value)).await.expect("update");
    c.replication
}

/// What `b`'s copy of `u1` of `manager` holds under `k` (no fetch).
async fn backup_k(b: &SessionManager, manager: &str) -> Option<String> {
    let v = b.manager(manager).expect("declared").view("u1").await.expect("view").expect("held");
    assert_eq!(v.attrs.get("v"), Some(manager.as_bytes()), "each manager's u1 is its own session");
    v.attrs.get("k").map(|k| String::from_utf8_lossy(k).into_owned())
}

/// `k` of a session read through a handle.
fn k_of(s: &session_api::Session) -> Option<&str> {
    s.get_bytes("k").map(|k| std::str::from_utf8(k).expect("utf-8"))
}

async fn staged(a: &SessionManager) -> (usize, u64) {
    let m = a.metrics().await.expect("metrics");
    (m.staged_sessions, m.staged_commits)
}

/// `cart` writes at the end of each request, `profile` every 100 ms, `orders` every hour: a
/// cart write is on the backup when its commit returns, a profile write follows within its
/// interval, and the orders write stays staged through many profile flushes (each time-based
/// manager on its own interval, one timer for the earliest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_time_based_manager_flushes_on_its_own_interval() {
    let hub = Hub::new();
    let (cart, b) = start(
        &hub,
        WriteFrequency::TimeBased(Duration::from_millis(100)),
        WriteFrequency::TimeBased(Duration::from_secs(3600)),
    )
    .await;
    let (profile, orders) =
        (cart.manager("profile").expect("declared"), cart.manager("orders").expect("declared"));
    assert_eq!(cart.settings().write_frequency, WriteFrequency::EndOfRequest);
    assert_eq!(profile.settings().write_frequency, WriteFrequency::TimeBased(Duration::from_millis(100)));
    create_u1_everywhere(&cart, &b).await;

    assert_eq!(set_k(&orders, "orders-1").await, Replication::Local, "orders stages");
    assert_eq!(set_k(&profile, "profile-1").await, Replication::Local, "profile stages");
    assert_eq!(set_k(&cart, "cart-1").await, Replication::Replicated { acks: 1 }, "cart writes at once");
    assert_eq!(backup_k(&b, "cart").await.as_deref(), Some("cart-1"));

    eventually(5, "profile's timer flushes it", || async {
        (backup_k(&b, "profile").await.as_deref() == Some("profile-1")).then_some(())
    })
    .await;
    // Several more profile intervals: orders' hour is not up.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(backup_k(&b, "orders").await, None, "orders' interval has not elapsed");
    assert_eq!(staged(&cart).await, (1, 1), "only orders' commit is staged");
    // Its own node reads the staged value.
    let s = orders.get("u1").await.expect("read").expect("found");
    assert_eq!(k_of(&s), Some("orders-1"));

    // A second profile write goes out on the next tick, orders' stays.
    assert_eq!(set_k(&profile, "profile-2").await, Replication::Local);
    eventually(5, "profile's next tick", || async {
        (backup_k(&b, "profile").await.as_deref() == Some("profile-2")).then_some(())
    })
    .await;
    assert_eq!(backup_k(&b, "orders").await, None);

    // `sync` of orders' handle writes it before its interval.
    let r = orders.sync().await.expect("sync");
    assert_eq!((r.sessions, r.commits, r.failed), (1, 1, 0));
    eventually(5, "orders synced", || async {
        (backup_k(&b, "orders").await.as_deref() == Some("orders-1")).then_some(())
    })
    .await;
    assert_eq!(staged(&cart).await, (0, 0));
}

/// `cart` writes at the end of each request, `profile` and `orders` on `sync` only: `sync` of
/// one manual manager writes its sessions and leaves the other's staged, `sync` of the cart
/// or the anonymous handle writes nothing, and a graceful shutdown writes every manager's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_of_a_manual_manager_writes_only_its_sessions() {
    let hub = Hub::new();
    let (cart, b) = start(&hub, WriteFrequency::Manual, WriteFrequency::Manual).await;
    let (profile, orders) =
        (cart.manager("profile").expect("declared"), cart.manager("orders").expect("declared"));
    create_u1_everywhere(&cart, &b).await;

    assert_eq!(set_k(&profile, "profile-1").await, Replication::Local);
    assert_eq!(set_k(&profile, "profile-2").await, Replication::Local);
    assert_eq!(set_k(&orders, "orders-1").await, Replication::Local);
    assert_eq!(set_k(&cart, "cart-1").await, Replication::Replicated { acks: 1 });
    assert_eq!(backup_k(&b, "cart").await.as_deref(), Some("cart-1"));
    assert_eq!(staged(&cart).await, (2, 3));

    // Handles whose manager stages nothing write nothing.
    for h in [&cart, &cart.anonymous()] {
        let r = h.sync().await.expect("sync");
        assert_eq!((r.sessions, r.commits), (0, 0), "{:?}", h.manager_name());
    }
    assert_eq!(staged(&cart).await, (2, 3));

    let r = profile.sync().await.expect("sync");
    assert_eq!((r.sessions, r.commits, r.failed), (1, 2, 0), "profile's two commits, one write");
    eventually(5, "profile synced", || async {
        (backup_k(&b, "profile").await.as_deref() == Some("profile-2")).then_some(())
    })
    .await;
    assert_eq!(backup_k(&b, "orders").await, None, "orders stays staged");
    assert_eq!(staged(&cart).await, (1, 1));

    // Versions stay monotonic across profile's flush, and a stale copy still conflicts.
    let before = profile.get("u1").await.expect("read").expect("found");
    assert_eq!(set_k(&profile, "profile-3").await, Replication::Local);
    let mut stale = before.clone();
    stale.set_bytes("k", "stale").expect("encode");
    assert!(matches!(profile.commit(&mut stale).await, Err(Error::Conflict { .. })));

    // A graceful shutdown writes every manager's staged changes before the hand-off.
    cart.shutdown().await.expect("shutdown");
    let b_orders = b.manager("orders").expect("declared");
    let b_profile = b.manager("profile").expect("declared");
    eventually(10, "b serves the handed-off sessions", || async {
        let o = b_orders.get("u1").await.ok()??;
        let p = b_profile.get("u1").await.ok()??;
        Some((o.get_bytes("k")?.to_vec(), p.get_bytes("k")?.to_vec()))
    })
    .await;
    let o = b_orders.get("u1").await.expect("read").expect("found");
    assert_eq!(k_of(&o), Some("orders-1"));
    let p = b_profile.get("u1").await.expect("read").expect("found");
    assert_eq!(k_of(&p), Some("profile-3"));
    let c = b.get("u1").await.expect("read").expect("found");
    assert_eq!(k_of(&c), Some("cart-1"));
}

/// A zero interval of one manager is refused at start, naming the manager.
#[tokio::test]
async fn a_zero_interval_of_a_manager_is_an_error_at_start() {
    let hub = Hub::new();
    let e = SessionManager::builder(cfg(), "a")
        .transport(hub.attach("a") as Arc<_>)
        .manager_settings(
            "profile",
            ManagerSettings::default().write_frequency(WriteFrequency::TimeBased(Duration::ZERO)),
        )
        .start()
        .await
        .expect_err("a zero interval");
    let msg = e.to_string();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(msg.contains("`profile`") && msg.contains("interval"), "{msg}");
}

/// A flush asks for its manager's acknowledgement: alone in its domain (no backup to wait
/// for), node `a` flushes `orders` (manual, async) as applied and `profile` (manual, sync) as
/// a write without the backup it asked for, counted as unacknowledged.
#[tokio::test]
async fn a_flush_asks_for_its_managers_acknowledgement() {
    let cfg = managers_domain(7650, &[("a", &["profile", "orders"])]);
    let hub = Hub::new();
    let manual = ManagerSettings::default().write_frequency(WriteFrequency::Manual);
    let a = SessionManager::builder(cfg, "a")
        .transport(hub.attach("a") as Arc<_>)
        .ack(AckPolicy::Async)
        .manager("orders")
        .manager_settings("orders", manual)
        .manager_settings("profile", manual.ack(sync_ack()))
        .start()
        .await
        .expect("a starts");
    let (orders, profile) = (a.clone(), a.manager("profile").expect("declared"));
    for m in [&orders, &profile] {
        m.create_with_id("u1", attrs("v")).await.expect("create");
        assert_eq!(set_k(m, "staged").await, Replication::Local);
    }
    let unacked = || async { a.metrics().await.expect("metrics").unacked_writes };
    let before = unacked().await;
    assert_eq!(orders.sync().await.expect("sync").failed, 0);
    assert_eq!(unacked().await, before, "orders' flush is async: applied is all it asks");
    assert_eq!(profile.sync().await.expect("sync").failed, 0);
    assert_eq!(unacked().await, before + 1, "profile's flush asked for a backup it could not have");
}
