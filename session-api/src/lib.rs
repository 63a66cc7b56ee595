//! `session-api`: the crate applications embed to keep HTTP sessions in memory, replicated to
//! backup nodes of a replication domain, with hot failover (modelled on WebSphere's
//! memory-to-memory Data Replication Service).
//!
//! A [`SessionManager`] runs one node of a domain: a driver task owns the replication engine
//! ([`replication_core::Node`]) and the transport (TLS over TCP with the default cargo feature
//! `tcp`, QUIC with `quic`; the domain file's `transport` picks one at run time). Sessions live
//! on their owner node; each write is sent to the backups the placement chooses. A request for
//! a session this node does not hold fetches it and makes this node the owner; when an owner
//! fails, its failover target takes its sessions over.
//!
//! - Ids carry owner and failover target ([`id`]), and [`id::route`] tells a router where to
//!   send a request.
//! - Writes are checked against the version they were read at: a stale write is an
//!   [`Error::Conflict`], never a silent last-writer-wins; [`SessionManager::update`] retries.
//! - Write frequency (end of request, manual, time-based), write contents (changed or all) and
//!   acknowledgement (async or sync with a number of backups) follow WebSphere's settings.
//! - [`BlockingSessionManager`] serves plain threads; the `tower` feature provides a
//!   `tower_sessions::SessionStore` (see `store`) and the route cookie that keeps a load
//!   balancer's affinity on each session's owner (see `route_cookie`).
//! - [`SessionManager::metrics`] and [`SessionManager::subscribe`] expose what happens.
//!
//! ```no_run
//! use std::time::Duration;
//! use session_api::{AckPolicy, SessionManager};
//!
//! # async fn demo() -> Result<(), session_api::Error> {
//! let sessions = SessionManager::builder("web.toml", "app1")
//!     .certs_dir("certs") // or .insecure() for loopback demos
//!     .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) })
//!     .start()
//!     .await?;
//!
//! // Request 1: create a session; its id names this node and its failover target.
//! let mut s = sessions.create().await?;
//! s.set("user", "alice")?;
//! sessions.commit(&mut s).await?;
//!
//! // Request 2 (on any node of the domain): read, change, write back.
//! let (count, _) = sessions
//!     .update(s.id(), |s| {
//!         let n: u32 = s.get("visits")?.unwrap_or(0) + 1;
//!         s.set("visits", &n)?;
//!         Ok(n)
//!     })
//!     .await?;
//! assert_eq!(count, 1);
//!
//! sessions.shutdown().await?; // hands owned sessions to their backups
//! # Ok(()) }
//! ```

#[cfg(feature = "actix")]
pub mod actix;
mod blocking;
mod builder;
pub mod carrier;
mod client;
pub mod config;
mod driver;
pub mod error;
pub mod id;
mod manager;
pub mod managers;
pub mod metrics;
mod report;
#[cfg(feature = "tower")]
pub mod route_cookie;
mod session;
#[cfg(feature = "tower")]
pub mod store;
#[cfg(any(feature = "tower", feature = "actix"))]
mod web_store;

pub use blocking::BlockingSessionManager;
pub use builder::Builder;
pub use config::{
    AckPolicy, DomainSource, SessionSettings, TransportSecurity, WriteContents, WriteFrequency,
};
pub use driver::SyncReport;
pub use error::{Error, Result};
pub use manager::SessionManager;
pub use managers::{ManagerCounts, ManagerSettings};
pub use metrics::{Metrics, MetricsHook, NodeEvent};
pub use report::{Commit, LeaveReport, Replication};
pub use session::Session;

pub use replication_core::{Attributes, DomainConfig, NodeId, SessionView};
