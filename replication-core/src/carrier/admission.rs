//! Which new connections may start a handshake, so that connections nobody authenticated
//! cannot keep a configured peer out.
//!
//! - **Reserved slots.** Each IP address a configured peer's address resolves to (resolved
//!   once, when the transport starts or a reload adds the peer) has [`RESERVED_PER_PEER`] handshake slots per peer at
//!   that IP that no other source can take: a peer dials one connection at a time, plus the
//!   TCP transport's "gone" probe.
//! - **Shared slots.** Everyone else (and a configured IP whose reserved slots are busy)
//!   shares [`TransportSettings::max_unauthenticated`] slots, at most [`PER_SOURCE`] of them
//!   per source IP, and gets only [`FIRST_BYTES`] (or the handshake timeout, if shorter) to
//!   start its handshake rather than the whole handshake timeout.
//! - **Address validation.** A carrier that can tell whether a source address is proven
//!   (QUIC, where a datagram's source is spoofable) asks an unproven source to prove it
//!   (a QUIC Retry) instead of giving it a shared slot once half of them are busy, or
//!   when all of them or its source's share are.
//!
//! Nothing here grows with the traffic: a source has an entry only while it has a handshake
//! in progress, so at most as many as there are slots.
//!
//! Caveat: slots are reserved by IP address. A stranger that shares a configured peer's IP
//! (a NAT in front of both, or every node on one host, as in tests on 127.0.0.1) can use that
//! peer's reserved slots. Tests on loopback therefore flood from another loopback address
//! (127.0.0.9) while the peers use 127.0.0.1.
//!
//! [`TransportSettings::max_unauthenticated`]: crate::transport::TransportSettings::max_unauthenticated

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tracing::warn;

use crate::config::{DomainConfig, NodeId};

/// Reserved handshake slots per configured peer at an IP address.
pub const RESERVED_PER_PEER: usize = 2;

/// Shared slots one source IP may hold at a time.
pub const PER_SOURCE: usize = 8;

/// How long a connection in a shared slot has to start its handshake (the first byte of a TLS
/// ClientHello over TCP; the QUIC handshake over QUIC).
pub const FIRST_BYTES: Duration = Duration::from_secs(2);

/// What to do with a new connection.
#[derive(Debug)]
pub enum Admit {
    /// Run its handshake, holding this slot until it is done.
    Slot(Slot),
    /// Ask its source to prove its address first (QUIC Retry).
    Validate,
    /// Turn it away: all the slots it may use are busy (the rule for the refusal).
    Full(&'static str),
}

#[derive(Debug, Default)]
struct Counts {
    /// Shared slots in use, in all.
    shared: usize,
    /// Per source IP: (reserved slots in use, shared slots in use).
    by_source: HashMap<IpAddr, (usize, usize)>,
}

/// The handshake slots of one transport (see the module docs).
#[derive(Debug, Clone)]
pub struct Admission {
    reserved: Arc<RwLock<HashMap<IpAddr, usize>>>,
    shared: usize,
    counts: Arc<Mutex<Counts>>,
}

/// A handshake slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    ip: IpAddr,
    reserved: bool,
    counts: Arc<Mutex<Counts>>,
}

impl Slot {
    /// Whether it is one of a configured peer's reserved slots (which get the whole handshake
    /// timeout; a shared slot gets [`FIRST_BYTES`] to start).
    pub fn reserved(&self) -> bool {
        self.reserved
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Ok(mut c) = self.counts.lock() else { return };
        if !self.reserved {
            c.shared = c.shared.saturating_sub(1);
        }
        if let Some(e) = c.by_source.get_mut(&self.ip) {
            if self.reserved {
                e.0 = e.0.saturating_sub(1);
            } else {
                e.1 = e.1.saturating_sub(1);
            }
            if *e == (0, 0) {
                c.by_source.remove(&self.ip);
            }
        }
    }
}

/// The IP address a connection's source counts under (an IPv4 address mapped into IPv6 as
/// the IPv4 address).
pub fn source_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Admission {
    /// `shared` slots for everyone, and [`RESERVED_PER_PEER`] per peer for each IP in
    /// `peers` (one entry per peer and address it resolves to).
    pub fn new(shared: usize, peers: impl IntoIterator<Item = IpAddr>) -> Self {
        let a = Admission {
            reserved: Arc::new(RwLock::new(HashMap::new())),
            shared,
            counts: Arc::new(Mutex::new(Counts::default())),
        };
        a.reserve(peers);
        a
    }

    /// [`RESERVED_PER_PEER`] more reserved slots for each IP in `peers` (one entry per peer
    /// and address it resolves to): a reload added those peers.
    pub fn reserve(&self, peers: impl IntoIterator<Item = IpAddr>) {
        let mut reserved = match self.reserved.write() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        for ip in peers {
            *reserved.entry(source_ip(ip)).or_insert(0) += RESERVED_PER_PEER;
        }
    }

    /// The slots for `local`'s peers in `cfg`, resolving their addresses now (a name that
    /// does not resolve gets no reserved slots and is logged).
    pub async fn for_domain(cfg: &DomainConfig, local: &NodeId, shared: usize) -> Self {
        let peers: Vec<NodeId> = cfg.nodes.iter().map(|n| n.name.clone()).filter(|n| n != local).collect();
        let ips = resolve(cfg, &peers).await;
        Admission::new(shared, ips)
    }

    /// Whether `ip` is a configured peer's address.
    pub fn is_peer(&self, ip: IpAddr) -> bool {
        self.reserved_for(ip) > 0
    }

    fn reserved_for(&self, ip: IpAddr) -> usize {
        let ip = source_ip(ip);
        match self.reserved.read() {
            Ok(r) => r.get(&ip).copied().unwrap_or(0),
            Err(poisoned) => poisoned.into_inner().get(&ip).copied().unwrap_or(0),
        }
    }

    /// A slot for a new connection from `ip`, whose source address is proven when
    /// `validated` (always over TCP), or what to do instead.
    pub fn admit(&self, ip: IpAddr, validated: bool) -> Admit {
        let ip = source_ip(ip);
        let Ok(mut c) = self.counts.lock() else {
            return Admit::Full(crate::wire::refusal::TOO_MANY_UNAUTHENTICATED);
        };
        let (held_reserved, held_shared) = c.by_source.get(&ip).copied().unwrap_or((0, 0));
        let mine = self.reserved_for(ip);
        if held_reserved < mine {
            c.by_source.insert(ip, (held_reserved + 1, held_shared));
            return Admit::Slot(Slot { ip, reserved: true, counts: self.counts.clone() });
        }
        let busy = c.shared >= self.shared || held_shared >= PER_SOURCE;
        if !validated && (busy || c.shared * 2 >= self.shared) {
            return Admit::Validate;
        }
        if busy {
            return Admit::Full(crate::wire::refusal::TOO_MANY_UNAUTHENTICATED);
        }
        c.shared += 1;
        c.by_source.insert(ip, (held_reserved, held_shared + 1));
        Admit::Slot(Slot { ip, reserved: false, counts: self.counts.clone() })
    }

    /// Sources with a handshake in progress (for tests: it never exceeds the slots).
    pub fn sources(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.by_source.len())
    }
}

