//! The transport conformance suite, written once and run against every transport.
//!
//! A transport's tests implement [`Harness`] (its transport type and how to start it) and
//! call [`conformance_tests!`](crate::conformance_tests), which makes one test per case of
//! the suite; hostile-traffic tests of one transport use the same helpers ([`Cluster`],
//! [`expect`], [`receive`], ...). Both transport crates take this module as a
//! dev-dependency on `replication-core` with the feature `conformance`. Every node runs on
//! 127.0.0.1 with ephemeral ports, hostile connections come from other loopback addresses
//! ([`hostile`](super::hostile)); waits are generous and tests assert outcomes, not timings,
//! except where a timing is the point (a restarted node's links).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::transport::{Security, Transport, TransportEvent, TransportSettings, WireMessage};
use crate::{DomainConfig, NodeId, tls};

/// Generous wait for anything that should happen.
pub const WAIT: Duration = Duration::from_secs(30);

/// This process's resident memory, in KiB (0 when /proc is not there).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The suite's message type (also the microbenchmark's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestMsg {
    /// Its ordering key ([`WireMessage::ordering_key`]).
    pub key: Option<u64>,
    /// A sequence number.
    pub seq: u64,
    /// The payload.
    pub body: String,
}

impl WireMessage for TestMsg {
    fn ordering_key(&self) -> Option<u64> {
        self.key
    }
}

/// A small message `m<seq>`.
pub fn msg(key: Option<u64>, seq: u64) -> TestMsg {
    TestMsg { key, seq, body: format!("m{seq}") }
}

/// The socket a transport listens on, bound in advance and handed over in its settings.
pub trait Bound: Send + Sized + 'static {
    /// Binds 127.0.0.1:`port` (0 = ephemeral).
    fn bind(port: u16) -> Self;
    /// The port it is bound to.
    fn port(&self) -> u16;
    /// Puts it in `settings` for the transport to adopt.
    fn adopt(self, settings: &mut TransportSettings);
    /// Sends garbage bytes to `addr`; returns whether the acceptor can see it (and report a
    /// refusal) at all.
    fn garbage(addr: SocketAddr) -> impl Future<Output = bool> + Send;
    /// Opens a connection that never says anything, from [`STRANGER`](STRANGER),
    /// if the transport can be tested that way.
    fn silent(addr: SocketAddr) -> impl Future<Output = Option<Box<dyn Send>>> + Send;
}

impl Bound for std::net::TcpListener {
    fn bind(port: u16) -> Self {
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind")
    }

    fn port(&self) -> u16 {
        self.local_addr().expect("addr").port()
    }

    fn adopt(self, settings: &mut TransportSettings) {
        settings.tcp_listener = Some(self);
    }

    async fn garbage(addr: SocketAddr) -> bool {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s.write_all(b"\x16\x03\x01\x00\x05hello garbage \xff\xfe\x00").await;
            let _ = s.shutdown().await;
        }
        true
    }

    async fn silent(addr: SocketAddr) -> Option<Box<dyn Send>> {
        let s = stranger_tcp(addr, STRANGER).await.expect("connect");
        Some(Box::new(s))
    }
}

impl Bound for std::net::UdpSocket {
    fn bind(port: u16) -> Self {
        // A stopped endpoint releases its socket once its connections have drained.
        let mut tries = 0;
        loop {
            match std::net::UdpSocket::bind(("127.0.0.1", port)) {
                Ok(s) => return s,
                Err(e) if tries < 100 => {
                    tries += 1;
                    eprintln!("bind {port}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("bind {port}: {e}"),
            }
        }
    }

    fn port(&self) -> u16 {
        self.local_addr().expect("addr").port()
    }

    fn adopt(self, settings: &mut TransportSettings) {
        settings.udp_socket = Some(self);
    }

    async fn garbage(addr: SocketAddr) -> bool {
        if let Ok(s) = tokio::net::UdpSocket::bind("127.0.0.1:0").await {
            for len in [1usize, 64, 1200] {
                let _ = s.send_to(&vec![0xa5; len], addr).await;
            }
        }
        false // QUIC endpoints drop undecodable datagrams silently
    }

    async fn silent(_addr: SocketAddr) -> Option<Box<dyn Send>> {
        None
    }
}

/// What the suite needs from a transport.
pub trait Harness: 'static {
    /// The transport.
    type T: Transport<TestMsg>;
    /// The socket it listens on.
    type Bound: Bound;
    /// Whether control messages queued to a peer arrive before data queued to it earlier
    /// (TCP: one stream, control served first; QUIC: separate streams, arrival order across
    /// streams is not defined).
    const CONTROL_FIRST: bool;
    /// Starts the transport.
    fn launch(settings: TransportSettings) -> impl Future<Output = Result<Self::T, String>> + Send;

    /// Binds 127.0.0.1:`port` (0 = ephemeral).
    fn bind(port: u16) -> Self::Bound {
        Self::Bound::bind(port)
    }

    /// The port of `b`.
    fn port(b: &Self::Bound) -> u16 {
        b.port()
    }

    /// Starts the transport on `b`.
    fn start(
        mut settings: TransportSettings,
        b: Self::Bound,
    ) -> impl Future<Output = Result<Self::T, String>> + Send {
        b.adopt(&mut settings);
        Self::launch(settings)
    }
}

/// A domain file: `domain` with `extra` lines in its `[domain]` table and `nodes` on 127.0.0.1.
pub fn domain_text(domain: &str, nodes: &[(&str, u16)], extra: &str) -> String {
    let mut s = format!("[domain]\nname = \"{domain}\"\n{extra}\n");
    for (n, port) in nodes {
        s.push_str(&format!("[[node]]\nname = \"{n}\"\naddress = \"127.0.0.1:{port}\"\n"));
    }
    s
}

/// Parses a domain file (panics when invalid).
pub fn parse(text: &str) -> Arc<DomainConfig> {
    Arc::new(DomainConfig::parse(text, "test").expect("valid domain"))
}

/// The security a test runs with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sec {
    /// Mutual TLS ([`Security::Tls`]).
    Tls,
    /// [`Security::Insecure`].
    Insecure,
}

