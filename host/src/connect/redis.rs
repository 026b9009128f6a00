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

use super::{Finished, Input, Locator, PositionForm, Read, Sink, Source};
use crate::bindings::{Header, Message};
use crate::config;
use crate::envelope::{Done, Origin};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

/// Entries asked of the server per read, at most.
const READ_BATCH: usize = 256;
/// Entry ids per `XACK` or `XCLAIM`, at most.
const ID_BATCH: usize = 512;
/// Entries the sink sends in one round trip, at most.
const WRITE_BATCH: usize = 256;
/// How long a blocking read waits for new entries before it looks again
/// (for claims due, and for room).
const BLOCK_MS: u64 = 1000;
/// How often idle entries are looked for, at most: a worker that stopped
/// hands back what it held, and another takes it within this.
const CLAIM_EVERY: Duration = Duration::from_secs(5);
/// How long the sink tries a batch again before the run fails.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// How long an acknowledgement the connection dropped is sent again.
const ACK_RETRY_FOR: Duration = Duration::from_secs(10);
/// How long closing waits to hand back what this worker holds.
const HAND_BACK_FOR: Duration = Duration::from_secs(5);
/// Sequence numbers take the low 20 bits of a position, milliseconds the
/// other 44.
const SEQ_BITS: u32 = 20;

/// An entry id `ms-seq` as a position: `ms << 20 | seq`, so positions sort as
/// ids do. `None` for an id that is not of that form or does not fit (ms at
/// least 2^44, past the year 2500, or seq at least 2^20): Redis makes no
/// such id itself, but `XADD` with an explicit id can.
fn pack(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    (ms < 1 << (64 - SEQ_BITS) && seq < 1 << SEQ_BITS).then_some(ms << SEQ_BITS | seq)
}

/// A position written back as the entry id it packs, or the real id of an
/// entry that was given a stand-in.
fn render(position: u64) -> String {
    if let Some(id) = stand_ins().get(&position) {
        return id.clone();
    }
    format!("{}-{}", position >> SEQ_BITS, position & ((1 << SEQ_BITS) - 1))
}

/// Entries whose ids do not fit a position get a stand-in, counted down from
/// the top for the whole process (so that two sources never share one), and
/// this map names their real ids for dead letters: [`Locator`]'s renderer is
/// a plain `fn`, which cannot hold a source's state. A stand-in is dropped
/// when its entry is done. (A real id at the very top, past the year 2500,
/// would read as a stand-in's: Redis makes no such id itself.)
static STAND_INS: Mutex<BTreeMap<u64, String>> = Mutex::new(BTreeMap::new());
static NEXT_STAND_IN: AtomicU64 = AtomicU64::new(u64::MAX);

fn stand_ins() -> std::sync::MutexGuard<'static, BTreeMap<u64, String>> {
    STAND_INS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new stand-in position for the entry `id`.
fn stand_in(id: &str) -> u64 {
    let position = NEXT_STAND_IN.fetch_sub(1, Ordering::Relaxed);
    stand_ins().insert(position, id.to_string());
    position
}

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

/// What the pipeline holds, by position: each entry's id and when it was
/// last read or claimed (so that it is kept from looking idle).
type Held = Arc<Mutex<HashMap<u64, (String, Instant)>>>;

fn lock(held: &Held) -> std::sync::MutexGuard<'_, HashMap<u64, (String, Instant)>> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fields an entry's message parts are in.
#[derive(Clone)]
struct Fields {
    value: String,
    key: String,
    timestamp: String,
}

