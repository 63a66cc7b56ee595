//! Microbenchmark of the TCP transport: `cargo run --release -p transport-tcp --example tcp_bench`
//! (options: `--insecure`, `--n=200000`, `--rounds=10000`).

use replication_core::carrier::{bench, conformance::TestMsg};
use transport_tcp::TcpTransport;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    bench::run::<std::net::TcpListener, _, _, _>("tcp", TcpTransport::<TestMsg>::start).await;
}
