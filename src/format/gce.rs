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
//! The entry is a GNU sparse file (typeflag `S`, the "old GNU" sparse map: four
//! (offset, length) pairs in the header, 21 more in each extension block, `realsize`
//! the file's full size), as `tar --format=oldgnu -S` writes it and as Google's own
//! instructions make the archive: only the 4 KiB blocks that hold a non-zero byte are
//! stored, so a mostly empty 10 GiB disk costs what its data costs instead of gzip
//! running over gigabytes of zeros. GNU tar restores the holes on extraction.
//!
//! Not here: uploading to Cloud Storage.

use std::fs::File;
use std::io::{BufWriter, Write};

use super::source::{RawImage, ZEROS};
use super::{rounded_size, ConvertReport, Format, FormatError};

const ENTRY_NAME: &str = "disk.raw";
const BLOCK: u64 = 512;
const GIB: u64 = 1 << 30;

/// The granularity of the sparse map: a filesystem block. Finer would save little
/// and lengthen the map.
const GRAIN: usize = 4096;

/// The data ranges of the image, `(offset, length)`, at [`GRAIN`] granularity, in
/// order; adjacent non-zero blocks are one range.
fn sparse_map(image: &mut RawImage) -> Result<Vec<(u64, u64)>, FormatError> {
    let mut map: Vec<(u64, u64)> = Vec::new();
    image.for_each_nonzero_block(GRAIN, |off, data| {
        match map.last_mut() {
            Some((start, len)) if *start + *len == off => *len += data.len() as u64,
            _ => map.push((off, data.len() as u64)),
        }
        Ok(())
    })?;
    Ok(map)
}

/// The tar header of the sparse entry and its extension blocks (GNU tar's
/// `oldgnu_header`: `sparse[4]`, `isextended`, `realsize`; `sparse_header`: 21 more
/// pairs and `isextended`). A file that ends in a hole gets a last, empty range at its
/// end, as GNU tar writes it, so that every reader knows the size.
fn sparse_headers(map: &[(u64, u64)], size: u64, mtime: u64) -> Result<Vec<u8>, std::io::Error> {
    let mut entries = map.to_vec();
    if entries.last().map(|(o, l)| o + l) != Some(size) {
        entries.push((size, 0));
    }
    let stored: u64 = map.iter().map(|(_, l)| l).sum();
    let mut header = tar::Header::new_gnu();
    header.set_path(ENTRY_NAME)?;
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_size(stored);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    let (first, rest) = entries.split_at(entries.len().min(4));
    if let Some(gnu) = header.as_gnu_mut() {
        for (slot, &(offset, len)) in gnu.sparse.iter_mut().zip(first) {
            slot.set_offset(offset);
            slot.set_length(len);
        }
        gnu.set_is_extended(!rest.is_empty());
        gnu.set_real_size(size);
    }
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    let chunks: Vec<&[(u64, u64)]> = rest.chunks(21).collect();
    for (n, chunk) in chunks.iter().enumerate() {
        let mut ext = tar::GnuExtSparseHeader::new();
        for (slot, &(offset, len)) in ext.sparse_mut().iter_mut().zip(chunk.iter()) {
            slot.set_offset(offset);
            slot.set_length(len);
        }
        ext.set_is_extended(n + 1 < chunks.len());
        out.extend_from_slice(ext.as_bytes());
    }
    Ok(out)
}

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

    let map = sparse_map(image)?;
    let stored: u64 = map.iter().map(|(_, l)| l).sum();
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(BufWriter::new(&mut *out), flate2::Compression::default());
    gz.write_all(&sparse_headers(&map, size, mtime).map_err(werr)?)
        .map_err(werr)?;
    // The data of the map's ranges, in order: exactly the non-zero blocks.
    image.for_each_nonzero_block(GRAIN, |_, data| gz.write_all(data).map_err(werr))?;
    // The entry's data is padded to a whole block, then the archive ends with two
    // zero blocks (POSIX ustar, "pax" rationale; GNU tar does the same).
    let pad = (BLOCK - stored % BLOCK) % BLOCK;
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
