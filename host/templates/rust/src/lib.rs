//! `{{name}}`: a sluice stage. Upper-cases the ASCII letters of each message's
//! value; other bytes (UTF-8 sequences included) pass through unchanged. An
//! empty message is rejected as `invalid` and goes to the dead-letter file.
//!
//! Edit `process` to make it yours, then `sluice build` and `sluice test`.

wit_bindgen::generate!({ world: "plugin", path: "wit" });

use exports::sluice::pipeline::stage::{Guest, Message, Outcome, StageError};
use sluice::pipeline::log::{Level, log};

struct Stage;

impl Guest for Stage {
    /// Called once per instance with the stage's `config` table from the
    /// pipeline file, as JSON text (`{}` when there is none). Return an error
    /// to refuse it: the pipeline then does not start.
    fn init(config: String) -> Result<(), String> {
        log(Level::Debug, &format!("{{name}} starting with config {config}"));
        Ok(())
    }

    /// One message in; its outputs out (none to drop it, several to split
    /// it), or an error: `Invalid` is dead-lettered at once, `Transient` is
    /// retried with backoff.
    fn process(mut message: Message) -> Outcome {
        if message.value.is_empty() {
            return Err(StageError::Invalid("empty message".into()));
        }
        message.value.make_ascii_uppercase();
        Ok(vec![message])
    }

    /// Several messages in one call, one outcome each.
    fn process_batch(messages: Vec<Message>) -> Vec<Outcome> {
        messages.into_iter().map(Self::process).collect()
    }
}

export!(Stage);
