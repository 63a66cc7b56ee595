//! Reading a domain file: [`DomainConfig::parse`] (syntax and schema, errors with line and
//! column) and [`DomainConfig::load`] (parse, then the rules of [`crate::validate`]).
//!
//! This sits above the configuration model ([`crate::config`]), its rules
//! ([`crate::validate`]) and the crate's error type ([`crate::error`]): the model knows none of
//! them.

use crate::config::DomainConfig;
use crate::error::Error;
use crate::validate::{Report, validate};

impl DomainConfig {
    /// Parses a domain file. `origin` names the text in error messages (usually the path).
    ///
    /// This checks syntax and schema only; call [`crate::validate::validate`] (or
    /// [`DomainConfig::load`]) for the rules.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|span| line_col(text, span.start)).unwrap_or((0, 0));
            Error::Parse { origin: origin.to_owned(), line, column, message: e.message().to_owned() }
        })
    }

    /// Parses and validates: the config when it breaks no rule (warnings may remain in the
    /// report), else [`Error::Invalid`] with every violation.
    pub fn load(text: &str, origin: &str) -> Result<(Self, Report), Error> {
        let cfg = Self::parse(text, origin)?;
        let report = validate(&cfg);
        if report.has_errors() { Err(Error::Invalid(report)) } else { Ok((cfg, report)) }
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, Replicas, Topology, TransportKind};

    #[test]
    fn parses_minimal_file_with_defaults() {
        let cfg = DomainConfig::parse(
            "[domain]\nname = \"web\"\n[[node]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n",
            "t",
        )
        .expect("valid");
        assert_eq!(cfg.domain.replicas, Replicas::Count(1));
        assert_eq!(cfg.nodes[0].mode(), Mode::Both);
        assert_eq!(cfg.topology(), Topology::PeerToPeer);
        assert_eq!(cfg.domain.transport, TransportKind::Tcp);
    }

    #[test]
    fn unknown_key_reports_line_and_column() {
        let text = "[domain]\nname = \"web\"\ncolour = 3\n";
        match DomainConfig::parse(text, "f.toml") {
            Err(Error::Parse { line, column, message, .. }) => {
                assert_eq!((line, column), (3, 1), "{message}");
                assert!(message.contains("colour"), "{message}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn bad_address_and_mode_are_parse_errors() {
        for (text, needle) in [
            ("[domain]\nname='w'\n[[node]]\nname='a'\naddress='nope'\n", "not an address"),
            ("[domain]\nname='w'\n[[node]]\nname='a'\naddress='h:0'\n", "not an address"),
            ("[domain]\nname='w'\n[[node]]\nname='a'\naddress='h:1'\nmode='primary'\n", "primary"),
            ("[domain]\nname='w'\ntopology='ring'\n", "ring"),
            ("[domain]\nname='w'\nreplicas='all'\n", "entire-domain"),
        ] {
            let err = DomainConfig::parse(text, "f").expect_err(text);
            let msg = err.to_string();
            assert!(msg.contains(needle), "{text:?} gave {msg}");
            assert!(matches!(err, Error::Parse { line, .. } if line > 0), "{msg}");
        }
    }
}
