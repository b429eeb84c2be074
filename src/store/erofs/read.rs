//! EROFS reader: enough of the format to find a file by path and read it, for
//! `inspect` to list the store from the partition itself rather than from what the
//! build says it wrote.
//!
//! It reads what [`super::write_erofs`] writes, and what `mkfs.erofs` writes
//! without `-z`: compact and extended inodes, the flat plain and flat inline data
//! layouts, directory blocks, and LZ4-compressed files with full cluster indexes and
//! one-block pclusters (not the compact indexes, big pclusters, tail packing or
//! fragments `mkfs.erofs -z` may use). Everything is bounds-checked against the
//! partition: a damaged or hostile image gives an `InvalidData` error, never a panic
//! or an unbounded allocation.

use std::io::{self, Read, Seek, SeekFrom};

use super::format::{DIRENT_SIZE, INODE_SLOT, MAGIC, SUPER_OFFSET};

const LAYOUT_FLAT_PLAIN: u8 = 0;
const LAYOUT_COMPRESSED_FULL: u8 = 1;
const LAYOUT_FLAT_INLINE: u8 = 2;
const S_IFMT: u16 = 0o170000;
const S_IFDIR: u16 = 0o040000;
const S_IFREG: u16 = 0o100000;
const S_IFLNK: u16 = 0o120000;
/// Directories larger than this are refused (a store's largest holds one entry per
/// layer and image: thousands, not millions).
const MAX_DIR: u64 = 64 << 20;

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// An EROFS filesystem at `offset` of `r` (a partition of a disk image), `len`
/// bytes long.
pub struct ErofsReader<R> {
    r: R,
    offset: u64,
    len: u64,
    block_size: u64,
    meta: u64,
    root: u64,
    /// The superblock's build time: the mtime of compact inodes.
    build_time: u64,
    /// `feature_incompat`.
    incompat: u32,
    /// Bytes decompressed so far, against [`Self::decode_budget`].
    decoded: u64,
}

/// One file, folder or link of the filesystem, as [`ErofsReader::walk`] gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErofsEntry {
    /// Relative, `/`-separated; the root is `""`.
    pub path: String,
    /// The full `st_mode`, type bits included.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub size: u64,
    /// sha256 of a regular file's data or a symlink's target.
    pub sha256: Option<[u8; 32]>,
}

/// What the reader needs of an inode.
#[derive(Clone, Debug)]
struct Inode {
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: u64,
    size: u64,
    layout: u8,
    blkaddr: u64,
    /// Where an inline tail starts (after the inode and its xattrs).
    inline_at: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

impl<R: Read + Seek> ErofsReader<R> {
    /// Reads the superblock; fails unless it is EROFS with a block size of 512 B to
    /// 64 KiB.
    pub fn open(mut r: R, offset: u64, len: u64) -> io::Result<Self> {
        let mut sb = [0u8; 128];
        if len < (SUPER_OFFSET + sb.len()) as u64 {
            return Err(bad("too small for an EROFS superblock"));
        }
        r.seek(SeekFrom::Start(offset + SUPER_OFFSET as u64))?;
        r.read_exact(&mut sb)?;
        if u32_at(&sb, 0) != MAGIC {
            return Err(bad("no EROFS superblock (bad magic)"));
        }
        let bits = sb[12];
        if !(9..=16).contains(&bits) {
            return Err(bad(format!("block size 2^{bits} is not supported")));
        }
        let block_size = 1u64 << bits;
        let root = u64::from(u16_at(&sb, 14));
        let meta = u64::from(u32_at(&sb, 40)) * block_size;
        Ok(ErofsReader {
            r,
            offset,
            len,
            block_size,
            meta,
            root,
            build_time: u64_at(&sb, 24),
            incompat: u32_at(&sb, 80),
            decoded: 0,
        })
    }

    /// How many bytes all compressed extents may decode to, together: an extent
    /// this writer makes holds at most 16 times its block, so a sound image
    /// decodes to at most 16 times its size. A hostile one whose index points
    /// many extents at one block stops here, not after gigabytes.
    fn decode_budget(&self) -> u64 {
        self.len.saturating_mul(16).saturating_add(1 << 20)
    }

