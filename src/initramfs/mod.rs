//! The initramfs: a [`Tree`] written as a compressed cpio archive, and the kernel
//! modules that go into it.
//!
//! Input: the assembled tree of the initial root filesystem (kios-init, the system
//! binaries, generated configuration, and the modules picked by [`KernelModules`]).
//! Output: the bytes the kernel unpacks into its rootfs at boot, i.e. the `.initrd`
//! of the unified kernel image.
//!
//! - [`write_initramfs`] writes one newc archive (see [`cpio`] for the format and
//!   its sources), compressed with gzip or zstd, streaming file contents from the
//!   host. Same tree, same bytes: inodes are numbered in tree order, timestamps come
//!   from the entries, and the compressors are run with fixed settings.
//! - [`read_initramfs`] reads an initramfs back for inspection and tests. Like the
//!   kernel (init/initramfs.c, `unpack_to_rootfs`) it accepts several archives one
//!   after another, zero padding between them, and gzip or zstd segments, detected
//!   by their magic bytes.
//! - [`KernelModules`] finds the modules a profile names, with their dependencies,
//!   and adds them to the tree with the load order that kios-init follows.
//!
//! What this module does not do: it writes no extended attributes (newc has no
//! place for them and mainline kernels read none from an initramfs, so
//! `security.capability` on a file is lost: entries' `xattrs` are ignored); it writes
//! no `070702` checksums; it does not compress with xz, lzma, lz4 or bzip2; and it
//! does not decide what goes into the tree.

pub(crate) mod contents;
pub(crate) mod cpio;
mod depmod;
pub(crate) mod modules;

use std::fmt;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::str::FromStr;

use crate::tree::{Tree, TreeError, TreePath};
pub use cpio::CpioEntry;
use cpio::Input;
pub use modules::{KernelModules, ModuleError, ModuleFile, ModuleSet};

/// How the archive is compressed. Both are read by any kernel built with
/// `CONFIG_RD_GZIP` / `CONFIG_RD_ZSTD` (Debian and most distributions enable both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// gzip level 9: the archive is written once and read at every boot.
const GZIP_LEVEL: u32 = 9;
/// zstd level 9. On the 8.2 MB cpio of examples/qemu.yaml (kernel modules, kios-init,
/// busybox) with the 8 MiB window below, the `zstd` CLI measured: level 9 2,408,002
/// bytes in 0.87 s and 27 MB of memory; level 12 2,392,752 bytes (0.6 % smaller) in
/// 1.52 s and 64 MB; level 19 2,173,463 bytes in 12.8 s and 97 MB. Level 12 alone
/// put a build's peak memory over the 64 MiB goal (#14) for 15 KB; decompressing at
/// boot costs the same at any level.
const ZSTD_LEVEL: i32 = 9;
/// 2^23 = 8 MiB, level 19's own window for large inputs, set explicitly so that a
/// newer libzstd cannot grow it. lib/decompress_unzstd.c rejects frames whose
/// window exceeds `1 << ZSTD_WINDOWLOG_MAX` (128 MiB) and allocates the window at
/// boot, so smaller is kinder to small machines.
const ZSTD_WINDOW_LOG: u32 = 23;

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

impl FromStr for Compression {
    type Err = InitramfsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            other => Err(InitramfsError::UnknownCompression {
                given: other.to_string(),
            }),
        }
    }
}

