//! A link's reads and writes on the link's own task: the stream (TLS over TCP) is never split
//! between a reader task and a writer task.
//!
//! A split stream shares its TLS state behind a mutex, which the reader and the writer of a
//! busy link take in turn from the runtime's two workers: the loser sleeps on a futex and the
//! winner wakes it. Here one task polls both directions of the unsplit stream, so a link costs
//! no lock and one task wake-up per readiness event, not two. [`LinkIo::poll_step`] does what
//! the stream and the queues allow without waiting: it finishes the write under way, gathers
//! the queued messages (control first) into the next write of up to [`WRITE_BATCH_BYTES`],
//! reads, and decodes the frames one read brought into one batch of messages, which the link
//! task hands to the application ([`try_deliver`], else [`deliver`] while the writes go on).

use std::pin::Pin;
use std::task::{Context, Poll};

use replication_core::NodeId;
use replication_core::carrier::{Common, WRITE_BATCH_BYTES, encode, take_batches};
use replication_core::transport::{DELIVER_BATCH, TransportEvent, WireMessage};
use replication_core::wire::{FrameDecoder, FrameEncoder};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tracing::debug;

use super::{Queues, Stream};

/// What a step of a link's I/O ended with.
pub(crate) enum Step<M> {
    /// The messages of the frames one read brought (never empty), in the order sent.
    Received(Vec<M>),
    /// The stream ended, or a read or a write failed: the link is down.
    Failed,
    /// The peer broke the framing rules: why.
    Refused(String),
    /// The queues' sending side is gone.
    Closed,
}

/// The stream of a link, with its decoder and the write under way.
pub(crate) struct LinkIo<'a, M> {
    stream: Stream,
    dec: FrameDecoder,
    /// The messages gathered for the next write, then the bytes of the write under way
    /// ([`FrameEncoder::finish`]); kept from one link to the next (its allocation, and what
    /// was gathered and not written yet).
    enc: &'a mut FrameEncoder,
    queues: &'a mut Queues<M>,
    peer: &'a NodeId,
    /// While a write is under way: the bytes of `enc` already written.
    written: Option<usize>,
    /// The messages gathered in `enc` wait for one more turn of the scheduler before they are
    /// written ([`LinkIo::poll_writes`]).
    held: bool,
}

impl<'a, M: WireMessage> LinkIo<'a, M> {
    pub(crate) fn new(
        stream: Stream,
        max_frame: usize,
        enc: &'a mut FrameEncoder,
        queues: &'a mut Queues<M>,
        peer: &'a NodeId,
    ) -> Self {
        LinkIo { stream, dec: FrameDecoder::new(max_frame), enc, queues, peer, written: None, held: false }
    }

