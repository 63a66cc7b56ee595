//! The floor set-up of `examples/axum.rs` (`--memory-store --floor`): the least any
//! synchronous replication costs a request, one acknowledged exchange over mutual TLS with the
//! domain's other node (an acknowledger, `m2m bench --acknowledge-child`), measured by
//! `scripts/bench-http.sh` beside the `MemoryStore` and m2m set-ups.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// The floor's link: one mutual-TLS connection to the acknowledger, driven by one task
/// ([`floor_link`]) that writes the requests handed to it and completes them as their
/// acknowledgements arrive, in the order they were sent. A handler only queues its request and
/// waits: a request cancelled by its client cannot leave half a frame behind.
#[derive(Clone)]
pub(crate) struct Floor {
    requests: mpsc::Sender<(Vec<u8>, oneshot::Sender<()>)>,
}

/// Requests queued for the floor's link: more than the requests served at once.
const FLOOR_QUEUE: usize = 1024;

impl Floor {
    /// Connects as `node` of the domain file `domain` to the domain's other node.
    pub(crate) async fn connect(
        domain: &str,
        node: &str,
        certs: &str,
    ) -> Result<Floor, Box<dyn std::error::Error>> {
        use replication_core::{DomainConfig, NodeId, tls};
        let cfg = Arc::new(DomainConfig::parse(&std::fs::read_to_string(domain)?, domain)?);
        let me = NodeId::new(node);
        let peer = cfg.nodes.iter().find(|n| n.name != me).ok_or("the domain has no other node")?;
        let pem = tls::load_node(std::path::Path::new(certs), &me)?;
        let connector = tokio_rustls::TlsConnector::from(tls::client_config(&cfg, &me, &pem)?);
        let tcp = tokio::net::TcpStream::connect(peer.address.as_str()).await?;
        tcp.set_nodelay(true)?;
        let tls = connector.connect(tls::server_name(&cfg.domain.name, &peer.name)?, tcp).await?;
        let (requests, queued) = mpsc::channel(FLOOR_QUEUE);
        tokio::spawn(floor_link(tls, queued));
        Ok(Floor { requests })
    }

    /// Sends `counter` and `attribute` and waits for their acknowledgement.
    pub(crate) async fn exchange(&self, counter: u64, attribute: &[u8]) -> Result<(), String> {
        let len = u32::try_from(8 + attribute.len()).map_err(|e| e.to_string())?;
        let mut frame = Vec::with_capacity(4 + 8 + attribute.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&counter.to_be_bytes());
        frame.extend_from_slice(attribute);
        let (acked, ack) = oneshot::channel();
        let gone = || "the acknowledger is gone".to_owned();
        self.requests.send((frame, acked)).await.map_err(|_| gone())?;
        ack.await.map_err(|_| gone())
    }
}

/// The floor link's task: both directions of the unsplit stream on one task (no lock between
/// a reader and a writer), as m2m's own links do, and the same batching: the requests queued
/// wait one more turn of the scheduler, so that the handlers running now add theirs, then go
/// in one write and one flush. Ends when the stream ends or fails, or the queue closes.
async fn floor_link<S>(
    mut stream: S,
    mut queued: mpsc::Receiver<(Vec<u8>, oneshot::Sender<()>)>,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use std::pin::Pin;
    use std::task::Poll;
    let mut sent: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    let (mut out, mut written, mut held) = (Vec::new(), None::<usize>, false);
    let (mut buf, mut ack_bytes) = (vec![0u8; 16 * 1024], 0usize);
    std::future::poll_fn(|cx| {
        // Writes, until the stream or the queue makes them wait.
        loop {
            if let Some(off) = written {
                if off < out.len() {
                    match Pin::new(&mut stream).poll_write(cx, &out[off..]) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                        Poll::Ready(Ok(n)) => written = Some(off + n),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => break,
                    }
                    continue;
                }
                match Pin::new(&mut stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        written = None;
                        out.clear();
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            loop {
                match queued.poll_recv(cx) {
                    Poll::Ready(Some((frame, acked))) => {
                        out.extend_from_slice(&frame);
                        sent.push_back(acked);
                    }
                    Poll::Ready(None) if out.is_empty() => return Poll::Ready(Ok(())),
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            if out.is_empty() {
                break;
            }
            if !held {
                held = true;
                cx.waker().wake_by_ref();
                break;
            }
            held = false;
            written = Some(0);
        }
        // Reads: every 8 bytes complete the oldest request sent.
        loop {
            let mut read = tokio::io::ReadBuf::new(&mut buf);
            match Pin::new(&mut stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    ack_bytes += read.filled().len();
                    while ack_bytes >= 8 {
                        ack_bytes -= 8;
                        // A handler that went (its client closed) no longer waits.
                        if let Some(acked) = sent.pop_front() {
                            let _ = acked.send(());
                        }
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}
