//! Streaming outputs (`sluice:pipeline/emit`).

use crate::Message;

/// Sends `message` downstream now, as an output of the message being
/// processed, ahead of the outputs [`Stage::process`](crate::Stage::process)
/// returns.
///
/// Emitted messages keep their order, come before the final outputs, and
/// count toward the stage's output caps. The call waits while the next stage
/// is full (backpressure). It fails, with the host's reason, past the output
/// caps or outside `process`; `?` with [`StageError::transient`](crate::StageError::transient)
/// or [`invalid`](crate::StageError::invalid) turns that into the message's
/// outcome. If the message then fails, what it emitted is either already
/// delivered or discarded with it, as the stage's `emit` setting in the
/// pipeline file says.
///
/// ```no_run
/// use sluice_sdk::{Message, StageError};
///
/// sluice_sdk::emit(Message::new(br#"{"window_end":true}"#.to_vec())).map_err(StageError::invalid)?;
/// # Ok::<(), StageError>(())
/// ```
///
/// Outside a component (native unit tests of a stage), emitted messages are
/// kept in a list private to the current thread: [`take_emitted`] returns them.
pub fn emit(message: Message) -> Result<(), String> {
    imp::emit(message)
}

/// The messages [`emit`] sent on this thread since the last call, in order,
/// emptying the list. Only outside a component, for unit tests.
#[cfg(not(target_arch = "wasm32"))]
pub fn take_emitted() -> Vec<Message> {
    imp::EMITTED.with(|emitted| emitted.take())
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::Message;

    pub(super) fn emit(message: Message) -> Result<(), String> {
        crate::bindings::sluice::pipeline::emit::emit(&message)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::Message;
    use std::cell::RefCell;

    thread_local! {
        pub(super) static EMITTED: RefCell<Vec<Message>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn emit(message: Message) -> Result<(), String> {
        EMITTED.with(|emitted| emitted.borrow_mut().push(message));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitted_messages_are_taken_in_order() {
        assert!(take_emitted().is_empty());
        emit(Message::new(b"a".to_vec())).unwrap();
        emit(Message::new(b"b".to_vec())).unwrap();
        let values: Vec<Vec<u8>> = take_emitted().into_iter().map(|m| m.value).collect();
        assert_eq!(values, [b"a".to_vec(), b"b".to_vec()]);
        assert!(take_emitted().is_empty());
    }
}
