//! Several nodes in one process over real loopback sockets, for every transport this build
//! includes.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use replication_core::{DomainConfig, NodeId, Role};
use session_api::{AckPolicy, Error, Replication, SessionManager};
use support::{domain_text, eventually, parse};

#[derive(Clone, Copy, Debug)]
enum Kind {
    #[cfg(feature = "tcp")]
    Tcp,
    /// Through the builder when this build has the `quic` feature, else through
    /// `Builder::transport` with the QUIC transport started by the test.
    Quic,
}

enum Socket {
    #[cfg_attr(not(feature = "tcp"), allow(dead_code))]
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "tcp")]
            Kind::Tcp => "tcp",
            Kind::Quic => "quic",
        }
    }

    fn bind(self, addr: SocketAddr) -> std::io::Result<Socket> {
        match self {
            #[cfg(feature = "tcp")]
            Kind::Tcp => std::net::TcpListener::bind(addr).map(Socket::Tcp),
            Kind::Quic => std::net::UdpSocket::bind(addr).map(Socket::Udp),
        }
    }
}

impl Socket {
    fn addr(&self) -> SocketAddr {
        match self {
            Socket::Tcp(l) => l.local_addr().expect("bound"),
            Socket::Udp(s) => s.local_addr().expect("bound"),
        }
    }
}

/// A domain on ephemeral loopback ports: binds first, then writes the config.
struct Domain {
    kind: Kind,
    cfg: DomainConfig,
    addrs: BTreeMap<String, SocketAddr>,
    sockets: BTreeMap<String, Socket>,
}

impl Domain {
    fn new(kind: Kind, extra: &str, nodes: &[(&str, &str)]) -> Self {
        let mut sockets = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for (n, _) in nodes {
            let s = kind.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
            addrs.insert((*n).to_owned(), s.addr());
            sockets.insert((*n).to_owned(), s);
        }
        let list: Vec<(&str, String, &str)> =
            nodes.iter().map(|(n, mode)| (*n, addrs[*n].to_string(), *mode)).collect();
        let extra = format!("transport = \"{}\"\n{extra}", kind.name());
        Domain { kind, cfg: parse(&domain_text(&extra, &list)), addrs, sockets }
    }

    /// Starts `name` (again after a stop: its port is bound anew).
    async fn start(&mut self, name: &str, max_inactive: Duration) -> SessionManager {
        let socket = match self.sockets.remove(name) {
            Some(s) => s,
            None => {
                let (kind, addr) = (self.kind, self.addrs[name]);
                eventually(10, "rebinding the port", || async move { kind.bind(addr).ok() }).await
            }
        };
        let b = SessionManager::builder(self.cfg.clone(), name)
            .insecure()
            .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) })
            .max_inactive(max_inactive);
        let b = match socket {
            Socket::Tcp(l) => b.tcp_listener(l),
            #[cfg(feature = "quic")]
            Socket::Udp(s) => b.udp_socket(s),
            #[cfg(not(feature = "quic"))]
            Socket::Udp(s) => {
                use replication_core::transport::{Security, TransportSettings};
                let mut settings = TransportSettings::new(
                    std::sync::Arc::new(self.cfg.clone()),
                    NodeId::new(name),
                    Security::Insecure,
                );
                settings.udp_socket = Some(s);
                let t = transport_quic::QuicTransport::<replication_core::Message>::start(settings)
                    .await
                    .expect("quic starts");
                b.transport(std::sync::Arc::new(t))
            }
        };
        b.start().await.expect("node starts")
    }

    async fn start_all(&mut self, names: &[&str]) -> Vec<SessionManager> {
        let mut v = Vec::new();
        for n in names {
            v.push(self.start(n, Duration::from_secs(600)).await);
        }
        all_up(&v).await;
        v
    }
}

async fn all_up(nodes: &[SessionManager]) {
    for n in nodes {
        let others: Vec<NodeId> = nodes.iter().map(|m| m.node().clone()).filter(|m| m != n.node()).collect();
        eventually(15, "peers up", || async {
            let m = n.metrics().await.ok()?;
            others.iter().all(|o| m.peers.iter().any(|p| &p.node == o && p.up)).then_some(())
        })
        .await;
    }
}

