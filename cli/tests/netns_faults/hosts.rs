//! The hosts of the fault tests: the HTTP proxy client inside the client namespace, the
//! namespaces and node processes of one scenario, and the nodes' status through the admin API.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{HELPER_ENV, NODES, TOKEN, common, netns_script};

fn raw_http(addr: &str, method: &str, target: &str, token: &str, body: &str) -> (u16, String) {
    let Ok(sa) = addr.parse::<SocketAddr>() else { return (0, format!("bad address {addr}")) };
    let Ok(mut s) = TcpStream::connect_timeout(&sa, Duration::from_millis(1000)) else {
        return (0, "connect failed".into());
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(3000)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(1000)));
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, "send failed".into());
    }
    let mut raw = String::new();
    if s.read_to_string(&mut raw).is_err() && raw.is_empty() {
        return (0, "no answer in time".into());
    }
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The proxy a test binary runs inside its client namespace when `HELPER_ENV` is set (a
/// `netns_http_helper` test calls it): reads JSON requests `{"a": addr, "m": method, "p":
/// path, "b": body}` from stdin, answers `@@{"s": status, "b": body}` lines (status 0: no
/// answer). Does nothing otherwise.
pub(crate) fn http_helper() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let token = std::env::var("M2M_NETNS_TOKEN").unwrap_or_default();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines().take(10_000_000) {
        let Ok(line) = line else { break };
        let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let (status, body) = raw_http(
            req["a"].as_str().unwrap_or(""),
            req["m"].as_str().unwrap_or("GET"),
            req["p"].as_str().unwrap_or("/"),
            &token,
            req["b"].as_str().unwrap_or(""),
        );
        let answer = json!({ "s": status, "b": body });
        if writeln!(out, "@@{answer}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}

/// A proxy process inside the client namespace.
pub(crate) struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    pub(crate) fn spawn(prefix: &str, host: usize) -> Client {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(netns_script())
            .args(["exec", &host.to_string()])
            .arg(exe)
            .args(["netns_http_helper", "--exact", "--nocapture", "--test-threads=1", "--quiet"])
            .env("M2M_NETNS_PREFIX", prefix)
            .env(HELPER_ENV, "1")
            .env("M2M_NETNS_TOKEN", TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the HTTP helper starts");
        let stdin = child.stdin.take().expect("helper stdin");
        let stdout = BufReader::new(child.stdout.take().expect("helper stdout"));
        Client { child, stdin, stdout }
    }

    /// One request; `(0, why)` when the node did not answer.
    pub(crate) fn call(&mut self, addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
        let req = json!({ "a": addr, "m": method, "p": path, "b": body });
        if writeln!(self.stdin, "{req}").and_then(|()| self.stdin.flush()).is_err() {
            return (0, Value::Null);
        }
        // The helper answers within ~5 s (connect 1 s + read 3 s); other lines are libtest's.
        for _ in 0..100 {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return (0, Value::Null),
                Ok(_) => {}
            }
            if let Some(rest) = line.strip_prefix("@@") {
                let v: Value = serde_json::from_str(rest.trim()).unwrap_or(Value::Null);
                let status = v["s"].as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or(0);
                // A body that is not JSON (the helper's own "connect failed", ...) as a string.
                let body = v["b"].as_str().map_or(Value::Null, |b| {
                    serde_json::from_str(b).unwrap_or_else(|_| Value::String(b.to_owned()))
                });
                return (status, body);
            }
        }
        (0, Value::Null)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- the hosts -----

/// The namespaces and node processes of one scenario; everything is torn down on drop.
pub(crate) struct Net {
    prefix: String,
    pub(crate) dir: tempfile::TempDir,
    /// The domain file listing every host's node (the certificates are made from it).
    domain: PathBuf,
    /// The domain file each node starts with ([`Net::set_file`]); `domain` when unset.
    files: Vec<Option<PathBuf>>,
    transport: String,
    certs: PathBuf,
    token: PathBuf,
    nodes: Vec<Option<Child>>,
    starts: Vec<u32>,
    /// The node whose clocks libfaketime sets, and the library.
    faketime: Option<(usize, PathBuf)>,
}

pub(crate) fn netns(prefix: &str, args: &[&str]) -> bool {
    Command::new(netns_script())
        .args(args)
        .env("M2M_NETNS_PREFIX", prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn addr(i: usize, port: u16) -> String {
    format!("10.213.0.{}:{port}", i + 1)
}

pub(crate) fn admin(i: usize) -> String {
    addr(i, 8100)
}

impl Net {
    /// The namespaces and `NODES` nodes on `transport`; node `skewed` (if any) runs under
    /// libfaketime, its clocks set by [`Net::clock_file`].
    pub(crate) fn up(prefix: String, transport: &str, skewed: Option<usize>) -> Net {
        let mut net = Net::hosts(prefix, transport, skewed, NODES);
        for i in 0..NODES {
            net.start(i);
        }
        net
    }

    /// The namespaces of `hosts` node hosts and one client host (`hosts + 1`), certificates
    /// for every node, and a domain file on `transport` listing them all; no node started.
    pub(crate) fn hosts(prefix: String, transport: &str, skewed: Option<usize>, hosts: usize) -> Net {
        // Leftovers of an earlier run with the same prefix.
        netns(&prefix, &["down"]);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut net = Net {
            prefix,
            domain: dir.path().join("domain.toml"),
            files: vec![None; hosts],
            transport: transport.to_owned(),
            certs: dir.path().join("certs"),
            token: dir.path().join("token"),
            dir,
            nodes: (0..hosts).map(|_| None).collect(),
            starts: vec![0; hosts],
            faketime: None,
        };
        if let Some(i) = skewed {
            let out = Command::new(netns_script()).arg("faketime").output().expect("netns.sh faketime");
            let lib = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert!(out.status.success() && !lib.is_empty(), "netns.sh faketime failed");
            std::fs::write(net.clock_file(), "+0 x0.95\n").expect("clock file");
            net.faketime = Some((i, PathBuf::from(lib)));
        }
        assert!(netns(&net.prefix, &["up", &(hosts + 1).to_string()]), "netns.sh up failed");
        let all: Vec<usize> = (0..hosts).collect();
        std::fs::write(&net.domain, net.domain_text(&all, "")).expect("domain file");
        std::fs::write(&net.token, TOKEN).expect("token file");
        let run = common::m2m(&["certs", "init", "--domain", path(&net.domain), "--out", path(&net.certs)]);
        assert_eq!(run.code, 0, "{run:?}");
        net
    }

    /// A domain file on this net's transport listing the nodes `nodes` (host indexes), with
    /// `extra` lines in its `[domain]` table.
    pub(crate) fn domain_text(&self, nodes: &[usize], extra: &str) -> String {
        let mut text = format!(
            "[domain]\nname = \"faults\"\ntransport = \"{}\"\nheartbeat_interval_ms = 100\n\
             failure_timeout_ms = 600\nrequest_timeout_ms = 1000\n{extra}\n",
            self.transport
        );
        for &i in nodes {
            text.push_str(&format!(
                "[[node]]\nname = \"app{}\"\naddress = \"{}\"\nadmin = \"{}\"\n\n",
                i + 1,
                addr(i, 7100),
                admin(i)
            ));
        }
        text
    }

    /// Writes node `i`'s own domain file: it starts with it and reads it on a reload.
    #[allow(dead_code, reason = "netns_reconfig.rs changes the files; netns_faults.rs does not")]
    pub(crate) fn set_file(&mut self, i: usize, text: &str) {
        let file = self.dir.path().join(format!("app{}.toml", i + 1));
        std::fs::write(&file, text).expect("domain file");
        self.files[i] = Some(file);
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("app{}.{}.log", i + 1, self.starts[i]))
    }

    /// libfaketime's setting of the skewed node's clocks: an offset and a rate, re-read at
    /// most once a second.
    pub(crate) fn clock_file(&self) -> PathBuf {
        self.dir.path().join("clock")
    }

    pub(crate) fn start(&mut self, i: usize) {
        self.starts[i] += 1;
        let log = std::fs::File::create(self.log(i)).expect("log file");
        let mut command = Command::new("ip");
        if let Some((_, lib)) = self.faketime.as_ref().filter(|(n, _)| *n == i) {
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", self.clock_file())
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        let child = command
            .args(["netns", "exec", &format!("{}h{}", self.prefix, i + 1)])
            .arg(env!("CARGO_BIN_EXE_m2m"))
            .args(["node", "--config", path(self.files[i].as_ref().unwrap_or(&self.domain))])
            .args(["--name", &format!("app{}", i + 1)])
            .args(["--certs", path(&self.certs), "--admin-token-file", path(&self.token)])
            .env_remove("M2M_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("m2m node starts");
        self.nodes[i] = Some(child);
    }

    pub(crate) fn signal(&self, i: usize, sig: &str) {
        if let Some(c) = &self.nodes[i] {
            let _ = Command::new("kill").args([format!("-{sig}"), c.id().to_string()]).status();
        }
    }

    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (at most 15 s) for the node to leave.
    pub(crate) fn stop(&mut self, i: usize) -> Option<i32> {
        self.signal(i, "TERM");
        self.wait_exit(i, Duration::from_secs(15))
    }

    /// Waits (at most `limit`) for node `i` to exit: its exit code, or `None` (then it is
    /// killed).
    pub(crate) fn wait_exit(&mut self, i: usize, limit: Duration) -> Option<i32> {
        let mut c = self.nodes[i].take()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// What to add to the problems of failed scenario `name`: the last lines of every node
    /// log and, with `M2M_NETNS_KEEP_LOGS=DIR`, where a copy of every node log is kept
    /// (`DIR/name`; set RUST_LOG=debug for the per-session events).
    pub(crate) fn failure_report(&self, name: &str) -> Vec<String> {
        let mut report = vec![self.logs()];
        if let Some(keep) = std::env::var_os("M2M_NETNS_KEEP_LOGS") {
            let to = PathBuf::from(keep).join(name);
            let _ = std::fs::create_dir_all(&to);
            for e in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
                let _ = std::fs::copy(e.path(), to.join(e.file_name()));
            }
            report.push(format!("node logs kept in {}", to.display()));
        }
        report
    }

    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.nodes.len() {
            for n in 1..=self.starts[i] {
                let p = self.dir.path().join(format!("app{}.{n}.log", i + 1));
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- app{} start {n} (last lines)\n", i + 1));
                for l in tail.iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in self.nodes.iter_mut() {
            if let Some(mut c) = c.take() {
                let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        netns(&self.prefix, &["down"]);
    }
}

pub(crate) fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// ----- status -----

#[derive(Debug, Default, Clone)]
pub(crate) struct NodeStatus {
    /// The nodes of its domain file it sees up (itself included).
    pub(crate) up: usize,
    /// The nodes its domain file lists.
    listed: usize,
    pub(crate) owned: u64,
    #[allow(dead_code, reason = "netns_reconfig.rs counts the copies; netns_faults.rs does not")]
    pub(crate) backed_up: u64,
    under_replicated: u64,
    /// The fingerprint of the domain file it runs.
    pub(crate) fingerprint: String,
    /// Whether it sees an online domain change under way.
    changing: bool,
}

pub(crate) fn status(client: &mut Client, i: usize) -> Option<NodeStatus> {
    let (code, s) = client.call(&admin(i), "GET", "/status", "");
    if code != 200 {
        return None;
    }
    let members = s["membership"].as_array()?;
    Some(NodeStatus {
        up: members.iter().filter(|m| m["up"] == true).count(),
        listed: members.len(),
        owned: s["sessions"]["owned"].as_u64()?,
        backed_up: s["sessions"]["backed_up"].as_u64()?,
        under_replicated: s["sessions"]["under_replicated"].as_u64()?,
        fingerprint: s["domain_file"]["fingerprint"].as_str().unwrap_or_default().to_owned(),
        changing: s["domain_file"]["changing"].as_bool().unwrap_or(false),
    })
}

/// Peers node `i` failed because their process was gone (`peers_gone` of `/status`).
pub(crate) fn peers_gone(client: &mut Client, i: usize) -> Option<u64> {
    let (code, s) = client.call(&admin(i), "GET", "/status", "");
    if code != 200 {
        return None;
    }
    s["peers_gone"].as_u64()
}

/// The ids node `i` owns (every page of `GET /sessions`), or `None` when it does not answer.
pub(crate) fn owned_ids(client: &mut Client, i: usize) -> Option<Vec<String>> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    // Bounded: a node owns at most a few thousand sessions here, 10,000 ids a page.
    for _ in 0..100 {
        let target =
            after.as_ref().map_or_else(|| "/sessions".to_owned(), |a| format!("/sessions?after={a}"));
        let (code, page) = client.call(&admin(i), "GET", &target, "");
        if code != 200 {
            return None;
        }
        ids.extend(page["sessions"].as_array()?.iter().filter_map(|v| v.as_str().map(str::to_owned)));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Some(ids),
        }
    }
    None
}

/// Waits (at most `secs`) until every node answers, sees every node up and has nothing
/// under-replicated; returns how long it took, or `None`.
pub(crate) fn wait_healthy(client: &mut Client, secs: u64) -> Option<Duration> {
    wait_healthy_of(client, &(0..NODES).collect::<Vec<_>>(), secs)
}

/// Waits (at most `secs`) until every node of `nodes` answers, runs the same domain file
/// listing just `nodes`, sees no domain change under way, sees every node up and has nothing
/// under-replicated; returns how long it took, or `None`.
pub(crate) fn wait_healthy_of(client: &mut Client, nodes: &[usize], secs: u64) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        let all: Option<Vec<NodeStatus>> = nodes.iter().map(|&i| status(client, i)).collect();
        if all.is_some_and(|v| healthy(&v, nodes.len())) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn healthy(all: &[NodeStatus], n: usize) -> bool {
    all.iter().all(|s| {
        s.listed == n
            && s.up == n
            && s.under_replicated == 0
            && !s.changing
            && all.first().is_some_and(|f| f.fingerprint == s.fingerprint)
    })
}

/// How long node `i`, just started, took to see every node up: from its first answer to
/// `/status` (the admin API starts after the transport) until its membership shows every node
/// up; `None` when that did not happen within `secs`.
#[allow(dead_code, reason = "netns_faults.rs times restarts; netns_reconfig.rs does not")]
pub(crate) fn rejoin_time(client: &mut Client, i: usize, secs: u64) -> Option<Duration> {
    let t0 = Instant::now();
    let mut first: Option<Instant> = None;
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Some(s) = status(client, i) {
            let at = *first.get_or_insert_with(Instant::now);
            if s.listed > 0 && s.up == s.listed {
                return Some(at.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}
