//! File names on FAT: 8.3 short names and VFAT long names (fatgen103 §6.1 "File and
//! Directory Name Rules" and §7 "FAT Long Directory Entries").
//!
//! A name that is already a valid upper case 8.3 name (`EFI`, `BOOTX64.EFI`) is stored
//! as a short entry alone. Any other name (`loader`, `kios.conf`, `a long name.efi`) gets
//! long-name entries holding it in UTF-16, followed by a short entry with a generated
//! short name (`LOADER`, `KIOS~1.CON`) whose checksum the long entries carry.

use super::layout::{put16, ATTR_LONG_NAME, DIR_ENTRY};

/// The characters a short name may hold besides `A-Z` and `0-9` (fatgen103 §6.1).
/// Bytes above 0x7F are legal too (OEM code page), but we never generate them.
const SHORT_SPECIAL: &[u8] = b"$%'-_@~`!(){}^#&";
/// Characters no FAT name may hold (fatgen103 §7.3 adds `+ , ; = [ ]` and space to
/// the short-name set for long names; these stay forbidden).
const LONG_FORBIDDEN: &[char] = &['"', '*', '/', ':', '<', '>', '?', '\\', '|'];
/// §7: a long name holds at most 255 UTF-16 units.
const MAX_LONG: usize = 255;
const LFN_CHARS_PER_ENTRY: usize = 13;

/// How one name of a directory is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatName {
    /// The 11-byte short name: base padded to 8 with spaces, extension padded to 3.
    pub short: [u8; 11],
    /// The long name in UTF-16, when the name is not exactly its short name.
    pub long: Option<Vec<u16>>,
}

impl FatName {
    /// How many 32-byte directory entries the name takes.
    pub fn slots(&self) -> usize {
        1 + self
            .long
            .as_ref()
            .map_or(0, |l| l.len().div_ceil(LFN_CHARS_PER_ENTRY))
    }
}

/// Why the names of a directory cannot be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Name number `.0` is not allowed on FAT.
    Bad(usize, &'static str),
    /// Names `.0` and `.1` differ only in case.
    Clash(usize, usize),
}

fn is_short_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || SHORT_SPECIAL.contains(&b)
}

/// The short name of `name` if `name` already is a valid upper case 8.3 name.
pub fn exact_short(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = match name.split_once('.') {
        Some((b, e)) => (b, e),
        None => (name, ""),
    };
    let ok = |s: &str, max: usize| s.len() <= max && s.bytes().all(is_short_char);
    if base.is_empty() || !ok(base, 8) || !ok(ext, 3) || (ext.is_empty() && name.ends_with('.')) {
        return None;
    }
    Some(pack(base.as_bytes(), ext.as_bytes()))
}

fn pack(base: &[u8], ext: &[u8]) -> [u8; 11] {
    let mut s = [b' '; 11];
    s[..base.len()].copy_from_slice(base);
    s[8..8 + ext.len()].copy_from_slice(ext);
    s
}

/// Checks that `name` can be a long name; returns it in UTF-16.
fn long_name(name: &str) -> Result<Vec<u16>, &'static str> {
    if name
        .chars()
        .any(|c| (c as u32) < 0x20 || LONG_FORBIDDEN.contains(&c))
    {
        return Err("it contains a control character or one of \" * / : < > ? \\ |");
    }
    // Windows and the UEFI FAT driver drop trailing dots and spaces when they look a
    // name up, so such a file could never be opened by its name.
    if name.ends_with('.') || name.ends_with(' ') {
        return Err("it ends with a dot or a space");
    }
    let utf16: Vec<u16> = name.encode_utf16().collect();
    if utf16.len() > MAX_LONG {
        return Err("it is longer than 255 UTF-16 characters");
    }
    Ok(utf16)
}

