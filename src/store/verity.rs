//! The store's dm-verity hash tree: the store partition's bytes -> the
//! `KIOS_STORE_VERITY` partition's bytes and the root hash that goes on the signed
//! kernel command line, so that kios-init can refuse a store that was changed after
//! the build (`docs/secure-boot.md`).
//!
//! The format is the one `veritysetup format` writes and the kernel's `dm-verity`
//! target reads (hash format version 1, sha256, 4 KiB data and hash blocks):
//! - block 0 of the hash partition is the superblock (512 bytes, then zeros);
//! - then the tree, its top level first: level 0 holds the hashes of the data
//!   blocks, level `i + 1` the hashes of level `i`'s blocks, 128 hashes of 32 bytes
//!   per 4 KiB block, the last block of a level padded with zeros;
//! - each hash is `sha256(salt || block)`; the root hash is that of the top block.
//!
//! The salt is derived from the profile, so the same inputs give the same bytes; the
//! superblock's UUID likewise. Only the level-0 hashes are held in memory (32 bytes
//! per 4 KiB: 8 MiB for a 1 GiB store); the data is read once, a block at a time.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// The data and hash block size (the page size dm-verity is fastest with).
pub const BLOCK: u64 = 4096;
const HASH: usize = 32;
const PER_BLOCK: usize = BLOCK as usize / HASH;
const SUPERBLOCK: usize = 512;

/// What kios-init needs besides the hash partition, all of it on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verity {
    /// The root hash, hex: `kios.store.verity=`.
    pub root_hash: String,
    /// The data blocks the tree covers: `kios.store.verity.blocks=`. Pinned on the
    /// signed command line, so that a changed superblock cannot make the kernel read
    /// a shorter device whose "data" are the tree's own hash blocks.
    pub data_blocks: u64,
    pub salt: [u8; 32],
    /// The hash partition's size, bytes.
    pub hash_bytes: u64,
}

impl Verity {
    /// The kernel command line arguments that carry it.
    pub fn cmdline(&self) -> String {
        format!(
            "{}={} {}={}",
            kios_contract::cmdline::STORE_VERITY,
            self.root_hash,
            kios_contract::cmdline::STORE_VERITY_BLOCKS,
            self.data_blocks
        )
    }
}

/// Writes the hash tree of `data` (its length must be a multiple of [`BLOCK`]) to
/// `out`; returns the root hash and the parameters.
pub fn write_hash_tree(
    data: &Path,
    out: &Path,
    salt: [u8; 32],
    uuid: [u8; 16],
) -> io::Result<Verity> {
    let len = File::open(data)?.metadata()?.len();
    if len == 0 || len % BLOCK != 0 {
        return Err(io::Error::other(format!(
            "{}: {len} bytes is not a whole number of {BLOCK}-byte blocks",
            data.display()
        )));
    }
    let data_blocks = len / BLOCK;
    let level0 = level0_hashes(data, data_blocks, &salt)?;
    // Each level as the bytes of its blocks, level 0 first; the loop ends with one
    // block at the top.
    let mut levels = vec![padded(level0)];
    while levels[levels.len() - 1].len() > BLOCK as usize {
        let below = &levels[levels.len() - 1];
        let mut up = Vec::with_capacity(below.len() / PER_BLOCK + HASH);
        for b in below.chunks(BLOCK as usize) {
            up.extend_from_slice(&salted(&salt, b));
        }
        levels.push(padded(up));
    }
    let root = salted(&salt, &levels[levels.len() - 1]);

    let mut w = BufWriter::new(File::create(out)?);
    let mut first = vec![0u8; BLOCK as usize];
    first[..SUPERBLOCK].copy_from_slice(&superblock(data_blocks, &salt, &uuid));
    w.write_all(&first)?;
    for level in levels.iter().rev() {
        w.write_all(level)?;
    }
    let hash_bytes = BLOCK + levels.iter().map(|l| l.len() as u64).sum::<u64>();
    w.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    Ok(Verity {
        root_hash: hex::encode(root),
        data_blocks,
        salt,
        hash_bytes,
    })
}

