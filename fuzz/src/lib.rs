//! What the fuzz targets share: a config with one flow that declares no fields and one that
//! declares a field of every type, as `warden serve` and `warden hook` would load it.

use std::path::Path;
use std::sync::LazyLock;

use warden::Config;
use warden::secrets::AwsSecret;

pub struct Fixture {
    /// Holds the placeholder plugin file the config names.
    _dir: tempfile::TempDir,
    pub config: Config,
}

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary folder");
    // Config validation only checks that the plugin file exists; nothing is compiled here.
    std::fs::write(dir.path().join("plugin.wasm"), b"").unwrap();
    let text = r#"
[environments.main]

[flows.open]
environment = "main"
plugin = "plugin.wasm"
vars = { action = "continue" }

[flows.strict]
environment = "main"
plugin = "plugin.wasm"
fields.reason = { type = "string", required = true }
fields.tickets = { type = "list" }
fields.count = { type = "int" }
fields.urgent = { type = "bool" }
fields.duration = { type = "duration" }
"#;
    let config = parse(text, &dir.path().join("warden.toml"))
        .unwrap_or_else(|e| panic!("the fuzz fixture's config is invalid: {e}"));
    Fixture { _dir: dir, config }
});

/// `Config::parse` with no environment variables but `FUZZ_SET`, and no AWS: a fuzzer must
/// not reach the network.
pub fn parse(text: &str, path: &Path) -> Result<Config, warden::config::ConfigErrors> {
    let env = |name: &str| (name == "FUZZ_SET").then(|| "fuzz-value".to_string());
    let aws = |_: &AwsSecret| Err("AWS is out of reach while fuzzing".to_string());
    Config::parse_with(text, path, &env, &aws)
}
