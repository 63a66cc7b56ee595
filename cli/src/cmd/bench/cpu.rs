//! The CPU time of this process (user + system, every thread): what an update costs in CPU,
//! whatever the wall time.

use std::time::Duration;

use anyhow::Context as _;

/// The CPU time this process has used so far.
pub(crate) fn process_cpu() -> anyhow::Result<Duration> {
    Ok(cpu_time::ProcessTime::try_now().context("reading the process CPU clock")?.as_duration())
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
    fn cpu_per_operation() {
        assert!(process_cpu().is_ok());
        assert_eq!(us_per_op(Duration::ZERO, Duration::from_secs(1), 1_000_000), 1.0);
        assert!(us_per_op(Duration::ZERO, Duration::from_secs(1), 0).is_nan());
    }
}
