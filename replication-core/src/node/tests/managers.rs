//! Session managers: the same id in two or three managers is separate sessions, each failed
//! over on its own; a node refuses records of a manager it does not declare.

use crate::api::{Ack, Command, Event, Outcome, Role, Settings};
use crate::harness::*;
use crate::scope::key;
use std::time::Duration;

/// The domain of nodes `a`, `b`, `c`; `a` and `b` declare `managers`, `c` declares
/// `c_managers`.
fn domain(managers: &[&str], c_managers: &[&str]) -> crate::config::DomainConfig {
    let mut c = cfg(&["a", "b", "c"], 1);
    for n in &mut c.nodes {
        let names = if n.name.as_str() == "c" { c_managers } else { managers };
        n.managers = names.iter().map(|m| ((*m).to_owned(), crate::config::Mode::Both)).collect();
    }
    c
}

fn cluster(managers: &[&str], c_managers: &[&str]) -> Cluster {
    Cluster::from_config(domain(managers, c_managers), Settings::default())
}

#[test]
fn a_manager_is_placed_only_on_the_nodes_that_declare_it() {
    let placement = crate::placement::Placement::new(&domain(&["cart"], &[]));
    let (a, c) = (id("a"), id("c"));
    let mut on_c = 0;
    for i in 0..200 {
        let anon = key(None, &format!("s{i}"));
        let cart = key(Some("cart"), &format!("s{i}"));
        assert!(!placement.backups(&cart, &a, |_| true).contains(&c));
        assert_ne!(placement.failover_owner(&cart, &a, |_| true), Some(c.clone()));
        assert_ne!(placement.home(&cart, |_| true), Some(c.clone()));
        on_c += usize::from(placement.backups(&anon, &a, |_| true).contains(&c));
    }
    // The anonymous manager, which every node hosts, uses c as ever.
    assert!(on_c > 50, "{on_c}");
}

#[test]
fn the_same_id_in_three_managers_is_three_sessions_each_failed_over() {
    let managers = ["cart", "profile", "search"];
    let mut cl = cluster(&managers, &managers);
    cl.advance(Duration::from_millis(300));
    // One id in the anonymous manager and in each named one, each with its own value.
    let keys: Vec<String> =
        std::iter::once(key(None, "s")).chain(managers.iter().map(|m| key(Some(m), "s"))).collect();
    for (i, k) in keys.iter().enumerate() {
        let v = format!("v{i}");
        let rid = i as u64 + 1;
        cl.cmd(
            "a",
            rid,
            Command::Create {
                session: k.clone(),
                attrs: attrs(&[("k", v.as_bytes())]),
                max_inactive: Duration::from_secs(600),
                ack: Ack::Sync { backups: 1 },
            },
        );
    }
    cl.pump();
    for rid in 1..=keys.len() as u64 {
        assert!(
            matches!(cl.outcome(rid), Some(Outcome::Replicated { acks: 1, .. })),
            "{:?}",
            cl.outcome(rid)
        );
    }
    let counts = cl.nodes[&id("a")].manager_counts();
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts.values().all(|c| *c == (1, 0)), "{counts:?}");
    // Invalidating one leaves the others.
    cl.cmd("a", 10, Command::Invalidate { session: keys[1].clone(), ack: Ack::Sync { backups: 1 } });
    cl.pump();
    assert!(matches!(cl.outcome(10), Some(Outcome::Replicated { .. })));
    // The same id places the same way in every manager: one backup node holds them all.
    let backup = cl.session("a", &keys[0]).unwrap().backups[0].0.clone();
    for k in &keys[1..] {
        assert_eq!(cl.session("a", k).unwrap().backups[0].0, backup);
    }
    cl.nodes.remove(&id("a"));
    cl.advance(Duration::from_millis(2000));
    for (i, k) in keys.iter().enumerate() {
        let v = cl.nodes[&backup].session(k).unwrap();
        if i == 1 {
            assert!(v.invalidated, "{k:?}: {v:?}");
            continue;
        }
        assert_eq!(v.role, Role::Owner, "{k:?}: {v:?}");
        assert_eq!(v.attrs.get("k").unwrap(), format!("v{i}").as_bytes());
    }
    assert_eq!(cl.nodes[&backup].stats().failovers, 3);
}

#[test]
fn a_node_refuses_records_of_a_manager_it_does_not_declare() {
    // Every node's file declares `cart` on every node, except `c`'s own file, which does not
    // declare it for `c` (the files differ between nodes).
    let mut cl = cluster(&["cart"], &["cart"]);
    let differing = domain(&["cart"], &[]);
    let c = crate::node::Node::new(differing, id("c"), 1, Settings::default(), cl.t0).unwrap();
    cl.nodes.insert(id("c"), c);
    cl.tick_all();
    cl.pump();
    cl.advance(Duration::from_millis(300));
    // Sessions created on `a` until one is placed on `c`.
    let mut placed_on_c = None;
    for i in 0..64u64 {
        let k = key(Some("cart"), &format!("s{i}"));
        cl.cmd(
            "a",
            100 + i,
            Command::Create {
                session: k.clone(),
                attrs: attrs(&[("k", b"v")]),
                max_inactive: Duration::from_secs(600),
                ack: Ack::Sync { backups: 1 },
            },
        );
        cl.pump();
        if cl.session("a", &k).unwrap().backups[0].0 == id("c") {
            placed_on_c = Some((k, 100 + i));
            break;
        }
        assert!(matches!(cl.outcome(100 + i), Some(Outcome::Replicated { .. })));
    }
    let (k, rid) = placed_on_c.expect("some id is placed on c");
    cl.advance(Duration::from_millis(50));
    // The copy was refused: `c` holds nothing, the write is not acknowledged, and `c`
    // reported the rule once.
    assert!(cl.session("c", &k).is_none());
    assert!(!matches!(cl.outcome(rid), Some(Outcome::Replicated { .. })), "{:?}", cl.outcome(rid));
    assert!(cl.nodes[&id("c")].stats().manager_refused >= 1);
    let reported: Vec<_> = cl
        .events
        .iter()
        .filter(|(n, e)| n == &id("c") && matches!(e, Event::ManagerRefused { .. }))
        .collect();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(matches!(
        &reported[0].1,
        Event::ManagerRefused { manager, rule: crate::node::MANAGER_NOT_DECLARED, .. } if manager == "cart"
    ));
    assert!(!cl.nodes[&id("c")].hosts_manager_of(&k));
    assert!(cl.nodes[&id("a")].hosts_manager_of(&k));
    // A claim reaching `c` is answered at once, without a copy or a promise kept there: `b`
    // fetches the session well within the request timeout.
    cl.cmd("b", 500, Command::Get { session: k.clone() });
    cl.advance(Duration::from_millis(100));
    assert!(matches!(cl.outcome(500), Some(Outcome::Found { .. })), "{:?}", cl.outcome(500));
    assert!(cl.session("c", &k).is_none());
    // Anonymous sessions are taken as ever.
    cl.cmd(
        "a",
        1,
        Command::Create {
            session: "plain".into(),
            attrs: attrs(&[("k", b"v")]),
            max_inactive: Duration::from_secs(600),
            ack: Ack::Sync { backups: 1 },
        },
    );
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { acks: 1, .. })));
}
