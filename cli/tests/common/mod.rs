//! Helpers for the end-to-end tests: run the built `m2m` binary and look at what it did.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;

/// What one run of `m2m` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout followed by stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }
}

/// Runs `m2m` with `args` from the workspace root (so `cli/tests/fixtures/...` and
/// `examples/...` paths work as written in the README).
pub fn m2m(args: &[&str]) -> Run {
    m2m_with_token_env(args, None)
}

/// As [`m2m`], with `M2M_ADMIN_TOKEN` set to `token` (unset when `None`).
pub fn m2m_with_token_env(args: &[&str], token: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_m2m"));
    match token {
        Some(t) => command.env("M2M_ADMIN_TOKEN", t),
        None => command.env_remove("M2M_ADMIN_TOKEN"),
    };
    let out = command.args(args).current_dir(workspace_root()).output().expect("the m2m binary runs");
    Run {
        code: out.status.code().expect("m2m exited normally, not by a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The workspace root (the parent of the `cli` crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("cli has a parent").to_path_buf()
}

/// A fixture's path relative to the workspace root.
pub fn fixture(name: &str) -> String {
    format!("cli/tests/fixtures/{name}")
}

/// Writes `bytes` to a fresh file under the test scratch directory and returns its absolute path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("m2m-cli-tests");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    path.display().to_string()
}

pub mod cluster;
pub mod history;
