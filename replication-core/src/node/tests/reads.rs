//! Reads never show what a failover can lose or what another owner replaced: a read waits for
//! the acknowledgement of a synchronous write, an owner whose lease lapsed steps down before
//! it serves again, and a claim that did not reach a heard owner gives up.

use crate::api::{Ack, Command, Outcome, Role};
use crate::config::NodeId;
use crate::harness::*;
use std::time::Duration;

const STEP: Duration = Duration::from_millis(50);

/// The value of `k` a read answered, or the outcome when it found nothing.
fn k_of(o: Option<&Outcome>) -> Result<Vec<u8>, String> {
    match o {
        Some(Outcome::Found { attrs, .. }) => Ok(attrs.get("k").map(|v| v.to_vec()).unwrap_or_default()),
        other => Err(format!("{other:?}")),
    }
}

/// Node `n` reads `s` as request `rid`, everything delivered: its outcome.
fn read_pumped(cl: &mut Cluster, n: &str, rid: u64, s: &str) -> Option<Outcome> {
    cl.cmd(n, rid, Command::Get { session: s.into() });
    cl.pump();
    cl.outcome(rid).cloned()
}

/// Nodes a, b and c; a owns `s` (`k = v1`), acknowledged by its one backup.
fn owned_by_a() -> Cluster {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { .. })));
    cl
}

/// The backup `a` placed for `s` (one backup), and the third node.
fn backup_and_other(cl: &Cluster, s: &str) -> (String, String) {
    let view = cl.session("a", s).unwrap();
    let b = view.backups[0].0.to_string();
    let other = ["b", "c"].into_iter().find(|n| *n != b).unwrap().to_owned();
    (b, other)
}

/// A read of a session whose synchronous write is still unacknowledged waits for the
/// acknowledgement and then shows it; an asynchronous write is read at once.
#[test]
fn a_read_waits_for_the_acknowledgement_of_a_synchronous_write() {
    let mut cl = owned_by_a();
    set_k(&mut cl, "a", 2, "s", b"v2", Ack::Sync { backups: 1 });
    cl.cmd("a", 3, Command::Get { session: "s".into() });
    assert_eq!(cl.outcome(3), None, "waits for the write's acknowledgement");
    cl.pump();
    assert!(matches!(cl.outcome(2), Some(Outcome::Replicated { .. })));
    assert_eq!(k_of(cl.outcome(3)), Ok(b"v2".to_vec()));
    set_k(&mut cl, "a", 4, "s", b"v3", Ack::Async);
    cl.cmd("a", 5, Command::Get { session: "s".into() });
    assert_eq!(k_of(cl.outcome(5)), Ok(b"v3".to_vec()), "an asynchronous owner reads its copy");
}

