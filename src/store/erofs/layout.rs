//! Where every inode and data block of the image goes, decided before a byte is
//! written.
//!
//! The image is laid out as:
//! block 0 = the superblock; from block 1 the metadata area (`meta_blkaddr` = 0, so
//! nid = byte offset / 32): one record per inode in tree order, root first, each
//! record being the 64-byte extended inode, its inline xattrs and, for
//! `FLAT_INLINE`, the tail of its data, or for a compressed file its map header and
//! cluster index; after it, the data area: each inode's whole blocks (or
//! pclusters), consecutive, in the same order.
//!
//! With compression on, every regular file longer than a block is compressed;
//! smaller ones stay inline in the metadata, where they take no block at all. The
//! choice depends on the size alone, so the metadata area is laid out before any
//! data is compressed: only the data blocks' addresses wait for the writer.
//!
//! Records are 32-byte aligned (inode slots) and never cross a block boundary when
//! they fit in one: the kernel requires it for inline tails ("inline data cross
//! block boundary" in `erofs_map_blocks_flatmode`), and keeping whole inodes in one
//! block keeps readers simple. Only a record larger than a block (huge xattrs) spans
//! blocks; it then starts on a block boundary and has no inline tail.
//!
//! The plan only needs the tree's metadata and content lengths, so it also gives
//! [`super::size_estimate`] the exact size of an uncompressed image (and a bound
//! for a compressed one).

use std::collections::HashMap;

use super::format::{self, file_type, DataLayout, XattrRef, BLOCK_SIZE, INODE_EXTENDED_SIZE};
use super::ErofsError;
use crate::tree::{Content, Entry, Kind, Tree, TreePath};

/// What an inode holds as data.
pub enum Body<'t> {
    /// Devices and fifos: no data.
    None,
    File(&'t Content),
    Symlink(&'t [u8]),
    /// Directory entries sorted by name bytes, `.` and `..` included.
    Dir(Vec<Child<'t>>),
}

/// A directory entry before nids are known: it names a node.
pub struct Child<'t> {
    pub name: &'t [u8],
    pub node: usize,
}

/// One inode of the image.
pub struct Node<'t> {
    pub path: &'t TreePath,
    pub entry: &'t Entry,
    pub body: Body<'t>,
    pub file_type: u8,
    pub nlink: u32,
    /// The encoded inline xattr area (empty without xattrs).
    pub xattrs: Vec<u8>,
    /// `i_size`.
    pub size: u64,
    pub layout: DataLayout,
    /// Byte offset of the inode in the image.
    pub offset: u64,
    /// Device number, encoded (devices only).
    pub rdev: u32,
}

impl Node<'_> {
    pub fn nid(&self) -> u64 {
        self.offset / format::INODE_SLOT
    }

    pub fn compressed(&self) -> bool {
        self.layout == DataLayout::CompressedFull
    }

    /// Blocks of data in the data area; for a compressed file, the most it can
    /// take (a block per 4 KiB, and a short extent at the end of each segment).
    pub fn data_blocks(&self) -> u64 {
        match self.layout {
            DataLayout::FlatPlain => self.size.div_ceil(BLOCK_SIZE),
            DataLayout::FlatInline => self.size / BLOCK_SIZE,
            DataLayout::CompressedFull => {
                self.size.div_ceil(BLOCK_SIZE) + super::compress::segments(self.size)
            }
        }
    }

    /// Bytes of data stored after the inode and its xattrs.
    pub fn inline_len(&self) -> usize {
        match self.layout {
            DataLayout::FlatPlain | DataLayout::CompressedFull => 0,
            DataLayout::FlatInline => (self.size % BLOCK_SIZE) as usize,
        }
    }

    /// The whole metadata record: inode, xattrs, and the inline tail or the
    /// cluster index. (Records start 32-byte aligned, so the index's 8-byte
    /// alignment does not depend on where.)
    pub fn record_len(&self) -> usize {
        let head = INODE_EXTENDED_SIZE + self.xattrs.len();
        match self.layout {
            DataLayout::CompressedFull => {
                format::compressed_record_len(head as u64, self.size) as usize
            }
            _ => head + self.inline_len(),
        }
    }
}

/// The whole layout.
pub struct Plan<'t> {
    /// Root first, in tree order.
    pub nodes: Vec<Node<'t>>,
    /// First block after the metadata area.
    pub data_start: u64,
    /// Blocks in the image: exact without compression, the most it can take with.
    pub blocks: u64,
}

