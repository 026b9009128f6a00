//! Helpers: write a pipeline into a temporary directory, build it, run it.

use sluice::{Pipeline, PipelineConfig, RunReport};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// Paths of the guests `build.rs` built.
pub(crate) use sluice_tests::guests;

/// The repository root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A temporary directory holding `pipeline.toml` (and whatever else a test puts there).
pub(crate) struct Scratch {
    pub(crate) dir: TempDir,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Replaces the scratch directory's path in `text` with `<dir>`, so error
    /// messages can be pinned exactly.
    pub(crate) fn anonymise(&self, text: &str) -> String {
        text.replace(&self.dir.path().display().to_string(), "<dir>")
    }

    /// Builds `pipeline` (TOML), written as `<dir>/pipeline.toml`; the error as
    /// text with the directory anonymised.
    pub(crate) async fn build(&self, pipeline: &str) -> Result<Pipeline, String> {
        let file = self.write("pipeline.toml", pipeline);
        let config = PipelineConfig::from_file(&file).map_err(|e| self.anonymise(&e.to_string()))?;
        Pipeline::build(config).await.map_err(|e| self.anonymise(&e.to_string()))
    }

    /// Runs `pipeline` over `input` (written as `<dir>/input`), with output to
    /// `<dir>/out` and dead letters to `<dir>/dead.jsonl`.
    pub(crate) async fn run(&self, pipeline: &str, input: &str) -> Outcome {
        self.write("input", input);
        let pipeline = self.build(pipeline).await.unwrap_or_else(|e| panic!("build failed:\n{e}"));
        let report = pipeline.run().await.map_err(|e| self.anonymise(&e.to_string()));
        Outcome { report, output: read_lines(&self.path("out")), dead: read_json_lines(&self.path("dead.jsonl")) }
    }
}

/// What a run produced.
pub(crate) struct Outcome {
    pub(crate) report: Result<RunReport, String>,
    /// Lines of the output file (empty if it was not written).
    pub(crate) output: Vec<String>,
    /// Records of the dead-letter file.
    pub(crate) dead: Vec<serde_json::Value>,
}

pub(crate) fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default()
}

pub(crate) fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    read_lines(path).iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A pipeline header reading `<dir>/input` and writing `<dir>/out`.
pub(crate) fn header(format: &str) -> String {
    format!(
        "version = 1\n\
         [source]\npath = \"input\"\nformat = \"{format}\"\n\
         [sink]\npath = \"out\"\nformat = \"{format}\"\n\
         [dead_letter]\npath = \"dead.jsonl\"\n"
    )
}

/// A `[[stages]]` table for `plugin` (a path) with inline `config`.
pub(crate) fn stage(name: &str, plugin: &str, config: &str) -> String {
    format!("[[stages]]\nname = \"{name}\"\nplugin = {plugin:?}\nconfig = {{ {config} }}\n")
}

/// A `[[stages]]` table with more keys (`limits = ...`, `grants = ...`), one per line.
pub(crate) fn stage_with(name: &str, plugin: &str, config: &str, extra: &str) -> String {
    stage(name, plugin, config) + extra + "\n"
}

