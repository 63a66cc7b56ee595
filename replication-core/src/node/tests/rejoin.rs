//! A restarted node that has linked to some of its peers only: it takes no session over from
//! a live owner it has not reached, and answers `NotFound` only when a node that may hold the
//! session answered; and a peer seen restarting does not vouch for a failover within the
//! hearing window, while the owner's read lease may rest on its former incarnation.

use crate::api::{Ack, Command, Outcome, Role, Settings};
use crate::harness::*;
use crate::node::Node;
use crate::placement::Placement;
use std::time::Duration;

/// A session id whose single backup, when owned by `owner`, is `backup` (all nodes live).
fn session_backed_up(owner: &str, backup: &str) -> String {
    let placement = Placement::new(&cfg(&["a", "b", "c"], 1));
    (0..1000)
        .map(|i| format!("s{i}"))
        .find(|s| placement.backups(s, &id(owner), |_| true) == vec![id(backup)])
        .expect("such an id")
}

/// Restarts `node` (a new incarnation) with the links between each pair of `cut` cut both
/// ways, then lets the view settle (it hears the third node), within twice the failure timeout
/// of its start.
fn restart_apart(cl: &mut Cluster, node: &str, cut: &[(&str, &str)]) {
    for (x, y) in cut {
        cl.cut.insert((id(x), id(y)));
        cl.cut.insert((id(y), id(x)));
    }
    let fresh = Node::new(cfg(&["a", "b", "c"], 1), id(node), 2, Settings::default(), cl.now).unwrap();
    cl.nodes.insert(id(node), fresh);
    // The default failure timeout is 1 s: settled after it, memory not trusted before 2 s.
    cl.advance(Duration::from_millis(1200));
}

fn heal(cl: &mut Cluster) {
    cl.cut.clear();
    cl.advance(Duration::from_millis(1500));
}

#[test]
fn a_restarted_node_does_not_fetch_from_a_live_owner_it_has_not_reached() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    // c owns s, b holds its backup; a restarts and reaches b only.
    let s = session_backed_up("c", "b");
    create(&mut cl, "c", 1, &s, Ack::Sync { backups: 1 });
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { .. })), "{:?}", cl.outcome(1));
    restart_apart(&mut cl, "a", &[("a", "c")]);
    cl.cmd("a", 2, Command::Get { session: s.clone() });
    cl.pump();
    cl.advance(Duration::from_millis(400));
    // b still hears c: it refuses the claim over c, and c keeps serving s.
    assert_eq!(cl.outcome(2), Some(&Outcome::Unavailable));
    assert_eq!(cl.session("c", &s).unwrap().role, Role::Owner);
    assert_ne!(cl.session("a", &s).map(|v| v.role), Some(Role::Owner));
    // Linked to c, a fetches it from c.
    heal(&mut cl);
    cl.cmd("a", 3, Command::Get { session: s.clone() });
    cl.pump();
    cl.advance(Duration::from_millis(400));
    assert!(matches!(cl.outcome(3), Some(Outcome::Found { .. })), "{:?}", cl.outcome(3));
    assert_ne!(cl.session("c", &s).map(|v| v.role), Some(Role::Owner));
}

#[test]
fn a_restarted_node_answers_unavailable_for_a_session_its_peers_may_hold() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    // b owns s, a held its backup; a restarts (its copy gone) while b is cut off from both.
    let s = session_backed_up("b", "a");
    create(&mut cl, "b", 1, &s, Ack::Sync { backups: 1 });
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { .. })), "{:?}", cl.outcome(1));
    restart_apart(&mut cl, "a", &[("a", "b"), ("b", "c")]);
    // c has no copy, and a's own empty memory says nothing yet: only b may hold it.
    cl.cmd("a", 2, Command::Get { session: s.clone() });
    cl.pump();
    cl.advance(Duration::from_millis(100));
    assert_eq!(cl.outcome(2), Some(&Outcome::Unavailable));
    // c, which heard every peer, answers for an id nobody holds at once.
    cl.cmd("c", 3, Command::Get { session: "never".into() });
    cl.pump();
    assert_eq!(cl.outcome(3), Some(&Outcome::NotFound));
    heal(&mut cl);
    cl.cmd("a", 4, Command::Get { session: s.clone() });
    cl.pump();
    cl.advance(Duration::from_millis(100));
    assert!(matches!(cl.outcome(4), Some(Outcome::Found { .. })), "{:?}", cl.outcome(4));
    cl.cmd("a", 5, Command::Get { session: "never".into() });
    cl.pump();
    assert_eq!(cl.outcome(5), Some(&Outcome::NotFound));
}

#[test]
fn a_peer_restarted_within_the_hearing_window_does_not_vouch_for_a_failover() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    // a owns s, b holds its backup (the failover target); the domain is older than the
    // hearing window (0.9 s).
    let s = session_backed_up("a", "b");
    create(&mut cl, "a", 1, &s, Ack::Sync { backups: 1 });
    cl.pump();
    cl.advance(Duration::from_millis(1500));
    // a crashes; c restarts half a second later: a's read lease may rest on what c's former
    // incarnation heard until then.
    cl.nodes.remove(&id("a"));
    cl.advance(Duration::from_millis(500));
    let fresh = Node::new(cfg(&["a", "b", "c"], 1), id("c"), 2, Settings::default(), cl.now).unwrap();
    cl.nodes.insert(id("c"), fresh);
    // b fails a at its failure timeout (1 s after the crash): c's answer does not count yet.
    cl.advance(Duration::from_millis(700));
    assert_ne!(cl.session("b", &s).map(|v| v.role), Some(Role::Owner));
    // Once the hearing window since c's restart has passed, b takes s over.
    cl.advance(Duration::from_millis(1500));
    assert_eq!(cl.session("b", &s).map(|v| v.role), Some(Role::Owner));
}