/// fatgen103 §7.4 "The Basis-Name Generation Algorithm": the upper case short name a
/// long name starts from, and whether it lost anything (then it needs a numeric tail).
fn basis(name: &str) -> (Vec<u8>, Vec<u8>, bool) {
    let mut lossy = false;
    // Upper case; characters a short name cannot hold become `_`; spaces are dropped
    // and so are leading periods.
    let mut conv: Vec<u8> = Vec::new();
    let trimmed = name.trim_start_matches('.');
    if trimmed.len() != name.len() {
        lossy = true;
    }
    for c in trimmed.chars() {
        match c.to_ascii_uppercase() {
            ' ' => lossy = true,
            c if c.is_ascii() && (is_short_char(c as u8) || c == '.') => conv.push(c as u8),
            _ => {
                lossy = true;
                conv.push(b'_');
            }
        }
    }
    let (base, ext): (Vec<u8>, Vec<u8>) = match conv.iter().rposition(|&b| b == b'.') {
        Some(i) => (conv[..i].to_vec(), conv[i + 1..].to_vec()),
        None => (conv, Vec::new()),
    };
    // Periods inside the base are dropped (one period separates base and extension).
    let mut fits = !base.contains(&b'.');
    let mut base: Vec<u8> = base.into_iter().filter(|&b| b != b'.').collect();
    let mut ext = ext;
    if base.len() > 8 || ext.len() > 3 {
        fits = false;
    }
    base.truncate(8);
    ext.truncate(3);
    if base.is_empty() {
        base.push(b'_');
        lossy = true;
    }
    (base, ext, lossy || !fits)
}

/// Chooses the stored names of one directory's entries, in order. Names that are exact
/// short names keep them; the others get a generated short name unique within the
/// directory (`BASIS~N.EXT`, the "numeric-tail" of fatgen103 §7.4).
pub fn assign(names: &[&str]) -> Result<Vec<FatName>, NameError> {
    // FAT compares names without case (§7.5 "Name Matching In Short And Long Names").
    let mut upper = std::collections::HashMap::new();
    for (i, n) in names.iter().enumerate() {
        if let Some(j) = upper.insert(n.to_uppercase(), i) {
            return Err(NameError::Clash(j, i));
        }
    }
    let exact: Vec<Option<[u8; 11]>> = names.iter().map(|n| exact_short(n)).collect();
    let mut used: std::collections::HashSet<[u8; 11]> = exact.iter().flatten().copied().collect();
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        if let Some(short) = exact[i] {
            out.push(FatName { short, long: None });
            continue;
        }
        let long = long_name(name).map_err(|why| NameError::Bad(i, why))?;
        let (base, ext, needs_tail) = basis(name);
        let plain = pack(&base, &ext);
        let short = if !needs_tail && used.insert(plain) {
            plain
        } else {
            (1..=999_999u32)
                .map(|n| {
                    let tail = format!("~{n}");
                    let keep = base.len().min(8 - tail.len());
                    let mut b = base[..keep].to_vec();
                    b.extend_from_slice(tail.as_bytes());
                    pack(&b, &ext)
                })
                .find(|s| used.insert(*s))
                .ok_or(NameError::Bad(i, "a directory has too many similar names"))?
        };
        out.push(FatName {
            short,
            long: Some(long),
        });
    }
    Ok(out)
}

/// fatgen103 §7.2 "ChkSum()": the checksum of a short name that its long entries carry.
pub fn checksum(short: &[u8; 11]) -> u8 {
    short.iter().fold(0u8, |sum, &c| {
        (if sum & 1 != 0 { 0x80u8 } else { 0 })
            .wrapping_add(sum >> 1)
            .wrapping_add(c)
    })
}

