//! Host-side bindings for the `warden:plugin` world (see `wit/`): the WIT's records, variants
//! and enums, and the `hooks` export. The imports' functions are linked by hand, one
//! [`crate::capabilities::Capability`] each, so the `Host` traits generated here are not
//! implemented.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: trappable },
    exports: { default: async },
    with: {
        "warden:plugin/secrets.secret": crate::capabilities::secrets::SecretHandle,
    },
});

pub use self::warden::plugin::types;
pub use exports::warden::plugin::hooks::Event;
