//! Failover: the owner, a child process, killed with SIGKILL; the time until the survivors own
//! every session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use session_api::SessionManager;

use super::child::{ChildNode, domain_dir};
use super::cluster::{Timings, bench_domain, scaled, start_node, stop_all, wait_until};
use super::cpu::{process_cpu, us_per_op};
use super::figure::Carrier;
use super::sync;
use super::trace::Trace;

/// What one failover measured.
pub(crate) struct Failover {
    /// Milliseconds from the kill until every session is owned by a survivor.
    pub(crate) all_ms: f64,
    /// Milliseconds from the kill until a read of one session through its failover target
    /// (named in its id) returned it.
    pub(crate) first_read_ms: f64,
    /// Sends the survivors dropped on a full transport queue.
    pub(crate) dropped: f64,
    /// CPU time of this process (both survivors, their links, the bench's own polling) from
    /// the kill until every session was owned, per session: what taking one session over
    /// costs, whatever the wall time.
    pub(crate) cpu_us_per_session: f64,
}

/// Three nodes; `n` sessions owned by app1, a process of its own, which is then killed with
/// SIGKILL. With `closed_links` the survivors fail it when its links close and its address
/// refuses connections (a crashed process); without, at the failure timeout (as for a host
/// that went silent).
pub(crate) async fn failover(n: usize, closed_links: bool, timings: Timings) -> anyhow::Result<Failover> {
    let trace = Arc::new(Trace::default());
    let extra = if closed_links { "" } else { "closed_link_detection = false\n" };
    let started = Instant::now();
    let (text, cfg, mut sockets) = bench_domain(Carrier::main().as_str(), 3, 1, extra, timings)?;
    let failure_timeout = cfg.failure_timeout();
    let (dir, certs) = domain_dir(&text, &cfg)?;
    // app1 binds its address in the child.
    drop(sockets.remove(0));
    let mut survivors = Vec::new();
    for (name, socket) in sockets {
        survivors.push(start_node(&cfg, &certs, &name, socket, sync(1), None, Some(&trace)).await?);
    }
    let mut owner = ChildNode::spawn(dir.path(), "app1", n)?;
    let ready =
        owner.line(Duration::from_secs(120) + scaled(n)).await.context("the failover owner starting")?;
    let words: Vec<&str> = ready.split_whitespace().collect();
    let [_, probe, _, _] = words[..] else { bail!("the failover owner said {ready:?}") };
    let probe = probe.to_owned();
    // A domain that has run for a while, as in production (and as the benchmark measured
    // before a complete view counted as settled at once). Then a write to a backup on each
    // survivor, so that both heard app1 just before the kill (the silent case is measured
    // from the last word, as with writes going on).
    tokio::time::sleep_until((started + failure_timeout + Duration::from_millis(200)).into()).await;
    owner.send("refresh")?;
    let answer = owner.line(Duration::from_secs(10)).await?;
    if answer != "refreshed" {
        bail!("the failover owner said {answer:?}");
    }
    let target = probe.rsplit('.').next().unwrap_or_default().to_owned();
    let reader = survivors.iter().find(|m| m.node().as_str() == target).context("failover target")?.clone();
    let survivors = [survivors[0].clone(), survivors[1].clone()];
    let cpu0 = process_cpu()?;
    let t0 = Instant::now();
    trace.start(t0);
    owner.kill()?;
    if std::env::var_os("M2M_BENCH_PRINT_KILL").is_some() {
        // For lining a profile up with the kill (`perf record -k CLOCK_MONOTONIC`): the
        // monotonic clock's reading, which `Instant`'s debug form shows on Linux.
        eprintln!("    failover: kill at {t0:?}");
    }
    let read = tokio::spawn(async move {
        loop {
            if let Ok(Some(_)) = reader.get(&probe).await {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    // The end is taken from the nodes' event hooks (the instant each `OwnershipGained` left
    // the engine), not by polling `metrics()`: its `owned` count walks every session on the
    // node's driver task, which is the task doing the failover (polling every 2 ms took about
    // 5% of the CPU of the run). The counts are checked once after, and polled only if they
    // disagree: the end is then the last gain before they agree (above 131,072 records the
    // counts come from a census at most one census old, see `Node::stats`).
    let owned = |survivors: [SessionManager; 2]| async move {
        let mut owned = 0;
        for m in &survivors {
            owned += m.metrics().await?.core.owned;
        }
        anyhow::Ok(owned)
    };
    let tr = trace.clone();
    // 20 s, and a second more per 5,000 sessions moved (a million on the loaded machine).
    let limit = Duration::from_secs(20) + scaled(n);
    let gained = wait_until(limit, Duration::from_millis(1), || {
        let done = tr.gained().0 >= n;
        async move { Ok(done) }
    })
    .await;
    let all = match (gained, trace.gained().1) {
        (Err(e), _) => Err(e),
        (Ok(_), Some(last)) if owned(survivors.clone()).await? >= n => Ok(last),
        (Ok(_), _) => {
            let agreed = wait_until(limit, Duration::from_millis(2), || {
                let survivors = survivors.clone();
                async move { Ok(owned(survivors).await? >= n) }
            })
            .await;
            agreed.map(|t| trace.gained().1.map_or(t, |last| last.min(t)))
        }
    };
    let cpu1 = process_cpu()?;
    let all = match all {
        Ok(t) => t,
        Err(e) => {
            // How far it got, and the survivors stopped (not left running into the next step).
            let mut held = 0;
            for m in &survivors {
                let m = m.metrics().await?;
                held += m.core.owned;
                let node = m.node.as_ref().map(|n| n.to_string()).unwrap_or_default();
                eprintln!(
                    "    failover stalled: {node} owns {}, holds {} backups, {} gained since the kill \
                     ({} failovers, {} stepped down or fenced, {} peers up), {} sends refused on a full queue",
                    m.core.owned,
                    m.core.backups,
                    trace.of(&node).gained,
                    m.core.failovers,
                    m.core.fenced,
                    m.core.peers_up,
                    m.send_queue_full
                );
            }
            stop_all(&survivors).await;
            return Err(e).context(format!("failover: the survivors own {held} of {n}"));
        }
    };
    let first = read.await?;
    let mut dropped = 0;
    let ms = |t: Instant| t.saturating_duration_since(t0).as_secs_f64() * 1e3;
    let ms_before = |t: Instant| t0.saturating_duration_since(t).as_secs_f64() * 1e3;
    for m in &survivors {
        let m = m.metrics().await?;
        let node = m.node.as_ref().map(|n| n.to_string()).unwrap_or_default();
        let heard = m.peers.iter().find(|p| p.node.as_str() == "app1").and_then(|p| p.last_heard);
        let t = trace.of(&node);
        eprintln!(
            "    failover {node}: app1 last heard {:.1} ms before the kill, PeerDown out at {:.1} ms \
             ({:.1} ms after last heard + failure timeout; emitted after the step, first replan pass \
             included), first session owned at {:.1} ms, last at {:.1} ms \
             ({} gained)",
            heard.map_or(f64::NAN, ms_before),
            t.down.map_or(f64::NAN, ms),
            match (t.down, heard) {
                (Some(d), Some(h)) =>
                    (d.saturating_duration_since(h).as_secs_f64() - failure_timeout.as_secs_f64()) * 1e3,
                _ => f64::NAN,
            },
            t.first_gained.map_or(f64::NAN, ms),
            t.last_gained.map_or(f64::NAN, ms),
            t.gained,
        );
        dropped += m.send_queue_full;
        eprintln!(
            "    failover: {} failovers, {} sends dropped on a full transport queue, {} messages sent",
            m.core.failovers, m.send_queue_full, m.messages_sent
        );
    }
    stop_all(&survivors).await;
    Ok(Failover {
        all_ms: all.duration_since(t0).as_secs_f64() * 1e3,
        first_read_ms: first.duration_since(t0).as_secs_f64() * 1e3,
        dropped: dropped as f64,
        cpu_us_per_session: us_per_op(cpu0, cpu1, n as u64),
    })
}
