//! A small blocking HTTP/1.1 client for the admin API (`m2m status`, `m2m session`): one
//! request per connection (`Connection: close`), JSON bodies, optional bearer token.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

/// How long connecting to the admin address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take (a sync write waits up to about twice the request timeout).
const IO_TIMEOUT: Duration = Duration::from_secs(60);

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
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends one request to the admin API at `admin` and reads the whole answer.
pub(crate) fn request(
    admin: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<Response, HttpError> {
    let host = host_port(admin);
    let hint = "is `m2m node` running there, with this `admin` address in its domain file?";
    let addrs: Vec<_> = host
        .to_socket_addrs()
        .map_err(|e| HttpError::Unreachable(format!("cannot resolve the admin address `{host}`: {e}")))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        let why = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
        return Err(HttpError::Unreachable(format!("cannot reach the admin API at {host}: {why} ({hint})")));
    };
    let broken = |e: std::io::Error| HttpError::Protocol(format!("admin API at {host}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(broken)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(broken)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: m2m/{}\r\nAccept: application/json\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" && method != "DELETE" || !body.is_empty() {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).map_err(broken)?;
    let mut raw = Vec::new();
    // A node that answers before reading the request (503 at its connection cap) may reset
    // the connection after its answer: a whole answer read before the reset counts.
    let read = stream.read_to_end(&mut raw);
    match (parse_response(&raw), read) {
        (Ok(r), _) => Ok(r),
        (Err(_), Err(e)) => Err(broken(e)),
        (Err(m), Ok(_)) => Err(HttpError::Protocol(format!("admin API at {host}: {m}"))),
    }
}

/// Parses a whole HTTP/1.1 response (the connection was closed after it).
fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("the answer is not HTTP")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("the answer is not HTTP: `{status_line}`"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(n) => rest.get(..n).ok_or("the answer was cut short")?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok(Response { status, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n").ok_or("bad chunked body")?;
        let size_text = String::from_utf8_lossy(&rest[..end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).ok_or("the answer was cut short")?);
        rest = rest.get(size + 2..).ok_or("the answer was cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}").expect("parses");
        assert_eq!((r.status, r.body.as_str()), (404, "{}"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .expect("parses");
        assert_eq!(r.body, "abcde");
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn addresses_and_segments() {
        assert_eq!(host_port("http://127.0.0.1:8101/"), "127.0.0.1:8101");
        assert_eq!(encode_segment("a.b-c_d"), "a.b-c_d");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }
}
