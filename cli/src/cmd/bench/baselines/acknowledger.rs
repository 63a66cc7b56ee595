//! The acknowledging process of the floor set-up of `scripts/bench-http.sh`: a node of a
//! domain file that accepts mutual-TLS connections at its address and answers every
//! length-prefixed request with 8 bytes ([`acknowledge`]), and does nothing else: the least
//! a synchronous backup can do for a write.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use replication_core::{DomainConfig, NodeId, tls};
use tokio::net::TcpListener;

use super::acked::acknowledge;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;

/// How long a connection may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `node` of the domain file `domain` (its certificates in `certs`) until killed:
/// each connection's requests are acknowledged in order.
pub(crate) async fn acknowledge_child(domain: &Path, node: &str, certs: &Path) -> anyhow::Result<()> {
    let origin = domain.display().to_string();
    let text = std::fs::read_to_string(domain).with_context(|| format!("reading {origin}"))?;
    let cfg = Arc::new(DomainConfig::parse(&text, &origin)?);
    let me = NodeId::new(node);
    let address = cfg.node(&me).with_context(|| format!("{origin} has no node {node}"))?.address.to_string();
    let pem = tls::load_node(certs, &me)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&cfg, &me, &pem)?);
    let listener = TcpListener::bind(&address).await.with_context(|| format!("listening on {address}"))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (s, _) = listener.accept().await?;
        // Beyond the cap a connection is closed at once: the floor opens one.
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        s.set_nodelay(true)?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // A requester that fails its handshake, takes too long over it, or goes is no
            // concern of the others.
            if let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(s)).await {
                let (r, w) = tokio::io::split(stream);
                let _ = acknowledge(r, w).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A node of the domain, over mutual TLS, gets one 8-byte acknowledgement per request, and
    /// only once it sent the whole request.
    #[test]
    fn acknowledges_each_request_of_a_domain_node() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let text = format!(
            "[domain]\nname = \"floor\"\ntopology = \"peer-to-peer\"\nreplicas = 1\ntransport = \"tcp\"\n\n\
             [[node]]\nname = \"app1\"\naddress = \"127.0.0.1:1\"\n\n\
             [[node]]\nname = \"app2\"\naddress = \"127.0.0.1:{port}\"\n"
        );
        let (domain, certs) = (dir.path().join("floor.toml"), dir.path().join("certs"));
        std::fs::write(&domain, &text)?;
        let cfg = Arc::new(DomainConfig::parse(&text, "floor.toml")?);
        tls::init_dir(&cfg, &certs)?;
        let rt = crate::cmd::runtime()?;
        rt.block_on(async {
            let server = tokio::spawn({
                let (domain, certs) = (domain.clone(), certs.clone());
                async move { acknowledge_child(&domain, "app2", &certs).await }
            });
            let me = NodeId::new("app1");
            let connector = tokio_rustls::TlsConnector::from(tls::client_config(
                &cfg,
                &me,
                &tls::load_node(&certs, &me)?,
            )?);
            let mut tcp = None;
            for _ in 0..500 {
                if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    tcp = Some(s);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let tcp = tcp.context("the acknowledger did not listen")?;
            let mut s = connector.connect(tls::server_name("floor", &NodeId::new("app2"))?, tcp).await?;
            let limit = Duration::from_secs(10);
            let mut ack = [0u8; 8];
            // Half a request: no acknowledgement yet.
            s.write_all(&[0, 0, 0, 16, 7, 7]).await?;
            s.flush().await?;
            let early = tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut ack)).await;
            assert!(early.is_err(), "an acknowledgement, or the end of the stream, before the whole request");
            s.write_all(&[7u8; 14]).await?;
            for len in [1u32, 1024] {
                s.write_all(&len.to_be_bytes()).await?;
                s.write_all(&vec![9u8; len as usize]).await?;
            }
            s.flush().await?;
            let mut acks = [0u8; 24];
            tokio::time::timeout(limit, s.read_exact(&mut acks)).await??;
            assert_eq!(acks, [1u8; 24]);
            // Nothing more than one per request.
            let extra = tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut ack)).await;
            assert!(extra.is_err(), "an acknowledgement too many");
            // A request longer than any the benchmarks send ends the connection, unread.
            s.write_all(&u32::MAX.to_be_bytes()).await?;
            s.flush().await?;
            let end = tokio::time::timeout(limit, s.read_exact(&mut ack)).await?;
            assert!(end.is_err(), "a request of 4 GiB was read");
            server.abort();
            Ok(())
        })
    }
}
