//! The `m2m` commands shown in the README's "m2m validate / m2m plan" section run, and exit
//! as the README says (`# exit N`, else 0).

mod common;

use common::{m2m, workspace_root};

#[test]
fn readme_commands_run_as_documented() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let section = readme
        .split("## m2m validate / m2m plan")
        .nth(1)
        .expect("the README has a `## m2m validate / m2m plan` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut ran = 0;
    for line in section.lines().filter(|l| l.starts_with("m2m ")) {
        let (command, comment) = line.split_once('#').unwrap_or((line, ""));
        let expected: i32 = comment.trim().strip_prefix("exit ").map_or(0, |c| c.parse().expect("exit code"));
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let run = m2m(&args);
        assert_eq!(run.code, expected, "README: {line}\n{run:?}");
        assert!(!run.stderr.contains("panicked"), "{run:?}");
        ran += 1;
    }
    assert!(ran >= 5, "expected the README section to show at least 5 commands, found {ran}");

    // The sample output shown for `--fail app2` is what the binary prints.
    let sample = section
        .split("$ m2m plan examples/domains/three-node.toml --fail app2\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a sample of `m2m plan ... --fail app2`");
    let run = m2m(&["plan", "examples/domains/three-node.toml", "--fail", "app2"]);
    assert_eq!(run.stdout, sample, "update the README sample");
}
