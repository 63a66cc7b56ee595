//! The deployment examples of docs/deploy.md: the systemd unit passes `systemd-analyze verify`
//! (where the tool is installed), the Kubernetes manifests parse and agree with each other, and
//! the domain file of their ConfigMap passes `m2m validate`. Both use only real `m2m node`
//! options.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{m2m, scratch_file, workspace_root};
use serde::Deserialize as _;
use serde_norway::Value;

const UNIT: &str = "deploy/systemd/m2m@.service";
const KUBERNETES: &str = "deploy/kubernetes";

/// The long options `m2m node --help` lists.
fn node_options() -> BTreeSet<String> {
    let run = m2m(&["node", "--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned())
        .collect()
}

/// Every `--option` of `args` is one `m2m node` has.
fn assert_real_options<'a>(args: impl IntoIterator<Item = &'a str>, what: &str) {
    let known = node_options();
    for arg in args.into_iter().filter(|a| a.starts_with("--")) {
        let option = arg.split('=').next().unwrap_or(arg);
        assert!(known.contains(option), "{what}: `{option}` is not an option of `m2m node` ({known:?})");
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `key=value` lines of the unit (the last one wins).
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).collect()
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(tool)).find(|p| p.is_file())
}

#[test]
fn systemd_unit_runs_m2m_node_reloads_on_sighup_and_verifies() {
    let unit = read(UNIT);
    let start = unit_values(&unit, "ExecStart");
    assert_eq!(start.len(), 1, "one ExecStart");
    let argv: Vec<&str> = start[0].split_whitespace().collect();
    assert_eq!(argv[..2], ["/usr/local/bin/m2m", "node"], "{argv:?}");
    assert_real_options(argv.iter().copied(), UNIT);
    for (key, value) in [
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
        ("RestartPreventExitStatus", "2"),
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(unit_values(&unit, key), [value], "{UNIT}: {key}");
    }
    // The node's certificates folder is the credentials the unit loads: the CA, the node's own
    // pair and the admin token (where --certs looks for it).
    assert!(argv.windows(2).any(|w| w == ["--certs", "%d"]), "{argv:?}");
    let credentials: Vec<&str> =
        unit_values(&unit, "LoadCredential").iter().filter_map(|c| c.split(':').next()).collect();
    assert_eq!(credentials, ["ca.pem", "%i.pem", "%i.key", "admin.token"]);

    let Some(tool) = which("systemd-analyze") else {
        eprintln!(
            "skipped `systemd-analyze verify`: systemd-analyze is not installed (Debian package systemd)"
        );
        return;
    };
    // Verified as an instance, with ExecStart naming the m2m just built (verify checks that the
    // command exists); no man page is installed here.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("m2m-systemd-unit");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let local = unit.replace("/usr/local/bin/m2m", env!("CARGO_BIN_EXE_m2m"));
    std::fs::write(dir.join("m2m@.service"), local).expect("write the unit");
    let out = Command::new(tool)
        .args(["verify", "--man=no"])
        .arg(dir.join("m2m@app1.service"))
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // Unknown keys and bad values are only warnings to verify: none is allowed here.
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("m2m@")).collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify warns:\n{stderr}");
}

/// Every YAML document in the files of `deploy/kubernetes`, by kind.
fn manifests() -> Vec<Value> {
    let dir = workspace_root().join(KUBERNETES);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(value["kind"].is_string(), "{}: no kind", file.display());
            docs.push(value);
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let mut found = docs.iter().filter(|d| d["kind"] == kind);
    let doc = found.next().unwrap_or_else(|| panic!("no {kind} in {KUBERNETES}"));
    assert!(found.next().is_none(), "one {kind}");
    doc
}

fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what}: not text: {v:?}"))
}

fn number(v: &Value, what: &str) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{what}: not a number: {v:?}"))
}

