//! A link's streams served by two tasks whatever their number: one writes every stream
//! ([`write_link`]), one reads every stream ([`read_link`]).
//!
//! A task per stream would wake up to `2 * (DATA_STREAMS + 1)` tasks for one burst of
//! messages spread over the keys, and hand the application one event per stream. Here the
//! writer gathers every queue's messages in one turn and writes each stream's batch without
//! waiting on any one stream (a stream short of flow-control credit keeps its batch and the
//! others go on), and the reader decodes what every stream holds into one batch of messages,
//! one event for the application. Each stream keeps its own order; messages of different
//! streams have none between them, as before.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use quinn::{Connection, RecvStream, SendStream, VarInt};
use replication_core::NodeId;
use replication_core::carrier::{WRITE_BATCH_BYTES, encode, refused, take_batches, wait_stop};
use replication_core::transport::{DELIVER_BATCH, TransportEvent, WireMessage, deliver};
use replication_core::wire::{FrameDecoder, FrameEncoder};
use tokio::sync::{OwnedMutexGuard, mpsc, watch};
use tracing::debug;

use super::{Shared, SharedQueue};

/// One stream's sending side: its queue, the stream (opened with the first write) and the
/// batch being gathered or written.
struct Lane<M> {
    queue: OwnedMutexGuard<mpsc::Receiver<M>>,
    stream: Option<SendStream>,
    enc: FrameEncoder,
    /// While a write is under way: the bytes of `enc` already written.
    written: Option<usize>,
}

/// The sending side of a link: one [`Lane`] per queue (control first).
struct Writer<'a, M> {
    conn: &'a Connection,
    peer: &'a NodeId,
    lanes: Vec<Lane<M>>,
    /// The batches gathered wait for one more turn of the scheduler before they are written.
    held: bool,
}

impl<M: WireMessage> Writer<'_, M> {
    /// Writes what the queues hold until the streams or the queues make it wait (`Pending`);
    /// `Ready(Ok)` once the queues' sending side is gone, `Ready(Err)` when a write failed.
    fn poll_writes(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        loop {
            for lane in &mut self.lanes {
                lane.poll_write(cx)?;
            }
            let mut gathered = false;
            for lane in self.lanes.iter_mut().filter(|l| l.written.is_none()) {
                while lane.enc.len() < WRITE_BATCH_BYTES {
                    match lane.queue.poll_recv(cx) {
                        Poll::Ready(Some(m)) => {
                            encode(&mut lane.enc, self.peer, &m);
                            gathered = true;
                        }
                        Poll::Ready(None) => return Poll::Ready(Ok(())),
                        Poll::Pending => break,
                    }
                }
            }
            if gathered && !self.held {
                // Let the tasks filling the queues (the driver's round) run first, then write
                // what they added too.
                self.held = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.held = false;
            let mut started = false;
            for lane in self.lanes.iter_mut().filter(|l| l.written.is_none() && !l.enc.is_empty()) {
                if lane.stream.is_none() {
                    lane.stream = Some(open_uni(self.conn, cx)?);
                }
                lane.written = Some(0);
                started = true;
            }
            if !started {
                return Poll::Pending;
            }
        }
    }

    /// At shutdown: finishes the writes under way, writes everything still queued, finishes
    /// every stream and waits until the peer has acknowledged all of it.
    async fn finish(&mut self) -> Result<(), String> {
        for lane in &mut self.lanes {
            let off = lane.written.take().unwrap_or(0);
            while let Ok(m) = lane.queue.try_recv() {
                encode(&mut lane.enc, self.peer, &m);
            }
            let bytes = lane.enc.finish();
            if off < bytes.len() {
                if lane.stream.is_none() {
                    lane.stream = Some(self.conn.open_uni().await.map_err(|e| e.to_string())?);
                }
                if let Some(s) = lane.stream.as_mut() {
                    s.write_all(&bytes[off..]).await.map_err(|e| e.to_string())?;
                }
            }
            lane.enc.clear();
            if let Some(s) = lane.stream.as_mut() {
                let _ = s.finish();
            }
        }
        for lane in &mut self.lanes {
            if let Some(s) = lane.stream.as_mut() {
                let _ = s.stopped().await;
            }
        }
        Ok(())
    }
}

impl<M> Lane<M> {
    /// Advances the write under way, if any, until it is done (`enc` cleared) or the stream
    /// makes it wait.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), String> {
        let (Some(off), Some(stream)) = (self.written.as_mut(), self.stream.as_mut()) else {
            return Ok(());
        };
        let bytes = self.enc.finish();
        while *off < bytes.len() {
            match Pin::new(&mut *stream).poll_write(cx, &bytes[*off..]) {
                Poll::Ready(Ok(n)) if n > 0 => *off += n,
                Poll::Ready(Ok(_)) => return Err("wrote nothing".into()),
                Poll::Ready(Err(e)) => return Err(e.to_string()),
                Poll::Pending => return Ok(()),
            }
        }
        self.written = None;
        self.enc.clear();
        Ok(())
    }
}

/// A new unidirectional stream. The peer grants `4 * DATA_STREAMS` of them at a time and a
/// link opens at most `DATA_STREAMS`, so the stream is there at once.
fn open_uni(conn: &Connection, cx: &mut Context<'_>) -> Result<SendStream, String> {
    match std::pin::pin!(conn.open_uni()).poll(cx) {
        Poll::Ready(r) => r.map_err(|e| e.to_string()),
        Poll::Pending => Err("no stream credit from the peer".into()),
    }
}

