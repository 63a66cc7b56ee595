//! The Redis baseline: `SET` + `WAIT 1 0` against a primary with one replica.
//!
//! The RESP requests and replies are written and read here (a dozen lines) rather than
//! through the `redis` crate: the baseline writes `SET` and `WAIT` together in one write per
//! round trip, the best any client could do, so that no client library's own request
//! handling is measured along with Redis.

use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::cmd::bench::PAYLOAD;

fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `SET key <1 KiB>` + `WAIT 1 0` (written together, one round trip, as an optimal client
/// would), `conc` connections for `phase`.
pub(crate) async fn redis_set_wait(
    addr: &str,
    conc: usize,
    phase: Duration,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + phase;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conc {
        let addr = addr.to_owned();
        tasks.spawn(async move {
            let s = TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            let mut s = BufReader::new(s);
            let key = format!("m2m-bench-{c}");
            let value = vec![b'x'; PAYLOAD];
            let mut req = resp_command(&[b"SET", key.as_bytes(), &value]);
            req.extend(resp_command(&[b"WAIT", b"1", b"0"]));
            let mut samples = Vec::new();
            let mut line = String::new();
            loop {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                s.get_mut().write_all(&req).await?;
                line.clear();
                s.read_line(&mut line).await?;
                if !line.starts_with("+OK") {
                    bail!("SET answered {line:?}");
                }
                line.clear();
                s.read_line(&mut line).await?;
                let acked: i64 = line.trim().trim_start_matches(':').parse().unwrap_or(-1);
                if acked < 1 {
                    bail!("WAIT 1 0 answered {line:?}: is a replica attached?");
                }
                if t0 >= start {
                    samples.push(t0.elapsed());
                }
            }
            Ok(samples)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    let rate = all.len() as f64 / phase.as_secs_f64();
    Ok((rate, all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_commands_are_framed() {
        assert_eq!(
            resp_command(&[b"WAIT", b"1", b"0"]),
            b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n".to_vec()
        );
    }
}
