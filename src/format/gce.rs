//! GCE image: the raw disk as the single entry `disk.raw` of a gzip'd tar, which is
//! what Google Compute Engine imports ("Manually import boot disks": a file named
//! `disk.raw` in a tar archive in oldgnu format, gzip-compressed).
//!
//! The tar header is the GNU/oldgnu layout (magic `"ustar  \0"`, sizes over 8 GiB in
//! base-256) built with the `tar` crate's `Header::new_gnu`; the entry is a regular
//! file of the full disk size, mode 0644, owner 0:0, mtime from the options, streamed
//! from the raw image. The gzip member (RFC 1952) has mtime 0, no file name and OS
//! "unknown", so the output depends only on the disk and the mtime.
//!
//! GCE wants the disk a whole number of GiB: a disk that is not is padded with zeros
//! in the archive (the partition table still describes the original size, which the
//! data partition's resize grows past at first boot), and the report says so.
//!
//! Not here: GNU sparse entries (GCE does not require them; gzip shrinks the zeros),
//! uploading to Cloud Storage.

use std::fs::File;
use std::io::{BufWriter, Write};

use super::source::{RawImage, ZEROS};
use super::{rounded_size, ConvertReport, Format, FormatError};

const ENTRY_NAME: &str = "disk.raw";
const BLOCK: u64 = 512;
const GIB: u64 = 1 << 30;

pub(super) fn write(
    image: &mut RawImage,
    out: &mut File,
    mtime: u64,
) -> Result<ConvertReport, FormatError> {
    let werr = Format::Gce.write_error();
    let raw_size = image.size();
    let (size, notes) = rounded_size(raw_size, GIB, |raw, size| {
        format!("GCE needs a whole number of GiB: disk.raw padded from {raw} to {size} bytes")
    });

    let mut header = tar::Header::new_gnu();
    header.set_path(ENTRY_NAME).map_err(werr)?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_cksum();

    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(BufWriter::new(&mut *out), flate2::Compression::default());
    gz.write_all(header.as_bytes()).map_err(werr)?;
    image.copy_all(&mut gz, werr)?;
    let mut left = size - raw_size;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64);
        gz.write_all(&ZEROS[..n as usize]).map_err(werr)?;
        left -= n;
    }
    // The entry's data is padded to a whole block, then the archive ends with two
    // zero blocks (POSIX ustar, "pax" rationale; GNU tar does the same).
    let pad = (BLOCK - size % BLOCK) % BLOCK;
    gz.write_all(&ZEROS[..(pad + 2 * BLOCK) as usize])
        .map_err(werr)?;
    gz.finish().map_err(werr)?.flush().map_err(werr)?;
    Ok(ConvertReport {
        format: Format::Gce,
        virtual_size: size,
        bytes_written: 0,
        notes,
    })
}
