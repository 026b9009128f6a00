//! The store's resource limiter: linear memory per instance, tables, and
//! the fixed caps on instances and memories.

use super::{Breach, Limits, MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES};
use wasmtime::ResourceLimiter;

/// The store's resource limiter: caps memory and tables, and remembers which
/// cap a guest hit so the trap can say so.
pub(crate) struct StageLimiter {
    memory: usize,
    /// Bytes of all the instance's linear memories together: the cap is per
    /// instance, however many memories a component has.
    used: usize,
    pub(crate) breach: Option<Breach>,
}

impl StageLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        StageLimiter { memory: limits.memory, used: 0, breach: None }
    }
}

impl ResourceLimiter for StageLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.memory {
            self.breach = Some(Breach::Memory { limit: self.memory, asked: total });
            // A trap, not a failed `memory.grow`: the reason is then exact
            // instead of whatever the guest's allocator does on failure.
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.breach = Some(Breach::Table { limit: MAX_TABLE_ELEMENTS, asked: desired });
            return Err(wasmtime::Error::msg("table limit reached"));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LimitsConfig;
    use bytesize::ByteSize;

    #[test]
    fn memory_growth_past_the_cap_is_a_named_breach() {
        let limits = LimitsConfig { memory: Some(ByteSize::mib(1)), ..Default::default() }.resolve();
        let mut limiter = StageLimiter::new(&limits);
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(limiter.memory_growing(1 << 20, 2 << 20, None).is_err());
        assert_eq!(
            limiter.breach.as_ref().unwrap().to_string(),
            "tried to grow its memory to 2.0 MiB, over the 1.0 MiB allowed per instance (limits.memory)"
        );
    }

    #[test]
    fn the_memory_cap_counts_every_memory_of_the_instance() {
        let limits = LimitsConfig { memory: Some(ByteSize::mib(3)), ..Default::default() }.resolve();
        let mut limiter = StageLimiter::new(&limits);
        assert!(limiter.memory_growing(0, 2 << 20, None).unwrap(), "first memory: 2 MiB");
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap(), "second memory: 1 MiB, 3 in all");
        assert!(limiter.memory_growing(0, 1 << 20, None).is_err(), "a third would make 4 MiB");
    }
}