/// A stream entry as read: `None` fields for an entry deleted while pending.
struct Entry {
    id: String,
    fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
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
    inputs: mpsc::Receiver<io::Result<Input>>,
    held: Held,
    /// One permit per entry this worker may still hold.
    room: Arc<Semaphore>,
    acks: mpsc::UnboundedSender<String>,
    reading: JoinHandle<()>,
    acking: JoinHandle<()>,
    redelivered: Arc<AtomicU64>,
    backlog: super::Backlog,
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
        let backlog = super::Backlog::new();
        let asking = tokio::spawn(ask_backlog(control.clone(), names.clone(), backlog.clone()));
        Ok(RedisSource {
            names,
            control,
            default_name,
            claim_idle,
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
async fn ask_backlog(mut conn: ConnectionManager, names: Names, backlog: super::Backlog) {
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

#[derive(Clone)]
struct Names {
    stream: String,
    group: String,
    consumer: String,
}

/// Reads entries into the source's channel: first this consumer's own
/// pending entries, then new ones, with claims of idle ones in between. A
/// task of its own, so that the source's `next` only waits on a channel and
/// can be cancelled without losing an entry.
struct Reader {
    conn: ConnectionManager,
    names: Names,
    fields: Fields,
    room: Arc<Semaphore>,
    held: Held,
    acks: mpsc::UnboundedSender<String>,
    out: mpsc::Sender<io::Result<Input>>,
    redelivered: Arc<AtomicU64>,
    claim_idle: Duration,
}

/// What the reader does next.
enum Phase {
    /// Re-reads this consumer's pending entries after this id.
    Pending(String),
    /// Claims idle entries from this cursor on.
    Claim(String),
    /// Reads new entries.
    New,
}

impl Reader {
    async fn run(mut self) {
        let mut phase = Phase::Pending("0".into());
        // Often enough that what a stopped worker handed back is taken soon,
        // whatever `claim_idle` is.
        let claim_every = (self.claim_idle / 2).clamp(Duration::from_millis(100), CLAIM_EVERY);
        let mut next_claim = Instant::now() + claim_every;
        loop {
            // Room for at least one entry, and as many more as are free.
            let Ok(first) = self.room.acquire().await else { return };
            first.forget();
            let mut room = 1;
            while room < READ_BATCH && self.room.try_acquire().map(|p| p.forget()).is_ok() {
                room += 1;
            }
            if matches!(phase, Phase::New) && Instant::now() >= next_claim {
                phase = Phase::Claim("0-0".into());
            }
            let read = match &phase {
                Phase::Pending(after) => self.read(room, after, false).await.map(|entries| (entries, None)),
                Phase::New => self.read(room, ">", true).await.map(|entries| (entries, None)),
                Phase::Claim(cursor) => self.claim(room, cursor).await.map(|(next, entries)| (entries, Some(next))),
            };
            let (entries, cursor) = match read {
                Ok(read) => read,
                Err(e) => {
                    self.room.add_permits(room);
                    if passing(&e) {
                        tracing::warn!("reading Redis stream {}: {e}; trying again", self.names.stream);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    let error = io::Error::other(format!(
                        "reading Redis stream {} as group {}: {e}",
                        self.names.stream, self.names.group
                    ));
                    let _ = self.out.send(Err(error)).await;
                    return;
                }
            };
            let again = !matches!(phase, Phase::New);
            let last = entries.last().map(|e| e.id.clone());
            phase = match (phase, cursor, last) {
                (Phase::Pending(_), _, Some(last)) => Phase::Pending(last),
                (Phase::Pending(_), _, None) => Phase::New,
                // A sweep is over when the cursor comes back to the start.
                (Phase::Claim(_), Some(next), _) if next != "0-0" => Phase::Claim(next),
                (Phase::Claim(_), _, _) => {
                    next_claim = Instant::now() + claim_every;
                    Phase::New
                }
                (Phase::New, _, _) => Phase::New,
            };
            let Some(used) = self.hand_out(entries, again).await else { return };
            self.room.add_permits(room - used);
        }
    }

    /// `XREADGROUP` of up to `count` entries after `after` (`>`: new ones,
    /// waiting for them a while).
    async fn read(&mut self, count: usize, after: &str, block: bool) -> Result<Vec<Entry>, RedisError> {
        let Names { stream, group, consumer } = &self.names;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(group).arg(consumer).arg("COUNT").arg(count);
        if block {
            cmd.arg("BLOCK").arg(BLOCK_MS);
        }
        cmd.arg("STREAMS").arg(stream).arg(after);
        let reply: Value = cmd.query_async(&mut self.conn).await?;
        Ok(streams_reply(reply))
    }

    /// One step of an `XAUTOCLAIM` sweep: the next cursor and the entries
    /// claimed. Entries deleted while pending are acknowledged (they cannot
    /// be processed).
    async fn claim(&mut self, count: usize, cursor: &str) -> Result<(String, Vec<Entry>), RedisError> {
        let Names { stream, group, consumer } = &self.names;
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn)
            .await?;
        let mut parts = into_items(reply).into_iter();
        let next = parts.next().and_then(text).unwrap_or_else(|| "0-0".into());
        let entries = parts.next().map(entries).unwrap_or_default();
        for deleted in parts.next().map(into_items).unwrap_or_default().into_iter().filter_map(text) {
            let _ = self.acks.send(deleted);
        }
        Ok((next, entries))
    }

    /// Sends the entries on; how many are now held. `None` once the source
    /// is gone.
    async fn hand_out(&mut self, entries: Vec<Entry>, again: bool) -> Option<usize> {
        let mut used = 0;
        for Entry { id, fields } in entries {
            let Some(fields) = fields else {
                // Deleted while it was pending: nothing to process.
                let _ = self.acks.send(id);
                continue;
            };
            let (position, beyond) = match pack(&id) {
                Some(position) => (position, false),
                // Already handed out under a stand-in: not twice (below).
                None => match lock(&self.held).iter().find(|(_, (held, _))| *held == id) {
                    Some((position, _)) => (*position, true),
                    None => (stand_in(&id), true),
                },
            };
            {
                let mut held = lock(&self.held);
                // Already handed out (and still in the pipeline): not twice.
                if held.contains_key(&position) {
                    continue;
                }
                held.insert(position, (id.clone(), Instant::now()));
            }
            used += 1;
            if again {
                self.redelivered.fetch_add(1, Ordering::Relaxed);
            }
            let read = match beyond {
                false => self.fields.read(&id, position >> SEQ_BITS, fields),
                true => Read::Unreadable {
                    head: self.fields.value_of(&fields),
                    reason: format!(
                        "entry id {id} is beyond what sluice can track (milliseconds under 2^44 and a sequence \
                         number under 2^20, as in every id Redis makes itself): add entries with XADD's `*` id"
                    ),
                },
            };
            if self.out.send(Ok(Input { position, read })).await.is_err() {
                return None;
            }
        }
        Some(used)
    }
}

impl Fields {
    fn value_of(&self, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        fields.iter().find(|(name, _)| *name == self.value.as_bytes()).map(|(_, v)| v.clone()).unwrap_or_default()
    }

    /// The message an entry holds, or why it holds none.
    fn read(&self, id: &str, id_ms: u64, fields: Vec<(Vec<u8>, Vec<u8>)>) -> Read {
        let (mut value, mut key, mut timestamp) = (None, None, None);
        let mut headers = Vec::new();
        for (name, field) in fields {
            if value.is_none() && name == self.value.as_bytes() {
                value = Some(field);
            } else if key.is_none() && name == self.key.as_bytes() {
                key = Some(field);
            } else if timestamp.is_none() && name == self.timestamp.as_bytes() {
                timestamp = Some(field);
            } else {
                headers.push(Header { name: String::from_utf8_lossy(&name).into_owned(), value: field });
            }
        }
        // Checked once every field is seen, so that the dead letter keeps
        // the value, whichever comes first in the entry.
        let timestamp = match timestamp {
            None => None,
            Some(field) => match std::str::from_utf8(&field).ok().and_then(|t| t.trim().parse::<i64>().ok()) {
                Some(ms) => Some(ms),
                None => {
                    return Read::Unreadable {
                        head: value.unwrap_or_default(),
                        reason: format!(
                            "entry {id}: field `{}` (timestamp_field in [source.redis]) is {:?}, not whole \
                             milliseconds since the Unix epoch: fix the producer, or set timestamp_field to a \
                             field that holds them",
                            self.timestamp,
                            String::from_utf8_lossy(&field)
                        ),
                    };
                }
            },
        };
        let Some(value) = value else {
            return Read::Unreadable {
                head: Vec::new(),
                reason: format!(
                    "entry {id} has no field `{}`, which holds the message (value_field in [source.redis])",
                    self.value
                ),
            };
        };
        let timestamp = timestamp.or(i64::try_from(id_ms).ok());
        Read::Message(Message { key, value, headers, timestamp })
    }
}

/// Sends acknowledgements in batches as they come, and every `refresh`
/// resets the idle time of the entries held longer than that (`XCLAIM` of
/// our own entries), so that no other worker claims them while they are
/// being worked on. Only entries this consumer still owns are reset, and
/// only if idle at least `refresh`: after a pause longer than `claim_idle`
/// (the network, a stopped process), another worker may have claimed some,
/// and an `XCLAIM` with a smaller min-idle would take them back, so that both
/// process them to the end. Ends once every acknowledgement is sent.
async fn acking(
    mut conn: ConnectionManager,
    names: Names,
    mut ids: mpsc::UnboundedReceiver<String>,
    held: Held,
    refresh: Duration,
) {
    let Names { stream, group, consumer } = &names;
    let refresh = refresh.max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            got = ids.recv_many(&mut batch, ID_BATCH) => {
                if got == 0 {
                    return;
                }
                // Sent again while the connection is being made again (XACK
                // twice is harmless); a lost acknowledgement only means a
                // redelivery, after claim_idle.
                let give_up = Instant::now() + ACK_RETRY_FOR;
                let mut pause = Duration::from_millis(100);
                loop {
                    let acked: Result<u64, RedisError> =
                        redis::cmd("XACK").arg(stream).arg(group).arg(&batch).query_async(&mut conn).await;
                    match acked {
                        Ok(_) => break,
                        Err(e) if passing(&e) && Instant::now() < give_up => {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(2));
                        }
                        Err(e) => {
                            tracing::warn!("cannot acknowledge {} entries of Redis stream {stream}: {e}", batch.len());
                            break;
                        }
                    }
                }
                batch.clear();
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let due: Vec<String> = lock(&held)
                    .values()
                    .filter(|(_, since)| now.duration_since(*since) >= refresh)
                    .map(|(id, _)| id.clone())
                    .collect();
                // `since` is set once the server's reply is in, so the
                // server's idle time for an entry still ours is at least ours;
                // one another worker claimed since the `XPENDING` is idle far
                // less than this, and stays its.
                let min_idle = (refresh / 2).as_millis() as u64;
                for ids in due.chunks(ID_BATCH) {
                    let refreshed = async {
                        let ours = still_ours(&mut conn, &names, ids, min_idle).await?;
                        let ours_set: HashSet<&String> = ours.iter().collect();
                        lost(&held, ids, &ours_set, stream);
                        if ours.is_empty() {
                            return Ok::<(), RedisError>(());
                        }
                        redis::cmd("XCLAIM")
                            .arg(stream)
                            .arg(group)
                            .arg(consumer)
                            .arg(min_idle)
                            .arg(&ours)
                            .arg("JUSTID")
                            .query_async::<Value>(&mut conn)
                            .await?;
                        let now = Instant::now();
                        for (id, since) in lock(&held).values_mut() {
                            if ours_set.contains(id) {
                                *since = now;
                            }
                        }
                        Ok::<(), RedisError>(())
                    };
                    if let Err(e) = refreshed.await {
                        tracing::warn!("cannot keep {} held entries of Redis stream {stream}: {e}", ids.len());
                    }
                }
            }
        }
    }
}

/// Which of `ids` are pending under this consumer and idle at least
/// `min_idle` ms, in one round trip.
async fn still_ours(
    conn: &mut ConnectionManager,
    names: &Names,
    ids: &[String],
    min_idle: u64,
) -> Result<Vec<String>, RedisError> {
    let Names { stream, group, consumer } = names;
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("XPENDING").arg(stream).arg(group).arg("IDLE").arg(min_idle).arg(id).arg(id).arg(1).arg(consumer);
    }
    let replies: Vec<Value> = pipe.query_async(conn).await?;
    Ok(ids
        .iter()
        .zip(replies)
        .filter(|(_, reply)| !into_items(reply.clone()).is_empty())
        .map(|(id, _)| id.clone())
        .collect())
}

