//! What a session manager is started with: the domain, this node, and the settings of the
//! WebSphere-style "memory-to-memory replication" panel (write frequency, write contents,
//! acknowledgement, max inactive interval), transport security and test hooks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use replication_core::DomainConfig;

use crate::error::{Error, Result};
use crate::metrics::MetricsHook;

/// When session changes are sent to the backups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WriteFrequency {
    /// Each committed request writes its changes at once ("end of servlet service").
    #[default]
    EndOfRequest,
    /// Committed changes are kept on this node (reads see them) until
    /// [`crate::SessionManager::sync`] of a handle of their session manager sends them.
    /// Creation and invalidation are written at once; changes staged when the session moves to
    /// another node are lost (reported as [`crate::NodeEvent::StagedWritesLost`]).
    Manual,
    /// Committed changes are kept on this node and sent every interval of their session
    /// manager (and on its `sync`).
    TimeBased(Duration),
}

/// What a write sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WriteContents {
    /// Only the attributes that changed.
    #[default]
    Changed,
    /// Every attribute (a full replace), whatever changed.
    All,
}

/// How a write waits for the backups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckPolicy {
    /// The write completes once applied on this node; replication follows.
    Async,
    /// The write completes when `backups` backups (at most the live placed ones) hold it, or
    /// with [`crate::Replication::Indeterminate`] after the domain's request timeout.
    /// `timeout` bounds the caller's wait ([`crate::Error::Timeout`]).
    Sync {
        /// Backups that must acknowledge.
        backups: u32,
        /// How long the caller waits at most.
        timeout: Duration,
    },
}

impl Default for AckPolicy {
    fn default() -> Self {
        AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(10) }
    }
}

/// How the transport authenticates peers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TransportSecurity {
    /// Mutual TLS with the domain's certificates in this folder (`m2m certs init`): `ca.pem`,
    /// `<node>.pem`, `<node>.key`.
    CertsDir(PathBuf),
    /// Mutual TLS with PEM material already loaded.
    Pem(replication_core::transport::PemMaterial),
    /// No authentication and no encryption. Loopback demos and tests only.
    Insecure,
}

/// Where the domain configuration comes from.
#[derive(Clone, Debug)]
pub enum DomainSource {
    /// A domain file, parsed and validated at start.
    File(PathBuf),
    /// A configuration already parsed (it is validated at start).
    Config(DomainConfig),
}

impl From<DomainConfig> for DomainSource {
    fn from(c: DomainConfig) -> Self {
        DomainSource::Config(c)
    }
}

impl From<PathBuf> for DomainSource {
    fn from(p: PathBuf) -> Self {
        DomainSource::File(p)
    }
}

impl From<&Path> for DomainSource {
    fn from(p: &Path) -> Self {
        DomainSource::File(p.to_owned())
    }
}

impl From<&str> for DomainSource {
    fn from(p: &str) -> Self {
        DomainSource::File(PathBuf::from(p))
    }
}

impl DomainSource {
    /// Reads, parses and validates.
    pub fn load(self) -> Result<DomainConfig> {
        match self {
            DomainSource::File(path) => {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| Error::Io { what: format!("reading {origin}"), source })?;
                let (cfg, _) =
                    DomainConfig::load(&text, &origin).map_err(|e| Error::Config(e.to_string()))?;
                Ok(cfg)
            }
            DomainSource::Config(cfg) => {
                let report = replication_core::validate::validate(&cfg);
                if report.has_errors() {
                    return Err(Error::Config(replication_core::Error::Invalid(report).to_string()));
                }
                Ok(cfg)
            }
        }
    }
}

/// The session-manager settings.
#[derive(Clone)]
#[non_exhaustive]
pub struct SessionSettings {
    /// When changes are sent (default: end of request); a session manager may set its own
    /// ([`crate::ManagerSettings::write_frequency`]).
    pub write_frequency: WriteFrequency,
    /// What is sent (default: changed attributes).
    pub write_contents: WriteContents,
    /// How writes wait for backups (default: sync, 1 backup, 10 s).
    pub ack: AckPolicy,
    /// Inactivity after which a session expires (default 30 minutes).
    pub max_inactive: Duration,
    /// Called on every event, from the driver task: keep it short and non-blocking.
    pub metrics_hook: Option<MetricsHook>,
    /// Requests queued from handles to the driver at most (default 1024).
    pub command_capacity: usize,
    /// Events buffered per subscriber before it lags (default 1024).
    pub event_capacity: usize,
    /// Commands the driver takes per wakeup at most (default 64).
    pub batch: usize,
    /// How many times [`crate::SessionManager::update`] retries after a conflict (default 8).
    pub update_retries: u32,
    /// Tunables of the replication engine.
    pub core: replication_core::Settings,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            write_frequency: WriteFrequency::default(),
            write_contents: WriteContents::default(),
            ack: AckPolicy::default(),
            max_inactive: Duration::from_secs(30 * 60),
            metrics_hook: None,
            command_capacity: 1024,
            event_capacity: 1024,
            batch: 64,
            update_retries: 8,
            core: replication_core::Settings::default(),
        }
    }
}

impl std::fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("write_frequency", &self.write_frequency)
            .field("write_contents", &self.write_contents)
            .field("ack", &self.ack)
            .field("max_inactive", &self.max_inactive)
            .field("metrics_hook", &self.metrics_hook.as_ref().map(|_| "<fn>"))
            .field("command_capacity", &self.command_capacity)
            .field("event_capacity", &self.event_capacity)
            .field("batch", &self.batch)
            .field("update_retries", &self.update_retries)
            .field("core", &self.core)
            .finish()
    }
}

impl SessionSettings {
    pub(crate) fn check(&self) -> Result<()> {
        if self.command_capacity == 0 || self.event_capacity == 0 || self.batch == 0 {
            return Err(Error::Config(
                "command_capacity, event_capacity and batch must be at least 1".into(),
            ));
        }
        if let WriteFrequency::TimeBased(d) = self.write_frequency {
            if d.is_zero() {
                return Err(Error::Config("the time-based write interval must not be zero".into()));
            }
        }
        Ok(())
    }

    /// The core's acknowledgement mode for writes.
    pub(crate) fn core_ack(&self) -> replication_core::Ack {
        match self.ack {
            AckPolicy::Async => replication_core::Ack::Async,
            AckPolicy::Sync { backups, .. } => replication_core::Ack::Sync { backups },
        }
    }

    /// How long a caller waits for a write at most.
    pub(crate) fn write_wait(&self, domain: &DomainConfig) -> Duration {
        match self.ack {
            AckPolicy::Sync { timeout, .. } => timeout.max(Duration::from_millis(1)),
            AckPolicy::Async => request_wait(domain),
        }
    }
}

/// How long a caller waits for a read, fetch or other request at most: past the core's own
/// request timeout, which always answers first.
pub(crate) fn request_wait(domain: &DomainConfig) -> Duration {
    domain.request_timeout() * 2 + Duration::from_secs(1)
}
