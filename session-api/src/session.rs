//! A session as a request sees it: the attributes read at one version, plus the request's
//! local changes, written back by [`crate::SessionManager::commit`].

use std::collections::BTreeMap;

use bytes::Bytes;
use replication_core::{Attributes, Change, Version};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::WriteContents;
use crate::error::{Error, Result};

/// One session, read at [`Session::version`], with the changes made since.
///
/// Values are bytes; [`Session::get`] and [`Session::set`] store any serde type as
/// MessagePack (rmp-serde, named fields). Nothing is sent until the session is committed.
#[derive(Clone, Debug)]
pub struct Session {
    id: String,
    version: Version,
    base: Attributes,
    /// Local changes: `Some(value)` set, `None` removed. A value is shared, not copied, with
    /// the write that sends it.
    changes: BTreeMap<String, Option<Bytes>>,
    cleared: bool,
    is_new: bool,
    invalidated: bool,
}

impl Session {
    pub(crate) fn new(id: String) -> Self {
        Session {
            id,
            version: 0,
            base: Attributes::new(),
            changes: BTreeMap::new(),
            cleared: false,
            is_new: true,
            invalidated: false,
        }
    }

    pub(crate) fn loaded(id: String, version: Version, attrs: Attributes) -> Self {
        Session { version, base: attrs, is_new: false, ..Session::new(id) }
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The version this handle was read at (0 for a session not yet committed).
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether the session was created by this handle and not committed yet.
    pub fn is_new(&self) -> bool {
        self.is_new
    }

    /// Whether there are local changes to commit.
    pub fn is_modified(&self) -> bool {
        self.cleared || !self.changes.is_empty()
    }

    /// Whether [`crate::SessionManager::invalidate_session`] ended this session.
    pub fn is_invalidated(&self) -> bool {
        self.invalidated
    }

    /// The raw value of attribute `name`, with local changes applied.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        match self.changes.get(name) {
            Some(v) => v.as_deref(),
            None if self.cleared => None,
            None => self.base.get(name),
        }
    }

    /// Attribute `name` decoded from MessagePack; `Ok(None)` when absent.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.get_bytes(name)
            .map(|b| {
                rmp_serde::from_slice(b)
                    .map_err(|e| Error::Codec { name: name.to_owned(), message: e.to_string() })
            })
            .transpose()
    }

    /// Sets attribute `name` to raw bytes.
    pub fn set_bytes(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Result<()> {
        self.check_live()?;
        self.changes.insert(name.into(), Some(Bytes::from(value.into())));
        Ok(())
    }

    /// Sets attribute `name` to `value` encoded as MessagePack.
    pub fn set<T: Serialize + ?Sized>(&mut self, name: impl Into<String>, value: &T) -> Result<()> {
        let name = name.into();
        let bytes = rmp_serde::to_vec_named(value)
            .map_err(|e| Error::Codec { name: name.clone(), message: e.to_string() })?;
        self.set_bytes(name, bytes)
    }

    /// Removes attribute `name`; returns whether it was present.
    pub fn remove(&mut self, name: &str) -> Result<bool> {
        self.check_live()?;
        let was = self.get_bytes(name).is_some();
        if self.cleared || !self.base.contains_key(name) {
            self.changes.remove(name);
        } else {
            self.changes.insert(name.to_owned(), None);
        }
        Ok(was)
    }

    /// Removes every attribute.
    pub fn clear(&mut self) -> Result<()> {
        self.check_live()?;
        self.cleared = true;
        self.changes.clear();
        Ok(())
    }

    /// Attribute names, with local changes applied, sorted.
    pub fn keys(&self) -> Vec<&str> {
        self.attributes_iter().map(|(k, _)| k).collect()
    }

    /// Every attribute with local changes applied.
    pub fn attributes(&self) -> Attributes {
        Attributes::from_entries(self.attributes_iter())
    }

    fn attributes_iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let base = (!self.cleared)
            .then(|| self.base.iter().filter(|(k, _)| !self.changes.contains_key(*k)))
            .into_iter()
            .flatten();
        let set = self.changes.iter().filter_map(|(k, v)| v.as_deref().map(|v| (k.as_str(), v)));
        let mut all: Vec<(&str, &[u8])> = base.chain(set).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    fn check_live(&self) -> Result<()> {
        if self.invalidated { Err(Error::Invalidated) } else { Ok(()) }
    }

    /// The changes to write, as the core takes them.
    pub(crate) fn to_changes(&self, contents: WriteContents) -> Vec<Change> {
        match contents {
            WriteContents::All => std::iter::once(Change::Clear)
                .chain(self.attributes_iter().map(|(k, v)| Change::Set(k.to_owned(), v.to_vec().into())))
                .collect(),
            WriteContents::Changed => {
                let mut out = Vec::with_capacity(self.changes.len() + 1);
                if self.cleared {
                    out.push(Change::Clear);
                }
                for (k, v) in &self.changes {
                    out.push(match v {
                        // A reference, not a copy: the handle keeps its changes for a retry.
                        Some(v) => Change::Set(k.clone(), v.clone()),
                        None => Change::Remove(k.clone()),
                    });
                }
                out
            }
        }
    }

    /// After a successful commit: the changes become the base at `version`.
    pub(crate) fn committed(&mut self, version: Version) {
        let attrs = self.attributes();
        self.committed_as(version, attrs);
    }

    /// After a successful commit whose result the node returned: `attrs` (the base with the
    /// changes applied, as [`Session::attributes`] would build them) becomes the base at
    /// `version`.
    pub(crate) fn committed_as(&mut self, version: Version, attrs: Attributes) {
        self.base = attrs;
        self.changes.clear();
        self.cleared = false;
        self.is_new = false;
        self.version = version;
    }

    pub(crate) fn mark_invalidated(&mut self) {
        self.invalidated = true;
        self.changes.clear();
        self.cleared = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_changes_overlay_the_base() {
        let mut base = Attributes::new();
        base.insert("a", b"1");
        base.insert("b", b"2");
        let mut s = Session::loaded("s".into(), 3, base);
        s.set_bytes("c", b"3".to_vec()).expect("live");
        assert!(s.remove("a").expect("live"));
        assert_eq!(s.keys(), vec!["b", "c"]);
        assert_eq!(
            s.to_changes(WriteContents::Changed),
            vec![Change::Remove("a".into()), Change::Set("c".into(), b"3".to_vec().into())]
        );
        assert_eq!(
            s.to_changes(WriteContents::All),
            vec![
                Change::Clear,
                Change::Set("b".into(), b"2".to_vec().into()),
                Change::Set("c".into(), b"3".to_vec().into())
            ]
        );
        s.committed(4);
        assert!(!s.is_modified());
        assert_eq!(s.version(), 4);
        assert_eq!(s.get_bytes("c"), Some(&b"3"[..]));
    }

    #[test]
    fn typed_values_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Cart {
            items: Vec<String>,
        }
        let mut s = Session::new("s".into());
        s.set("cart", &Cart { items: vec!["x".into()] }).expect("encodes");
        assert_eq!(s.get::<Cart>("cart").expect("decodes"), Some(Cart { items: vec!["x".into()] }));
        assert!(s.get::<u32>("cart").is_err());
        assert_eq!(s.get::<u32>("none").expect("absent"), None);
        s.clear().expect("live");
        assert!(s.keys().is_empty());
        assert_eq!(s.to_changes(WriteContents::Changed), vec![Change::Clear]);
    }
}
