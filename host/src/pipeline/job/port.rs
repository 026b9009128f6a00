//! Where a stage's emitted messages go: the emit port of one call.

use crate::bindings::Message;
use crate::capabilities::emit::{Downstream, EmitTarget, Stopping};
use crate::config::RetryConfig;
use crate::envelope::{Envelope, Origin};
use crate::pipeline::tap::TapPoint;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::mpsc::Sender;

/// How a stage's jobs run: its retries, and where emitted messages go.
#[derive(Clone)]
pub(in crate::pipeline) struct JobPlan {
    pub(in crate::pipeline) retry: RetryConfig,
    pub(in crate::pipeline) emit: EmitPlan,
}

/// Where a stage's emitted messages go.
#[derive(Clone)]
pub(in crate::pipeline) enum EmitPlan {
    /// The stage does not emit.
    Unused,
    /// Downstream at once, each tagged with its input's origin, and offered
    /// to the stage's taps.
    Now(Sender<Envelope>, Arc<TapPoint>),
    /// Held until the message succeeds.
    Held,
}

impl EmitPlan {
    pub(super) fn target(&self, origin: &Origin) -> Option<EmitTarget> {
        match self {
            EmitPlan::Unused => None,
            EmitPlan::Now(tx, tap) => Some(EmitTarget::Now(Box::new(SendOn {
                tx: tx.clone(),
                tap: tap.clone(),
                origin: Some(origin.clone()),
                sent: 0,
            }))),
            EmitPlan::Held => Some(EmitTarget::Held),
        }
    }
}

/// The emit port of one call: what the stage emits goes downstream with its
/// input's origin (and a share of its acknowledgement).
struct SendOn {
    tx: Sender<Envelope>,
    tap: Arc<TapPoint>,
    origin: Option<Origin>,
    /// Messages sent so far: the next one's index among the call's outputs.
    sent: usize,
}

impl Downstream for SendOn {
    fn send(&mut self, message: Message) -> BoxFuture<'_, Result<(), Stopping>> {
        Box::pin(async move {
            let permit = self.tx.reserve().await.map_err(|_| Stopping)?;
            let origin = self.origin.as_ref().expect("set until the port is dropped").output(self.sent);
            self.sent += 1;
            self.tap.offer(&message, origin.position);
            permit.send(Envelope { message, origin });
            Ok(())
        })
    }
}

impl Drop for SendOn {
    /// The port's own share only stood for the call: the messages it sent
    /// and the input itself hold theirs.
    fn drop(&mut self) {
        if let Some(origin) = self.origin.take() {
            origin.settle();
        }
    }
}
