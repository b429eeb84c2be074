//! The EROFS on-disk structures this writer emits, encoded by hand.
//!
//! Layouts follow the kernel's `fs/erofs/erofs_fs.h` (the same file ships as
//! `include/erofs_fs.h` in erofs-utils); section names below refer to
//! `Documentation/filesystems/erofs.rst`, "On-disk details". Everything is little
//! endian. The subset here: flat and LZ4-compressed data with full (8-byte) cluster
//! indexes; no chunk-based layouts, compact inodes or compact indexes, shared
//! xattrs, or long xattr name prefixes.

use std::ops::Range;

/// Block size: 4096, the only size the 6.1 kernel mounts on x86-64 (it must equal
/// `PAGE_SIZE` there).
pub const BLOCK_SIZE: u64 = 4096;
pub const BLOCK_BITS: u8 = 12;
/// The superblock starts 1024 bytes in ("Summary": room for x86 boot sectors).
pub const SUPER_OFFSET: usize = 1024;
pub const MAGIC: u32 = 0xE0F5_E1E2;
/// `EROFS_FEATURE_COMPAT_SB_CHKSUM`: the superblock carries a crc32c.
pub const FEATURE_COMPAT_SB_CHKSUM: u32 = 0x1;
/// `EROFS_FEATURE_INCOMPAT_ZERO_PADDING` (once `LZ4_0PADDING`): a compressed
/// pcluster's bytes end at its block's end, zeros before them. Set only when the
/// image has compressed files; the 6.1 kernel knows it (it predates 5.3).
pub const FEATURE_INCOMPAT_ZERO_PADDING: u32 = 0x1;
/// Inodes are addressed in 32-byte slots: offset = meta_blkaddr * 4096 + 32 * nid
/// ("Inode metadata space").
pub const INODE_SLOT: u64 = 32;
/// `struct erofs_inode_extended`.
pub const INODE_EXTENDED_SIZE: usize = 64;
/// `struct erofs_dirent`.
pub const DIRENT_SIZE: usize = 12;
/// `struct erofs_xattr_ibody_header`.
pub const XATTR_IBODY_HEADER_SIZE: usize = 12;
/// `struct erofs_xattr_entry` (name and value follow it).
pub const XATTR_ENTRY_HEADER_SIZE: usize = 4;

/// How an inode's data is mapped (`i_format` bits 1..3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataLayout {
    /// `EROFS_INODE_FLAT_PLAIN`: all data in consecutive whole blocks at `raw_blkaddr`.
    FlatPlain = 0,
    /// `EROFS_INODE_COMPRESSED_FULL`: LZ4 pclusters, mapped by a full (8-byte)
    /// logical cluster index after the inode and its xattrs; see [`map_header`].
    CompressedFull = 1,
    /// `EROFS_INODE_FLAT_INLINE`: whole blocks at `raw_blkaddr`, then the last
    /// partial block right after the inode and its xattrs, in the same block.
    FlatInline = 2,
}

/// `EROFS_FT_*`: the file type stored in a directory entry.
pub mod file_type {
    pub const REG_FILE: u8 = 1;
    pub const DIR: u8 = 2;
    pub const CHRDEV: u8 = 3;
    pub const BLKDEV: u8 = 4;
    pub const FIFO: u8 = 5;
    pub const SYMLINK: u8 = 7;
}

/// `struct erofs_super_block`, the fields this writer sets; the rest is zero
/// (no incompat features, no extra devices, no packed inode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuperBlock {
    pub root_nid: u16,
    pub inos: u64,
    pub build_time: u64,
    pub blocks: u32,
    pub meta_blkaddr: u32,
    pub xattr_blkaddr: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub feature_incompat: u32,
}

