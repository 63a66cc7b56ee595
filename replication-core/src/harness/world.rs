//! What every world of engines is built from: the text of its domain, and an engine slot per
//! node (the engine while it runs, its incarnation, crash and restart at a virtual time).

use crate::{DomainConfig, Node, NodeId, Settings};
use std::fmt::Write as _;
use std::time::Instant;

/// The text of a test domain: its `[domain]` table, then one `[[node]]` per node at addresses
/// 127.0.0.1:7000 on.
#[derive(Clone, Debug)]
pub struct DomainText {
    domain: String,
    nodes: String,
    count: u16,
}

impl DomainText {
    /// A domain `name` keeping `replicas` backups per session, without nodes yet.
    pub fn new(name: &str, replicas: u32) -> Self {
        Self {
            domain: format!("[domain]\nname = \"{name}\"\nreplicas = {replicas}\n"),
            nodes: String::new(),
            count: 0,
        }
    }

    /// Sets `key` of the `[domain]` table to `value` (TOML, e.g. `50` or `"\"client-server\""`).
    pub fn set(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        let _ = writeln!(self.domain, "{key} = {value}");
        self
    }

    /// A node `name`, in `mode` (`"client"`, `"server"`, `"both"`) or the default one.
    pub fn node(mut self, name: &str, mode: Option<&str>) -> Self {
        let _ = write!(
            self.nodes,
            "[[node]]\nname = \"{name}\"\naddress = \"127.0.0.1:{}\"\n",
            7000 + self.count
        );
        if let Some(mode) = mode {
            let _ = writeln!(self.nodes, "mode = \"{mode}\"");
        }
        self.count += 1;
        self
    }

    /// The whole text.
    pub fn text(&self) -> String {
        format!("{}{}", self.domain, self.nodes)
    }

    /// The domain, parsed and validated (`source` names it in errors); panics if it is not
    /// valid, as a test's own domain must be.
    pub fn parse(&self, source: &str) -> DomainConfig {
        DomainConfig::parse(&self.text(), source).expect("the test domain parses")
    }
}

/// One node of a world: its engine while it runs, and its incarnation (one more at every
/// restart, which starts from empty state as a restarted process does).
#[derive(Debug)]
pub struct Engine {
    /// The engine, `None` while the node is down.
    pub node: Option<Node>,
    /// The incarnation of the engine running, or of the last one.
    pub incarnation: u64,
}

impl Engine {
    /// Incarnation 1 of node `name` of `cfg`, started at `at`.
    pub fn start(cfg: &DomainConfig, name: &NodeId, settings: &Settings, at: Instant) -> Self {
        let node =
            Node::new(cfg.clone(), name.clone(), 1, settings.clone(), at).expect("a member of the domain");
        Self { node: Some(node), incarnation: 1 }
    }

    /// Whether the engine runs.
    pub fn is_up(&self) -> bool {
        self.node.is_some()
    }

    /// The node crashes: its engine and everything it held are gone.
    pub fn crash(&mut self) {
        self.node = None;
    }

    /// The node restarts at `at` as the next incarnation of `name`, with empty state.
    pub fn restart(&mut self, cfg: &DomainConfig, name: &NodeId, settings: &Settings, at: Instant) {
        self.incarnation += 1;
        let node = Node::new(cfg.clone(), name.clone(), self.incarnation, settings.clone(), at)
            .expect("a member of the domain");
        self.node = Some(node);
    }
}
