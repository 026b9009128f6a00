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
//! - `batch`              -> outputs how many messages the call it came in held (1 for `process`)
//! - `incr:<k>`           -> adds 1 to the counter `<k>` in state, outputs `<k>=<count>`
//! - `incrflaky:<k>`      -> like `incr`, but fails `transient` the first time this instance sees `<k>`
//! - `get:<k>`            -> outputs the state value of `<k>`, or `none`
//! - `del:<k>`            -> deletes `<k>` from state, outputs `deleted <k>`
//! - `scan:<prefix>`      -> outputs the state entries under `<prefix>` as `k=v,k=v`
//! - `setbig:<k>:<bytes>` -> sets `<k>` to that many bytes of `x` in state, outputs `<k>:<bytes>`
//! - `longkey:<bytes>`    -> sets a key of that many bytes of `k` to `1` in state, outputs `set`
//! - `len:<k>`            -> outputs the length of the state value of `<k>`, or `none`
//! - `emit:<n>[:<end>]`   -> emits `e1`..`e<n>`, then: `end` = `invalid` fails the message, `panic` traps,
//!   anything else (or nothing) returns `final`
//! - `shortbatch`         -> in a batch, makes `process-batch` return one outcome too few (a broken stage)
//! - `sleep:<ms>[:<rest>]`-> waits on a WASI clock (async host I/O), then echoes `<rest>` (or the message)
//! - `flaky:<n>:<id>`     -> `transient` the first n times this instance sees `<id>`, then echoes
//! - `keyed:<key>:<rest>` -> outputs `<rest>` with the message key set to `<key>`
//! - `multiline`          -> outputs a JSON document written over several lines
//! - `tty`                -> outputs whether stdout and stderr are terminals, as `stdout:<bool> stderr:<bool>`
//! - `work:<n>`           -> n rounds of pure integer work (xorshift), then outputs the result:
//!                           CPU-bound, no host calls
//!
//! Hostile ones, for the sandbox tests:
//! - `loop`               -> spins forever
//! - `alloc:<mib>`        -> allocates and touches that many MiB, 1 MiB at a time
//! - `recurse:<depth>`    -> recurses that deep on the wasm call stack
//! - `deepstack:<depth>`  -> recurses that deep with frames on the shadow stack in linear memory
//! - `big:<bytes>`        -> one output of that many bytes
//! - `logflood:<n>`       -> n log records
//! - `read:<path>`        -> outputs the file's contents, or `invalid` with the error
//! - `write:<path>`       -> writes the file, or `invalid` with the error
//! - `connect:<addr>`     -> opens a TCP connection, or `invalid` with the error
//! - `env`                -> outputs the environment as `K=V` lines
//! - `http:<url>`         -> GETs the URL: outputs `<status> <body>`, or `invalid` with the error
//!
//! Config: `{ "prefix": "..." }` is prepended to echoed values; `{ "fail_init": true }` refuses to start;
//! `{ "init_sleep_ms": n }` waits that long in `init` (a stage slow to start).

use serde::Deserialize;
use sluice_sdk::{Message, Stage, StageError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    fail_init: bool,
    #[serde(default)]
    init_sleep_ms: u64,
}

struct TestStage {
    prefix: String,
    seen: u64,
    attempts: std::collections::HashMap<String, u32>,
    /// Messages in the current call.
    batch: usize,
}