/// Reads `id` on `node`, retrying while the session is being taken over.
async fn read(node: &SessionManager, id: &str) -> Option<session_api::Session> {
    eventually(15, "a definite answer to get", || async {
        match node.get(id).await {
            Ok(s) => Some(s),
            Err(e @ (Error::Unavailable | Error::Busy | Error::Timeout | Error::Fenced)) => {
                eprintln!("get {id} on {}: {e}", node.node());
                None
            }
            Err(e) => panic!("get failed: {e}"),
        }
    })
    .await
}

async fn role(node: &SessionManager, id: &str) -> Option<Role> {
    node.view(id).await.ok().flatten().filter(|v| !v.invalidated).map(|v| v.role)
}

fn by_name<'a>(nodes: &'a [SessionManager], name: &NodeId) -> &'a SessionManager {
    nodes.iter().find(|n| n.node() == name).expect("a node of the test")
}

async fn last_acknowledged_value_survives_the_owner(kind: Kind) {
    let mut d = Domain::new(kind, "", &[("a", "both"), ("b", "both")]);
    let nodes = d.start_all(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut s = a.create().await.expect("create");
    s.set("step", &1u32).expect("encode");
    a.commit(&mut s).await.expect("commit");
    let ((), c) = a.update(s.id(), |s| s.set("step", &2u32)).await.expect("update");
    assert_eq!(c.replication, Replication::Replicated { acks: 1 });
    a.abort().await.expect("crash a");

    let got = read(b, s.id()).await.expect("b has the session");
    assert_eq!(got.get::<u32>("step").expect("decode"), Some(2));
    assert_eq!(role(b, s.id()).await, Some(Role::Owner));
}

async fn hot_failover_and_restarted_owner_is_fenced(kind: Kind) {
    let mut d = Domain::new(kind, "", &[("a", "both"), ("b", "both"), ("c", "both")]);
    let mut nodes = d.start_all(&["a", "b", "c"]).await;
    let a = nodes[0].clone();
    let mut s = a.create().await.expect("create");
    s.set("v", "from-a").expect("encode");
    a.commit(&mut s).await.expect("commit");
    let id = s.id().to_owned();
    let target = session_api::id::SessionIdParts::parse(&id).expect("ours").failover.expect("target");
    assert_eq!(a.route(&id, |n| n.as_str() != "a"), Some(target.clone()));
    a.abort().await.expect("crash a");

    let t = by_name(&nodes, &target).clone();
    eventually(15, "the failover target owns the session by itself", || async {
        (role(&t, &id).await == Some(Role::Owner)).then_some(())
    })
    .await;
    let ((), _) = t.update(&id, |s| s.set("v", "from-target")).await.expect("target serves it");

    // a restarts with empty memory; it must not bring back an old state.
    nodes[0] = d.start("a", Duration::from_secs(600)).await;
    all_up(&nodes).await;
    assert_ne!(role(&nodes[0], &id).await, Some(Role::Owner));
    let on_t = read(&t, &id).await.expect("found");
    assert_eq!(on_t.get::<String>("v").expect("decode").as_deref(), Some("from-target"));
    // A request routed to the restarted a fetches the latest state.
    let on_a = read(&nodes[0], &id).await.expect("found");
    assert_eq!(on_a.get::<String>("v").expect("decode").as_deref(), Some("from-target"));
    assert!(on_a.version() >= on_t.version());
}

async fn client_fetches_from_server_backup(kind: Kind) {
    let extra = "topology = \"client-server\"\n";
    let mut d = Domain::new(kind, extra, &[("c1", "client"), ("c2", "client"), ("s1", "server")]);
    let nodes = d.start_all(&["c1", "c2", "s1"]).await;
    let (c1, c2, s1) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut s = c1.create().await.expect("create");
    s.set("cart", &vec!["book"]).expect("encode");
    let c = c1.commit(&mut s).await.expect("commit");
    assert_eq!(c.replication, Replication::Replicated { acks: 1 });
    assert_eq!(role(s1, s.id()).await, Some(Role::Backup));
    assert!(matches!(s1.create().await, Err(Error::NotAllowed)), "a server owns no sessions");
    c1.abort().await.expect("crash c1");

    let got = read(c2, s.id()).await.expect("fetched from the server");
    assert_eq!(got.get::<Vec<String>>("cart").expect("decode"), Some(vec!["book".to_owned()]));
    assert_eq!(role(c2, s.id()).await, Some(Role::Owner));
}

async fn invalidation_and_expiry_reach_every_replica(kind: Kind) {
    let extra = "replicas = \"entire-domain\"\n";
    let mut d = Domain::new(kind, extra, &[("a", "both"), ("b", "both"), ("c", "both")]);
    let mut nodes = Vec::new();
    for n in ["a", "b", "c"] {
        nodes.push(d.start(n, Duration::from_millis(600)).await);
    }
    all_up(&nodes).await;
    let a = &nodes[0];
    let gone = |id: String| {
        let nodes = nodes.clone();
        async move {
            for n in &nodes {
                if role(n, &id).await.is_some() {
                    return None;
                }
            }
            Some(())
        }
    };

    // Invalidation.
    let s = a.create().await.expect("create");
    let id = s.id().to_owned();
    for n in &nodes[1..] {
        eventually(10, "backup placed", || async {
            (role(n, &id).await == Some(Role::Backup)).then_some(())
        })
        .await;
    }
    assert!(a.invalidate(&id).await.expect("invalidate").is_some());
    eventually(10, "tombstone everywhere", || gone(id.clone())).await;
    for n in &nodes {
        assert!(read(n, &id).await.is_none(), "an invalidated session never comes back");
    }

    // Expiry: nobody touches it for longer than max_inactive.
    let s = a.create().await.expect("create");
    let id = s.id().to_owned();
    for n in &nodes[1..] {
        eventually(10, "backup placed", || async {
            (role(n, &id).await == Some(Role::Backup)).then_some(())
        })
        .await;
    }
    eventually(15, "expired everywhere", || gone(id.clone())).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    for n in &nodes {
        assert!(read(n, &id).await.is_none(), "an expired session never comes back");
    }
}

async fn lost_backup_is_replaced_and_rejoining_node_is_filled(kind: Kind) {
    let mut d = Domain::new(kind, "", &[("a", "both"), ("b", "both"), ("c", "both")]);
    let mut nodes = d.start_all(&["a", "b", "c"]).await;
    let a = nodes[0].clone();
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(a.create().await.expect("create").id().to_owned());
    }
    let b_id = NodeId::new("b");
    let on_b = |v: &replication_core::SessionView| v.backups.iter().any(|(n, _)| n == &b_id);
    let mut backed_by_b = Vec::new();
    for id in &ids {
        if on_b(&a.view(id).await.expect("view").expect("owned")) {
            backed_by_b.push(id.clone());
        }
    }
    assert!(!backed_by_b.is_empty(), "rendezvous spreads 12 sessions over b and c");
    nodes[1].abort().await.expect("crash b");

    eventually(15, "every session has an up-to-date backup on c", || async {
        let m = a.metrics().await.ok()?;
        if m.core.under_replicated != 0 {
            return None;
        }
        for id in &backed_by_b {
            let v = a.view(id).await.ok()??;
            if !v.backups.iter().any(|(n, held)| n.as_str() == "c" && *held) {
                return None;
            }
        }
        Some(())
    })
    .await;

    nodes[1] = d.start("b", Duration::from_secs(600)).await;
    all_up(&nodes).await;
    let b = nodes[1].clone();
    eventually(15, "the rejoined b holds backups again", || async {
        let m = b.metrics().await.ok()?;
        let ma = a.metrics().await.ok()?;
        (m.core.backups == backed_by_b.len() && ma.core.under_replicated == 0).then_some(())
    })
    .await;
}

