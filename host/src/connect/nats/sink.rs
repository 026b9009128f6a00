//! The sink (and dead-letter sink): publishes, each with an id that a
//! redelivered input's outputs repeat, stored before they count as delivered.

use super::{TIMESTAMP_HEADER, connect};
use crate::bindings::Message;
use crate::config;
use crate::connect::{Finished, Sink};
use crate::envelope::Origin;
use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use async_nats::jetstream::{self, context::PublishAckFuture, context::PublishError, context::PublishErrorKind};
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

/// How long a publish is tried again before the run fails.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// The largest header block a JetStream stream stores.
const MAX_HEADER_BYTES: usize = u16::MAX as usize;
/// What the server takes from a message's header name: headers beginning
/// so are instructions to it (`Nats-Expected-Stream`, `Nats-Rollup`,
/// `Nats-TTL`, ...), not data. An input's are not passed on to an output,
/// where they would make the server refuse or act on the publish.
const SERVER_PREFIX: &str = "nats-";

/// Whether the server acts on a header of this name.
pub(super) fn for_the_server(name: &str) -> bool {
    name.get(..SERVER_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(SERVER_PREFIX))
}

/// A publish on its way: its acknowledgement from the server (if it could
/// be sent), and the message, to send again if the server does not store it.
struct Publishing {
    ack: Result<PublishAckFuture, PublishError>,
    message: jetstream::message::PublishMessage,
}

