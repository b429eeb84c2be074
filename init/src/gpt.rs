//! Reading a GUID partition table, just enough to find partitions by type GUID.
//!
//! Input: the bytes of a disk's GPT header (LBA 1) and of its partition entry array.
//! Output: `(partition number, type GUID)` pairs. Layouts follow UEFI 2.10, section
//! 5.3 (GPT header: signature at 0, partition entry LBA at 72, number of entries at
//! 80, entry size at 84; entry: type GUID at 0, name at 56). CRCs are not checked:
//! the kernel already accepted this table when it made the partition devices, and
//! those devices are what gets mounted. This module does no I/O.

/// A GUID in its text form, upper case (`97AAC693-D920-465A-94FE-EB59FC86DFAA`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guid(String);

impl Guid {
    /// Decodes the 16 on-disk bytes: the first three fields are little endian.
    fn from_disk(b: &[u8; 16]) -> Self {
        let [a0, a1, a2, a3, b0, b1, c0, c1, rest @ ..] = *b;
        let mut s = format!("{a3:02X}{a2:02X}{a1:02X}{a0:02X}-{b1:02X}{b0:02X}-{c1:02X}{c0:02X}-");
        for (i, x) in rest.iter().enumerate() {
            if i == 2 {
                s.push('-');
            }
            s.push_str(&format!("{x:02X}"));
        }
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_zero(&self) -> bool {
        self.0.bytes().all(|c| c == b'0' || c == b'-')
    }
}

/// Where the entry array is, from the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub entries_lba: u64,
    pub entries: u32,
    pub entry_size: u32,
}

impl Header {
    /// How many bytes of entries to read (at most 128 KiB, far above any real table).
    pub fn entries_bytes(&self) -> usize {
        (self.entries as usize)
            .saturating_mul(self.entry_size as usize)
            .min(128 * 1024)
    }
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses the header at LBA 1; `None` if it is not a GPT.
pub fn parse_header(b: &[u8]) -> Option<Header> {
    if b.get(..8)? != b"EFI PART" {
        return None;
    }
    let h = Header {
        entries_lba: le_u64(b, 72)?,
        entries: le_u32(b, 80)?,
        entry_size: le_u32(b, 84)?,
    };
    (h.entry_size >= 128 && h.entries_lba >= 2).then_some(h)
}

/// The used entries: partition number (from 1, as the kernel numbers them) and type.
pub fn parse_entries(header: &Header, b: &[u8]) -> Vec<(u32, Guid)> {
    let size = header.entry_size as usize;
    b.chunks_exact(size.max(1))
        .take(header.entries as usize)
        .enumerate()
        .filter_map(|(i, e)| {
            let ty: [u8; 16] = e.get(..16)?.try_into().ok()?;
            let g = Guid::from_disk(&ty);
            (!g.is_zero()).then(|| (u32::try_from(i + 1).unwrap_or(u32::MAX), g))
        })
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// The on-disk bytes of a GUID written as text.
    pub fn disk_bytes(text: &str) -> [u8; 16] {
        let hex: Vec<u8> = text
            .bytes()
            .filter(|c| *c != b'-')
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("0"), 16).unwrap_or(0))
            .collect();
        let mut out = [0u8; 16];
        let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        for (dst, src) in order.iter().enumerate() {
            out[dst] = hex[*src];
        }
        out
    }

    /// A header at LBA 1 and `types` as entries 1.., for a 512-byte-sector disk.
    pub fn table(types: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(b"EFI PART");
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        let mut e = vec![0u8; 128 * 128];
        for (i, t) in types.iter().enumerate() {
            if !t.is_empty() {
                e[i * 128..i * 128 + 16].copy_from_slice(&disk_bytes(t));
            }
        }
        (h, e)
    }

    #[test]
    fn guid_round_trips_through_the_mixed_endian_layout() {
        let t = "97AAC693-D920-465A-94FE-EB59FC86DFAA";
        assert_eq!(Guid::from_disk(&disk_bytes(t)).as_str(), t);
    }

    #[test]
    fn entries_are_numbered_from_one_and_empty_ones_skipped() {
        let (h, e) = table(&[
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "",
            "97AAC693-D920-465A-94FE-EB59FC86DFAA",
        ]);
        let header = parse_header(&h);
        assert_eq!(
            header,
            Some(Header {
                entries_lba: 2,
                entries: 128,
                entry_size: 128
            })
        );
        let parts = header.map(|h| parse_entries(&h, &e)).unwrap_or_default();
        let got: Vec<(u32, &str)> = parts.iter().map(|(n, g)| (*n, g.as_str())).collect();
        assert_eq!(
            got,
            [
                (1, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
                (3, "97AAC693-D920-465A-94FE-EB59FC86DFAA")
            ]
        );
    }

    #[test]
    fn not_a_gpt_is_none() {
        assert_eq!(parse_header(&[0u8; 512]), None);
        assert_eq!(parse_header(b"EFI PART"), None);
    }
}
