//! Small collections kept per session, 16 bytes each and no spare capacity on the heap.
//!
//! An owner state keeps a list of the writes waiting for acknowledgements and a set of former
//! holders to tell to drop their copies; both are empty most of the time and hold a few items
//! otherwise. A `Vec` or a `BTreeSet` takes 24 bytes inline (and a `Vec` keeps its capacity);
//! these take 16 (a boxed slice) and reallocate on every change, which is cheap at that size.

/// A list as a boxed slice: exactly its items on the heap, none when empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlimVec<T>(Box<[T]>);

impl<T> Default for SlimVec<T> {
    fn default() -> Self {
        SlimVec(Box::default())
    }
}

impl<T> SlimVec<T> {
    fn from_vec(v: Vec<T>) -> Self {
        // `into_boxed_slice` drops spare capacity; an empty one does not allocate.
        SlimVec(v.into_boxed_slice())
    }

    fn edit(&mut self, f: impl FnOnce(&mut Vec<T>)) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        f(&mut v);
        *self = SlimVec::from_vec(v);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, x: T) {
        self.edit(|v| {
            v.reserve_exact(1);
            v.push(x);
        });
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub(crate) fn retain(&mut self, f: impl FnMut(&T) -> bool) {
        self.edit(|v| v.retain(f));
    }
}

impl<T> From<Vec<T>> for SlimVec<T> {
    fn from(v: Vec<T>) -> Self {
        SlimVec::from_vec(v)
    }
}

impl<T> FromIterator<T> for SlimVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Self {
        SlimVec::from_vec(it.into_iter().collect())
    }
}

impl<T> IntoIterator for SlimVec<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

/// A set as a sorted [`SlimVec`]: iterated in order, like a `BTreeSet`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlimSet<T>(SlimVec<T>);

impl<T> Default for SlimSet<T> {
    fn default() -> Self {
        SlimSet(SlimVec::default())
    }
}

impl<T: Ord> SlimSet<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members, in order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.0.iter()
    }

    /// Adds `x`; whether it was not there.
    pub(crate) fn insert(&mut self, x: T) -> bool {
        match self.0.0.binary_search(&x) {
            Ok(_) => false,
            Err(i) => {
                self.0.edit(|v| {
                    v.reserve_exact(1);
                    v.insert(i, x);
                });
                true
            }
        }
    }

    /// Removes `x`; whether it was there.
    pub(crate) fn remove(&mut self, x: &T) -> bool {
        match self.0.0.binary_search(x) {
            Ok(i) => {
                self.0.edit(|v| {
                    v.remove(i);
                });
                true
            }
            Err(_) => false,
        }
    }
}

impl<T: Ord> FromIterator<T> for SlimSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Self {
        let mut v: Vec<T> = it.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        SlimSet(SlimVec::from_vec(v))
    }
}

impl<T: Ord> Extend<T> for SlimSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, it: I) {
        let mut it = it.into_iter().peekable();
        if it.peek().is_none() {
            return;
        }
        self.0.edit(|v| {
            v.extend(it);
            v.sort_unstable();
            v.dedup();
        });
    }
}

impl<T> IntoIterator for SlimSet<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A small set kept inline (no allocation up to four items), sorted: the peers of a claim
/// in flight (asked, still waiting, holding a copy), a handful in any domain. A mass failover
/// starts thousands of claims at once, and three `BTreeSet`s each cost it two allocations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InlineSet<T>(smallvec::SmallVec<[T; 4]>);

impl<T> Default for InlineSet<T> {
    fn default() -> Self {
        InlineSet(smallvec::SmallVec::new())
    }
}

impl<T: Ord> InlineSet<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn contains(&self, x: &T) -> bool {
        self.0.binary_search(x).is_ok()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    /// Adds `x`; whether it was not there.
    pub(crate) fn insert(&mut self, x: T) -> bool {
        match self.0.binary_search(&x) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, x);
                true
            }
        }
    }

    /// Removes `x`; whether it was there.
    pub(crate) fn remove(&mut self, x: &T) -> bool {
        match self.0.binary_search(x) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }
}

impl<T: Ord> FromIterator<T> for InlineSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Self {
        let mut v: smallvec::SmallVec<[T; 4]> = it.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        InlineSet(v)
    }
}

impl<T> IntoIterator for InlineSet<T> {
    type Item = T;
    type IntoIter = smallvec::IntoIter<[T; 4]>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a InlineSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bytes_and_no_spare_room() {
        assert_eq!(std::mem::size_of::<SlimVec<u64>>(), 16);
        assert_eq!(std::mem::size_of::<SlimSet<u64>>(), 16);
        let mut v = SlimVec::default();
        for i in 0..5u64 {
            v.push(i);
        }
        v.retain(|x| x % 2 == 0);
        assert_eq!(v.clone().into_iter().collect::<Vec<_>>(), [0, 2, 4]);
        v.retain(|_| false);
        assert!(v.is_empty());
    }

    #[test]
    fn a_set_behaves_like_a_btreeset() {
        let mut s: SlimSet<u32> = [5, 1, 3, 1].into_iter().collect();
        let mut b: std::collections::BTreeSet<u32> = [5, 1, 3, 1].into_iter().collect();
        for op in [(true, 2), (true, 3), (false, 1), (false, 9), (true, 0), (false, 5)] {
            let r = if op.0 { (s.insert(op.1), b.insert(op.1)) } else { (s.remove(&op.1), b.remove(&op.1)) };
            assert_eq!(r.0, r.1, "{op:?}");
            assert_eq!(
                s.clone().into_iter().collect::<Vec<_>>(),
                b.iter().copied().collect::<Vec<_>>(),
                "{op:?}"
            );
        }
        let mut i: InlineSet<u32> = [5, 1, 3, 1].into_iter().collect();
        let mut b2: std::collections::BTreeSet<u32> = [5, 1, 3, 1].into_iter().collect();
        for op in [(true, 2), (true, 3), (false, 1), (false, 9), (true, 0), (false, 5), (true, 7), (true, 8)]
        {
            let r =
                if op.0 { (i.insert(op.1), b2.insert(op.1)) } else { (i.remove(&op.1), b2.remove(&op.1)) };
            assert_eq!(r.0, r.1, "{op:?}");
            assert_eq!(
                i.iter().copied().collect::<Vec<_>>(),
                b2.iter().copied().collect::<Vec<_>>(),
                "{op:?}"
            );
            assert!(b2.iter().all(|x| i.contains(x)) && !i.contains(&9));
            assert_eq!(i.len(), b2.len());
        }
        assert!(!i.is_empty());
        let (even, odd): (SlimSet<u32>, SlimSet<u32>) = s.clone().into_iter().partition(|x| x % 2 == 0);
        assert_eq!(even.into_iter().collect::<Vec<_>>(), [0, 2]);
        assert_eq!(odd.into_iter().collect::<Vec<_>>(), [3]);
    }
}
