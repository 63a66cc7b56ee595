//! The domain configuration model: what a domain file says, parsed but not yet validated.
//!
//! The TOML schema is a public contract (operators and the `m2m` CLI write it):
//!
//! ```toml
//! [domain]
//! name = "web"                 # required, non-empty
//! topology = "peer-to-peer"    # optional: "peer-to-peer" | "client-server"; inferred if absent
//! replicas = 1                 # optional, default 1: an integer >= 1, or "entire-domain"
//! request_timeout_ms = 5000    # optional; also heartbeat_interval_ms, failure_timeout_ms
//! closed_link_detection = true # optional: fail a peer whose link closed and whose address
//!                              # refuses connections at once (TCP; default true)
//! transport = "tcp"            # optional: "tcp" | "quic"
//! max_session_bytes = 4194304  # optional, default 4 MiB: the largest a session may grow
//!
//! [[node]]
//! name = "app1"                # unique in the domain
//! address = "127.0.0.1:7101"   # replication listener, unique
//! admin = "127.0.0.1:8101"     # optional admin listener
//! http = "127.0.0.1:9101"      # optional: the application's HTTP listener (load balancers)
//! mode = "both"                # optional, default "both": "client" | "server" | "both"
//! managers = { cart = "both" } # optional: session managers on this node, each with a mode
//! ```
//!
//! [`DomainConfig::parse`] turns text into this model and reports syntax and schema errors with
//! their line and column; [`crate::validate`] checks the rules that span several fields.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The name of a node, unique in its domain. Cheap to clone.
///
/// One pointer (an `Arc<String>`, not a two-word `Arc<str>`): it is in every
/// [`Epoch`](crate::message::Epoch), and the engine keeps two epochs per session.
///
/// Compared by name; two clones of one id compare without reading the name. Decoding shares
/// the allocation of a recently decoded id of the same name (each thread keeps the last eight
/// names it decoded): every message carries epochs, each naming a node, and a batch of
/// thousands of claims names the same two nodes thousands of times.
#[derive(Clone, Eq, Serialize)]
#[serde(transparent)]
pub struct NodeId(Arc<String>);

/// Node names each thread keeps to share decoded ids (see [`NodeId`]).
const DECODED_NAMES: usize = 8;

thread_local! {
    /// The last node ids decoded on this thread, newest first.
    static DECODED: std::cell::RefCell<std::collections::VecDeque<NodeId>> =
        std::cell::RefCell::new(std::collections::VecDeque::with_capacity(DECODED_NAMES));
}

impl NodeId {
    /// A node id from its name.
    pub fn new(name: &str) -> Self {
        NodeId(Arc::new(name.to_owned()))
    }

    /// `new`, sharing the allocation of a recently decoded id of the same name.
    fn decoded(name: &str) -> Self {
        DECODED
            .try_with(|cache| {
                let Ok(mut cache) = cache.try_borrow_mut() else { return NodeId::new(name) };
                if let Some(n) = cache.iter().find(|n| n.as_str() == name) {
                    return n.clone();
                }
                let n = NodeId::new(name);
                if cache.len() >= DECODED_NAMES {
                    cache.pop_back();
                }
                cache.push_front(n.clone());
                n
            })
            .unwrap_or_else(|_| NodeId::new(name))
    }

    /// The node's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for NodeId {
    fn eq(&self, other: &NodeId) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.as_str().hash(h);
    }
}

impl Ord for NodeId {
    fn cmp(&self, other: &NodeId) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.as_str().cmp(other.0.as_str())
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &NodeId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NodeId, E> {
                Ok(NodeId::decoded(v))
            }
        }
        d.deserialize_str(Name)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId::new(s)
    }
}

/// How a node's session managers take part in a domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Sends copies of the sessions it owns; stores no backups.
    Client,
    /// Stores backups of other nodes' sessions; owns no sessions of its own.
    Server,
    /// Both sends copies of its own sessions and stores backups (the default).
    #[default]
    Both,
}

impl Mode {
    /// The name used in domain files.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Client => "client",
            Mode::Server => "server",
            Mode::Both => "both",
        }
    }

    /// Whether a node in this mode owns sessions (serves requests and sends copies).
    pub fn owns_sessions(self) -> bool {
        matches!(self, Mode::Client | Mode::Both)
    }

    /// Whether a node in this mode stores backups of other nodes' sessions.
    pub fn stores_backups(self) -> bool {
        matches!(self, Mode::Server | Mode::Both)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the members of a domain relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Every member is `both`: each owns sessions and backs up the others'.
    PeerToPeer,
    /// Members are `client` (own sessions) or `server` (store backups), never `both`.
    ClientServer,
}

impl Topology {
    /// The name used in domain files.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::PeerToPeer => "peer-to-peer",
            Topology::ClientServer => "client-server",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many backup copies each session has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Replicas {
    /// This many backups (at most the number of eligible nodes).
    Count(u32),
    /// A backup on every eligible node.
    EntireDomain,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas::Count(1)
    }
}