impl<'t> Plan<'t> {
    /// The layout of `tree`, with every file longer than a block compressed when
    /// `compress` is set.
    pub fn new(tree: &'t Tree, compress: bool) -> Result<Plan<'t>, ErofsError> {
        let mut nodes = collect_nodes(tree)?;
        if compress {
            for n in &mut nodes {
                if matches!(n.body, Body::File(_)) && n.size > BLOCK_SIZE {
                    n.layout = DataLayout::CompressedFull;
                }
            }
        }
        place_metadata(&mut nodes);
        let meta_end = nodes
            .iter()
            .map(|n| n.offset + n.record_len() as u64)
            .max()
            .unwrap_or(BLOCK_SIZE);
        let data_start = meta_end.div_ceil(BLOCK_SIZE);
        let next = data_start + nodes.iter().map(|n| n.data_blocks()).sum::<u64>();
        // A compressed image is checked again as it is written (it is smaller).
        if next > u64::from(u32::MAX) && !compress {
            return Err(ErofsError::TooLarge);
        }
        Ok(Plan {
            nodes,
            data_start,
            blocks: next,
        })
    }

    pub fn image_size(&self) -> u64 {
        self.blocks * BLOCK_SIZE
    }
}

/// One node per inode (hardlinks share their target's), with directory entries,
/// link counts, sizes and encoded xattrs.
fn collect_nodes(tree: &Tree) -> Result<Vec<Node<'_>>, ErofsError> {
    let mut nodes: Vec<Node> = Vec::with_capacity(tree.len());
    let mut index: HashMap<&TreePath, usize> = HashMap::with_capacity(tree.len());
    for (path, entry) in tree.iter() {
        let (body, ftype) = match &entry.kind {
            Kind::Hardlink(_) => continue,
            Kind::Dir => (Body::Dir(Vec::new()), file_type::DIR),
            Kind::File(c) => (Body::File(c), file_type::REG_FILE),
            Kind::Symlink(target) => {
                check_symlink(path, target)?;
                (Body::Symlink(target.as_bytes()), file_type::SYMLINK)
            }
            Kind::CharDevice { .. } => (Body::None, file_type::CHRDEV),
            Kind::BlockDevice { .. } => (Body::None, file_type::BLKDEV),
            Kind::Fifo => (Body::None, file_type::FIFO),
        };
        let rdev = match entry.kind {
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                format::encode_rdev(major, minor).ok_or_else(|| ErofsError::Device {
                    path: path.clone(),
                    major,
                    minor,
                })?
            }
            _ => 0,
        };
        index.insert(path, nodes.len());
        nodes.push(Node {
            path,
            entry,
            body,
            file_type: ftype,
            nlink: if ftype == file_type::DIR { 2 } else { 1 },
            xattrs: encode_xattrs(path, entry)?,
            size: 0,
            layout: DataLayout::FlatPlain,
            offset: 0,
            rdev,
        });
    }

    // Directory entries, hardlinks resolved to their final target.
    for (path, entry) in tree.iter() {
        let Some(parent) = path.parent() else {
            continue; // the root
        };
        let node = match &entry.kind {
            Kind::Hardlink(_) => resolve_hardlink(tree, &index, path)?,
            _ => index[path],
        };
        let parent_node = *index.get(&parent).ok_or_else(|| ErofsError::Hardlink {
            path: path.clone(),
            why: "its parent directory is not in the tree".into(),
        })?;
        match nodes[node].file_type {
            file_type::DIR => nodes[parent_node].nlink += 1,
            _ if matches!(entry.kind, Kind::Hardlink(_)) => nodes[node].nlink += 1,
            _ => {}
        }
        if let Body::Dir(children) = &mut nodes[parent_node].body {
            children.push(Child {
                name: path.file_name().as_bytes(),
                node,
            });
        }
    }

    for (i, node) in nodes.iter_mut().enumerate() {
        let parent = match node.path.parent() {
            Some(p) => index[&p],
            None => i,
        };
        node.size = match &mut node.body {
            Body::None => 0,
            Body::File(c) => c.len(),
            Body::Symlink(t) => t.len() as u64,
            Body::Dir(children) => {
                children.push(Child {
                    name: b".",
                    node: i,
                });
                children.push(Child {
                    name: b"..",
                    node: parent,
                });
                // Byte order, as the kernel's lookup compares names.
                children.sort_by(|a, b| a.name.cmp(b.name));
                let lens: Vec<usize> = children.iter().map(|c| c.name.len()).collect();
                format::dir_size(&lens)
            }
        };
    }
    Ok(nodes)
}

