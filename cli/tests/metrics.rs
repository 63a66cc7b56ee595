//! `m2m node`'s `/metrics`: the Prometheus exposition of the node's own recorder, read with a
//! Prometheus text parser (names, types, labels, histogram buckets), and the Grafana dashboard
//! `docs/grafana/m2m.json`, every metric and label of whose queries a real node exposes.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::cluster::{Cluster, TIMING};
use common::workspace_root;
use prometheus_parse::{Sample, Scrape, Value};
use session_api::metrics::export::LATENCY_BUCKETS;

/// What operators scrape: every name with its type. Each carries the label `node`; `m2m_peer_up`
/// also `peer`. Names are never renamed or dropped (dashboards and alerts query them).
const EXPOSED: &[(&str, &str)] = &[
    ("m2m_sessions_owned", "gauge"),
    ("m2m_sessions_backed_up", "gauge"),
    ("m2m_sessions_under_replicated", "gauge"),
    ("m2m_tombstones", "gauge"),
    ("m2m_domain_changing", "gauge"),
    ("m2m_domain_file", "gauge"),
    ("m2m_sessions_held", "gauge"),
    ("m2m_sessions_max", "gauge"),
    ("m2m_peers_up", "gauge"),
    ("m2m_peers_down", "gauge"),
    ("m2m_peer_up", "gauge"),
    ("m2m_replication_lag_seconds", "gauge"),
    ("m2m_certificate_expiry_days", "gauge"),
    ("m2m_staged_commits", "gauge"),
    ("m2m_failovers_total", "counter"),
    ("m2m_acquisitions_total", "counter"),
    ("m2m_fenced_total", "counter"),
    ("m2m_manager_refused_total", "counter"),
    ("m2m_bytes_replicated_total", "counter"),
    ("m2m_full_copies_sent_total", "counter"),
    ("m2m_messages_sent_total", "counter"),
    ("m2m_messages_received_total", "counter"),
    ("m2m_send_queue_full_total", "counter"),
    ("m2m_peers_gone_total", "counter"),
    ("m2m_send_errors_total", "counter"),
    ("m2m_refused_connections_total", "counter"),
    ("m2m_unacknowledged_writes_total", "counter"),
    ("m2m_conflicts_total", "counter"),
    ("m2m_requests_total", "counter"),
    ("m2m_staged_lost_total", "counter"),
    ("m2m_sync_write_seconds", "histogram"),
    ("m2m_claim_seconds", "histogram"),
];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Counter(_) => "counter",
        Value::Gauge(_) => "gauge",
        Value::Histogram(_) => "histogram",
        Value::Summary(_) => "summary",
        Value::Untyped(_) => "untyped",
    }
}

/// Node `i`'s `/metrics`, parsed.
fn scrape(c: &Cluster, i: usize) -> Scrape {
    let (code, text) = c.http(i, "GET", "/metrics", &[], "");
    assert_eq!(code, 200, "{text}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the exposition parses")
}

/// The samples of a scrape by metric name; a histogram's `_bucket`, `_sum` and `_count` series
/// are found under their own names too.
fn by_name(s: &Scrape) -> BTreeMap<String, Vec<&Sample>> {
    let mut names: BTreeMap<String, Vec<&Sample>> = BTreeMap::new();
    for x in &s.samples {
        names.entry(x.metric.clone()).or_default().push(x);
        if let Value::Histogram(_) = x.value {
            names.entry(format!("{}_bucket", x.metric)).or_default().push(x);
        }
    }
    names
}

/// The value of `metric` on the node labelled `node` (counters, gauges, `_count` series).
fn value(s: &Scrape, metric: &str, node: &str) -> f64 {
    let x = s.samples.iter().find(|x| x.metric == metric && x.labels.get("node") == Some(node));
    match x.map(|x| &x.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("{metric} of {node}: {other:?}"),
    }
}

