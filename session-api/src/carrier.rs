//! Starting the transport the domain file names, among those this build includes (cargo
//! features `tcp`, `quic`).

use std::net::SocketAddr;
use std::sync::Arc;

use replication_core::transport::Transport;
use replication_core::{DomainConfig, Message, NodeId, TransportKind};

use crate::config::TransportSecurity;
use crate::error::{Error, Result};

/// The transports this build includes.
pub fn available() -> Vec<TransportKind> {
    let mut v = Vec::new();
    if cfg!(feature = "tcp") {
        v.push(TransportKind::Tcp);
    }
    if cfg!(feature = "quic") {
        v.push(TransportKind::Quic);
    }
    v
}

#[cfg(any(feature = "tcp", feature = "quic"))]
fn security(me: &NodeId, s: TransportSecurity) -> Result<replication_core::transport::Security> {
    use replication_core::transport::Security;
    Ok(match s {
        TransportSecurity::CertsDir(dir) => Security::Tls(replication_core::tls::load_node(&dir, me)?),
        TransportSecurity::Pem(p) => Security::Tls(p),
        TransportSecurity::Insecure => Security::Insecure,
    })
}

/// The socket bound in advance, else one bound to `listen`, else `None` (the transport binds
/// the node's address in the domain file).
#[cfg(any(feature = "tcp", feature = "quic"))]
fn socket<S>(
    given: Option<S>,
    listen: Option<SocketAddr>,
    bind: impl FnOnce(SocketAddr) -> std::io::Result<S>,
) -> Result<Option<S>> {
    match (given, listen) {
        (Some(s), _) => Ok(Some(s)),
        (None, Some(a)) => {
            bind(a).map(Some).map_err(|source| Error::Io { what: format!("binding {a}"), source })
        }
        (None, None) => Ok(None),
    }
}

/// Starts the transport the domain names.
pub(crate) async fn start(
    cfg: &Arc<DomainConfig>,
    me: &NodeId,
    sec: TransportSecurity,
    tcp_listener: Option<std::net::TcpListener>,
    udp_socket: Option<std::net::UdpSocket>,
    listen: Option<SocketAddr>,
) -> Result<Arc<dyn Transport<Message>>> {
    let kind = cfg.domain.transport;
    if !available().contains(&kind) {
        return Err(Error::UnsupportedTransport { kind });
    }
    #[cfg(any(feature = "tcp", feature = "quic"))]
    {
        use replication_core::transport::TransportSettings;
        let mut settings = TransportSettings::new(cfg.clone(), me.clone(), security(me, sec)?);
        match kind {
            TransportKind::Tcp => {
                settings.tcp_listener = socket(tcp_listener, listen, std::net::TcpListener::bind)?;
            }
            TransportKind::Quic => {
                settings.udp_socket = socket(udp_socket, listen, std::net::UdpSocket::bind)?;
            }
        }
        match kind {
            #[cfg(feature = "tcp")]
            TransportKind::Tcp => {
                let t = transport_tcp::TcpTransport::<Message>::start(settings)
                    .await
                    .map_err(|e| Error::Transport(e.to_string()))?;
                Ok(Arc::new(t))
            }
            #[cfg(feature = "quic")]
            TransportKind::Quic => {
                let t = transport_quic::QuicTransport::<Message>::start(settings)
                    .await
                    .map_err(|e| Error::Transport(e.to_string()))?;
                Ok(Arc::new(t))
            }
            #[allow(unreachable_patterns)]
            other => Err(Error::UnsupportedTransport { kind: other }),
        }
    }
    #[cfg(not(any(feature = "tcp", feature = "quic")))]
    {
        let _ = (me, sec, tcp_listener, udp_socket, listen);
        Err(Error::UnsupportedTransport { kind })
    }
}
