//! The process-wide memory budget: what every stage's instances may use at
//! once, checked when the pipeline is built, so that `concurrency × memory`
//! over all stages cannot promise more memory than the machine has.

use bytesize::ByteSize;
use std::path::Path;

/// The memory this process may use: the machine's physical memory, or the
/// cgroup's limit if it is lower (a container). `None` if neither can be read.
pub(crate) fn available() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| mem_total(&text));
    let cgroup = [
        Path::new("/sys/fs/cgroup/memory.max"),                   // cgroup v2
        Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes"), // cgroup v1
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|text| text.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// One stage's share of the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StageMemory {
    pub(crate) stage: String,
    pub(crate) concurrency: usize,
    /// `limits.memory`, per instance.
    pub(crate) memory: u64,
}

impl StageMemory {
    fn total(&self) -> u64 {
        self.memory.saturating_mul(self.concurrency as u64)
    }
}

/// Why the pipeline's stages could use more memory than its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", explain(.stages, *.budget, *.from_machine))]
pub struct OverBudget {
    stages: Vec<StageMemory>,
    budget: u64,
    /// The budget is the machine's memory, not `[engine] memory_budget`.
    from_machine: bool,
}

/// Checks that the stages' instances together fit in `budget` bytes.
pub(crate) fn check(stages: Vec<StageMemory>, budget: u64, from_machine: bool) -> Result<(), OverBudget> {
    let total = stages.iter().map(StageMemory::total).fold(0u64, u64::saturating_add);
    if total <= budget {
        return Ok(());
    }
    Err(OverBudget { stages, budget, from_machine })
}

fn explain(stages: &[StageMemory], budget: u64, from_machine: bool) -> String {
    let size = |b: u64| ByteSize(b).display().iec().to_string();
    let total = stages.iter().map(StageMemory::total).fold(0u64, u64::saturating_add);
    let mut parts: Vec<&StageMemory> = stages.iter().filter(|s| s.total() > 0).collect();
    parts.sort_by_key(|s| std::cmp::Reverse(s.total()));
    let terms: Vec<String> = parts
        .iter()
        .map(|s| format!("`{}` {} × {} = {}", s.stage, s.concurrency, size(s.memory), size(s.total())))
        .collect();
    let whose = if from_machine { "this machine's memory" } else { "[engine] memory_budget" };
    format!(
        "the stages' instances may use {} of memory at once ({}; concurrency × limits.memory), over the {} \
         of {whose}. Lower `concurrency` or `limits.memory` of the largest, or set `memory_budget` under \
         [engine] (\"unlimited\" to skip this check)",
        size(total),
        terms.join(", "),
        size(budget),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, concurrency: usize, mib: u64) -> StageMemory {
        StageMemory { stage: name.into(), concurrency, memory: mib << 20 }
    }

    #[test]
    fn reads_mem_total() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_576_000 * 1024));
        assert_eq!(mem_total("nothing here"), None);
    }

    #[test]
    fn pipelines_within_the_budget_pass() {
        assert_eq!(check(vec![stage("a", 4, 128), stage("b", 4, 128)], 1 << 30, false), Ok(()));
    }

    #[test]
    fn the_refusal_gives_the_numbers_and_the_fix() {
        let err = check(vec![stage("small", 1, 64), stage("big", 32, 128)], 1 << 30, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the stages' instances may use 4.1 GiB of memory at once (`big` 32 × 128.0 MiB = 4.0 GiB, `small` 1 × \
             64.0 MiB = 64.0 MiB; concurrency × limits.memory), over the 1.0 GiB of this machine's memory. Lower \
             `concurrency` or `limits.memory` of the largest, or set `memory_budget` under [engine] (\"unlimited\" \
             to skip this check)"
        );
    }
}
