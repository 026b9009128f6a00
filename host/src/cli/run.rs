use super::check::{self, FromFlags};
use super::logging::{self, tell};
use super::metrics::{MetricsServer, draining_after};
use super::outcome::{Aborted, BadArgument, Outcome, ReportClash, StoppedEarly};
use super::progress::Progress;
use super::report::{ReportFile, report_clash};
use super::signals::{Signals, second_signal, shutdown_signal, stats_on_sigusr1};
use anyhow::Result;
use sluice::{LiveStats, PipelineConfig, RunReport};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::Level;

/// Run a pipeline over its input.
///
/// Output and dead-letter files are written whole when the run completes; a
/// failed run leaves them untouched. After an interrupt, resume with the
/// command the run prints: `--skip-lines N --append`.
#[derive(clap::Args)]
pub(crate) struct RunCommand {
    /// The pipeline file (TOML).
    pipeline: PathBuf,

    /// Read messages from this file instead of the pipeline's source (`-` for stdin).
    #[arg(long, short)]
    input: Option<PathBuf>,

    /// Write messages to this file instead of the pipeline's sink (`-` for stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,

    /// Write dead letters to this file instead of the pipeline's.
    #[arg(long)]
    dead_letter: Option<PathBuf>,

    /// Also write the run's report as JSON to this file.
    #[arg(long)]
    report_json: Option<PathBuf>,

    /// Progress: on a terminal (with text logs), a bar redrawn as the run
    /// goes, with percent and ETA for a file; elsewhere a log line every
    /// this many seconds (0: neither).
    #[arg(long, default_value_t = 10)]
    progress: u64,

    /// Skip this many input lines first (they still count in line numbers).
    /// With --append, resumes a run that was interrupted after line N; alone,
    /// e.g. to skip a header, the output files are replaced as usual.
    #[arg(long, value_name = "N")]
    skip_lines: Option<u64>,

    /// Keep what the output and dead-letter files already hold and add this
    /// run's lines after it, as when resuming an interrupted run. The files
    /// still change only when the run succeeds: a failed run leaves them as
    /// they were.
    #[arg(long)]
    append: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics while the pipeline
    /// runs, with /health and /ready (overrides `[metrics] addr`), e.g.
    /// 127.0.0.1:9898.
    #[arg(long, value_name = "IP:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
}

