//! `m2m`, the command-line tool of m2m.
//!
//! Each subcommand lives in its own module under [`cmd`] and returns the process exit code:
//! 0 success, 1 the domain breaks a rule or the command failed (unreachable admin API, no such
//! session, a demo session lost), 2 the input cannot be used (unreadable or unparseable file,
//! unknown node, bad arguments, a transport the binary was built without), 3 a write was not
//! acknowledged by its backups in time.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

mod admin;
mod cmd;
mod domain;
mod http;
mod logging;
mod output;
mod progress;

const EXIT_CODES: &str = "Exit codes:\n  0  success\n  1  the domain breaks a rule, or the command failed \
(admin API unreachable or refused, no such session, node failed, a demo session lost)\n  2  bad arguments, \
unreadable or unparseable domain file, unknown node, a transport this m2m was built without\n  3  a write's outcome is not certain: applied \
but not acknowledged by its backups in time, or another node took the session over while it was \
in flight (m2m session)";

/// m2m: memory-to-memory session replication.
#[derive(Debug, Parser)]
#[command(name = "m2m", version, about, propagate_version = true, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a domain file: exit 0 when valid (warnings are printed), 1 when it breaks a
    /// rule, 2 when it cannot be read or parsed.
    Validate(cmd::validate::Args),
    /// Show where sessions would live, and what happens when nodes fail ("what if"); with
    /// --from OLD --to NEW, what changing a running domain's file moves.
    Plan(cmd::plan::Args),
    /// Create the domain's certificate authority and the nodes' certificates.
    Certs(cmd::certs::Args),
    /// Run one node of a domain in the foreground (until SIGINT/SIGTERM), with its admin
    /// HTTP API on the node's `admin` address.
    Node(cmd::node::Args),
    /// Show a running node's view of the domain: membership, sessions, replication lag.
    Status(cmd::status::Args),
    /// Create, change, read and invalidate sessions through a node's admin API.
    Session(cmd::session::Args),
    /// Start a whole domain in this process on loopback, crash a node and show failover.
    Demo(cmd::demo::Args),
    /// Measure m2m against raw TCP, raw QUIC and Redis baselines (latency, throughput, memory,
    /// failover, re-replication).
    Bench(cmd::bench::Args),
    /// Print a load-balancer configuration (HAProxy or nginx) that sends each request to its
    /// session's owner, to its failover target when the owner is down, else to any node.
    LbConfig(cmd::lb_config::Args),
    /// Print the completion script of a shell (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::Args),
    /// Print the manual page (troff), or write one page per command with --out DIR.
    Man(cmd::man::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(&args),
        Command::Plan(args) => cmd::plan::run(&args),
        Command::Certs(args) => cmd::certs::run(&args),
        Command::Node(args) => cmd::node::run(&args),
        Command::Status(args) => cmd::status::run(&args),
        Command::Session(args) => cmd::session::run(&args),
        Command::Demo(args) => cmd::demo::run(&args),
        Command::Bench(args) => cmd::bench::run(&args),
        Command::LbConfig(args) => cmd::lb_config::run(&args),
        Command::Completions(args) => cmd::completions::run(&args, Cli::command()),
        Command::Man(args) => cmd::man::run(&args, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(output::EXIT_UNUSABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
