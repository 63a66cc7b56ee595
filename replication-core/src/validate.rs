//! The rules a domain must follow, checked all at once.
//!
//! [`validate`] returns a [`Report`] with every violation: a stable rule code (see [`rule`]),
//! whether it is an error or a warning, a sentence a person understands, and the members
//! involved. A domain with no errors can run; warnings say where it will work less well than
//! the operator may think.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::config::{Address, DomainConfig, MAX_MAX_SESSION_BYTES, Mode, Replicas, Topology};

/// The stable rule codes. Scripts and the CLI's JSON output rely on them: never rename one.
pub mod rule {
    /// The domain name is empty.
    pub const DOMAIN_NAME: &str = "domain-name";
    /// The domain lists no node.
    pub const NO_NODES: &str = "no-nodes";
    /// `replicas` is below 1.
    pub const REPLICAS_MIN: &str = "replicas-min";
    /// A node or domain name that is not 1 to 63 letters, digits or inner hyphens (names go
    /// into certificate names and session ids).
    pub const NAME_CHARS: &str = "name-chars";
    /// Two nodes share a name.
    pub const DUPLICATE_NAME: &str = "duplicate-node-name";
    /// Two node names differ only in case (`app1`, `APP1`): certificate names and DNS ignore
    /// case, so neither node could prove which one it is.
    pub const NAME_CASE: &str = "names-equal-ignoring-case";
    /// Two listeners (replication, admin or application HTTP) share an address, as written or once parsed
    /// (`127.0.0.1:07101` is `127.0.0.1:7101`, `[0:0::1]:1` is `[::1]:1`, host names ignore case).
    pub const DUPLICATE_ADDRESS: &str = "duplicate-address";
    /// Warning: two listeners have the same port on hosts that resolve to one address
    /// ([`validate_resolved`](super::validate_resolved)): on one machine they cannot both listen.
    pub const SAME_RESOLVED_ADDRESS: &str = "same-resolved-address";
    /// Peer-to-peer topology with a session manager that is not `both`.
    pub const P2P_REQUIRES_BOTH: &str = "peer-to-peer-requires-both";
    /// Client-server topology with a session manager that is `both`.
    pub const CS_FORBIDS_BOTH: &str = "client-server-forbids-both";
    /// No topology written, and `both` is mixed with `client` or `server`.
    pub const MIXED_BOTH: &str = "both-mixed-with-client-server";
    /// Client-server topology without any `server` to hold backups.
    pub const CS_NEEDS_SERVER: &str = "client-server-needs-server";
    /// The session managers of one node have different modes.
    pub const NODE_MODES_DIFFER: &str = "node-modes-differ";
    /// `max_session_bytes` below 1 KiB, or so large that a full copy of a session would not
    /// fit one frame of the transport.
    pub const MAX_SESSION_BYTES: &str = "max-session-bytes";
    /// Timings that cannot work (zero, or failure timeout not above the heartbeat interval).
    pub const TIMING: &str = "timing";
    /// Warning: client-server topology without any `client`: no session is ever replicated.
    pub const CS_NO_CLIENT: &str = "client-server-no-client";
    /// Warning: fewer eligible backup holders than `replicas`.
    pub const FEWER_HOLDERS: &str = "fewer-backup-holders";
    /// Warning: a two-node peer-to-peer domain; one failure leaves no backup.
    pub const TWO_NODE_P2P: &str = "two-node-peer-to-peer";
}

/// How serious a violation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The domain cannot run.
    Error,
    /// The domain runs, but not as well as the operator may think.
    Warning,
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The stable rule code, one of [`rule`].
    pub code: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// A sentence a person understands.
    pub message: String,
    /// The members involved: node names, or `node/manager` for a session manager.
    pub members: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}[{}]: {}", self.code, self.message)?;
        if !self.members.is_empty() {
            write!(f, " (members: {})", self.members.join(", "))?;
        }
        Ok(())
    }
}

/// Every violation of a domain, errors first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The violations, errors before warnings, each group in the order found.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Whether any violation is an error.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| v.severity == Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| v.severity == Severity::Warning)
    }

    /// The distinct rule codes broken, sorted.
    pub fn codes(&self) -> BTreeSet<&'static str> {
        self.violations.iter().map(|v| v.code).collect()
    }

    fn push(&mut self, severity: Severity, code: &'static str, message: String, members: Vec<String>) {
        self.violations.push(Violation { code, severity, message, members });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for v in &self.violations {
            writeln!(f, "{v}")?;
        }
        Ok(())
    }
}

