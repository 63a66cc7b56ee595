//! What the web frameworks' session stores (`store` for tower-sessions, `actix` for
//! actix-session) share: the layout of a web session record in an m2m
//! session, its full-replace save, its expiry, and the per-request note that a session was
//! unavailable, which their layers turn into a `503`.
//!
//! A record is an m2m session whose id is the framework's session key: each value is one
//! attribute `d:<key>` (the framework's serialized value) and the expiry date is the
//! attribute `m2m:expiry` (Unix seconds). Saves replace the whole record, last writer wins,
//! as the frameworks expect of a store.

use std::cell::Cell;
use std::future::Future;

use replication_core::Attributes;

use crate::error::Error;
use crate::manager::SessionManager;
use crate::session::Session;

/// The prefix of a value's attribute name.
const DATA_PREFIX: &str = "d:";
/// The attribute that holds the expiry date (Unix seconds, MessagePack).
const EXPIRY: &str = "m2m:expiry";
/// Fresh ids drawn before a create gives up (collisions are astronomically rare).
const CREATE_ATTEMPTS: usize = 8;

tokio::task_local! {
    /// Set when a session was unavailable during the request a `503` layer serves on this
    /// task ([`watch`]).
    static UNAVAILABLE: Cell<bool>;
}

/// Notes on the current request, if a `503` layer watches it, that `e` means the session
/// could not be served now ([`Error::Unavailable`], [`Error::Busy`], or another node kept it:
/// [`Error::NotOwner`]): a retry may succeed.
pub(crate) fn note(e: &Error) {
    if matches!(e, Error::Unavailable | Error::Busy | Error::NotOwner { .. }) {
        // Outside a watched request there is no note to take.
        let _ = UNAVAILABLE.try_with(|u| u.set(true));
    }
}

/// Runs a request's future, and says whether a store call made while it ran noted an
/// unavailable session ([`note`]).
pub(crate) async fn watch<F: Future>(request: F) -> (F::Output, bool) {
    UNAVAILABLE
        .scope(Cell::new(false), async move {
            let out = request.await;
            (out, UNAVAILABLE.with(Cell::get))
        })
        .await
}

/// Seconds a client is asked to wait before it retries a `503`.
pub(crate) const RETRY_AFTER_SECS: &str = "1";

/// A record's attributes: its values (name, serialized value) and expiry date.
#[cfg_attr(not(feature = "actix"), allow(dead_code))]
pub(crate) fn record_attributes<K: AsRef<str>, V: AsRef<[u8]>>(
    values: impl IntoIterator<Item = (K, V)>,
    expiry_unix: i64,
) -> Result<Attributes, Error> {
    let values = values.into_iter().map(|(k, v)| (k, v.as_ref().to_vec()));
    Ok(attributes_of(&record_entries(values, expiry_unix)?))
}

