//! `m2m man [--out DIR]`: the manual page of `m2m` (troff), on stdout or as one page per
//! command in a folder.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::output;

/// Arguments of `m2m man`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Read it with `m2m man | man -l -`; install with \
`m2m man --out /usr/local/share/man/man1`.")]
pub(crate) struct Args {
    /// Write m2m.1 and one page per command (m2m-node.1, ...) into DIR instead of printing
    /// m2m.1.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
}

/// Runs `m2m man` for the command line `cli`.
pub(crate) fn run(args: &Args, cli: clap::Command) -> anyhow::Result<ExitCode> {
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cli, dir).with_context(|| format!("writing into {}", dir.display()))?;
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli).render(&mut page)?;
            output::emit(&String::from_utf8(page)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