/// Follows a chain of hardlinks to the inode they share.
fn resolve_hardlink(
    tree: &Tree,
    index: &HashMap<&TreePath, usize>,
    path: &TreePath,
) -> Result<usize, ErofsError> {
    let mut cur = path;
    for _ in 0..tree.len() {
        let err = |why: &str| ErofsError::Hardlink {
            path: path.clone(),
            why: why.to_string(),
        };
        match tree.get(cur).map(|e| &e.kind) {
            Some(Kind::Hardlink(target)) => cur = target,
            Some(Kind::Dir) => return Err(err("its target is a directory")),
            Some(_) => return Ok(index[cur]),
            None => return Err(err(&format!("its target {cur} is not in the tree"))),
        }
    }
    Err(ErofsError::Hardlink {
        path: path.clone(),
        why: "the hardlinks form a loop".into(),
    })
}

fn check_symlink(path: &TreePath, target: &str) -> Result<(), ErofsError> {
    let why = if target.is_empty() {
        "its target is empty"
    } else if target.len() >= BLOCK_SIZE as usize {
        "its target is 4096 bytes or longer"
    } else if target.contains('\0') {
        "its target contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(ErofsError::Symlink {
        path: path.clone(),
        why,
    })
}

/// Encodes an entry's xattrs (in name order) as an inline xattr area.
fn encode_xattrs(path: &TreePath, entry: &Entry) -> Result<Vec<u8>, ErofsError> {
    let mut refs = Vec::with_capacity(entry.xattrs.len());
    for (name, value) in &entry.xattrs {
        let err = |why| ErofsError::Xattr {
            path: path.clone(),
            name: name.clone(),
            why,
        };
        let (index, suffix) = format::xattr_name_index(name).ok_or_else(|| {
            err("EROFS stores only user.*, trusted.*, security.* and POSIX ACL xattrs")
        })?;
        if name.len() > 255 {
            return Err(err("its name is longer than 255 bytes"));
        }
        if value.len() > usize::from(u16::MAX) {
            return Err(err("its value is longer than 65535 bytes"));
        }
        refs.push(XattrRef {
            index,
            suffix: suffix.as_bytes(),
            value,
        });
    }
    let body = format::encode_xattr_ibody(&refs);
    if format::xattr_icount(body.len()).is_none() {
        return Err(ErofsError::Xattr {
            path: path.clone(),
            name: String::new(),
            why: "its xattrs together are too large for one inode",
        });
    }
    Ok(body)
}