impl Stage for TestStage {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.fail_init {
            return Err("fail_init was set".into());
        }
        sleep(config.init_sleep_ms);
        Ok(TestStage { prefix: config.prefix, seen: 0, attempts: Default::default(), batch: 1 })
    }

    fn process_batch(&mut self, messages: Vec<Message>) -> Vec<Result<Vec<Message>, StageError>> {
        self.batch = messages.len();
        let short = messages.iter().any(|m| m.value == b"shortbatch");
        let mut outcomes: Vec<_> = messages.into_iter().map(|m| self.process(m)).collect();
        if short {
            outcomes.pop();
        }
        self.batch = 1;
        outcomes
    }

    fn process(&mut self, mut message: Message) -> Result<Vec<Message>, StageError> {
        self.seen += 1;
        let text = String::from_utf8_lossy(&message.value).into_owned();
        let (cmd, arg) = text.split_once(':').unwrap_or((text.as_str(), ""));
        match cmd {
            "invalid" => Err(StageError::invalid(arg)),
            "transient" => Err(StageError::transient(arg)),
            "panic" => panic!("{arg}"),
            "tty" => {
                use std::io::IsTerminal;
                let tty =
                    format!("stdout:{} stderr:{}", std::io::stdout().is_terminal(), std::io::stderr().is_terminal());
                message.value = tty.into_bytes();
                Ok(vec![message])
            }
            "split" => {
                let n: usize = arg.parse().map_err(|_| StageError::invalid("split needs a count"))?;
                Ok((0..n).map(|i| Message::new(i.to_string())).collect())
            }
            "drop" => Ok(Vec::new()),
            "sleep" => {
                let (ms, rest) = arg.split_once(':').unwrap_or((arg, ""));
                let ms: u64 = ms.parse().map_err(|_| StageError::invalid("sleep needs milliseconds"))?;
                sleep(ms);
                let value = if rest.is_empty() { message.value.clone() } else { rest.as_bytes().to_vec() };
                Ok(vec![Message { value, ..message }])
            }
            "flaky" => {
                let (n, id) = arg.split_once(':').unwrap_or((arg, ""));
                let n: u32 = n.parse().map_err(|_| StageError::invalid("flaky needs a count"))?;
                let tries = self.attempts.entry(id.to_string()).or_default();
                *tries += 1;
                if *tries <= n {
                    return Err(StageError::transient(format!("{id}: try {tries} of {n} fails")));
                }
                Ok(vec![Message::new(id)])
            }
            "work" => {
                let n: u64 = arg.parse().map_err(|_| StageError::invalid("work needs a count"))?;
                Ok(vec![Message::new(work(n).to_string())])
            }
            "multiline" => Ok(vec![Message::new("{\n  \"b\": 1,\r\n  \"a\": 12345678901234567890123\n}")]),
            "keyed" => {
                let (key, rest) = arg.split_once(':').unwrap_or((arg, ""));
                let mut out = Message::new(rest);
                out.key = Some(key.as_bytes().to_vec());
                Ok(vec![out])
            }
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
                }
            }
            "alloc" => {
                let mib: usize = arg.parse().map_err(|_| StageError::invalid("alloc needs MiB"))?;
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                for i in 0..mib {
                    hoard.push(vec![i as u8; 1 << 20]);
                }
                Ok(vec![Message::new(format!("allocated {}", hoard.len()))])
            }
            "recurse" => {
                let depth: u64 = arg.parse().map_err(|_| StageError::invalid("recurse needs a depth"))?;
                Ok(vec![Message::new(recurse(depth).to_string())])
            }
            "deepstack" => {
                let depth: u64 = arg.parse().map_err(|_| StageError::invalid("deepstack needs a depth"))?;
                Ok(vec![Message::new(deep_stack(depth).to_string())])
            }
            "big" => {
                let n: usize = arg.parse().map_err(|_| StageError::invalid("big needs a size"))?;
                Ok(vec![Message::new(vec![b'x'; n])])
            }
            "logflood" => {
                let n: usize = arg.parse().map_err(|_| StageError::invalid("logflood needs a count"))?;
                for i in 0..n {
                    sluice_sdk::info!("flood {i}");
                }
                Ok(vec![message])
            }
            "read" => match std::fs::read(arg) {
                Ok(bytes) => Ok(vec![Message::new(bytes)]),
                Err(e) => Err(StageError::invalid(format!("read {arg}: {e}"))),
            },
            "write" => match std::fs::write(arg, b"owned") {
                Ok(()) => Ok(vec![Message::new("written")]),
                Err(e) => Err(StageError::invalid(format!("write {arg}: {e}"))),
            },
            "connect" => match connect(arg) {
                Ok(()) => Ok(vec![Message::new("connected")]),
                Err(e) => Err(StageError::invalid(format!("connect {arg}: {e}"))),
            },
            "http" => match sluice_sdk::http::get(arg) {
                Ok(r) => Ok(vec![Message::new(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))]),
                Err(e) => Err(StageError::invalid(e.to_string())),
            },
            "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                Ok(vec![Message::new(vars.join(","))])
            }
            "count" => Ok(vec![Message::new(self.seen.to_string())]),
            "incr" => {
                let n = sluice_sdk::state::get_u64(arg.as_bytes())?.unwrap_or(0) + 1;
                sluice_sdk::state::set_u64(arg.as_bytes(), n);
                Ok(vec![Message::new(format!("{arg}={n}"))])
            }
            "incrflaky" => {
                let n = sluice_sdk::state::get_u64(arg.as_bytes())?.unwrap_or(0) + 1;
                sluice_sdk::state::set_u64(arg.as_bytes(), n);
                let tries = self.attempts.entry(format!("incrflaky:{arg}")).or_default();
                *tries += 1;
                if *tries == 1 {
                    return Err(StageError::transient("first try fails after writing state"));
                }
                Ok(vec![Message::new(format!("{arg}={n}"))])
            }
            "get" => {
                let value = sluice_sdk::state::get(arg.as_bytes());
                let text = value.map_or_else(|| "none".to_string(), |v| String::from_utf8_lossy(&v).into_owned());
                Ok(vec![Message::new(text)])
            }
            "del" => {
                sluice_sdk::state::delete(arg.as_bytes());
                Ok(vec![Message::new(format!("deleted {arg}"))])
            }
            "setbig" => {
                let (key, bytes) = arg.split_once(':').ok_or_else(|| StageError::invalid("setbig:<k>:<bytes>"))?;
                let n: usize = bytes.parse().map_err(|_| StageError::invalid("setbig needs a byte count"))?;
                sluice_sdk::state::set(key.as_bytes(), &vec![b'x'; n]);
                Ok(vec![Message::new(format!("{key}:{n}"))])
            }
            "longkey" => {
                let n: usize = arg.parse().map_err(|_| StageError::invalid("longkey needs a byte count"))?;
                sluice_sdk::state::set(&vec![b'k'; n], b"1");
                Ok(vec![Message::new("set")])
            }
            "len" => {
                let len =
                    sluice_sdk::state::get(arg.as_bytes()).map_or_else(|| "none".to_string(), |v| v.len().to_string());
                Ok(vec![Message::new(len)])
            }
            "scan" => {
                let entries: Vec<String> = sluice_sdk::state::scan(arg.as_bytes(), 100)
                    .into_iter()
                    .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v)))
                    .collect();
                Ok(vec![Message::new(entries.join(","))])
            }
            "emit" => {
                let (n, end) = arg.split_once(':').unwrap_or((arg, ""));
                let n: u32 = n.parse().map_err(|_| StageError::invalid("emit needs a count"))?;
                for i in 1..=n {
                    sluice_sdk::emit(Message::new(format!("e{i}"))).map_err(StageError::invalid)?;
                }
                match end {
                    "invalid" => Err(StageError::invalid("failed after emitting")),
                    "panic" => panic!("trapped after emitting"),
                    _ => Ok(vec![Message::new("final")]),
                }
            }
            "batch" => Ok(vec![Message::new(self.batch.to_string())]),
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

