//! Finding test files and the plugins they test, and turning each `[[case]]` into a
//! [`Case`] ready to run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use url::Url;

use super::mock::{BodyMatch, HeaderMatch, Mock, MockError, MockResponse};
use super::spec::{
    CaseSpec, ExpectSpec, FileSpec, FlowSpec, HeaderSpec, IdentitySpec, IntegrationSpec, LogSpec,
    MockSpec, ResponseSpec,
};
use crate::capabilities::log::LogLevel;
use crate::cli::escape::escape_control;
use crate::config::{origin, read_bounded_text};
use crate::runtime::event::EventInput;
use crate::runtime::hooks::HookName;

/// One case, resolved: its plugin found, its mocks' bodies read, its patterns compiled.
#[derive(Debug, Clone)]
pub struct Case {
    pub file: PathBuf,
    pub name: String,
    pub plugin: PathBuf,
    pub hook: HookName,
    pub flow: FlowSpec,
    pub secrets: BTreeMap<String, String>,
    pub integrations: BTreeMap<String, IntegrationSpec>,
    pub identities: Vec<IdentitySpec>,
    pub mocks: Vec<Mock>,
    pub event: EventInput,
    pub expect: Expect,
}

#[derive(Debug, Clone)]
pub struct Expect {
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub reason_matches: Option<Regex>,
    pub failure: Option<String>,
    pub identities: Option<Vec<IdentitySpec>>,
    pub logs: Vec<LogExpect>,
    pub http_calls: Option<Vec<String>>,
    pub refusals: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LogExpect {
    pub level: Option<LogLevel>,
    pub contains: Option<String>,
    pub matches: Option<Regex>,
}

impl LogExpect {
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(level) = self.level {
            parts.push(format!("level {}", level_name(level)));
        }
        // The test file's text, escaped: it cannot draw lines of the report.
        if let Some(text) = &self.contains {
            parts.push(format!("containing `{}`", escape_control(text)));
        }
        if let Some(re) = &self.matches {
            parts.push(format!("matching /{}/", escape_control(re.as_str())));
        }
        parts.join(", ")
    }
}

pub fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// A test file that could not be used; its cases do not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct LoadError {
    pub file: PathBuf,
    pub message: String,
}

/// The test files under `paths`: a file is taken as it is; a plugin's folder (a crate with
/// `Cargo.toml`, or a Python plugin with `plugin.py`) gives its `tests/*.toml`; any other
/// folder gives the `*.toml` directly in it, and is searched for plugins' folders.
pub fn find_test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
        } else if path.is_dir() {
            if !is_plugin_dir(path) {
                toml_files_in(path, &mut files);
            }
            collect(path, &mut files);
        } else {
            return Err(LoadError {
                file: path.clone(),
                message: "no such file or folder".into(),
            });
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn toml_files_in(dir: &Path, files: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            // A crate's manifest (`tests/` may be a crate of its own) is no test file.
            let manifest = entry.file_name() == "Cargo.toml";
            if path.is_file() && path.extension().is_some_and(|e| e == "toml") && !manifest {
                files.push(path);
            }
        }
    }
}

fn is_plugin_dir(dir: &Path) -> bool {
    dir.join("Cargo.toml").is_file() || dir.join(crate::cli::build::PYTHON_ENTRY).is_file()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    if is_plugin_dir(dir) {
        toml_files_in(&dir.join("tests"), files);
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let skipped = ["target", "node_modules", "__pycache__"];
        // Folders only, not links to them: a link to `.` or a parent would be searched
        // forever.
        let is_folder = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if is_folder && !name.starts_with('.') && !skipped.contains(&name.as_ref()) {
            collect(&entry.path(), files);
        }
    }
}