/// The IP addresses of `peers` of `cfg`, one entry per peer and address its address resolves
/// to, resolved now (a name that does not resolve is logged and left out).
pub async fn resolve(cfg: &DomainConfig, peers: &[NodeId]) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for n in peers.iter().filter_map(|p| cfg.node(p)) {
        match tokio::net::lookup_host(n.address.as_str()).await {
            Ok(addrs) => {
                let mut mine: Vec<IpAddr> = addrs.map(|a| source_ip(a.ip())).collect();
                mine.sort();
                mine.dedup();
                ips.extend(mine);
            }
            Err(e) => {
                warn!(peer = %n.name, address = %n.address, error = %e, "cannot resolve a peer's address: no handshake slots reserved for it");
            }
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn slot(a: Admit) -> Slot {
        match a {
            Admit::Slot(s) => s,
            other => panic!("no slot: {other:?}"),
        }
    }

    #[test]
    fn a_configured_peer_keeps_its_reserved_slots_while_strangers_fill_theirs() {
        let peer = ip("10.0.0.1");
        let a = Admission::new(16, [peer]);
        // Two strangers flood: each gets PER_SOURCE shared slots, then is turned away.
        let mut held = Vec::new();
        for s in ["10.9.9.9", "10.9.9.8"] {
            for _ in 0..PER_SOURCE {
                held.push(slot(a.admit(ip(s), true)));
            }
            assert!(matches!(a.admit(ip(s), true), Admit::Full(_)), "per-source cap");
        }
        // The shared slots are all busy: a third stranger is turned away...
        assert!(matches!(a.admit(ip("10.9.9.7"), true), Admit::Full(_)));
        // ...but the peer still gets its reserved ones (with the whole handshake timeout).
        let r1 = slot(a.admit(peer, true));
        let r2 = slot(a.admit(peer, true));
        assert!(r1.reserved() && r2.reserved());
        assert!(matches!(a.admit(peer, true), Admit::Full(_)), "only its reserved slots are left to it");
        drop(r1);
        assert!(slot(a.admit(peer, true)).reserved(), "a reserved slot given back is the peer's again");
        // Slots given back are usable again, and no entry outlives its slots.
        held.clear();
        assert!(!slot(a.admit(ip("10.9.9.7"), true)).reserved());
        drop(r2);
        assert_eq!(a.sources(), 0);
    }

    #[test]
    fn unproven_sources_must_validate_once_half_the_shared_slots_are_busy() {
        let a = Admission::new(4, [ip("10.0.0.1")]);
        let s1 = slot(a.admit(ip("10.9.9.1"), false));
        let _s2 = slot(a.admit(ip("10.9.9.2"), false));
        assert!(matches!(a.admit(ip("10.9.9.3"), false), Admit::Validate), "half busy: validate first");
        let _s3 = slot(a.admit(ip("10.9.9.3"), true));
        let _s4 = slot(a.admit(ip("10.9.9.4"), true));
        assert!(matches!(a.admit(ip("10.9.9.5"), true), Admit::Full(_)));
        assert!(matches!(a.admit(ip("10.9.9.5"), false), Admit::Validate));
        // The configured peer's reserved slots need no validation.
        assert!(slot(a.admit(ip("10.0.0.1"), false)).reserved());
        drop(s1);
        assert!(matches!(a.admit(ip("10.9.9.6"), false), Admit::Validate));
        assert!(!slot(a.admit(ip("10.9.9.6"), true)).reserved());
    }

    #[test]
    fn peers_sharing_an_ip_add_up_their_reservations_and_mapped_v4_counts_as_v4() {
        let a = Admission::new(1, [ip("127.0.0.1"), ip("127.0.0.1")]);
        let held: Vec<Slot> =
            (0..2 * RESERVED_PER_PEER).map(|_| slot(a.admit(ip("::ffff:127.0.0.1"), true))).collect();
        assert!(held.iter().all(Slot::reserved));
        assert!(a.is_peer(ip("127.0.0.1")) && !a.is_peer(ip("127.0.0.9")));
        assert!(!slot(a.admit(ip("127.0.0.1"), true)).reserved(), "then the shared slots");
    }
}
