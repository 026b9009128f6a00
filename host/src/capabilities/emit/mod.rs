//! `sluice:pipeline/emit`: outputs sent downstream while a message is still
//! being processed (streaming stages).

use crate::bindings::Message;
use crate::bindings::sluice::pipeline::emit::Host;
use crate::limits::{Breach, OutputCaps, OutputTally, message_bytes};
use crate::pipeline::{Envelope, Origin, Settle};
use crate::stage::StoreData;
use std::sync::Arc;
use tokio::sync::mpsc::Sender;
use wasmtime::component::{HasSelf, Linker};

/// Per-instance state of the emit capability: where the current call's
/// emitted messages go.
#[derive(Default)]
pub(crate) struct EmitCtx {
    /// Set for the duration of a `process` call; `None` otherwise.
    pub(crate) target: Option<EmitTarget>,
    /// Held messages (for [`EmitTarget::Held`]), taken after the call.
    pub(crate) held: Vec<Message>,
    /// What the current call emitted so far.
    pub(crate) emitted: Emitted,
    /// The cap an `emit` of the current call broke: the message then fails
    /// with it, even if the stage ignores the error it was given.
    pub(crate) breach: Option<Breach>,
    /// The stage's output caps, which emitted messages count toward.
    pub(crate) caps: OutputCaps,
}

/// How much one call emitted: messages, and their bytes as the output caps
/// count them.
pub(crate) type Emitted = OutputTally;

/// Where emitted messages go.
pub(crate) enum EmitTarget {
    /// Downstream at once: the stage's output channel, tagged with the input's
    /// origin; counted into the pipeline when it checkpoints.
    Now { tx: Sender<Envelope>, origin: Origin, settle: Option<Arc<Settle>> },
    /// Kept until the call succeeds, then sent ahead of its outputs.
    Held,
}

impl EmitCtx {
    /// Prepares for a call; `target` `None` makes `emit` fail (e.g. in `init`).
    pub(crate) fn begin(&mut self, target: Option<EmitTarget>) {
        self.target = target;
        self.held.clear();
        self.emitted = Emitted::default();
        self.breach = None;
    }

    /// Ends a call: what it emitted.
    pub(crate) fn end(&mut self) -> CallEmits {
        self.target = None;
        CallEmits {
            held: std::mem::take(&mut self.held),
            emitted: std::mem::take(&mut self.emitted),
            breach: self.breach.take(),
        }
    }

    /// Refuses an `emit`: the stage is told why, and the message will fail with it.
    fn refuse(&mut self, breach: Breach) -> wasmtime::Result<Result<(), String>> {
        let reason = breach.to_string();
        self.breach = Some(breach);
        Ok(Err(reason))
    }
}

/// What one call emitted.
pub(crate) struct CallEmits {
    /// Messages held until the call succeeds.
    pub(crate) held: Vec<Message>,
    /// Everything emitted, held or sent.
    pub(crate) emitted: Emitted,
    /// The first cap an `emit` broke.
    pub(crate) breach: Option<Breach>,
}

impl Host for EmitCtx {
    async fn emit(&mut self, message: Message) -> wasmtime::Result<Result<(), String>> {
        let Some(target) = &self.target else {
            return Ok(Err("emit works only while `process` runs (with `batch = 1`)".into()));
        };
        // A stage told it is past a cap that goes on emitting only burns
        // time and host copies: the call ends (the message fails with the cap).
        if self.breach.is_some() {
            return Err(wasmtime::Error::msg("emitted again after an output cap refused it"));
        }
        // Refused before it is kept or sent: what the host holds for one
        // input (held messages, the copies in flight) stays within the caps.
        if let Err(breach) = self.emitted.add(message_bytes(&message), &self.caps) {
            return self.refuse(breach);
        }
        match target {
            EmitTarget::Now { tx, origin, settle } => {
                // Counted in only once it has room: a call stopped while
                // waiting (a timeout) leaves the count as it was.
                let Ok(permit) = tx.reserve().await else { return Ok(Err("the pipeline is stopping".into())) };
                if let Some(settle) = settle {
                    settle.change(1);
                }
                permit.send(Envelope { message, origin: *origin });
                Ok(Ok(()))
            }
            EmitTarget::Held => {
                self.held.push(message);
                Ok(Ok(()))
            }
        }
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    crate::bindings::sluice::pipeline::emit::add_to_linker::<StoreData, HasSelf<EmitCtx>>(linker, |d| &mut d.emit)
}
