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

use crate::le::{le32, le64};
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
    /// The first byte. [`Table::read`] checks the range against the file, so the
    /// saturating arithmetic only matters for a table built by hand.
    pub fn offset(&self) -> u64 {
        self.first_lba.saturating_mul(SECTOR)
    }
    /// The length in bytes (0 for a range whose end comes before its start).
    pub fn size(&self) -> u64 {
        self.last_lba
            .saturating_add(1)
            .saturating_sub(self.first_lba)
            .saturating_mul(SECTOR)
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
    #[error(
        "the image is truncated: its partition table says the disk is {expected} bytes, \
         but the file has {actual} ({} bytes missing); copy or download the image again",
        expected.saturating_sub(*actual)
    )]
    Truncated { expected: u64, actual: u64 },
    #[error(
        "partition {number} ({name}) spans sectors {first_lba}..={last_lba}, {why}; \
         the partition table is damaged"
    )]
    BadRange {
        number: usize,
        /// Already made safe to print ([`crate::untrusted::shown`]).
        name: String,
        first_lba: u64,
        last_lba: u64,
        why: String,
    },
    #[error(
        "partitions {first} and {second} overlap: {first} spans sectors {}..={}, {second} \
         sectors {}..={}; the partition table is damaged",
        .first_range.0, .first_range.1, .second_range.0, .second_range.1
    )]
    Overlap {
        /// Number and name, already made safe to print.
        first: String,
        first_range: (u64, u64),
        second: String,
        second_range: (u64, u64),
    },
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

    /// Reads and checks the primary table: signature, header and entry CRCs, and
    /// every length and offset against the file (UEFI 2.10, 5.3.2 "GPT Header"
    /// validity rules): a file shorter than the disk its header describes is
    /// [`GptError::Truncated`]; a partition outside the usable sectors or the file,
    /// or overlapping another, is an error naming it.
    pub fn read<R: Read + Seek>(r: &mut R) -> Result<Table, GptError> {
        let disk_size = r.seek(SeekFrom::End(0))?;
        if disk_size < 2 * SECTOR {
            return Err(GptError::Invalid(format!(
                "the file is {disk_size} bytes, too small for a partition table"
            )));
        }
        let mut h = [0u8; SECTOR as usize];
        r.seek(SeekFrom::Start(SECTOR))?;
        r.read_exact(&mut h)?;
        if &h[0..8] != b"EFI PART" {
            return Err(GptError::Invalid("no `EFI PART` signature at LBA 1".into()));
        }
        let hsize = le32(&h, 12) as usize;
        if !(92..=SECTOR as usize).contains(&hsize) {
            return Err(GptError::Invalid(format!("header size {hsize}")));
        }
        let stored = le32(&h, 16);
        let mut check = h;
        check[16..20].fill(0);
        if crc32fast::hash(&check[..hsize]) != stored {
            return Err(GptError::Invalid("primary header CRC mismatch".into()));
        }
        // The backup header is on the disk's last sector (5.3.2): where the header
        // puts it says how long the disk is.
        let alternate = le64(&h, 32);
        let expected = alternate
            .checked_add(1)
            .and_then(|n| n.checked_mul(SECTOR))
            .ok_or_else(|| {
                GptError::Invalid(format!("the backup header LBA {alternate} is out of range"))
            })?;
        if expected > disk_size {
            return Err(GptError::Truncated {
                expected,
                actual: disk_size,
            });
        }
        let n = le32(&h, 80);
        let esize = le32(&h, 84);
        if n > 1024 || !(128..=1024).contains(&esize) {
            return Err(GptError::Invalid(format!("{n} entries of {esize} bytes")));
        }
        let array_len = u64::from(n * esize);
        let entries_lba = le64(&h, 72);
        let array_end = entries_lba
            .checked_mul(SECTOR)
            .and_then(|at| at.checked_add(array_len))
            .filter(|&end| end <= disk_size)
            .ok_or_else(|| {
                GptError::Invalid(format!(
                    "the partition entries at LBA {entries_lba} ({array_len} bytes) lie \
                     beyond the end of the file ({disk_size} bytes)"
                ))
            })?;
        let mut entries = vec![0u8; array_len as usize];
        r.seek(SeekFrom::Start(array_end - array_len))?;
        r.read_exact(&mut entries)?;
        if crc32fast::hash(&entries) != le32(&h, 88) {
            return Err(GptError::Invalid(
                "partition entry array CRC mismatch".into(),
            ));
        }
        let mut disk_guid = [0u8; 16];
        disk_guid.copy_from_slice(&h[56..72]);
        let (first_usable, last_usable) = (le64(&h, 40), le64(&h, 48));
        let mut partitions = Vec::new();
        let mut numbers = Vec::new();
        let usable = (first_usable, last_usable);
        for (i, e) in entries.chunks(esize as usize).enumerate() {
            if let Some(p) = entry(i + 1, e, usable, disk_size)? {
                partitions.push(p);
                numbers.push(i + 1);
            }
        }
        check_overlaps(&partitions, &numbers)?;
        Ok(Table {
            disk_guid: Guid(disk_guid),
            disk_size,
            partitions,
        })
    }
}