#[test]
fn node_metrics_parse_with_their_names_types_labels_and_buckets_and_the_dashboard_queries_exist() {
    let mut c = Cluster::new(3, TIMING);
    c.up();
    let mut ids = Vec::new();
    for n in 0..4 {
        let run = c.session(0, &["create", &format!("k={n}")]);
        assert_eq!(run.code, 0, "{run:?}");
        ids.push(run.stdout.trim().to_owned());
    }
    // A read on app2 of a session app1 owns: app2 claims it.
    let run = c.session(1, &["get", &ids[0]]);
    assert_eq!(run.code, 0, "{run:?}");

    let scrapes: Vec<Scrape> = (0..3).map(|i| scrape(&c, i)).collect();
    for (i, s) in scrapes.iter().enumerate() {
        let me = c.names[i].as_str();
        let names = by_name(s);
        for &(name, want) in EXPOSED {
            let samples = names.get(name).unwrap_or_else(|| panic!("{me} does not expose {name}"));
            for x in samples {
                assert_eq!(kind(&x.value), want, "{name}'s type");
                assert_eq!(x.labels.get("node"), Some(me), "{name} names its node");
                assert!(s.docs.get(name).is_some_and(|d| !d.is_empty()), "{name} has a HELP line");
            }
            let labels: BTreeSet<&str> =
                samples.iter().flat_map(|x| x.labels.keys()).map(String::as_str).collect();
            let want_labels: BTreeSet<&str> = match name {
                "m2m_peer_up" => ["node", "peer"].into(),
                "m2m_domain_file" => ["node", "member", "fingerprint"].into(),
                _ => ["node"].into(),
            };
            assert_eq!(labels, want_labels, "{name}'s labels");
        }
        // Every m2m_ series is listed above (a new one is added there on purpose).
        for x in &s.samples {
            let base = x.metric.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(EXPOSED.iter().any(|(n, _)| *n == base), "{} is not listed", x.metric);
        }
        let peers: BTreeSet<&str> =
            names["m2m_peer_up"].iter().filter_map(|x| x.labels.get("peer")).collect();
        let others: BTreeSet<&str> = c.names.iter().map(String::as_str).filter(|n| *n != me).collect();
        assert_eq!(peers, others, "one m2m_peer_up per other node");
        assert!(names["m2m_peer_up"].iter().all(|x| matches!(x.value, Value::Gauge(v) if v == 1.0)));
        // Latency histograms: the buckets m2m's exporter sets, cumulative.
        for h in ["m2m_sync_write_seconds", "m2m_claim_seconds"] {
            let Value::Histogram(buckets) = &names[h][0].value else { unreachable!("checked above") };
            let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
            let mut want = LATENCY_BUCKETS.to_vec();
            want.push(f64::INFINITY);
            assert_eq!(bounds, want, "{h}'s buckets");
            assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count), "{h} cumulative: {buckets:?}");
            let total = buckets.last().map_or(0.0, |b| b.count);
            assert_eq!(total, value(s, &format!("{h}_count"), me), "{h}: +Inf bucket = _count");
        }
    }
    let [app1, app2, _] = [0, 1, 2].map(|i| &scrapes[i]);
    assert_eq!(value(app1, "m2m_sessions_owned", "app1"), 3.0);
    assert_eq!(value(app2, "m2m_sessions_owned", "app2"), 1.0);
    assert_eq!(value(app1, "m2m_certificate_expiry_days", "app1"), 364.0);
    assert!(value(app1, "m2m_sync_write_seconds_count", "app1") >= 4.0, "every create waited for a backup");
    assert!(value(app1, "m2m_sync_write_seconds_sum", "app1") > 0.0);
    assert_eq!(value(app2, "m2m_claim_seconds_count", "app2"), 1.0, "one read claimed a session");
    assert_eq!(value(app2, "m2m_acquisitions_total", "app2"), 1.0);

    dashboard_queries_exist(&scrapes[0]);
}

/// Every metric the dashboard queries is in `s`, with every label its selectors and
/// aggregations name.
fn dashboard_queries_exist(s: &Scrape) {
    let path = workspace_root().join("docs/grafana/m2m.json");
    let text = std::fs::read_to_string(&path).expect("docs/grafana/m2m.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "the dashboard's queries: {queries:?}");
    let names = by_name(s);
    let mut used = BTreeSet::new();
    for q in &queries {
        for (metric, labels) in metrics_in(q) {
            let samples = names.get(&metric).unwrap_or_else(|| panic!("`{q}` queries {metric}, not exposed"));
            let have: BTreeSet<&str> =
                samples.iter().flat_map(|x| x.labels.keys()).map(String::as_str).collect();
            for l in labels {
                assert!(l == "le" || have.contains(l.as_str()), "`{q}`: {metric} has no label {l}");
            }
            used.insert(metric);
        }
    }
    for must in [
        "m2m_sessions_owned",
        "m2m_sessions_backed_up",
        "m2m_sessions_under_replicated",
        "m2m_peer_up",
        "m2m_replication_lag_seconds",
        "m2m_sync_write_seconds_bucket",
        "m2m_failovers_total",
        "m2m_refused_connections_total",
        "m2m_certificate_expiry_days",
    ] {
        assert!(used.contains(must), "the dashboard shows {must}");
    }
}

/// The PromQL of every panel target (`expr`) and template variable (`query`).
fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(q)) if q.contains("m2m_") => {
                        out.push(q.clone())
                    }
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

/// The `m2m_` metrics a PromQL query names, each with the labels of its selector, of the `by`
/// clause that follows it or of a `label_values(metric, label)` around it.
fn metrics_in(q: &str) -> Vec<(String, Vec<String>)> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let by: Vec<String> = q
        .split("by (")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .flat_map(|l| l.split(',').map(|l| l.trim().to_owned()))
        .collect();
    let mut found = Vec::new();
    let mut rest = q;
    while let Some(at) = rest.find("m2m_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
        let metric = tail[..end].to_owned();
        let mut labels = by.clone();
        let after = &tail[end..];
        if let Some(selector) = after.strip_prefix('{').and_then(|s| s.split('}').next()) {
            labels.extend(selector.split(',').filter_map(|m| {
                let name = m.split(['=', '!']).next()?.trim();
                (!name.is_empty()).then(|| name.to_owned())
            }));
        }
        if let Some(label) = q.strip_prefix("label_values(").and_then(|s| s.split(',').nth(1)) {
            labels.push(label.trim_end_matches(')').trim().to_owned());
        }
        found.push((metric, labels));
        rest = &tail[end..];
    }
    found
}
