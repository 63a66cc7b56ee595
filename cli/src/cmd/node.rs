//! `m2m node --config FILE --name NODE`: runs one node of a domain in the foreground, with
//! the admin HTTP API on the node's `admin` address, until SIGINT or SIGTERM. SIGHUP (and
//! `POST /domain/reload`) reads the domain file again and switches the running node to it
//! (an online domain change), or refuses it with the rules it breaks and keeps running; a file
//! that no longer lists the node makes it leave the domain gracefully and exit.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use replication_core::NodeId;
use session_api::{AckPolicy, NodeEvent, SessionManager};

use crate::admin::{self, AdminState, Guard, fds, token};
use crate::domain;
use crate::output::{self, EXIT_FAILED, EXIT_UNUSABLE};

/// Arguments of `m2m node`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 stopped by SIGINT/SIGTERM after leaving the domain gracefully; \
1 the domain breaks a rule, or the node could not start or failed (address in use, certificates); \
2 bad arguments, unreadable domain file, unknown node, no admin token (none in the --certs folder, \
none given, or --admin-no-auth on a non-loopback admin address).\n\n\
Logs go to stderr; RUST_LOG sets the level (default info), e.g. RUST_LOG=debug.")]
pub(crate) struct Args {
    /// The domain file (TOML).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// This node's name in the domain file.
    #[arg(long, value_name = "NODE")]
    pub(crate) name: String,
    /// Mutual TLS with the certificates in DIR (from `m2m certs init`).
    #[arg(long, value_name = "DIR", conflicts_with = "insecure")]
    pub(crate) certs: Option<PathBuf>,
    /// No authentication, no encryption between nodes: loopback demos only.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// A file holding the admin API's bearer token (default: `admin.token` in the --certs
    /// folder, written by `m2m certs init`; or set M2M_ADMIN_TOKEN). Every admin request needs
    /// `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub(crate) admin_token_file: Option<PathBuf>,
    /// Serve the admin API without a token (loopback admin addresses only): every local user
    /// and process can then read and change sessions. --insecure without a token implies it.
    #[arg(long, conflicts_with = "admin_token_file")]
    pub(crate) admin_no_auth: bool,
    /// Most admin connections served at once; more are answered 503 and closed. Lowered when
    /// the open-files limit is too small to keep descriptors for the transport.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) admin_max_connections: u32,
    /// How long an admin client may take to send a request's header (also between requests on
    /// a kept-alive connection), to send its body, or to take a stalled answer; slower
    /// connections are closed.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) admin_timeout_ms: u64,
    /// How writes wait for backups: `sync` (answer once the backups acknowledged, or 504
    /// after the domain's request timeout) or `async`.
    #[arg(long, value_enum, default_value_t = Ack::Sync)]
    pub(crate) ack: Ack,
    /// Backups that must acknowledge a sync write.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) ack_backups: u32,
    /// Session records (owned, backup copies, tombstones) this node holds at most before it
    /// refuses to create more (507 `full`); failovers, fetches and backup copies are always
    /// taken. `m2m_sessions_held` and `m2m_sessions_max` show how close it is.
    #[arg(long, value_name = "N", default_value_t = replication_core::Settings::default().max_sessions)]
    pub(crate) max_sessions: usize,
}

/// The acknowledgement of writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Ack {
    /// Wait for the backups.
    Sync,
    /// Answer once applied on this node.
    Async,
}

/// The admin listener's address and whether it is loopback only.
fn admin_address(text: &str) -> anyhow::Result<(SocketAddr, bool)> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the admin address `{text}`"))?
        .collect();
    let first = *addrs.first().with_context(|| format!("the admin address `{text}` resolves to nothing"))?;
    Ok((first, addrs.iter().all(|a| a.ip().is_loopback())))
}

