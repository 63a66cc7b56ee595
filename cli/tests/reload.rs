//! Reloading the domain file of running `m2m node` processes (`POST /domain/reload`, SIGHUP):
//! refused files answer 422 with the rule they break and change nothing; an allowed change is
//! taken and shown by `m2m status` and `/metrics`; a node added to a running domain links to
//! it and gets its copies; a node the new file no longer lists leaves and exits 0.

mod common;

use common::cluster::{Cluster, TIMING, eventually};

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn reload(c: &Cluster, i: usize) -> (u16, serde_json::Value) {
    let (code, body) = c.http(i, "POST", "/domain/reload", &[], "");
    (code, json(&body))
}

fn fingerprint(c: &Cluster, i: usize) -> String {
    let run = c.status(i, &["--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    run.json()["domain_file"]["fingerprint"].as_str().expect("a fingerprint").to_owned()
}

#[test]
fn refused_reloads_name_their_rule_and_the_node_keeps_its_file() {
    let mut c = Cluster::new(2, TIMING);
    c.up();
    let good = std::fs::read_to_string(&c.domain).expect("domain file");
    let before = fingerprint(&c, 0);
    let app1_address = good
        .lines()
        .find(|l| l.starts_with("address"))
        .and_then(|l| l.split('"').nth(1))
        .expect("an address")
        .to_owned();
    let cases: Vec<(String, &str)> = vec![
        (good.replace("name = \"test\"", "name = \"other\""), "change-domain-name"),
        (good.replace("[domain]\n", "[domain]\ntransport = \"quic\"\n"), "change-transport"),
        (good.replacen(&app1_address, "127.0.0.1:1", 1), "change-node-address"),
        (good.replace("[domain]\n", "[domain]\nreplicas = 0\n"), "replicas-min"),
        ("[domain\nthis is not toml".to_owned(), "parse"),
    ];
    for (text, rule) in cases {
        std::fs::write(&c.domain, &text).expect("write");
        let (code, body) = reload(&c, 0);
        assert_eq!(code, 422, "{rule}: {body}");
        assert_eq!(body["kind"], "refused", "{body}");
        assert!(body["rules"].as_array().expect("rules").iter().any(|r| r == rule), "{rule}: {body}");
        assert_eq!(fingerprint(&c, 0), before, "{rule}: the node keeps running on its file");
    }
    std::fs::remove_file(&c.domain).expect("remove");
    let (code, body) = reload(&c, 0);
    assert_eq!((code, body["rules"][0].as_str()), (422, Some("unreadable")), "{body}");
    assert!(c.output(0).contains("change-domain-name"), "the refusal is logged with its rule");
    // The node still serves.
    std::fs::write(&c.domain, &good).expect("write");
    let (code, body) = reload(&c, 0);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["unchanged"], true, "{body}");
}

#[test]
fn replicas_changed_by_sighup_and_by_the_admin_api_reach_status_and_metrics() {
    let mut c = Cluster::new(3, TIMING);
    c.up();
    for _ in 0..10 {
        let run = c.session(0, &["create", "k=v"]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let before = fingerprint(&c, 0);
    let text = std::fs::read_to_string(&c.domain)
        .expect("domain file")
        .replace("[domain]\n", "[domain]\nreplicas = 2\n");
    std::fs::write(&c.domain, text).expect("write");
    // app1 by the admin API, app2 by SIGHUP; app3 not yet: the change runs.
    let (code, body) = reload(&c, 0);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["replicas_changed"], true, "{body}");
    c.signal(1, "HUP");
    let after = body["fingerprint"].as_str().expect("fingerprint").to_owned();
    assert_ne!(after, before);
    eventually(20, "app1 sees app3 on the former file", || {
        let s = c.status(0, &["--format", "json"]).json();
        let changing = s["domain_file"]["changing"].as_bool()?;
        let app3 = s["domain_file"]["nodes"].as_array()?.iter().find(|n| n["node"] == "app3")?.clone();
        (changing && app3["fingerprint"] == before.as_str()).then_some(())
    });
    let text = c.status(0, &[]);
    assert!(text.stdout.contains("CHANGING"), "{}", text.stdout);
    let (_, metrics) = c.http(0, "GET", "/metrics", &[], "");
    assert!(metrics.contains("m2m_domain_changing{node=\"app1\"} 1"), "{metrics}");
    assert!(metrics.contains(&format!("member=\"app3\",fingerprint=\"{before}\"")), "{metrics}");
    c.signal(2, "HUP");
    for i in 0..3 {
        eventually(20, "the change completes", || {
            let s = c.status(i, &["--format", "json"]).json();
            let done = s["domain_file"]["complete"].as_bool()? && s["sessions"]["under_replicated"] == 0;
            (done && s["domain_file"]["fingerprint"] == after.as_str()).then_some(())
        });
    }
    let (_, metrics) = c.http(0, "GET", "/metrics", &[], "");
    assert!(metrics.contains("m2m_domain_changing{node=\"app1\"} 0"), "{metrics}");
    assert!(c.status(0, &[]).stdout.contains("complete"));
}

#[test]
fn a_node_added_to_a_running_domain_by_reload_gets_its_copies() {
    let mut c = Cluster::new(3, &format!("{TIMING}replicas = \"entire-domain\"\n"));
    let three = std::fs::read_to_string(&c.domain).expect("domain file");
    let app3 = three.find("[[node]]\nname = \"app3\"").expect("app3 listed");
    std::fs::write(&c.domain, &three[..app3]).expect("write the 2-node file");
    c.start(0, &[]);
    c.start(1, &[]);
    c.wait_membership(0, &[0, 1]);
    c.wait_membership(1, &[0, 1]);
    for _ in 0..5 {
        let run = c.session(0, &["create", "k=v"]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    // app3 starts on the 3-node file; app1 takes it by the admin API, app2 by SIGHUP.
    std::fs::write(&c.domain, &three).expect("write the 3-node file");
    c.start(2, &[]);
    let (code, body) = reload(&c, 0);
    assert_eq!(code, 200, "{body}");
    c.signal(1, "HUP");
    let after = body["fingerprint"].as_str().expect("fingerprint").to_owned();
    for i in 0..3 {
        eventually(30, "the change completes and app3 holds every copy", || {
            let s = c.status(i, &["--format", "json"]).json();
            let done = s["domain_file"]["complete"].as_bool()? && s["sessions"]["under_replicated"] == 0;
            let copies = i != 2 || s["sessions"]["backed_up"] == 5;
            (done && copies && s["domain_file"]["fingerprint"] == after.as_str()).then_some(())
        });
    }
    c.wait_membership(0, &[0, 1, 2]);
    assert!(c.status(2, &[]).stdout.contains("complete"), "{}", c.outputs());
}

#[test]
fn a_node_the_reloaded_file_no_longer_lists_leaves_and_exits() {
    let mut c = Cluster::new(3, TIMING);
    c.up();
    let run = c.session(2, &["create", "k=kept"]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = run.stdout.trim().to_owned();
    let text = std::fs::read_to_string(&c.domain).expect("domain file");
    let app3 = text.find("[[node]]\nname = \"app3\"").expect("app3 listed");
    std::fs::write(&c.domain, &text[..app3]).expect("write");
    for i in [0, 1] {
        c.signal(i, "HUP");
    }
    let (code, body) = reload(&c, 2);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["leaves"], true, "{body}");
    assert_eq!(c.wait_exit(2, 20), Some(0), "{}", c.output(2));
    assert!(c.output(2).contains("removed from the domain file"), "{}", c.output(2));
    let run = c.session(0, &["get", &id]);
    assert_eq!(run.code, 0, "{id} handed off: {run:?}");
    assert!(run.stdout.contains("kept"), "{run:?}");
}
