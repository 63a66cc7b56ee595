//! One module per subcommand. Each exposes `Args` (clap) and `run(&Args) -> Result<ExitCode>`.

pub(crate) mod bench;
pub(crate) mod certs;
pub(crate) mod demo;
pub(crate) mod lb_config;
pub(crate) mod node;
pub(crate) mod plan;
pub(crate) mod session;
pub(crate) mod status;
pub(crate) mod validate;
