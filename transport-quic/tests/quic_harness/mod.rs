//! The conformance [`Harness`] of the QUIC transport, shared by this crate's test files.

use replication_core::carrier::conformance::{Harness, TestMsg};
use replication_core::transport::TransportSettings;
use transport_quic::QuicTransport;

pub(crate) struct Quic;

impl Harness for Quic {
    type T = QuicTransport<TestMsg>;
    type Bound = std::net::UdpSocket;
    const CONTROL_FIRST: bool = false;

    async fn launch(settings: TransportSettings) -> Result<Self::T, String> {
        QuicTransport::start(settings).await.map_err(|e| e.to_string())
    }
}
