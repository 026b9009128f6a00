//! Reading messages in and writing them out: files and standard streams.

mod lines;
mod output;

pub(crate) use lines::{Line, LineReader};
pub(crate) use output::Output;
