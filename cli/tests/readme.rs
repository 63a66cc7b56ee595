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

/// The text of the README section that starts with `## {title}` (up to the next `## `).
fn section(readme: &str, title: &str) -> String {
    let s =
        readme.split(&format!("## {title}\n")).nth(1).unwrap_or_else(|| panic!("README section `{title}`"));
    s.split("\n## ").next().unwrap_or(s).to_owned()
}

/// The lines of the ```sh blocks of `text`.
fn sh_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("```") {
            inside = line == "```sh";
            continue;
        }
        if inside {
            out.push(line.to_owned());
        }
    }
    out
}

/// Splits `command  # comment` and reads `# exit N` (default 0).
fn expected_exit(line: &str) -> (String, i32) {
    let (command, comment) = line.split_once('#').unwrap_or((line, ""));
    let code = comment.trim().strip_prefix("exit ").map_or(0, |c| {
        c.split(|ch: char| !ch.is_ascii_digit()).next().and_then(|n| n.parse().ok()).expect("exit code")
    });
    (command.trim().to_owned(), code)
}

#[test]
fn readme_quick_start_runs() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let head: String = readme.lines().take(30).collect::<Vec<_>>().join("\n");
    let lines = sh_lines(&section(&readme, "Quick start"));
    assert_eq!(lines, ["cargo run --release --bin m2m -- demo", "cargo test --workspace"], "first screen");
    assert!(head.contains("cargo run --release --bin m2m -- demo"), "on the first screen");
    // `cargo test --workspace` is what runs this test; the demo runs as the built binary.
    let run = m2m(&["demo"]);
    assert_eq!(run.code, 0, "{run:?}");
    // As the Quick start says: app1 owns every third session (round-robin) and is killed.
    assert!(run.stdout.ends_with("sessions created: 1000, failovers: 334, sessions lost: 0\n"), "{run:?}");
    assert!(readme.contains("`sessions created: 1000, failovers: 334, sessions lost: 0`"));

    // The TCP/QUIC section's command, and the benchmark examples it names exist.
    let quic = section(&readme, "Choosing TCP or QUIC");
    let mut ran = 0;
    for line in sh_lines(&quic).iter().filter(|l| l.starts_with("m2m ")) {
        let (command, code) = expected_exit(line);
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let run = m2m(&args);
        assert_eq!(run.code, code, "README: {line}\n{run:?}");
        assert!(run.stdout.contains("sessions lost: 0"), "{run:?}");
        ran += 1;
    }
    assert_eq!(ran, 1);
    for example in ["transport-tcp/examples/tcp_bench.rs", "transport-quic/examples/quic_bench.rs"] {
        assert!(workspace_root().join(example).exists(), "README names {example}");
    }
}

