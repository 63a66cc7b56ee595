//! Placement properties: deterministic (also across config order), distinct, only eligible
//! nodes, never the owner, balanced, and minimal movement when a node joins or leaves.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use replication_core::config::{Address, DomainSection, NodeConfig, TransportKind};
use replication_core::placement::Placement;
use replication_core::{DomainConfig, Mode, NodeId, Replicas, Topology};

/// A valid domain: `n` nodes, peer-to-peer (all `both`) or client-server (`servers` of them
/// servers, the rest clients).
fn cfg(n: usize, servers: Option<usize>, replicas: Replicas) -> DomainConfig {
    let nodes = (0..n)
        .map(|i| NodeConfig {
            name: NodeId::new(&format!("node{i}")),
            address: Address::parse(&format!("127.0.0.1:{}", 7000 + i)).expect("address"),
            admin: None,
            http: None,
            mode: Some(match servers {
                None => Mode::Both,
                Some(s) if i < s => Mode::Server,
                Some(_) => Mode::Client,
            }),
            managers: BTreeMap::new(),
        })
        .collect();
    DomainConfig {
        domain: DomainSection {
            name: "d".into(),
            topology: Some(if servers.is_some() { Topology::ClientServer } else { Topology::PeerToPeer }),
            replicas,
            request_timeout_ms: 1000,
            heartbeat_interval_ms: 100,
            failure_timeout_ms: 500,
            closed_link_detection: true,
            transport: TransportKind::Tcp,
            max_session_bytes: replication_core::config::DEFAULT_MAX_SESSION_BYTES,
        },
        nodes,
    }
}

fn domain() -> impl Strategy<Value = DomainConfig> {
    (
        2..9usize,
        proptest::option::of(1..4usize),
        prop_oneof![(1..4u32).prop_map(Replicas::Count), Just(Replicas::EntireDomain)],
    )
        .prop_map(|(n, servers, r)| cfg(n, servers.map(|s| s.min(n - 1)), r))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn backups_are_distinct_eligible_and_not_the_owner(
        c in domain(),
        sessions in proptest::collection::vec("[a-z0-9]{1,12}", 1..40),
        down in proptest::collection::btree_set(0..9usize, 0..3),
    ) {
        let p = Placement::new(&c);
        let down: BTreeSet<NodeId> = down.into_iter().map(|i| NodeId::new(&format!("node{i}"))).collect();
        let live = |n: &NodeId| !down.contains(n);
        for s in &sessions {
            let Some(owner) = p.home(s, live) else { continue };
            prop_assert!(p.owns_sessions(&owner));
            let b = p.backups(s, &owner, live);
            let set: BTreeSet<_> = b.iter().collect();
            prop_assert_eq!(set.len(), b.len(), "distinct");
            prop_assert!(!b.contains(&owner), "never the owner");
            for n in &b {
                prop_assert!(p.stores_backups(n) && live(n), "{} eligible and live", n);
            }
            let eligible = c.nodes.iter().filter(|n| p.stores_backups(&n.name) && n.name != owner && live(&n.name)).count();
            let want = match c.domain.replicas { Replicas::Count(r) => (r as usize).min(eligible), Replicas::EntireDomain => eligible };
            prop_assert_eq!(b.len(), want);
            // Deterministic, also when the config lists the nodes in another order.
            prop_assert_eq!(&p.backups(s, &owner, live), &b);
            let mut rev = c.clone();
            rev.nodes.reverse();
            prop_assert_eq!(&Placement::new(&rev).backups(s, &owner, live), &b);
            // The failover owner is live, not the old owner, and in peer-to-peer the first backup.
            let fo = p.failover_owner(s, &owner, live);
            if let Some(f) = &fo {
                prop_assert!(f != &owner && live(f) && p.owns_sessions(f));
            }
            if c.topology() == Topology::PeerToPeer {
                prop_assert_eq!(fo.as_ref(), b.first());
            }
        }
    }

    #[test]
    fn a_join_or_leave_moves_only_the_sessions_it_must(
        c in domain(),
        who in 0..9usize,
        sessions in proptest::collection::vec("[a-z0-9]{1,12}", 1..60),
    ) {
        let p = Placement::new(&c);
        let x = NodeId::new(&format!("node{}", who % c.nodes.len()));
        let without = |n: &NodeId| n != &x;
        for s in &sessions {
            // Owner fixed and not x (ownership moves are the failover rule's business).
            let Some(owner) = p.home(s, without) else { continue };
            let before = p.backups(s, &owner, without); // x down
            let after = p.backups(s, &owner, |_| true); // x joins
            if before != after {
                // Join: x enters, and at most one node (the lowest ranked) makes room.
                prop_assert!(after.contains(&x), "{s}: {before:?} -> {after:?} without x");
                let kept: Vec<_> = after.iter().filter(|n| *n != &x).cloned().collect();
                prop_assert!(before.starts_with(&kept), "{s}: {before:?} -> {after:?}");
                prop_assert!(before.len() - kept.len() <= 1);
            }
            // Leave is the same transition backwards: only sessions that had x change, and they
            // keep every other backup in order.
        }
    }
}

