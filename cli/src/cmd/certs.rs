//! `m2m certs init --domain FILE --out DIR`: a certificate authority for the domain and a
//! certificate and key per node, for mutual TLS between the nodes, and the admin API's bearer
//! token.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::admin::token;
use crate::domain;
use crate::output;

/// Arguments of `m2m certs`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: CertsCommand,
}

/// The `certs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CertsCommand {
    /// Create the domain's CA (ca.pem, ca.key), a certificate and key per node (NODE.pem,
    /// NODE.key) and the admin API's bearer token (admin.token, readable by its owner only) in
    /// DIR. Existing files are kept; run it again after adding nodes.
    Init(InitArgs),
}

/// Arguments of `m2m certs init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// The domain file (TOML).
    #[arg(long, value_name = "FILE")]
    pub(crate) domain: PathBuf,
    /// The folder for the certificates and keys (created if missing).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
}

/// Runs `m2m certs ...`.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        CertsCommand::Init(a) => init(a),
    }
}

fn init(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let cfg = match domain::load_valid(&args.domain) {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let issued = replication_core::tls::init_dir(&cfg, &args.out)
        .with_context(|| format!("cannot create certificates in {}", args.out.display()))?;
    let token_issued = token::ensure(&args.out)?;
    let dir = args.out.display();
    let mut text = format!("domain {}: certificates in {dir}\n", cfg.domain.name);
    text.push_str(&format!("  CA: {dir}/ca.pem (key {dir}/ca.key: keep it offline once nodes are issued)\n"));
    for n in &cfg.nodes {
        let state = if issued.contains(&n.name) { "issued" } else { "kept (already there)" };
        text.push_str(&format!("  {}: {dir}/{}.pem, {dir}/{}.key  {state}\n", n.name, n.name, n.name));
    }
    let state = if token_issued { "issued" } else { "kept (already there)" };
    text.push_str(&format!(
        "  admin API token: {dir}/{} (owner only; `--certs {dir}` finds it)  {state}\n",
        token::TOKEN_FILE
    ));
    output::emit(&text);
    Ok(ExitCode::SUCCESS)
}
