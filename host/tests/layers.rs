//! The host's dependencies run one way: each top-level module uses only the
//! ones below it, and no files import each other in a loop. Read from the
//! sources' `use` lines and `crate::`/`super::` paths (test code excluded),
//! so a change that knots the structure fails here with the files named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules from the ground up: each may use those before it.
/// A new module goes where what it uses puts it.
const LAYERS: &[&str] = &[
    "fs",
    "bindings",
    "native",
    "limits",
    "config",
    "state",
    "envelope",
    "connect",
    "engine",
    "capabilities",
    "stage",
    "pipeline",
    "lib",
    "cli",
    "main",
];

/// A source file and the module path it defines (`pipeline::job`).
struct File {
    module: Vec<String>,
    text: String,
}

fn files() -> Vec<File> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Vec<String> = relative.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            // Test-only modules may reach anywhere.
            if module.last().is_some_and(|m| m == "tests" || m == "props") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => text[..at].to_string(),
                None => text,
            };
            out.push(File { module, text });
        }
    }
    out
}

/// Every path a file names: `use` trees expanded, and paths in code.
fn paths(text: &str) -> Vec<String> {
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut out = Vec::new();
    // `use` items start a line (after any visibility).
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let line = line.trim_start();
        let Some(at) = line.find("use ").filter(|&at| line[..at].trim().is_empty() || line.starts_with("pub")) else {
            continue;
        };
        let mut item = line[at + 4..].to_string();
        while !item.contains(';') {
            let Some(more) = lines.next() else { break };
            item.push_str(more);
        }
        expand("", item.split(';').next().unwrap(), &mut out);
    }
    let in_path = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let mut rest = code.as_str();
    while let Some(at) = rest.find("::") {
        // The whole path around this `::`.
        let start = rest[..at].rfind(|c| !in_path(c)).map_or(0, |i| i + 1);
        let tail = &rest[start..];
        let len = tail.find(|c| !in_path(c)).unwrap_or(tail.len());
        out.push(tail[..len].trim_end_matches(':').to_string());
        rest = &rest[start + len..];
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let item = tree.split(" as ").next().unwrap().trim();
        if !item.is_empty() {
            out.push(if item == "self" {
                prefix.trim_end_matches("::").to_string()
            } else {
                format!("{prefix}{item}")
            });
        }
        return;
    };
    let head = format!("{prefix}{}", &tree[..open]);
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&head, &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    expand(&head, &inner[start..], out);
}

/// The file a path leads to: the longest module prefix that is a file.
fn resolve(from: &[String], path: &str, modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut parts = path.split("::").filter(|p| !p.is_empty());
    let first = parts.next()?;
    let child = |name: &str| {
        let mut child = from.to_vec();
        child.push(name.to_string());
        child
    };
    let mut at: Vec<String> = match first {
        "crate" => Vec::new(),
        "self" => from.to_vec(),
        "super" => {
            let mut here = from.to_vec();
            here.pop();
            here
        }
        // A path from a child module: `mod job;` then `job::Runner`.
        name if modules.contains(&child(name)) => child(name),
        _ => return None,
    };
    for part in parts {
        if part == "super" {
            at.pop();
            continue;
        }
        let mut next = at.clone();
        next.push(part.to_string());
        if !modules.contains(&next) {
            break;
        }
        at = next;
    }
    if at.is_empty() { Some(vec!["lib".into()]) } else { Some(at) }
}

fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = files();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let targets = edges.entry(file.module.clone()).or_default();
        for path in paths(&file.text) {
            // A module's own file may use what it contains: only uses
            // across the tree, or up it, make a loop.
            if let Some(to) = resolve(&file.module, &path, &modules) {
                if !to.starts_with(&file.module) {
                    targets.insert(to);
                }
            }
        }
    }
    edges
}

fn name(module: &[String]) -> String {
    module.join("::")
}

#[test]
fn each_top_level_module_uses_only_those_below_it() {
    let rank = |m: &[String]| {
        let top = m.first().map_or("lib", String::as_str);
        LAYERS.iter().position(|l| *l == top).unwrap_or_else(|| panic!("module `{top}` is not in LAYERS: add it"))
    };
    let mut upward = Vec::new();
    for (from, targets) in graph() {
        for to in targets {
            if rank(&to) > rank(&from) {
                upward.push(format!("{} uses {}", name(&from), name(&to)));
            }
        }
    }
    assert!(upward.is_empty(), "imports that run back up the layers:\n{}", upward.join("\n"));
}

#[test]
fn no_files_import_each_other_in_a_loop() {
    let edges = graph();
    // Depth-first search for a back edge; report each loop found.
    let mut state: BTreeMap<&Vec<String>, u8> = BTreeMap::new();
    let mut loops = Vec::new();
    fn visit<'a>(
        at: &'a Vec<String>,
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<&'a Vec<String>, u8>,
        stack: &mut Vec<&'a Vec<String>>,
        loops: &mut Vec<String>,
    ) {
        state.insert(at, 1);
        stack.push(at);
        for to in edges.get(at).into_iter().flatten() {
            match state.get(to) {
                Some(1) => {
                    let start = stack.iter().position(|m| *m == to).unwrap();
                    let cycle: Vec<String> = stack[start..].iter().map(|m| name(m)).chain([name(to)]).collect();
                    loops.push(cycle.join(" -> "));
                }
                Some(_) => {}
                None => visit(to, edges, state, stack, loops),
            }
        }
        stack.pop();
        state.insert(at, 2);
    }
    for module in edges.keys() {
        if !state.contains_key(module) {
            visit(module, &edges, &mut state, &mut Vec::new(), &mut loops);
        }
    }
    assert!(loops.is_empty(), "files that import each other in a loop:\n{}", loops.join("\n"));
}

#[test]
fn the_reader_sees_the_imports_it_should() {
    // The check above is only as good as its reading of the sources.
    let mut out = Vec::new();
    expand("", "super::{a::{self, B}, c as d, e::f}", &mut out);
    assert_eq!(out, ["super::a", "super::a::B", "super::c", "super::e::f"]);
    let modules: BTreeSet<Vec<String>> =
        [vec!["pipeline".to_string()], vec!["pipeline".into(), "job".into()]].into_iter().collect();
    let job = vec!["pipeline".to_string(), "job".to_string()];
    assert_eq!(resolve(&job, "super::Pipeline", &modules), Some(vec!["pipeline".to_string()]));
    assert_eq!(resolve(&[], "crate::pipeline::job::Runner", &modules), Some(job.clone()));
    assert!(graph().get(&job).is_some_and(|uses| uses.iter().any(|m| m.first().is_some_and(|t| t == "stage"))));
}
