//! Hostile peers against [`transport_tcp::TcpTransport`]: a flood of connections that never
//! complete a handshake, a slow-loris Hello, a node of another domain, a frame header
//! claiming a huge length, and a peer whose host went away without closing its link. The node keeps serving its real peer throughout, and its memory
//! stays bounded. (Nodes of another domain, certificates of another CA, unknown nodes,
//! garbage and a few silent connections are in the conformance suite,
//! `replication_core::carrier::conformance`, run for TCP and QUIC.)

mod tcp_harness;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use replication_core::NodeId;
use replication_core::carrier::conformance::{
    self, Cluster, Harness, Sec, domain_text, msg, n, parse, receive, refused, rss_kib, settings,
};
use replication_core::carrier::hostile::{STRANGER, stranger_tcp};
use replication_core::transport::{Transport, TransportSettings};
use replication_core::wire::{FrameEncoder, Hello, MIN_MAX_FRAME};
use tcp_harness::Tcp;

/// Whether the peer closed `s` (EOF or reset), without waiting.
fn closed(s: &mut TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Node `y` of the domain `web` (`x` and `y`, no TLS; `tweak` may change y's settings) on a
/// free port, its address, the `Hello` frame a raw peer named `x` opens with, the directory
/// of `y`'s files, and x's socket. x is listed in the domain but not started: while its socket
/// is kept, nothing else takes its port. x sorts first, so x is the one that dials: y takes
/// the links x opens.
async fn node_y_and_hello_of_x(
    tweak: impl FnOnce(&mut TransportSettings),
) -> (<Tcp as Harness>::T, std::net::SocketAddr, Vec<u8>, tempfile::TempDir, std::net::TcpListener) {
    let ba = Tcp::bind(0);
    let bx = Tcp::bind(0);
    let cfg = parse(&domain_text("web", &[("x", Tcp::port(&bx)), ("y", Tcp::port(&ba))], ""));
    let dir = tempfile::tempdir().expect("tmp");
    let addr = ba.local_addr().expect("addr");
    let mut s = settings(&cfg, "y", Sec::Insecure, dir.path());
    tweak(&mut s);
    let a = Tcp::start(s, ba).await.expect("y");
    let mut enc = FrameEncoder::new(MIN_MAX_FRAME);
    enc.hello(&Hello::for_node(&cfg, &NodeId::new("x")).expect("x is a member")).expect("hello");
    (a, addr, enc.finish().to_vec(), dir, bx)
}

/// A raw peer's handshake: sends `hello`, reads the node's Hello frame.
fn handshake(s: &mut TcpStream, hello: &[u8]) {
    s.write_all(hello).expect("hello");
    let mut head = [0u8; 4];
    s.read_exact(&mut head).expect("the node's hello");
    let mut rest = vec![0u8; u32::from_be_bytes(head) as usize];
    s.read_exact(&mut rest).expect("the node's hello");
}

const CAP: usize = 8;
const FLOOD: usize = 300;

/// 300 connections from one stranger that never say anything: at most the cap of them is held
/// open (the rest is closed at once), the held ones are cut by the time their handshake should
/// have started, memory stays flat, and
/// the real peer's messages flow throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_flood_is_capped_and_the_real_peer_keeps_working() {
    let c = Cluster::<Tcp>::start(&["a", "b"], Sec::Tls, |name, s| {
        if name == "b" {
            s.max_unauthenticated = CAP;
            s.handshake_timeout = Duration::from_millis(1500);
        }
    })
    .await;
    conformance::connected(c.node("a"), "b").await;
    let addr = c.addr("b");
    let before = rss_kib();
    // From another loopback address than the peers': a stranger (see `STRANGER`).
    let mut conns = Vec::new();
    for _ in 0..FLOOD {
        if let Ok(s) = stranger_tcp(addr, STRANGER).await.and_then(|s| s.into_std()) {
            conns.push(s);
        }
    }
    let flood = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(700));
        let open_mid = conns.iter_mut().map(|s| usize::from(!closed(s))).sum::<usize>();
        std::thread::sleep(Duration::from_millis(2000));
        let open_end = conns.iter_mut().map(|s| usize::from(!closed(s))).sum::<usize>();
        (conns.len(), open_mid, open_end)
    });
    // The real peer's messages flow during the flood.
    for i in 0..200 {
        c.node("a").send(&n("b"), msg(Some(1), i)).await.expect("queued");
    }
    let got = receive(c.node("b"), "a", 200).await;
    assert_eq!(got, (0..200).map(|i| msg(Some(1), i)).collect::<Vec<_>>());
    let (made, open_mid, open_end) = flood.await.expect("flood");
    let after = rss_kib();
    eprintln!(
        "flood: {made} connections, {open_mid} open after 0.7 s (cap {CAP}), {open_end} after the timeout; \
         RSS {before} -> {after} KiB"
    );
    assert!(made >= FLOOD / 2, "only {made} connections made");
    assert!(open_mid <= CAP, "{open_mid} unauthenticated connections held open, cap {CAP}");
    assert_eq!(open_end, 0, "every silent connection is cut at the handshake timeout");
    assert!(after < before + 64 * 1024, "RSS grew from {before} to {after} KiB");
    // Still serving afterwards.
    c.node("a").send(&n("b"), msg(None, 999)).await.expect("queued");
    assert_eq!(receive(c.node("b"), "a", 1).await, vec![msg(None, 999)]);
}