/// `node`'s settings with short reconnect delays, certificates from `certs`.
pub fn settings(cfg: &Arc<DomainConfig>, node: &str, sec: Sec, certs: &Path) -> TransportSettings {
    let id = NodeId::new(node);
    let security = match sec {
        Sec::Tls => Security::Tls(tls::load_node(certs, &id).expect("certs")),
        Sec::Insecure => Security::Insecure,
    };
    let mut s = TransportSettings::new(cfg.clone(), id, security);
    s.reconnect_min = Duration::from_millis(20);
    s.reconnect_max = Duration::from_millis(500);
    s.handshake_timeout = Duration::from_secs(5);
    s
}

/// Running transports of one domain, with its certificates.
pub struct Cluster<H: Harness> {
    /// The transports by node name.
    pub nodes: BTreeMap<String, H::T>,
    /// Their ports.
    pub ports: BTreeMap<String, u16>,
    /// The domain.
    pub cfg: Arc<DomainConfig>,
    /// The certificates' directory.
    pub certs: tempfile::TempDir,
    /// The security they run with.
    pub sec: Sec,
}

impl<H: Harness> Cluster<H> {
    /// Binds, writes the domain, creates certificates, starts every node (`tweak` may change
    /// each node's settings).
    pub async fn start(names: &[&str], sec: Sec, tweak: impl Fn(&str, &mut TransportSettings)) -> Self {
        let bound: Vec<(&str, H::Bound)> = names.iter().map(|n| (*n, H::bind(0))).collect();
        let ports: Vec<(&str, u16)> = bound.iter().map(|(n, b)| (*n, H::port(b))).collect();
        let cfg = parse(&domain_text("web", &ports, ""));
        let certs = tempfile::tempdir().expect("tempdir");
        tls::init_dir(&cfg, certs.path()).expect("certs");
        let mut nodes = BTreeMap::new();
        for (n, b) in bound {
            let mut s = settings(&cfg, n, sec, certs.path());
            tweak(n, &mut s);
            nodes.insert(n.to_owned(), H::start(s, b).await.expect("start"));
        }
        let ports = ports.into_iter().map(|(n, p)| (n.to_owned(), p)).collect();
        Cluster { nodes, ports, cfg, certs, sec }
    }

    /// Node `n`'s transport.
    pub fn node(&self, n: &str) -> &H::T {
        &self.nodes[n]
    }

    /// Node `n`'s address.
    pub fn addr(&self, n: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[n]))
    }

    /// Restarts `n` on its port.
    pub async fn restart(&mut self, n: &str, tweak: impl Fn(&mut TransportSettings)) {
        if let Some(t) = self.nodes.remove(n) {
            t.shutdown().await;
        }
        let mut s = settings(&self.cfg, n, self.sec, self.certs.path());
        tweak(&mut s);
        let b = H::bind(self.ports[n]);
        self.nodes.insert(n.to_owned(), H::start(s, b).await.expect("restart"));
    }
}

/// The next event matching `pred`, skipping others; panics after [`WAIT`].
pub async fn expect<T: Transport<TestMsg>>(
    t: &T,
    what: &str,
    mut pred: impl FnMut(&TransportEvent<TestMsg>) -> bool,
) -> TransportEvent<TestMsg> {
    let fut = async {
        loop {
            match t.recv().await {
                Some(ev) if pred(&ev) => return ev,
                Some(_) => {}
                None => panic!("{}: transport closed while waiting for {what}", t.local()),
            }
        }
    };
    match tokio::time::timeout(WAIT, fut).await {
        Ok(ev) => ev,
        Err(_) => panic!("{}: timed out waiting for {what}", t.local()),
    }
}

/// Waits for `Connected(peer)`.
pub async fn connected<T: Transport<TestMsg>>(t: &T, peer: &str) {
    expect(
        t,
        &format!("Connected({peer})"),
        |e| matches!(e, TransportEvent::Connected(p) if p.as_str() == peer),
    )
    .await;
}

/// Waits until `t` reported a link up to each of `peers` (in any order).
pub async fn connected_all<T: Transport<TestMsg>>(t: &T, peers: &[&str]) {
    let mut missing: std::collections::BTreeSet<&str> = peers.iter().copied().collect();
    while !missing.is_empty() {
        let what = format!("Connected({missing:?})");
        if let TransportEvent::Connected(p) =
            expect(t, &what, |e| matches!(e, TransportEvent::Connected(_))).await
        {
            missing.remove(p.as_str());
        }
    }
}

/// Waits for `Disconnected(peer)`.
pub async fn disconnected<T: Transport<TestMsg>>(t: &T, peer: &str) {
    expect(
        t,
        &format!("Disconnected({peer})"),
        |e| matches!(e, TransportEvent::Disconnected(p) if p.as_str() == peer),
    )
    .await;
}

