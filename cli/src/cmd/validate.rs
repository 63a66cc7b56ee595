//! `m2m validate FILE`: parse a domain file and check every rule.

use std::path::PathBuf;
use std::process::ExitCode;

use replication_core::DomainConfig;
use replication_core::validate::{Report, validate};
use serde_json::{Value, json};

use crate::domain;
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

/// The validation result as JSON: `{"file", "valid", "domain", "topology", "nodes", "errors",
/// "warnings"}`; each violation is `{"code", "severity", "message", "members"}`.
pub(crate) fn report_json(file: &str, cfg: &DomainConfig, report: &Report) -> Value {
    json!({
        "file": file,
        "valid": !report.has_errors(),
        "domain": cfg.domain.name,
        "topology": cfg.topology().as_str(),
        "nodes": cfg.nodes.len(),
        "errors": report.errors().collect::<Vec<_>>(),
        "warnings": report.warnings().collect::<Vec<_>>(),
    })
}

/// The validation result for people: a summary line, then one line per violation.
pub(crate) fn report_text(file: &str, cfg: &DomainConfig, report: &Report) -> String {
    let errors = report.errors().count();
    let warnings = report.warnings().count();
    let mut out = if errors == 0 {
        format!(
            "{file}: valid: domain {} ({}, {} node(s), replicas {}), {warnings} warning(s)\n",
            cfg.domain.name,
            cfg.topology(),
            cfg.nodes.len(),
            cfg.domain.replicas
        )
    } else {
        format!("{file}: invalid: {errors} error(s), {warnings} warning(s)\n")
    };
    for v in &report.violations {
        out.push_str(&output::violation_line(v));
        out.push('\n');
    }
    out
}
