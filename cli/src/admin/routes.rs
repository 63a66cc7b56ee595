//! The routes of the admin API: status, Prometheus metrics (the node's own
//! `metrics-exporter-prometheus` recorder, see [`Exposition`]), and session reads and writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::guard::{Guard, error};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics::Gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde_json::{Value, json};
use session_api::metrics::export::{LATENCY_BUCKETS, NODE_LABEL};
use session_api::{Commit, Error, Metrics, Replication, Session, SessionManager};

/// What the handlers share.
pub(crate) struct AdminState {
    /// The node.
    pub(crate) manager: SessionManager,
    /// The acknowledgement writes use, as text for `/status`.
    pub(crate) ack: String,
    /// When this node's certificate expires (`None` for an insecure node).
    pub(crate) certificate_expiry: Option<std::time::SystemTime>,
    /// What `/metrics` renders.
    pub(crate) exposition: Exposition,
    /// The domain file `POST /domain/reload` reads again.
    pub(crate) domain_file: std::path::PathBuf,
    /// Told when a reload removed this node from the domain: it leaves and the process ends.
    pub(crate) removed: Arc<tokio::sync::Notify>,
}

/// Whole days until `expiry`, from the clock of this call (negative once it passed).
fn days_left(expiry: std::time::SystemTime) -> i64 {
    replication_core::tls::days_left(expiry, std::time::SystemTime::now())
}

/// Seconds since 1970 of `t` (0 before).
fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The admin API's routes, behind the [`guard`](super::guard), and the orchestrators' probes
/// `/live` and `/ready` in front of it: a probe cannot send the token, and the probes tell
/// nothing but whether the node runs and answers for every session.
pub(crate) fn router(state: Arc<AdminState>, guard: Arc<Guard>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/domain/reload", post(reload_domain))
        .route("/sessions", post(create).get(list_owned))
        .route("/sessions/{id}", get(read).post(create_id).put(set).patch(set).delete(invalidate))
        .merge(super::managers::routes())
        .layer(middleware::from_fn_with_state(guard, super::guard::check))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .with_state(state)
}

pub(super) type Shared = State<Arc<AdminState>>;

/// A library error as an HTTP answer.
pub(super) fn failure(e: &Error) -> Response {
    match e {
        Error::NotFound => error(StatusCode::NOT_FOUND, "not-found", "no such session"),
        Error::Timeout => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the node did not answer in time; the write may or may not have been applied",
        ),
        // The write's fate is unknown, as for one its backups did not acknowledge in time.
        Error::Fenced => error(StatusCode::GATEWAY_TIMEOUT, "fenced", e.to_string()),
        Error::Conflict { .. } | Error::TooManyConflicts { .. } => {
            error(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        Error::NotOwner { .. } | Error::Unavailable | Error::Busy | Error::ShuttingDown => {
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
        }
        Error::NotAllowed => error(StatusCode::FORBIDDEN, "not-allowed", e.to_string()),
        Error::AlreadyExists => error(StatusCode::CONFLICT, "already-exists", e.to_string()),
        Error::InvalidId { .. } => error(StatusCode::BAD_REQUEST, "bad-request", e.to_string()),
        Error::TooLarge { .. } => error(StatusCode::PAYLOAD_TOO_LARGE, "too-large", e.to_string()),
        Error::Full { .. } => error(StatusCode::INSUFFICIENT_STORAGE, "full", e.to_string()),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// The attribute value as text: a MessagePack string (what `m2m` and `Session::set` with a
/// `&str` write), else UTF-8 bytes, else hex.
fn value_text(s: &Session, name: &str) -> String {
    if let Ok(Some(v)) = s.get::<String>(name) {
        return v;
    }
    let bytes = s.get_bytes(name).unwrap_or_default();
    match std::str::from_utf8(bytes) {
        Ok(t) => t.to_owned(),
        Err(_) => bytes.iter().fold(String::from("0x"), |mut acc, b| {
            let _ = write!(acc, "{b:02x}");
            acc
        }),
    }
}

fn attributes_json(s: &Session) -> BTreeMap<String, String> {
    s.keys().into_iter().map(|k| (k.to_owned(), value_text(s, k))).collect()
}

/// Attributes from a JSON object body: strings as they are, other scalars as their JSON text,
/// `null` removes the attribute.
fn parse_attributes(body: &Bytes) -> Result<Vec<(String, Option<String>)>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let bad = |m: String| m;
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(bad("the body must be a JSON object of attributes, {\"key\": \"value\"}".into()));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, Some(s))),
            Value::Null => Ok((k, None)),
            Value::Array(_) | Value::Object(_) => Err(bad(format!("attribute `{k}`: values are strings"))),
            other => Ok((k, Some(other.to_string()))),
        })
        .collect()
}

