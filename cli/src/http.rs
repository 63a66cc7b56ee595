//! The blocking HTTP/1.1 client of the admin API (`m2m status`, `m2m session`), on `ureq`:
//! one request per call (a fresh agent, nothing pooled), JSON bodies, optional bearer token.
//! Every HTTP status is an answer here (the commands explain 401, 404, 503, 504 themselves);
//! only "no answer" is an [`HttpError`].

use std::fmt;
use std::io::ErrorKind;
use std::time::Duration;

use ureq::http::Request;

/// How long connecting to the admin address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long sending the request, waiting for the answer, or reading its body may each take (a
/// sync write waits up to about twice the request timeout before the node answers).
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read: a page of `GET /sessions` (10,000 ids) is far below it.
const MAX_BODY: u64 = 64 << 20;
/// What to check when the admin API cannot be reached.
const HINT: &str = "is `m2m node` running there, with this `admin` address in its domain file?";

/// An answer of the admin API.
#[derive(Debug)]
pub(crate) struct Response {
    /// The HTTP status code.
    pub(crate) status: u16,
    /// The body as text.
    pub(crate) body: String,
}

impl Response {
    /// The body parsed as JSON (`null` when it is not JSON).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `error` field of a JSON body, else the body itself, else the status.
    pub(crate) fn error_message(&self) -> String {
        match self.json().get("error").and_then(|e| e.as_str()) {
            Some(e) => e.to_owned(),
            None if !self.body.trim().is_empty() => self.body.trim().to_owned(),
            None => format!("HTTP status {}", self.status),
        }
    }
}

/// Why no answer came.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// Nothing listens there, or the address does not resolve.
    Unreachable(String),
    /// Something answered, but not with HTTP the client understands, or the connection broke.
    Protocol(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Unreachable(m) | HttpError::Protocol(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HttpError {}

/// `host:port` from what the user typed (`127.0.0.1:8101`, `http://127.0.0.1:8101/`).
pub(crate) fn host_port(admin: &str) -> &str {
    let a = admin.strip_prefix("http://").unwrap_or(admin);
    a.trim_end_matches('/')
}

/// Percent-encodes a path segment (session ids are URL-safe already; anything else is escaped).
pub(crate) fn encode_segment(s: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    /// RFC 3986's unreserved characters stay as they are.
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Sends one request to the admin API at `admin` and reads the whole answer.
///
/// A node at its connection cap answers 503 before reading the request and may reset the
/// connection after its answer: the answer is read by its `content-length`, so a reset after
/// it does not turn it into an error (`the_connection_cap_holds_and_replication_goes_on` in
/// `tests/admin.rs`).
pub(crate) fn request(
    admin: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<Response, HttpError> {
    let host = host_port(admin);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_send_request(Some(IO_TIMEOUT))
        .timeout_send_body(Some(IO_TIMEOUT))
        .timeout_recv_response(Some(IO_TIMEOUT))
        .timeout_recv_body(Some(IO_TIMEOUT))
        .user_agent(concat!("m2m/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{host}{path}"))
        .header("Accept", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let bad = |e: ureq::http::Error| HttpError::Protocol(format!("admin API at {host}: {e}"));
    let answer = match body {
        Some(b) => agent.run(req.header("Content-Type", "application/json").body(b).map_err(bad)?),
        None => agent.run(req.body(()).map_err(bad)?),
    };
    let mut answer = answer.map_err(|e| classify(host, e))?;
    let status = answer.status().as_u16();
    let bytes =
        answer.body_mut().with_config().limit(MAX_BODY).read_to_vec().map_err(|e| classify(host, e))?;
    Ok(Response { status, body: String::from_utf8_lossy(&bytes).into_owned() })
}

/// A failed call as the user should read it: unreachable (nothing listens, no route, the
/// name does not resolve) or broken (the connection or the answer failed).
fn classify(host: &str, e: ureq::Error) -> HttpError {
    use ureq::Error as E;
    match e {
        E::HostNotFound => HttpError::Unreachable(format!("cannot resolve the admin address `{host}`")),
        E::Io(io) if unreachable(io.kind()) => {
            HttpError::Unreachable(format!("cannot reach the admin API at {host}: {io} ({HINT})"))
        }
        E::ConnectionFailed | E::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            HttpError::Unreachable(format!("cannot reach the admin API at {host}: {e} ({HINT})"))
        }
        E::Protocol(p) => HttpError::Protocol(format!("admin API at {host}: the answer is not HTTP: {p}")),
        other => HttpError::Protocol(format!("admin API at {host}: {other}")),
    }
}

/// Connecting failed: nothing listens, or no route to the address.
fn unreachable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionRefused
            | ErrorKind::AddrNotAvailable
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    /// Serves one connection with `answer` (after reading the request's head) and returns
    /// the admin address.
    fn one_answer(answer: &'static [u8]) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).map(|n| n == 1).unwrap_or(false) {
                head.push(b[0]);
            }
            let _ = s.write_all(answer);
        });
        addr
    }

    #[test]
    fn parses_plain_and_chunked_answers() {
        let admin = one_answer(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}");
        let r = request(&admin, "GET", "/x", None, None).expect("answers");
        assert_eq!((r.status, r.body.as_str()), (404, "{}"));
        let admin = one_answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        let r = request(&admin, "PUT", "/x", Some("t"), Some("{}")).expect("answers");
        assert_eq!(r.body, "abcde");
        let admin = one_answer(b"SSH-2.0\r\n\r\n");
        let e = request(&admin, "GET", "/x", None, None).expect_err("not HTTP");
        assert!(matches!(e, HttpError::Protocol(_)), "{e}");
    }

    #[test]
    fn nothing_listening_is_unreachable() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let e = request(&addr.to_string(), "GET", "/status", None, None).expect_err("nothing listens");
        assert!(matches!(e, HttpError::Unreachable(_)), "{e}");
        assert!(e.to_string().starts_with(&format!("cannot reach the admin API at {addr}")), "{e}");
    }

    #[test]
    fn addresses_and_segments() {
        assert_eq!(host_port("http://127.0.0.1:8101/"), "127.0.0.1:8101");
        assert_eq!(encode_segment("a.b-c_d~"), "a.b-c_d~");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }
}