/// Of the `due` entries, those not `ours` that the pipeline still holds (so
/// not acknowledged) were claimed by another worker: said once, and not
/// looked at again.
fn lost(held: &Held, due: &[String], ours: &HashSet<&String>, stream: &str) {
    let due: HashSet<&String> = due.iter().collect();
    let mut held = lock(held);
    let mut count = 0;
    for (id, since) in held.values_mut() {
        if due.contains(id) && !ours.contains(id) {
            count += 1;
            // Never due again.
            *since += Duration::from_secs(100 * 365 * 24 * 3600);
        }
    }
    if count > 0 {
        tracing::warn!(
            "{count} entries of Redis stream {stream} this worker holds were claimed by another worker (this one \
             was cut off for longer than claim_idle): both process them, and their outputs may appear twice"
        );
    }
}

/// Makes every entry still pending under this consumer claimable by another
/// worker at once (its idle time set past `claim_idle`), and removes a
/// default-named consumer that holds nothing. How many were handed back.
async fn hand_back(
    mut conn: ConnectionManager,
    names: &Names,
    claim_idle: Duration,
    default_name: bool,
) -> Result<usize, RedisError> {
    let Names { stream, group, consumer } = names;
    let idle = claim_idle.as_millis() as u64 + 1000;
    let (mut after, mut handed) = ("-".to_string(), 0);
    loop {
        let reply: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg(&after)
            .arg("+")
            .arg(ID_BATCH)
            .arg(consumer)
            .query_async(&mut conn)
            .await?;
        let ids: Vec<String> = into_items(reply)
            .into_iter()
            .filter_map(|entry| into_items(entry).into_iter().next().and_then(text))
            .collect();
        let Some(last) = ids.last() else { break };
        // Min-idle 0: these are ours (another worker claiming one in between
        // would see it claimable again, and process it twice at worst).
        let _: Value = redis::cmd("XCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(0)
            .arg(&ids)
            .arg("IDLE")
            .arg(idle)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await?;
        handed += ids.len();
        if ids.len() < ID_BATCH {
            break;
        }
        after = format!("({last}");
    }
    // A name no worker takes again would stay in the group for good; one
    // that still holds entries stays until they are claimed (removing it
    // would drop them from the pending list, unprocessed).
    if handed == 0 && default_name {
        let _: Value =
            redis::cmd("XGROUP").arg("DELCONSUMER").arg(stream).arg(group).arg(consumer).query_async(&mut conn).await?;
    }
    Ok(handed)
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

    fn id(&self) -> Option<String> {
        Some(format!("redis:{}/{}", self.names.stream, self.names.group))
    }

    fn backlog(&self) -> Option<super::Backlog> {
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

/// The entries of an `XREADGROUP` reply (of one stream), in order.
fn streams_reply(reply: Value) -> Vec<Entry> {
    let streams: Vec<Value> = match reply {
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        other => into_items(other).into_iter().filter_map(|stream| into_items(stream).into_iter().nth(1)).collect(),
    };
    streams.into_iter().flat_map(entries).collect()
}

/// A list of entries: each `[id, [field, value, ...]]`, the fields nil for
/// an entry deleted while pending.
fn entries(list: Value) -> Vec<Entry> {
    into_items(list)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = into_items(entry).into_iter();
            let id = parts.next().and_then(text)?;
            let fields = match parts.next() {
                None | Some(Value::Nil) => None,
                Some(Value::Map(pairs)) => Some(pairs.into_iter().map(|(n, v)| (bytes(n), bytes(v))).collect()),
                Some(list) => {
                    let mut flat = into_items(list).into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                        pairs.push((bytes(name), bytes(value)));
                    }
                    Some(pairs)
                }
            };
            Some(Entry { id, fields })
        })
        .collect()
}

