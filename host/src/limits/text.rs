//! Text a guest hands the host (error reasons, refusals, log records): cut
//! to a bounded length, and escaped before it reaches the log or a terminal.

use super::MAX_REASON_BYTES;

/// Cuts a string from a guest to `max` bytes, on a character boundary,
/// saying how much was cut.
pub(crate) fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(" [cut: {more} more bytes]"));
}

/// A reason (an error, a refusal) from a guest, cut to [`MAX_REASON_BYTES`].
pub(crate) fn clamp_reason(mut reason: String) -> String {
    cut(&mut reason, MAX_REASON_BYTES);
    reason
}

/// Guest text for the host's log or terminal: control characters escaped,
/// so that it stays on one line and cannot pass for the host's own output
/// (or move a terminal's cursor).
pub fn log_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default());
            escaped.into_iter().flatten().chain((!c.is_control()).then_some(c))
        })
        .collect::<String>()
        .into()
}
