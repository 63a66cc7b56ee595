//! One module per subcommand. Each exposes `Args` (clap) and `run(&Args) -> Result<ExitCode>`.

pub(crate) mod bench;
pub(crate) mod certs;
pub(crate) mod completions;
pub(crate) mod demo;
pub(crate) mod lb_config;
pub(crate) mod man;
pub(crate) mod node;
pub(crate) mod plan;
pub(crate) mod session;
pub(crate) mod status;
pub(crate) mod validate;

use std::process::ExitCode;

use replication_core::TransportKind;

use crate::output::{self, EXIT_UNUSABLE};

/// The tokio runtime of a subcommand that runs nodes or measures them: two worker threads.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

/// Checks that this `m2m` was built with the transport `kind` (cargo features `tcp` and
/// `quic`, both by default). When it was not, says so on stderr, naming `what` asked for it
/// and the missing feature, and returns exit code 2: the input cannot be used by this binary.
pub(crate) fn require_transport(kind: TransportKind, what: &str) -> Result<(), ExitCode> {
    missing_transport(kind, &session_api::carrier::available(), what).map_or(Ok(()), |message| {
        eprintln!("error: {message}");
        Err(output::exit(EXIT_UNUSABLE))
    })
}

/// Why `kind` cannot be used by a build with the transports `built`, if it cannot.
fn missing_transport(kind: TransportKind, built: &[TransportKind], what: &str) -> Option<String> {
    if built.contains(&kind) {
        return None;
    }
    let built: Vec<String> = built.iter().map(ToString::to_string).collect();
    Some(format!(
        "{what} uses the `{kind}` transport, but this m2m was built without the cargo feature `{kind}` \
         (it has: {}); build one with it, e.g. `cargo install --path cli --features {kind}`",
        if built.is_empty() { "none".to_owned() } else { built.join(", ") }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_transport_names_its_feature() {
        use TransportKind::{Quic, Tcp};
        assert_eq!(missing_transport(Tcp, &[Tcp, Quic], "d"), None);
        let m = missing_transport(Quic, &[Tcp], "domain d in d.toml").expect("quic is missing");
        assert!(m.starts_with("domain d in d.toml uses the `quic` transport"), "{m}");
        assert!(m.contains("without the cargo feature `quic` (it has: tcp)"), "{m}");
        assert!(missing_transport(Tcp, &[], "d").is_some_and(|m| m.contains("(it has: none)")));
    }
}