#[test]
fn balanced_within_fifteen_percent() {
    for (c, label) in [
        (cfg(5, None, Replicas::Count(1)), "p2p 5 nodes r=1"),
        (cfg(7, None, Replicas::Count(2)), "p2p 7 nodes r=2"),
        (cfg(6, Some(3), Replicas::Count(2)), "cs 3 servers r=2"),
        (cfg(6, Some(4), Replicas::Count(1)), "cs 4 servers r=1"),
    ] {
        let p = Placement::new(&c);
        let mut owned: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut backed: BTreeMap<NodeId, usize> = BTreeMap::new();
        let sessions = 12_000;
        for i in 0..sessions {
            let s = format!("session-{i}");
            let owner = p.home(&s, |_| true).expect("owner");
            for b in p.backups(&s, &owner, |_| true) {
                *backed.entry(b).or_default() += 1;
            }
            *owned.entry(owner).or_default() += 1;
        }
        for (what, counts) in [("owned", &owned), ("backups", &backed)] {
            let total: usize = counts.values().sum();
            let mean = total as f64 / counts.len() as f64;
            for (n, &k) in counts {
                let dev = (k as f64 - mean).abs() / mean;
                assert!(dev <= 0.15, "{label}: {n} has {k} {what}, mean {mean:.0} ({:.1}% off)", dev * 100.0);
            }
        }
    }
}

#[test]
fn what_if_counts_add_up_and_lose_nothing_when_replicas_cover_the_failures() {
    let c = cfg(5, None, Replicas::Count(2));
    let p = Placement::new(&c);
    let ids: Vec<String> = (0..3000).map(|i| format!("s-{i}")).collect();
    let owners: Vec<NodeId> = ids.iter().map(|s| p.home(s, |_| true).expect("owner")).collect();
    let failed: BTreeSet<NodeId> = [NodeId::new("node1"), NodeId::new("node3")].into();
    let w = p.what_if(ids.iter().map(String::as_str).zip(&owners), &failed);
    assert_eq!(w.sessions, 3000);
    assert_eq!(w.lost, 0, "replicas 2 covers 2 failures");
    assert_eq!(w.nodes.values().map(|l| l.owned).sum::<usize>(), 3000);
    assert_eq!(w.nodes.values().map(|l| l.owned_after).sum::<usize>(), 3000);
    assert_eq!(w.nodes.values().map(|l| l.backups).sum::<usize>(), 6000);
    for f in &failed {
        assert_eq!(w.nodes[f].owned_after, 0);
        assert_eq!(w.nodes[f].backups_after, 0);
    }
    assert!(w.ownership_moved > 0 && w.under_replicated > 0);

    // Replicas 1 and three failures out of four nodes: some sessions must be lost.
    let c = cfg(4, None, Replicas::Count(1));
    let p = Placement::new(&c);
    let owners: Vec<NodeId> = ids.iter().map(|s| p.home(s, |_| true).expect("owner")).collect();
    let failed: BTreeSet<NodeId> = ["node0", "node1", "node2"].into_iter().map(NodeId::new).collect();
    let w = p.what_if(ids.iter().map(String::as_str).zip(&owners), &failed);
    assert!(w.lost > 0);
    assert_eq!(w.lost + w.ownership_moved + w.nodes[&NodeId::new("node3")].owned, 3000);
}

#[test]
fn entire_domain_target_after_a_failure_counts_live_nodes_only() {
    let c = cfg(3, None, Replicas::EntireDomain);
    let p = Placement::new(&c);
    let ids: Vec<String> = (0..500).map(|i| format!("s-{i}")).collect();
    let owners: Vec<NodeId> = ids.iter().map(|s| p.home(s, |_| true).expect("owner")).collect();
    let failed: BTreeSet<NodeId> = [NodeId::new("node1")].into();
    let w = p.what_if(ids.iter().map(String::as_str).zip(&owners), &failed);
    assert_eq!(w.lost, 0);
    assert_eq!(w.below_target_after_recovery, 0, "the failed node is not a target");
    // Every survivor pair holds one owner and one backup of every session.
    assert_eq!(w.nodes.values().map(|l| l.backups_after).sum::<usize>(), 500);
}
