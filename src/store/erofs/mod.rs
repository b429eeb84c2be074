//! EROFS image writer: a [`Tree`] in, a read-only filesystem image out.
//!
//! This is the filesystem of the pre-seeded image store partition (`KIOS_STORE`).
//! It keeps what containers/storage needs from a layer exactly: owners, modes
//! (setuid included), device nodes (overlay whiteouts are 0:0 character devices),
//! hardlinks and xattrs (`trusted.overlay.opaque`, `user.overlay.*`,
//! `security.capability`), and it is written without root, deterministically (the
//! same tree and options give the same bytes), streaming file contents from their
//! [`Content`](crate::tree::Content) readers.
//!
//! Why a hand-written writer: the Rust squashfs writer (backhand) has no xattrs and
//! no hardlinks, and `mkfs.ext4 -d` / `mkfs.erofs` read the ownership from host
//! files, which only root can create. The uncompressed EROFS subset is small (a
//! superblock, 64-byte inodes, directory blocks, inline xattrs), the 6.1 kernel
//! mounts it, and erofs-utils' `fsck.erofs` checks it in `tests/store_erofs.rs`.
//! See `docs/store-filesystem.md`.
//!
//! What it does not do: compression, chunk-based or deduplicated data, shared
//! xattrs, long xattr name prefixes (kernel 6.4+: so only `user.`, `trusted.`,
//! `security.` and POSIX ACL names can be stored; others are refused), sockets
//! (the tree has none). [`format`] holds the on-disk structures, [`layout`] decides
//! where everything goes; this file writes.

mod format;
mod layout;
mod read;

pub use read::ErofsReader;

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::tree::{Kind, Tree, TreePath};
use format::{DirentRef, Inode, BLOCK_SIZE};
use layout::{Body, Node, Plan};

/// Image-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErofsOptions {
    /// The filesystem UUID (superblock `uuid`).
    pub uuid: [u8; 16],
    /// The volume label, at most 16 bytes (e.g. `KIOS_STORE`).
    pub volume_name: String,
    /// Build time in seconds since the epoch (superblock `build_time`).
    pub mtime: u64,
}

/// Why an image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ErofsError {
    #[error("volume name {name:?} is longer than the 16 bytes EROFS has for it")]
    VolumeName { name: String },
    #[error("{path}: xattr {name:?} cannot be stored in EROFS: {why}")]
    Xattr {
        path: TreePath,
        name: String,
        why: &'static str,
    },
    #[error("{path}: symlink cannot be stored: {why}")]
    Symlink { path: TreePath, why: &'static str },
    #[error(
        "{path}: device number {major}:{minor} does not fit EROFS (major < 4096, minor < 2^20)"
    )]
    Device {
        path: TreePath,
        major: u32,
        minor: u32,
    },
    #[error("{path}: hardlink cannot be stored: {why}")]
    Hardlink { path: TreePath, why: String },
    #[error("the image would exceed 2^32 blocks of 4 KiB (16 TiB)")]
    TooLarge,
    #[error("{path}: cannot read its content")]
    Read {
        path: TreePath,
        #[source]
        source: io::Error,
    },
    #[error("{path}: content has {got} bytes, the tree said {expected} (did the file change during the build?)")]
    ContentLength {
        path: TreePath,
        expected: u64,
        got: u64,
    },
    #[error("cannot write the EROFS image")]
    Write(#[source] io::Error),
}

/// Writes `tree` as an EROFS image to `out`, which must be positioned at 0 of a
/// fresh file or device; every byte of the image is written (no holes are left to
/// chance). Returns the image size in bytes, a multiple of 4096.
pub fn write_erofs<W: Write + Seek>(
    tree: &Tree,
    out: &mut W,
    opts: &ErofsOptions,
) -> Result<u64, ErofsError> {
    let volume_name = volume_name(&opts.volume_name)?;
    let plan = Plan::new(tree)?;
    let sb = format::SuperBlock {
        // The root is the first record after the superblock block: nid 128.
        root_nid: plan.nodes[0].nid() as u16,
        inos: plan.nodes.len() as u64,
        build_time: opts.mtime,
        blocks: plan.blocks as u32,
        meta_blkaddr: 0,
        xattr_blkaddr: 0,
        uuid: opts.uuid,
        volume_name,
    };
    let mut w = Cursors {
        out,
        at: 0,
        meta: 0,
        data: plan.data_start * BLOCK_SIZE,
    };
    w.write_at(0, &sb.encode_block())?;
    w.meta = BLOCK_SIZE;
    for (ino, node) in plan.nodes.iter().enumerate() {
        write_node(&mut w, &plan, node, ino as u32 + 1)?;
    }
    // Zero the rest of the metadata area's last block.
    w.write_at(
        w.meta,
        &vec![0; (plan.data_start * BLOCK_SIZE - w.meta) as usize],
    )?;
    debug_assert_eq!(w.data, plan.image_size());
    w.out.flush().map_err(ErofsError::Write)?;
    Ok(plan.image_size())
}

