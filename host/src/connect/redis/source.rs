//! [`RedisSource`]: opens the consumer group, starts the reading, acking and
//! backlog tasks, and serves the pipeline's `Source` calls from them, handing
//! back what is unfinished when it closes.

use super::acking::{acking, hand_back};
use super::fields::Fields;
use super::ids::{pack, render, stand_ins};
use super::reader::Reader;
use super::{Held, Names, READ_BATCH, connect, lock};
use crate::config;
use crate::connect::{Input, Locator, PositionForm, Source};
use crate::envelope::Done;
use redis::RedisError;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

/// How long closing waits to hand back what this worker holds.
const HAND_BACK_FOR: Duration = Duration::from_secs(5);

/// This process's default name in a group: `<host>-<pid>`.
fn default_consumer() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "sluice".into());
    format!("{host}-{}", std::process::id())
}

/// A Redis stream read through a consumer group.
pub(crate) struct RedisSource {
    names: Names,
    /// A connection for closing (the acknowledging task has its own).
    control: redis::aio::ConnectionManager,
    /// Whether the consumer name is the default `<host>-<pid>`, which no
    /// later worker takes again: it is removed from the group on closing.
    default_name: bool,
    claim_idle: Duration,
    /// Entries this worker may hold unacknowledged (`max_ack_pending`).
    max_ack_pending: u64,
    inputs: mpsc::Receiver<io::Result<Input>>,
    held: Held,
    /// One permit per entry this worker may still hold.
    room: Arc<Semaphore>,
    acks: mpsc::UnboundedSender<String>,
    reading: JoinHandle<()>,
    acking: JoinHandle<()>,
    redelivered: Arc<AtomicU64>,
    backlog: crate::connect::Backlog,
    asking: JoinHandle<()>,
}

impl RedisSource {
    /// Connects, and creates the group (and the stream) if missing.
    pub(crate) async fn open(config: &config::RedisSource) -> io::Result<Self> {
        let mut control = connect(&config.url).await?;
        // Blocking reads get a connection of their own: a blocked command
        // holds up every command behind it on its connection.
        let reader = connect(&config.url).await?;
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&config.stream)
            .arg(&config.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut control)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => {
                return Err(io::Error::other(format!(
                    "cannot create consumer group {} on stream {} at {}: {e}",
                    config.group, config.stream, config.url
                )));
            }
            _ => {}
        }
        let default_name = config.consumer.is_none();
        let consumer = config.consumer.clone().unwrap_or_else(default_consumer);
        let names = Names { stream: config.stream.clone(), group: config.group.clone(), consumer };
        tracing::info!("reading Redis stream {} as consumer {} of group {}", names.stream, names.consumer, names.group);

        let held: Held = Arc::default();
        let permits = usize::try_from(config.max_ack_pending).unwrap_or(usize::MAX).clamp(1, Semaphore::MAX_PERMITS);
        let room = Arc::new(Semaphore::new(permits));
        let redelivered = Arc::new(AtomicU64::new(0));
        let (acks, to_ack) = mpsc::unbounded_channel();
        let (tx, inputs) = mpsc::channel(READ_BATCH);
        let claim_idle = config.claim_idle.max(Duration::from_millis(1));
        let reading = tokio::spawn(
            Reader {
                conn: reader,
                names: names.clone(),
                fields: Fields {
                    value: config.value_field.clone(),
                    key: config.key_field.clone(),
                    timestamp: config.timestamp_field.clone(),
                },
                room: room.clone(),
                held: held.clone(),
                acks: acks.clone(),
                out: tx,
                redelivered: redelivered.clone(),
                claim_idle,
            }
            .run(),
        );
        let acking = tokio::spawn(acking(control.clone(), names.clone(), to_ack, held.clone(), claim_idle / 3));
        let backlog = crate::connect::Backlog::new();
        let asking = tokio::spawn(ask_backlog(control.clone(), names.clone(), backlog.clone()));
        Ok(RedisSource {
            names,
            control,
            default_name,
            claim_idle,
            max_ack_pending: permits as u64,
            inputs,
            held,
            room,
            acks,
            reading,
            acking,
            redelivered,
            backlog,
            asking,
        })
    }
}