impl Replicas {
    /// How many backups to place when `eligible` nodes can hold them.
    pub fn wanted(self, eligible: usize) -> usize {
        match self {
            Replicas::Count(n) => (n as usize).min(eligible),
            Replicas::EntireDomain => eligible,
        }
    }
}

impl fmt::Display for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replicas::Count(n) => write!(f, "{n}"),
            Replicas::EntireDomain => f.write_str("entire-domain"),
        }
    }
}

impl Serialize for Replicas {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Replicas::Count(n) => s.serialize_u32(*n),
            Replicas::EntireDomain => s.serialize_str("entire-domain"),
        }
    }
}

impl<'de> Deserialize<'de> for Replicas {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Replicas;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number of replicas, or \"entire-domain\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Replicas, E> {
                // Zero and negative counts parse, so that validation can name the rule.
                Ok(Replicas::Count(u32::try_from(v.max(0)).unwrap_or(u32::MAX)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Replicas, E> {
                Ok(Replicas::Count(u32::try_from(v).unwrap_or(u32::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Replicas, E> {
                if v == "entire-domain" {
                    Ok(Replicas::EntireDomain)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Which carrier the nodes of a domain speak. Every node of a domain uses the same one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// TLS over TCP (the default).
    #[default]
    Tcp,
    /// QUIC (quinn).
    Quic,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Quic => "quic",
        })
    }
}

/// A `host:port` network address, checked when the file is parsed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Address(String);

impl Address {
    /// Checks that `s` is `host:port` (or `[ipv6]:port`) with a non-empty host and a port
    /// from 1 to 65535.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.parse::<std::net::SocketAddr>().is_ok() {
            return Ok(Address(s.to_owned()));
        }
        let bad = || format!("`{s}` is not an address: expected host:port, e.g. \"127.0.0.1:7101\"");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port_ok = port.parse::<u16>().map(|p| p != 0).unwrap_or(false);
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if port_ok && host_ok { Ok(Address(s.to_owned())) } else { Err(bad()) }
    }

    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host (without the brackets of an IPv6 literal) and the port.
    pub fn host_port(&self) -> (&str, u16) {
        if let Ok(sa) = self.0.parse::<std::net::SocketAddr>() {
            let host = self.0.rsplit_once(':').map_or("", |(h, _)| h);
            return (host.trim_start_matches('[').trim_end_matches(']'), sa.port());
        }
        let (host, port) = self.0.rsplit_once(':').unwrap_or((&self.0, "0"));
        (host, port.parse().unwrap_or(0))
    }

    /// One spelling per socket: an IP literal as the standard library prints it
    /// (`127.0.0.1:07101` is `127.0.0.1:7101`, `[0:0::1]:1` is `[::1]:1`), a host name in
    /// lower case (DNS ignores case) with its port.
    pub fn canonical(&self) -> String {
        match self.0.parse::<std::net::SocketAddr>() {
            Ok(sa) => sa.to_string(),
            Err(_) => {
                let (host, port) = self.host_port();
                format!("{}:{port}", host.to_ascii_lowercase())
            }
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Address::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The `[domain]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSection {
    /// The domain's name; nodes of other domains are refused.
    pub name: String,
    /// The topology as written; `None` means inferred from the modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    /// How many backups each session has.
    #[serde(default)]
    pub replicas: Replicas,
    /// How long a synchronous write or a fetch waits before it is reported as not acknowledged.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How often each node tells its peers it is alive.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// How long without hearing from a peer before it is considered failed.
    #[serde(default = "default_failure_timeout_ms")]
    pub failure_timeout_ms: u64,
    /// Whether a peer whose link closes without a leave, and whose address then refuses (or
    /// resets) a new connection, is failed at once (its process exited: the operating system closes a
    /// crashed process's sockets) rather than at the failure timeout. TCP only; default on.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub closed_link_detection: bool,
    /// The carrier every node of the domain speaks.
    #[serde(default)]
    pub transport: TransportKind,
    /// The largest a session may grow: a write that would make its encoded attributes
    /// ([`Attributes::encoded_size`](crate::Attributes::encoded_size)) larger is refused
    /// before anything is applied. Every full copy of a session must fit one frame of the
    /// transport, so that it can always be fetched, re-replicated and handed over (rule
    /// `max-session-bytes`).
    #[serde(default = "default_max_session_bytes", skip_serializing_if = "is_default_max_session_bytes")]
    pub max_session_bytes: u64,
}

fn default_true() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
/// The default [`DomainSection::max_session_bytes`]: 4 MiB, a quarter of the frame limit.
pub const DEFAULT_MAX_SESSION_BYTES: u64 = 4 << 20;

/// The highest [`DomainSection::max_session_bytes`]: the default frame limit (16 MiB) less
/// 1 MiB for the envelope of a full copy (session id, epoch, version, expiry).
pub const MAX_MAX_SESSION_BYTES: u64 = 15 << 20;

fn default_max_session_bytes() -> u64 {
    DEFAULT_MAX_SESSION_BYTES
}

fn is_default_max_session_bytes(n: &u64) -> bool {
    *n == DEFAULT_MAX_SESSION_BYTES
}

fn default_request_timeout_ms() -> u64 {
    5000
}
fn default_heartbeat_interval_ms() -> u64 {
    200
}
fn default_failure_timeout_ms() -> u64 {
    1000
}

/// One `[[node]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name of the node.
    pub name: NodeId,
    /// The replication listener.
    pub address: Address,
    /// The optional admin (HTTP) listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Address>,
    /// The optional address of the application's own HTTP listener on this node, where a load
    /// balancer sends the requests of the sessions this node owns (`m2m lb-config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Address>,
    /// The node's mode as written; `None` means not written (default `both`, or the managers').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Session managers on this node that join the domain, each with its mode.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub managers: BTreeMap<String, Mode>,
}

impl NodeConfig {
    /// The node's effective mode: the mode written, else the mode of its managers when they
    /// agree, else `both`. (Disagreeing managers are a validation error.)
    pub fn mode(&self) -> Mode {
        if let Some(m) = self.mode {
            return m;
        }
        let mut modes = self.managers.values();
        match modes.next() {
            Some(&first) if modes.all(|&m| m == first) => first,
            _ => Mode::Both,
        }
    }

    /// Every session-manager mode this node declares: its managers', or the node's own mode
    /// when it lists none.
    pub fn manager_modes(&self) -> Vec<(String, Mode)> {
        if self.managers.is_empty() {
            vec![("default".to_owned(), self.mode.unwrap_or_default())]
        } else {
            self.managers.iter().map(|(k, &m)| (k.clone(), m)).collect()
        }
    }
}

/// The domain file a running transport checks against, replaced when a reload adds nodes
/// (`Transport::add_peers`): readers take the current file ([`SharedDomain::load`]), each
/// clone sees every replacement ([`SharedDomain::store`]).
#[derive(Clone, Debug)]
pub struct SharedDomain(Arc<std::sync::RwLock<Arc<DomainConfig>>>);

impl SharedDomain {
    /// Starts with `cfg`.
    pub fn new(cfg: Arc<DomainConfig>) -> Self {
        SharedDomain(Arc::new(std::sync::RwLock::new(cfg)))
    }

    /// The current file.
    pub fn load(&self) -> Arc<DomainConfig> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the file.
    pub fn store(&self, cfg: Arc<DomainConfig>) {
        match self.0.write() {
            Ok(mut g) => *g = cfg,
            Err(poisoned) => *poisoned.into_inner() = cfg,
        }
    }
}

/// A whole domain file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// The `[domain]` table.
    pub domain: DomainSection,
    /// The `[[node]]` entries, in file order.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeConfig>,
}

impl DomainConfig {
    /// The node with this name.
    pub fn node(&self, name: &NodeId) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| &n.name == name)
    }

    /// The topology as written, or inferred from the modes: peer-to-peer when every session
    /// manager is `both`, client-server otherwise.
    pub fn topology(&self) -> Topology {
        self.domain.topology.unwrap_or_else(|| {
            if self.nodes.iter().flat_map(NodeConfig::manager_modes).all(|(_, m)| m == Mode::Both) {
                Topology::PeerToPeer
            } else {
                Topology::ClientServer
            }
        })
    }

    /// Heartbeat period.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.domain.heartbeat_interval_ms)
    }

    /// Silence after which a peer is considered failed.
    pub fn failure_timeout(&self) -> Duration {
        Duration::from_millis(self.domain.failure_timeout_ms)
    }

    /// How long a synchronous write or fetch waits.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.domain.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_node_ids_share_recent_names_and_compare_by_name() {
        let enc = |n: &NodeId| rmp_serde::to_vec(n).expect("encodes");
        let de = |b: &[u8]| rmp_serde::from_slice::<NodeId>(b).expect("decodes");
        let a1 = de(&enc(&NodeId::new("app1")));
        let a2 = de(&enc(&NodeId::new("app1")));
        assert!(Arc::ptr_eq(&a1.0, &a2.0), "the second decode shares the first's name");
        // Enough other names push it out of the cache: a new allocation, still equal.
        for i in 0..DECODED_NAMES {
            de(&enc(&NodeId::new(&format!("n{i}"))));
        }
        let a3 = de(&enc(&NodeId::new("app1")));
        assert!(!Arc::ptr_eq(&a1.0, &a3.0));
        assert_eq!(a1, a3);
        assert_eq!(a1.cmp(&a3), std::cmp::Ordering::Equal);
        let b = NodeId::new("app2");
        assert!(a1 < b && b > a3 && a1 != b);
        let mut h = std::collections::HashSet::new();
        h.insert(a1.clone());
        assert!(h.contains(&a3) && !h.contains(&b));
    }

    #[test]
    fn address_forms() {
        for ok in ["127.0.0.1:7101", "[::1]:7101", "app-1.example:80", "localhost:1"] {
            assert!(Address::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ":80", "host", "host:", "host:70000", "a..b:1", "h st:1"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }
}
