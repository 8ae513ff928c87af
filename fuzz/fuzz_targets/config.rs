//! `Config::parse` on arbitrary text never panics, and every error it reports names a place
//! in the file.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative paths resolve under a folder that does not exist, so nothing is read.
    let path = Path::new("/nonexistent/warden-fuzz/warden.toml");
    if let Err(errors) = warden_fuzz::parse(text, path) {
        assert!(!errors.0.is_empty(), "a refusal with no error");
        for error in &errors.0 {
            assert!(
                error.location.is_some(),
                "an error without a line and column: {error}\n--- config ---\n{text}"
            );
            assert!(
                !error.message.trim().is_empty(),
                "an empty message: {error:?}"
            );
        }
    }
});
