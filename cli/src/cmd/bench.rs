//! `m2m bench`: the performance benchmark of m2m, with its baselines measured in the same run.
//!
//! - Baselines: raw TCP request/acknowledge ping-pong of 1 KiB on loopback (plain tokio
//!   `TcpStream`, no TLS), raw pipelined TCP throughput, the same over TLS 1.3 (rustls,
//!   what encryption alone costs) and raw quinn throughput of 1 KiB messages on one
//!   connection; the same three with an 8-byte acknowledgement per message and 64 in flight
//!   (the transport's share of a synchronous update at concurrency 64); and (with
//!   `--redis ADDR`) a Redis primary with one replica
//!   doing `SET` + `WAIT 1 0` from a small RESP client.
//! - m2m: synchronous session updates (1 KiB delta, 1 backup) over TLS/TCP and QUIC between
//!   nodes of this process on loopback (throw-away certificates): latency at concurrency 1,
//!   throughput at 1, 16 and 64 concurrent sessions; replicas 2; async acknowledgement.
//! - Memory: bytes per session copy (owner and backup) against a plain
//!   `HashMap<String, Vec<u8>>` holding the same data, each measured as the VmRSS growth of a
//!   fresh child process (`/proc/self/status`).
//! - Failover (the owner, a child process, is killed with SIGKILL) and re-replication after a
//!   backup holder is lost (stopped with `abort()` in-process, like a crash without a
//!   graceful leave).
//!
//! Every figure is the median over `--runs` runs (memory: one run).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use session_api::{AckPolicy, Attributes, DomainConfig, Replication, SessionManager, SessionSettings};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use crate::output::Table;

/// The payload of every message and session: 1 KiB.
const PAYLOAD: usize = 1024;
/// Heartbeat and failure timeout of the benchmark domains (as in `m2m demo`).
const HEARTBEAT_MS: u64 = 50;
const FAILURE_TIMEOUT_MS: u64 = 300;

/// Arguments of `m2m bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 the benchmark ran; 1 a measurement failed; 2 bad arguments.")]
pub(crate) struct Args {
    /// A short smoke run (fewer rounds, shorter phases, 100,000 sessions for memory).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Runs to take the median of (default 3, 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) runs: Option<u32>,
    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Also write the plot (latency distribution, throughput by concurrency) as SVG here.
    #[arg(long, value_name = "FILE")]
    pub(crate) svg: Option<PathBuf>,
    /// A Redis primary (with one replica attached) for the SET + WAIT 1 baseline.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) redis: Option<String>,
    /// Sessions for the memory figure (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    pub(crate) memory_sessions: Option<usize>,
    /// Run only these parts (comma-separated: raw, redis, tcp, quic, replicas2, async,
    /// failover, rerep, memory); for profiling.
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Internal: measure memory of one kind in this (child) process and print it.
    #[arg(long, hide = true, value_enum)]
    pub(crate) memory_child: Option<MemoryKind>,
    /// Internal: run the failover benchmark's owner, app1 of `DIR/bench.toml`, in this
    /// (child) process until it is killed.
    #[arg(long, hide = true, value_name = "DIR")]
    pub(crate) failover_child: Option<PathBuf>,
    /// Internal: the sessions the failover child creates.
    #[arg(long, hide = true)]
    pub(crate) failover_sessions: Option<usize>,
}

/// What a memory child measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MemoryKind {
    /// A plain `HashMap<String, Vec<u8>>`.
    Hashmap,
    /// An owner and a backup node holding the sessions.
    M2m,
}

/// Phase lengths and counts.
#[derive(Clone, Copy, Debug)]
struct Plan {
    rounds: usize,
    messages: usize,
    phase: Duration,
    failover_sessions: usize,
    rerep_sessions: usize,
    memory_sessions: usize,
}

impl Plan {
    fn new(args: &Args) -> Plan {
        let mut p = if args.quick {
            Plan {
                rounds: 2_000,
                messages: 50_000,
                phase: Duration::from_millis(700),
                failover_sessions: 1_000,
                rerep_sessions: 20_000,
                memory_sessions: 100_000,
            }
        } else {
            Plan {
                rounds: 20_000,
                messages: 200_000,
                phase: Duration::from_secs(3),
                failover_sessions: 10_000,
                rerep_sessions: 100_000,
                memory_sessions: 1_000_000,
            }
        };
        if let Some(n) = args.memory_sessions {
            p.memory_sessions = n.max(1);
        }
        p
    }
}

/// Runs `m2m bench`.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    crate::logging::init("error");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let plan = Plan::new(args);
    if let Some(kind) = args.memory_child {
        let r = rt.block_on(memory_child(kind, plan.memory_sessions))?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.failover_child {
        rt.block_on(failover_child(dir, args.failover_sessions.unwrap_or(plan.failover_sessions)))?;
        return Ok(ExitCode::SUCCESS);
    }
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 });
    let mut all: Vec<Figures> = Vec::new();
    let mut curves = Curves::default();
    for i in 0..runs {
        eprintln!("run {}/{runs} ...", i + 1);
        let (figs, c) = rt.block_on(one_run(&plan, args.redis.as_deref(), &args.only))?;
        all.push(figs);
        curves = c;
    }
    let memory = if args.only.is_empty() || args.only.iter().any(|o| o == "memory") {
        eprintln!("memory ({} sessions of 1 KiB, fresh child processes) ...", plan.memory_sessions);
        memory(args, plan.memory_sessions).unwrap_or_else(|e| {
            eprintln!("memory: {e:#}");
            BTreeMap::new()
        })
    } else {
        BTreeMap::new()
    };
    let median = median_figures(&all);
    let report = Report::new(&plan, runs, median, all, memory, curves, args.redis.is_some());
    print!("{}", report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, report.svg()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

// ----- statistics -----

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
struct Lat {
    p50: f64,
    p99: f64,
    p999: f64,
}

/// Nearest-rank percentile of sorted samples (`p` in 0..=1).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(samples: &[Duration]) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn lat(samples: &[Duration]) -> Lat {
    let v = micros(samples);
    Lat { p50: percentile(&v, 0.50), p99: percentile(&v, 0.99), p999: percentile(&v, 0.999) }
}

/// Median of the finite values (NaN when none).
fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// One run's figures by name (`tcp.c1.p50_us`, `raw.tcp.msgs_per_s`, ...).
type Figures = BTreeMap<String, f64>;

fn median_figures(runs: &[Figures]) -> Figures {
    let mut keys: Vec<&String> = runs.iter().flat_map(|r| r.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let v: Vec<f64> = runs.iter().filter_map(|r| r.get(k).copied()).collect();
            (k.clone(), median(&v))
        })
        .collect()
}

/// Latency distributions (of the last run) for the plot: microseconds at the percentiles of
/// [`CURVE_POINTS`].
#[derive(Clone, Debug, Default, Serialize)]
struct Curves {
    raw_tcp: Vec<f64>,
    tcp: Vec<f64>,
    quic: Vec<f64>,
    redis: Vec<f64>,
}

const CURVE_POINTS: [f64; 14] = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999];

fn curve(samples: &[Duration]) -> Vec<f64> {
    let v = micros(samples);
    CURVE_POINTS.iter().map(|p| percentile(&v, *p)).collect()
}

// ----- one run -----

