//! Validation against a simple, separately written model of the rules, over random domains.
//! Also: any domain the model builds survives a TOML round trip unchanged.

use std::collections::BTreeSet;

use proptest::prelude::*;
use replication_core::config::{Address, DomainSection, NodeConfig, TransportKind};
use replication_core::validate::{rule, validate};
use replication_core::{DomainConfig, Mode, NodeId, Replicas, Topology};

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Client), Just(Mode::Server), Just(Mode::Both)]
}

fn node() -> impl Strategy<Value = NodeConfig> {
    (
        prop_oneof![
            (0..6usize).prop_map(|i| format!("n{i}")),
            Just("n.1".to_owned()),
            Just("n:1".to_owned())
        ],
        0..8u16,
        proptest::option::of(0..8u16),
        proptest::option::of(mode()),
        proptest::collection::btree_map(
            prop_oneof![Just("cart"), Just("profile"), Just("admin")],
            mode(),
            0..3,
        ),
    )
        .prop_map(|(name, port, admin, mode, managers)| NodeConfig {
            name: NodeId::new(&name),
            address: Address::parse(&format!("127.0.0.1:{}", 7100 + port)).expect("valid address"),
            admin: admin.map(|p| Address::parse(&format!("127.0.0.1:{}", 7100 + p)).expect("valid address")),
            http: None,
            mode,
            managers: managers.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        })
}

fn domain() -> impl Strategy<Value = DomainConfig> {
    (
        prop_oneof![Just(""), Just(" "), Just("web"), Just("shop"), Just("a.b"), Just("-x")],
        proptest::option::of(prop_oneof![Just(Topology::PeerToPeer), Just(Topology::ClientServer)]),
        prop_oneof![(0..5u32).prop_map(Replicas::Count), Just(Replicas::EntireDomain)],
        prop_oneof![Just(0u64), Just(100), Just(200), Just(1000)],
        prop_oneof![Just(0u64), Just(150), Just(400), Just(1000)],
        proptest::collection::vec(node(), 0..6),
    )
        .prop_map(|(name, topology, replicas, hb, fail, nodes)| DomainConfig {
            domain: DomainSection {
                name: name.to_owned(),
                topology,
                replicas,
                request_timeout_ms: 5000,
                heartbeat_interval_ms: hb,
                failure_timeout_ms: fail,
                closed_link_detection: true,
                transport: TransportKind::Tcp,
                max_session_bytes: replication_core::config::DEFAULT_MAX_SESSION_BYTES,
            },
            nodes,
        })
}