    /// Whether the filesystem has LZ4-compressed files: the zero padding feature,
    /// which the writers set with LZ4 compression (ours only then).
    pub fn lz4_compressed(&self) -> bool {
        self.incompat & super::format::FEATURE_INCOMPAT_ZERO_PADDING != 0
    }

    /// `len` bytes at `at` (relative to the filesystem), checked against its end.
    fn read_at(&mut self, at: u64, len: u64) -> io::Result<Vec<u8>> {
        if len == 0 {
            // Nothing to read; the address may be EROFS' null block (0xffffffff).
            return Ok(Vec::new());
        }
        match at.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(bad(format!(
                    "{len} bytes at {at} lie beyond the filesystem"
                )))
            }
        }
        self.r.seek(SeekFrom::Start(self.offset + at))?;
        let mut buf = vec![0u8; len as usize];
        self.r.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn inode(&mut self, nid: u64) -> io::Result<Inode> {
        let at = nid
            .checked_mul(INODE_SLOT)
            .and_then(|x| x.checked_add(self.meta))
            .ok_or_else(|| bad(format!("inode {nid} is out of range")))?;
        let head = self.read_at(at, 32)?;
        let format = u16_at(&head, 0);
        let extended = format & 1 == 1;
        let layout = ((format >> 1) & 0x7) as u8;
        let xattr_count = u64::from(u16_at(&head, 2));
        let mode = u16_at(&head, 4);
        // (size, blkaddr, inode size, uid, gid, mtime)
        let (size, blkaddr, inode_size, uid, gid, mtime) = if extended {
            let full = self.read_at(at, 64)?;
            (
                u64_at(&full, 8),
                u64::from(u32_at(&full, 16)),
                64,
                u32_at(&full, 24),
                u32_at(&full, 28),
                u64_at(&full, 32),
            )
        } else {
            (
                u64::from(u32_at(&head, 8)),
                u64::from(u32_at(&head, 16)),
                32,
                u32::from(u16_at(&head, 24)),
                u32::from(u16_at(&head, 26)),
                self.build_time,
            )
        };
        let xattrs = if xattr_count == 0 {
            0
        } else {
            12 + (xattr_count - 1) * 4
        };
        Ok(Inode {
            mode,
            uid,
            gid,
            mtime,
            size,
            layout,
            blkaddr,
            inline_at: at + inode_size + xattrs,
        })
    }

