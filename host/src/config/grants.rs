//! What a stage may reach beyond its messages.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Authority a stage gets beyond computing on its messages. By default,
/// none: start from [`Grants::default`] and fill in the fields you need.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Grants {
    /// Host directories the stage may read (never write), keyed by the
    /// absolute path the stage sees: `read_dirs = { "/lookup" = "data/lookup" }`.
    /// Host paths are relative to the pipeline file.
    #[serde(default)]
    pub read_dirs: BTreeMap<String, PathBuf>,
    /// Environment variables the stage sees, with their values. Nothing of the
    /// host's environment is passed on otherwise.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Authorities the stage may send HTTP requests to through `wasi:http`:
    /// `"host:port"`, or `"host"` for the scheme's default port.
    #[serde(default)]
    pub allow_http: Vec<String>,
}
