//! The quinn connection of the raw QUIC baselines (built with the `quic` feature).

use std::sync::Arc;

use anyhow::Context as _;

/// A quinn server and client endpoint on loopback (throw-away certificate, TLS 1.3), and the
/// server's address.
fn pair() -> anyhow::Result<(quinn::Endpoint, quinn::Endpoint, std::net::SocketAddr)> {
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    let (sc, cc) = replication_core::tls::insecure_configs()?;
    let server_cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(sc)?));
    let server = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(cc)?)));
    Ok((server, client, addr))
}

/// One quinn connection on loopback: `serve` runs on the accepted side (a task of its own),
/// `talk` on the connecting side; when both are done, both ends and both endpoints close.
/// What `serve` and `talk` returned.
pub(super) async fn exchange<T, U, S, SF, C, CF>(serve: S, talk: C) -> anyhow::Result<(T, U)>
where
    S: FnOnce(quinn::Connection) -> SF + Send + 'static,
    SF: Future<Output = anyhow::Result<T>> + Send,
    T: Send + 'static,
    C: FnOnce(quinn::Connection) -> CF,
    CF: Future<Output = anyhow::Result<U>>,
{
    let (server, client, addr) = pair()?;
    let accept = {
        let server = server.clone();
        tokio::spawn(async move {
            let conn = server.accept().await.context("no connection")?.await?;
            let served = serve(conn.clone()).await?;
            Ok::<_, anyhow::Error>((served, conn))
        })
    };
    let conn = client.connect(addr, "insecure.m2m")?.await?;
    let talked = talk(conn.clone()).await?;
    let (served, sconn) = accept.await??;
    conn.close(0u32.into(), b"done");
    sconn.close(0u32.into(), b"done");
    client.wait_idle().await;
    server.close(0u32.into(), b"done");
    Ok((served, talked))
}