impl SuperBlock {
    /// Block 0 of the image: 1024 zero bytes, the 128-byte superblock, zeros to the
    /// end of the block; checksummed as the kernel's `erofs_superblock_csum_verify`
    /// checks it: crc32c seeded with `!0`, no final inversion, over the bytes from
    /// the superblock to the end of the block with the checksum field zeroed.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        let sb = &mut block[SUPER_OFFSET..];
        put_u32(sb, 0, MAGIC);
        put_u32(sb, 8, FEATURE_COMPAT_SB_CHKSUM);
        sb[12] = BLOCK_BITS; // blkszbits
        sb[13] = 0; // sb_extslots: the plain 128-byte superblock
        put_u16(sb, 14, self.root_nid);
        put_u64(sb, 16, self.inos);
        put_u64(sb, 24, self.build_time);
        put_u32(sb, 32, 0); // build_time_nsec
        put_u32(sb, 36, self.blocks);
        put_u32(sb, 40, self.meta_blkaddr);
        put_u32(sb, 44, self.xattr_blkaddr);
        sb[48..64].copy_from_slice(&self.uuid);
        sb[64..80].copy_from_slice(&self.volume_name);
        put_u32(sb, 80, self.feature_incompat);
        // u1 (lz4_max_distance) stays 0: LZ4's default 64 KiB window, as no
        // extent is longer than that anyway.
        let crc = crc32c_raw(!0, sb);
        put_u32(sb, 4, crc);
        block
    }
}

/// `struct erofs_inode_extended` (64 bytes), used for every inode: 32-bit owners,
/// 64-bit size and mtime, 32-bit link count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub layout: DataLayout,
    pub xattr_icount: u16,
    /// `st_mode`: type and permission bits.
    pub mode: u16,
    pub size: u64,
    /// `raw_blkaddr` for files, directories and symlinks; `rdev` for devices.
    pub i_u: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub nlink: u32,
}

impl Inode {
    pub fn encode(&self) -> [u8; INODE_EXTENDED_SIZE] {
        let mut b = [0u8; INODE_EXTENDED_SIZE];
        // i_format: bit 0 = 1 (extended inode), bits 1..3 = data layout.
        put_u16(&mut b, 0, 1 | ((self.layout as u16) << 1));
        put_u16(&mut b, 2, self.xattr_icount);
        put_u16(&mut b, 4, self.mode);
        put_u64(&mut b, 8, self.size);
        put_u32(&mut b, 16, self.i_u);
        put_u32(&mut b, 20, self.ino);
        put_u32(&mut b, 24, self.uid);
        put_u32(&mut b, 28, self.gid);
        put_u64(&mut b, 32, self.mtime);
        put_u32(&mut b, 40, 0); // mtime nsec
        put_u32(&mut b, 44, self.nlink);
        b
    }
}

/// `struct z_erofs_map_header` of a compressed inode, at [`map_header_offset`]: no
/// tail packing or fragments, `h_advise` 0 (full indexes, one-block pclusters),
/// LZ4 for HEAD1 (`h_algorithmtype` 0), 4 KiB logical clusters (`h_clusterbits` 0).
pub fn map_header() -> [u8; 8] {
    [0; 8]
}

/// Where a compressed inode's map header is, given where its inode and xattrs
/// end (in the image, or in a record that starts 8-aligned): rounded up to 8.
pub fn map_header_offset(end: u64) -> u64 {
    end.next_multiple_of(8)
}

/// Where the full index starts (`Z_EROFS_FULL_INDEX_ALIGN`): the map header and 8
/// reserved bytes after it.
pub fn full_index_offset(end: u64) -> u64 {
    map_header_offset(end) + 16
}

/// The bytes a compressed inode's record takes: inode and xattrs (`head`), the
/// alignment, map header, reserved bytes and one 8-byte index entry per 4 KiB
/// logical cluster of `size`. (Records start 32-byte aligned.)
pub fn compressed_record_len(head: u64, size: u64) -> u64 {
    full_index_offset(head) + 8 * size.div_ceil(BLOCK_SIZE)
}

/// `struct z_erofs_lcluster_index`, one per logical cluster of a compressed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lcluster {
    /// An extent starts `clusterofs` bytes into this cluster; its pcluster is
    /// the block `blkaddr`, stored plain (`Z_EROFS_LCLUSTER_TYPE_PLAIN`) or LZ4
    /// (`..._HEAD1`).
    Head {
        plain: bool,
        clusterofs: u16,
        blkaddr: u32,
    },
    /// No extent starts here (`..._NONHEAD`): the one covering it started `back`
    /// clusters before, the next starts `ahead` clusters on (or the file ends).
    NonHead {
        clusterofs: u16,
        back: u16,
        ahead: u16,
    },
}

impl Lcluster {
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        match *self {
            Lcluster::Head {
                plain,
                clusterofs,
                blkaddr,
            } => {
                put_u16(&mut b, 0, if plain { 0 } else { 1 });
                put_u16(&mut b, 2, clusterofs);
                put_u32(&mut b, 4, blkaddr);
            }
            Lcluster::NonHead {
                clusterofs,
                back,
                ahead,
            } => {
                put_u16(&mut b, 0, 2);
                put_u16(&mut b, 2, clusterofs);
                put_u16(&mut b, 4, back);
                put_u16(&mut b, 6, ahead);
            }
        }
        b
    }
}

