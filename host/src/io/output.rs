//! Output files appear whole or not at all: bytes go to a temporary file in
//! the same directory, renamed over the destination when the run completes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tempfile::TempPath;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

const BUFFER: usize = 64 * 1024;

pub(crate) struct Output {
    writer: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    /// For a file: the temporary file, a handle to sync it, and where it goes.
    file: Option<(TempPath, std::fs::File, PathBuf)>,
}

/// An output whose bytes are all written and synced, ready to be moved into place.
pub(crate) struct Finished(Option<(TempPath, PathBuf)>);

impl Output {
    /// Standard output.
    pub(crate) fn stdout() -> Self {
        Output { writer: BufWriter::with_capacity(BUFFER, Box::new(tokio::io::stdout())), file: None }
    }

    /// A file that appears at `path` when committed. It keeps the mode of the
    /// file it replaces, else gets `mode`.
    pub(crate) fn file(path: &Path, mode: u32) -> std::io::Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mode = std::fs::metadata(path).map_or(mode, |m| m.permissions().mode() & 0o7777);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(dir)?;
        let (file, temp_path) = temp.into_parts();
        let sync = file.try_clone()?;
        let writer: Box<dyn AsyncWrite + Send + Unpin> = Box::new(tokio::fs::File::from_std(file));
        Ok(Output {
            writer: BufWriter::with_capacity(BUFFER, writer),
            file: Some((temp_path, sync, path.to_path_buf())),
        })
    }

    pub(crate) async fn write_line(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.write_all(b"\n").await
    }

    /// Flushes everything and, for a file, syncs it to disk. Nothing is
    /// visible at the destination yet.
    pub(crate) async fn finish(mut self) -> std::io::Result<Finished> {
        self.writer.flush().await?;
        self.writer.get_mut().shutdown().await?;
        match self.file.take() {
            None => Ok(Finished(None)),
            Some((temp, sync, dest)) => {
                tokio::task::spawn_blocking(move || sync.sync_all()).await.map_err(std::io::Error::other)??;
                Ok(Finished(Some((temp, dest))))
            }
        }
    }
}

impl Finished {
    /// Moves the file into place, and syncs its directory so that the rename
    /// survives a crash.
    pub(crate) async fn commit(self) -> std::io::Result<()> {
        let Some((temp, dest)) = self.0 else { return Ok(()) };
        tokio::task::spawn_blocking(move || {
            temp.persist(&dest).map_err(|e| e.error)?;
            let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            std::fs::File::open(dir)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)?
    }
}
