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