/// Checks every rule of `cfg` and reports all violations.
pub fn validate(cfg: &DomainConfig) -> Report {
    let mut r = Report::default();
    let e = Severity::Error;

    if cfg.domain.name.trim().is_empty() {
        r.push(e, rule::DOMAIN_NAME, "the domain name is empty; give [domain] a name".into(), vec![]);
    }
    if cfg.nodes.is_empty() {
        r.push(e, rule::NO_NODES, "the domain lists no [[node]]".into(), vec![]);
    }
    if cfg.domain.replicas == Replicas::Count(0) {
        r.push(e, rule::REPLICAS_MIN, "replicas must be at least 1 (or \"entire-domain\")".into(), vec![]);
    }
    check_names(cfg, &mut r);
    check_timing(cfg, &mut r);
    check_session_size(cfg, &mut r);
    check_unique(cfg, &mut r);

    // Modes, per session manager.
    let managers: Vec<(String, Mode)> = cfg
        .nodes
        .iter()
        .flat_map(|n| n.manager_modes().into_iter().map(move |(m, mode)| (format!("{}/{}", n.name, m), mode)))
        .collect();
    let with = |pred: fn(Mode) -> bool| -> Vec<String> {
        managers.iter().filter(|(_, m)| pred(*m)).map(|(n, _)| n.clone()).collect()
    };
    let both = with(|m| m == Mode::Both);
    let clients = with(|m| m == Mode::Client);
    let servers = with(|m| m == Mode::Server);

    for n in &cfg.nodes {
        let mut modes: BTreeMap<Mode, Vec<String>> = BTreeMap::new();
        if let (Some(m), false) = (n.mode, n.managers.is_empty()) {
            modes.entry(m).or_default().push(format!("{} (node mode)", n.name));
        }
        for (k, m) in &n.managers {
            modes.entry(*m).or_default().push(format!("{}/{k}", n.name));
        }
        if modes.len() > 1 {
            let list = modes
                .iter()
                .map(|(m, who)| format!("{} is {m}", who.join(", ")))
                .collect::<Vec<_>>()
                .join("; ");
            r.push(
                e,
                rule::NODE_MODES_DIFFER,
                format!(
                    "all session managers of node {} must have the same mode in one domain: {list}",
                    n.name
                ),
                modes.into_values().flatten().collect(),
            );
        }
    }

    let topology = cfg.topology();
    match cfg.domain.topology {
        Some(Topology::PeerToPeer) => {
            let not_both: Vec<String> = clients.iter().chain(&servers).cloned().collect();
            if !not_both.is_empty() {
                r.push(
                    e,
                    rule::P2P_REQUIRES_BOTH,
                    "in a peer-to-peer domain every session manager must be `both`; these are client or server only".into(),
                    not_both,
                );
            }
        }
        Some(Topology::ClientServer) => {
            if !both.is_empty() {
                r.push(
                    e,
                    rule::CS_FORBIDS_BOTH,
                    "in a client-server domain every session manager must be `client` or `server`, never `both`".into(),
                    both.clone(),
                );
            }
        }
        None => {
            let mixed = !both.is_empty() && (!clients.is_empty() || !servers.is_empty());
            if mixed {
                let mut members = both.clone();
                members.extend(clients.iter().chain(&servers).cloned());
                r.push(
                    e,
                    rule::MIXED_BOTH,
                    "`both` cannot share a domain with `client` or `server`: make every manager `both` (peer-to-peer) or every one `client` or `server` (client-server)".into(),
                    members,
                );
            }
        }
    }
    if topology == Topology::ClientServer && !cfg.nodes.is_empty() && servers.is_empty() {
        r.push(
            e,
            rule::CS_NEEDS_SERVER,
            "a client-server domain needs at least one `server` to hold backups".into(),
            vec![],
        );
    }

    // Warnings. Capacity warnings are left out while the modes themselves are wrong: fixing
    // the modes changes who can hold backups.
    let w = Severity::Warning;
    let modes_wrong = r.violations.iter().any(|v| {
        [rule::P2P_REQUIRES_BOTH, rule::CS_FORBIDS_BOTH, rule::MIXED_BOTH, rule::NODE_MODES_DIFFER]
            .contains(&v.code)
    });
    if topology == Topology::ClientServer && clients.is_empty() && !servers.is_empty() {
        r.push(
            w,
            rule::CS_NO_CLIENT,
            "the client-server domain has no `client`: no node owns sessions, so nothing is replicated"
                .into(),
            vec![],
        );
    }
    if let Replicas::Count(n) = cfg.domain.replicas {
        let n = n as usize;
        let holders: Vec<String> = cfg
            .nodes
            .iter()
            .filter(|nd| match topology {
                Topology::PeerToPeer => nd.mode() == Mode::Both,
                Topology::ClientServer => nd.mode() == Mode::Server,
            })
            .map(|nd| nd.name.to_string())
            .collect();
        // An owner never holds its own backup: in peer-to-peer one holder is the owner.
        let available = match topology {
            Topology::PeerToPeer => holders.len().saturating_sub(1),
            Topology::ClientServer => holders.len(),
        };
        if n > available && !modes_wrong && !holders.is_empty() {
            r.push(
                w,
                rule::FEWER_HOLDERS,
                format!(
                    "replicas = {n}, but only {available} node(s) can hold a backup of any one session, so each session will have {available} backup(s) ({} copies in all, counting the owner's)",
                    available + 1
                ),
                holders,
            );
        }
    }
    if topology == Topology::PeerToPeer && cfg.nodes.len() == 2 {
        r.push(
            w,
            rule::TWO_NODE_P2P,
            "a two-node peer-to-peer domain: after one node fails the survivor owns every session with no backup until the other returns".into(),
            cfg.nodes.iter().map(|n| n.name.to_string()).collect(),
        );
    }
    r.violations.sort_by_key(|v| v.severity);
    r
}

