//! Logging into the host's log, tagged with the stage's name.
//!
//! ```no_run
//! sluice_sdk::info!("loaded {} rules", 3);
//! ```

pub use crate::bindings::sluice::pipeline::log::Level;

/// Writes one record to the host's log.
pub fn log(level: Level, message: &str) {
    crate::bindings::sluice::pipeline::log::log(level, message);
}

/// Logs a formatted message at `debug` level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Debug, &::std::format!($($arg)*)) };
}

/// Logs a formatted message at `info` level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Info, &::std::format!($($arg)*)) };
}

/// Logs a formatted message at `warn` level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Warn, &::std::format!($($arg)*)) };
}

/// Logs a formatted message at `error` level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Error, &::std::format!($($arg)*)) };
}
