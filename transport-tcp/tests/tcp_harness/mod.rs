//! The [`Harness`] of the TCP transport, shared by this crate's test files.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;

use crate::conformance::{Harness, TestMsg};
use replication_core::transport::TransportSettings;
use tokio::io::AsyncWriteExt;
use transport_tcp::TcpTransport;

pub struct Tcp;

impl Harness for Tcp {
    type T = TcpTransport<TestMsg>;
    type Bound = std::net::TcpListener;
    const CONTROL_FIRST: bool = true;

    fn bind(port: u16) -> Self::Bound {
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind")
    }

    fn port(b: &Self::Bound) -> u16 {
        b.local_addr().expect("addr").port()
    }

    async fn start(mut settings: TransportSettings, b: Self::Bound) -> Result<Self::T, String> {
        settings.tcp_listener = Some(b);
        TcpTransport::start(settings).await.map_err(|e| e.to_string())
    }

    async fn garbage(addr: SocketAddr) -> bool {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s.write_all(b"\x16\x03\x01\x00\x05hello garbage \xff\xfe\x00").await;
            let _ = s.shutdown().await;
        }
        true
    }

    async fn silent(addr: SocketAddr) -> Option<Box<dyn Send>> {
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        Some(Box::new(s))
    }
}
