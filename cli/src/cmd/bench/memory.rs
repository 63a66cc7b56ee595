//! Memory per session copy against a plain `HashMap`, each measured in a fresh child process.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::ValueEnum as _;
use serde::Serialize;
use session_api::AckPolicy;

use super::cluster::{Cluster, Timings, create_each, scaled, wait_until};
use super::figure::Carrier;
use super::{Args, MemoryKind, PAYLOAD};

/// What a memory child prints.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub(crate) struct MemoryFigure {
    pub(crate) sessions: usize,
    copies: usize,
    rss_before: u64,
    rss_after: u64,
    pub(crate) bytes_per_copy: f64,
}

fn rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

pub(crate) async fn memory_child(kind: MemoryKind, n: usize) -> anyhow::Result<MemoryFigure> {
    match kind {
        MemoryKind::Hashmap => {
            let before = rss_bytes()?;
            let mut map: std::collections::HashMap<String, Vec<u8>> = std::collections::HashMap::new();
            for i in 0..n {
                // The same id length as m2m's (`<16 random>.app1.app2`).
                map.insert(format!("{i:016}.app1.app2"), vec![b'x'; PAYLOAD]);
            }
            let after = rss_bytes()?;
            let copies = std::hint::black_box(&map).len();
            Ok(MemoryFigure {
                sessions: n,
                copies,
                rss_before: before,
                rss_after: after,
                bytes_per_copy: after.saturating_sub(before) as f64 / copies as f64,
            })
        }
        MemoryKind::M2m => {
            let ack = AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(60) };
            let c = Cluster::start(Carrier::main().as_str(), 2, 1, ack, None, None, Timings::Product).await?;
            let (a, b) = (c.nodes[0].clone(), c.nodes[1].clone());
            let before = rss_bytes()?;
            // Count the ids without keeping them: only the nodes' memory is measured.
            let mut created = 0;
            create_each(&a, n, |_| created += 1).await?;
            wait_until(Duration::from_secs(600) + scaled(n), Duration::from_millis(100), || {
                let b = b.clone();
                // A busy node may answer a metrics request late: ask again.
                async move { Ok(b.metrics().await.is_ok_and(|m| m.core.backups >= created)) }
            })
            .await
            .context("replication of the memory sessions")?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = rss_bytes()?;
            let copies = copies_held(&a).await? + copies_held(&b).await?;
            c.stop().await;
            Ok(MemoryFigure {
                sessions: n,
                copies,
                rss_before: before,
                rss_after: after,
                bytes_per_copy: after.saturating_sub(before) as f64 / copies.max(1) as f64,
            })
        }
    }
}

/// The live copies `node` holds, owned or backups. Both nodes' are counted, wherever
/// ownership lies when the figure is taken: a node whose read lease lapsed while it created
/// the sessions stepped down from them and holds their copies as backups until it resumes,
/// and a session its peer took over meanwhile is owned there with its backup here. Counting
/// only the first node's owned sessions and the second's backups would miss those copies.
async fn copies_held(node: &session_api::SessionManager) -> anyhow::Result<usize> {
    let core = node.metrics().await?.core;
    Ok(core.owned + core.backups)
}

pub(crate) fn memory(args: &Args, n: usize) -> anyhow::Result<BTreeMap<MemoryKind, MemoryFigure>> {
    let exe = std::env::current_exe().context("the m2m executable")?;
    let mut out = BTreeMap::new();
    for kind in [MemoryKind::Hashmap, MemoryKind::M2m] {
        let value = kind.to_possible_value().context("a memory kind without a name")?;
        let name = value.get_name();
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "--memory-child", name, "--memory-sessions", &n.to_string()]);
        if args.quick {
            cmd.arg("--quick");
        }
        let o = cmd.output().with_context(|| format!("running the {name} memory child"))?;
        if !o.status.success() {
            bail!("the {name} memory child failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let line = String::from_utf8_lossy(&o.stdout);
        let fig: MemoryFigure = serde_json::from_str(line.trim()).context("the memory child's answer")?;
        out.insert(kind, fig);
    }
    Ok(out)
}
