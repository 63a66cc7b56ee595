//! Reading a domain file and reporting its validation, shared by every subcommand that takes one.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use replication_core::validate::Report;
use replication_core::{DomainConfig, Error};
use serde_json::{Value, json};

use crate::output::{self, Format};

/// Why a domain file cannot be used at all (exit code 2).
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The file cannot be read (missing, a directory, no permission).
    Read {
        /// The path as given.
        file: String,
        /// The operating system's reason.
        message: String,
    },
    /// The file is not UTF-8, not TOML, or does not match the schema. `line` and `column` are
    /// 1-based, 0 when unknown.
    Parse {
        /// The path as given.
        file: String,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// 1-based column, 0 when unknown.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

impl LoadError {
    /// The JSON shape used by `--format json`: `{"file", "valid": false, "parse_error": {..}}`
    /// or `{"file", "valid": false, "read_error": {"message"}}`.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            LoadError::Read { file, message } => {
                json!({ "file": file, "valid": false, "read_error": { "message": message } })
            }
            LoadError::Parse { file, line, column, message } => json!({
                "file": file,
                "valid": false,
                "parse_error": { "line": line, "column": column, "message": message },
            }),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read { file, message } => write!(f, "{file}: cannot read the file: {message}"),
            LoadError::Parse { file, line: 0, message, .. } => {
                write!(f, "{file}: cannot parse the domain file: {message}")
            }
            LoadError::Parse { file, line, column, message } => write!(
                f,
                "{file}:{line}:{column}: cannot parse the domain file (line {line}, column {column}): {message}"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// Reads and parses (but does not validate) the domain file at `path`.
pub(crate) fn load(path: &Path) -> Result<DomainConfig, LoadError> {
    let file = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| LoadError::Read { file: file.clone(), message: e.to_string() })?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let (line, column) = line_col(bytes.get(..good).unwrap_or_default());
            let bad = bytes.get(good).copied().unwrap_or_default();
            return Err(LoadError::Parse {
                file,
                line,
                column,
                message: format!("the file is not UTF-8 text (byte 0x{bad:02x})"),
            });
        }
    };
    DomainConfig::parse(&text, &file).map_err(|e| match e {
        Error::Parse { line, column, message, .. } => LoadError::Parse { file, line, column, message },
        other => LoadError::Parse { file, line: 0, column: 0, message: other.to_string() },
    })
}

/// A domain file read, parsed and checked against every rule.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The path as given.
    pub(crate) file: String,
    /// The parsed domain.
    pub(crate) cfg: DomainConfig,
    /// What validation found (it may hold errors).
    pub(crate) report: Report,
}

/// Reads, parses and validates the domain file at `path` for a command with a `--format`.
/// When the file cannot be used at all, the problem is printed (`format` JSON: on stdout, as
/// [`LoadError::to_json`]; text: on stderr) and the exit code 2 is returned instead.
pub(crate) fn check_for(path: &Path, format: Format) -> anyhow::Result<Result<Checked, ExitCode>> {
    match load(path) {
        Ok(cfg) => {
            let report = replication_core::validate::validate(&cfg);
            Ok(Ok(Checked { file: path.display().to_string(), cfg, report }))
        }
        Err(e) => {
            match format {
                Format::Json => output::print_json(&e.to_json())?,
                Format::Text => eprintln!("error: {e}"),
            }
            Ok(Err(output::exit(output::EXIT_UNUSABLE)))
        }
    }
}

/// 1-based line and column just after `before` (which is valid UTF-8 up to its end).
fn line_col(before: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(before);
    let line = text.matches('\n').count() + 1;
    let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Reads, parses and validates the domain file at `path` for a command that needs a usable
/// domain. On failure the problem is printed to stderr and the exit code is returned: 2 when
/// the file cannot be read or parsed, 1 when it breaks a rule. Warnings are printed and pass.
pub(crate) fn load_valid(path: &Path) -> Result<DomainConfig, ExitCode> {
    let file = path.display().to_string();
    let cfg = load(path).map_err(|e| {
        eprintln!("{e}");
        crate::output::exit(crate::output::EXIT_UNUSABLE)
    })?;
    let report = replication_core::validate::validate(&cfg);
    if report.has_errors() {
        eprint!("{}", report_text(&file, &cfg, &report));
        return Err(crate::output::exit(crate::output::EXIT_INVALID));
    }
    for w in report.warnings() {
        eprintln!("{w}");
    }
    Ok(cfg)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col(b""), (1, 1));
        assert_eq!(line_col(b"ab"), (1, 3));
        assert_eq!(line_col(b"ab\nc"), (2, 2));
    }
}
