//! Online domain changes: what a running node may take from a new domain file, and the
//! fingerprint nodes tell each other to agree on the file they run.
//!
//! [`check`] compares the file a node runs with a new one. The new file must be valid
//! ([`crate::validate`]); then what cannot change while the domain runs is refused, each with a
//! rule code of [`rule`] (stable, like the codes of [`crate::validate::rule`]):
//! the domain name, the topology, the transport and its settings, the address of a node that
//! stays, and the mode of a node that stays. What can change online: nodes added, nodes
//! removed, `replicas`, the timeouts and intervals, `max_session_bytes`, a node's application
//! HTTP address. A node's mode is fixed by the topology in a peer-to-peer domain (every node is
//! `both`); in a client-server domain a node that stays keeps its mode (remove it and add it
//! under another name to change it: its owned sessions or its backups move as for any leave).
//!
//! ```
//! use replication_core::{DomainConfig, NodeId, change};
//! let old = DomainConfig::parse(r#"
//!     [domain]
//!     name = "web"
//!     [[node]]
//!     name = "a"
//!     address = "127.0.0.1:7101"
//!     [[node]]
//!     name = "b"
//!     address = "127.0.0.1:7102"
//! "#, "old").expect("valid");
//! let mut new = old.clone();
//! new.domain.replicas = replication_core::Replicas::Count(2);
//! let plan = change::check(&old, &new, &NodeId::new("a")).expect("allowed online");
//! assert!(plan.replicas_changed && !plan.removes_this_node);
//! new.domain.name = "shop".into();
//! let refused = change::check(&old, &new, &NodeId::new("a")).expect_err("refused");
//! assert!(refused.codes().contains(change::rule::DOMAIN_NAME));
//! ```

use std::collections::BTreeSet;

use crate::config::{DomainConfig, NodeId};
use crate::placement::stable_hash;
use crate::validate::{Report, Severity, Violation, validate};

/// The stable rule codes of a refused online change. Scripts and the CLI rely on them.
pub mod rule {
    /// The new file names another domain.
    pub const DOMAIN_NAME: &str = "change-domain-name";
    /// The new file has another topology (written or inferred).
    pub const TOPOLOGY: &str = "change-topology";
    /// The new file names another transport, or changes `closed_link_detection`.
    pub const TRANSPORT: &str = "change-transport";
    /// A node that stays has another replication or admin address.
    pub const ADDRESS: &str = "change-node-address";
    /// A node that stays has another mode.
    pub const MODE: &str = "change-node-mode";
    /// A node that stays declares other session managers (each node's engine and handles
    /// serve the managers of the file it started with).
    pub const MANAGERS: &str = "change-node-managers";
    /// The new file adds nodes and the running transport cannot link to nodes added while it
    /// runs ([`Transport::add_peers`](crate::transport::Transport::add_peers)): restart the
    /// nodes with the new file instead.
    pub const TRANSPORT_PEERS: &str = "change-transport-peers";
}

/// The refusal of a change that adds nodes the running transport cannot link to (rule
/// [`rule::TRANSPORT_PEERS`]); `why` is the transport's reason.
pub fn transport_refusal(added: &BTreeSet<NodeId>, why: &str) -> Report {
    let members: Vec<String> = added.iter().map(NodeId::to_string).collect();
    Report {
        violations: vec![Violation {
            code: rule::TRANSPORT_PEERS,
            severity: Severity::Error,
            message: format!(
                "the new file adds {}, and this node's transport cannot link to new nodes while it runs ({why}): restart the nodes with the new file",
                members.join(", ")
            ),
            members,
        }],
    }
}

/// What an allowed change does, as seen from the node that checks it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The fingerprint of the file running now.
    pub from: u64,
    /// The fingerprint of the new file.
    pub to: u64,
    /// Nodes listed in the new file only.
    pub added: BTreeSet<NodeId>,
    /// Nodes listed in the running file only.
    pub removed: BTreeSet<NodeId>,
    /// `replicas` differs.
    pub replicas_changed: bool,
    /// The new file does not list the node that checks it: it leaves the domain gracefully
    /// (its sessions are handed off as by a leave) and stops.
    pub removes_this_node: bool,
    /// The warnings of the new file.
    pub warnings: Vec<Violation>,
}

impl Plan {
    /// Whether the new file is the running one (same fingerprint): nothing to do.
    pub fn unchanged(&self) -> bool {
        self.from == self.to
    }
}