/// The size [`write_erofs`] will write for `tree`: exact when the tree can be
/// written, a generous upper bound when it cannot (the write then fails anyway).
pub fn size_estimate(tree: &Tree) -> u64 {
    if let Ok(plan) = Plan::new(tree) {
        return plan.image_size();
    }
    // Every entry in a block of its own, xattrs and names twice over, data rounded
    // up to blocks.
    let mut bytes = 2 * BLOCK_SIZE;
    for (path, entry) in tree.iter() {
        let xattrs: usize = entry
            .xattrs
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum();
        let data = match &entry.kind {
            Kind::File(c) => c.len(),
            Kind::Symlink(t) => t.len() as u64,
            _ => 0,
        };
        bytes += BLOCK_SIZE
            + 2 * (xattrs as u64 + path.as_str().len() as u64 + 16)
            + data.next_multiple_of(BLOCK_SIZE);
    }
    bytes.next_multiple_of(BLOCK_SIZE)
}

fn volume_name(name: &str) -> Result<[u8; 16], ErofsError> {
    let mut out = [0u8; 16];
    if name.len() > out.len() {
        return Err(ErofsError::VolumeName { name: name.into() });
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// The output with its two write positions: the metadata area grows from block 1,
/// the data area from `plan.data_start`; each only ever moves forward, and gaps are
/// written as zeros.
struct Cursors<'w, W> {
    out: &'w mut W,
    /// Where `out` is now.
    at: u64,
    /// End of what was written in the metadata area.
    meta: u64,
    /// End of what was written in the data area.
    data: u64,
}

impl<W: Write + Seek> Cursors<'_, W> {
    fn write_at(&mut self, pos: u64, bytes: &[u8]) -> Result<(), ErofsError> {
        if self.at != pos {
            self.out
                .seek(SeekFrom::Start(pos))
                .map_err(ErofsError::Write)?;
        }
        self.out.write_all(bytes).map_err(ErofsError::Write)?;
        self.at = pos + bytes.len() as u64;
        Ok(())
    }

    /// Writes a metadata record at `offset`, zero-filling the gap before it.
    fn meta_record(&mut self, offset: u64, record: &[u8]) -> Result<(), ErofsError> {
        debug_assert!(offset >= self.meta);
        let mut buf = vec![0u8; (offset - self.meta) as usize];
        buf.extend_from_slice(record);
        self.write_at(self.meta, &buf)?;
        self.meta = offset + record.len() as u64;
        Ok(())
    }

    /// Appends bytes to the data area.
    fn data(&mut self, bytes: &[u8]) -> Result<(), ErofsError> {
        self.write_at(self.data, bytes)?;
        self.data += bytes.len() as u64;
        Ok(())
    }

    /// Zero-fills the data area up to the next block boundary.
    fn pad_data(&mut self) -> Result<(), ErofsError> {
        let pad = self.data.next_multiple_of(BLOCK_SIZE) - self.data;
        self.data(&vec![0; pad as usize])
    }
}

/// Writes one inode: its whole data blocks to the data area, then its record
/// (inode, xattrs, inline tail) to the metadata area.
fn write_node<W: Write + Seek>(
    w: &mut Cursors<'_, W>,
    plan: &Plan<'_>,
    node: &Node<'_>,
    ino: u32,
) -> Result<(), ErofsError> {
    debug_assert!(node.data_blocks() == 0 || w.data == u64::from(node.blkaddr) * BLOCK_SIZE);
    let entry = node.entry;
    let i_u = match node.body {
        Body::None => node.rdev,
        _ => node.blkaddr,
    };
    let tail: Vec<u8> = match &node.body {
        Body::None => Vec::new(),
        Body::File(content) => {
            let reader = content.open().map_err(|source| ErofsError::Read {
                path: node.path.clone(),
                source,
            })?;
            copy_file(w, node, reader)?
        }
        Body::Symlink(target) => split_data(w, node, target)?,
        Body::Dir(children) => {
            let entries: Vec<DirentRef> = children
                .iter()
                .map(|c| {
                    let target = &plan.nodes[c.node];
                    DirentRef {
                        name: c.name,
                        nid: target.nid(),
                        file_type: target.file_type,
                    }
                })
                .collect();
            split_data(w, node, &format::encode_dir(&entries))?
        }
    };
    let inode = Inode {
        layout: node.layout,
        // Checked when the plan encoded the xattrs.
        xattr_icount: format::xattr_icount(node.xattrs.len()).unwrap_or(0),
        mode: (entry.type_bits() | (entry.mode & 0o7777)) as u16,
        size: node.size,
        i_u,
        ino,
        uid: entry.uid,
        gid: entry.gid,
        mtime: entry.mtime,
        nlink: node.nlink,
    };
    let mut record = Vec::with_capacity(node.record_len());
    record.extend_from_slice(&inode.encode());
    record.extend_from_slice(&node.xattrs);
    record.extend_from_slice(&tail);
    debug_assert_eq!(record.len(), node.record_len());
    w.meta_record(node.offset, &record)
}

