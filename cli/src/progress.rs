//! Progress on stderr for the commands that run longer than a second (`m2m demo`, `m2m bench`),
//! with `indicatif`: drawn only when stderr is a terminal, so logs and pipes get no control
//! characters.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `total` steps named `label` on stderr (hidden when stderr is not a terminal);
/// `finish_and_clear` removes it.
pub(crate) fn bar(label: &'static str, total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{msg}: [{bar:30}] {pos}/{len} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label);
    bar
}

/// The steps of a long command on stderr: on a terminal, one spinner line showing the current
/// step and the time it has taken; elsewhere each step as a line of its own (a log keeps them).
#[derive(Debug)]
pub(crate) struct Steps {
    spinner: Option<ProgressBar>,
}

impl Steps {
    /// Starts showing steps.
    pub(crate) fn new() -> Steps {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let s = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            s.set_style(style);
            s.enable_steady_tick(Duration::from_millis(120));
            s
        });
        Steps { spinner }
    }

    /// The step now running.
    pub(crate) fn step(&self, what: impl Into<String>) {
        let what = what.into();
        match &self.spinner {
            Some(s) => {
                s.reset_elapsed();
                s.set_message(what);
            }
            None => eprintln!("{what} ..."),
        }
    }

    /// A line that stays (a warning, a result), printed above the spinner.
    pub(crate) fn note(&self, line: impl AsRef<str>) {
        match &self.spinner {
            Some(s) => s.println(line),
            None => eprintln!("{}", line.as_ref()),
        }
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        if let Some(s) = &self.spinner {
            s.finish_and_clear();
        }
    }
}
