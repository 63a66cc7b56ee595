//! CPU time per synchronous update: two nodes of this process on loopback (mutual TLS,
//! throw-away certificates, one backup), `conc` tasks each updating its own session (a 1 KiB
//! attribute) until `updates` updates are acknowledged; prints the process's CPU time (user +
//! system, owner and backup together) per update and the updates per second. The same load as
//! `m2m bench`'s synchronous phase, with a fixed amount of work rather than a fixed time. The
//! machine's other load still moves the figure (an idle worker thread that is woken costs CPU):
//! compare builds alternately, several runs each.
//!
//! ```text
//! cargo run --release -p session-api --example cpu_per_update -- [tcp|quic] [conc] [updates] [shared|single]
//! ```
//!
//! `quic` needs `--features quic`. The load runs on a tokio runtime of two worker threads (as
//! `m2m bench`); `shared` (the default) starts the nodes on that runtime too; `single` runs the
//! load and both nodes on one single-threaded runtime instead (no hand-off ever crosses threads).

use std::time::{Duration, Instant};

use session_api::{AckPolicy, Attributes, DomainConfig, Replication, SessionManager};

const PAYLOAD: usize = 1024;

/// The process's CPU time so far (user + system, every thread).
fn cpu_time() -> Duration {
    cpu_time::ProcessTime::now().as_duration()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let transport = args.next().unwrap_or_else(|| "tcp".into());
    let conc: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let updates: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let layout = args.next().unwrap_or_else(|| "shared".into());
    let rt = if layout == "single" {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?
    };
    rt.block_on(run(&transport, conc, updates, &layout))
}

async fn run(
    transport: &str,
    conc: usize,
    updates: usize,
    layout: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut text = format!(
        "[domain]\nname = \"bench\"\nreplicas = 1\ntransport = \"{transport}\"\n\
         heartbeat_interval_ms = 50\nfailure_timeout_ms = 300\nrequest_timeout_ms = 2000\n"
    );
    let mut sockets = Vec::new();
    for name in ["app1", "app2"] {
        let addr = if transport == "quic" {
            let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let a = s.local_addr()?;
            sockets.push((name, None, Some(s)));
            a
        } else {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let a = l.local_addr()?;
            sockets.push((name, Some(l), None));
            a
        };
        text.push_str(&format!("[[node]]\nname = \"{name}\"\naddress = \"{addr}\"\n"));
    }
    let cfg = DomainConfig::parse(&text, "bench.toml")?;
    let certs = tempfile::tempdir()?;
    replication_core::tls::init_dir(&cfg, certs.path())?;
    let mut nodes = Vec::new();
    for (name, tcp, udp) in sockets {
        let mut b = SessionManager::builder(cfg.clone(), name)
            .certs_dir(certs.path())
            .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) });
        if let Some(l) = tcp {
            b = b.tcp_listener(l);
        }
        if let Some(s) = udp {
            b = b.udp_socket(s);
        }
        nodes.push(b.start().await?);
    }
    while nodes[0].metrics().await?.core.peers_up < 1 || nodes[1].metrics().await?.core.peers_up < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let owner = nodes[0].clone();
    let mut sessions = Vec::new();
    for _ in 0..conc {
        let mut a = Attributes::new();
        a.insert("data", vec![b'x'; PAYLOAD]);
        sessions.push(owner.create_with(a).await?);
    }
    let per_task = updates.div_ceil(conc);
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut s) in sessions.into_iter().enumerate() {
        let m = owner.clone();
        tasks.spawn(async move {
            for n in 0..per_task {
                s.set_bytes("data", vec![(n as u8) ^ (i as u8); PAYLOAD])?;
                let c = m.commit(&mut s).await?;
                if !matches!(c.replication, Replication::Replicated { .. }) {
                    return Err(format!("not replicated: {:?}", c.replication).into());
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r?.map_err(|e| e.to_string())?;
    }
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    let done = per_task * conc;
    println!(
        "{transport} c{conc} {layout}: {done} sync updates in {wall:.2?}: {:.0}/s, CPU {:.2} us per update \
         (process, owner + backup; {:.0}% of 2 cores)",
        done as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / done as f64,
        cpu.as_secs_f64() / wall.as_secs_f64() * 50.0,
    );
    for n in &nodes {
        let _ = n.abort().await;
    }
    Ok(())
}