/// Where the 13 characters of a long entry sit: `LDIR_Name1` (5 at byte 1),
/// `LDIR_Name2` (6 at 14), `LDIR_Name3` (2 at 28) (fatgen103 §7).
const LFN_OFFSETS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/// The long-name entries for `long`, in on-disk order: the last piece first, its
/// `LDIR_Ord` or'ed with 0x40 (`LAST_LONG_ENTRY`), down to piece 1 just before the
/// short entry (fatgen103 §7). A piece shorter than 13 ends with 0x0000 then 0xFFFF.
pub fn lfn_entries(long: &[u16], short: &[u8; 11]) -> Vec<[u8; DIR_ENTRY]> {
    let sum = checksum(short);
    let n = long.len().div_ceil(LFN_CHARS_PER_ENTRY);
    (1..=n)
        .rev()
        .map(|ord| {
            let mut e = [0u8; DIR_ENTRY];
            e[0] = ord as u8 | if ord == n { 0x40 } else { 0 }; // LDIR_Ord
            e[11] = ATTR_LONG_NAME; // LDIR_Attr
            e[12] = 0; // LDIR_Type
            e[13] = sum; // LDIR_Chksum
                         // LDIR_FstClusLO (26) stays 0.
            let start = (ord - 1) * LFN_CHARS_PER_ENTRY;
            for (k, &at) in LFN_OFFSETS.iter().enumerate() {
                let unit = match long.get(start + k) {
                    Some(&u) => u,
                    None if start + k == long.len() => 0x0000,
                    None => 0xFFFF,
                };
                put16(&mut e, at, unit);
            }
            e
        })
        .collect()
}

/// One long entry, decoded: its ordinal (without the last-entry bit), whether it is
/// the last piece, its checksum and its characters up to the terminator.
pub struct LfnPiece {
    pub ord: u8,
    pub last: bool,
    pub checksum: u8,
    pub chars: Vec<u16>,
}

pub fn decode_lfn(e: &[u8]) -> LfnPiece {
    let chars = LFN_OFFSETS
        .iter()
        .map(|&at| u16::from_le_bytes([e[at], e[at + 1]]))
        .take_while(|&u| u != 0x0000)
        .collect();
    LfnPiece {
        ord: e[0] & 0x3F,
        last: e[0] & 0x40 != 0,
        checksum: e[13],
        chars,
    }
}

