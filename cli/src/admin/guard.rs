//! What every admin request passes before a route sees it, in this order:
//!
//! 1. No browser: a request with an `Origin` or `Sec-Fetch-Site` header is refused (403
//!    `browser-request`). Browsers add them to every cross-site request, so a web page cannot
//!    reach the API through the user's browser; `m2m`, curl and scrapers send neither.
//! 2. JSON bodies only: a request with a body whose `Content-Type` is not `application/json` is
//!    refused (415 `unsupported-media-type`); an HTML form cannot send one.
//! 3. The bearer token, when the node has one (401 `unauthorized`).
//! 4. The body is at most [`MAX_BODY`] bytes (413 `body-too-large`, at once when its
//!    `Content-Length` says more) and arrives whole within the body timeout (408
//!    `body-timeout`); the routes get it buffered.
//!
//! Every refusal is a JSON error, `{"error": ..., "kind": ...}`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Most bytes a request body may have (a session's attributes as JSON).
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// The guard's settings.
#[derive(Debug)]
pub(crate) struct Guard {
    /// When set, every request must carry it as a bearer token.
    pub(crate) token: Option<String>,
    /// How long a request's body may take to arrive, all of it.
    pub(crate) body_timeout: Duration,
}

/// Compares without stopping at the first difference.
fn same_token(given: &[u8], wanted: &[u8]) -> bool {
    let mut diff = given.len() ^ wanted.len();
    for (i, w) in wanted.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ w);
    }
    diff == 0
}

/// Whether the request carries a body: a non-zero length, or a transfer coding.
fn has_body(headers: &HeaderMap) -> bool {
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).map(str::trim);
    headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|l| l != "0")
}

/// Whether the content type is `application/json` (parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// The refusal for a request that fails checks 1-3, if any.
fn refusal(guard: &Guard, headers: &HeaderMap) -> Option<Response> {
    if headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site") {
        return Some(error(
            StatusCode::FORBIDDEN,
            "browser-request",
            "the admin API does not serve browsers: requests with an Origin or Sec-Fetch-Site header are refused",
        ));
    }
    if has_body(headers) && !is_json(headers) {
        return Some(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "a request body must be JSON, sent with Content-Type: application/json",
        ));
    }
    let token = guard.token.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if given.is_some_and(|g| same_token(g.as_bytes(), token.as_bytes())) {
        return None;
    }
    let why = if given.is_none() { "missing bearer token" } else { "wrong bearer token" };
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", why);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    Some(r)
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("a request body may have at most {MAX_BODY} bytes"),
    )
}

/// The middleware: the checks above, then the body read whole under its deadline.
pub(crate) async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if let Some(r) = refusal(&guard, req.headers()) {
        return r;
    }
    if !has_body(req.headers()) {
        return next.run(req).await;
    }
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse().ok());
    if declared.is_some_and(|n: u64| n > MAX_BODY as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(guard.body_timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                format!("the request body did not arrive within {} ms", guard.body_timeout.as_millis()),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// A JSON error answer: `{"error": message, "kind": kind}` with `status`.
pub(super) fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into(), "kind": kind }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(same_token(b"secret", b"secret"));
        assert!(!same_token(b"secret!", b"secret"));
        assert!(!same_token(b"secre", b"secret"));
        assert!(!same_token(b"", b"secret"));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, header::HeaderValue::from_static(v));
        }
        h
    }

    fn status(guard: &Guard, pairs: &[(&'static str, &'static str)]) -> Option<u16> {
        refusal(guard, &headers(pairs)).map(|r| r.status().as_u16())
    }

    #[test]
    fn browser_shaped_and_unauthenticated_requests_are_refused() {
        let open = Guard { token: None, body_timeout: Duration::from_secs(1) };
        let closed = Guard { token: Some("t".into()), body_timeout: Duration::from_secs(1) };
        let bearer = ("authorization", "Bearer t");
        assert_eq!(status(&open, &[]), None);
        assert_eq!(status(&open, &[("origin", "http://evil.example")]), Some(403));
        assert_eq!(status(&closed, &[bearer, ("origin", "null")]), Some(403), "also with the token");
        assert_eq!(status(&open, &[("sec-fetch-site", "same-origin")]), Some(403));
        let form = ("content-type", "application/x-www-form-urlencoded");
        assert_eq!(status(&open, &[form, ("content-length", "3")]), Some(415));
        assert_eq!(status(&open, &[("content-length", "3")]), Some(415), "a body without a type");
        assert_eq!(
            status(&open, &[("content-type", "text/plain"), ("transfer-encoding", "chunked")]),
            Some(415)
        );
        assert_eq!(status(&open, &[form, ("content-length", "0")]), None, "no body: the type is moot");
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(status(&open, &[json, ("content-length", "2")]), None);
        assert_eq!(status(&closed, &[json, ("content-length", "2")]), Some(401));
        assert_eq!(status(&closed, &[json, ("content-length", "2"), bearer]), None);
        assert_eq!(status(&closed, &[("authorization", "Bearer u")]), Some(401));
    }
}
