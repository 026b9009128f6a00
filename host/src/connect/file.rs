//! Files and the standard streams: a source that reads a file or standard
//! input line by line (the position is the line number), and a sink that
//! writes a file (whole or not at all, see [`super::output`]) or standard
//! output, one message per line.

use super::lines::{Line, LineReader};
use super::output::Output;
use super::{Finished, Input, Locator, PositionForm, Read, Sink, Source};
use crate::bindings::Message;
use crate::envelope::Origin;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufRead, BufReader};

/// How much of an over-long input line the dead-letter record keeps.
const TOO_LONG_KEPT: usize = 1024;
const READ_BUFFER: usize = 64 * 1024;

/// A file, or standard input, read line by line.
pub(crate) struct FileSource {
    lines: LineReader<Box<dyn AsyncBufRead + Send + Unpin>>,
    max_line_bytes: usize,
    /// Lines up to this one are not read as messages: skipped on request,
    /// or done by an earlier run that checkpointed after them.
    skip_through: u64,
    name: String,
}

impl FileSource {
    /// Opens `path`, or standard input when `None`.
    pub(crate) async fn open(path: Option<&Path>, max_line_bytes: usize, skip_through: u64) -> std::io::Result<Self> {
        let (reader, name): (Box<dyn AsyncBufRead + Send + Unpin>, _) = match path {
            Some(path) => {
                let file = tokio::fs::File::open(path).await?;
                (Box::new(BufReader::with_capacity(READ_BUFFER, file)), path.display().to_string())
            }
            None => (Box::new(BufReader::with_capacity(READ_BUFFER, tokio::io::stdin())), "-".to_string()),
        };
        Ok(FileSource { lines: LineReader::new(reader, max_line_bytes), max_line_bytes, skip_through, name })
    }
}

impl Source for FileSource {
    async fn next(&mut self) -> std::io::Result<Option<Input>> {
        loop {
            let Some(line) = self.lines.next().await? else { return Ok(None) };
            let position = self.lines.line;
            if position <= self.skip_through {
                continue;
            }
            let read = match line {
                Line::Text(value) => Read::Message(Message::from_value(value)),
                Line::TooLong(mut head) => {
                    head.truncate(TOO_LONG_KEPT);
                    let reason = format!(
                        "line is longer than {} bytes (source.max_line_bytes); the record keeps its first {} bytes",
                        self.max_line_bytes,
                        head.len()
                    );
                    Read::Unreadable { head, reason }
                }
            };
            return Ok(Some(Input { position, read, redelivered: false }));
        }
    }

    fn locator(&self) -> Locator {
        Locator { kind: "file", name: self.name.clone(), position: "line", form: PositionForm::Number }
    }
}

/// A file or standard output, one message per line.
pub(crate) struct FileSink(Output);

/// How a file sink starts.
pub(crate) struct FileOpening {
    /// Dead letters hold input as it was, unredacted: they are private by
    /// default (0600); outputs are ordinary files (0644). A file being
    /// replaced keeps its mode.
    pub(crate) mode: u32,
    /// Whether the run checkpoints: the file is then written as
    /// `.<name>.partial`, which survives a crash and is resumed.
    pub(crate) resumable: bool,
    /// The sink's position at the checkpoint the run resumes from.
    pub(crate) resume_at: Option<u64>,
    /// Whether the file itself is written, appended to and synced at each
    /// flush (behind a broker, whose acknowledgements follow the flushes).
    pub(crate) in_place: bool,
    /// Whether the run keeps what the file holds and writes after it.
    pub(crate) append: bool,
}

impl FileSink {
    /// A file sink at `path`, or standard output when `None`.
    pub(crate) fn open(path: Option<&Path>, opening: FileOpening) -> std::io::Result<Self> {
        let FileOpening { mode, resumable, resume_at, append, in_place } = opening;
        if let Some(output) = path.and_then(Output::written_through).transpose()? {
            return Ok(FileSink(output));
        }
        let path = path.map(crate::fs::destination);
        Ok(FileSink(match path.as_deref() {
            None => Output::stdout(),
            Some(path) if in_place => Output::in_place(path, mode)?,
            Some(path) if resumable => Output::resumable(path, mode, resume_at, append)?,
            Some(path) => Output::file(path, mode, append)?,
        }))
    }

    /// If a run that finished died while moving its files into place, moves
    /// the rest (the ones still beside their destination as `.partial`).
    pub(crate) fn complete_interrupted(path: &Path) -> std::io::Result<()> {
        let path = &crate::fs::destination(path);
        let partial = super::partial_path(path);
        if partial.exists() {
            std::fs::rename(&partial, path)?;
        }
        Ok(())
    }

    /// A file sink's name in errors: its path, or `-`.
    pub(crate) fn name(path: Option<&Path>) -> PathBuf {
        path.map_or_else(|| PathBuf::from("-"), Path::to_path_buf)
    }
}

impl Sink for FileSink {
    async fn write(&mut self, message: Message, _origin: &Origin) -> std::io::Result<()> {
        self.0.write_line(&message.value).await
    }

    async fn flush(&mut self) -> std::io::Result<u64> {
        self.0.checkpoint().await
    }

    fn is_live(&self) -> bool {
        self.0.is_live()
    }

    async fn finish(self) -> std::io::Result<Finished> {
        Ok(Finished(Some(self.0.finish().await?)))
    }
}
