//! The verified store: what `kios.store.verity=` on the (signed) kernel command line
//! asks for, the hash partition's superblock checked against it, and the dm-verity
//! table that makes the kernel check every block of the store as it is read.
//!
//! Input: the command line and the first 512 bytes of the `KIOS_STORE_VERITY`
//! partition (cryptsetup's version 1 superblock, as kios-build writes it). Output:
//! the table line for [`crate::system::System::dm_create`]. The root hash and the
//! data block count come from the command line only: the superblock is not signed,
//! so it may only agree with them (a different block count would let a device be
//! checked as a shorter one whose "data" are the tree's own blocks).

use kios_contract::cmdline::{STORE_VERITY, STORE_VERITY_BLOCKS};

/// The data and hash block size kios-build writes.
const BLOCK: u32 = 4096;

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    /// The root hash, 64 lower-case hex digits.
    pub root: String,
    pub blocks: u64,
}

/// `None` when the command line does not ask for a verified store; otherwise what it
/// asks, or why the arguments are not usable (the store is then refused).
pub fn asked(cmdline: &[u8]) -> Option<Result<Asked, String>> {
    let text = String::from_utf8_lossy(cmdline);
    let value = |key: &str| {
        let prefix = format!("{key}=");
        text.split_ascii_whitespace()
            .rev()
            .find_map(|w| w.strip_prefix(prefix.as_str()))
            .map(str::to_owned)
    };
    let root = value(STORE_VERITY)?;
    let ok_root = root.len() == 64
        && root
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok_root {
        return Some(Err(format!(
            "{STORE_VERITY}= is not a sha256 root hash (64 lower-case hex digits)"
        )));
    }
    let blocks = match value(STORE_VERITY_BLOCKS).map(|b| b.parse::<u64>()) {
        Some(Ok(n)) if n > 0 && n < (1 << 40) => n,
        _ => {
            return Some(Err(format!(
                "{STORE_VERITY_BLOCKS}= is missing or not a block count"
            )))
        }
    };
    Some(Ok(Asked { root, blocks }))
}

/// The fields of the superblock that the table needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses the version 1 superblock: sha256, 4 KiB blocks, hash type 1, as written by
/// kios-build; anything else is refused with what differs.
pub fn superblock(b: &[u8]) -> Result<Superblock, String> {
    if b.len() < 512 || &b[0..8] != b"verity\0\0" {
        return Err("the hash partition has no dm-verity superblock".into());
    }
    let (version, hash_type) = (le32(b, 8), le32(b, 12));
    if version != 1 || hash_type != 1 {
        return Err(format!(
            "unsupported dm-verity superblock (version {version}, hash type {hash_type}; want 1 and 1)"
        ));
    }
    let algorithm = &b[32..64];
    let end = algorithm.iter().position(|&c| c == 0).unwrap_or(32);
    if &algorithm[..end] != b"sha256" {
        return Err(format!(
            "the hash tree uses {}, not sha256",
            String::from_utf8_lossy(&algorithm[..end])
        ));
    }
    let (data_block, hash_block) = (le32(b, 64), le32(b, 68));
    if data_block != BLOCK || hash_block != BLOCK {
        return Err(format!(
            "block sizes {data_block}/{hash_block}, not {BLOCK}/{BLOCK}"
        ));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&b[72..80]);
    let salt_size = u16::from_le_bytes([b[80], b[81]]) as usize;
    if salt_size > 256 {
        return Err(format!("salt of {salt_size} bytes (at most 256)"));
    }
    Ok(Superblock {
        data_blocks: u64::from_le_bytes(n),
        salt: b[88..88 + salt_size].to_vec(),
    })
}

/// The dm-verity target over `data` (the store partition) and `hash` (its tree, the
/// superblock in block 0 so the tree starts at block 1): (sectors, parameters).
pub fn table(a: &Asked, sb: &Superblock, data: &str, hash: &str) -> Result<(u64, String), String> {
    if sb.data_blocks != a.blocks {
        return Err(format!(
            "the hash partition covers {} blocks but the command line says {}",
            sb.data_blocks, a.blocks
        ));
    }
    let salt = if sb.salt.is_empty() {
        "-".to_owned()
    } else {
        sb.salt.iter().map(|b| format!("{b:02x}")).collect()
    };
    Ok((
        a.blocks * u64::from(BLOCK / 512),
        format!(
            "1 {data} {hash} {BLOCK} {BLOCK} {} 1 sha256 {} {salt}",
            a.blocks, a.root
        ),
    ))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    const ROOT: &str = "5e1655100c17afb36159344ca2d4f38cffa431ff71cf3119202254445b0e552f";

    /// A superblock as kios-build writes it.
    pub fn sb(blocks: u64, salt: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..8].copy_from_slice(b"verity\0\0");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[32..38].copy_from_slice(b"sha256");
        b[64..68].copy_from_slice(&4096u32.to_le_bytes());
        b[68..72].copy_from_slice(&4096u32.to_le_bytes());
        b[72..80].copy_from_slice(&blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        b[88..88 + salt.len()].copy_from_slice(salt);
        b
    }

    #[test]
    fn the_command_line_gives_root_and_blocks_or_a_reason() {
        assert_eq!(asked(b"console=ttyS0 quiet"), None);
        let line = format!("a kios.store.verity={ROOT} kios.store.verity.blocks=789\n");
        assert_eq!(
            asked(line.as_bytes()),
            Some(Ok(Asked {
                root: ROOT.into(),
                blocks: 789
            }))
        );
        let bad = asked(b"kios.store.verity=XYZ kios.store.verity.blocks=1").unwrap();
        assert!(bad.unwrap_err().contains("not a sha256 root hash"));
        let no_blocks = format!("kios.store.verity={ROOT}");
        let e = asked(no_blocks.as_bytes()).unwrap().unwrap_err();
        assert!(e.contains("kios.store.verity.blocks"), "{e}");
    }

    #[test]
    fn the_table_takes_the_salt_from_the_superblock_and_blocks_must_agree() {
        let s = superblock(&sb(789, &[0xab, 0x01])).unwrap();
        let a = Asked {
            root: ROOT.into(),
            blocks: 789,
        };
        let (sectors, params) = table(&a, &s, "/dev/vda2", "/dev/vda4").unwrap();
        assert_eq!(sectors, 789 * 8);
        assert_eq!(
            params,
            format!("1 /dev/vda2 /dev/vda4 4096 4096 789 1 sha256 {ROOT} ab01")
        );
        let shorter = superblock(&sb(7, &[1])).unwrap();
        assert!(table(&a, &shorter, "d", "h")
            .unwrap_err()
            .contains("covers 7 blocks but the command line says 789"));
    }

    #[test]
    fn other_superblocks_are_refused_with_what_differs() {
        assert!(superblock(&[0u8; 512])
            .unwrap_err()
            .contains("no dm-verity superblock"));
        let mut v0 = sb(1, &[]);
        v0[12] = 0;
        assert!(superblock(&v0).unwrap_err().contains("hash type 0"));
        let mut sha1 = sb(1, &[]);
        sha1[32..38].copy_from_slice(b"sha1\0\0");
        assert!(superblock(&sha1).unwrap_err().contains("sha1, not sha256"));
        let mut big = sb(1, &[]);
        big[80..82].copy_from_slice(&300u16.to_le_bytes());
        assert!(superblock(&big).unwrap_err().contains("300 bytes"));
    }
}
