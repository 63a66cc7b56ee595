//! Session ids that carry their owner and hot-failover target, and routing by id.
//!
//! Like WebSphere's clone ids appended to `JSESSIONID`, an m2m session id says where the
//! session lives: `<random>.<owner>.<failover-target>`, e.g.
//! `q3V0x9R2aY7bK1mN4pL8sT6w.app1.app3`. `<random>` is 24 characters of URL-safe base64
//! (144 random bits from the OS). Node names are DNS labels (rule `name-chars`), so they
//! never contain a dot and the id splits unambiguously. The failover target is missing
//! (`<random>.<owner>`) when no other node could take the session over at creation.
//!
//! The failover target written into the id is the one [`Placement::failover_owner`] computes
//! for the *whole* id, so a router and the replication core agree on it: ids are drawn until
//! the target they name is the target placement gives them (a fixpoint; a handful of draws).
//!
//! ```
//! use replication_core::{DomainConfig, NodeId, placement::Placement};
//! use session_api::id::{self, SessionIdParts};
//! let cfg = DomainConfig::parse(r#"
//!     [domain]
//!     name = "web"
//!     [[node]]
//!     name = "a"
//!     address = "127.0.0.1:7101"
//!     [[node]]
//!     name = "b"
//!     address = "127.0.0.1:7102"
//! "#, "example").unwrap();
//! let placement = Placement::new(&cfg);
//! let a = NodeId::new("a");
//! let sid = id::generate(&placement, &a, |_| true).unwrap();
//! let parts = SessionIdParts::parse(&sid).unwrap();
//! assert_eq!(parts.owner, a);
//! assert_eq!(parts.failover, Some(NodeId::new("b")));
//! // A router: the owner while it is alive, else its failover target.
//! assert_eq!(id::route(&placement, &sid, |_| true), Some(a.clone()));
//! assert_eq!(id::route(&placement, &sid, |n| n != &a), Some(NodeId::new("b")));
//! ```

use replication_core::NodeId;
use replication_core::placement::{Placement, stable_hash};

use crate::error::{Error, Result};

/// Characters of the random part.
pub const RANDOM_LEN: usize = 24;

/// Draws of the random part before settling for an id whose failover target is best-effort.
const MAX_DRAWS: usize = 64;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// 24 URL-safe characters from the operating system's random source.
pub fn random_part() -> Result<String> {
    let mut bytes = [0u8; RANDOM_LEN];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Io { what: "random session id".into(), source: std::io::Error::other(e) })?;
    // The first character is a letter or digit, so an id never looks like a command-line
    // option (`-x...`) to tools such as `m2m session get`.
    Ok(bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let k = if i == 0 { usize::from(*b) % 62 } else { usize::from(b & 63) };
            char::from(ALPHABET[k])
        })
        .collect())
}

/// The parts of a session id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionIdParts<'a> {
    /// The random part.
    pub random: &'a str,
    /// The node that created the session (its first owner).
    pub owner: NodeId,
    /// The hot-failover target at creation.
    pub failover: Option<NodeId>,
}

impl<'a> SessionIdParts<'a> {
    /// Splits `id`; `None` for ids not made by [`generate`] (e.g. ids of the tower store).
    pub fn parse(id: &'a str) -> Option<Self> {
        let mut it = id.split('.');
        let random = it.next()?;
        let owner = it.next()?;
        let failover = it.next();
        if it.next().is_some() || random.is_empty() || !is_label(owner) {
            return None;
        }
        let failover = match failover {
            Some(f) if is_label(f) => Some(NodeId::new(f)),
            Some(_) => return None,
            None => None,
        };
        Some(SessionIdParts { random, owner: NodeId::new(owner), failover })
    }
}

impl SessionIdParts<'_> {
    /// The route the id names: the owner and failover target at creation.
    pub fn route(&self) -> Route {
        Route { owner: self.owner.clone(), failover: self.failover.clone() }
    }
}

/// The route cookie's default name (the `RouteCookieLayer` of the `tower` feature sets it,
/// `m2m lb-config` reads it).
pub const DEFAULT_ROUTE_COOKIE: &str = "M2MROUTE";

/// Where a session's requests go: its owner, and the node that takes it over when the owner
/// fails (the hot-failover target; in client-server topology, the client that will retrieve
/// it). Written `<owner>.<failover>`, or `<owner>` when no other node could take it over: the
/// value of the route cookie (module `route_cookie`, cargo feature `tower`) and the last two parts of an id made by
/// [`generate`], readable by a load balancer without knowing m2m (`field(1,.)` is the owner).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The node that owns the session.
    pub owner: NodeId,
    /// The node that takes it over when the owner fails.
    pub failover: Option<NodeId>,
}

