//! Files made whole beside their final path: what the file sinks and the
//! state file share.

use std::path::Path;

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
pub(crate) fn canonical(path: &Path) -> std::path::PathBuf {
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