fn apply(s: &mut Session, attrs: &[(String, Option<String>)]) -> session_api::Result<()> {
    for (k, v) in attrs {
        match v {
            Some(v) => s.set(k.clone(), v.as_str())?,
            None => {
                s.remove(k)?;
            }
        }
    }
    Ok(())
}

/// The answer to a write: 200/201 when acknowledged as configured (or asynchronous), 504 when
/// the backups did not acknowledge in time. `extra` fields (an object) are added to the body.
fn write_answer(st: &AdminState, ok: StatusCode, id: &str, c: &Commit, extra: Value) -> Response {
    let node = st.manager.node().to_string();
    let mut body = json!({ "id": id, "version": c.version, "node": node });
    if let (Value::Object(extra), Some(fields)) = (extra, body.as_object_mut()) {
        fields.extend(extra);
    }
    match c.replication {
        Replication::Replicated { acks } => {
            body["replication"] = json!("replicated");
            body["acks"] = json!(acks);
        }
        Replication::Local => body["replication"] = json!("local"),
        Replication::Unreplicated => {
            body["replication"] = json!("unreplicated");
            body["warning"] = json!(format!("no backup is live: the session exists on node {node} only"));
        }
        Replication::Indeterminate { acks } => {
            body["replication"] = json!("not-acknowledged");
            body["acks"] = json!(acks);
            body["kind"] = json!("not-acknowledged");
            body["error"] = json!(format!(
                "the write was applied on node {node} but its backups did not acknowledge it in time \
                 ({acks} acknowledgement(s)); it may be lost if {node} fails"
            ));
            return (StatusCode::GATEWAY_TIMEOUT, axum::Json(body)).into_response();
        }
        _ => body["replication"] = json!("unknown"),
    }
    (ok, axum::Json(body)).into_response()
}

async fn create(State(st): Shared, body: Bytes) -> Response {
    create_in(&st, &st.manager, None, body).await
}

async fn create_id(State(st): Shared, Path(id): Path<String>, body: Bytes) -> Response {
    create_in(&st, &st.manager, Some(id), body).await
}

/// `POST /sessions` (a fresh id) or `POST /sessions/{id}` (409 when taken) in session
/// manager `m`.
pub(super) async fn create_in(
    st: &AdminState,
    m: &SessionManager,
    id: Option<String>,
    body: Bytes,
) -> Response {
    let attrs = match parse_attributes(&body) {
        Ok(a) => a,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad-request", m),
    };
    // A new session is created by its first commit: one write, whose `Commit` says how the
    // backups acknowledged it.
    let mut s = match id.map_or_else(|| m.new_session(), |id| m.new_session_with_id(&id)) {
        Ok(s) => s,
        Err(e) => return failure(&e),
    };
    let id = s.id().to_owned();
    if let Err(e) = apply(&mut s, &attrs) {
        return failure(&e);
    }
    match m.commit(&mut s).await {
        Ok(c) => write_answer(st, StatusCode::CREATED, &id, &c, Value::Null),
        Err(e) => failure(&e),
    }
}

