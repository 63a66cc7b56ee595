//! Fair handshakes over TCP: sixteen stranger addresses hold hundreds of idle connections
//! to a node (reopening each one the node closes), more than its shared handshake slots;
//! its configured peer, restarted during the flood, still links at once (it has slots of its
//! own), the node restarted during the flood too, and the warnings the flood causes stay a
//! handful (rate-limited). Prints the process's file descriptors and memory before, during
//! and after the flood. One test per binary: it counts the process's warnings.

mod tcp_harness;

use std::net::SocketAddr;
use std::time::Duration;

use replication_core::carrier::conformance::{Cluster, Sec, connected};
use replication_core::carrier::hostile::{
    WarnCounter, process_figures, restarts_during_flood, stranger, stranger_tcp,
};
use tcp_harness::Tcp;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Stranger addresses the flood comes from.
const SOURCES: u8 = 16;
/// Idle connections each of them holds open.
const CONNS: usize = 20;

/// Whether the node closed `s`, without waiting.
fn open(s: &TcpStream) -> bool {
    match s.try_read(&mut [0u8; 16]) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// Holds [`CONNS`] idle connections to `addr` from the `source`-th stranger address, opening
/// a new one for each that closes (checked every 100 ms), until `stop`; how many it opened.
async fn hold_idle(addr: SocketAddr, source: u8, mut stop: watch::Receiver<bool>) -> usize {
    let mut conns = Vec::new();
    let mut opened = 0;
    while !*stop.borrow() {
        conns.retain(open);
        while conns.len() < CONNS {
            match stranger_tcp(addr, stranger(source)).await {
                Ok(s) => {
                    conns.push(s);
                    opened += 1;
                }
                Err(_) => break,
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), stop.changed()).await;
    }
    opened
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_during_an_idle_connection_flood_links_at_once() {
    let warnings = WarnCounter::install().expect("the only subscriber of this test binary");
    let mut c = Cluster::<Tcp>::start(&["a", "b"], Sec::Tls, |_, _| {}).await;
    connected(c.node("a"), "b").await;
    let before = process_figures();
    let warned = warnings.count();
    let (stop, stopped) = watch::channel(false);
    let flood: Vec<_> =
        (0..SOURCES).map(|i| tokio::spawn(hold_idle(c.addr("b"), i, stopped.clone()))).collect();
    let run = restarts_during_flood(&mut c, &warnings, warned).await;
    let _ = stop.send(true);
    let mut opened = 0;
    for f in flood {
        opened += f.await.expect("flood task");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = process_figures();
    eprintln!(
        "idle flood from {SOURCES} addresses x {CONNS} connections: {opened} connections opened; \
         {run}; before: {before}; after: {after}"
    );
    assert!(opened > 2 * usize::from(SOURCES) * CONNS, "the flood reopened what was cut: {opened}");
    run.check();
}
