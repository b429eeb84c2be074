//! GUID partition tables: writing and reading.
//!
//! Written by our code rather than the `gpt` crate because the table must be a pure
//! function of the profile (disk and partition GUIDs derived from its hash, no random
//! numbers, no clock), be written into a file we already hold open at fixed offsets,
//! and be readable from any `Read + Seek` for `inspect`. `sgdisk -v` and
//! `sfdisk --verify` check the output in `tests/disk.rs`.
//!
//! Layout (UEFI 2.10, section 5.2.3 "Protective MBR" and 5.3 "GUID Partition Table
//! (GPT) Disk Layout"), 512-byte logical blocks:
//! LBA 0 protective MBR; LBA 1 primary header; LBA 2..=33 the 128 entries of 128
//! bytes; the backup entries at `last - 32 ..= last - 1` and the backup header at
//! the last LBA.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest as _, Sha256};

pub const SECTOR: u64 = 512;
const ENTRIES: u32 = 128;
const ENTRY_SIZE: u32 = 128;
/// Sectors taken by the entry array: 128 * 128 / 512.
const ENTRY_SECTORS: u64 = (ENTRIES as u64 * ENTRY_SIZE as u64) / SECTOR;

/// A GUID, stored as its 16 bytes in the on-disk (mixed-endian) order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid([u8; 16]);

impl Guid {
    /// Parses the textual form `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
    pub const fn parse(s: &str) -> Guid {
        // const so that partition type GUIDs are checked at compile time.
        let b = s.as_bytes();
        assert!(b.len() == 36, "a GUID has 36 characters");
        let mut raw = [0u8; 16];
        let mut i = 0;
        let mut n = 0;
        while i < 36 {
            if b[i] == b'-' {
                i += 1;
                continue;
            }
            raw[n] = (hexval(b[i]) << 4) | hexval(b[i + 1]);
            n += 1;
            i += 2;
        }
        // The first three fields are little-endian on disk (UEFI 2.10, appendix A).
        Guid([
            raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6], raw[8], raw[9],
            raw[10], raw[11], raw[12], raw[13], raw[14], raw[15],
        ])
    }

    /// A GUID derived from `seed` and `what`: sha256, with the RFC 9562 version 8
    /// ("custom") and variant bits set.
    pub fn derive(seed: &[u8], what: &str) -> Guid {
        let mut h = Sha256::new();
        h.update(seed);
        h.update(what.as_bytes());
        let d = h.finalize();
        let mut raw = [0u8; 16];
        raw.copy_from_slice(&d[..16]);
        raw[6] = (raw[6] & 0x0f) | 0x80;
        raw[8] = (raw[8] & 0x3f) | 0x80;
        // raw is in textual order; convert to disk order.
        Guid::parse(&text_of(&raw))
    }

    pub fn from_disk_bytes(b: [u8; 16]) -> Guid {
        Guid(b)
    }

    pub fn disk_bytes(&self) -> [u8; 16] {
        self.0
    }

    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

const fn hexval(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit in a GUID"),
    }
}

fn text_of(raw: &[u8; 16]) -> String {
    let h = hex::encode_upper(raw);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        let raw = [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ];
        f.write_str(&text_of(&raw))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One partition: `first_lba..=last_lba`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

/// A partition table for a disk of `disk_size` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Guid,
    pub disk_size: u64,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("not a GPT disk: {0}")]
    Invalid(String),
    #[error("cannot read or write the partition table")]
    Io(#[from] io::Error),
}

impl Table {
    fn last_lba(&self) -> u64 {
        self.disk_size / SECTOR - 1
    }

    /// The first LBA a partition may use.
    pub fn first_usable(&self) -> u64 {
        2 + ENTRY_SECTORS
    }

    /// The last LBA a partition may use.
    pub fn last_usable(&self) -> u64 {
        self.last_lba() - 1 - ENTRY_SECTORS
    }

