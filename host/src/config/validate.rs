//! What deserialisation cannot check: names, files, ranges, settings that
//! exclude each other, connectors' settings. Every problem is collected, each
//! with its place in the file when it has one.

use super::pipeline::PipelineConfig;
use super::sections::{SinkKind, SourceKind};
use super::stage::StageConfig;
use super::{ConfigError, ConfigErrors, VERSION};
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

impl PipelineConfig {
    /// Checks what deserialisation cannot, collecting every problem.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |span: Range<usize>, message: String| {
            errors.push(ConfigError::new(self.file.as_deref(), self.text.as_deref(), Some(span), message));
        };
        if *self.version.get_ref() != VERSION {
            err(
                self.version.span(),
                format!("unsupported version {}: this sluice reads version {VERSION}", self.version.get_ref()),
            );
        }
        // Without stages, a pipeline copies: worth it only to or from a
        // broker (loading a stream from a file, reading one out).
        let bridge = self.source.kind().is_broker() || matches!(self.sink.kind(), SinkKind::Nats | SinkKind::Redis);
        if self.stages.is_empty() && !bridge {
            err(0..0, "no stages: add at least one [[stages]] table with a `name` and a `plugin`".into());
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, stage) in self.stages.iter().enumerate() {
            self.validate_stage(stage, (i, &mut seen), &mut err);
        }
        self.validate_files(&mut err);
        self.validate_connectors(&mut err);
        if self.source.max_line_bytes == 0 {
            err(0..0, "source.max_line_bytes must be at least 1".into());
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
    }

    /// Stage `index`'s settings; `seen` holds the names of the stages before it.
    fn validate_stage<'a>(
        &self,
        stage: &'a StageConfig,
        (index, seen): (usize, &mut HashMap<&'a str, usize>),
        err: &mut impl FnMut(Range<usize>, String),
    ) {
        let t = &stage.table;
        let name = stage.name();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            err(t.name.span(), format!("stage name `{name}` must be non-empty ASCII letters, digits, `-` or `_`"));
        }
        if let Some(first) = seen.insert(name, index) {
            err(t.name.span(), format!("stage name `{name}` is used twice (stages {} and {})", first + 1, index + 1));
        }
        let plugin = self.resolve(stage.plugin());
        // A path that exists but is not a file (a directory, a FIFO) is
        // named as such when the stage is loaded.
        let missing = std::fs::metadata(&plugin).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        if stage.native_stage().is_none() && missing {
            err(
                t.plugin.span(),
                format!(
                    "stage `{name}`: plugin file {} not found: build the stage first (`sluice build` in its \
                     project), or fix the path (a relative one is from this file's directory)",
                    plugin.display()
                ),
            );
        }
        if !stage.config().is_object() {
            err(
                t.name.span(),
                format!("stage `{name}`: its config must be a table (a JSON object), not {}", stage.config()),
            );
        }
        for (guest, host) in &stage.grants().read_dirs {
            let host = self.resolve(host);
            if !guest.starts_with('/') {
                err(
                    t.grants.span(),
                    format!("stage `{name}`: read_dirs key `{guest}` must be an absolute path, e.g. `/data`"),
                );
            }
            if !host.is_dir() {
                err(
                    t.grants.span(),
                    format!("stage `{name}`: read_dirs `{guest}`: directory {} not found", host.display()),
                );
            }
        }
        if *t.concurrency.get_ref() == 0 {
            err(t.concurrency.span(), format!("stage `{name}`: concurrency must be at least 1"));
        }
        if *t.buffer.get_ref() == 0 {
            err(t.buffer.span(), format!("stage `{name}`: buffer must be at least 1"));
        }
        if let Some(n) = t.recycle_after.as_ref().filter(|n| *n.get_ref() == 0) {
            err(n.span(), format!("stage `{name}`: recycle_after must be at least 1 (or left out)"));
        }
        if let Some(batch) = &t.batch {
            if *batch.get_ref() == 0 {
                err(batch.span(), format!("stage `{name}`: batch must be at least 1"));
            }
            if *batch.get_ref() > 1 && t.isolate {
                err(batch.span(), format!("stage `{name}`: `isolate = true` runs each message alone; remove `batch`"));
            }
            if *batch.get_ref() > 1 && t.partition_by.is_some() {
                err(
                    batch.span(),
                    format!("stage `{name}`: keyed stages run one message per key at a time; remove `batch`"),
                );
            }
        }
        if let (Some(p), Some(_)) = (&t.partition_by, t.order) {
            err(p.span(), format!("stage `{name}`: `partition_by` sets per-key order; remove `order`"));
        }
        for key in stage.grants().env.keys() {
            if key.is_empty() || key.contains('=') {
                err(t.grants.span(), format!("stage `{name}`: env name `{key}` must be non-empty and contain no `=`"));
            }
        }
    }

    /// Two outputs renamed onto one path would silently lose one of them.
    fn validate_files(&self, err: &mut impl FnMut(Range<usize>, String)) {
        if self.dead_letter.as_ref().and_then(|d| d.path()) == Some(Path::new("-")) {
            err(
                0..0,
                "dead letters go to a file, not `-` (standard output carries the outputs): give a path, or \
                 /dev/stderr"
                    .into(),
            );
        }
        let dead = self.dead_letter_path();
        let output = self.output_path();
        // A device or pipe (`/dev/null`) is written as it goes, never renamed onto.
        let same = |a: &Path, b: &Path| !crate::fs::is_stream(a) && crate::fs::same_file(a, b);
        if let (Some(output), Some(dead)) = (&output, &dead)
            && same(output, dead)
        {
            err(
                0..0,
                format!("the sink and the dead-letter file are both {}: give them different paths", dead.display()),
            );
        }
        // Nothing the run reads or keeps may be written over: its input,
        // this file, its stages' plugins, its state.
        let mut kept = Vec::new();
        if let Some(input) = self.input_path() {
            kept.push(("the source", input));
        }
        if let Some(file) = &self.file {
            kept.push(("the pipeline file", file.clone()));
        }
        for stage in self.stages.iter().filter(|s| s.native_stage().is_none()) {
            kept.push(("a stage's plugin", self.resolve(stage.plugin())));
        }
        if let Some(state) = self.state_path() {
            kept.push(("the state file", state));
        }
        let written = [("the sink", output.as_deref()), ("the dead-letter file", dead.as_deref())];
        for (what, path) in written {
            let Some(path) = path else { continue };
            if let Some((kept, _)) = kept.iter().find(|(_, kept)| same(kept, path)) {
                err(0..0, format!("{what} would overwrite {kept} {}: give it another path", path.display()));
            }
            if path.is_dir() {
                err(0..0, format!("{what} {} is a directory: give a file path", path.display()));
            }
        }
    }

    /// Each connector kind gets the settings it needs, and only those.
    fn validate_connectors(&self, err: &mut impl FnMut(Range<usize>, String)) {
        let path = self.source.path.as_ref();
        match (&self.source.kind, path) {
            (Some(kind), None) if *kind.get_ref() == SourceKind::File => {
                err(kind.span(), "a `file` source needs `path`: the file to read".into());
            }
            (Some(kind), Some(path)) if *kind.get_ref() == SourceKind::Stdin && path.get_ref().as_os_str() != "-" => {
                err(
                    path.span(),
                    "a `stdin` source reads standard input: remove `path`, or set `type = \"file\"`".into(),
                );
            }
            _ => {}
        }
        self.validate_brokers(err);
        if let Some(kind) = &self.sink.kind {
            match (kind.get_ref(), &self.sink.path) {
                (SinkKind::File, None) => err(kind.span(), "a `file` sink needs `path`: the file to write".into()),
                (SinkKind::Stdout, Some(path)) if path.as_os_str() != "-" => err(
                    kind.span(),
                    "a `stdout` sink writes standard output: remove `path`, or set `type = \"file\"`".into(),
                ),
                _ => {}
            }
        }
    }

    /// Broker settings a server would refuse, or that would make sluice
    /// spin: said before anything connects.
    fn validate_broker_settings(&self, err: &mut impl FnMut(Range<usize>, String)) {
        let header = |name: &str| !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        let dead = self.dead_letter.as_ref();
        let nats_sinks = [("sink", self.sink.nats.as_ref()), ("dead_letter", dead.and_then(|d| d.nats.as_ref()))];
        if let Some(nats) = &self.source.nats {
            let (span, n) = (nats.span(), nats.get_ref());
            if n.max_ack_pending == 0 {
                err(span.clone(), "[source.nats] max_ack_pending must be at least 1".into());
            }
            if n.key_token == Some(0) {
                err(
                    span.clone(),
                    "[source.nats] key_token counts the subject's tokens from 1: `key_token = 1` is the first".into(),
                );
            }
            if !header(&n.key_header) {
                err(
                    span,
                    format!(
                        "[source.nats] key_header {:?} is not a NATS header name (letters, digits and punctuation but `:`)",
                        n.key_header
                    ),
                );
            }
        }
        for (section, nats) in nats_sinks {
            let Some(nats) = nats else { continue };
            let (span, n) = (nats.span(), nats.get_ref());
            if !header(&n.key_header) {
                err(
                    span.clone(),
                    format!(
                        "[{section}.nats] key_header {:?} is not a NATS header name (letters, digits and punctuation but `:`)",
                        n.key_header
                    ),
                );
            }
            if n.max_in_flight == 0 {
                err(span, format!("[{section}.nats] max_in_flight must be at least 1"));
            }
        }
        if let Some(redis) = &self.source.redis {
            let (span, r) = (redis.span(), redis.get_ref());
            if r.max_ack_pending == 0 {
                err(span.clone(), "[source.redis] max_ack_pending must be at least 1".into());
            }
            if r.claim_idle < std::time::Duration::from_secs(1) {
                err(
                    span,
                    "[source.redis] claim_idle must be at least 1s: live workers' entries would be claimed from them"
                        .into(),
                );
            }
        }
    }

    /// A broker kind needs its table, and a table its kind: the settings of
    /// a connector that does not run would be silently ignored.
    fn validate_brokers(&self, err: &mut impl FnMut(Range<usize>, String)) {
        self.validate_broker_settings(err);
        let source = &self.source;
        let sections = [
            (
                "source",
                source.kind.as_ref().map(|k| (k.span(), k.get_ref().name())),
                source.nats.as_ref().map(|t| t.span()),
                source.redis.as_ref().map(|t| t.span()),
                source.path.is_some(),
            ),
            (
                "sink",
                self.sink.kind.as_ref().map(|k| (k.span(), k.get_ref().name())),
                self.sink.nats.as_ref().map(|t| t.span()),
                self.sink.redis.as_ref().map(|t| t.span()),
                self.sink.path.is_some(),
            ),
        ];
        let dead = self.dead_letter.as_ref();
        let dead_section = (
            "dead_letter",
            dead.and_then(|d| d.kind.as_ref()).map(|k| (k.span(), k.get_ref().name())),
            dead.and_then(|d| d.nats.as_ref()).map(|t| t.span()),
            dead.and_then(|d| d.redis.as_ref()).map(|t| t.span()),
            dead.is_some_and(|d| d.path.is_some()),
        );
        for (section, kind, nats, redis, path) in sections.into_iter().chain([dead_section]) {
            let tables: Vec<(&str, Range<usize>)> =
                [("nats", nats), ("redis", redis)].into_iter().filter_map(|(n, s)| s.map(|s| (n, s))).collect();
            if let [(first, _), (second, span), ..] = tables.as_slice() {
                err(
                    span.clone(),
                    format!("[{section}] has both [{section}.{first}] and [{section}.{second}]: keep one"),
                );
                continue;
            }
            if let (Some((table, span)), true) = (tables.first(), path) {
                err(span.clone(), format!("[{section}] has both `path` and [{section}.{table}]: keep one"));
                continue;
            }
            match (kind, tables.first()) {
                (Some((span, kind @ ("nats" | "redis"))), None) => err(
                    span,
                    format!(
                        "a `{kind}` {} needs its settings: add a [{section}.{kind}] table",
                        section.replace('_', "-")
                    ),
                ),
                (Some((span, kind)), Some((table, _))) if kind != *table => err(
                    span,
                    format!(
                        "`type = \"{kind}\"` but the settings are for {table}: remove `type`, or the [{section}.{table}] table"
                    ),
                ),
                _ => {}
            }
        }
    }

    /// Where stage `index` sets `part`, for error messages: `file:line:col`
    /// (its name where the file does not set that part).
    pub(crate) fn stage_location(&self, index: usize, part: StagePart) -> String {
        let table = &self.stages[index].table;
        let span = match part {
            StagePart::Name => table.name.span(),
            StagePart::Plugin => table.plugin.span(),
            StagePart::Config => table.config.as_ref().map_or_else(|| table.name.span(), |c| c.span()),
        };
        ConfigError::new(self.file.as_deref(), self.text.as_deref(), Some(span), "")
            .to_string()
            .trim_end_matches(": ")
            .to_string()
    }
}

/// The setting of a stage an error is about, for its location.
#[derive(Clone, Copy)]
pub(crate) enum StagePart {
    Name,
    Plugin,
    Config,
}
