//! `m2m completions SHELL`: the shell's completion script for `m2m`, on stdout.

use std::process::ExitCode;

use clap_complete::Shell;

use crate::output;

/// Arguments of `m2m completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Install, e.g.:\n  \
bash: m2m completions bash > ~/.local/share/bash-completion/completions/m2m\n  \
zsh:  m2m completions zsh > ~/.zfunc/_m2m   (with `fpath+=~/.zfunc` before `compinit`)\n  \
fish: m2m completions fish > ~/.config/fish/completions/m2m.fish")]
pub(crate) struct Args {
    /// The shell.
    #[arg(value_enum)]
    pub(crate) shell: Shell,
}

/// Runs `m2m completions` for the command line `cli`.
pub(crate) fn run(args: &Args, mut cli: clap::Command) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "m2m", &mut script);
    output::emit(&String::from_utf8(script)?);
    Ok(ExitCode::SUCCESS)
}
