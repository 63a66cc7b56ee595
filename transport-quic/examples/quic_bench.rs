//! Microbenchmark of the QUIC transport: `cargo run --release -p transport-quic --example quic_bench`
//! (options: `--insecure`, `--n=200000`, `--rounds=10000`).

#[path = "../../transport-tcp/examples/common/bench.rs"]
mod bench;

use std::sync::Arc;

use bench::{BenchMsg, Start};
use replication_core::DomainConfig;
use replication_core::transport::{Security, TransportSettings};
use transport_quic::QuicTransport;

struct Quic;

impl Start for Quic {
    type T = QuicTransport<BenchMsg>;
    const NAME: &'static str = "quic";

    async fn start(cfg: Arc<DomainConfig>, node: &str, security: Security) -> Self::T {
        let s = TransportSettings::new(cfg, node.into(), security);
        QuicTransport::start(s).await.expect("start")
    }

    fn free_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    bench::run::<Quic>().await;
}
