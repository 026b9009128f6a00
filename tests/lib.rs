//! Integration tests live in `all/`, benchmarks in `benches/`. This library
//! holds what they share: where the guests `build.rs` built from source are,
//! the brokers the connector tests start, and how the benchmarks write numbers.

/// Paths of the guests `build.rs` built (the example plugins and the
/// test-only stages under `guests/`).
#[allow(missing_docs)]
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

pub mod brokers;

/// `n` with thousands separators: 1,000,000.
pub fn thousands(n: impl std::fmt::Display) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
