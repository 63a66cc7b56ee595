//! Hostile traffic against [`transport_quic::QuicTransport`]: a flood of forged QUIC Initial
//! packets (long header, version 1, random connection ids, undecryptable payload) and of
//! random datagrams while a real peer sends; the real peer's messages still flow and memory
//! stays flat. (Other-domain, wrong-CA, unknown-node and garbage refusals are in the shared
//! conformance suite.)

mod quic_harness;

use std::time::Duration;

use quic_harness::Quic;
use replication_core::carrier::conformance::{self, Cluster, Sec, msg, n, receive, rss_kib};
use replication_core::transport::Transport;

/// splitmix64, for reproducible junk.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A forged client Initial: long header, QUIC v1, 8-byte random DCID, empty SCID and token,
/// random "encrypted" payload, padded to 1200 bytes like a real one.
fn forged_initial(state: &mut u64) -> Vec<u8> {
    let mut p = vec![0xc3, 0x00, 0x00, 0x00, 0x01, 8];
    p.extend_from_slice(&next(state).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // SCID length 0, token length 0
    p.extend_from_slice(&[0x44, 0xa0]); // payload length 1184 (2-byte varint)
    while p.len() < 1200 {
        p.extend_from_slice(&next(state).to_be_bytes());
    }
    p.truncate(1200);
    p
}

const FLOOD: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_initial_and_junk_flood_does_not_stop_the_real_peer() {
    let c = Cluster::<Quic>::start(&["a", "b"], Sec::Tls, |_, _| {}).await;
    conformance::connected(c.node("a"), "b").await;
    let addr = c.addr("b");
    let before = rss_kib();
    let flood = tokio::task::spawn_blocking(move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut state = 42u64;
        let mut sent = 0;
        for i in 0..FLOOD {
            let p = if i % 2 == 0 {
                forged_initial(&mut state)
            } else {
                (0..(next(&mut state) % 1400 + 1)).map(|_| next(&mut state) as u8).collect()
            };
            if s.send_to(&p, addr).is_ok() {
                sent += 1;
            }
            if i % 500 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        sent
    });
    for i in 0..200 {
        c.node("a").send(&n("b"), msg(Some(i % 4), i)).await.expect("queued");
    }
    let mut got = receive(c.node("b"), "a", 200).await;
    got.sort_by_key(|m| m.seq);
    assert_eq!(got, (0..200).map(|i| msg(Some(i % 4), i)).collect::<Vec<_>>());
    let sent = flood.await.expect("flood");
    c.node("a").send(&n("b"), msg(None, 999)).await.expect("queued");
    assert_eq!(receive(c.node("b"), "a", 1).await, vec![msg(None, 999)]);
    let after = rss_kib();
    eprintln!("quic flood: {sent} datagrams (half forged Initials); RSS {before} -> {after} KiB");
    assert!(sent >= FLOOD / 2, "only {sent} datagrams sent");
    assert!(after < before + 64 * 1024, "RSS grew from {before} to {after} KiB");
}
