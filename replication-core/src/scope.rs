//! Session managers: the namespaces of session ids that one engine keeps apart.
//!
//! A node hosts the anonymous session manager and every manager its `[[node]]` entry declares
//! (`managers = { cart = "both", profile = "both" }`). The managers of a node share one
//! engine, one set of links and one membership view; each has its own namespace of session
//! ids (the same id in two managers is two sessions). The engine keys a session by its
//! *scoped key*: the id itself for the anonymous manager (so it costs nothing, on the wire
//! included), and `<id>` [`SEPARATOR] `<manager>` for a named one. Session ids never contain
//! [`SEPARATOR`] (a control character; [`id_is_valid`], checked by the library) and manager
//! names are DNS labels (validation rule `name-chars`), so a key splits unambiguously. Placement
//! hashes the id part only ([`ScopedId::id`]): an id routes to the same owner and failover
//! target whatever its manager, which is what a router reading the id alone needs.
//!
//! Code never splits a key by hand: [`ScopedId`] does.
//!
//! ```
//! use replication_core::scope::ScopedId;
//! let cart = ScopedId::new(Some("cart"), "s1");
//! let key = cart.to_key();
//! assert_ne!(key, "s1");
//! assert_eq!(ScopedId::parse(&key), cart);
//! assert_eq!(ScopedId::parse(&key).id(), "s1");
//! assert_eq!(ScopedId::parse(&key).manager(), Some("cart"));
//! // The anonymous manager's key is the id.
//! assert_eq!(ScopedId::new(None, "s1").to_key(), "s1");
//! assert_eq!(ScopedId::parse("s1").manager(), None);
//! ```

/// The byte between the id and the manager in a scoped key (ASCII unit separator).
pub const SEPARATOR: char = '\u{1f}';

/// A session id and the manager it belongs to (`None`: the anonymous manager).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopedId<'a> {
    id: &'a str,
    manager: Option<&'a str>,
}

impl<'a> ScopedId<'a> {
    /// Session `id` of `manager`.
    pub fn new(manager: Option<&'a str>, id: &'a str) -> Self {
        ScopedId { id, manager }
    }

    /// Splits an engine key.
    pub fn parse(key: &'a str) -> Self {
        match key.split_once(SEPARATOR) {
            Some((id, manager)) => ScopedId { id, manager: Some(manager) },
            None => ScopedId { id: key, manager: None },
        }
    }

    /// The session id, as the application knows it.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The manager; `None` for the anonymous one.
    pub fn manager(&self) -> Option<&'a str> {
        self.manager
    }

    /// The engine key.
    pub fn to_key(&self) -> String {
        match self.manager {
            None => self.id.to_owned(),
            Some(m) => {
                let mut k = String::with_capacity(self.id.len() + 1 + m.len());
                k.push_str(self.id);
                k.push(SEPARATOR);
                k.push_str(m);
                k
            }
        }
    }
}

/// The engine key of session `id` in `manager`.
pub fn key(manager: Option<&str>, id: &str) -> String {
    ScopedId::new(manager, id).to_key()
}

/// The manager an engine key belongs to, without the id.
pub fn manager_of(key: &str) -> Option<&str> {
    ScopedId::parse(key).manager()
}

/// Whether `id` can be a session id of some manager: it does not contain [`SEPARATOR`].
pub fn id_is_valid(id: &str) -> bool {
    !id.contains(SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A key splits back into the id and the manager it was made of.
        #[test]
        fn keys_round_trip(id in "[ -~]{0,40}", manager in proptest::option::of("[a-z0-9-]{1,20}")) {
            let s = ScopedId::new(manager.as_deref(), &id);
            let k = s.to_key();
            prop_assert_eq!(ScopedId::parse(&k), s);
            prop_assert_eq!(manager_of(&k), manager.as_deref());
            prop_assert!(id_is_valid(ScopedId::parse(&k).id()));
        }

        /// Two managers never share a key, even when one's name prefixes the other's.
        #[test]
        fn managers_never_share_keys(id in "[a-z.]{1,10}", a in "[a-z]{1,6}", b in "[a-z]{1,6}") {
            prop_assume!(a != b);
            prop_assert_ne!(key(Some(&a), &id), key(Some(&b), &id));
            prop_assert_ne!(key(Some(&a), &id), key(None, &id));
        }
    }
}
