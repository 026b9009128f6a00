//! Every key of the pipeline file, in the user's words: what its value must
//! be and an example of the form. `explain` uses it to word serde's errors;
//! a unit test below checks that every key serde knows is here, and that
//! the choices listed match serde's, so a new setting cannot be forgotten.

/// What a key's value must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Shape {
    /// A whole number, at least this.
    Whole(u64),
    /// A whole number, or "unlimited" (`limits::Limit<u64>`).
    WholeOrUnlimited,
    Bool,
    Text,
    Path,
    /// A humantime duration.
    Duration,
    /// A duration, or "none" (`limits::Limit<Duration>`).
    DurationOrNone,
    /// A byte size: "64MiB", "1GB" or a number of bytes.
    Size,
    /// A byte size, or "unlimited".
    SizeOrUnlimited,
    /// One of these strings.
    Choice(&'static [&'static str]),
    Table,
    /// `[[stages]]` tables.
    Stages,
    /// A list of strings.
    TextList,
    /// In words of its own.
    Words(&'static str),
}

/// Durations are read by humantime: an example says more than its grammar.
pub(super) const DURATION: &str = "a duration such as \"100ms\", \"2s\" or \"1m 30s\"";
const SIZE: &str = "a size such as \"64MiB\" or \"1GB\", or a number of bytes";

impl Shape {
    /// What the value must be, to follow "must be".
    pub(super) fn describe(self) -> String {
        match self {
            Shape::Whole(0) => "a whole number".into(),
            Shape::Whole(min) => format!("a whole number, at least {min}"),
            Shape::WholeOrUnlimited => "a whole number, or \"unlimited\"".into(),
            Shape::Bool => "`true` or `false`".into(),
            Shape::Text => "text in quotes".into(),
            Shape::Path => "a path in quotes".into(),
            Shape::Duration => DURATION.into(),
            Shape::DurationOrNone => format!("{DURATION}, or \"none\""),
            Shape::Size => SIZE.into(),
            Shape::SizeOrUnlimited => "a size such as \"64MiB\" or \"1GB\", a number of bytes, or \"unlimited\"".into(),
            Shape::Choice(choices) => choice_words(choices),
            Shape::Table => "a table".into(),
            Shape::Stages => "one `[[stages]]` table per stage".into(),
            Shape::TextList => "a list of texts in quotes".into(),
            Shape::Words(words) => words.into(),
        }
    }

    /// Whether `describe` already shows the form, so an example would repeat it.
    pub(super) fn shows_its_form(self) -> bool {
        matches!(
            self,
            Shape::Duration
                | Shape::DurationOrNone
                | Shape::Size
                | Shape::SizeOrUnlimited
                | Shape::Choice(_)
                | Shape::Stages
        )
    }

    /// serde's words for the type it expected, in ours, for a key missing
    /// from [`KEYS`]; `None` where they say nothing a user can act on.
    pub(super) fn from_serde(expected: &str) -> Option<Shape> {
        let expected = expected.trim();
        Some(match expected {
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => Shape::Whole(0),
            "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => Shape::Words("a whole number"),
            "f32" | "f64" => Shape::Words("a number"),
            "a boolean" => Shape::Bool,
            "a string" | "a borrowed string" | "a character" => Shape::Text,
            "path string" => Shape::Path,
            "a duration" => Shape::Duration,
            "an integer or string" | "parsable string" | "integer overflow" => Shape::Size,
            "a sequence" => Shape::Words("a list in square brackets"),
            "a map" => Shape::Table,
            _ if expected.starts_with("struct ") => Shape::Table,
            _ => return None,
        })
    }
}

/// `"a" or "b"`, `one of "a", "b" or "c"`.
pub(super) fn choice_words(choices: &[&str]) -> String {
    let quoted: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
    match quoted.as_slice() {
        [] => "nothing".into(),
        [one] => one.clone(),
        [rest @ .., last] if rest.len() == 1 => format!("{} or {last}", rest[0]),
        [rest @ .., last] => format!("one of {} or {last}", rest.join(", ")),
    }
}

