//! The admin API's defences, against real `m2m node` processes on loopback: the token from
//! `m2m certs init` required by default, browser-shaped requests refused, slow clients cut at
//! the timeout, the connection cap, and the open-files limit raised at start.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, TIMING, eventually, http, path};
use common::{m2m, m2m_with_token_env};

fn kind(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["kind"].as_str().unwrap_or_default().to_owned()
}

fn wait_admin(addr: &str) {
    eventually(20, "the admin API answers", || TcpStream::connect(addr).ok().map(|_| ()));
}

#[test]
fn the_default_node_requires_the_token_certs_init_wrote_and_refuses_browsers() {
    let mut c = Cluster::new(1, TIMING);
    let token = c.token();
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(c.certs.join("admin.token")).expect("token").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    c.start(0, &[]);
    let addr = c.admins[0].clone();
    wait_admin(&addr);

    let (code, body) = http(&addr, "GET", "/status", &[], "");
    assert_eq!((code, kind(&body).as_str()), (401, "unauthorized"), "{body}");
    let (code, body) = http(&addr, "GET", "/sessions", &[], "");
    assert_eq!(code, 401, "the session ids need the token: {body}");
    let (code, body) = c.http(0, "GET", "/status", &[], "");
    assert_eq!(code, 200, "{body}");

    // Browser-shaped requests: refused with the token as without it.
    for origin in ["Origin: http://evil.example", "Origin: null", "Sec-Fetch-Site: cross-site"] {
        let (code, body) = c.http(0, "GET", "/sessions", &[origin], "");
        assert_eq!((code, kind(&body).as_str()), (403, "browser-request"), "{origin}: {body}");
        let (code, _) = http(&addr, "POST", "/sessions", &[origin], "{}");
        assert_eq!(code, 403, "{origin}");
    }
    for content_type in ["Content-Type: application/x-www-form-urlencoded", "Content-Type: text/plain"] {
        let (code, body) = c.http(0, "POST", "/sessions", &[content_type], "user=mallory");
        assert_eq!((code, kind(&body).as_str()), (415, "unsupported-media-type"), "{content_type}: {body}");
    }
    let (code, body) =
        c.http(0, "POST", "/sessions", &["Content-Type: application/json; charset=utf-8"], "{}");
    assert_eq!(code, 201, "{body}");
    // A body over 1 MiB is refused from its declared length, before it is sent.
    let mut s = TcpStream::connect(&addr).expect("connect");
    let head = format!(
        "PUT /sessions/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("send");
    let (_, got) = until_closed(&mut s, Duration::from_secs(10)).expect("answered and closed");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 413") && got.contains("body-too-large"), "{got}");

    // The client commands find the token as the node does, never on the command line.
    let run = m2m(&["status", "--admin", &addr]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("401") && run.stderr.contains("--certs DIR"), "{run:?}");
    assert_eq!(c.status(0, &[]).code, 0);
    let run = m2m_with_token_env(&["status", "--admin", &addr], Some(&token));
    assert_eq!(run.code, 0, "M2M_ADMIN_TOKEN: {run:?}");
    let run = m2m_with_token_env(&["session", "list", "--admin", &addr], Some("wrong"));
    assert_eq!(run.code, 1, "{run:?}");
    let run = m2m(&["status", "--admin", &addr, "--token", &token]);
    assert_eq!(run.code, 2, "no token value on the command line: {run:?}");
    assert!(run.stderr.contains("unexpected argument '--token'"), "{run:?}");
    for help in [&["status", "--help"][..], &["session", "get", "--help"], &["node", "--help"]] {
        let run = m2m(help);
        assert!(!run.stdout.contains("--token "), "{help:?}: {}", run.stdout);
    }
    #[cfg(target_os = "linux")]
    {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", c.pid(0))).expect("cmdline");
        assert!(!String::from_utf8_lossy(&cmdline).contains(&token), "the node's command line");
    }
}

#[test]
fn a_node_without_a_token_refuses_to_start_unless_told_to_serve_without_one() {
    let mut c = Cluster::new(1, TIMING);
    std::fs::remove_file(c.certs.join("admin.token")).expect("remove the token");
    c.start(0, &[]);
    assert_eq!(c.wait_exit(0, 20), Some(2), "{}", c.output(0));
    let out = c.output(0);
    assert!(out.contains("admin.token does not exist") && out.contains("m2m certs init"), "{out}");

    c.start(0, &["--admin-no-auth"]);
    wait_admin(&c.admins[0]);
    let (code, body) = http(&c.admins[0], "GET", "/status", &[], "");
    assert_eq!(code, 200, "{body}");
    let (code, _) = http(&c.admins[0], "GET", "/status", &["Origin: http://evil.example"], "");
    assert_eq!(code, 403, "browsers are refused without a token too");
    let out = c.output(0);
    assert!(out.contains("WARN") && out.contains("the admin API has no token"), "{out}");

    // `m2m certs init` again adds a token and keeps the certificates.
    let cert = std::fs::read(c.certs.join("app1.pem")).expect("cert");
    let run = m2m(&["certs", "init", "--domain", path(&c.domain), "--out", path(&c.certs)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("admin.token") && run.stdout.contains("issued"), "{run:?}");
    assert_eq!(std::fs::read(c.certs.join("app1.pem")).expect("cert"), cert);
    assert_eq!(c.token().len(), 64);
}

/// Reads until the node closes the connection; what it sent and when it closed, or `None`
/// when it is still open after `limit`.
fn until_closed(s: &mut TcpStream, limit: Duration) -> Option<(Instant, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return Some((Instant::now(), got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return None;
            }
            Err(_) => return Some((Instant::now(), got)),
        }
    }
}

#[test]
fn slow_admin_clients_are_cut_at_the_timeout_while_normal_calls_are_served() {
    const TIMEOUT: Duration = Duration::from_millis(1000);
    let mut c = Cluster::new(1, TIMING);
    c.start(0, &["--admin-timeout-ms", "1000"]);
    let addr = c.admins[0].clone();
    wait_admin(&addr);
    let bearer = format!("Authorization: Bearer {}\r\n", c.token());
    let connect = || TcpStream::connect(&addr).expect("connect");

    let start = Instant::now();
    let mut silent = connect();
    let mut half = connect();
    half.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bea").expect("send");
    // A kept-alive connection after one answered request: idle from its answer on.
    let mut idle = connect();
    idle.write_all(format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{bearer}\r\n").as_bytes()).expect("send");
    let mut answer = [0u8; 64 * 1024];
    let n = idle.read(&mut answer).expect("answer");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
    let idle_from = Instant::now();
    // A body that trickles in, a byte every 200 ms, and would take 20 s in all.
    let mut slow_body = connect();
    slow_body
        .write_all(
            format!(
                "POST /sessions HTTP/1.1\r\nHost: x\r\n{bearer}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .expect("send");
    let body_from = Instant::now();
    let mut trickle = slow_body.try_clone().expect("clone");
    let trickler = std::thread::spawn(move || {
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(200));
            if trickle.write_all(b" ").is_err() {
                return;
            }
        }
    });

    // Normal calls are answered meanwhile.
    let mut served = 0;
    while start.elapsed() < TIMEOUT {
        let t = Instant::now();
        let run = c.status(0, &[]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "a normal call took {:?}", t.elapsed());
        served += 1;
    }
    assert!(served > 0);

    let limit = Duration::from_secs(10);
    for (name, s, from) in [
        ("silent", &mut silent, start),
        ("half header", &mut half, start),
        ("idle keep-alive", &mut idle, idle_from),
    ] {
        let (at, got) =
            until_closed(s, limit).unwrap_or_else(|| panic!("{name}: still open after {limit:?}"));
        let after = at - from;
        assert!(after >= TIMEOUT.mul_f64(0.8), "{name}: cut after {after:?}, before the timeout");
        assert!(after < TIMEOUT * 5, "{name}: cut after {after:?}");
        let got = String::from_utf8_lossy(&got);
        assert!(!got.contains("HTTP/1.1"), "{name}: no answer expected: {got}");
    }
    let (at, got) = until_closed(&mut slow_body, limit).expect("the slow body is cut");
    let after = at - body_from;
    assert!(after >= TIMEOUT.mul_f64(0.8) && after < TIMEOUT * 5, "slow body: cut after {after:?}");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408") && got.contains("body-timeout"), "{got}");
    let _ = trickler.join();
    assert_eq!(c.status(0, &[]).code, 0, "still serving");
    let out = c.output(0);
    assert!(out.contains("connections of too slow clients closed"), "logged at info: {out}");
}

/// The node's open descriptors.
#[cfg(target_os = "linux")]
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count).unwrap_or(0)
}

