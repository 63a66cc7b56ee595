//! Benchmark clusters: nodes of this process on loopback, and the load they are measured with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use session_api::{AckPolicy, Attributes, DomainConfig, Replication, SessionManager, SessionSettings};

use super::cpu::{process_cpu, us_per_op};
use super::trace::Trace;
use super::{FAILURE_TIMEOUT_MS, HEARTBEAT_MS, PAYLOAD};

pub(crate) struct Cluster {
    pub(crate) nodes: Vec<SessionManager>,
    _certs: tempfile::TempDir,
}

pub(crate) enum Socket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl Cluster {
    /// `n` nodes `app1..` on loopback with mutual TLS (throw-away certificates).
    pub(crate) async fn start(
        transport: &str,
        n: usize,
        replicas: u32,
        ack: AckPolicy,
        core: Option<replication_core::Settings>,
        trace: Option<&Arc<Trace>>,
        timings: Timings,
    ) -> anyhow::Result<Cluster> {
        let (_, cfg, sockets) = bench_domain(transport, n, replicas, "", timings)?;
        let certs = tempfile::tempdir()?;
        replication_core::tls::init_dir(&cfg, certs.path()).context("throw-away certificates")?;
        let mut nodes = Vec::new();
        for (name, socket) in sockets {
            nodes.push(start_node(&cfg, certs.path(), &name, socket, ack, core.as_ref(), trace).await?);
        }
        wait_peers_up(&nodes, n - 1).await?;
        Ok(Cluster { nodes, _certs: certs })
    }

    pub(crate) async fn stop(self) {
        stop_all(&self.nodes).await;
    }
}

/// Stops every node of `nodes` at once (an abort: no leave).
pub(crate) async fn stop_all(nodes: &[SessionManager]) {
    for m in nodes {
        let _ = m.abort().await;
    }
}

/// A benchmark domain: its file's text, the parsed domain, and each node's name and socket.
pub(crate) type BenchDomain = (String, DomainConfig, Vec<(String, Socket)>);

/// The heartbeat interval and failure timeout of a benchmark domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timings {
    /// The benchmark's: a [`HEARTBEAT_MS`] heartbeat and a [`FAILURE_TIMEOUT_MS`] failure
    /// timeout (as in `m2m demo`), so that a silent node is failed, and the phases start, soon.
    Bench,
    /// The product's defaults (a domain file that sets neither): what a deployment runs, and
    /// what the rows of cost as the work grows measure. A crashed process is failed when its
    /// links close and its address refuses, whatever the failure timeout; the longer lease
    /// bound lets a node's driver take longer steps (a million sessions' claims and copies on
    /// two cores) without its read lease lapsing.
    Product,
}

/// The text of a benchmark domain of `n` nodes `app1..` on loopback, and a socket bound to
/// each node's address (for the node to adopt; dropped for a node that runs in a child
/// process, which binds the address itself).
pub(crate) fn bench_domain(
    transport: &str,
    n: usize,
    replicas: u32,
    domain_extra: &str,
    timings: Timings,
) -> anyhow::Result<BenchDomain> {
    let timings = match timings {
        Timings::Bench => {
            format!("heartbeat_interval_ms = {HEARTBEAT_MS}\nfailure_timeout_ms = {FAILURE_TIMEOUT_MS}\n")
        }
        Timings::Product => String::new(),
    };
    let mut text = format!(
        "[domain]\nname = \"bench\"\ntopology = \"peer-to-peer\"\nreplicas = {replicas}\n\
         transport = \"{transport}\"\n{timings}request_timeout_ms = 2000\n{domain_extra}"
    );
    let mut sockets = Vec::new();
    for i in 1..=n {
        let (addr, socket) = if transport == "quic" {
            let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
            (s.local_addr()?, Socket::Udp(s))
        } else {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            (l.local_addr()?, Socket::Tcp(l))
        };
        text.push_str(&format!("\n[[node]]\nname = \"app{i}\"\naddress = \"{addr}\"\n"));
        sockets.push((format!("app{i}"), socket));
    }
    let cfg = DomainConfig::parse(&text, "bench.toml").context("the generated bench domain")?;
    Ok((text, cfg, sockets))
}

/// Starts node `name` of `cfg` on `socket`, certificates from `certs`.
pub(crate) async fn start_node(
    cfg: &DomainConfig,
    certs: &std::path::Path,
    name: &str,
    socket: Socket,
    ack: AckPolicy,
    core: Option<&replication_core::Settings>,
    trace: Option<&Arc<Trace>>,
) -> anyhow::Result<SessionManager> {
    let mut settings = SessionSettings::default();
    if let Some(core) = core {
        settings.core = core.clone();
    }
    let mut b = SessionManager::builder(cfg.clone(), name).settings(settings).certs_dir(certs).ack(ack);
    if let Some(trace) = trace {
        let (trace, node) = (trace.clone(), name.to_owned());
        b = b.metrics_hook(move |ev| trace.record(&node, ev));
    }
    let b = match socket {
        Socket::Tcp(l) => b.tcp_listener(l),
        Socket::Udp(s) => b.udp_socket(s),
    };
    b.start().await.with_context(|| format!("starting node {name}"))
}