/// Runs the "A three-node cluster on one machine" section: `m2m` commands in order, `m2m node`
/// lines as background processes, `# Ctrl-C in terminal N` as SIGINT to that node, `ID=$(...)`
/// captured, `# exit N` checked. Fixed ports of the example domain are mapped to free ones.
#[test]
fn readme_three_node_cluster_runs_as_documented() {
    use common::cluster::{eventually, free_addr};
    use std::process::{Child, Command, Stdio};

    struct Nodes(Vec<Child>);
    impl Drop for Nodes {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let text = section(&readme, "A three-node cluster on one machine");
    let file = "examples/domains/local-cluster.toml";
    let original = std::fs::read_to_string(workspace_root().join(file)).expect("the example domain");

    // Every 127.0.0.1:PORT in the file gets a free port; commands get the same mapping.
    let mut map = Vec::new();
    for word in original.split('"') {
        if word.starts_with("127.0.0.1:") && !map.iter().any(|(a, _): &(String, String)| a == word) {
            map.push((word.to_owned(), free_addr()));
        }
    }
    assert_eq!(map.len(), 6, "three nodes with admin addresses");
    let remap = |s: &str| map.iter().fold(s.to_owned(), |acc, (from, to)| acc.replace(from.as_str(), to));
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("examples/domains")).expect("mkdir");
    std::fs::write(dir.path().join(file), remap(&original)).expect("write the domain");

    let run_in = |args: &[String]| -> common::Run {
        let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args(args)
            .env_remove("M2M_ADMIN_TOKEN")
            .current_dir(dir.path())
            .output()
            .expect("runs");
        common::Run {
            code: out.status.code().expect("exit code"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let mut nodes = Nodes(Vec::new());
    let mut node_admins = Vec::new();
    let mut waited = false;
    let mut id = String::new();
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut ran = 0;
    for line in sh_lines(&text) {
        if let Some(rest) = line.strip_prefix("# Ctrl-C in terminal ") {
            let n: usize =
                rest.split(':').next().and_then(|n| n.trim().parse().ok()).expect("terminal number");
            let child = &mut nodes.0[n - 1];
            let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
            assert!(ok.success());
            let status = eventually(20, "the node to exit after SIGINT", || child.try_wait().expect("wait"));
            assert_eq!(status.code(), Some(0), "a node leaves with exit 0 after Ctrl-C");
            // As the README says: one line on stdout once it has left.
            let out = std::fs::read_to_string(dir.path().join(format!("node{n}.out"))).expect("node stdout");
            let left = format!("node app{n} left domain local: ");
            assert!(out.starts_with(&left) && out.lines().count() == 1, "stdout of app{n}: {out:?}");
            assert!(text.contains(&format!("`{left}")), "the README shows the line `{left}...`");
            ran += 1;
            continue;
        }
        let (command, code) = expected_exit(&line);
        if command.starts_with("cargo build") {
            continue; // the test runs the binary cargo built for it
        }
        let (capture, command) = match command.strip_prefix("ID=$(") {
            Some(c) => (true, c.strip_suffix(')').expect("ID=$(...)").to_owned()),
            None => (false, command),
        };
        let Some(m2m_args) = command.strip_prefix("m2m ") else { continue };
        let args: Vec<String> =
            remap(m2m_args).replace("$ID", &id).split_whitespace().map(str::to_owned).collect();
        if args[0] == "node" {
            let name = args.iter().skip_while(|a| *a != "--name").nth(1).expect("--name").clone();
            let admin = remap(&format!("127.0.0.1:820{}", name.trim_start_matches("app")));
            node_admins.push(admin);
            let stdout = std::fs::File::create(dir.path().join(format!("node{}.out", nodes.0.len() + 1)))
                .expect("a file for the node's stdout");
            let child = Command::new(env!("CARGO_BIN_EXE_m2m"))
                .args(&args)
                .env_remove("M2M_ADMIN_TOKEN")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(Stdio::null())
                .spawn()
                .expect("m2m node starts");
            nodes.0.push(child);
            ran += 1;
            continue;
        }
        if !nodes.0.is_empty() && !waited {
            // The nodes serve with the token `m2m certs init` wrote to `certs`, as the README's
            // commands find it.
            let certs = dir.path().join("certs");
            let certs = certs.to_str().expect("UTF-8 path");
            for admin in &node_admins {
                eventually(20, "every node up", || {
                    let r = m2m(&["status", "--admin", admin, "--certs", certs, "--format", "json"]);
                    let s = (r.code == 0).then(|| r.json())?;
                    s["membership"].as_array()?.iter().all(|m| m["up"] == true).then_some(())
                });
            }
            waited = true;
        }
        let run = run_in(&args);
        assert_eq!(run.code, code, "README: {line}\n{run:?}");
        assert!(!run.stderr.contains("panicked"), "{run:?}");
        if capture {
            id = run.stdout.trim().to_owned();
            assert_eq!(run.stdout, format!("{id}\n"), "create prints only the id");
            // The format the README states: `<random>.<owner>.<failover-target>`.
            assert!(
                readme.contains("(`<random>.<owner>.<failover-target>`)"),
                "the README states the id format"
            );
            let parts: Vec<&str> = id.split('.').collect();
            assert_eq!(parts.len(), 3, "{id}: <random>.<owner>.<failover-target>");
            assert_eq!(parts[0].len(), 24, "{id}: 24 random characters");
            let admin = m2m_args.split_whitespace().find_map(|a| a.strip_prefix("127.0.0.1:820"));
            assert_eq!(
                Some(parts[1]),
                admin.map(|n| format!("app{n}")).as_deref(),
                "{id}: the creating node"
            );
            assert!(
                ["app1", "app2", "app3"].contains(&parts[2]) && parts[2] != parts[1],
                "{id}: failover target"
            );
        }
        outputs.push((format!("m2m {m2m_args}"), run.stdout));
        ran += 1;
    }
    assert!(ran >= 15, "expected the section to show at least 15 commands, found {ran}");
    let list = outputs.iter().find(|(c, _)| c.starts_with("m2m session list")).expect("ran list");
    assert_eq!(list.1, format!("{id}\n"), "app2 owns the session it fetched, and only that one");
    for quiet in ["m2m session set", "m2m session invalidate"] {
        let (c, out) = outputs.iter().find(|(c, _)| c.starts_with(quiet)).expect("ran it");
        assert_eq!(out, "", "the README says `{c}` prints nothing");
    }

    // The samples shown are what the commands printed (the status sample: its fixed lines).
    let get = "m2m session get --admin 127.0.0.1:8202 --certs certs $ID";
    let sample =
        text.split(&format!("$ {get}\n")).nth(1).and_then(|s| s.split("```").next()).expect("get sample");
    let actual = outputs.iter().find(|(c, _)| c.starts_with(get)).map(|(_, o)| o.clone()).expect("ran get");
    assert_eq!(actual, sample, "update the README sample of `{get}`");
    let status = "m2m status --admin 127.0.0.1:8201 --certs certs";
    let sample = text
        .split(&format!("$ {status}\n"))
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("status sample");
    let actual =
        outputs.iter().find(|(c, _)| c.trim() == status).map(|(_, o)| o.clone()).expect("ran status");
    for line in sample.lines().filter(|l| !l.is_empty()) {
        // Node and table lines are printed as shown; counters only by their label.
        let fixed = line.starts_with("node") || line.starts_with("app");
        let label = line.split(':').next().unwrap_or(line);
        // The domain file's fingerprint follows the free ports the file was given.
        let found = actual.lines().any(|a| {
            if fixed { without_fingerprints(a) == without_fingerprints(line) } else { a.starts_with(label) }
        });
        assert!(found, "README status sample line `{line}` not printed:\n{actual}");
    }
}

/// `line` with every word of 16 hexadecimal digits (a domain file's fingerprint) as `<fp>`.
fn without_fingerprints(line: &str) -> String {
    line.split(' ')
        .map(|w| if w.len() == 16 && w.bytes().all(|b| b.is_ascii_hexdigit()) { "<fp>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}