/// A Hello sent one byte per 100 ms is cut at the handshake timeout (1 s), long before it is
/// complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_hello_is_cut_at_the_handshake_timeout() {
    // The slow peer poses as x.
    let (a, addr, hello, _dir, _bx) =
        node_y_and_hello_of_x(|s| s.handshake_timeout = Duration::from_secs(1)).await;
    let slow = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let t0 = Instant::now();
        for (i, b) in hello.iter().enumerate() {
            // The last byte is never sent: the Hello stays incomplete.
            if i + 1 == hello.len() || s.write_all(&[*b]).is_err() || closed(&mut s) {
                break;
            }
            let _ = s.set_nonblocking(false);
            std::thread::sleep(Duration::from_millis(100));
        }
        let deadline = t0 + Duration::from_secs(10);
        while !closed(&mut s) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        (t0.elapsed(), hello.len())
    });
    let why = refused(&a, "slow loris").await;
    let (cut_after, len) = slow.await.expect("slow peer");
    eprintln!("slow loris: Hello of {len} bytes, cut after {cut_after:?}: {why}");
    assert!(why.contains("handshake-timeout"), "{why}");
    assert!(cut_after < Duration::from_millis(2500), "cut after {cut_after:?}");
    assert!(len > 15, "the Hello takes longer than the timeout to send byte by byte");
    a.shutdown().await;
}

/// A frame header claiming 4 GiB: refused from the header alone (before and after the
/// handshake), the connection closed, nothing of that size allocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_length_frame_is_refused_without_allocating() {
    let (a, addr, hello, _dir, _) = node_y_and_hello_of_x(|_| {}).await;
    let before = rss_kib();
    for after_handshake in [false, true] {
        let hello = hello.clone();
        let t = tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            if after_handshake {
                handshake(&mut s, &hello);
            }
            let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff, 3, 0x90]);
            let mut buf = [0u8; 256];
            let t0 = Instant::now();
            // EOF or reset: the node closed the connection.
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                assert!(t0.elapsed() < Duration::from_secs(10));
            }
            t0.elapsed()
        });
        let closed_after = t.await.expect("hostile peer");
        if after_handshake {
            // A link was up: it goes down again.
            conformance::disconnected(&a, "x").await;
        } else {
            let why = refused(&a, "huge frame").await;
            assert!(why.contains("exceeds the limit"), "{why}");
        }
        assert!(closed_after < Duration::from_secs(5), "closed after {closed_after:?}");
    }
    let after = rss_kib();
    eprintln!("huge frame: RSS {before} -> {after} KiB");
    assert!(after < before + 64 * 1024, "RSS grew from {before} to {after} KiB");
    a.shutdown().await;
}

