//! Taps: a live, read-only sample of the messages leaving each stage (what
//! `sluice tap` and `GET /tap/{stage}` at the metrics address show).
//!
//! Tapping must never slow the pipeline by more than a stated bound. With no
//! listener, a stage pays one relaxed atomic load per batch of outputs and
//! nothing else. With listeners, a token bucket lets at most `rate` messages
//! a second be copied (over all listeners of the stage, never more than
//! [`MAX_TAP_RATE`]), and a copy goes to a broadcast channel of a few dozen:
//! a listener that reads slowly loses samples (it lags), it never makes the
//! stage wait. A tapped message is a copy: nothing a listener does reaches
//! the pipeline.

use crate::bindings::{Header, Message};
use crate::envelope::Envelope;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::sync::broadcast;

/// Messages a second a tap samples unless told otherwise.
pub const DEFAULT_TAP_RATE: u32 = 100;
/// The most messages a second a stage's taps may copy, all listeners
/// together: the bound on what tapping costs a stage.
pub const MAX_TAP_RATE: u32 = 1000;
/// A tapped message's value is cut to this many bytes (marked
/// [`TappedMessage::cut`]): a sample is for looking at, not for replaying.
pub const TAP_VALUE_BYTES: usize = 64 * 1024;
/// Samples waiting for a listener. A listener further behind loses the
/// oldest: a stage never waits for one.
const CHANNEL: usize = 64;

/// The tap points of a pipeline, one per stage: [`Pipeline::taps`](crate::Pipeline::taps).
#[derive(Clone)]
pub struct Taps(Arc<[Arc<TapPoint>]>);

impl Taps {
    pub(super) fn new(stage_names: impl IntoIterator<Item = String>) -> Self {
        Taps(stage_names.into_iter().map(|name| Arc::new(TapPoint::new(name.into()))).collect())
    }

    /// The tap point of the stage at `index`, in pipeline order, for its
    /// task to offer its outputs to; the stage's taps end when it drops.
    pub(super) fn point(&self, index: usize) -> TapHandle {
        TapHandle(self.0[index].clone())
    }

    /// The stages that can be tapped, in pipeline order.
    pub fn stages(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|p| &*p.stage)
    }

    /// Starts sampling the messages leaving `stage`, at most `rate` a second
    /// (1 to [`MAX_TAP_RATE`]). The stage pays for the sampling only while
    /// a listener is attached: drop it to stop.
    pub fn listen(&self, stage: &str, rate: u32) -> Result<TapListener, TapError> {
        if !(1..=MAX_TAP_RATE).contains(&rate) {
            return Err(TapError::Rate(rate));
        }
        let Some(point) = self.0.iter().find(|p| &*p.stage == stage) else {
            return Err(TapError::UnknownStage {
                stage: stage.to_string(),
                known: self.stages().map(String::from).collect(),
            });
        };
        let mut inner = point.lock();
        let Some(tx) = &inner.tx else { return Err(TapError::Ended(stage.to_string())) };
        let rx = tx.subscribe();
        // The stage samples for its fastest listener; the others thin it out.
        if rate > inner.bucket.rate {
            inner.bucket = Bucket::new(rate, STAGE_WINDOW);
        }
        point.listeners.fetch_add(1, Relaxed);
        drop(inner);
        Ok(TapListener { rx, point: point.clone(), bucket: Bucket::new(rate, LISTENER_WINDOW), lost: 0 })
    }
}

/// Why a tap could not start.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The pipeline has no stage of that name.
    #[error("no stage `{stage}` in this pipeline; its stages: {}", names(known))]
    UnknownStage {
        /// The name asked for.
        stage: String,
        /// The pipeline's stages, in order.
        known: Vec<String>,
    },
    /// The rate asked for is 0 or above [`MAX_TAP_RATE`].
    #[error("a tap's rate is 1 to {MAX_TAP_RATE} messages a second, not {0}")]
    Rate(u32),
    /// The stage has finished: nothing more leaves it.
    #[error("stage `{0}` has finished: nothing more leaves it")]
    Ended(String),
}

fn names(known: &[String]) -> String {
    if known.is_empty() { "none".to_string() } else { known.join(", ") }
}