/// The rules, restated plainly from the issue, independent of `validate.rs`.
fn model(cfg: &DomainConfig) -> (BTreeSet<&'static str>, BTreeSet<&'static str>) {
    let mut errors = BTreeSet::new();
    let mut warnings = BTreeSet::new();
    let d = &cfg.domain;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() < 64
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if d.name.trim().is_empty() {
        errors.insert(rule::DOMAIN_NAME);
    } else if !label(&d.name) {
        errors.insert(rule::NAME_CHARS);
    }
    if cfg.nodes.iter().any(|n| !label(n.name.as_str())) {
        errors.insert(rule::NAME_CHARS);
    }
    if cfg.nodes.is_empty() {
        errors.insert(rule::NO_NODES);
    }
    if d.replicas == Replicas::Count(0) {
        errors.insert(rule::REPLICAS_MIN);
    }
    if d.heartbeat_interval_ms == 0
        || d.failure_timeout_ms == 0
        || d.request_timeout_ms == 0
        || d.failure_timeout_ms < 2 * d.heartbeat_interval_ms
    {
        errors.insert(rule::TIMING);
    }
    let names: Vec<&str> = cfg.nodes.iter().map(|n| n.name.as_str()).collect();
    if names.iter().collect::<BTreeSet<_>>().len() != names.len() {
        errors.insert(rule::DUPLICATE_NAME);
    }
    let mut listeners = Vec::new();
    for n in &cfg.nodes {
        listeners.push(n.address.as_str());
        listeners.extend(n.admin.as_ref().map(Address::as_str));
    }
    if listeners.iter().collect::<BTreeSet<_>>().len() != listeners.len() {
        errors.insert(rule::DUPLICATE_ADDRESS);
    }
    // Every session manager's mode; a node without managers is one manager.
    let mut all: Vec<Mode> = Vec::new();
    for n in &cfg.nodes {
        let mine: Vec<Mode> = if n.managers.is_empty() {
            vec![n.mode.unwrap_or(Mode::Both)]
        } else {
            n.managers.values().copied().collect()
        };
        let mut distinct: BTreeSet<Mode> = mine.iter().copied().collect();
        if !n.managers.is_empty() {
            distinct.extend(n.mode);
        }
        if distinct.len() > 1 {
            errors.insert(rule::NODE_MODES_DIFFER);
        }
        all.extend(mine);
    }
    let any = |m: Mode| all.contains(&m);
    match d.topology {
        Some(Topology::PeerToPeer) if any(Mode::Client) || any(Mode::Server) => {
            errors.insert(rule::P2P_REQUIRES_BOTH);
        }
        Some(Topology::ClientServer) if any(Mode::Both) => {
            errors.insert(rule::CS_FORBIDS_BOTH);
        }
        None if any(Mode::Both) && (any(Mode::Client) || any(Mode::Server)) => {
            errors.insert(rule::MIXED_BOTH);
        }
        _ => {}
    }
    let cs = match d.topology {
        Some(t) => t == Topology::ClientServer,
        None => all.iter().any(|&m| m != Mode::Both),
    };
    if cs && !cfg.nodes.is_empty() && !any(Mode::Server) {
        errors.insert(rule::CS_NEEDS_SERVER);
    }
    if cs && !any(Mode::Client) && any(Mode::Server) {
        warnings.insert(rule::CS_NO_CLIENT);
    }
    if !cs && cfg.nodes.len() == 2 {
        warnings.insert(rule::TWO_NODE_P2P);
    }
    if errors.is_empty()
        && let Replicas::Count(r) = d.replicas
    {
        // A valid domain: each node has one mode.
        // Holders are nodes (a node with two server managers is one holder).
        let node_is_server = |n: &replication_core::config::NodeConfig| {
            n.mode == Some(Mode::Server)
                || (!n.managers.is_empty() && n.managers.values().all(|&m| m == Mode::Server))
        };
        let holders =
            if cs { cfg.nodes.iter().filter(|n| node_is_server(n)).count() } else { cfg.nodes.len() - 1 };
        if r as usize > holders {
            warnings.insert(rule::FEWER_HOLDERS);
        }
    }
    (errors, warnings)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn validation_matches_the_model(cfg in domain()) {
        let report = validate(&cfg);
        let (want_errors, want_warnings) = model(&cfg);
        let got_errors: BTreeSet<_> = report.errors().map(|v| v.code).collect();
        prop_assert_eq!(&got_errors, &want_errors, "{:#?}\n{}", cfg, report);
        let got_warnings: BTreeSet<_> = report.warnings().map(|v| v.code).collect();
        if want_errors.is_empty() {
            prop_assert_eq!(&got_warnings, &want_warnings, "{:#?}\n{}", cfg, report);
        } else {
            // With errors, the model only pins the warnings that do not depend on fixed modes.
            for w in [rule::CS_NO_CLIENT, rule::TWO_NODE_P2P] {
                prop_assert_eq!(got_warnings.contains(w), want_warnings.contains(w), "{}\n{}", w, report);
            }
        }
        // Errors come before warnings, and every violation is a sentence.
        let sev: Vec<_> = report.violations.iter().map(|v| v.severity).collect();
        let mut sorted = sev.clone();
        sorted.sort();
        prop_assert_eq!(sev, sorted);
    }

    #[test]
    fn toml_round_trip(cfg in domain()) {
        let text = toml::to_string(&cfg).expect("serialises");
        let back = DomainConfig::parse(&text, "round-trip").expect("parses back");
        prop_assert_eq!(back, cfg);
    }

    #[test]
    fn parse_never_panics(text in "\\PC{0,400}") {
        let _ = DomainConfig::parse(&text, "fuzz");
    }

    #[test]
    fn parse_never_panics_on_near_valid(lines in proptest::collection::vec(prop_oneof![
        Just("[domain]"), Just("name = \"w\""), Just("[[node]]"), Just("name = \"a\""),
        Just("address = \"127.0.0.1:1\""), Just("mode = \"server\""), Just("replicas = -3"),
        Just("replicas = 99999999999999"), Just("topology = 7"), Just("managers = { x = \"both\" }"),
        Just("admin = \"::1\""), Just("= ="), Just("[domain.sub]"),
    ], 0..14)) {
        let text = lines.join("\n");
        if let Ok(cfg) = DomainConfig::parse(&text, "fuzz") {
            let _ = validate(&cfg);
        }
    }
}
