//! Writing and deleting a field of a JSON document in its text: the bytes of
//! the field (and of the members around it) change, the rest of the document
//! is kept as it was, key order, spacing and number spelling included, and
//! only the field becomes a [`Value`].
//!
//! The path is walked one container at a time: at each level the container's
//! members are scanned (checked, not built) for their positions, and the next
//! level is the member the path names. The first scan, of the whole document,
//! checks it against JSON's grammar; what the grammar allows but a
//! [`Value`] cannot hold (a number beyond `f64`, an unpaired surrogate escape,
//! nesting deeper than 128) passes through as it came.

use super::{FieldPath, KeyIs};
use serde::Deserializer as _;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// What JSON counts as whitespace.
const SPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// Why a document could not be edited.
#[derive(Debug)]
pub(crate) enum SpliceError {
    /// The text is not one JSON document.
    NotJson(serde_json::Error),
    /// The path runs through a value that cannot hold it.
    Path(String),
}

/// A scanned value on the path.
enum Shape {
    /// An object: the value of every member, in order, and which of them have
    /// the key the path names.
    Object {
        values: Vec<Range<usize>>,
        named: Vec<usize>,
    },
    /// An array: its elements.
    Array {
        elements: Vec<Range<usize>>,
    },
    Null,
    /// Any other value, by its JSON type.
    Scalar(&'static str),
}

/// Where a path ends in a document. `depth` is the index of the segment the
/// walk stopped at.
enum End {
    /// The field is there, at `value`, in `holder`.
    Found { value: Range<usize>, holder: Holder },
    /// The object at `object`, whose members' values are at `values`, has no
    /// member `depth`.
    Missing { depth: usize, object: Range<usize>, values: Vec<Range<usize>> },
    /// The array has no element `depth`.
    NoElement { depth: usize },
    /// The value that should hold segment `depth`, at `span`, is `null`.
    Null { depth: usize, span: Range<usize> },
    /// The value that should hold segment `depth` is a scalar of this type.
    Scalar { depth: usize, kind: &'static str },
}

/// What holds a field.
enum Holder {
    /// Member `index` of the object at `span`, whose members' values are at `values`.
    Object {
        span: Range<usize>,
        values: Vec<Range<usize>>,
        index: usize,
    },
    Array,
}

/// A change to the text: `range` becomes `with`.
struct Edit {
    range: Range<usize>,
    with: String,
}

impl FieldPath {
    /// Sets the field in the JSON document `text` to `value`, as
    /// [`set`](Self::set) does on a parsed document (missing objects along the
    /// path are created, `null` parents become objects), and returns the new
    /// text. Only the field's bytes change: the other members keep their order
    /// and spelling, and a new member goes after the last one, spaced like it.
    /// Where a key along the path is there more than once, the last one counts
    /// (as when the document is parsed) and the earlier copies are removed.
    pub(crate) fn write(&self, text: &[u8], value: &Value) -> Result<Vec<u8>, SpliceError> {
        self.write_json(text, &value.to_string())
    }

    /// [`write`](Self::write) with the value given as JSON text, written as
    /// it is (a field moved elsewhere keeps its spelling).
    fn write_json(&self, text: &[u8], value: &str) -> Result<Vec<u8>, SpliceError> {
        let (text, end) = self.walk(text)?;
        let segment = |depth: usize| &self.segments[depth];
        let edit = match end {
            End::Found { value: range, .. } => Edit { range, with: value.to_string() },
            End::Missing { depth, object, values } => {
                add_member(&text, &object, &values, segment(depth), &self.segments[depth + 1..], value)
            }
            End::Null { depth, span } => Edit { range: span, with: nested(&self.segments[depth..], value, ":") },
            End::NoElement { depth } => {
                return Err(self.refused(format!("`{}` is not an index of the array", segment(depth))));
            }
            End::Scalar { depth, kind } if depth + 1 == self.segments.len() => {
                return Err(self.refused(format!("its parent is a {kind}")));
            }
            End::Scalar { depth, kind } => return Err(self.refused(format!("`{}` is inside a {kind}", segment(depth)))),
        };
        Ok(apply(&text, edit).into_bytes())
    }

