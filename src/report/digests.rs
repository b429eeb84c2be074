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

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::disk::gpt::Table;
use crate::oci::digest::Sha256Reader;
use crate::oci::Digest;
use crate::tree::{Kind, Tree};

/// How much is read at a time.
const CHUNK: usize = 1 << 20;

/// The sha256 and size of the file at `path`, read once.
pub fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    Sha256Reader::new(File::open(path)?).finish()
}

/// A raw disk's digest and its partitions', in the table's order.
#[derive(Clone, Debug)]
pub struct DiskDigests {
    pub sha256: Digest,
    pub size: u64,
    pub partitions: Vec<Digest>,
}

/// Hashes the raw disk at `path` and each partition of `table` in one pass.
pub fn hash_disk(path: &Path, table: &Table) -> io::Result<DiskDigests> {
    let mut f = File::open(path)?;
    let ranges: Vec<(u64, u64)> = table
        .partitions
        .iter()
        .map(|p| (p.offset(), p.offset().saturating_add(p.size())))
        .collect();
    let mut whole = Sha256::new();
    let mut parts: Vec<Sha256> = ranges.iter().map(|_| Sha256::new()).collect();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        whole.update(chunk);
        let end = pos + n as u64;
        for ((start, stop), h) in ranges.iter().zip(parts.iter_mut()) {
            let (a, b) = ((*start).max(pos), (*stop).min(end));
            if a < b {
                h.update(&chunk[(a - pos) as usize..(b - pos) as usize]);
            }
        }
        pos = end;
    }
    if let Some((_, stop)) = ranges.iter().find(|(_, stop)| *stop > pos) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the disk ends at byte {pos}, before its partition ending at {stop}"),
        ));
    }
    Ok(DiskDigests {
        sha256: Digest::from_hasher(whole),
        size: pos,
        partitions: parts.into_iter().map(Digest::from_hasher).collect(),
    })
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
