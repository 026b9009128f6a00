//! `sluice:pipeline/emit`: outputs sent downstream while a message is still
//! being processed (streaming stages).

use crate::bindings::Message;
use crate::bindings::sluice::pipeline::emit::Host;
use crate::limits::{Breach, OutputCaps, OutputTally, message_bytes};
use futures_util::future::BoxFuture;
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
    /// Set while a `process-batch` call runs.
    batch: bool,
    /// The current `process-batch` call emitted (and was ended for it).
    emitted_in_batch: bool,
}

/// How much one call emitted: messages, and their bytes as the output caps
/// count them.
pub(crate) type Emitted = OutputTally;

/// Where emitted messages go.
pub(crate) enum EmitTarget {
    /// Downstream at once, through the pipeline's port.
    Now(Box<dyn Downstream>),
    /// Kept until the call succeeds, then sent ahead of its outputs.
    Held,
}

/// The port through which a streaming stage's messages reach the pipeline
/// while its call runs; the pipeline implements it (tagging each message with
/// its input's origin).
pub(crate) trait Downstream: Send {
    /// Sends `message` on once there is room. `Err` when the pipeline is
    /// stopping and takes no more.
    fn send(&mut self, message: Message) -> BoxFuture<'_, Result<(), Stopping>>;
}

/// The pipeline is stopping: it takes no more messages.
pub(crate) struct Stopping;

impl EmitCtx {
    pub(crate) fn new(caps: OutputCaps) -> Self {
        EmitCtx { caps, ..Default::default() }
    }

    /// Prepares for a call; `target` `None` makes `emit` fail (e.g. in `init`).
    pub(crate) fn begin(&mut self, target: Option<EmitTarget>) {
        self.target = target;
        self.held.clear();
        self.emitted = Emitted::default();
        self.breach = None;
    }

    /// Prepares for a `process-batch` call, in which an `emit` ends the call.
    pub(crate) fn begin_batch(&mut self) {
        self.batch = true;
        self.emitted_in_batch = false;
    }

    /// After a `process-batch` call: whether the stage emitted in it.
    pub(crate) fn end_batch(&mut self) -> bool {
        self.batch = false;
        std::mem::take(&mut self.emitted_in_batch)
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
        if self.batch {
            // Which message of the batch this belongs to is unknown: the
            // call ends here, before anything leaves, and its messages run
            // again one per call (`StageInstance::process_batch`).
            self.emitted_in_batch = true;
            return Err(wasmtime::Error::msg("emitted inside process-batch"));
        }
        if self.target.is_none() {
            return Ok(Err("emit works only while a message is being processed".into()));
        }
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
        match self.target.as_mut().expect("checked above") {
            EmitTarget::Now(downstream) => match downstream.send(message).await {
                Ok(()) => Ok(Ok(())),
                Err(Stopping) => Ok(Err("the pipeline is stopping".into())),
            },
            EmitTarget::Held => {
                self.held.push(message);
                Ok(Ok(()))
            }
        }
    }
}

/// Reaches the emit capability's state in a store's data.
pub(crate) trait EmitView: Send {
    fn emit(&mut self) -> &mut EmitCtx;
}

pub(crate) fn add_to_linker<T: EmitView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::bindings::sluice::pipeline::emit::add_to_linker::<T, HasSelf<EmitCtx>>(linker, T::emit)
}
