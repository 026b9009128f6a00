//! `sluice test`'s state: what `state_before` writes into a case's store,
//! and the state after a case, compared with what the case expects.

use super::Target;
use super::diff::diff;
use anyhow::Result;
use sluice::state::StateEntry;
use std::collections::BTreeMap;
use std::path::Path;

/// What `state_before` writes: per stage, its entries.
pub(super) type Seeds = Vec<(String, Vec<StateEntry>)>;

/// The entries `state_before` writes, per stage, or what is wrong with it.
/// `stages`: each stage's name and whether it is keyed; `pipeline`: the
/// table is per stage (else it is the one stage's key = value).
pub(super) fn seeds_of(stages: &[(String, bool)], pipeline: bool, table: &toml::Table) -> Result<Seeds, String> {
    let entries = |stage: &str, keyed: bool, t: &toml::Table| -> Result<Vec<StateEntry>, String> {
        t.iter()
            .map(|(k, v)| {
                if v.is_table() {
                    return Err(if pipeline {
                        format!("`{stage}.{k}` is a table, but a state value is text, a number or a boolean")
                    } else {
                        format!(
                            "`{k}` is a table, but a plugin's `state_before` is key = value (tables per stage are for a `pipeline`)"
                        )
                    });
                }
                let (partition, key) = if keyed {
                    let (partition, key) = k.split_once('/').ok_or_else(|| {
                        format!(
                            "`{k}`: stage `{stage}` is keyed (`partition_by`), so its state's keys are written `partition/key`, the message key first (`/{k}` for messages without a key)"
                        )
                    })?;
                    (Some(partition.as_bytes().to_vec()), key)
                } else {
                    (None, k.as_str())
                };
                Ok(StateEntry { partition, key: key.as_bytes().to_vec(), value: as_text(v).into_bytes() })
            })
            .collect()
    };
    if !pipeline {
        let Some((stage, keyed)) = stages.first() else { return Ok(Seeds::new()) };
        return Ok(vec![(stage.clone(), entries(stage, *keyed, table)?)]);
    }
    let mut seeds = Seeds::new();
    for (stage, value) in table {
        let Some((_, keyed)) = stages.iter().find(|(name, _)| name == stage) else {
            let names: Vec<&str> = stages.iter().map(|(name, _)| name.as_str()).collect();
            return Err(format!(
                "`state_before` names stage `{stage}`, but the pipeline's stages are: {}",
                names.join(", ")
            ));
        };
        let Some(t) = value.as_table() else {
            return Err(format!(
                "a pipeline's `state_before` is per stage: `state_before = {{ \"<stage>\" = {{ key = \"value\" }} }}`, but `{stage}` is not a table"
            ));
        };
        seeds.push((stage.clone(), entries(stage, *keyed, t)?));
    }
    Ok(seeds)
}

fn as_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What differs between the state `expected` (a case's `state`) and what the
/// stages left in `store_file`, as readable diffs; `stages`: each stage's
/// name and whether it is keyed.
pub(super) fn state_problems(
    target: &Target,
    expected: &toml::Table,
    stages: &[(String, bool)],
    store_file: &Path,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let expected = expected_state(target, expected);
    let mut got = BTreeMap::new();
    for (stage, keyed) in stages {
        if !expected.contains_key(stage) {
            continue;
        }
        let entries =
            if store_file.exists() { sluice::state::read_state(store_file, stage, *keyed)? } else { Vec::new() };
        let entries: BTreeMap<String, String> = entries
            .into_iter()
            .map(|e| {
                let key = String::from_utf8_lossy(&e.key).into_owned();
                let key = match e.partition {
                    Some(p) => format!("{}/{key}", String::from_utf8_lossy(&p)),
                    None => key,
                };
                (key, String::from_utf8_lossy(&e.value).into_owned())
            })
            .collect();
        got.insert(stage.clone(), entries);
    }
    for (stage, want) in &expected {
        let have = got.remove(stage).unwrap_or_default();
        if *want != have {
            let lines = |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>();
            let (want, have) = (lines(want), lines(&have));
            let title = match target {
                Target::Plugin { .. } => "  state after (- expected, + got):".to_string(),
                Target::Pipeline(_) => format!("  state of `{stage}` after (- expected, + got):"),
            };
            problems.push(format!("{title}\n{}", diff(&want, &have, |a, b| a == b, |s| s.clone(), |s| s.clone())));
        }
    }
    Ok(problems)
}

/// The expected state, per stage (a plugin's is named after its file). Values are
/// compared as text (a number is written as TOML writes it).
fn expected_state(target: &Target, table: &toml::Table) -> BTreeMap<String, BTreeMap<String, String>> {
    let entries = |t: &toml::Table| t.iter().map(|(k, v)| (k.clone(), as_text(v))).collect();
    match target {
        Target::Plugin { name, .. } => BTreeMap::from([(name.clone(), entries(table))]),
        Target::Pipeline(_) => {
            table.iter().filter_map(|(stage, v)| v.as_table().map(|t| (stage.clone(), entries(t)))).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn seeds(stages: &[(&str, bool)], pipeline: bool, toml: &str) -> Result<Vec<(String, Vec<String>)>, String> {
        let stages: Vec<(String, bool)> = stages.iter().map(|(s, k)| (s.to_string(), *k)).collect();
        let table: toml::Table = toml.parse().unwrap();
        let seeds = super::seeds_of(&stages, pipeline, &table)?;
        let show = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        Ok(seeds
            .into_iter()
            .map(|(stage, entries)| {
                let entries = entries
                    .iter()
                    .map(|e| match &e.partition {
                        Some(p) => format!("[{}] {} = {}", show(p), show(&e.key), show(&e.value)),
                        None => format!("{} = {}", show(&e.key), show(&e.value)),
                    })
                    .collect();
                (stage, entries)
            })
            .collect())
    }

    #[test]
    fn initial_state_values_are_text_and_keyed_keys_split_at_the_first_slash() {
        let got = seeds(&[("count", false)], false, "a = \"x y\"\nb = 3\nc = 1.5\nd = true").unwrap();
        assert_eq!(got, vec![("count".into(), strings(&["a = x y", "b = 3", "c = 1.5", "d = true"]))]);
        let got = seeds(
            &[("plain", false), ("keyed", true)],
            true,
            "plain = { k = \"1\" }\nkeyed = { \"user-1/k\" = 2, \"/k\" = 3, \"u/a/b\" = 4 }",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("keyed".into(), strings(&["[] k = 3", "[u] a/b = 4", "[user-1] k = 2"])),
                ("plain".into(), strings(&["k = 1"])),
            ]
        );
    }

    #[test]
    fn initial_state_for_a_stage_that_is_not_there_or_not_as_a_table_is_refused() {
        let stages = [("large-orders", false), ("tag", false)];
        assert_eq!(
            seeds(&stages, true, "tga = { k = \"1\" }").unwrap_err(),
            "`state_before` names stage `tga`, but the pipeline's stages are: large-orders, tag"
        );
        assert!(seeds(&stages, true, "tag = \"1\"").unwrap_err().contains("but `tag` is not a table"));
        assert!(seeds(&stages, true, "tag = { k = { a = 1 } }").unwrap_err().contains("`tag.k` is a table"));
        assert!(
            seeds(&[("s", false)], false, "s = { k = 1 }")
                .unwrap_err()
                .contains("tables per stage are for a `pipeline`")
        );
        let keyed = seeds(&[("s", true)], true, "s = { k = 1 }").unwrap_err();
        assert!(keyed.contains("`partition/key`") && keyed.contains("`/k`"), "{keyed}");
    }
}
