//! A rough throughput check: two nodes over loopback TCP (insecure), many concurrent
//! read-modify-write requests with synchronous acknowledgement.
//!
//! ```text
//! cargo run -p session-api --example throughput -- [sessions] [updates-per-session]
//! ```

use std::time::{Duration, Instant};

use session_api::{AckPolicy, DomainConfig, SessionManager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let sessions: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let updates: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let mut text = String::from("[domain]\nname = \"bench\"\n");
    let mut listeners = Vec::new();
    for name in ["a", "b"] {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        text.push_str(&format!("[[node]]\nname = \"{name}\"\naddress = \"{}\"\n", l.local_addr()?));
        listeners.push((name, l));
    }
    let cfg = DomainConfig::parse(&text, "bench.toml")?;
    let mut nodes = Vec::new();
    for (name, l) in listeners {
        let node = SessionManager::builder(cfg.clone(), name)
            .insecure()
            .tcp_listener(l)
            .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(10) })
            .start()
            .await?;
        nodes.push(node);
    }
    while nodes[0].metrics().await?.core.peers_up < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = nodes[0].clone();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let s = a.create().await?;
            for i in 0..updates {
                a.update(s.id(), |s| s.set("i", &i)).await?;
            }
            Ok::<_, session_api::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    let writes = sessions * (updates + 1);
    let m = a.metrics().await?;
    println!(
        "{writes} synchronous writes in {elapsed:.2?}: {:.0}/s; mean ack latency {:.2?}, max {:.2?}; {} bytes replicated",
        writes as f64 / elapsed.as_secs_f64(),
        m.sync_write_latency.mean(),
        m.sync_write_latency.max,
        m.bytes_sent()
    );
    for n in &nodes {
        n.shutdown().await?;
    }
    Ok(())
}