/// Waits (up to 15 s) until each of `nodes` sees `peers` peers up.
pub(crate) async fn wait_peers_up(nodes: &[SessionManager], peers: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut up = true;
        for m in nodes {
            up &= m.metrics().await?.core.peers_up >= peers;
        }
        if up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the bench nodes did not see each other within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn session_attrs() -> Attributes {
    let mut a = Attributes::new();
    a.insert("data", vec![b'x'; PAYLOAD]);
    a
}

/// What a phase of updates measured.
pub(crate) struct Load {
    /// Acknowledged updates per second.
    pub(crate) rate: f64,
    /// The latency of each update, when recorded.
    pub(crate) samples: Vec<Duration>,
    /// CPU microseconds of this process per update (every node of the process and the load).
    pub(crate) cpu_us_per_op: f64,
}

/// `conc` tasks, each updating its own session (a 1 KiB attribute) in a loop for `phase`:
/// the rate of acknowledged updates, their latencies when `record`, and the CPU time of the
/// process per update.
pub(crate) async fn updates(
    m: &SessionManager,
    conc: usize,
    phase: Duration,
    record: bool,
) -> anyhow::Result<Load> {
    updates_on(std::slice::from_ref(m), conc, phase, record).await
}

/// [`updates`] on each of `nodes` at once, `conc` sessions on each (owned by that node): the
/// rate of all together.
pub(crate) async fn updates_on(
    nodes: &[SessionManager],
    conc: usize,
    phase: Duration,
    record: bool,
) -> anyhow::Result<Load> {
    let mut sessions = Vec::with_capacity(conc * nodes.len());
    for m in nodes {
        for _ in 0..conc {
            sessions.push((m.clone(), m.create_with(session_attrs()).await?));
        }
    }
    let warmup = Duration::from_millis(150).min(phase / 4);
    let start = Instant::now() + warmup;
    let deadline = start + phase;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (m, mut s)) in sessions.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let mut ops = 0u64;
            let mut n = 0u8;
            loop {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                n = n.wrapping_add(1);
                s.set_bytes("data", vec![n ^ (i as u8); PAYLOAD])?;
                let c = m.commit(&mut s).await?;
                if !matches!(c.replication, Replication::Replicated { .. } | Replication::Local) {
                    bail!("a benchmark write was not replicated: {:?}", c.replication);
                }
                if t0 >= start {
                    ops += 1;
                    if record {
                        samples.push(t0.elapsed());
                    }
                }
            }
            Ok::<_, anyhow::Error>((ops, samples))
        });
    }
    tokio::time::sleep_until(start.into()).await;
    let cpu_start = process_cpu()?;
    tokio::time::sleep_until(deadline.into()).await;
    let cpu_end = process_cpu()?;
    let mut ops = 0;
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (o, s) = r??;
        ops += o;
        all.extend(s);
    }
    Ok(Load {
        rate: ops as f64 / phase.as_secs_f64(),
        samples: all,
        cpu_us_per_op: us_per_op(cpu_start, cpu_end, ops),
    })
}

/// Creates `n` sessions on `m`, 64 at a time (sync acknowledgement keeps the pace bounded);
/// returns their ids.
pub(crate) async fn create_many(m: &SessionManager, n: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    create_each(m, n, |id| ids.push(id)).await?;
    Ok(ids)
}

/// Creates `n` sessions on `m`, 64 at a time, passing each id to `each`.
///
/// A create whose acknowledgement did not come within the write timeout (the caller's wait
/// ends with the engine's, so a copy dropped on a full transport queue shows as
/// [`session_api::Error::Timeout`] rather than an unreplicated outcome), or that found the
/// node's view of the domain unsettled for the whole request timeout
/// ([`session_api::Error::Unavailable`]: its peers were not heard, as when a driver is busy
/// with a million sessions), is made again under a new id, up to [`CREATE_TIMEOUTS`] times in
/// all; a session a timed-out create left stays on the owner, is copied when the engine
/// resends it, and is not counted among the `n`.
pub(crate) async fn create_each(
    m: &SessionManager,
    n: usize,
    mut each: impl FnMut(String),
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let (mut next, mut timeouts) = (0, 0);
    while next < n || !tasks.is_empty() {
        while next < n && tasks.len() < 64 {
            let m = m.clone();
            tasks.spawn(async move { m.create_with(session_attrs()).await.map(|s| s.id().to_owned()) });
            next += 1;
        }
        if let Some(r) = tasks.join_next().await {
            match r? {
                Ok(id) => each(id),
                Err(session_api::Error::Timeout | session_api::Error::Unavailable)
                    if timeouts < CREATE_TIMEOUTS =>
                {
                    timeouts += 1;
                    next -= 1;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("creating session {next} of {n}, after {timeouts} timed out")
                    });
                }
            }
        }
    }
    if timeouts > 0 {
        eprintln!(
            "    creating {n} sessions: {timeouts} creates timed out or found the node unavailable, and were made again"
        );
    }
    Ok(())
}

/// Creates [`create_each`] makes again after a time-out, at most.
const CREATE_TIMEOUTS: usize = 10_000;

/// Extra time a step over `n` sessions is allowed: a second per 5,000 sessions (creating
/// them on a loaded two-core machine runs at 10,000 to 50,000 a second).
pub(crate) fn scaled(n: usize) -> Duration {
    Duration::from_millis(n as u64 / 5)
}

pub(crate) async fn wait_until<F, Fut>(
    limit: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?}");
        }
        tokio::time::sleep(every).await;
    }
}
