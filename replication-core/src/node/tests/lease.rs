//! The read lease: a cut-off owner stops serving before it can be failed over, a healthy one
//! never does, and the lease comes back when the links heal.

use crate::api::{Ack, Command, Outcome, Role, Settings};
use crate::config::NodeId;
use crate::harness::*;
use crate::message::{Echo, Message};
use crate::node::Node;
use crate::node::lease::DRIFT_MARGIN_PERCENT;
use std::time::{Duration, Instant};

const STEP: Duration = Duration::from_millis(50);

/// Node `n` reads `s` as request `rid`; its outcome.
fn read(cl: &mut Cluster, n: &str, rid: u64, s: &str) -> Outcome {
    cl.cmd(n, rid, Command::Get { session: s.into() });
    cl.outcome(rid).cloned().expect("an owner answers at once")
}

fn bound(cl: &Cluster) -> Duration {
    cl.nodes[&id("a")].lease.bound()
}

/// Cuts (or heals) every link from `n` to the other nodes.
fn cut_outbound(cl: &mut Cluster, n: &str, cut: bool) {
    let others: Vec<NodeId> = cl.nodes.keys().filter(|o| o.as_str() != n).cloned().collect();
    for o in others {
        if cut {
            cl.cut.insert((id(n), o));
        } else {
            cl.cut.remove(&(id(n), o));
        }
    }
}

#[test]
fn the_bound_leaves_the_drift_margin_below_the_failure_timeout() {
    let cl = Cluster::new(&["a", "b", "c"], 1);
    let ft = cl.nodes[&id("a")].view.failure_timeout;
    let margin = |d: Duration| d * (100 - DRIFT_MARGIN_PERCENT) / 100;
    assert_eq!(cl.nodes[&id("a")].hearing_window(), margin(ft), "a peer answers claims over it");
    assert_eq!(bound(&cl), margin(margin(ft)), "the drift margin below that");
    assert!(bound(&cl) > cl.nodes[&id("a")].heartbeat_interval * 2, "a live owner keeps it");
}

/// The owner's outbound links are cut, so its peers stop hearing it: it answers reads and
/// writes `Unavailable` within the lease bound of the cut, before any peer declares it down
/// (and so before any may take its sessions over); its session then moves, and the owner
/// never answers with its stale copy.
#[test]
fn a_cut_off_owner_stops_serving_within_the_bound_and_before_a_peer_may_take_over() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { .. })), "{:?}", cl.outcome(1));
    cl.advance(Duration::from_millis(130)); // the cut falls between two heartbeats
    assert!(matches!(read(&mut cl, "a", 2, "s"), Outcome::Found { .. }));
    let cut_at = cl.now;
    cut_outbound(&mut cl, "a", true);
    let (mut lost_at, mut down_at, mut moved_at) = (None, None, None);
    let mut rid = 10;
    while cl.now < cut_at + Duration::from_secs(4) {
        cl.advance(STEP);
        rid += 1;
        cl.cmd("a", rid, Command::Get { session: "s".into() });
        let o = cl.outcome(rid).cloned();
        match o {
            Some(Outcome::Found { .. }) => assert!(lost_at.is_none(), "served again after losing the lease"),
            Some(Outcome::Unavailable) => {
                lost_at.get_or_insert(cl.now);
                rid += 1;
                set_k(&mut cl, "a", rid, "s", b"stale", Ack::Sync { backups: 1 });
                assert_eq!(cl.outcome(rid), Some(&Outcome::Unavailable), "a write without the lease");
            }
            // Stepped down at the lapse (its read claims the session back, and waits).
            None => {
                lost_at.get_or_insert(cl.now);
            }
            // Demoted when a claim reached it (its inbound links work).
            Some(Outcome::NotOwner { .. } | Outcome::Fenced { .. }) => assert!(lost_at.is_some(), "{o:?}"),
            o => panic!("{o:?}"),
        }
        if down_at.is_none() && ["b", "c"].iter().any(|n| !cl.nodes[&id(n)].is_live(&id("a"))) {
            down_at = Some(cl.now);
        }
        if moved_at.is_none()
            && ["b", "c"].iter().any(|n| cl.session(n, "s").is_some_and(|v| v.role == Role::Owner))
        {
            moved_at = Some(cl.now);
        }
    }
    let lost_at = lost_at.expect("the lease was lost");
    assert!(lost_at <= cut_at + bound(&cl), "lost {:?} after the cut", lost_at - cut_at);
    let down_at = down_at.expect("a peer declared a down");
    assert!(lost_at < down_at, "a peer may take over at {down_at:?}, the lease ended at {lost_at:?}");
    let moved_at = moved_at.expect("s failed over");
    assert!(lost_at < moved_at);
    // Healed: one owner (a's reads may have claimed s back, from the newest copy).
    cut_outbound(&mut cl, "a", false);
    cl.advance(Duration::from_secs(2));
    let owners = ["a", "b", "c"].iter().filter(|n| cl.session(n, "s").is_some_and(|v| v.role == Role::Owner));
    assert_eq!(owners.count(), 1);
}