/// An error while writing or reading an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("unknown initramfs compression {given:?}: expected none, gzip or zstd")]
    UnknownCompression { given: String },
    #[error("cannot write the initramfs")]
    Write {
        #[source]
        source: io::Error,
    },
    #[error("cannot read the content of {path}{}", from_host(host))]
    Content {
        path: TreePath,
        host: Option<PathBuf>,
        #[source]
        source: io::Error,
    },
    #[error("the content of {path}{} changed while it was written: expected {expected} bytes, got {actual}", from_host(host))]
    ContentChanged {
        path: TreePath,
        host: Option<PathBuf>,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: {field} {value} does not fit the 32 bits of a cpio newc header")]
    FieldTooLarge {
        path: TreePath,
        field: &'static str,
        value: u64,
    },
    #[error("{path} is a hard link to {target}, but {why}")]
    BadHardlink {
        path: TreePath,
        target: TreePath,
        why: &'static str,
    },
    #[error("cannot read the initramfs at byte {offset}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("the initramfs is truncated: it ends in {what} at byte {offset}")]
    Truncated { offset: u64, what: &'static str },
    #[error("malformed cpio entry at byte {offset}: {why}")]
    Malformed { offset: u64, why: String },
    #[error("bad path in the cpio entry at byte {offset}")]
    BadPath {
        offset: u64,
        #[source]
        source: TreeError,
    },
    #[error("unrecognised data at byte {offset} (starts with {magic}): not a newc cpio archive, zero padding, gzip or zstd")]
    UnknownFormat { offset: u64, magic: String },
    #[error("in the {compression} stream that starts at byte {offset} (offsets below are in its decompressed data)")]
    InCompressed {
        compression: Compression,
        offset: u64,
        #[source]
        source: Box<InitramfsError>,
    },
    #[error("the initramfs is too large to read at byte {offset}: it holds {what}")]
    TooLarge { offset: u64, what: String },
    #[error("no cpio archive found: the input is empty or only padding")]
    NoArchive,
}

fn from_host(host: &Option<PathBuf>) -> String {
    match host {
        Some(p) => format!(" (host file {})", p.display()),
        None => String::new(),
    }
}

/// Writes `tree` as a newc cpio archive compressed with `compression` to `out` and
/// returns `out` when everything is written and flushed by the compressor.
///
/// The root is written as ".", other paths without a leading "/", parents before
/// children. File contents are streamed; nothing is held whole in memory.
pub fn write_initramfs<W: Write>(
    tree: &Tree,
    compression: Compression,
    out: W,
) -> Result<W, InitramfsError> {
    let write_err = |source| InitramfsError::Write { source };
    match compression {
        Compression::None => write_buffered(tree, out),
        Compression::Gzip => {
            // mtime 0 and no file name: the header says nothing about the build.
            let enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(3)
                .write(out, flate2::Compression::new(GZIP_LEVEL));
            write_buffered(tree, enc)?.finish().map_err(write_err)
        }
        Compression::Zstd => {
            // Single-threaded (the crate is built without zstdmt), so the output
            // does not depend on the machine.
            let mut enc = zstd::Encoder::new(out, ZSTD_LEVEL).map_err(write_err)?;
            enc.window_log(ZSTD_WINDOW_LOG).map_err(write_err)?;
            enc.include_checksum(true).map_err(write_err)?;
            write_buffered(tree, enc)?.finish().map_err(write_err)
        }
    }
}

/// The cpio writer makes many small writes (headers, names, padding): buffer them.
fn write_buffered<W: Write>(tree: &Tree, out: W) -> Result<W, InitramfsError> {
    let buffered = cpio::write_tree(tree, BufWriter::with_capacity(256 * 1024, out))?;
    buffered.into_inner().map_err(|e| InitramfsError::Write {
        source: e.into_error(),
    })
}

/// Reads an initramfs: one or more newc archives, each plain or inside a gzip
/// member or a zstd frame (detected by magic), with zero padding between them.
/// Data is kept for regular files of at most `keep_data_max` bytes; larger ones are
/// read and dropped. Every name is checked with [`TreePath::parse`].
pub fn read_initramfs<R: Read>(r: R, keep_data_max: u64) -> Result<Vec<CpioEntry>, InitramfsError> {
    let mut input = Input::new(r);
    let mut collected = cpio::Collected::default();
    let archives = read_segments(&mut input, keep_data_max, &mut collected, true)?;
    if archives == 0 {
        return Err(InitramfsError::NoArchive);
    }
    Ok(collected.entries)
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Reads archives until the end of `input`; returns how many. Compressed segments
/// are only looked for at the top level, as the kernel does.
fn read_segments<R: Read>(
    input: &mut Input<R>,
    keep_data_max: u64,
    out: &mut cpio::Collected,
    top_level: bool,
) -> Result<usize, InitramfsError> {
    let mut archives = 0;
    loop {
        let offset = input.offset;
        let head = input
            .peek(6)
            .map_err(|source| InitramfsError::Read { offset, source })?;
        let compression = if head.is_empty() {
            return Ok(archives);
        } else if head[0] == 0 {
            let zeros = head.iter().take_while(|b| **b == 0).count();
            io::BufRead::consume(input, zeros);
            continue;
        } else if head.starts_with(b"07070") {
            cpio::read_archive(input, keep_data_max, out)?;
            archives += 1;
            continue;
        } else if top_level && head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if top_level && head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            let magic = head.iter().map(|b| format!("{b:02x}")).collect();
            return Err(InitramfsError::UnknownFormat { offset, magic });
        };
        let in_segment = |source| InitramfsError::InCompressed {
            compression,
            offset,
            source: Box::new(source),
        };
        // Both decoders read from `input` as a BufRead and stop at the end of one
        // gzip member or zstd frame, leaving what follows in `input`. Boxed, so
        // that this function is not instantiated for ever deeper decoder types.
        let dec: Box<dyn Read + '_> = match compression {
            Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(&mut *input)),
            _ => Box::new(
                zstd::Decoder::with_buffer(&mut *input)
                    .map_err(|source| InitramfsError::Read { offset, source })?
                    .single_frame(),
            ),
        };
        let found = read_segments(&mut Input::new(dec), keep_data_max, out, false);
        archives += found.map_err(in_segment)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Entry, Kind};

    fn sample() -> Tree {
        let mut t = Tree::new(1_700_000_000);
        t.add_file("etc/hostname", "edge-7\n", 0o644).unwrap();
        t.add_file("bin/kios-init", vec![7u8; 100_000], 0o755)
            .unwrap();
        t.insert(
            TreePath::parse("sbin/init").unwrap(),
            Entry::symlink("/bin/kios-init"),
        )
        .unwrap();
        let link = Entry::new(Kind::Hardlink(TreePath::parse("bin/kios-init").unwrap()), 0);
        t.insert(TreePath::parse("bin/init").unwrap(), link)
            .unwrap();
        t.insert(
            TreePath::parse("dev/console").unwrap(),
            Entry::new(Kind::CharDevice { major: 5, minor: 1 }, 0o600),
        )
        .unwrap();
        t
    }

    #[test]
    fn compression_names_round_trip() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
        }
        let err = "xz".parse::<Compression>().unwrap_err().to_string();
        assert!(err.contains("none, gzip or zstd"), "{err}");
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let a = write_initramfs(&sample(), c, Vec::new()).unwrap();
            let b = write_initramfs(&sample(), c, Vec::new()).unwrap();
            assert!(a == b, "{c} output differs between two writes");
        }
    }

    #[test]
    fn gzip_header_has_no_time_and_no_name() {
        let out = write_initramfs(&sample(), Compression::Gzip, Vec::new()).unwrap();
        assert_eq!(
            &out[..4],
            &[0x1f, 0x8b, 8, 0],
            "deflate, no FNAME/FCOMMENT/FEXTRA"
        );
        assert_eq!(&out[4..8], &[0, 0, 0, 0], "mtime 0");
    }

    #[test]
    fn zstd_frame_window_fits_the_kernel() {
        let out = write_initramfs(&sample(), Compression::Zstd, Vec::new()).unwrap();
        assert_eq!(&out[..4], ZSTD_MAGIC);
        // RFC 8878 3.1.1.1: Frame_Header_Descriptor, then Window_Descriptor unless
        // Single_Segment_Flag (bit 5) is set.
        let fhd = out[4];
        assert!(fhd & 0x04 != 0, "content checksum flag");
        if fhd & 0x20 == 0 {
            let exponent = u32::from(out[5] >> 3);
            assert!(
                10 + exponent <= ZSTD_WINDOW_LOG,
                "window log {}",
                10 + exponent
            );
        }
    }

    #[test]
    fn what_is_written_reads_back() {
        let tree = sample();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let bytes = write_initramfs(&tree, c, Vec::new()).unwrap();
            let entries = read_initramfs(&bytes[..], 1 << 20).unwrap();
            let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
            let tree_paths: Vec<&str> = tree.iter().map(|(p, _)| p.as_str()).collect();
            assert_eq!(paths, tree_paths);
            for e in &entries {
                let t = tree.get(&e.path).unwrap();
                match (e.path.as_str(), &t.kind) {
                    // bin/init sorts first, so its target bin/kios-init, the last
                    // name of the pair, carries the data.
                    ("bin/init", _) => {
                        let target = (e.size, e.nlink, e.mode, e.mtime);
                        assert_eq!(target, (0, 2, 0o100755, tree.default_mtime));
                    }
                    ("bin/kios-init", _) => {
                        assert_eq!(e.data.as_deref(), Some(&[7u8; 100_000][..]));
                        assert_eq!(e.nlink, 2);
                    }
                    (_, Kind::File(content)) => {
                        assert_eq!((e.mode, e.mtime), (0o100000 | t.mode, t.mtime));
                        assert_eq!(e.data, Some(content.read_all().unwrap()));
                    }
                    (_, Kind::Symlink(target)) => assert_eq!(e.link_target.as_ref(), Some(target)),
                    (_, Kind::CharDevice { major, minor }) => assert_eq!(e.rdev, (*major, *minor)),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn concatenated_archives_are_all_read_like_the_kernel_does() {
        let mut first = Tree::new(0);
        first
            .add_file("kernel/x86/microcode/GenuineIntel.bin", "ucode", 0o644)
            .unwrap();
        let mut bytes = write_initramfs(&first, Compression::None, Vec::new()).unwrap();
        bytes.extend_from_slice(&[0u8; 512]);
        bytes = write_initramfs(&sample(), Compression::Zstd, bytes).unwrap();
        bytes = write_initramfs(&sample(), Compression::Gzip, bytes).unwrap();
        let entries = read_initramfs(&bytes[..], 0).unwrap();
        assert_eq!(entries.len(), first.len() + 2 * sample().len());
    }

    #[test]
    fn junk_after_an_archive_is_reported_with_its_offset() {
        let mut bytes = write_initramfs(&sample(), Compression::None, Vec::new()).unwrap();
        let end = bytes.len() as u64;
        bytes.extend_from_slice(b"BZh91AY");
        let err = read_initramfs(&bytes[..], 0).unwrap_err();
        assert!(
            matches!(err, InitramfsError::UnknownFormat { offset, .. } if offset == end),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_compressed_archive_is_an_error() {
        let bytes = write_initramfs(&sample(), Compression::Gzip, Vec::new()).unwrap();
        let err = read_initramfs(&bytes[..bytes.len() / 2], 0).unwrap_err();
        assert!(matches!(err, InitramfsError::InCompressed { .. }), "{err}");
        assert!(matches!(
            read_initramfs(&[][..], 0),
            Err(InitramfsError::NoArchive)
        ));
    }
}