/// Runs `m2m node`.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if args.certs.is_none() && !args.insecure {
        eprintln!(
            "error: choose how nodes authenticate each other:\n  \
             --certs DIR   mutual TLS with the certificates in DIR (create them with \
             `m2m certs init --domain FILE --out DIR`)\n  \
             --insecure    no authentication and no encryption (loopback demos and tests only)"
        );
        return Ok(output::exit(EXIT_UNUSABLE));
    }
    let cfg = match domain::load_valid(&args.config) {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let what = format!("domain {} in {}", cfg.domain.name, args.config.display());
    if let Err(code) = super::require_transport(cfg.domain.transport, &what) {
        return Ok(code);
    }
    let me = NodeId::new(&args.name);
    let Some(node_cfg) = cfg.node(&me) else {
        let known: Vec<&str> = cfg.nodes.iter().map(|n| n.name.as_str()).collect();
        eprintln!(
            "error: unknown node `{}`: domain {} in {} has the nodes {}",
            args.name,
            cfg.domain.name,
            args.config.display(),
            known.join(", ")
        );
        return Ok(output::exit(EXIT_UNUSABLE));
    };
    let token =
        match token::for_node(args.admin_no_auth, args.admin_token_file.as_deref(), args.certs.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(output::exit(EXIT_UNUSABLE));
            }
        };
    let admin = match &node_cfg.admin {
        None => None,
        Some(a) => match admin_address(a.as_str()) {
            Ok((addr, loopback)) => {
                if !loopback && token.is_none() {
                    eprintln!(
                        "error: the admin address {a} of node {} is not a loopback address: the admin API \
                         needs a bearer token there (--admin-no-auth and --insecure serve none). Give \
                         --certs DIR, --admin-token-file FILE or set M2M_ADMIN_TOKEN.",
                        args.name
                    );
                    return Ok(output::exit(EXIT_UNUSABLE));
                }
                Some(addr)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(output::exit(EXIT_UNUSABLE));
            }
        },
    };
    crate::logging::init("info");
    let fds = fds::raise();
    let rt = super::runtime()?;
    match rt.block_on(serve(args, cfg, admin, token, fds)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(output::exit(EXIT_FAILED))
        }
    }
}

async fn serve(
    args: &Args,
    cfg: replication_core::DomainConfig,
    admin: Option<SocketAddr>,
    token: Option<String>,
    fds: fds::Budget,
) -> anyhow::Result<()> {
    let domain_name = cfg.domain.name.clone();
    let transport = cfg.domain.transport;
    let address = cfg.node(&NodeId::new(&args.name)).map(|n| n.address.to_string()).unwrap_or_default();
    // Bind the admin listener first: a busy port fails before the node joins the domain.
    let admin_listener = match admin {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on the admin address {a}"))?,
        ),
        None => None,
    };
    let timeout = cfg.request_timeout() * 2 + Duration::from_secs(1);
    let (ack, ack_text) = match args.ack {
        Ack::Sync => (
            AckPolicy::Sync { backups: args.ack_backups, timeout },
            format!("sync ({} backup(s), {} ms)", args.ack_backups, cfg.request_timeout().as_millis()),
        ),
        Ack::Async => (AckPolicy::Async, "async".to_owned()),
    };
    let mut settings = session_api::SessionSettings::default();
    settings.core.max_sessions = args.max_sessions;
    let mut builder = SessionManager::builder(cfg, &args.name).settings(settings).ack(ack);
    builder = match &args.certs {
        Some(dir) => builder.certs_dir(dir),
        None => {
            tracing::warn!(
                "--insecure: no authentication and no encryption between nodes; use --certs outside loopback demos"
            );
            builder.insecure()
        }
    };
    let certificate_expiry = match &args.certs {
        Some(dir) => Some(certificate_expiry(dir, &args.name)?),
        None => None,
    };
    // The node records its metrics into its own Prometheus recorder, which `/metrics` renders.
    let (recorder, exposition) = admin::Exposition::new(&args.name, certificate_expiry)?;
    builder = builder.metrics_recorder(recorder);
    let manager = builder.start().await.with_context(|| format!("node {} cannot start", args.name))?;
    tracing::info!(node = %args.name, domain = %domain_name, %transport, %address, "node started");

    let events = tokio::spawn(log_events(manager.subscribe()));
    let removed = Arc::new(tokio::sync::Notify::new());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = match admin_listener {
        Some(listener) => {
            let local = listener.local_addr().context("admin listener address")?;
            let limits = admin::Limits {
                max_connections: fds
                    .admin_cap(usize::try_from(args.admin_max_connections).unwrap_or(usize::MAX)),
                timeout: Duration::from_millis(args.admin_timeout_ms),
            };
            tracing::info!(
                admin = %format!("http://{local}"),
                token = token.is_some(),
                max_connections = limits.max_connections,
                timeout_ms = args.admin_timeout_ms,
                open_files = ?fds.now,
                open_files_at_start = ?fds.before,
                "admin API listening"
            );
            if token.is_none() {
                tracing::warn!(
                    "the admin API has no token: every local user and process can read and change sessions"
                );
            }
            let guard = Arc::new(Guard { token, body_timeout: limits.timeout });
            let app = admin::router(
                Arc::new(AdminState {
                    manager: manager.clone(),
                    ack: ack_text,
                    certificate_expiry,
                    exposition,
                    domain_file: args.config.clone(),
                    removed: removed.clone(),
                }),
                guard,
            );
            Some(tokio::spawn(admin::serve(listener, app, limits, async move {
                let _ = stop_rx.await;
            })))
        }
        None => {
            tracing::info!("no admin address in the domain file for this node: no admin API");
            None
        }
    };

    let signal = run_until_stopped(&manager, &args.config, &removed).await?;
    tracing::info!(signal, "leaving the domain");
    let _ = stop_tx.send(());
    if let Some(server) = server {
        // In-flight admin requests get a moment to finish (the server bounds it).
        let _ = server.await;
    }
    let report = manager.shutdown().await.context("graceful shutdown")?;
    events.abort();
    output::emit(&format!(
        "node {} left domain {domain_name}: {} owned session(s) handed off to backups, {} without an up-to-date backup\n",
        args.name, report.handed_off, report.unreplicated
    ));
    Ok(())
}

