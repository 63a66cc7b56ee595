//! `m2m status --admin ADDR`: a node's view of its domain, from its admin API.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::Value;

use crate::http;
use crate::output::{self, EXIT_FAILED, Format, Table};

/// Where the admin API is, and the token, shared by `status` and `session`.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    /// The node's admin address (its `admin` in the domain file), host:port.
    #[arg(long, value_name = "ADDR")]
    pub(crate) admin: String,
    /// The admin API's bearer token, when the node requires one.
    #[arg(long, value_name = "T", env = "M2M_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

impl AdminArgs {
    /// Sends a request; an unreachable node or a refused token is printed and becomes
    /// `Err(exit code 1)`.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<http::Response, ExitCode> {
        match http::request(&self.admin, method, path, self.token.as_deref(), body) {
            Ok(r) if r.status == 401 => {
                let how = if self.token.is_some() { "the token was refused" } else { "a token is required" };
                eprintln!(
                    "error: the admin API at {} answered 401 Unauthorized: {how} (give --token or set M2M_ADMIN_TOKEN)",
                    http::host_port(&self.admin)
                );
                Err(output::exit(EXIT_FAILED))
            }
            Ok(r) => Ok(r),
            Err(e) => {
                eprintln!("error: {e}");
                Err(output::exit(EXIT_FAILED))
            }
        }
    }
}

/// Arguments of `m2m status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 shown; 1 the admin API is unreachable or refused the request; 2 bad arguments."
)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) admin: AdminArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// Runs `m2m status`.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let r = match args.admin.call("GET", "/status", None) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    if r.status != 200 {
        eprintln!("error: the admin API answered {}: {}", r.status, r.error_message());
        return Ok(output::exit(EXIT_FAILED));
    }
    let status = r.json();
    if !status.is_object() {
        eprintln!("error: the admin API did not answer with a status document: {}", r.body);
        return Ok(output::exit(EXIT_FAILED));
    }
    match args.format {
        Format::Json => output::print_json(&status)?,
        Format::Text => output::emit(&render(&status)),
    }
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn num(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        cur = cur.get(p).unwrap_or(&Value::Null);
    }
    match cur {
        Value::Number(n) => n.to_string(),
        _ => "-".to_owned(),
    }
}

fn ms(v: &Value, key: &str) -> String {
    v.get("replication_lag")
        .and_then(|l| l.get(key))
        .and_then(Value::as_f64)
        .map_or("-".into(), |x| format!("{x:.1} ms"))
}

/// The status document for people.
fn render(s: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} of domain {} ({}, {} transport, replicas {}, mode {}, writes {})",
        text(s, "node"),
        text(s, "domain"),
        text(s, "topology"),
        text(s, "transport"),
        text(s, "replicas"),
        text(s, "mode"),
        text(s, "ack"),
    );
    out.push('\n');
    let mut t = Table::new(["node", "mode", "state", "link"]);
    for m in s.get("membership").and_then(Value::as_array).into_iter().flatten() {
        let is_self = m.get("self").and_then(Value::as_bool).unwrap_or(false);
        let up = m.get("up").and_then(Value::as_bool).unwrap_or(false);
        let (state, link) = if is_self {
            ("up (this node)", "-")
        } else {
            let connected = m.get("connected").and_then(Value::as_bool).unwrap_or(false);
            (if up { "up" } else { "DOWN" }, if connected { "connected" } else { "-" })
        };
        t.row([text(m, "node"), text(m, "mode"), state.to_owned(), link.to_owned()]);
    }
    out.push_str(&t.render());
    out.push('\n');
    let _ = writeln!(out, "sessions owned:        {}", num(s, &["sessions", "owned"]));
    let _ = writeln!(out, "sessions backed up:    {}", num(s, &["sessions", "backed_up"]));
    let _ = writeln!(out, "under-replicated:      {}", num(s, &["sessions", "under_replicated"]));
    let _ = writeln!(
        out,
        "replication lag:       {} behind; sync writes last {}, mean {}, max {} ({})",
        ms(s, "behind_ms"),
        ms(s, "last_ms"),
        ms(s, "mean_ms"),
        ms(s, "max_ms"),
        num(s, &["replication_lag", "sync_writes"])
    );
    let _ = writeln!(out, "failovers:             {}", num(s, &["failovers"]));
    let _ = writeln!(out, "unacknowledged writes: {}", num(s, &["unacknowledged_writes"]));
    let _ = writeln!(out, "refused connections:   {}", num(s, &["refused", "count"]));
    for r in s.get("refused").and_then(|r| r.get("recent")).and_then(Value::as_array).into_iter().flatten() {
        let _ = writeln!(out, "  refused {}: {}", text(r, "peer"), text(r, "reason"));
    }
    out
}
