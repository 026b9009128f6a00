//! Output files appear whole or not at all: bytes go to a temporary file in
//! the same directory, renamed over the destination when the run completes.

use std::path::{Path, PathBuf};
use tempfile::TempPath;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

const BUFFER: usize = 64 * 1024;

pub(crate) struct Output {
    writer: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    /// For a file: the temporary file, a handle to sync it, and where it goes on commit.
    file: Option<(TempPath, std::fs::File, PathBuf)>,
}

impl Output {
    /// Standard output.
    pub(crate) fn stdout() -> Self {
        Output { writer: BufWriter::with_capacity(BUFFER, Box::new(tokio::io::stdout())), file: None }
    }

    /// A file that appears at `path` on [`Output::commit`].
    pub(crate) fn file(path: &Path) -> std::io::Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
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

    /// Flushes everything and, for a file, moves it into place.
    pub(crate) async fn commit(mut self) -> std::io::Result<()> {
        self.writer.flush().await?;
        self.writer.get_mut().shutdown().await?;
        if let Some((temp, sync, dest)) = self.file.take() {
            tokio::task::spawn_blocking(move || {
                sync.sync_all()?;
                temp.persist(&dest).map_err(|e| e.error)
            })
            .await
            .map_err(std::io::Error::other)??;
        }
        Ok(())
    }
}
