//! `upper`: upper-cases the ASCII letters of each message's value, in place.
//! Other bytes (UTF-8 sequences included) pass through unchanged, so any
//! value is accepted, JSON or not. No config.
//!
//! The smallest useful stage: the benchmarks use it to measure what a stage
//! costs per message beyond the work it does.

use sluice_sdk::{Message, NoConfig, Stage, StageError};

/// Upper-cases ASCII.
#[derive(Debug)]
pub struct Upper;

impl Stage for Upper {
    type Config = NoConfig;

    fn new(_config: NoConfig) -> Result<Self, String> {
        Ok(Upper)
    }

    fn process(&mut self, mut message: Message) -> Result<Vec<Message>, StageError> {
        message.value.make_ascii_uppercase();
        Ok(vec![message])
    }
}

sluice_sdk::export_stage!(Upper);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_cases_ascii_only() {
        let out = Upper.process(Message::new("héllo, wörld 42".as_bytes().to_vec())).unwrap();
        assert_eq!(out, vec![Message::new("HéLLO, WöRLD 42".as_bytes().to_vec())]);
    }
}
