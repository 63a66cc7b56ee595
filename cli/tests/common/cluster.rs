//! Real `m2m node` processes on loopback for the end-to-end tests: a domain file on free ports
//! in a temp dir, certificates and the admin token from `m2m certs init` (the client helpers
//! send it), and a guard that kills every node it started when dropped (also when a test
//! panics).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Run, m2m};

/// A free loopback address: bind port 0, note it, release it. The kernel may hand a released
/// port out again at the next bind, so the ports given out in this process are remembered and
/// never given twice: a domain file built from several calls never names one port for two
/// listeners (the `duplicate-address` rule would refuse it).
pub fn free_addr() -> String {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = l.local_addr().expect("local address");
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr.to_string();
        }
    }
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Nodes of one domain, each a child process; all killed on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub domain: PathBuf,
    pub certs: PathBuf,
    pub names: Vec<String>,
    pub admins: Vec<String>,
    pub children: Vec<Option<Child>>,
}

/// Short timings so failures are detected quickly.
pub const TIMING: &str = "heartbeat_interval_ms = 50\nfailure_timeout_ms = 300\nrequest_timeout_ms = 2000\n";

impl Cluster {
    /// A domain of `n` nodes (app1..appN) with admin addresses, `domain_extra` added to the
    /// `[domain]` table, and certificates.
    pub fn new(n: usize, domain_extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut text = format!("[domain]\nname = \"test\"\n{domain_extra}\n");
        let mut names = Vec::new();
        let mut admins = Vec::new();
        for i in 1..=n {
            let (name, admin) = (format!("app{i}"), free_addr());
            text.push_str(&format!(
                "[[node]]\nname = \"{name}\"\naddress = \"{}\"\nadmin = \"{admin}\"\n\n",
                free_addr()
            ));
            names.push(name);
            admins.push(admin);
        }
        let domain = dir.path().join("domain.toml");
        std::fs::write(&domain, text).expect("write the domain file");
        let certs = dir.path().join("certs");
        let run = m2m(&["certs", "init", "--domain", path(&domain), "--out", path(&certs)]);
        assert_eq!(run.code, 0, "{run:?}");
        let children = (0..n).map(|_| None).collect();
        Cluster { dir, domain, certs, names, admins, children }
    }

    /// Starts node `i` (0-based) with `--certs` (unless `extra` says `--insecure`) and `extra`
    /// arguments.
    pub fn start(&mut self, i: usize, extra: &[&str]) {
        self.start_wrapped(i, &[], extra);
    }

    /// As [`Cluster::start`], the node run by `wrapper` (a command that runs its arguments,
    /// such as `sh -c 'ulimit -Sn 256 && exec "$@"' sh`) when not empty.
    pub fn start_wrapped(&mut self, i: usize, wrapper: &[&str], extra: &[&str]) {
        let certs = path(&self.certs).to_owned();
        let security: &[&str] = if extra.contains(&"--insecure") { &[] } else { &["--certs", &certs] };
        let out = std::fs::File::create(self.log(i, "out")).expect("log file");
        let err = std::fs::File::create(self.log(i, "err")).expect("log file");
        let bin = env!("CARGO_BIN_EXE_m2m");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .args(["node", "--config", path(&self.domain), "--name", &self.names[i]])
            .args(security)
            .args(extra)
            .env_remove("M2M_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("m2m node starts");
        self.children[i] = Some(child);
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for i in 0..self.names.len() {
            self.start(i, &[]);
        }
    }

    fn log(&self, i: usize, kind: &str) -> PathBuf {
        self.dir.path().join(format!("{}.{kind}", self.names[i]))
    }

    /// What node `i` printed (stdout, then stderr).
    pub fn output(&self, i: usize) -> String {
        let read = |k| std::fs::read_to_string(self.log(i, k)).unwrap_or_default();
        format!(
            "--- {} stdout:\n{}--- {} stderr:\n{}",
            self.names[i],
            read("out"),
            self.names[i],
            read("err")
        )
    }

    /// Every node's output, for assertion messages.
    pub fn outputs(&self) -> String {
        (0..self.names.len()).map(|i| self.output(i)).collect::<Vec<_>>().join("\n")
    }

    /// The process id of node `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().expect("node started").id()
    }

    /// The admin API's token `m2m certs init` wrote.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.certs.join("admin.token")).expect("admin.token").trim().to_owned()
    }

    /// `m2m status` against node `i`'s admin API (the token from the certificates folder),
    /// with `extra` arguments.
    pub fn status(&self, i: usize, extra: &[&str]) -> Run {
        let mut all = vec!["status", "--admin", &self.admins[i], "--certs", path(&self.certs)];
        all.extend(extra);
        m2m(&all)
    }

    /// One raw HTTP/1.1 request to node `i`'s admin API with its bearer token.
    pub fn http(&self, i: usize, method: &str, target: &str, headers: &[&str], body: &str) -> (u16, String) {
        let bearer = format!("Authorization: Bearer {}", self.token());
        let mut all = vec![bearer.as_str()];
        all.extend(headers);
        http(&self.admins[i], method, target, &all, body)
    }

    /// Waits until node `i`'s `/status` shows every node of `expected_up` up (others down).
    pub fn wait_membership(&self, i: usize, expected_up: &[usize]) {
        eventually(20, &format!("{} to see nodes {expected_up:?} up", self.names[i]), || {
            let run = self.status(i, &["--format", "json"]);
            if run.code != 0 {
                return None;
            }
            let status = run.json();
            let members = status["membership"].as_array()?.clone();
            let ok = members.iter().all(|m| {
                let idx = self.names.iter().position(|n| m["node"] == n.as_str()).unwrap_or(usize::MAX);
                m["up"].as_bool() == Some(expected_up.contains(&idx))
            });
            ok.then_some(())
        });
    }

    /// Starts every node and waits until each sees all the others.
    pub fn up(&mut self) {
        self.start_all();
        let all: Vec<usize> = (0..self.names.len()).collect();
        for i in 0..self.names.len() {
            self.wait_membership(i, &all);
        }
    }

    /// SIGKILL: the node dies without leaving.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`TERM`, `STOP`, `CONT`) to node `i`.
    pub fn signal(&self, i: usize, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid(i).to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits (at most `secs`) for node `i` to exit and returns its exit code.
    pub fn wait_exit(&mut self, i: usize, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let child = self.children[i].as_mut().expect("node started");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.children[i] = None;
                return status.code();
            }
            if Instant::now() > deadline {
                panic!("{} did not exit within {secs} s\n{}", self.names[i], self.output(i));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `m2m session ...` against node `i`'s admin API (the token from the certificates folder).
    pub fn session(&self, i: usize, args: &[&str]) -> Run {
        let mut all = vec!["session", args[0], "--admin", &self.admins[i], "--certs", path(&self.certs)];
        all.extend(&args[1..]);
        m2m(&all)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            if let Some(mut c) = c.take() {
                // A stopped node (SIGSTOP) must be woken up to die cleanly in some kernels.
                let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A path as `&str` (temp dirs are UTF-8 here).
pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// One raw HTTP/1.1 request; returns the status code and the body. `Content-Type:
/// application/json` is sent unless `headers` name a content type.
pub fn http(addr: &str, method: &str, target: &str, headers: &[&str], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the admin API");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("content-type:")) {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
