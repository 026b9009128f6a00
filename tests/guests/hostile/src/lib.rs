//! A stage written to hurt the host, straight against the WIT (no SDK, so no
//! guest-side check softens what reaches the host). Each message is a command:
//!
//! - `emit:<n>:<bytes>`    -> emits n messages of that many bytes, ignoring any error, then returns `done`
//! - `split:<n>:<bytes>`   -> returns n outputs of that many bytes
//! - `headers:<n>`         -> returns one output with n empty headers
//! - `reason:<bytes>`      -> fails `invalid` with a reason of that many bytes
//! - `forge`               -> logs and prints text with line breaks and terminal escapes, then echoes
//! - `poison`              -> stores a state key that makes every later `init` trap, then echoes
//! - `poison-slow`         -> like `poison`, but later `init`s spin forever instead
//! - `panic`               -> traps
//! - `transient`           -> fails `transient` (retried, then dead-lettered)
//! - `init-refuse:<bytes>` (config `{"refuse": <bytes>}`) -> `init` refuses with a reason that long
//!
//! Anything else is echoed.

wit_bindgen::generate!({ world: "sluice:pipeline/plugin", path: "../../../wit", generate_all });

use exports::sluice::pipeline::stage::{Guest, Message, Outcome, StageError};
use sluice::pipeline::types::Header;
use sluice::pipeline::{emit, log, state};

struct Hostile;

const POISON: &[u8] = b"poison";

fn message(value: Vec<u8>) -> Message {
    Message { key: None, value, headers: Vec::new(), timestamp: None }
}

/// `a:b` -> the numbers a and b.
fn two(arg: &str) -> (usize, usize) {
    let (a, b) = arg.split_once(':').unwrap_or((arg, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

impl Guest for Hostile {
    fn init(config: String) -> Result<(), String> {
        match state::get(POISON).as_deref() {
            Some(b"trap") => panic!("init found the poison"),
            Some(b"spin") => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            _ => {}
        }
        if let Some(n) = config.strip_prefix("{\"refuse\":").and_then(|r| r.strip_suffix('}')) {
            let n: usize = n.trim().parse().unwrap_or(0);
            return Err("\u{1b}[2J".to_string() + &"r".repeat(n));
        }
        Ok(())
    }

    fn process(m: Message) -> Outcome {
        let text = String::from_utf8_lossy(&m.value).into_owned();
        let (cmd, arg) = text.split_once(':').unwrap_or((text.as_str(), ""));
        match cmd {
            "emit" => {
                let (n, bytes) = two(arg);
                let payload = vec![b'e'; bytes];
                for _ in 0..n {
                    let _ = emit::emit(&message(payload.clone()));
                }
                Ok(vec![message(b"done".to_vec())])
            }
            "split" => {
                let (n, bytes) = two(arg);
                Ok((0..n).map(|_| message(vec![b's'; bytes])).collect())
            }
            "headers" => {
                let n: usize = arg.parse().unwrap_or(0);
                let header = Header { name: String::new(), value: Vec::new() };
                Ok(vec![Message { headers: vec![header; n], ..message(b"h".to_vec()) }])
            }
            "reason" => {
                let n: usize = arg.parse().unwrap_or(0);
                Err(StageError::Invalid("x".repeat(n)))
            }
            "forge" => {
                let forged = "ok\n2026-12-01T00:00:00Z  INFO sluice: all clear\u{1b}[31m\r";
                log::log(log::Level::Info, forged);
                println!("{forged}");
                Ok(vec![m])
            }
            "poison" | "poison-slow" => {
                state::set(POISON, if cmd == "poison" { b"trap" } else { b"spin" });
                Ok(vec![m])
            }
            "panic" => panic!("asked to"),
            "transient" => Err(StageError::Transient("asked to".into())),
            _ => Ok(vec![m]),
        }
    }

    fn process_batch(messages: Vec<Message>) -> Vec<Outcome> {
        messages.into_iter().map(Self::process).collect()
    }
}

export!(Hostile);