/// The component of the plugin whose folder holds `test_file` (the nearest folder above it
/// that is a plugin's): where `warden build` puts a Python plugin's, or where
/// `cargo build --release --target wasm32-wasip2` puts a crate's.
pub fn default_plugin(test_file: &Path) -> Result<PathBuf, String> {
    let absolute = absolute(test_file);
    if let Some(dir) = absolute.ancestors().skip(1).find(|dir| is_plugin_dir(dir))
        && dir.join(crate::cli::build::PYTHON_ENTRY).is_file()
    {
        let wasm = dir.join(crate::cli::build::PYTHON_OUTPUT);
        return if wasm.is_file() {
            Ok(wasm)
        } else {
            Err(format!(
                "plugin not built: {} does not exist; run `warden build {}`",
                wasm.display(),
                dir.display()
            ))
        };
    }
    let crate_dir = absolute
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("Cargo.toml").is_file())
        .ok_or_else(|| {
            "no `plugin` is set and no plugin's folder (with Cargo.toml or plugin.py) is above the test file; set `plugin = \"path/to/plugin.wasm\"`".to_string()
        })?;
    let manifest_path = crate_dir.join("Cargo.toml");
    let manifest: toml::Table = read_bounded_text(&manifest_path, MAX_MANIFEST_BYTES)
        .map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))?
        .parse()
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let lib = lib_name(&manifest).ok_or_else(|| {
        format!(
            "{} has no [package] name or [lib] name",
            manifest_path.display()
        )
    })?;
    let target = target_dir(crate_dir);
    let wasm = target
        .join("wasm32-wasip2/release")
        .join(format!("{lib}.wasm"));
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(format!(
            "plugin not built: {} does not exist; run `cargo build --release --target wasm32-wasip2` in {}",
            wasm.display(),
            crate_dir.display()
        ))
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn lib_name(manifest: &toml::Table) -> Option<String> {
    let lib = manifest
        .get("lib")
        .and_then(|l| l.get("name"))
        .and_then(|n| n.as_str());
    let package = manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str());
    lib.or(package).map(|n| n.replace('-', "_"))
}

/// Where cargo builds the crate, as cargo finds it: `CARGO_TARGET_DIR`, else
/// `CARGO_BUILD_TARGET_DIR`, else `build.target-dir` of the nearest `.cargo/config.toml` (or
/// `.cargo/config`) at or above the crate (relative to the folder holding `.cargo`), else
/// `target/` beside the workspace's root manifest (the nearest manifest at or above the crate
/// with a `[workspace]` table), else the crate's. Looked for anywhere else, a stale build
/// left in `target/` would be the one tested.
fn target_dir(crate_dir: &Path) -> PathBuf {
    target_dir_with(crate_dir, &|name| std::env::var_os(name))
}

fn target_dir_with(crate_dir: &Path, env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    for name in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"] {
        if let Some(dir) = env(name).filter(|d| !d.is_empty()) {
            return absolute(Path::new(&dir));
        }
    }
    for dir in crate_dir.ancestors() {
        for config in [".cargo/config.toml", ".cargo/config"] {
            let set = read_bounded_text(&dir.join(config), MAX_MANIFEST_BYTES)
                .ok()
                .and_then(|text| text.parse::<toml::Table>().ok())
                .and_then(|c| {
                    c.get("build")?
                        .get("target-dir")?
                        .as_str()
                        .map(PathBuf::from)
                });
            if let Some(set) = set {
                return absolute(&dir.join(set));
            }
        }
    }
    let root = crate_dir
        .ancestors()
        .find(|dir| {
            read_bounded_text(&dir.join("Cargo.toml"), MAX_MANIFEST_BYTES)
                .ok()
                .and_then(|text| text.parse::<toml::Table>().ok())
                .is_some_and(|m| m.contains_key("workspace"))
        })
        .unwrap_or(crate_dir);
    root.join("target")
}

