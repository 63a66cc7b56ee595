//! The key type of the engine's maps by session id, ordered like `str` but compared faster.
//!
//! The engine keeps its per-session state in ordered maps (a replan pass or a scan resumes
//! after the last id it saw), and a mass failover looks thousands of ids up in them, each
//! look-up comparing the id with a dozen or more keys. `str`'s order calls `memcmp` for every
//! comparison; [`Sid`]'s order is the same (byte-wise lexicographic) but first compares the
//! first eight bytes as one big-endian integer, inline, which decides almost every
//! comparison of random ids (`memcmp` only runs when those bytes are equal or an id is
//! shorter than eight bytes). The engine CPU of a mass failover, which this is for, is
//! measured by the ignored test `failover_cpu` (`docs/benchmarks/README.md`).

use std::borrow::Borrow;
use std::cmp::Ordering;

use ref_cast::RefCast;

/// A borrowed session id with the fast order; `Sid::new(id)` from a `&str`, free.
#[derive(RefCast, PartialEq, Eq, Hash, Debug)]
#[repr(transparent)]
pub(crate) struct Sid(str);

impl Sid {
    /// The id `s` as a key to look up.
    pub(crate) fn new(s: &str) -> &Sid {
        Sid::ref_cast(s)
    }
}

/// The first eight bytes as a big-endian integer, if there are eight.
fn head(b: &[u8]) -> Option<u64> {
    b.first_chunk::<8>().map(|h| u64::from_be_bytes(*h))
}

impl Ord for Sid {
    fn cmp(&self, other: &Sid) -> Ordering {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        if let (Some(x), Some(y)) = (head(a), head(b)) {
            if x != y {
                // Big-endian: the integers order like the bytes.
                return x.cmp(&y);
            }
        }
        a.cmp(b)
    }
}

impl PartialOrd for Sid {
    fn partial_cmp(&self, other: &Sid) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An owned session id as a map key: a `Box<str>` (16 bytes, no spare capacity) with
/// [`Sid`]'s order.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) struct SessionKey(Box<str>);

impl SessionKey {
    /// The id.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for SessionKey {
    fn from(s: String) -> Self {
        SessionKey(s.into_boxed_str())
    }
}

impl From<&str> for SessionKey {
    fn from(s: &str) -> Self {
        SessionKey(s.into())
    }
}

impl Borrow<Sid> for SessionKey {
    fn borrow(&self) -> &Sid {
        Sid::new(&self.0)
    }
}

impl Ord for SessionKey {
    fn cmp(&self, other: &SessionKey) -> Ordering {
        Sid::new(&self.0).cmp(Sid::new(&other.0))
    }
}

impl PartialOrd for SessionKey {
    fn partial_cmp(&self, other: &SessionKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The order is `str`'s, whatever the lengths and shared prefixes.
        #[test]
        fn orders_like_str(a in "[a-c]{0,12}", b in "[a-c]{0,12}", p in "[a-z0-9.]{0,10}") {
            let (x, y) = (format!("{p}{a}"), format!("{p}{b}"));
            prop_assert_eq!(Sid::new(&x).cmp(Sid::new(&y)), x.as_str().cmp(y.as_str()));
            prop_assert_eq!(
                SessionKey::from(x.as_str()).cmp(&SessionKey::from(y.as_str())),
                x.as_str().cmp(y.as_str())
            );
        }

        #[test]
        fn orders_like_str_bytes(a in proptest::collection::vec(any::<u8>(), 0..20),
                                 b in proptest::collection::vec(any::<u8>(), 0..20)) {
            let (x, y) = (String::from_utf8_lossy(&a).into_owned(), String::from_utf8_lossy(&b).into_owned());
            prop_assert_eq!(Sid::new(&x).cmp(Sid::new(&y)), x.as_str().cmp(y.as_str()));
        }
    }

    #[test]
    fn a_map_finds_keys_by_borrowed_id_and_ranges_in_str_order() {
        let mut m = std::collections::BTreeMap::new();
        for s in ["b", "abcdefgh2", "abcdefgh10", "abcdefgi", "a", "zzzzzzzzzzzz"] {
            m.insert(SessionKey::from(s), s.len());
        }
        assert_eq!(m.get(Sid::new("abcdefgh10")), Some(&10));
        assert_eq!(m.get(Sid::new("abcdefgh1")), None);
        let order: Vec<&str> = m.keys().map(SessionKey::as_str).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted);
        let after: Vec<&str> = m
            .range::<Sid, _>((std::ops::Bound::Excluded(Sid::new("abcdefgh2")), std::ops::Bound::Unbounded))
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(after, ["abcdefgi", "b", "zzzzzzzzzzzz"]);
    }
}
