//! Redis Streams: a consumer group as a source, and `XADD` as a sink.
//!
//! Every worker that reads a stream through the same group shares its
//! entries. An entry is acknowledged (`XACK`) once the pipeline is done with
//! it (its outputs added and its dead letters too); until then it stays in
//! the group's pending list under this worker's name. A worker restarted
//! under the same `consumer` name first takes back what it held, and the
//! entries a dead worker held are claimed (`XAUTOCLAIM`) by a live one once
//! they have been idle for `claim_idle`. A live worker keeps what it holds
//! from looking idle, so a slow message is not taken from it (but never takes
//! back what another worker claimed while it was cut off). A worker that
//! stops hands back what it has not finished, so that another takes it
//! within seconds, and a default-named worker that holds nothing leaves the
//! group. A worker holds at most `max_ack_pending` entries: it reads no more
//! until some are done.
//!
//! Redis has no duplicate window: an entry taken over from a dead worker is
//! processed again, and its outputs may appear twice in the output stream
//! (at-least-once). The source counts such entries and says so at the end.
//!
//! An entry maps onto a message field by field: `value_field` is the value,
//! `key_field` the key, `timestamp_field` the timestamp (else the entry id's
//! milliseconds), every other field a header, in the entry's order. The sink
//! writes them back the same way, so a message that goes through Redis comes
//! back the same.

mod acking;
mod fields;
mod ids;
mod reader;
mod reply;
mod sink;
mod source;

pub(crate) use sink::RedisSink;
pub(crate) use source::RedisSource;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries asked of the server per read, at most.
const READ_BATCH: usize = 256;
/// How long a blocking read waits for new entries before it looks again
/// (for claims due, and for room).
const BLOCK_MS: u64 = 1000;

/// Connects, with a response timeout well beyond a blocking read's.
async fn connect(url: &str) -> io::Result<ConnectionManager> {
    let cannot = |e: RedisError| io::Error::other(format!("cannot connect to Redis at {url}: {e}"));
    let client = redis::Client::open(url).map_err(cannot)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_millis(BLOCK_MS) + Duration::from_secs(30)))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(3);
    ConnectionManager::new_with_config(client, config).await.map_err(cannot)
}

/// An error that passes: the connection, which the manager makes again.
fn passing(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// What this worker holds (read, and not yet done by the pipeline), by
/// position: each entry's id and when the server last delivered it or had
/// its idle time reset (so that it is kept from looking idle).
type Held = Arc<Mutex<HashMap<u64, (String, Instant)>>>;

fn lock(held: &Held) -> std::sync::MutexGuard<'_, HashMap<u64, (String, Instant)>> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
struct Names {
    stream: String,
    group: String,
    consumer: String,
}
