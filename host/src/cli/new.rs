//! `sluice new --lang L NAME`: a stage project in a directory of its own, with
//! everything it needs to build, test and run, and nothing from this
//! repository: the templates (`host/templates/`) and the WIT contract are
//! built into the binary.

use super::outcome::BadArgument;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The contract every stage is built against, as this binary knows it.
pub(crate) const PIPELINE_WIT: &str = include_str!("../../../wit/pipeline.wit");

/// The languages a stage can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    Rust,
    Python,
    Js,
    C,
    Zig,
}

impl Lang {
    pub(crate) const ALL: [Lang; 5] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C, Lang::Zig];

    /// Its name for people.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
            Lang::C => "C",
            Lang::Zig => "Zig",
        }
    }

    /// The source file a project of this language has, which is how
    /// `sluice build` tells the language.
    pub(crate) fn marker(self) -> &'static str {
        match self {
            Lang::Rust => "Cargo.toml",
            Lang::Python => "app.py",
            Lang::Js => "app.js",
            Lang::C => "stage.c",
            Lang::Zig => "stage.zig",
        }
    }

    /// The language-specific files: path in the project, template text.
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => &[
                ("Cargo.toml", include_str!("../../templates/rust/Cargo.toml")),
                (".cargo/config.toml", include_str!("../../templates/rust/.cargo/config.toml")),
                ("src/lib.rs", include_str!("../../templates/rust/src/lib.rs")),
            ],
            Lang::Python => &[("app.py", include_str!("../../templates/python/app.py"))],
            Lang::Js => &[("app.js", include_str!("../../templates/js/app.js"))],
            Lang::C => &[("stage.c", include_str!("../../templates/c/stage.c"))],
            Lang::Zig => &[("stage.zig", include_str!("../../templates/zig/stage.zig"))],
        }
    }

    /// README: the rows of the files table, how it builds, what to edit.
    fn readme(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Lang::Rust => (
                "| `src/lib.rs`, `Cargo.toml` | the stage; it depends on `wit-bindgen` from crates.io |\n\
                 | `.cargo/config.toml` | builds with WebAssembly SIMD (`+simd128`) |\n",
                "runs cargo for `wasm32-wasip2` (with rustup's target if it is installed, else with \
                 Debian's Rust toolchain and `-Zbuild-std`).",
                "`src/lib.rs`",
            ),
            Lang::Python => (
                "| `app.py` | the stage |\n",
                "runs componentize-py, which it installs the first time in a venv in sluice's cache \
                 (`~/.cache/sluice/toolchains`).",
                "`app.py`",
            ),
            Lang::Js => (
                "| `app.js` | the stage |\n",
                "runs componentize-js, which it installs the first time from npm in sluice's cache \
                 (`~/.cache/sluice/toolchains`).",
                "`app.js`",
            ),
            Lang::C => (
                "| `stage.c` | the stage |\n",
                "generates the C bindings of `wit/` into `target/gen/` (`plugin.h`), compiles with \
                 clang-16 against wasi-libc and wraps the module into a component.",
                "`stage.c`",
            ),
            Lang::Zig => (
                "| `stage.zig` | the stage |\n",
                "installs Zig the first time (the `ziglang` wheel from PyPI, in a venv in sluice's \
                 cache, `~/.cache/sluice/toolchains`), generates the C bindings of `wit/` and translates \
                 them into `target/gen/plugin.zig` (the module `plugin`), compiles with `zig build-exe` \
                 and wraps the module into a component.",
                "`stage.zig`",
            ),
        }
    }
}

/// Create a stage project: source, test cases, a pipeline that runs it, a README.
#[derive(clap::Args)]
pub(crate) struct NewCommand {
    /// The language of the stage.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The stage's name: lowercase letters, digits and `-`, starting with a
    /// letter. The project is created in a directory of that name.
    name: String,
    /// Where to create it (default: the current directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl NewCommand {
    pub(crate) async fn execute(self) -> Result<()> {
        check_name(&self.name)?;
        let root = self.dir.unwrap_or_else(|| PathBuf::from(".")).join(&self.name);
        let files = project_files(self.lang, &self.name);
        write_project(&root, &files)?;
        let shown = root.display();
        println!("created a {} stage in {shown}", self.lang.title());
        println!("next: cd {shown} && sluice build && sluice test && sluice run pipeline.toml");
        Ok(())
    }
}

/// A name that is at once a valid file name, crate name and stage name.
fn check_name(name: &str) -> Result<(), BadArgument> {
    let mut chars = name.chars();
    let starts = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if starts && rest && !name.ends_with('-') && name.len() <= 64 {
        return Ok(());
    }
    Err(BadArgument(format!(
        "`{name}` cannot name a stage: use lowercase letters, digits and `-`, starting with a letter \
         (e.g. `my-stage`)"
    )))
}

/// Every file of a new project: path in it, contents.
fn project_files(lang: Lang, name: &str) -> Vec<(String, String)> {
    let fill = |text: &str| text.replace("{{name}}", name);
    let (rows, toolchain, edit) = lang.readme();
    let readme = fill(include_str!("../../templates/common/README.md"))
        .replace("{{lang}}", lang.title())
        .replace("{{files}}", rows)
        .replace("{{toolchain}}", toolchain)
        .replace("{{edit}}", edit);
    let mut files: Vec<(String, String)> = lang.files().iter().map(|(p, t)| (p.to_string(), fill(t))).collect();
    files.extend([
        ("README.md".to_string(), readme),
        ("wit/pipeline.wit".to_string(), PIPELINE_WIT.to_string()),
        ("sluice-test.toml".to_string(), fill(include_str!("../../templates/common/sluice-test.toml"))),
        ("pipeline.toml".to_string(), fill(include_str!("../../templates/common/pipeline.toml"))),
        ("input.txt".to_string(), include_str!("../../templates/common/input.txt").to_string()),
        (".gitignore".to_string(), include_str!("../../templates/common/gitignore").to_string()),
    ]);
    files
}

/// Writes `files` under `root`, which must not exist or be empty: a
/// project is never written over someone's files.
fn write_project(root: &Path, files: &[(String, String)]) -> Result<()> {
    if let Ok(mut entries) = std::fs::read_dir(root) {
        if entries.next().is_some() {
            return Err(BadArgument(format!(
                "{} already exists and is not empty: choose another name or --dir",
                root.display()
            ))
            .into());
        }
    } else if root.exists() {
        return Err(BadArgument(format!("{} exists and is not a directory", root.display())).into());
    }
    for (path, text) in files {
        let path = root.join(path);
        let parent = path.parent().expect("a project file is in the project");
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_suit_a_file_a_crate_and_a_stage() {
        for ok in ["x", "my-stage", "upper2"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "My", "2x", "a_b", "a/b", "../x", "x-", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        for lang in Lang::ALL {
            for (path, text) in project_files(lang, "shout") {
                assert!(!text.contains("{{"), "{lang:?} {path} keeps a placeholder");
            }
        }
    }

    #[test]
    fn an_existing_non_empty_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "mine").unwrap();
        let err = write_project(dir.path(), &project_files(Lang::C, "x")).unwrap_err();
        assert!(err.to_string().contains("already exists and is not empty"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing written");
    }
}