/// The kernel's `new_encode_dev`, which EROFS stores in `i_u.rdev`. `None` when the
/// numbers do not fit a 32-bit `dev_t` (major < 4096, minor < 2^20).
pub fn encode_rdev(major: u32, minor: u32) -> Option<u32> {
    if major >= 1 << 12 || minor >= 1 << 20 {
        return None;
    }
    Some((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
}

/// The predefined xattr name prefixes (`EROFS_XATTR_INDEX_*`): an xattr is stored
/// as its prefix's index and the rest of its name. `None` for a name no index
/// covers: without the long-prefix feature (kernel 6.4+) such a name cannot be
/// stored at all.
pub fn xattr_name_index(name: &str) -> Option<(u8, &str)> {
    // The ACL names are whole names: their index stands for all of it.
    match name {
        "system.posix_acl_access" => return Some((2, "")),
        "system.posix_acl_default" => return Some((3, "")),
        _ => {}
    }
    for (prefix, index) in [("user.", 1u8), ("trusted.", 4), ("security.", 6)] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return (!rest.is_empty()).then_some((index, rest));
        }
    }
    None
}

/// One inline xattr, already split into name index and suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XattrRef<'a> {
    pub index: u8,
    pub suffix: &'a [u8],
    pub value: &'a [u8],
}

/// The size of one `erofs_xattr_entry` with its name and value, 4-byte aligned.
pub fn xattr_entry_size(suffix_len: usize, value_len: usize) -> usize {
    (XATTR_ENTRY_HEADER_SIZE + suffix_len + value_len).next_multiple_of(4)
}

/// The inline xattr area after an inode: `erofs_xattr_ibody_header` (no shared
/// xattrs) then the entries, each padded to 4 bytes ("Inode metadata space").
/// Empty when there are no xattrs. Callers check that suffixes fit a `u8` and
/// values a `u16`.
pub fn encode_xattr_ibody(xattrs: &[XattrRef<'_>]) -> Vec<u8> {
    if xattrs.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0u8; XATTR_IBODY_HEADER_SIZE];
    for x in xattrs {
        let start = out.len();
        out.push(x.suffix.len() as u8);
        out.push(x.index);
        out.extend_from_slice(&(x.value.len() as u16).to_le_bytes());
        out.extend_from_slice(x.suffix);
        out.extend_from_slice(x.value);
        out.resize(start + xattr_entry_size(x.suffix.len(), x.value.len()), 0);
    }
    out
}

/// `i_xattr_icount` for an inline xattr area of `ibody_len` bytes: the header
/// counts as one, each further 4 bytes as one more (`erofs_xattr_ibody_size`).
pub fn xattr_icount(ibody_len: usize) -> Option<u16> {
    if ibody_len == 0 {
        return Some(0);
    }
    u16::try_from((ibody_len - XATTR_IBODY_HEADER_SIZE) / 4 + 1).ok()
}

/// Splits a directory's entries (sorted by name, with `.` and `..`) into directory
/// blocks: each block holds as many whole entries (12-byte dirent + name) as fit in
/// 4096 bytes. Returns the range of entries of each block.
pub fn dir_blocks(name_lens: &[usize]) -> Vec<Range<usize>> {
    let mut blocks = Vec::new();
    let (mut start, mut used) = (0, 0usize);
    for (i, len) in name_lens.iter().enumerate() {
        let need = DIRENT_SIZE + len;
        if used + need > BLOCK_SIZE as usize {
            blocks.push(start..i);
            start = i;
            used = 0;
        }
        used += need;
    }
    if start < name_lens.len() {
        blocks.push(start..name_lens.len());
    }
    blocks
}

/// The size of a directory (`i_size`): whole blocks for all but the last block, the
/// used bytes of the last one.
pub fn dir_size(name_lens: &[usize]) -> u64 {
    let blocks = dir_blocks(name_lens);
    let Some(last) = blocks.last() else {
        return 0;
    };
    let tail: usize = name_lens[last.clone()]
        .iter()
        .map(|l| DIRENT_SIZE + l)
        .sum();
    (blocks.len() as u64 - 1) * BLOCK_SIZE + tail as u64
}

