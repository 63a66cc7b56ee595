//! Several session managers on one node: the handle of each, and the settings each may set.
//!
//! In WebSphere every web module has its own session manager, and one application server
//! hosts several modules. An m2m node hosts the anonymous manager (the handle
//! [`Builder::start`] returns without [`Builder::manager`], and today's admin paths) and every
//! manager its `[[node]]` entry declares:
//!
//! ```toml
//! [[node]]
//! name = "app1"
//! address = "10.0.0.1:7100"
//! managers = { cart = "both", profile = "both" }
//! ```
//!
//! Each manager has its own namespace of session ids: the same id in `cart` and `profile` is
//! two sessions, and invalidating or expiring one never touches the other. The managers of a
//! node share one engine, one set of links and one membership view (no connection or
//! heartbeat per manager); each session is placed, failed over and re-replicated on its own,
//! whatever its manager. How the engine keeps them apart: [`replication_core::scope`].
//!
//! Events ([`SessionManager::subscribe`]) are the node's, whatever the handle: they name a
//! session by its engine key, which [`replication_core::scope::ScopedId::parse`] splits into
//! the manager and the id. Metrics are the node's too, with counts per manager
//! ([`crate::Metrics::managers`]).
//!
//! Per manager, like WebSphere's per-module settings: write frequency, write contents,
//! synchronous or asynchronous acknowledgement, max inactive interval ([`ManagerSettings`]).
//! The rest of [`SessionSettings`] is the node's (one command queue serves every manager).
//!
//! Write frequency per manager: a write is sent at once or staged on this node as its
//! manager's frequency says; [`SessionManager::sync`] writes the staged changes of the
//! handle's manager only; each time-based manager flushes on its own interval (the node's one
//! flush timer is armed for the earliest due manager), and a flush asks for the manager's
//! acknowledgement. Tests: `session-api/tests/manager_write_frequency.rs`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), session_api::Error> {
//! use std::time::Duration;
//! use session_api::{AckPolicy, ManagerSettings, SessionManager, WriteFrequency};
//! let cart = SessionManager::builder("web.toml", "app1")
//!     .certs_dir("certs")
//!     .manager("cart")
//!     .manager_settings(
//!         "profile",
//!         ManagerSettings::default()
//!             .ack(AckPolicy::Async)
//!             .write_frequency(WriteFrequency::TimeBased(Duration::from_secs(10))),
//!     )
//!     .start()
//!     .await?;
//! let profile = cart.manager("profile")?; // the same node, another namespace
//! let s = cart.create_with_id("s1", Default::default()).await?;
//! assert!(profile.get(s.id()).await?.is_none());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use replication_core::{DomainConfig, NodeId};

use crate::blocking::BlockingSessionManager;
use crate::builder::Builder;
use crate::client::{Client, Inner};
use crate::config::{AckPolicy, SessionSettings, WriteContents, WriteFrequency};
use crate::error::{Error, Result};
use crate::manager::SessionManager;

/// What one session manager holds on a node ([`crate::Metrics::managers`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagerCounts {
    /// Live sessions this node owns.
    pub owned: usize,
    /// Live backup copies this node holds.
    pub backups: usize,
}

/// The counts of every manager with sessions on `node`.
pub(crate) fn counts(node: &replication_core::Node) -> BTreeMap<String, ManagerCounts> {
    node.manager_counts()
        .into_iter()
        .map(|(m, (owned, backups))| (m, ManagerCounts { owned, backups }))
        .collect()
}

/// The settings a session manager may set for itself; what it leaves unset is the node's
/// ([`SessionSettings`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManagerSettings {
    write_frequency: Option<WriteFrequency>,
    write_contents: Option<WriteContents>,
    ack: Option<AckPolicy>,
    max_inactive: Option<Duration>,
}

impl ManagerSettings {
    /// When this manager's changes are sent to the backups: at the end of each request, on
    /// [`SessionManager::sync`] of its handle, or every interval of its own (a zero interval
    /// is refused at start).
    pub fn write_frequency(mut self, f: WriteFrequency) -> Self {
        self.write_frequency = Some(f);
        self
    }

    /// What a write sends.
    pub fn write_contents(mut self, c: WriteContents) -> Self {
        self.write_contents = Some(c);
        self
    }

    /// How writes wait for backups.
    pub fn ack(mut self, a: AckPolicy) -> Self {
        self.ack = Some(a);
        self
    }

    /// Inactivity after which a session expires.
    pub fn max_inactive(mut self, d: Duration) -> Self {
        self.max_inactive = Some(d);
        self
    }

    /// The node's settings with these applied.
    fn apply(&self, node: &SessionSettings) -> SessionSettings {
        let mut s = node.clone();
        if let Some(f) = self.write_frequency {
            s.write_frequency = f;
        }
        if let Some(c) = self.write_contents {
            s.write_contents = c;
        }
        if let Some(a) = self.ack {
            s.ack = a;
        }
        if let Some(d) = self.max_inactive {
            s.max_inactive = d;
        }
        s
    }
}

/// The effective settings of every manager a node hosts: `None` is the anonymous manager.
pub(crate) type ManagerTable = BTreeMap<Option<String>, SessionSettings>;

/// What the builder was told about managers.
#[derive(Clone, Debug, Default)]
pub(crate) struct ManagerChoice {
    /// The manager of the handle `start` returns.
    pub(crate) handle: Option<String>,
    /// Settings per manager.
    pub(crate) settings: BTreeMap<String, ManagerSettings>,
}

