//! The transport microbenchmark, shared by `transport-tcp/examples/*_bench.rs` and
//! `transport-quic/examples/*_bench.rs` (included with `#[path]`).
//!
//! Two nodes in one process on 127.0.0.1, mutual TLS (or `--insecure`):
//! - throughput: node a sends N 1 KiB messages to b as fast as `send` lets it (pipelined,
//!   keys spread over 16 sessions); the clock stops when b has received the last one;
//! - latency: a sends one message, b answers, a waits; p50/p99 over R round trips.

#![allow(unreachable_pub, missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use replication_core::transport::{Security, Transport, TransportEvent, WireMessage};
use replication_core::{DomainConfig, NodeId, tls};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchMsg {
    pub key: Option<u64>,
    pub seq: u64,
    pub body: String,
}

impl WireMessage for BenchMsg {
    fn ordering_key(&self) -> Option<u64> {
        self.key
    }
}

pub trait Start {
    type T: Transport<BenchMsg>;
    const NAME: &'static str;
    fn start(cfg: Arc<DomainConfig>, node: &str, security: Security) -> impl Future<Output = Self::T>;
    fn free_port() -> u16;
}

/// The messages of the next event that carries any.
async fn next_msgs<T: Transport<BenchMsg>>(t: &T) -> Vec<BenchMsg> {
    loop {
        match t.recv().await {
            Some(TransportEvent::Messages { msgs, .. }) => return msgs,
            Some(TransportEvent::Message { msg, .. }) => return vec![msg],
            Some(_) => {}
            None => panic!("closed"),
        }
    }
}

pub async fn run<S: Start>() {
    let args: Vec<String> = std::env::args().collect();
    let insecure = args.iter().any(|a| a == "--insecure");
    let n: u64 = args.iter().find_map(|a| a.strip_prefix("--n=")?.parse().ok()).unwrap_or(200_000);
    let rounds: usize = args.iter().find_map(|a| a.strip_prefix("--rounds=")?.parse().ok()).unwrap_or(10_000);

    let text = format!(
        "[domain]\nname = \"bench\"\n[[node]]\nname = \"a\"\naddress = \"127.0.0.1:{}\"\n[[node]]\nname = \"b\"\naddress = \"127.0.0.1:{}\"\n",
        S::free_port(),
        S::free_port()
    );
    let cfg = Arc::new(DomainConfig::parse(&text, "bench").expect("domain"));
    let dir = std::env::temp_dir().join(format!("m2m-bench-{}-{}", S::NAME, std::process::id()));
    tls::init_dir(&cfg, &dir).expect("certs");
    let sec = |node: &str| {
        if insecure {
            Security::Insecure
        } else {
            Security::Tls(tls::load_node(&dir, &NodeId::new(node)).expect("certs"))
        }
    };
    let a = Arc::new(S::start(cfg.clone(), "a", sec("a")).await);
    let b = Arc::new(S::start(cfg.clone(), "b", sec("b")).await);
    let (na, nb) = (NodeId::new("a"), NodeId::new("b"));

    // Warm up: wait for the link, both ways.
    a.send(&nb, BenchMsg { key: None, seq: 0, body: String::new() }).await.expect("send");
    next_msgs(&*b).await;

    let body = "x".repeat(1024);
    let start = Instant::now();
    let sender = {
        let a = a.clone();
        let nb = nb.clone();
        let body = body.clone();
        tokio::spawn(async move {
            for seq in 0..n {
                a.send(&nb, BenchMsg { key: Some(seq % 16), seq, body: body.clone() }).await.expect("send");
            }
        })
    };
    let mut received = 0;
    while received < n {
        received += next_msgs(&*b).await.len() as u64;
    }
    let elapsed = start.elapsed();
    sender.await.expect("sender");
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "{} {}: throughput {n} x 1 KiB in {:.2?}: {:.0} msg/s, {:.1} MiB/s",
        S::NAME,
        if insecure { "insecure" } else { "tls" },
        elapsed,
        rate,
        rate * 1024.0 / (1024.0 * 1024.0)
    );

    let echo = {
        let b = b.clone();
        let na = na.clone();
        tokio::spawn(async move {
            let mut echoed = 0;
            while echoed < rounds {
                for m in next_msgs(&*b).await {
                    b.send(&na, m).await.expect("echo");
                    echoed += 1;
                }
            }
        })
    };
    let mut lat = Vec::with_capacity(rounds);
    for seq in 0..rounds as u64 {
        let t0 = Instant::now();
        a.send(&nb, BenchMsg { key: Some(1), seq, body: body.clone() }).await.expect("send");
        next_msgs(&*a).await;
        lat.push(t0.elapsed());
    }
    echo.await.expect("echo");
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{} {}: round trip (1 KiB ping-pong, {rounds} rounds): p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        S::NAME,
        if insecure { "insecure" } else { "tls" },
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(Duration::ZERO)
    );
    a.shutdown().await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
