//! NATS JetStream: a durable pull consumer as a source, and publishing as a
//! sink.
//!
//! Every worker that runs a pipeline with the same consumer shares its
//! messages. A message is acknowledged once the pipeline is done with it
//! (its outputs published and stored, its dead letters too); until then
//! sluice tells the server it is still being worked on, so that it is
//! redelivered only if its worker dies. A worker holds at most the
//! consumer's `max_ack_pending`: backpressure reaches the server.
//!
//! The sink gives each output a `Nats-Msg-Id` made of the source's name,
//! its input's position and its branch among the input's outputs, so the
//! outputs of an input delivered twice (its first worker died before
//! acknowledging it) are dropped by the stream's duplicate window.
//!
//! A record maps onto a message as it is: payload to value, headers to
//! headers; the key comes from a header (taken out of the headers) or a
//! token of the subject, the timestamp from a header or the time the stream
//! stored the record. The sink writes key and timestamp back as headers, so
//! a message that goes through NATS comes back the same (header values must
//! be text: NATS headers are).

use super::{Backlog, Finished, Input, Locator, PositionForm, Read, Sink, Source};
use crate::bindings::{Header, Message};
use crate::config;
use crate::envelope::{Done, Origin};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull, context::PublishAckFuture};
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Where a message's timestamp travels, in milliseconds since the Unix epoch.
const TIMESTAMP_HEADER: &str = "Sluice-Timestamp";
/// How long a publish is tried again before the run fails.
const RETRY_FOR: Duration = Duration::from_secs(60);
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

/// A publish on its way: its acknowledgement from the server (if it could
/// be sent), and the message, to send again if the server does not store it.
struct Publishing {
    ack: Option<PublishAckFuture>,
    message: jetstream::message::PublishMessage,
}

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

/// Publishing to a subject, each message stored by the stream that captures it.
pub(crate) struct NatsSink {
    js: jetstream::Context,
    subject: async_nats::Subject,
    key_header: String,
    /// The source's name, which begins every message id; `None` (no ids)
    /// for a source that does not deliver an input twice.
    source: Option<String>,
    /// Dead letters get ids of their own.
    dead_letters: bool,
    in_flight: VecDeque<Publishing>,
    /// The largest message the server takes.
    max_payload: usize,
    url: String,
    max_in_flight: usize,
    published: u64,
    duplicates: u64,
}

