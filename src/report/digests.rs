//! sha256 of what the report names, each computed by streaming (a partition or a
//! file is never held in memory): a file, a raw disk and its partitions in one pass,
//! and a filesystem tree.
//!
//! The tree digest (`docs/report.md`, "Tree digest") is defined here: sha256 over
//! one record per entry, in the tree's order (bytewise by path, the root first),
//! each record being these fields, each followed by a NUL byte:
//! `/PATH`, type (`dir`, `file`, `symlink`, `hardlink`, `char`, `block`, `fifo`),
//! the permission bits in octal (4 digits), uid, gid (decimal), the detail (a file's
//! content sha256 in hex, a symlink's target, a hard link's `/PATH`, a device's
//! `MAJOR:MINOR`, empty otherwise), the number of extended attributes, then each
//! attribute's name and value in hex, sorted by name. No field can hold a NUL (paths,
//! link targets and attribute names cannot), so the stream reads back one way.
//! Modification times are left out: they are `SOURCE_DATE_EPOCH` for a local folder.

use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::disk::gpt::Table;
use crate::format::source::RawImage;
use crate::format::{Format, FormatError};
use crate::oci::digest::{Sha256Reader, Sha256Writer};
use crate::oci::Digest;
use crate::tree::{Kind, Tree};

/// The sha256 and size of the file at `path`, read once.
pub fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    Sha256Reader::new(std::fs::File::open(path)?).finish()
}

/// [`hash_file`] for an image file, whose holes (a VHD is a sparse raw disk) are
/// hashed as zeros from memory rather than read.
pub fn hash_image(path: &Path) -> io::Result<(Digest, u64)> {
    let mut w = Sha256Writer::new(io::sink());
    RawImage::open(path)
        .and_then(|mut f| f.copy_all(&mut w, write_error))
        .map_err(io::Error::other)?;
    let (digest, size, _) = w.finish();
    Ok((digest, size))
}

/// How [`RawImage::copy_all`] reports a failed write into a hasher (which cannot fail
/// but for the disk hasher's thread).
fn write_error(source: io::Error) -> FormatError {
    FormatError::Write {
        format: Format::Raw,
        source,
    }
}

/// A raw disk's digest and its partitions', in the table's order.
#[derive(Clone, Debug)]
pub struct DiskDigests {
    pub sha256: Digest,
    pub size: u64,
    pub partitions: Vec<Digest>,
}

/// Hashes the raw disk at `path` and each partition of `table` in one pass. Holes
/// are hashed as zeros from memory, not read ([`RawImage::copy_all`]): reading a
/// hole fills the page cache with zeros, which costs more than hashing them. Every
/// byte is hashed twice (the disk's digest and its partition's), so the disk's
/// digest is computed on a second thread, a chunk behind.
pub fn hash_disk(path: &Path, table: &Table) -> io::Result<DiskDigests> {
    let mut image = RawImage::open(path).map_err(io::Error::other)?;
    let ranges: Vec<(u64, u64)> = table
        .partitions
        .iter()
        .map(|p| (p.offset(), p.offset().saturating_add(p.size())))
        .collect();
    let (whole, split) = std::thread::scope(|s| -> io::Result<(Sha256, Split)> {
        // Chunks go to the disk's hasher and come back to be filled again, so a
        // few buffers serve the whole pass.
        let (to_hash, chunks) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let (give_back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let whole = s.spawn(move || {
            let mut h = Sha256::new();
            for chunk in chunks {
                h.update(&chunk);
                let _ = give_back.send(chunk);
            }
            h
        });
        let mut split = Split {
            pos: 0,
            parts: ranges.iter().map(|&r| (r, Sha256::new())).collect(),
            to_hash: Some(to_hash),
            spare,
        };
        let copied = image.copy_all(&mut split, write_error);
        // The hasher stops when the sender is dropped.
        split.to_hash = None;
        let h = whole
            .join()
            .map_err(|_| io::Error::other("the disk's hashing thread failed"))?;
        copied.map_err(io::Error::other)?;
        Ok((h, split))
    })?;
    let size = split.pos;
    if let Some(((_, stop), _)) = split.parts.iter().find(|((_, stop), _)| *stop > size) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the disk ends at byte {size}, before its partition ending at {stop}"),
        ));
    }
    Ok(DiskDigests {
        sha256: Digest::from_hasher(whole),
        size,
        partitions: split
            .parts
            .into_iter()
            .map(|(_, h)| Digest::from_hasher(h))
            .collect(),
    })
}

