//! What the tokio-based carriers (`transport-tcp`, `transport-quic`) share, written once:
//! the Hello exchange over any `AsyncRead + AsyncWrite` stream with its checks, refusals and
//! deadlines ([`handshake`]), the per-peer task that dials, wakes up the peers that dial it,
//! waits for accepted links, reconnects with back-off and reports link events ([`peer`]),
//! the accept loop ([`accept`]) with fair handshake slots ([`admission`]: slots reserved for
//! each configured peer's address, a per-source cap and a short first-bytes deadline for
//! everyone else, address validation where the source may be spoofed), rate-limited
//! warnings for what strangers can cause at will ([`throttle`]), the frame reader of a link,
//! and the application side of a transport (its event queue with the received-message
//! credits, the stop signal, the link tasks and their shutdown). Each transport keeps only
//! what is specific to its sockets: TCP its listener, TLS streams and the "gone" probe; QUIC
//! its endpoint, its Retry and streams.
//!
//! This lives in the core, behind the cargo feature `carrier` (tokio's channels, timers and
//! I/O traits, and `tracing`), rather than in `transport-tcp` for `transport-quic` to import:
//! that keeps the two transports independent of each other, each depending on the core alone,
//! with no new crate. Nothing here opens a socket: a transport hands in its connected streams.
//! The default build of the core stays free of I/O, runtime and clock.
//!
//! With the feature `conformance` (for the transports' tests and examples), [`conformance`]
//! holds the transport conformance suite, [`hostile`] the helpers of the hostile-traffic
//! tests and [`bench`](mod@bench) the transport microbenchmark.

pub mod accept;
pub mod admission;
#[cfg(feature = "conformance")]
pub mod bench;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod handshake;
#[cfg(feature = "conformance")]
pub mod hostile;
pub mod members;
pub mod peer;
pub mod throttle;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::config::{NodeId, SharedDomain};
use crate::error::Error;
use crate::transport::{DELIVER_BATCH, Security, TransportEvent, TransportSettings, WireMessage, deliver};
use crate::wire::{ByteSource, Frame, FrameDecoder, FrameEncoder, Hello, WireError};

pub use handshake::DialError;
pub use peer::{Carrier, LinkEnd};
pub use throttle::Throttle;

/// Bytes a writer gathers into one write before writing (it never waits to gather more).
pub const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// What every task of a transport reads: the domain, this node, its Hello, the limits from
/// the [`TransportSettings`], the stop signal and the credits of received messages.
#[derive(Debug)]
pub struct Common {
    /// The domain: the file the transport started with, replaced when a reload adds nodes
    /// ([`members::Members::add_peers`]).
    pub cfg: SharedDomain,
    /// This node.
    pub local: NodeId,
    /// The Hello this node sends, with this transport's incarnation.
    pub hello: Hello,
    /// Whether peers are authenticated by certificate ([`Security::Tls`]).
    pub secure: bool,
    /// [`TransportSettings::max_frame`].
    pub max_frame: usize,
    /// [`TransportSettings::handshake_timeout`].
    pub handshake_timeout: Duration,
    /// [`TransportSettings::reconnect_min`].
    pub reconnect_min: Duration,
    /// [`TransportSettings::reconnect_max`].
    pub reconnect_max: Duration,
    /// [`TransportSettings::shutdown_grace`].
    pub grace: Duration,
    /// Turns `true` when the transport shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Received messages that may wait for `recv` ([`TransportSettings::event_capacity`]):
    /// a reader takes an event's credits before queueing it, `recv` gives them back.
    pub credit: Semaphore,
    /// [`TransportSettings::event_capacity`].
    pub event_capacity: usize,
    /// Rate limit of the warnings a stranger can cause at will (refused connections, dial
    /// failures): [`refused`], [`warn_throttled`].
    pub warnings: Throttle,
}

impl Common {
    /// Checks `settings` ([`TransportSettings::check`]) and builds this node's Hello; also the
    /// sender of the stop signal that [`Common::shutdown`] follows.
    pub fn new(settings: &TransportSettings) -> Result<(Common, watch::Sender<bool>), Error> {
        settings.check()?;
        let cfg = SharedDomain::new(settings.domain.clone());
        let local = settings.local.clone();
        let mut hello = Hello::for_node(&settings.domain, &local)
            .ok_or_else(|| Error::Settings(format!("`{local}` is not in the domain")))?;
        hello.incarnation = new_incarnation();
        let (stop, shutdown) = watch::channel(false);
        let common = Common {
            cfg,
            local,
            hello,
            secure: matches!(settings.security, Security::Tls(_)),
            max_frame: settings.max_frame,
            handshake_timeout: settings.handshake_timeout,
            reconnect_min: settings.reconnect_min,
            reconnect_max: settings.reconnect_max,
            grace: settings.shutdown_grace,
            shutdown,
            credit: Semaphore::new(settings.event_capacity.min(Semaphore::MAX_PERMITS)),
            event_capacity: settings.event_capacity,
            warnings: Throttle::new(throttle::SUMMARY_INTERVAL),
        };
        Ok((common, stop))
    }
}

