//! Output files appear whole or not at all: bytes go to a temporary file in
//! the same directory, renamed over the destination when the run completes.
//! A run that appends (resuming an interrupted one) starts that file as a copy
//! of the destination, so the destination changes only if the run succeeds.

use crate::fs::{dir_of, inherited_descriptor, is_stream, sync_dir_of};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tempfile::TempPath;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

const BUFFER: usize = 64 * 1024;

pub(crate) struct Output {
    writer: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    /// For a file: the temporary file, a handle to sync it, and where it goes.
    file: Option<(Partial, std::fs::File, PathBuf)>,
    /// Bytes written so far, including any kept from an earlier run.
    written: u64,
    /// A `.partial` file is kept if the run fails only once a checkpoint
    /// (this run's or an earlier one's) depends on it.
    keep: bool,
}

/// The file being written before it is moved into place.
enum Partial {
    /// None: the destination itself is written (behind a broker).
    InPlace,
    /// Removed if the run fails.
    Temp(TempPath),
    /// `.<name>.partial`, kept if the run fails or the process dies: a
    /// checkpointed run resumes writing it.
    Kept(PathBuf),
}

/// An output whose bytes are all written and synced, ready to be moved into place.
pub(crate) struct Finished(Option<(Partial, PathBuf)>);

/// The file a resumable output is written to before it is moved to `path`:
/// `.<name>.partial` beside it.
pub(crate) fn partial_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

impl Output {
    /// Standard output.
    pub(crate) fn stdout() -> Self {
        Output {
            writer: BufWriter::with_capacity(BUFFER, Box::new(tokio::io::stdout())),
            file: None,
            written: 0,
            keep: false,
        }
    }

    /// The output at `path` if it is written as it goes, as a shell's `>`
    /// would, not made whole beside it and renamed: the process's own
    /// standard output or error (`/dev/stdout`, `/dev/fd/2`: the inherited
    /// descriptor, which keeps the shell's `>>`), or what is not a regular
    /// file (`/dev/null`, a named pipe), which must not be replaced by one.
    pub(crate) fn written_through(path: &Path) -> Option<std::io::Result<Self>> {
        let writer: Box<dyn AsyncWrite + Send + Unpin> = match inherited_descriptor(path) {
            Some(1) => Box::new(tokio::io::stdout()),
            Some(_) => Box::new(tokio::io::stderr()),
            None if is_stream(path) => match std::fs::OpenOptions::new().write(true).open(path) {
                Ok(file) => Box::new(tokio::fs::File::from_std(file)),
                Err(e) => return Some(Err(e)),
            },
            None => return None,
        };
        Some(Ok(Output { writer: BufWriter::with_capacity(BUFFER, writer), file: None, written: 0, keep: false }))
    }

