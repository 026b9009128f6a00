//! The `--report-json` file of `sluice run`: where it may go, and writing it.

use super::outcome::{BadArgument, Outcome, ReportClash};
use anyhow::{Context, Result};
use sluice::{PipelineConfig, RunReport};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether `--report-json` (`given`, at `report`) is a file the run reads or writes.
pub(super) fn report_clash(given: &Path, report: &Path, config: &PipelineConfig) -> Result<(), ReportClash> {
    let files = [
        ("the pipeline file", config.file().map(Path::to_path_buf)),
        ("the source", config.input_path()),
        ("the sink", config.output_path()),
        ("the dead-letter file", config.dead_letter_path()),
        ("the state file", config.state_path()),
    ];
    match files.into_iter().find(|(_, path)| path.as_deref().is_some_and(|p| sluice::same_file(report, p))) {
        Some((what, _)) => Err(ReportClash { report: given.to_path_buf(), what }),
        None => Ok(()),
    }
}

/// Where the report goes, chosen before the run so that a path it cannot
/// be written to fails at once: a file written beside its path and renamed
/// onto it whole; a device or pipe, written in place; or the process's own
/// standard output or error.
pub(super) enum ReportFile {
    Renamed { temp: tempfile::NamedTempFile, path: PathBuf },
    Stream { path: PathBuf },
    Inherited { fd: u32, path: PathBuf },
}

impl ReportFile {
    pub(super) fn create(path: &Path) -> Result<Self> {
        if let Some(fd) = sluice::inherited_descriptor(path) {
            return Ok(ReportFile::Inherited { fd, path: path.to_path_buf() });
        }
        if let Some(reason) = sluice::cannot_create(path) {
            return Err(BadArgument(format!("--report-json {}: {reason}", path.display())).into());
        }
        if sluice::is_stream(path) {
            return Ok(ReportFile::Stream { path: path.to_path_buf() });
        }
        // A symbolic link: the file it points to is written, not replaced by one.
        let path = sluice::destination(path);
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let temp = tempfile::Builder::new()
            .prefix(".sluice-report.")
            .suffix(".partial")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(|e| {
                BadArgument(format!("--report-json {}: cannot create a file in {}: {e}", path.display(), dir.display()))
            })?;
        Ok(ReportFile::Renamed { temp, path })
    }

    /// Writes the report of a run that ended with `outcome` (and `error`).
    /// A run that failed before its pipeline was built has no counts: the
    /// file then holds only `outcome`, `exit_code` and `error`.
    pub(super) fn write(
        self,
        report: Option<&RunReport>,
        outcome: Outcome,
        error: Option<&anyhow::Error>,
    ) -> Result<()> {
        /// The library's report, with how the run ended beside its fields:
        /// a successful run's report is the library's, plus these three.
        #[derive(serde::Serialize)]
        struct Written<'a> {
            #[serde(flatten)]
            report: Option<&'a RunReport>,
            outcome: Outcome,
            exit_code: u8,
            error: Option<String>,
        }
        let written =
            Written { report, outcome, exit_code: outcome.exit_code(), error: error.map(|e| format!("{e:#}")) };
        let mut text = serde_json::to_vec_pretty(&written)?;
        text.push(b'\n');
        let (ReportFile::Renamed { path, .. } | ReportFile::Stream { path } | ReportFile::Inherited { path, .. }) =
            &self;
        let context = format!("writing the report to {}", path.display());
        match self {
            ReportFile::Renamed { mut temp, path } => {
                temp.write_all(&text).context(context.clone())?;
                temp.persist(&path).map_err(|e| e.error).context(context)?;
            }
            ReportFile::Stream { path } => {
                let mut file = std::fs::OpenOptions::new().write(true).open(&path).context(context.clone())?;
                file.write_all(&text).context(context)?;
            }
            ReportFile::Inherited { fd: 1, .. } => std::io::stdout().lock().write_all(&text).context(context)?,
            ReportFile::Inherited { .. } => std::io::stderr().lock().write_all(&text).context(context)?,
        }
        Ok(())
    }
}
