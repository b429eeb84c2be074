#![no_main]
//! The PE/UKI reader (headers, section table, text sections) and the stub check.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = kios_build::boot::read_uki(&mut std::io::Cursor::new(data)) {
        let _ = e.to_string();
    }
    let _ = kios_build::boot::check_stub(data, kios_build::profile::Arch::Amd64);
});