    /// Deletes the field from the JSON document `text`, as
    /// [`remove`](Self::remove) does on a parsed document (an array element
    /// becomes `null`), and returns the new text (`None` if it is unchanged)
    /// and the field's value (`None` if there is no such field). Where a key
    /// along the path is there more than once, the earlier copies are removed
    /// as well, so that no copy of the field stays in the text.
    pub(crate) fn delete(&self, text: &[u8]) -> Result<(Option<Vec<u8>>, Option<Value>), SpliceError> {
        let (text, field) = self.delete_json(text)?;
        let field = field.map(|f| serde_json::from_str(&f)).transpose().map_err(SpliceError::NotJson)?;
        Ok((text, field))
    }

    /// [`delete`](Self::delete), returning the field as its JSON text.
    fn delete_json(&self, text: &[u8]) -> Result<(Option<Vec<u8>>, Option<String>), SpliceError> {
        let (text, end) = self.walk(text)?;
        let End::Found { value, holder } = end else {
            return Ok((owned(text), None));
        };
        let field = text[value.clone()].to_string();
        let cut = match holder {
            Holder::Object { span, values, index } => cut_members(&text, &span, &values, &[index]),
            Holder::Array => Edit { range: value, with: "null".into() },
        };
        Ok((Some(apply(&text, cut).into_bytes()), Some(field)))
    }

    /// Moves the field to `to`: deleted here, as [`delete`](Self::delete)
    /// does, and written there, as [`write`](Self::write) does, as the text
    /// it was (numbers beyond `f64` and all). `None` if there is no field.
    pub(crate) fn move_to(&self, to: &FieldPath, text: &[u8]) -> Result<Option<Vec<u8>>, SpliceError> {
        match self.delete_json(text)? {
            (Some(left), Some(field)) => to.write_json(&left, &field).map(Some),
            _ => Ok(None),
        }
    }

    /// Walks the path from the document's root to where it ends, removing
    /// the earlier copies of a repeated key on the way (the walk starts again
    /// in the new text).
    fn walk<'t>(&self, text: &'t [u8]) -> Result<(Cow<'t, str>, End), SpliceError> {
        let mut text = Cow::Borrowed(std::str::from_utf8(text).map_err(|e| not_utf8(&e))?);
        'walk: loop {
            let mut span = document(&text)?;
            for (depth, segment) in self.segments.iter().enumerate() {
                let last = depth + 1 == self.segments.len();
                let end = match scan(&text, &span, segment, depth == 0)? {
                    Shape::Object { values, named } => match named.split_last() {
                        None => End::Missing { depth, object: span, values },
                        Some((_, earlier)) if !earlier.is_empty() => {
                            let copies = cut_members(&text, &span, &values, earlier);
                            text = Cow::Owned(apply(&text, copies));
                            continue 'walk;
                        }
                        Some((&index, _)) if last => {
                            End::Found { value: values[index].clone(), holder: Holder::Object { span, values, index } }
                        }
                        Some((&i, _)) => {
                            span = values[i].clone();
                            continue;
                        }
                    },
                    Shape::Array { elements } => match segment.parse::<usize>().ok().and_then(|i| elements.get(i)) {
                        None => End::NoElement { depth },
                        Some(element) if last => End::Found { value: element.clone(), holder: Holder::Array },
                        Some(element) => {
                            span = element.clone();
                            continue;
                        }
                    },
                    Shape::Null => End::Null { depth, span },
                    Shape::Scalar(kind) => End::Scalar { depth, kind },
                };
                return Ok((text, end));
            }
            unreachable!("a path has at least one segment, and the last one ends the walk")
        }
    }

    fn refused(&self, why: String) -> SpliceError {
        SpliceError::Path(format!("cannot set `{self}`: {why}"))
    }
}

fn owned(text: Cow<'_, str>) -> Option<Vec<u8>> {
    match text {
        Cow::Owned(text) => Some(text.into_bytes()),
        Cow::Borrowed(_) => None,
    }
}

/// The error for text that is not UTF-8 (serde_json's own does not say so
/// for bytes inside a string it skips).
fn not_utf8(e: &std::str::Utf8Error) -> SpliceError {
    SpliceError::NotJson(serde::de::Error::custom(format!("invalid UTF-8 at byte {}", e.valid_up_to())))
}

