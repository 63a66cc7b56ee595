//! Replayed and reordered frames from a real peer: node `b` owns a session and replicates it
//! to its backups `a` and `c`. `a` is played by this test over a raw TCP connection (insecure
//! domain, so the test speaks the wire format itself): it records every message `b` sends
//! it. After more writes, the test opens a new connection to `c` announcing itself as `b` and
//! sends the recorded messages again, newest first, each twice. `c` must ignore them: its
//! copy does not go back, and `b` still serves the latest state.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use replication_core::wire::{DEFAULT_MAX_FRAME, Frame, FrameDecoder, FrameEncoder, Hello};
use replication_core::{DomainConfig, Echo, Message, NodeId};
use session_api::SessionManager;

fn connect_as(cfg: &DomainConfig, me: &str, to: SocketAddr) -> (TcpStream, FrameDecoder) {
    let mut s = TcpStream::connect(to).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let mut enc = FrameEncoder::new(DEFAULT_MAX_FRAME);
    enc.hello(&Hello::for_node(cfg, &NodeId::new(me)).expect("member")).expect("hello");
    s.write_all(enc.finish()).expect("send hello");
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "no hello from {to}");
        match dec.next_frame::<Message>().expect("frames") {
            Some(Frame::Hello(_)) => return (s, dec),
            Some(other) => panic!("expected a hello, got {other:?}"),
            None => {}
        }
        match s.read(&mut buf) {
            Ok(0) => panic!("{to} closed the connection during the handshake"),
            Ok(n) => dec.extend(&buf[..n]),
            Err(_) => {}
        }
    }
}

fn send(s: &mut TcpStream, msgs: &[Message]) {
    let mut enc = FrameEncoder::new(DEFAULT_MAX_FRAME);
    for m in msgs {
        enc.push(m).expect("encode");
    }
    s.write_all(enc.finish()).expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_reordered_frames_do_not_move_state_back() {
    let listeners: Vec<TcpListener> =
        (0..3).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().expect("addr")).collect();
    let mut text = "[domain]\nname = \"test\"\nreplicas = \"entire-domain\"\nheartbeat_interval_ms = 50\n\
                    failure_timeout_ms = 300\nrequest_timeout_ms = 2000\n"
        .to_owned();
    for (n, a) in ["a", "b", "c"].iter().zip(&addrs) {
        text.push_str(&format!("[[node]]\nname = \"{n}\"\naddress = \"{a}\"\n"));
    }
    let cfg = DomainConfig::parse(&text, "test.toml").expect("domain");
    let mut ls = listeners.into_iter();
    let _a_listener = ls.next().expect("a");
    let b = SessionManager::builder(cfg.clone(), "b")
        .insecure()
        .tcp_listener(ls.next().expect("b"))
        .start()
        .await
        .expect("b starts");
    let c = SessionManager::builder(cfg.clone(), "c")
        .insecure()
        .tcp_listener(ls.next().expect("c"))
        .start()
        .await
        .expect("c starts");

    // The fake a: dials b (a sorts first), says it is alive (echoing b's heartbeats, so that b's
    // read lease does not rest on c alone, whose link the replay below disturbs), records what
    // b sends.
    let stop = Arc::new(AtomicBool::new(false));
    let recorded = Arc::new(Mutex::new(Vec::<Message>::new()));
    let fake_a = {
        let (cfg, stop, recorded, to) = (cfg.clone(), stop.clone(), recorded.clone(), addrs[1]);
        std::thread::spawn(move || {
            let (mut s, mut dec) = connect_as(&cfg, "a", to);
            let mut buf = vec![0u8; 64 * 1024];
            let mut next_beat = Instant::now();
            let mut echo = None;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if Instant::now() >= next_beat {
                    send(&mut s, &[Message::Heartbeat { incarnation: 1, sent: 0, echo }]);
                    next_beat += Duration::from_millis(50);
                }
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => dec.extend(&buf[..n]),
                    Err(_) => {}
                }
                while let Ok(Some(f)) = dec.next_frame::<Message>() {
                    if let Frame::Batch(msgs) = f {
                        for m in &msgs {
                            if let Message::Heartbeat { incarnation, sent, .. } = m {
                                echo = Some(Echo { incarnation: *incarnation, sent: *sent });
                            }
                        }
                        let mut r = recorded.lock().expect("recorded");
                        r.extend(msgs.into_iter().filter(|m| !matches!(m, Message::Heartbeat { .. })));
                    }
                }
            }
        })
    };

    // b sees a and c up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = b.metrics().await.expect("metrics");
        if m.peers.iter().filter(|p| p.up).count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "b does not see a and c: {:?}", m.peers);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = b.create().await.expect("create");
    let id = s.id().to_owned();
    s.set("k", "0").expect("set");
    b.commit(&mut s).await.expect("commit");
    for i in 1..=5 {
        b.update(&id, |s| s.set("k", i.to_string().as_str())).await.expect("update");
    }
    // Wait until a has been sent the writes, then write more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorded.lock().expect("recorded").iter().filter(|m| matches!(m, Message::Replicate { .. })).count()
        < 5
    {
        assert!(Instant::now() < deadline, "b did not replicate to a: {:?}", recorded.lock().expect("r"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 6..=8 {
        b.update(&id, |s| s.set("k", i.to_string().as_str())).await.expect("update");
    }
    let before = c.view(&id).await.expect("view").expect("c holds a copy");
    let captured: Vec<Message> = recorded.lock().expect("recorded").clone();
    let replicates = captured.iter().filter(|m| matches!(m, Message::Replicate { .. })).count();

    // Replay as b on a new connection to c: newest first, each twice.
    let mut replay: Vec<Message> = captured.iter().rev().flat_map(|m| [m.clone(), m.clone()]).collect();
    replay.push(captured[0].clone());
    let (mut conn, _) = connect_as(&cfg, "b", addrs[2]);
    send(&mut conn, &replay);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(conn);

    let after = c.view(&id).await.expect("view").expect("c still holds a copy");
    eprintln!(
        "replayed {} messages ({replicates} replicates) to c as b: c held {:?}/v{} before, {:?}/v{} after",
        replay.len(),
        before.epoch,
        before.version,
        after.epoch,
        after.version
    );
    assert!((&after.epoch, after.version) >= (&before.epoch, before.version), "c went back");
    assert_eq!(after.attrs, before.attrs, "c's attributes changed");
    // b still owns the latest state, and c catches up with any later write.
    let got = b.get(&id).await.expect("get").expect("session");
    assert_eq!(got.get::<String>("k").expect("k").as_deref(), Some("8"));
    b.update(&id, |s| s.set("k", "9")).await.expect("update");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = c.view(&id).await.expect("view").expect("copy");
        if v.version > before.version && v.version >= after.version {
            break;
        }
        assert!(Instant::now() < deadline, "c does not follow b any more: {v:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = fake_a.join();
    let _ = c.shutdown().await;
    let _ = b.shutdown().await;
}