async fn one_run(plan: &Plan, redis: Option<&str>, only: &[String]) -> anyhow::Result<(Figures, Curves)> {
    let want = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    let mut f = Figures::new();
    let mut curves = Curves::default();
    let put_lat = |f: &mut Figures, prefix: &str, l: Lat| {
        f.insert(format!("{prefix}.p50_us"), l.p50);
        f.insert(format!("{prefix}.p99_us"), l.p99);
        f.insert(format!("{prefix}.p999_us"), l.p999);
    };

    if want("raw") {
        eprintln!("  raw tcp ...");
        let rtt = raw_tcp_pingpong(plan.rounds, Placement::TwoCpus).await.context("raw TCP ping-pong")?;
        put_lat(&mut f, "raw.tcp.rtt", lat(&rtt));
        let rtt1 = raw_tcp_pingpong(plan.rounds, Placement::OneCpu).await.context("raw TCP ping-pong")?;
        put_lat(&mut f, "raw.tcp.rtt_one_cpu", lat(&rtt1));
        curves.raw_tcp = curve(&rtt);
        f.insert("raw.tcp.msgs_per_s".into(), raw_tcp_pipelined(plan.messages).await.context("raw TCP")?);
        eprintln!("  raw tls ...");
        f.insert("raw.tls.msgs_per_s".into(), raw_tls_pipelined(plan.messages).await.context("raw TLS")?);
        eprintln!("  raw quinn ...");
        f.insert("raw.quinn.msgs_per_s".into(), raw_quinn(plan.messages).await.context("raw quinn")?);
        eprintln!("  raw acknowledged ({WINDOW} in flight) ...");
        let n = plan.messages / 4;
        f.insert("raw.tcp.acked.msgs_per_s".into(), raw_tcp_acked(n, None).await.context("raw TCP acked")?);
        let tls = replication_core::tls::insecure_configs()?;
        f.insert(
            "raw.tls.acked.msgs_per_s".into(),
            raw_tcp_acked(n, Some(tls)).await.context("raw TLS acked")?,
        );
        f.insert("raw.quinn.acked.msgs_per_s".into(), raw_quinn_acked(n).await.context("raw quinn acked")?);
    }

    if let Some(addr) = redis.filter(|_| want("redis")) {
        eprintln!("  redis ...");
        for c in [1usize, 16] {
            let (rate, samples) = redis_set_wait(addr, c, plan.phase).await.context("Redis SET + WAIT")?;
            f.insert(format!("redis.c{c}.ops_per_s"), rate);
            if c == 1 {
                put_lat(&mut f, "redis.c1", lat(&samples));
                curves.redis = curve(&samples);
            }
        }
    }

    for transport in ["tcp", "quic"].into_iter().filter(|t| want(t)) {
        eprintln!("  m2m {transport} sync ...");
        let c = Cluster::start(transport, 2, 1, sync(1), None, None, "").await?;
        let owner = &c.nodes[0];
        let (_, samples) = updates(owner, 1, plan.phase, true).await?;
        put_lat(&mut f, &format!("{transport}.sync.c1"), lat(&samples));
        if transport == "tcp" {
            curves.tcp = curve(&samples);
        } else {
            curves.quic = curve(&samples);
        }
        for conc in [1usize, 16, 64] {
            let (rate, _) = updates(owner, conc, plan.phase, false).await?;
            f.insert(format!("{transport}.sync.c{conc}.ops_per_s"), rate);
        }
        c.stop().await;
    }

    if want("replicas2") {
        eprintln!("  m2m tcp replicas 2 ...");
        let c = Cluster::start("tcp", 3, 2, sync(2), None, None, "").await?;
        let (_, samples) = updates(&c.nodes[0], 1, plan.phase, true).await?;
        put_lat(&mut f, "tcp.replicas2.c1", lat(&samples));
        let (rate, _) = updates(&c.nodes[0], 64, plan.phase, false).await?;
        f.insert("tcp.replicas2.c64.ops_per_s".into(), rate);
        c.stop().await;
    }

    if want("async") {
        eprintln!("  m2m tcp async ...");
        let c = Cluster::start("tcp", 2, 1, AckPolicy::Async, None, None, "").await?;
        for conc in [1usize, 64] {
            let (rate, _) = updates(&c.nodes[0], conc, plan.phase, false).await?;
            f.insert(format!("tcp.async.c{conc}.ops_per_s"), rate);
        }
        c.stop().await;
    }

    if want("failover") {
        eprintln!("  failover ...");
        let (all_ms, first_ms, dropped) = failover(plan.failover_sessions, true).await?;
        f.insert("failover.sessions".into(), plan.failover_sessions as f64);
        f.insert("failover.send_queue_full".into(), dropped);
        f.insert("failover.all_owned_ms".into(), all_ms);
        f.insert("failover.first_read_ms".into(), first_ms);
        eprintln!("  failover, silent node ...");
        let (all_ms, first_ms, dropped) = failover(plan.failover_sessions, false).await?;
        f.insert("failover.silent.send_queue_full".into(), dropped);
        f.insert("failover.silent.all_owned_ms".into(), all_ms);
        f.insert("failover.silent.first_read_ms".into(), first_ms);
    }

    if want("rerep") {
        eprintln!("  re-replication ...");
        let (rate, n, total_ms) = rereplication(plan.rerep_sessions).await?;
        f.insert("rereplication.sessions_per_s".into(), rate);
        f.insert("rereplication.sessions".into(), n);
        f.insert("rereplication.from_kill_ms".into(), total_ms);
    }
    Ok((f, curves))
}

fn sync(backups: u32) -> AckPolicy {
    AckPolicy::Sync { backups, timeout: Duration::from_secs(5) }
}

// ----- baselines -----

fn frame() -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + PAYLOAD);
    v.extend_from_slice(&u32::try_from(PAYLOAD).unwrap_or(0).to_be_bytes());
    v.resize(4 + PAYLOAD, b'x');
    v
}

/// Where the two threads of the raw round trip run.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// Client and server pinned to two different CPUs: every request and acknowledgement
    /// wakes the other CPU, as between two nodes (the figure the latency targets use).
    TwoCpus,
    /// Both pinned to one CPU: each wake-up is a context switch on that CPU.
    OneCpu,
}

/// Request (4-byte length + 1 KiB) and 8-byte acknowledgement, one at a time, between two
/// threads with blocking sockets (no runtime), pinned as `placement` says. Unpinned, the
/// figure is bimodal on a small machine (about 6 µs when the kernel runs both threads on one
/// CPU, 85-100 µs when they run on two on the 2-vCPU VM of `docs/benchmarks`), and so were
/// two tokio tasks (11 or 90 µs): pinned, each placement is measured every time. With one
/// CPU only, `TwoCpus` runs unpinned.
async fn raw_tcp_pingpong(rounds: usize, placement: Placement) -> anyhow::Result<Vec<Duration>> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (client_cpu, server_cpu) = match (placement, cores.as_slice()) {
        (Placement::TwoCpus, [a, b, ..]) => (Some(*a), Some(*b)),
        (Placement::OneCpu, [a, ..]) => (Some(*a), Some(*a)),
        _ => (None, None),
    };
    // Threads of their own: a pinned runtime thread would stay pinned.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(blocking_pingpong(rounds, client_cpu, server_cpu));
    });
    rx.await.context("the ping-pong thread ended")?
}

fn blocking_pingpong(
    rounds: usize,
    client_cpu: Option<core_affinity::CoreId>,
    server_cpu: Option<core_affinity::CoreId>,
) -> anyhow::Result<Vec<Duration>> {
    use std::io::{Read as _, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        if let Some(c) = server_cpu {
            core_affinity::set_for_current(c);
        }
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; 4 + PAYLOAD];
        loop {
            if s.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            s.write_all(&[1u8; 8])?;
        }
    });
    if let Some(c) = client_cpu {
        core_affinity::set_for_current(c);
    }
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let msg = frame();
    let mut ack = [0u8; 8];
    let mut out = Vec::with_capacity(rounds);
    for i in 0..rounds + rounds / 10 {
        let t0 = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut ack)?;
        if i >= rounds / 10 {
            out.push(t0.elapsed());
        }
    }
    drop(s);
    server.join().map_err(|_| anyhow::anyhow!("the ping-pong server panicked"))??;
    Ok(out)
}

/// `n` length-prefixed 1 KiB messages written as fast as possible on one connection; the
/// clock stops when the receiver has read the last one.
async fn raw_tcp_pipelined(n: usize) -> anyhow::Result<f64> {
    pipelined(n, None).await
}

/// Raw pipelined TCP with TLS 1.3 (rustls, ring, as m2m's TCP transport; a throwaway
/// certificate, no client authentication): what encryption alone leaves of the raw figure.
async fn raw_tls_pipelined(n: usize) -> anyhow::Result<f64> {
    let (sc, cc) = replication_core::tls::insecure_configs()?;
    pipelined(n, Some((sc, cc))).await
}

/// A TLS server and client configuration for the raw TLS baselines.
type TlsConfigs = (Arc<tokio_rustls::rustls::ServerConfig>, Arc<tokio_rustls::rustls::ClientConfig>);

