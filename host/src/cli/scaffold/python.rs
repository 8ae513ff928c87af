//! `warden new plugin NAME --lang python`: a Python plugin's folder (`plugin.py` and a test
//! file) that passes `warden test` once built with `warden build`. It does what the Rust
//! scaffold's crate does, with the Python SDK's names.

use std::path::{Path, PathBuf};

use super::{ScaffoldError, TEST_CASES, check_name, write_files};

/// Creates the folder `name` inside `parent`; returns it.
pub fn new_python_plugin(name: &str, parent: &Path) -> Result<PathBuf, ScaffoldError> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let test_file = format!("tests/{}.toml", name.replace('-', "_"));
    let files = [
        ("plugin.py", PLUGIN_PY.replace("{name}", name)),
        (
            test_file.as_str(),
            [TEST_TOML, TEST_CASES].concat().replace("{name}", name),
        ),
        (".gitignore", "/build/\n__pycache__/\n".to_string()),
    ];
    write_files(&dir, files)?;
    Ok(dir)
}

const PLUGIN_PY: &str = r#""""{name}: a warden plugin.

Approves a request when the status API says the requester is on duty; anything else (not on
duty, or the API failing) goes to a human.

Flow vars: `integration`, the alias of the integration to use (default `status`). That
integration's `api_url` setting is the API's base URL and its first secret the API token,
sent sealed so the plugin never sees it.

Build with `warden build`, test with `warden test`.
"""

import requests

from warden import ApprovalTemplate, hook, log


@hook
def on_request(event):
    email = event.requester.email
    try:
        on_duty = is_on_duty(event, email)
    except Exception as error:  # the API failing: a human decides
        log.warn(f"cannot ask the status API about {email}: {error}")
        return None
    if not on_duty:
        log.info(f"{email} is not on duty: a human decides")
        return None
    reason = event.payload.fields.get("reason", "")
    return ApprovalTemplate.approve(reason=f"Auto-approved: on duty: {reason}")


def is_on_duty(event, email):
    alias = event.flow.vars.get("integration", "status")
    status = event.flow.environment.integrations[alias]
    api_url = status.settings.get("api_url")
    if not api_url:
        raise RuntimeError("the integration has no `api_url` setting")
    response = requests.get(
        f"{api_url.rstrip('/')}/v1/duty",
        params={"email": email},
        # The token as retrieve_value() gives it, put as it is into a header, is sent
        # sealed: the host fills it in, and the plugin never holds it.
        headers={
            "Accept": "application/json",
            "Authorization": status.settings["secrets"][0].retrieve_value(),
        },
    )
    if not response.ok:
        raise RuntimeError(f"the status API answered {response.status_code}")
    return response.json().get("on_duty") is True
"#;

const TEST_TOML: &str = r#"# Tests for {name}: run `warden test` in this folder (after `warden build`, which writes
# build/plugin.wasm, the component these cases run).
#
# Keys at the top are defaults for every [[case]]; a case may override any of them.

[flow]
allowed_hosts = ["https://status.example.com"]
# The token is only ever sent sealed.
reveal_secrets = false

"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_plugin_folder_has_its_hook_tests_and_gitignore_and_is_made_once() {
        let parent = tempfile::tempdir().unwrap();
        let dir = new_python_plugin("on-duty", parent.path()).unwrap();
        assert_eq!(dir, parent.path().join("on-duty"));
        let plugin = std::fs::read_to_string(dir.join("plugin.py")).unwrap();
        assert!(
            plugin.starts_with("\"\"\"on-duty: a warden plugin."),
            "{plugin}"
        );
        assert!(plugin.contains("@hook\ndef on_request(event):"), "{plugin}");
        let tests = std::fs::read_to_string(dir.join("tests/on_duty.toml")).unwrap();
        // No `plugin = ...`: warden test finds build/plugin.wasm from the folder.
        assert!(!tests.contains("\nplugin ="), "{tests}");
        assert!(tests.contains("Tests for on-duty"), "{tests}");
        assert!(
            std::fs::read_to_string(dir.join(".gitignore"))
                .unwrap()
                .contains("/build/")
        );
        assert!(matches!(
            new_python_plugin("on-duty", parent.path()),
            Err(ScaffoldError::Exists(_))
        ));
        assert!(matches!(
            new_python_plugin("On Duty", parent.path()),
            Err(ScaffoldError::Name(_))
        ));
    }
}