/// Waits for a refusal; returns `peer: reason`.
pub async fn refused<T: Transport<TestMsg>>(t: &T, what: &str) -> String {
    match expect(t, &format!("Refused({what})"), |e| matches!(e, TransportEvent::Refused { .. })).await {
        TransportEvent::Refused { peer, reason } => {
            eprintln!("{} refused {peer}: {reason}", t.local());
            format!("{peer}: {reason}")
        }
        _ => unreachable!(),
    }
}

/// Receives `n` messages from `from` (skipping other events). Every test sends exactly the
/// messages it then receives, so a batch reaching past `n` means extra (duplicate) messages.
pub async fn receive<T: Transport<TestMsg>>(t: &T, from: &str, n: usize) -> Vec<TestMsg> {
    receive_events(t, from, n).await.concat()
}

/// Like [`receive`], as the events delivered them (one `Vec` per event).
pub async fn receive_events<T: Transport<TestMsg>>(t: &T, from: &str, n: usize) -> Vec<Vec<TestMsg>> {
    let mut events = Vec::new();
    let mut count = 0;
    while count < n {
        let what = format!("message {} of {n} from {from}", count + 1);
        let from_peer = |e: &TransportEvent<TestMsg>| match e {
            TransportEvent::Message { from: f, .. } | TransportEvent::Messages { from: f, .. } => {
                f.as_str() == from
            }
            _ => false,
        };
        let msgs = match expect(t, &what, from_peer).await {
            TransportEvent::Message { msg, .. } => vec![msg],
            TransportEvent::Messages { msgs, .. } => msgs,
            _ => unreachable!(),
        };
        assert!(!msgs.is_empty(), "{}: an empty Messages event", t.local());
        count += msgs.len();
        events.push(msgs);
    }
    assert_eq!(count, n, "{}: more messages from {from} than were sent: {events:?}", t.local());
    events
}

/// A node id.
pub fn n(s: &str) -> NodeId {
    NodeId::new(s)
}

