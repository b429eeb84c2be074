//! The EFI system partition: a FAT32 filesystem written from a [`Tree`], and read back.
//!
//! Input: a tree of directories and regular files (typically `EFI/BOOT/BOOTX64.EFI`, a
//! unified kernel image, plus a few small files) and a partition size. Output: the bytes
//! of a FAT32 volume, written at an offset of a seekable sink (the disk image). File
//! contents are streamed from their [`Content`](crate::tree::Content); no whole file is
//! ever held in memory. [`EspReader`] reads such a volume back (ours or one made by
//! `mkfs.vfat` + `mcopy`): it lists it and streams files out of it, for `inspect` and tests.
//!
//! Why our own writer: the `fatfs` crate (0.3.6) writes the `..` entry of a first-level
//! directory pointing at cluster 2 instead of 0, which `fsck.vfat -n` rejects, and a
//! volume a firmware reads at every boot must pass the reference checker. The format
//! is small and well specified: Microsoft's "FAT: General Overview of On-Disk Format"
//! (fatgen103, version 1.03, 2000), cited by section next to the code that writes it.
//! `tests/esp_fsck.rs` checks every image with the real `fsck.vfat -n` and mtools.
//!
//! What this module does not do: FAT12/16 (an ESP here is always FAT32), sector sizes
//! other than 512 bytes when writing, updating a volume in place, or partitioning (the
//! GPT is `disk`'s job; the caller gives the offset and size of the partition).
//!
//! Layout of the module: `layout` (geometry, boot sector, FSInfo, directory entries),
//! `names` (8.3 short names and VFAT long names), `writer`, `reader`.

mod layout;
mod names;
mod reader;
mod writer;

pub use reader::{EspFileReader, EspReader};
pub use writer::{min_size, write_fat32};

#[cfg(doc)]
use crate::tree::Tree;
use crate::tree::TreePath;

/// The settings of a volume that are not derived from its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspOptions {
    /// The volume serial number (BPB `BS_VolID`); derive it from the profile for
    /// reproducible images.
    pub volume_id: u32,
    /// The volume label, 11 bytes padded with spaces, e.g. `*b"KIOS_ESP   "`: upper case
    /// letters, digits and the other characters a short name allows. All spaces means
    /// no label (`NO NAME`).
    pub label: [u8; 11],
    /// Seconds since the epoch, used for every timestamp of every directory entry.
    /// FAT dates run from 1980 to 2107: earlier or later times are clamped.
    pub mtime: u64,
}

impl Default for EspOptions {
    fn default() -> Self {
        EspOptions {
            volume_id: 0x4b49_4f53,
            label: *b"KIOS_ESP   ",
            mtime: 0,
        }
    }
}

/// One directory or file of a volume, as [`EspReader::list`] gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspFile {
    /// The path from the root, components joined by `/`, no leading `/`, long names
    /// where the volume has them: `EFI/BOOT/BOOTX64.EFI`, `loader/entries/kios.conf`.
    pub path: String,
    pub is_dir: bool,
    /// The size in bytes (0 for directories).
    pub size: u64,
}

/// What can go wrong writing or reading an ESP.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("the ESP size {size} bytes is not a whole number of 512-byte sectors; round it to a multiple of 1 MiB")]
    SizeNotSectors { size: u64 },
    #[error("the ESP offset {offset} {why}; start the partition on a 1 MiB boundary below 2 TiB")]
    BadOffset { offset: u64, why: &'static str },
    #[error("an ESP of {size} bytes is too small for FAT32, which needs at least 65,525 clusters: make it at least {min} bytes ({} MiB)", min.div_ceil(1 << 20))]
    TooSmall { size: u64, min: u64 },
    #[error("an ESP of {size} bytes is too large for FAT32 with 512-byte sectors (at most 2 TiB); make it smaller")]
    TooLarge { size: u64 },
    #[error("the ESP files need {needed} bytes of clusters but a FAT32 volume of {size} bytes has {available}; make the ESP at least {min} bytes (see esp::min_size)")]
    DoesNotFit {
        size: u64,
        needed: u64,
        available: u64,
        min: u64,
    },
    #[error("{path}: a {kind} cannot be stored on the ESP (FAT holds only directories and regular files); leave it out of the ESP tree")]
    Unsupported { path: TreePath, kind: &'static str },
    #[error("{path}: {size} bytes is too large for a FAT32 file (at most 4 GiB - 1 byte)")]
    FileTooLarge { path: TreePath, size: u64 },
    #[error("{path}: the name cannot be stored on FAT: {why}; rename it")]
    BadName { path: TreePath, why: &'static str },
    #[error("{path} and {other} differ only in case, and FAT names are case-insensitive; rename one of them")]
    NameClash { path: TreePath, other: TreePath },
    #[error("directory {path} has {entries} directory entries, more than FAT's limit of 65,536; split it")]
    DirTooLarge { path: TreePath, entries: usize },
    #[error("volume label {label:?} is not valid: {why}; use up to 11 upper case letters, digits or _ padded with spaces")]
    BadLabel { label: String, why: &'static str },
    #[error("cannot read the contents of {path}")]
    ReadContent {
        path: TreePath,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: its contents ended after {got} of {expected} bytes; the source file changed while the image was built, build again")]
    ShortContent {
        path: TreePath,
        expected: u64,
        got: u64,
    },
    #[error("cannot write the ESP ({what})")]
    Write {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the ESP ({what})")]
    Read {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("not a FAT filesystem at offset {offset}: {why}")]
    NotFat { offset: u64, why: String },
    #[error("the FAT filesystem at offset {offset} is FAT12/16 ({clusters} clusters), not FAT32; an ESP made by kios-build is always FAT32")]
    NotFat32 { offset: u64, clusters: u64 },
    #[error("the FAT32 filesystem is damaged: {why}; run `fsck.vfat -n` on it for details")]
    Corrupt { why: String },
    #[error("{path}: no such file or directory on the ESP")]
    NotFound { path: String },
    #[error("{path}: is a directory on the ESP, not a file")]
    IsADirectory { path: String },
}

#[cfg(test)]
mod tests;
