//! Serves the admin API's router on its listener with bounds a slow or hostile client cannot
//! lift:
//!
//! - at most [`Limits::max_connections`] connections at once: one more is answered 503 and
//!   closed (at most [`LINGERING`] of those wait up to [`LINGER`] for the client to take the
//!   answer, the others are closed at once), so a flood holds no more descriptors than these
//!   (the rest stay for the transport);
//! - a request's header, and on a kept-alive connection the next request's header, must arrive
//!   within [`Limits::timeout`] (hyper's header read timeout);
//! - a request's body must arrive whole within the timeout (the [`guard`](super::guard));
//! - a stalled answer (the client does not read) is cut once no byte could be written for the
//!   timeout.
//!
//! Refusals and cut connections are logged at once, then at most every [`LOG_EVERY`] with the
//! count since the last line (a count held back is logged when its period ends).

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;

/// How often a repeated admin-server event is logged at most.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish once the node is stopping.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long accepting pauses after an error (out of descriptors, say).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Refused connections that may wait at once for their client to take the 503: closing a
/// socket whose client's request is still unread sends a reset, which many clients report
/// instead of the answer.
pub(crate) const LINGERING: usize = 32;
/// How long a refused connection waits for its client to close.
const LINGER: Duration = Duration::from_millis(500);

/// The bounds of the admin server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// How long a client may take to send a request's header (also waiting for the next
    /// request on a kept-alive connection), to send its body, or to take a stalled answer.
    pub(crate) timeout: Duration,
}

/// The answer to a connection over the cap.
const AT_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 88\r\nretry-after: 1\r\nconnection: close\r\n\r\n\
{\"error\":\"the admin API serves its maximum number of connections\",\"kind\":\"unavailable\"}\n";

/// An event counted between two log lines: [`RateLimited::hit`] and [`RateLimited::flush`]
/// say when to log and how many happened since the last line.
#[derive(Debug, Default)]
pub(crate) struct RateLimited {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimited {
    /// Counts one event; `Some(count)` when a line is due (the first event, then at most
    /// every [`LOG_EVERY`]).
    pub(crate) fn hit(&self) -> Option<u64> {
        self.take(1)
    }

    /// `Some(count)` when events were held back and a line is due.
    pub(crate) fn flush(&self) -> Option<u64> {
        self.take(0)
    }

    fn take(&self, new: u64) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, count) = &mut *state;
        *count += new;
        let due = *count > 0 && last.is_none_or(|t| t.elapsed() >= LOG_EVERY);
        if !due {
            return None;
        }
        *last = Some(Instant::now());
        Some(std::mem::take(count))
    }
}

/// What the server logs.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// A connection over the cap was refused.
    OverCap,
    /// Accepting a connection failed (out of descriptors, say).
    AcceptFailed,
    /// A connection was closed for a client too slow to send or take.
    SlowClient,
}

/// The server's log lines, each rate-limited.
#[derive(Debug)]
struct Logs {
    max_connections: usize,
    over_cap: RateLimited,
    accept_failed: RateLimited,
    slow_client: RateLimited,
}

impl Logs {
    fn counter(&self, e: Event) -> &RateLimited {
        match e {
            Event::OverCap => &self.over_cap,
            Event::AcceptFailed => &self.accept_failed,
            Event::SlowClient => &self.slow_client,
        }
    }

    /// Counts `e`, logging when a line is due.
    fn hit(&self, e: Event, detail: Option<&dyn Display>) {
        if let Some(n) = self.counter(e).hit() {
            self.line(e, n, detail);
        }
    }

    /// Logs the counts held back whose period ended.
    fn flush(&self) {
        for e in [Event::OverCap, Event::AcceptFailed, Event::SlowClient] {
            if let Some(n) = self.counter(e).flush() {
                self.line(e, n, None);
            }
        }
    }

    fn line(&self, e: Event, n: u64, detail: Option<&dyn Display>) {
        let detail = detail.map(ToString::to_string).unwrap_or_default();
        match e {
            Event::OverCap => tracing::warn!(
                max = self.max_connections,
                refused = n,
                "admin API at its connection cap: connections refused (503)"
            ),
            Event::AcceptFailed => {
                tracing::warn!(failures = n, error = %detail, "admin API: accepting a connection failed");
            }
            Event::SlowClient => {
                tracing::info!(closed = n, "admin API: connections of too slow clients closed")
            }
        }
    }
}

/// Serves `app` on `listener` within `limits` until `stop` completes, then lets in-flight
/// requests finish (at most [`SHUTDOWN_GRACE`]).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let lingering = Arc::new(Semaphore::new(LINGERING));
    let logs = Arc::new(Logs {
        max_connections: limits.max_connections,
        over_cap: RateLimited::default(),
        accept_failed: RateLimited::default(),
        slow_client: RateLimited::default(),
    });
    let mut flush = tokio::time::interval(LOG_EVERY);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.timeout);
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            () = &mut stop => break,
            _ = flush.tick() => {
                logs.flush();
                continue;
            }
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    logs.hit(Event::AcceptFailed, Some(&e));
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(tcp, &lingering);
            logs.hit(Event::OverCap, None);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let mut io = TimeoutStream::new(tcp);
        io.set_write_timeout(Some(limits.timeout));
        let conn = http.serve_connection(TokioIo::new(Box::pin(io)), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        let logs = logs.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended");
                let slow = e.is_timeout()
                    || std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<std::io::Error>())
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
                if slow {
                    logs.hit(Event::SlowClient, None);
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// Answers 503 on a fresh connection without waiting (its send buffer is empty) and closes it:
/// at once when [`LINGERING`] refused connections wait already, else once the client closed
/// (what it sent is read and dropped) or after [`LINGER`].
fn refuse(mut tcp: TcpStream, lingering: &Arc<Semaphore>) {
    let _ = tcp.try_write(AT_CAPACITY);
    let Ok(permit) = lingering.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        let drain = async {
            let _ = tcp.shutdown().await;
            let mut sink = [0u8; 4096];
            while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_well_formed() {
        let text = std::str::from_utf8(AT_CAPACITY).expect("UTF-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.parse().ok())
            .expect("content-length");
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(json["kind"], "unavailable");
    }

    #[test]
    fn repeated_events_are_counted_between_lines() {
        let r = RateLimited::default();
        assert_eq!(r.hit(), Some(1), "the first is logged");
        assert_eq!(r.hit(), None);
        assert_eq!(r.hit(), None);
        *r.state.lock().expect("lock") = (Instant::now().checked_sub(LOG_EVERY), 2);
        assert_eq!(r.hit(), Some(3), "the next line counts what it held back");
        assert_eq!(r.flush(), None, "nothing held back");
        assert_eq!(r.hit(), None);
        assert_eq!(r.flush(), None, "its period has not ended");
        *r.state.lock().expect("lock") = (Instant::now().checked_sub(LOG_EVERY), 1);
        assert_eq!(r.flush(), Some(1), "held back, logged when the period ends");
        assert_eq!(r.flush(), None);
    }
}
