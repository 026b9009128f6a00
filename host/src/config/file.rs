use super::sections::{DeadLetterConfig, EngineConfig, SinkConfig, SinkKind, SourceConfig, SourceKind, StateConfig};
use super::stage::{Grants, StageConfig, default_shutdown_timeout, humantime_serde_compat};
use super::{ConfigError, ConfigErrors, VERSION};
use crate::limits::{Limits, LimitsConfig};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A whole pipeline: where messages come from, the stages they pass through in
/// order, where they go, and where the ones that fail go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    version: Spanned<u32>,
    #[serde(default)]
    source: SourceConfig,
    #[serde(default)]
    sink: SinkConfig,
    #[serde(default)]
    dead_letter: Option<DeadLetterConfig>,
    /// Limits for every stage that does not set its own.
    #[serde(default)]
    limits: LimitsConfig,
    /// After a shutdown signal, how long messages already read may take to drain.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde_compat")]
    shutdown_timeout: std::time::Duration,
    /// How stage instances are allocated.
    #[serde(default)]
    engine: EngineConfig,
    /// Where stages' state is kept, and how often it is checkpointed.
    #[serde(default)]
    state: StateConfig,
    #[serde(default)]
    stages: Vec<StageConfig>,
    /// The file this came from; relative paths inside are relative to its directory.
    #[serde(skip)]
    file: Option<PathBuf>,
    #[serde(skip)]
    text: Option<String>,
    /// Whether the run adds to the output and dead-letter files instead of
    /// replacing them; a run option, not a pipeline-file key.
    #[serde(skip)]
    append: bool,
}

impl PipelineConfig {
    /// An empty version-1 pipeline: stdin to stdout, no stages yet.
    pub fn new() -> Self {
        PipelineConfig {
            version: Spanned::new(0..0, VERSION),
            source: SourceConfig::default(),
            sink: SinkConfig::default(),
            dead_letter: None,
            limits: LimitsConfig::default(),
            shutdown_timeout: default_shutdown_timeout(),
            engine: EngineConfig::default(),
            state: StateConfig::default(),
            stages: Vec::new(),
            file: None,
            text: None,
            append: false,
        }
    }

