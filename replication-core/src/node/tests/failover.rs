//! Failover: hot, mass, after a settled view, of a peer reported gone; its CPU cost.

use crate::api::{Ack, Command, Event, Input, Outcome, Role, Settings};
use crate::config::{DomainConfig, NodeId};
use crate::harness::*;
use crate::message::{Message, Payload};
use crate::node::acquire::CLAIMS_PER_MESSAGE;
use std::collections::BTreeMap;
use std::time::Duration;

#[test]
fn hot_failover_moves_ownership_to_the_backup() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { .. })));
    let backup = cl.session("a", "s").unwrap().backups[0].0.clone();
    cl.nodes.remove(&id("a"));
    cl.advance(Duration::from_millis(1600));
    let v = cl.nodes[&backup].session("s").unwrap();
    assert_eq!(v.role, Role::Owner, "{v:?}");
    assert_eq!(v.attrs.get("k").unwrap(), b"v1");
    assert_eq!(cl.nodes[&backup].stats().failovers, 1);
    // ... and re-creates the missing replica on the remaining node.
    cl.advance(Duration::from_millis(600));
    let v = cl.nodes[&backup].session("s").unwrap();
    assert_eq!(v.backups.len(), 1);
    assert!(v.backups[0].1);
}

#[test]
fn mass_failover_claims_in_batches() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    let n = 2000;
    for i in 0..n {
        let s = format!("s{i:04}");
        cl.cmd(
            "a",
            i,
            Command::Create {
                session: s,
                attrs: attrs(&[("k", b"v")]),
                max_inactive: Duration::from_secs(600),
                ack: Ack::Async,
            },
        );
    }
    cl.pump();
    cl.nodes.remove(&id("a"));
    // Count the claim messages the survivors send while they take the sessions over.
    let (mut single, mut batches, mut claimed) = (0, 0, 0);
    let end = cl.now + Duration::from_millis(2000);
    while cl.now < end {
        cl.now += Duration::from_millis(5);
        cl.tick_all();
        for (_, _, m) in &cl.wire {
            match m {
                Message::Claim { .. } => single += 1,
                Message::Claims { claims } => {
                    batches += 1;
                    claimed += claims.len();
                    assert!(claims.len() <= CLAIMS_PER_MESSAGE);
                }
                _ => {}
            }
        }
        cl.pump();
    }
    let owned: usize = ["b", "c"].iter().map(|x| cl.nodes[&id(x)].stats().owned).sum();
    assert_eq!(owned, n as usize, "every session failed over");
    assert_eq!(single + claimed, n as usize, "one claim per session (one live peer each)");
    assert!(single + batches <= 16, "claims in batches: {single} single, {batches} batches");
    for i in [0, n / 2, n - 1] {
        let s = format!("s{i:04}");
        let owner = ["b", "c"].into_iter().find(|x| cl.session(x, &s).is_some_and(|v| v.role == Role::Owner));
        assert_eq!(cl.session(owner.unwrap(), &s).unwrap().attrs.get("k").unwrap(), b"v");
    }
}

/// `n` sessions created on `owner` (asynchronous writes, delivered), ids `{i:05}{suffix}`.
fn create_many(cl: &mut Cluster, owner: &str, suffix: &str, n: u64, rid: u64) {
    for i in 0..n {
        cl.cmd(
            owner,
            rid + i,
            Command::Create {
                session: format!("{i:05}{suffix}"),
                attrs: attrs(&[("k", b"v")]),
                max_inactive: Duration::from_secs(600),
                ack: Ack::Async,
            },
        );
        if i % 64 == 0 {
            cl.pump();
        }
    }
    cl.pump();
}

#[test]
fn a_failed_owner_s_sessions_are_all_claimed_in_the_detecting_step() {
    // b holds the backups of a's sessions among more of c's (whose owner lives): the
    // replan pass at a's detection only looks at those and claims every orphan at once
    // (not a pass per eight times `scan_batch` records, the backups of c included, a
    // replan interval apart).
    let settings = Settings { scan_batch: 64, ..Settings::default() };
    let mut cl = Cluster::from_config(cfg(&["a", "b", "c"], 1), settings);
    create_many(&mut cl, "a", "a", 600, 0);
    create_many(&mut cl, "c", "c", 1200, 10_000);
    // Long enough for the view to be settled (see `Membership::settled`).
    cl.advance(Duration::from_secs(2));
    let orphans = cl.nodes[&id("b")].copies().filter(|(_, e, _, _)| e.node == id("a")).count();
    let others = cl.nodes[&id("b")].copies().filter(|(_, e, _, _)| e.node == id("c")).count();
    assert!(orphans > 200 && others > 400, "b holds {orphans} of a's and {others} of c's");
    cl.nodes.remove(&id("a"));
    let end = cl.now + Duration::from_secs(3);
    while cl.now < end {
        cl.now += Duration::from_millis(1);
        let seen = cl.events.len();
        cl.tick_all();
        let detected = cl.events[seen..]
            .iter()
            .any(|(n, e)| *n == id("b") && matches!(e, Event::PeerDown { node } if *node == id("a")));
        if detected {
            let claimed = cl.claims_in_flight_from("b");
            assert_eq!(claimed, orphans, "every orphan claimed at the detection");
            return;
        }
        cl.pump();
    }
    panic!("a never detected down by b");
}

