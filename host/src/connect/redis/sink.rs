//! [`RedisSink`]: adds each message to a stream as an entry (`XADD`),
//! pipelined in batches, refusing a message whose headers would read back as
//! its value, key or timestamp.

use super::fields::Fields;
use super::{connect, passing};
use crate::bindings::Message;
use crate::config;
use crate::connect::{Finished, Sink};
use crate::envelope::Origin;
use redis::aio::ConnectionManager;
use std::io;
use std::time::{Duration, Instant};

/// Entries the sink sends in one round trip, at most.
const WRITE_BATCH: usize = 256;
/// How long the sink tries a batch again before the run fails.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Adding entries to a stream, pipelined.
pub(crate) struct RedisSink {
    conn: ConnectionManager,
    url: String,
    stream: String,
    max_len: Option<u64>,
    fields: Fields,
    pipe: redis::Pipeline,
    added: u64,
}

impl RedisSink {
    pub(crate) async fn open(config: &config::RedisSink) -> io::Result<Self> {
        Ok(RedisSink {
            conn: connect(&config.url).await?,
            url: config.url.clone(),
            stream: config.stream.clone(),
            max_len: config.max_len,
            fields: Fields {
                value: config.value_field.clone(),
                key: config.key_field.clone(),
                timestamp: config.timestamp_field.clone(),
            },
            pipe: redis::Pipeline::with_capacity(WRITE_BATCH),
            added: 0,
        })
    }

    /// Why a message cannot be added: a header named as one of the three
    /// fields would be read back as that field.
    fn refusal(&self, message: &Message) -> Option<String> {
        let Fields { value, key, timestamp } = &self.fields;
        let header = message.headers.iter().find(|h| [value, key, timestamp].contains(&&h.name))?;
        Some(format!(
            "header `{}` has the name of the Redis stream field that holds the message's value, key or timestamp \
             (value_field, key_field, timestamp_field): rename the header, or the field",
            header.name
        ))
    }

    /// Sends what the pipeline holds, in one round trip. A batch the
    /// connection dropped is sent again (the manager connects again), for up
    /// to [`RETRY_FOR`]. At-least-once: the server may have added part of
    /// it before the connection went, and that part is then added twice.
    async fn send(&mut self) -> io::Result<()> {
        if self.pipe.is_empty() {
            return Ok(());
        }
        let give_up = Instant::now() + RETRY_FOR;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.pipe.exec_async(&mut self.conn).await {
                Ok(()) => break,
                Err(e) if !passing(&e) => {
                    return Err(io::Error::other(format!("adding to Redis stream {}: {e}", self.stream)));
                }
                Err(e) if Instant::now() >= give_up => {
                    return Err(io::Error::other(format!(
                        "the Redis server at {} did not take entries added to stream {} for {} s ({e}). What was \
                         not acknowledged is delivered again when a worker runs; run workers under a supervisor \
                         that restarts them",
                        self.url,
                        self.stream,
                        RETRY_FOR.as_secs()
                    )));
                }
                Err(e) => {
                    tracing::warn!(
                        "adding to Redis stream {}: {e}; sending {} entries again in {} ms",
                        self.stream,
                        self.pipe.len(),
                        pause.as_millis()
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.added += self.pipe.len() as u64;
        self.pipe.clear();
        Ok(())
    }
}

impl Sink for RedisSink {
    fn refuses(&self, message: &Message) -> Option<String> {
        self.refusal(message)
    }

    async fn write(&mut self, message: Message, _origin: &Origin) -> io::Result<()> {
        if let Some(reason) = self.refusal(&message) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, reason));
        }
        let Fields { value, key, timestamp } = &self.fields;
        let xadd = self.pipe.cmd("XADD").arg(&self.stream);
        if let Some(max_len) = self.max_len {
            xadd.arg("MAXLEN").arg("~").arg(max_len);
        }
        xadd.arg("*").arg(value).arg(&message.value);
        if let Some(k) = &message.key {
            xadd.arg(key).arg(k);
        }
        if let Some(ms) = message.timestamp {
            xadd.arg(timestamp).arg(ms);
        }
        for header in &message.headers {
            xadd.arg(&header.name).arg(&header.value);
        }
        if self.pipe.len() >= WRITE_BATCH {
            self.send().await?;
        }
        Ok(())
    }

    /// Everything written is added; the position is the count added.
    async fn flush(&mut self) -> io::Result<u64> {
        self.send().await?;
        Ok(self.added)
    }

    fn is_live(&self) -> bool {
        true
    }

    async fn finish(mut self) -> io::Result<Finished> {
        self.send().await?;
        Ok(Finished::visible())
    }
}