/// The bytes of a disk, in order: each goes to the partition it falls in and, through
/// the channel, to the disk's hasher.
struct Split {
    pos: u64,
    /// Each partition's byte range and hasher.
    parts: Vec<((u64, u64), Sha256)>,
    to_hash: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl Write for Split {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (pos, end) = (self.pos, self.pos + buf.len() as u64);
        for ((start, stop), h) in self.parts.iter_mut() {
            let (a, b) = ((*start).max(pos), (*stop).min(end));
            if a < b {
                h.update(&buf[(a - pos) as usize..(b - pos) as usize]);
            }
        }
        let mut chunk = self.spare.try_recv().unwrap_or_default();
        chunk.clear();
        chunk.extend_from_slice(buf);
        self.to_hash
            .as_ref()
            .and_then(|t| t.send(chunk).ok())
            .ok_or_else(|| io::Error::other("the disk's hashing thread stopped"))?;
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A tree's digest (see the module doc) and what it counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeDigest {
    pub digest: Digest,
    /// Entries, the root included.
    pub entries: u64,
    /// Regular files (hard links not counted).
    pub files: u64,
    /// The regular files' bytes.
    pub bytes: u64,
}

/// The digest of `tree`, reading every file's content once.
pub fn tree_digest(tree: &Tree) -> io::Result<TreeDigest> {
    let mut h = Sha256::new();
    let (mut entries, mut files, mut bytes) = (0u64, 0u64, 0u64);
    for (path, e) in tree.iter() {
        entries += 1;
        let (kind, detail) = match &e.kind {
            Kind::Dir => ("dir", String::new()),
            Kind::File(c) => {
                files += 1;
                bytes += c.len();
                let (d, _) = Sha256Reader::new(c.open()?).finish()?;
                ("file", d.hex().to_string())
            }
            Kind::Symlink(t) => ("symlink", t.clone()),
            Kind::Hardlink(to) => ("hardlink", format!("/{}", to.as_str())),
            Kind::CharDevice { major, minor } => ("char", format!("{major}:{minor}")),
            Kind::BlockDevice { major, minor } => ("block", format!("{major}:{minor}")),
            Kind::Fifo => ("fifo", String::new()),
        };
        let mut field = |s: &[u8]| {
            h.update(s);
            h.update([0u8]);
        };
        field(format!("/{}", path.as_str()).as_bytes());
        field(kind.as_bytes());
        field(format!("{:04o}", e.mode & 0o7777).as_bytes());
        field(e.uid.to_string().as_bytes());
        field(e.gid.to_string().as_bytes());
        field(detail.as_bytes());
        field(e.xattrs.len().to_string().as_bytes());
        // A BTreeMap: sorted by name.
        for (name, value) in &e.xattrs {
            field(name.as_bytes());
            field(hex::encode(value).as_bytes());
        }
    }
    Ok(TreeDigest {
        digest: Digest::from_hasher(h),
        entries,
        files,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Content, Entry, TreePath};

    const CHUNK: usize = 1 << 20;

    fn sample() -> Tree {
        let mut t = Tree::new(0);
        t.insert(
            TreePath::parse("etc/hostname").unwrap(),
            Entry::file(Content::inline(b"node\n".to_vec()), 0o644),
        )
        .unwrap();
        t.insert(
            TreePath::parse("bin/sh").unwrap(),
            Entry::symlink("busybox"),
        )
        .unwrap();
        t
    }

    /// The stream the module doc defines, written out by hand for a small tree.
    #[test]
    fn the_tree_digest_is_the_documented_stream() {
        let content = hex::encode(Sha256::digest(b"node\n"));
        let mut expected = Vec::new();
        for rec in [
            vec!["/", "dir", "0755", "0", "0", "", "0"],
            vec!["/bin", "dir", "0755", "0", "0", "", "0"],
            vec!["/bin/sh", "symlink", "0777", "0", "0", "busybox", "0"],
            vec!["/etc", "dir", "0755", "0", "0", "", "0"],
            vec!["/etc/hostname", "file", "0644", "0", "0", &content, "0"],
        ] {
            for f in rec {
                expected.extend_from_slice(f.as_bytes());
                expected.push(0);
            }
        }
        let d = tree_digest(&sample()).unwrap();
        assert_eq!(d.digest, Digest::of_bytes(&expected));
        assert_eq!((d.entries, d.files, d.bytes), (5, 1, 5));
    }

    #[test]
    fn the_tree_digest_changes_with_content_mode_owner_and_xattrs_not_mtime() {
        let base = tree_digest(&sample()).unwrap().digest;
        let p = TreePath::parse("etc/hostname").unwrap();
        let changed = |f: &dyn Fn(&mut Entry)| {
            let mut t = sample();
            f(t.get_mut(&p).unwrap());
            tree_digest(&t).unwrap().digest
        };
        assert_eq!(changed(&|e| e.mtime = 12345), base);
        assert_ne!(changed(&|e| e.mode = 0o600), base);
        assert_ne!(changed(&|e| e.uid = 1), base);
        assert_ne!(changed(&|e| e.gid = 1), base);
        assert_ne!(
            changed(&|e| e.kind = Kind::File(Content::inline(b"nodf\n".to_vec()))),
            base
        );
        assert_ne!(
            changed(&|e| {
                e.xattrs.insert("security.capability".into(), vec![1]);
            }),
            base
        );
    }

    #[test]
    fn a_sparse_image_hashes_as_its_bytes() {
        use std::os::unix::fs::FileExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sparse");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(5 * CHUNK as u64 + 7).unwrap();
        f.write_all_at(b"data", 2 * CHUNK as u64 - 2).unwrap();
        drop(f);
        let bytes = std::fs::read(&path).unwrap();
        let want = (Digest::of_bytes(&bytes), bytes.len() as u64);
        assert_eq!(hash_image(&path).unwrap(), want);
        assert_eq!(hash_file(&path).unwrap(), want);
    }

    #[test]
    fn a_disk_and_its_partitions_are_hashed_in_one_pass() {
        use crate::disk::gpt::{Guid, Partition};
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("disk");
        // Partitions straddling the read chunks.
        let mut bytes = vec![0u8; 3 * CHUNK + 1024];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        std::fs::write(&path, &bytes).unwrap();
        let part = |first: u64, last: u64| Partition {
            type_guid: Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            guid: Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: String::new(),
        };
        let table = Table {
            disk_guid: Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            disk_size: bytes.len() as u64,
            partitions: vec![part(1, 2047), part(2048, 6145)],
        };
        let got = hash_disk(&path, &table).unwrap();
        assert_eq!(got.sha256, Digest::of_bytes(&bytes));
        assert_eq!(got.size, bytes.len() as u64);
        assert_eq!(got.partitions[0], Digest::of_bytes(&bytes[512..2048 * 512]));
        assert_eq!(
            got.partitions[1],
            Digest::of_bytes(&bytes[2048 * 512..6146 * 512])
        );
        let short = Table {
            partitions: vec![part(1, 7000)],
            ..table
        };
        assert!(hash_disk(&path, &short).is_err());
    }
}
