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
//! Compression (`store: {compression: lz4hc}`): files longer than a block become
//! LZ4 pclusters of one block each, made on every core by [`compress`], mapped by
//! full cluster indexes; the 6.1 kernel, erofs-utils 1.5 and podman read them as
//! they read plain files (`tests/store_erofs.rs`, `tests/store_image.rs`).
//!
//! What it does not do: chunk-based or deduplicated data, tail packing, shared
//! xattrs, long xattr name prefixes (kernel 6.4+: so only `user.`, `trusted.`,
//! `security.` and POSIX ACL names can be stored; others are refused), sockets
//! (the tree has none). [`format`] holds the on-disk structures, [`layout`] decides
//! where everything goes; this file writes.

pub mod compress;
mod format;
mod layout;
mod read;

pub use compress::Compression;
pub use read::ErofsReader;

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::tree::{Kind, Tree, TreePath};
use format::{DirentRef, Inode, BLOCK_SIZE};
use layout::{Body, Node, Plan};

/// Image-wide settings.
#[derive(Clone, Debug, Default)]
pub struct ErofsOptions {
    /// The filesystem UUID (superblock `uuid`).
    pub uuid: [u8; 16],
    /// The volume label, at most 16 bytes (e.g. `KIOS_STORE`).
    pub volume_name: String,
    /// Build time in seconds since the epoch (superblock `build_time`).
    pub mtime: u64,
    /// How files longer than a block are compressed; `None` stores them plain.
    pub compression: Option<Compression>,
    /// Threads compressing (0: the cores this process may use, or
    /// `KIOS_BUILD_JOBS`). The bytes do not depend on it.
    pub workers: usize,
    /// Where compression shows how far it is.
    pub busy: crate::progress::Busy,
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
    let plan = Plan::new(tree, opts.compression.is_some())?;
    let mut w = Cursors {
        out,
        at: 0,
        meta: BLOCK_SIZE,
        data: plan.data_start * BLOCK_SIZE,
    };
    match opts.compression {
        Some(algo) if plan.nodes.iter().any(|n| n.compressed()) => {
            let workers = match opts.workers {
                0 => crate::store::cstorage::workers(),
                n => n,
            };
            std::thread::scope(|s| {
                let mut pipe = compress::Pipeline::start(s, &plan.nodes, algo, workers);
                let mut progress = Progress::new(&plan, algo, &opts.busy);
                write_nodes(&mut w, &plan, Some((&mut pipe, &mut progress)))
            })?
        }
        _ => write_nodes(&mut w, &plan, None)?,
    }
    // Zero the rest of the metadata area's last block.
    w.write_at(
        w.meta,
        &vec![0; (plan.data_start * BLOCK_SIZE - w.meta) as usize],
    )?;
    let blocks = w.data / BLOCK_SIZE;
    let sb = format::SuperBlock {
        // The root is the first record after the superblock block: nid 128.
        root_nid: plan.nodes[0].nid() as u16,
        inos: plan.nodes.len() as u64,
        build_time: opts.mtime,
        blocks: u32::try_from(blocks).map_err(|_| ErofsError::TooLarge)?,
        meta_blkaddr: 0,
        xattr_blkaddr: 0,
        uuid: opts.uuid,
        volume_name,
        feature_incompat: if plan.nodes.iter().any(|n| n.compressed()) {
            format::FEATURE_INCOMPAT_ZERO_PADDING
        } else {
            0
        },
    };
    w.write_at(0, &sb.encode_block())?;
    debug_assert!(opts.compression.is_some() || blocks == plan.blocks);
    w.out.flush().map_err(ErofsError::Write)?;
    Ok(blocks * BLOCK_SIZE)
}

/// Writes every inode in order; `compressing` is the compressor and its progress,
/// when the image has compressed files.
fn write_nodes<W: Write + Seek>(
    w: &mut Cursors<'_, W>,
    plan: &Plan<'_>,
    mut compressing: Option<(&mut compress::Pipeline, &mut Progress<'_>)>,
) -> Result<(), ErofsError> {
    for (ino, node) in plan.nodes.iter().enumerate() {
        let ino = ino as u32 + 1;
        match compressing.as_mut() {
            Some((pipe, progress)) if node.compressed() => {
                write_compressed(w, node, ino, pipe)?;
                progress.file_done(node.size);
            }
            _ => write_node(w, plan, node, ino)?,
        }
    }
    Ok(())
}

/// Shows how much of the data to compress is written (`image store: compressing
/// (lz4hc) 120 of 290 MiB`), at most every 8 MiB.
struct Progress<'b> {
    busy: &'b crate::progress::Busy,
    algo: String,
    total_mib: u64,
    done: u64,
    shown_mib: u64,
}

impl<'b> Progress<'b> {
    fn new(plan: &Plan<'_>, algo: Compression, busy: &'b crate::progress::Busy) -> Progress<'b> {
        let total: u64 = plan
            .nodes
            .iter()
            .filter(|n| n.compressed())
            .map(|n| n.size)
            .sum();
        Progress {
            busy,
            algo: algo.name(),
            total_mib: total >> 20,
            done: 0,
            shown_mib: u64::MAX,
        }
    }

    fn file_done(&mut self, size: u64) {
        self.done += size;
        let mib = self.done >> 20;
        if self.shown_mib == u64::MAX || mib >= self.shown_mib + 8 {
            self.shown_mib = mib;
            self.busy.set(format!(
                "image store: compressing ({}) {mib} of {} MiB",
                self.algo, self.total_mib
            ));
        }
    }
}

