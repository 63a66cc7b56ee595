//! The conformance [`Harness`] of the TCP transport, shared by this crate's test files.

use replication_core::carrier::conformance::{Harness, TestMsg};
use replication_core::transport::TransportSettings;
use transport_tcp::TcpTransport;

pub(crate) struct Tcp;

impl Harness for Tcp {
    type T = TcpTransport<TestMsg>;
    type Bound = std::net::TcpListener;
    const CONTROL_FIRST: bool = true;

    async fn launch(settings: TransportSettings) -> Result<Self::T, String> {
        TcpTransport::start(settings).await.map_err(|e| e.to_string())
    }
}
