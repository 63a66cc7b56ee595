//! A session is bounded by the domain's `max_session_bytes` (default 4 MiB, a quarter of the
//! 16 MiB frame), so that every acknowledged write stays readable: a full copy of any session
//! always fits a frame, through a fetch by another node, re-replication and a rejoin. Real
//! node processes, mutual TLS, the admin API.

mod common;

use common::cluster::{Cluster, TIMING, eventually};
use serde_json::Value;

const JSON: &str = "Content-Type: application/json";
/// Under the admin API's 1 MiB body limit.
const PIECE: usize = 900 * 1024;

fn value(i: usize) -> String {
    char::from(b'a' + i as u8).to_string().repeat(PIECE)
}

/// `GET /sessions/{id}` on node `i`: the version and the length of each attribute.
fn read(c: &Cluster, i: usize, id: &str) -> Option<(u64, Vec<(String, usize)>)> {
    let (code, body) = c.http(i, "GET", &format!("/sessions/{id}"), &[], "");
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let attrs = v["attributes"].as_object()?;
    let lens = attrs.iter().map(|(k, v)| (k.clone(), v.as_str().map_or(0, str::len))).collect();
    Some((v["version"].as_u64()?, lens))
}

#[test]
fn a_session_grows_to_the_limit_and_no_further_and_survives_fetch_failover_and_rejoin() {
    // Two backups: every node holds the session, so a rejoined node must be filled.
    let mut c = Cluster::new(3, &format!("{TIMING}replicas = 2\n"));
    c.up();
    let (code, body) = c.http(0, "POST", "/sessions", &[JSON], &format!("{{\"k0\": \"{}\"}}", value(0)));
    assert_eq!(code, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).expect("json")["id"].as_str().expect("id").to_owned();
    // 0.9 MiB a write: three more fit in 4 MiB, the fourth does not.
    for i in 1..=3 {
        let (code, body) = c.http(
            0,
            "PATCH",
            &format!("/sessions/{id}"),
            &[JSON],
            &format!("{{\"k{i}\": \"{}\"}}", value(i)),
        );
        assert_eq!(code, 200, "write {i}: {body}");
        assert!(body.contains("\"replicated\""), "write {i} acknowledged by a backup: {body}");
    }
    let (code, body) =
        c.http(0, "PATCH", &format!("/sessions/{id}"), &[JSON], &format!("{{\"k4\": \"{}\"}}", value(4)));
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("too-large") && body.contains("4194304"), "names the limit: {body}");
    let want: Vec<(String, usize)> = (0..=3).map(|i| (format!("k{i}"), PIECE)).collect();
    assert_eq!(read(&c, 0, &id), Some((4, want.clone())), "the refused write applied nothing");

    // A fetch: node 2 takes the whole session over (a full copy in a claim answer).
    assert_eq!(read(&c, 1, &id), Some((4, want.clone())), "fetched whole");
    // Its owner (node 2) is killed: a survivor fails it over and reads it whole.
    c.kill(1);
    let after_failover =
        eventually(20, "a survivor serves the session", || read(&c, 2, &id).or_else(|| read(&c, 0, &id)));
    assert_eq!(after_failover, (4, want.clone()));
    // Node 2 rejoins empty and is filled with the whole session (re-replication of a full
    // copy); then the owner is killed, and node 2 reads it whole.
    c.start(1, &[]);
    c.wait_membership(0, &[0, 1, 2]);
    eventually(30, "the rejoined node holds a copy", || {
        let s = c.status(1, &["--format", "json"]).json();
        (s["sessions"]["backed_up"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    let owner = if c.status(2, &["--format", "json"]).json()["sessions"]["owned"].as_u64() == Some(1) {
        2
    } else {
        0
    };
    c.kill(owner);
    let last = eventually(20, "the session survives", || read(&c, 1, &id));
    assert_eq!(last, (4, want), "nothing acknowledged was lost");
}

#[test]
fn a_node_at_its_max_sessions_refuses_creates_with_507_and_says_so_in_its_metrics() {
    let mut c = Cluster::new(2, TIMING);
    for i in 0..2 {
        c.start(i, &["--max-sessions", "3"]);
    }
    c.wait_membership(0, &[0, 1]);
    c.wait_membership(1, &[0, 1]);
    let mut created = Vec::new();
    for n in 0..3 {
        let (code, body) = c.http(0, "POST", "/sessions", &[JSON], &format!("{{\"n\": \"{n}\"}}"));
        assert_eq!(code, 201, "{body}");
        created
            .push(serde_json::from_str::<Value>(&body).expect("json")["id"].as_str().expect("id").to_owned());
    }
    let (code, body) = c.http(0, "POST", "/sessions", &[JSON], "{\"n\": \"4\"}");
    assert_eq!(code, 507, "{body}");
    assert!(body.contains("\"full\"") && body.contains("limit of 3"), "{body}");
    // What the node holds still takes writes.
    let (code, body) = c.http(0, "PATCH", &format!("/sessions/{}", created[0]), &[JSON], "{\"more\": \"x\"}");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = c.http(0, "GET", "/metrics", &[], "");
    assert!(metrics.contains("m2m_sessions_held{node=\"app1\"} 3"), "{metrics}");
    assert!(metrics.contains("m2m_sessions_max{node=\"app1\"} 3"), "{metrics}");
}
