//! The settings of the broker connectors: `[source.nats]`, `[sink.nats]`,
//! `[dead_letter.nats]` and their `redis` twins. A table's presence picks
//! its connector, as `path` picks a file.

use serde::Deserialize;
use std::time::Duration;

/// A NATS JetStream durable pull consumer (`[source.nats]`). Every process
/// that runs the pipeline with the same `consumer` shares the stream's
/// messages: each goes to one of them, and comes back to another if it is
/// not acknowledged within `ack_wait`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsSource {
    /// The server: `nats://host:port`, several separated by commas.
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// The stream to read.
    pub stream: String,
    /// The durable consumer's name, created if missing: the workers that
    /// share it share the work. If it exists, its subject filter must be
    /// `subject` (else the worker stops with an error saying what to do);
    /// its `ack_wait` and `max_ack_pending` are updated to these.
    pub consumer: String,
    /// Only messages on subjects matching this (`orders.eu.>`); default: all
    /// of the stream's. Workers that each own a part of the keys give each
    /// its own consumer and subject.
    pub subject: Option<String>,
    /// How long the server waits for an acknowledgement before it delivers a
    /// message again (to this or another worker). sluice sends "in progress"
    /// for messages it still holds, so a slow message is not redelivered.
    #[serde(default = "default_ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Messages held unacknowledged at most by all the workers of the
    /// consumer together (a setting of the consumer, on the server): it
    /// sends no more until some are acknowledged, so backpressure reaches
    /// the broker.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: u64,
    /// The header whose value becomes the message key (and is taken out of
    /// the headers), unless `key_token` is set.
    #[serde(default = "default_key_header")]
    pub key_header: String,
    /// The message key is this token of the subject, counted from 1
    /// (`orders.eu.42` with `key_token = 3`: `42`).
    pub key_token: Option<usize>,
}

/// Publishing to NATS JetStream (`[sink.nats]`, `[dead_letter.nats]`): each
/// message is published and counts as delivered once the server has stored
/// it (its publish acknowledgement).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsSink {
    /// The server: `nats://host:port`, several separated by commas.
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// The subject to publish on; a stream must capture it.
    pub subject: String,
    /// A stream to create if it does not exist, capturing `subject`. If not
    /// set, a stream capturing `subject` must exist.
    pub stream: Option<String>,
    /// Publishes waiting for the server's acknowledgement at most.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The header the message key is written to (not one beginning with
    /// `Nats-`: the server acts on those, and the sink does not publish an
    /// input's).
    #[serde(default = "default_key_header")]
    pub key_header: String,
}

/// A Redis stream read through a consumer group (`[source.redis]`). Every
/// process that runs the pipeline shares the group's messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisSource {
    /// The server: `redis://host:port/db`.
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// The stream (its key).
    pub stream: String,
    /// The consumer group, created (with the stream, from its start) if missing.
    pub group: String,
    /// This worker's name in the group; default `<host>-<pid>`. A worker
    /// restarted under the same name first takes back what it held.
    pub consumer: Option<String>,
    /// Entries another consumer has held this long without acknowledging
    /// them are claimed (`XAUTOCLAIM`): its worker is taken for dead.
    #[serde(default = "default_claim_idle", with = "humantime_serde")]
    pub claim_idle: Duration,
    /// Entries held unacknowledged at most; reading waits below it.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: u64,
    /// The entry field holding the message's value; every field but these
    /// three is a header, in order.
    #[serde(default = "default_value_field")]
    pub value_field: String,
    /// The entry field holding the message's key.
    #[serde(default = "default_key_field")]
    pub key_field: String,
    /// The entry field holding the message's timestamp (milliseconds since
    /// the Unix epoch).
    #[serde(default = "default_timestamp_field")]
    pub timestamp_field: String,
}

/// Adding entries to a Redis stream (`[sink.redis]`, `[dead_letter.redis]`)
/// with `XADD`, pipelined.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisSink {
    /// The server: `redis://host:port/db`.
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// The stream (its key).
    pub stream: String,
    /// Keeps the stream to about this many entries (`XADD MAXLEN ~`).
    pub max_len: Option<u64>,
    /// The entry field holding the message's value; every field but these
    /// three is a header, in order.
    #[serde(default = "default_value_field")]
    pub value_field: String,
    /// The entry field holding the message's key.
    #[serde(default = "default_key_field")]
    pub key_field: String,
    /// The entry field holding the message's timestamp (milliseconds since
    /// the Unix epoch).
    #[serde(default = "default_timestamp_field")]
    pub timestamp_field: String,
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}

fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}

/// JetStream's own default.
fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}

fn default_claim_idle() -> Duration {
    Duration::from_secs(30)
}

fn default_max_ack_pending() -> u64 {
    1000
}

fn default_max_in_flight() -> usize {
    256
}

fn default_key_header() -> String {
    "Sluice-Key".into()
}

fn default_value_field() -> String {
    "value".into()
}

fn default_key_field() -> String {
    "key".into()
}

fn default_timestamp_field() -> String {
    "timestamp".into()
}
