//! Pulling from a JetStream consumer, and holding what was pulled: each
//! message is held, and kept alive ("in progress"), from when it arrives
//! until the pipeline has settled it.

use async_nats::jetstream;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long one pull request waits on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Messages received and waiting for the pipeline to take them, at most;
/// more are pulled once half of them are taken. Each is kept alive ("in
/// progress") from when it arrives, like those the pipeline works on, so a
/// message waiting here is not delivered to another worker meanwhile.
pub(super) const PULL_BATCH: u64 = 256;
/// The first pause before pulling again when a pull could not be made or
/// ended in an error (the server away), doubled up to 5 s.
const PULL_PAUSE: Duration = Duration::from_millis(500);

/// A message as it arrived.
pub(super) struct Received {
    pub(super) sequence: u64,
    /// When the stream stored it, in ms since the epoch.
    pub(super) published: i64,
    /// The server delivered it before.
    pub(super) redelivered: bool,
    pub(super) message: async_nats::Message,
}
pub(super) type Acks = mpsc::UnboundedSender<(async_nats::Subject, &'static [u8])>;
pub(super) type Held = Arc<Mutex<Holding>>;

#[derive(Default)]
pub(super) struct Holding {
    /// Each message's reply subject (where its acknowledgement goes), and
    /// when it was last said to be in progress, by stream sequence.
    pub(super) messages: HashMap<u64, (async_nats::Subject, Instant)>,
    /// Sequences acknowledged lately, oldest first, and as a set.
    pub(super) recent: (std::collections::VecDeque<u64>, std::collections::HashSet<u64>),
}

impl Holding {
    /// A message delivered: whether it is new to this worker (then it is
    /// held from now on). One it holds already was delivered again (its ack
    /// wait ran out first): this delivery replaces the old, and it is not
    /// run twice. One it acknowledged lately is acknowledged again.
    fn arrived(&mut self, sequence: u64, reply: async_nats::Subject, acks: &Acks) -> bool {
        if let Some(entry) = self.messages.get_mut(&sequence) {
            *entry = (reply, Instant::now());
            return false;
        }
        if self.recent.1.contains(&sequence) {
            let _ = acks.send((reply, b"+ACK"));
            return false;
        }
        self.messages.insert(sequence, (reply, Instant::now()));
        true
    }
}

/// Pulls messages, as many at a time as there is room for in `to` (the
/// pipeline takes from it), and hands them on; each is held from when it
/// arrives, so it is kept alive while it waits for the pipeline. Pulls
/// again once half the room is free; stops pulling when told, and holds
/// what is still arriving then (to be handed back by [`NatsSource::close`]).
pub(super) async fn pull(
    consumer: jetstream::consumer::PullConsumer,
    held: Held,
    acks: Acks,
    to: mpsc::Sender<io::Result<Received>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    name: String,
) {
    let room = to.max_capacity();
    let mut pause = PULL_PAUSE;
    loop {
        // The pipeline takes messages only as fast as it starts on them:
        // what is asked for is what waits for it at most.
        let permits = tokio::select! {
            permits = to.reserve_many(room.div_ceil(2)) => permits,
            _ = &mut stop => return,
        };
        let Ok(permits) = permits else { return };
        let mut permits: Vec<_> = permits.chain(to.try_reserve_many(to.capacity()).into_iter().flatten()).collect();
        let batch = consumer.batch().max_messages(permits.len()).expires(PULL_EXPIRES).messages();
        let mut batch = match batch.await {
            Ok(batch) => {
                pause = PULL_PAUSE;
                batch
            }
            // The server away: the client connects again by itself.
            Err(e) => {
                tracing::warn!("cannot pull from NATS consumer {name}: {e}; trying again in {} ms", pause.as_millis());
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = &mut stop => return,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut stopping = false;
        loop {
            let record = tokio::select! {
                record = batch.next() => record,
                _ = &mut stop => {
                    stopping = true;
                    break;
                }
            };
            let record = match record {
                None => break,
                Some(Ok(record)) => record,
                Some(Err(e)) => {
                    tracing::warn!("pulling from NATS consumer {name}: {e}");
                    tokio::time::sleep(pause).await;
                    break;
                }
            };
            let Some(received) = arrived(&held, &acks, record, &name) else { continue };
            match permits.pop() {
                Some(permit) => permit.send(Ok(received)),
                // Never more arrive than were asked for; if they did, wait
                // (it is held: if the worker stops first, it is handed back).
                None => tokio::select! {
                    sent = to.send(Ok(received)) => if sent.is_err() { return },
                    _ = &mut stop => {
                        stopping = true;
                        break;
                    }
                },
            }
        }
        if stopping {
            // Stopped mid-pull: what the server still sends for it is held,
            // and so handed back; what comes later is delivered again after
            // `ack_wait`.
            while let Ok(Some(Ok(record))) = tokio::time::timeout(Duration::from_millis(50), batch.next()).await {
                let _ = arrived(&held, &acks, record, &name);
            }
            return;
        }
    }
}

/// A message pulled: held, and handed on if it is new to this worker.
pub(super) fn arrived(held: &Held, acks: &Acks, record: jetstream::Message, name: &str) -> Option<Received> {
    let (sequence, published, redelivered) = match record.info() {
        Ok(info) => {
            (info.stream_sequence, (info.published.unix_timestamp_nanos() / 1_000_000) as i64, info.delivered > 1)
        }
        Err(e) => {
            tracing::warn!("a message of consumer {name} without JetStream metadata, skipped: {e}");
            return None;
        }
    };
    let jetstream::Message { message, .. } = record;
    if let Some(reply) = message.reply.clone()
        && !held.lock().unwrap_or_else(|e| e.into_inner()).arrived(sequence, reply, acks)
    {
        return None;
    }
    Some(Received { sequence, published, redelivered, message })
}

/// Tells the server, every third of `ack_wait`, that the messages held are
/// still being worked on: each heard of at most half of `ack_wait` apart
/// (from its arrival, or its last "in progress"), so none times out.
pub(super) async fn in_progress(held: Held, acks: Acks, wait: Duration) {
    let every = (wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let due: Vec<async_nats::Subject> = {
            let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
            held.messages
                .values_mut()
                .filter(|(_, since)| now.duration_since(*since) >= every / 2)
                .map(|(reply, since)| {
                    *since = now;
                    reply.clone()
                })
                .collect()
        };
        for reply in due {
            if acks.send((reply, b"+WPI")).is_err() {
                return;
            }
        }
    }
}
