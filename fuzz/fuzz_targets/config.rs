//! Any configuration text: validation returns a config or errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tether::config::Config::parse_with_env_keys(text, None);
    }
});