/// Reads one test file into its cases. `plugin` overrides every plugin the file would use.
pub fn load_file(file: &Path, plugin: Option<&Path>) -> Result<Vec<Case>, LoadError> {
    let fail = |message: String| LoadError {
        file: file.to_path_buf(),
        message,
    };
    let text = read_bounded_text(file, MAX_TEST_FILE_BYTES)
        .map_err(|e| fail(format!("cannot read the file: {e}")))?;
    let spec: FileSpec = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    if spec.case.is_empty() {
        return Err(fail(
            "no test cases: a test file needs at least one [[case]]".into(),
        ));
    }
    // A bare file name's parent is the empty path, which names no folder to look in.
    let base = file
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_mocks = spec
        .mock
        .iter()
        .enumerate()
        .map(|(i, m)| mock(m, base).map_err(|e| fail(format!("mock[{i}]: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::BTreeSet::new();
    let mut cases = Vec::new();
    let mut default_plugin_result = None;
    for (index, case) in spec.case.iter().enumerate() {
        let named = |e: String| fail(format!("case `{}` (case[{index}]): {e}", case.name));
        if !seen.insert(case.name.clone()) {
            return Err(named("another case has the same name".into()));
        }
        // Absolute here, once: the case's config would otherwise resolve a relative path
        // against the test file's folder a second time.
        let plugin = match (plugin, case.plugin.as_ref().or(spec.plugin.as_ref())) {
            (Some(p), _) => absolute(p),
            (None, Some(p)) => absolute(&base.join(p)),
            (None, None) => default_plugin_result
                .get_or_insert_with(|| default_plugin(file))
                .clone()
                .map_err(fail)?,
        };
        cases.push(resolve_case(file, base, &spec, case, plugin, &file_mocks).map_err(named)?);
    }
    Ok(cases)
}

fn resolve_case(
    file: &Path,
    base: &Path,
    spec: &FileSpec,
    case: &CaseSpec,
    plugin: PathBuf,
    file_mocks: &[Mock],
) -> Result<Case, String> {
    let hook = case
        .hook
        .as_ref()
        .or(spec.hook.as_ref())
        .map(|h| h.parse::<HookName>())
        .transpose()?
        .unwrap_or(HookName::OnRequest);
    let mut flow = spec
        .flow
        .merged(case.flow.as_ref().unwrap_or(&FlowSpec::default()));
    flow.vars.extend(case.vars.clone());
    let mut secrets = spec.secrets.clone();
    secrets.extend(case.secrets.clone());
    if let Some((id, _)) = secrets.iter().find(|(_, value)| value.is_empty()) {
        return Err(format!(
            "secret `{id}` is empty: give it a test value (warden serves no secret that is empty)"
        ));
    }
    let mut integrations = spec.integrations.clone();
    integrations.extend(case.integrations.clone());
    let identities = case
        .identities
        .clone()
        .or_else(|| spec.identities.clone())
        .unwrap_or_default();
    let mut mocks = case
        .mock
        .iter()
        .enumerate()
        .map(|(i, m)| mock(m, base).map_err(|e| format!("mock[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    mocks.extend(file_mocks.iter().cloned());
    for m in &mocks {
        for (_, header) in &m.headers {
            if let HeaderMatch::Secret(id) = header
                && !secrets.contains_key(id)
            {
                return Err(format!(
                    "mock `{}` expects secret `{id}`, which is not under [secrets]",
                    m.label()
                ));
            }
        }
    }
    let event = case
        .event
        .as_ref()
        .or(spec.event.as_ref())
        .ok_or("no `event`: set one for the case or for the whole file")?;
    let event: EventInput = event
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| format!("event: {}", e.message()))?;
    Ok(Case {
        file: file.to_path_buf(),
        name: case.name.clone(),
        plugin,
        hook,
        flow,
        secrets,
        integrations,
        identities,
        mocks,
        event,
        expect: expect(&case.expect)?,
    })
}

fn expect(spec: &ExpectSpec) -> Result<Expect, String> {
    const DECISIONS: [&str; 4] = ["continue", "approve", "deny", "ignore"];
    if spec.decision.is_none() && spec.failure.is_none() {
        return Err("[case.expect] needs `decision` or `failure`".into());
    }
    if spec.decision.is_some() && spec.failure.is_some() {
        return Err("[case.expect] takes `decision` or `failure`, not both".into());
    }
    // A failed hook has no reason: an expectation of one would never be checked.
    if spec.failure.is_some() && (spec.reason.is_some() || spec.reason_matches.is_some()) {
        return Err(
            "[case.expect] takes `reason` and `reason_matches` only with `decision`: a hook that fails gives no reason"
                .into(),
        );
    }
    if spec.failure.as_deref().is_some_and(|f| f.trim().is_empty()) {
        return Err(
            "expect.failure is empty, which every failure contains: name a part of the error"
                .into(),
        );
    }
    if let Some(d) = &spec.decision
        && !DECISIONS.contains(&d.as_str())
    {
        return Err(format!(
            "expect.decision `{d}` is not one of {}",
            DECISIONS.join(", ")
        ));
    }
    let regex = |key: &str, pattern: &str| {
        Regex::new(pattern)
            .map_err(|e| format!("{key} `{pattern}` is not a valid regular expression: {e}"))
    };
    let logs = spec
        .logs
        .iter()
        .enumerate()
        .map(|(i, l)| log_expect(l).map_err(|e| format!("expect.logs[{i}]: {e}")))
        .collect::<Result<_, _>>()?;
    let http_calls = spec
        .http_calls
        .as_ref()
        .map(|calls| {
            calls
                .iter()
                .map(|c| normalize_call(c).map_err(|e| format!("expect.http_calls: {e}")))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(Expect {
        decision: spec.decision.clone(),
        reason: spec.reason.clone(),
        reason_matches: spec
            .reason_matches
            .as_deref()
            .map(|p| regex("expect.reason_matches", p))
            .transpose()?,
        failure: spec.failure.clone(),
        identities: spec.identities.clone(),
        logs,
        http_calls,
        refusals: spec.refusals.clone(),
    })
}

fn log_expect(spec: &LogSpec) -> Result<LogExpect, String> {
    if spec.contains.is_none() && spec.matches.is_none() {
        return Err("needs `contains` or `matches`".into());
    }
    let level = spec
        .level
        .as_deref()
        .map(|l| match l {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            other => Err(format!(
                "level `{other}` is not one of trace, debug, info, warn, error"
            )),
        })
        .transpose()?;
    let matches = spec
        .matches
        .as_deref()
        .map(|p| Regex::new(p).map_err(|e| format!("`{p}` is not a valid regular expression: {e}")))
        .transpose()?;
    Ok(LogExpect {
        level,
        contains: spec.contains.clone(),
        matches,
    })
}

/// `METHOD url` with the URL as the host would send it, so trivial spelling differences
/// (a missing `/` after the host) do not fail a case.
fn normalize_call(call: &str) -> Result<String, String> {
    let (method, url) = call
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("`{call}` is not `METHOD url`"))?;
    let url = Url::parse(url.trim()).map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    Ok(format!("{} {url}", method.to_uppercase()))
}

fn mock(spec: &MockSpec, base: &Path) -> Result<Mock, String> {
    let (origin, path, mut query) = if spec.url.starts_with('/') {
        let url = Url::parse(&format!("http://mock.invalid{}", spec.url))
            .map_err(|e| format!("url `{}` is not a valid path: {e}", spec.url))?;
        (None, url.path().to_string(), query_of(&url))
    } else {
        let url = Url::parse(&spec.url).map_err(|e| {
            format!(
                "url `{}` is neither a URL (`https://host/path`) nor a path (`/path`): {e}",
                spec.url
            )
        })?;
        (Some(origin(&url)), url.path().to_string(), query_of(&url))
    };
    if let Some(both) = spec
        .query
        .keys()
        .find(|k| query.iter().any(|(q, _)| q == *k))
    {
        return Err(format!(
            "query `{both}` is in both the url and `query`: name each pair once"
        ));
    }
    query.extend(spec.query.clone());
    let method = spec
        .method
        .as_ref()
        .map(|m| {
            let upper = m.to_uppercase();
            match upper.as_str() {
                "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => Ok(upper),
                _ => Err(format!(
                    "method `{m}` is not an HTTP method a plugin can send"
                )),
            }
        })
        .transpose()?;
    let headers = spec
        .headers
        .iter()
        .map(|(name, value)| {
            let value = match value {
                HeaderSpec::Text(text) => HeaderMatch::Text(text.clone()),
                HeaderSpec::Secret { secret } => HeaderMatch::Secret(secret.clone()),
            };
            (name.clone(), value)
        })
        .collect();
    let body = match (&spec.body, &spec.body_json) {
        (Some(_), Some(_)) => return Err("set `body` or `body_json`, not both".into()),
        (Some(text), None) => Some(BodyMatch::Text(text.clone())),
        (None, Some(json)) => Some(BodyMatch::Json(to_json(json))),
        (None, None) => None,
    };
    let responses = match (&spec.respond, &spec.responses) {
        (Some(_), Some(_)) => return Err("set `respond` or `responses`, not both".into()),
        (Some(one), None) => vec![response(one, base)?],
        (None, Some(many)) if !many.is_empty() => many
            .iter()
            .enumerate()
            .map(|(i, r)| response(r, base).map_err(|e| format!("responses[{i}]: {e}")))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(format!(
                "mock for {} has no `respond` (or `responses`)",
                spec.url
            ));
        }
    };
    Ok(Mock {
        method,
        origin,
        path,
        query,
        headers,
        body,
        times: spec.times,
        responses,
    })
}

fn query_of(url: &Url) -> Vec<(String, String)> {
    url.query_pairs().into_owned().collect()
}

/// The most a test file may hold, and a crate's `Cargo.toml` read to find its plugin.
pub const MAX_TEST_FILE_BYTES: u64 = 4 << 20;
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The most a `body_file` may hold (the largest `response_max_bytes` is far less).
pub const MAX_BODY_FILE_BYTES: u64 = 16 << 20;

/// A mock's `body_file`: a regular file in the test file's folder or below it, at most
/// [`MAX_BODY_FILE_BYTES`]. Tests come with a plugin's source, maybe someone else's (a pull
/// request run in CI): they name no file outside it for the plugin to print, and no device
/// or pipe that never ends.
fn body_file(base: &Path, path: &str) -> Result<Vec<u8>, String> {
    let full = base.join(path);
    let shown = full.display();
    let (root, found) = match (base.canonicalize(), full.canonicalize()) {
        (Ok(root), Ok(found)) => (root, found),
        (_, Err(e)) | (Err(e), _) => return Err(format!("body_file {shown}: {e}")),
    };
    if !found.starts_with(&root) {
        return Err(format!(
            "body_file {shown} is outside the test file's folder ({}); keep fixtures beside the tests",
            root.display()
        ));
    }
    // Looked at before it is opened: opening a pipe waits for a writer.
    let meta = std::fs::metadata(&found).map_err(|e| format!("body_file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("body_file {shown} is not a regular file"));
    }
    if meta.len() > MAX_BODY_FILE_BYTES {
        return Err(format!(
            "body_file {shown} is {} bytes, over {MAX_BODY_FILE_BYTES}",
            meta.len()
        ));
    }
    let file = std::fs::File::open(&found).map_err(|e| format!("body_file {shown}: {e}"))?;
    let mut body = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_BODY_FILE_BYTES + 1),
        &mut body,
    )
    .map_err(|e| format!("body_file {shown}: {e}"))?;
    // It grew between the look and the read.
    if body.len() as u64 > MAX_BODY_FILE_BYTES {
        return Err(format!(
            "body_file {shown} is over {MAX_BODY_FILE_BYTES} bytes"
        ));
    }
    Ok(body)
}

fn response(spec: &ResponseSpec, base: &Path) -> Result<MockResponse, String> {
    let set = [
        spec.json.is_some(),
        spec.body.is_some(),
        spec.body_file.is_some(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        return Err("set one of `json`, `body` or `body_file`".into());
    }
    let mut headers: Vec<(String, String)> = spec
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let body = if let Some(json) = &spec.json {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("content-type".into(), "application/json".into()));
        }
        serde_json::to_vec(&to_json(json)).expect("JSON values serialize")
    } else if let Some(text) = &spec.body {
        text.clone().into_bytes()
    } else if let Some(path) = &spec.body_file {
        body_file(base, path)?
    } else {
        Vec::new()
    };
    let error = spec
        .error
        .as_deref()
        .map(|e| match e {
            "timeout" => Ok(MockError::Timeout),
            "connect" => Ok(MockError::Connect),
            other => Err(format!("error `{other}` is not one of timeout, connect")),
        })
        .transpose()?;
    let status = spec.status.unwrap_or(200);
    if !(100..=599).contains(&status) {
        return Err(format!("status {status} is not an HTTP status"));
    }
    Ok(MockResponse {
        status,
        headers,
        body,
        error,
        delay: spec.delay_ms.map(std::time::Duration::from_millis),
    })
}

/// TOML as JSON: tables become objects, datetimes their text.
pub fn to_json(value: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => J::from(*f),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_file_is_a_bounded_regular_file_beside_the_tests() {
        let dir = tempfile::tempdir().unwrap();
        let tests = dir.path().join("tests");
        std::fs::create_dir_all(tests.join("fixtures")).unwrap();
        std::fs::write(tests.join("fixtures/ok.json"), "{}").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "private").unwrap();
        assert_eq!(body_file(&tests, "fixtures/ok.json").unwrap(), b"{}");
        for outside in ["../outside.txt", "/etc/hostname", "/dev/zero"] {
            let error = body_file(&tests, outside).unwrap_err();
            assert!(error.contains("outside the test file's folder"), "{error}");
        }
        std::os::unix::fs::symlink(dir.path().join("outside.txt"), tests.join("link")).unwrap();
        let error = body_file(&tests, "link").unwrap_err();
        assert!(error.contains("outside the test file's folder"), "{error}");
        let fifo = tests.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let error = body_file(&tests, "fifo").unwrap_err();
        assert!(error.contains("not a regular file"), "{error}");
        let big = std::fs::File::create(tests.join("big")).unwrap();
        big.set_len(MAX_BODY_FILE_BYTES + 1).unwrap();
        let error = body_file(&tests, "big").unwrap_err();
        assert!(error.contains("over"), "{error}");
    }

    #[test]
    fn the_target_folder_is_where_cargo_builds() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let plugin = root.join("ws/plugin");
        std::fs::create_dir_all(&plugin).unwrap();
        std::fs::write(root.join("ws/Cargo.toml"), "[workspace]\n").unwrap();
        let none = |_: &str| None;
        assert_eq!(target_dir_with(&plugin, &none), root.join("ws/target"));
        std::fs::create_dir_all(root.join("ws/.cargo")).unwrap();
        std::fs::write(
            root.join("ws/.cargo/config.toml"),
            "[build]\ntarget-dir = \"out\"\n",
        )
        .unwrap();
        assert_eq!(target_dir_with(&plugin, &none), root.join("ws/out"));
        let build = |name: &str| (name == "CARGO_BUILD_TARGET_DIR").then(|| "/elsewhere".into());
        assert_eq!(
            target_dir_with(&plugin, &build),
            PathBuf::from("/elsewhere")
        );
        let both = |name: &str| Some(format!("/{name}").into());
        assert_eq!(
            target_dir_with(&plugin, &both),
            PathBuf::from("/CARGO_TARGET_DIR")
        );
    }

    #[test]
    fn links_to_folders_are_not_searched_so_a_loop_ends() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("plugin");
        std::fs::create_dir_all(plugin.join("tests")).unwrap();
        std::fs::write(plugin.join("Cargo.toml"), "[package]\nname = \"p\"\n").unwrap();
        std::fs::write(plugin.join("tests/a.toml"), "").unwrap();
        std::os::unix::fs::symlink(".", plugin.join("x")).unwrap();
        std::os::unix::fs::symlink("..", plugin.join("y")).unwrap();
        std::os::unix::fs::symlink(&plugin, dir.path().join("z")).unwrap();
        // A `tests/` that is a crate of its own: its manifest is not a test file.
        std::fs::write(plugin.join("tests/Cargo.toml"), "[package]\nname = \"t\"\n").unwrap();
        let files = find_test_files(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(files, vec![plugin.join("tests/a.toml")]);
    }

    #[test]
    fn a_mock_header_and_a_test_secret_are_refused_in_words_an_author_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        let plugin = dir.path().join("p.wasm");
        let case = |secrets: &str, header: &str| {
            format!(
                "[secrets]\n{secrets}\n[event]\nuser = {{ email = \"a@x.com\" }}\n\
                 [[case]]\nname = \"c\"\nexpect = {{ decision = \"continue\" }}\n\
                 [[case.mock]]\nmethod = \"GET\"\nurl = \"https://api.example.com/x\"\n\
                 headers = {{ X-Key = {header} }}\nrespond = {{ status = 200 }}\n"
            )
        };
        let load = |text: String| {
            std::fs::write(&file, text).unwrap();
            load_file(&file, Some(&plugin))
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let error = load(case("k = \"v\"", "{ secret = \"k\", sealed = true }"));
        assert!(error.contains("unknown key `sealed`"), "{error}");
        let error = load(case("k = \"v\"", "5"));
        assert!(
            error.contains("a header is a string or `{ secret"),
            "{error}"
        );
        assert!(!error.contains("untagged"), "{error}");
        let error = load(case("k = \"\"", "{ secret = \"k\" }"));
        assert!(error.contains("secret `k` is empty"), "{error}");
        assert!(!error.contains("WARDEN_TEST_SECRET"), "{error}");
        std::fs::write(&file, case("k = \"v\"", "{ secret = \"k\" }")).unwrap();
        let cases = load_file(&file, Some(&plugin)).unwrap();
        assert_eq!(cases.len(), 1);
    }

    #[test]
    fn a_test_file_is_a_bounded_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_TEST_FILE_BYTES + 1)
            .unwrap();
        let error = load_file(&big, None).unwrap_err();
        assert!(error.message.contains("holds more than 4 MiB"), "{error}");
        // A file of /proc is a regular file that says it is empty: read to the bound (this
        // one in whole words only, refused by the kernel at the bound's odd byte).
        let error = load_file(Path::new("/proc/self/pagemap"), None).unwrap_err();
        assert!(error.message.contains("cannot read the file"), "{error}");
        let error = crate::config::read_bounded(Path::new("/proc/self/maps"), 64).unwrap_err();
        assert_eq!(error.to_string(), "it holds more than 64 bytes");
        let error = load_file(Path::new("/dev/zero"), None).unwrap_err();
        assert!(error.message.contains("not a regular file"), "{error}");
    }
}