#[test]
fn failovers_skipped_before_the_view_settled_are_claimed_together_when_it_is() {
    // b is deaf (nothing reaches it) long enough to mark every peer down, a crashes
    // meanwhile, and b hears c and d again: it sees enough of the domain, but its view is
    // not complete (a is down, e never started), so the pass at its return may not take
    // a's sessions over (`Membership::settled`) until it has seen enough for the failure
    // timeout; then a new pass claims every orphan at once (not the general scan,
    // `scan_batch` records a tick), at that instant, not a tick later.
    let settings = Settings { scan_batch: 64, ..Settings::default() };
    let mut cl = Cluster::from_config(cfg(&["a", "b", "c", "d", "e"], 1), settings);
    cl.nodes.remove(&id("e"));
    create_many(&mut cl, "a", "a", 900, 0);
    cl.advance(Duration::from_millis(100));
    let orphans = cl.nodes[&id("b")].copies().filter(|(_, e, _, _)| e.node == id("a")).count();
    assert!(orphans > 150, "b holds {orphans} of a's");
    for x in ["a", "c", "d"] {
        cl.cut.insert((id(x), id("b")));
    }
    cl.advance(Duration::from_millis(1500));
    assert!(cl.nodes[&id("b")].peers().iter().all(|p| !p.up), "b marked every peer down");
    cl.nodes.remove(&id("a"));
    // Heard again off the tick instants, so that the settling is off them too.
    cl.now += Duration::from_millis(7);
    cl.cut.clear();
    let end = cl.now + Duration::from_secs(5);
    while cl.now < end {
        cl.now += Duration::from_millis(1);
        cl.tick_all();
        let claimed = cl.claims_in_flight_from("b");
        if claimed > 0 {
            // Each claim goes to the two live peers, c and d.
            assert_eq!(claimed, 2 * orphans, "every orphan claimed in the first step that claims");
            let b = &cl.nodes[&id("b")];
            let settled = b.view.seen_enough_since.map(|t| t + b.view.failure_timeout);
            assert!(
                settled.is_some_and(|t| cl.now >= t && cl.now < t + Duration::from_millis(1)),
                "claimed at {:?}, the view settled at {:?}",
                cl.now - cl.t0,
                settled.map(|t| t - cl.t0)
            );
            return;
        }
        cl.pump();
    }
    panic!("b never claimed a's sessions");
}

#[test]
fn a_mass_failover_sends_no_first_copy_while_its_claims_are_pending() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    let n = 1500;
    create_many(&mut cl, "a", "a", n, 0);
    cl.advance(Duration::from_secs(2));
    cl.nodes.remove(&id("a"));
    let mut fulls = 0;
    let end = cl.now + Duration::from_secs(6);
    while cl.now < end {
        cl.now += Duration::from_millis(1);
        cl.tick_all();
        for (from, _, m) in &cl.wire {
            if let Message::Replicate { payload, .. } = m {
                if matches!(**payload, Payload::Full { .. }) {
                    fulls += 1;
                    let pending = cl.nodes[from].acquires.values().any(|a| a.failover);
                    assert!(!pending, "{from} sent a first copy while its failover claims are pending");
                }
            }
        }
        cl.pump();
    }
    let owned: usize = ["b", "c"].iter().map(|x| cl.nodes[&id(x)].stats().owned).sum();
    assert_eq!(owned, n as usize);
    assert!(fulls >= n, "{fulls} copies for {n} sessions");
    // The copies followed: every session has its backup again.
    for x in ["b", "c"] {
        let node = &cl.nodes[&id(x)];
        let rx = if x == "b" { "c" } else { "b" };
        for s in node.owned_sessions() {
            let v = cl.session(rx, s);
            assert!(v.is_some_and(|v| v.role == Role::Backup), "{s} backed up on {rx}");
        }
    }
}

