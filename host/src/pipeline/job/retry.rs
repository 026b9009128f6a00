//! Retries of `transient` errors: the backoff, waited out parked.

use super::Failure;
use crate::config::RetryConfig;
use crate::pipeline::dead_letter::Kind;
use crate::pipeline::slots::Seat;
use std::time::Duration;

/// After a `transient` error: waits out the backoff (parked) and returns
/// `None` to try again, or, once `retry.max` retries are spent, the failure
/// to dead-letter.
pub(super) async fn retry_after(
    retry: &RetryConfig,
    retries: &mut u32,
    reason: String,
    seat: &mut Seat,
) -> Option<Failure> {
    if *retries < retry.max {
        seat.wait(backoff(retry, *retries)).await;
        *retries += 1;
        return None;
    }
    let reason = if *retries > 0 { format!("{reason} (after {retries} retries)") } else { reason };
    Some(Failure::Rejected(Kind::Transient, reason))
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random,
/// so that retries of many messages spread out.
fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let exp = retry.backoff.saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX)).min(retry.max_backoff);
    let half = exp / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let retry = RetryConfig { max: 10, backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(1) };
        for attempt in 0..4 {
            let full = Duration::from_millis(100 << attempt);
            let d = backoff(&retry, attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(&retry, 30) <= Duration::from_secs(1));
    }
}
