//! serde's and toml's errors in the user's words.
//!
//! The derived `Deserialize` impls speak Rust ("invalid type: string \"x\",
//! expected usize", "data did not match any variant of untagged enum ..."),
//! and an unknown key lists the allowed ones without saying which was meant.
//! Rather than a hand-written `Deserialize` for every setting, each to keep in
//! step with its field, the error is reworded here: serde's messages come in
//! a handful of shapes, toml gives the span, the span leads to the key in
//! the parsed document, and `keys` says what that key takes, with an example.
//! toml's own syntax errors are already in plain words and pass through.

use super::keys::{self, Key, Shape};
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// toml's error `e` on `text`, in words: what was expected, an example, and
/// for a misspelt key or choice the one probably meant.
pub(super) fn message(e: &toml::de::Error, text: &str) -> String {
    let raw = e.message().trim_end();
    let place = e.span().and_then(|span| Place::find(text, &span));
    let path: Vec<&str> = place.as_ref().map_or(Vec::new(), |p| p.keys.iter().map(String::as_str).collect());
    match Complaint::read(raw) {
        Complaint::UnknownKey { key, allowed } => unknown_key(key, &allowed, &path),
        Complaint::UnknownChoice { value, allowed } => {
            let entry = keys::lookup(&path);
            let mut message = format!(
                "{} must be {}, not `{}`",
                keys::subject(entry, &path),
                keys::choice_words(&allowed),
                place.as_ref().and_then(|p| p.found(text, None)).unwrap_or_else(|| format!("\"{value}\""))
            );
            if let Some(meant) = closest(value, &allowed) {
                message.push_str(&format!(": did you mean \"{meant}\"?"));
            }
            message
        }
        Complaint::Missing(key) if path.is_empty() && key == "version" => {
            "missing key `version`: add `version = 1` at the top of the file".into()
        }
        Complaint::Missing(key) => {
            let mut full = path.clone();
            full.push(key);
            let mut message = format!("missing key `{key}` {}", section(&path));
            if let Some(entry) = keys::lookup(&full) {
                message.push_str(&format!(": add it, e.g. `{}`", entry.example));
            }
            message
        }
        Complaint::Duplicate(key) => format!("`{key}` is set twice {}: keep one", section(&path)),
        Complaint::WrongValue { expected } => wrong_value(expected, place.as_ref(), &path, text),
        Complaint::Other => raw.to_string(),
    }
}

/// The shapes of serde's (and our `Deserialize` impls') messages.
enum Complaint<'a> {
    UnknownKey {
        key: &'a str,
        allowed: Vec<&'a str>,
    },
    UnknownChoice {
        value: &'a str,
        allowed: Vec<&'a str>,
    },
    Missing(&'a str),
    Duplicate(&'a str),
    /// A value of the wrong kind, or out of range; `expected` is serde's
    /// words for what it wanted, when it gave them.
    WrongValue {
        expected: &'a str,
    },
    /// Anything else: toml's syntax errors, and messages already written
    /// for the user.
    Other,
}

impl<'a> Complaint<'a> {
    fn read(m: &'a str) -> Self {
        // `unknown field `x`, expected one of `a`, `b``: the names in backticks.
        let named = |rest: &'a str| -> Option<(&'a str, Vec<&'a str>)> {
            let (name, rest) = rest.split_once('`')?;
            Some((name, rest.split('`').skip(1).step_by(2).collect()))
        };
        let tick = |prefix: &str| m.strip_prefix(prefix).map(|rest| rest.trim_end_matches('`'));
        if let Some((key, allowed)) = m.strip_prefix("unknown field `").and_then(named) {
            Complaint::UnknownKey { key, allowed }
        } else if let Some((value, allowed)) = m.strip_prefix("unknown variant `").and_then(named) {
            Complaint::UnknownChoice { value, allowed }
        } else if let Some(key) = tick("missing field `") {
            Complaint::Missing(key)
        } else if let Some(key) = tick("duplicate field `") {
            Complaint::Duplicate(key)
        } else if ["invalid type: ", "invalid value: ", "invalid length "].iter().any(|p| m.starts_with(p)) {
            // The value shown may hold ", expected " itself: the last one is serde's.
            Complaint::WrongValue { expected: m.rsplit_once(", expected ").map_or("", |(_, e)| e) }
        } else if m.starts_with("data did not match any variant of untagged enum")
            || m == "wanted string or table"
            || m.ends_with("number overflowed")
            // `limits::Limit`'s own: the key's entry says the same with its name.
            || m.starts_with("expected a number or \"unlimited\"")
            || m.starts_with("expected a size such as")
            || m.starts_with("expected a duration such as")
        {
            Complaint::WrongValue { expected: "" }
        } else {
            Complaint::Other
        }
    }
}

/// `unknown key `x` in [source]`, with the key probably meant or, failing
/// that, the keys allowed there.
fn unknown_key(key: &str, allowed: &[&str], path: &[&str]) -> String {
    let within = section(&path[..path.len().saturating_sub(1)]);
    match closest(key, allowed) {
        Some(meant) => format!("unknown key `{key}` {within}: did you mean `{meant}`?"),
        None if allowed.is_empty() => format!("unknown key `{key}` {within}: it takes no keys"),
        None => {
            let allowed: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
            format!("unknown key `{key}` {within}: the keys allowed there are {}", allowed.join(", "))
        }
    }
}

