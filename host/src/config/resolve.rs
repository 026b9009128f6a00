//! What the pipeline's settings come to: paths resolved against the
//! pipeline file's directory, default file names, the limits and grants a
//! stage runs with.

use super::grants::Grants;
use super::pipeline::PipelineConfig;
use super::sections::{DeadLetterKind, SinkKind, SourceKind};
use crate::limits::Limits;
use std::path::{Path, PathBuf};

impl PipelineConfig {
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
        let p = self.source.path()?;
        (self.source.kind() == SourceKind::File).then(|| self.resolve(p))
    }

    /// The output file, or `None` for standard output.
    pub fn output_path(&self) -> Option<PathBuf> {
        let p = self.sink.path()?;
        (self.sink.kind() == SinkKind::File).then(|| self.resolve(p))
    }

    /// The dead-letter file: as configured, or `<stem>.dead-letter.jsonl`
    /// beside the pipeline file (`dead-letter.jsonl` without one). `None`
    /// when dead letters go to a broker.
    pub fn dead_letter_path(&self) -> Option<PathBuf> {
        match &self.dead_letter {
            Some(d) if d.kind() != DeadLetterKind::File => None,
            Some(d) if d.path().is_some() => d.path().map(|p| self.resolve(p)),
            _ => {
                let stem = self.file.as_deref().and_then(Path::file_stem).map(|s| s.to_string_lossy().into_owned());
                let name = stem.map_or_else(|| "dead-letter.jsonl".to_string(), |s| format!("{s}.dead-letter.jsonl"));
                Some(self.base_dir().join(name))
            }
        }
    }

    /// Where dead letters go, in words: a file's path, a NATS subject, a
    /// Redis stream.
    pub fn dead_letter_destination(&self) -> String {
        let dead = self.dead_letter.as_ref();
        match (self.dead_letter_path(), dead.and_then(|d| d.nats.as_ref()), dead.and_then(|d| d.redis.as_ref())) {
            (Some(path), _, _) => path.display().to_string(),
            (None, Some(nats), _) => format!("NATS subject {}", nats.get_ref().subject),
            (None, _, Some(redis)) => format!("Redis stream {}", redis.get_ref().stream),
            (None, None, None) => "the dead-letter sink".into(),
        }
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

    /// The limits stage `index` runs under: its own, then the pipeline's,
    /// then the defaults.
    pub fn stage_limits(&self, index: usize) -> Limits {
        self.stages[index].limits().or(&self.limits).resolve()
    }

    /// Stage `index`'s grants with host paths resolved against [`Self::base_dir`].
    pub fn stage_grants(&self, index: usize) -> Grants {
        let mut grants = self.stages[index].grants().clone();
        for host in grants.read_dirs.values_mut() {
            *host = self.resolve(host);
        }
        grants
    }
}
