#![no_main]
//! `inspect` end to end on a 48 MiB sparse image that starts with the input (GPT
//! CRCs fixed up, so that partitions, the ESP, the UKI and the store are reached).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut disk = data.to_vec();
    kios_build_fuzz::fix_gpt_crcs(&mut disk);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.raw");
    std::fs::write(&path, &disk).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len((disk.len() as u64).max(48 << 20)).unwrap();
    drop(f);
    match kios_build::inspect::inspect(&path) {
        Ok(i) => {
            let _ = kios_build::inspect::render_text(&i);
            let _ = kios_build::inspect::render_json(&i);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