#[test]
fn a_healthy_owner_never_loses_its_lease() {
    for names in [&["a", "b", "c"][..], &["a", "b"], &["a"], &["a", "b", "c", "d", "e"]] {
        let mut cl = Cluster::new(names, 1);
        create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
        cl.pump();
        let mut rid = 2;
        for _ in 0..200 {
            cl.advance(Duration::from_millis(37));
            rid += 2;
            assert!(matches!(read(&mut cl, "a", rid, "s"), Outcome::Found { .. }), "{names:?} at {rid}");
            set_k(&mut cl, "a", rid + 1, "s", b"v", Ack::Sync { backups: 1 });
            cl.pump();
            let o = cl.outcome(rid + 1);
            assert!(matches!(o, Some(Outcome::Replicated { .. } | Outcome::Unreplicated { .. })), "{o:?}");
        }
    }
}

/// Cut off for a little longer than the bound (less than the failure timeout, so nobody
/// took over), the owner refuses while cut, and serves again once the links heal (it steps
/// down when it notices the lapse, and its next read claims the session back).
#[test]
fn the_lease_comes_back_when_the_links_heal() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    cut_outbound(&mut cl, "a", true);
    let mut rid = 10;
    let lost = loop {
        cl.advance(STEP);
        rid += 1;
        if read(&mut cl, "a", rid, "s") == Outcome::Unavailable {
            break cl.now;
        }
        assert!(rid < 40, "still served 1.5 s after the cut");
    };
    cut_outbound(&mut cl, "a", false);
    let back = loop {
        cl.advance(STEP);
        rid += 1;
        // It stepped down when its lease lapsed: the read claims the session back.
        cl.cmd("a", rid, Command::Get { session: "s".into() });
        cl.pump();
        match cl.outcome(rid) {
            Some(Outcome::Found { .. }) => break cl.now,
            Some(Outcome::Unavailable) => assert!(cl.now - lost < Duration::from_secs(2), "never back"),
            o => panic!("{o:?}"),
        }
    };
    let hb = cl.nodes[&id("a")].heartbeat_interval;
    assert!(back - lost <= hb + STEP, "back {:?} after healing", back - lost);
    let owner = |n: &str| cl.session(n, "s").is_some_and(|v| v.role == Role::Owner);
    assert!(!owner("b") && !owner("c"), "nobody took over");
    assert_eq!(cl.session("a", "s").unwrap().role, Role::Owner);
}

/// A node that hears no majority holds no lease: one node of three started alone refuses
/// creates (it may not know the id is taken); a single-node domain and a domain of two whose
/// peer is down serve (there, one node is a majority, as for a takeover).
#[test]
fn a_node_without_a_majority_refuses_creates_unless_one_node_is_a_majority() {
    for (names, served) in [(&["a", "b", "c"][..], false), (&["a", "b"], true), (&["a"], true)] {
        let t0 = Instant::now();
        let mut a = Node::new(cfg(names, 1), id("a"), 1, Settings::default(), t0).unwrap();
        a.handle_timeout(t0);
        let cmd = Command::Create {
            session: "s".into(),
            attrs: attrs(&[("k", b"v")]),
            max_inactive: Duration::from_secs(60),
            ack: Ack::Async,
        };
        a.handle_input(t0, crate::api::Input::Command { id: 1, cmd });
        let outcome = std::iter::from_fn(|| a.poll_output())
            .find_map(|o| match o {
                crate::api::Output::Outcome { outcome, .. } => Some(outcome),
                _ => None,
            })
            .unwrap();
        assert_eq!(outcome == Outcome::Unavailable, !served, "{names:?}: {outcome:?}");
    }
}

/// In a domain of two, the peer may take over alone: a live peer that stopped hearing the
/// owner (its outbound link cut) ends the owner's lease too.
#[test]
fn in_a_domain_of_two_a_peer_that_does_not_hear_the_owner_ends_its_lease() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    cut_outbound(&mut cl, "a", true);
    cl.advance(bound(&cl) + STEP);
    assert!(cl.nodes[&id("a")].is_live(&id("b")), "a still hears b");
    assert_eq!(read(&mut cl, "a", 2, "s"), Outcome::Unavailable);
}

/// An echo counts only for the incarnation it names, and only up to now: a peer that echoes
/// a previous incarnation's heartbeat (or a garbled time) gives no lease.
#[test]
fn an_echo_of_another_incarnation_or_from_the_future_gives_no_lease() {
    let t0 = Instant::now();
    let mut a = Node::new(cfg(&["a", "b", "c"], 1), id("a"), 7, Settings::default(), t0).unwrap();
    a.handle_timeout(t0);
    let now = t0 + Duration::from_millis(100);
    let hb = |incarnation, sent| Message::Heartbeat {
        incarnation: 1,
        sent: 0,
        echo: Some(Echo { incarnation, sent }),
    };
    a.handle_input(now, crate::api::Input::Message { from: id("b"), msg: hb(6, 50_000) });
    assert!(!a.holds_lease(now), "another incarnation");
    a.handle_input(now, crate::api::Input::Message { from: id("b"), msg: hb(7, 200_000) });
    assert!(!a.holds_lease(now), "from the future");
    a.handle_input(now, crate::api::Input::Message { from: id("b"), msg: hb(7, 50_000) });
    assert!(a.holds_lease(now));
    let end = t0 + Duration::from_millis(50) + a.lease.bound();
    assert!(a.holds_lease(end - Duration::from_millis(1)));
    assert!(!a.holds_lease(end), "the bound after the echoed heartbeat was sent");
}