/// Writes in-memory data (a directory, a symlink target): whole blocks to the data
/// area, and returns the inline tail (empty for `FLAT_PLAIN`).
fn split_data<W: Write + Seek>(
    w: &mut Cursors<'_, W>,
    node: &Node<'_>,
    data: &[u8],
) -> Result<Vec<u8>, ErofsError> {
    let in_blocks = data.len() - node.inline_len();
    if in_blocks > 0 {
        w.data(&data[..in_blocks])?;
        w.pad_data()?;
    }
    Ok(data[in_blocks..].to_vec())
}

/// Streams a file's content: whole blocks to the data area through a fixed buffer,
/// and returns the inline tail. Fails when the content is not exactly as long as
/// the tree said.
fn copy_file<W: Write + Seek>(
    w: &mut Cursors<'_, W>,
    node: &Node<'_>,
    mut reader: Box<dyn Read + Send>,
) -> Result<Vec<u8>, ErofsError> {
    let expected = node.size;
    let in_blocks = expected - node.inline_len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    let mut tail = Vec::with_capacity(node.inline_len());
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ErofsError::Read {
                    path: node.path.clone(),
                    source,
                })
            }
        };
        let chunk = &buf[..n];
        if done + n as u64 > expected {
            done += n as u64;
            break;
        }
        // The part of this chunk that belongs to the data blocks, the rest to the tail.
        let to_blocks = (in_blocks.saturating_sub(done)).min(n as u64) as usize;
        if to_blocks > 0 {
            w.data(&chunk[..to_blocks])?;
        }
        tail.extend_from_slice(&chunk[to_blocks..]);
        done += n as u64;
    }
    if done != expected {
        return Err(ErofsError::ContentLength {
            path: node.path.clone(),
            expected,
            got: done,
        });
    }
    if in_blocks > 0 {
        w.pad_data()?;
    }
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Content, Entry};
    use std::io::Cursor;

    fn opts() -> ErofsOptions {
        ErofsOptions {
            uuid: [7; 16],
            volume_name: "KIOS_STORE".into(),
            mtime: 1_700_000_000,
        }
    }

    fn sample() -> Tree {
        let mut t = Tree::new(1_600_000_000);
        t.add_file("etc/hostname", "kios\n", 0o644).unwrap();
        t.add_file("big", vec![0x5a; 3 * 4096 + 100], 0o755)
            .unwrap();
        t.insert(
            TreePath::parse("lnk").unwrap(),
            Entry::symlink("etc/hostname"),
        )
        .unwrap();
        t
    }

    #[test]
    fn image_is_block_aligned_and_matches_the_estimate() {
        let t = sample();
        let mut out = Cursor::new(Vec::new());
        let size = write_erofs(&t, &mut out, &opts()).unwrap();
        assert_eq!(size % 4096, 0);
        assert_eq!(out.get_ref().len() as u64, size);
        assert_eq!(size_estimate(&t), size);
        assert_eq!(&out.get_ref()[1024..1028], &0xE0F5_E1E2u32.to_le_bytes());
    }

    #[test]
    fn file_blocks_land_at_their_blkaddr_and_the_tail_after_the_inode() {
        let t = sample();
        let mut out = Cursor::new(Vec::new());
        write_erofs(&t, &mut out, &opts()).unwrap();
        let img = out.into_inner();
        let plan = Plan::new(&t).unwrap();
        let big = plan
            .nodes
            .iter()
            .find(|n| n.path.as_str() == "big")
            .unwrap();
        let start = big.blkaddr as usize * 4096;
        assert!(img[start..start + 3 * 4096].iter().all(|&b| b == 0x5a));
        let tail_at = big.offset as usize + 64;
        assert!(img[tail_at..tail_at + 100].iter().all(|&b| b == 0x5a));
    }

    #[test]
    fn a_content_shorter_than_declared_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("f");
        std::fs::write(&host, b"short").unwrap();
        let mut t = Tree::new(0);
        t.insert(
            TreePath::parse("f").unwrap(),
            Entry::file(
                Content::Host {
                    path: host.into(),
                    offset: 0,
                    len: 10,
                },
                0o644,
            ),
        )
        .unwrap();
        let err = write_erofs(&t, &mut Cursor::new(Vec::new()), &opts()).unwrap_err();
        assert!(
            matches!(err, ErofsError::ContentLength { got: 5, .. }),
            "{err}"
        );
    }

    #[test]
    fn long_volume_names_and_huge_device_numbers_are_refused() {
        let mut o = opts();
        o.volume_name = "A_VERY_LONG_VOLUME_NAME".into();
        assert!(matches!(
            write_erofs(&Tree::new(0), &mut Cursor::new(Vec::new()), &o),
            Err(ErofsError::VolumeName { .. })
        ));
        let mut t = Tree::new(0);
        t.insert(
            TreePath::parse("dev").unwrap(),
            Entry::new(
                Kind::CharDevice {
                    major: 5000,
                    minor: 1,
                },
                0o600,
            ),
        )
        .unwrap();
        assert!(matches!(
            write_erofs(&t, &mut Cursor::new(Vec::new()), &opts()),
            Err(ErofsError::Device { major: 5000, .. })
        ));
    }
}
