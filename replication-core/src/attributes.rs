//! [`Attributes`], a session's attributes: names to opaque bytes, in one allocation.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::message::Change;

/// A session's attributes: name to opaque bytes, sorted by name, with a map-like API
/// ([`get`](Self::get), [`insert`](Self::insert), [`remove`](Self::remove),
/// [`iter`](Self::iter), `collect`, `extend`...).
///
/// Cheap to clone: the attributes are one shared, immutable byte buffer (an `Arc<[u8]>`) of
/// the entries in name order, each a LEB128 length and the name, then a LEB128 length and the
/// value. One attribute of 1 KiB takes 1 KiB and a few bytes in one allocation, where a
/// `BTreeMap<String, Vec<u8>>` takes a 540-byte node plus two allocations. The price:
/// [`get`](Self::get) walks the entries (skipping over values) and every change writes a new
/// buffer, which suits the few attributes of a session, written as a whole.
/// On the wire it is a MessagePack map of names to `bin`, as a `BTreeMap` of byte strings.
///
/// ```
/// use replication_core::Attributes;
/// let mut a = Attributes::new();
/// a.insert("user", b"alice");
/// a.insert("cart", vec![1, 2]);
/// assert_eq!(a.get("user"), Some(&b"alice"[..]));
/// assert_eq!(a.keys().collect::<Vec<_>>(), ["cart", "user"]);
/// let b: Attributes = [("user", "alice"), ("cart", "\u{1}\u{2}")].into_iter().collect();
/// assert_eq!(a, b);
/// assert!(a.remove("cart"));
/// assert_eq!(a.len(), 1);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Not an `Option`: the non-null pointer leaves a niche, so `Body` needs no tag of its own.
    buf: Arc<[u8]>,
}

/// The buffer of every empty [`Attributes`]: `new` does not allocate.
static EMPTY: LazyLock<Arc<[u8]>> = LazyLock::new(|| Arc::from(&[][..]));

impl Default for Attributes {
    fn default() -> Self {
        Attributes { buf: EMPTY.clone() }
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn len_size(mut n: usize) -> usize {
    let mut size = 1;
    while n >= 0x80 {
        n >>= 7;
        size += 1;
    }
    size
}

fn entry_size(name: &str, value: &[u8]) -> usize {
    len_size(name.len()) + name.len() + len_size(value.len()) + value.len()
}

fn put_entry(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    put_len(out, name.len());
    out.extend_from_slice(name.as_bytes());
    put_len(out, value.len());
    out.extend_from_slice(value);
}

/// Reads a LEB128 length at the start of `buf`: `(length, rest)`.
fn take_len(buf: &[u8]) -> Option<(usize, &[u8])> {
    let mut n: usize = 0;
    for (i, b) in buf.iter().enumerate() {
        let shift = u32::try_from(7 * i).ok().filter(|s| *s < usize::BITS)?;
        n |= usize::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some((n, &buf[i + 1..]));
        }
    }
    None
}

/// Reads `length, bytes` at the start of `buf`: `(bytes, rest)`.
fn take_bytes(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (n, rest) = take_len(buf)?;
    (n <= rest.len()).then(|| rest.split_at(n))
}

/// Writes `length, bytes` entries into a buffer of exactly the size they take.
struct Packer<'a> {
    rest: &'a mut [u8],
}

impl Packer<'_> {
    /// Writes `bytes`; false (writing nothing) when they do not fit.
    fn put(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.rest.len() {
            return false;
        }
        let (head, tail) = std::mem::take(&mut self.rest).split_at_mut(bytes.len());
        head.copy_from_slice(bytes);
        self.rest = tail;
        true
    }

    fn put_len(&mut self, n: usize) -> bool {
        let mut len = [0u8; 10];
        let mut at = 0;
        let mut n = n;
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            len[at] = if n == 0 { low } else { low | 0x80 };
            at += 1;
            if n == 0 {
                return self.put(&len[..at]);
            }
        }
    }

    fn put_entry(&mut self, name: &str, value: &[u8]) -> bool {
        self.put_len(name.len()) && self.put(name.as_bytes()) && self.put_len(value.len()) && self.put(value)
    }
}

