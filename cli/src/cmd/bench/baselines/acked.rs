//! Raw acknowledged throughput: 1 KiB requests, each acknowledged with 8 bytes, a window of
//! them in flight, over TCP, TLS or quinn.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::TcpStream;

#[cfg(feature = "quic")]
use super::quinn_link::exchange as quinn_exchange;
use super::{TlsConfigs, frame, raw_listener};
use crate::cmd::bench::PAYLOAD;

/// In-flight requests of the request/acknowledge baselines: as many as m2m's concurrent
/// sessions in the c64 phase.
pub(crate) const WINDOW: usize = 64;

/// `n` 1 KiB requests on one connection, each acknowledged with 8 bytes, [`WINDOW`] in
/// flight (a new request for each acknowledgement): the transport's share of a synchronous
/// update at concurrency 64, with nothing else done. Over TLS with `tls`. Acknowledgements
/// per second.
pub(crate) async fn raw_tcp_acked(n: usize, tls: Option<TlsConfigs>) -> anyhow::Result<f64> {
    let (l, addr, acceptor) = raw_listener(tls.as_ref()).await?;
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await?;
        s.set_nodelay(true)?;
        match acceptor {
            Some(a) => {
                let (r, w) = tokio::io::split(a.accept(s).await?);
                acknowledge(r, w).await
            }
            None => {
                let (r, w) = s.into_split();
                acknowledge(r, w).await
            }
        }
    });
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let rate = match tls {
        Some((_, cc)) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("insecure.m2m")?;
            let (r, w) = tokio::io::split(tokio_rustls::TlsConnector::from(cc).connect(name, s).await?);
            rate(n, request(r, w, WINDOW, Until::Acks(n)).await?)
        }
        None => {
            let (r, w) = s.into_split();
            rate(n, request(r, w, WINDOW, Until::Acks(n)).await?)
        }
    };
    server.await??;
    Ok(rate)
}

/// The same over one quinn connection (one bidirectional stream).
#[cfg(feature = "quic")]
pub(crate) async fn raw_quinn_acked(n: usize) -> anyhow::Result<f64> {
    let ((), rate) = quinn_exchange(
        move |conn| async move {
            let (tx, rx) = conn.accept_bi().await?;
            Ok(acknowledge(rx, tx).await?)
        },
        |conn| async move {
            let (tx, rx) = conn.open_bi().await?;
            Ok(rate(n, request(rx, tx, WINDOW, Until::Acks(n)).await?))
        },
    )
    .await?;
    Ok(rate)
}

/// Acknowledgements per second of a requesting side that asked for `n`.
fn rate(n: usize, (acked, took): (usize, Duration)) -> f64 {
    debug_assert_eq!(acked, n);
    acked as f64 / took.as_secs_f64()
}

/// When a requesting side stops asking.
#[derive(Clone, Copy, Debug)]
pub(super) enum Until {
    /// Once this many requests were acknowledged.
    Acks(usize),
    /// At this instant (the requests in flight then are still waited for).
    Deadline(Instant),
}

/// The requesting side of the acknowledged baselines: keeps `window` requests in flight
/// until `until`, writing the requests an arrival of acknowledgements frees in one flush;
/// the requests acknowledged and the time they took.
pub(super) async fn request<R, W>(
    r: R,
    w: W,
    window: usize,
    until: Until,
) -> std::io::Result<(usize, Duration)>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(128 * 1024, w);
    let msg = frame();
    let t0 = Instant::now();
    let more = |sent: usize| match until {
        Until::Acks(n) => sent < n,
        Until::Deadline(d) => Instant::now() < d,
    };
    let mut sent = 0;
    while sent < window && more(sent) {
        w.write_all(&msg).await?;
        sent += 1;
    }
    w.flush().await?;
    let mut acked = 0;
    let mut ack = [0u8; 8];
    while acked < sent {
        r.read_exact(&mut ack).await?;
        acked += 1;
        let mut free = 1;
        while r.buffer().len() >= ack.len() {
            r.read_exact(&mut ack).await?;
            acked += 1;
            free += 1;
        }
        for _ in 0..free {
            if more(sent) {
                w.write_all(&msg).await?;
                sent += 1;
            }
        }
        w.flush().await?;
    }
    Ok((acked, t0.elapsed()))
}

/// The acknowledging side: reads length-prefixed requests until the requester closes its
/// side, and answers each with 8 bytes, flushed when no further complete request is
/// buffered.
/// The longest request [`acknowledge`] reads: a length above it ends the connection (the
/// requests of the benchmarks are 1 KiB, the HTTP floor's about as much).
const MAX_REQUEST: usize = 64 * 1024;

pub(super) async fn acknowledge<R, W>(r: R, w: W) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(4096, w);
    let mut buf = vec![0u8; PAYLOAD];
    loop {
        let len = match r.read_u32().await {
            Ok(len) => len as usize,
            // The requester got every acknowledgement it waited for and went (a TLS stream
            // may end without its close notification, a socket with a reset: the same end).
            Err(e) if requester_went(e.kind()) => break,
            Err(e) => return Err(e),
        };
        if len > MAX_REQUEST {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a request of {len} bytes (at most {MAX_REQUEST})"),
            ));
        }
        buf.resize(len, 0);
        r.read_exact(&mut buf).await?;
        w.write_all(&[1u8; 8]).await?;
        if r.buffer().len() < 4 + PAYLOAD {
            w.flush().await?;
        }
    }
    Ok(())
}

/// Whether a read ended because the requesting side closed or dropped its connection.
fn requester_went(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::{ConnectionReset, NotConnected, UnexpectedEof};
    matches!(kind, UnexpectedEof | ConnectionReset | NotConnected)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn acknowledged_baselines_get_every_acknowledgement() -> anyhow::Result<()> {
        // More messages than the window, not a multiple of it: `request` returns only when
        // every one of its requests was acknowledged, `acknowledge` only when it read them all.
        let rt = crate::cmd::runtime()?;
        rt.block_on(async {
            let n = WINDOW * 7 + 5;
            let limit = Duration::from_secs(60);
            let tcp = tokio::time::timeout(limit, raw_tcp_acked(n, None)).await??;
            let tls = replication_core::tls::insecure_configs()?;
            let tls = tokio::time::timeout(limit, raw_tcp_acked(n, Some(tls))).await??;
            #[cfg(feature = "quic")]
            let quinn = [("quinn", tokio::time::timeout(limit, raw_quinn_acked(n)).await??)];
            #[cfg(not(feature = "quic"))]
            let quinn = [];
            for (name, rate) in [("tcp", tcp), ("tls", tls)].into_iter().chain(quinn) {
                assert!(rate.is_finite() && rate > 0.0, "{name}: {rate}");
            }
            // Fewer requests than the window.
            let few = tokio::time::timeout(limit, raw_tcp_acked(3, None)).await??;
            assert!(few.is_finite() && few > 0.0);
            Ok(())
        })
    }
}
