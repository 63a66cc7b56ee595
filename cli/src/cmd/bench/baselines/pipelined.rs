//! Raw pipelined throughput: 1 KiB messages written as fast as possible on one TCP, TLS or
//! quinn connection.

use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::TcpStream;

#[cfg(feature = "quic")]
use super::quinn_link::exchange as quinn_exchange;
use super::{TlsConfigs, frame, raw_listener};
use crate::cmd::bench::PAYLOAD;

/// `n` length-prefixed 1 KiB messages written as fast as possible on one connection; the
/// clock stops when the receiver has read the last one.
pub(crate) async fn raw_tcp_pipelined(n: usize) -> anyhow::Result<f64> {
    pipelined(n, None).await
}

/// Raw pipelined TCP with TLS 1.3 (rustls, ring, as m2m's TCP transport; a throwaway
/// certificate, no client authentication): what encryption alone leaves of the raw figure.
pub(crate) async fn raw_tls_pipelined(n: usize) -> anyhow::Result<f64> {
    let (sc, cc) = replication_core::tls::insecure_configs()?;
    pipelined(n, Some((sc, cc))).await
}

/// `n` 1 KiB frames on one loopback TCP connection, over TLS with `tls`; messages per second
/// until the receiver has read the last one.
async fn pipelined(n: usize, tls: Option<TlsConfigs>) -> anyhow::Result<f64> {
    let (l, addr, acceptor) = raw_listener(tls.as_ref()).await?;
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await?;
        match acceptor {
            Some(a) => read_frames(a.accept(s).await?, n).await,
            None => read_frames(s, n).await,
        }
    });
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    // The writer stays open until the receiver is done: closing it with unread bytes (a TLS
    // 1.3 session ticket) would reset the connection under the receiver.
    let (t0, done) = match tls {
        Some((_, cc)) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("insecure.m2m")?;
            let (t0, _open) =
                write_frames(tokio_rustls::TlsConnector::from(cc).connect(name, s).await?, n).await?;
            (t0, server.await??)
        }
        None => {
            let (t0, _open) = write_frames(s, n).await?;
            (t0, server.await??)
        }
    };
    Ok(n as f64 / done.duration_since(t0).as_secs_f64())
}

/// Reads `n` length-prefixed frames; the instant the last one was read.
async fn read_frames<S: tokio::io::AsyncRead + Unpin>(s: S, n: usize) -> std::io::Result<Instant> {
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let mut buf = vec![0u8; PAYLOAD];
    for _ in 0..n {
        let len = r.read_u32().await? as usize;
        buf.resize(len, 0);
        r.read_exact(&mut buf).await?;
    }
    Ok(Instant::now())
}

/// Writes `n` frames through a 64 KiB buffer; the instant the first one was written, and the
/// writer (still open).
async fn write_frames<S: tokio::io::AsyncWrite + Unpin>(
    s: S,
    n: usize,
) -> std::io::Result<(Instant, BufWriter<S>)> {
    let mut w = BufWriter::with_capacity(64 * 1024, s);
    let msg = frame();
    let t0 = Instant::now();
    for _ in 0..n {
        w.write_all(&msg).await?;
    }
    w.flush().await?;
    Ok((t0, w))
}

/// `n` length-prefixed 1 KiB messages on one quinn connection (one unidirectional stream),
/// TLS 1.3 as QUIC requires; the clock stops when the receiver has read the last one.
#[cfg(feature = "quic")]
pub(crate) async fn raw_quinn(n: usize) -> anyhow::Result<f64> {
    let (done, t0) = quinn_exchange(
        move |conn| async move {
            let mut rx = conn.accept_uni().await?;
            let mut buf = vec![0u8; 4 + PAYLOAD];
            for _ in 0..n {
                rx.read_exact(&mut buf).await?;
            }
            Ok(Instant::now())
        },
        |conn| async move {
            let mut tx = conn.open_uni().await?;
            let msg = frame();
            let t0 = Instant::now();
            for _ in 0..n {
                tx.write_all(&msg).await?;
            }
            let _ = tx.finish();
            Ok(t0)
        },
    )
    .await?;
    Ok(n as f64 / done.duration_since(t0).as_secs_f64())
}
