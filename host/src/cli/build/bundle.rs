//! warden's own files a Python plugin is built with, compiled into the binary so that
//! `warden build` works wherever warden is installed: the Python SDK (`guest-sdk/python`)
//! and the WIT (`wit/`). A test checks that these lists match the folders.

/// `(path inside the SDK folder, contents)`.
pub const SDK: &[(&str, &str)] = &[
    (
        "requests/__init__.py",
        include_str!("../../../../guest-sdk/python/requests/__init__.py"),
    ),
    (
        "requests/exceptions.py",
        include_str!("../../../../guest-sdk/python/requests/exceptions.py"),
    ),
    (
        "requests/structures.py",
        include_str!("../../../../guest-sdk/python/requests/structures.py"),
    ),
    (
        "warden/__init__.py",
        include_str!("../../../../guest-sdk/python/warden/__init__.py"),
    ),
    (
        "warden/_hooks.py",
        include_str!("../../../../guest-sdk/python/warden/_hooks.py"),
    ),
    (
        "warden/_host.py",
        include_str!("../../../../guest-sdk/python/warden/_host.py"),
    ),
    (
        "warden/annotations.py",
        include_str!("../../../../guest-sdk/python/warden/annotations.py"),
    ),
    (
        "warden/cache.py",
        include_str!("../../../../guest-sdk/python/warden/cache.py"),
    ),
    (
        "warden/errors.py",
        include_str!("../../../../guest-sdk/python/warden/errors.py"),
    ),
    (
        "warden/events.py",
        include_str!("../../../../guest-sdk/python/warden/events.py"),
    ),
    (
        "warden/identities.py",
        include_str!("../../../../guest-sdk/python/warden/identities.py"),
    ),
    (
        "warden/log.py",
        include_str!("../../../../guest-sdk/python/warden/log.py"),
    ),
    (
        "warden/secrets.py",
        include_str!("../../../../guest-sdk/python/warden/secrets.py"),
    ),
    (
        "warden/templates.py",
        include_str!("../../../../guest-sdk/python/warden/templates.py"),
    ),
    (
        "warden_app.py",
        include_str!("../../../../guest-sdk/python/warden_app.py"),
    ),
];

/// `(file name, contents)` of warden's WIT package.
pub const WIT: &[(&str, &str)] = &[
    ("cache.wit", include_str!("../../../../wit/cache.wit")),
    ("http.wit", include_str!("../../../../wit/http.wit")),
    (
        "identities.wit",
        include_str!("../../../../wit/identities.wit"),
    ),
    (
        "integrations.wit",
        include_str!("../../../../wit/integrations.wit"),
    ),
    ("log.wit", include_str!("../../../../wit/log.wit")),
    ("secrets.wit", include_str!("../../../../wit/secrets.wit")),
    ("types.wit", include_str!("../../../../wit/types.wit")),
    ("world.wit", include_str!("../../../../wit/world.wit")),
];

/// The one componentize-py version the SDK is built and tested with.
pub fn componentize_py_version() -> &'static str {
    include_str!("../../../../guest-sdk/python/componentize-py.version").trim()
}