impl NatsSink {
    /// Connects; creates the stream if `stream` is set and it is missing,
    /// else checks that a stream captures the subject.
    pub(crate) async fn open(
        config: &config::NatsSink,
        source: Option<String>,
        dead_letters: bool,
    ) -> io::Result<Self> {
        let client = connect(&config.url).await?;
        let max_payload = client.server_info().max_payload;
        let js = jetstream::new(client);
        match &config.stream {
            Some(stream) => {
                let wanted = jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![config.subject.clone()],
                    ..Default::default()
                };
                js.get_or_create_stream(wanted).await.map_err(|e| {
                    io::Error::other(format!("cannot create stream {stream} for subject {}: {e}", config.subject))
                })?;
            }
            None => {
                js.stream_by_subject(config.subject.clone()).await.map_err(|e| {
                    io::Error::other(format!(
                        "no stream at {} stores subject {} ({e}): create one, or set `stream` in [sink.nats] to have \
                         sluice create it",
                        config.url, config.subject
                    ))
                })?;
            }
        }
        Ok(NatsSink {
            js,
            subject: config.subject.clone().into(),
            key_header: config.key_header.clone(),
            source,
            dead_letters,
            in_flight: VecDeque::new(),
            max_payload,
            url: config.url.clone(),
            max_in_flight: config.max_in_flight.max(1),
            published: 0,
            duplicates: 0,
        })
    }

    /// Waits for the oldest publish to be stored. One the server did not
    /// store (it went away, or timed out) is published again, with the same
    /// message id (so the stream keeps one), for up to [`RETRY_FOR`].
    async fn settle_oldest(&mut self) -> io::Result<()> {
        let Some(Publishing { mut ack, message }) = self.in_flight.pop_front() else { return Ok(()) };
        let give_up = Instant::now() + RETRY_FOR;
        let mut pause = Duration::from_millis(100);
        loop {
            let error = match ack {
                Some(pending) => match pending.await {
                    Ok(stored) => {
                        self.published += 1;
                        self.duplicates += u64::from(stored.duplicate);
                        return Ok(());
                    }
                    Err(e) => e.to_string(),
                },
                None => "not sent".to_string(),
            };
            if Instant::now() >= give_up {
                return Err(io::Error::other(format!(
                    "the NATS server at {} did not store a message published to {} for {} s ({error}). What was \
                     not acknowledged is delivered again when a worker runs; run workers under a supervisor that \
                     restarts them",
                    self.url,
                    self.subject,
                    RETRY_FOR.as_secs()
                )));
            }
            tracing::warn!("publishing to {}: {error}; publishing it again in {} ms", self.subject, pause.as_millis());
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            ack = self.js.send_publish(self.subject.clone(), message.clone()).await.ok();
        }
    }

    /// The record's headers: the message's, then its key and timestamp.
    /// Or why NATS cannot carry them: its header values are one line of
    /// text, its names a token.
    fn headers(&self, message: &Message) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        let text = |what: &str, bytes: &[u8]| match std::str::from_utf8(bytes) {
            Ok(text) if !text.contains(['\r', '\n']) => Ok(text.to_owned()),
            _ => Err(format!("{what} is not one line of UTF-8 text, which a NATS header must be")),
        };
        for header in &message.headers {
            let name: async_nats::header::HeaderName = header
                .name
                .parse()
                .map_err(|_| format!("header name {:?} cannot be a NATS header name", header.name))?;
            headers.append(name, text(&format!("header {}", header.name), &header.value)?);
        }
        if let Some(key) = &message.key {
            let name: async_nats::header::HeaderName = self
                .key_header
                .parse()
                .map_err(|_| format!("key_header {:?} is not a NATS header name", self.key_header))?;
            headers.insert(name, text("the key", key)?);
        }
        if let Some(ms) = message.timestamp {
            headers.insert(TIMESTAMP_HEADER, ms.to_string());
        }
        Ok(headers)
    }
}

impl Sink for NatsSink {
    fn refuses(&self, message: &Message) -> Option<String> {
        if message.value.len() > self.max_payload {
            return Some(format!(
                "the message is {} bytes, over the NATS server's max_payload of {} bytes",
                message.value.len(),
                self.max_payload
            ));
        }
        self.headers(message).err()
    }

    async fn write(&mut self, message: Message, origin: &Origin) -> io::Result<()> {
        let headers = self.headers(&message).map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, reason))?;
        if self.in_flight.len() >= self.max_in_flight {
            self.settle_oldest().await?;
        }
        let mut publish = jetstream::message::PublishMessage::build().payload(message.value.into()).headers(headers);
        if let Some(source) = &self.source {
            let kind = if self.dead_letters { "dead" } else { "out" };
            publish = publish.message_id(format!("{source}:{kind}:{}:{:x}", origin.position, origin.branch));
        }
        // Not sent now (the server is away): sent again when its turn to be stored comes.
        let ack = self.js.send_publish(self.subject.clone(), publish.clone()).await.ok();
        self.in_flight.push_back(Publishing { ack, message: publish });
        Ok(())
    }

    /// Every publish stored; the position is the count stored.
    async fn flush(&mut self) -> io::Result<u64> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(self.published)
    }

    fn is_live(&self) -> bool {
        true
    }

    async fn finish(mut self) -> io::Result<Finished> {
        self.flush().await?;
        if self.duplicates > 0 {
            tracing::warn!(
                "{} of {} messages published to {} were duplicates of earlier ones (redelivered inputs), dropped by \
                 the stream",
                self.duplicates,
                self.published,
                self.subject
            );
        }
        Ok(Finished::visible())
    }
}

async fn connect(url: &str) -> io::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name("sluice")
        .connect(url)
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, format!("cannot connect to NATS at {url}: {e}")))
}