/// Partition entry `number` (5.3.3, at least 128 bytes): `None` when unused, an error
/// when its range is reversed, past the end of the file or outside the usable sectors.
fn entry(
    number: usize,
    e: &[u8],
    (first_usable, last_usable): (u64, u64),
    disk_size: u64,
) -> Result<Option<Partition>, GptError> {
    let mut t = [0u8; 16];
    t.copy_from_slice(&e[0..16]);
    if t == [0; 16] {
        return Ok(None);
    }
    let mut g = [0u8; 16];
    g.copy_from_slice(&e[16..32]);
    let units: Vec<u16> = e[56..128]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let p = Partition {
        type_guid: Guid(t),
        guid: Guid(g),
        first_lba: le64(e, 32),
        last_lba: le64(e, 40),
        attributes: le64(e, 48),
        name: String::from_utf16_lossy(&units),
    };
    let bad = |why: String| GptError::BadRange {
        number,
        name: crate::untrusted::shown(&p.name),
        first_lba: p.first_lba,
        last_lba: p.last_lba,
        why,
    };
    let file_sectors = disk_size / SECTOR;
    if p.first_lba > p.last_lba {
        return Err(bad("its first sector is after its last".into()));
    }
    if p.last_lba >= file_sectors {
        return Err(bad(format!(
            "beyond the end of the disk: the file has {file_sectors} sectors \
             ({disk_size} bytes)"
        )));
    }
    if p.first_lba < first_usable || p.last_lba > last_usable {
        return Err(bad(format!(
            "outside the usable sectors {first_usable}..={last_usable} the header \
             declares (over the partition table itself)"
        )));
    }
    Ok(Some(p))
}

/// Sorted by start, two partitions overlap exactly when one starts before the
/// previous one ends. `numbers` are the partitions' entry numbers.
fn check_overlaps(partitions: &[Partition], numbers: &[usize]) -> Result<(), GptError> {
    let mut order: Vec<usize> = (0..partitions.len()).collect();
    order.sort_by_key(|&k| partitions[k].first_lba);
    for w in order.windows(2) {
        let (a, b) = (&partitions[w[0]], &partitions[w[1]]);
        if b.first_lba <= a.last_lba {
            let label = |k: usize, p: &Partition| {
                format!("{} ({})", numbers[k], crate::untrusted::shown(&p.name))
            };
            return Err(GptError::Overlap {
                first: label(w[0], a),
                first_range: (a.first_lba, a.last_lba),
                second: label(w[1], b),
                second_range: (b.first_lba, b.last_lba),
            });
        }
    }
    Ok(())
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

    fn two_partitions() -> Table {
        let p = |n: &str, first, last| Partition {
            type_guid: Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            guid: Guid::derive(b"x", n),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: n.into(),
        };
        Table {
            disk_guid: Guid::derive(b"x", "disk"),
            disk_size: 8 << 20,
            partitions: vec![p("A", 2048, 4095), p("B", 4096, 16000)],
        }
    }

    fn written(t: &Table) -> Vec<u8> {
        let mut f = std::io::Cursor::new(vec![0u8; t.disk_size as usize]);
        t.write(&mut f).unwrap();
        f.into_inner()
    }

    #[test]
    fn a_truncated_disk_is_an_error_saying_by_how_much() {
        let mut buf = written(&two_partitions());
        buf.truncate(buf.len() - 512);
        let e = Table::read(&mut std::io::Cursor::new(buf)).unwrap_err();
        assert!(matches!(e, GptError::Truncated { expected, actual } if expected - actual == 512));
        assert!(e.to_string().contains("512 bytes missing"), "{e}");
        let e = Table::read(&mut std::io::Cursor::new(vec![0u8; 100])).unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
    }

    #[test]
    fn ranges_outside_the_disk_reversed_or_overlapping_are_errors() {
        let mut t = two_partitions();
        t.partitions[1].last_lba = 1 << 40;
        let e = Table::read(&mut std::io::Cursor::new(written(&t))).unwrap_err();
        assert!(
            matches!(&e, GptError::BadRange { number: 2, name, .. } if name == "B"),
            "{e:?}"
        );
        let mut t = two_partitions();
        t.partitions[0].first_lba = 5000;
        let e = Table::read(&mut std::io::Cursor::new(written(&t))).unwrap_err();
        assert!(
            e.to_string().contains("first sector is after its last"),
            "{e}"
        );
        let mut t = two_partitions();
        t.partitions[1].first_lba = 4000;
        let e = Table::read(&mut std::io::Cursor::new(written(&t))).unwrap_err();
        assert!(matches!(e, GptError::Overlap { .. }), "{e:?}");
        assert!(
            e.to_string().contains("1 (A) spans sectors 2048..=4095"),
            "{e}"
        );
    }
}
