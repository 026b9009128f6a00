//! Acknowledgements and what this worker holds: acknowledges finished
//! entries in batches, keeps held entries from looking idle (never taking
//! back one another worker claimed), and on closing hands back what is
//! unfinished.

use super::reply::{into_items, text};
use super::{Held, Names, lock, passing};
use redis::aio::ConnectionManager;
use redis::{RedisError, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Entry ids per `XACK` or `XCLAIM`, at most.
const ID_BATCH: usize = 512;
/// How long an acknowledgement the connection dropped is sent again.
const ACK_RETRY_FOR: Duration = Duration::from_secs(10);

/// Sends acknowledgements in batches as they come, and every `refresh`
/// resets the idle time of the entries held longer than that (`XCLAIM` of
/// our own entries), so that no other worker claims them while they are
/// being worked on. Only entries this consumer still owns are reset, and
/// only if idle at least `refresh`: after a pause longer than `claim_idle`
/// (the network, a stopped process), another worker may have claimed some,
/// and an `XCLAIM` with a smaller min-idle would take them back, so that both
/// process them to the end. Ends once every acknowledgement is sent.
pub(super) async fn acking(
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
pub(super) async fn hand_back(
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
