//! Raw acknowledged throughput: 1 KiB requests, each acknowledged with 8 bytes, a window of
//! them in flight, over TCP, TLS or quinn.

use std::time::Instant;

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
                acknowledge(r, w, n).await
            }
            None => {
                let (r, w) = s.into_split();
                acknowledge(r, w, n).await
            }
        }
    });
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let rate = match tls {
        Some((_, cc)) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("insecure.m2m")?;
            let (r, w) = tokio::io::split(tokio_rustls::TlsConnector::from(cc).connect(name, s).await?);
            request(r, w, n).await?
        }
        None => {
            let (r, w) = s.into_split();
            request(r, w, n).await?
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
            Ok(acknowledge(rx, tx, n).await?)
        },
        |conn| async move {
            let (tx, rx) = conn.open_bi().await?;
            Ok(request(rx, tx, n).await?)
        },
    )
    .await?;
    Ok(rate)
}

/// The requesting side of the acknowledged baselines: keeps [`WINDOW`] requests in flight
/// until `n` are acknowledged, writing the requests an arrival of acknowledgements frees in
/// one flush; acknowledgements per second.
async fn request<R, W>(r: R, w: W, n: usize) -> std::io::Result<f64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(128 * 1024, w);
    let msg = frame();
    let t0 = Instant::now();
    let mut sent = 0;
    for _ in 0..WINDOW.min(n) {
        w.write_all(&msg).await?;
        sent += 1;
    }
    w.flush().await?;
    let mut acked = 0;
    let mut ack = [0u8; 8];
    while acked < n {
        r.read_exact(&mut ack).await?;
        acked += 1;
        let mut free = 1;
        while r.buffer().len() >= ack.len() {
            r.read_exact(&mut ack).await?;
            acked += 1;
            free += 1;
        }
        for _ in 0..free {
            if sent < n {
                w.write_all(&msg).await?;
                sent += 1;
            }
        }
        w.flush().await?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// The acknowledging side: reads `n` length-prefixed requests and answers each with 8
/// bytes, flushed when no further complete request is buffered.
async fn acknowledge<R, W>(r: R, w: W, n: usize) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(4096, w);
    let mut buf = vec![0u8; PAYLOAD];
    for _ in 0..n {
        let len = r.read_u32().await? as usize;
        buf.resize(len, 0);
        r.read_exact(&mut buf).await?;
        w.write_all(&[1u8; 8]).await?;
        if r.buffer().len() < 4 + PAYLOAD {
            w.flush().await?;
        }
    }
    w.flush().await?;
    // Stay until the requester is done reading (closing first could reset a TLS stream
    // under it).
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest).await;
    Ok(())
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
