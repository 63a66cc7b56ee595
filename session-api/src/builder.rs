//! The builder that starts a node: domain, settings, transport, driver task.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use replication_core::placement::Placement;
use replication_core::transport::Transport;
use replication_core::{Message, Node, NodeId};
use tokio::sync::{broadcast, mpsc};

use crate::blocking::BlockingSessionManager;
use crate::client::{Client, Current, Inner};
use crate::config::{
    AckPolicy, DomainSource, SessionSettings, TransportSecurity, WriteContents, WriteFrequency,
};
use crate::driver::{Driver, DriverParts};
use crate::error::{Error, Result};
use crate::manager::SessionManager;
use crate::managers::ManagerChoice;
use crate::metrics::NodeEvent;
use crate::metrics::export::Export;

/// The default of [`Builder::metrics_interval`].
const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(10);

/// Starts a node: the domain, this node's name, the settings and the transport security.
///
/// ```no_run
/// # async fn demo() -> Result<(), session_api::Error> {
/// use std::time::Duration;
/// use session_api::{AckPolicy, SessionManager, WriteFrequency};
/// let sessions = SessionManager::builder("web.toml", "app1")
///     .certs_dir("certs")
///     .write_frequency(WriteFrequency::EndOfRequest)
///     .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) })
///     .max_inactive(Duration::from_secs(1800))
///     .start()
///     .await?;
/// # let _ = sessions; Ok(()) }
/// ```
pub struct Builder {
    domain: DomainSource,
    node: NodeId,
    settings: SessionSettings,
    security: Option<TransportSecurity>,
    tcp_listener: Option<std::net::TcpListener>,
    udp_socket: Option<std::net::UdpSocket>,
    listen: Option<SocketAddr>,
    transport: Option<Arc<dyn Transport<Message>>>,
    incarnation: Option<u64>,
    metrics_recorder: Option<Arc<dyn ::metrics::Recorder + Send + Sync>>,
    metrics_interval: Duration,
    pub(crate) managers: ManagerChoice,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("domain", &self.domain)
            .field("node", &self.node)
            .field("settings", &self.settings)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A builder for node `node` of the domain (a file path or a parsed
    /// [`DomainConfig`](replication_core::DomainConfig)). Transport security must be chosen:
    /// [`Builder::certs_dir`], or [`Builder::insecure`] for loopback demos (not needed with
    /// [`Builder::transport`]).
    pub fn new(domain: impl Into<DomainSource>, node: &str) -> Self {
        Builder {
            domain: domain.into(),
            node: NodeId::new(node),
            settings: SessionSettings::default(),
            security: None,
            tcp_listener: None,
            udp_socket: None,
            listen: None,
            managers: ManagerChoice::default(),
            transport: None,
            incarnation: None,
            metrics_recorder: None,
            metrics_interval: DEFAULT_METRICS_INTERVAL,
        }
    }

    /// Every session setting at once.
    pub fn settings(mut self, settings: SessionSettings) -> Self {
        self.settings = settings;
        self
    }

    /// When changes are sent to the backups.
    pub fn write_frequency(mut self, f: WriteFrequency) -> Self {
        self.settings.write_frequency = f;
        self
    }

    /// What a write sends.
    pub fn write_contents(mut self, c: WriteContents) -> Self {
        self.settings.write_contents = c;
        self
    }

    /// How writes wait for backups.
    pub fn ack(mut self, a: AckPolicy) -> Self {
        self.settings.ack = a;
        self
    }

    /// Inactivity after which sessions expire.
    pub fn max_inactive(mut self, d: Duration) -> Self {
        self.settings.max_inactive = d;
        self
    }

    /// Called from the driver for every event (keep it short).
    pub fn metrics_hook(mut self, hook: impl Fn(&NodeEvent) + Send + Sync + 'static) -> Self {
        self.settings.metrics_hook = Some(Arc::new(hook));
        self
    }

    /// Records this node's metrics with `recorder` instead of the global `metrics` recorder:
    /// one exposition per node, or nodes of several domains in one process (see
    /// [`crate::metrics::export`]).
    pub fn metrics_recorder(mut self, recorder: Arc<dyn ::metrics::Recorder + Send + Sync>) -> Self {
        self.metrics_recorder = Some(recorder);
        self
    }

    /// How often the counters and gauges are published to the `metrics` recorder at least
    /// (default 10 s; each publication counts the sessions once). A
    /// [`SessionManager::metrics`] snapshot publishes them too.
    pub fn metrics_interval(mut self, every: Duration) -> Self {
        self.metrics_interval = every;
        self
    }

    /// Transport security.
    pub fn security(mut self, s: TransportSecurity) -> Self {
        self.security = Some(s);
        self
    }

    /// Mutual TLS with the certificates in `dir` (`ca.pem`, `<node>.pem`, `<node>.key`).
    pub fn certs_dir(self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.security(TransportSecurity::CertsDir(dir.into()))
    }

    /// No authentication, no encryption: loopback demos and tests only.
    pub fn insecure(self) -> Self {
        self.security(TransportSecurity::Insecure)
    }

    /// A TCP listener bound in advance (tests bind port 0, then write the domain file).
    pub fn tcp_listener(mut self, l: std::net::TcpListener) -> Self {
        self.tcp_listener = Some(l);
        self
    }

    /// A UDP socket bound in advance, for QUIC.
    pub fn udp_socket(mut self, s: std::net::UdpSocket) -> Self {
        self.udp_socket = Some(s);
        self
    }

    /// Listens on this address instead of the node's address in the domain file (peers still
    /// dial the address in the file).
    pub fn listen_address(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Uses this transport instead of the one the domain file names (simulations, tests).
    pub fn transport(mut self, t: Arc<dyn Transport<Message>>) -> Self {
        self.transport = Some(t);
        self
    }

    /// The incarnation the node starts with (default: the wall clock in nanoseconds, so each
    /// start differs).
    pub fn incarnation(mut self, i: u64) -> Self {
        self.incarnation = Some(i);
        self
    }

    /// Starts the node on the current tokio runtime: loads the domain, starts the transport and
    /// spawns the driver task.
    pub async fn start(self) -> Result<SessionManager> {
        Ok(self.start_inner().await?.0)
    }

    async fn start_inner(self) -> Result<(SessionManager, tokio::task::JoinHandle<()>)> {
        let settings = self.settings.clone();
        settings.check()?;
        let cfg = self.domain.clone().load()?;
        if cfg.node(&self.node).is_none() {
            return Err(Error::Config(format!(
                "node `{}` is not listed in domain `{}`",
                self.node, cfg.domain.name
            )));
        }
        let table = Arc::new(self.managers.table(&cfg, &self.node, &settings)?);
        let handle_manager = self.managers.handle.clone();
        let cfg = Arc::new(cfg);
        let transport = match self.transport {
            Some(t) => t,
            None => {
                let security = self.security.ok_or_else(|| {
                    Error::Config(
                        "transport security not chosen: give a certificate folder (certs_dir) or run insecure \
                         (loopback demos only)"
                            .into(),
                    )
                })?;
                crate::carrier::start(
                    &cfg,
                    &self.node,
                    security,
                    self.tcp_listener,
                    self.udp_socket,
                    self.listen,
                )
                .await?
            }
        };
        let incarnation = self.incarnation.unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(1);
            u64::try_from(nanos).unwrap_or(u64::MAX)
        });
        let node =
            Node::new((*cfg).clone(), self.node.clone(), incarnation, settings.core.clone(), Instant::now())
                .map_err(|e| Error::Config(e.to_string()))?;
        let (tx, rx) = mpsc::channel(settings.command_capacity);
        let (events, _) = broadcast::channel(settings.event_capacity);
        let placement = Placement::new(&cfg);
        let export = Export::register(
            &self.node,
            cfg.nodes.iter().map(|n| n.name.clone()),
            // Per-manager gauges only where the node declares managers.
            &if table.len() > 1 {
                table.keys().map(|m| m.clone().unwrap_or_default()).collect::<Vec<_>>()
            } else {
                Vec::new()
            },
            self.metrics_recorder.as_deref(),
        );
        let driver = Driver::new(DriverParts {
            export,
            metrics_interval: self.metrics_interval,
            node,
            transport,
            requests: rx,
            events: events.clone(),
            settings: settings.clone(),
            placement: placement.clone(),
            managers: Arc::clone(&table),
        });
        let task = tokio::spawn(driver.run());
        let manager = SessionManager {
            client: Client {
                inner: Arc::new(Inner {
                    tx,
                    events,
                    me: self.node,
                    current: Arc::new(RwLock::new(Current { domain: cfg, placement: Arc::new(placement) })),
                    settings: table.get(&handle_manager).cloned().unwrap_or(settings),
                    manager: handle_manager,
                    managers: table,
                }),
                blocking: false,
            },
        };
        Ok((manager, task))
    }

    /// Starts the node on a dedicated thread with its own single-threaded tokio runtime, for
    /// applications without one, and returns a blocking handle.
    pub fn start_blocking(self) -> Result<BlockingSessionManager> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let name = format!("m2m-{}", self.node);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(source) => {
                        let _ = tx.send(Err(Error::Io { what: "tokio runtime".into(), source }));
                        return;
                    }
                };
                rt.block_on(async move {
                    match self.start_inner().await {
                        Ok((m, task)) => {
                            let _ = tx.send(Ok(m.blocking()));
                            drop(m);
                            // The driver ends after a shutdown or once every handle is gone.
                            let _ = task.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|source| Error::Io { what: "spawning the driver thread".into(), source })?;
        rx.recv().map_err(|_| Error::ShuttingDown)?
    }
}

impl SessionManager {
    /// A [`Builder`] for node `node` of a domain (file path or [`DomainConfig`](replication_core::DomainConfig)).
    pub fn builder(domain: impl Into<DomainSource>, node: &str) -> Builder {
        Builder::new(domain, node)
    }
}