/// One key: where it is (its last keys, `*` for any one key), its shape, an
/// example of the form, and, for keys named by `*`, what to call them.
pub(super) struct Key {
    pub(super) path: &'static str,
    pub(super) shape: Shape,
    pub(super) example: &'static str,
    pub(super) subject: Option<&'static str>,
}

const fn key(path: &'static str, shape: Shape, example: &'static str) -> Key {
    Key { path, shape, example, subject: None }
}

const fn entries(path: &'static str, shape: Shape, example: &'static str, subject: &'static str) -> Key {
    Key { path, shape, example, subject: Some(subject) }
}

use Shape::*;

/// Every key, by the end of its path (array indexes left out): `limits.memory`
/// is `[limits] memory` and a stage's `limits = { memory = .. }`. The longest
/// path that matches wins.
pub(super) const KEYS: &[Key] = &[
    key("version", Whole(1), "version = 1"),
    key("shutdown_timeout", Duration, "shutdown_timeout = \"30s\""),
    key("source", Table, "source = { path = \"input.jsonl\" }"),
    key("sink", Table, "sink = { path = \"output.jsonl\" }"),
    key("dead_letter", Table, "dead_letter = { path = \"dead-letter.jsonl\" }"),
    key("engine", Table, "engine = { allocator = \"on-demand\" }"),
    key("state", Table, "state = { backend = \"memory\" }"),
    key("metrics", Table, "metrics = { addr = \"127.0.0.1:9898\" }"),
    key("limits", Table, "limits = { timeout = \"5s\", memory = \"64MiB\" }"),
    key("stages", Stages, "[[stages]]"),
    // [source]
    key("source.type", Choice(&["file", "stdin", "nats", "redis"]), "type = \"file\""),
    key("source.path", Path, "path = \"input.jsonl\""),
    key("format", Choice(&["jsonl", "lines"]), "format = \"lines\""),
    key("max_line_bytes", Whole(1), "max_line_bytes = 1048576"),
    key("skip_lines", Whole(0), "skip_lines = 1000"),
    // [sink]
    key("sink.type", Choice(&["file", "stdout", "nats", "redis"]), "type = \"file\""),
    key("sink.path", Path, "path = \"output.jsonl\""),
    key("flush_interval", Duration, "flush_interval = \"100ms\""),
    // [dead_letter]
    key("dead_letter.type", Choice(&["file", "nats", "redis"]), "type = \"file\""),
    key("dead_letter.path", Path, "path = \"dead-letter.jsonl\""),
    // [source.nats], [sink.nats], [dead_letter.nats]
    key("nats", Table, "[source.nats]"),
    key("nats.url", Text, "url = \"nats://127.0.0.1:4222\""),
    key("nats.stream", Text, "stream = \"ORDERS\""),
    key("nats.consumer", Text, "consumer = \"enrich\""),
    key("nats.subject", Text, "subject = \"orders.eu.>\""),
    key("ack_wait", Duration, "ack_wait = \"30s\""),
    key("max_ack_pending", Whole(1), "max_ack_pending = 1000"),
    key("key_header", Text, "key_header = \"Sluice-Key\""),
    key("key_token", Whole(1), "key_token = 3"),
    key("max_in_flight", Whole(1), "max_in_flight = 256"),
    // [source.redis], [sink.redis], [dead_letter.redis]
    key("redis", Table, "[source.redis]"),
    key("redis.url", Text, "url = \"redis://127.0.0.1:6379\""),
    key("redis.stream", Text, "stream = \"orders\""),
    key("redis.consumer", Text, "consumer = \"worker-1\""),
    key("group", Text, "group = \"enrich\""),
    key("claim_idle", Duration, "claim_idle = \"30s\""),
    key("max_len", Whole(1), "max_len = 1000000"),
    key("value_field", Text, "value_field = \"value\""),
    key("key_field", Text, "key_field = \"key\""),
    key("timestamp_field", Text, "timestamp_field = \"timestamp\""),
    // [engine]
    key("allocator", Choice(&["pooling", "on-demand"]), "allocator = \"on-demand\""),
    key("memory_budget", SizeOrUnlimited, "memory_budget = \"8GiB\""),
    // [state]
    key("backend", Choice(&["redb", "memory"]), "backend = \"memory\""),
    key("state.path", Path, "path = \"state.redb\""),
    key("checkpoint_every", Whole(0), "checkpoint_every = 10000"),
    key("checkpoint_interval", Duration, "checkpoint_interval = \"5s\""),
    key("max_pending_bytes", Size, "max_pending_bytes = \"256MiB\""),
    // [metrics]
    key("metrics.addr", Words("an IP address and a port to listen on, in quotes"), "addr = \"127.0.0.1:9898\""),
    // [limits], and a stage's `limits`
    key("fuel", WholeOrUnlimited, "fuel = 100000000"),
    key("timeout", DurationOrNone, "timeout = \"5s\""),
    key("memory", Size, "memory = \"64MiB\""),
    key("max_outputs", Whole(0), "max_outputs = 100"),
    key("max_output_bytes", Size, "max_output_bytes = \"1MiB\""),
    key("max_log_records", Whole(0), "max_log_records = 100"),
    key("max_consecutive_failures", Whole(0), "max_consecutive_failures = 1000"),
    key("max_total_output_bytes", Size, "max_total_output_bytes = \"64MiB\""),
    key("init_timeout", DurationOrNone, "init_timeout = \"60s\""),
    key("max_state_key_bytes", Size, "max_state_key_bytes = \"4KiB\""),
    key("max_state_value_bytes", Size, "max_state_value_bytes = \"1MiB\""),
    key("max_state_bytes", Size, "max_state_bytes = \"64MiB\""),
    key("max_http_requests", Whole(0), "max_http_requests = 64"),
    key("max_http_requests_per_instance", Whole(0), "max_http_requests_per_instance = 16"),
    // [[stages]]
    key("name", Text, "name = \"large-orders\""),
    key("plugin", Path, "plugin = \"plugins/json-filter.wasm\""),
    key("config", Table, "config = { field = \"amount\", gte = 100 }"),
    key("grants", Table, "grants = { env = { TZ = \"UTC\" } }"),
    key("concurrency", Whole(1), "concurrency = 4"),
    key("order", Choice(&["ordered", "unordered"]), "order = \"unordered\""),
    key("partition_by", Choice(&["key"]), "partition_by = \"key\""),
    key("buffer", Whole(1), "buffer = 64"),
    key("retries", Table, "retries = { max = 3, backoff = \"100ms\" }"),
    key("batch", Whole(1), "batch = 64"),
    key("isolate", Bool, "isolate = true"),
    key("recycle_after", Whole(1), "recycle_after = 10000"),
    key("batch_window", Duration, "batch_window = \"1ms\""),
    key("emit", Choice(&["immediate", "on-success"]), "emit = \"on-success\""),
    // a stage's `retries`
    key("retries.max", Whole(0), "max = 3"),
    key("backoff", Duration, "backoff = \"100ms\""),
    key("max_backoff", Duration, "max_backoff = \"10s\""),
    // a stage's `grants`
    key("read_dirs", Table, "read_dirs = { \"/lookup\" = \"data/lookup\" }"),
    entries("read_dirs.*", Path, "read_dirs = { \"/lookup\" = \"data/lookup\" }", "each directory in `read_dirs`"),
    key("env", Table, "env = { TZ = \"UTC\" }"),
    entries("env.*", Text, "env = { TZ = \"UTC\" }", "each value in `env`"),
    key("allow_http", TextList, "allow_http = [\"api.example.com:443\"]"),
];