    /// Reads and checks a pipeline file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigErrors> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(Some(path), None, None, format!("cannot read the pipeline file: {e}"))])
        })?;
        Self::parse(&text, Some(path))
    }

    /// Parses and checks pipeline TOML. `file`, when given, names it in errors
    /// and anchors relative paths.
    pub fn parse(text: &str, file: Option<&Path>) -> Result<Self, ConfigErrors> {
        let mut config: PipelineConfig = toml::from_str(text).map_err(|e| {
            let mut message = e.message().trim_end().to_string();
            if message == "missing field `version`" {
                message.push_str(": add `version = 1` at the top of the file");
            }
            ConfigErrors(vec![ConfigError::new(file, Some(text), e.span(), message)])
        })?;
        let arrays = super::tables::arrays_for_tables(text);
        if !arrays.is_empty() {
            let errors =
                arrays.into_iter().map(|(span, message)| ConfigError::new(file, Some(text), Some(span), message));
            return Err(ConfigErrors(errors.collect()));
        }
        config.file = file.map(Path::to_path_buf);
        config.text = Some(text.to_string());
        config.validate()?;
        Ok(config)
    }

    /// The limits stage `index` runs under.
    pub fn stage_limits(&self, index: usize) -> Limits {
        self.stages[index].limits.or(&self.limits).resolve()
    }

    /// The state settings.
    pub fn state(&self) -> &StateConfig {
        &self.state
    }

    /// The state settings, to change before building.
    pub fn state_mut(&mut self) -> &mut StateConfig {
        &mut self.state
    }

    /// The state store file: as configured, or `<stem>.state.redb` beside
    /// the pipeline file. `None` for a pipeline built in code that sets no
    /// path: its state is kept in memory.
    pub fn state_path(&self) -> Option<PathBuf> {
        match (&self.state.path, self.file.as_deref().and_then(Path::file_stem)) {
            (Some(p), _) => Some(self.resolve(p)),
            (None, Some(stem)) => Some(self.base_dir().join(format!("{}.state.redb", stem.to_string_lossy()))),
            (None, None) => None,
        }
    }

    /// Engine-wide settings.
    pub fn engine(&self) -> EngineConfig {
        self.engine
    }

    /// Sets the engine-wide settings.
    pub fn set_engine(&mut self, engine: EngineConfig) -> &mut Self {
        self.engine = engine;
        self
    }

    /// Sets the limits for every stage that does not set its own.
    pub fn set_limits(&mut self, limits: LimitsConfig) -> &mut Self {
        self.limits = limits;
        self
    }

    /// How long messages already read may take to drain after a shutdown signal.
    pub fn shutdown_timeout(&self) -> std::time::Duration {
        self.shutdown_timeout
    }

    /// Stage `index`'s grants with host paths resolved against [`Self::base_dir`].
    pub fn stage_grants(&self, index: usize) -> Grants {
        let mut grants = self.stages[index].grants.get_ref().clone();
        for host in grants.read_dirs.values_mut() {
            *host = self.resolve(host);
        }
        grants
    }

    /// Adds a stage at the end.
    pub fn push_stage(&mut self, stage: StageConfig) -> &mut Self {
        self.stages.push(stage);
        self
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[StageConfig] {
        &self.stages
    }

    /// The source settings.
    pub fn source(&self) -> &SourceConfig {
        &self.source
    }

    /// The source settings, to change before building (e.g. from a CLI flag).
    pub fn source_mut(&mut self) -> &mut SourceConfig {
        &mut self.source
    }

    /// The sink settings.
    pub fn sink(&self) -> &SinkConfig {
        &self.sink
    }

    /// The sink settings, to change before building.
    pub fn sink_mut(&mut self) -> &mut SinkConfig {
        &mut self.sink
    }

    /// Sets the dead-letter file.
    pub fn set_dead_letter(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.dead_letter = Some(DeadLetterConfig { kind: None, path: path.into() });
        self
    }

    /// The pipeline file this came from.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The directory relative paths in the file are resolved against: the
    /// pipeline file's directory, or the current directory.
    pub fn base_dir(&self) -> PathBuf {
        match self.file.as_deref().and_then(Path::parent) {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// `path` resolved against the pipeline file's directory, once: `x.wasm`
    /// beside `p.toml` stays `x.wasm`, and `./x.wasm` beside `./p.toml` is
    /// `./x.wasm`, not `././x.wasm` (messages show paths as the user wrote them).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        let dir = self.file.as_deref().and_then(Path::parent).unwrap_or(Path::new(""));
        // `components` drops every `.` but a leading one.
        dir.join(path).components().collect()
    }

    /// The input file, or `None` for standard input.
    pub fn input_path(&self) -> Option<PathBuf> {
        let p = self.source.path.as_ref()?.get_ref();
        (self.source.kind() == SourceKind::File).then(|| self.resolve(p))
    }

    /// The output file, or `None` for standard output.
    pub fn output_path(&self) -> Option<PathBuf> {
        let p = self.sink.path.as_ref()?;
        (self.sink.kind() == SinkKind::File).then(|| self.resolve(p))
    }

    /// The dead-letter file: as configured, or `<stem>.dead-letter.jsonl`
    /// beside the pipeline file (`dead-letter.jsonl` without one).
    pub fn dead_letter_path(&self) -> PathBuf {
        match &self.dead_letter {
            Some(d) => self.resolve(&d.path),
            None => {
                let stem = self.file.as_deref().and_then(Path::file_stem).map(|s| s.to_string_lossy().into_owned());
                let name = stem.map_or_else(|| "dead-letter.jsonl".to_string(), |s| format!("{s}.dead-letter.jsonl"));
                self.base_dir().join(name)
            }
        }
    }

    /// Checks what deserialisation cannot, collecting every problem.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, message: String| {
            errors.push(ConfigError::new(self.file.as_deref(), self.text.as_deref(), Some(span), message));
        };
        if *self.version.get_ref() != VERSION {
            err(
                self.version.span(),
                format!("unsupported version {}: this sluice reads version {VERSION}", self.version.get_ref()),
            );
        }
        if self.stages.is_empty() {
            err(0..0, "no stages: add at least one [[stages]] table with a `name` and a `plugin`".into());
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let name = stage.name.get_ref().as_str();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                err(
                    stage.name.span(),
                    format!("stage name `{name}` must be non-empty ASCII letters, digits, `-` or `_`"),
                );
            }
            if let Some(first) = seen.insert(name, i) {
                err(
                    stage.name.span(),
                    format!("stage name `{name}` is used twice (stages {} and {})", first + 1, i + 1),
                );
            }
            let plugin = self.resolve(stage.plugin.get_ref());
            // A path that exists but is not a file (a directory, a FIFO) is
            // named as such when the stage is loaded.
            let missing = std::fs::metadata(&plugin).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
            if stage.native.is_none() && missing {
                err(stage.plugin.span(), format!("stage `{name}`: plugin file {} not found", plugin.display()));
            }
            for (guest, host) in &stage.grants.get_ref().read_dirs {
                let host = self.resolve(host);
                if !guest.starts_with('/') {
                    err(
                        stage.grants.span(),
                        format!("stage `{name}`: read_dirs key `{guest}` must be an absolute path, e.g. `/data`"),
                    );
                }
                if !host.is_dir() {
                    err(
                        stage.grants.span(),
                        format!("stage `{name}`: read_dirs `{guest}`: directory {} not found", host.display()),
                    );
                }
            }
            if *stage.concurrency.get_ref() == 0 {
                err(stage.concurrency.span(), format!("stage `{name}`: concurrency must be at least 1"));
            }
            if *stage.buffer.get_ref() == 0 {
                err(stage.buffer.span(), format!("stage `{name}`: buffer must be at least 1"));
            }
            if let Some(n) = stage.recycle_after.as_ref().filter(|n| *n.get_ref() == 0) {
                err(n.span(), format!("stage `{name}`: recycle_after must be at least 1 (or left out)"));
            }
            if let Some(batch) = &stage.batch {
                if *batch.get_ref() == 0 {
                    err(batch.span(), format!("stage `{name}`: batch must be at least 1"));
                }
                if *batch.get_ref() > 1 && stage.isolate {
                    err(
                        batch.span(),
                        format!("stage `{name}`: `isolate = true` runs each message alone; remove `batch`"),
                    );
                }
                if *batch.get_ref() > 1 && stage.partition_by.is_some() {
                    err(
                        batch.span(),
                        format!("stage `{name}`: keyed stages run one message per key at a time; remove `batch`"),
                    );
                }
            }
            if let (Some(p), Some(_)) = (&stage.partition_by, stage.order) {
                err(p.span(), format!("stage `{name}`: `partition_by` sets per-key order; remove `order`"));
            }
            for key in stage.grants.get_ref().env.keys() {
                if key.is_empty() || key.contains('=') {
                    err(
                        stage.grants.span(),
                        format!("stage `{name}`: env name `{key}` must be non-empty and contain no `=`"),
                    );
                }
            }
        }
        // Two outputs renamed onto one path would silently lose one of them.
        let dead = self.dead_letter_path();
        let output = self.output_path();
        let same = |a: &Path, b: &Path| {
            a == b || std::fs::canonicalize(a).ok().zip(std::fs::canonicalize(b).ok()).is_some_and(|(a, b)| a == b)
        };
        if output.as_deref().is_some_and(|o| same(o, &dead)) {
            err(
                0..0,
                format!("the sink and the dead-letter file are both {}: give them different paths", dead.display()),
            );
        }
        if let (Some(input), Some(output)) = (self.input_path(), &output) {
            if same(&input, output) {
                err(0..0, format!("the sink would overwrite the source {}: give it another path", input.display()));
            }
        }
        for (what, path) in [("sink", output.as_deref()), ("dead-letter file", Some(dead.as_path()))] {
            if let Some(path) = path.filter(|p| p.is_dir()) {
                err(0..0, format!("the {what} {} is a directory: give a file path", path.display()));
            }
        }
        self.validate_connectors(&mut err);
        if self.source.max_line_bytes == 0 {
            err(0..0, "source.max_line_bytes must be at least 1".into());
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
    }

    /// Each connector kind gets the settings it needs, and only those.
    fn validate_connectors(&self, err: &mut impl FnMut(std::ops::Range<usize>, String)) {
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

    /// Where stage `index` is declared, for error messages: `file:line:col`.
    pub(crate) fn stage_location(&self, index: usize) -> String {
        let stage = &self.stages[index];
        ConfigError::new(self.file.as_deref(), self.text.as_deref(), Some(stage.name.span()), "")
            .to_string()
            .trim_end_matches(": ")
            .to_string()
    }

    /// Overrides the source file (`-` for standard input).
    pub fn set_input(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.source.kind = None;
        self.source.path = Some(Spanned::new(0..0, path.into()));
        self
    }

    /// Overrides the sink file (`-` for standard output).
    pub fn set_output(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.sink.kind = None;
        self.sink.path = Some(path.into());
        self
    }

    /// With `true`, the run keeps what the output and dead-letter files hold
    /// and writes its lines after it, e.g. to resume an interrupted run with
    /// [`SourceConfig::skip_lines`]. The files are still replaced only when
    /// the run succeeds, so a failed run leaves them as they were.
    pub fn set_append(&mut self, append: bool) -> &mut Self {
        self.append = append;
        self
    }

    /// Whether the run appends to its output files (see [`Self::set_append`]).
    pub fn append(&self) -> bool {
        self.append
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self::new()
    }
}
