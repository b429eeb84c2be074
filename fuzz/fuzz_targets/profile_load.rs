#![no_main]
//! The profile loader on arbitrary bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.yaml");
    std::fs::write(&path, data).unwrap();
    if let Err(e) = kios_build::profile::load(&path) {
        let _ = e.to_string();
    }
});