fn into_items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

fn bytes(value: Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes,
        Value::SimpleString(text) => text.into_bytes(),
        Value::Int(n) => n.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_pack_into_positions_and_back() {
        for id in ["0-0", "0-1", "1-0", "1700000000000-0", "1700000000000-3", "17592186044415-1048575"] {
            let position = pack(id).unwrap_or_else(|| panic!("{id} fits"));
            assert_eq!(render(position), id);
        }
        // Positions sort as the ids do.
        let ids = ["1-5", "2-0", "2-1", "1700000000000-0", "1700000000001-0"];
        let positions: Vec<u64> = ids.iter().map(|id| pack(id).unwrap()).collect();
        assert!(positions.is_sorted(), "{positions:?}");
    }

    #[test]
    fn ids_that_do_not_fit_or_are_not_ids_pack_to_nothing() {
        // 2^44 milliseconds, a sequence of 2^20, the largest id Redis accepts, and non-ids.
        for id in ["17592186044416-0", "1-1048576", "18446744073709551615-18446744073709551615", "5", "a-b", "-1-0", ""]
        {
            assert_eq!(pack(id), None, "{id}");
        }
    }

    #[test]
    fn an_entry_maps_onto_a_message_field_by_field() {
        let fields = Fields { value: "value".into(), key: "key".into(), timestamp: "timestamp".into() };
        let entry = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect::<Vec<_>>()
        };
        let read =
            fields.read("7-0", 7, entry(&[("b", "2"), ("value", "v"), ("key", "k"), ("a", "1"), ("timestamp", "42")]));
        let Read::Message(m) = read else { panic!("a message") };
        assert_eq!((m.value, m.key, m.timestamp), (b"v".to_vec(), Some(b"k".to_vec()), Some(42)));
        let headers: Vec<(&str, &[u8])> = m.headers.iter().map(|h| (h.name.as_str(), &h.value[..])).collect();
        assert_eq!(headers, [("b", &b"2"[..]), ("a", b"1")]);
        // Without a timestamp field: the id's milliseconds.
        let Read::Message(m) = fields.read("7-0", 7, entry(&[("value", "v")])) else { panic!("a message") };
        assert_eq!((m.timestamp, m.key), (Some(7), None));
        // Without a value: unreadable, naming the field.
        let Read::Unreadable { reason, .. } = fields.read("7-0", 7, entry(&[("v", "x")])) else { panic!("unreadable") };
        assert!(reason.contains("`value`") && reason.contains("value_field"), "{reason}");
        // A bad timestamp, before or after the value: unreadable, keeping the value.
        for pairs in [[("timestamp", "soon"), ("value", "v")], [("value", "v"), ("timestamp", "soon")]] {
            let Read::Unreadable { head, reason } = fields.read("7-0", 7, entry(&pairs)) else { panic!("unreadable") };
            assert_eq!(head, b"v");
            assert!(reason.contains("\"soon\"") && reason.contains("timestamp_field"), "{reason}");
        }
    }

    #[test]
    fn an_id_that_does_not_fit_is_written_as_itself_until_its_entry_is_done() {
        let (a, b) = (stand_in("99999999999999999-0"), stand_in("1-2000000"));
        assert_ne!(a, b);
        assert_eq!((render(a), render(b)), ("99999999999999999-0".to_string(), "1-2000000".to_string()));
        stand_ins().remove(&a);
        assert_ne!(render(a), "99999999999999999-0");
        assert_eq!(render(b), "1-2000000");
    }
}
