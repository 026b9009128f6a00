//! Integration tests live in `all/`, benchmarks in `benches/`. This library
//! holds what they share: where the guests `build.rs` built from source are.

/// Paths of the guests `build.rs` built (the example plugins and the
/// test-only stages under `guests/`).
#[allow(missing_docs)]
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}