/// Runs until SIGINT or SIGTERM, or until a reload removed this node from the domain, and
/// names why; reloads the domain file at each SIGHUP.
async fn run_until_stopped(
    manager: &SessionManager,
    config: &std::path::Path,
    removed: &tokio::sync::Notify,
) -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
        loop {
            tokio::select! {
                _ = term.recv() => return Ok("SIGTERM"),
                _ = int.recv() => return Ok("SIGINT"),
                () = removed.notified() => return Ok("removed from the domain file"),
                _ = hup.recv() => {
                    tracing::info!(file = %config.display(), "SIGHUP: reloading the domain file");
                    let result = admin::reload::reload(manager, config).await;
                    admin::reload::log(config, &result);
                    if result.is_ok_and(|p| p.removes_this_node) {
                        return Ok("removed from the domain file");
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (manager, config);
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                r.context("cannot listen for Ctrl-C")?;
                Ok("Ctrl-C")
            }
            () = removed.notified() => Ok("removed from the domain file"),
        }
    }
}

/// Logs what the node reports: membership and refusals at info/warn, per-session events at
/// debug.
async fn log_events(mut rx: tokio::sync::broadcast::Receiver<NodeEvent>) {
    use replication_core::Event;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match rx.recv().await {
            Ok(NodeEvent::Core(Event::PeerUp { node, incarnation })) => {
                tracing::info!(peer = %node, ?incarnation, "peer up");
            }
            Ok(NodeEvent::Core(Event::PeerDown { node })) => tracing::warn!(peer = %node, "peer down"),
            // Reported once per peer and manager, counted in `/status` and the metrics.
            Ok(NodeEvent::Core(Event::ManagerRefused { from, manager, rule })) => tracing::warn!(
                peer = %from,
                %manager,
                rule,
                "refused the records of a session manager this node's domain file does not declare: the domain files differ between nodes"
            ),
            Ok(NodeEvent::Core(e)) => tracing::debug!(event = ?e, "replication"),
            Ok(NodeEvent::Connected(p)) => tracing::debug!(peer = %p, "link up"),
            Ok(NodeEvent::Disconnected(p)) => tracing::debug!(peer = %p, "link down"),
            Ok(NodeEvent::Gone(p)) => tracing::warn!(
                peer = %p,
                "peer gone: its link closed and a new connection was refused or reset; failed without waiting for the failure timeout"
            ),
            // The transport warns about refusals itself, rate-limited (one summary line per
            // interval); each one is counted in `/status` and the metrics.
            Ok(NodeEvent::Refused { peer, reason }) => tracing::debug!(%peer, %reason, "connection refused"),
            Ok(other) => tracing::debug!(event = ?other, "node event"),
            Err(RecvError::Lagged(n)) => tracing::debug!(missed = n, "event log fell behind"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// When this node's certificate in `dir` expires; logged, at warn when 30 days or fewer are
/// left (`m2m certs reissue` renews it).
fn certificate_expiry(dir: &std::path::Path, name: &str) -> anyhow::Result<std::time::SystemTime> {
    let path = dir.join(format!("{name}.pem"));
    let pem = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let expiry = replication_core::tls::not_after(&pem).with_context(|| format!("{}", path.display()))?;
    let days = replication_core::tls::days_left(expiry, std::time::SystemTime::now());
    if days <= 30 {
        tracing::warn!(
            certificate = %path.display(),
            days_left = days,
            "the node's certificate expires soon: renew it with `m2m certs reissue`"
        );
    } else {
        tracing::info!(certificate = %path.display(), days_left = days, "certificate");
    }
    Ok(expiry)
}
