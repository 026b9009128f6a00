//! The source: a JetStream durable pull consumer, acknowledged as the
//! pipeline finishes each message, kept alive while it works, handed back
//! when it stops.

use super::{TIMESTAMP_HEADER, connect};
use crate::bindings::{Header, Message};
use crate::config;
use crate::connect::{Backlog, Input, Locator, PositionForm, Read, Source};
use crate::envelope::Done;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long one pull request waits on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// A negative acknowledgement: delivered again after 500 ms.
const HAND_BACK: &[u8] = br#"-NAK {"delay":500000000}"#;
/// Messages asked of the server per pull, at most. What the client holds
/// before the pipeline takes it is not kept alive with "in progress": if it
/// waits past `ack_wait` the server sends it again, and the copy that comes
/// second is recognised (held, or recently acknowledged) and not run twice.
const PULL_BATCH: u64 = 256;
/// Recently acknowledged stream sequences remembered, to recognise a copy
/// the server sent again before it heard the acknowledgement.
const RECENT: usize = 8192;

/// A JetStream durable consumer.
pub(crate) struct NatsSource {
    client: async_nats::Client,
    messages: pull::Stream,
    stream: String,
    consumer: String,
    max_ack_pending: u64,
    key: Key,
    /// What the pipeline holds: each message's reply subject (where its
    /// acknowledgement goes) by stream sequence.
    held: Held,
    /// Sequences acknowledged lately, oldest first, and as a set.
    recent: (std::collections::VecDeque<u64>, std::collections::HashSet<u64>),
    acks: mpsc::UnboundedSender<(async_nats::Subject, &'static [u8])>,
    acking: JoinHandle<()>,
    progress: JoinHandle<()>,
    backlog: Backlog,
    asking: JoinHandle<()>,
}

type Held = Arc<Mutex<HashMap<u64, (async_nats::Subject, Instant)>>>;

/// Where a message's key comes from.
enum Key {
    Header(String),
    /// A token of the subject, from 0.
    Token(usize),
}

impl NatsSource {
    /// Connects, and creates the durable consumer if it does not exist.
    pub(crate) async fn open(config: &config::NatsSource) -> io::Result<Self> {
        let client = connect(&config.url).await?;
        let js = jetstream::new(client.clone());
        let stream = js.get_stream(&config.stream).await.map_err(|e| {
            io::Error::other(format!(
                "cannot open stream {} at {}: {e}. Create it first (or let a sluice pipeline whose [sink.nats] sets \
                 `stream` create it)",
                config.stream, config.url
            ))
        })?;
        let consumer_config = pull::Config {
            durable_name: Some(config.consumer.clone()),
            filter_subject: config.subject.clone().unwrap_or_default(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_ack_pending: i64::try_from(config.max_ack_pending).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let consumer: jetstream::consumer::PullConsumer =
            stream.get_or_create_consumer(&config.consumer, consumer_config).await.map_err(|e| {
                io::Error::other(format!("cannot open consumer {} on stream {}: {e}", config.consumer, config.stream))
            })?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH.min(config.max_ack_pending.max(1)) as usize)
            // Short-lived pulls: one the server no longer holds (it was
            // answered with a status the client does not account for) costs
            // at most this long a pause, not the default half a minute.
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_EXPIRES / 4)
            .messages()
            .await
            .map_err(|e| io::Error::other(format!("cannot read consumer {}: {e}", config.consumer)))?;

        let held: Held = Arc::default();
        let (acks, mut to_send) = mpsc::unbounded_channel::<(async_nats::Subject, &'static [u8])>();
        let sender = client.clone();
        let acking = tokio::spawn(async move {
            while let Some((reply, kind)) = to_send.recv().await {
                // A lost ack only means a redelivery; the client reconnects by itself.
                if let Err(e) = sender.publish(reply, kind.into()).await {
                    tracing::warn!("cannot acknowledge a NATS message: {e}");
                }
            }
        });
        let progress = tokio::spawn(in_progress(held.clone(), acks.clone(), config.ack_wait));
        let backlog = Backlog::new();
        let asking = tokio::spawn(ask_backlog(consumer.clone(), backlog.clone()));
        let key = match config.key_token {
            Some(token) => Key::Token(token.saturating_sub(1)),
            None => Key::Header(config.key_header.clone()),
        };
        Ok(NatsSource {
            client,
            messages,
            stream: config.stream.clone(),
            consumer: config.consumer.clone(),
            max_ack_pending: config.max_ack_pending,
            key,
            held,
            recent: Default::default(),
            acks,
            acking,
            progress,
            backlog,
            asking,
        })
    }

    fn message(&self, record: async_nats::Message, published: i64) -> Message {
        let async_nats::Message { subject, payload, headers, .. } = record;
        let mut timestamp = Some(published);
        let mut key = match self.key {
            Key::Token(token) => subject.split('.').nth(token).map(|t| t.as_bytes().to_vec()),
            Key::Header(_) => None,
        };
        let mut out = Vec::new();
        for (name, values) in headers.iter().flat_map(HeaderMap::iter) {
            let name = name.to_string();
            for value in values {
                match &self.key {
                    Key::Header(header) if key.is_none() && name.eq_ignore_ascii_case(header) => {
                        key = Some(value.as_str().as_bytes().to_vec());
                        continue;
                    }
                    _ => {}
                }
                if name.eq_ignore_ascii_case(TIMESTAMP_HEADER) {
                    if let Ok(ms) = value.as_str().parse() {
                        timestamp = Some(ms);
                        continue;
                    }
                }
                out.push(Header { name: name.clone(), value: value.as_str().as_bytes().to_vec() });
            }
        }
        Message { key, value: payload.into(), headers: out, timestamp }
    }
}

/// Asks the server, every two seconds, how many messages wait for the
/// consumer (not yet delivered to any of its workers).
async fn ask_backlog(mut consumer: jetstream::consumer::PullConsumer, backlog: Backlog) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        if let Ok(info) = consumer.info().await {
            backlog.set(info.num_pending);
        }
    }
}

