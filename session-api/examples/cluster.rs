//! Three nodes of one domain in one process, on loopback ports, without TLS: create a session
//! on one node, crash it, and read the session on its failover target.
//!
//! ```text
//! cargo run -p session-api --example cluster
//! ```

use std::time::Duration;

use session_api::id::SessionIdParts;
use session_api::{AckPolicy, DomainConfig, SessionManager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Bind first, then write the domain: ephemeral ports never collide.
    let mut listeners = Vec::new();
    let mut text = String::from(
        "[domain]\nname = \"demo\"\nheartbeat_interval_ms = 50\nfailure_timeout_ms = 300\nrequest_timeout_ms = 2000\n",
    );
    for name in ["app1", "app2", "app3"] {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        text.push_str(&format!("[[node]]\nname = \"{name}\"\naddress = \"{}\"\n", l.local_addr()?));
        listeners.push((name, l));
    }
    let cfg = DomainConfig::parse(&text, "demo.toml")?;
    let mut nodes = Vec::new();
    for (name, l) in listeners {
        let node = SessionManager::builder(cfg.clone(), name)
            .insecure()
            .tcp_listener(l)
            .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) })
            .start()
            .await?;
        nodes.push(node);
    }
    // Wait until every node sees the two others.
    for n in &nodes {
        while n.metrics().await?.core.peers_up < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let app1 = &nodes[0];
    let mut s = app1.create().await?;
    s.set("user", "alice")?;
    s.set("cart", &vec!["book", "pen"])?;
    let commit = app1.commit(&mut s).await?;
    println!("created {} at version {} ({:?})", s.id(), commit.version, commit.replication);

    let target = SessionIdParts::parse(s.id()).and_then(|p| p.failover).ok_or("no failover target")?;
    println!("app1 crashes; its failover target is {target}");
    app1.abort().await?;

    let t = nodes.iter().find(|n| n.node() == &target).ok_or("target is a node")?;
    let session = loop {
        match t.get(s.id()).await {
            Ok(Some(found)) => break found,
            Ok(None) => return Err("the session was lost".into()),
            Err(e) => {
                println!("  not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let cart: Option<Vec<String>> = session.get("cart")?;
    println!("{target} serves it: user={:?} cart={cart:?}", session.get::<String>("user")?);
    let m = t.metrics().await?;
    println!(
        "{target}: owns {} sessions, backs up {}, failovers {}, under-replicated {}",
        m.sessions_owned(),
        m.sessions_backed_up(),
        m.failovers(),
        m.under_replicated()
    );
    for n in &nodes[1..] {
        n.shutdown().await?;
    }
    Ok(())
}
