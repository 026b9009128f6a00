//! How many waiting messages a job takes.

use std::time::Duration;

/// How many waiting messages a job takes: as many as fit in a call of about
/// `window`, so that a finished message waits at most about that long for its
/// batch-mates. It starts at one, doubles while calls are quick, and drops at
/// once when one is slow (a stage waiting on I/O runs one message per call).
pub(super) struct BatchSize {
    size: usize,
    max: usize,
    window: Duration,
}

impl BatchSize {
    pub(super) fn new(max: usize, window: Duration) -> Self {
        BatchSize { size: 1, max: max.max(1), window }
    }

    pub(super) fn get(&self) -> usize {
        self.size
    }

    /// A job of `messages` held its slot for `busy`.
    pub(super) fn observe(&mut self, messages: usize, busy: Duration) {
        if messages == 0 || self.max == 1 {
            return;
        }
        let per_message = busy.as_nanos() / messages as u128;
        let fit = self.window.as_nanos().checked_div(per_message).map_or(self.max, |fit| fit as usize);
        let fit = fit.clamp(1, self.max);
        self.size = if fit < self.size { fit } else { fit.min(self.size.saturating_mul(2)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_grow_while_calls_are_quick_and_shrink_when_one_is_slow() {
        let mut size = BatchSize::new(64, Duration::from_millis(1));
        assert_eq!(size.get(), 1, "the first call has one message");
        let grown: Vec<usize> = (0..7)
            .map(|_| {
                size.observe(size.get(), Duration::from_micros(2) * size.get() as u32);
                size.get()
            })
            .collect();
        assert_eq!(grown, [2, 4, 8, 16, 32, 64, 64], "2 µs a message: the window holds the whole batch");
        size.observe(64, Duration::from_millis(64 * 50));
        assert_eq!(size.get(), 1, "50 ms a message (I/O): one per call at once");
        size.observe(1, Duration::from_micros(250));
        size.observe(2, Duration::from_micros(500));
        assert_eq!(size.get(), 4, "250 µs a message: four fit in 1 ms");
        size.observe(4, Duration::from_millis(1));
        assert_eq!(size.get(), 4, "and it stays there");
    }
}