/// The attributes of a record's entries ([`record_entries`]).
pub(crate) fn attributes_of(entries: &[(String, Vec<u8>)]) -> Attributes {
    Attributes::from_entries(entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

/// A record's attributes as owned entries, `d:<name>` for each value and the expiry date
/// ([`replace_with`] moves the values into the write).
pub(crate) fn record_entries<K: AsRef<str>>(
    values: impl IntoIterator<Item = (K, Vec<u8>)>,
    expiry_unix: i64,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut entries: Vec<(String, Vec<u8>)> =
        values.into_iter().map(|(k, v)| (format!("{DATA_PREFIX}{}", k.as_ref()), v)).collect();
    entries.push((EXPIRY.to_owned(), expiry_bytes(expiry_unix)?));
    Ok(entries)
}

/// The expiry attribute's value.
fn expiry_bytes(expiry_unix: i64) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(&expiry_unix)
        .map_err(|e| Error::Codec { name: EXPIRY.to_owned(), message: e.to_string() })
}

/// Sets a record's expiry date (Unix seconds).
#[cfg_attr(not(feature = "actix"), allow(dead_code))]
pub(crate) fn set_expiry(s: &mut Session, expiry_unix: i64) -> Result<(), Error> {
    s.set(EXPIRY, &expiry_unix)
}

/// A record's values: (name, serialized value).
pub(crate) fn record_values(s: &Session) -> impl Iterator<Item = (&str, &[u8])> {
    s.keys().into_iter().filter_map(|k| Some((k.strip_prefix(DATA_PREFIX)?, s.get_bytes(k)?)))
}

/// A record's expiry date (Unix seconds), `None` when it has none.
pub(crate) fn record_expiry(s: &Session) -> Result<Option<i64>, Error> {
    s.get(EXPIRY)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Loads a record that has not expired; an expired one is invalidated and reads as `None`.
pub(crate) async fn load(sessions: &SessionManager, id: &str) -> Result<Option<Session>, Error> {
    let Some(s) = sessions.get(id).await? else { return Ok(None) };
    if record_expiry(&s)?.is_some_and(|at| at <= now_unix()) {
        let _ = sessions.invalidate(id).await;
        return Ok(None);
    }
    Ok(Some(s))
}

#[cfg_attr(not(feature = "tower"), allow(dead_code))]
/// Creates a record under `id`, or under the next id `fresh` draws while the id is taken.
/// The id it was created under.
pub(crate) async fn create(
    sessions: &SessionManager,
    id: String,
    mut fresh: impl FnMut() -> String,
    attrs: &Attributes,
) -> Result<String, Error> {
    let mut id = id;
    for _ in 0..CREATE_ATTEMPTS {
        match sessions.create_with_id(&id, attrs.clone()).await {
            Ok(_) => return Ok(id),
            Err(Error::AlreadyExists) => id = fresh(),
            Err(e) => return Err(e),
        }
    }
    Err(Error::AlreadyExists)
}

/// Makes `s` hold `attrs`: sets the values that differ and removes those `attrs` lacks, so
/// that the write carries only what changed (a record's full replace, as a delta).
pub(crate) fn replace(s: &mut Session, attrs: &Attributes) -> Result<(), Error> {
    replace_by(s, attrs.iter().collect())
}

/// [`replace`] by a record's entries ([`record_entries`]), whose values move into the write
/// without a copy.
pub(crate) fn replace_with(s: &mut Session, entries: Vec<(String, Vec<u8>)>) -> Result<(), Error> {
    replace_by(s, entries)
}

/// Makes `s` hold `entries` (names unique): sets the values that differ, removes the others.
fn replace_by<K, V>(s: &mut Session, entries: Vec<(K, V)>) -> Result<(), Error>
where
    K: AsRef<str> + Into<String>,
    V: AsRef<[u8]> + Into<Vec<u8>>,
{
    let gone: Vec<String> = s
        .keys()
        .into_iter()
        .filter(|k| !entries.iter().any(|(name, _)| name.as_ref() == *k))
        .map(str::to_owned)
        .collect();
    for k in gone {
        s.remove(&k)?;
    }
    for (k, v) in entries {
        if s.get_bytes(k.as_ref()) != Some(v.as_ref()) {
            s.set_bytes(k, v)?;
        }
    }
    Ok(())
}

/// Replaces the record `id` by `attrs`, creating it when no node has it.
pub(crate) async fn put(sessions: &SessionManager, id: &str, attrs: &Attributes) -> Result<(), Error> {
    let replace = |s: &mut Session| replace(s, attrs);
    match sessions.update(id, replace).await {
        Err(Error::NotFound) => match sessions.create_with_id(id, attrs.clone()).await {
            // Created concurrently by another request: write over it.
            Err(Error::AlreadyExists) => sessions.update(id, replace).await.map(|_| ()),
            r => r.map(|_| ()),
        },
        r => r.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WriteContents;
    use replication_core::Change;

    /// A full replace as a delta: only the values that differ are written, the missing ones
    /// removed, and the record ends as `record_attributes` lays it out.
    #[test]
    fn replace_writes_only_what_changed() -> Result<(), Error> {
        let base = record_attributes([("a", b"1"), ("b", b"2"), ("c", b"3")], 100)?;
        let mut s = Session::loaded("s".into(), 7, base);
        let values = [("a", b"1".to_vec()), ("b", b"9".to_vec())];
        replace_with(&mut s, record_entries(values.clone(), 100)?)?;
        assert_eq!(
            s.to_changes(WriteContents::Changed),
            vec![Change::Set("d:b".into(), b"9".to_vec().into()), Change::Remove("d:c".into())]
        );
        assert_eq!(s.attributes(), record_attributes(values, 100)?);
        Ok(())
    }

    /// A record's values and expiry date read back as they were written.
    #[test]
    fn records_read_back() -> Result<(), Error> {
        let attrs = record_attributes([("x", &b"[1]"[..]), ("y", &b""[..])], -5)?;
        let s = Session::loaded("s".into(), 1, attrs);
        assert_eq!(record_expiry(&s)?, Some(-5));
        assert_eq!(record_values(&s).collect::<Vec<_>>(), vec![("x", &b"[1]"[..]), ("y", &b""[..])]);
        Ok(())
    }
}
