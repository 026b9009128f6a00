//! The circuit breaker: a stage that fails message after message stops the
//! run (`limits.max_consecutive_failures`), instead of dead-lettering the
//! whole input one message at a time.

use crate::limits::log_safe;
use crate::pipeline::error::RunError;

/// Failures in a row of one stage.
#[derive(Default)]
pub(super) struct Breaker {
    failures_in_a_row: u32,
}

impl Breaker {
    /// A message succeeded: the count starts again.
    pub(super) fn success(&mut self) {
        self.failures_in_a_row = 0;
    }

    /// A message of `stage` failed with `reason`: the error that stops the
    /// run once `max` failed in a row (0: never).
    pub(super) fn failure(&mut self, stage: &str, max: u32, reason: &str) -> Result<(), RunError> {
        self.failures_in_a_row += 1;
        if max > 0 && self.failures_in_a_row >= max {
            return Err(RunError::CircuitOpen {
                stage: stage.to_string(),
                failures: self.failures_in_a_row,
                last: log_safe(reason).into_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_the_max_in_a_row_and_a_success_starts_the_count_again() {
        let mut breaker = Breaker::default();
        assert!(breaker.failure("s", 3, "bad").is_ok());
        assert!(breaker.failure("s", 3, "bad").is_ok());
        breaker.success();
        assert!(breaker.failure("s", 3, "bad").is_ok());
        assert!(breaker.failure("s", 3, "bad").is_ok());
        match breaker.failure("s", 3, "worse") {
            Err(RunError::CircuitOpen { stage, failures, last }) => {
                assert_eq!((stage.as_str(), failures, last.as_str()), ("s", 3, "worse"));
            }
            other => panic!("expected the circuit to open, got {other:?}"),
        }
    }

    #[test]
    fn a_max_of_zero_never_opens() {
        let mut breaker = Breaker::default();
        for _ in 0..1000 {
            assert!(breaker.failure("s", 0, "bad").is_ok());
        }
    }
}
