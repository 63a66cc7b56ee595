//! The node's file-descriptor budget: the soft limit on open files is raised to the hard one
//! at start, and the admin API's connection cap (plus the refused connections that wait for
//! their client, [`LINGERING`](super::server::LINGERING)) leaves [`RESERVED_FOR_TRANSPORT`]
//! descriptors to the replication transport (its links, pending handshakes and listener) and
//! the runtime, so no flood of admin connections keeps the node from dialling its peers.

use super::server::LINGERING;

/// Descriptors the admin API's connections never take.
pub(crate) const RESERVED_FOR_TRANSPORT: u64 = 256;

/// The open-files limit before and after raising the soft limit to the hard one (equal when
/// it could not be raised, or was at the hard limit already; `None` where there is no such
/// limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Budget {
    /// The soft limit found at start.
    pub(crate) before: Option<u64>,
    /// The soft limit in force now.
    pub(crate) now: Option<u64>,
}

/// Raises the soft open-files limit to the hard one.
pub(crate) fn raise() -> Budget {
    #[cfg(unix)]
    {
        let get = || rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft);
        let before = get();
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        Budget { before, now: get() }
    }
    #[cfg(not(unix))]
    {
        Budget { before: None, now: None }
    }
}

impl Budget {
    /// The admin connection cap: `wanted`, at most the descriptors left once the transport's
    /// reserve and the lingering refusals are set aside (at least 1).
    pub(crate) fn admin_cap(&self, wanted: usize) -> usize {
        match self.now {
            Some(limit) => {
                let reserved = RESERVED_FOR_TRANSPORT + u64::try_from(LINGERING).unwrap_or(u64::MAX);
                let spare = usize::try_from(limit.saturating_sub(reserved)).unwrap_or(usize::MAX);
                wanted.min(spare).max(1)
            }
            None => wanted.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_the_transports_reserve() {
        let b = |now| Budget { before: now, now };
        assert_eq!(b(Some(20_000)).admin_cap(128), 128);
        assert_eq!(b(Some(300)).admin_cap(128), 12);
        assert_eq!(b(Some(100)).admin_cap(128), 1);
        assert_eq!(b(None).admin_cap(128), 128);
    }

    #[cfg(unix)]
    #[test]
    fn raising_reaches_the_hard_limit() {
        let budget = raise();
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
        assert_eq!(budget.now, Some(soft));
        assert!(soft == hard || cfg!(target_os = "macos"), "soft {soft}, hard {hard}");
    }
}
