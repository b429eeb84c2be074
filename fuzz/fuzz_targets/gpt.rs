#![no_main]
//! The GPT reader on a disk that starts with the input, CRCs fixed up.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut disk = data.to_vec();
    kios_build_fuzz::fix_gpt_crcs(&mut disk);
    let _ = kios_build::disk::gpt::Table::read(&mut std::io::Cursor::new(&disk));
    let mut tail = kios_build_fuzz::ZeroTail::new(&disk, 64 << 20);
    if let Ok(t) = kios_build::disk::gpt::Table::read(&mut tail) {
        for p in &t.partitions {
            let _ = (p.offset(), p.size());
        }
    }
});
