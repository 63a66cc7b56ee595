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
    loop {
        let (s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // A requester that fails its handshake or goes is no concern of the others.
            if let Ok(stream) = acceptor.accept(s).await {
                let (r, w) = tokio::io::split(stream);
                let _ = acknowledge(r, w).await;
            }
        });
    }
}
