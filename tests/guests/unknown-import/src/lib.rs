//! A stage that imports `test:unknown/teleport`, to test that the host refuses it at load.
wit_bindgen::generate!({ world: "test:unknown/stage-plus", path: ["../../../wit", "wit"], generate_all });

use exports::sluice::pipeline::stage::{Guest, Message, Outcome};

struct Stage;

impl Guest for Stage {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
    fn process(message: Message) -> Outcome {
        test::unknown::teleport::beam("x");
        Ok(vec![message])
    }
    fn process_batch(messages: Vec<Message>) -> Vec<Outcome> {
        messages.into_iter().map(Self::process).collect()
    }
}

export!(Stage);