/// `{key} must be {what}, e.g. `{example}`, not `{found}``.
fn wrong_value(expected: &str, place: Option<&Place>, path: &[&str], text: &str) -> String {
    let entry: Option<&Key> = keys::lookup(path);
    let shape = entry.map(|k| k.shape).or_else(|| Shape::from_serde(expected));
    let found = place.and_then(|p| p.found(text, shape));
    let subject = keys::subject(entry, path);
    let mut message = match shape {
        Some(shape) => format!("{subject} must be {}", shape.describe()),
        None => format!("{subject} cannot be this"),
    };
    if let Some(entry) = entry.filter(|k| !k.shape.shows_its_form()) {
        message.push_str(&format!(", e.g. `{}`", entry.example));
    }
    if let Some(found) = found {
        message.push_str(&format!(", not `{found}`"));
    }
    message
}

/// Where a table is, in words: `at the top of the file`, `in [source]`.
fn section(path: &[&str]) -> String {
    match path {
        [] => "at the top of the file".into(),
        ["stages"] => "in a [[stages]] table".into(),
        [section] => format!("in [{section}]"),
        [.., last] => format!("in `{last}`"),
    }
}

/// The allowed name `typed` is probably a misspelling of: the nearest by
/// Damerau-Levenshtein distance (a swap of two letters counts one), within
/// a third of its length, as cargo does for its subcommands. Case and `-`
/// versus `_` count as one edit each, so `Concurrency` and `on_success` are
/// caught.
fn closest<'a>(typed: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let within = (typed.chars().count() / 3).max(1);
    allowed
        .iter()
        .map(|name| (strsim::damerau_levenshtein(typed, name), *name))
        .filter(|(distance, _)| *distance <= within)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// Where an error's span is in the document.
struct Place {
    /// The keys that lead to it, array indexes left out.
    keys: Vec<String>,
    /// The value's span, unless the span is a key's.
    value: Option<Range<usize>>,
    /// The span of the array the value is an element of.
    list: Option<Range<usize>>,
}

impl Place {
    /// Where `span` is in `text`; `None` if it is not a key or value there.
    fn find(text: &str, span: &Range<usize>) -> Option<Place> {
        let doc = DeTable::parse(text).ok()?;
        let mut keys = Vec::new();
        find_in_table(doc.get_ref(), span, &mut keys)
    }

    /// The value as written, shortened, for "not `...`". An element of a
    /// list stands for the list, unless a list was wanted.
    fn found(&self, text: &str, shape: Option<Shape>) -> Option<String> {
        let wants_list = matches!(shape, Some(Shape::TextList | Shape::Stages));
        let span = match &self.list {
            Some(list) if !wants_list => list,
            _ => self.value.as_ref()?,
        };
        let written = text.get(span.clone())?.trim();
        let line = written.lines().next().unwrap_or("");
        const LONGEST: usize = 40;
        if line.chars().count() > LONGEST || line.len() < written.len() {
            Some(format!("{}…", line.chars().take(LONGEST).collect::<String>()))
        } else {
            Some(written.to_string())
        }
    }
}

fn find_in_table(table: &DeTable<'_>, span: &Range<usize>, keys: &mut Vec<String>) -> Option<Place> {
    for (key, value) in table.iter() {
        keys.push(key.get_ref().to_string());
        if key.span() == *span {
            return Some(Place { keys: keys.clone(), value: None, list: None });
        }
        if let Some(place) = find_in_value(value, span, keys, None) {
            return Some(place);
        }
        keys.pop();
    }
    None
}

fn find_in_value(
    value: &Spanned<DeValue<'_>>,
    span: &Range<usize>,
    keys: &mut Vec<String>,
    list: Option<Range<usize>>,
) -> Option<Place> {
    if value.span() == *span {
        return Some(Place { keys: keys.clone(), value: Some(value.span()), list });
    }
    match value.get_ref() {
        DeValue::Table(table) => find_in_table(table, span, keys),
        DeValue::Array(array) => array.iter().find_map(|v| find_in_value(v, span, keys, Some(value.span()))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelling_is_matched_and_a_stranger_is_not() {
        let stage = ["name", "plugin", "concurrency", "order", "partition_by", "buffer", "batch", "batch_window"];
        assert_eq!(closest("concurency", &stage), Some("concurrency"));
        assert_eq!(closest("Concurrency", &stage), Some("concurrency"));
        assert_eq!(closest("partition-by", &stage), Some("partition_by"));
        assert_eq!(closest("bacth", &stage), Some("batch"), "a swap is one edit");
        assert_eq!(closest("colour", &stage), None);
        assert_eq!(closest("x", &stage), None);
        assert_eq!(closest("orderd", &["ordered", "unordered"]), Some("ordered"));
        assert_eq!(closest("unorderd", &["ordered", "unordered"]), Some("unordered"));
    }

    #[test]
    fn serde_messages_are_read_by_shape() {
        let Complaint::UnknownKey { key, allowed } = Complaint::read("unknown field `a`, expected `b` or `c`") else {
            panic!()
        };
        assert_eq!((key, allowed), ("a", vec!["b", "c"]));
        let Complaint::WrongValue { expected } =
            Complaint::read("invalid value: string \"x, expected y\", expected usize")
        else {
            panic!()
        };
        assert_eq!(expected, "usize");
        assert!(matches!(Complaint::read("invalid string\nexpected `\"`"), Complaint::Other));
    }
}
