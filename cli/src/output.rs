//! Output helpers shared by the subcommands: the `--format` flag, exit codes, plain tables
//! and JSON printing.

use std::fmt::Write as _;
use std::process::ExitCode;

use replication_core::validate::Violation;
use serde::Serialize;

/// Exit code: the domain breaks a rule.
pub(crate) const EXIT_INVALID: u8 = 1;
/// Exit code: the command failed (node unreachable, session not found, node failed, a demo
/// session lost). Same value as [`EXIT_INVALID`]: "it did not work".
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit code: a write was applied on the node but its backups did not acknowledge it in time.
pub(crate) const EXIT_UNACKED: u8 = 3;
/// Exit code: the input cannot be used (unreadable, unparseable, unknown node, bad arguments).
pub(crate) const EXIT_UNUSABLE: u8 = 2;

/// How a subcommand prints its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Text for people.
    #[default]
    Text,
    /// JSON for scripts (one document on stdout).
    Json,
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text);
    Ok(())
}

/// Writes `text` to stdout. A closed stdout (`m2m plan ... | head`) is not an error worth a
/// panic, so write errors are ignored.
pub(crate) fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Exit code from one of the constants above.
pub(crate) fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// One violation as a line of text: `error[code]: sentence (members: a, b)`.
pub(crate) fn violation_line(v: &Violation) -> String {
    v.to_string()
}

/// A table of plain, space-aligned columns. Columns whose every cell is a number are
/// right-aligned, the others left-aligned. Written here (one short function) rather than with
/// a table crate: those draw borders or pad every line, and the README's samples and the
/// scripts that read these columns want bare columns with no trailing spaces.
#[derive(Debug, Default)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Table { headers: headers.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub(crate) fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text, one line per row after the header, each line ending in `\n`.
    pub(crate) fn render(&self) -> String {
        let n = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        let mut numeric = vec![true; n];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                width[i] = width[i].max(cell.chars().count());
                if !cell.is_empty() && cell.parse::<i64>().is_err() {
                    numeric[i] = false;
                }
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let w = width[i];
                // Header cells follow the column's alignment too.
                let _ = if numeric[i] { write!(text, "{cell:>w$}") } else { write!(text, "{cell:<w$}") };
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_text_left_and_numbers_right() {
        let mut t = Table::new(["node", "owns"]);
        t.row(["a", "5"]);
        t.row(["bbbbbb", "1000"]);
        assert_eq!(t.render(), "node    owns\na          5\nbbbbbb  1000\n");
    }
}