/// A synchronous write whose acknowledgement does not come (the backup's link back is cut,
/// and the other node's too) is not shown: the read waiting for it is answered `Unavailable`
/// when it times out, and so are later reads, until a backup acknowledges the retransmitted
/// copy. At no time does a read show `v2` while no other node holds it.
#[test]
fn an_unacknowledged_write_is_not_read_until_a_backup_holds_it() {
    let mut cl = owned_by_a();
    let (b, _) = backup_and_other(&cl, "s");
    cl.cut.insert((id(&b), id("a")));
    set_k(&mut cl, "a", 2, "s", b"v2", Ack::Sync { backups: 1 });
    cl.cmd("a", 3, Command::Get { session: "s".into() });
    cl.pump();
    assert_eq!(cl.outcome(3), None, "waits");
    let held_elsewhere = |cl: &Cluster| {
        ["b", "c"].iter().any(|n| cl.session(n, "s").is_some_and(|v| v.attrs.get("k") == Some(&b"v2"[..])))
    };
    let (mut rid, mut refused) = (10, 0);
    for _ in 0..80 {
        cl.advance(STEP);
        rid += 1;
        cl.cmd("a", rid, Command::Get { session: "s".into() });
        match k_of(cl.outcome(rid)) {
            Ok(v) if v == b"v2" => assert!(held_elsewhere(&cl), "v2 read while only a holds it"),
            Ok(v) => panic!("read {v:?}"),
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 0, "reads waited or were refused while v2 was unacknowledged");
    assert!(cl.outcome(2).is_some() && cl.outcome(3).is_some(), "the write and the read ended");
    cl.cut.remove(&(id(&b), id("a")));
    cl.advance(Duration::from_secs(1));
    assert_eq!(k_of(read_pumped(&mut cl, "a", 1000, "s").as_ref()), Ok(b"v2".to_vec()));
}

/// A write no backup acknowledged, seen by no read, is lost when the owner is cut off and its
/// session fails over: every read anywhere agrees with the write being lost (test
/// `an_unacknowledged_write_is_not_read_until_a_backup_holds_it` shows the read that would
/// have seen it is refused).
#[test]
fn a_write_lost_in_a_failover_was_never_read() {
    let mut cl = owned_by_a();
    // Everything from a is lost from now on: its write reaches nobody.
    for n in ["b", "c"] {
        cl.cut.insert((id("a"), id(n)));
    }
    set_k(&mut cl, "a", 2, "s", b"lost", Ack::Sync { backups: 1 });
    cl.cmd("a", 3, Command::Get { session: "s".into() });
    cl.advance(Duration::from_secs(3));
    assert_ne!(k_of(cl.outcome(3)), Ok(b"lost".to_vec()));
    let got = read_pumped(&mut cl, "b", 4, "s");
    assert_eq!(k_of(got.as_ref()), Ok(b"v1".to_vec()), "the write was lost");
}

/// An owner whose lease lapsed (its outbound links cut) while its session failed over and was
/// written elsewhere steps down at the first echo after the heal: it never answers with its
/// old copy, even in the round trip where it holds the lease again before the new owner's
/// copies reach it.
#[test]
fn an_owner_whose_lease_lapsed_steps_down_before_serving_again() {
    let mut cl = owned_by_a();
    let (b, _) = backup_and_other(&cl, "s");
    for n in ["b", "c"] {
        cl.cut.insert((id("a"), id(n)));
    }
    cl.advance(Duration::from_secs(2));
    set_k(&mut cl, &b, 2, "s", b"new", Ack::Sync { backups: 1 });
    cl.advance(Duration::from_secs(1));
    assert!(matches!(cl.outcome(2), Some(Outcome::Replicated { .. })), "{:?}", cl.outcome(2));
    // Only heartbeats and echoes from now on: nothing else reaches a from the others, so a
    // learns of the new owner only by its own claim.
    for n in ["b", "c"] {
        cl.cut.remove(&(id("a"), id(n)));
    }
    let mut rid = 10;
    for _ in 0..40 {
        cl.now += STEP;
        cl.tick_all();
        let keep = |m: &crate::message::Message| matches!(m, crate::message::Message::Heartbeat { .. });
        cl.wire.retain(|(from, to, m)| !(to.as_str() == "a" && from.as_str() != "a") || keep(m));
        cl.pump();
        rid += 1;
        cl.cmd("a", rid, Command::Get { session: "s".into() });
        assert!(k_of(cl.outcome(rid)) != Ok(b"v1".to_vec()), "the old copy served at {rid}");
    }
    // Its reads claimed s back: it serves the new owner's write.
    assert_eq!(k_of(read_pumped(&mut cl, "a", 1000, "s").as_ref()), Ok(b"new".to_vec()));
}

/// A claim by a node that holds no copy names no owner. When the owner does not hear from
/// it (its own packets to the claimant are lost) and a majority still hears the owner, the
/// claim's answers bring the owner's copy; it did not answer, and its lease may hold: the
/// claim gives up rather than take the session over while the owner still serves its copy.
#[test]
fn a_claim_that_missed_a_heard_owner_gives_up() {
    let mut cl = owned_by_a();
    let (b, other) = backup_and_other(&cl, "s");
    cl.cut.insert((id("a"), id(&other)));
    cl.advance(Duration::from_secs(2));
    assert!(!cl.nodes[&id(&other)].is_live(&id("a")), "{other} declared a down");
    let other_id: NodeId = id(&other);
    assert!(cl.nodes[&id("a")].is_live(&other_id), "a still hears {other}");
    cl.cmd(&other, 2, Command::Get { session: "s".into() });
    cl.advance(Duration::from_secs(1));
    let o = cl.outcome(2).cloned();
    assert!(!matches!(o, Some(Outcome::Found { .. })), "{other} took s from a heard owner: {o:?}");
    set_k(&mut cl, &other, 3, "s", b"new", Ack::Sync { backups: 1 });
    cl.advance(Duration::from_secs(1));
    let o = cl.outcome(3).cloned();
    assert!(!matches!(o, Some(Outcome::Replicated { .. })), "{other} wrote s: {o:?}");
    assert_eq!(k_of(read_pumped(&mut cl, "a", 4, "s").as_ref()), Ok(b"v1".to_vec()));
    assert_eq!(cl.session("a", "s").unwrap().role, Role::Owner, "{b} still hears a");
}

/// An owner whose lease lapsed steps down (above) while nobody failed it over: it still holds
/// the newest copy, and nobody else re-replicates it. It resumes the session (a claim at a
/// new epoch), so that when its backup then fails the copy is made again elsewhere; without
/// that, the session lived on one node until the next request for it.
#[test]
fn a_stepped_down_owner_resumes_and_restores_its_copies() {
    let mut cl = owned_by_a();
    let (b, other) = backup_and_other(&cl, "s");
    // Nothing reaches a: its lease lapses, while b and c still hear it (no failover).
    for n in ["b", "c"] {
        cl.cut.insert((id(n), id("a")));
    }
    cl.advance(Duration::from_millis(1500));
    for n in ["b", "c"] {
        cl.cut.remove(&(id(n), id("a")));
    }
    cl.advance(Duration::from_millis(300));
    assert!(cl.session("a", "s").is_some_and(|v| v.role != Role::Owner), "a stepped down");
    cl.nodes.remove(&id(&b));
    cl.advance(Duration::from_secs(15));
    let view = cl.session("a", "s").expect("a keeps s");
    assert_eq!(view.role, Role::Owner, "a resumed s: {view:?}");
    assert!(view.backups.iter().any(|(n, _)| n.as_str() == other), "s copied to {other}: {view:?}");
    assert!(cl.session(&other, "s").is_some(), "{other} holds a copy of s");
}