#[test]
fn the_connection_cap_holds_and_replication_goes_on() {
    const CAP: usize = 8;
    let mut c = Cluster::new(2, TIMING);
    c.start(0, &["--admin-max-connections", "8", "--admin-timeout-ms", "60000"]);
    c.start(1, &[]);
    c.wait_membership(0, &[0, 1]);
    c.wait_membership(1, &[0, 1]);
    let addr = c.admins[0].clone();
    #[cfg(target_os = "linux")]
    let fds_before = open_fds(c.pid(0));

    // CAP connections that sent half a header hold every slot (the timeout is long).
    let mut held: Vec<TcpStream> = (0..CAP)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.write_all(b"GET /status HTTP/1.1\r\n").expect("send");
            s
        })
        .collect();
    // Every further connection is answered 503 and closed at once.
    // (A probe that got a slot, before the node took all of those, is dropped and tried again.)
    let refused = eventually(10, "the cap reached", || {
        let mut s = TcpStream::connect(&addr).expect("connect");
        let (_, got) = until_closed(&mut s, Duration::from_secs(1))?;
        let got = String::from_utf8_lossy(&got).into_owned();
        (!got.is_empty()).then_some(got)
    });
    assert!(
        refused.starts_with("HTTP/1.1 503") && refused.contains("maximum number of connections"),
        "{refused}"
    );
    let mut extra: Vec<TcpStream> = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(&addr).expect("connect");
        let _ = s.write_all(b"GET /status HTTP/1.1\r\n");
        extra.push(s);
    }
    for s in &mut extra {
        let (_, got) = until_closed(s, Duration::from_secs(5)).expect("an extra connection is closed");
        let got = String::from_utf8_lossy(&got);
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 503"), "{got}");
    }
    #[cfg(target_os = "linux")]
    {
        let during = open_fds(c.pid(0));
        // The cap, and at most 32 refused connections waiting for their client to close.
        let most = fds_before + CAP + 32 + 2;
        assert!(during <= most, "descriptors: {fds_before} before, {during} with a flood, at most {most}");
    }
    let run = c.status(0, &[]);
    assert_eq!(run.code, 1, "a normal call at the cap is refused: {run:?}");
    assert!(run.stderr.contains("503"), "{run:?}");

    // Replication through app1 goes on: app2's write is acknowledged by its backup on app1.
    let (code, body) = c.http(1, "POST", "/sessions", &[], r#"{"k":"v"}"#);
    assert_eq!(code, 201, "{body}");
    assert!(body.contains(r#""replication":"replicated""#), "{body}");

    // One slot frees: normal calls are served again.
    drop(held.pop());
    let status = eventually(10, "a normal call served once a slot is free", || {
        let run = c.status(0, &["--format", "json"]);
        (run.code == 0).then(|| run.json())
    });
    assert_eq!(status["sessions"]["backed_up"], 1, "{status}");
    let out = c.output(0);
    assert!(out.contains("WARN") && out.contains("connection cap"), "logged: {out}");
}

#[cfg(target_os = "linux")]
#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit_at_start() {
    let mut c = Cluster::new(1, TIMING);
    c.start_wrapped(0, &["sh", "-c", "ulimit -Sn 256 && exec \"$@\"", "sh"], &[]);
    wait_admin(&c.admins[0]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", c.pid(0))).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("open files line");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    let (soft, hard) = (numbers[0], numbers[1]);
    assert_eq!(soft, hard, "{line}");
    assert_ne!(soft, "256", "raised from 256: {line}");
    let out = c.output(0);
    assert!(
        out.contains("open_files_at_start=Some(256)") && out.contains(&format!("open_files=Some({soft})")),
        "{out}"
    );
}

#[test]
fn a_client_that_does_not_take_its_answers_is_cut() {
    const REQUESTS: usize = 2000;
    let mut c = Cluster::new(1, TIMING);
    c.start(0, &["--admin-timeout-ms", "1000"]);
    let addr = c.admins[0].clone();
    wait_admin(&addr);
    // Pipelined requests whose answers (a few KiB each, megabytes in all) fill the socket
    // buffers while the client reads nothing.
    let request = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", c.token());
    let mut s = TcpStream::connect(&addr).expect("connect");
    let mut writer = s.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        for _ in 0..REQUESTS {
            if writer.write_all(request.as_bytes()).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(4));
    // Reading now gets what the buffers held, then the end: the node gave up writing.
    let (_, got) = until_closed(&mut s, Duration::from_secs(20)).expect("the connection was closed");
    let answers = String::from_utf8_lossy(&got).matches("HTTP/1.1 200").count();
    assert!(answers < REQUESTS, "all {answers} answers arrived: the stalled connection was kept");
    let _ = sender.join();
    assert_eq!(c.status(0, &[]).code, 0, "still serving");
}

/// The orchestrators' probes answer without the token: `/live` while the node runs, `/ready`
/// once it answers for every session (here: once it sees a majority of its three-node domain).
#[test]
fn live_and_ready_probes_need_no_token_and_follow_the_domain() {
    let mut c = Cluster::new(3, TIMING);
    c.start(0, &[]);
    let addr = c.admins[0].clone();
    wait_admin(&addr);
    let (code, body) = http(&addr, "GET", "/live", &[], "");
    assert_eq!((code, body.as_str()), (200, r#"{"live":true}"#));
    // Alone in a domain of three, past the failure timeout: not ready, and it stays so.
    std::thread::sleep(Duration::from_millis(600));
    let (code, body) = http(&addr, "GET", "/ready", &[], "");
    assert_eq!((code, body.as_str()), (503, r#"{"ready":false}"#));
    // The token is still required everywhere else.
    let (code, _) = http(&addr, "GET", "/status", &[], "");
    assert_eq!(code, 401);
    c.start(1, &[]);
    eventually(20, "ready once a majority is up", || {
        (http(&addr, "GET", "/ready", &[], "") == (200, r#"{"ready":true}"#.to_owned())).then_some(())
    });
}
