//! `m2m validate FILE`: parse a domain file and check every rule.

use std::path::PathBuf;
use std::process::ExitCode;

use replication_core::validate::validate;

use crate::domain::{self, report_json, report_text};
use crate::output::{self, EXIT_INVALID, EXIT_UNUSABLE, Format};

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
    let cfg = match domain::load(&args.file) {
        Ok(cfg) => cfg,
        Err(e) => {
            match args.format {
                Format::Json => output::print_json(&e.to_json())?,
                Format::Text => eprintln!("error: {e}"),
            }
            return Ok(output::exit(EXIT_UNUSABLE));
        }
    };
    let report = validate(&cfg);
    match args.format {
        Format::Json => output::print_json(&report_json(&file, &cfg, &report))?,
        Format::Text => output::emit(&report_text(&file, &cfg, &report)),
    }
    Ok(if report.has_errors() { output::exit(EXIT_INVALID) } else { ExitCode::SUCCESS })
}