impl Route {
    /// The route of `session_id` owned by `owner` now, with the failover target the
    /// replication core will pick among the nodes for which `live` is true.
    pub fn current(
        placement: &Placement,
        session_id: &str,
        owner: NodeId,
        live: impl Fn(&NodeId) -> bool,
    ) -> Self {
        let failover = placement.failover_owner(session_id, &owner, live);
        Route { owner, failover }
    }

    /// Reads `<owner>.<failover>` or `<owner>`; `None` when the parts are not node names.
    pub fn parse(text: &str) -> Option<Self> {
        let (owner, failover) = match text.split_once('.') {
            Some((o, f)) => (o, Some(f)),
            None => (text, None),
        };
        if !is_label(owner) || failover.is_some_and(|f| !is_label(f)) {
            return None;
        }
        Some(Route { owner: NodeId::new(owner), failover: failover.map(NodeId::new) })
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.failover {
            Some(t) => write!(f, "{}.{t}", self.owner),
            None => write!(f, "{}", self.owner),
        }
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A new session id owned by `owner`, naming the failover target placement gives it among the
/// nodes for which `live` is true.
pub fn generate(placement: &Placement, owner: &NodeId, live: impl Fn(&NodeId) -> bool) -> Result<String> {
    generate_with(placement, owner, live, random_part)
}

/// As [`generate`], with the random parts drawn from `draw` rather than the operating system: a
/// seeded `draw` gives repeatable ids of the real shape (`m2m plan --from --to` places sample
/// sessions with them).
pub fn generate_with(
    placement: &Placement,
    owner: &NodeId,
    live: impl Fn(&NodeId) -> bool,
    mut draw: impl FnMut() -> Result<String>,
) -> Result<String> {
    let candidates: Vec<NodeId> =
        placement.nodes().filter(|n| *n != owner && live(n) && placement.owns_sessions(n)).cloned().collect();
    let mut fallback = None;
    for _ in 0..MAX_DRAWS {
        let random = draw()?;
        // The candidates are tried from one picked by the random part, not always from the
        // first: trying them in a fixed order gave the first one half of all sessions (it is
        // accepted with probability 1/n at every draw, before the others get their turn), so
        // in a three-node domain one backup held two thirds of a node's sessions.
        let start =
            usize::try_from(stable_hash(random.as_bytes()) % candidates.len().max(1) as u64).unwrap_or(0);
        let (tail, head) = candidates.split_at(start);
        for target in head.iter().chain(tail) {
            let sid = format!("{random}.{owner}.{target}");
            if placement.failover_owner(&sid, owner, &live).as_ref() == Some(target) {
                return Ok(sid);
            }
        }
        if candidates.is_empty() {
            return Ok(format!("{random}.{owner}"));
        }
        if fallback.is_none() {
            let probe = format!("{random}.{owner}");
            fallback = Some(match placement.failover_owner(&probe, owner, &live) {
                Some(t) => format!("{random}.{owner}.{t}"),
                None => probe,
            });
        }
    }
    // Not reached in practice (each draw succeeds with probability about 1 - 1/e).
    fallback.ok_or_else(|| Error::Config("cannot draw a session id".into()))
}

/// Where a request for `session_id` should go: its owner if alive, else its failover target if
/// alive, else the best-ranked live node that may own sessions (which fetches the session from
/// a backup). `None` when no live node can own it. Ids without owner information (not made by
/// [`generate`]) go to the best-ranked live owning node.
pub fn route(placement: &Placement, session_id: &str, is_live: impl Fn(&NodeId) -> bool) -> Option<NodeId> {
    if let Some(parts) = SessionIdParts::parse(session_id) {
        if placement.owns_sessions(&parts.owner) && is_live(&parts.owner) {
            return Some(parts.owner);
        }
        if let Some(f) = parts.failover {
            if placement.owns_sessions(&f) && is_live(&f) {
                return Some(f);
            }
        }
    }
    placement.home(session_id, is_live)
}

#[cfg(test)]
mod tests {

    #[test]
    fn random_parts_never_start_like_an_option() {
        for _ in 0..5000 {
            let r = random_part().expect("random");
            assert_eq!(r.len(), RANDOM_LEN);
            assert!(r.starts_with(|c: char| c.is_ascii_alphanumeric()), "{r}");
        }
    }

    use super::*;
    use replication_core::DomainConfig;

    fn placement(text: &str) -> Placement {
        Placement::new(&DomainConfig::parse(text, "t").expect("valid"))
    }

    const P2P: &str = "[domain]\nname='w'\n[[node]]\nname='a'\naddress='127.0.0.1:1'\n\
        [[node]]\nname='b'\naddress='127.0.0.1:2'\n[[node]]\nname='c'\naddress='127.0.0.1:3'\n";

    #[test]
    fn generated_ids_name_the_placement_failover_target() {
        let p = placement(P2P);
        let a = NodeId::new("a");
        for _ in 0..50 {
            let sid = generate(&p, &a, |_| true).expect("id");
            let parts = SessionIdParts::parse(&sid).expect("parses");
            assert_eq!(parts.random.len(), RANDOM_LEN);
            assert_eq!(parts.owner, a);
            assert_eq!(parts.failover, p.failover_owner(&sid, &a, |_| true), "{sid}");
        }
    }

    /// Every other node is the failover target (and so the backup, with one replica) of an
    /// equal share of a node's sessions. Trying the candidates in a fixed order gave the
    /// first one 2/3 of them with three nodes and 37% (for 25%) with five.
    #[test]
    fn failover_targets_are_spread_evenly() {
        for (n, draws) in [(3usize, 3000usize), (5, 4000)] {
            let mut text = "[domain]\nname='w'\n".to_owned();
            for i in 0..n {
                text += &format!("[[node]]\nname='n{i}'\naddress='127.0.0.1:{}'\n", i + 1);
            }
            let p = placement(&text);
            let owner = NodeId::new("n0");
            let mut count = std::collections::BTreeMap::<NodeId, usize>::new();
            for _ in 0..draws {
                let sid = generate(&p, &owner, |_| true).expect("id");
                *count
                    .entry(SessionIdParts::parse(&sid).expect("parses").failover.expect("target"))
                    .or_default() += 1;
            }
            let fair = draws / (n - 1);
            assert_eq!(count.len(), n - 1, "{count:?}");
            for (node, c) in &count {
                // Binomial: the standard deviation is under 30 draws here; allow about 6 of them.
                assert!(c.abs_diff(fair) < fair / 6, "{node} has {c} of {draws}, fair is {fair}: {count:?}");
            }
        }
    }

    #[test]
    fn alone_there_is_no_failover_target() {
        let p = placement(P2P);
        let a = NodeId::new("a");
        let sid = generate(&p, &a, |n| n == &a).expect("id");
        assert_eq!(SessionIdParts::parse(&sid).expect("parses").failover, None);
        assert_eq!(route(&p, &sid, |n| n == &a), Some(a));
    }

    #[test]
    fn route_prefers_owner_then_target_then_any() {
        let p = placement(P2P);
        let (a, b, c) = (NodeId::new("a"), NodeId::new("b"), NodeId::new("c"));
        let sid = format!("{}.a.b", "x".repeat(RANDOM_LEN));
        assert_eq!(route(&p, &sid, |_| true), Some(a.clone()));
        assert_eq!(route(&p, &sid, |n| n != &a), Some(b.clone()));
        assert_eq!(route(&p, &sid, |n| n == &c), Some(c.clone()));
        assert_eq!(route(&p, &sid, |_| false), None);
        assert!(route(&p, "not-ours", |_| true).is_some());
    }

    #[test]
    fn routes_print_and_parse_back() {
        let p = placement(P2P);
        let a = NodeId::new("a");
        let sid = generate(&p, &a, |_| true).expect("id");
        let route = SessionIdParts::parse(&sid).expect("parses").route();
        assert_eq!(route, Route::current(&p, &sid, a.clone(), |_| true));
        assert!(sid.ends_with(&format!(".{route}")), "{sid} ends with its route {route}");
        assert_eq!(Route::parse(&route.to_string()), Some(route));
        let alone = Route::current(&p, &sid, a.clone(), |n| n == &a);
        assert_eq!(alone.to_string(), "a");
        assert_eq!(Route::parse("a"), Some(alone));
        for bad in ["", ".b", "a.", "a.b.c", "a b", "a;b"] {
            assert_eq!(Route::parse(bad), None, "{bad:?}");
        }
    }

    /// Client-server: the route names the owning client and the client that will retrieve the
    /// session from a server.
    #[test]
    fn client_server_routes_name_clients() {
        let p = placement(
            "[domain]\nname='w'\ntopology='client-server'\n\
             [[node]]\nname='c1'\naddress='127.0.0.1:1'\nmode='client'\n\
             [[node]]\nname='c2'\naddress='127.0.0.1:2'\nmode='client'\n\
             [[node]]\nname='s1'\naddress='127.0.0.1:3'\nmode='server'\n",
        );
        let c1 = NodeId::new("c1");
        for _ in 0..20 {
            let sid = generate(&p, &c1, |_| true).expect("id");
            let route = Route::current(&p, &sid, c1.clone(), |_| true);
            assert_eq!(route.to_string(), "c1.c2", "{sid}");
            assert_eq!(SessionIdParts::parse(&sid).expect("parses").route(), route);
        }
    }

    #[test]
    fn parse_rejects_malformed_ids() {
        for bad in ["", "x", ".a", "x.a.b.c", "x.a b", "x..b"] {
            assert!(SessionIdParts::parse(bad).is_none(), "{bad:?}");
        }
        assert!(SessionIdParts::parse("x.a").is_some());
    }
}
