//! `m2m session create|set|get|invalidate|list --admin ADDR`: sessions through a node's admin
//! API.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::Value;

use crate::cmd::status::AdminArgs;
use crate::http::encode_segment;
use crate::output::{self, EXIT_FAILED, EXIT_UNACKED, Format};

const EXIT_CODES: &str = "Exit codes: 0 done; 1 no such session, the admin API is unreachable, \
refused the request or failed; 2 bad arguments (e.g. a malformed KEY=VALUE) or an unreadable \
token file; 3 the write was applied on the node but its backups did not acknowledge it in time (it \
may be lost if that node fails).";

/// Arguments of `m2m session`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: SessionCommand,
    /// Output format: text (ids, KEY=VALUE lines), or the admin API's JSON answer (`list`:
    /// `{"sessions": [ids]}`).
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    pub(crate) format: Format,
    /// The session manager (declared in the node's `managers`), whose sessions are a namespace
    /// of their own; without it, the node's anonymous manager.
    #[arg(long, value_name = "NAME", global = true)]
    pub(crate) manager: Option<String>,
}

/// The `session` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SessionCommand {
    /// Create a session on the node; prints only its id.
    #[command(after_help = EXIT_CODES)]
    Create {
        #[command(flatten)]
        admin: AdminArgs,
        /// The new session's id (refused when taken); a fresh id naming the node when absent.
        #[arg(long, allow_hyphen_values = true)]
        id: Option<String>,
        /// Attributes of the new session.
        #[arg(value_name = "KEY=VALUE", value_parser = parse_kv)]
        attributes: Vec<(String, String)>,
    },
    /// Set attributes of a session (other attributes are kept); prints nothing.
    #[command(after_help = EXIT_CODES)]
    Set {
        #[command(flatten)]
        admin: AdminArgs,
        /// The session id (ids may start with `-`: they are taken as they are).
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// Attributes to set.
        #[arg(value_name = "KEY=VALUE", value_parser = parse_kv, required = true)]
        attributes: Vec<(String, String)>,
    },
    /// Print a session's attributes as KEY=VALUE lines, sorted. The node fetches the session
    /// and becomes its owner when another node holds it.
    #[command(after_help = EXIT_CODES)]
    Get {
        #[command(flatten)]
        admin: AdminArgs,
        /// The session id (ids may start with `-`: they are taken as they are).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Invalidate a session everywhere; prints nothing.
    #[command(after_help = EXIT_CODES)]
    Invalidate {
        #[command(flatten)]
        admin: AdminArgs,
        /// The session id (ids may start with `-`: they are taken as they are).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Print the ids of the sessions the node owns, one per line, sorted.
    #[command(after_help = EXIT_CODES)]
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `KEY=VALUE` with a non-empty key.
fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE with a non-empty KEY, got `{s}`")),
    }
}

fn body(attrs: &[(String, String)]) -> String {
    let map: BTreeMap<&str, &str> = attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// Whether the admin API answered that the node declares no such session manager.
fn unknown_manager(r: &crate::http::Response) -> bool {
    r.json().get("kind").and_then(Value::as_str) == Some("unknown-manager")
}

/// Reports the outcome of a write: warnings, 504 (exit 3), other failures (exit 1).
fn write_result(what: &str, id: &str, r: &crate::http::Response) -> Option<ExitCode> {
    match r.status {
        200 | 201 => {
            if let Some(w) = r.json().get("warning").and_then(Value::as_str) {
                eprintln!("warning: {w}");
            }
            None
        }
        504 if r.json().get("kind").and_then(Value::as_str) == Some("fenced") => {
            eprintln!("error: {what} {id}: outcome unknown: {}", r.error_message());
            Some(output::exit(EXIT_UNACKED))
        }
        504 => {
            eprintln!("error: {what} {id}: not acknowledged by the backups in time: {}", r.error_message());
            Some(output::exit(EXIT_UNACKED))
        }
        404 if unknown_manager(r) => {
            eprintln!("error: {}", r.error_message());
            Some(output::exit(EXIT_FAILED))
        }
        404 => {
            eprintln!("error: no session {id} (never created, invalidated, or expired)");
            Some(output::exit(EXIT_FAILED))
        }
        s => {
            eprintln!("error: {what} {id}: the admin API answered {s}: {}", r.error_message());
            Some(output::exit(EXIT_FAILED))
        }
    }
}

/// Runs `m2m session ...`.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let json = args.format == Format::Json;
    let base = sessions_path(args.manager.as_deref());
    let one = |id: &str| format!("{base}/{}", encode_segment(id));
    let code = match &args.command {
        SessionCommand::Create { admin, id, attributes } => {
            let path = id.as_deref().map_or_else(|| base.clone(), one);
            create(admin, &path, attributes, json)
        }
        SessionCommand::Set { admin, id, attributes } => set(admin, &one(id), id, attributes, json),
        SessionCommand::Get { admin, id } => get(admin, &one(id), id, json),
        SessionCommand::Invalidate { admin, id } => invalidate(admin, &one(id), id, json),
        SessionCommand::List { admin } => list(admin, &base, json),
    };
    Ok(code.unwrap_or_else(|c| c))
}

/// The admin API's path of the sessions of `manager` (`None`: the anonymous one).
fn sessions_path(manager: Option<&str>) -> String {
    match manager {
        Some(m) => format!("/managers/{}/sessions", encode_segment(m)),
        None => "/sessions".to_owned(),
    }
}