/// The fingerprint of a domain file: a stable hash of its parsed content (comments, layout
/// and key order do not count). Nodes that run files with the same fingerprint run the same
/// domain. Shown as 16 hex digits ([`fingerprint_hex`]).
pub fn fingerprint(cfg: &DomainConfig) -> u64 {
    // The model serializes every field in declaration order; a file that fails to encode
    // (it cannot: every field is plain data) gets the hash of nothing.
    stable_hash(&rmp_serde::to_vec(cfg).unwrap_or_default())
}

/// A fingerprint as it is shown: 16 lower-case hex digits.
pub fn fingerprint_hex(fp: u64) -> String {
    format!("{fp:016x}")
}

/// Checks whether the node `me`, running `old`, may switch to `new` online. `Err` holds every
/// violation: the new file's own errors ([`validate`]) and the change rules ([`rule`]).
pub fn check(old: &DomainConfig, new: &DomainConfig, me: &NodeId) -> Result<Plan, Report> {
    let report = validate(new);
    if report.has_errors() {
        return Err(Report { violations: report.errors().cloned().collect() });
    }
    let refused = refusals(old, new);
    if refused.has_errors() {
        return Err(refused);
    }
    let names = |c: &DomainConfig| c.nodes.iter().map(|n| n.name.clone()).collect::<BTreeSet<_>>();
    let (before, after) = (names(old), names(new));
    Ok(Plan {
        from: fingerprint(old),
        to: fingerprint(new),
        added: after.difference(&before).cloned().collect(),
        removed: before.difference(&after).cloned().collect(),
        replicas_changed: old.domain.replicas != new.domain.replicas,
        removes_this_node: !after.contains(me),
        warnings: report.warnings().cloned().collect(),
    })
}

