//! Microbenchmark of the QUIC transport: `cargo run --release -p transport-quic --example quic_bench`
//! (options: `--insecure`, `--n=200000`, `--rounds=10000`).

use replication_core::carrier::{bench, conformance::TestMsg};
use transport_quic::QuicTransport;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    bench::run::<std::net::UdpSocket, _, _, _>("quic", QuicTransport::<TestMsg>::start).await;
}
