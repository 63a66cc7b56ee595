//! `m2m demo`: a whole domain in one process; every session survives the crash of a node.

mod common;

use common::m2m;

fn check(run: &common::Run, sessions: u32) {
    assert_eq!(run.code, 0, "{run:?}");
    let last = run.stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with(&format!("sessions created: {sessions}, failovers: ")), "{run:?}");
    assert!(last.ends_with("sessions lost: 0"), "{run:?}");
    let failovers: u32 = last
        .split("failovers: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .expect("a failover count");
    assert!(failovers > 0, "the killed node owned sessions that failed over: {run:?}");
    for want in [
        "where the sessions live",
        "killing app1",
        "hot failover",
        "re-replication: under-replicated back to 0",
    ] {
        assert!(run.stdout.contains(want), "missing `{want}`: {run:?}");
    }
}

#[test]
fn demo_over_tcp_loses_no_session() {
    check(&m2m(&["demo", "--sessions", "200"]), 200);
}

#[test]
fn demo_over_quic_loses_no_session() {
    check(&m2m(&["demo", "--transport", "quic", "--sessions", "200"]), 200);
}
