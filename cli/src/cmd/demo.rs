//! `m2m demo`: a whole domain inside this process on loopback (real sockets, throw-away TLS
//! certificates), sessions created, one owner crashed, hot failover and re-replication shown,
//! and every session read back.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use replication_core::TransportKind;
use serde::Serialize;
use serde_json::{Value, json};
use session_api::id::SessionIdParts;
use session_api::{AckPolicy, Attributes, DomainConfig, NodeId, SessionManager};
use tokio::task::JoinSet;

use crate::output::{self, EXIT_FAILED, Format, Table};
use crate::progress;

/// Requests in flight at once while creating and reading.
const IN_FLIGHT: usize = 64;

/// Arguments of `m2m demo`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 every session survived; 1 a session was lost or the demo failed; 2 bad arguments."
)]
pub(crate) struct Args {
    /// The transport between the nodes.
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
    pub(crate) transport: TransportArg,
    /// Nodes in the domain (2 to 16).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=16))]
    pub(crate) nodes: u16,
    /// Sessions to create (1 to 100000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) sessions: u32,
    /// Output format: the story as text, or its figures as one JSON document at the end.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// Session managers every node declares (e.g. `cart,profile`); the sessions are spread
    /// over them, each manager a namespace of its own. Without it, the anonymous manager.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub(crate) managers: Vec<String>,
}

/// The transport `--transport` picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TransportArg {
    /// TLS over TCP.
    Tcp,
    /// QUIC.
    Quic,
}

impl TransportArg {
    fn kind(self) -> TransportKind {
        match self {
            TransportArg::Tcp => TransportKind::Tcp,
            TransportArg::Quic => TransportKind::Quic,
        }
    }
}

/// Runs `m2m demo`.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let kind = args.transport.kind();
    if let Err(code) = super::require_transport(kind, &format!("m2m demo --transport {kind}")) {
        return Ok(code);
    }
    crate::logging::init("warn");
    let rt = super::runtime()?;
    let report = rt.block_on(demo(args))?;
    if args.format == Format::Json {
        output::print_json(&report)?;
    }
    Ok(if report.sessions_lost == 0 { ExitCode::SUCCESS } else { output::exit(EXIT_FAILED) })
}

/// What `m2m demo --format json` prints: the figures the text tells.
#[derive(Debug, Default, Serialize)]
struct DemoReport {
    transport: String,
    nodes: usize,
    /// The session managers every node declares (absent: the anonymous manager only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    managers: Vec<String>,
    /// Per manager, the sessions read back intact after the crash (absent without managers).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    read_back_per_manager: BTreeMap<String, usize>,
    /// Milliseconds until every node saw every other.
    all_up_ms: u128,
    sessions_created: usize,
    create_ms: u128,
    /// The nodes before the crash: `node`, `state`, `owns`, `backups`,
    /// `failover_target_for`, `under_replicated`.
    before: Vec<Value>,
    killed: String,
    killed_owned: usize,
    /// Milliseconds from the crash until every survivor saw it (`null`: not within 10 s).
    detected_ms: Option<u128>,
    /// Of the killed node's sessions, how many each failover target served.
    failover_reads: BTreeMap<String, usize>,
    /// Milliseconds from the crash until every session was read back.
    read_back_ms: u128,
    /// Milliseconds from the crash until no session was under-replicated (`null`: not settled).
    rereplicated_ms: Option<u128>,
    under_replicated: usize,
    /// The nodes after the crash: `node`, `state`, `owns`, `backups`, `under_replicated`,
    /// `failovers` (only `node` and `state` for the killed one).
    after: Vec<Value>,
    failovers: u64,
    sessions_lost: usize,
    /// The first ten lost session ids.
    lost: Vec<String>,
    duration_ms: u128,
}

/// Prints the story as text, unless the format is JSON.
struct Story {
    text: bool,
}

impl Story {
    fn say(&self, text: impl AsRef<str>) {
        if self.text {
            output::emit(&format!("{}\n", text.as_ref()));
        }
    }