/// Chooses each inode's data layout and places its record in the metadata area.
///
/// A data tail goes inline when the record then still fits in one block; when the
/// current block has no room left for it, the tail goes inline in the next block
/// if that wastes fewer bytes than giving the tail a data block of its own. Same
/// tree, same choices: the layout depends on nothing else.
fn place_metadata(nodes: &mut [Node<'_>]) {
    let block = BLOCK_SIZE as usize;
    let mut pos = BLOCK_SIZE; // block 0 is the superblock's
    for n in nodes.iter_mut() {
        let head = INODE_EXTENDED_SIZE + n.xattrs.len();
        let tail = (n.size % BLOCK_SIZE) as usize;
        let room = block - (pos % BLOCK_SIZE) as usize;
        // Padding to the next block wastes `room`; a data block of its own wastes
        // `block - tail`, plus `room` too when even the bare inode does not fit.
        let inline = n.layout != DataLayout::CompressedFull
            && tail > 0
            && head + tail <= block
            && (head + tail <= room || room < block - tail || head > room);
        if n.layout != DataLayout::CompressedFull {
            n.layout = if inline {
                DataLayout::FlatInline
            } else {
                DataLayout::FlatPlain
            };
        }
        let len = n.record_len();
        if len > room && (len <= block || room < block) {
            pos = pos.next_multiple_of(BLOCK_SIZE);
        }
        n.offset = pos;
        pos = (pos + len as u64).next_multiple_of(format::INODE_SLOT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Entry;

    fn p(s: &str) -> TreePath {
        TreePath::parse(s).unwrap()
    }

    #[test]
    fn hardlinks_share_an_inode_and_count_links() {
        let mut t = Tree::new(0);
        t.add_file("a/f", "data", 0o644).unwrap();
        t.insert(p("b/g"), Entry::new(Kind::Hardlink(p("a/f")), 0o644))
            .unwrap();
        t.insert(p("b/h"), Entry::new(Kind::Hardlink(p("b/g")), 0o644))
            .unwrap();
        let plan = Plan::new(&t, false).unwrap();
        // root, a, a/f, b: the links are no inodes of their own
        assert_eq!(plan.nodes.len(), 4);
        let f = plan.nodes.iter().find(|n| n.path == &p("a/f")).unwrap();
        assert_eq!(f.nlink, 3);
        let root = &plan.nodes[0];
        assert_eq!(root.nlink, 4); // ".", "..", a/.., b/..
        let Body::Dir(b_children) = &plan.nodes[3].body else {
            panic!("b is a dir")
        };
        let names: Vec<&[u8]> = b_children.iter().map(|c| c.name).collect();
        assert_eq!(names, [&b"."[..], b"..", b"g", b"h"]);
        assert!(b_children[2..]
            .iter()
            .all(|c| plan.nodes[c.node].path == &p("a/f")));
    }

    #[test]
    fn a_hardlink_to_nothing_or_to_a_directory_is_refused() {
        let mut t = Tree::new(0);
        t.insert(p("x"), Entry::new(Kind::Hardlink(p("missing")), 0o644))
            .unwrap();
        assert!(matches!(
            Plan::new(&t, false),
            Err(ErofsError::Hardlink { .. })
        ));
        let mut t = Tree::new(0);
        t.mkdir_p(&p("d"), 0o755).unwrap();
        t.insert(p("x"), Entry::new(Kind::Hardlink(p("d")), 0o644))
            .unwrap();
        assert!(matches!(
            Plan::new(&t, false),
            Err(ErofsError::Hardlink { .. })
        ));
    }

    #[test]
    fn records_never_cross_a_block_and_tails_go_inline_when_they_fit() {
        let mut t = Tree::new(0);
        for i in 0..200 {
            t.add_file(&format!("f{i:03}"), vec![b'x'; 1000 + i * 13], 0o644)
                .unwrap();
        }
        t.add_file("big", vec![0u8; 4096 * 2 + 10], 0o644).unwrap();
        t.add_file("exact", vec![0u8; 4096], 0o644).unwrap();
        t.add_file("empty", Vec::new(), 0o644).unwrap();
        let plan = Plan::new(&t, false).unwrap();
        assert_eq!(plan.nodes[0].nid(), 128); // root right after the superblock
        for n in &plan.nodes {
            let start = n.offset;
            let end = start + n.record_len() as u64 - 1;
            assert_eq!(start % 32, 0);
            assert_eq!(start / 4096, end / 4096, "{} crosses a block", n.path);
            assert!(start >= 4096 && end < plan.data_start * 4096);
        }
        let by = |s: &str| plan.nodes.iter().find(|n| n.path == &p(s)).unwrap();
        assert_eq!(by("big").layout, DataLayout::FlatInline);
        assert_eq!(by("big").data_blocks(), 2);
        assert_eq!(by("exact").layout, DataLayout::FlatPlain);
        assert_eq!(by("exact").data_blocks(), 1);
        assert_eq!(by("empty").data_blocks(), 0);
        // Data blocks are consecutive and end where the image ends.
        let total: u64 = plan.nodes.iter().map(|n| n.data_blocks()).sum();
        assert_eq!(plan.blocks, plan.data_start + total);
    }

    #[test]
    fn unknown_xattr_prefixes_and_bad_symlinks_are_refused() {
        let mut t = Tree::new(0);
        let mut e = Entry::file(Content::inline("x"), 0o644);
        e.xattrs.insert("system.nfs4_acl".into(), b"v".to_vec());
        t.insert(p("f"), e).unwrap();
        let err = Plan::new(&t, false).err().unwrap();
        assert!(err.to_string().contains("system.nfs4_acl"), "{err}");

        let mut t = Tree::new(0);
        t.insert(p("l"), Entry::symlink("")).unwrap();
        assert!(matches!(
            Plan::new(&t, false),
            Err(ErofsError::Symlink { .. })
        ));
    }
}