/// The hashes of the data blocks, in order. The blocks are split into one range per
/// core, each hashed by its own thread from its own file handle (`pread`), then
/// joined: the same bytes as one pass, in about a core's share of the time.
fn level0_hashes(data: &Path, blocks: u64, salt: &[u8; 32]) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
        .clamp(1, 16);
    let per = blocks.div_ceil(jobs).max(1);
    let ranges: Vec<(u64, u64)> = (0..blocks)
        .step_by(per as usize)
        .map(|start| (start, (start + per).min(blocks)))
        .collect();
    let parts = std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(start, end)| {
                s.spawn(move || -> io::Result<Vec<u8>> {
                    let f = File::open(data)?;
                    let mut buf = vec![0u8; 256 * BLOCK as usize];
                    let mut out = Vec::with_capacity(((end - start) as usize) * HASH);
                    let mut at = start;
                    while at < end {
                        let n = (end - at).min(256);
                        let chunk = &mut buf[..(n * BLOCK) as usize];
                        f.read_exact_at(chunk, at * BLOCK)?;
                        for block in chunk.chunks(BLOCK as usize) {
                            out.extend_from_slice(&salted(salt, block));
                        }
                        at += n;
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a hashing thread panicked")))
            })
            .collect::<io::Result<Vec<Vec<u8>>>>()
    })?;
    Ok(parts.concat())
}

/// Pads `data` with zeros to [`BLOCK`]s, but a level always has one block at least.
fn padded(mut level: Vec<u8>) -> Vec<u8> {
    let n = level.len().div_ceil(BLOCK as usize).max(1) * BLOCK as usize;
    level.resize(n, 0);
    level
}

/// `sha256(salt || bytes)`, hash format version 1.
fn salted(salt: &[u8], bytes: &[u8]) -> [u8; HASH] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(bytes);
    h.finalize().into()
}

/// The version 1 superblock (cryptsetup's `struct verity_sb`, little-endian).
fn superblock(data_blocks: u64, salt: &[u8; 32], uuid: &[u8; 16]) -> [u8; SUPERBLOCK] {
    let mut sb = [0u8; SUPERBLOCK];
    sb[0..8].copy_from_slice(b"verity\0\0");
    sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // superblock version
    sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type: normal (not Chrome OS)
    sb[16..32].copy_from_slice(uuid);
    sb[32..38].copy_from_slice(b"sha256");
    sb[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
    sb[88..88 + salt.len()].copy_from_slice(salt);
    sb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_level_tree_of_two_blocks_is_the_salted_hash_of_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut bytes = vec![0u8; 2 * BLOCK as usize];
        bytes[BLOCK as usize] = 1;
        std::fs::write(&data, &bytes).unwrap();
        let salt = [7u8; 32];
        let v = write_hash_tree(&data, &dir.path().join("hash"), salt, [1; 16]).unwrap();
        let mut top = Vec::new();
        top.extend_from_slice(&salted(&salt, &bytes[..BLOCK as usize]));
        top.extend_from_slice(&salted(&salt, &bytes[BLOCK as usize..]));
        top.resize(BLOCK as usize, 0);
        assert_eq!(v.root_hash, hex::encode(salted(&salt, &top)));
        assert_eq!(v.data_blocks, 2);
        assert_eq!(v.hash_bytes, 2 * BLOCK);
        let hash = std::fs::read(dir.path().join("hash")).unwrap();
        assert_eq!(&hash[..8], b"verity\0\0");
        assert_eq!(&hash[BLOCK as usize..], &top[..]);
    }

    #[test]
    fn a_store_of_129_blocks_has_two_levels_and_the_top_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::write(&data, vec![3u8; 129 * BLOCK as usize]).unwrap();
        let v = write_hash_tree(&data, &dir.path().join("hash"), [0; 32], [0; 16]).unwrap();
        // superblock + 1 top block + 2 level-0 blocks
        assert_eq!(v.hash_bytes, 4 * BLOCK);
        let hash = std::fs::read(dir.path().join("hash")).unwrap();
        let leaf = salted(&[0; 32], &vec![3u8; BLOCK as usize]);
        // The top block hashes the two level-0 blocks that follow it.
        let (top, level0) = hash[BLOCK as usize..].split_at(BLOCK as usize);
        assert_eq!(&top[..HASH], &salted(&[0; 32], &level0[..BLOCK as usize]));
        assert_eq!(
            &top[HASH..2 * HASH],
            &salted(&[0; 32], &level0[BLOCK as usize..])
        );
        assert_eq!(&level0[..HASH], &leaf);
        assert_eq!(&level0[BLOCK as usize..BLOCK as usize + HASH], &leaf);
        assert!(level0[BLOCK as usize + HASH..].iter().all(|&b| b == 0));
        assert_eq!(v.root_hash, hex::encode(salted(&[0; 32], top)));
        // The same inputs, the same bytes.
        let again = write_hash_tree(&data, &dir.path().join("hash2"), [0; 32], [0; 16]).unwrap();
        assert_eq!(again, v);
        assert_eq!(std::fs::read(dir.path().join("hash2")).unwrap(), hash);
    }
}