    /// A file that appears at `path` when committed. It keeps the mode of the
    /// file it replaces, else gets `mode`. With `append`, it starts with what
    /// `path` holds now.
    pub(crate) fn file(path: &Path, mode: u32, append: bool) -> std::io::Result<Self> {
        let (dir, name, mode) = Self::place(path, mode);
        remove_orphans(&dir, &name);
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}.{TEMP_MARK}"))
            .suffix(".partial")
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(dir)?;
        let (mut file, temp_path) = temp.into_parts();
        // Held while this run lives: a later run tells a live one's
        // temporary file from one a killed run left behind. Where the
        // filesystem has no locks, the file is only not cleaned up.
        if let Err(std::fs::TryLockError::Error(e)) = file.try_lock() {
            tracing::debug!("cannot lock {}: {e}", temp_path.display());
        }
        let kept = if append { copy_existing(path, &mut file)? } else { 0 };
        Self::writing(file, Partial::Temp(temp_path), path, kept)
    }

    /// Like [`Output::file`], but the file being written is
    /// `.<name>.partial` beside `path`, and survives a failed run or a crash.
    /// `resume_at`: the bytes an earlier run committed at its last
    /// checkpoint; the file is cut to them and written on from there.
    /// Without it the file starts empty, or with `append` as a copy of what
    /// `path` holds now. (When resuming from a checkpoint, `append` is moot:
    /// the `.partial` file already holds whatever the earlier run started with.)
    pub(crate) fn resumable(path: &Path, mode: u32, resume_at: Option<u64>, append: bool) -> std::io::Result<Self> {
        let (dir, name, mode) = Self::place(path, mode);
        remove_orphans(&dir, &name);
        let partial = partial_path(path);
        let mut file = match resume_at {
            Some(len) => {
                let file = std::fs::OpenOptions::new().write(true).open(&partial).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot resume from the last checkpoint, {}: {e}", partial.display()),
                    )
                })?;
                if file.metadata()?.len() < len {
                    return Err(std::io::Error::other(format!(
                        "cannot resume from the last checkpoint: {} is shorter than the {len} bytes it committed",
                        partial.display()
                    )));
                }
                file.set_len(len)?;
                file
            }
            None => std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&partial)?,
        };
        let kept = match resume_at {
            None if append => copy_existing(path, &mut file)?,
            _ => resume_at.unwrap_or(0),
        };
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))?;
        // Until a checkpoint depends on it, the copy is removed if the run fails.
        let mut output = Self::writing(file, Partial::Kept(partial), path, kept)?;
        output.keep = resume_at.is_some();
        Ok(output)
    }

    /// The file at `path` itself, appended to and synced at each flush, for
    /// a run that never ends by itself (behind a broker): what a flush made
    /// durable is acknowledged, and must stay. Never cut back on resuming:
    /// some lines after the last checkpoint may belong to inputs already
    /// acknowledged; those the broker delivers again appear twice
    /// (at-least-once).
    pub(crate) fn in_place(path: &Path, mode: u32) -> std::io::Result<Self> {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).mode(mode).open(path)?;
        let written = std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))?;
        let mut output = Self::writing(file, Partial::InPlace, path, written)?;
        output.keep = true;
        Ok(output)
    }

    /// The directory, file name and mode of an output at `path`: it keeps
    /// the mode of the file it replaces, else gets `mode`.
    fn place(path: &Path, mode: u32) -> (PathBuf, String, u32) {
        let dir = dir_of(path);
        let mode = std::fs::metadata(path).map_or(mode, |m| m.permissions().mode() & 0o7777);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        (dir.to_path_buf(), name, mode)
    }

    fn writing(file: std::fs::File, partial: Partial, dest: &Path, written: u64) -> std::io::Result<Self> {
        let sync = file.try_clone()?;
        let writer: Box<dyn AsyncWrite + Send + Unpin> = Box::new(tokio::fs::File::from_std(file));
        Ok(Output {
            writer: BufWriter::with_capacity(BUFFER, writer),
            file: Some((partial, sync, dest.to_path_buf())),
            written,
            keep: false,
        })
    }

    /// Whether what is written is seen as it is written (standard output),
    /// rather than when the run commits (a file).
    pub(crate) fn is_live(&self) -> bool {
        self.file.is_none()
    }

    pub(crate) async fn write_line(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.write_all(b"\n").await?;
        self.written += bytes.len() as u64 + 1;
        Ok(())
    }

    /// Flushes and syncs what was written so far; returns its length, for a
    /// checkpoint.
    pub(crate) async fn checkpoint(&mut self) -> std::io::Result<u64> {
        self.writer.flush().await?;
        if let Some((_, sync, _)) = &self.file {
            let sync = sync.try_clone()?;
            tokio::task::spawn_blocking(move || sync.sync_data()).await.map_err(std::io::Error::other)??;
        }
        self.keep = true;
        Ok(self.written)
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

/// What marks a temporary output file (`.<name>.~XXXXXX.partial`), apart
/// from the resumable `.<name>.partial` of an output whose name goes on.
const TEMP_MARK: &str = "~";

/// Removes the temporary files (`.<name>.~XXXXXX.partial`) that runs killed
/// before they finished left beside `dir/<name>`: a live run holds a lock on
/// its own, and the kernel lets go of a dead one's. One younger than a few
/// seconds is left alone: a live run may not have locked it yet.
fn remove_orphans(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!(".{name}.{TEMP_MARK}");
    let young =
        |m: std::fs::Metadata| m.modified().ok().and_then(|t| t.elapsed().ok()).is_none_or(|age| age.as_secs() < 5);
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(middle) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)?.strip_suffix(".partial")) else {
            continue;
        };
        if middle.len() != 6 || !middle.bytes().all(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        if entry.metadata().map_or(true, young) {
            continue;
        }
        let path = entry.path();
        let orphan = std::fs::OpenOptions::new().write(true).open(&path).is_ok_and(|f| f.try_lock().is_ok());
        if orphan && std::fs::remove_file(&path).is_ok() {
            tracing::info!("removed {}, left by a run that was killed before it finished", path.display());
        }
    }
}

/// Copies what `dest` holds into `file`, the file that will replace it: the
/// run's lines then go after the earlier run's, and `dest` itself is untouched
/// until the commit. Returns the bytes now in `file` (0 if `dest` does not
/// exist yet).
fn copy_existing(dest: &Path, file: &mut std::fs::File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let with_path = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot copy {} to append to it: {e}", dest.display()))
    };
    let mut existing = match std::fs::File::open(dest) {
        Ok(existing) => existing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(with_path(e)),
    };
    // Between two files, `io::copy` uses copy_file_range on Linux: no pass
    // through user space, and a reflink where the filesystem can.
    let mut copied = std::io::copy(&mut existing, file).map_err(with_path)?;
    // A file edited by hand may lack its last line break: the next line must
    // not be glued to it.
    let mut last = [0];
    if copied > 0 && existing.read_exact_at(&mut last, copied - 1).is_ok() && last[0] != b'\n' {
        std::io::Write::write_all(file, b"\n").map_err(with_path)?;
        copied += 1;
    }
    Ok(copied)
}

/// Why a file could not be created at `path`, checked before anything is
/// written: its directory must exist and be writable (tried with an unnamed
/// temporary file, which leaves nothing behind), and `path` must not be a
/// directory.
pub fn cannot_create(path: &Path) -> Option<String> {
    // A device or pipe (`/dev/null`) is written in place: its directory need not be writable.
    if is_stream(path) {
        return None;
    }
    if path.is_dir() {
        return Some(format!("{} is a directory: give a file path", path.display()));
    }
    let dir = dir_of(path);
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("directory {} does not exist", dir.display()));
        }
        Ok(m) if !m.is_dir() => return Some(format!("{} is not a directory", dir.display())),
        _ => {}
    }
    tempfile::tempfile_in(dir).err().map(|e| format!("cannot create a file in directory {}: {e}", dir.display()))
}

impl Drop for Output {
    /// A failed run leaves no `.partial` file that no checkpoint needs.
    fn drop(&mut self) {
        if let Some((Partial::Kept(path), _, _)) = &self.file {
            if !self.keep {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Finished {
    /// Moves the file into place, and syncs its directory so that the rename
    /// survives a crash.
    pub(crate) async fn commit(self) -> std::io::Result<()> {
        let Some((partial, dest)) = self.0 else { return Ok(()) };
        tokio::task::spawn_blocking(move || {
            match partial {
                Partial::InPlace => return Ok(()),
                Partial::Temp(temp) => temp.persist(&dest).map_err(|e| e.error)?,
                Partial::Kept(path) => std::fs::rename(path, &dest)?,
            }
            sync_dir_of(&dest)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}
