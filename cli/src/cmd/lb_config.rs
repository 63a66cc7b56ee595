//! `m2m lb-config --haproxy|--nginx FILE`: a complete load-balancer configuration that sends
//! each request to its session's owner, to the owner's failover target when the owner is
//! down, and to any node when neither is up.
//!
//! Both read the route cookie the application sets (`session_api::route_cookie`),
//! `<owner>.<failover>`, and point at each node's `http` address from the domain file. A route
//! naming an unknown node, or garbage, matches no rule and goes to any node, which fetches the
//! session and answers with the right route.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use replication_core::DomainConfig;
use replication_core::config::Address;
use replication_core::placement::Placement;
use session_api::id::DEFAULT_ROUTE_COOKIE;

use crate::domain;
use crate::output::{self, EXIT_UNUSABLE};

/// Arguments of `m2m lb-config`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("balancer").required(true).args(["haproxy", "nginx"]))]
pub(crate) struct Args {
    /// The domain file (TOML); every node that owns sessions needs an `http` address.
    pub(crate) file: PathBuf,
    /// Print an HAProxy configuration (`haproxy -f FILE`).
    #[arg(long)]
    pub(crate) haproxy: bool,
    /// Print an nginx configuration (`nginx -c FILE`).
    #[arg(long)]
    pub(crate) nginx: bool,
    /// Where the load balancer listens.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "HOST:PORT", value_parser = parse_address)]
    pub(crate) listen: Address,
    /// The route cookie's name: what the application's route cookie layer sets (letters,
    /// digits and `_`, as nginx variable names need).
    #[arg(long, default_value = DEFAULT_ROUTE_COOKIE, value_parser = parse_cookie_name)]
    pub(crate) cookie: String,
}

fn parse_address(s: &str) -> Result<Address, String> {
    Address::parse(s)
}

fn parse_cookie_name(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(s.to_owned())
    } else {
        Err(format!("`{s}` is not a usable cookie name: use 1 to 64 letters, digits or `_`"))
    }
}

/// A node the balancer sends requests to.
struct Backend {
    name: String,
    http: String,
}

/// What both configurations are made of.
struct Plan {
    domain: String,
    /// Letters, digits and `_` only: a prefix for names in the configurations.
    tag: String,
    listen: String,
    cookie: String,
    backends: Vec<Backend>,
}

/// Runs `m2m lb-config`.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let file = args.file.display().to_string();
    let cfg = match domain::load_valid(&args.file) {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let backends = match backends(&cfg) {
        Ok(b) => b,
        Err(missing) => {
            eprintln!(
                "error: {file}: node(s) {} have no `http` address: the load balancer sends requests to \
                 each node's HTTP listener (add `http = \"host:port\"` to the node)",
                missing.join(", ")
            );
            return Ok(output::exit(EXIT_UNUSABLE));
        }
    };
    let plan = Plan {
        domain: cfg.domain.name.clone(),
        tag: cfg.domain.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect(),
        listen: args.listen.to_string(),
        cookie: args.cookie.clone(),
        backends,
    };
    output::emit(&if args.haproxy { haproxy(&plan) } else { nginx(&plan) });
    Ok(ExitCode::SUCCESS)
}

/// The nodes that own sessions (they serve requests), or the names of those without `http`.
fn backends(cfg: &DomainConfig) -> Result<Vec<Backend>, Vec<String>> {
    let placement = Placement::new(cfg);
    let owning = cfg.nodes.iter().filter(|n| placement.owns_sessions(&n.name));
    let missing: Vec<String> =
        owning.clone().filter(|n| n.http.is_none()).map(|n| n.name.to_string()).collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(owning
        .filter_map(|n| Some(Backend { name: n.name.to_string(), http: n.http.as_ref()?.to_string() }))
        .collect())
}

/// Ordered pairs of distinct backends: (owner, failover target).
fn pairs(plan: &Plan) -> impl Iterator<Item = (&Backend, &Backend)> {
    plan.backends
        .iter()
        .flat_map(|o| plan.backends.iter().filter(move |f| f.name != o.name).map(move |f| (o, f)))
}

