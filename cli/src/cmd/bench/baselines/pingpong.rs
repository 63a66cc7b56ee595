//! The raw TCP round trip: one 1 KiB request and its 8-byte acknowledgement at a time.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::frame;
use crate::cmd::bench::PAYLOAD;

/// Where the two threads of the raw round trip run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Placement {
    /// Client and server pinned to two different CPUs: every request and acknowledgement
    /// wakes the other CPU, as between two nodes (the figure the latency targets use).
    TwoCpus,
    /// Both pinned to one CPU: each wake-up is a context switch on that CPU.
    OneCpu,
}

/// Request (4-byte length + 1 KiB) and 8-byte acknowledgement, one at a time, between two
/// threads with blocking sockets (no runtime), pinned as `placement` says. Unpinned, the
/// figure is bimodal on a small machine (about 6 µs when the kernel runs both threads on one
/// CPU, 85-100 µs when they run on two on the 2-vCPU VM of `docs/benchmarks`), and so were
/// two tokio tasks (11 or 90 µs): pinned, each placement is measured every time. With one
/// CPU only, `TwoCpus` runs unpinned.
pub(crate) async fn raw_tcp_pingpong(rounds: usize, placement: Placement) -> anyhow::Result<Vec<Duration>> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (client_cpu, server_cpu) = match (placement, cores.as_slice()) {
        (Placement::TwoCpus, [a, b, ..]) => (Some(*a), Some(*b)),
        (Placement::OneCpu, [a, ..]) => (Some(*a), Some(*a)),
        _ => (None, None),
    };
    // Threads of their own: a pinned runtime thread would stay pinned.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(blocking_pingpong(rounds, client_cpu, server_cpu));
    });
    rx.await.context("the ping-pong thread ended")?
}

fn blocking_pingpong(
    rounds: usize,
    client_cpu: Option<core_affinity::CoreId>,
    server_cpu: Option<core_affinity::CoreId>,
) -> anyhow::Result<Vec<Duration>> {
    use std::io::{Read as _, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        if let Some(c) = server_cpu {
            core_affinity::set_for_current(c);
        }
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; 4 + PAYLOAD];
        loop {
            if s.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            s.write_all(&[1u8; 8])?;
        }
    });
    if let Some(c) = client_cpu {
        core_affinity::set_for_current(c);
    }
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let msg = frame();
    let mut ack = [0u8; 8];
    let mut out = Vec::with_capacity(rounds);
    for i in 0..rounds + rounds / 10 {
        let t0 = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut ack)?;
        if i >= rounds / 10 {
            out.push(t0.elapsed());
        }
    }
    drop(s);
    server.join().map_err(|_| anyhow::anyhow!("the ping-pong server panicked"))??;
    Ok(out)
}
