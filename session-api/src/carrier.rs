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
        let io = |what: String| move |source| Error::Io { what, source };
        match kind {
            TransportKind::Tcp => {
                settings.tcp_listener = match (tcp_listener, listen) {
                    (Some(l), _) => Some(l),
                    (None, Some(a)) => {
                        Some(std::net::TcpListener::bind(a).map_err(io(format!("binding {a}")))?)
                    }
                    (None, None) => None,
                };
            }
            TransportKind::Quic => {
                settings.udp_socket = match (udp_socket, listen) {
                    (Some(s), _) => Some(s),
                    (None, Some(a)) => {
                        Some(std::net::UdpSocket::bind(a).map_err(io(format!("binding {a}")))?)
                    }
                    (None, None) => None,
                };
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
