//! `kios_build::format::convert` as a command, for `scripts/bench-formats` (which
//! times it against qemu-img and the standard compressors). Not a test.
//!
//! Usage: convert <raw> <format> <out> [--compress]

use std::fs::File;
use std::process::ExitCode;
use std::time::Instant;

use kios_build::format::{convert, ConvertOptions, Format};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [raw, format, out, rest @ ..] = args.as_slice() else {
        eprintln!("usage: convert <raw> <format> <out> [--compress]");
        return ExitCode::from(2);
    };
    let format: Format = match format.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let opts = ConvertOptions {
        qcow2_compress: rest.iter().any(|a| a == "--compress"),
        mtime: 1_700_000_000,
        seed: [0; 32],
    };
    let start = Instant::now();
    let result = File::create(out)
        .map_err(|e| e.to_string())
        .and_then(|mut f| convert(raw.as_ref(), format, &mut f, &opts).map_err(|e| e.to_string()));
    match result {
        Ok(r) => {
            println!(
                "{format}: {} bytes in {:.2?} {:?}",
                r.bytes_written,
                start.elapsed(),
                r.notes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{format}: {e}");
            ExitCode::FAILURE
        }
    }
}