/// Per ordering key, sequence numbers must increase.
pub fn assert_ordered(msgs: &[TestMsg]) {
    let mut last: BTreeMap<Option<u64>, u64> = BTreeMap::new();
    for m in msgs {
        if let Some(prev) = last.insert(m.key, m.seq) {
            assert!(m.seq > prev, "key {:?}: {} after {}", m.key, m.seq, prev);
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Three nodes link up with each other.
pub async fn handshake<H: Harness>() {
    let c = Cluster::<H>::start(&["a", "b", "c"], Sec::Tls, |_, _| {}).await;
    connected_all(c.node("a"), &["b", "c"]).await;
    connected_all(c.node("b"), &["a", "c"]).await;
    connected_all(c.node("c"), &["a", "b"]).await;
    assert_eq!(c.node("a").local().as_str(), "a");
}

/// Without TLS, nodes link up and exchange messages, also through a trait object.
pub async fn handshake_insecure<H: Harness>() {
    let c = Cluster::<H>::start(&["a", "b"], Sec::Insecure, |_, _| {}).await;
    connected(c.node("a"), "b").await;
    connected(c.node("b"), "a").await;
    c.node("b").try_send(&n("a"), msg(None, 1)).expect("queued");
    assert_eq!(receive(c.node("a"), "b", 1).await, vec![msg(None, 1)]);
    // The runtime may hold a transport as a trait object.
    let mut c = c;
    let a: Box<dyn Transport<TestMsg>> = Box::new(c.nodes.remove("a").expect("a"));
    a.try_send(&n("b"), msg(None, 2)).expect("queued");
    assert_eq!(receive(c.node("b"), "a", 1).await, vec![msg(None, 2)]);
    a.shutdown().await;
}

/// Thousands of messages both ways at once, all delivered, in order per key.
pub async fn messages_both_ways_in_order<H: Harness>() {
    let c = Cluster::<H>::start(&["a", "b"], Sec::Tls, |_, _| {}).await;
    connected(c.node("a"), "b").await;
    connected(c.node("b"), "a").await;
    const N: u64 = 2000;
    let keyed = |i: u64| if i % 5 == 0 { None } else { Some(i % 7) };
    let send_all = |from: &'static str, to: &'static str| {
        let t = c.node(from);
        async move {
            for i in 0..N {
                t.send(&n(to), msg(keyed(i), i)).await.expect("send");
            }
        }
    };
    let recv_a = receive(c.node("a"), "b", N as usize);
    let recv_b = receive(c.node("b"), "a", N as usize);
    let (_, _, got_a, got_b) = tokio::join!(send_all("a", "b"), send_all("b", "a"), recv_a, recv_b);
    for got in [got_a, got_b] {
        assert_eq!(got.len(), N as usize);
        assert_ordered(&got);
        let mut seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..N).collect::<Vec<_>>());
    }
}

/// A message up to the frame limit passes; a larger one is dropped by the sender alone.
pub async fn large_messages_up_to_the_limit<H: Harness>() {
    const MAX: usize = 1 << 20;
    let c = Cluster::<H>::start(&["a", "b"], Sec::Tls, |_, s| s.max_frame = MAX).await;
    connected(c.node("a"), "b").await;
    // The encoded size of a message is its body plus a few bytes of MessagePack framing.
    let big = TestMsg { key: Some(1), seq: 1, body: "x".repeat(MAX - 64) };
    let too_big = TestMsg { key: Some(1), seq: 2, body: "y".repeat(MAX + 10) };
    let after = msg(Some(1), 3);
    for m in [big.clone(), too_big, after.clone()] {
        c.node("a").send(&n("b"), m).await.expect("queued");
    }
    // The oversize message is dropped by the sender (logged); the others arrive in order.
    let got = receive(c.node("b"), "a", 2).await;
    assert_eq!(got, vec![big, after]);
}

/// An oversize frame and garbage are refused; other links keep working, the refused one
/// reconnects.
pub async fn oversize_frame_and_garbage_refused_others_keep_working<H: Harness>() {
    // b accepts frames of at most 64 KiB; a sends frames of up to 1 MiB.
    let c = Cluster::<H>::start(&["a", "b", "c"], Sec::Tls, |n, s| {
        s.max_frame = if n == "b" { 64 * 1024 } else { 1 << 20 }
    })
    .await;
    connected_all(c.node("b"), &["a", "c"]).await;
    connected(c.node("a"), "b").await;
    let big = TestMsg { key: None, seq: 1, body: "z".repeat(200 * 1024) };
    c.node("a").send(&n("b"), big).await.expect("queued");
    // (A loaded machine may show an earlier refusal: a's dial dropped in its TLS handshake
    // by b's wake-up, after the grace a dial under way gets.)
    expect(
        c.node("b"),
        "the oversize frame refused",
        |e| matches!(e, TransportEvent::Refused { reason, .. } if reason.contains("exceeds the limit")),
    )
    .await;
    // c's link to b is untouched.
    c.node("c").send(&n("b"), msg(None, 7)).await.expect("queued");
    assert_eq!(receive(c.node("b"), "c", 1).await, vec![msg(None, 7)]);

    if <H::Bound as Bound>::garbage(c.addr("b")).await {
        let why = refused(c.node("b"), "garbage").await;
        assert!(!why.is_empty());
    }
    // a reconnects (b dropped the link), and small messages flow again.
    disconnected(c.node("a"), "b").await;
    connected(c.node("a"), "b").await;
    c.node("a").send(&n("b"), msg(None, 8)).await.expect("queued");
    assert_eq!(receive(c.node("b"), "a", 1).await, vec![msg(None, 8)]);
    c.node("c").send(&n("b"), msg(None, 9)).await.expect("queued");
    assert_eq!(receive(c.node("b"), "c", 1).await, vec![msg(None, 9)]);
}

/// Starts `b`, then the dialer `a`, each on its socket bound in advance, and waits until each
/// has refused the other: (refusal on a, refusal on b). Then calls `also(&a)` and shuts both
/// down.
async fn refused_both_ways<H: Harness>(
    a: (TransportSettings, H::Bound),
    b: (TransportSettings, H::Bound),
    also: impl FnOnce(&H::T),
) -> (String, String) {
    let b = H::start(b.0, b.1).await.expect("b");
    let a = H::start(a.0, a.1).await.expect("a");
    let on_b = refused(&b, "acceptor").await;
    let on_a = refused(&a, "dialer").await;
    also(&a);
    a.shutdown().await;
    b.shutdown().await;
    (on_a, on_b)
}

/// a's credentials come from another CA of the same domain: both sides refuse.
pub async fn wrong_ca_refused<H: Harness>() {
    let ba = H::bind(0);
    let bb = H::bind(0);
    let cfg = parse(&domain_text("web", &[("a", H::port(&ba)), ("b", H::port(&bb))], ""));
    let good = tempfile::tempdir().expect("tempdir");
    let rogue = tempfile::tempdir().expect("tempdir");
    tls::init_dir(&cfg, good.path()).expect("certs");
    tls::init_dir(&cfg, rogue.path()).expect("certs");
    let a = (settings(&cfg, "a", Sec::Tls, rogue.path()), ba);
    let b = (settings(&cfg, "b", Sec::Tls, good.path()), bb);
    let (on_a, on_b) = refused_both_ways::<H>(a, b, |a| {
        assert!(a.try_send(&n("b"), msg(None, 1)).is_ok(), "queued while refused");
    })
    .await;
    assert!(on_a.contains("certificate"), "dialer: {on_a}");
    assert!(on_b.contains("certificate"), "acceptor: {on_b}");
}

/// `aa` has a valid certificate of the domain CA but b's domain file does not list it.
pub async fn unknown_node_refused<H: Harness>() {
    for sec in [Sec::Tls, Sec::Insecure] {
        let baa = H::bind(0);
        let bb = H::bind(0);
        let (paa, pb) = (H::port(&baa), H::port(&bb));
        let full = parse(&domain_text("web", &[("aa", paa), ("b", pb)], ""));
        let without = parse(&domain_text("web", &[("b", pb), ("c", 1)], ""));
        let certs = tempfile::tempdir().expect("tempdir");
        tls::init_dir(&full, certs.path()).expect("certs");
        let aa = (settings(&full, "aa", sec, certs.path()), baa);
        let b = (settings(&without, "b", sec, certs.path()), bb);
        let (on_aa, on_b) = refused_both_ways::<H>(aa, b, |_| {}).await;
        if sec == Sec::Insecure {
            assert!(on_b.contains("unknown-node"), "acceptor: {on_b}");
            assert!(on_aa.contains("unknown-node"), "dialer: {on_aa}");
        } else {
            assert!(on_b.contains("names no node"), "acceptor: {on_b}");
            assert!(on_aa.contains("[certificate]"), "dialer: {on_aa}");
        }
    }
}

/// A node of domain `shop` (its own valid CA and certificate, or no TLS) dials a node of
/// domain `web`: both refuse, naming the rule (and, without TLS, the other domain).
pub async fn other_domain_refused<H: Harness>() {
    for sec in [Sec::Tls, Sec::Insecure] {
        let ba = H::bind(0);
        let bb = H::bind(0);
        let nodes = [("a", H::port(&ba)), ("b", H::port(&bb))];
        let web = parse(&domain_text("web", &nodes, ""));
        let shop = parse(&domain_text("shop", &nodes, ""));
        let (wc, sc) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
        tls::init_dir(&web, wc.path()).expect("certs");
        tls::init_dir(&shop, sc.path()).expect("certs");
        let a = (settings(&shop, "a", sec, sc.path()), ba);
        let b = (settings(&web, "b", sec, wc.path()), bb);
        let (on_a, on_b) = refused_both_ways::<H>(a, b, |_| {}).await;
        if sec == Sec::Insecure {
            assert!(on_b.contains("other-domain") && on_b.contains("shop"), "acceptor: {on_b}");
            assert!(on_a.contains("other-domain"), "dialer: {on_a}");
        } else {
            assert!(on_b.contains("[certificate]"), "acceptor: {on_b}");
            assert!(on_a.contains("certificate"), "dialer: {on_a}");
        }
    }
}

/// The dialer announces a mode its domain file does not give it (insecure, so only the Hello
/// check stands between them).
pub async fn forbidden_mode_refused<H: Harness>() {
    let ba = H::bind(0);
    let bb = H::bind(0);
    let nodes = [("a", H::port(&ba)), ("b", H::port(&bb))];
    let on_b_side = parse(&domain_text("web", &nodes, ""));
    // a believes the domain is client-server with itself a client.
    let text = format!(
        "[domain]\nname = \"web\"\ntopology = \"client-server\"\n[[node]]\nname = \"a\"\naddress = \"127.0.0.1:{}\"\nmode = \"client\"\n[[node]]\nname = \"b\"\naddress = \"127.0.0.1:{}\"\nmode = \"server\"\n",
        nodes[0].1, nodes[1].1
    );
    let on_a_side = parse(&text);
    let dir = tempfile::tempdir().expect("tmp");
    let a = (settings(&on_a_side, "a", Sec::Insecure, dir.path()), ba);
    let b = (settings(&on_b_side, "b", Sec::Insecure, dir.path()), bb);
    let (on_a, on_b) = refused_both_ways::<H>(a, b, |_| {}).await;
    assert!(on_b.contains("peer-to-peer-requires-both"), "{on_b}");
    assert!(on_a.contains("peer-to-peer-requires-both"), "{on_a}");
}

/// b restarts; what a queued meanwhile is delivered to the new b, in order. Then a (the
/// dialer) restarts too.
pub async fn peer_restart_and_reconnect<H: Harness>() {
    let mut c = Cluster::<H>::start(&["a", "b"], Sec::Tls, |_, _| {}).await;
    connected(c.node("a"), "b").await;
    c.node("a").send(&n("b"), msg(Some(1), 0)).await.expect("queued");
    assert_eq!(receive(c.node("b"), "a", 1).await, vec![msg(Some(1), 0)]);

    if let Some(b) = c.nodes.remove("b") {
        b.shutdown().await;
    }
    disconnected(c.node("a"), "b").await;
    for i in 1..=20 {
        c.node("a").try_send(&n("b"), msg(Some(1), i)).expect("queued while b is down");
    }
    c.restart("b", |_| {}).await;
    let got = receive(c.node("b"), "a", 20).await;
    assert_eq!(got, (1..=20).map(|i| msg(Some(1), i)).collect::<Vec<_>>());

    // Now the dialer restarts; b queues for it meanwhile.
    if let Some(a) = c.nodes.remove("a") {
        a.shutdown().await;
    }
    disconnected(c.node("b"), "a").await;
    for i in 0..5 {
        c.node("b").try_send(&n("a"), msg(None, i)).expect("queued while a is down");
    }
    c.restart("a", |_| {}).await;
    let got = receive(c.node("a"), "b", 5).await;
    assert_eq!(got, (0..5).map(|i| msg(None, i)).collect::<Vec<_>>());
}

/// A node of three restarts while the peer that dials it backs off for seconds: it sees both
/// peers up within one heartbeat interval and a second (its wake-up dial makes the peer that
/// dials it dial at once), and so do they.
pub async fn restarted_node_sees_every_peer_within_a_handshake<H: Harness>() {
    // a, which dials b, backs off 2 to 4 s between attempts.
    let mut c = Cluster::<H>::start(&["a", "b", "c"], Sec::Tls, |n, s| {
        if n == "a" {
            s.reconnect_min = Duration::from_secs(4);
            s.reconnect_max = Duration::from_secs(4);
        }
    })
    .await;
    connected_all(c.node("b"), &["a", "c"]).await;
    if let Some(b) = c.nodes.remove("b") {
        b.shutdown().await;
    }
    disconnected(c.node("a"), "b").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bound = c.cfg.heartbeat_interval() + Duration::from_secs(1);
    let took = restart_and_link(&mut c, "b", &["a", "c"]).await;
    connected(c.node("a"), "b").await;
    eprintln!("b restarted and saw a and c up after {took:?} (bound {bound:?})");
    assert!(took < bound, "b saw its peers up after {took:?}, more than {bound:?}");
    c.node("a").send(&n("b"), msg(None, 1)).await.expect("queued");
    assert_eq!(receive(c.node("b"), "a", 1).await, vec![msg(None, 1)]);
}

/// A node of three restarts while the peer that dials it is dialing it (with a short back-off,
/// it redials as soon as the node stops): the restarted node's wake-up makes that peer drop
/// the dial under way, whose packets went to no one (a QUIC Initial is sent again after
/// doubling delays), and dial again: both links up within 400 ms.
pub async fn a_wake_up_while_dialing_dials_again_at_once<H: Harness>() {
    let mut c = Cluster::<H>::start(&["a", "b", "c"], Sec::Tls, |n, s| {
        if n == "a" {
            s.reconnect_min = Duration::from_millis(5);
            s.reconnect_max = Duration::from_millis(10);
        }
    })
    .await;
    connected_all(c.node("b"), &["a", "c"]).await;
    if let Some(b) = c.nodes.remove("b") {
        b.shutdown().await;
    }
    disconnected(c.node("a"), "b").await;
    // Over QUIC, a's dial has sent its Initial three or four times by then, the next one
    // about a second later.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let bound = Duration::from_millis(400);
    let took = restart_and_link(&mut c, "b", &["a", "c"]).await;
    connected(c.node("a"), "b").await;
    eprintln!("b restarted while a was dialing it and saw a and c up after {took:?} (bound {bound:?})");
    assert!(took < bound, "b saw its peers up after {took:?}, more than {bound:?}");
}

/// The peer a node dials is killed within a second of their link coming up and starts again
/// at once. Nothing closes the old link (over QUIC, the dialer would see it end only at the
/// idle timeout, 10 s); the restarted peer's wake-up comes from another run than the one the
/// link reaches, so the dialer drops the link and dials the new run: it reports the link down
/// and up again within two seconds of the restart.
pub async fn a_peer_restarted_just_after_linking_is_linked_again_at_once<H: Harness>() {
    let mut c = Cluster::<H>::start(&["a", "b"], Sec::Tls, |_, _| {}).await;
    connected(c.node("a"), "b").await;
    if let Some(b) = c.nodes.remove("b") {
        b.shutdown().await;
    }
    disconnected(c.node("a"), "b").await;
    let (runtime, b) = start_apart(&c, "b").await;
    connected(c.node("a"), "b").await;
    let linked = Instant::now();
    connected(&b, "a").await;
    kill(runtime, b).await;
    let bound = H::bind(c.ports["b"]);
    let t0 = Instant::now();
    assert!(t0 - linked < Duration::from_secs(1), "b was killed {:?} after the link came up", t0 - linked);
    let b = H::start(settings(&c.cfg, "b", c.sec, c.certs.path()), bound).await.expect("restart");
    c.nodes.insert("b".to_owned(), b);
    disconnected(c.node("a"), "b").await;
    connected(c.node("a"), "b").await;
    let took = t0.elapsed();
    let limit = Duration::from_secs(2);
    eprintln!("b killed and restarted; a linked to its new run after {took:?} (bound {limit:?})");
    assert!(took < limit, "a linked to the restarted b after {took:?}, more than {limit:?}");
    c.node("a").send(&n("b"), msg(None, 1)).await.expect("queued");
    assert_eq!(receive(c.node("b"), "a", 1).await, vec![msg(None, 1)]);
}

/// Starts `node` of `c` on its port, on a runtime of its own, so that [`kill`] can stop it as
/// a killed process stops.
async fn start_apart<H: Harness>(c: &Cluster<H>, node: &str) -> (tokio::runtime::Runtime, H::T) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let s = settings(&c.cfg, node, c.sec, c.certs.path());
    let bound = H::bind(c.ports[node]);
    let t = runtime.spawn(H::start(s, bound)).await.expect("joined").expect("start");
    (runtime, t)
}

