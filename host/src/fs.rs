//! Files made whole beside their final path, and what a path names: what
//! the file sinks, the state file, the pipeline file's checks and the CLI's
//! report share.

use std::path::{Path, PathBuf};

/// The directory `path` is in: `.` for a bare file name.
pub(crate) fn dir_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Syncs the directory `path` is in, so that a file just renamed or linked
/// to `path` is there after a crash.
pub(crate) fn sync_dir_of(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir_of(path))?.sync_all()
}

/// `path` as the file system names it: symbolic links, `.` and `..`
/// resolved, also for a file not there yet (through its directory).
pub(crate) fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| {
            let name = path.file_name().ok_or(std::io::ErrorKind::InvalidInput)?;
            std::fs::canonicalize(dir_of(path)).map(|dir| dir.join(name))
        })
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Whether `a` and `b` name the same file, existing or to be created.
pub fn same_file(a: &Path, b: &Path) -> bool {
    canonical(a) == canonical(b)
}

/// Where a file written at `path` goes: the file a symbolic link points
/// to, not the link, which renaming over it would replace.
pub fn destination(path: &Path) -> PathBuf {
    match std::fs::read_link(path) {
        Ok(target) => std::fs::canonicalize(path).unwrap_or_else(|_| dir_of(path).join(target)),
        Err(_) => path.to_path_buf(),
    }
}

/// 1 or 2 if `path` names the process's own standard output or error
/// (`/dev/stdout`, `/dev/fd/2`, `/proc/self/fd/1`): written to through the
/// descriptor it inherited, which keeps what the shell set up (`>>`), and
/// never opened anew or renamed onto (it may be a link to a regular file).
pub fn inherited_descriptor(path: &Path) -> Option<u32> {
    let named = |fd: u32, name: &str| {
        path == Path::new(name)
            || ["/dev/fd", "/proc/self/fd"].iter().any(|d| path == Path::new(d).join(fd.to_string()))
    };
    [(1, "/dev/stdout"), (2, "/dev/stderr")].into_iter().find(|(fd, name)| named(*fd, name)).map(|(fd, _)| fd)
}

/// Whether `path` is something other than a regular file that can be
/// written: a device, a named pipe, a socket (written in place, never
/// replaced by a file).
pub fn is_stream(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}