/// Prints the admin API's JSON answer on stdout (`--format json`).
fn answer_json(r: &crate::http::Response) {
    if output::print_json(&r.json()).is_err() {
        output::emit(&format!("{}\n", r.body.trim()));
    }
}

fn create(
    admin: &AdminArgs,
    base: &str,
    attrs: &[(String, String)],
    json: bool,
) -> Result<ExitCode, ExitCode> {
    let r = admin.call("POST", base, Some(&body(attrs)))?;
    let id = r.json().get("id").and_then(Value::as_str).map(str::to_owned);
    match (&id, r.status) {
        // The session exists (also when not acknowledged): its id goes to stdout.
        (Some(_), 200 | 201 | 504) if json => answer_json(&r),
        (Some(id), 200 | 201 | 504) => output::emit(&format!("{id}\n")),
        (None, 200 | 201) => {
            eprintln!("error: the admin API did not return a session id: {}", r.body);
            return Err(output::exit(EXIT_FAILED));
        }
        _ => {}
    }
    match write_result("create", id.as_deref().unwrap_or("(new session)"), &r) {
        Some(code) => Err(code),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn set(
    admin: &AdminArgs,
    path: &str,
    id: &str,
    attrs: &[(String, String)],
    json: bool,
) -> Result<ExitCode, ExitCode> {
    let r = admin.call("PUT", path, Some(&body(attrs)))?;
    write_done("set", id, &r, json)
}

/// The outcome of `set` or `invalidate`: nothing printed on success in text, the answer in
/// JSON (also when the backups did not acknowledge it).
fn write_done(what: &str, id: &str, r: &crate::http::Response, json: bool) -> Result<ExitCode, ExitCode> {
    if json && matches!(r.status, 200 | 201 | 504) {
        answer_json(r);
    }
    match write_result(what, id, r) {
        Some(code) => Err(code),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn get(admin: &AdminArgs, path: &str, id: &str, json: bool) -> Result<ExitCode, ExitCode> {
    let r = admin.call("GET", path, None)?;
    match r.status {
        200 if json => {
            answer_json(&r);
            Ok(ExitCode::SUCCESS)
        }
        200 => {
            let json = r.json();
            let mut out = String::new();
            if let Some(attrs) = json.get("attributes").and_then(Value::as_object) {
                let sorted: BTreeMap<&String, &Value> = attrs.iter().collect();
                for (k, v) in sorted {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    out.push_str(&format!("{k}={v}\n"));
                }
            }
            output::emit(&out);
            Ok(ExitCode::SUCCESS)
        }
        404 if unknown_manager(&r) => {
            eprintln!("error: {}", r.error_message());
            Err(output::exit(EXIT_FAILED))
        }
        404 => {
            eprintln!("error: no session {id} (never created, invalidated, or expired)");
            Err(output::exit(EXIT_FAILED))
        }
        s => {
            eprintln!("error: get {id}: the admin API answered {s}: {}", r.error_message());
            Err(output::exit(EXIT_FAILED))
        }
    }
}

fn invalidate(admin: &AdminArgs, path: &str, id: &str, json: bool) -> Result<ExitCode, ExitCode> {
    let r = admin.call("DELETE", path, None)?;
    write_done("invalidate", id, &r, json)
}

fn list(admin: &AdminArgs, base: &str, json: bool) -> Result<ExitCode, ExitCode> {
    let mut all: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("{base}?after={}", encode_segment(a)),
            None => base.to_owned(),
        };
        let r = admin.call("GET", &path, None)?;
        if r.status != 200 {
            eprintln!("error: list: the admin API answered {}: {}", r.status, r.error_message());
            return Err(output::exit(EXIT_FAILED));
        }
        let json = r.json();
        let Some(ids) = json.get("sessions").and_then(Value::as_array) else {
            eprintln!("error: list: the admin API answered without a session list: {}", r.body);
            return Err(output::exit(EXIT_FAILED));
        };
        all.extend(ids.iter().filter_map(Value::as_str).map(str::to_owned));
        match json.get("next").and_then(Value::as_str) {
            // A page that does not move forward would loop for ever.
            Some(next) if after.as_deref() != Some(next) => after = Some(next.to_owned()),
            _ => break,
        }
    }
    if json {
        if output::print_json(&serde_json::json!({ "sessions": all })).is_err() {
            return Err(output::exit(EXIT_FAILED));
        }
    } else {
        output::emit(&all.iter().map(|id| format!("{id}\n")).collect::<String>());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_may_start_with_a_hyphen() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct T {
            #[command(subcommand)]
            c: SessionCommand,
        }
        for args in [
            &["t", "get", "--admin", "a:1", "-iXb.app1.app2"][..],
            &["t", "set", "--admin", "a:1", "-hq3V0x9R2aY7.app1.app2", "k=v"],
            &["t", "invalidate", "--admin", "a:1", "--x.app1"],
        ] {
            let t = T::try_parse_from(args).expect("parses");
            let id = match t.c {
                SessionCommand::Get { id, .. }
                | SessionCommand::Set { id, .. }
                | SessionCommand::Invalidate { id, .. } => id,
                SessionCommand::Create { .. } | SessionCommand::List { .. } => String::new(),
            };
            assert_eq!(id, args[4]);
        }
    }

    #[test]
    fn key_value_pairs() {
        assert_eq!(parse_kv("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_kv("a="), Ok(("a".into(), String::new())));
        assert!(parse_kv("=b").is_err());
        assert!(parse_kv("ab").is_err());
    }
}
