//! The bare transport under the rows of 3, 6 and 12 nodes: as many endpoints in this process,
//! each linked by TLS to every other, with the rows' requests in flight spread over the links
//! as m2m spreads its sessions (each node its share, over its links to the other nodes), each
//! 1 KiB request acknowledged with 8 bytes. What falls here as endpoints are added is what
//! the cores and the spread explain, with nothing of m2m's; the nodes rows are read against it.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpStream;

use super::acked::{Until, acknowledge, request};
use super::{TlsConfigs, raw_listener};

/// The windows of `nodes` endpoints' links with `in_flight` requests in flight in all: each
/// endpoint's share (`in_flight / nodes`, the first ones one more when it does not divide)
/// spread over its links to the `nodes - 1` others the same way. A link with no request in
/// flight is left out.
pub(crate) fn windows(nodes: usize, in_flight: usize) -> Vec<usize> {
    let links = nodes.saturating_sub(1).max(1);
    spread(in_flight, nodes).into_iter().flat_map(|share| spread(share, links)).filter(|w| *w > 0).collect()
}

/// `total` shared by `parts` as evenly as whole numbers allow.
fn spread(total: usize, parts: usize) -> Vec<usize> {
    (0..parts).map(|i| total / parts + usize::from(i < total % parts)).collect()
}

/// Acknowledgements per second of all links together over `phase`, with [`windows`]`(nodes,
/// in_flight)` over TLS.
pub(crate) async fn raw_tls_mesh(
    nodes: usize,
    in_flight: usize,
    phase: Duration,
    tls: TlsConfigs,
) -> anyhow::Result<f64> {
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for window in windows(nodes, in_flight) {
        let (l, addr, acceptor) = raw_listener(Some(&tls)).await?;
        let acceptor = acceptor.context("a TLS acceptor")?;
        servers.push(tokio::spawn(async move {
            let (s, _) = l.accept().await?;
            s.set_nodelay(true)?;
            let (r, w) = tokio::io::split(acceptor.accept(s).await?);
            acknowledge(r, w).await
        }));
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("insecure.m2m")?;
        let stream = tokio_rustls::TlsConnector::from(tls.1.clone()).connect(name, s).await?;
        clients.push((window, stream));
    }
    // Every link is up before the phase starts.
    let deadline = Instant::now() + phase;
    let t0 = Instant::now();
    let talks: Vec<_> = clients
        .into_iter()
        .map(|(window, stream)| {
            tokio::spawn(async move {
                let (r, w) = tokio::io::split(stream);
                request(r, w, window, Until::Deadline(deadline)).await
            })
        })
        .collect();
    let mut acked = 0;
    for t in talks {
        acked += t.await??.0;
    }
    let took = t0.elapsed();
    for s in servers {
        s.await??;
    }
    Ok(acked as f64 / took.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_windows_spread_the_requests_as_the_nodes_rows_do() {
        // 3 nodes: 64 each over 2 links.
        assert_eq!(windows(3, 192), vec![32; 6]);
        // 12 nodes: 16 each over 11 links, so five links of two and six of one per node.
        let w = windows(12, 192);
        assert_eq!(w.iter().sum::<usize>(), 192);
        assert_eq!(w.len(), 132);
        assert_eq!(w.iter().filter(|x| **x == 2).count(), 12 * 5);
        // Fewer requests than links: the links without one are left out.
        assert_eq!(windows(4, 2), vec![1, 1]);
        assert_eq!(windows(1, 5), vec![5], "one endpoint: one link");
    }

    #[test]
    fn a_mesh_acknowledges_requests_on_every_link() -> anyhow::Result<()> {
        let rt = crate::cmd::runtime()?;
        rt.block_on(async {
            let tls = replication_core::tls::insecure_configs()?;
            let rate = tokio::time::timeout(
                Duration::from_secs(60),
                raw_tls_mesh(3, 12, Duration::from_millis(200), tls),
            )
            .await??;
            assert!(rate.is_finite() && rate > 100.0, "{rate}");
            Ok(())
        })
    }
}
