//! NATS JetStream: a durable pull consumer as a source, and publishing as a
//! sink.
//!
//! Every worker that runs a pipeline with the same consumer shares its
//! messages. A message is acknowledged once the pipeline is done with it
//! (its outputs published and stored, its dead letters too); until then,
//! from the moment it arrives (waiting for the pipeline or worked on),
//! sluice tells the server it is still being worked on, so that it is
//! redelivered only if its worker dies. The consumer's `max_ack_pending`
//! bounds what all its workers hold together: backpressure reaches the
//! server. An existing consumer is held to the pipeline file's settings.
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
//! be text: NATS headers are). Headers the server acts on (`Nats-...`) are
//! not published: they were for the publish that stored the input.

mod consumer;
mod pull;
mod sink;
mod source;

pub(crate) use sink::NatsSink;
pub(crate) use source::NatsSource;

use std::io;

/// Where a message's timestamp travels, in milliseconds since the Unix epoch.
const TIMESTAMP_HEADER: &str = "Sluice-Timestamp";

async fn connect(url: &str) -> io::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name("sluice")
        .connect(url)
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, format!("cannot connect to NATS at {url}: {e}")))
}