    fn entry_array(&self) -> Vec<u8> {
        let mut a = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut a[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            // UEFI 2.10 table 5.6 "GPT Partition Entry".
            e[0..16].copy_from_slice(&p.type_guid.0);
            e[16..32].copy_from_slice(&p.guid.0);
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (j, u) in p.name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        a
    }

    fn header(&self, primary: bool, entries_crc: u32) -> [u8; SECTOR as usize] {
        let mut h = [0u8; SECTOR as usize];
        let (my, alt, entries_lba) = if primary {
            (1, self.last_lba(), 2)
        } else {
            (self.last_lba(), 1, self.last_lba() - ENTRY_SECTORS)
        };
        // UEFI 2.10 table 5.5 "GPT Header".
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[0..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn protective_mbr(&self) -> [u8; SECTOR as usize] {
        // UEFI 2.10 table 5.4 "Protective MBR Partition Record".
        let mut m = [0u8; SECTOR as usize];
        let r = &mut m[446..462];
        r[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // starting CHS
        r[4] = 0xEE; // GPT protective
        r[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]); // ending CHS
        r[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = (self.last_lba()).min(u32::MAX as u64) as u32;
        r[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    /// Writes the protective MBR, both headers and both entry arrays.
    pub fn write<W: Write + Seek>(&self, w: &mut W) -> Result<(), GptError> {
        if self.partitions.len() > ENTRIES as usize {
            return Err(GptError::Invalid("more than 128 partitions".into()));
        }
        let entries = self.entry_array();
        let crc = crc32fast::hash(&entries);
        w.seek(SeekFrom::Start(0))?;
        w.write_all(&self.protective_mbr())?;
        w.write_all(&self.header(true, crc))?;
        w.write_all(&entries)?;
        w.seek(SeekFrom::Start((self.last_lba() - ENTRY_SECTORS) * SECTOR))?;
        w.write_all(&entries)?;
        w.write_all(&self.header(false, crc))?;
        Ok(())
    }

    /// Reads and checks the primary table (signature, header and entry CRCs).
    pub fn read<R: Read + Seek>(r: &mut R) -> Result<Table, GptError> {
        let disk_size = r.seek(SeekFrom::End(0))?;
        let mut h = [0u8; SECTOR as usize];
        r.seek(SeekFrom::Start(SECTOR))?;
        r.read_exact(&mut h)?;
        if &h[0..8] != b"EFI PART" {
            return Err(GptError::Invalid("no `EFI PART` signature at LBA 1".into()));
        }
        let u32at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64at = |b: &[u8], o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        let hsize = u32at(&h, 12) as usize;
        if !(92..=SECTOR as usize).contains(&hsize) {
            return Err(GptError::Invalid(format!("header size {hsize}")));
        }
        let stored = u32at(&h, 16);
        let mut check = h;
        check[16..20].fill(0);
        if crc32fast::hash(&check[..hsize]) != stored {
            return Err(GptError::Invalid("primary header CRC mismatch".into()));
        }
        let n = u32at(&h, 80);
        let esize = u32at(&h, 84);
        if n > 1024 || !(128..=1024).contains(&esize) {
            return Err(GptError::Invalid(format!("{n} entries of {esize} bytes")));
        }
        let mut entries = vec![0u8; (n * esize) as usize];
        r.seek(SeekFrom::Start(u64at(&h, 72) * SECTOR))?;
        r.read_exact(&mut entries)?;
        if crc32fast::hash(&entries) != u32at(&h, 88) {
            return Err(GptError::Invalid(
                "partition entry array CRC mismatch".into(),
            ));
        }
        let mut disk_guid = [0u8; 16];
        disk_guid.copy_from_slice(&h[56..72]);
        let mut partitions = Vec::new();
        for e in entries.chunks(esize as usize) {
            let mut t = [0u8; 16];
            t.copy_from_slice(&e[0..16]);
            if t == [0; 16] {
                continue;
            }
            let mut g = [0u8; 16];
            g.copy_from_slice(&e[16..32]);
            let units: Vec<u16> = e[56..128]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            partitions.push(Partition {
                type_guid: Guid(t),
                guid: Guid(g),
                first_lba: u64at(e, 32),
                last_lba: u64at(e, 40),
                attributes: u64at(e, 48),
                name: String::from_utf16_lossy(&units),
            });
        }
        Ok(Table {
            disk_guid: Guid(disk_guid),
            disk_size,
            partitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trips_in_mixed_endian() {
        let g = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(g.0[0..4], [0x28, 0x73, 0x2A, 0xC1]);
        assert_eq!(g.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    }

    #[test]
    fn derived_guids_are_stable_and_versioned() {
        let a = Guid::derive(b"seed", "esp");
        assert_eq!(a, Guid::derive(b"seed", "esp"));
        assert_ne!(a, Guid::derive(b"seed", "data"));
        let t = a.to_string();
        assert_eq!(&t[14..15], "8", "{t}");
    }

    #[test]
    fn a_table_round_trips() {
        let mut f = std::io::Cursor::new(vec![0u8; 8 << 20]);
        let t = Table {
            disk_guid: Guid::derive(b"x", "disk"),
            disk_size: 8 << 20,
            partitions: vec![Partition {
                type_guid: Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
                guid: Guid::derive(b"x", "p1"),
                first_lba: 2048,
                last_lba: 4095,
                attributes: 0,
                name: "KIOS_ESP".into(),
            }],
        };
        t.write(&mut f).unwrap();
        let back = Table::read(&mut f).unwrap();
        assert_eq!(back, t);
        let buf = f.into_inner();
        assert_eq!(&buf[buf.len() - 512..buf.len() - 504], b"EFI PART");
        assert_eq!(buf[446 + 4], 0xEE);
    }
}
