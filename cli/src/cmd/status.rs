//! `m2m status --admin ADDR`: a node's view of its domain, from its admin API.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::admin::token;
use crate::http;
use crate::output::{self, EXIT_FAILED, EXIT_UNUSABLE, Format, Table};

/// Where the admin API is, and where its token is, shared by `status` and `session`. The token
/// comes from --token-file, else from `admin.token` in the --certs folder, else from
/// M2M_ADMIN_TOKEN; never from the command line, where every user on the host could read it.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    /// The node's admin address (its `admin` in the domain file), host:port.
    #[arg(long, value_name = "ADDR")]
    pub(crate) admin: String,
    /// The certificates folder from `m2m certs init`: the token is its `admin.token`.
    #[arg(long, value_name = "DIR", conflicts_with = "token_file")]
    pub(crate) certs: Option<PathBuf>,
    /// A file holding the admin API's bearer token (or set M2M_ADMIN_TOKEN to the token).
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
}

impl AdminArgs {
    /// Sends a request; an unreadable token (exit 2), an unreachable node or a refused
    /// token (exit 1) is printed and becomes `Err(exit code)`.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<http::Response, ExitCode> {
        let token = token::for_client(self.token_file.as_deref(), self.certs.as_deref()).map_err(|e| {
            eprintln!("error: {e:#}");
            output::exit(EXIT_UNUSABLE)
        })?;
        match http::request(&self.admin, method, path, token.as_deref(), body) {
            Ok(r) if r.status == 401 => {
                let how = if token.is_some() { "the token was refused" } else { "a token is required" };
                eprintln!(
                    "error: the admin API at {} answered 401 Unauthorized: {how} (give --certs DIR with \
                     the node's certificates folder, --token-file FILE, or set M2M_ADMIN_TOKEN)",
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
    after_help = "Exit codes: 0 shown; 1 the admin API is unreachable or refused the request; 2 bad arguments \
or an unreadable token file."
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
    let files: Vec<&Value> = s
        .get("domain_file")
        .and_then(|d| d.get("nodes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    // The domain file each node runs (its fingerprint), as this node heard it.
    let file_of = |node: &str| {
        files.iter().find(|f| text(f, "node") == node).map_or("-".to_owned(), |f| {
            let placed = f.get("placed").and_then(Value::as_bool);
            format!(
                "{}{}",
                text(f, "fingerprint"),
                if placed == Some(false) { " (copies moving)" } else { "" }
            )
        })
    };
    let mut t = Table::new(["node", "mode", "state", "link", "domain file"]);
    for m in s.get("membership").and_then(Value::as_array).into_iter().flatten() {
        let is_self = m.get("self").and_then(Value::as_bool).unwrap_or(false);
        let up = m.get("up").and_then(Value::as_bool).unwrap_or(false);
        let (state, link) = if is_self {
            ("up (this node)", "-")
        } else {
            let connected = m.get("connected").and_then(Value::as_bool).unwrap_or(false);
            (if up { "up" } else { "DOWN" }, if connected { "connected" } else { "-" })
        };
        t.row([
            text(m, "node"),
            text(m, "mode"),
            state.to_owned(),
            link.to_owned(),
            file_of(&text(m, "node")),
        ]);
    }
    // Nodes of the former file while a change runs (leaving).
    for f in files.iter().filter(|f| f.get("listed").and_then(Value::as_bool) == Some(false)) {
        let up = f.get("up").and_then(Value::as_bool).unwrap_or(false);
        let state = if up { "up (removed)" } else { "DOWN (removed)" };
        t.row([text(f, "node"), "-".to_owned(), state.to_owned(), "-".to_owned(), file_of(&text(f, "node"))]);
    }
    out.push_str(&t.render());
    out.push('\n');
    if let Some(d) = s.get("domain_file").filter(|d| !d.is_null()) {
        let changing = d.get("changing").and_then(Value::as_bool).unwrap_or(false);
        let state = if changing {
            "CHANGING: nodes run different files, or copies are still moving"
        } else {
            "complete: every node runs it"
        };
        let _ = writeln!(out, "domain file:           {} ({state})", text(d, "fingerprint"));
    }
    let _ = writeln!(out, "sessions owned:        {}", num(s, &["sessions", "owned"]));
    let _ = writeln!(out, "sessions backed up:    {}", num(s, &["sessions", "backed_up"]));
    let _ = writeln!(out, "under-replicated:      {}", num(s, &["sessions", "under_replicated"]));
    if let Some(managers) = s.get("managers").and_then(Value::as_object) {
        let mut t = Table::new(["session manager", "owned", "backed up"]);
        for (name, m) in managers {
            let name = if name.is_empty() { "(anonymous)" } else { name.as_str() };
            t.row([name.to_owned(), num(m, &["owned"]), num(m, &["backed_up"])]);
        }
        out.push_str(&t.render());
    }
    if s.get("manager_refused").and_then(Value::as_u64).is_some_and(|n| n > 0) {
        let _ = writeln!(
            out,
            "undeclared managers:   {} record(s) refused (rule manager-not-declared: the domain files differ)",
            num(s, &["manager_refused"])
        );
    }
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
    if let Some(c) = s.get("certificate").filter(|c| !c.is_null()) {
        let _ = writeln!(out, "certificate expires:   in {} days", num(c, &["days_left"]));
    }
    for r in s.get("refused").and_then(|r| r.get("recent")).and_then(Value::as_array).into_iter().flatten() {
        let _ = writeln!(out, "  refused {}: {}", text(r, "peer"), text(r, "reason"));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render;

    /// Records of an undeclared manager refused: `m2m status` names the rule; none, no line.
    #[test]
    fn refused_records_of_an_undeclared_manager_are_shown() {
        let text = render(&json!({ "manager_refused": 3 }));
        assert!(
            text.contains("undeclared managers:   3 record(s) refused (rule manager-not-declared"),
            "{text}"
        );
        assert!(!render(&json!({ "manager_refused": 0 })).contains("undeclared managers"));
    }
}
