//! `m2m`, the command-line tool of m2m.
//!
//! Each subcommand lives in its own module under [`cmd`] and returns the process exit code:
//! 0 success, 1 the domain breaks a rule, 2 the input cannot be used (unreadable or
//! unparseable file, unknown node, bad arguments).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod domain;
mod output;

/// m2m: memory-to-memory session replication.
#[derive(Debug, Parser)]
#[command(name = "m2m", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a domain file: exit 0 when valid (warnings are printed), 1 when it breaks a
    /// rule, 2 when it cannot be read or parsed.
    Validate(cmd::validate::Args),
    /// Show where sessions would live, and what happens when nodes fail ("what if").
    Plan(cmd::plan::Args),
    /// Create the domain's certificate authority and the nodes' certificates.
    Certs(cmd::certs::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(&args),
        Command::Plan(args) => cmd::plan::run(&args),
        Command::Certs(args) => cmd::certs::run(&args),
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
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