/// What differs between `old` and `new` that a running domain cannot take (the [`rule`]s), as
/// seen from any node: empty when the change can be made online. [`check`] adds the new file's
/// own validation; `m2m plan --from/--to` shows these.
pub fn refusals(old: &DomainConfig, new: &DomainConfig) -> Report {
    let mut refused = Report::default();
    let mut push = |code: &'static str, message: String, members: Vec<String>| {
        refused.violations.push(Violation { code, severity: Severity::Error, message, members });
    };
    if old.domain.name != new.domain.name {
        push(
            rule::DOMAIN_NAME,
            format!(
                "the new file names domain `{}`, the running domain is `{}`: a domain cannot be renamed while it runs",
                new.domain.name, old.domain.name
            ),
            vec![],
        );
    }
    if old.topology() != new.topology() {
        push(
            rule::TOPOLOGY,
            format!(
                "the new file is {}, the running domain is {}: the topology changes only with a restart of every node",
                new.topology(),
                old.topology()
            ),
            vec![],
        );
    }
    if old.domain.transport != new.domain.transport
        || old.domain.closed_link_detection != new.domain.closed_link_detection
    {
        push(
            rule::TRANSPORT,
            format!(
                "the new file changes the transport (`{}`, closed_link_detection {}) of the running domain (`{}`, {}): it changes only with a restart of every node",
                new.domain.transport,
                new.domain.closed_link_detection,
                old.domain.transport,
                old.domain.closed_link_detection
            ),
            vec![],
        );
    }
    for n in &new.nodes {
        let Some(o) = old.node(&n.name) else { continue };
        if o.address.canonical() != n.address.canonical()
            || o.admin.as_ref().map(|a| a.canonical()) != n.admin.as_ref().map(|a| a.canonical())
        {
            push(
                rule::ADDRESS,
                format!(
                    "node {} moves from {} to {}: a node keeps its addresses while the domain runs (add it under a new name and remove the old one)",
                    n.name, o.address, n.address
                ),
                vec![n.name.to_string()],
            );
        }
        if o.mode() != n.mode() {
            push(
                rule::MODE,
                format!(
                    "node {} changes mode from `{}` to `{}`: a node keeps its mode while the domain runs (add it under a new name and remove the old one)",
                    n.name,
                    o.mode(),
                    n.mode()
                ),
                vec![n.name.to_string()],
            );
        }
        if o.managers.keys().ne(n.managers.keys()) {
            let list = |m: &std::collections::BTreeMap<String, crate::config::Mode>| {
                if m.is_empty() {
                    "none".to_owned()
                } else {
                    m.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            };
            push(
                rule::MANAGERS,
                format!(
                    "node {} changes its session managers from ({}) to ({}): a node keeps its session managers while the domain runs (restart it with the new file)",
                    n.name,
                    list(&o.managers),
                    list(&n.managers)
                ),
                vec![n.name.to_string()],
            );
        }
    }
    refused
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{Mode, Replicas, Topology, TransportKind};

    fn three() -> DomainConfig {
        DomainConfig::parse(
            r#"
            [domain]
            name = "web"
            [[node]]
            name = "a"
            address = "127.0.0.1:7101"
            [[node]]
            name = "b"
            address = "127.0.0.1:7102"
            [[node]]
            name = "c"
            address = "127.0.0.1:7103"
            "#,
            "three",
        )
        .unwrap()
    }

    fn codes(r: Result<Plan, Report>) -> Vec<&'static str> {
        r.unwrap_err().codes().into_iter().collect()
    }

    #[test]
    fn nodes_replicas_and_timings_change_online() {
        let old = three();
        let mut new = old.clone();
        let mut d = new.nodes[2].clone();
        d.name = NodeId::new("d");
        d.address = crate::config::Address::parse("127.0.0.1:7104").unwrap();
        new.nodes.push(d);
        new.nodes.remove(0);
        new.domain.replicas = Replicas::Count(2);
        new.domain.failure_timeout_ms = 3000;
        let plan = check(&old, &new, &NodeId::new("b")).unwrap();
        assert_eq!(plan.added, [NodeId::new("d")].into());
        assert_eq!(plan.removed, [NodeId::new("a")].into());
        assert!(plan.replicas_changed && !plan.removes_this_node && !plan.unchanged());
        assert!(check(&old, &new, &NodeId::new("a")).unwrap().removes_this_node);
        assert!(check(&old, &old, &NodeId::new("a")).unwrap().unchanged());
    }

    #[test]
    fn each_fixed_part_is_refused_with_its_rule() {
        let old = three();
        let mut new = old.clone();
        new.domain.name = "shop".into();
        assert_eq!(codes(check(&old, &new, &NodeId::new("a"))), [rule::DOMAIN_NAME]);
        let mut new = old.clone();
        new.domain.transport = TransportKind::Quic;
        assert_eq!(codes(check(&old, &new, &NodeId::new("a"))), [rule::TRANSPORT]);
        let mut new = old.clone();
        new.nodes[1].address = crate::config::Address::parse("127.0.0.1:7999").unwrap();
        assert_eq!(codes(check(&old, &new, &NodeId::new("a"))), [rule::ADDRESS]);
        // Session managers: a node that stays keeps its own; a node added brings its own.
        let mut new = old.clone();
        new.nodes[2].managers.insert("cart".into(), Mode::Both);
        assert_eq!(codes(check(&old, &new, &NodeId::new("a"))), [rule::MANAGERS]);
        let mut joined = new.clone();
        joined.nodes[2].name = NodeId::new("d");
        joined.nodes[2].address = crate::config::Address::parse("127.0.0.1:7104").unwrap();
        let mut with_d = old.clone();
        with_d.nodes.push(joined.nodes[2].clone());
        assert!(check(&old, &with_d, &NodeId::new("a")).is_ok());
        // Client-server: the topology, and a mode that changes.
        let mut new = old.clone();
        new.domain.topology = Some(Topology::ClientServer);
        new.nodes[0].mode = Some(Mode::Client);
        new.nodes[1].mode = Some(Mode::Server);
        new.nodes[2].mode = Some(Mode::Server);
        let got = codes(check(&old, &new, &NodeId::new("a")));
        assert_eq!(got, [rule::MODE, rule::TOPOLOGY]);
        // An invalid file is refused with its own rules.
        let mut new = old.clone();
        new.domain.replicas = Replicas::Count(0);
        assert_eq!(codes(check(&old, &new, &NodeId::new("a"))), [crate::validate::rule::REPLICAS_MIN]);
    }

    #[test]
    fn the_fingerprint_ignores_the_layout_and_follows_the_content() {
        let a = three();
        let text = "[domain]\nname=\"web\"\n# a comment\n[[node]]\nname=\"a\"\naddress=\"127.0.0.1:7101\"\n[[node]]\nname=\"b\"\naddress=\"127.0.0.1:7102\"\n[[node]]\nname=\"c\"\naddress=\"127.0.0.1:7103\"\n";
        let b = DomainConfig::parse(text, "b").unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let mut c = a.clone();
        c.domain.replicas = Replicas::Count(2);
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint_hex(0xab).len(), 16);
    }
}