/// Whether `name` is a DNS label: 1 to 63 ASCII letters, digits and hyphens, no hyphen at
/// either end. Node and domain names appear in certificate names (`node.domain.m2m`) and in
/// session ids, so they must be.
pub fn is_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn check_names(cfg: &DomainConfig, r: &mut Report) {
    let name = cfg.domain.name.as_str();
    if !name.trim().is_empty() && !is_label(name) {
        r.push(
            Severity::Error,
            rule::NAME_CHARS,
            format!("domain name `{name}` must be 1 to 63 letters, digits or inner hyphens"),
            vec![],
        );
    }
    let bad: BTreeSet<&str> = cfg.nodes.iter().map(|n| n.name.as_str()).filter(|n| !is_label(n)).collect();
    if !bad.is_empty() {
        r.push(
            Severity::Error,
            rule::NAME_CHARS,
            "node names must be 1 to 63 letters, digits or inner hyphens (they appear in certificates and session ids)".into(),
            bad.into_iter().map(str::to_owned).collect(),
        );
    }
    let bad: BTreeSet<String> = cfg
        .nodes
        .iter()
        .flat_map(|n| n.managers.keys().filter(|m| !is_label(m)).map(move |m| format!("{}/{m}", n.name)))
        .collect();
    if !bad.is_empty() {
        r.push(
            Severity::Error,
            rule::NAME_CHARS,
            "session manager names must be 1 to 63 letters, digits or inner hyphens (they scope session ids on the wire and in admin paths)".into(),
            bad.into_iter().collect(),
        );
    }
}

fn check_session_size(cfg: &DomainConfig, r: &mut Report) {
    let n = cfg.domain.max_session_bytes;
    if !(1024..=MAX_MAX_SESSION_BYTES).contains(&n) {
        r.push(
            Severity::Error,
            rule::MAX_SESSION_BYTES,
            format!(
                "max_session_bytes ({n}) must be from 1024 to {MAX_MAX_SESSION_BYTES}: every full copy of a session must fit one frame (16 MiB) to be fetched, re-replicated and handed over"
            ),
            vec![],
        );
    }
}

fn check_timing(cfg: &DomainConfig, r: &mut Report) {
    let d = &cfg.domain;
    let mut bad = Vec::new();
    for (k, v) in [
        ("request_timeout_ms", d.request_timeout_ms),
        ("heartbeat_interval_ms", d.heartbeat_interval_ms),
        ("failure_timeout_ms", d.failure_timeout_ms),
    ] {
        if v == 0 {
            bad.push(format!("{k} must be above 0"));
        }
    }
    if d.heartbeat_interval_ms > 0 && d.failure_timeout_ms < 2 * d.heartbeat_interval_ms {
        bad.push(format!(
            "failure_timeout_ms ({}) must be at least twice heartbeat_interval_ms ({}), or a single late heartbeat fails a live node",
            d.failure_timeout_ms, d.heartbeat_interval_ms
        ));
    }
    for b in bad {
        r.push(Severity::Error, rule::TIMING, b, vec![]);
    }
}