/// What `sluice run FILE` (in `dir`) prints on stdout within `wait`, then
/// SIGINT: a reader of a source that never ends (a broker stream).
pub(crate) fn read_for(dir: &Path, file: &str, wait: std::time::Duration) -> String {
    let child = std::process::Command::new(crate::resume::sluice_binary())
        .args(["run", file])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(wait);
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

/// The quickstart's outputs, sorted, from its own file pipeline (dead
/// letters to `dead`).
pub(crate) fn quickstart_outputs(dead: &Path) -> Vec<String> {
    let run = std::process::Command::new(crate::resume::sluice_binary())
        .args(["run", "pipeline.toml", "-o", "-", "--dead-letter"])
        .arg(dead)
        .current_dir(root().join("examples/quickstart"))
        .output()
        .unwrap();
    let mut outputs: Vec<String> = String::from_utf8(run.stdout).unwrap().lines().map(str::to_owned).collect();
    outputs.sort();
    outputs
}

/// A network between a worker and the server that the test can cut: once
/// cut, what the worker sends is lost (the server's replies still come).
pub(crate) struct Cuttable {
    pub(crate) port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Cuttable {
    /// Listens on a free port of 127.0.0.1, forwarding to `server_port`.
    pub(crate) async fn to(server_port: u16) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cutting = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", server_port)).await else { continue };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let cut = cutting.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                        if !cut.load(std::sync::atomic::Ordering::SeqCst)
                            && server_write.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
            }
        });
        Cuttable { port, cut }
    }

    /// Cuts the network (what workers send is lost from now on), or mends it.
    pub(crate) fn cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A pipeline that counts its `incr:k<n>` inputs in durable state, from the
/// broker `source` table to `out.txt`, checkpointing only by time (every
/// 5 s): the worker the crash tests kill between a checkpoint and the
/// broker hearing of it.
pub(crate) fn counting_pipeline(source: &str) -> String {
    format!(
        "version = 1\n[source]\nformat = \"lines\"\n{source}\
         [state]\npath = \"state.redb\"\ncheckpoint_every = 1000000\ncheckpoint_interval = \"5s\"\n\
         [sink]\npath = \"out.txt\"\nformat = \"lines\"\n[dead_letter]\npath = \"dead.jsonl\"\n\
         [[stages]]\nname = \"count\"\nplugin = \"{}\"\n",
        guests::TEST_STAGE
    )
}

/// The lines in `out.txt`.
pub(crate) fn lines_out(scratch: &Scratch) -> usize {
    std::fs::read_to_string(scratch.path("out.txt")).unwrap_or_default().lines().count()
}

/// Runs `pipeline.toml` (a [`counting_pipeline`] reading through `network`)
/// until its `n` inputs are out, their acknowledgements held for the
/// checkpoint; then cuts the network, waits for the checkpoint to commit,
/// kills the worker and mends the network: a worker dead after its
/// checkpoint and before the broker heard.
pub(crate) async fn die_after_an_unheard_checkpoint(scratch: &Scratch, network: &Cuttable, n: usize) {
    use std::time::{Duration, Instant};
    let log = || std::fs::read_to_string(scratch.path("first.log")).unwrap();
    let mut first = std::process::Command::new(crate::resume::sluice_binary())
        .args(["run", "pipeline.toml", "--log", "info,sluice::pipeline::checkpoint=debug"])
        .current_dir(scratch.dir.path())
        .stderr(std::fs::File::create(scratch.path("first.log")).unwrap())
        .spawn()
        .unwrap();
    let give_up = Instant::now() + Duration::from_secs(60);
    while lines_out(scratch) < n {
        assert!(first.try_wait().unwrap().is_none(), "{}", log());
        assert!(Instant::now() < give_up, "{} of {n} out", lines_out(scratch));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!log().contains("checkpoint"), "the checkpoint came before the cut: {}", log());
    network.cut(true);
    while !log().contains("checkpoint") {
        assert!(Instant::now() < give_up, "no checkpoint: {}", log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    network.cut(false);
}

/// Asserts that the state (`sluice state pipeline.toml`) counts `each` for
/// every key `k0` to `k4`.
pub(crate) fn assert_counts(scratch: &Scratch, each: usize) {
    let state = std::process::Command::new(crate::resume::sluice_binary())
        .args(["state", "pipeline.toml"])
        .current_dir(scratch.dir.path())
        .output();
    let state = String::from_utf8(state.unwrap().stdout).unwrap();
    for k in 0..5 {
        let entry = format!(r#"{{"key":"k{k}","stage":"count","value":"{each}"}}"#);
        assert!(state.contains(&entry), "{entry} in {state}");
    }
}
