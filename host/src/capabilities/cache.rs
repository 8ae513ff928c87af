//! `warden:plugin/cache`: a small key-value cache per flow, with TTLs.
//!
//! Entries outlive one event (that is the point: e.g. an on-call roster fetched once per
//! 30 s), never cross flows, and are bounded in count and bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{LinkerInstance, WasmList, WasmStr};

use super::{AppState, Capability, Outcome};
use crate::Unpoisoned;
use crate::config::Flow;
use crate::runtime::budget::EventBudget;
use crate::runtime::instance::InstanceState;
use crate::runtime::lift::Passed;

pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 256 << 10;
pub const MAX_FLOW_BYTES: usize = 4 << 20;
pub const MAX_ENTRIES: usize = 1024;
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Default)]
pub struct FlowCache {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

impl FlowCache {
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Vec<u8>> {
        match self.entries.get(key) {
            Some(e) if e.expires > now => Some(e.value.clone()),
            Some(_) => {
                self.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!("cache key is over {MAX_KEY_BYTES} bytes"));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("cache value is over {MAX_VALUE_BYTES} bytes"));
        }
        self.remove(&key);
        if ttl.is_zero() {
            return Ok(());
        }
        self.make_room(key.len() + value.len(), now);
        self.bytes += key.len() + value.len();
        self.entries.insert(
            key,
            Entry {
                value,
                expires: now + ttl.min(MAX_TTL),
            },
        );
        Ok(())
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= key.len() + e.value.len();
        }
    }

    /// Drops expired entries, then those expiring soonest, until `needed` more bytes and one
    /// more entry fit.
    fn make_room(&mut self, needed: usize, now: Instant) {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.remove(&k);
        }
        if self.entries.len() < MAX_ENTRIES && self.bytes + needed <= MAX_FLOW_BYTES {
            return;
        }
        let by_expiry: BTreeMap<(Instant, String), ()> = self
            .entries
            .iter()
            .map(|(k, e)| ((e.expires, k.clone()), ()))
            .collect();
        for (_, key) in by_expiry.into_keys() {
            if self.entries.len() < MAX_ENTRIES && self.bytes + needed <= MAX_FLOW_BYTES {
                break;
            }
            self.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// App-wide state: one cache per flow name.
#[derive(Debug, Default)]
pub struct CacheState {
    flows: Mutex<HashMap<String, Arc<Mutex<FlowCache>>>>,
}

impl CacheState {
    pub fn instance(&self, flow: &str) -> CacheInstance {
        let mut flows = self.flows.lock().unpoisoned();
        CacheInstance {
            cache: flows.entry(flow.to_string()).or_default().clone(),
        }
    }
}

/// Per-instance state: the flow's own cache and nothing else.
pub struct CacheInstance {
    cache: Arc<Mutex<FlowCache>>,
}

impl CacheInstance {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlowCache> {
        self.cache.lock().unpoisoned()
    }
}

impl CacheInstance {
    /// The value under `key`, if it has not expired. A key over [`MAX_KEY_BYTES`] is never
    /// stored, so it is not looked for.
    pub fn get(&self, key: &Passed) -> Option<Vec<u8>> {
        let key = key.whole().filter(|k| k.len() <= MAX_KEY_BYTES)?;
        self.lock().get(key, Instant::now())
    }

    /// Keeps `value` under `key` for `ttl_seconds`; the key and the value are copied only
    /// once they are known to fit.
    pub fn set(&self, key: &Passed, value: &[u8], ttl_seconds: u32) -> Result<(), String> {
        let key = match key.whole() {
            Some(key) if key.len() <= MAX_KEY_BYTES => key,
            _ => return Err(format!("cache key is over {MAX_KEY_BYTES} bytes")),
        };
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("cache value is over {MAX_VALUE_BYTES} bytes"));
        }
        self.lock().set(
            key.to_string(),
            value.to_vec(),
            Duration::from_secs(ttl_seconds.into()),
            Instant::now(),
        )
    }

    pub fn delete(&self, key: &Passed) {
        if let Some(key) = key.whole() {
            self.lock().remove(key);
        }
    }
}

/// A key the plugin passes is copied up to one byte over the longest kept: a longer one is
/// refused by its length.
const KEY_COPY: usize = MAX_KEY_BYTES + 1;

impl Capability for CacheInstance {
    const INTERFACE: &'static str = "cache";

    fn instance(flow: &Arc<Flow>, app: &AppState, _: &EventBudget) -> Self {
        app.cache.instance(&flow.name)
    }

    fn link(functions: &mut LinkerInstance<'_, InstanceState>) -> wasmtime::Result<()> {
        functions.func_wrap(
            "get",
            |store: StoreContextMut<'_, InstanceState>, (key,): (WasmStr,)| {
                let key = Passed::read(&store, &key, KEY_COPY)?;
                Ok((store.data().cache.get(&key),))
            },
        )?;
        functions.func_wrap(
            "set",
            |store: StoreContextMut<'_, InstanceState>,
             (key, value, ttl): (WasmStr, WasmList<u8>, u32)| {
                let key = Passed::read(&store, &key, KEY_COPY)?;
                // Read in place: a value over the cap is refused without a copy.
                let value = value.as_le_slice(&store);
                Ok((store.data().cache.set(&key, value, ttl),))
            },
        )?;
        functions.func_wrap(
            "delete",
            |store: StoreContextMut<'_, InstanceState>, (key,): (WasmStr,)| {
                let key = Passed::read(&store, &key, KEY_COPY)?;
                store.data().cache.delete(&key);
                Ok(())
            },
        )
    }

    /// The cache outlives the event: it leaves nothing to report.
    fn finish(&mut self) -> Outcome {
        Outcome::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_their_ttl() {
        let mut cache = FlowCache::default();
        let t0 = Instant::now();
        cache
            .set("k".into(), b"v".to_vec(), Duration::from_secs(30), t0)
            .unwrap();
        assert_eq!(
            cache.get("k", t0 + Duration::from_secs(29)),
            Some(b"v".to_vec())
        );
        assert_eq!(cache.get("k", t0 + Duration::from_secs(30)), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let mut cache = FlowCache::default();
        let now = Instant::now();
        assert!(
            cache
                .set(
                    "k".repeat(MAX_KEY_BYTES + 1),
                    vec![],
                    Duration::from_secs(1),
                    now
                )
                .is_err()
        );
        assert!(
            cache
                .set(
                    "k".into(),
                    vec![0; MAX_VALUE_BYTES + 1],
                    Duration::from_secs(1),
                    now
                )
                .is_err()
        );
    }

    #[test]
    fn a_full_cache_evicts_what_expires_soonest() {
        let mut cache = FlowCache::default();
        let now = Instant::now();
        for i in 0..MAX_ENTRIES {
            cache
                .set(
                    format!("k{i}"),
                    vec![1],
                    Duration::from_secs(100 + i as u64),
                    now,
                )
                .unwrap();
        }
        cache
            .set("new".into(), vec![1], Duration::from_secs(1000), now)
            .unwrap();
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert_eq!(cache.get("k0", now), None);
        assert!(cache.get("k1", now).is_some());
        assert!(cache.get("new", now).is_some());
    }

    #[test]
    fn flows_do_not_share_entries() {
        let state = CacheState::default();
        let a = state.instance("a");
        let b = state.instance("b");
        a.set(&"k".into(), b"a", 60).unwrap();
        assert_eq!(b.get(&"k".into()), None);
        assert_eq!(state.instance("a").get(&"k".into()), Some(b"a".to_vec()));
    }
}