    fn table(&self, t: &Table) {
        if self.text {
            output::emit(&t.render());
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or gives up after `limit`.
async fn wait_for<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attrs_for(i: u32) -> Attributes {
    let mut a = Attributes::new();
    a.insert("user", format!("user-{i}").into_bytes());
    a.insert("cart", format!("item-{}", i % 97).into_bytes());
    a
}

async fn demo(args: &Args) -> anyhow::Result<DemoReport> {
    let started = Instant::now();
    let n = usize::from(args.nodes);
    let transport = args.transport.kind().to_string();
    let story = Story { text: args.format == Format::Text };
    let say = |text: String| story.say(text);
    let mut report = DemoReport {
        transport: transport.clone(),
        nodes: n,
        managers: args.managers.clone(),
        ..DemoReport::default()
    };
    let managers_line = if args.managers.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = args.managers.iter().map(|m| format!("{m} = \"both\"")).collect();
        format!("managers = {{ {} }}\n", list.join(", "))
    };

    // Bind every socket first, then write the domain with those ports: no collisions.
    let mut text = format!(
        "[domain]\nname = \"demo\"\ntopology = \"peer-to-peer\"\nreplicas = 1\ntransport = \"{transport}\"\n\
         heartbeat_interval_ms = 50\nfailure_timeout_ms = 300\nrequest_timeout_ms = 2000\n"
    );
    let mut sockets = Vec::new();
    for i in 1..=n {
        let name = format!("app{i}");
        let (addr, socket) = match args.transport {
            TransportArg::Tcp => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
                (l.local_addr()?, Socket::Tcp(l))
            }
            TransportArg::Quic => {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").context("binding a loopback port")?;
                (s.local_addr()?, Socket::Udp(s))
            }
        };
        text.push_str(&format!("\n[[node]]\nname = \"{name}\"\naddress = \"{addr}\"\n{managers_line}"));
        sockets.push((name, addr, socket));
    }
    let cfg = DomainConfig::parse(&text, "demo.toml").context("the generated demo domain")?;
    let certs = tempfile::tempdir().context("a temporary folder for the certificates")?;
    replication_core::tls::init_dir(&cfg, certs.path()).context("throw-away certificates")?;

    say(format!(
        "domain demo: {n} nodes on 127.0.0.1, peer-to-peer, replicas 1, {transport} with mutual TLS \
         (throw-away certificates), heartbeat 50 ms, failure timeout 300 ms"
    ));
    let mut nodes = Vec::new();
    for (name, addr, socket) in sockets {
        let b = SessionManager::builder(cfg.clone(), &name)
            .certs_dir(certs.path())
            .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) });
        let b = match socket {
            Socket::Tcp(l) => b.tcp_listener(l),
            Socket::Udp(s) => b.udp_socket(s),
        };
        let m = b.start().await.with_context(|| format!("starting node {name}"))?;
        say(format!("  {name} listening on {addr}"));
        nodes.push(m);
    }
    // Per node, the handle of each manager (the anonymous one alone without managers).
    let mut handles: Vec<Vec<SessionManager>> = Vec::new();
    for m in &nodes {
        handles.push(manager_handles(m, &args.managers)?);
    }
    let k = handles.first().map_or(1, Vec::len);
    if !args.managers.is_empty() {
        say(format!(
            "session managers on every node: {} (one engine, one set of links; each its own session ids)",
            args.managers.join(", ")
        ));
    }
    let all_up = wait_for(Duration::from_secs(15), || {
        let nodes = nodes.clone();
        async move {
            for m in &nodes {
                if m.metrics().await.ok()?.core.peers_up < n - 1 {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    if all_up.is_none() {
        bail!("the demo nodes did not see each other within 15 s");
    }
    report.all_up_ms = started.elapsed().as_millis();
    say(format!("all {n} nodes see each other ({} ms)", report.all_up_ms));

    // Create the sessions, round-robin over the nodes, IN_FLIGHT at a time.
    let total = args.sessions;
    let progress = progress::bar("creating sessions", u64::from(total));
    let t_create = Instant::now();
    let mut created: Vec<(String, u32, usize)> = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut tasks = JoinSet::new();
    let mut next = 0u32;
    while next < total || !tasks.is_empty() {
        while next < total && tasks.len() < IN_FLIGHT {
            let at = usize::try_from(next).unwrap_or(0);
            let mi = (at / n) % k;
            let m = handles[at % n][mi].clone();
            let i = next;
            let progress = progress.clone();
            tasks.spawn(async move {
                let mut last = None;
                for _ in 0..5 {
                    match m.create_with(attrs_for(i)).await {
                        Ok(s) => {
                            progress.inc(1);
                            return Ok((s.id().to_owned(), i, mi));
                        }
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(anyhow::anyhow!("creating session {i} on {}: {:?}", m.node(), last))
            });
            next += 1;
        }
        if let Some(r) = tasks.join_next().await {
            created.push(r.context("a create task")??);
        }
    }
    progress.finish_and_clear();
    report.sessions_created = created.len();
    report.create_ms = t_create.elapsed().as_millis();
    say(format!("created {total} sessions in {} ms (sync writes, 1 backup each)", report.create_ms));

    // Let replication settle so the table shows the steady state.
    let _ = wait_for(Duration::from_secs(10), || {
        let nodes = nodes.clone();
        async move {
            for m in &nodes {
                if m.metrics().await.ok()?.under_replicated() > 0 {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    let mut failover_for: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (id, ..) in &created {
        if let Some(t) = SessionIdParts::parse(id).and_then(|p| p.failover) {
            *failover_for.entry(t).or_default() += 1;
        }
    }
    say("\nwhere the sessions live:".into());
    let mut t = Table::new(["node", "state", "owns", "backups", "failover-target-for", "under-replicated"]);
    for m in &nodes {
        let x = m.metrics().await?;
        let target_for = failover_for.get(m.node()).copied().unwrap_or(0);
        t.row([
            m.node().to_string(),
            "up".into(),
            x.sessions_owned().to_string(),
            x.sessions_backed_up().to_string(),
            target_for.to_string(),
            x.under_replicated().to_string(),
        ]);
        report.before.push(json!({
            "node": m.node().to_string(),
            "state": "up",
            "owns": x.sessions_owned(),
            "backups": x.sessions_backed_up(),
            "failover_target_for": target_for,
            "under_replicated": x.under_replicated(),
        }));
    }
    story.table(&t);

    // Crash the first node: no graceful shutdown, no hand-off.
    let victim = nodes[0].clone();
    let victim_id = victim.node().clone();
    let mut victim_sessions = Vec::new();
    for h in &handles[0] {
        victim_sessions.extend(h.owned_sessions().await?);
    }
    let survivors: Vec<SessionManager> = nodes[1..].to_vec();
    report.killed = victim_id.to_string();
    report.killed_owned = victim_sessions.len();
    say(format!(
        "\nkilling {victim_id} (owner of {} sessions) without a graceful shutdown",
        victim_sessions.len()
    ));
    victim.abort().await?;
    let t_kill = Instant::now();
    drop(victim);
    let detected = wait_for(Duration::from_secs(10), || {
        let survivors = survivors.clone();
        let victim_id = victim_id.clone();
        async move {
            for m in &survivors {
                let x = m.metrics().await.ok()?;
                if x.peers.iter().any(|p| p.node == victim_id && p.up) {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    if detected.is_some() {
        let mut under = 0;
        for m in &survivors {
            under += m.metrics().await?.under_replicated();
        }
        report.detected_ms = Some(t_kill.elapsed().as_millis());
        say(format!(
            "{victim_id} detected as failed by every survivor after {} ms; under-replicated sessions then: {under}",
            t_kill.elapsed().as_millis()
        ));
    }
    // Hot failover: the failover targets take the sessions over on their own.
    let expected_failovers = victim_sessions.len();
    let _ = wait_for(Duration::from_secs(5), || {
        let survivors = survivors.clone();
        async move {
            let mut sum = 0;
            for m in &survivors {
                sum += m.metrics().await.ok()?.failovers();
            }
            (usize::try_from(sum).unwrap_or(usize::MAX) >= expected_failovers).then_some(())
        }
    })
    .await;

    // Read every session through a surviving node: its owner if alive, else its failover target.
    let victim_set: std::collections::HashSet<String> = victim_sessions.iter().cloned().collect();
    let t_read = Instant::now();
    let reading = progress::bar("reading sessions", u64::try_from(created.len()).unwrap_or(u64::MAX));
    let mut reads = JoinSet::new();
    let mut served_by: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut per_manager: Vec<usize> = vec![0; k];
    let mut lost = Vec::new();
    let mut queue = created.clone().into_iter();
    let mut pending = true;
    while pending || !reads.is_empty() {
        while reads.len() < IN_FLIGHT {
            let Some((id, i, mi)) = queue.next() else {
                pending = false;
                break;
            };
            let dead = victim_id.clone();
            let route = survivors[0].route(&id, |node| node != &dead);
            let at = route.and_then(|r| survivors.iter().position(|m| m.node() == &r)).unwrap_or(0);
            let reader = handles[1 + at][mi].clone();
            let reading = reading.clone();
            reads.spawn(async move {
                let ok = read_back(&reader, &id, &attrs_for(i)).await;
                reading.inc(1);
                (id, reader.node().clone(), ok, mi)
            });
        }
        if let Some(r) = reads.join_next().await {
            let (id, node, ok, mi) = r.context("a read task")?;
            if ok {
                per_manager[mi] += 1;
                if victim_set.contains(&id) {
                    *served_by.entry(node).or_default() += 1;
                }
            } else {
                lost.push(id);
            }
        }
    }
    reading.finish_and_clear();
    if !args.managers.is_empty() {
        report.read_back_per_manager =
            args.managers.iter().cloned().zip(per_manager.iter().copied()).collect();
        let each: Vec<String> =
            report.read_back_per_manager.iter().map(|(m, c)| format!("{m}: {c}")).collect();
        say(format!("read back intact per session manager: {}", each.join(", ")));
    }
    report.read_back_ms = t_read.duration_since(t_kill).as_millis() + t_read.elapsed().as_millis();
    report.failover_reads = served_by.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let moved: Vec<String> = served_by.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    say(format!(
        "hot failover: {} of {}'s {} sessions read with the right attributes from their failover targets ({}); \
         all {} sessions read back {} ms after the crash",
        served_by.values().sum::<usize>(),
        victim_id,
        victim_sessions.len(),
        if moved.is_empty() { "none".to_owned() } else { moved.join(", ") },
        created.len(),
        report.read_back_ms,
    ));

    // Re-replication: the sessions that lost a backup get a new one on a surviving node.
    let floor = survivors.len() < 2;
    let settled = wait_for(Duration::from_secs(if floor { 2 } else { 15 }), || {
        let survivors = survivors.clone();
        async move {
            let mut sum = 0;
            for m in &survivors {
                sum += m.metrics().await.ok()?.under_replicated();
            }
            (sum == 0).then_some(())
        }
    })
    .await;
    let settled_after = t_kill.elapsed();
    let mut under = 0;
    let mut failovers = 0;
    let mut t = Table::new(["node", "state", "owns", "backups", "under-replicated", "failovers"]);
    t.row([victim_id.to_string(), "KILLED".into()]);
    report.after.push(json!({ "node": victim_id.to_string(), "state": "KILLED" }));
    for m in &survivors {
        let x = m.metrics().await?;
        under += x.under_replicated();
        failovers += x.failovers();
        t.row([
            m.node().to_string(),
            "up".into(),
            x.sessions_owned().to_string(),
            x.sessions_backed_up().to_string(),
            x.under_replicated().to_string(),
            x.failovers().to_string(),
        ]);
        report.after.push(json!({
            "node": m.node().to_string(),
            "state": "up",
            "owns": x.sessions_owned(),
            "backups": x.sessions_backed_up(),
            "under_replicated": x.under_replicated(),
            "failovers": x.failovers(),
        }));
    }
    report.under_replicated = under;
    report.failovers = failovers;
    report.rereplicated_ms = settled.map(|()| settled_after.as_millis());
    if settled.is_some() {
        say(format!(
            "re-replication: under-replicated back to 0 (checked {} ms after the crash)",
            settled_after.as_millis()
        ));
    } else if floor {
        say(format!(
            "re-replication: {under} sessions stay under-replicated: one node is left, no node can hold their backups"
        ));
    } else {
        say(format!("re-replication: still {under} under-replicated sessions after 15 s"));
    }
    say("\nafter the failure:".into());
    story.table(&t);
    for id in lost.iter().take(10) {
        say(format!("LOST: {id}"));
    }
    report.sessions_lost = lost.len();
    report.lost = lost.iter().take(10).cloned().collect();
    for m in &survivors {
        let _ = m.shutdown().await;
    }
    say(format!("\ndemo took {:.1} s", started.elapsed().as_secs_f64()));
    say(format!(
        "sessions created: {}, failovers: {failovers}, sessions lost: {}",
        created.len(),
        lost.len()
    ));
    report.duration_ms = started.elapsed().as_millis();
    Ok(report)
}

/// The handles of `managers` on node `m`, or its anonymous handle alone when there are none.
fn manager_handles(m: &SessionManager, managers: &[String]) -> anyhow::Result<Vec<SessionManager>> {
    if managers.is_empty() {
        return Ok(vec![m.clone()]);
    }
    managers.iter().map(|name| m.manager(name).map_err(anyhow::Error::from)).collect()
}

enum Socket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Reads `id` through `m` until it answers with the session (true when the attributes are the
/// expected ones); transient errors are retried for up to 15 s, "no such session" three times.
async fn read_back(m: &SessionManager, id: &str, expected: &Attributes) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut not_found = 0;
    loop {
        match m.get(id).await {
            Ok(Some(s)) => return &s.attributes() == expected,
            Ok(None) => {
                not_found += 1;
                if not_found >= 3 {
                    return false;
                }
            }
            Err(_) => {}
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
