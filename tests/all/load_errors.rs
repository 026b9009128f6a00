//! Bad component files: each refused at build time with a message naming the
//! file and what is wrong, before any input is read.

use crate::support::{Scratch, guests, stage};

async fn load_error(scratch: &Scratch, plugin: &std::path::Path) -> String {
    let pipeline = format!("version = 1\n{}", stage("s", &plugin.display().to_string(), ""));
    scratch.build(&pipeline).await.err().expect("the build should fail")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_wasm() {
    let scratch = Scratch::new();
    let err = load_error(&scratch, &scratch.write("notes.wasm", "hello world, not wasm")).await;
    assert_eq!(
        err,
        "<dir>/pipeline.toml:4:10: stage `s`: <dir>/notes.wasm is not a WebAssembly component: it does not \
         start with the wasm magic bytes `\\0asm` (it starts with \"hello wo\")"
    );
    let err = load_error(&scratch, &scratch.write("empty.wasm", "")).await;
    assert!(err.ends_with("<dir>/empty.wasm is not a WebAssembly component: the file is empty"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_core_module_instead_of_a_component() {
    let scratch = Scratch::new();
    let err = load_error(&scratch, &scratch.write("core.wasm", b"\0asm\x01\0\0\0")).await;
    assert_eq!(
        err,
        "<dir>/pipeline.toml:4:10: stage `s`: <dir>/core.wasm is a core WebAssembly module, not a component: \
         build the stage for the wasm32-wasip2 target, or wrap the module with `wasm-tools component new`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_component() {
    let scratch = Scratch::new();
    let whole = std::fs::read(guests::JSON_FILTER).unwrap();
    let err = load_error(&scratch, &scratch.write("cut.wasm", &whole[..whole.len() / 2])).await;
    assert!(err.starts_with("<dir>/pipeline.toml:4:10: stage `s`: <dir>/cut.wasm is not a valid component: "), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_of_the_wrong_world() {
    let scratch = Scratch::new();
    let err = load_error(&scratch, guests::WRONG_WORLD.as_ref()).await;
    assert_eq!(
        scratch.anonymise(&err).replace(guests::WRONG_WORLD, "wrong_world.wasm"),
        "<dir>/pipeline.toml:4:10: stage `s`: wrong_world.wasm is a component, but not a sluice stage: it does not \
         export `sluice:pipeline/stage@0.1.0` (it exports `add`). Build it against the `plugin` world in sluice's \
         wit/ directory"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_with_an_import_sluice_does_not_provide() {
    let scratch = Scratch::new();
    let err = load_error(&scratch, guests::UNKNOWN_IMPORT.as_ref()).await;
    // The list is what the linker holds; sockets are linked but every call fails (docs/security.md).
    let said = err.split_once("unknown_import.wasm ").map(|(_, said)| said);
    assert_eq!(
        said,
        Some(
            "imports `test:unknown/teleport@0.1.0`, which sluice does not provide. Stages may import \
             `sluice:pipeline/*` and WASI 0.2: `wasi:cli`, `wasi:io`, `wasi:clocks`, `wasi:random`, `wasi:filesystem` \
             (only `grants.read_dirs`), `wasi:http` (only `grants.allow_http`) and `wasi:sockets` (so that \
             components from standard toolchains load; every socket call fails)"
        ),
        "{err}"
    );
}