/// Builds the buffer from entries sorted by name without duplicates, `size` bytes in all.
///
/// One allocation: the `Arc` is made at its final size (zeroed, from an iterator of known
/// length) and the entries are written into it, where building a `Vec` and converting it
/// would allocate and copy twice (the `Arc` needs room for its counts before the bytes).
fn build<'a, I>(entries: I, size: usize) -> Arc<[u8]>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])> + Clone,
{
    if size == 0 {
        return EMPTY.clone();
    }
    let mut buf: Arc<[u8]> = std::iter::repeat_n(0u8, size).collect();
    if let Some(room) = Arc::get_mut(&mut buf) {
        let mut p = Packer { rest: room };
        if entries.clone().into_iter().all(|(k, v)| p.put_entry(k, v)) && p.rest.is_empty() {
            return buf;
        }
    }
    // Only if `size` was wrong (a bug): build it the slow way rather than store garbage.
    debug_assert!(false, "attribute buffer size {size} does not match its entries");
    let mut out = Vec::with_capacity(size);
    for (k, v) in entries {
        put_entry(&mut out, k, v);
    }
    if out.is_empty() { EMPTY.clone() } else { Arc::from(out) }
}

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Attributes::default()
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The value of attribute `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Whether attribute `name` is present.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets attribute `name` to `value`; returns whether it replaced a value.
    pub fn insert(&mut self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> bool {
        let (name, value) = (name.as_ref(), value.as_ref());
        let old = self.get(name).map(|v| entry_size(name, v));
        let size = self.bytes().len() - old.unwrap_or(0) + entry_size(name, value);
        let before = self.iter().filter(|(k, _)| *k < name);
        let after = self.iter().filter(|(k, _)| *k > name);
        self.buf = build(before.chain([(name, value)]).chain(after), size);
        old.is_some()
    }

    /// Removes attribute `name`; returns whether it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(old) = self.get(name).map(|v| entry_size(name, v)) else {
            return false;
        };
        self.buf = build(self.iter().filter(|(k, _)| *k != name), self.bytes().len() - old);
        true
    }

    /// Removes every attribute.
    pub fn clear(&mut self) {
        self.buf = EMPTY.clone();
    }

    /// Keeps only the attributes for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        let kept: Vec<(&str, &[u8])> = self.iter().filter(|(k, v)| keep(k, v)).collect();
        if kept.len() < self.len() {
            let size = kept.iter().map(|(k, v)| entry_size(k, v)).sum();
            self.buf = build(kept.iter().copied(), size);
        }
    }

    /// The number of attributes.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The attributes, sorted by name.
    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: self.bytes() }
    }

    /// The names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    /// The values, in name order.
    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().map(|(_, v)| v)
    }

    /// The total size of names and values in bytes.
    pub fn size(&self) -> usize {
        self.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The most bytes these attributes take encoded (a MessagePack map of byte strings: at
    /// most 5 bytes of header for the map and for each name and value), the measure of
    /// [`DomainSection::max_session_bytes`](crate::config::DomainSection::max_session_bytes).
    pub fn encoded_size(&self) -> usize {
        self.iter().map(|(k, v)| k.len() + v.len() + 10).sum::<usize>() + 5
    }

    /// [`Attributes::encoded_size`] once `changes` are applied, without applying them (no copy
    /// of the attributes: only the entries the changes name are looked at).
    pub fn encoded_size_after(&self, changes: &[Change]) -> usize {
        let entry = |k: &str, v: &[u8]| k.len() + v.len() + 10;
        // The entries the changes touched so far, with their size now (0: absent).
        let mut touched: smallvec::SmallVec<[(&str, usize); 4]> = smallvec::SmallVec::new();
        let mut cleared = false;
        let mut size = self.encoded_size();
        for c in changes {
            let (name, new) = match c {
                Change::Set(k, v) => (k.as_str(), entry(k, v)),
                Change::Remove(k) => (k.as_str(), 0),
                Change::Clear => {
                    (cleared, size) = (true, 5);
                    touched.clear();
                    continue;
                }
            };
            let slot = touched.iter_mut().find(|(k, _)| *k == name);
            let old = match &slot {
                Some((_, n)) => *n,
                None if cleared => 0,
                None => self.get(name).map_or(0, |v| entry(name, v)),
            };
            size = size - old + new;
            match slot {
                Some((_, n)) => *n = new,
                None => touched.push((name, new)),
            }
        }
        size
    }

    /// From `(name, value)` pairs in any order; the last of equal names wins.
    fn from_pairs(pairs: Vec<(String, Vec<u8>)>) -> Self {
        Attributes::from_entries(pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    /// From borrowed `(name, value)` entries in any order (the last of equal names wins), in
    /// one allocation: unlike `collect`, which takes owned names and values, no entry is
    /// copied before the buffer is written.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut all: Vec<(&str, &[u8])> = entries.into_iter().collect();
        // Stable: of equal names the last given is the last of its run, and kept.
        all.sort_by(|a, b| a.0.cmp(b.0));
        let mut kept: Vec<(&str, &[u8])> = Vec::with_capacity(all.len());
        for (k, v) in all {
            match kept.last_mut() {
                Some(last) if last.0 == k => *last = (k, v),
                _ => kept.push((k, v)),
            }
        }
        let size = kept.iter().map(|(k, v)| entry_size(k, v)).sum();
        Attributes { buf: build(kept.iter().copied(), size) }
    }

    /// Applies `changes` in order, writing the new buffer once (not once per change).
    pub fn apply(&mut self, changes: &[Change]) {
        if let [one] = changes {
            return one.apply(self);
        }
        // What the changes leave: `None` for removed, over the current entries unless cleared.
        let mut cleared = false;
        let mut over: std::collections::BTreeMap<&str, Option<&[u8]>> = std::collections::BTreeMap::new();
        for c in changes {
            match c {
                Change::Set(k, v) => {
                    over.insert(k, Some(v));
                }
                Change::Remove(k) => {
                    over.insert(k, None);
                }
                Change::Clear => {
                    cleared = true;
                    over.clear();
                }
            }
        }
        if over.is_empty() {
            if cleared {
                self.clear();
            }
            return;
        }
        let base = self.iter().filter(|(k, _)| !cleared && !over.contains_key(k));
        let set = over.iter().filter_map(|(k, v)| v.map(|v| (*k, v)));
        let merged = Merge { a: base.peekable(), b: set.peekable() };
        let size = merged.clone().map(|(k, v)| entry_size(k, v)).sum();
        self.buf = build(merged, size);
    }
}

/// Two iterators of entries sorted by name, with no name in both, merged in name order.
struct Merge<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<'a, A, B> Clone for Merge<A, B>
where
    A: Iterator<Item = (&'a str, &'a [u8])> + Clone,
    B: Iterator<Item = (&'a str, &'a [u8])> + Clone,
{
    fn clone(&self) -> Self {
        Merge { a: self.a.clone(), b: self.b.clone() }
    }
}

impl<'a, A, B> Iterator for Merge<A, B>
where
    A: Iterator<Item = (&'a str, &'a [u8])>,
    B: Iterator<Item = (&'a str, &'a [u8])>,
{
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y.0 < x.0 => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

/// Iterator over `(name, value)` of [`Attributes`], sorted by name.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        // The buffer is only written by `put_entry`; a malformed one ends the iteration.
        let parsed = take_bytes(self.rest).and_then(|(k, rest)| {
            let (v, rest) = take_bytes(rest)?;
            Some((std::str::from_utf8(k).ok()?, v, rest))
        });
        match parsed {
            Some((k, v, rest)) => {
                self.rest = rest;
                Some((k, v))
            }
            None => {
                self.rest = &[];
                None
            }
        }
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Attributes {
    type Item = (String, Vec<u8>);
    type IntoIter = std::vec::IntoIter<(String, Vec<u8>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter().map(|(k, v)| (k.to_owned(), v.to_vec())).collect::<Vec<_>>().into_iter()
    }
}

impl<K: Into<String>, V: Into<Vec<u8>>> FromIterator<(K, V)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Attributes::from_pairs(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl<K: Into<String>, V: Into<Vec<u8>>> Extend<(K, V)> for Attributes {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let mut pairs: Vec<(String, Vec<u8>)> =
            self.iter().map(|(k, v)| (k.to_owned(), v.to_vec())).collect();
        pairs.extend(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
        *self = Attributes::from_pairs(pairs);
    }
}

impl<K: Into<String>, V: Into<Vec<u8>>, const N: usize> From<[(K, V); N]> for Attributes {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl Hash for Attributes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, &Bytes(v))?;
        }
        map.end()
    }
}

/// A name or value as the deserializer gives it: borrowed from the input when it can (a
/// message decoded from a slice), copied otherwise.
enum Piece<'de, T: ?Sized + ToOwned> {
    Borrowed(&'de T),
    Owned(T::Owned),
}

impl<T: ?Sized + ToOwned> Piece<'_, T> {
    fn get(&self) -> &T {
        match self {
            Piece::Borrowed(b) => b,
            Piece::Owned(o) => std::borrow::Borrow::borrow(o),
        }
    }
}

impl<'de> Deserialize<'de> for Piece<'de, [u8]> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Piece<'de, [u8]>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(Piece::Borrowed(v))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(Piece::Owned(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(Piece::Owned(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                crate::message::BytesVisitor.visit_seq(seq).map(Piece::Owned)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl<'de> Deserialize<'de> for Piece<'de, str> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Piece<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Piece::Borrowed(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Piece::Owned(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Piece::Owned(v))
            }
        }
        d.deserialize_string(V)
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MapVisitor)
    }
}

struct MapVisitor;

impl<'de> Visitor<'de> for MapVisitor {
    type Value = Attributes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of attribute names to byte strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
        // The announced size is network input: trust it only so far.
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(256));
        // Names and values borrowed from the message where the deserializer allows it (a
        // frame decoded from a slice): the buffer is then the only copy made.
        while let Some(entry) = map.next_entry::<Piece<'de, str>, Piece<'de, [u8]>>()? {
            pairs.push(entry);
        }
        Ok(Attributes::from_entries(pairs.iter().map(|(k, v)| (k.get(), v.get()))))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn encoded_size_after_is_the_size_once_applied() {
        use bytes::Bytes;
        let set = |k: &str, n: usize| Change::Set(k.into(), Bytes::from(vec![1u8; n]));
        let rm = |k: &str| Change::Remove(k.into());
        let mut a = Attributes::new();
        a.apply(&[set("a", 10), set("b", 300)]);
        for changes in [
            vec![],
            vec![set("a", 1000)],
            vec![set("c", 5), rm("a")],
            vec![rm("zz")],
            vec![set("a", 7), set("a", 70_000), rm("b")],
            vec![Change::Clear],
            vec![set("x", 9), Change::Clear, set("b", 3), rm("a")],
            vec![Change::Clear, set("a", 4), set("a", 40)],
        ] {
            let mut applied = a.clone();
            applied.apply(&changes);
            assert_eq!(a.encoded_size_after(&changes), applied.encoded_size(), "{changes:?}");
        }
    }

    #[test]
    fn encoded_size_bounds_the_encoding() {
        let mut a = Attributes::new();
        assert!(rmp_serde::to_vec(&a).expect("encodes").len() <= a.encoded_size());
        for (n, len) in [(1, 0), (2, 31), (3, 32), (4, 255), (5, 256), (6, 65_535), (7, 65_536), (8, 70_000)]
        {
            a.insert("k".repeat(n * 40), vec![7u8; len]);
            let real = rmp_serde::to_vec(&a).expect("encodes").len();
            assert!(real <= a.encoded_size(), "{real} > {}", a.encoded_size());
            assert!(a.encoded_size() - real <= 10 * a.len() + 5);
        }
    }

    fn model(a: &Attributes) -> BTreeMap<String, Vec<u8>> {
        a.iter().map(|(k, v)| (k.to_owned(), v.to_vec())).collect()
    }

    #[test]
    fn behaves_like_a_btreemap() {
        let mut a = Attributes::new();
        let mut m = BTreeMap::new();
        assert!(a.is_empty() && a.get("x").is_none());
        let big = vec![7u8; 300];
        let ops: [(&str, Option<&[u8]>); 9] = [
            ("m", Some(&b"1"[..])),
            ("a", Some(&big[..])),
            ("z", Some(&b""[..])),
            ("m", Some(&b"22"[..])),
            ("", Some(&b"empty name"[..])),
            ("a", None),
            ("q", None),
            ("é", Some(&b"utf-8"[..])),
            ("z", Some(&big[..])),
        ];
        for (k, v) in ops {
            match v {
                Some(v) => assert_eq!(a.insert(k, v), m.insert(k.to_owned(), v.to_vec()).is_some()),
                None => assert_eq!(a.remove(k), m.remove(k).is_some()),
            }
            assert_eq!(model(&a), m);
            assert_eq!(a.len(), m.len());
        }
        assert_eq!(a.get("z"), Some(&big[..]));
        assert_eq!(a.keys().collect::<Vec<_>>(), m.keys().map(String::as_str).collect::<Vec<_>>());
        let owned: Vec<(String, Vec<u8>)> = a.clone().into_iter().collect();
        assert_eq!(owned, m.clone().into_iter().collect::<Vec<_>>());
        a.retain(|k, _| k != "m");
        m.remove("m");
        assert_eq!(model(&a), m);
        a.clear();
        assert!(a.is_empty() && a.iter().next().is_none());
    }

    #[test]
    fn collect_sorts_and_keeps_the_last_of_equal_names() {
        let a: Attributes = [("b", vec![1]), ("a", vec![2]), ("b", vec![3])].into_iter().collect();
        assert_eq!(a.iter().collect::<Vec<_>>(), [("a", &[2][..]), ("b", &[3][..])]);
        let mut e = a.clone();
        e.extend([("a", vec![9])]);
        assert_eq!(e.get("a"), Some(&[9][..]));
        assert_eq!(Attributes::from([("b", vec![3]), ("a", vec![2])]), a);
        assert_eq!(format!("{a:?}"), r#"{"a": [2], "b": [3]}"#);
    }

    #[test]
    fn one_attribute_is_one_buffer_of_its_bytes() {
        let mut a = Attributes::new();
        a.insert("data", vec![b'x'; 1024]);
        // Name and value with a length each: 1 + 4 + 2 + 1024.
        assert_eq!(a.bytes().len(), 1031);
        let lens = [0usize, 1, 127, 128, 16_383, 16_384, usize::MAX];
        for n in lens {
            let mut out = Vec::new();
            put_len(&mut out, n);
            assert_eq!(out.len(), len_size(n));
            assert_eq!(take_len(&out), Some((n, &[][..])));
        }
        assert_eq!(take_len(&[0x80]), None, "unfinished length");
        assert_eq!(take_len(&[0xff; 11]), None, "too long for a usize");
    }

    #[test]
    fn wire_format_is_a_map_of_byte_strings() {
        struct B(Vec<u8>);
        impl Serialize for B {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
        let m: BTreeMap<String, B> = [("b".to_owned(), B(vec![1; 40])), ("a".to_owned(), B(vec![]))].into();
        let a: Attributes = [("b", vec![1; 40]), ("a", vec![])].into_iter().collect();
        let bytes = rmp_serde::to_vec(&a).expect("encode");
        assert_eq!(bytes, rmp_serde::to_vec(&m).expect("encode"));
        assert_eq!(rmp_serde::from_slice::<Attributes>(&bytes).expect("decode"), a);
        // From a reader (names and values copied, not borrowed) too.
        assert_eq!(rmp_serde::from_read::<_, Attributes>(&bytes[..]).expect("decode"), a);
        // Values as arrays of integers (serde's default for a `Vec<u8>`) still decode.
        let old: BTreeMap<&str, Vec<u8>> = [("a", vec![1, 200])].into();
        let back: Attributes =
            rmp_serde::from_slice(&rmp_serde::to_vec(&old).expect("encode")).expect("decode");
        assert_eq!(back.get("a"), Some(&[1, 200][..]));
        let back: Attributes =
            rmp_serde::from_read(&rmp_serde::to_vec(&old).expect("encode")[..]).expect("decode");
        assert_eq!(back.get("a"), Some(&[1, 200][..]));
        // Duplicate names in a hostile map: the last wins, as for a BTreeMap.
        let dup = [0x82, 0xa1, b'k', 0xc4, 1, 1, 0xa1, b'k', 0xc4, 1, 2];
        let back: Attributes = rmp_serde::from_slice(&dup).expect("decode");
        assert_eq!(back.iter().collect::<Vec<_>>(), [("k", &[2][..])]);
    }

    #[test]
    fn from_entries_sorts_and_keeps_the_last_of_equal_names() {
        let a = Attributes::from_entries([("b", &[1][..]), ("a", &[2][..]), ("b", &[3][..])]);
        assert_eq!(a.iter().collect::<Vec<_>>(), [("a", &[2][..]), ("b", &[3][..])]);
        assert_eq!(Attributes::from_entries([]), Attributes::new());
    }

    proptest::proptest! {
        /// Changes applied at once give what they give one at a time.
        #[test]
        fn changes_applied_at_once_match_one_at_a_time(
            start in proptest::collection::vec((0u8..6, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)), 0..6),
            ops in proptest::collection::vec((0u8..8, 0u8..6, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)), 0..10),
        ) {
            let mut one: Attributes = start.into_iter().map(|(k, v)| (format!("k{k}"), v)).collect();
            let mut all = one.clone();
            let changes: Vec<Change> = ops
                .into_iter()
                .map(|(op, k, v)| match op {
                    0 => Change::Clear,
                    1 | 2 => Change::Remove(format!("k{k}")),
                    _ => Change::Set(format!("k{k}"), v.into()),
                })
                .collect();
            for c in &changes {
                c.apply(&mut one);
            }
            all.apply(&changes);
            proptest::prop_assert_eq!(&all, &one);
            proptest::prop_assert_eq!(all.bytes().len(), one.iter().map(|(k, v)| entry_size(k, v)).sum::<usize>());
        }
    }

    proptest::proptest! {
        /// Any sequence of inserts and removes (long names and values included, so lengths
        /// take several LEB128 bytes) leaves the same entries as a `BTreeMap`, and the
        /// MessagePack round trip keeps them.
        #[test]
        fn any_operations_match_a_btreemap(
            ops in proptest::collection::vec(
                (0u8..6, proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)), 0usize..200),
                0..40,
            )
        ) {
            let mut a = Attributes::new();
            let mut m = BTreeMap::new();
            for (key, value, pad) in ops {
                let name = format!("{key}{}", "n".repeat(pad));
                match value {
                    Some(v) => proptest::prop_assert_eq!(a.insert(&name, &v), m.insert(name, v).is_some()),
                    None => proptest::prop_assert_eq!(a.remove(&name), m.remove(&name).is_some()),
                }
                proptest::prop_assert_eq!(&model(&a), &m);
                proptest::prop_assert_eq!(a.len(), m.len());
            }
            let back: Attributes = rmp_serde::from_slice(&rmp_serde::to_vec(&a).expect("encode")).expect("decode");
            proptest::prop_assert_eq!(back, a);
        }
    }
}