/// A number for this transport's run, different from every other run's (a random 64-bit
/// value: `RandomState` keys come from the operating system's random source), sent in its
/// Hellos ([`Hello::incarnation`]).
fn new_incarnation() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u64)
}

/// The application side of a transport: the queue of events [`AppSide::recv`] takes from, the
/// stop signal (sent on drop too), and the tasks that run the links.
#[derive(Debug)]
pub struct AppSide<M> {
    /// Locked only for one poll, never across an await.
    events: std::sync::Mutex<mpsc::Receiver<TransportEvent<M>>>,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
    tasks: std::sync::Mutex<Option<JoinSet<()>>>,
}

impl<M: Send + 'static> AppSide<M> {
    /// Events from `events`, stopping with `stop`, running `tasks`.
    pub fn new(
        events: mpsc::Receiver<TransportEvent<M>>,
        stop: watch::Sender<bool>,
        tasks: JoinSet<()>,
    ) -> Self {
        AppSide {
            events: std::sync::Mutex::new(events),
            stop,
            closed: AtomicBool::new(false),
            tasks: std::sync::Mutex::new(Some(tasks)),
        }
    }

    /// Runs `task` with the link tasks; [`Error::Closed`] once they were stopped.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
        let mut tasks = self.tasks.lock().map_err(|_| Error::Closed)?;
        let tasks = tasks.as_mut().ok_or(Error::Closed)?;
        tasks.spawn(task);
        Ok(())
    }

    /// [`Error::Closed`] once [`AppSide::close`] was called.
    pub fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) { Err(Error::Closed) } else { Ok(()) }
    }

    /// The next event; gives its credits back to `common.credit`.
    pub async fn recv(&self, common: &Common) -> Option<TransportEvent<M>> {
        std::future::poll_fn(|cx| self.poll_recv(cx, common)).await
    }

    /// [`AppSide::recv`] as a poll ([`crate::transport::Transport::poll_recv`]).
    pub fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        common: &Common,
    ) -> std::task::Poll<Option<TransportEvent<M>>> {
        let mut events = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ev = std::task::ready!(events.poll_recv(cx));
        give_back(common, ev.as_ref());
        std::task::Poll::Ready(ev)
    }

    /// Refuses further messages ([`AppSide::check_open`]).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Sends the stop signal, then waits for the link tasks (they flush within the grace
    /// period), aborting those still running after `grace` and half a second. `false` when
    /// the tasks were already taken by an earlier call.
    pub async fn stop_and_join(&self, grace: Duration, local: &NodeId) -> bool {
        let _ = self.stop.send(true);
        let tasks = self.tasks.lock().ok().and_then(|mut t| t.take());
        let Some(mut tasks) = tasks else { return false };
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace + Duration::from_millis(500), all).await.is_err() {
            warn!(node = %local, "shutdown grace elapsed; aborting the remaining links");
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        true
    }
}

/// Gives the credits of a received event back to `common.credit`.
fn give_back<M>(common: &Common, ev: Option<&TransportEvent<M>>) {
    if let Some(ev) = ev {
        common.credit.add_permits(ev.credits(common.event_capacity) as usize);
    }
}