/// Stops a node started by [`start_apart`] as a killed process stops: its tasks end at once,
/// its sockets close without a word on its links (a QUIC peer hears nothing).
async fn kill<T: Send + 'static>(runtime: tokio::runtime::Runtime, t: T) {
    let stop = move || {
        runtime.shutdown_timeout(Duration::from_secs(1));
        drop(t);
    };
    tokio::task::spawn_blocking(stop).await.expect("killed");
}

/// `shutdown` delivers what was queued, then refuses messages and ends `recv`.
pub async fn shutdown_flushes<H: Harness>() {
    let c = Cluster::<H>::start(&["a", "b"], Sec::Tls, |_, _| {}).await;
    connected(c.node("b"), "a").await;
    connected(c.node("a"), "b").await;
    for i in 0..500 {
        c.node("b").try_send(&n("a"), msg(Some(i % 3), i)).expect("room");
    }
    c.node("b").shutdown().await;
    let got = receive(c.node("a"), "b", 500).await;
    assert_ordered(&got);
    assert!(matches!(c.node("b").try_send(&n("a"), msg(None, 0)), Err(crate::Error::Closed)));
    // After shutdown, recv drains and ends.
    let drained = tokio::time::timeout(WAIT, async { while c.node("b").recv().await.is_some() {} }).await;
    assert!(drained.is_ok(), "recv ends after shutdown");
}