/// The size [`write_erofs`] will write for `tree`: exact when the tree can be
/// written, a generous upper bound when it cannot (the write then fails anyway).
pub fn size_estimate(tree: &Tree) -> u64 {
    if let Ok(plan) = Plan::new(tree, false) {
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
    let i_u = match node.body {
        Body::None => node.rdev,
        // The first of its whole data blocks, if it has any (0 when not).
        _ if node.data_blocks() > 0 => blkaddr(w.data)?,
        _ => 0,
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
    let mut record = record_head(node, ino, i_u);
    record.extend_from_slice(&tail);
    debug_assert_eq!(record.len(), node.record_len());
    w.meta_record(node.offset, &record)
}

/// The start of an inode's record: the inode (`i_u` as given: block address,
/// device number or compressed block count) and its xattrs, with room for the rest.
fn record_head(node: &Node<'_>, ino: u32, i_u: u32) -> Vec<u8> {
    let entry = node.entry;
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
    record
}

/// A block address in the image: the data cursor `pos`, which must fit 32 bits.
fn blkaddr(pos: u64) -> Result<u32, ErofsError> {
    u32::try_from(pos / BLOCK_SIZE).map_err(|_| ErofsError::TooLarge)
}

/// Writes one compressed file: its pclusters from the pipeline to the data area,
/// then its record (inode, xattrs, map header, cluster index).
fn write_compressed<W: Write + Seek>(
    w: &mut Cursors<'_, W>,
    node: &Node<'_>,
    ino: u32,
    pipe: &mut compress::Pipeline,
) -> Result<(), ErofsError> {
    // Each extent: where it starts in the file, its block, plain or not.
    let mut extents: Vec<(u64, u32, bool)> = Vec::new();
    let mut offset = 0u64;
    for _ in 0..compress::segments(node.size) {
        let packed = pipe.next_segment()?;
        let mut block = blkaddr(w.data)?;
        w.data(&packed.blocks)?;
        for e in &packed.extents {
            extents.push((offset, block, e.plain));
            offset += u64::from(e.len);
            block = block.checked_add(1).ok_or(ErofsError::TooLarge)?;
        }
    }
    debug_assert_eq!(offset, node.size);
    // i_u.compressed_blocks
    let mut record = record_head(node, ino, extents.len() as u32);
    let head = record.len() as u64;
    record.resize(format::map_header_offset(head) as usize, 0);
    record.extend_from_slice(&format::map_header());
    record.resize(format::full_index_offset(head) as usize, 0);
    for entry in cluster_index(&extents, node.size) {
        record.extend_from_slice(&entry.encode());
    }
    debug_assert_eq!(record.len(), node.record_len());
    w.meta_record(node.offset, &record)
}

/// One index entry per 4 KiB logical cluster of a file of `size` bytes, from its
/// extents in order (`(start, blkaddr, plain)`). Every extent but the last is at
/// least a block long, so at most one starts in any cluster, and every cluster
/// either holds a start (HEAD) or lies inside one extent (NONHEAD, with the
/// distance back to the cluster of its start and ahead to the next start).
fn cluster_index(extents: &[(u64, u32, bool)], size: u64) -> Vec<format::Lcluster> {
    let clusters = size.div_ceil(BLOCK_SIZE);
    let mut out = Vec::with_capacity(clusters as usize);
    let mut e = 0; // the extent covering the start of cluster `lcn`, or starting in it
    for lcn in 0..clusters {
        let lo = lcn * BLOCK_SIZE;
        while e + 1 < extents.len() && extents[e + 1].0 <= lo {
            e += 1;
        }
        let start = extents[e].0;
        // The extent starting in this cluster: at its first byte, or further in.
        let starts_here = if start == lo {
            Some(e)
        } else {
            extents
                .get(e + 1)
                .filter(|n| n.0 < lo + BLOCK_SIZE)
                .map(|_| e + 1)
        };
        out.push(match starts_here {
            Some(i) => format::Lcluster::Head {
                plain: extents[i].2,
                clusterofs: (extents[i].0 - lo) as u16,
                blkaddr: extents[i].1,
            },
            None => {
                let next = extents.get(e + 1).map_or(clusters, |n| n.0 / BLOCK_SIZE);
                format::Lcluster::NonHead {
                    clusterofs: (start % BLOCK_SIZE) as u16,
                    // Extents are at most 64 KiB: both distances are below 17.
                    back: (lcn - start / BLOCK_SIZE) as u16,
                    ahead: (next - lcn) as u16,
                }
            }
        });
    }
    out
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
            ..Default::default()
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
        let plan = Plan::new(&t, false).unwrap();
        let big = plan
            .nodes
            .iter()
            .find(|n| n.path.as_str() == "big")
            .unwrap();
        let at = big.offset as usize;
        let start = u32::from_le_bytes(img[at + 16..at + 20].try_into().unwrap()) as usize * 4096;
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