    /// The inode's data, at most `max` bytes long.
    fn data(&mut self, ino: &Inode, max: u64) -> io::Result<Vec<u8>> {
        if ino.size > max {
            return Err(bad(format!(
                "{} bytes is more than the {max} bytes allowed",
                ino.size
            )));
        }
        let mut out = Vec::with_capacity(ino.size as usize);
        self.each_chunk(ino, &mut |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    /// Hands the inode's data to `f` in order, at most 1 MiB at a time.
    fn each_chunk(
        &mut self,
        ino: &Inode,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let start = ino.blkaddr * self.block_size; // u32 block times at most 64 KiB
        let in_blocks = match ino.layout {
            LAYOUT_FLAT_PLAIN => ino.size,
            LAYOUT_FLAT_INLINE => ino.size - ino.size % self.block_size,
            LAYOUT_COMPRESSED_FULL => return self.each_extent(ino, f),
            other => {
                return Err(bad(format!(
                    "data layout {other} (compact compressed indexes or chunks) is not supported"
                )))
            }
        };
        let mut done = 0;
        while done < in_blocks {
            let n = (in_blocks - done).min(1 << 20);
            f(&self.read_at(start + done, n)?)?;
            done += n;
        }
        if ino.layout == LAYOUT_FLAT_INLINE {
            f(&self.read_at(ino.inline_at, ino.size - in_blocks)?)?;
        }
        Ok(())
    }

    /// A compressed file's extents, decompressed in order. The index gives each
    /// extent's start (a HEAD entry: its cluster and offset) and block; an extent
    /// ends where the next starts. NONHEAD entries only say an extent goes on.
    fn each_extent(
        &mut self,
        ino: &Inode,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let bs = self.block_size;
        if bs != 4096 {
            return Err(bad(
                "a compressed file in a filesystem whose blocks are not 4 KiB",
            ));
        }
        let header_at = super::format::map_header_offset(ino.inline_at);
        let header = self.read_at(header_at, 8)?;
        // h_advise, h_algorithmtype, h_clusterbits: only full indexes over one-block
        // pclusters of LZ4 with block-sized logical clusters are read here.
        if u16_at(&header, 4) != 0 || header[6] & 0x0f != 0 || header[7] != 0 {
            return Err(bad(
                "a compressed file uses features this reader does not read (big pclusters, tail packing, fragments, an algorithm other than LZ4)",
            ));
        }
        let clusters = ino.size.div_ceil(bs);
        let index_at = super::format::full_index_offset(ino.inline_at);
        // Every entry must lie in the filesystem: this also bounds the loop below.
        if clusters
            .checked_mul(8)
            .and_then(|n| n.checked_add(index_at))
            .map_or(true, |end| end > self.len)
        {
            return Err(bad("a compressed file's index lies beyond the filesystem"));
        }
        // The extent being read: (start in the file, block, plain), and the cluster
        // it starts in.
        let mut open: Option<(u64, u64, bool)> = None;
        let mut head_lcn = 0;
        let mut lcn = 0;
        while lcn < clusters {
            let n = (clusters - lcn).min(512);
            let entries = self.read_at(index_at + lcn * 8, n * 8)?;
            for e in entries.chunks(8) {
                let kind = u16_at(e, 0) & 3;
                if kind == 2 {
                    // NONHEAD: the kernel follows its distance back to the start.
                    if open.is_none() || u64::from(u16_at(e, 4)) != lcn - head_lcn {
                        return Err(bad(
                            "a compressed file's index points a cluster at the wrong extent",
                        ));
                    }
                    lcn += 1;
                    continue;
                }
                if kind == 3 {
                    return Err(bad("a compressed file uses HEAD2 clusters"));
                }
                let start = lcn * bs + u64::from(u16_at(e, 2));
                if u64::from(u16_at(e, 2)) >= bs || (open.is_none() && start != 0) {
                    return Err(bad("a compressed file's index has an invalid extent start"));
                }
                if let Some(prev) = open.replace((start, u64::from(u32_at(e, 4)), kind == 0)) {
                    self.extent(prev, start, f)?;
                }
                head_lcn = lcn;
                lcn += 1;
            }
        }
        match open {
            // The kernel maps the last extent to the end of its last cluster and
            // refuses a plain one longer than its block.
            Some((start, _, true)) if start / bs != (ino.size - 1) / bs => Err(bad(
                "a compressed file's last plain extent crosses a cluster boundary (the kernel refuses it)",
            )),
            Some(last) => self.extent(last, ino.size, f),
            None if ino.size == 0 => Ok(()),
            None => Err(bad("a compressed file's index has no extent")),
        }
    }

    /// One extent, `(start, block, plain)` up to `end`, to `f`.
    fn extent(
        &mut self,
        (start, block, plain): (u64, u64, bool),
        end: u64,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let len = end
            .checked_sub(start)
            .filter(|&l| l > 0 && l <= super::compress::MAX_DECODED as u64)
            .filter(|&l| !plain || l <= self.block_size)
            .ok_or_else(|| bad("a compressed file's extent has an invalid length"))?;
        let raw = self.read_at(block * self.block_size, self.block_size)?;
        if plain {
            return f(&raw[..len as usize]);
        }
        self.decoded += len;
        if self.decoded > self.decode_budget() {
            return Err(bad(
                "the compressed files decode to more than a filesystem of this size can hold",
            ));
        }
        let mut out = vec![0u8; len as usize];
        super::compress::decompress_block(&raw, &mut out)?;
        f(&out)
    }

    /// The entries of directory `ino`: (name, nid).
    fn entries(&mut self, ino: &Inode) -> io::Result<Vec<(Vec<u8>, u64)>> {
        let data = self.data(ino, MAX_DIR)?;
        let mut out = Vec::new();
        for block in data.chunks(self.block_size as usize) {
            if block.len() < DIRENT_SIZE {
                return Err(bad("a directory block is shorter than one entry"));
            }
            let first = usize::from(u16_at(block, 8));
            if first < DIRENT_SIZE || first % DIRENT_SIZE != 0 || first > block.len() {
                return Err(bad("a directory block's first name offset is invalid"));
            }
            let count = first / DIRENT_SIZE;
            for i in 0..count {
                let d = &block[i * DIRENT_SIZE..(i + 1) * DIRENT_SIZE];
                let nid = u64_at(d, 0);
                let start = usize::from(u16_at(d, 8));
                let end = if i + 1 < count {
                    usize::from(u16_at(block, (i + 1) * DIRENT_SIZE + 8))
                } else {
                    block.len()
                };
                if start > end || end > block.len() || start < first {
                    return Err(bad("a directory entry's name lies outside its block"));
                }
                let mut name = &block[start..end];
                if i + 1 == count {
                    // The last name runs to the end of the block's used part.
                    if let Some(nul) = name.iter().position(|&b| b == 0) {
                        name = &name[..nul];
                    }
                }
                out.push((name.to_vec(), nid));
            }
        }
        Ok(out)
    }

    /// sha256 of the inode's data, read a block at a time.
    fn digest(&mut self, ino: &Inode) -> io::Result<[u8; 32]> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        self.each_chunk(ino, &mut |chunk| {
            h.update(chunk);
            Ok(())
        })?;
        Ok(h.finalize().into())
    }

    /// Every entry below the root (the root first), depth first in directory order,
    /// with its metadata and, for files and symlinks, a digest of its data. At most
    /// `max_entries`, and a directory reached twice (a loop in a hostile image) is an
    /// error.
    pub fn walk(&mut self, max_entries: usize) -> io::Result<Vec<ErofsEntry>> {
        let mut out = Vec::new();
        let mut seen_dirs = std::collections::HashSet::new();
        // A file reached by several names (hardlinks) is read once.
        let mut digests: std::collections::HashMap<u64, [u8; 32]> = Default::default();
        let mut stack = vec![(String::new(), self.root)];
        while let Some((path, nid)) = stack.pop() {
            if out.len() >= max_entries {
                return Err(bad(format!("more than {max_entries} entries")));
            }
            let ino = self.inode(nid)?;
            let kind = ino.mode & S_IFMT;
            let sha256 = match kind {
                S_IFREG | S_IFLNK => Some(match digests.get(&nid) {
                    Some(d) => *d,
                    None => {
                        let d = self.digest(&ino)?;
                        digests.insert(nid, d);
                        d
                    }
                }),
                _ => None,
            };
            out.push(ErofsEntry {
                path: path.clone(),
                mode: ino.mode,
                uid: ino.uid,
                gid: ino.gid,
                mtime: ino.mtime,
                size: ino.size,
                sha256,
            });
            if kind == S_IFDIR {
                if !seen_dirs.insert(nid) {
                    return Err(bad(format!("directory {path:?} is reached twice")));
                }
                let mut children: Vec<(String, u64)> = self
                    .entries(&ino)?
                    .into_iter()
                    .filter(|(n, _)| n != b"." && n != b"..")
                    .map(|(n, c)| {
                        let name = String::from_utf8_lossy(&n).into_owned();
                        let p = if path.is_empty() {
                            name
                        } else {
                            format!("{path}/{name}")
                        };
                        (p, c)
                    })
                    .collect();
                children.reverse();
                stack.extend(children);
            }
        }
        Ok(out)
    }

    /// The regular file at `path` (relative, `/`-separated), at most `max` bytes;
    /// `None` when there is no such file.
    pub fn read_file(&mut self, path: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
        let mut ino = self.inode(self.root)?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if ino.mode & S_IFMT != S_IFDIR {
                return Ok(None);
            }
            let entries = self.entries(&ino)?;
            let Some((_, nid)) = entries.into_iter().find(|(n, _)| n == part.as_bytes()) else {
                return Ok(None);
            };
            ino = self.inode(nid)?;
        }
        if ino.mode & S_IFMT != S_IFREG {
            return Ok(None);
        }
        self.data(&ino, max).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::erofs::{write_erofs, ErofsOptions};
    use crate::tree::Tree;
    use std::io::Cursor;

    fn image_of(t: &Tree) -> Vec<u8> {
        let mut img = Cursor::new(Vec::new());
        let opts = ErofsOptions {
            uuid: [1; 16],
            volume_name: "T".into(),
            mtime: 0,
            ..Default::default()
        };
        write_erofs(t, &mut img, &opts).unwrap();
        img.into_inner()
    }

    fn compressed_image_of(t: &Tree, c: crate::store::erofs::Compression) -> Vec<u8> {
        let mut img = Cursor::new(Vec::new());
        let opts = ErofsOptions {
            compression: Some(c),
            workers: 2,
            ..Default::default()
        };
        write_erofs(t, &mut img, &opts).unwrap();
        img.into_inner()
    }

    #[test]
    fn compressed_files_read_back_as_the_plain_ones() {
        use crate::store::erofs::Compression;
        let mut t = Tree::new(0);
        let text: Vec<u8> = (0..2_300_000u32)
            .flat_map(|i| format!("line {} of the store\n", i % 977).into_bytes())
            .take(2_300_000)
            .collect();
        t.add_file("text", text.clone(), 0o644).unwrap();
        t.add_file("zeros", vec![0u8; 70_000], 0o644).unwrap();
        t.add_file("small", "tiny", 0o644).unwrap();
        let plain = image_of(&t);
        let mut plain_reader =
            ErofsReader::open(Cursor::new(&plain), 0, plain.len() as u64).unwrap();
        assert!(!plain_reader.lz4_compressed());
        let plain_walk = plain_reader.walk(100).unwrap();
        for c in [Compression::Lz4, Compression::Lz4hc { level: 9 }] {
            let img = compressed_image_of(&t, c);
            assert!(
                img.len() * 4 < plain.len(),
                "{c:?}: {} of {}",
                img.len(),
                plain.len()
            );
            let mut r = ErofsReader::open(Cursor::new(&img), 0, img.len() as u64).unwrap();
            assert_eq!(r.read_file("text", 4 << 20).unwrap().unwrap(), text);
            assert_eq!(
                r.read_file("zeros", 1 << 20).unwrap().unwrap(),
                vec![0u8; 70_000]
            );
            assert_eq!(r.walk(100).unwrap(), plain_walk, "{c:?}");
            assert!(r.lz4_compressed());
            // A changed byte in a pcluster is an error naming the extent, not a panic
            // or wrong data.
            let mut bad = img.clone();
            let last = bad.len() - 4096 * 20 - 1;
            bad[last] ^= 0xff;
            let mut r = ErofsReader::open(Cursor::new(&bad), 0, bad.len() as u64).unwrap();
            match r.read_file("text", 4 << 20) {
                Ok(Some(got)) => assert_ne!(got, text, "{c:?}: a changed byte went unseen"),
                Ok(None) => panic!("text vanished"),
                Err(e) => assert!(e.to_string().contains("extent"), "{e}"),
            }
        }
    }

    #[test]
    fn a_hostile_cluster_index_or_decode_bomb_is_refused() {
        use crate::store::erofs::Compression;
        let mut t = Tree::new(0);
        let text: Vec<u8> = (0..30_000u32)
            .flat_map(|i| format!("{} ", i % 89).into_bytes())
            .collect();
        t.add_file("text", text.clone(), 0o644).unwrap();
        let img = compressed_image_of(&t, Compression::Lz4);
        let open =
            |img: &[u8]| ErofsReader::open(Cursor::new(img.to_vec()), 0, img.len() as u64).unwrap();
        let mut r = open(&img);
        let root = r.inode(r.root).unwrap();
        let nid = r
            .entries(&root)
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == b"text")
            .unwrap()
            .1;
        let ino = r.inode(nid).unwrap();
        assert_eq!(ino.layout, LAYOUT_COMPRESSED_FULL);
        // The first NONHEAD entry, pointed one cluster further back than its head.
        let index = crate::store::erofs::format::full_index_offset(ino.inline_at);
        let clusters = ino.size.div_ceil(4096);
        let nonhead = (0..clusters)
            .map(|l| (index + 8 * l) as usize)
            .find(|&at| u16_at(&img, at) & 3 == 2)
            .expect("a cluster inside an extent");
        let mut bad_index = img.clone();
        bad_index[nonhead + 4] += 1;
        let err = open(&bad_index).read_file("text", 1 << 20).unwrap_err();
        assert!(err.to_string().contains("wrong extent"), "{err}");
        // Decoding stops at the budget a filesystem of this size allows.
        let mut r = open(&img);
        assert_eq!(r.read_file("text", 1 << 20).unwrap().unwrap(), text);
        r.decoded = r.decode_budget();
        let err = r.read_file("text", 1 << 20).unwrap_err();
        assert!(err.to_string().contains("decode to more"), "{err}");
    }

