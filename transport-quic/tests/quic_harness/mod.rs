//! The [`Harness`] of the QUIC transport, shared by this crate's test files.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;

use crate::conformance::{Harness, TestMsg};
use replication_core::transport::TransportSettings;
use transport_quic::QuicTransport;

pub struct Quic;

impl Harness for Quic {
    type T = QuicTransport<TestMsg>;
    type Bound = std::net::UdpSocket;
    const CONTROL_FIRST: bool = false;

    fn bind(port: u16) -> Self::Bound {
        // A stopped endpoint releases its socket once its connections have drained.
        let mut tries = 0;
        loop {
            match std::net::UdpSocket::bind(("127.0.0.1", port)) {
                Ok(s) => return s,
                Err(e) if tries < 100 => {
                    tries += 1;
                    eprintln!("bind {port}: {e}; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => panic!("bind {port}: {e}"),
            }
        }
    }

    fn port(b: &Self::Bound) -> u16 {
        b.local_addr().expect("addr").port()
    }

    async fn start(mut settings: TransportSettings, b: Self::Bound) -> Result<Self::T, String> {
        settings.udp_socket = Some(b);
        QuicTransport::start(settings).await.map_err(|e| e.to_string())
    }

    async fn garbage(addr: SocketAddr) -> bool {
        if let Ok(s) = tokio::net::UdpSocket::bind("127.0.0.1:0").await {
            for len in [1usize, 64, 1200] {
                let _ = s.send_to(&vec![0xa5; len], addr).await;
            }
        }
        false // QUIC endpoints drop undecodable datagrams silently
    }

    async fn silent(_addr: SocketAddr) -> Option<Box<dyn Send>> {
        None
    }
}