fn check_unique(cfg: &DomainConfig, r: &mut Report) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &cfg.nodes {
        *names.entry(n.name.as_str()).or_default() += 1;
    }
    for (name, count) in names.iter().filter(|(_, c)| **c > 1) {
        r.push(
            Severity::Error,
            rule::DUPLICATE_NAME,
            format!("{count} nodes are named {name}; node names must be unique in a domain"),
            vec![(*name).to_owned()],
        );
    }
    let mut folded: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for name in names.keys() {
        folded.entry(name.to_ascii_lowercase()).or_default().push(name);
    }
    for spellings in folded.into_values().filter(|s| s.len() > 1) {
        r.push(
            Severity::Error,
            rule::NAME_CASE,
            format!(
                "node names {} differ only in case; certificates and DNS ignore case, so no node could prove which it is",
                spellings.join(" and ")
            ),
            spellings.into_iter().map(str::to_owned).collect(),
        );
    }
    for (addr, users) in listeners_by(cfg, |a| Some(a.canonical())).into_iter().filter(|(_, u)| u.len() > 1) {
        let written: BTreeSet<&str> = users.iter().map(|(_, a)| a.as_str()).collect();
        let written: Vec<&str> = written.into_iter().collect();
        r.push(
            Severity::Error,
            rule::DUPLICATE_ADDRESS,
            format!(
                "{} {} used by {} listeners; every replication, admin and http address must be unique",
                written.join(" and "),
                if written.len() > 1 { format!("are the same address ({addr}),") } else { "is".to_owned() },
                users.len()
            ),
            users.into_iter().map(|(who, _)| who).collect(),
        );
    }
}

/// Every listener (`node (address)`, `node (admin)`, `node (http)`) with the address as written, grouped by
/// `key` of its address (listeners it gives no key are left out).
fn listeners_by<K: Ord>(
    cfg: &DomainConfig,
    key: impl Fn(&Address) -> Option<K>,
) -> BTreeMap<K, Vec<(String, Address)>> {
    let mut by: BTreeMap<K, Vec<(String, Address)>> = BTreeMap::new();
    for n in &cfg.nodes {
        let admin = n.admin.iter().map(|a| (format!("{} (admin)", n.name), a));
        let http = n.http.iter().map(|a| (format!("{} (http)", n.name), a));
        for (who, a) in
            std::iter::once((format!("{} (address)", n.name), &n.address)).chain(admin).chain(http)
        {
            if let Some(k) = key(a) {
                by.entry(k).or_default().push((who, a.clone()));
            }
        }
    }
    by
}

