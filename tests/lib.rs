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

/// `text` (docs/benchmarks.md) with the block between `begin` and `end`
/// replaced by `block` (which holds both markers), or with it appended.
pub fn replace_block(text: &str, begin: &str, end: &str, block: &str) -> String {
    match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{block}{}", &text[..b], text[e + end.len()..].trim_start_matches('\n'))
        }
        _ if text.trim().is_empty() => block.to_string(),
        _ => format!("{}\n\n{block}", text.trim_end()),
    }
}

/// CPU seconds (user + system, all threads) process `pid` has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (in parentheses) may hold spaces: count from after it.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().map(|t| t.parse::<f64>().unwrap_or(0.0)).sum());
    // SAFETY: sysconf only reads a constant.
    #[allow(unsafe_code)]
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second
}