/// Queues are bounded (data and control apart), unknown peers refused, refused messages
/// handed back, and `send` waits for room.
pub async fn bounded_queues_and_unknown_peers<H: Harness>() {
    // b is listed but never started: a's queue to it fills up.
    let ba = H::bind(0);
    let bb = H::bind(0);
    let cfg = parse(&domain_text("web", &[("a", H::port(&ba)), ("b", H::port(&bb))], ""));
    drop(bb);
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = settings(&cfg, "a", Sec::Insecure, dir.path());
    s.queue_capacity = 4;
    s.control_queue_capacity = 2;
    let a = H::start(s, ba).await.expect("a");
    for i in 0..4 {
        a.try_send(&n("b"), msg(Some(1), i)).expect("room");
    }
    assert!(matches!(a.try_send(&n("b"), msg(Some(1), 9)), Err(crate::Error::QueueFull { .. })));
    for i in 0..2 {
        a.try_send(&n("b"), msg(None, i)).expect("room for control");
    }
    assert!(matches!(a.try_send(&n("b"), msg(None, 9)), Err(crate::Error::QueueFull { .. })));
    assert!(matches!(a.try_send(&n("zz"), msg(None, 9)), Err(crate::Error::UnknownPeer { .. })));
    // `offer` hands a refused message back, whatever the reason.
    match a.offer(&n("b"), msg(Some(1), 11)) {
        Err((crate::Error::QueueFull { .. }, m)) => assert_eq!((m.key, m.seq), (Some(1), 11)),
        other => panic!("full data queue: {:?}", other.map_err(|(e, m)| (e, m.seq))),
    }
    match a.offer(&n("zz"), msg(None, 12)) {
        Err((crate::Error::UnknownPeer { .. }, m)) => assert_eq!(m.seq, 12),
        other => panic!("unknown peer: {:?}", other.map_err(|(e, m)| (e, m.seq))),
    }
    let waited = tokio::time::timeout(Duration::from_millis(200), a.send(&n("b"), msg(Some(1), 10))).await;
    assert!(waited.is_err(), "send waits for room");
    a.shutdown().await;
}