/// Tells the server, every third of `ack_wait`, that the messages held
/// longer than that are still being worked on.
async fn in_progress(held: Held, acks: mpsc::UnboundedSender<(async_nats::Subject, &'static [u8])>, wait: Duration) {
    let every = (wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let due: Vec<async_nats::Subject> = {
            let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
            held.values_mut()
                .filter(|(_, since)| now.duration_since(*since) >= every)
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

impl Source for NatsSource {
    async fn next(&mut self) -> io::Result<Option<Input>> {
        loop {
            let record = match self.messages.next().await {
                None => return Ok(None),
                Some(Ok(record)) => record,
                // Heartbeats missed while the server was away: the stream
                // pulls again once the client has reconnected.
                Some(Err(e)) if e.kind() == pull::MessagesErrorKind::MissingHeartbeat => {
                    tracing::warn!("no heartbeat from the NATS server for consumer {}: {e}", self.consumer);
                    continue;
                }
                Some(Err(e)) => {
                    return Err(io::Error::other(format!("reading consumer {}: {e}", self.consumer)));
                }
            };
            let (sequence, published) = match record.info() {
                Ok(info) => (info.stream_sequence, (info.published.unix_timestamp_nanos() / 1_000_000) as i64),
                Err(e) => {
                    tracing::warn!("a message of consumer {} without JetStream metadata, skipped: {e}", self.consumer);
                    continue;
                }
            };
            let jetstream::Message { message, .. } = record;
            if let Some(reply) = message.reply.clone() {
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                // Delivered again while the pipeline still has it (its ack
                // wait ran out first): it is acknowledged as this delivery,
                // and not run twice.
                if let Some(entry) = held.get_mut(&sequence) {
                    *entry = (reply, Instant::now());
                    continue;
                }
                // Sent again after the pipeline was done with it: acknowledged again, not run again.
                if self.recent.1.contains(&sequence) {
                    let _ = self.acks.send((reply, b"+ACK"));
                    continue;
                }
                held.insert(sequence, (reply, Instant::now()));
            }
            let message = self.message(message, published);
            return Ok(Some(Input { position: sequence, read: Read::Message(message) }));
        }
    }

    fn locator(&self) -> Locator {
        Locator { kind: "nats", name: self.stream.clone(), position: "sequence", form: PositionForm::Number }
    }

    fn acknowledges(&self) -> bool {
        true
    }

    /// Acknowledged, or (given up on) handed back at once for redelivery.
    fn done(&mut self, done: Done) {
        let Some((reply, _)) = self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&done.position) else {
            return;
        };
        let kind: &'static [u8] = if done.delivered { b"+ACK" } else { b"-NAK" };
        let _ = self.acks.send((reply, kind));
        if done.delivered {
            let (order, set) = &mut self.recent;
            if order.len() == RECENT
                && let Some(oldest) = order.pop_front()
            {
                set.remove(&oldest);
            }
            order.push_back(done.position);
            set.insert(done.position);
        }
    }

    fn max_unacknowledged(&self) -> Option<u64> {
        Some(self.max_ack_pending)
    }

    fn backlog(&self) -> Option<Backlog> {
        Some(self.backlog.clone())
    }

    fn id(&self) -> Option<String> {
        Some(format!("nats:{}/{}", self.stream, self.consumer))
    }

    async fn close(mut self) -> io::Result<()> {
        // What the server already sent that the pipeline never took goes
        // back now, not after `ack_wait`, to be delivered again half a
        // second later (not at once: this worker is still pulling).
        while let Ok(Some(Ok(record))) = tokio::time::timeout(Duration::from_millis(50), self.messages.next()).await {
            if let Some(reply) = record.message.reply {
                let _ = self.acks.send((reply, HAND_BACK));
            }
        }
        // And what the pipeline took but never finished (stopped mid-way).
        let unfinished: Vec<_> = self.held.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        for (_, (reply, _)) in unfinished {
            let _ = self.acks.send((reply, HAND_BACK));
        }
        let NatsSource { client, acks, acking, progress, asking, .. } = self;
        progress.abort();
        asking.abort();
        drop(acks);
        let _ = acking.await;
        client.flush().await.map_err(|e| io::Error::other(format!("sending the last acknowledgements: {e}")))
    }
}