/// Sessions of `a` (owner) in a three-node domain, `a` crashes, and the survivors are told
/// it is gone (`Input::PeerGone`), `b` first and `c` `lag` later. Returns the virtual time
/// from the crash until every session is owned by a survivor, stepping 1 ms.
fn gone_failover(n: usize, lag: Duration, age: Duration) -> Duration {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    for i in 0..n {
        create(&mut cl, "a", i as u64, &format!("s{i:04}"), Ack::Sync { backups: 1 });
    }
    cl.pump();
    cl.advance(age);
    cl.nodes.remove(&id("a"));
    let crash = cl.now;
    let mut told = [false, false];
    loop {
        let since = cl.now - crash;
        for (k, (name, at)) in [("b", Duration::ZERO), ("c", lag)].into_iter().enumerate() {
            if !told[k] && since >= at {
                told[k] = true;
                let now = cl.now;
                cl.nodes.get_mut(&id(name)).unwrap().handle_input(now, Input::PeerGone { peer: id("a") });
                cl.collect(&id(name));
            }
        }
        cl.pump();
        let owned: usize = ["b", "c"].iter().map(|x| cl.nodes[&id(x)].owned_sessions().count()).sum();
        if owned == n {
            return since;
        }
        assert!(since < Duration::from_secs(10), "no failover: {owned}/{n} owned");
        cl.now += Duration::from_millis(1);
        cl.tick_all();
    }
}

#[test]
fn a_gone_peer_fails_over_at_once() {
    // Told at once: failed and taken over before its silence could reach the failure
    // timeout (1 s by default), and before the hearing window (nine tenths of it).
    // Running for longer than the failure timeout: the view is settled.
    let settled = Duration::from_millis(1500);
    let t = gone_failover(50, Duration::ZERO, settled);
    eprintln!("both told at once: {t:?}");
    assert!(t < Duration::from_millis(100), "{t:?}");
    // A young domain (800 ms, less than the failure timeout): every peer was seen up, so a
    // peer failed afterwards is failed over at once too (`Membership::settled`), not at the
    // failure timeout after the start.
    let t = gone_failover(50, Duration::ZERO, Duration::from_millis(800));
    eprintln!("young domain: {t:?}");
    assert!(t < Duration::from_millis(100), "{t:?}");
    // Even before the first maintenance after every peer came up (ticks of 100 ms).
    let t = gone_failover(50, Duration::ZERO, Duration::from_millis(60));
    eprintln!("newborn domain: {t:?}");
    assert!(t < Duration::from_millis(100), "{t:?}");
    // A survivor told later still hears the owner when the other's claims reach it: it
    // answers them when it is told (not refused, which would hold the failover back for
    // the hearing window, 900 ms here).
    let t = gone_failover(50, Duration::from_millis(20), settled);
    eprintln!("one told 20 ms later: {t:?}");
    assert!(t < Duration::from_millis(100), "{t:?}");
}

/// b is told a is gone, c never is (it fails a at the failure timeout, 1 s): c still hears
/// a when b's claims come, defers them (a heartbeat, 200 ms) and refuses them; b holds
/// its failovers over a for the hearing window (900 ms) and, when the hold ends, a new
/// replan pass claims them all again (c no longer hears a then), not the general scan,
/// `scan_batch` records a tick (8 here, a tick of 200 ms).
#[test]
fn failovers_held_by_a_refusal_are_claimed_again_when_the_hold_ends() {
    let settings = Settings { scan_batch: 8, ..Settings::default() };
    let mut cl = Cluster::from_config(cfg(&["a", "b", "c"], 1), settings);
    for i in 0..50u64 {
        create(&mut cl, "a", i, &format!("s{i:04}"), Ack::Sync { backups: 1 });
    }
    cl.pump();
    cl.advance(Duration::from_millis(1500));
    // b's share: the copies of a's sessions it holds (it is their failover target).
    let share = cl.nodes[&id("b")].copies().filter(|(_, e, _, _)| e.node == id("a")).count();
    assert!(share > 8, "b holds {share} of a's");
    cl.nodes.remove(&id("a"));
    let crash = cl.now;
    let now = cl.now;
    cl.nodes.get_mut(&id("b")).unwrap().handle_input(now, Input::PeerGone { peer: id("a") });
    cl.collect(&id("b"));
    while cl.nodes[&id("b")].owned_sessions().count() < share {
        assert!(cl.now - crash < Duration::from_secs(10), "b never took its share over");
        cl.pump();
        cl.now += Duration::from_millis(1);
        cl.tick_all();
    }
    let t = cl.now - crash;
    assert!(!cl.refusals.is_empty(), "c refused b's first claims");
    let hold = cl.nodes[&id("b")].heartbeat_interval + cl.nodes[&id("b")].hearing_window();
    assert!(t <= hold + Duration::from_millis(20), "b's share owned {t:?} after the crash");
}