/// A full data queue does not refuse control messages (heartbeats): with b not yet running,
/// a fills its data queue to b until `QueueFull`; control messages are still accepted (up to
/// their own bound) and are delivered when b comes up, along with all the data, each in its
/// order. Over TCP they arrive before the data backlog queued earlier. What was queued goes
/// out in one frame per stream, and a frame arrives as one event.
pub async fn control_passes_a_full_data_queue<H: Harness>() {
    const DATA: u64 = 16;
    const CONTROL: u64 = 4;
    let ba = H::bind(0);
    let bb = H::bind(0);
    let cfg = parse(&domain_text("web", &[("a", H::port(&ba)), ("b", H::port(&bb))], ""));
    let certs = tempfile::tempdir().expect("tempdir");
    tls::init_dir(&cfg, certs.path()).expect("certs");
    let mut s = settings(&cfg, "a", Sec::Tls, certs.path());
    s.queue_capacity = DATA as usize;
    s.control_queue_capacity = CONTROL as usize;
    let a = H::start(s, ba).await.expect("a");
    let mut queued = 0;
    loop {
        match a.try_send(&n("b"), msg(Some(1), queued)) {
            Ok(()) => queued += 1,
            Err(crate::Error::QueueFull { .. }) => break,
            Err(e) => panic!("unexpected: {e}"),
        }
        assert!(queued <= DATA, "the data queue holds more than its capacity");
    }
    assert_eq!(queued, DATA);
    for i in 0..CONTROL {
        a.try_send(&n("b"), msg(None, 1000 + i)).expect("control accepted while the data queue is full");
    }
    let over = a.try_send(&n("b"), msg(None, 2000));
    assert!(matches!(over, Err(crate::Error::QueueFull { .. })), "control queue bounded: {over:?}");

    let b = H::start(settings(&cfg, "b", Sec::Tls, certs.path()), bb).await.expect("b");
    let events = receive_events(&b, "a", (DATA + CONTROL) as usize).await;
    // TCP: one frame; QUIC: one on the control stream, one on the data stream of key 1.
    assert!(events.len() <= 2, "{} events for {} messages", events.len(), DATA + CONTROL);
    let got = events.concat();
    let data: Vec<TestMsg> = got.iter().filter(|m| m.key.is_some()).cloned().collect();
    let control: Vec<TestMsg> = got.iter().filter(|m| m.key.is_none()).cloned().collect();
    assert_eq!(data, (0..DATA).map(|i| msg(Some(1), i)).collect::<Vec<_>>());
    assert_eq!(control, (0..CONTROL).map(|i| msg(None, 1000 + i)).collect::<Vec<_>>());
    if H::CONTROL_FIRST {
        let first_data = got.iter().position(|m| m.key.is_some());
        let last_control = got.iter().rposition(|m| m.key.is_none());
        assert!(last_control < first_data, "control waited behind the data backlog: {got:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// A connection that says nothing is dropped after the handshake timeout; connections beyond
/// the cap on unauthenticated connections are dropped at once; neither keeps others out.
pub async fn silent_connection_times_out<H: Harness>() {
    let c = Cluster::<H>::start(&["a", "b"], Sec::Tls, |n, s| {
        if n == "b" {
            s.handshake_timeout = Duration::from_millis(500);
            s.max_unauthenticated = 2;
        }
    })
    .await;
    connected(c.node("b"), "a").await;
    let Some(g1) = <H::Bound as Bound>::silent(c.addr("b")).await else { return };
    let Some(g2) = <H::Bound as Bound>::silent(c.addr("b")).await else { return };
    let Some(g3) = <H::Bound as Bound>::silent(c.addr("b")).await else { return };
    let (mut timeouts, mut capped) = (0, 0);
    while timeouts < 2 || capped < 1 {
        let why = refused(c.node("b"), "silent peers").await;
        if why.contains("handshake-timeout") {
            timeouts += 1;
        } else if why.contains("too-many-unauthenticated") {
            capped += 1;
        } else {
            panic!("unexpected refusal: {why}");
        }
    }
    drop((g1, g2, g3));
    c.node("a").send(&n("b"), msg(None, 1)).await.expect("queued");
    assert_eq!(receive(c.node("b"), "a", 1).await, vec![msg(None, 1)]);
}

/// Garbage on an insecure listener meets the frame decoder itself.
pub async fn garbage_insecure<H: Harness>() {
    let c = Cluster::<H>::start(&["a", "b"], Sec::Insecure, |_, _| {}).await;
    connected(c.node("a"), "b").await;
    if <H::Bound as Bound>::garbage(c.addr("b")).await {
        let why = refused(c.node("b"), "garbage").await;
        assert!(why.contains("[framing]"), "{why}");
    }
    c.node("a").send(&n("b"), msg(Some(3), 1)).await.expect("queued");
    assert_eq!(receive(c.node("b"), "a", 1).await, vec![msg(Some(3), 1)]);
}

/// A reload adds a node to a running domain: `a` and `b` run a 2-node file, `c` starts with
/// a 3-node file (its certificate issued by the same CA); once `a` and `b` take the 3-node
/// file ([`Transport::add_peers`]), messages flow both ways between every pair. A file of
/// another domain is refused.
pub async fn added_node_links_to_running_nodes<H: Harness>() {
    for sec in [Sec::Tls, Sec::Insecure] {
        let bound: Vec<(&str, H::Bound)> = ["a", "b", "c"].iter().map(|n| (*n, H::bind(0))).collect();
        let ports: Vec<(&str, u16)> = bound.iter().map(|(n, b)| (*n, H::port(b))).collect();
        let two = parse(&domain_text("web", &ports[..2], ""));
        let three = parse(&domain_text("web", &ports, ""));
        let certs = tempfile::tempdir().expect("tempdir");
        tls::init_dir(&three, certs.path()).expect("certs");
        let mut nodes = BTreeMap::new();
        for (n, b) in bound {
            let cfg = if n == "c" { &three } else { &two };
            nodes.insert(n, H::start(settings(cfg, n, sec, certs.path()), b).await.expect("start"));
        }
        connected(&nodes["a"], "b").await;
        let other = parse(&domain_text("shop", &ports, ""));
        assert!(nodes["a"].add_peers(other).is_err(), "a file of another domain is refused");
        for n in ["a", "b"] {
            nodes[n].add_peers(three.clone()).expect("add_peers");
        }
        connected_all(&nodes["c"], &["a", "b"]).await;
        let mut seq = 0;
        for (from, to) in [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")] {
            seq += 1;
            nodes[from].send(&n(to), msg(Some(seq), seq)).await.expect("send");
            assert_eq!(receive(&nodes[to], from, 1).await, vec![msg(Some(seq), seq)], "{from} -> {to}");
        }
        for t in nodes.values() {
            t.shutdown().await;
        }
    }
}

/// Instantiates every case of [`carrier::conformance`](crate::carrier::conformance) as a
/// `#[tokio::test]` for a [`Harness`](crate::carrier::conformance::Harness) type.
#[macro_export]
macro_rules! conformance_tests {
    ($h:ty) => {
        $crate::conformance_tests!(@cases $h;
            handshake, handshake_insecure, messages_both_ways_in_order,
            large_messages_up_to_the_limit, oversize_frame_and_garbage_refused_others_keep_working,
            wrong_ca_refused, unknown_node_refused, other_domain_refused, forbidden_mode_refused,
            peer_restart_and_reconnect, restarted_node_sees_every_peer_within_a_handshake,
            a_wake_up_while_dialing_dials_again_at_once,
            a_peer_restarted_just_after_linking_is_linked_again_at_once, shutdown_flushes, bounded_queues_and_unknown_peers,
            control_passes_a_full_data_queue, silent_connection_times_out, garbage_insecure,
            added_node_links_to_running_nodes);
    };
    (@cases $h:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::carrier::conformance::$case::<$h>().await;
            }
        )*
    };
}

/// The loopback address hostile connections come from by default (`127.0.0.9`).
pub const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));

/// The `i`-th stranger's address: `127.0.0.(9 + i)`.
pub fn stranger(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9u8.saturating_add(i)))
}

/// A TCP connection to `addr` from `from` (any port).
pub async fn stranger_tcp(addr: SocketAddr, from: IpAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from, 0))?;
    s.connect(addr).await
}

/// Restarts `node` of `c` and waits until it reports a link up to every one of `peers`; how
/// long that took from the moment it started (after its socket was bound again: a stopped
/// QUIC endpoint keeps its UDP socket until its connections have drained).
pub async fn restart_and_link<H: Harness>(c: &mut Cluster<H>, node: &str, peers: &[&str]) -> Duration {
    if let Some(t) = c.nodes.remove(node) {
        t.shutdown().await;
    }
    let bound = H::bind(c.ports[node]);
    let t0 = Instant::now();
    let t = H::start(settings(&c.cfg, node, c.sec, c.certs.path()), bound).await.expect("restart");
    c.nodes.insert(node.to_owned(), t);
    connected_all(c.node(node), peers).await;
    t0.elapsed()
}