/// Asks the server, every two seconds, how many entries of the stream the
/// group has not yet been given (`XINFO GROUPS`' `lag`, Redis 7; unknown
/// when the server cannot tell, as after entries were deleted).
async fn ask_backlog(mut conn: ConnectionManager, names: Names, backlog: crate::connect::Backlog) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let groups: Result<Vec<HashMap<String, redis::Value>>, RedisError> =
            redis::cmd("XINFO").arg("GROUPS").arg(&names.stream).query_async(&mut conn).await;
        let Ok(groups) = groups else { continue };
        let lag = groups
            .iter()
            .find(|g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == names.group.as_bytes()))
            .and_then(|g| g.get("lag"))
            .and_then(|lag| redis::from_redis_value::<u64>(lag.clone()).ok());
        if let Some(lag) = lag {
            backlog.set(lag);
        }
    }
}

impl Source for RedisSource {
    /// Never ends: a stream can always get more entries.
    async fn next(&mut self) -> io::Result<Option<Input>> {
        match self.inputs.recv().await {
            Some(Ok(input)) => Ok(Some(input)),
            Some(Err(e)) => Err(e),
            None => Err(io::Error::other(format!("the reader of Redis stream {} stopped", self.names.stream))),
        }
    }

    fn locator(&self) -> Locator {
        Locator { kind: "redis", name: self.names.stream.clone(), position: "entry", form: PositionForm::Text(render) }
    }

    fn acknowledges(&self) -> bool {
        true
    }

    /// Acknowledged; one given up on stays pending, for this worker's next
    /// run under the same name or for another worker to claim.
    fn done(&mut self, done: Done) {
        let Some((id, _)) = lock(&self.held).remove(&done.position) else {
            return;
        };
        if pack(&id).is_none() {
            stand_ins().remove(&done.position);
        }
        self.room.add_permits(1);
        if done.delivered {
            let _ = self.acks.send(id);
        }
    }

    /// A run that holds acknowledgements until a checkpoint takes one
    /// early, before the reader runs out of room and the worker stalls until
    /// `checkpoint_interval`.
    fn max_unacknowledged(&self) -> Option<u64> {
        Some(self.max_ack_pending)
    }

    fn redelivers_after(&self) -> Option<Duration> {
        Some(self.claim_idle)
    }

    fn id(&self) -> Option<String> {
        Some(format!("redis:{}/{}", self.names.stream, self.names.group))
    }

    fn backlog(&self) -> Option<crate::connect::Backlog> {
        Some(self.backlog.clone())
    }

    /// Sends the last acknowledgements, then hands back what this worker
    /// still holds (read but never taken by the pipeline, taken but not
    /// finished, given up on), so that another worker takes it within
    /// seconds rather than after `claim_idle`.
    async fn close(self) -> io::Result<()> {
        let RedisSource {
            names,
            control,
            default_name,
            claim_idle,
            inputs,
            held,
            acks,
            reading,
            acking,
            redelivered,
            asking,
            ..
        } = self;
        asking.abort();
        reading.abort();
        let _ = reading.await;
        drop(inputs);
        drop(acks);
        let _ = acking.await;
        {
            let mut stand_ins = stand_ins();
            for position in lock(&held).keys() {
                stand_ins.remove(position);
            }
        }
        let stream = &names.stream;
        // The server may be gone: the entries are then claimed after claim_idle.
        let later = "another worker claims them once they have been idle for claim_idle";
        match tokio::time::timeout(HAND_BACK_FOR, hand_back(control, &names, claim_idle, default_name)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!("handed back {n} unfinished entries of Redis stream {stream} to the group"),
            Ok(Err(e)) => {
                tracing::warn!("cannot hand back the unfinished entries of Redis stream {stream} ({e}): {later}")
            }
            Err(_) => tracing::warn!(
                "cannot hand back the unfinished entries of Redis stream {stream} within {} s: {later}",
                HAND_BACK_FOR.as_secs()
            ),
        }
        let again = redelivered.load(Ordering::Relaxed);
        if again > 0 {
            tracing::info!(
                "{again} entries of Redis stream {stream} were delivered again after a worker stopped without \
                 acknowledging them: their outputs may appear twice in the output stream"
            );
        }
        Ok(())
    }
}
