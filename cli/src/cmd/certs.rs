//! `m2m certs init --domain FILE --out DIR`: a certificate authority for the domain and a
//! certificate and key per node, for mutual TLS between the nodes, and the admin API's bearer
//! token.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::admin::token;
use crate::domain;
use crate::output::{self, Format};
use serde_json::json;

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
    /// Issue one node a new certificate and key from the CA in DIR (which needs ca.key),
    /// replacing its old pair; the node loads it at its next start. `m2m status` and the
    /// `m2m_certificate_expiry_days` metric tell when a node's certificate expires.
    Reissue(ReissueArgs),
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
    /// How many days node certificates are valid from now.
    #[arg(long, value_name = "DAYS", default_value_t = replication_core::tls::DEFAULT_VALIDITY_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub(crate) days: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// Arguments of `m2m certs reissue`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReissueArgs {
    /// The domain file (TOML).
    #[arg(long, value_name = "FILE")]
    pub(crate) domain: PathBuf,
    /// The certificates folder (from `m2m certs init`), holding ca.key.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: PathBuf,
    /// The node whose certificate is renewed.
    #[arg(long, value_name = "NAME")]
    pub(crate) node: String,
    /// How many days the new certificate is valid from now.
    #[arg(long, value_name = "DAYS", default_value_t = replication_core::tls::DEFAULT_VALIDITY_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub(crate) days: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// Runs `m2m certs ...`.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        CertsCommand::Init(a) => init(a),
        CertsCommand::Reissue(a) => reissue(a),
    }
}

/// The date (UTC) of `t`, as `YYYY-MM-DD`.
fn date(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t).date().to_string()
}

/// When the certificate at `path` expires.
fn expiry(path: &std::path::Path) -> anyhow::Result<std::time::SystemTime> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(replication_core::tls::not_after(&pem)?)
}

fn reissue(args: &ReissueArgs) -> anyhow::Result<ExitCode> {
    let cfg = match domain::load_valid(&args.domain) {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let node = replication_core::NodeId::new(&args.node);
    if cfg.node(&node).is_none() {
        eprintln!(
            "error: {} is not a node of domain {} ({})",
            args.node,
            cfg.domain.name,
            args.domain.display()
        );
        return Ok(output::exit(output::EXIT_UNUSABLE));
    }
    let path = match replication_core::tls::reissue_node(
        &cfg,
        &args.dir,
        &node,
        std::time::SystemTime::now(),
        args.days,
    ) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(output::exit(output::EXIT_UNUSABLE));
        }
    };
    let dir = path.parent().unwrap_or(&args.dir);
    let files = NodeFiles::of(dir, &args.node, "issued");
    match args.format {
        Format::Json => output::print_json(&files)?,
        Format::Text => output::emit(&format!(
            "{}: {} and its key re-issued, {}; restart the node to load it\n",
            args.node,
            files.cert.display(),
            files.valid_until_text()
        )),
    }
    Ok(ExitCode::SUCCESS)
}

fn init(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let cfg = match domain::load_valid(&args.domain) {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let issued =
        replication_core::tls::init_dir_with(&cfg, &args.out, std::time::SystemTime::now(), args.days)
            .with_context(|| format!("cannot create certificates in {}", args.out.display()))?;
    let token_issued = token::ensure(&args.out)?;
    let state = |new: bool| if new { "issued" } else { "kept" };
    let nodes: Vec<NodeFiles> = cfg
        .nodes
        .iter()
        .map(|n| NodeFiles::of(&args.out, n.name.as_str(), state(issued.contains(&n.name))))
        .collect();
    let dir = args.out.display().to_string();
    if args.format == Format::Json {
        output::print_json(&json!({
            "domain": cfg.domain.name,
            "dir": dir,
            "ca": { "cert": args.out.join("ca.pem"), "key": args.out.join("ca.key") },
            "nodes": nodes,
            "admin_token": { "file": args.out.join(token::TOKEN_FILE), "state": state(token_issued) },
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!("domain {}: certificates in {dir}\n", cfg.domain.name);
    text.push_str(&format!(
        "  CA: {dir}/ca.pem (its key {dir}/ca.key signs node certificates: copy only ca.pem, NODE.pem, \
         NODE.key and admin.token to each node, and keep ca.key offline until the next `m2m certs init` \
         or `m2m certs reissue`)\n"
    ));
    for n in &nodes {
        let state = if n.state == "issued" { "issued" } else { "kept (already there)" };
        text.push_str(&format!(
            "  {}: {}, {}  {state}, {}\n",
            n.node,
            n.cert.display(),
            n.key.display(),
            n.valid_until_text()
        ));
    }
    text.push_str(&format!(
        "  admin API token: {dir}/{} (owner only; `--certs {dir}` finds it)  {}\n",
        token::TOKEN_FILE,
        if token_issued { "issued" } else { "kept (already there)" }
    ));
    output::emit(&text);
    Ok(ExitCode::SUCCESS)
}

/// One node's certificate and key, for the report of `certs init` and `certs reissue`.
#[derive(Debug, serde::Serialize)]
struct NodeFiles {
    node: String,
    cert: PathBuf,
    key: PathBuf,
    /// `issued` or `kept`.
    state: &'static str,
    /// The certificate's expiry, `YYYY-MM-DD` (UTC); `None` when it cannot be read.
    valid_until: Option<String>,
    /// Why the expiry cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl NodeFiles {
    fn of(dir: &std::path::Path, node: &str, state: &'static str) -> Self {
        let cert = dir.join(format!("{node}.pem"));
        let (valid_until, error) = match expiry(&cert) {
            Ok(t) => (Some(date(t)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        NodeFiles {
            node: node.to_owned(),
            key: dir.join(format!("{node}.key")),
            cert,
            state,
            valid_until,
            error,
        }
    }

    fn valid_until_text(&self) -> String {
        match (&self.valid_until, &self.error) {
            (Some(d), _) => format!("valid until {d}"),
            (None, e) => format!("expiry unreadable: {}", e.as_deref().unwrap_or("?")),
        }
    }
}
