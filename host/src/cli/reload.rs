//! `sluice run` swaps a stage's component when its plugin file changes (once
//! the file has stopped changing for a second), or for every stage on SIGHUP.
//! A component that fails to compile or initialise is refused with the
//! reason, and the running one goes on.

use sluice::Reloader;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::signal::unix::Signal;

/// How often the plugin files are looked at.
const POLL: Duration = Duration::from_secs(1);

/// A file as last seen: its modification time and length.
type Seen = Option<(SystemTime, u64)>;

fn seen(path: &Path) -> Seen {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reloads stages until the run ends (the caller aborts it).
pub(crate) async fn watch(reloader: Reloader, mut hangup: Signal) {
    let plugins: Vec<(String, PathBuf)> = reloader.plugins().into_iter().map(|p| (p.stage, p.path)).collect();
    // What each file was when its component was loaded (a file that changed
    // while the pipeline was built: nothing yet), and a change not yet settled.
    let mut loaded: HashMap<String, Seen> = reloader
        .plugins()
        .into_iter()
        .map(|p| {
            let now = if p.changed { None } else { seen(&p.path) };
            (p.stage, now)
        })
        .collect();
    let mut changing: HashMap<String, Seen> = HashMap::new();
    let mut tick = tokio::time::interval(POLL);
    loop {
        let all = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = hangup.recv() => true,
        };
        for (stage, path) in &plugins {
            let now = seen(path);
            let due = if all {
                tracing::info!(stage = stage.as_str(), "SIGHUP: reloading {}", path.display());
                true
            } else if now == loaded[stage] {
                changing.remove(stage);
                false
            } else {
                // Changed since loaded: reload once it has stayed the same for a poll
                // (a file being copied in is not read half-written).
                changing.insert(stage.clone(), now) == Some(now)
            };
            if !due {
                continue;
            }
            changing.remove(stage);
            // Refused or not, this version of the file has had its chance.
            loaded.insert(stage.clone(), now);
            match reloader.reload(stage).await {
                Ok(done) => tracing::info!(
                    stage = stage.as_str(),
                    "reloaded {}: loaded in {:.2} s, swapped {:.0} ms later, after the messages in flight",
                    path.display(),
                    done.loaded_in.as_secs_f64(),
                    done.swapped_in.as_secs_f64() * 1000.0
                ),
                Err(e) => tracing::warn!(stage = stage.as_str(), "{e}"),
            }
        }
    }
}