/// Publishing to a subject, each message stored by the stream that captures it.
pub(crate) struct NatsSink {
    js: jetstream::Context,
    subject: async_nats::Subject,
    key_header: HeaderName,
    /// Its length, for the size of a message's headers.
    key_header_len: usize,
    /// The source's name, which begins every message id; `None` (no ids)
    /// for a source that does not deliver an input twice.
    source: Option<String>,
    /// Dead letters get ids of their own.
    dead_letters: bool,
    in_flight: VecDeque<Publishing>,
    /// The largest message the server takes.
    max_payload: usize,
    /// The largest message (headers and payload) the stream stores, if it
    /// sets one (`max_msg_size`).
    max_msg_size: Option<usize>,
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
        // Checked with the config; parsed once, not per message.
        let key_header: HeaderName = config.key_header.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("key_header {:?} is not a NATS header name", config.key_header),
            )
        })?;
        if for_the_server(&config.key_header) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "key_header {:?} begins with `Nats-`: the NATS server acts on such headers; choose another name",
                    config.key_header
                ),
            ));
        }
        let client = connect(&config.url).await?;
        let max_payload = client.server_info().max_payload;
        let js = jetstream::new(client);
        let mut stream = match &config.stream {
            Some(stream) => {
                let wanted = jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![config.subject.clone()],
                    ..Default::default()
                };
                js.get_or_create_stream(wanted).await.map_err(|e| {
                    io::Error::other(format!("cannot create stream {stream} for subject {}: {e}", config.subject))
                })?
            }
            None => {
                let name = js.stream_by_subject(config.subject.clone()).await.map_err(|e| {
                    io::Error::other(format!(
                        "no stream at {} stores subject {} ({e}): create one, or set `stream` in [sink.nats] to have \
                         sluice create it",
                        config.url, config.subject
                    ))
                })?;
                js.get_stream(&name)
                    .await
                    .map_err(|e| io::Error::other(format!("cannot open stream {name} at {}: {e}", config.url)))?
            }
        };
        // A message over the stream's size limit is refused (dead-lettered)
        // before it is sent, rather than rejected by the server after.
        let max_msg_size = match stream.info().await {
            Ok(info) => usize::try_from(info.config.max_message_size).ok().filter(|&n| n > 0),
            Err(e) => return Err(io::Error::other(format!("cannot read the settings of the sink's stream: {e}"))),
        };
        Ok(NatsSink {
            js,
            subject: config.subject.clone().into(),
            key_header,
            key_header_len: config.key_header.len(),
            source,
            dead_letters,
            in_flight: VecDeque::new(),
            max_payload,
            max_msg_size,
            url: config.url.clone(),
            max_in_flight: config.max_in_flight.max(1),
            published: 0,
            duplicates: 0,
        })
    }

    /// Waits for the oldest publish to be stored. One the server did not
    /// store because it was away, busy or slow (no answer, no responders, a
    /// 503) is published again, with the same message id (so the stream
    /// keeps one), for up to [`RETRY_FOR`]. One it refused (a JetStream
    /// error in the 400s: sending it again cannot help) fails the run at once.
    async fn settle_oldest(&mut self) -> io::Result<()> {
        let Some(Publishing { mut ack, message }) = self.in_flight.pop_front() else { return Ok(()) };
        let give_up = Instant::now() + RETRY_FOR;
        let mut pause = Duration::from_millis(100);
        loop {
            let error = match ack {
                Ok(pending) => match pending.await {
                    Ok(stored) => {
                        self.published += 1;
                        self.duplicates += u64::from(stored.duplicate);
                        return Ok(());
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if let Some(refusal) = refused(&error) {
                return Err(io::Error::other(format!(
                    "the NATS server at {} refused a message published to {}: {refusal}. Sending it again cannot \
                     help; check the settings of the stream that stores {} (sealed, limits). What was not \
                     acknowledged is delivered again when a worker runs",
                    self.url, self.subject, self.subject
                )));
            }
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
            ack = self.js.send_publish(self.subject.clone(), message.clone()).await;
        }
    }

    /// The size of the header block the sink sends with `message` (as the
    /// server counts it), at most: the message id counted at its longest.
    fn header_bytes(&self, message: &Message) -> usize {
        let line = |name: usize, value: usize| name + b": ".len() + value + b"\r\n".len();
        let mut bytes = b"NATS/1.0\r\n\r\n".len();
        for header in message.headers.iter().filter(|h| !for_the_server(&h.name)) {
            bytes += line(header.name.len(), header.value.len());
        }
        if let Some(key) = &message.key {
            bytes += line(self.key_header_len, key.len());
        }
        if message.timestamp.is_some() {
            bytes += line(TIMESTAMP_HEADER.len(), 20);
        }
        if let Some(source) = &self.source {
            // `<source>:dead:<position>:<branch>`, each number at its longest.
            bytes += line("Nats-Msg-Id".len(), source.len() + ":dead:".len() + 20 + 1 + 16);
        }
        bytes
    }

    /// Why NATS cannot carry `message`, if it cannot: with its headers it
    /// is over the server's `max_payload` or the stream's `max_msg_size`,
    /// its headers over what a stream stores, or a header is not what a
    /// NATS header can be (a token for a name, one line of text for a
    /// value). Checked without building anything: [`NatsSink::headers`] then
    /// cannot fail, and the server does not refuse it after it was sent.
    fn unfit(&self, message: &Message) -> Option<String> {
        let header_bytes = self.header_bytes(message);
        let size = header_bytes + message.value.len();
        if size > self.max_payload {
            return Some(format!(
                "the message is {size} bytes with its headers, over the NATS server's max_payload of {} bytes",
                self.max_payload
            ));
        }
        if let Some(limit) = self.max_msg_size.filter(|&limit| size > limit) {
            return Some(format!(
                "the message is {size} bytes with its headers, over the max_msg_size of {limit} bytes of the \
                 stream that stores {}",
                self.subject
            ));
        }
        if header_bytes > MAX_HEADER_BYTES {
            return Some(format!(
                "its headers are {header_bytes} bytes, over the {MAX_HEADER_BYTES} bytes a JetStream stream stores"
            ));
        }
        let one_line = |bytes: &[u8]| std::str::from_utf8(bytes).is_ok_and(|t| !t.contains(['\r', '\n']));
        let unfit_value =
            |what: String| Some(format!("{what} is not one line of UTF-8 text, which a NATS header must be"));
        for header in message.headers.iter().filter(|h| !for_the_server(&h.name)) {
            if header.name.parse::<HeaderName>().is_err() {
                return Some(format!("header name {:?} cannot be a NATS header name", header.name));
            }
            if !one_line(&header.value) {
                return unfit_value(format!("header {}", header.name));
            }
        }
        match &message.key {
            Some(key) if !one_line(key) => unfit_value("the key".into()),
            _ => None,
        }
    }

    /// The record's headers: the message's, then its key and timestamp. The
    /// message passed [`NatsSink::unfit`]: anything NATS cannot carry is left
    /// out. So are headers the server acts on (`Nats-...`): they were
    /// instructions for the publish that stored the input, not for this one.
    fn headers(&self, message: &Message) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        for header in &message.headers {
            if for_the_server(&header.name) {
                tracing::debug!("header {} not published to {}: the NATS server acts on it", header.name, self.subject);
                continue;
            }
            if let Ok(name) = header.name.parse::<HeaderName>() {
                headers.append(name, text(&header.value));
            }
        }
        if let Some(key) = &message.key {
            headers.insert(self.key_header.clone(), text(key));
        }
        if let Some(ms) = message.timestamp {
            headers.insert(TIMESTAMP_HEADER, ms.to_string());
        }
        headers
    }
}

impl Sink for NatsSink {
    fn refuses(&self, message: &Message) -> Option<String> {
        self.unfit(message)
    }

    async fn write(&mut self, message: Message, origin: &Origin) -> io::Result<()> {
        let headers = self.headers(&message);
        if self.in_flight.len() >= self.max_in_flight {
            self.settle_oldest().await?;
        }
        let mut publish = jetstream::message::PublishMessage::build().payload(message.value.into()).headers(headers);
        if let Some(source) = &self.source {
            let kind = if self.dead_letters { "dead" } else { "out" };
            publish = publish.message_id(format!("{source}:{kind}:{}:{:x}", origin.position, origin.branch));
        }
        // Not sent now (the server is away): sent again when its turn to be stored comes.
        let ack = self.js.send_publish(self.subject.clone(), publish.clone()).await;
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

/// What the server said when it refused a publish for good, if it did:
/// a JetStream API error in the 400s (a message over a limit, a sealed
/// stream, an expectation not met). Not a timeout, no responders (no stream
/// yet, or the server restarting) or a 503: those pass.
fn refused(error: &PublishError) -> Option<String> {
    if error.kind() == PublishErrorKind::MaxPayloadExceeded {
        return Some(error.to_string());
    }
    let api = std::error::Error::source(error)?.downcast_ref::<jetstream::Error>()?;
    (400..500).contains(&api.code()).then(|| api.to_string())
}
