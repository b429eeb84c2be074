#![no_main]
//! The FAT32 reader on a 40 MiB volume that starts with the input.
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Seek, SeekFrom};

fuzz_target!(|data: &[u8]| {
    let len = 40 << 20;
    let vol = kios_build_fuzz::ZeroTail::new(data, len);
    let Ok(mut esp) = kios_build::disk::esp::EspReader::open_within(vol, 0, len) else {
        return;
    };
    let _ = esp.label();
    let Ok(files) = esp.list() else { return };
    for f in files.iter().filter(|f| !f.is_dir).take(20) {
        if let Ok(mut r) = esp.open_file(&f.path) {
            let _ = std::io::copy(&mut (&mut r).take(1 << 20), &mut std::io::sink());
            let _ = r.seek(SeekFrom::End(-10));
            let _ = r.read(&mut [0u8; 64]);
        }
    }
});
