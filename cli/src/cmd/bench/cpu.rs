//! The CPU time of this process (user + system, every thread), from `/proc/self/stat`: what
//! an update costs in CPU, whatever the wall time.

use std::time::Duration;

use anyhow::Context as _;

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, 100 on every Linux architecture).
const TICKS_PER_S: u64 = 100;

/// The CPU time this process has used so far.
pub(crate) fn process_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    cpu_of_stat(&stat).context("no utime and stime in /proc/self/stat")
}

/// utime + stime of a `/proc/PID/stat` line. The command name (field 2) is in parentheses and
/// may hold spaces: the fields are counted after its closing parenthesis.
fn cpu_of_stat(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state (field 3) ... utime (14), stime (15).
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_S))
}

/// CPU microseconds per operation between two readings (NaN without operations).
pub(crate) fn us_per_op(before: Duration, after: Duration, ops: u64) -> f64 {
    if ops == 0 {
        return f64::NAN;
    }
    after.saturating_sub(before).as_secs_f64() * 1e6 / ops as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_past_a_name_with_spaces() {
        let line = "4242 (m2m (x) y) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 200 300";
        assert_eq!(cpu_of_stat(line), Some(Duration::from_secs(3)));
        assert!(process_cpu().is_ok());
        assert_eq!(us_per_op(Duration::ZERO, Duration::from_secs(1), 1_000_000), 1.0);
        assert!(us_per_op(Duration::ZERO, Duration::from_secs(1), 0).is_nan());
    }
}