/// A live peer wrongly reported gone to one node: that node fails it and claims its
/// sessions, the other node still hears it and refuses the claims (after deferring them),
/// the peer comes back up with its next heartbeat, and every session keeps one owner and
/// its data.
#[test]
fn a_live_peer_wrongly_reported_gone_keeps_its_sessions() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    for i in 0..20u64 {
        create(&mut cl, "a", i, &format!("s{i:02}"), Ack::Sync { backups: 1 });
    }
    cl.pump();
    cl.advance(Duration::from_millis(1500));
    let now = cl.now;
    cl.nodes.get_mut(&id("b")).unwrap().handle_input(now, Input::PeerGone { peer: id("a") });
    cl.collect(&id("b"));
    assert!(cl.nodes[&id("b")].peers().iter().any(|p| p.node == id("a") && !p.up), "b failed a");
    cl.pump();
    assert!(cl.refusals.is_empty(), "c defers b's claims first: {:?}", cl.refusals);
    cl.advance(Duration::from_secs(3));
    assert!(cl.nodes[&id("b")].peers().iter().any(|p| p.node == id("a") && p.up), "a is back up at b");
    assert!(cl.refusals.contains(&(id("c"), id("b"))), "c refused b's claims: {:?}", cl.refusals);
    for i in 0..20 {
        let s = format!("s{i:02}");
        let owners: Vec<&str> = ["a", "b", "c"]
            .into_iter()
            .filter(|n| cl.session(n, &s).is_some_and(|v| v.role == Role::Owner))
            .collect();
        assert_eq!(owners.len(), 1, "{s}: owners {owners:?}");
        let v = cl.session(owners[0], &s).unwrap();
        assert_eq!(v.attrs.get("k"), Some(&b"v1"[..]), "{s}");
    }
}

/// CPU spent by the survivors' engines in a mass failover (no transport): three nodes,
/// `M2M_FAILOVER_SESSIONS` (10,000) sessions owned by app1, which goes silent; virtual time
/// steps of 1 ms, messages delivered at once. For profiling:
/// `cargo test --release -p replication-core --lib failover_cpu -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn failover_cpu() {
    let n: usize = std::env::var("M2M_FAILOVER_SESSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let text = "[domain]\nname = \"t\"\nreplicas = 1\nheartbeat_interval_ms = 50\nfailure_timeout_ms = 300\nrequest_timeout_ms = 2000\n\
        [[node]]\nname = \"app1\"\naddress = \"127.0.0.1:7000\"\n\
        [[node]]\nname = \"app2\"\naddress = \"127.0.0.1:7001\"\n\
        [[node]]\nname = \"app3\"\naddress = \"127.0.0.1:7002\"\n";
    let c = DomainConfig::parse(text, "t").unwrap();
    let mut cl = Cluster::from_config(c, Settings::default());
    for i in 0..n {
        let h = crate::placement::stable_hash(format!("{i}").as_bytes());
        let s = format!("{h:016x}{:08x}.app1", i);
        cl.cmd(
            "app1",
            i as u64,
            Command::Create {
                session: s,
                attrs: attrs(&[("data", &[7u8; 1024])]),
                max_inactive: Duration::from_secs(600),
                ack: Ack::Async,
            },
        );
        if i % 64 == 0 {
            cl.pump();
        }
    }
    cl.pump();
    cl.advance(Duration::from_millis(100));
    cl.nodes.remove(&id("app1"));
    failover_phase(&mut cl, n);
}

