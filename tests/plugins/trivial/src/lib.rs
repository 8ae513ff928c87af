//! The smallest plugin: `on_request` takes the default path. Benchmarks measure warden's own
//! cost with it.

use warden_sdk::prelude::*;

struct Trivial;

#[warden_sdk::plugin]
impl Plugin for Trivial {
    fn on_request(_event: &Event) -> Result<Decision> {
        Ok(Decision::Continue)
    }
}