    #[test]
    fn files_written_by_our_writer_read_back() {
        let mut t = Tree::new(0);
        t.add_file("etc/hostname", "kios\n", 0o644).unwrap();
        t.add_file("big", vec![0x5a; 3 * 4096 + 100], 0o644)
            .unwrap();
        t.add_file("exact", vec![7; 4096], 0o644).unwrap();
        // Enough entries for several directory blocks.
        for i in 0..400 {
            t.add_file(
                &format!("many/file-with-a-long-name-{i:04}"),
                format!("{i}"),
                0o644,
            )
            .unwrap();
        }
        let bytes = image_of(&t);
        // At an offset, as a partition of a disk.
        let mut disk = vec![0u8; 8192];
        disk.extend_from_slice(&bytes);
        let len = bytes.len() as u64;
        let mut r = ErofsReader::open(Cursor::new(disk), 8192, len).unwrap();
        assert_eq!(
            r.read_file("etc/hostname", 100).unwrap().unwrap(),
            b"kios\n"
        );
        assert_eq!(
            r.read_file("big", 1 << 20).unwrap().unwrap(),
            vec![0x5a; 3 * 4096 + 100]
        );
        assert_eq!(
            r.read_file("exact", 1 << 20).unwrap().unwrap(),
            vec![7; 4096]
        );
        for i in [0, 1, 199, 399] {
            let got = r
                .read_file(&format!("many/file-with-a-long-name-{i:04}"), 100)
                .unwrap()
                .unwrap();
            assert_eq!(got, format!("{i}").as_bytes());
        }
        assert!(r.read_file("many/nope", 100).unwrap().is_none());
        // The walk: every entry once, with its metadata and data digest.
        let all = r.walk(10_000).unwrap();
        // root, etc, etc/hostname, big, exact, many, many/*
        assert_eq!(all.len(), 6 + 400);
        let big = all.iter().find(|e| e.path == "big").unwrap();
        use sha2::Digest;
        let want: [u8; 32] = sha2::Sha256::digest(vec![0x5a; 3 * 4096 + 100]).into();
        assert_eq!(big.sha256, Some(want));
        assert_eq!(
            (big.mode & 0o7777, big.uid, big.gid, big.size),
            (0o644, 0, 0, 3 * 4096 + 100)
        );
        assert!(r
            .walk(10)
            .unwrap_err()
            .to_string()
            .contains("more than 10 entries"));
        assert!(r.read_file("etc", 100).unwrap().is_none(), "a directory");
        assert!(r.read_file("etc/hostname/x", 100).unwrap().is_none());
        // Limits hold.
        assert!(r.read_file("big", 100).is_err());
    }

    #[test]
    fn damaged_images_are_errors_not_panics() {
        assert!(ErofsReader::open(Cursor::new(vec![0u8; 4096]), 0, 4096).is_err());
        let mut t = Tree::new(0);
        t.add_file("a/b", "x", 0o644).unwrap();
        let good = image_of(&t);
        // Flip every byte after the superblock in turn: reading may fail, never panic.
        for at in (2048..good.len()).step_by(7) {
            let mut b = good.clone();
            b[at] ^= 0xff;
            let len = b.len() as u64;
            if let Ok(mut r) = ErofsReader::open(Cursor::new(b), 0, len) {
                let _ = r.read_file("a/b", 1 << 20);
            }
        }
        // A filesystem cut short.
        let cut = good[..good.len() / 2].to_vec();
        let len = cut.len() as u64;
        if let Ok(mut r) = ErofsReader::open(Cursor::new(cut), 0, len) {
            let _ = r.read_file("a/b", 1 << 20);
        }
    }
}
