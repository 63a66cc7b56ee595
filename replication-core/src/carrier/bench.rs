//! The transport microbenchmark, run by the examples `tcp_bench` (`transport-tcp`) and
//! `quic_bench` (`transport-quic`).
//!
//! Two nodes in one process on 127.0.0.1, mutual TLS (or `--insecure`):
//! - throughput: node a sends N 1 KiB messages to b as fast as `send` lets it (pipelined,
//!   keys spread over 16 sessions); the clock stops when b has received the last one;
//! - latency: a sends one message, b answers, a waits; p50/p99 over R round trips.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conformance::{Bound, TestMsg};
use crate::transport::{Security, Transport, TransportEvent, TransportSettings};
use crate::{DomainConfig, NodeId, tls};

/// The messages of the next event that carries any.
async fn next_msgs<T: Transport<TestMsg>>(t: &T) -> Vec<TestMsg> {
    loop {
        match t.recv().await {
            Some(TransportEvent::Messages { msgs, .. }) => return msgs,
            Some(TransportEvent::Message { msg, .. }) => return vec![msg],
            Some(_) => {}
            None => panic!("closed"),
        }
    }
}

/// Runs the benchmark (options from the command line: `--insecure`, `--n=200000`,
/// `--rounds=10000`) on the transport `start` starts, named `name`, which listens on a
/// socket of kind `B`, and prints the results.
pub async fn run<B: Bound, T, E, F>(name: &str, start: impl Fn(TransportSettings) -> F)
where
    T: Transport<TestMsg>,
    E: std::fmt::Display,
    F: Future<Output = Result<T, E>>,
{
    let free_port = || B::bind(0).port();
    let args: Vec<String> = std::env::args().collect();
    let insecure = args.iter().any(|a| a == "--insecure");
    let n: u64 = args.iter().find_map(|a| a.strip_prefix("--n=")?.parse().ok()).unwrap_or(200_000);
    let rounds: usize = args.iter().find_map(|a| a.strip_prefix("--rounds=")?.parse().ok()).unwrap_or(10_000);

    let text = format!(
        "[domain]\nname = \"bench\"\n[[node]]\nname = \"a\"\naddress = \"127.0.0.1:{}\"\n[[node]]\nname = \"b\"\naddress = \"127.0.0.1:{}\"\n",
        free_port(),
        free_port()
    );
    let cfg = Arc::new(DomainConfig::parse(&text, "bench").expect("domain"));
    let dir = std::env::temp_dir().join(format!("m2m-bench-{}-{}", name, std::process::id()));
    tls::init_dir(&cfg, &dir).expect("certs");
    let sec = |node: &str| {
        if insecure {
            Security::Insecure
        } else {
            Security::Tls(tls::load_node(&dir, &NodeId::new(node)).expect("certs"))
        }
    };
    let node = |n: &str| {
        let settings = TransportSettings::new(cfg.clone(), NodeId::new(n), sec(n));
        let started = start(settings);
        async move { started.await.unwrap_or_else(|e| panic!("start: {e}")) }
    };
    let a = Arc::new(node("a").await);
    let b = Arc::new(node("b").await);
    let (na, nb) = (NodeId::new("a"), NodeId::new("b"));

    // Warm up: wait for the link, both ways.
    a.send(&nb, TestMsg { key: None, seq: 0, body: String::new() }).await.expect("send");
    next_msgs(&*b).await;

    let body = "x".repeat(1024);
    let start = Instant::now();
    let sender = {
        let a = a.clone();
        let nb = nb.clone();
        let body = body.clone();
        tokio::spawn(async move {
            for seq in 0..n {
                a.send(&nb, TestMsg { key: Some(seq % 16), seq, body: body.clone() }).await.expect("send");
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
        name,
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
        a.send(&nb, TestMsg { key: Some(1), seq, body: body.clone() }).await.expect("send");
        next_msgs(&*a).await;
        lat.push(t0.elapsed());
    }
    echo.await.expect("echo");
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{} {}: round trip (1 KiB ping-pong, {rounds} rounds): p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        name,
        if insecure { "insecure" } else { "tls" },
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(Duration::ZERO)
    );
    a.shutdown().await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