/// A copy of a message as it left a stage.
#[derive(Debug, Clone)]
pub struct TappedMessage {
    /// The stage it left.
    pub stage: Arc<str>,
    /// Its input's position in the source (for a file, the line number).
    pub position: u64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value, cut to [`TAP_VALUE_BYTES`] (at a character boundary when
    /// it is text).
    pub value: Vec<u8>,
    /// Whether `value` was cut.
    pub cut: bool,
    /// Its headers.
    pub headers: Vec<Header>,
    /// Its event time in milliseconds since the Unix epoch, if any.
    pub timestamp: Option<i64>,
}

impl TappedMessage {
    fn of(stage: &Arc<str>, message: &Message, position: u64) -> Self {
        let cut = message.value.len() > TAP_VALUE_BYTES;
        let value = if cut {
            let mut end = TAP_VALUE_BYTES;
            // Text cut inside a character would no longer read as text.
            if let Err(e) = std::str::from_utf8(&message.value[..end])
                && e.error_len().is_none()
            {
                end = e.valid_up_to();
            }
            message.value[..end].to_vec()
        } else {
            message.value.clone()
        };
        TappedMessage {
            stage: stage.clone(),
            position,
            key: message.key.clone(),
            value,
            cut,
            headers: message.headers.clone(),
            timestamp: message.timestamp,
        }
    }
}

/// One stage's tap point.
pub(crate) struct TapPoint {
    stage: Arc<str>,
    /// Listeners attached: the only thing the stage reads when none is.
    listeners: AtomicUsize,
    inner: Mutex<Inner>,
}

struct Inner {
    /// `None` once the stage has finished: listeners then see the end.
    tx: Option<broadcast::Sender<Arc<TappedMessage>>>,
    /// At the fastest attached listener's rate; 0 with none.
    bucket: Bucket,
}

impl TapPoint {
    fn new(stage: Arc<str>) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL);
        let inner = Inner { tx: Some(tx), bucket: Bucket::new(0, STAGE_WINDOW) };
        TapPoint { stage, listeners: AtomicUsize::new(0), inner: Mutex::new(inner) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under the lock can leave it half-changed.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers a batch of a stage's outputs to its listeners.
    #[inline]
    pub(crate) fn offer_all(&self, outputs: &[Envelope]) {
        if self.listeners.load(Relaxed) != 0 {
            self.sample(outputs.len(), outputs.iter().map(|e| (&e.message, e.origin.position)));
        }
    }

    /// Offers one output (an emitted message) to the stage's listeners.
    #[inline]
    pub(crate) fn offer(&self, message: &Message, position: u64) {
        if self.listeners.load(Relaxed) != 0 {
            self.sample(1, std::iter::once((message, position)));
        }
    }

    /// Copies as many of `outputs` as the bucket allows (the first ones).
    #[cold]
    fn sample<'a>(&self, n: usize, outputs: impl Iterator<Item = (&'a Message, u64)>) {
        let (taken, tx) = {
            let mut inner = self.lock();
            let Some(tx) = inner.tx.clone() else { return };
            (inner.bucket.take(n, Instant::now()), tx)
        };
        for (message, position) in outputs.take(taken) {
            // No receiver left (they went between the load and here): fine.
            let _ = tx.send(Arc::new(TappedMessage::of(&self.stage, message, position)));
        }
    }
}

/// A stage task's hold on its tap point: when the task ends, so do the
/// stage's taps (each listener sees the end).
pub(crate) struct TapHandle(Arc<TapPoint>);

impl TapHandle {
    /// The point itself, for the jobs that send emitted messages on.
    pub(crate) fn point(&self) -> Arc<TapPoint> {
        self.0.clone()
    }
}

impl std::ops::Deref for TapHandle {
    type Target = TapPoint;
    fn deref(&self) -> &TapPoint {
        &self.0
    }
}

impl Drop for TapHandle {
    fn drop(&mut self) {
        self.0.lock().tx = None;
    }
}

/// A listener on one stage's tap: [`Taps::listen`]. Dropping it detaches it.
pub struct TapListener {
    rx: broadcast::Receiver<Arc<TappedMessage>>,
    point: Arc<TapPoint>,
    /// This listener's own rate, below the stage's when a faster listener
    /// shares the point.
    bucket: Bucket,
    lost: u64,
}