/// One directory entry to encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirentRef<'a> {
    pub name: &'a [u8],
    pub nid: u64,
    pub file_type: u8,
}

/// A directory's data ("Directories"): per block, the `erofs_dirent` array (whose
/// first `nameoff` also tells the entry count) then the names, unterminated; all
/// blocks but the last padded with zeros to 4096. `entries` must be sorted by name
/// bytes: lookups binary-search across and within blocks.
pub fn encode_dir(entries: &[DirentRef<'_>]) -> Vec<u8> {
    let lens: Vec<usize> = entries.iter().map(|e| e.name.len()).collect();
    let blocks = dir_blocks(&lens);
    let mut out = Vec::with_capacity(dir_size(&lens) as usize);
    for (bi, range) in blocks.iter().enumerate() {
        let base = out.len();
        let block = &entries[range.clone()];
        let mut nameoff = DIRENT_SIZE * block.len();
        for e in block {
            out.extend_from_slice(&e.nid.to_le_bytes());
            out.extend_from_slice(&(nameoff as u16).to_le_bytes());
            out.push(e.file_type);
            out.push(0);
            nameoff += e.name.len();
        }
        for e in block {
            out.extend_from_slice(e.name);
        }
        if bi + 1 < blocks.len() {
            out.resize(base + BLOCK_SIZE as usize, 0);
        }
    }
    out
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) as the kernel's
/// `crc32c(seed, ...)` computes it: no final inversion.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    let mut crc = seed;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The catalogued CRC-32C check value of "123456789" is 0xE3069283, which
        // includes the final inversion the kernel's crc32c() leaves out.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn superblock_fields_sit_at_their_erofs_fs_h_offsets() {
        let sb = SuperBlock {
            root_nid: 128,
            inos: 7,
            build_time: 1_700_000_000,
            blocks: 42,
            meta_blkaddr: 0,
            xattr_blkaddr: 0,
            uuid: [0xab; 16],
            volume_name: *b"KIOS_STORE\0\0\0\0\0\0",
            feature_incompat: 0,
        };
        let block = sb.encode_block();
        assert_eq!(block.len(), 4096);
        assert!(block[..1024].iter().all(|&b| b == 0));
        let s = &block[1024..];
        assert_eq!(u32_at(s, 0), 0xE0F5_E1E2);
        assert_eq!(u32_at(s, 8), FEATURE_COMPAT_SB_CHKSUM);
        assert_eq!(s[12], 12);
        assert_eq!(u16_at(s, 14), 128);
        assert_eq!(u64_at(s, 16), 7);
        assert_eq!(u64_at(s, 24), 1_700_000_000);
        assert_eq!(u32_at(s, 36), 42);
        assert_eq!(&s[48..64], &[0xab; 16]);
        assert_eq!(&s[64..74], b"KIOS_STORE");
        assert!(s[128..].iter().all(|&b| b == 0));
        // The checksum verifies the way the kernel verifies it.
        let mut copy = s.to_vec();
        copy[4..8].fill(0);
        assert_eq!(crc32c_raw(!0, &copy), u32_at(s, 4));
    }

    #[test]
    fn extended_inode_encodes_format_mode_owners_size_and_links() {
        let inode = Inode {
            layout: DataLayout::FlatInline,
            xattr_icount: 5,
            mode: 0o104755,
            size: 5_000_000_000,
            i_u: 99,
            ino: 3,
            uid: 100_000,
            gid: 65534,
            mtime: 1_234_567_890,
            nlink: 2,
        };
        let b = inode.encode();
        assert_eq!(u16_at(&b, 0), 0b101); // extended, FLAT_INLINE
        assert_eq!(u16_at(&b, 2), 5);
        assert_eq!(u16_at(&b, 4), 0o104755);
        assert_eq!(u64_at(&b, 8), 5_000_000_000);
        assert_eq!(u32_at(&b, 16), 99);
        assert_eq!(u32_at(&b, 20), 3);
        assert_eq!(u32_at(&b, 24), 100_000);
        assert_eq!(u32_at(&b, 28), 65534);
        assert_eq!(u64_at(&b, 32), 1_234_567_890);
        assert_eq!(u32_at(&b, 44), 2);
        assert!(b[48..].iter().all(|&x| x == 0));
    }

    #[test]
    fn rdev_uses_the_kernel_new_encoding() {
        assert_eq!(encode_rdev(0, 0), Some(0)); // overlay whiteout
        assert_eq!(encode_rdev(1, 3), Some(0x103)); // /dev/null
        assert_eq!(
            encode_rdev(8, 0x12345),
            Some(0x45 | (8 << 8) | (0x12300 << 12))
        );
        assert_eq!(encode_rdev(4096, 0), None);
        assert_eq!(encode_rdev(0, 1 << 20), None);
    }

    #[test]
    fn xattr_names_map_to_predefined_indexes_or_nothing() {
        assert_eq!(xattr_name_index("user.foo"), Some((1, "foo")));
        assert_eq!(
            xattr_name_index("trusted.overlay.opaque"),
            Some((4, "overlay.opaque"))
        );
        assert_eq!(
            xattr_name_index("security.capability"),
            Some((6, "capability"))
        );
        assert_eq!(xattr_name_index("system.posix_acl_access"), Some((2, "")));
        assert_eq!(xattr_name_index("system.posix_acl_default"), Some((3, "")));
        assert_eq!(xattr_name_index("system.other"), None);
        assert_eq!(xattr_name_index("user."), None);
        assert_eq!(xattr_name_index("foo"), None);
    }

    #[test]
    fn xattr_ibody_is_a_header_then_aligned_entries() {
        let xs = [
            XattrRef {
                index: 4,
                suffix: b"overlay.opaque",
                value: b"y",
            },
            XattrRef {
                index: 1,
                suffix: b"foo",
                value: b"bar",
            },
        ];
        let body = encode_xattr_ibody(&xs);
        // 12 header + align4(4+14+1)=20 + align4(4+3+3)=12
        assert_eq!(body.len(), 44);
        assert!(body[..12].iter().all(|&b| b == 0));
        assert_eq!(&body[12..16], &[14, 4, 1, 0]);
        assert_eq!(&body[16..31], b"overlay.opaquey");
        assert_eq!(&body[32..36], &[3, 1, 3, 0]);
        assert_eq!(&body[36..42], b"foobar");
        assert_eq!(xattr_icount(body.len()), Some(9)); // 12 + 8 * 4 = 44
        assert_eq!(xattr_icount(0), Some(0));
        assert!(encode_xattr_ibody(&[]).is_empty());
    }

    #[test]
    fn dirent_blocks_hold_sorted_dirents_then_names() {
        let entries = [
            DirentRef {
                name: b".",
                nid: 128,
                file_type: file_type::DIR,
            },
            DirentRef {
                name: b"..",
                nid: 128,
                file_type: file_type::DIR,
            },
            DirentRef {
                name: b"etc",
                nid: 130,
                file_type: file_type::DIR,
            },
        ];
        let d = encode_dir(&entries);
        assert_eq!(d.len(), 3 * 12 + 1 + 2 + 3);
        assert_eq!(dir_size(&[1, 2, 3]), d.len() as u64);
        assert_eq!(u64_at(&d, 0), 128);
        assert_eq!(u16_at(&d, 8), 36); // first nameoff = 3 dirents
        assert_eq!(d[10], file_type::DIR);
        assert_eq!(u16_at(&d, 20), 37);
        assert_eq!(u64_at(&d, 24), 130);
        assert_eq!(u16_at(&d, 32), 39);
        assert_eq!(&d[36..], b"...etc");
    }

    #[test]
    fn full_directory_blocks_are_padded_and_never_split_an_entry() {
        // 12 + 100 bytes per entry: 36 fit in a block (4032), the 37th does not.
        let lens = vec![100usize; 40];
        let blocks = dir_blocks(&lens);
        assert_eq!(blocks, vec![0..36, 36..40]);
        assert_eq!(dir_size(&lens), 4096 + 4 * 112);
        let names: Vec<Vec<u8>> = (0..40).map(|i| vec![b'a' + (i % 26) as u8; 100]).collect();
        let entries: Vec<DirentRef> = names
            .iter()
            .map(|n| DirentRef {
                name: n,
                nid: 1,
                file_type: file_type::REG_FILE,
            })
            .collect();
        let d = encode_dir(&entries);
        assert_eq!(d.len() as u64, dir_size(&lens));
        assert_eq!(u16_at(&d, 4096 + 8), 4 * 12); // second block starts afresh
        assert!(d[36 * 112..4096].iter().all(|&b| b == 0));
    }
}