/// The rules that need name resolution, which this crate does not do (it has no I/O):
/// `resolve` gives the addresses a host name resolves to (an empty list when it does not).
/// Warns ([`rule::SAME_RESOLVED_ADDRESS`]) where listeners with different host names and the
/// same port resolve to a shared address: on one machine they cannot both listen. Listeners
/// that are the same address once parsed are [`rule::DUPLICATE_ADDRESS`] errors of
/// [`validate`] and are not repeated here.
pub fn validate_resolved(cfg: &DomainConfig, resolve: impl Fn(&str) -> Vec<IpAddr>) -> Report {
    let mut r = Report::default();
    let mut by_ip: BTreeMap<(IpAddr, u16), BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (canonical, users) in listeners_by(cfg, |a| Some(a.canonical())) {
        let Some(first) = users.first() else { continue };
        let (host, port) = first.1.host_port();
        let ips = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => resolve(host),
        };
        for ip in ips {
            let e = by_ip.entry((ip, port)).or_default();
            e.entry(canonical.clone()).or_default().extend(users.iter().map(|(who, _)| who.clone()));
        }
    }
    let mut seen = BTreeSet::new();
    for ((ip, port), groups) in by_ip.into_iter().filter(|(_, g)| g.len() > 1) {
        let addrs: Vec<String> = groups.keys().cloned().collect();
        if !seen.insert(addrs.clone()) {
            continue;
        }
        r.push(
            Severity::Warning,
            rule::SAME_RESOLVED_ADDRESS,
            format!(
                "{} resolve to {} port {port}; on one machine only one of them can listen",
                addrs.join(" and "),
                SocketAddr::new(ip, port).ip()
            ),
            groups.into_values().flatten().collect(),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(nodes: &[(&str, &str, Option<&str>)]) -> DomainConfig {
        let mut text = String::from("[domain]\nname = \"web\"\n");
        for (name, address, admin) in nodes {
            text += &format!("[[node]]\nname = \"{name}\"\naddress = \"{address}\"\n");
            if let Some(a) = admin {
                text += &format!("admin = \"{a}\"\n");
            }
        }
        DomainConfig::parse(&text, "t").expect("parses")
    }

    #[test]
    fn max_session_bytes_must_let_a_full_copy_fit_a_frame() {
        let with = |n: u64| {
            let mut cfg =
                domain(&[("a", "127.0.0.1:1", None), ("b", "127.0.0.1:2", None), ("c", "127.0.0.1:3", None)]);
            cfg.domain.max_session_bytes = n;
            validate(&cfg).codes().contains(rule::MAX_SESSION_BYTES)
        };
        assert!(!with(crate::config::DEFAULT_MAX_SESSION_BYTES));
        assert!(!with(1024) && !with(MAX_MAX_SESSION_BYTES));
        assert!(with(1023) && with(MAX_MAX_SESSION_BYTES + 1) && with(16 << 20));
        let cfg =
            DomainConfig::parse("[domain]\nname = \"w\"\nmax_session_bytes = 65536\n", "t").expect("parses");
        assert_eq!(cfg.domain.max_session_bytes, 65536);
    }

    #[test]
    fn names_equal_ignoring_case_are_refused() {
        let cfg = domain(&[
            ("app1", "127.0.0.1:1", None),
            ("APP1", "127.0.0.1:2", None),
            ("app2", "127.0.0.1:3", None),
        ]);
        let r = validate(&cfg);
        let v = r.violations.iter().find(|v| v.code == rule::NAME_CASE).expect("the rule");
        assert_eq!(v.severity, Severity::Error);
        assert_eq!(v.members, ["APP1", "app1"]);
        assert!(!r.codes().contains(rule::DUPLICATE_NAME));
    }

    #[test]
    fn the_same_socket_written_differently_is_one_address() {
        for (a, b) in [
            ("127.0.0.1:7101", "127.0.0.1:07101"),
            ("[::1]:7101", "[0:0:0:0:0:0:0:1]:7101"),
            ("Host-A.example:80", "host-a.EXAMPLE:80"),
        ] {
            let cfg = domain(&[("a", a, None), ("b", b, None)]);
            let r = validate(&cfg);
            let v = r.violations.iter().find(|v| v.code == rule::DUPLICATE_ADDRESS);
            let v = v.unwrap_or_else(|| panic!("{a} and {b}: {r}"));
            assert_eq!(v.members, ["a (address)", "b (address)"], "{v}");
            assert!(v.message.contains(a) && v.message.contains(b), "{v}");
        }
        let cfg =
            domain(&[("a", "127.0.0.1:1", Some("127.0.0.1:2")), ("b", "127.0.0.2:1", Some("127.0.0.1:3"))]);
        assert!(!validate(&cfg).codes().contains(rule::DUPLICATE_ADDRESS));
    }

    #[test]
    fn hosts_that_resolve_alike_with_one_port_are_warned_about() {
        let cfg = domain(&[
            ("a", "localhost:7101", Some("127.0.0.1:8101")),
            ("b", "127.0.0.1:7101", Some("localhost:8102")),
            ("c", "elsewhere:7101", None),
        ]);
        assert!(!validate(&cfg).has_errors());
        let resolve = |h: &str| match h {
            "localhost" => vec![IpAddr::from([127, 0, 0, 1]), "::1".parse().expect("ip")],
            "elsewhere" => vec![IpAddr::from([10, 0, 0, 9])],
            _ => vec![],
        };
        let r = validate_resolved(&cfg, resolve);
        assert_eq!(r.violations.len(), 1, "{r}");
        let v = &r.violations[0];
        assert_eq!((v.code, v.severity), (rule::SAME_RESOLVED_ADDRESS, Severity::Warning));
        assert_eq!(v.members, ["b (address)", "a (address)"]);
        assert!(validate_resolved(&cfg, |_| vec![]).violations.is_empty());
    }
}
