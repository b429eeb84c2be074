//! raw, raw.zst and raw.xz: the disk itself, copied sparsely or compressed as one
//! stream.
//!
//! raw: only 4 KiB blocks that hold a non-zero byte are written; the file is then
//! extended to the disk size, so holes stay holes on filesystems that support them.
//! raw.zst: one zstd frame (RFC 8878) at level 3, single-threaded (so the output is
//! the same on every machine with the same zstd library), with the content size and
//! a checksum. raw.xz: one xz stream (liblzma preset 6, CRC64, single-threaded).
//!
//! Not here: seekable or multi-frame compression; compression knobs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;

use super::source::{is_zero, RawImage};
use super::{ConvertReport, Format, FormatError};

/// Granularity of the sparse copy: the usual filesystem block.
const SPARSE_BLOCK: usize = 4096;
const ZSTD_LEVEL: i32 = 3;
const XZ_PRESET: u32 = 6;

fn report(format: Format, image: &RawImage) -> ConvertReport {
    ConvertReport {
        format,
        virtual_size: image.size(),
        bytes_written: 0,
        notes: vec![],
    }
}

/// Writes the non-zero 4 KiB blocks of `image` at their offsets in `out`, then sets
/// the length; shared with VHD, whose data part is the raw disk.
pub(super) fn copy_sparse(
    image: &mut RawImage,
    out: &File,
    format: Format,
) -> Result<(), FormatError> {
    let werr = format.write_error();
    image.for_each_nonzero_block(64 * 1024, |off, block| {
        // Coalesce consecutive non-zero 4 KiB pieces into one write.
        let mut run: Option<usize> = None;
        for (i, piece) in block.chunks(SPARSE_BLOCK).enumerate() {
            let at = i * SPARSE_BLOCK;
            match (is_zero(piece), run) {
                (false, None) => run = Some(at),
                (true, Some(s)) => {
                    out.write_all_at(&block[s..at], off + s as u64)
                        .map_err(werr)?;
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(s) = run {
            out.write_all_at(&block[s..], off + s as u64)
                .map_err(werr)?;
        }
        Ok(())
    })?;
    out.set_len(image.size()).map_err(werr)
}

pub(super) fn write_sparse(
    image: &mut RawImage,
    out: &mut File,
) -> Result<ConvertReport, FormatError> {
    copy_sparse(image, out, Format::Raw)?;
    Ok(report(Format::Raw, image))
}

pub(super) fn write_zstd(
    image: &mut RawImage,
    out: &mut File,
) -> Result<ConvertReport, FormatError> {
    let werr = Format::RawZst.write_error();
    let mut enc =
        zstd::stream::Encoder::new(BufWriter::new(&mut *out), ZSTD_LEVEL).map_err(werr)?;
    enc.include_checksum(true).map_err(werr)?;
    enc.include_contentsize(true).map_err(werr)?;
    enc.set_pledged_src_size(Some(image.size())).map_err(werr)?;
    image.copy_all(&mut enc, werr)?;
    enc.finish().map_err(werr)?.flush().map_err(werr)?;
    Ok(report(Format::RawZst, image))
}

pub(super) fn write_xz(image: &mut RawImage, out: &mut File) -> Result<ConvertReport, FormatError> {
    let werr = Format::RawXz.write_error();
    let mut enc = xz2::write::XzEncoder::new(BufWriter::new(&mut *out), XZ_PRESET);
    image.copy_all(&mut enc, werr)?;
    enc.finish().map_err(werr)?.flush().map_err(werr)?;
    Ok(report(Format::RawXz, image))
}