/// The span of the document's value, its surrounding whitespace aside. A
/// container is checked when it is scanned ([`scan`]); anything else is
/// checked here.
fn document(text: &str) -> Result<Range<usize>, SpliceError> {
    let value = text.trim_matches(SPACE);
    if !value.starts_with(['{', '[']) {
        serde_json::from_str::<IgnoredAny>(text).map_err(SpliceError::NotJson)?;
    }
    Ok(offset(text, value))
}

/// Where `part`, a slice of `text`, lies in it.
fn offset(text: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - text.as_ptr() as usize;
    start..start + part.len()
}

/// Scans the value at `span`, noting the members named `segment`. The
/// document's root is scanned in the whole text, so that an error's line and
/// column count from its start; a value inside it was checked with it.
fn scan(text: &str, span: &Range<usize>, segment: &str, root: bool) -> Result<Shape, SpliceError> {
    Ok(match text.as_bytes()[span.start] {
        b'{' | b'[' => {
            let mut de = serde_json::Deserializer::from_str(if root { text } else { &text[span.clone()] });
            let shape = de.deserialize_any(Members { text, segment }).map_err(SpliceError::NotJson)?;
            de.end().map_err(SpliceError::NotJson)?;
            shape
        }
        b'n' => Shape::Null,
        b'"' => Shape::Scalar("string"),
        b't' | b'f' => Shape::Scalar("boolean"),
        _ => Shape::Scalar("number"),
    })
}

/// Scans a container's members for their positions.
struct Members<'a> {
    text: &'a str,
    segment: &'a str,
}

impl<'de> Visitor<'de> for Members<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object or array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let (mut values, mut named) = (Vec::new(), Vec::new());
        while let Some(is_named) = map.next_key_seed(KeyIs(self.segment))? {
            let value: &RawValue = map.next_value()?;
            if is_named {
                named.push(values.len());
            }
            values.push(offset(self.text, value.get()));
        }
        Ok(Shape::Object { values, named })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element::<&RawValue>()? {
            elements.push(offset(self.text, element.get()));
        }
        Ok(Shape::Array { elements })
    }
}

/// The edit that removes members `cut` of the object at `span`, whose
/// members' values are at `values`: its inside is rewritten as the members
/// kept, with the whitespace and commas that stood between them.
fn cut_members(text: &str, span: &Range<usize>, values: &[Range<usize>], cut: &[usize]) -> Edit {
    let inside = span.start + 1..span.end - 1;
    let key = |i| key_start(text, span, values, i);
    let mut kept = vec![true; values.len()];
    cut.iter().for_each(|&i| kept[i] = false);
    let kept: Vec<usize> = (0..values.len()).filter(|&i| kept[i]).collect();
    let mut with = String::new();
    if let Some(&last) = kept.last() {
        with.push_str(&text[inside.start..key(0)]);
        for pair in kept.windows(2) {
            // The member, then what separated it from the one after it.
            with.push_str(&text[key(pair[0])..key(pair[0] + 1)]);
        }
        with.push_str(&text[key(last)..values[last].end]);
        with.push_str(&text[values[values.len() - 1].end..inside.end]);
    }
    Edit { range: inside, with }
}

/// The edit that adds the member `key`, holding `value` under the objects
/// `path` names, after the last member of the object at `span`, whose
/// members' values are at `values`. It is spaced as the last member is:
/// `, "key": value` after `"a": 1`, `,"key":value` after `"a":1`.
fn add_member(
    text: &str,
    span: &Range<usize>,
    values: &[Range<usize>],
    key: &str,
    path: &[String],
    value: &str,
) -> Edit {
    let Some(last) = values.last() else {
        let at = span.start + 1;
        return Edit { range: at..at, with: format!("{}:{}", quoted(key), nested(path, value, ":")) };
    };
    // Between the last key's closing quote and its value there is only JSON
    // whitespace and the colon, and between two members only whitespace and
    // the comma: these are what the new member copies.
    let colon_at = text[..last.start].trim_end_matches(SPACE).len() - 1;
    let key_end = text[..colon_at].trim_end_matches(SPACE).len();
    let colon = &text[key_end..last.start];
    let separator = match values.len() {
        1 if colon.ends_with(' ') => ", ",
        1 => ",",
        n => &text[values[n - 2].end..key_start(text, span, values, n - 1)],
    };
    let with = format!("{separator}{}{colon}{}", quoted(key), nested(path, value, colon));
    Edit { range: last.end..last.end, with }
}