impl TapListener {
    /// The next sampled message, or `None` once the stage has finished.
    pub async fn next(&mut self) -> Option<Arc<TappedMessage>> {
        loop {
            match self.rx.recv().await {
                Ok(message) if self.bucket.take(1, Instant::now()) == 1 => return Some(message),
                Ok(_) => self.lost += 1,
                Err(broadcast::error::RecvError::Lagged(n)) => self.lost += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Samples this listener missed because it read too slowly (or another
    /// listener of the stage asked for more than it).
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

impl Drop for TapListener {
    fn drop(&mut self) {
        let mut inner = self.point.lock();
        if self.point.listeners.fetch_sub(1, Relaxed) == 1 {
            inner.bucket = Bucket::new(0, STAGE_WINDOW);
        }
    }
}

/// A token bucket: `rate` tokens a second, holding at most `window`
/// seconds' worth (at least one).
struct Bucket {
    rate: u32,
    window: f64,
    tokens: f64,
    last: Instant,
}

/// A stage's bucket holds a tenth of a second: a burst it copies at once
/// stays small. A listener's holds a second: it only thins out what a
/// faster listener of the same stage makes the stage sample.
const STAGE_WINDOW: f64 = 0.1;
const LISTENER_WINDOW: f64 = 1.0;

impl Bucket {
    /// A full bucket (an empty one at rate 0).
    fn new(rate: u32, window: f64) -> Self {
        let mut bucket = Bucket { rate, window, tokens: 0.0, last: Instant::now() };
        if rate > 0 {
            bucket.tokens = bucket.burst();
        }
        bucket
    }

    fn burst(&self) -> f64 {
        (f64::from(self.rate) * self.window).max(1.0)
    }

    /// Takes up to `want` tokens; returns how many it took.
    fn take(&mut self, want: usize, now: Instant) -> usize {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * f64::from(self.rate);
        self.tokens = (self.tokens + refill).min(self.burst());
        self.last = now;
        let taken = (self.tokens.floor() as usize).min(want);
        self.tokens -= taken as f64;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_gives_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(100, STAGE_WINDOW);
        // A tenth of a second's worth at once, then nothing until it refills.
        assert_eq!(bucket.take(1000, start), 10);
        assert_eq!(bucket.take(1000, start), 0);
        assert_eq!(bucket.take(1000, start + Duration::from_millis(50)), 5);
        // Idle, it fills up to its burst and no further.
        assert_eq!(bucket.take(1000, start + Duration::from_secs(60)), 10);
        let mut off = Bucket::new(0, STAGE_WINDOW);
        assert_eq!(off.take(1, start + Duration::from_secs(1)), 0);
    }

    fn envelope(value: &str, position: u64) -> Envelope {
        Envelope { message: Message::from_value(value), origin: crate::envelope::Origin::at(position) }
    }

    #[tokio::test]
    async fn a_listener_gets_copies_within_its_rate_and_sees_the_stage_end() {
        let taps = Taps::new(["a".to_string(), "b".to_string()]);
        let b = taps.point(1);
        // Nothing attached: nothing is copied, and the bucket stays shut.
        b.offer_all(&[envelope("early", 1)]);
        let mut listener = taps.listen("b", 10).unwrap();
        let outputs: Vec<Envelope> = (0..50).map(|i| envelope(&format!("m{i}"), i)).collect();
        b.offer_all(&outputs);
        drop(b);
        let mut got = Vec::new();
        while let Some(m) = listener.next().await {
            got.push((m.position, String::from_utf8(m.value.clone()).unwrap(), m.stage.to_string()));
        }
        // A burst of one tenth of a second at 10/s: the first output alone.
        assert_eq!(got, [(0, "m0".to_string(), "b".to_string())]);
    }

    #[test]
    fn listening_needs_a_known_stage_and_a_rate_within_bounds() {
        let taps = Taps::new(["first".to_string(), "second".to_string()]);
        let e = taps.listen("third", 10).err().unwrap();
        assert_eq!(e.to_string(), "no stage `third` in this pipeline; its stages: first, second");
        let e = taps.listen("first", MAX_TAP_RATE + 1).err().unwrap();
        assert_eq!(e.to_string(), "a tap's rate is 1 to 1000 messages a second, not 1001");
        assert!(taps.listen("first", 0).is_err());
        let listener = taps.listen("first", 5).unwrap();
        assert_eq!(taps.0[0].listeners.load(Relaxed), 1);
        drop(listener);
        assert_eq!(taps.0[0].listeners.load(Relaxed), 0);
        assert_eq!(taps.0[0].lock().bucket.rate, 0, "the stage stops sampling with no one listening");
    }

    #[test]
    fn a_long_value_is_cut_at_a_character_boundary() {
        // 'é' is two bytes; one straddles the cut.
        let value = "a".to_string() + &"é".repeat(TAP_VALUE_BYTES);
        let tapped = TappedMessage::of(&Arc::from("s"), &Message::from_value(value), 3);
        assert!(tapped.cut);
        assert_eq!(tapped.value.len(), TAP_VALUE_BYTES - 1);
        assert!(std::str::from_utf8(&tapped.value).is_ok());
        let short = TappedMessage::of(&Arc::from("s"), &Message::from_value("x"), 3);
        assert!(!short.cut);
    }
}