impl<M> Drop for AppSide<M> {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Queues `msg` for `to` on `queue` without waiting, or hands it back with the reason, as
/// [`crate::transport::Transport::offer`] does.
pub fn offer<M>(queue: &mpsc::Sender<M>, to: &NodeId, msg: M) -> Result<(), (Error, M)> {
    queue.try_send(msg).map_err(|e| match e {
        mpsc::error::TrySendError::Full(m) => (Error::QueueFull { peer: to.to_string() }, m),
        mpsc::error::TrySendError::Closed(m) => (Error::Closed, m),
    })
}

/// Returns once `rx` turns `true` (or its sender is gone).
pub async fn wait_stop(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Logs a refused connection (rate-limited: [`warn_throttled`]) and reports it as
/// [`TransportEvent::Refused`], without waiting.
pub fn refused<M>(common: &Common, events: &mpsc::Sender<TransportEvent<M>>, peer: String, reason: String) {
    if warn_throttled(common, throttle::rule_of(&reason), &peer) {
        warn!(%peer, %reason, "m2m connection refused");
    }
    // Never block on a refusal: a flood of bad connections must not stall the transport.
    let _ = events.try_send(TransportEvent::Refused { peer, reason });
}

/// Counts a warning of `rule` about `source` (an address or a node) in
/// [`Common::warnings`]: whether to write it (the first of its rule in the interval); writes
/// the summary of the interval it ended, if any.
pub fn warn_throttled(common: &Common, rule: &str, source: &str) -> bool {
    let (verdict, summary) =
        common.warnings.note(std::time::Instant::now(), rule, &throttle::source_of(source));
    warn_summary(summary);
    verdict == throttle::Verdict::Log
}

/// Writes a [`Throttle`] summary, if any.
pub fn warn_summary(summary: Option<String>) {
    if let Some(s) = summary {
        warn!(summary = %s, "m2m warnings repeated (rate-limited)");
    }
}

/// Aborts the task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Frames `m` into `enc`; a message that cannot be framed (too large) is logged and dropped.
pub fn encode<M: WireMessage>(enc: &mut FrameEncoder, peer: &NodeId, m: &M) {
    if let Err(e) = enc.push(m) {
        warn!(%peer, error = %e, "message dropped: cannot be framed");
    }
}

/// Appends to `msgs` the messages of the next frame `dec` holds complete, which must be a
/// Batch frame, then those of the Batch frames buffered after it, until `msgs` holds `max`
/// ([`FrameDecoder::take_buffered_batches`]); `Err(reason)` when that next frame breaks the
/// framing rules (a frame after it that does is left for the next call to report, so the
/// messages before it are handed over first). Nothing when no frame is complete (read more).
pub fn take_batches<M: WireMessage>(
    dec: &mut FrameDecoder,
    msgs: &mut Vec<M>,
    max: usize,
) -> Result<(), String> {
    if msgs.len() >= max {
        return Ok(());
    }
    match dec.next_frame::<M>() {
        Ok(Some(Frame::Batch(batch))) if msgs.is_empty() => *msgs = batch,
        Ok(Some(Frame::Batch(batch))) => msgs.extend(batch),
        Ok(Some(other)) => {
            return Err(WireError::Unexpected { expected: "batch", got: other.kind() }.reason());
        }
        Err(e) => return Err(e.reason()),
        Ok(None) => return Ok(()),
    }
    // One event for every batch this read brought: one channel operation.
    dec.take_buffered_batches(msgs, max);
    Ok(())
}

/// Writes `bytes` and flushes.
pub async fn write_frames<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// A stream as the frame decoder's byte source.
#[derive(Debug)]
pub struct Source<'a, R>(pub &'a mut R);

impl<R: AsyncRead + Unpin + Send> ByteSource for Source<'_, R> {
    type Error = std::io::Error;
    async fn read_into(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).await
    }
}

/// Reads Batch frames from `rd` to its end and hands their messages to the application
/// ([`deliver`], one event for the batches one read brought). `Err(reason)` when the peer
/// breaks the framing rules; a read error ends the stream (logged at debug level with
/// `failed`).
pub async fn read_frames<M: WireMessage, R: AsyncRead + Unpin + Send>(
    rd: &mut R,
    peer: &NodeId,
    events: &mpsc::Sender<TransportEvent<M>>,
    common: &Common,
    failed: &str,
) -> Result<(), String> {
    let mut dec = FrameDecoder::new(common.max_frame);
    loop {
        match dec.read_frame::<M, _>(&mut Source(&mut *rd)).await {
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(Frame::Batch(mut msgs)))) => {
                // One event for every batch this read brought: one channel operation.
                dec.take_buffered_batches(&mut msgs, DELIVER_BATCH);
                if msgs.is_empty() {
                    continue;
                }
                if !deliver(events, &common.credit, common.event_capacity, peer, msgs).await {
                    return Ok(());
                }
            }
            Ok(Ok(Some(other))) => {
                return Err(WireError::Unexpected { expected: "batch", got: other.kind() }.reason());
            }
            Ok(Err(e)) => return Err(e.reason()),
            Err(e) => {
                debug!(%peer, error = %e, "{failed}");
                return Ok(());
            }
        }
    }
}
