//! A `tower_sessions::SessionStore` backed by replicated sessions (cargo feature `tower`).
//!
//! Each tower session is an m2m session whose id is the tower id's string form; each value of
//! the record is one attribute (`d:<key>`, JSON as tower-sessions stores it) and the expiry
//! date is the attribute `m2m:expiry`. A load on a node that does not hold the session
//! fetches it from the domain, so instances behind a plain (non-sticky) load balancer share
//! sessions; with the route cookie ([`crate::route_cookie`]) a balancer keeps each session on
//! its owner and fetches are the exception. Saves are full replaces and last-writer-wins, as
//! tower-sessions expects.
//!
//! Expiry: the record's expiry date is checked on load; replicas expire after the manager's
//! `max_inactive`, so configure it at least as long as the tower session expiry.
//!
//! ```no_run
//! # async fn demo(sessions: session_api::SessionManager) {
//! use session_api::store::ReplicatedStore;
//! let layer = tower_sessions::SessionManagerLayer::new(ReplicatedStore::new(sessions));
//! # let _ = layer; }
//! ```

use std::collections::HashMap;

use async_trait::async_trait;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, SessionStore};

use crate::error::Error;
use crate::manager::SessionManager;
use crate::session::Session;

const DATA_PREFIX: &str = "d:";
const EXPIRY: &str = "m2m:expiry";
/// Fresh ids drawn before `create` gives up (collisions are astronomically rare).
const CREATE_ATTEMPTS: usize = 8;

/// A tower-sessions store over a [`SessionManager`].
#[derive(Clone, Debug)]
pub struct ReplicatedStore {
    sessions: SessionManager,
}

impl ReplicatedStore {
    /// A store over this node's sessions.
    pub fn new(sessions: SessionManager) -> Self {
        ReplicatedStore { sessions }
    }

    /// The session manager underneath.
    pub fn manager(&self) -> &SessionManager {
        &self.sessions
    }
}

fn backend(e: Error) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn write_record(s: &mut Session, record: &Record) -> session_store::Result<()> {
    s.clear().map_err(backend)?;
    for (k, v) in &record.data {
        let bytes = serde_json::to_vec(v).map_err(|e| session_store::Error::Encode(e.to_string()))?;
        s.set_bytes(format!("{DATA_PREFIX}{k}"), bytes).map_err(backend)?;
    }
    s.set(EXPIRY, &record.expiry_date.unix_timestamp()).map_err(backend)
}

fn attributes(record: &Record) -> session_store::Result<crate::Attributes> {
    let mut s = Session::new(String::new());
    write_record(&mut s, record)?;
    Ok(s.attributes())
}

fn read_record(id: Id, s: &Session) -> session_store::Result<Record> {
    let mut data = HashMap::new();
    for k in s.keys() {
        if let Some(name) = k.strip_prefix(DATA_PREFIX) {
            let bytes = s.get_bytes(k).unwrap_or_default();
            let v = serde_json::from_slice(bytes).map_err(|e| session_store::Error::Decode(e.to_string()))?;
            data.insert(name.to_owned(), v);
        }
    }
    let ts: i64 = s
        .get(EXPIRY)
        .map_err(|e| session_store::Error::Decode(e.to_string()))?
        .ok_or_else(|| session_store::Error::Decode("no expiry date".into()))?;
    let expiry_date = time::OffsetDateTime::from_unix_timestamp(ts)
        .map_err(|e| session_store::Error::Decode(e.to_string()))?;
    Ok(Record { id, data, expiry_date })
}

#[async_trait]
impl SessionStore for ReplicatedStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let attrs = attributes(record)?;
        for _ in 0..CREATE_ATTEMPTS {
            match self.sessions.create_with_id(&record.id.to_string(), attrs.clone()).await {
                Ok(_) => return Ok(()),
                Err(Error::AlreadyExists) => record.id = Id::default(),
                Err(e) => return Err(backend(e)),
            }
        }
        Err(session_store::Error::Backend("could not draw an unused session id".into()))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let sid = record.id.to_string();
        let mut encode_error = None;
        let r = self
            .sessions
            .update(&sid, |s| {
                if let Err(e) = write_record(s, record) {
                    encode_error = Some(e.to_string());
                }
                Ok(())
            })
            .await;
        if let Some(e) = encode_error {
            return Err(session_store::Error::Encode(e));
        }
        match r {
            Ok(_) => Ok(()),
            Err(Error::NotFound) => {
                let attrs = attributes(record)?;
                match self.sessions.create_with_id(&sid, attrs).await {
                    Ok(_) => Ok(()),
                    // Created concurrently by another request: write over it.
                    Err(Error::AlreadyExists) => self
                        .sessions
                        .update(&sid, |s| {
                            write_record(s, record)
                                .map_err(|e| Error::Codec { name: "record".into(), message: e.to_string() })
                        })
                        .await
                        .map(|_| ())
                        .map_err(backend),
                    Err(e) => Err(backend(e)),
                }
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let Some(s) = self.sessions.get(&session_id.to_string()).await.map_err(backend)? else {
            return Ok(None);
        };
        let record = read_record(*session_id, &s)?;
        if record.expiry_date <= time::OffsetDateTime::now_utc() {
            let _ = self.sessions.invalidate(&session_id.to_string()).await;
            return Ok(None);
        }
        Ok(Some(record))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.sessions.invalidate(&session_id.to_string()).await.map(|_| ()).map_err(backend)
    }
}
