//! A node of a benchmark domain in a child process (`m2m bench --child DIR --child-node NAME`),
//! so that losing it is a crashed process: killed with SIGKILL, its memory freed by the kernel
//! and not by the benchmark's own threads (dropping a node that held half a million copies
//! takes about two seconds of CPU in the process that drops it).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use session_api::{DomainConfig, SessionManager};

use super::cluster::{create_many, wait_peers_up};
use super::sync;

/// A folder with a benchmark domain's file `bench.toml` (`text`, parsed as `cfg`) and its
/// throw-away certificates (the path returned), for the nodes in this process and in children.
pub(crate) fn domain_dir(text: &str, cfg: &DomainConfig) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs)?;
    replication_core::tls::init_dir(cfg, &certs).context("throw-away certificates")?;
    std::fs::write(dir.path().join("bench.toml"), text)?;
    Ok((dir, certs))
}

/// A node in a child process: lines from its standard output, lines to its standard input;
/// killed (SIGKILL) when dropped.
pub(crate) struct ChildNode {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: tokio::sync::mpsc::Receiver<String>,
}

impl ChildNode {
    /// Starts node `node` of `DIR/bench.toml` (certificates in `DIR/certs`), which creates
    /// `sessions` sessions once its peers are up (see [`node_child`]).
    pub(crate) fn spawn(dir: &std::path::Path, node: &str, sessions: usize) -> anyhow::Result<ChildNode> {
        let exe = std::env::current_exe().context("the m2m executable")?;
        let mut child = std::process::Command::new(exe)
            .arg("bench")
            .arg("--child")
            .arg(dir)
            .args(["--child-node", node, "--child-sessions", &sessions.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {node}'s process"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{node}'s process has no pipes");
        };
        Ok(ChildNode { child, stdin, lines: line_reader(stdout) })
    }

    /// The next line it prints, within `limit`.
    pub(crate) async fn line(&mut self, limit: Duration) -> anyhow::Result<String> {
        match tokio::time::timeout(limit, self.lines.recv()).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => bail!("the child node's process exited ({:?})", self.child.try_wait()),
            Err(_) => bail!("the child node's process said nothing for {limit:?}"),
        }
    }

    pub(crate) fn send(&mut self, line: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        writeln!(self.stdin, "{line}").context("writing to the child node's process")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// SIGKILL, and reaps it.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("killing the child node's process")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of a blocking reader (a pipe), read on a thread of their own, until it ends or
/// fails or the receiver is dropped.
fn line_reader(r: impl std::io::Read + Send + 'static) -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A node of a benchmark in a child process (`--child DIR --child-node NAME`): starts `node`
/// of `DIR/bench.toml` (certificates in `DIR/certs`), waits for its two peers, creates `n`
/// sessions and prints `ready`; with sessions, `ready PROBE ID2 ID3`: a session to read back
/// after a failover, and one backed up on app2 and one on app3. For each `refresh` on its
/// standard input it writes to those two (so that both peers hear it just before a kill) and
/// prints `refreshed`. It runs until it is killed, or leaves when its standard input closes
/// (the benchmark is gone).
pub(crate) async fn node_child(dir: &std::path::Path, node: &str, n: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(dir.join("bench.toml")).context("the benchmark's domain file")?;
    let cfg = DomainConfig::parse(&text, "bench.toml").context("the benchmark's domain file")?;
    let m = SessionManager::builder(cfg, node)
        .certs_dir(dir.join("certs"))
        .ack(sync(1))
        .start()
        .await
        .with_context(|| format!("starting {node}"))?;
    wait_peers_up(std::slice::from_ref(&m), 2).await?;
    let ids = create_many(&m, n).await?;
    let last = match ids.first() {
        Some(probe) => {
            let last = ["app2", "app3"].map(|t| {
                ids.iter().find(|id| id.ends_with(&format!(".{t}"))).cloned().unwrap_or_else(|| probe.clone())
            });
            println!("ready {probe} {} {}", last[0], last[1]);
            last.to_vec()
        }
        None => {
            println!("ready");
            Vec::new()
        }
    };
    let mut rx = line_reader(std::io::stdin());
    while let Some(line) = rx.recv().await {
        if line.trim() == "refresh" {
            for id in &last {
                m.update(id, |s| s.set("refresh", &1u8)).await?;
            }
            println!("refreshed");
        }
    }
    let _ = m.abort().await;
    Ok(())
}
