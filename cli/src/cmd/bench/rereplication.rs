//! Re-replication after a backup holder is lost.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::child::{ChildNode, domain_dir};
use super::cluster::{
    Timings, bench_domain, create_many, scaled, start_node, stop_all, wait_peers_up, wait_until,
};
use super::cpu::{process_cpu, us_per_op};
use super::figure::Carrier;
use super::sync;

/// Re-replication settings of the benchmark: a token bucket that does not limit (1,000,000
/// sessions/s) and a scan batch (and burst) of 1000 sessions per maintenance tick, which fits
/// the transport's per-peer queue of 1024 messages.
const REREP_PER_SEC: u32 = 1_000_000;
const REREP_BATCH: u32 = 1000;

/// What one re-replication measured.
pub(crate) struct Rerep {
    /// Sessions per second, from the failure detection to the last copy.
    pub(crate) per_s: f64,
    /// Sessions re-replicated.
    pub(crate) sessions: f64,
    /// Milliseconds from the kill to the last copy.
    pub(crate) from_kill_ms: f64,
    /// CPU time of this process (app1, app2, their links, the benchmark's polling) from the
    /// failure detection to the last copy, per session re-replicated.
    pub(crate) cpu_us_per_session: f64,
}

/// Three nodes, `n` sessions owned by app1 with one backup each on app2 or app3; app3, a
/// process of its own, is killed with SIGKILL and app1 re-creates the lost copies on app2.
/// The re-replication token bucket and scan batch are raised so they do not limit the rate.
pub(crate) async fn rereplication(n: usize, timings: Timings) -> anyhow::Result<Rerep> {
    let mut core = replication_core::Settings::default();
    core.rereplication_per_sec = REREP_PER_SEC;
    core.rereplication_burst = REREP_BATCH;
    core.scan_batch = REREP_BATCH as usize;
    let (text, cfg, mut sockets) = bench_domain(Carrier::main().as_str(), 3, 1, "", timings)?;
    let (dir, certs) = domain_dir(&text, &cfg)?;
    // app3 binds its address in the child.
    drop(sockets.pop());
    let mut nodes = Vec::new();
    for (name, socket) in sockets {
        nodes.push(start_node(&cfg, &certs, &name, socket, sync(1), Some(&core), None).await?);
    }
    let mut dead = ChildNode::spawn(dir.path(), "app3", 0)?;
    let ready = dead.line(Duration::from_secs(60)).await.context("app3 starting")?;
    if ready != "ready" {
        bail!("app3 said {ready:?}");
    }
    wait_peers_up(&nodes, 2).await?;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    create_many(&a, n).await?;
    // `metrics()` walks every session of the node on its driver task (about 0.1 µs each, a
    // cache miss, on this machine): polled every µs per session, so that the walks take a
    // small share of the driver at every size (a shorter interval lets them take most of it
    // at 100,000 sessions and more, and the heartbeats wait behind them); the end is known
    // within about 5% of the re-replication.
    let every = Duration::from_micros((n as u64).max(1_000));
    wait_until(Duration::from_secs(60) + scaled(n), every, || {
        let a = a.clone();
        async move {
            let m = a.metrics().await?.core;
            Ok(m.owned >= n && m.under_replicated == 0)
        }
    })
    .await
    .context("initial replication")?;
    let before = b.metrics().await?.core.backups;
    let t0 = Instant::now();
    if std::env::var_os("M2M_BENCH_PRINT_KILL").is_some() {
        // For lining a profile up with the kill (see `failover`).
        eprintln!("    re-replication: kill at {t0:?}");
    }
    dead.kill()?;
    let detected = wait_until(Duration::from_secs(10), Duration::from_millis(1), || {
        let a = a.clone();
        async move { Ok(a.peers().await?.peers.iter().filter(|p| p.up).count() < 2) }
    })
    .await
    .context("failure detection")?;
    let cpu0 = process_cpu()?;
    let done = wait_until(Duration::from_secs(15) + scaled(n), every, || {
        let b = b.clone();
        async move { Ok(b.metrics().await?.core.backups >= n) }
    })
    .await
    // The last copy arrived between the poll before and this one: the middle.
    .map(|t| t.checked_sub(every / 2).unwrap_or(t).max(detected));
    let cpu1 = process_cpu()?;
    let done = match done {
        Ok(t) => t,
        Err(e) => {
            let (ma, mb) = (a.metrics().await?, b.metrics().await?);
            eprintln!(
                "    re-replication stalled: app2 holds {} of {n} backups ({} before the kill); app1 owns {}, \
             {} under-replicated, {} stepped down or fenced, {} taken back by failover, {} full copies \
             sent, {} sends refused on a full queue",
                mb.core.backups,
                before,
                ma.core.owned,
                ma.core.under_replicated,
                ma.core.fenced,
                ma.core.failovers,
                ma.core.full_copies_sent,
                ma.send_queue_full
            );
            // How far it got (above), and the nodes stopped (not left running into the next step).
            stop_all(&nodes).await;
            return Err(e).context(format!("re-replication: app2 holds {} of {n} backups", mb.core.backups));
        }
    };
    let fenced = a.metrics().await?.core.fenced;
    if fenced > 0 {
        eprintln!("    re-replication: app1 stepped down from or was fenced on {fenced} sessions");
    }
    let dropped = a.metrics().await?.send_queue_full;
    eprintln!("    re-replication: {dropped} sends dropped on a full transport queue at app1");
    stop_all(&nodes).await;
    let moved = n.saturating_sub(before) as f64;
    let secs = done.duration_since(detected).as_secs_f64().max(1e-6);
    let cpu_us_per_session = us_per_op(cpu0, cpu1, moved as u64);
    eprintln!(
        "    re-replication: {cpu_us_per_session:.1} µs of CPU per session, {:.0}% of two cores",
        cpu1.saturating_sub(cpu0).as_secs_f64() * 100.0 / (2.0 * secs)
    );
    Ok(Rerep {
        per_s: moved / secs,
        sessions: moved,
        from_kill_ms: done.duration_since(t0).as_secs_f64() * 1e3,
        cpu_us_per_session,
    })
}