    /// Writes what the queues hold and, when `read`, reads, until either needs to wait (then
    /// `Pending`, woken by the stream or the queues) or something happened that the link task
    /// acts on.
    pub(crate) fn poll_step(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<Step<M>> {
        if let Some(step) = self.poll_writes(cx) {
            return Poll::Ready(step);
        }
        if read && let Poll::Ready(step) = self.poll_read(cx) {
            return Poll::Ready(step);
        }
        Poll::Pending
    }

    /// Writes until the stream or the queues make it wait (`None`, wakers registered).
    fn poll_writes(&mut self, cx: &mut Context<'_>) -> Option<Step<M>> {
        loop {
            if let Some(off) = self.written {
                let bytes = self.enc.finish();
                if off < bytes.len() {
                    match Pin::new(&mut self.stream).poll_write(cx, &bytes[off..]) {
                        Poll::Ready(Ok(n)) if n > 0 => {
                            self.written = Some(off + n);
                            continue;
                        }
                        Poll::Ready(Ok(_)) => return Some(self.write_failed("wrote nothing")),
                        Poll::Ready(Err(e)) => return Some(self.write_failed(e)),
                        Poll::Pending => return None,
                    }
                }
                match Pin::new(&mut self.stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.written = None;
                        self.enc.clear();
                    }
                    Poll::Ready(Err(e)) => return Some(self.write_failed(e)),
                    Poll::Pending => return None,
                }
            }
            let mut closed = false;
            while self.enc.len() < WRITE_BATCH_BYTES {
                match poll_queues(self.queues, cx) {
                    Poll::Ready(Some(m)) => encode(self.enc, self.peer, &m),
                    Poll::Ready(None) => {
                        closed = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if self.enc.is_empty() {
                return closed.then_some(Step::Closed);
            }
            if !closed && !self.held && self.enc.len() < WRITE_BATCH_BYTES {
                // The queues ran dry: let the tasks that are filling them (the driver's round,
                // on this worker or the other) run first, then write what they added too.
                self.held = true;
                cx.waker().wake_by_ref();
                return None;
            }
            self.held = false;
            self.written = Some(0);
        }
    }

    fn write_failed(&self, e: impl std::fmt::Display) -> Step<M> {
        debug!(peer = %self.peer, error = %e, "write failed");
        Step::Failed
    }

    /// Reads until a batch of messages is decoded, the stream ends or fails, or it has nothing
    /// to read (`Pending`).
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Step<M>> {
        loop {
            let mut msgs = Vec::new();
            if let Err(reason) = take_batches(&mut self.dec, &mut msgs, DELIVER_BATCH) {
                return Poll::Ready(Step::Refused(reason));
            }
            if !msgs.is_empty() {
                return Poll::Ready(Step::Received(msgs));
            }
            let mut buf = ReadBuf::new(self.dec.read_buf());
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len();
                    if n == 0 {
                        return Poll::Ready(match self.dec.finish() {
                            Ok(()) => Step::Failed,
                            Err(e) => Step::Refused(e.reason()),
                        });
                    }
                    self.dec.filled(n);
                }
                Poll::Ready(Err(e)) => {
                    debug!(peer = %self.peer, error = %e, "read failed");
                    return Poll::Ready(Step::Failed);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// At shutdown: finishes the write under way, writes everything still queued, and closes
    /// this side of the stream.
    pub(crate) async fn finish_writes(&mut self) -> std::io::Result<()> {
        if let Some(off) = self.written.take() {
            let bytes = self.enc.finish();
            self.stream.write_all(&bytes[off..]).await?;
            self.enc.clear();
        }
        // What `enc` holds now was gathered and not written yet (held): it goes first.
        while let Some(m) = self.queues.try_next() {
            encode(self.enc, self.peer, &m);
        }
        if !self.enc.is_empty() {
            self.stream.write_all(self.enc.finish()).await?;
            self.enc.clear();
        }
        self.stream.flush().await?;
        self.stream.shutdown().await
    }
}

impl<M> Drop for LinkIo<'_, M> {
    /// A write cut short dies with its stream (the rest of a frame means nothing on another);
    /// messages gathered and not written yet stay in the encoder, to go first on the next link.
    fn drop(&mut self) {
        if self.written.is_some() {
            self.enc.clear();
        }
    }
}

/// How [`try_deliver`] went.
pub(crate) enum Delivery<M> {
    /// Queued for the application.
    Done,
    /// The application side is gone.
    Gone,
    /// It would wait (no credits, or the event queue is full): the messages back.
    Wait(Vec<M>),
}

/// [`replication_core::transport::deliver`] without waiting: takes the event's credits and
/// queues it if both are free now.
pub(crate) fn try_deliver<M>(
    events: &mpsc::Sender<TransportEvent<M>>,
    common: &Common,
    from: &NodeId,
    msgs: Vec<M>,
) -> Delivery<M> {
    let ev = TransportEvent::Messages { from: from.clone(), msgs };
    let credits = ev.credits(common.event_capacity);
    match common.credit.try_acquire_many(credits) {
        Ok(c) => c.forget(),
        Err(tokio::sync::TryAcquireError::Closed) => return Delivery::Gone,
        Err(tokio::sync::TryAcquireError::NoPermits) => return Delivery::Wait(into_msgs(ev)),
    }
    match events.try_send(ev) {
        Ok(()) => Delivery::Done,
        Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        Err(mpsc::error::TrySendError::Full(ev)) => {
            common.credit.add_permits(credits as usize);
            Delivery::Wait(into_msgs(ev))
        }
    }
}

fn into_msgs<M>(ev: TransportEvent<M>) -> Vec<M> {
    match ev {
        TransportEvent::Messages { msgs, .. } => msgs,
        _ => Vec::new(),
    }
}

/// Polls the receiving side of a link's queues: control first.
fn poll_queues<M>(queues: &mut Queues<M>, cx: &mut Context<'_>) -> Poll<Option<M>> {
    match queues.control.poll_recv(cx) {
        Poll::Ready(Some(m)) => Poll::Ready(Some(m)),
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Pending => queues.data.poll_recv(cx),
    }
}
