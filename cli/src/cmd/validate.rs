//! `m2m validate FILE`: parse a domain file and check every rule.

use std::path::PathBuf;
use std::process::ExitCode;

use replication_core::validate::validate;

use crate::domain::{self, report_json, report_text};
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
    let file = args.file.display().to_string();
    let cfg = match domain::load_for(&args.file, args.format)? {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let report = validate(&cfg);
    match args.format {
        Format::Json => output::print_json(&report_json(&file, &cfg, &report))?,
        Format::Text => output::emit(&report_text(&file, &cfg, &report)),
    }
    Ok(if report.has_errors() { output::exit(EXIT_INVALID) } else { ExitCode::SUCCESS })
}
