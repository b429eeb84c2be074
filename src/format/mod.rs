//! Output formats: turns the finished raw disk image into the file a user ships
//! (raw, raw.zst, raw.xz, qcow2, VHD fixed, GCE tarball, VMDK streamOptimized).
//!
//! Input is a raw image file on disk; output is a file the caller created (usually a
//! temp file beside the final output, renamed by the caller). Every writer streams:
//! the disk is read in blocks of at most 1 MiB, holes are found with
//! `SEEK_DATA`/`SEEK_HOLE` and all-zero blocks are skipped, so memory does not grow
//! with the disk size. The container formats (qcow2, VHD, VMDK) are written by our own
//! code, one module each, because each is a few hundred lines of well-specified
//! layout and the alternative (`qemu-img` at build time) is a runtime dependency that
//! is not reproducible across versions; `tests/formats.rs` checks every one of them
//! with `qemu-img`.
//!
//! Output is deterministic: the same raw image and [`ConvertOptions`] give the same
//! bytes. Identifiers (VHD unique id, VMDK CID) are derived from
//! [`ConvertOptions::seed`]; timestamps come from [`ConvertOptions::mtime`].
//!
//! Not here: building the raw image (`disk`), choosing the output name or renaming
//! the temp file (the build pipeline), uploading to a cloud, or reading these formats
//! back (`inspect` reads raw images only).

mod gce;
mod qcow2;
mod raw;
pub(crate) mod source;
mod vhd;
mod vmdk;

use std::fmt;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use source::RawImage;

/// An output format for the built disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The raw disk, copied sparsely.
    Raw,
    /// The raw disk, zstd-compressed (single frame, single-threaded).
    RawZst,
    /// The raw disk, xz-compressed (preset 6, CRC64).
    RawXz,
    /// qcow2 version 3, 64 KiB clusters, only non-zero clusters allocated.
    Qcow2,
    /// VHD fixed (Azure): the raw disk padded to a whole MiB, then a 512-byte footer.
    Vhd,
    /// Google Compute Engine image: `disk.raw` in a gzip'd oldgnu tar.
    Gce,
    /// VMDK streamOptimized (deflate-compressed grains), for OVA/vSphere.
    Vmdk,
}

impl Format {
    pub const ALL: [Format; 7] = [
        Format::Raw,
        Format::RawZst,
        Format::RawXz,
        Format::Qcow2,
        Format::Vhd,
        Format::Gce,
        Format::Vmdk,
    ];

    /// The name used in profiles and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::RawZst => "raw.zst",
            Format::RawXz => "raw.xz",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Gce => "gce",
            Format::Vmdk => "vmdk",
        }
    }

    /// The conventional file extension, without the leading dot: the name, but for
    /// the GCE tarball.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Gce => "tar.gz",
            other => other.name(),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| FormatError::Unknown(s.to_string()))
    }
}

/// Choices that change the output bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// qcow2: deflate-compress clusters (smaller, slower to write and to boot from).
    pub qcow2_compress: bool,
    /// Seconds since the Unix epoch, for timestamps inside the output (GCE tar entry,
    /// VHD footer). Usually `SOURCE_DATE_EPOCH`.
    pub mtime: u64,
    /// Source of the identifiers the formats require (VHD unique id, VMDK CID); the
    /// same seed gives the same identifiers. Usually derived from the profile hash.
    pub seed: [u8; 32],
}

/// What [`convert`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertReport {
    pub format: Format,
    /// The size of the disk a machine sees, in bytes (can exceed the raw size when
    /// the format requires rounding, see `notes`).
    pub virtual_size: u64,
    /// The length of the output file, in bytes (its apparent size; raw and VHD are
    /// sparse, so fewer blocks may be allocated).
    pub bytes_written: u64,
    /// Things the user should know, e.g. a size that was rounded up.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "unknown output format `{0}`: expected one of raw, raw.zst, raw.xz, qcow2, vhd, gce, vmdk"
    )]
    Unknown(String),
    #[error("cannot read the raw image {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the {format} output")]
    Write {
        format: Format,
        #[source]
        source: io::Error,
    },
    #[error("{format}: a disk of {size} bytes is too large for this format (at most {max} bytes)")]
    TooLarge { format: Format, size: u64, max: u64 },
    #[error("{format}: compression failed: {detail}")]
    Compress { format: Format, detail: String },
}

impl Format {
    /// Turns a write error of this format's output into a [`FormatError`]: the one
    /// shape every writer's `map_err` takes.
    pub(crate) fn write_error(self) -> impl Fn(io::Error) -> FormatError + Copy {
        move |source| FormatError::Write {
            format: self,
            source,
        }
    }
}

/// A virtual size rounded up to a whole number of `unit`s, as some formats require,
/// with `note(raw, rounded)` in the notes when that changed it.
fn rounded_size(raw: u64, unit: u64, note: impl FnOnce(u64, u64) -> String) -> (u64, Vec<String>) {
    let size = raw.div_ceil(unit) * unit;
    let notes = if size == raw {
        Vec::new()
    } else {
        vec![note(raw, size)]
    };
    (size, notes)
}

/// Reads the raw image at `raw` and writes `format` to `out`, from offset 0; `out` is
/// truncated first. Returns what was written. Nothing is left half-valid on error
/// only if the caller removes `out` (it is the caller's temp file).
pub fn convert(
    raw: &Path,
    format: Format,
    out: &mut File,
    opts: &ConvertOptions,
) -> Result<ConvertReport, FormatError> {
    let mut image = RawImage::open(raw)?;
    let werr = format.write_error();
    out.set_len(0).map_err(werr)?;
    out.seek(SeekFrom::Start(0)).map_err(werr)?;
    let mut report = match format {
        Format::Raw => raw::write_sparse(&mut image, out),
        Format::RawZst => raw::write_zstd(&mut image, out),
        Format::RawXz => raw::write_xz(&mut image, out),
        Format::Qcow2 => qcow2::write(&mut image, out, opts.qcow2_compress),
        Format::Vhd => vhd::write(&mut image, out, opts),
        Format::Gce => gce::write(&mut image, out, opts.mtime),
        Format::Vmdk => vmdk::write(&mut image, out, opts),
    }?;
    report.bytes_written = out.metadata().map_err(werr)?.len();
    Ok(report)
}

/// `n` bytes derived from the seed for one purpose, so each format's identifiers are
/// independent of each other but fixed for a given seed.
fn derive_id<const N: usize>(seed: &[u8; 32], purpose: &str) -> [u8; N] {
    let mut h = Sha256::new();
    h.update(b"kios-build format id\0");
    h.update(purpose.as_bytes());
    h.update([0]);
    h.update(seed);
    let d = h.finalize();
    let mut id = [0u8; N];
    id.copy_from_slice(&d[..N]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_parses_from_its_name_and_prints_it() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!(Format::Gce.extension(), "tar.gz");
        let e = "vhdx".parse::<Format>().unwrap_err().to_string();
        assert!(e.contains("`vhdx`") && e.contains("qcow2"), "{e}");
    }

    #[test]
    fn derived_ids_depend_on_seed_and_purpose() {
        let a: [u8; 16] = derive_id(&[1; 32], "vhd");
        assert_eq!(a, derive_id::<16>(&[1; 32], "vhd"));
        assert_ne!(a, derive_id::<16>(&[2; 32], "vhd"));
        assert_ne!(a, derive_id::<16>(&[1; 32], "vmdk"));
    }
}
