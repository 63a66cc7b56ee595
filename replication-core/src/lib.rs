//! The sans-IO core of m2m, memory-to-memory session replication.
//!
//! By default this crate has no sockets, no threads, no async runtime and no clock: every
//! call that depends on time takes `now`. It holds
//! - the domain configuration model ([`config`]), its rules ([`validate`]) and what may change
//!   while a domain runs ([`change`]),
//! - placement of session copies on nodes ([`placement`]),
//! - the messages nodes exchange ([`message`]) and the contract transports implement
//!   ([`transport`]), and the codec they share ([`wire`]);
//! - the replication engine of one node ([`node::Node`], with its [`api`] types): feed it
//!   inputs, then drain [`Node::poll_output`] until `None` after every call (see [`node`]);
//! - with the off-by-default cargo feature `tls`: domain certificates and mutual-TLS configs
//!   (`tls`);
//! - with the off-by-default cargo feature `carrier`: what the tokio-based transports share
//!   (`carrier`: the Hello exchange over any stream, the per-peer dial task, the accept loop),
//!   which opens no socket itself; and with `conformance`, the suite every transport passes.
//!
//! ```
//! use replication_core::{DomainConfig, validate::rule};
//! let text = r#"
//!     [domain]
//!     name = "web"
//!     topology = "client-server"
//!     [[node]]
//!     name = "app1"
//!     address = "127.0.0.1:7101"
//!     mode = "both"
//! "#;
//! let cfg = DomainConfig::parse(text, "web.toml").expect("well-formed");
//! let report = replication_core::validate::validate(&cfg);
//! assert!(report.codes().contains(rule::CS_FORBIDS_BOTH));
//! assert!(report.codes().contains(rule::CS_NEEDS_SERVER));
//! ```

pub mod api;
pub mod attributes;
#[cfg(feature = "carrier")]
pub mod carrier;
pub mod change;
pub mod config;
pub mod error;
#[cfg(any(test, feature = "harness"))]
pub mod harness;
mod load;
pub mod message;
pub mod node;
pub mod placement;
pub mod scope;
mod session_key;
mod slim;
mod stamp;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
pub mod validate;
pub mod wire;

pub use api::{
    Ack, Command, DomainView, Event, Input, NodeDomain, Outcome, Output, PeerView, RequestId, Role,
    SessionView, Settings, Stats,
};
pub use config::{DomainConfig, Mode, NodeId, Replicas, Topology, TransportKind};
pub use error::Error;
pub use message::{Attributes, Change, Echo, Epoch, Message, PROTOCOL_VERSION, Version};
pub use node::Node;
