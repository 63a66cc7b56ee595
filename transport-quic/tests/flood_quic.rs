//! Fair handshakes over QUIC: sixteen stranger addresses send valid QUIC Initial packets
//! (each a real client's first flight, captured, so each opens a connection of its own) at
//! 500 per second in all and never answer, as a flood from spoofed addresses would; the node's configured
//! peer, restarted during the flood, still links at once (it has handshake slots of its own,
//! and the flood gets at most half of the shared ones before it must answer a Retry), the
//! node restarted during the flood too, and the warnings stay a handful (rate-limited).
//! Prints the process's file descriptors and memory before, during and after the flood. One
//! test per binary: it counts the process's warnings.

mod quic_harness;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use quic_harness::Quic;
use quinn::crypto::rustls::QuicClientConfig;
use replication_core::carrier::conformance::{Cluster, Sec, connected, n};
use replication_core::carrier::hostile::{WarnCounter, process_figures, restarts_during_flood, stranger};
use replication_core::tls;

/// Initials sent per second.
const RATE: u64 = 500;
/// Distinct Initials captured (sent round and round).
const INITIALS: usize = 2000;
/// Stranger addresses the Initials come from.
const SOURCES: u8 = 16;

/// Whether `p` is a QUIC long-header Initial packet; its destination connection id.
fn initial_dcid(p: &[u8]) -> Option<&[u8]> {
    let long_initial = p.first().is_some_and(|b| b & 0xf0 == 0xc0);
    let len = usize::from(*p.get(5)?);
    if long_initial { p.get(6..6 + len) } else { None }
}

/// `count` QUIC Initial datagrams with distinct connection ids, each the first flight of node
/// `a`'s connection attempt to `b` in `c` (its TLS ClientHello is what b expects; only a's
/// certificate, sent later, would prove who it is), captured on a socket that never answers.
async fn initials(c: &Cluster<Quic>, count: usize) -> Vec<Vec<u8>> {
    let capture = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("capture");
    let to = capture.local_addr().expect("addr");
    let pem = tls::load_node(c.certs.path(), &n("a")).expect("a's certificate");
    let client = tls::client_config(&c.cfg, &n("a"), &pem).expect("a's client config");
    let name = tls::server_name(&c.cfg.domain.name, &n("b")).expect("b's name").to_str().into_owned();
    let client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client).expect("quic config")));
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client");
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    // Kept until the end: a connection attempt given up sends a close, not a ClientHello.
    let mut pending = Vec::new();
    while out.len() < count {
        let target = (out.len() + 100).min(count);
        pending.extend((0..100).filter_map(|_| endpoint.connect_with(client.clone(), to, &name).ok()));
        while out.len() < target {
            let Ok(Ok((len, _))) =
                tokio::time::timeout(Duration::from_millis(500), capture.recv_from(&mut buf)).await
            else {
                break;
            };
            let p = &buf[..len];
            if let Some(dcid) = initial_dcid(p) {
                if seen.insert(dcid.to_vec()) {
                    out.push(p.to_vec());
                }
            }
        }
    }
    drop(pending);
    endpoint.close(0u32.into(), b"");
    out
}

/// Sends `initials` round and round to `to` at [`RATE`] per second until `stop`, each from
/// the next of [`SOURCES`] stranger addresses (as spoofed sources would be); how many it sent.
fn flood(initials: &[Vec<u8>], to: SocketAddr, stop: &AtomicBool) -> u64 {
    let sockets: Vec<std::net::UdpSocket> = (0..SOURCES)
        .map(|i| std::net::UdpSocket::bind(SocketAddr::new(stranger(i), 0)).expect("bind a stranger address"))
        .collect();
    let t0 = Instant::now();
    let mut sent = 0u64;
    for (p, s) in initials.iter().cycle().zip(sockets.iter().cycle()) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Keep to RATE per second.
        let due = Duration::from_micros(sent * 1_000_000 / RATE);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        if s.send_to(p, to).is_ok() {
            sent += 1;
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_during_an_initial_flood_links_at_once() {
    let warnings = WarnCounter::install().expect("the only subscriber of this test binary");
    let mut c = Cluster::<Quic>::start(&["a", "b"], Sec::Tls, |_, _| {}).await;
    connected(c.node("a"), "b").await;
    let packets = Arc::new(initials(&c, INITIALS).await);
    let before = process_figures();
    let warned = warnings.count();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (packets, stop, to) = (packets.clone(), stop.clone(), c.addr("b"));
        let t0 = Instant::now();
        tokio::task::spawn_blocking(move || (flood(&packets, to, &stop), t0.elapsed()))
    };
    let run = restarts_during_flood(&mut c, &warnings, warned).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, lasted) = sender.await.expect("flood");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = process_figures();
    let rate = sent as f64 / lasted.as_secs_f64();
    eprintln!(
        "Initial flood: {sent} Initials ({} distinct) in {lasted:?} ({rate:.0}/s); {run}; before: {before}; \
         after: {after}",
        packets.len()
    );
    assert!(rate >= 330.0, "the flood sent only {rate:.0} Initials per second");
    run.check();
}
