#![no_main]
//! The EROFS reader that inspect uses to list the store.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let Ok(mut r) = kios_build::store::erofs::ErofsReader::open(std::io::Cursor::new(data), 0, len)
    else {
        return;
    };
    for path in ["overlay-images/images.json", "etc/hostname", "a/b/c"] {
        let _ = r.read_file(path, 1 << 20);
    }
});