impl RunCommand {
    /// Runs the pipeline, tells how it went, and writes the report (also
    /// when the run fails): [`Outcome::Success`] or [`Outcome::Interrupted`],
    /// or the error (whose type gives the exit status).
    pub(crate) async fn execute(self) -> Result<Outcome> {
        // First: a path it cannot be written to fails the run before it
        // starts, and from here on every way the run ends is written to it.
        let report_file = self.report_json.as_deref().map(ReportFile::create).transpose()?;
        let mut live = None;
        let result = self.run(&mut live).await;
        let outcome = match &result {
            Ok((report, _)) if report.stop_reason.is_some() => Outcome::StoppedEarly,
            Ok((report, _)) if report.stopped_after.is_some() => Outcome::Interrupted,
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::of_error(e),
        };
        let (report, error) = match result {
            Ok((report, ending)) => {
                self.tell_end(&report, &ending);
                let error = (outcome == Outcome::StoppedEarly).then(|| anyhow::Error::from(StoppedEarly));
                (Some(report), error)
            }
            // Its report file would replace one the run reads or writes.
            Err(e) if e.is::<ReportClash>() => return Err(e),
            Err(e) => {
                // How far a failed run got (its outputs are not written);
                // nothing to say if it failed before its pipeline was built,
                // or was refused before it read anything (a config error).
                let started = live.filter(|_| outcome != Outcome::ConfigError);
                let report = started.map(|(stats, started)| stats.snapshot().report(started.elapsed()));
                if let Some(report) = &report {
                    print_report(report);
                }
                (report, Some(e))
            }
        };
        if let Some(file) = report_file {
            let written = file.write(report.as_ref(), outcome, error.as_ref());
            // The run's outputs are committed by now: its outcome stands
            // (an exit status of 1 would say nothing was written, and a
            // script would run an --append again).
            if let Err(e) = written {
                tracing::error!("{e:#}; the run itself ended as its exit status says");
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// Builds and runs the pipeline. `live` gets its stats, and when the run
    /// started, once it is built. Returns the report and the dead-letter file.
    async fn run(&self, live: &mut Option<(LiveStats, Instant)>) -> Result<(RunReport, Ending)> {
        // First of all: from here on, no signal kills the process unanswered.
        let mut signals = Signals::listen()?;
        let mut config = PipelineConfig::from_file(&self.pipeline)?;
        // Paths on the command line are relative to where the command runs.
        if let Some(input) = &self.input {
            config.set_input(from_cwd(input)?);
        }
        if let Some(output) = &self.output {
            config.set_output(from_cwd(output)?);
        }
        if let Some(dead) = &self.dead_letter {
            config.set_dead_letter(from_cwd(dead)?);
        }
        if let Some(n) = self.skip_lines {
            config.source_mut().skip_lines = n;
            if !self.append {
                warn_if_replaced(&config);
            }
        }
        config.set_append(self.append);
        if let Some(report) = &self.report_json {
            report_clash(report, &from_cwd(report)?, &config)?;
        }
        // What `sluice check` finds wrong with the files fails the run the
        // same way (78, the same words, with the stages' problems), before
        // anything is read.
        let from_flags = FromFlags {
            input: self.input.is_some(),
            output: self.output.is_some(),
            dead_letter: self.dead_letter.is_some(),
        };
        let ending =
            Ending { dead_letters: config.dead_letter_destination(), broker: config.source().kind().is_broker() };
        let input_path = config.input_path();
        let drain = humantime::format_duration(config.shutdown_timeout()).to_string();

        // Listening before the build: a port in use fails at once, and
        // /health answers while stages compile (/ready says 503 until the run).
        let metrics = match (self.metrics_addr, config.metrics().addr) {
            (Some(addr), _) => Some(MetricsServer::start(addr, "--metrics-addr").await?),
            (None, Some(addr)) => {
                let setting = format!("{}: [metrics] addr", self.pipeline.display());
                Some(MetricsServer::start(addr, &setting).await?)
            }
            (None, None) => None,
        };
        let pipeline = signals.while_building(check::build(config, &from_flags)).await??;
        *live = Some((pipeline.stats(), Instant::now()));
        if let Some(metrics) = &metrics {
            metrics.tapping(pipeline.taps());
            metrics.running(pipeline.stats());
        }
        // Cleared when dropped, on every way out: the report is not drawn over.
        let progress = Progress::start(pipeline.stats(), self.progress, input_path.as_deref(), !logging::json());
        let Signals { stop, hangup, usr1 } = signals;
        let sigusr1 = tokio::spawn(stats_on_sigusr1(pipeline.stats(), usr1));
        let reloading = tokio::spawn(super::reload::watch(pipeline.reloader(), hangup));
        // A second signal drops the run: its tasks end with the runtime, and
        // their temporary files are removed. Nothing is written.
        let result = tokio::select! {
            result = pipeline.run_until(draining_after(metrics.as_ref(), shutdown_signal(stop, drain))) => result,
            () = second_signal() => return Err(Aborted.into()),
        };
        sigusr1.abort();
        reloading.abort();
        drop(progress);
        drop(metrics);
        Ok((result?, ending))
    }

    /// Tells the user how a run that ended well went: its report, and where
    /// to resume if it stopped early.
    fn tell_end(&self, report: &RunReport, ending: &Ending) {
        print_report(report);
        let dead_letters = &ending.dead_letters;
        match (report.stopped_after, &report.stop_reason) {
            // A broker keeps its place: nothing to resume by hand.
            (Some(_), reason) if ending.broker => tell(
                Level::WARN,
                &match reason {
                    Some(reason) => format!(
                        "stopped early: {reason}. What was not acknowledged is delivered again, to the next run or \
                         another worker"
                    ),
                    None => "stopped: everything read was processed, delivered and acknowledged; the rest stays on \
                             the stream, for the next run or another worker"
                        .to_string(),
                },
            ),
            (Some(line), Some(reason)) => tell(
                Level::WARN,
                &format!(
                    "stopped early: {reason}. Every line up to input line {line} was written or dead-lettered. To \
                     resume: {}",
                    self.resume_command(line)
                ),
            ),
            // The whole input was read before the stage stopped.
            (None, Some(reason)) => tell(Level::WARN, &format!("stopped early: {reason}")),
            (Some(line), None) => tell(
                Level::WARN,
                &format!(
                    "interrupted: stopped reading after input line {line}; everything read was processed and \
                     written. To resume: {}",
                    self.resume_command(line)
                ),
            ),
            (None, None) => {}
        }
        if report.dead_lettered > 0 {
            let letters = if report.dead_lettered == 1 { "dead letter" } else { "dead letters" };
            tell(Level::INFO, &format!("{} {letters} written to {dead_letters}", report.dead_lettered));
        }
    }

    /// The command that resumes this run after input line `line`: the same
    /// files, the lines already read skipped, and the output files kept and
    /// added to. Quoted for a POSIX shell.
    fn resume_command(&self, line: u64) -> String {
        let mut words = vec!["sluice".to_string(), "run".to_string(), quote(&self.pipeline)];
        let files = [("-i", &self.input), ("-o", &self.output), ("--dead-letter", &self.dead_letter)];
        for (flag, path) in files {
            if let Some(path) = path {
                words.extend([flag.to_string(), quote(path)]);
            }
        }
        words.extend(["--skip-lines".to_string(), line.to_string(), "--append".to_string()]);
        words.join(" ")
    }
}

/// What the end of a run tells besides its report.
struct Ending {
    /// Where dead letters went, in words.
    dead_letters: String,
    /// Whether the source is a broker, which keeps its own place.
    broker: bool,
}

/// The report's table on stderr; with JSON logs, its first line as an
/// event with the counts as fields (the whole of it is `--report-json`).
fn print_report(report: &RunReport) {
    if !logging::json() {
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), "{report}");
        return;
    }
    let text = report.to_string();
    tracing::info!(
        read = report.read,
        written = report.written,
        dead_lettered = report.dead_lettered,
        skipped = report.skipped,
        elapsed_s = report.elapsed.as_secs_f64(),
        "{}",
        text.lines().next().unwrap_or_default()
    );
}

fn quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    // Only a NUL byte cannot be quoted, and a path cannot hold one.
    shlex::try_quote(&text).map_or_else(|_| text.to_string(), |q| q.into_owned())
}

/// `--skip-lines` without `--append` replaces the output files, as it should
/// when skipping a header; but someone resuming by hand may have meant to keep them.
fn warn_if_replaced(config: &PipelineConfig) {
    let files = config.output_path().into_iter().chain(config.dead_letter_path());
    let existing: Vec<String> =
        files.filter(|p| p.metadata().is_ok_and(|m| m.len() > 0)).map(|p| p.display().to_string()).collect();
    if !existing.is_empty() {
        tracing::warn!(
            "--skip-lines without --append: {} will be replaced when this run ends. To resume an interrupted run \
             and keep what it wrote, add --append",
            existing.join(" and ")
        );
    }
}

fn from_cwd(path: &Path) -> Result<PathBuf> {
    if path.as_os_str() == "-" {
        return Ok(path.to_path_buf());
    }
    std::path::absolute(path).map_err(|e| BadArgument(format!("{}: {e}", path.display())).into())
}