/// The name a short entry shows: base and extension without padding, joined by a dot.
/// `DIR_NTRes` bits 0x08 and 0x10 (Windows NT, also written by Linux and mtools) ask for
/// a lower case base or extension. Bytes above 0x7F are OEM code page characters; we show
/// them as Latin-1, which is right for ASCII and close enough for a listing.
pub fn decode_short(e: &[u8]) -> String {
    let mut name = [0u8; 11];
    name.copy_from_slice(&e[..11]);
    // fatgen103 §6.1: a first byte 0x05 stands for 0xE5 (which marks a free entry).
    if name[0] == 0x05 {
        name[0] = 0xE5;
    }
    let text = |bytes: &[u8], lower: bool| -> String {
        let end = bytes.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
        bytes[..end]
            .iter()
            .map(|&b| {
                let c = char::from(b);
                if lower {
                    c.to_ascii_lowercase()
                } else {
                    c
                }
            })
            .collect()
    };
    let base = text(&name[..8], e[12] & 0x08 != 0);
    let ext = text(&name[8..], e[12] & 0x10 != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_case_8_3_names_are_stored_as_they_are() {
        assert_eq!(exact_short("BOOTX64.EFI"), Some(*b"BOOTX64 EFI"));
        assert_eq!(exact_short("EFI"), Some(*b"EFI        "));
        assert_eq!(exact_short("A-B_C$.X"), Some(*b"A-B_C$  X  "));
        for not in [
            "efi",
            "BOOTX64.EFIX",
            "TOOLONGNAME",
            ".EFI",
            "A.B.C",
            "A B",
            "A+B",
            "A.",
        ] {
            assert_eq!(exact_short(not), None, "{not}");
        }
        let got = assign(&["BOOTX64.EFI"]).unwrap();
        assert_eq!(got[0].long, None);
        assert_eq!(got[0].slots(), 1);
    }

    #[test]
    fn other_names_get_a_long_name_and_a_unique_short_one() {
        let got = assign(&[
            "BOOTX64.EFI",
            "bootx64.efi.bak",
            "entries",
            "kios.conf",
            "kios.config",
        ])
        .unwrap();
        let shorts: Vec<&[u8]> = got.iter().map(|n| &n.short[..]).collect();
        assert_eq!(
            shorts,
            [
                &b"BOOTX64 EFI"[..],
                b"BOOTX6~1BAK",
                b"ENTRIES    ",
                b"KIOS~1  CON",
                b"KIOS~2  CON"
            ]
        );
        assert_eq!(
            got[2].long.as_deref(),
            Some(&"entries".encode_utf16().collect::<Vec<_>>()[..])
        );
        assert_eq!(got[3].slots(), 2);
    }

    #[test]
    fn a_generated_name_avoids_an_exact_short_name_that_comes_later() {
        let got = assign(&["kios.conf", "KIOS~1.CON"]).unwrap();
        assert_eq!(&got[0].short, b"KIOS~2  CON");
        assert_eq!(&got[1].short, b"KIOS~1  CON");
    }

    #[test]
    fn lossy_and_odd_names_become_valid_short_names() {
        let got = assign(&[".hidden", "a b+c.txt", "été.efi", "x.tar.gz"]).unwrap();
        let shorts: Vec<&[u8]> = got.iter().map(|n| &n.short[..]).collect();
        assert_eq!(
            shorts,
            [
                &b"HIDDEN~1   "[..],
                b"AB_C~1  TXT",
                b"_T_~1   EFI",
                b"XTAR~1  GZ "
            ]
        );
    }

    #[test]
    fn names_fat_cannot_hold_are_refused() {
        assert_eq!(assign(&["a", "A"]), Err(NameError::Clash(0, 1)));
        assert!(matches!(assign(&["a:b"]), Err(NameError::Bad(0, _))));
        assert!(matches!(assign(&["trailing."]), Err(NameError::Bad(0, _))));
        assert!(matches!(
            assign(&[&"x".repeat(256)]),
            Err(NameError::Bad(0, _))
        ));
    }

    #[test]
    fn checksum_matches_the_spec_algorithm() {
        // Reference values from a direct transcription of the C code of fatgen103 §7.2;
        // fsck.vfat checks the checksums of our images and we read mcopy's (tests/esp_fsck.rs).
        assert_eq!(checksum(b"BOOTX64 EFI"), 0x1d);
        assert_eq!(checksum(b"KIOS~1  CON"), 0xb5);
        assert_eq!(checksum(b"           "), 0xf7);
    }

    #[test]
    fn long_entries_are_written_last_piece_first_and_decode_back() {
        let name: Vec<u16> = "a very long name.conf".encode_utf16().collect(); // 21 units
        let short = *b"AVERYL~1CON";
        let es = lfn_entries(&name, &short);
        assert_eq!(es.len(), 2);
        assert_eq!(es[0][0], 0x42);
        assert_eq!(es[1][0], 0x01);
        assert!(es
            .iter()
            .all(|e| e[11] == 0x0F && e[13] == checksum(&short) && e[26] == 0));
        let last = decode_lfn(&es[0]);
        assert_eq!(String::from_utf16(&last.chars).unwrap(), "ame.conf");
        // Terminator then 0xFFFF padding after the 8 characters of the last piece.
        assert_eq!(
            &es[0][LFN_OFFSETS[8]..LFN_OFFSETS[8] + 4],
            &[0, 0, 0xFF, 0xFF]
        );
        let first = decode_lfn(&es[1]);
        assert_eq!(String::from_utf16(&first.chars).unwrap(), "a very long n");
        // A name of exactly 13 units has no terminator.
        let thirteen: Vec<u16> = "abcdefghijklm".encode_utf16().collect();
        let es = lfn_entries(&thirteen, &short);
        assert_eq!(es.len(), 1);
        assert_eq!(decode_lfn(&es[0]).chars, thirteen);
    }

    #[test]
    fn short_names_decode_with_nt_case_bits() {
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(b"KIOS    CON");
        assert_eq!(decode_short(&e), "KIOS.CON");
        e[12] = 0x18;
        assert_eq!(decode_short(&e), "kios.con");
        e[..11].copy_from_slice(b"EFI        ");
        e[12] = 0;
        assert_eq!(decode_short(&e), "EFI");
    }
}
