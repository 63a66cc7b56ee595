//! End-to-end tests of `m2m node`, `m2m session` and `m2m status`: real node processes on
//! loopback, with mutual TLS from `m2m certs init`.

mod common;

use common::cluster::{Cluster, TIMING, eventually, http, path};
use common::m2m;

/// `m2m session get` through node `i` until it answers (the failover may still be running),
/// at most 20 s.
fn get_eventually(c: &Cluster, i: usize, id: &str) -> String {
    eventually(20, &format!("session {id} readable through {}", c.names[i]), || {
        let run = c.session(i, &["get", id]);
        (run.code == 0).then_some(run.stdout)
    })
}

#[test]
fn sessions_created_on_a_killed_node_are_read_on_another_node() {
    let mut c = Cluster::new(3, TIMING);
    c.up();
    let mut ids = Vec::new();
    for n in 0..6 {
        let run = c.session(0, &["create", &format!("user=u{n}"), &format!("n={n}")]);
        assert_eq!(run.code, 0, "{run:?}\n{}", c.outputs());
        let id = run.stdout.trim().to_owned();
        assert_eq!(run.stdout, format!("{id}\n"), "create prints only the id");
        assert!(id.contains(".app1"), "the id names its owner: {id}");
        ids.push(id);
    }
    let run = c.session(0, &["set", &ids[0], "cart=book,pen", "n=changed"]);
    assert_eq!(run.code, 0, "{run:?}");
    let mut sorted = ids.clone();
    sorted.sort();
    let listed = |c: &Cluster, i: usize| {
        let run = c.session(i, &["list"]);
        assert_eq!(run.code, 0, "{run:?}");
        run.stdout.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(listed(&c, 0), sorted, "app1 owns what it created");
    assert!(listed(&c, 1).is_empty(), "app2 holds backups only");

    c.kill(0);
    for (n, id) in ids.iter().enumerate() {
        let got = get_eventually(&c, 1, id);
        let want = if n == 0 {
            "cart=book,pen\nn=changed\nuser=u0\n".to_owned()
        } else {
            format!("n={n}\nuser=u{n}\n")
        };
        assert_eq!(got, want, "session {id}\n{}", c.outputs());
    }
    assert_eq!(listed(&c, 1), sorted, "app2 owns every session it read");
    // The survivors see app1 down.
    c.wait_membership(1, &[1, 2]);
    let status = c.status(1, &[]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("DOWN"), "{status:?}");

    // A session that does not exist: exit 1, a clear message.
    let run = c.session(2, &["get", "no-such-session.app1.app2"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no session no-such-session.app1.app2"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn status_shows_membership_sessions_and_lag_as_text_and_json() {
    let mut c = Cluster::new(3, TIMING);
    c.up();
    for n in 0..4 {
        assert_eq!(c.session(1, &["create", &format!("k={n}")]).code, 0);
    }
    let json = c.status(1, &["--format", "json"]);
    assert_eq!(json.code, 0, "{json:?}");
    let s = json.json();
    assert_eq!(s["node"], "app2");
    assert_eq!(s["domain"], "test");
    assert_eq!(s["topology"], "peer-to-peer");
    assert_eq!(s["mode"], "both");
    assert_eq!(s["membership"].as_array().map(Vec::len), Some(3));
    for m in s["membership"].as_array().expect("membership") {
        assert_eq!(m["up"], true, "{m}");
        assert_eq!(m["mode"], "both", "{m}");
    }
    assert_eq!(s["sessions"]["owned"], 4, "{s}");
    assert!(s["sessions"]["under_replicated"].is_number(), "{s}");
    assert!(s["replication_lag"]["sync_writes"].as_u64().unwrap_or(0) >= 4, "{s}");
    // Every write was acknowledged: the backups are not behind.
    assert_eq!(s["replication_lag"]["behind_ms"].as_f64(), Some(0.0), "{s}");
    assert!(s["failovers"].is_number() && s["refused"]["count"].is_number(), "{s}");
    // `m2m certs init` issued the certificate today, for 365 days.
    assert_eq!(s["certificate"]["days_left"], 364, "{s}");
    // The backups of those sessions are on the other nodes.
    let backups: u64 = [0, 2]
        .iter()
        .map(|&i| {
            let r = c.status(i, &["--format", "json"]);
            r.json()["sessions"]["backed_up"].as_u64().unwrap_or(0)
        })
        .sum();
    assert_eq!(backups, 4, "one backup per session");

    let text = c.status(1, &[]);
    assert_eq!(text.code, 0, "{text:?}");
    for want in [
        "node app2 of domain test",
        "app1",
        "app3",
        "up (this node)",
        "sessions owned:",
        "under-replicated:",
        "replication lag:       0.0 ms behind; sync writes last",
        "certificate expires:   in 364 days",
    ] {
        assert!(text.stdout.contains(want), "missing `{want}`:\n{}", text.stdout);
    }

    let (code, metrics) = c.http(1, "GET", "/metrics", &[], "");
    assert_eq!(code, 200, "{metrics}");
    // The exposition is checked with a parser in `tests/metrics.rs`.
    assert!(metrics.contains("\nm2m_sessions_owned{node=\"app2\"} 4\n"), "{metrics}");
    assert!(metrics.contains("\nm2m_certificate_expiry_days{node=\"app2\"} 364\n"), "{metrics}");
    assert!(metrics.contains("\nm2m_peer_up{node=\"app2\",peer=\"app1\"} 1\n"), "{metrics}");
    assert!(metrics.contains("\nm2m_replication_lag_seconds{node=\"app2\"} 0\n"), "{metrics}");
    assert!(
        metrics.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).all(|l| l.starts_with("m2m_")),
        "{metrics}"
    );

    // The JSON API itself.
    let a = 2;
    let (code, body) = c.http(a, "POST", "/sessions", &[], r#"{"user":"bob","n":7}"#);
    assert_eq!(code, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(created["replication"], "replicated", "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let (code, body) = c.http(a, "PATCH", &format!("/sessions/{id}"), &[], r#"{"cart":"pen","n":null}"#);
    assert_eq!(code, 200, "{body}");
    let (code, body) = c.http(0, "GET", &format!("/sessions/{id}"), &[], "");
    assert_eq!(code, 200, "{body}");
    let read: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(read["attributes"], serde_json::json!({"user": "bob", "cart": "pen"}), "{read}");
    assert_eq!(read["node"], "app1", "the reading node became the owner: {read}");
    let (code, body) = c.http(a, "PUT", &format!("/sessions/{id}"), &[], "[1,2]");
    assert_eq!(code, 400, "{body}");
    let (code, _) = c.http(a, "GET", "/sessions/nope.app1.app2", &[], "");
    assert_eq!(code, 404);
    let (code, _) = c.http(a, "DELETE", &format!("/sessions/{id}"), &[], "");
    assert_eq!(code, 200);
    let (code, _) = c.http(a, "DELETE", &format!("/sessions/{id}"), &[], "");
    assert_eq!(code, 404);

    // invalidate, then the session is gone everywhere.
    let id = c.session(0, &["create", "a=1"]).stdout.trim().to_owned();
    let run = c.session(2, &["invalidate", &id]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = c.session(0, &["get", &id]);
    assert_eq!(run.code, 1, "{run:?}");
    let run = c.session(1, &["invalidate", &id]);
    assert_eq!(run.code, 1, "invalidating twice: {run:?}");
}

#[test]
fn sigterm_leaves_gracefully_and_the_sessions_stay_readable() {
    let mut c = Cluster::new(3, TIMING);
    c.up();
    let ids: Vec<String> = (0..5)
        .map(|n| {
            let run = c.session(0, &["create", &format!("n={n}")]);
            assert_eq!(run.code, 0, "{run:?}");
            run.stdout.trim().to_owned()
        })
        .collect();
    c.signal(0, "TERM");
    assert_eq!(c.wait_exit(0, 20), Some(0), "{}", c.output(0));
    let out = c.output(0);
    assert!(out.contains("node app1 left domain test: 5 owned session(s) handed off"), "{out}");
    assert!(out.contains("SIGTERM"), "the log says why: {out}");
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(get_eventually(&c, 2, id), format!("n={n}\n"));
    }
}

#[test]
fn the_owned_session_list_comes_in_pages() {
    let mut c = Cluster::new(1, TIMING);
    c.up();
    let mut ids: Vec<String> = (0..5)
        .map(|n| {
            let run = c.session(0, &["create", &format!("n={n}")]);
            assert_eq!(run.code, 0, "{run:?}");
            run.stdout.trim().to_owned()
        })
        .collect();
    ids.sort();
    let page = |q: &str| {
        let (code, body) = c.http(0, "GET", &format!("/sessions{q}"), &[], "");
        (code, serde_json::from_str::<serde_json::Value>(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
    };
    let (code, first) = page("?limit=2");
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["owned"], 5, "{first}");
    assert_eq!(first["sessions"], serde_json::json!(ids[..2]), "{first}");
    assert_eq!(first["next"], ids[1].as_str(), "{first}");
    let (_, second) = page(&format!("?limit=2&after={}", ids[1]));
    assert_eq!(second["sessions"], serde_json::json!(ids[2..4]), "{second}");
    let (_, last) = page(&format!("?limit=2&after={}", ids[3]));
    assert_eq!(last["sessions"], serde_json::json!(ids[4..]), "{last}");
    assert!(last["next"].is_null(), "the last page has no next: {last}");
    for bad in ["?limit=0", "?limit=10001", "?limit=x", "?colour=red"] {
        let (code, body) = page(bad);
        assert_eq!(code, 400, "{bad}: {body}");
        assert_eq!(body["kind"], "bad-request", "{bad}: {body}");
    }
    let run = c.session(0, &["list"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, ids.iter().map(|i| format!("{i}\n")).collect::<String>());
}

#[test]
fn an_admin_token_file_given_to_the_node_replaces_the_certificates_folders() {
    let mut c = Cluster::new(1, TIMING);
    let token = c.dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").expect("token file");
    let token_arg = path(&token).to_owned();
    c.start(0, &["--admin-token-file", &token_arg]);
    let addr = c.admins[0].clone();
    eventually(20, "the admin API answers", || std::net::TcpStream::connect(&addr).ok().map(|_| ()));
    let (code, body) = http(&addr, "GET", "/status", &[], "");
    assert_eq!(code, 401, "no token: {body}");
    let (code, _) = http(&addr, "GET", "/status", &["Authorization: Bearer wrong"], "");
    assert_eq!(code, 401, "wrong token");
    let (code, _) = http(&addr, "POST", "/sessions", &["Authorization: Bearer s3cret-token!"], "{}");
    assert_eq!(code, 401, "longer token");
    let (code, body) = http(&addr, "GET", "/status", &["Authorization: Bearer s3cret-token"], "");
    assert_eq!(code, 200, "{body}");
    let (code, _) = http(&addr, "GET", "/metrics", &[], "");
    assert_eq!(code, 401, "metrics too");
    let (code, _) = c.http(0, "GET", "/status", &[], "");
    assert_eq!(code, 401, "the certificates folder's token is not this node's");

    let run = m2m(&["status", "--admin", &addr]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("401") && run.stderr.contains("--token-file"), "{run:?}");
    let wrong = c.dir.path().join("wrong");
    std::fs::write(&wrong, "wrong").expect("token file");
    let run = m2m(&["status", "--admin", &addr, "--token-file", path(&wrong)]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("the token was refused"), "{run:?}");
    let run = m2m(&["status", "--admin", &addr, "--token-file", &token_arg]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = m2m(&["session", "create", "--admin", &addr, "--token-file", &token_arg, "k=v"]);
    assert_eq!(run.code, 0, "{run:?}");
    // A single node has no backup: the write succeeds with a warning.
    assert!(run.stderr.contains("no backup is live"), "{run:?}");
    let run = m2m(&["status", "--admin", &addr, "--token-file", "no/such/token"]);
    assert_eq!(run.code, 2, "an unreadable token file: {run:?}");
    assert!(run.stderr.contains("no/such/token"), "{run:?}");
}

#[test]
fn a_write_the_backups_do_not_acknowledge_in_time_exits_3() {
    // A slow failure detector and a short request timeout: a stopped backup is still
    // considered up, so the write waits for it and gives up after 300 ms.
    let timing = "heartbeat_interval_ms = 1000\nfailure_timeout_ms = 30000\nrequest_timeout_ms = 300\n";
    let mut c = Cluster::new(2, timing);
    c.up();
    let id = c.session(0, &["create", "k=1"]).stdout.trim().to_owned();
    c.signal(1, "STOP");
    let run = c.session(0, &["set", &id, "k=2"]);
    c.signal(1, "CONT");
    assert_eq!(run.code, 3, "{run:?}\n{}", c.outputs());
    assert!(run.stderr.contains("not acknowledged"), "{run:?}");
    c.signal(1, "STOP");
    let run = c.session(0, &["create", "k=3"]);
    c.signal(1, "CONT");
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout.lines().count(), 1, "the id is still printed: {run:?}");
    // An invalidation is a write too: its tombstone was not acknowledged in time.
    c.signal(1, "STOP");
    let run = c.session(0, &["invalidate", &id]);
    c.signal(1, "CONT");
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("not acknowledged"), "{run:?}");
}

#[test]
fn a_non_loopback_admin_address_needs_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let domain = dir.path().join("d.toml");
    std::fs::write(
        &domain,
        "[domain]\nname = \"t\"\n[[node]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nadmin = \"192.0.2.1:8101\"\n",
    )
    .expect("write");
    let run = m2m(&["node", "--config", path(&domain), "--name", "a", "--insecure"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("not a loopback address") && run.stderr.contains("--admin-token-file"),
        "{run:?}"
    );
}

#[test]
fn insecure_logs_a_warning_and_sigint_leaves_gracefully() {
    let mut c = Cluster::new(2, TIMING);
    c.start(0, &["--insecure"]);
    c.start(1, &["--insecure"]);
    c.wait_membership(0, &[0, 1]);
    let id = c.session(1, &["create", "k=v"]).stdout.trim().to_owned();
    assert_eq!(c.session(0, &["get", &id]).stdout, "k=v\n");
    c.signal(0, "INT");
    assert_eq!(c.wait_exit(0, 20), Some(0), "{}", c.output(0));
    let out = c.output(0);
    assert!(out.contains("WARN") && out.contains("--insecure"), "{out}");
    assert!(
        out.contains("SIGINT") && out.contains("node app1 left domain test: 1 owned session(s) handed off"),
        "{out}"
    );
    assert_eq!(c.session(1, &["get", &id]).stdout, "k=v\n", "app2 serves it again");
}
