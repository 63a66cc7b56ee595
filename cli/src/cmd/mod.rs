//! One module per subcommand. Each exposes `Args` (clap) and `run(&Args) -> Result<ExitCode>`.

pub(crate) mod bench;
pub(crate) mod certs;
pub(crate) mod demo;
pub(crate) mod node;
pub(crate) mod plan;
pub(crate) mod session;
pub(crate) mod status;
pub(crate) mod validate;

/// The tokio runtime of a subcommand that runs nodes or measures them: two worker threads.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}