/// A loopback listener, its address, and an acceptor when `tls` is given.
async fn raw_listener(
    tls: Option<&TlsConfigs>,
) -> anyhow::Result<(TcpListener, std::net::SocketAddr, Option<tokio_rustls::TlsAcceptor>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    Ok((l, addr, tls.map(|(sc, _)| tokio_rustls::TlsAcceptor::from(sc.clone()))))
}

/// `n` 1 KiB frames on one loopback TCP connection, over TLS with `tls`; messages per second
/// until the receiver has read the last one.
async fn pipelined(n: usize, tls: Option<TlsConfigs>) -> anyhow::Result<f64> {
    let (l, addr, acceptor) = raw_listener(tls.as_ref()).await?;
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await?;
        match acceptor {
            Some(a) => read_frames(a.accept(s).await?, n).await,
            None => read_frames(s, n).await,
        }
    });
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    // The writer stays open until the receiver is done: closing it with unread bytes (a TLS
    // 1.3 session ticket) would reset the connection under the receiver.
    let (t0, done) = match tls {
        Some((_, cc)) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("insecure.m2m")?;
            let (t0, _open) =
                write_frames(tokio_rustls::TlsConnector::from(cc).connect(name, s).await?, n).await?;
            (t0, server.await??)
        }
        None => {
            let (t0, _open) = write_frames(s, n).await?;
            (t0, server.await??)
        }
    };
    Ok(n as f64 / done.duration_since(t0).as_secs_f64())
}

/// Reads `n` length-prefixed frames; the instant the last one was read.
async fn read_frames<S: tokio::io::AsyncRead + Unpin>(s: S, n: usize) -> std::io::Result<Instant> {
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let mut buf = vec![0u8; PAYLOAD];
    for _ in 0..n {
        let len = r.read_u32().await? as usize;
        buf.resize(len, 0);
        r.read_exact(&mut buf).await?;
    }
    Ok(Instant::now())
}

/// Writes `n` frames through a 64 KiB buffer; the instant the first one was written, and the
/// writer (still open).
async fn write_frames<S: tokio::io::AsyncWrite + Unpin>(
    s: S,
    n: usize,
) -> std::io::Result<(Instant, BufWriter<S>)> {
    let mut w = BufWriter::with_capacity(64 * 1024, s);
    let msg = frame();
    let t0 = Instant::now();
    for _ in 0..n {
        w.write_all(&msg).await?;
    }
    w.flush().await?;
    Ok((t0, w))
}

/// A quinn server and client endpoint on loopback (throw-away certificate, TLS 1.3), and the
/// server's address.
fn quinn_pair() -> anyhow::Result<(quinn::Endpoint, quinn::Endpoint, std::net::SocketAddr)> {
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    let (sc, cc) = replication_core::tls::insecure_configs()?;
    let server_cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(sc)?));
    let server = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(cc)?)));
    Ok((server, client, addr))
}

/// `n` length-prefixed 1 KiB messages on one quinn connection (one unidirectional stream),
/// TLS 1.3 as QUIC requires; the clock stops when the receiver has read the last one.
async fn raw_quinn(n: usize) -> anyhow::Result<f64> {
    let (server, client, addr) = quinn_pair()?;
    let accept = {
        let server = server.clone();
        tokio::spawn(async move {
            let conn = server.accept().await.context("no connection")?.await?;
            let mut rx = conn.accept_uni().await?;
            let mut buf = vec![0u8; 4 + PAYLOAD];
            for _ in 0..n {
                rx.read_exact(&mut buf).await?;
            }
            Ok::<_, anyhow::Error>((Instant::now(), conn))
        })
    };
    let conn = client.connect(addr, "insecure.m2m")?.await?;
    let mut tx = conn.open_uni().await?;
    let msg = frame();
    let t0 = Instant::now();
    for _ in 0..n {
        tx.write_all(&msg).await?;
    }
    let (done, sconn) = accept.await??;
    let _ = tx.finish();
    conn.close(0u32.into(), b"done");
    sconn.close(0u32.into(), b"done");
    client.wait_idle().await;
    server.close(0u32.into(), b"done");
    Ok(n as f64 / done.duration_since(t0).as_secs_f64())
}

/// In-flight requests of the request/acknowledge baselines: as many as m2m's concurrent
/// sessions in the c64 phase.
const WINDOW: usize = 64;

/// `n` 1 KiB requests on one connection, each acknowledged with 8 bytes, [`WINDOW`] in
/// flight (a new request for each acknowledgement): the transport's share of a synchronous
/// update at concurrency 64, with nothing else done. Over TLS with `tls`. Acknowledgements
/// per second.
async fn raw_tcp_acked(n: usize, tls: Option<TlsConfigs>) -> anyhow::Result<f64> {
    let (l, addr, acceptor) = raw_listener(tls.as_ref()).await?;
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await?;
        s.set_nodelay(true)?;
        match acceptor {
            Some(a) => {
                let (r, w) = tokio::io::split(a.accept(s).await?);
                acknowledge(r, w, n).await
            }
            None => {
                let (r, w) = s.into_split();
                acknowledge(r, w, n).await
            }
        }
    });
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let rate = match tls {
        Some((_, cc)) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("insecure.m2m")?;
            let (r, w) = tokio::io::split(tokio_rustls::TlsConnector::from(cc).connect(name, s).await?);
            request(r, w, n).await?
        }
        None => {
            let (r, w) = s.into_split();
            request(r, w, n).await?
        }
    };
    server.await??;
    Ok(rate)
}

/// The same over one quinn connection (one bidirectional stream).
async fn raw_quinn_acked(n: usize) -> anyhow::Result<f64> {
    let (server, client, addr) = quinn_pair()?;
    let accept = {
        let server = server.clone();
        tokio::spawn(async move {
            let conn = server.accept().await.context("no connection")?.await?;
            let (tx, rx) = conn.accept_bi().await?;
            acknowledge(rx, tx, n).await?;
            Ok::<_, anyhow::Error>(conn)
        })
    };
    let conn = client.connect(addr, "insecure.m2m")?.await?;
    let (tx, rx) = conn.open_bi().await?;
    let rate = request(rx, tx, n).await?;
    let sconn = accept.await??;
    conn.close(0u32.into(), b"done");
    sconn.close(0u32.into(), b"done");
    client.wait_idle().await;
    server.close(0u32.into(), b"done");
    Ok(rate)
}

/// The requesting side of the acknowledged baselines: keeps [`WINDOW`] requests in flight
/// until `n` are acknowledged, writing the requests an arrival of acknowledgements frees in
/// one flush; acknowledgements per second.
async fn request<R, W>(r: R, w: W, n: usize) -> std::io::Result<f64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(128 * 1024, w);
    let msg = frame();
    let t0 = Instant::now();
    let mut sent = 0;
    for _ in 0..WINDOW.min(n) {
        w.write_all(&msg).await?;
        sent += 1;
    }
    w.flush().await?;
    let mut acked = 0;
    let mut ack = [0u8; 8];
    while acked < n {
        r.read_exact(&mut ack).await?;
        acked += 1;
        let mut free = 1;
        while r.buffer().len() >= ack.len() {
            r.read_exact(&mut ack).await?;
            acked += 1;
            free += 1;
        }
        for _ in 0..free {
            if sent < n {
                w.write_all(&msg).await?;
                sent += 1;
            }
        }
        w.flush().await?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// The acknowledging side: reads `n` length-prefixed requests and answers each with 8
/// bytes, flushed when no further complete request is buffered.
async fn acknowledge<R, W>(r: R, w: W, n: usize) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(4096, w);
    let mut buf = vec![0u8; PAYLOAD];
    for _ in 0..n {
        let len = r.read_u32().await? as usize;
        buf.resize(len, 0);
        r.read_exact(&mut buf).await?;
        w.write_all(&[1u8; 8]).await?;
        if r.buffer().len() < 4 + PAYLOAD {
            w.flush().await?;
        }
    }
    w.flush().await?;
    // Stay until the requester is done reading (closing first could reset a TLS stream
    // under it).
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest).await;
    Ok(())
}

/// The allocator of this process: `system`, or the libraries `LD_PRELOAD` names (jemalloc,
/// mimalloc...), which replace it.
fn allocator() -> String {
    match std::env::var("LD_PRELOAD") {
        Ok(v) if !v.trim().is_empty() => format!("LD_PRELOAD={}", v.trim()),
        _ => "system".into(),
    }
}

fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `SET key <1 KiB>` + `WAIT 1 0` (written together, one round trip, as an optimal client
/// would), `conc` connections for `phase`.
async fn redis_set_wait(addr: &str, conc: usize, phase: Duration) -> anyhow::Result<(f64, Vec<Duration>)> {
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + phase;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conc {
        let addr = addr.to_owned();
        tasks.spawn(async move {
            let s = TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            let mut s = BufReader::new(s);
            let key = format!("m2m-bench-{c}");
            let value = vec![b'x'; PAYLOAD];
            let mut req = resp_command(&[b"SET", key.as_bytes(), &value]);
            req.extend(resp_command(&[b"WAIT", b"1", b"0"]));
            let mut samples = Vec::new();
            let mut line = String::new();
            loop {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                s.get_mut().write_all(&req).await?;
                line.clear();
                s.read_line(&mut line).await?;
                if !line.starts_with("+OK") {
                    bail!("SET answered {line:?}");
                }
                line.clear();
                s.read_line(&mut line).await?;
                let acked: i64 = line.trim().trim_start_matches(':').parse().unwrap_or(-1);
                if acked < 1 {
                    bail!("WAIT 1 0 answered {line:?}: is a replica attached?");
                }
                if t0 >= start {
                    samples.push(t0.elapsed());
                }
            }
            Ok(samples)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    let rate = all.len() as f64 / phase.as_secs_f64();
    Ok((rate, all))
}

// ----- m2m -----

struct Cluster {
    nodes: Vec<SessionManager>,
    _certs: tempfile::TempDir,
}

enum Socket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl Cluster {
    /// `n` nodes `app1..` on loopback with mutual TLS (throw-away certificates).
    async fn start(
        transport: &str,
        n: usize,
        replicas: u32,
        ack: AckPolicy,
        core: Option<replication_core::Settings>,
        trace: Option<&Arc<Trace>>,
        domain_extra: &str,
    ) -> anyhow::Result<Cluster> {
        let (_, cfg, sockets) = bench_domain(transport, n, replicas, domain_extra)?;
        let certs = tempfile::tempdir()?;
        replication_core::tls::init_dir(&cfg, certs.path()).context("throw-away certificates")?;
        let mut nodes = Vec::new();
        for (name, socket) in sockets {
            nodes.push(start_node(&cfg, certs.path(), &name, socket, ack, core.as_ref(), trace).await?);
        }
        wait_peers_up(&nodes, n - 1).await?;
        Ok(Cluster { nodes, _certs: certs })
    }

    async fn stop(self) {
        for m in &self.nodes {
            let _ = m.abort().await;
        }
    }
}

/// A benchmark domain: its file's text, the parsed domain, and each node's name and socket.
type BenchDomain = (String, DomainConfig, Vec<(String, Socket)>);

/// The text of a benchmark domain of `n` nodes `app1..` on loopback, and a socket bound to
/// each node's address (for the node to adopt; dropped for a node that runs in a child
/// process, which binds the address itself).
fn bench_domain(transport: &str, n: usize, replicas: u32, domain_extra: &str) -> anyhow::Result<BenchDomain> {
    let mut text = format!(
        "[domain]\nname = \"bench\"\ntopology = \"peer-to-peer\"\nreplicas = {replicas}\n\
         transport = \"{transport}\"\nheartbeat_interval_ms = {HEARTBEAT_MS}\n\
         failure_timeout_ms = {FAILURE_TIMEOUT_MS}\nrequest_timeout_ms = 2000\n{domain_extra}"
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
async fn start_node(
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
async fn wait_peers_up(nodes: &[SessionManager], peers: usize) -> anyhow::Result<()> {
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

/// `conc` tasks, each updating its own session (a 1 KiB attribute) in a loop for `phase`:
/// the rate of acknowledged updates, and their latencies when `record`.
async fn updates(
    m: &SessionManager,
    conc: usize,
    phase: Duration,
    record: bool,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let mut sessions = Vec::with_capacity(conc);
    for _ in 0..conc {
        sessions.push(m.create_with(session_attrs()).await?);
    }
    let warmup = Duration::from_millis(150).min(phase / 4);
    let start = Instant::now() + warmup;
    let deadline = start + phase;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut s) in sessions.into_iter().enumerate() {
        let m = m.clone();
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
    let mut ops = 0;
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (o, s) = r??;
        ops += o;
        all.extend(s);
    }
    Ok((ops as f64 / phase.as_secs_f64(), all))
}

/// Creates `n` sessions on `m`, 64 at a time (sync acknowledgement keeps the pace bounded);
/// returns their ids.
async fn create_many(m: &SessionManager, n: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    create_each(m, n, |id| ids.push(id)).await?;
    Ok(ids)
}

/// Creates `n` sessions on `m`, 64 at a time, passing each id to `each`.
async fn create_each(m: &SessionManager, n: usize, mut each: impl FnMut(String)) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < n || !tasks.is_empty() {
        while next < n && tasks.len() < 64 {
            let m = m.clone();
            tasks.spawn(async move { m.create_with(session_attrs()).await.map(|s| s.id().to_owned()) });
            next += 1;
        }
        if let Some(r) = tasks.join_next().await {
            each(r??);
        }
    }
    Ok(())
}

async fn wait_until<F, Fut>(limit: Duration, every: Duration, mut check: F) -> anyhow::Result<Instant>
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

/// When the failover's steps happened on one node (from its metrics hook: an event is seen
/// when the driver drains the engine after the step that produced it).
#[derive(Clone, Debug, Default)]
struct NodeTrace {
    down: Option<Instant>,
    first_gained: Option<Instant>,
    last_gained: Option<Instant>,
    gained: usize,
}

/// Timestamps of the failover's steps per node, recorded by the nodes' metrics hooks from
/// `start` on (where the time goes between the kill and the last session owned).
#[derive(Debug, Default)]
struct Trace {
    nodes: std::sync::Mutex<(Option<Instant>, BTreeMap<String, NodeTrace>)>,
}

impl Trace {
    fn start(&self, t0: Instant) {
        if let Ok(mut g) = self.nodes.lock() {
            *g = (Some(t0), BTreeMap::new());
        }
    }

    fn record(&self, node: &str, ev: &session_api::NodeEvent) {
        let Ok(mut g) = self.nodes.lock() else { return };
        if g.0.is_none() {
            return;
        }
        let now = Instant::now();
        let t = g.1.entry(node.to_owned()).or_default();
        match ev {
            session_api::NodeEvent::Core(replication_core::Event::PeerDown { .. }) => {
                t.down.get_or_insert(now);
            }
            session_api::NodeEvent::Core(replication_core::Event::OwnershipGained { .. }) => {
                t.first_gained.get_or_insert(now);
                t.last_gained = Some(now);
                t.gained += 1;
            }
            other => {
                if std::env::var_os("M2M_BENCH_TRACE").is_some() {
                    let t0 = g.0.unwrap_or(now);
                    eprintln!(
                        "    trace {node} {:.1} ms: {other:?}",
                        now.saturating_duration_since(t0).as_secs_f64() * 1e3
                    );
                }
            }
        }
    }

    fn of(&self, node: &str) -> NodeTrace {
        self.nodes.lock().ok().and_then(|g| g.1.get(node).cloned()).unwrap_or_default()
    }

    /// Ownerships gained on every node since `start`, and when the last one was.
    fn gained(&self) -> (usize, Option<Instant>) {
        let Ok(g) = self.nodes.lock() else { return (0, None) };
        (g.1.values().map(|t| t.gained).sum(), g.1.values().filter_map(|t| t.last_gained).max())
    }
}

/// Three nodes; `n` sessions owned by app1, a process of its own, which is then killed with
/// SIGKILL. With `closed_links` the survivors fail it when its links close and its address
/// refuses connections (a crashed process); without, at the failure timeout (as for a host
/// that went silent). Returns the time until every session is owned by a survivor, and until
/// a read of one session through its failover target (named in its id) returned it, in
/// milliseconds, and the sends dropped.
async fn failover(n: usize, closed_links: bool) -> anyhow::Result<(f64, f64, f64)> {
    let trace = Arc::new(Trace::default());
    let extra = if closed_links { "" } else { "closed_link_detection = false\n" };
    let started = Instant::now();
    let (text, cfg, mut sockets) = bench_domain("tcp", 3, 1, extra)?;
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs)?;
    replication_core::tls::init_dir(&cfg, &certs).context("throw-away certificates")?;
    std::fs::write(dir.path().join("bench.toml"), &text)?;
    // app1 binds its address in the child.
    drop(sockets.remove(0));
    let mut survivors = Vec::new();
    for (name, socket) in sockets {
        survivors.push(start_node(&cfg, &certs, &name, socket, sync(1), None, Some(&trace)).await?);
    }
    let mut owner = OwnerProcess::spawn(dir.path(), n)?;
    let ready = owner.line(Duration::from_secs(120)).await.context("the failover owner starting")?;
    let words: Vec<&str> = ready.split_whitespace().collect();
    let [_, probe, _, _] = words[..] else { bail!("the failover owner said {ready:?}") };
    let probe = probe.to_owned();
    // A domain that has run for a while, as in production (and as the benchmark measured
    // before a complete view counted as settled at once). Then a write to a backup on each
    // survivor, so that both heard app1 just before the kill (the silent case is measured
    // from the last word, as with writes going on).
    tokio::time::sleep_until((started + Duration::from_millis(FAILURE_TIMEOUT_MS + 200)).into()).await;
    owner.send("refresh")?;
    let answer = owner.line(Duration::from_secs(10)).await?;
    if answer != "refreshed" {
        bail!("the failover owner said {answer:?}");
    }
    let target = probe.rsplit('.').next().unwrap_or_default().to_owned();
    let reader = survivors.iter().find(|m| m.node().as_str() == target).context("failover target")?.clone();
    let survivors = [survivors[0].clone(), survivors[1].clone()];
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
    // disagree.
    let owned = |survivors: [SessionManager; 2]| async move {
        let mut owned = 0;
        for m in &survivors {
            owned += m.metrics().await?.core.owned;
        }
        anyhow::Ok(owned)
    };
    let tr = trace.clone();
    wait_until(Duration::from_secs(20), Duration::from_millis(1), || {
        let done = tr.gained().0 >= n;
        async move { Ok(done) }
    })
    .await
    .context("failover")?;
    let all = match trace.gained().1 {
        Some(last) if owned(survivors.clone()).await? >= n => last,
        _ => wait_until(Duration::from_secs(20), Duration::from_millis(2), || {
            let survivors = survivors.clone();
            async move { Ok(owned(survivors).await? >= n) }
        })
        .await
        .context("failover")?,
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
                    (d.saturating_duration_since(h).as_secs_f64() * 1e3) - FAILURE_TIMEOUT_MS as f64,
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
    for m in &survivors {
        let _ = m.abort().await;
    }
    Ok((
        all.duration_since(t0).as_secs_f64() * 1e3,
        first.duration_since(t0).as_secs_f64() * 1e3,
        dropped as f64,
    ))
}

/// The failover benchmark's owner process (`m2m bench --failover-child DIR`): lines from its
/// standard output, lines to its standard input; killed (SIGKILL) when dropped.
struct OwnerProcess {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: tokio::sync::mpsc::Receiver<String>,
}

impl OwnerProcess {
    fn spawn(dir: &std::path::Path, n: usize) -> anyhow::Result<OwnerProcess> {
        let exe = std::env::current_exe().context("the m2m executable")?;
        let mut child = std::process::Command::new(exe)
            .arg("bench")
            .arg("--failover-child")
            .arg(dir)
            .args(["--failover-sessions", &n.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the failover owner process")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the failover owner process has no pipes");
        };
        Ok(OwnerProcess { child, stdin, lines: line_reader(stdout) })
    }

    /// The next line it prints, within `limit`.
    async fn line(&mut self, limit: Duration) -> anyhow::Result<String> {
        match tokio::time::timeout(limit, self.lines.recv()).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => bail!("the failover owner process exited ({:?})", self.child.try_wait()),
            Err(_) => bail!("the failover owner process said nothing for {limit:?}"),
        }
    }

    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        writeln!(self.stdin, "{line}").context("writing to the failover owner process")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// SIGKILL, and reaps it.
    fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("killing the failover owner process")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for OwnerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of a blocking reader (a pipe), read on a thread of their own, until it ends or
/// fails or the receiver is dropped.
fn line_reader(r: impl std::io::Read + Send + 'static) -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The owner of the failover benchmark in a child process (`--failover-child DIR`): starts
/// app1 of `DIR/bench.toml` (certificates in `DIR/certs`), creates `n` sessions and prints
/// `ready PROBE ID2 ID3`: a session to read back after the failover, and one backed up on
/// app2 and one on app3. For each `refresh` on its standard input it writes to those two
/// (so that both survivors hear it just before the kill) and prints `refreshed`. It runs
/// until it is killed, or leaves when its standard input closes (the benchmark is gone).
async fn failover_child(dir: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(dir.join("bench.toml")).context("the failover domain file")?;
    let cfg = DomainConfig::parse(&text, "bench.toml").context("the failover domain file")?;
    let node = SessionManager::builder(cfg, "app1")
        .certs_dir(dir.join("certs"))
        .ack(sync(1))
        .start()
        .await
        .context("starting app1")?;
    wait_peers_up(std::slice::from_ref(&node), 2).await?;
    let ids = create_many(&node, n).await?;
    let probe = ids.first().cloned().context("no session")?;
    let last = ["app2", "app3"].map(|t| {
        ids.iter().find(|id| id.ends_with(&format!(".{t}"))).cloned().unwrap_or_else(|| probe.clone())
    });
    println!("ready {probe} {} {}", last[0], last[1]);
    let mut rx = line_reader(std::io::stdin());
    while let Some(line) = rx.recv().await {
        if line.trim() == "refresh" {
            for id in &last {
                node.update(id, |s| s.set("refresh", &1u8)).await?;
            }
            println!("refreshed");
        }
    }
    let _ = node.abort().await;
    Ok(())
}

/// Re-replication settings of the benchmark: a token bucket that does not limit (1,000,000
/// sessions/s) and a scan batch (and burst) of 1000 sessions per maintenance tick, which fits
/// the transport's per-peer queue of 1024 messages.
const REREP_PER_SEC: u32 = 1_000_000;
const REREP_BATCH: u32 = 1000;

/// Three nodes, `n` sessions owned by app1 with one backup each on app2 or app3; app3 is
/// aborted and app1 re-creates the lost copies on app2. The re-replication token bucket and
/// scan batch are raised so they do not limit the rate. Returns sessions per second (from
/// the failure detection to the last copy), sessions re-replicated, and ms from the kill.
async fn rereplication(n: usize) -> anyhow::Result<(f64, f64, f64)> {
    let mut core = replication_core::Settings::default();
    core.rereplication_per_sec = REREP_PER_SEC;
    core.rereplication_burst = REREP_BATCH;
    core.scan_batch = REREP_BATCH as usize;
    let c = Cluster::start("tcp", 3, 1, sync(1), Some(core), None, "").await?;
    let (a, b, dead) = (c.nodes[0].clone(), c.nodes[1].clone(), c.nodes[2].clone());
    create_many(&a, n).await?;
    wait_until(Duration::from_secs(60), Duration::from_millis(10), || {
        let (b, dead) = (b.clone(), dead.clone());
        async move { Ok(b.metrics().await?.core.backups + dead.metrics().await?.core.backups >= n) }
    })
    .await
    .context("initial replication")?;
    let before = b.metrics().await?.core.backups;
    let t0 = Instant::now();
    dead.abort().await?;
    let detected = wait_until(Duration::from_secs(10), Duration::from_millis(1), || {
        let a = a.clone();
        async move { Ok(a.metrics().await?.core.peers_up < 2) }
    })
    .await
    .context("failure detection")?;
    let done = wait_until(Duration::from_secs(15), Duration::from_millis(5), || {
        let b = b.clone();
        async move { Ok(b.metrics().await?.core.backups >= n) }
    })
    .await;
    if done.is_err() {
        let (ma, mb) = (a.metrics().await?, b.metrics().await?);
        eprintln!("app1 {:?}\napp2 {:?}", ma.core, mb.core);
        eprintln!(
            "re-replication stalled: backups on app2 {} of {n}; app1 under-replicated {}, full copies sent {}, \
             send queue full {}",
            mb.core.backups, ma.core.under_replicated, ma.core.full_copies_sent, ma.send_queue_full
        );
    }
    let done = done.context("re-replication")?;
    let dropped = a.metrics().await?.send_queue_full;
    eprintln!("    re-replication: {dropped} sends dropped on a full transport queue at app1");
    c.stop().await;
    let moved = n.saturating_sub(before) as f64;
    let secs = done.duration_since(detected).as_secs_f64().max(1e-6);
    Ok((moved / secs, moved, done.duration_since(t0).as_secs_f64() * 1e3))
}

// ----- memory -----

/// What a memory child prints.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
struct MemoryFigure {
    sessions: usize,
    copies: usize,
    rss_before: u64,
    rss_after: u64,
    bytes_per_copy: f64,
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

async fn memory_child(kind: MemoryKind, n: usize) -> anyhow::Result<MemoryFigure> {
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
            let c = Cluster::start("tcp", 2, 1, ack, None, None, "").await?;
            let (a, b) = (c.nodes[0].clone(), c.nodes[1].clone());
            let before = rss_bytes()?;
            // Count the ids without keeping them: only the nodes' memory is measured.
            let mut created = 0;
            create_each(&a, n, |_| created += 1).await?;
            wait_until(Duration::from_secs(600), Duration::from_millis(100), || {
                let b = b.clone();
                // A busy node may answer a metrics request late: ask again.
                async move { Ok(b.metrics().await.is_ok_and(|m| m.core.backups >= created)) }
            })
            .await
            .context("replication of the memory sessions")?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = rss_bytes()?;
            let copies = a.metrics().await?.core.owned + b.metrics().await?.core.backups;
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

fn memory(args: &Args, n: usize) -> anyhow::Result<BTreeMap<String, MemoryFigure>> {
    let exe = std::env::current_exe().context("the m2m executable")?;
    let mut out = BTreeMap::new();
    for (name, kind) in [("hashmap", "hashmap"), ("m2m", "m2m")] {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "--memory-child", kind, "--memory-sessions", &n.to_string()]);
        if args.quick {
            cmd.arg("--quick");
        }
        let o = cmd.output().with_context(|| format!("running the {name} memory child"))?;
        if !o.status.success() {
            bail!("the {name} memory child failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let line = String::from_utf8_lossy(&o.stdout);
        let fig: MemoryFigure = serde_json::from_str(line.trim()).context("the memory child's answer")?;
        out.insert(name.to_owned(), fig);
    }
    Ok(out)
}

// ----- report -----

#[derive(Debug, Serialize)]
struct Target {
    name: String,
    value: f64,
    limit: f64,
    met: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Report {
    quick: bool,
    runs: u32,
    phase_ms: u128,
    median: Figures,
    memory: BTreeMap<String, MemoryFigure>,
    ratios: BTreeMap<String, f64>,
    targets: Vec<Target>,
    latency_curves_percentiles: Vec<f64>,
    latency_curves_us: Curves,
    each_run: Vec<Figures>,
    redis: bool,
    /// The memory allocator the figures were taken with: `system`, or what `LD_PRELOAD`
    /// loaded (see `scripts/bench-allocators.sh`).
    allocator: String,
}

impl Report {
    fn new(
        plan: &Plan,
        runs: u32,
        median: Figures,
        each_run: Vec<Figures>,
        memory: BTreeMap<String, MemoryFigure>,
        curves: Curves,
        redis: bool,
    ) -> Report {
        let g = |k: &str| median.get(k).copied().unwrap_or(f64::NAN);
        let mem = |k: &str| memory.get(k).map_or(f64::NAN, |m| m.bytes_per_copy);
        let mut ratios = BTreeMap::new();
        ratios.insert(
            "tcp.sync.c1.p50 / raw.tcp.rtt.p50".into(),
            g("tcp.sync.c1.p50_us") / g("raw.tcp.rtt.p50_us"),
        );
        ratios.insert(
            "tcp.sync.c1.p99 / raw.tcp.rtt.p99".into(),
            g("tcp.sync.c1.p99_us") / g("raw.tcp.rtt.p99_us"),
        );
        ratios.insert(
            "tcp.sync.c1.p50 / raw.tcp.rtt_one_cpu.p50".into(),
            g("tcp.sync.c1.p50_us") / g("raw.tcp.rtt_one_cpu.p50_us"),
        );
        ratios.insert(
            "tcp.sync.c64 / raw.tcp pipelined".into(),
            g("tcp.sync.c64.ops_per_s") / g("raw.tcp.msgs_per_s"),
        );
        ratios.insert(
            "tcp.sync.c64 / raw.tls pipelined".into(),
            g("tcp.sync.c64.ops_per_s") / g("raw.tls.msgs_per_s"),
        );
        ratios
            .insert("raw.tls / raw.tcp pipelined".into(), g("raw.tls.msgs_per_s") / g("raw.tcp.msgs_per_s"));
        ratios.insert(
            "tcp.sync.c64 / redis.c16".into(),
            g("tcp.sync.c64.ops_per_s") / g("redis.c16.ops_per_s"),
        );
        ratios.insert(
            "quic.sync.c64 / raw.quinn".into(),
            g("quic.sync.c64.ops_per_s") / g("raw.quinn.msgs_per_s"),
        );
        for (k, m2m, raw) in [
            ("tcp.sync.c64 / raw.tls.acked", "tcp.sync.c64.ops_per_s", "raw.tls.acked.msgs_per_s"),
            ("quic.sync.c64 / raw.quinn.acked", "quic.sync.c64.ops_per_s", "raw.quinn.acked.msgs_per_s"),
            ("raw.quinn.acked / raw.quinn", "raw.quinn.acked.msgs_per_s", "raw.quinn.msgs_per_s"),
            ("raw.tls.acked / raw.tcp pipelined", "raw.tls.acked.msgs_per_s", "raw.tcp.msgs_per_s"),
        ] {
            ratios.insert(k.into(), g(m2m) / g(raw));
        }
        ratios.insert("memory m2m / hashmap".into(), mem("m2m") / mem("hashmap"));
        let target = |name: &str, value: f64, limit: f64, at_most: bool| Target {
            name: name.into(),
            value,
            limit,
            met: value.is_finite().then_some(if at_most { value <= limit } else { value >= limit }),
        };
        let r = |k: &str| ratios.get(k).copied().unwrap_or(f64::NAN);
        let targets = vec![
            target("sync p50 <= 2x raw TCP round trip", r("tcp.sync.c1.p50 / raw.tcp.rtt.p50"), 2.0, true),
            target("sync p99 <= 3x raw TCP round trip", r("tcp.sync.c1.p99 / raw.tcp.rtt.p99"), 3.0, true),
            target("sync c64 >= 25% raw pipelined TCP", r("tcp.sync.c64 / raw.tcp pipelined"), 0.25, false),
            target("sync c64 >= 20x Redis SET+WAIT c16", r("tcp.sync.c64 / redis.c16"), 20.0, false),
            target("QUIC sync c64 >= 50% raw quinn", r("quic.sync.c64 / raw.quinn"), 0.5, false),
            target("memory per copy <= 1.15x HashMap", r("memory m2m / hashmap"), 1.15, true),
            target(
                "failover <= failure timeout + 50 ms",
                g("failover.all_owned_ms"),
                (FAILURE_TIMEOUT_MS + 50) as f64,
                true,
            ),
            target(
                "failover, silent node <= failure timeout + 50 ms",
                g("failover.silent.all_owned_ms"),
                (FAILURE_TIMEOUT_MS + 50) as f64,
                true,
            ),
            target("re-replication >= 50,000 sessions/s", g("rereplication.sessions_per_s"), 50_000.0, false),
        ];
        Report {
            quick: plan.rounds < 20_000,
            runs,
            phase_ms: plan.phase.as_millis(),
            median,
            memory,
            ratios,
            targets,
            latency_curves_percentiles: CURVE_POINTS.to_vec(),
            latency_curves_us: curves,
            each_run,
            redis,
            allocator: allocator(),
        }
    }

    fn g(&self, k: &str) -> f64 {
        self.median.get(k).copied().unwrap_or(f64::NAN)
    }

    fn render(&self) -> String {
        let us = |v: f64| if v.is_finite() { format!("{v:.0} us") } else { "-".into() };
        let rate = |v: f64| if v.is_finite() { format!("{v:.0}/s") } else { "-".into() };
        let ratio = |v: f64| if v.is_finite() { format!("{v:.2}x") } else { "-".into() };
        let mut t = Table::new(["measurement", "value", "ratio", "to baseline"]);
        let rtt50 = self.g("raw.tcp.rtt.p50_us");
        let rtt99 = self.g("raw.tcp.rtt.p99_us");
        let raw_tcp = self.g("raw.tcp.msgs_per_s");
        let raw_quinn = self.g("raw.quinn.msgs_per_s");
        let redis16 = self.g("redis.c16.ops_per_s");
        t.row([
            "raw TCP 1 KiB round trip p50 / p99, two CPUs".into(),
            format!("{} / {}", us(rtt50), us(rtt99)),
            String::new(),
            String::new(),
        ]);
        let rtt1_50 = self.g("raw.tcp.rtt_one_cpu.p50_us");
        t.row([
            "raw TCP 1 KiB round trip p50 / p99, one CPU".into(),
            format!("{} / {}", us(rtt1_50), us(self.g("raw.tcp.rtt_one_cpu.p99_us"))),
            String::new(),
            String::new(),
        ]);
        t.row(["raw TCP pipelined 1 KiB".into(), rate(raw_tcp), String::new(), String::new()]);
        let raw_tls = self.g("raw.tls.msgs_per_s");
        t.row([
            "raw TLS 1.3 (TCP) pipelined 1 KiB".into(),
            rate(raw_tls),
            ratio(raw_tls / raw_tcp),
            "raw TCP".into(),
        ]);
        t.row(["raw quinn 1 KiB, one connection".into(), rate(raw_quinn), String::new(), String::new()]);
        let tcp_acked = self.g("raw.tcp.acked.msgs_per_s");
        let tls_acked = self.g("raw.tls.acked.msgs_per_s");
        let quinn_acked = self.g("raw.quinn.acked.msgs_per_s");
        t.row([
            format!("raw TCP 1 KiB + 8 B ack, {WINDOW} in flight"),
            rate(tcp_acked),
            ratio(tcp_acked / raw_tcp),
            "raw TCP".into(),
        ]);
        t.row([
            format!("raw TLS 1 KiB + 8 B ack, {WINDOW} in flight"),
            rate(tls_acked),
            ratio(tls_acked / raw_tcp),
            "raw TCP".into(),
        ]);
        t.row([
            format!("raw quinn 1 KiB + 8 B ack, {WINDOW} in flight"),
            rate(quinn_acked),
            ratio(quinn_acked / raw_quinn),
            "raw quinn".into(),
        ]);
        if self.redis {
            t.row([
                "Redis SET+WAIT 1, 1 client (p50 / p99)".into(),
                format!(
                    "{} ({} / {})",
                    rate(self.g("redis.c1.ops_per_s")),
                    us(self.g("redis.c1.p50_us")),
                    us(self.g("redis.c1.p99_us"))
                ),
                String::new(),
                String::new(),
            ]);
            t.row(["Redis SET+WAIT 1, 16 clients".into(), rate(redis16), String::new(), String::new()]);
        } else {
            t.row(["Redis SET+WAIT 1".into(), "skipped (no --redis)".into(), String::new(), String::new()]);
        }
        for (tr, raw, raw_name) in [("tcp", raw_tcp, "raw TCP"), ("quic", raw_quinn, "raw quinn")] {
            let name = tr.to_uppercase();
            let p50 = self.g(&format!("{tr}.sync.c1.p50_us"));
            let p99 = self.g(&format!("{tr}.sync.c1.p99_us"));
            let p999 = self.g(&format!("{tr}.sync.c1.p999_us"));
            t.row([
                format!("m2m {name} sync update p50"),
                us(p50),
                format!("{}; {}", ratio(p50 / rtt50), ratio(p50 / rtt1_50)),
                "raw TCP p50, two CPUs; one CPU".into(),
            ]);
            t.row([format!("m2m {name} sync update p99"), us(p99), ratio(p99 / rtt99), "raw TCP p99".into()]);
            t.row([format!("m2m {name} sync update p999"), us(p999), String::new(), String::new()]);
            for c in [1, 16, 64] {
                let v = self.g(&format!("{tr}.sync.c{c}.ops_per_s"));
                let (r2, n2) = if c == 64 && tr == "tcp" && self.redis {
                    (
                        format!(
                            "{}; {}; {}; {}",
                            ratio(v / raw),
                            ratio(v / raw_tls),
                            ratio(v / tls_acked),
                            ratio(v / redis16)
                        ),
                        format!("{raw_name}; raw TLS; raw TLS acked; Redis c16"),
                    )
                } else if c == 64 && tr == "tcp" {
                    (
                        format!("{}; {}; {}", ratio(v / raw), ratio(v / raw_tls), ratio(v / tls_acked)),
                        format!("{raw_name}; raw TLS; raw TLS acked"),
                    )
                } else if c == 64 {
                    (
                        format!("{}; {}", ratio(v / raw), ratio(v / quinn_acked)),
                        format!("{raw_name}; raw quinn acked"),
                    )
                } else {
                    (ratio(v / raw), raw_name.into())
                };
                t.row([format!("m2m {name} sync updates, {c} sessions"), rate(v), r2, n2]);
            }
        }
        let p50 = self.g("tcp.replicas2.c1.p50_us");
        t.row([
            "m2m TCP replicas 2 sync update p50 / p99".into(),
            format!("{} / {}", us(p50), us(self.g("tcp.replicas2.c1.p99_us"))),
            ratio(p50 / rtt50),
            "raw TCP p50".into(),
        ]);
        let v = self.g("tcp.replicas2.c64.ops_per_s");
        t.row([
            "m2m TCP replicas 2 sync updates, 64 sessions".into(),
            rate(v),
            ratio(v / raw_tcp),
            "raw TCP".into(),
        ]);
        for c in [1, 64] {
            let v = self.g(&format!("tcp.async.c{c}.ops_per_s"));
            t.row([
                format!("m2m TCP async updates, {c} sessions"),
                rate(v),
                ratio(v / raw_tcp),
                "raw TCP".into(),
            ]);
        }
        if let (Some(h), Some(m)) = (self.memory.get("hashmap"), self.memory.get("m2m")) {
            t.row([
                format!("HashMap<String, Vec<u8>>, {} x 1 KiB (RSS)", h.sessions),
                format!("{:.0} B/entry", h.bytes_per_copy),
                String::new(),
                String::new(),
            ]);
            t.row([
                format!("m2m owner + backup, {} x 1 KiB (RSS)", m.sessions),
                format!("{:.0} B/copy", m.bytes_per_copy),
                ratio(m.bytes_per_copy / h.bytes_per_copy),
                "HashMap".into(),
            ]);
        }
        for (what, key) in [("crashed process", "failover"), ("silent node", "failover.silent")] {
            let fo = self.g(&format!("{key}.all_owned_ms"));
            t.row([
                format!("failover, {what}: all sessions owned by survivors"),
                format!("{fo:.0} ms"),
                ratio(fo / FAILURE_TIMEOUT_MS as f64),
                format!("failure timeout {FAILURE_TIMEOUT_MS} ms"),
            ]);
            t.row([
                format!("failover, {what}: first read via failover target"),
                format!("{:.0} ms", self.g(&format!("{key}.first_read_ms"))),
                String::new(),
                String::new(),
            ]);
            t.row([
                format!(
                    "failover, {what}: sends dropped on a full queue ({:.0} sessions)",
                    self.g("failover.sessions")
                ),
                format!("{:.0}", self.g(&format!("{key}.send_queue_full"))),
                String::new(),
                String::new(),
            ]);
        }
        t.row([
            format!("re-replication ({:.0} sessions)", self.g("rereplication.sessions")),
            rate(self.g("rereplication.sessions_per_s")),
            String::new(),
            format!("{:.0} ms from the kill", self.g("rereplication.from_kill_ms")),
        ]);
        let mut out = format!(
            "m2m bench: median of {} run(s), phases of {} ms; nodes in this process on 127.0.0.1, mutual TLS; \
             raw TCP without TLS; allocator: {}\n\n",
            self.runs, self.phase_ms, self.allocator
        );
        out.push_str(&t.render());
        out.push_str("\ntargets:\n");
        for tg in &self.targets {
            let state = match tg.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            };
            out.push_str(&format!("  {:<40} {:>12.3} (limit {}) {state}\n", tg.name, tg.value, tg.limit));
        }
        out
    }

    /// Two panels: latency distribution at concurrency 1 (log x), throughput by concurrency.
    fn svg(&self) -> String {
        let (w, h) = (960.0, 400.0);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        // Left: percentile (y) against latency (x, log10 µs).
        let (x0, y0, pw, ph) = (60.0, 40.0, 380.0, 300.0);
        s.push_str(&format!(
            "<text x=\"{}\" y=\"24\" font-size=\"14\">Latency at concurrency 1 (1 KiB)</text>\n",
            x0
        ));
        let series = [
            ("raw TCP round trip", &self.latency_curves_us.raw_tcp, "#888888"),
            ("m2m TCP sync update", &self.latency_curves_us.tcp, "#1f77b4"),
            ("m2m QUIC sync update", &self.latency_curves_us.quic, "#ff7f0e"),
            ("Redis SET+WAIT 1", &self.latency_curves_us.redis, "#2ca02c"),
        ];
        let all: Vec<f64> = series
            .iter()
            .flat_map(|(_, v, _)| v.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(1.0).log10().floor();
        let hi = all.iter().copied().fold(1.0, f64::max).log10().ceil().max(lo + 1.0);
        let xs = |v: f64| x0 + (v.max(1.0).log10() - lo) / (hi - lo) * pw;
        // "Nines" scale: p50, p90, p99 and p99.9 equally spaced.
        let ys = |p: f64| y0 + ph - (-(1.0 - p.min(0.999)).log10() / 3.0) * ph;
        s.push_str(&format!(
            "<rect x=\"{x0}\" y=\"{y0}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"black\"/>\n"
        ));
        let mut d = lo;
        while d <= hi {
            let x = xs(10f64.powf(d));
            s.push_str(&format!(
                "<line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{} us</text>\n",
                y0 + ph,
                y0 + ph + 16.0,
                10f64.powf(d)
            ));
            d += 1.0;
        }
        for p in [0.0, 0.5, 0.9, 0.99, 0.999] {
            let y = ys(p);
            s.push_str(&format!(
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">p{}</text>\n",
                x0 + pw,
                x0 - 4.0,
                y + 4.0,
                p * 100.0
            ));
        }
        for (i, (name, v, color)) in series.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            let pts: Vec<String> = v
                .iter()
                .zip(CURVE_POINTS)
                .filter(|(v, _)| v.is_finite())
                .map(|(v, p)| format!("{:.1},{:.1}", xs(*v), ys(p)))
                .collect();
            s.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
                pts.join(" ")
            ));
            let ly = y0 + ph - 64.0 + 16.0 * i as f64;
            s.push_str(&format!(
                "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{color}\"/><text x=\"{}\" y=\"{ly}\">{name}</text>\n",
                x0 + pw - 170.0,
                ly - 4.0,
                x0 + pw - 154.0
            ));
        }
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">latency (log scale)</text>\n",
            x0 + pw / 2.0,
            y0 + ph + 34.0
        ));
        // Right: grouped bars, updates/s by concurrency.
        let (x1, pw1) = (540.0, 380.0);
        s.push_str(&format!(
            "<text x=\"{x1}\" y=\"24\" font-size=\"14\">Sync updates/s by concurrent sessions</text>\n"
        ));
        let conc = [1, 16, 64];
        let bars = [("TCP", "tcp", "#1f77b4"), ("QUIC", "quic", "#ff7f0e")];
        let max = conc
            .iter()
            .flat_map(|c| bars.iter().map(move |(_, t, _)| self.g(&format!("{t}.sync.c{c}.ops_per_s"))))
            .chain([self.g("redis.c16.ops_per_s")])
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max);
        s.push_str(&format!(
            "<rect x=\"{x1}\" y=\"{y0}\" width=\"{pw1}\" height=\"{ph}\" fill=\"none\" stroke=\"black\"/>\n"
        ));
        let group = pw1 / conc.len() as f64;
        for (gi, c) in conc.iter().enumerate() {
            let gx = x1 + group * gi as f64;
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{c}</text>\n",
                gx + group / 2.0,
                y0 + ph + 16.0
            ));
            for (bi, (_, t, color)) in bars.iter().enumerate() {
                let v = self.g(&format!("{t}.sync.c{c}.ops_per_s"));
                if !v.is_finite() {
                    continue;
                }
                let bh = v / max * (ph - 20.0);
                let bx = gx + 20.0 + bi as f64 * ((group - 40.0) / 2.0);
                s.push_str(&format!(
                    "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{v:.0}</text>\n",
                    y0 + ph - bh,
                    (group - 40.0) / 2.0 - 4.0,
                    bx + (group - 40.0) / 4.0 - 2.0,
                    y0 + ph - bh - 3.0
                ));
            }
        }
        let r16 = self.g("redis.c16.ops_per_s");
        if r16.is_finite() {
            let y = y0 + ph - r16 / max * (ph - 20.0);
            s.push_str(&format!(
                "<line x1=\"{x1}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#2ca02c\" stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{:.1}\" fill=\"#2ca02c\">Redis SET+WAIT 1, 16 clients: {r16:.0}/s</text>\n",
                x1 + pw1,
                x1 + 4.0,
                y - 4.0
            ));
        }
        for (i, (name, _, color)) in bars.iter().enumerate() {
            let ly = y0 + 14.0 + 16.0 * i as f64;
            s.push_str(&format!(
                "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"8\" fill=\"{color}\"/><text x=\"{}\" y=\"{ly}\">m2m {name}</text>\n",
                x1 + 10.0,
                ly - 8.0,
                x1 + 26.0
            ));
        }
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">concurrent sessions (raw TCP {:.0}/s, raw quinn {:.0}/s)</text>\n",
            x1 + pw1 / 2.0,
            y0 + ph + 34.0,
            self.g("raw.tcp.msgs_per_s"),
            self.g("raw.quinn.msgs_per_s")
        ));
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 0.999), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert!(percentile(&[], 0.5).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        let runs = vec![
            Figures::from([("a".to_owned(), 1.0), ("b".to_owned(), 10.0)]),
            Figures::from([("a".to_owned(), 3.0)]),
            Figures::from([("a".to_owned(), 2.0), ("b".to_owned(), 20.0)]),
        ];
        let m = median_figures(&runs);
        assert_eq!(m["a"], 2.0);
        assert_eq!(m["b"], 15.0);
        let l = lat(&[Duration::from_micros(10), Duration::from_micros(30), Duration::from_micros(20)]);
        assert_eq!(l.p50, 20.0);
        assert_eq!(l.p999, 30.0);
    }

    #[test]
    fn acknowledged_baselines_get_every_acknowledgement() -> anyhow::Result<()> {
        // More messages than the window, not a multiple of it: `request` returns only when
        // every one of its requests was acknowledged, `acknowledge` only when it read them all.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        rt.block_on(async {
            let n = WINDOW * 7 + 5;
            let limit = Duration::from_secs(60);
            let tcp = tokio::time::timeout(limit, raw_tcp_acked(n, None)).await??;
            let tls = replication_core::tls::insecure_configs()?;
            let tls = tokio::time::timeout(limit, raw_tcp_acked(n, Some(tls))).await??;
            let quinn = tokio::time::timeout(limit, raw_quinn_acked(n)).await??;
            for (name, rate) in [("tcp", tcp), ("tls", tls), ("quinn", quinn)] {
                assert!(rate.is_finite() && rate > 0.0, "{name}: {rate}");
            }
            // Fewer requests than the window.
            let few = tokio::time::timeout(limit, raw_tcp_acked(3, None)).await??;
            assert!(few.is_finite() && few > 0.0);
            Ok(())
        })
    }

    #[test]
    fn resp_commands_are_framed() {
        assert_eq!(
            resp_command(&[b"WAIT", b"1", b"0"]),
            b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n".to_vec()
        );
    }
}
