//! Session-manager behaviour over the in-memory transport (partitions are easy here).

mod support;

use std::sync::Arc;
use std::time::Duration;

use replication_core::{DomainConfig, Role};
use session_api::{AckPolicy, Builder, Error, Replication, SessionManager, WriteContents, WriteFrequency};
use support::{Hub, domain_text, eventually, parse};

fn cfg(names: &[&str], extra: &str) -> DomainConfig {
    let nodes: Vec<(&str, String, &str)> =
        names.iter().enumerate().map(|(i, n)| (*n, format!("127.0.0.1:{}", 7000 + i), "both")).collect();
    parse(&domain_text(extra, &nodes))
}

fn builder(hub: &Arc<Hub>, cfg: &DomainConfig, name: &str) -> Builder {
    SessionManager::builder(cfg.clone(), name)
        .transport(hub.attach(name))
        .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) })
}

async fn cluster(hub: &Arc<Hub>, cfg: &DomainConfig, names: &[&str]) -> Vec<SessionManager> {
    let mut v = Vec::new();
    for n in names {
        v.push(builder(hub, cfg, n).start().await.expect("starts"));
    }
    all_up(&v).await;
    v
}

async fn all_up(nodes: &[SessionManager]) {
    let want = nodes.len() - 1;
    for n in nodes {
        eventually(10, "every peer up", || async {
            let m = n.metrics().await.ok()?;
            (m.core.peers_up >= want).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn create_update_and_read_on_another_node() {
    let hub = Hub::new();
    let cfg = cfg(&["a", "b"], "");
    let nodes = cluster(&hub, &cfg, &["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);

    let mut s = a.create().await.expect("create");
    assert!(s.id().contains(".a.b"), "id names owner and failover target: {}", s.id());
    s.set("user", "alice").expect("encode");
    let c = a.commit(&mut s).await.expect("commit");
    assert_eq!(c.replication, Replication::Replicated { acks: 1 });
    let ((), c2) = a.update(s.id(), |s| s.set("visits", &2u32)).await.expect("update");
    assert_eq!(c2.version, c.version + 1);

    // b holds a backup, then fetches on get and becomes the owner.
    let id = s.id().to_owned();
    let got = b.get(&id).await.expect("get").expect("found");
    assert_eq!(got.get::<String>("user").expect("decode").as_deref(), Some("alice"));
    assert_eq!(got.get::<u32>("visits").expect("decode"), Some(2));
    assert_eq!(b.view(&id).await.expect("view").expect("held").role, Role::Owner);
    eventually(10, "a no longer owns it", || async {
        let v = a.view(&id).await.ok()??;
        (v.role != Role::Owner).then_some(())
    })
    .await;
    assert!(a.route(&id, |_| true).is_some());
}

#[tokio::test]
async fn stale_writes_are_reported_and_update_retries() {
    let hub = Hub::new();
    let cfg = cfg(&["a", "b"], "");
    let nodes = cluster(&hub, &cfg, &["a", "b"]).await;
    let a = &nodes[0];
    let s = a.create().await.expect("create");
    let id = s.id().to_owned();

    let mut r1 = a.get(&id).await.expect("get").expect("found");
    let mut r2 = a.get(&id).await.expect("get").expect("found");
    r1.set("x", &1u32).expect("encode");
    r2.set("x", &2u32).expect("encode");
    let c1 = a.commit(&mut r1).await.expect("first write wins");
    match a.commit(&mut r2).await {
        Err(Error::Conflict { current_version }) => assert_eq!(current_version, c1.version),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let now = a.get(&id).await.expect("get").expect("found");
    assert_eq!(now.get::<u32>("x").expect("decode"), Some(1), "the first write is kept");

    // Concurrent read-modify-write through update(): no increment is lost.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let a = a.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            a.update(&id, |s| {
                let n: u32 = s.get("n")?.unwrap_or(0);
                s.set("n", &(n + 1))
            })
            .await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("update");
    }
    let end = a.get(&id).await.expect("get").expect("found");
    assert_eq!(end.get::<u32>("n").expect("decode"), Some(8));
}

#[tokio::test]
async fn a_partitioned_old_owner_is_fenced() {
    let hub = Hub::new();
    let cfg = cfg(&["a", "b", "c"], "");
    let nodes = cluster(&hub, &cfg, &["a", "b", "c"]).await;
    let a = &nodes[0];
    let mut s = a.create().await.expect("create");
    s.set("v", "a1").expect("encode");
    a.commit(&mut s).await.expect("commit");
    let id = s.id().to_owned();
    let target = session_api::id::SessionIdParts::parse(&id).expect("ours").failover.expect("has a target");
    let t = nodes.iter().find(|n| n.node() == &target).expect("target is a node");

    hub.partition("a", &["b", "c"], true);
    // The failover target takes the session over by itself (hot failover).
    eventually(10, "target owns the session", || async {
        let v = t.view(&id).await.ok()??;
        (v.role == Role::Owner).then_some(())
    })
    .await;
    let ((), _) = t.update(&id, |s| s.set("v", "target")).await.expect("target writes");

    // The old owner, cut off, still believes it owns the session, but holds no read lease: it
    // answers `Unavailable` (the admin API's 503), not its stale copy, and takes no write.
    assert_eq!(a.view(&id).await.expect("view").expect("held").role, Role::Owner);
    let read = a.get(&id).await.map(|s| s.map(|s| s.get::<String>("v")));
    assert!(matches!(read, Err(Error::Unavailable)), "a stale read: {read:?}");
    let write = a.update(&id, |s| s.set("v", "stale")).await;
    assert!(matches!(write, Err(Error::Unavailable)), "a write without the lease: {write:?}");
    hub.partition("a", &["b", "c"], false);

    eventually(15, "the old owner is fenced", || async {
        let v = a.view(&id).await.ok()?;
        v.is_none_or(|v| v.role != Role::Owner).then_some(())
    })
    .await;
    let on_t = t.get(&id).await.expect("get").expect("found");
    assert_eq!(on_t.get::<String>("v").expect("decode").as_deref(), Some("target"));
    // Right after the heal, `a` may answer `Unavailable` until its view has settled (it
    // was cut off from the majority): read until it answers.
    let on_a = eventually(10, "the old owner reads the session", || async { a.get(&id).await.ok()? }).await;
    assert_eq!(on_a.get::<String>("v").expect("decode").as_deref(), Some("target"));
}

#[tokio::test]
async fn manual_write_frequency_stages_until_sync() {
    let hub = Hub::new();
    let cfg = cfg(&["a", "b"], "");
    let a = builder(&hub, &cfg, "a")
        .write_frequency(WriteFrequency::Manual)
        .write_contents(WriteContents::All)
        .start()
        .await
        .expect("a");
    let b = builder(&hub, &cfg, "b").start().await.expect("b");
    all_up(&[a.clone(), b.clone()]).await;

    let s = a.create().await.expect("create");
    let id = s.id().to_owned();
    eventually(10, "b holds the initial copy", || async {
        let v = b.view(&id).await.ok()??;
        (v.role == Role::Backup).then_some(())
    })
    .await;

    let ((), c1) = a.update(&id, |s| s.set("k", &1u32)).await.expect("staged");
    assert_eq!(c1.replication, Replication::Local);
    let ((), c2) = a.update(&id, |s| s.set("k", &2u32)).await.expect("staged");
    assert_eq!(c2.version, c1.version + 1);
    let read = a.get(&id).await.expect("get").expect("found");
    assert_eq!(read.version(), c2.version, "reads see staged changes at their version");
    assert_eq!(read.get::<u32>("k").expect("decode"), Some(2));
    let backup = b.view(&id).await.expect("view").expect("held");
    assert!(!backup.attrs.contains_key("k"), "nothing was written yet");
    assert_eq!(a.metrics().await.expect("metrics").staged_commits, 2);

    let report = a.sync().await.expect("sync");
    assert_eq!((report.sessions, report.commits, report.failed), (1, 2, 0));
    eventually(10, "b holds the synced value", || async {
        let v = b.view(&id).await.ok()??;
        v.attrs.contains_key("k").then_some(())
    })
    .await;
    // Versions stay monotonic across the flush; a stale handle still conflicts.
    let mut stale = read.clone();
    let ((), c3) = a.update(&id, |s| s.set("k", &3u32)).await.expect("staged");
    assert!(c3.version > c2.version);
    stale.set("k", &9u32).expect("encode");
    assert!(matches!(a.commit(&mut stale).await, Err(Error::Conflict { .. })));
}

#[tokio::test]
async fn time_based_write_frequency_flushes_by_itself() {
    let hub = Hub::new();
    let cfg = cfg(&["a", "b"], "");
    let a = builder(&hub, &cfg, "a")
        .write_frequency(WriteFrequency::TimeBased(Duration::from_millis(100)))
        .start()
        .await
        .expect("a");
    let b = builder(&hub, &cfg, "b").start().await.expect("b");
    all_up(&[a.clone(), b.clone()]).await;
    let s = a.create().await.expect("create");
    let id = s.id().to_owned();
    a.update(&id, |s| s.set("k", "v")).await.expect("staged");
    eventually(10, "b holds the value", || async {
        let v = b.view(&id).await.ok()??;
        v.attrs.contains_key("k").then_some(())
    })
    .await;
    assert_eq!(a.metrics().await.expect("metrics").staged_commits, 0);
}

#[test]
fn blocking_handle_works_from_plain_threads() {
    let hub = Hub::new();
    let cfg = cfg(&["a"], "");
    let a = SessionManager::builder(cfg, "a")
        .transport(hub.attach("a"))
        .start_blocking()
        .expect("starts on its own thread");
    let mut s = a.create().expect("create");
    s.set("x", &1u32).expect("encode");
    let c = a.commit(&mut s).expect("commit");
    assert_eq!(c.replication, Replication::Unreplicated, "alone: one copy, and it says so");
    let id = s.id().to_owned();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let a = a.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                a.update(&id, |s| {
                    let n: u32 = s.get("x")?.unwrap_or(0);
                    s.set("x", &(n + 1))
                })
                .expect("update");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let end = a.get(&id).expect("get").expect("found");
    assert_eq!(end.get::<u32>("x").expect("decode"), Some(5));
    assert!(a.invalidate(&id).expect("invalidate").is_some());
    assert!(a.get(&id).expect("get").is_none());
    a.shutdown().expect("shutdown");
    assert!(matches!(a.get(&id), Err(Error::ShuttingDown)));
}

#[tokio::test]
async fn metrics_and_events_report_lost_backups() {
    let hub = Hub::new();
    let cfg = cfg(&["a", "b"], "");
    let hooked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let h = hooked.clone();
    let a = builder(&hub, &cfg, "a")
        .metrics_hook(move |_| {
            h.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .start()
        .await
        .expect("a");
    let b = builder(&hub, &cfg, "b").start().await.expect("b");
    all_up(&[a.clone(), b.clone()]).await;
    let mut events = a.subscribe();

    let mut s = a.create().await.expect("create");
    s.set("k", "v").expect("encode");
    assert_eq!(a.commit(&mut s).await.expect("commit").replication, Replication::Replicated { acks: 1 });
    let m = a.metrics().await.expect("metrics");
    assert_eq!((m.sessions_owned(), m.under_replicated()), (1, 0));
    assert!(m.sync_write_latency.count >= 1 && m.bytes_sent() > 0 && m.messages_sent > 0);
    assert_eq!(b.metrics().await.expect("metrics").sessions_backed_up(), 1);

    b.abort().await.expect("crash b");
    let mut peer_down = false;
    eventually(10, "b reported down", || {
        while let Ok(ev) = events.try_recv() {
            if matches!(ev, session_api::NodeEvent::Core(replication_core::Event::PeerDown { .. })) {
                peer_down = true;
            }
        }
        let done = peer_down;
        async move { done.then_some(()) }
    })
    .await;
    eventually(10, "under-replicated", || async {
        (a.metrics().await.ok()?.under_replicated() == 1).then_some(())
    })
    .await;
    let ((), c) = a.update(s.id(), |s| s.set("k", "w")).await.expect("write alone");
    assert_eq!(c.replication, Replication::Unreplicated, "one copy only, and the caller is told");
    assert!(a.metrics().await.expect("metrics").unacked_writes >= 1);
    assert!(hooked.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let report = a.shutdown().await.expect("leave");
    assert_eq!(report.unreplicated, 1);
}

#[tokio::test]
async fn touch_keeps_a_session_alive_and_idle_ones_expire() {
    let hub = Hub::new();
    let cfg = cfg(&["a", "b"], "");
    let a = builder(&hub, &cfg, "a").max_inactive(Duration::from_millis(400)).start().await.expect("a");
    let b = builder(&hub, &cfg, "b").start().await.expect("b");
    all_up(&[a.clone(), b.clone()]).await;
    let kept = a.create().await.expect("create").id().to_owned();
    let idle = a.create().await.expect("create").id().to_owned();
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    while tokio::time::Instant::now() < until {
        a.touch(&kept).await.expect("touch");
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert!(a.view(&kept).await.expect("view").is_some_and(|v| v.role == Role::Owner && !v.invalidated));
    eventually(10, "the idle session expired on both nodes", || async {
        let gone = |v: Option<replication_core::SessionView>| v.is_none_or(|v| v.invalidated);
        (gone(a.view(&idle).await.ok()?) && gone(b.view(&idle).await.ok()?)).then_some(())
    })
    .await;
    assert!(a.get(&idle).await.expect("get").is_none());
    assert!(matches!(a.touch(&idle).await, Err(Error::NotFound)));
}

#[tokio::test]
async fn a_panicking_metrics_hook_does_not_stop_the_node() {
    let hub = Hub::new();
    let cfg = cfg(&["a"], "");
    let a = builder(&hub, &cfg, "a").metrics_hook(|_| panic!("a buggy hook")).start().await.expect("a");
    let mut s = a.create().await.expect("create");
    s.set("k", "v").expect("encode");
    a.commit(&mut s).await.expect("commit");
    a.invalidate(s.id()).await.expect("invalidate");
    assert!(a.metrics().await.is_ok());
}

#[tokio::test]
async fn replication_lag_is_the_age_of_the_oldest_unacknowledged_change() {
    let hub = Hub::new();
    // A slow failure detector: the cut-off backup stays "up", so the owner keeps waiting for it.
    let cfg = parse(
        "[domain]\nname = \"test\"\nheartbeat_interval_ms = 50\nfailure_timeout_ms = 60000\n\
         request_timeout_ms = 2000\n[[node]]\nname = \"a\"\naddress = \"127.0.0.1:7000\"\n\
         [[node]]\nname = \"b\"\naddress = \"127.0.0.1:7001\"\n",
    );
    let a = builder(&hub, &cfg, "a").ack(AckPolicy::Async).start().await.expect("a");
    let b = builder(&hub, &cfg, "b").start().await.expect("b");
    all_up(&[a.clone(), b.clone()]).await;
    let mut s = a.create().await.expect("create");
    s.set("k", "v").expect("encode");
    a.commit(&mut s).await.expect("commit");
    eventually(10, "the backup holds the session", || async {
        (a.metrics().await.ok()?.replication_lag.is_zero()).then_some(())
    })
    .await;

    hub.partition("a", &["b"], true);
    let ((), _) = a.update(s.id(), |s| s.set("k", "w")).await.expect("async write");
    let waited = Duration::from_millis(300);
    tokio::time::sleep(waited).await;
    let m = a.metrics().await.expect("metrics");
    assert!(m.replication_lag >= waited, "the change is at least {waited:?} old: {:?}", m.replication_lag);
    assert_eq!(m.core.peers_up, 1, "b is still considered up");

    hub.partition("a", &["b"], false);
    eventually(10, "the backup catches up", || async {
        (a.metrics().await.ok()?.replication_lag.is_zero()).then_some(())
    })
    .await;
    let v = b.view(s.id()).await.expect("view").expect("b holds a copy");
    assert_eq!(v.attrs.get("k"), Some(&rmp_serde::to_vec("w").expect("encode")[..]));
}