/// Where the key of member `i` of the object at `span` starts: past the
/// whitespace after `{`, or past the comma after the previous value.
fn key_start(text: &str, span: &Range<usize>, values: &[Range<usize>], i: usize) -> usize {
    let end = span.end - 1;
    let rest = match i {
        0 => &text[span.start + 1..end],
        _ => {
            let rest = &text[values[i - 1].end..end];
            &rest[rest.find(',').expect("members are separated by commas") + 1..]
        }
    };
    end - rest.trim_start_matches(SPACE).len()
}

/// `value` under the objects `path` names: `{"a":{"b":value}}` for `a.b`,
/// with `colon` between each key and its value.
fn nested(path: &[String], value: &str, colon: &str) -> String {
    path.iter().rev().fold(value.to_string(), |inner, segment| format!("{{{}{colon}{inner}}}", quoted(segment)))
}

fn quoted(key: &str) -> String {
    Value::from(key).to_string()
}

/// The text with `edit` made.
fn apply(text: &str, edit: Edit) -> String {
    [&text[..edit.range.start], &edit.with, &text[edit.range.end..]].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn p(s: &str) -> FieldPath {
        s.parse().unwrap()
    }

    fn write(path: &str, text: &str, value: Value) -> String {
        String::from_utf8(p(path).write(text.as_bytes(), &value).unwrap()).unwrap()
    }

    fn delete(path: &str, text: &str) -> Option<(String, Value)> {
        let (text, value) = p(path).delete(text.as_bytes()).unwrap();
        Some((String::from_utf8(text?).unwrap(), value?))
    }

    fn not_json(result: Result<Vec<u8>, SpliceError>) -> String {
        match result {
            Err(SpliceError::NotJson(e)) => e.to_string(),
            other => panic!("expected not JSON, got {other:?}"),
        }
    }

    #[test]
    fn write_changes_only_the_field() {
        let text = r#" { "z": 1.50, "a" : {"k": "v"},  "m": [1, 2] } "#;
        assert_eq!(write("a.k", text, json!(true)), r#" { "z": 1.50, "a" : {"k": true},  "m": [1, 2] } "#);
        assert_eq!(write("m.1", text, json!(null)), r#" { "z": 1.50, "a" : {"k": "v"},  "m": [1, null] } "#);
        // A new member is spaced as the last one is.
        assert_eq!(write("new", text, json!("x")), r#" { "z": 1.50, "a" : {"k": "v"},  "m": [1, 2],  "new": "x" } "#);
        assert_eq!(write("n.o", r#"{"a":1}"#, json!(2)), r#"{"a":1,"n":{"o":2}}"#);
        assert_eq!(write("n.o", r#"{"a" : 1}"#, json!(2)), r#"{"a" : 1, "n" : {"o" : 2}}"#);
        assert_eq!(write("a.b.c", r#"{"a": {}}"#, json!(1)), r#"{"a": {"b":{"c":1}}}"#);
        assert_eq!(write("a.b", r#"{"a": null}"#, json!(1)), r#"{"a": {"b":1}}"#);
        assert_eq!(write("a\"b", "{}", json!(1)), r#"{"a\"b":1}"#);
    }

    #[test]
    fn delete_takes_the_member_and_one_comma() {
        let text = r#"{"a": 1, "b": {"c": 2, "d": 3}, "e": 4}"#;
        assert_eq!(delete("a", text), Some((r#"{"b": {"c": 2, "d": 3}, "e": 4}"#.into(), json!(1))));
        assert_eq!(delete("b.d", text), Some((r#"{"a": 1, "b": {"c": 2}, "e": 4}"#.into(), json!(3))));
        assert_eq!(delete("e", text), Some((r#"{"a": 1, "b": {"c": 2, "d": 3}}"#.into(), json!(4))));
        assert_eq!(delete("b.c", r#"{"b": { "c" : 2 }}"#), Some((r#"{"b": {}}"#.into(), json!(2))));
        assert_eq!(delete("x", text), None);
        assert_eq!(delete("a.x", text), None);
    }

    #[test]
    fn a_repeated_key_is_its_last_copy_and_the_others_go() {
        let text = r#"{"a": 1, "a": 2, "b": 3, "a": 4}"#;
        assert_eq!(delete("a", text), Some((r#"{"b": 3}"#.into(), json!(4))));
        assert_eq!(write("a", text, json!(5)), r#"{"b": 3, "a": 5}"#);
        // Along the path too: no copy of a removed field stays in the text.
        let text = r#"{"a":{"b":"secret"},"a":{"b":"other"}}"#;
        assert_eq!(delete("a.b", text), Some((r#"{"a":{}}"#.into(), json!("other"))));
        let (left, field) = p("a.b").delete(br#"{"a":{"b":"secret"},"a":{}}"#).unwrap();
        assert_eq!((left.as_deref(), field), (Some(&br#"{"a":{}}"#[..]), None));
        assert_eq!(write("a.c", text, json!(1)), r#"{"a":{"b":"other","c":1}}"#);
    }

    #[test]
    fn many_repeats_take_linear_time() {
        let text = format!("{{{}\"a\":0}}", r#""a":1,"#.repeat(50_000));
        assert_eq!(write("a", &text, json!(2)), r#"{"a":2}"#);
    }

    #[test]
    fn errors_say_where_in_the_whole_message() {
        let at = |text: &str| not_json(p("a").write(text.as_bytes(), &json!(1)));
        assert_eq!(at("\n\n{\"a\": 1,}"), serde_json::from_str::<Value>("\n\n{\"a\": 1,}").unwrap_err().to_string());
        assert_eq!(at("  [1,]"), serde_json::from_str::<Value>("  [1,]").unwrap_err().to_string());
        assert_eq!(not_json(p("a").write(b"{\"a\": \"\xff\"}", &json!(1))), "invalid UTF-8 at byte 7");
    }

    #[test]
    fn what_the_grammar_allows_passes_through() {
        let text = r#"{"a": 1, "big": 1e400, "lone": "\ud800"}"#;
        assert_eq!(write("a", text, json!(2)), r#"{"a": 2, "big": 1e400, "lone": "\ud800"}"#);
    }

    #[test]
    fn what_is_not_json_is_an_error_whatever_the_path() {
        for text in ["", " ", "{", r#"{"a": 1,}"#, r#"{"a": 1} x"#, "nul", "\u{a0}{}", "[1,]"] {
            assert!(matches!(p("a").write(text.as_bytes(), &json!(1)), Err(SpliceError::NotJson(_))), "{text:?}");
            assert!(matches!(p("a").delete(text.as_bytes()), Err(SpliceError::NotJson(_))), "{text:?}");
        }
        let bad_utf8 = b"{\"a\": \"\xff\"}";
        assert!(matches!(p("b").write(bad_utf8, &json!(1)), Err(SpliceError::NotJson(_))));
    }

    /// A JSON document as text may hold what a [`Value`] cannot: repeated
    /// keys, escaped keys, any spacing.
    #[derive(Debug, Clone)]
    enum Doc {
        Scalar(Value),
        Array(Vec<Doc>),
        Object(Vec<(String, Doc)>),
    }

    fn doc() -> impl Strategy<Value = Doc> {
        let scalar = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z\"é,{}\\[\\]:]{0,3}".prop_map(Value::from),
        ]
        .prop_map(Doc::Scalar);
        scalar.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Doc::Array),
                prop::collection::vec(("[abc01é]|ab", inner), 0..5).prop_map(Doc::Object),
            ]
        })
    }

    /// Prints `doc` with the spacing `ws` picks from, escaping some keys.
    fn print(doc: &Doc, ws: &mut impl Iterator<Item = u8>, out: &mut String) {
        fn space(ws: &mut impl Iterator<Item = u8>, out: &mut String) {
            out.push_str(["", " ", "\n  ", "\t"][usize::from(ws.next().unwrap_or(0) % 4)]);
        }
        match doc {
            Doc::Scalar(v) => out.push_str(&v.to_string()),
            Doc::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    space(ws, out);
                    if i > 0 {
                        out.push(',');
                        space(ws, out);
                    }
                    print(item, ws, out);
                }
                space(ws, out);
                out.push(']');
            }
            Doc::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    space(ws, out);
                    if i > 0 {
                        out.push(',');
                        space(ws, out);
                    }
                    if key == "a" && i % 2 == 1 {
                        out.push_str(r#""\u0061""#);
                    } else if key == "é" && i % 2 == 0 {
                        out.push_str(r#""\u00e9""#);
                    } else {
                        out.push_str(&Value::from(key.as_str()).to_string());
                    }
                    space(ws, out);
                    out.push(':');
                    space(ws, out);
                    print(value, ws, out);
                }
                space(ws, out);
                out.push('}');
            }
        }
    }

    fn path() -> impl Strategy<Value = FieldPath> {
        prop::collection::vec("[abc01xé]|ab", 1..4).prop_map(|s| s.join(".").parse().unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Writing in the text gives the document that setting the field in
        /// the parsed document gives, or the same refusal.
        #[test]
        fn write_agrees_with_set(doc in doc(), spacing in prop::collection::vec(any::<u8>(), 64), path in path(), value in doc()) {
            // Space around the document, too, half the time.
            let mut text = if spacing[0] % 2 == 0 { String::new() } else { " \n".to_string() };
            print(&doc, &mut spacing.into_iter().cycle(), &mut text);
            text.push_str(if text.starts_with(' ') { "\t\n" } else { "" });
            let value: Value = { let mut v = String::new(); print(&value, &mut std::iter::empty(), &mut v); serde_json::from_str(&v).unwrap() };
            let mut parsed: Value = serde_json::from_str(&text).unwrap();
            match (path.set(&mut parsed, value.clone()), path.write(text.as_bytes(), &value)) {
                (Ok(()), Ok(written)) => {
                    let written: Value = serde_json::from_slice(&written).expect("the written text is JSON");
                    prop_assert_eq!(written, parsed);
                }
                (Err(expected), Err(SpliceError::Path(got))) => prop_assert_eq!(got, expected),
                (expected, got) => prop_assert!(false, "{text}: set gave {expected:?}, write gave {got:?}"),
            }
        }

        /// Deleting in the text removes what removing from the parsed document
        /// removes, and returns the same value.
        #[test]
        fn delete_agrees_with_remove(doc in doc(), spacing in prop::collection::vec(any::<u8>(), 64), path in path()) {
            // Space around the document, too, half the time.
            let mut text = if spacing[0] % 2 == 0 { String::new() } else { " \n".to_string() };
            print(&doc, &mut spacing.into_iter().cycle(), &mut text);
            text.push_str(if text.starts_with(' ') { "\t\n" } else { "" });
            let mut parsed: Value = serde_json::from_str(&text).unwrap();
            let expected = path.remove(&mut parsed);
            match path.delete(text.as_bytes()) {
                Ok((rest, value)) => {
                    prop_assert_eq!(value, expected);
                    let rest = rest.unwrap_or_else(|| text.clone().into_bytes());
                    let rest: Value = serde_json::from_slice(&rest).expect("the text left is JSON");
                    prop_assert_eq!(rest, parsed);
                }
                Err(e) => prop_assert!(false, "{text}: {e:?}"),
            }
        }

        /// A document cut short anywhere is refused as not JSON, as parsing
        /// refuses it.
        #[test]
        fn a_cut_document_is_not_json(doc in doc(), cut in any::<prop::sample::Index>(), path in path()) {
            let mut text = String::new();
            print(&doc, &mut std::iter::empty(), &mut text);
            let end = cut.index(text.len() + 1);
            prop_assume!(text.is_char_boundary(end));
            let text = &text[..end];
            prop_assume!(serde_json::from_str::<Value>(text).is_err());
            prop_assert!(matches!(path.write(text.as_bytes(), &json!(1)), Err(SpliceError::NotJson(_))));
            prop_assert!(matches!(path.delete(text.as_bytes()), Err(SpliceError::NotJson(_))));
        }
    }
}
