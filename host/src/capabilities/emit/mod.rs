//! `sluice:pipeline/emit`: outputs sent downstream while a message is still
//! being processed (streaming stages).

use crate::bindings::Message;
use crate::bindings::sluice::pipeline::emit::Host;
use crate::limits::Breach;
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
    /// Messages emitted during the current call.
    pub(crate) emitted: usize,
    pub(crate) max_outputs: usize,
    pub(crate) max_output_bytes: usize,
}

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
        self.emitted = 0;
    }

    /// Ends a call: the held messages, and how many were emitted in all.
    pub(crate) fn end(&mut self) -> (Vec<Message>, usize) {
        self.target = None;
        (std::mem::take(&mut self.held), std::mem::take(&mut self.emitted))
    }
}

impl Host for EmitCtx {
    async fn emit(&mut self, message: Message) -> Result<(), String> {
        let Some(target) = &self.target else {
            return Err("emit works only while `process` runs (with `batch = 1`)".into());
        };
        if self.emitted >= self.max_outputs {
            return Err(Breach::Outputs { limit: self.max_outputs, produced: self.emitted + 1 }.to_string());
        }
        let size = crate::limits::message_bytes(&message);
        if size > self.max_output_bytes {
            let index = self.emitted + 1;
            return Err(Breach::OutputBytes { limit: self.max_output_bytes, produced: size, index }.to_string());
        }
        self.emitted += 1;
        match target {
            EmitTarget::Now { tx, origin, settle } => {
                // Counted in only once it has room: a call stopped while
                // waiting (a timeout) leaves the count as it was.
                let permit = tx.reserve().await.map_err(|_| "the pipeline is stopping".to_string())?;
                if let Some(settle) = settle {
                    settle.change(1);
                }
                permit.send(Envelope { message, origin: *origin });
                Ok(())
            }
            EmitTarget::Held => {
                self.held.push(message);
                Ok(())
            }
        }
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    crate::bindings::sluice::pipeline::emit::add_to_linker::<StoreData, HasSelf<EmitCtx>>(linker, |d| &mut d.emit)
}
