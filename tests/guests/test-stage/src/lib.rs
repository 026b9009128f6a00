//! A stage whose behaviour each message chooses, for the host's tests.
//!
//! The message value is a command; anything else is echoed unchanged.
//! - `invalid:<reason>`   -> `invalid` error with that reason
//! - `transient:<reason>` -> `transient` error
//! - `panic:<text>`       -> panics with that text (the instance traps)
//! - `split:<n>`          -> n outputs `<i>` for i in 0..n
//! - `drop`               -> no output
//! - `log:<text>`         -> logs at info, then echoes
//! - `print:<text>`       -> writes the text to stdout and stderr, then echoes
//! - `count`              -> outputs how many messages this instance has seen
//!
//! Config: `{ "prefix": "..." }` is prepended to echoed values; `{ "fail_init": true }` refuses to start.

use serde::Deserialize;
use sluice_sdk::{Message, Stage, StageError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    fail_init: bool,
}

struct TestStage {
    prefix: String,
    seen: u64,
}

impl Stage for TestStage {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.fail_init {
            return Err("fail_init was set".into());
        }
        Ok(TestStage { prefix: config.prefix, seen: 0 })
    }

    fn process(&mut self, mut message: Message) -> Result<Vec<Message>, StageError> {
        self.seen += 1;
        let text = String::from_utf8_lossy(&message.value).into_owned();
        let (cmd, arg) = text.split_once(':').unwrap_or((text.as_str(), ""));
        match cmd {
            "invalid" => Err(StageError::invalid(arg)),
            "transient" => Err(StageError::transient(arg)),
            "panic" => panic!("{arg}"),
            "split" => {
                let n: usize = arg.parse().map_err(|_| StageError::invalid("split needs a count"))?;
                Ok((0..n).map(|i| Message::new(i.to_string())).collect())
            }
            "drop" => Ok(Vec::new()),
            "count" => Ok(vec![Message::new(self.seen.to_string())]),
            _ => {
                match cmd {
                    "log" => sluice_sdk::info!("{arg}"),
                    "print" => {
                        println!("{arg}");
                        eprintln!("{arg}");
                    }
                    _ => {}
                }
                let mut value = self.prefix.clone().into_bytes();
                value.extend_from_slice(&message.value);
                message.value = value;
                Ok(vec![message])
            }
        }
    }
}

sluice_sdk::export_stage!(TestStage);
