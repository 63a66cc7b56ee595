//! Microbenchmark of the TCP transport: `cargo run --release -p transport-tcp --example tcp_bench`
//! (options: `--insecure`, `--n=200000`, `--rounds=10000`).

#[path = "common/bench.rs"]
mod bench;

use std::sync::Arc;

use bench::{BenchMsg, Start};
use replication_core::DomainConfig;
use replication_core::transport::{Security, TransportSettings};
use transport_tcp::TcpTransport;

struct Tcp;

impl Start for Tcp {
    type T = TcpTransport<BenchMsg>;
    const NAME: &'static str = "tcp";

    async fn start(cfg: Arc<DomainConfig>, node: &str, security: Security) -> Self::T {
        let s = TransportSettings::new(cfg, node.into(), security);
        TcpTransport::start(s).await.expect("start")
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port")
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    bench::run::<Tcp>().await;
}
