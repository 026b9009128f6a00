//! The source: a JetStream durable pull consumer, acknowledged as the
//! pipeline finishes each message, kept alive while it works, handed back
//! when it stops.

use super::pull::{Acks, Held, PULL_BATCH, Received, in_progress, pull};
use super::{TIMESTAMP_HEADER, connect};
use crate::bindings::{Header, Message};
use crate::config;
use crate::connect::{Backlog, Input, Locator, PositionForm, Read, Source};
use crate::envelope::Done;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A negative acknowledgement: delivered again after 500 ms.
const HAND_BACK: &[u8] = br#"-NAK {"delay":500000000}"#;
/// Recently acknowledged stream sequences remembered, to recognise a copy
/// the server sent again before it heard the acknowledgement.
const RECENT: usize = 8192;

/// A JetStream durable consumer.
pub(crate) struct NatsSource {
    client: async_nats::Client,
    /// Messages as they arrive (already held), from the pulling task.
    received: mpsc::Receiver<io::Result<Received>>,
    pulling: JoinHandle<()>,
    /// Tells the pulling task to stop asking for more.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stream: String,
    consumer: String,
    /// A name for what it reads, which a stream made anew under the same
    /// name does not share ([`Source::id`]).
    id: String,
    max_ack_pending: u64,
    ack_wait: Duration,
    key: Key,
    /// What this worker holds and has not settled: received, waiting, or
    /// being worked on.
    held: Held,
    acks: Acks,
    acking: JoinHandle<()>,
    progress: JoinHandle<()>,
    backlog: Backlog,
    asking: JoinHandle<()>,
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
        // With when the stream was made: one deleted and made again numbers
        // its messages from 1 again, and those are other messages.
        let created = stream.cached_info().created.unix_timestamp_nanos() / 1_000_000;
        let id = format!("nats:{}@{created}/{}", config.stream, config.consumer);
        let consumer_config = pull::Config {
            durable_name: Some(config.consumer.clone()),
            filter_subject: config.subject.clone().unwrap_or_default(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_ack_pending: i64::try_from(config.max_ack_pending).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let consumer = super::consumer::open(&stream, config, consumer_config).await?;

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
        let waiting = PULL_BATCH.min(config.max_ack_pending.max(1)) as usize;
        let (to_pipeline, received) = mpsc::channel(waiting);
        let asking = tokio::spawn(watch(consumer.clone(), backlog.clone(), to_pipeline.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let pulling =
            tokio::spawn(pull(consumer, held.clone(), acks.clone(), to_pipeline, stopped, config.consumer.clone()));
        let key = match config.key_token {
            Some(token) => Key::Token(token.saturating_sub(1)),
            None => Key::Header(config.key_header.clone()),
        };
        Ok(NatsSource {
            client,
            received,
            pulling,
            stop: Some(stop),
            stream: config.stream.clone(),
            consumer: config.consumer.clone(),
            id,
            max_ack_pending: config.max_ack_pending,
            ack_wait: config.ack_wait,
            key,
            held,
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
                if name.eq_ignore_ascii_case(TIMESTAMP_HEADER)
                    && let Ok(ms) = value.as_str().parse()
                {
                    timestamp = Some(ms);
                    continue;
                }
                out.push(Header { name: name.clone(), value: value.as_str().as_bytes().to_vec() });
            }
        }
        Message { key, value: payload.into(), headers: out, timestamp }
    }
}

/// Asks the server, every two seconds, how many messages wait for the
/// consumer (not yet delivered to any of its workers); and stops the worker
/// once the consumer, or its stream, is gone (deleted while it ran): a pull
/// from it is never answered, so the worker would wait for ever.
async fn watch(
    mut consumer: jetstream::consumer::PullConsumer,
    backlog: Backlog,
    to: mpsc::Sender<io::Result<Received>>,
) {
    use jetstream::context::ConsumerInfoErrorKind::{NotFound, StreamNotFound};
    let (stream, name) = {
        let info = consumer.cached_info();
        (info.stream_name.clone(), info.name.clone())
    };
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut missing = 0;
    loop {
        tick.tick().await;
        let gone = match consumer.info().await {
            Ok(info) => {
                backlog.set(info.num_pending);
                None
            }
            Err(e) if e.kind() == NotFound => Some((
                format!("consumer {name} of stream {stream}"),
                "running the pipeline again creates the consumer anew, which delivers the stream from its first message",
            )),
            Err(e) if e.kind() == StreamNotFound => {
                Some((format!("stream {stream}"), "create the stream again before running the pipeline again"))
            }
            // The server away: the pulls say so, and the client connects again.
            Err(_) => None,
        };
        // Three times in a row (4 s), to be sure: not a server starting up.
        missing = if gone.is_some() { missing + 1 } else { 0 };
        if let Some((gone, then)) = gone.filter(|_| missing == 3) {
            let error = io::Error::other(format!(
                "the {gone} is gone from the server (deleted while this worker ran): nothing more can be read or \
                 acknowledged; {then}"
            ));
            let _ = to.send(Err(error)).await;
            return;
        }
    }
}

impl Source for NatsSource {
    async fn next(&mut self) -> io::Result<Option<Input>> {
        match self.received.recv().await {
            Some(Ok(Received { sequence, published, redelivered, message })) => {
                let message = self.message(message, published);
                Ok(Some(Input { position: sequence, read: Read::Message(message), redelivered }))
            }
            Some(Err(e)) => Err(e),
            None => Err(io::Error::other(format!("reading consumer {}: the pulling task ended", self.consumer))),
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
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Some((reply, _)) = held.messages.remove(&done.position) else {
            return;
        };
        let kind: &'static [u8] = if done.delivered { b"+ACK" } else { b"-NAK" };
        let _ = self.acks.send((reply, kind));
        if done.delivered {
            let (order, set) = &mut held.recent;
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

    fn redelivers_after(&self) -> Option<Duration> {
        Some(self.ack_wait)
    }

    fn id(&self) -> Option<String> {
        Some(self.id.clone())
    }

    async fn close(mut self) -> io::Result<()> {
        // The pulling task stops asking for more, and holds what is still
        // arriving. Everything held and not done goes back now, not after
        // `ack_wait`: what the server sent that the pipeline never took, and
        // what it took but never finished (stopped mid-way). Delivered again
        // half a second later, not at once: this worker is still pulling.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.pulling).await;
        let unfinished: Vec<_> = self.held.lock().unwrap_or_else(|e| e.into_inner()).messages.drain().collect();
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
