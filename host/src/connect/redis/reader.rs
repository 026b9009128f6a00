//! The reading task: hands the source this consumer's pending entries, then
//! new ones, with sweeps that claim entries idle too long in between, within
//! the room the source leaves it.

use super::fields::Fields;
use super::ids::{SEQ_BITS, pack, stand_in};
use super::reply::{Entry, entries, into_items, streams_reply, text};
use super::{BLOCK_MS, Held, Names, READ_BATCH, lock, passing};
use crate::connect::{Input, Read};
use redis::aio::ConnectionManager;
use redis::{RedisError, Value};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};

/// How often idle entries are looked for, at most: a worker that stopped
/// hands back what it held, and another takes it within this.
const CLAIM_EVERY: Duration = Duration::from_secs(5);

/// Reads entries into the source's channel: first this consumer's own
/// pending entries, then new ones, with claims of idle ones in between. A
/// task of its own, so that the source's `next` only waits on a channel and
/// can be cancelled without losing an entry.
pub(super) struct Reader {
    pub(super) conn: ConnectionManager,
    pub(super) names: Names,
    pub(super) fields: Fields,
    pub(super) room: Arc<Semaphore>,
    pub(super) held: Held,
    pub(super) acks: mpsc::UnboundedSender<String>,
    pub(super) out: mpsc::Sender<io::Result<Input>>,
    pub(super) redelivered: Arc<AtomicU64>,
    pub(super) claim_idle: Duration,
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
    pub(super) async fn run(mut self) {
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

    /// Takes the entries as held, then sends them on; how many are now
    /// held. `None` once the source is gone. All are held from the moment
    /// the server's reply is in, not from when each is sent on: the server
    /// counts them idle from then, and those still waiting here or in the
    /// channel must be kept from looking idle as well as those the pipeline
    /// took (or another worker claims them while this one still has them).
    async fn hand_out(&mut self, entries: Vec<Entry>, again: bool) -> Option<usize> {
        let delivered = Instant::now();
        let mut taken = Vec::with_capacity(entries.len());
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
                held.insert(position, (id.clone(), delivered));
            }
            taken.push((id, position, beyond, fields));
        }
        let used = taken.len();
        for (id, position, beyond, fields) in taken {
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
            // An entry with a stand-in position is never taken for one a
            // run that died committed: its stand-in differs in each process.
            let redelivered = again && !beyond;
            if self.out.send(Ok(Input { position, read, redelivered })).await.is_err() {
                return None;
            }
        }
        Some(used)
    }
}