/// Waits on the host's monotonic clock: async on the host, so other messages go on meanwhile.
#[cfg(target_arch = "wasm32")]
fn sleep(ms: u64) {
    wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
}

#[cfg(not(target_arch = "wasm32"))]
fn sleep(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Opens a TCP connection through `wasi:sockets`, as any guest language would.
#[cfg(target_arch = "wasm32")]
fn connect(addr: &str) -> Result<(), String> {
    use wasip2::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
    let addr: std::net::SocketAddrV4 = addr.parse().map_err(|e| format!("bad address: {e}"))?;
    let network = wasip2::sockets::instance_network::instance_network();
    let socket =
        wasip2::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4).map_err(|e| format!("{e:?}"))?;
    let [a, b, c, d] = addr.ip().octets();
    let target = IpSocketAddress::Ipv4(Ipv4SocketAddress { port: addr.port(), address: (a, b, c, d) });
    socket.start_connect(&network, target).map_err(|e| format!("{e:?}"))?;
    socket.subscribe().block();
    socket.finish_connect().map(drop).map_err(|e| format!("{e:?}"))
}

#[cfg(not(target_arch = "wasm32"))]
fn connect(_addr: &str) -> Result<(), String> {
    Err("only in a component".into())
}

/// `n` rounds of xorshift64 seeded from `n`: a dependent chain the optimiser
/// cannot shorten, and its result is the output, so it cannot be removed.
fn work(n: u64) -> u64 {
    let mut x = n ^ 0x9E37_79B9_7F4A_7C15;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// Recursion the optimiser cannot flatten, with no frame in linear memory.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == 0 { 1 } else { std::hint::black_box(recurse(std::hint::black_box(depth - 1))).wrapping_mul(3) ^ depth }
}

/// Recursion whose frames live in linear memory (the shadow stack).
#[inline(never)]
fn deep_stack(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 256]);
    if depth == 0 { frame[0] as u64 } else { deep_stack(depth - 1).wrapping_add(frame[255] as u64) }
}

sluice_sdk::export_stage!(TestStage);
