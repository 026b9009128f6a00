//! The caps on what one input may produce: how many outputs, how large each,
//! and how large all of them together, emitted ones included. Emitted
//! outputs are counted as they come (`capabilities::emit`), returned ones
//! when the call ends (`pipeline::stage_task`), with the same tally.

use super::{Breach, HEADER_OVERHEAD};
use crate::bindings::Message;

/// A message's size for the output caps: value, key and headers, each
/// header counted with what the host holds for it.
pub(crate) fn message_bytes(m: &Message) -> usize {
    m.value.len()
        + m.key.as_ref().map_or(0, Vec::len)
        + m.headers.iter().map(|h| h.name.len() + h.value.len() + HEADER_OVERHEAD).sum::<usize>()
}

/// `limits.max_outputs`, `max_output_bytes` and `max_total_output_bytes`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutputCaps {
    pub(crate) max_outputs: usize,
    pub(crate) max_output_bytes: usize,
    pub(crate) max_total_output_bytes: usize,
}

/// What one input has produced so far: outputs, and their bytes as the caps
/// count them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutputTally {
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
}

impl OutputTally {
    /// Counts one more output of `size` bytes, or names the cap it breaks
    /// (and counts nothing).
    pub(crate) fn add(&mut self, size: usize, caps: &OutputCaps) -> Result<(), Breach> {
        if self.messages >= caps.max_outputs {
            return Err(Breach::Outputs { limit: caps.max_outputs, produced: self.messages + 1 });
        }
        if size > caps.max_output_bytes {
            let index = self.messages + 1;
            return Err(Breach::OutputBytes { limit: caps.max_output_bytes, produced: size, index });
        }
        let total = self.bytes.saturating_add(size);
        if total > caps.max_total_output_bytes {
            return Err(Breach::TotalOutputBytes { limit: caps.max_total_output_bytes, produced: total });
        }
        *self = OutputTally { messages: self.messages + 1, bytes: total };
        Ok(())
    }

    /// Counts `outputs` returned after these were emitted. A count over the
    /// cap is named with the whole count, not the first output past it.
    pub(crate) fn add_all(mut self, outputs: &[Message], caps: &OutputCaps) -> Result<Self, Breach> {
        let produced = self.messages + outputs.len();
        if produced > caps.max_outputs {
            return Err(Breach::Outputs { limit: caps.max_outputs, produced });
        }
        for m in outputs {
            self.add(message_bytes(m), caps)?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> OutputCaps {
        OutputCaps { max_outputs: 3, max_output_bytes: 10, max_total_output_bytes: 15 }
    }

    #[test]
    fn each_cap_is_named_and_a_refused_output_is_not_counted() {
        let mut tally = OutputTally::default();
        assert_eq!(tally.add(11, &caps()), Err(Breach::OutputBytes { limit: 10, produced: 11, index: 1 }));
        tally.add(10, &caps()).unwrap();
        assert_eq!(tally.add(6, &caps()), Err(Breach::TotalOutputBytes { limit: 15, produced: 16 }));
        tally.add(5, &caps()).unwrap();
        assert_eq!(tally.add(0, &caps()), Ok(()));
        assert_eq!(tally.add(0, &caps()), Err(Breach::Outputs { limit: 3, produced: 4 }));
        assert_eq!(tally, OutputTally { messages: 3, bytes: 15 });
    }

    #[test]
    fn returned_outputs_over_the_count_are_named_with_the_whole_count() {
        let m = Message { key: None, value: Vec::new(), headers: Vec::new(), timestamp: None };
        let emitted = OutputTally { messages: 2, bytes: 0 };
        assert_eq!(emitted.add_all(&[m.clone(), m], &caps()), Err(Breach::Outputs { limit: 3, produced: 4 }));
    }
}