/// The failover part of `failover_cpu`, its own function for `perf` (samples under it).
#[inline(never)]
fn failover_phase(cl: &mut Cluster, n: usize) {
    let kill = cl.now;
    let mut cpu: BTreeMap<NodeId, Duration> = BTreeMap::new();
    let mut done_at: BTreeMap<NodeId, Duration> = BTreeMap::new();
    let names = [id("app2"), id("app3")];
    let end = kill + Duration::from_secs(3);
    while cl.now < end {
        cl.now += Duration::from_millis(1);
        let now = cl.now;
        for nm in &names {
            let node = cl.nodes.get_mut(nm).unwrap();
            if node.poll_timeout().is_some_and(|t| t <= now) {
                let t = std::time::Instant::now();
                node.handle_timeout(now);
                *cpu.entry(nm.clone()).or_default() += t.elapsed();
            }
            cl.collect(nm);
        }
        while let Some((from, to, msg)) = cl.wire.pop_front() {
            if let Some(node) = cl.nodes.get_mut(&to) {
                let t = std::time::Instant::now();
                node.handle_input(now, Input::Message { from, msg });
                *cpu.entry(to.clone()).or_default() += t.elapsed();
                cl.collect(&to);
            }
        }
        let owned: usize = names.iter().map(|x| cl.nodes[x].owned_sessions().count()).sum();
        for nm in &names {
            let gained =
                cl.events.iter().any(|(e, ev)| e == nm && matches!(ev, Event::OwnershipGained { .. }));
            if gained && !done_at.contains_key(nm) && owned == n {
                done_at.insert(nm.clone(), now - kill);
            }
        }
        if owned == n {
            break;
        }
    }
    let owned: usize = names.iter().map(|x| cl.nodes[x].owned_sessions().count()).sum();
    for nm in &names {
        let gained =
            cl.events.iter().filter(|(e, ev)| e == nm && matches!(ev, Event::OwnershipGained { .. })).count();
        eprintln!("{nm}: {gained} gained, engine CPU {:?}", cpu.get(nm).copied().unwrap_or_default());
    }
    eprintln!("all {owned}/{n} owned {:?} after the kill (virtual)", cl.now - kill);
    assert_eq!(owned, n);
}

#[test]
fn a_mass_failover_claims_within_its_window() {
    // scan_batch 16: a window of 128 failover claims in flight. b holds about 600 of a's
    // sessions: while nothing answers its claims, it has at most the window out; once the
    // answers flow, it claims the rest in a stream and owns them all.
    let settings = Settings { scan_batch: 16, ..Settings::default() };
    let window = 16 * 8;
    let mut cl = Cluster::from_config(cfg(&["a", "b", "c"], 1), settings);
    create_many(&mut cl, "a", "a", 1200, 0);
    cl.advance(Duration::from_secs(2));
    let orphans = cl.nodes[&id("b")].copies().filter(|(_, e, _, _)| e.node == id("a")).count();
    assert!(orphans > 4 * window, "b holds {orphans} of a's");
    cl.nodes.remove(&id("a"));
    // Claims held back (not delivered) for 300 ms from b's detection of a's failure.
    let claim = |m: &Message| matches!(m, Message::Claim { .. } | Message::Claims { .. });
    let mut held = Vec::new();
    let mut detected_at = None;
    let end = cl.now + Duration::from_secs(3);
    while cl.now < end && detected_at.is_none_or(|t| cl.now < t + Duration::from_millis(300)) {
        cl.now += Duration::from_millis(1);
        let seen = cl.events.len();
        cl.tick_all();
        if cl.events[seen..]
            .iter()
            .any(|(n, e)| *n == id("b") && matches!(e, Event::PeerDown { node } if *node == id("a")))
        {
            detected_at.get_or_insert(cl.now);
        }
        let (claims, rest): (Vec<_>, Vec<_>) = cl.wire.drain(..).partition(|(_, _, m)| claim(m));
        held.extend(claims);
        cl.wire.extend(rest);
        cl.pump();
    }
    assert!(detected_at.is_some(), "a never detected down by b");
    // The sessions b claimed (a claim re-sent while unanswered counts once).
    let mut claimed = std::collections::BTreeSet::new();
    for (_, _, m) in held.iter().filter(|(from, _, _)| *from == id("b")) {
        match m {
            Message::Claims { claims } => claimed.extend(claims.iter().map(|(s, _, _)| s.clone())),
            Message::Claim { session, .. } => {
                claimed.insert(session.clone());
            }
            _ => {}
        }
    }
    let first = claimed.len();
    assert!(
        first > 0 && first <= window,
        "b claimed {first} sessions while none is answered (window {window})"
    );
    // The held claims arrive (late: some time out and are claimed again); the rest stream.
    cl.wire.extend(held);
    cl.pump();
    cl.advance(Duration::from_secs(5));
    let owned: usize = ["b", "c"].iter().map(|x| cl.nodes[&id(x)].stats().owned).sum();
    assert_eq!(owned, 1200, "every session failed over");
}