/// The entry for the key at `path` (keys from the top, array indexes left out).
pub(super) fn lookup(path: &[&str]) -> Option<&'static Key> {
    KEYS.iter()
        .filter(|k| {
            let want: Vec<&str> = k.path.split('.').collect();
            want.len() <= path.len()
                && want.iter().zip(&path[path.len() - want.len()..]).all(|(w, p)| *w == "*" || w == p)
        })
        .max_by_key(|k| k.path.split('.').count())
}

/// The key's name as the user wrote it, or what to call it.
pub(super) fn subject(key: Option<&Key>, path: &[&str]) -> String {
    match (key.and_then(|k| k.subject), path.last()) {
        (Some(subject), _) => subject.to_string(),
        (None, Some(last)) => format!("`{last}`"),
        (None, None) => "this value".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document `{ a = { b = { c = VALUE } } }` for path `[a, b, c]`, with
    /// `stages` an array of one table.
    fn document(path: &[&str], value: &str) -> String {
        let mut text = value.to_string();
        for key in path.iter().rev() {
            text = if *key == "stages" { format!("{key} = [{text}]") } else { format!("{key} = {text}") };
            text = format!("{{ {text} }}");
        }
        // The outermost braces are the document itself.
        text[1..text.len() - 1].trim().to_string()
    }

    /// The keys serde allows in the table at `path`, if it is a table with
    /// fixed keys (not a stage's `config`, `env` or `read_dirs`).
    fn keys_at(path: &[&str]) -> Option<Vec<String>> {
        let mut inner = path.to_vec();
        inner.push("zz_nope");
        let text = document(&inner, "1");
        let err = toml::from_str::<super::super::schema::Document>(&text).err()?;
        let rest = err.message().strip_prefix("unknown field `zz_nope`, expected ")?;
        Some(rest.split('`').skip(1).step_by(2).map(str::to_string).collect())
    }

    #[test]
    fn every_key_serde_knows_has_an_entry() {
        let mut tables = vec![Vec::<String>::new()];
        let mut checked = 0;
        while let Some(path) = tables.pop() {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            let Some(keys) = keys_at(&refs) else { continue };
            for key in keys {
                let mut full = refs.clone();
                full.push(&key);
                assert!(lookup(&full).is_some(), "add `{}` to KEYS in config/keys.rs", full.join("."));
                checked += 1;
                tables.push(full.iter().map(|s| s.to_string()).collect());
            }
        }
        // The top level, every section and a stage's tables were reached.
        assert!(checked > 60, "only {checked} keys found");
    }

    #[test]
    fn choices_are_serdes() {
        for k in KEYS {
            let Shape::Choice(choices) = k.shape else { continue };
            let mut path: Vec<&str> = k.path.split('.').collect();
            if path.len() == 1 {
                // A stage's key, or the only section that has it.
                let section = match k.path {
                    "format" => "source",
                    "allocator" => "engine",
                    "backend" => "state",
                    _ => "stages",
                };
                path.insert(0, section);
            }
            let text = document(&path, "\"zz_nope\"");
            let err = toml::from_str::<super::super::schema::Document>(&text).unwrap_err();
            let listed: Vec<&str> = err.message().split('`').skip(3).step_by(2).collect();
            assert_eq!(listed, choices, "{}: {}", k.path, err.message());
        }
    }

    #[test]
    fn the_longest_matching_path_wins() {
        assert_eq!(lookup(&["stages", "limits", "memory"]).unwrap().path, "memory");
        assert_eq!(lookup(&["stages", "retries", "max"]).unwrap().path, "retries.max");
        assert_eq!(lookup(&["stages", "grants", "env", "name"]).unwrap().path, "env.*");
        assert_eq!(lookup(&["sink", "type"]).unwrap().shape, Choice(&["file", "stdout", "nats", "redis"]));
        assert_eq!(lookup(&["dead_letter", "nats", "url"]).unwrap().path, "nats.url");
        assert!(lookup(&["nothing_like_it"]).is_none());
    }

    #[test]
    fn choices_read_as_a_sentence() {
        assert_eq!(choice_words(&["file"]), "\"file\"");
        assert_eq!(choice_words(&["a", "b"]), "\"a\" or \"b\"");
        assert_eq!(choice_words(&["a", "b", "c"]), "one of \"a\", \"b\" or \"c\"");
    }
}
