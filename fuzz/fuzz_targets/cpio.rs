#![no_main]
//! The initramfs reader: newc/crc cpio, padding, gzip and zstd segments.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = kios_build::initramfs::read_initramfs(data, 1 << 16) {
        let _ = e.to_string();
    }
});
