//! One module per subcommand. Each exposes `Args` (clap) and `run(&Args) -> Result<ExitCode>`.

pub(crate) mod certs;
pub(crate) mod plan;
pub(crate) mod validate;
