//! `m2m validate FILE`: parse a domain file and check every rule.

use std::path::PathBuf;
use std::process::ExitCode;

use replication_core::validate::validate_resolved;

use crate::domain::{self, Checked, report_json, report_text};
use crate::output::{self, EXIT_INVALID, Format};

/// Arguments of `m2m validate`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The domain file (TOML).
    pub(crate) file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// Runs `m2m validate`.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let Checked { file, cfg, mut report } = match domain::check_for(&args.file, args.format)? {
        Ok(checked) => checked,
        Err(code) => return Ok(code),
    };
    // The rules that need name resolution: only here, where an operator asks for every check
    // (a node's start does not wait for the resolver).
    report.violations.extend(validate_resolved(&cfg, resolve).violations);
    match args.format {
        Format::Json => output::print_json(&report_json(&file, &cfg, &report))?,
        Format::Text => output::emit(&report_text(&file, &cfg, &report)),
    }
    Ok(if report.has_errors() { output::exit(EXIT_INVALID) } else { ExitCode::SUCCESS })
}

/// The addresses `host` resolves to with the system's resolver (none when it does not).
fn resolve(host: &str) -> Vec<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    (host, 0).to_socket_addrs().map(|a| a.map(|sa| sa.ip()).collect()).unwrap_or_default()
}