/// HAProxy: `use-server` rules on the route cookie's fields, owners first. A rule naming a
/// server that is down is skipped, so a request whose owner is down goes to its failover
/// target, and with both down to `balance roundrobin`. A refused connection marks a server
/// down at once (`observe layer4`), health checks every 500 ms bring it back.
fn haproxy(plan: &Plan) -> String {
    let (c, tag) = (&plan.cookie, &plan.tag);
    let mut out = format!(
        "# HAProxy configuration for the m2m domain `{domain}` (m2m lb-config --haproxy).\n\
         # A request goes to its session's owner (route cookie {c}=<owner>.<failover>), to the\n\
         # failover target while the owner is down, to any node when neither is up or the\n\
         # request has no route. Run: haproxy -f THIS-FILE\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
         \x20   retries 1\n\n\
         frontend m2m_{tag}\n    bind {listen}\n    default_backend m2m_{tag}_nodes\n\n\
         backend m2m_{tag}_nodes\n    balance roundrobin\n    # The owner while it is up.\n",
        domain = plan.domain,
        listen = plan.listen,
    );
    for b in &plan.backends {
        let _ = writeln!(out, "    use-server {n} if {{ req.cook({c}),field(1,.) -m str {n} }}", n = b.name);
    }
    out.push_str(
        "    # The failover target (it holds the backup and owns the session) while the owner is down.\n",
    );
    for b in &plan.backends {
        let _ = writeln!(out, "    use-server {n} if {{ req.cook({c}),field(2,.) -m str {n} }}", n = b.name);
    }
    out.push_str(
        "    default-server check inter 500ms fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down\n",
    );
    for b in &plan.backends {
        let _ = writeln!(out, "    server {} {}", b.name, b.http);
    }
    out
}

/// nginx (no active health checks): a `map` from the route cookie to an upstream per (owner,
/// failover target), the target as `backup`, so a refused connection or a timeout tries the
/// target within the same request. A request the owner took and did not answer (it died
/// meanwhile) fails with 502 and goes to the failover target (`@failover`); with both down,
/// to any node (`@any`).
fn nginx(plan: &Plan) -> String {
    let (c, tag) = (&plan.cookie, &plan.tag);
    let mut out = format!(
        "# nginx configuration for the m2m domain `{domain}` (m2m lb-config --nginx).\n\
         # A request goes to its session's owner (route cookie {c}=<owner>.<failover>), to the\n\
         # failover target when the owner does not answer, to any node when neither does or the\n\
         # request has no route. Run: nginx -c THIS-FILE\n\
         worker_processes auto;\n\nevents {{\n    worker_connections 4096;\n}}\n\n\
         http {{\n    access_log off;\n\n    # The route: owner, then failover target.\n\
         \x20   map $cookie_{c} $m2m_{tag}_route {{\n        default m2m_{tag}_any;\n",
        domain = plan.domain,
    );
    for (o, f) in pairs(plan) {
        let _ = writeln!(out, "        {o}.{f} m2m_{tag}_{o}_{f};", o = o.name, f = f.name);
    }
    for b in &plan.backends {
        // An owner alone (no failover target), or with a target this file does not know.
        let _ = writeln!(out, "        ~^{n}(\\.|$) m2m_{tag}_{n};", n = b.name);
    }
    let _ = write!(
        out,
        "    }}\n\n    # The failover target alone.\n    map $cookie_{c} $m2m_{tag}_failover {{\n        default m2m_{tag}_any;\n"
    );
    for b in &plan.backends {
        let _ = writeln!(out, "        ~\\.{n}$ m2m_{tag}_{n};", n = b.name);
    }
    out.push_str("    }\n\n");
    let server =
        |b: &Backend, extra: &str| format!("        server {} max_fails=1 fail_timeout=2s{extra};\n", b.http);
    for (o, f) in pairs(plan) {
        let _ = write!(
            out,
            "    upstream m2m_{tag}_{on}_{fname} {{\n{}{}    }}\n",
            server(o, ""),
            server(f, " backup"),
            on = o.name,
            fname = f.name
        );
    }
    for b in &plan.backends {
        let _ = write!(out, "    upstream m2m_{tag}_{} {{\n{}    }}\n", b.name, server(b, ""));
    }
    let _ = writeln!(out, "    upstream m2m_{tag}_any {{");
    for b in &plan.backends {
        out.push_str(&server(b, ""));
    }
    let _ = write!(
        out,
        "    }}\n\n    server {{\n        listen {listen};\n\
         \x20       proxy_http_version 1.1;\n\
         \x20       proxy_set_header Connection \"\";\n\
         \x20       proxy_set_header Host $host;\n\
         \x20       proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20       proxy_next_upstream error timeout;\n\
         \x20       proxy_connect_timeout 2s;\n\
         \x20       recursive_error_pages on;\n\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://$m2m_{tag}_route;\n\
         \x20           error_page 502 504 = @failover;\n\
         \x20       }}\n\n\
         \x20       location @failover {{\n\
         \x20           proxy_pass http://$m2m_{tag}_failover;\n\
         \x20           error_page 502 504 = @any;\n\
         \x20       }}\n\n\
         \x20       location @any {{\n\
         \x20           proxy_pass http://m2m_{tag}_any;\n\
         \x20       }}\n    }}\n}}\n",
        listen = plan.listen,
    );
    out
}
