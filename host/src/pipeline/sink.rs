//! The sink and dead-letter tasks: what leaves the pipeline, written to its
//! output, and handed on as soon as nothing more is ready (a live sink).

use super::checkpoint::{Flush, Settle};
use super::dead_letter::{DeadLetter, Kind};
use super::error::RunError;
use super::running::{Envelope, TaskError, send_dead};
use super::stats::Stats;
use crate::config::Format;
use crate::io::Output;
use serde::de::IgnoredAny;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tokio::sync::mpsc::{Receiver, Sender};

/// Messages the sink takes from its channel at once.
const SINK_BATCH: usize = 256;

/// What the sink task works with besides its channel and file.
pub(super) struct Sink {
    pub(super) format: Format,
    pub(super) dead: Sender<DeadLetter>,
    pub(super) stats: Arc<Stats>,
    pub(super) settle: Option<Arc<Settle>>,
    /// How often a busy live sink hands on what it holds, at least.
    pub(super) flush_interval: std::time::Duration,
}

pub(super) async fn write_sink(
    mut rx: Receiver<Envelope>,
    mut output: Output,
    path: PathBuf,
    sink: Sink,
    mut flush: Receiver<Flush>,
) -> Result<Output, TaskError> {
    let Sink { format, dead, stats, settle, flush_interval } = sink;
    let mut batch = Vec::with_capacity(SINK_BATCH);
    let mut handed_on = Instant::now();
    loop {
        tokio::select! {
            biased;
            received = rx.recv_many(&mut batch, SINK_BATCH) => if received == 0 { break },
            Some(reply) = flush.recv() => {
                let _ = reply.send(output.checkpoint().await);
                continue;
            }
        }
        let mut written = 0;
        for Envelope { message, origin } in batch.drain(..) {
            if format == Format::Jsonl && message.value.iter().any(|&b| b == b'\n' || b == b'\r') {
                // Keep one document per line. In valid JSON a raw line break can
                // only be whitespace between tokens, so blanking it changes
                // nothing else: no re-encoding, key order and numbers stay.
                match serde_json::from_slice::<IgnoredAny>(&message.value) {
                    Ok(_) => {
                        let one_line = crate::io::one_line_json(message.value);
                        output
                            .write_line(&one_line)
                            .await
                            .map_err(|error| RunError::Output { path: path.clone(), error })?;
                        written += 1;
                    }
                    Err(e) => {
                        let reason =
                            format!("the sink writes JSON lines, but this output spans lines and is not JSON: {e}");
                        send_dead(&dead, "sink", Kind::Output, reason, origin, message).await?;
                    }
                }
                continue;
            }
            output.write_line(&message.value).await.map_err(|error| RunError::Output { path: path.clone(), error })?;
            written += 1;
        }
        stats.written.fetch_add(written, Relaxed);
        if let Some(settle) = &settle {
            settle.change(-(written as i64));
        }
        // Hand on what is buffered when nothing more is coming right now, or
        // when the last hand-over is `flush_interval` old: a consumer of
        // stdout sees each output as soon as it is done, and a busy sink
        // still writes in large blocks.
        if output.is_live() && (rx.is_empty() || handed_on.elapsed() >= flush_interval) {
            output.flush().await.map_err(|error| RunError::Output { path: path.clone(), error })?;
            handed_on = Instant::now();
        }
    }
    Ok(output)
}

pub(super) async fn write_dead_letters(
    mut rx: Receiver<DeadLetter>,
    mut output: Output,
    path: PathBuf,
    input_label: String,
    (stats, settle): (Arc<Stats>, Option<Arc<Settle>>),
    mut flush: Receiver<Flush>,
) -> Result<Output, TaskError> {
    loop {
        let letter = tokio::select! {
            biased;
            letter = rx.recv() => match letter {
                Some(letter) => letter,
                None => break,
            },
            Some(reply) = flush.recv() => {
                let _ = reply.send(output.checkpoint().await);
                continue;
            }
        };
        output
            .write_line(&letter.to_json_line(&input_label))
            .await
            .map_err(|error| RunError::Output { path: path.clone(), error })?;
        stats.dead_lettered.fetch_add(1, Relaxed);
        if let Some(settle) = &settle {
            settle.change(-1);
        }
    }
    Ok(output)
}
