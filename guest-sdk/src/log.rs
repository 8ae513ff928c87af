//! Log lines the host records with the event, at five levels.
//!
//! The macros ([`info!`](crate::info) and friends) take `format!` arguments:
//!
//! ```no_run
//! # let email = "a@b.c";
//! warden_sdk::info!("approving {email}");
//! warden_sdk::log::warn("the allowlist is empty");
//! ```

use crate::bindings::warden::plugin::log::{Level, write};

/// Log at `trace` level.
pub fn trace(message: &str) {
    write(Level::Trace, message)
}

/// Log at `debug` level.
pub fn debug(message: &str) {
    write(Level::Debug, message)
}

/// Log at `info` level.
pub fn info(message: &str) {
    write(Level::Info, message)
}

/// Log at `warn` level.
pub fn warn(message: &str) {
    write(Level::Warn, message)
}

/// Log at `error` level.
pub fn error(message: &str) {
    write(Level::Error, message)
}

/// Log at `trace` level, `format!`-style.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::trace(&::std::format!($($arg)+)) };
}

/// Log at `debug` level, `format!`-style.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::debug(&::std::format!($($arg)+)) };
}

/// Log at `info` level, `format!`-style.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::info(&::std::format!($($arg)+)) };
}

/// Log at `warn` level, `format!`-style.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::warn(&::std::format!($($arg)+)) };
}

/// Log at `error` level, `format!`-style.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::error(&::std::format!($($arg)+)) };
}