/// Writes every stream of the link (the control stream `control` for `queues[0]`, a stream of
/// its own opened with its first write for each other queue) until the link ends. At
/// shutdown, writes what is left, finishes the streams and waits until the peer has
/// acknowledged all of it.
pub(crate) async fn write_link<M: WireMessage>(
    conn: Connection,
    control: SendStream,
    queues: Vec<SharedQueue<M>>,
    peer: NodeId,
    max_frame: usize,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut lanes = Vec::with_capacity(queues.len());
    let mut control = Some(control);
    for q in queues {
        let queue = q.lock_owned().await;
        lanes.push(Lane { queue, stream: control.take(), enc: FrameEncoder::new(max_frame), written: None });
    }
    let mut w = Writer { conn: &conn, peer: &peer, lanes, held: false };
    let stopped = {
        let writes = std::future::poll_fn(|cx| w.poll_writes(cx));
        tokio::select! {
            biased;
            _ = wait_stop(&mut stop) => true,
            r = writes => { r?; false }
        }
    };
    if stopped {
        w.finish().await?;
    }
    Ok(())
}

/// One stream's receiving side.
struct Inbound {
    rx: RecvStream,
    dec: FrameDecoder,
}

/// What a turn over the received streams found.
enum Read<M> {
    /// Messages (never empty).
    Messages(Vec<M>),
    /// A stream broke the framing rules: why.
    Refused(String),
    /// No message, but a stream ended or failed (and was dropped).
    Ended,
}

/// Decodes what the streams hold into one batch of up to [`DELIVER_BATCH`] messages, starting
/// with stream `*next` (a different one each turn, so a busy stream does not starve the
/// others); a stream that ended or failed is dropped. `Pending` when no stream has a message
/// and none ended.
fn poll_streams<M: WireMessage>(
    cx: &mut Context<'_>,
    streams: &mut Vec<Inbound>,
    next: &mut usize,
    peer: &NodeId,
) -> Poll<Read<M>> {
    let mut msgs = Vec::new();
    let n = streams.len();
    let first = if n == 0 { 0 } else { *next % n };
    *next = next.wrapping_add(1);
    let mut ended = Vec::new();
    for i in (first..n).chain(0..first) {
        if msgs.len() >= DELIVER_BATCH {
            break;
        }
        let s = &mut streams[i];
        loop {
            let before = msgs.len();
            if let Err(reason) = take_batches(&mut s.dec, &mut msgs, DELIVER_BATCH) {
                return Poll::Ready(Read::Refused(reason));
            }
            if msgs.len() >= DELIVER_BATCH {
                break;
            }
            if msgs.len() > before {
                continue;
            }
            match s.rx.poll_read(cx, s.dec.read_buf()) {
                Poll::Ready(Ok(0)) => {
                    if let Err(e) = s.dec.finish() {
                        return Poll::Ready(Read::Refused(e.reason()));
                    }
                    ended.push(i);
                    break;
                }
                Poll::Ready(Ok(k)) => s.dec.filled(k),
                Poll::Ready(Err(e)) => {
                    debug!(%peer, error = %e, "stream read failed");
                    ended.push(i);
                    break;
                }
                Poll::Pending => break,
            }
        }
    }
    ended.sort_unstable();
    let any_ended = !ended.is_empty();
    for i in ended.into_iter().rev() {
        streams.swap_remove(i);
    }
    match (msgs.is_empty(), any_ended) {
        (false, _) => Poll::Ready(Read::Messages(msgs)),
        (true, true) => Poll::Ready(Read::Ended),
        (true, false) => Poll::Pending,
    }
}

/// Reads the control stream and every data stream the peer opens, until the connection ends
/// (its streams read to their end: a peer that flushed and closed loses nothing) or a stream
/// breaks the framing rules (which closes the connection).
pub(crate) async fn read_link<M: WireMessage>(
    conn: Connection,
    control: RecvStream,
    peer: NodeId,
    events: mpsc::Sender<TransportEvent<M>>,
    shared: std::sync::Arc<Shared>,
) {
    let common = &shared.common;
    let new = |rx| Inbound { rx, dec: FrameDecoder::new(common.max_frame) };
    let mut streams = vec![new(control)];
    let mut next = 0;
    let mut accepting = true;
    let accept = conn.accept_uni();
    tokio::pin!(accept);
    loop {
        let read = tokio::select! {
            s = &mut accept, if accepting => {
                match s {
                    Ok(s) => {
                        streams.push(new(s));
                        accept.set(conn.accept_uni());
                    }
                    Err(e) => {
                        debug!(%peer, error = %e, "connection ended; draining its streams");
                        accepting = false;
                    }
                }
                None
            }
            r = std::future::poll_fn(|cx| poll_streams::<M>(cx, &mut streams, &mut next, &peer)) => Some(r),
        };
        let delivered = match read {
            Some(Read::Messages(msgs)) => {
                deliver(&events, &common.credit, common.event_capacity, &peer, msgs).await
            }
            Some(Read::Refused(reason)) => {
                refused(common, &events, peer.to_string(), reason);
                conn.close(VarInt::from_u32(4), b"framing");
                return;
            }
            Some(Read::Ended) | None => true,
        };
        if !delivered || (!accepting && streams.is_empty()) {
            return;
        }
    }
}