/// Frames that arrive together are handed over as one event: a peer writes ten Batch frames
/// in one write, and the node delivers them in fewer events than frames (one, unless the
/// kernel splits the write), in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_read_together_are_delivered_as_one_event() {
    let (a, addr, mut bytes, _dir, _) = node_y_and_hello_of_x(|_| {}).await;
    let hello_len = bytes.len();
    for seq in 0..10 {
        let mut enc = FrameEncoder::new(MIN_MAX_FRAME);
        enc.push(&msg(Some(1), seq)).expect("small");
        bytes.extend_from_slice(enc.finish());
    }
    let peer = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        handshake(&mut s, &bytes[..hello_len]);
        // All ten frames in one write.
        s.write_all(&bytes[hello_len..]).expect("frames");
        s
    });
    let events = conformance::receive_events(&a, "x", 10).await;
    let got: Vec<u64> = events.iter().flatten().map(|m| m.seq).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert!(events.len() < 10, "one event per frame: {} events", events.len());
    drop(peer.await.expect("peer"));
    a.shutdown().await;
}

/// Reads one frame (the node's Hello) from `s`, then answers with `hello`: a raw peer's side
/// of a handshake the node dialed.
fn answer(s: &mut TcpStream, hello: &[u8]) {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).expect("the node's hello");
    let mut rest = vec![0u8; u32::from_be_bytes(head) as usize];
    s.read_exact(&mut rest).expect("the node's hello");
    s.write_all(hello).expect("hello");
}

/// Node `a` dials a raw peer `b`, whose host then goes away without closing the link (the
/// raw peer keeps it open and silent). A wake-up from the run of `b` the link reaches (`b`
/// started while `a` dialed it) leaves the link alone; when `b` starts again, its wake-up (a
/// connection with the Hello of its new run), within a second of the link coming up, makes
/// `a` drop the stale link and dial at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_replaces_a_stale_link() {
    let ba = Tcp::bind(0);
    let bb = Tcp::bind(0);
    let cfg = parse(&domain_text("web", &[("a", Tcp::port(&ba)), ("b", Tcp::port(&bb))], ""));
    let a_addr = ba.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tmp");
    let s = settings(&cfg, "a", Sec::Insecure, dir.path());
    let a = Tcp::start(s, ba).await.expect("a");
    let hello_of_run = |incarnation| {
        let hello = Hello { incarnation, ..Hello::for_node(&cfg, &NodeId::new("b")).expect("b is a member") };
        let mut enc = FrameEncoder::new(MIN_MAX_FRAME);
        enc.hello(&hello).expect("hello");
        enc.finish().to_vec()
    };
    let (hello, hello_again) = (hello_of_run(1), hello_of_run(2));
    // b answers a's dial, then its host goes away: the link stays open and silent.
    let stale = {
        let hello = hello.clone();
        tokio::task::spawn_blocking(move || {
            let (mut s, _) = bb.accept().expect("a's dial");
            answer(&mut s, &hello);
            (s, bb)
        })
    };
    conformance::connected(&a, "b").await;
    let linked = Instant::now();
    let (mut stale, bb) = stale.await.expect("b");
    let same_run = tokio::task::spawn_blocking(move || {
        let mut wake = TcpStream::connect(a_addr).expect("wake-up");
        handshake(&mut wake, &hello);
    });
    same_run.await.expect("wake-up of the same run");
    let kept = tokio::time::timeout(Duration::from_millis(300), conformance::disconnected(&a, "b")).await;
    assert!(kept.is_err(), "a wake-up from the run the link reaches ended the link");
    let t0 = Instant::now();
    assert!(t0 - linked < Duration::from_secs(1), "{:?}", t0 - linked);
    let again = tokio::task::spawn_blocking(move || {
        let mut wake = TcpStream::connect(a_addr).expect("wake-up");
        handshake(&mut wake, &hello_again);
        drop(wake);
        let (mut s, _) = bb.accept().expect("a dials again");
        answer(&mut s, &hello_again);
        s
    });
    conformance::disconnected(&a, "b").await;
    conformance::connected(&a, "b").await;
    let took = t0.elapsed();
    let _link = again.await.expect("b again");
    eprintln!("a wake-up replaced the stale link in {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let _ = stale.set_read_timeout(Some(Duration::from_secs(5)));
    assert!(matches!(stale.read(&mut [0u8; 64]), Ok(0) | Err(_)), "a closed the stale link");
    a.shutdown().await;
}
