//! The baselines measured in the same run as m2m: raw TCP, TLS and quinn exchanges of the
//! same 1 KiB messages, and Redis; and the acknowledging process of the HTTP benchmark's
//! floor.

pub(crate) mod acked;
pub(crate) mod acknowledger;
pub(crate) mod mesh;
pub(crate) mod pingpong;
pub(crate) mod pipelined;
#[cfg(feature = "quic")]
mod quinn_link;
pub(crate) mod redis;

use std::sync::Arc;

use tokio::net::TcpListener;

use super::PAYLOAD;

fn frame() -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + PAYLOAD);
    v.extend_from_slice(&u32::try_from(PAYLOAD).unwrap_or(0).to_be_bytes());
    v.resize(4 + PAYLOAD, b'x');
    v
}

/// A TLS server and client configuration for the raw TLS baselines.
type TlsConfigs = (Arc<tokio_rustls::rustls::ServerConfig>, Arc<tokio_rustls::rustls::ClientConfig>);

/// A loopback listener, its address, and an acceptor when `tls` is given.
async fn raw_listener(
    tls: Option<&TlsConfigs>,
) -> anyhow::Result<(TcpListener, std::net::SocketAddr, Option<tokio_rustls::TlsAcceptor>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    Ok((l, addr, tls.map(|(sc, _)| tokio_rustls::TlsAcceptor::from(sc.clone()))))
}