#[test]
fn kubernetes_manifests_parse_agree_and_hold_a_valid_domain() {
    let docs = manifests();
    let kinds: BTreeSet<&str> = docs.iter().map(|d| text(&d["kind"], "kind")).collect();
    assert_eq!(kinds, BTreeSet::from(["ConfigMap", "PodDisruptionBudget", "Service", "StatefulSet"]));
    let (service, config_map, sts) =
        (of_kind(&docs, "Service"), of_kind(&docs, "ConfigMap"), of_kind(&docs, "StatefulSet"));

    // A headless Service whose names resolve before the pods are ready.
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    let service_name = text(&service["metadata"]["name"], "Service name");
    assert_eq!(sts["spec"]["serviceName"], service_name);
    assert_eq!(service["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"]);

    let pod = &sts["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let port = |name: &str| {
        let ports = c["ports"].as_sequence().expect("ports");
        let p = ports.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("port {name}"));
        number(&p["containerPort"], name)
    };
    let (replication, admin) = (port("replication"), port("admin"));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/live");

    // `m2m node` with real options, its name the pod's, its domain file the ConfigMap's.
    let args: Vec<&str> =
        c["args"].as_sequence().expect("args").iter().map(|a| text(a, "argument")).collect();
    assert_eq!(args[0], "node");
    assert_real_options(args.iter().copied(), "the StatefulSet");
    let after = |option: &str| {
        args.windows(2).find(|w| w[0] == option).map(|w| w[1]).unwrap_or_else(|| panic!("{option}"))
    };
    assert_eq!(after("--name"), "$(POD_NAME)");
    let env = c["env"].as_sequence().expect("env");
    let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("env {name}"));
    assert_eq!(var("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert!(var("M2M_ADMIN_TOKEN")["valueFrom"]["secretKeyRef"]["name"].is_string());

    let mount = |volume: &str| {
        let mounts = c["volumeMounts"].as_sequence().expect("volumeMounts");
        let m = mounts.iter().find(|m| m["name"] == volume).unwrap_or_else(|| panic!("mount {volume}"));
        // A subPath mount would not see edits of the ConfigMap.
        assert!(m["subPath"].is_null(), "{volume} is mounted as a folder");
        text(&m["mountPath"], volume).to_owned()
    };
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("{name}"));
    let domain_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        .expect("a volume of the ConfigMap");
    let config = after("--config");
    let (folder, key) = config.rsplit_once('/').expect("a path");
    assert_eq!(folder, mount(text(&domain_volume["name"], "volume name")));
    assert!(volume("certs")["secret"]["secretName"].is_string());
    assert_eq!(after("--certs"), mount("certs"));

    // The domain file: valid with no warning, one node per pod named like it, at the pod's
    // stable name and the container's ports.
    let domain = text(&config_map["data"][key], "the domain file");
    let file = scratch_file("kubernetes-domain.toml", domain.as_bytes());
    let run = m2m(&["validate", &file, "--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["warnings"], serde_json::json!([]), "{run:?}");
    let cfg = replication_core::DomainConfig::parse(domain, "configmap").expect("parses");
    let sts_name = text(&sts["metadata"]["name"], "StatefulSet name");
    let replicas = number(&sts["spec"]["replicas"], "replicas");
    assert_eq!(cfg.nodes.len() as u64, replicas);
    for (i, node) in cfg.nodes.iter().enumerate() {
        let pod = format!("{sts_name}-{i}");
        assert_eq!(node.name.as_str(), pod);
        assert_eq!(node.address.as_str(), format!("{pod}.{service_name}:{replication}"));
        assert_eq!(
            node.admin.as_ref().map(|a| a.as_str().to_owned()),
            Some(format!("{pod}.{service_name}:{admin}"))
        );
    }
}

#[test]
fn docs_deploy_names_every_file_and_the_readme_links_it() {
    let doc = read("docs/deploy.md");
    for file in [UNIT, "deploy/kubernetes/service.yaml", "deploy/kubernetes/configmap.yaml"] {
        assert!(doc.contains(file), "docs/deploy.md does not name {file}");
    }
    for file in ["statefulset.yaml", "poddisruptionbudget.yaml"] {
        assert!(doc.contains(&format!("deploy/kubernetes/{file}")), "docs/deploy.md does not name {file}");
    }
    assert!(doc.to_lowercase().contains("not run"), "docs/deploy.md says the Kubernetes example is not run");
    assert!(read("README.md").contains("(docs/deploy.md)"), "README links docs/deploy.md");
}
