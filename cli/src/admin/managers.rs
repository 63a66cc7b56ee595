//! The admin API of the named session managers a node hosts: `/managers/{name}/sessions...`,
//! the same session routes as `/sessions...` (which serve the anonymous manager), each in
//! the manager's own namespace of ids; and the per-manager counts of `/status`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use session_api::{Metrics, SessionManager};

use super::guard::error;
use super::routes::{AdminState, ListQuery, Shared, create_in, invalidate_in, list_in, read_in, set_in};

/// The routes of `/managers/{name}/sessions` and `/managers/{name}/sessions/{id}`.
pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/managers", get(list_managers))
        .route("/managers/{name}/sessions", post(create).get(list))
        .route(
            "/managers/{name}/sessions/{id}",
            get(read).post(create_id).put(set).patch(set).delete(invalidate),
        )
}

/// The handle of manager `name`, or a 404 naming the managers this node declares.
fn handle(st: &AdminState, name: &str) -> Result<SessionManager, Box<Response>> {
    st.manager.manager(name).map_err(|_| {
        let declared = st.manager.managers();
        let list = if declared.is_empty() { "none".to_owned() } else { declared.join(", ") };
        error(
            StatusCode::NOT_FOUND,
            "unknown-manager",
            format!("node {} declares no session manager `{name}` (it declares: {list})", st.manager.node()),
        )
        .into()
    })
}

/// `GET /managers`: the named managers this node hosts.
async fn list_managers(State(st): Shared) -> Response {
    axum::Json(json!({ "node": st.manager.node().to_string(), "managers": st.manager.managers() }))
        .into_response()
}

async fn create(State(st): Shared, Path(name): Path<String>, body: Bytes) -> Response {
    match handle(&st, &name) {
        Ok(m) => create_in(&st, &m, None, body).await,
        Err(r) => *r,
    }
}

async fn create_id(State(st): Shared, Path((name, id)): Path<(String, String)>, body: Bytes) -> Response {
    match handle(&st, &name) {
        Ok(m) => create_in(&st, &m, Some(id), body).await,
        Err(r) => *r,
    }
}

async fn list(
    State(st): Shared,
    Path(name): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match handle(&st, &name) {
        Ok(m) => list_in(&m, query).await,
        Err(r) => *r,
    }
}

async fn read(State(st): Shared, Path((name, id)): Path<(String, String)>) -> Response {
    match handle(&st, &name) {
        Ok(m) => read_in(&m, id).await,
        Err(r) => *r,
    }
}

async fn set(State(st): Shared, Path((name, id)): Path<(String, String)>, body: Bytes) -> Response {
    match handle(&st, &name) {
        Ok(m) => set_in(&st, &m, id, body).await,
        Err(r) => *r,
    }
}

async fn invalidate(State(st): Shared, Path((name, id)): Path<(String, String)>) -> Response {
    match handle(&st, &name) {
        Ok(m) => invalidate_in(&st, &m, id).await,
        Err(r) => *r,
    }
}

/// `/status`'s `managers`: per manager this node declares (`""`: the anonymous one), the
/// sessions it owns and the backup copies it holds; `None` when it declares none.
pub(super) fn status_managers(manager: &SessionManager, m: &Metrics) -> Option<Value> {
    let declared = manager.managers();
    if declared.is_empty() {
        return None;
    }
    let names = std::iter::once(String::new()).chain(declared);
    let doc: serde_json::Map<String, Value> = names
        .map(|name| {
            let c = m.managers.get(&name).copied().unwrap_or_default();
            (name, json!({ "owned": c.owned, "backed_up": c.backups }))
        })
        .collect();
    Some(Value::Object(doc))
}
