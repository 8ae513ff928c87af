//! Host-side bindings for the `warden:plugin` world (see `wit/`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "warden:plugin/http.send": async | trappable,
        // An AWS secret may have to be fetched again.
        "warden:plugin/secrets.[method]secret.retrieve-value": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "warden:plugin/secrets.secret": crate::capabilities::secrets::SecretHandle,
    },
});

pub use self::warden::plugin::types;
pub use exports::warden::plugin::hooks::Event;