impl ManagerChoice {
    /// The table of the managers `node` declares, checked: the handle's manager and every
    /// manager given settings must be declared, and each manager's settings valid.
    pub(crate) fn table(
        &self,
        cfg: &DomainConfig,
        node: &NodeId,
        base: &SessionSettings,
    ) -> Result<ManagerTable> {
        let declared = cfg.node(node).map(|n| n.managers.clone()).unwrap_or_default();
        let named = self.handle.iter().chain(self.settings.keys());
        if let Some(m) = named.into_iter().find(|m| !declared.contains_key(*m)) {
            return Err(undeclared(cfg, node, m));
        }
        let mut table = ManagerTable::new();
        table.insert(None, base.clone());
        for name in declared.keys() {
            let s = self.settings.get(name).map_or_else(|| base.clone(), |m| m.apply(base));
            s.check().map_err(|e| match e {
                Error::Config(why) => Error::Config(format!("session manager `{name}`: {why}")),
                other => other,
            })?;
            table.insert(Some(name.clone()), s);
        }
        Ok(table)
    }
}

fn undeclared(cfg: &DomainConfig, node: &NodeId, manager: &str) -> Error {
    let declared: Vec<&str> =
        cfg.node(node).map(|n| n.managers.keys().map(String::as_str).collect()).unwrap_or_default();
    let list = if declared.is_empty() { "none".to_owned() } else { declared.join(", ") };
    Error::Config(format!(
        "session manager `{manager}` is not declared for node `{node}` in domain `{}` (its [[node]] entry declares: {list}); add it to `managers = {{ ... }}`",
        cfg.domain.name
    ))
}

impl Builder {
    /// The handle [`Builder::start`] returns serves session manager `name`, which the node's
    /// `[[node]]` entry must declare (`managers = { name = "both" }`); start fails with
    /// [`Error::Config`] otherwise. Without it, the handle serves the anonymous manager.
    pub fn manager(mut self, name: &str) -> Self {
        self.managers.handle = Some(name.to_owned());
        self
    }

    /// Settings of session manager `name` (declared for this node, checked at start).
    pub fn manager_settings(mut self, name: &str, settings: ManagerSettings) -> Self {
        self.managers.settings.insert(name.to_owned(), settings);
        self
    }
}

impl Client {
    /// A client of the same node for manager `name` (`None`: the anonymous one).
    fn for_manager(&self, name: Option<&str>) -> Result<Client> {
        let key = name.map(str::to_owned);
        let Some(settings) = self.inner.managers.get(&key) else {
            let m = name.unwrap_or_default();
            return Err(undeclared(&self.inner.domain(), &self.inner.me, m));
        };
        let i = &self.inner;
        let inner = Inner {
            tx: i.tx.clone(),
            events: i.events.clone(),
            me: i.me.clone(),
            current: Arc::clone(&i.current),
            settings: settings.clone(),
            manager: key,
            managers: Arc::clone(&i.managers),
        };
        Ok(Client { inner: Arc::new(inner), blocking: self.blocking })
    }

    fn managers(&self) -> Vec<String> {
        self.inner.managers.keys().flatten().cloned().collect()
    }
}

impl SessionManager {
    /// The handle of session manager `name` of this node (its own namespace of session ids,
    /// the same engine and links). [`Error::Config`] when the node does not declare it.
    pub fn manager(&self, name: &str) -> Result<SessionManager> {
        Ok(SessionManager { client: self.client.for_manager(Some(name))? })
    }

    /// The handle of the anonymous session manager of this node.
    pub fn anonymous(&self) -> SessionManager {
        let client = self.client.for_manager(None).unwrap_or_else(|_| self.client.clone());
        SessionManager { client }
    }

    /// The session manager of this handle; `None` for the anonymous one.
    pub fn manager_name(&self) -> Option<&str> {
        self.client.inner.manager.as_deref()
    }

    /// The named session managers this node hosts (its `[[node]]` entry's `managers`).
    pub fn managers(&self) -> Vec<String> {
        self.client.managers()
    }
}

impl BlockingSessionManager {
    /// The blocking handle of session manager `name` of this node (see
    /// [`SessionManager::manager`]).
    pub fn manager(&self, name: &str) -> Result<BlockingSessionManager> {
        Ok(BlockingSessionManager { client: self.client.for_manager(Some(name))? })
    }

    /// The session manager of this handle; `None` for the anonymous one.
    pub fn manager_name(&self) -> Option<&str> {
        self.client.inner.manager.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a manager sets replaces the node's; what it leaves unset is the node's.
    #[test]
    fn manager_settings_apply_over_the_node_settings() {
        let node = SessionSettings::default();
        let every = Duration::from_millis(250);
        let m = ManagerSettings::default()
            .write_frequency(WriteFrequency::TimeBased(every))
            .write_contents(WriteContents::All)
            .ack(AckPolicy::Async)
            .max_inactive(Duration::from_secs(60));
        let s = m.apply(&node);
        assert_eq!(s.write_frequency, WriteFrequency::TimeBased(every));
        assert_eq!(s.write_contents, WriteContents::All);
        assert_eq!(s.ack, AckPolicy::Async);
        assert_eq!(s.max_inactive, Duration::from_secs(60));
        let s = ManagerSettings::default().apply(&node);
        assert_eq!(
            (s.write_frequency, s.write_contents, s.ack, s.max_inactive),
            (node.write_frequency, node.write_contents, node.ack, node.max_inactive)
        );
    }
}