/// Most ids one `GET /sessions` answers; more come page by page with `after`.
pub(crate) const MAX_PAGE: usize = 10_000;

/// The query of `GET /sessions`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Only ids sorting after this one (the `next` of the previous page).
    after: Option<String>,
    /// Page size (default and most: [`MAX_PAGE`]).
    limit: Option<usize>,
}

/// The sessions this node owns, sorted by id, a page at a time:
/// `{"node", "owned": total, "sessions": [ids], "next": id or null}`.
async fn list_owned(
    State(st): Shared,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    list_in(&st.manager, query).await
}

/// `GET /sessions` of session manager `m`.
pub(super) async fn list_in(
    m: &SessionManager,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, "bad-request", format!("{e}; use ?after=ID&limit=N"));
        }
    };
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return error(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("limit must be between 1 and {MAX_PAGE}"),
        );
    }
    let mut ids = match m.owned_sessions().await {
        Ok(ids) => ids,
        Err(e) => return failure(&e),
    };
    ids.sort_unstable();
    let total = ids.len();
    let start = q.after.as_deref().map_or(0, |a| ids.partition_point(|id| id.as_str() <= a));
    let page: Vec<String> = ids.drain(start..).take(limit).collect();
    let next = if start + page.len() < total { page.last().cloned() } else { None };
    axum::Json(json!({
        "node": m.node().to_string(),
        "owned": total,
        "sessions": page,
        "next": next,
    }))
    .into_response()
}

async fn read(State(st): Shared, Path(id): Path<String>) -> Response {
    read_in(&st.manager, id).await
}

/// `GET /sessions/{id}` in session manager `m`.
pub(super) async fn read_in(m: &SessionManager, id: String) -> Response {
    match m.get(&id).await {
        Ok(Some(s)) => axum::Json(json!({
            "id": id,
            "version": s.version(),
            "node": m.node().to_string(),
            "attributes": attributes_json(&s),
        }))
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not-found", format!("no session `{id}`")),
        Err(e) => failure(&e),
    }
}

async fn set(State(st): Shared, Path(id): Path<String>, body: Bytes) -> Response {
    set_in(&st, &st.manager, id, body).await
}

/// `PUT /sessions/{id}` in session manager `m`.
pub(super) async fn set_in(st: &AdminState, m: &SessionManager, id: String, body: Bytes) -> Response {
    let attrs = match parse_attributes(&body) {
        Ok(a) => a,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad-request", m),
    };
    match m.update(&id, |s| apply(s, &attrs)).await {
        Ok(((), c)) => write_answer(st, StatusCode::OK, &id, &c, Value::Null),
        Err(Error::NotFound) => error(StatusCode::NOT_FOUND, "not-found", format!("no session `{id}`")),
        Err(e) => failure(&e),
    }
}

async fn invalidate(State(st): Shared, Path(id): Path<String>) -> Response {
    invalidate_in(&st, &st.manager, id).await
}

/// `DELETE /sessions/{id}` in session manager `m`.
pub(super) async fn invalidate_in(st: &AdminState, m: &SessionManager, id: String) -> Response {
    match m.invalidate(&id).await {
        Ok(Some(c)) => write_answer(st, StatusCode::OK, &id, &c, json!({ "invalidated": true })),
        Ok(None) => error(StatusCode::NOT_FOUND, "not-found", format!("no session `{id}`")),
        Err(e) => failure(&e),
    }
}

fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `/status` document.
pub(crate) fn status_json(st: &AdminState, m: &Metrics) -> Value {
    let (manager, ack) = (&st.manager, st.ack.as_str());
    let cfg = manager.domain();
    let me = manager.node();
    let membership: Vec<Value> = cfg
        .nodes
        .iter()
        .map(|n| {
            if &n.name == me {
                return json!({ "node": n.name.as_str(), "mode": n.mode().as_str(), "self": true, "up": true });
            }
            let up = m.peers.iter().any(|p| p.node == n.name && p.up);
            let connected = m.connected.contains(&n.name);
            json!({ "node": n.name.as_str(), "mode": n.mode().as_str(), "self": false, "up": up, "connected": connected })
        })
        .collect();
    let lag = &m.sync_write_latency;
    let mut doc = json!({
        "node": me.as_str(),
        "domain": cfg.domain.name,
        "topology": cfg.topology().as_str(),
        "mode": cfg.node(me).map(|n| n.mode().as_str()),
        "transport": cfg.domain.transport.to_string(),
        "replicas": cfg.domain.replicas.to_string(),
        "ack": ack,
        "membership": membership,
        "sessions": {
            "owned": m.sessions_owned(),
            "backed_up": m.sessions_backed_up(),
            "under_replicated": m.under_replicated(),
        },
        "replication_lag": {
            "behind_ms": millis(m.replication_lag),
            "sync_writes": lag.count,
            "last_ms": millis(lag.last),
            "mean_ms": millis(lag.mean()),
            "max_ms": millis(lag.max),
        },
        "failovers": m.failovers(),
        "peers_gone": m.peers_gone,
        "acquisitions": m.core.acquisitions,
        "unacknowledged_writes": m.unacked_writes,
        "manager_refused": m.core.manager_refused,
        "refused": {
            "count": m.refused,
            "recent": m.recent_refusals.iter().map(|(peer, reason)| json!({ "peer": peer, "reason": reason })).collect::<Vec<_>>(),
        },
        "certificate": st.certificate_expiry.map(|t| json!({ "not_after": unix_secs(t), "days_left": days_left(t) })),
        "domain_file": domain_file_json(me, m),
    });
    if let Some(managers) = super::managers::status_managers(manager, m) {
        doc["managers"] = managers;
    }
    doc
}

/// Which domain file each node runs (by fingerprint, as this node heard), and whether an
/// online change is under way.
fn domain_file_json(me: &replication_core::NodeId, m: &Metrics) -> Value {
    let Some(d) = &m.domain else { return Value::Null };
    let hex = replication_core::change::fingerprint_hex;
    let mut nodes = vec![
        json!({ "node": me.as_str(), "fingerprint": hex(d.fingerprint), "placed": d.placed, "listed": true }),
    ];
    nodes.extend(d.nodes.iter().map(|n| {
        json!({
            "node": n.node.as_str(),
            "up": n.up,
            // Nothing announced: the peer runs the file it started with and no change was
            // seen since, so the same file as this node.
            "fingerprint": hex(n.fingerprint.unwrap_or(d.fingerprint)),
            "announced": n.fingerprint.is_some(),
            "placed": n.placed,
            "listed": n.listed,
        })
    }));
    json!({ "fingerprint": hex(d.fingerprint), "changing": d.changing, "complete": !d.changing, "nodes": nodes })
}

/// `GET /live`: 200 while the node runs (its engine answers), else 503.
async fn live(State(st): Shared) -> Response {
    match st.manager.metrics().await {
        Ok(_) => axum::Json(json!({ "live": true })).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "live": false }))).into_response(),
    }
}

/// `GET /ready`: 200 once the node answers for every session id
/// ([`SessionManager::is_ready`]), else 503.
async fn ready(State(st): Shared) -> Response {
    let ready = st.manager.is_ready().await;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({ "ready": ready }))).into_response()
}

/// `POST /domain/reload`: reads the domain file again and switches the node to it (200 with
/// what changed), or refuses it (422 with the rules it breaks; the node keeps running on the
/// file it has).
async fn reload_domain(State(st): Shared) -> Response {
    let result = super::reload::reload(&st.manager, &st.domain_file).await;
    super::reload::log(&st.domain_file, &result);
    match result {
        Ok(plan) => {
            if plan.removes_this_node {
                st.removed.notify_one();
            }
            axum::Json(super::reload::plan_json(&plan)).into_response()
        }
        Err(r) => (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(r.json())).into_response(),
    }
}

