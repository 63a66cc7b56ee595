//! Running a matrix of multi-host scenarios: which ones an environment variable selects,
//! whether this machine can run them, and the verdict on a scenario with problems (a known
//! failure prints them and passes when every problem is one its reason explains).

use std::process::Command;

use super::netns_script;

/// The scenarios `spec` selects from `all` (transport and scenario, named `transport-name`):
/// `all`, `short` (`short`), or a comma-separated list of names; `None` for an empty spec or
/// `none`.
pub(crate) fn select<T: Copy>(
    spec: &str,
    all: Vec<(&'static str, T)>,
    short: Vec<(&'static str, T)>,
    name: impl Fn(T) -> &'static str,
) -> Option<Vec<(&'static str, T)>> {
    Some(match spec.trim() {
        "" | "none" => return None,
        "short" => short,
        "all" => all,
        list => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            all.into_iter().filter(|(t, s)| wanted.contains(&format!("{t}-{}", name(*s)).as_str())).collect()
        }
    })
}

/// Whether this machine can run the scenarios of `test` (root, network namespaces); says why
/// not.
pub(crate) fn can_run(test: &str) -> bool {
    let check = Command::new(netns_script()).arg("check").env("M2M_NETNS_PREFIX", "m2mcheck").status();
    let ok = check.is_ok_and(|s| s.success());
    if !ok {
        eprintln!("{test}: skipped: needs root and network namespaces (scripts/netns.sh check failed)");
    }
    ok
}

/// The problems of scenario `name` that fail the test. A scenario listed as a known failure
/// (`known`: its reason) whose every problem is `tolerated` is printed as such and fails
/// nothing; one that had no problem is printed as passed.
pub(crate) fn failing<'a>(
    name: &str,
    problems: &'a [String],
    known: Option<&str>,
    tolerated: impl Fn(&str) -> bool,
) -> &'a [String] {
    if let Some(why) = known {
        if problems.is_empty() {
            eprintln!("known failure {name} passed this time ({why})");
        } else if problems.iter().all(|p| tolerated(p)) {
            eprintln!("KNOWN FAILURE {name} ({why}):");
            for p in problems.iter().filter(|p| !p.starts_with("--- ")) {
                eprintln!("  {}", p.lines().next().unwrap_or_default());
            }
            return &[];
        }
    }
    problems
}
