//! Settings that must be tables. serde's derived structs also accept an
//! array (read as a tuple), so `grants = []` or `limits = []` would pass
//! silently as "no settings": this finds them, with their place in the file.

use std::ops::Range;
use toml::de::{DeTable, DeValue};

/// Top-level sections that are tables.
const SECTIONS: &[&str] = &["source", "sink", "dead_letter", "state", "engine", "limits"];
/// Keys of a `[[stages]]` table whose values are tables.
const STAGE_TABLES: &[&str] = &["limits", "grants", "retries"];

/// Every setting in `text` that is an array where a table belongs: its span
/// and what to write instead. Nothing if `text` does not parse (the caller
/// reports that).
pub(super) fn arrays_for_tables(text: &str) -> Vec<(Range<usize>, String)> {
    let Ok(doc) = DeTable::parse(text) else { return Vec::new() };
    let mut found = Vec::new();
    let mut check = |table: &DeTable<'_>, keys: &[&str], within: &str| {
        for (key, value) in table.iter() {
            let name = key.get_ref().as_ref();
            if keys.contains(&name) && matches!(value.get_ref(), DeValue::Array(_)) {
                found.push((
                    value.span(),
                    format!("{within}`{name}` must be a table (`{name} = {{ ... }}`), not an array"),
                ));
            }
        }
    };
    check(doc.get_ref(), SECTIONS, "");
    if let Some(DeValue::Array(stages)) =
        doc.get_ref().iter().find(|(k, _)| k.get_ref() == "stages").map(|(_, v)| v.get_ref())
    {
        for stage in stages.iter() {
            if let DeValue::Table(table) = stage.get_ref() {
                check(table, STAGE_TABLES, "a stage's ");
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_where_tables_belong_are_found_with_their_place() {
        let text = "version = 1\nlimits = []\n[[stages]]\nname = \"a\"\ngrants = []\nretries = { max = 1 }\n";
        let found = arrays_for_tables(text);
        let found: Vec<(&str, &str)> = found.iter().map(|(span, m)| (&text[span.clone()], m.as_str())).collect();
        assert_eq!(
            found,
            [
                ("[]", "`limits` must be a table (`limits = { ... }`), not an array"),
                ("[]", "a stage's `grants` must be a table (`grants = { ... }`), not an array"),
            ]
        );
        assert!(arrays_for_tables("version = 1\n[limits]\n").is_empty());
    }
}