async fn status(State(st): Shared) -> Response {
    match st.manager.metrics().await {
        Ok(m) => axum::Json(status_json(&st, &m)).into_response(),
        Err(e) => failure(&e),
    }
}

/// The gauge of whole days until this node's certificate expires.
const CERTIFICATE_EXPIRY_DAYS: &str = "m2m_certificate_expiry_days";

/// This node's Prometheus exposition: the node records into its own
/// `metrics-exporter-prometheus` recorder (given to the session manager's builder), and
/// `/metrics` renders it. A recorder per node, not the global one, so that every `/metrics`
/// shows its own node only, however many nodes a process runs.
pub(crate) struct Exposition {
    handle: PrometheusHandle,
    /// Set from the certificate's expiry at each render (`None` for an insecure node).
    certificate_days: Option<(Gauge, std::time::SystemTime)>,
}

impl Exposition {
    /// The recorder for node `node` (for [`session_api::Builder::metrics_recorder`]) and its
    /// exposition. Latency histograms get [`LATENCY_BUCKETS`]; a task drains their samples
    /// every 5 s, so they stay bounded between scrapes.
    pub(crate) fn new(
        node: &str,
        certificate_expiry: Option<std::time::SystemTime>,
    ) -> anyhow::Result<(Arc<PrometheusRecorder>, Exposition)> {
        let recorder = Arc::new(
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Prefix("m2m_".into()), LATENCY_BUCKETS)?
                .build_recorder(),
        );
        let handle = recorder.handle();
        let certificate_days = certificate_expiry.map(|t| {
            let gauge = metrics::with_local_recorder(recorder.as_ref(), || {
                metrics::describe_gauge!(
                    CERTIFICATE_EXPIRY_DAYS,
                    "Whole days until this node's certificate expires (negative once it has)."
                );
                metrics::gauge!(CERTIFICATE_EXPIRY_DAYS, NODE_LABEL => node.to_owned())
            });
            (gauge, t)
        });
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok((recorder, Exposition { handle, certificate_days }))
    }

    /// The metrics in Prometheus' text format, with the domain file's fingerprint of this
    /// node and of each peer that announced one (`m2m_domain_file`, an info metric: value 1,
    /// the fingerprint in a label).
    pub(crate) fn render(&self, m: &Metrics) -> String {
        if let Some((gauge, t)) = &self.certificate_days {
            // Whole days fit an f64 exactly.
            #[allow(clippy::cast_precision_loss)]
            gauge.set(days_left(*t) as f64);
        }
        let mut text = self.handle.render();
        if let (Some(d), Some(me)) = (&m.domain, &m.node) {
            let hex = replication_core::change::fingerprint_hex;
            text.push_str(
                "# HELP m2m_domain_file The fingerprint of the domain file a node runs, as this node knows it (1 per node).\n# TYPE m2m_domain_file gauge\n",
            );
            let _ = writeln!(
                text,
                "m2m_domain_file{{node=\"{me}\",member=\"{me}\",fingerprint=\"{}\"}} 1",
                hex(d.fingerprint)
            );
            for n in &d.nodes {
                let fp = hex(n.fingerprint.unwrap_or(d.fingerprint));
                let _ = writeln!(
                    text,
                    "m2m_domain_file{{node=\"{me}\",member=\"{}\",fingerprint=\"{fp}\"}} 1",
                    n.node
                );
            }
        }
        text
    }
}

async fn metrics(State(st): Shared) -> Response {
    // Taking a snapshot publishes the node's counters and gauges to its recorder.
    match st.manager.metrics().await {
        Ok(m) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], st.exposition.render(&m))
                .into_response()
        }
        Err(e) => failure(&e),
    }
}