async fn replica_counts(kind: Kind, replicas: &str, want: usize) {
    let extra = format!("replicas = {replicas}\n");
    let mut d = Domain::new(kind, &extra, &[("a", "both"), ("b", "both"), ("c", "both"), ("d", "both")]);
    let nodes = d.start_all(&["a", "b", "c", "d"]).await;
    let a = &nodes[0];
    let mut s = a.create().await.expect("create");
    s.set("k", "v").expect("encode");
    a.commit(&mut s).await.expect("commit");
    let id = s.id().to_owned();
    eventually(15, "the wanted number of copies", || async {
        let mut n = 0;
        for m in &nodes[1..] {
            let v = m.view(&id).await.ok()?;
            if v.is_some_and(|v| v.role == Role::Backup && v.attrs.contains_key("k")) {
                n += 1;
            }
        }
        (n == want).then_some(())
    })
    .await;
    let view = a.view(&id).await.expect("view").expect("owned");
    assert_eq!(view.backups.len(), want);
}

async fn conflicting_writes_across_nodes_are_reported(kind: Kind) {
    let mut d = Domain::new(kind, "", &[("a", "both"), ("b", "both")]);
    let nodes = d.start_all(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let s = a.create().await.expect("create");
    let id = s.id().to_owned();
    let mut on_a = read(a, &id).await.expect("found");
    let mut on_b = read(b, &id).await.expect("found"); // b takes the session over
    on_b.set("who", "b").expect("encode");
    let cb = b.commit(&mut on_b).await.expect("b writes first");
    on_a.set("who", "a").expect("encode");
    match a.commit(&mut on_a).await {
        Err(Error::Conflict { current_version }) => assert_eq!(current_version, cb.version),
        other => panic!("a stale write must be reported, got {other:?}"),
    }
    let end = read(a, &id).await.expect("found");
    assert_eq!(end.get::<String>("who").expect("decode").as_deref(), Some("b"), "b's write is not lost");
}

macro_rules! for_transport {
    ($kind:expr, $modname:ident) => {
        mod $modname {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn last_acknowledged_value_survives() {
                last_acknowledged_value_survives_the_owner($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hot_failover_then_fencing() {
                hot_failover_and_restarted_owner_is_fenced($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn client_server_fetch() {
                client_fetches_from_server_backup($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn invalidation_and_expiry() {
                invalidation_and_expiry_reach_every_replica($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn backup_replaced_and_rejoin_filled() {
                lost_backup_is_replaced_and_rejoining_node_is_filled($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn replicas_two() {
                replica_counts($kind, "2", 2).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn replicas_entire_domain() {
                replica_counts($kind, "\"entire-domain\"", 3).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn conflicts_across_nodes() {
                conflicting_writes_across_nodes_are_reported($kind).await;
            }
        }
    };
}

#[cfg(feature = "tcp")]
for_transport!(Kind::Tcp, tcp);
for_transport!(Kind::Quic, quic);

/// A domain naming a transport this build lacks is refused with a clear error.
#[cfg(not(feature = "quic"))]
#[tokio::test]
async fn a_missing_transport_is_refused_clearly() {
    let d = Domain::new(Kind::Quic, "", &[("a", "both")]);
    let err = SessionManager::builder(d.cfg.clone(), "a").insecure().start().await.expect_err("no quic here");
    assert!(matches!(err, Error::UnsupportedTransport { .. }), "{err}");
    assert!(err.to_string().contains("cargo feature `quic`"), "{err}");
}

/// Mutual TLS with a certificate folder, and a domain read from a file.
#[cfg(feature = "tcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_from_a_certs_dir_and_a_domain_file() {
    let mut d = Domain::new(Kind::Tcp, "", &[("a", "both"), ("b", "both")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("domain.toml");
    let text = toml_text(&d.cfg);
    std::fs::write(&file, text).expect("write domain file");
    let certs = dir.path().join("certs");
    replication_core::tls::init_dir(&d.cfg, &certs).expect("certs");
    let mut nodes = Vec::new();
    for n in ["a", "b"] {
        let Some(Socket::Tcp(l)) = d.sockets.remove(n) else { panic!("tcp socket") };
        let m = SessionManager::builder(file.as_path(), n)
            .certs_dir(&certs)
            .tcp_listener(l)
            .start()
            .await
            .expect("starts with TLS");
        nodes.push(m);
    }
    all_up(&nodes).await;
    let mut s = nodes[0].create().await.expect("create");
    s.set("k", "v").expect("encode");
    let c = nodes[0].commit(&mut s).await.expect("commit");
    assert_eq!(c.replication, Replication::Replicated { acks: 1 });
    let got = read(&nodes[1], s.id()).await.expect("found");
    assert_eq!(got.get::<String>("k").expect("decode").as_deref(), Some("v"));
    let report = nodes[1].shutdown().await.expect("leave");
    assert_eq!(report.handed_off + report.unreplicated, 1);
}

/// A crashed node's peers fail it when its links close and its address refuses connections
/// (`peers_gone`), not only at the failure timeout; with `closed_link_detection = false` only
/// the failure timeout fails it. Either way its session is served by the failover target.
#[cfg(feature = "tcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_process_is_failed_when_its_links_close() {
    for detect in [true, false] {
        let extra = if detect { "" } else { "closed_link_detection = false\n" };
        let mut d = Domain::new(Kind::Tcp, extra, &[("a", "both"), ("b", "both"), ("c", "both")]);
        let nodes = d.start_all(&["a", "b", "c"]).await;
        let mut s = nodes[0].create().await.expect("create");
        s.set("v", "from-a").expect("encode");
        nodes[0].commit(&mut s).await.expect("commit");
        let id = s.id().to_owned();
        let target = session_api::id::SessionIdParts::parse(&id).expect("ours").failover.expect("target");
        // Nothing fails over before a node has seen the domain for the failure timeout.
        tokio::time::sleep(Duration::from_millis(500)).await;
        nodes[0].abort().await.expect("crash a");
        let t = by_name(&nodes, &target).clone();
        eventually(15, "the failover target owns the session", || async {
            (role(&t, &id).await == Some(Role::Owner)).then_some(())
        })
        .await;
        let got = read(&t, &id).await.expect("found");
        assert_eq!(got.get::<String>("v").expect("decode").as_deref(), Some("from-a"));
        for m in &nodes[1..] {
            let gone = m.metrics().await.expect("metrics").peers_gone;
            assert_eq!(gone, u64::from(detect), "{}: peers failed as gone (detection {detect})", m.node());
        }
    }
}

#[cfg(feature = "tcp")]
fn toml_text(cfg: &DomainConfig) -> String {
    toml::to_string(cfg).expect("serialises")
}

/// A peer that cannot authenticate is refused, counted and reported as an event.
#[cfg(feature = "tcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_peers_are_counted_and_reported() {
    let mut d = Domain::new(Kind::Tcp, "", &[("a", "both"), ("b", "both")]);
    let dir = tempfile::tempdir().expect("tempdir");
    replication_core::tls::init_dir(&d.cfg, dir.path()).expect("certs");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hook_seen = seen.clone();
    let mut start = |name: &str, tls: bool| {
        let Some(Socket::Tcp(l)) = d.sockets.remove(name) else { panic!("tcp socket") };
        let b = SessionManager::builder(d.cfg.clone(), name).tcp_listener(l);
        let b = if tls { b.certs_dir(dir.path()) } else { b.insecure() };
        let hook_seen = hook_seen.clone();
        b.metrics_hook(move |ev| {
            if matches!(ev, session_api::NodeEvent::Refused { .. }) {
                hook_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let a = start("a", true).start().await.expect("a");
    let b = start("b", false).start().await.expect("b");
    let mut events = a.subscribe();
    eventually(15, "a refusal counted", || async {
        let (ma, mb) = (a.metrics().await.ok()?, b.metrics().await.ok()?);
        (ma.refused + mb.refused > 0).then_some(())
    })
    .await;
    assert!(seen.load(std::sync::atomic::Ordering::Relaxed) > 0, "the hook saw it");
    let ma = a.metrics().await.expect("metrics");
    assert!(ma.peers.iter().all(|p| !p.up), "an unauthenticated peer never counts as up");
    let _ = events.try_recv();
}

/// Security is never implied: a node without certificates must be started insecure on purpose.
#[tokio::test]
async fn transport_security_must_be_chosen() {
    let d = Domain::new(Kind::Quic, "", &[("a", "both")]);
    let err = SessionManager::builder(d.cfg.clone(), "a").start().await.expect_err("no security chosen");
    assert!(err.to_string().contains("certs_dir"), "{err}");
    let err =
        SessionManager::builder(d.cfg.clone(), "nobody").insecure().start().await.expect_err("not a node");
    assert!(matches!(err, Error::Config(_)), "{err}");
}
