//! A small key-value cache per flow: values outlive one event, never cross flows, and
//! may be evicted at any time.
//!
//! ```no_run
//! use std::time::Duration;
//! use warden_sdk::{cache, Result};
//!
//! fn on_call_users() -> Result<Vec<String>> {
//!     if let Some(users) = cache::get_json("on-call")? {
//!         return Ok(users);
//!     }
//!     let users = vec!["jdoe".to_string()]; // ... ask the API
//!     cache::set_json("on-call", &users, Duration::from_secs(60))?;
//!     Ok(users)
//! }
//! ```

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::warden::plugin::cache as wit;
use crate::{Error, Result};

/// The value under `key`, if it is cached.
pub fn get(key: &str) -> Option<Vec<u8>> {
    wit::get(key)
}

/// Keep `value` under `key` for `ttl` (whole seconds, rounded up). Fails when the key
/// or value is over the host's size caps.
pub fn set(key: &str, value: &[u8], ttl: Duration) -> Result<()> {
    wit::set(key, value, ttl_seconds(ttl)).map_err(Error::msg)
}

/// Forget `key`.
pub fn delete(key: &str) {
    wit::delete(key)
}

/// The JSON value under `key`, if it is cached.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
    match get(key) {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        None => Ok(None),
    }
}

/// Keep `value` as JSON under `key` for `ttl`.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T, ttl: Duration) -> Result<()> {
    set(key, &serde_json::to_vec(value)?, ttl)
}

fn ttl_seconds(ttl: Duration) -> u32 {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_and_saturates() {
        assert_eq!(ttl_seconds(Duration::ZERO), 0);
        assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(60)), 60);
        assert_eq!(ttl_seconds(Duration::from_millis(60_001)), 61);
        assert_eq!(ttl_seconds(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
