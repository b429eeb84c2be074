//! The PE side of Authenticode: the image hash a signature covers, the certificate
//! table that carries the signature, and the PE checksum.
//!
//! Input: a finished UKI (a file, or any `Read + Seek` for reading back); output: its
//! Authenticode SHA-256 hash, and the same file with a signature appended. What is
//! signed and how (the PKCS#7 `SignedData`, the keys) is `crate::sign`'s business:
//! this module never sees a key or parses DER.
//!
//! The rules are those of Microsoft's "Windows Authenticode Portable Executable
//! Signature Format" (section "Calculating the PE Image Hash") and of the PE format
//! specification (3.4.2 `CheckSum`, 3.4.3 data directory 4 "Certificate Table", 4.7
//! "The Attribute Certificate Table"):
//! - the hash covers the headers up to `SizeOfHeaders` except the `CheckSum` field and
//!   the Certificate Table data-directory entry, then every section's raw data in file
//!   order, then whatever follows the last section up to the certificate table;
//! - the certificate table holds one `WIN_CERTIFICATE` (`dwLength`, `wRevision`
//!   0x0200, `wCertificateType` 0x0002 PKCS_SIGNED_DATA, then the DER), padded to
//!   8 bytes, at the end of the file, 8-byte aligned; data directory 4 holds its file
//!   offset (not an RVA) and size;
//! - `CheckSum` is recomputed over the signed file (16-bit one's-complement-style sum
//!   with carries folded, plus the file length), as `osslsigncode verify` checks it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest as _, Sha256};

use super::pe::{le16, le32, put32, OptionalLayout, PeHeaders, CERTIFICATE_TABLE, OPT_CHECKSUM};
use super::BootError;

/// `WIN_CERTIFICATE.wRevision`: WIN_CERT_REVISION_2_0 (PE spec 4.7).
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERTIFICATE.wCertificateType`: WIN_CERT_TYPE_PKCS_SIGNED_DATA (PE spec 4.7).
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;
/// The `WIN_CERTIFICATE` header: dwLength, wRevision, wCertificateType.
const WIN_CERT_HEADER_LEN: u64 = 8;
/// The largest signature read back; ours are a few KiB (a certificate and a signature).
const MAX_SIGNATURE: u64 = 1 << 20;

/// Where the parts of a PE image that Authenticode treats specially are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The file offset of the optional header's `CheckSum`.
    checksum_at: u64,
    /// The file offset of data directory 4 (Certificate Table: offset, size).
    cert_dir_at: u64,
    size_of_headers: u64,
    /// (file offset, size) of every section with raw data, in file order.
    sections: Vec<(u64, u64)>,
    /// The certificate table (file offset, size), when the image has one.
    pub certificate_table: Option<(u64, u64)>,
    pub file_len: u64,
}

impl Layout {
    /// Reads the headers of the image in `r` (from its start) and the file length.
    pub fn read<R: Read + Seek>(r: &mut R, what: &'static str) -> Result<Layout, BootError> {
        let seek_err = |source| BootError::Io {
            action: format!("seeking in {what}"),
            source,
        };
        r.seek(SeekFrom::Start(0)).map_err(seek_err)?;
        let h = PeHeaders::read(r, what)?;
        let file_len = r.seek(SeekFrom::End(0)).map_err(seek_err)?;
        let not_pe = |why: String| BootError::NotPe { what, why };
        let magic = le16(&h.bytes, h.opt_offset);
        let layout = OptionalLayout::for_magic(magic)
            .ok_or_else(|| not_pe(format!("unknown optional header magic {magic:#x}")))?;
        let Some((offset, size)) = h.certificate_table else {
            return Err(not_pe(
                "it has fewer than 5 data directories: no room for a certificate table".into(),
            ));
        };
        let size_of_headers = u64::from(h.size_of_headers);
        let mut sections: Vec<(u64, u64)> = h
            .sections
            .iter()
            .filter(|s| s.size_of_raw_data > 0)
            .map(|s| (s.pointer_to_raw_data.into(), s.size_of_raw_data.into()))
            .collect();
        sections.sort();
        if let Some(&(at, len)) = sections.iter().find(|(at, len)| at + len > file_len) {
            return Err(not_pe(format!(
                "a section's {len} bytes at {at:#x} go past the end of the file ({file_len:#x})"
            )));
        }
        if size_of_headers > file_len || size_of_headers < h.bytes.len() as u64 {
            return Err(not_pe(format!(
                "its SizeOfHeaders ({size_of_headers:#x}) is not within the file"
            )));
        }
        Ok(Layout {
            checksum_at: (h.opt_offset + OPT_CHECKSUM) as u64,
            cert_dir_at: (h.opt_offset + layout.data_directories + CERTIFICATE_TABLE * 8) as u64,
            size_of_headers,
            sections,
            certificate_table: (offset != 0 || size != 0)
                .then_some((u64::from(offset), u64::from(size))),
            file_len,
        })
    }

    /// The byte ranges the Authenticode hash covers, in order.
    fn hashed_ranges(&self) -> Vec<(u64, u64)> {
        let mut ranges = vec![
            (0, self.checksum_at),
            (self.checksum_at + 4, self.cert_dir_at),
            (self.cert_dir_at + 8, self.size_of_headers),
        ];
        let mut end = self.size_of_headers;
        for &(at, len) in &self.sections {
            ranges.push((at, at + len));
            end = end.max(at + len);
        }
        // Trailing data: what follows the last section, up to the signature.
        let stop = self.certificate_table.map_or(self.file_len, |(at, _)| at);
        if stop > end {
            ranges.push((end, stop));
        }
        ranges
    }
}

/// The Authenticode SHA-256 hash of the image in `r`, whose layout is `layout`.
pub fn image_hash<R: Read + Seek>(r: &mut R, layout: &Layout) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    for (start, end) in layout.hashed_ranges() {
        r.seek(SeekFrom::Start(start))?;
        let mut left = end - start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
    }
    Ok(hasher.finalize().into())
}

/// The PE `CheckSum` of the image in `r` (`file_len` bytes), its own field counted as
/// zero: the 16-bit little-endian words summed with the carries folded back in, plus
/// the file length (the algorithm of ImageHlp's `CheckSumMappedFile`).
pub fn checksum<R: Read + Seek>(r: &mut R, layout: &Layout) -> io::Result<u32> {
    r.seek(SeekFrom::Start(0))?;
    let mut sum: u64 = 0;
    // An even size, so that no 16-bit word straddles two reads.
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    while at < layout.file_len {
        let n = (layout.file_len - at).min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..n])?;
        for i in 0..4u64 {
            let p = layout.checksum_at + i;
            if (at..at + n as u64).contains(&p) {
                buf[(p - at) as usize] = 0;
            }
        }
        for w in buf[..n].chunks(2) {
            sum += u64::from(w[0]) | u64::from(*w.get(1).unwrap_or(&0)) << 8;
        }
        // Folding often keeps the sum far from overflow; the result is the same.
        sum = (sum & 0xffff) + (sum >> 16);
        at += n as u64;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    Ok((sum as u32).wrapping_add(layout.file_len as u32))
}

/// Readies the UKI at `file` for a signature and returns its Authenticode hash: an
/// image that already carries a signature is refused (a second one would not cover
/// the first), and the file is padded with zeros to 8 bytes, where the certificate
/// table must start (the padding is trailing data, so it is hashed).
pub fn prepare(file: &mut File) -> Result<(Layout, [u8; 32]), BootError> {
    let io_err = |source| BootError::Io {
        action: "reading the UKI to sign it".into(),
        source,
    };
    let mut layout = Layout::read(file, "the UKI")?;
    if let Some((offset, size)) = layout.certificate_table {
        return Err(BootError::AlreadySigned { offset, size });
    }
    let pad = (8 - layout.file_len % 8) % 8;
    if pad > 0 {
        file.seek(SeekFrom::End(0)).map_err(io_err)?;
        file.write_all(&[0u8; 8][..pad as usize]).map_err(io_err)?;
        layout.file_len += pad;
    }
    let hash = image_hash(file, &layout).map_err(io_err)?;
    Ok((layout, hash))
}

/// Appends `pkcs7` (a DER `ContentInfo` holding the `SignedData`) to the UKI that
/// [`prepare`] readied, as its certificate table, and rewrites data directory 4 and
/// the checksum. Returns the new file length.
pub fn embed(file: &mut File, layout: &Layout, pkcs7: &[u8]) -> Result<u64, BootError> {
    let io_err = |source| BootError::Io {
        action: "writing the signature into the UKI".into(),
        source,
    };
    let unpadded = WIN_CERT_HEADER_LEN + pkcs7.len() as u64;
    let len = unpadded.div_ceil(8) * 8;
    let too_large = || BootError::TooLarge {
        what: "the signed UKI",
        size: layout.file_len + len,
    };
    let len32 = u32::try_from(len).map_err(|_| too_large())?;
    let offset32 = u32::try_from(layout.file_len).map_err(|_| too_large())?;
    u32::try_from(layout.file_len + len).map_err(|_| too_large())?;

    // dwLength counts the padding, as signtool, sbsign and osslsigncode write it, so
    // that the entries of the table follow each other by dwLength.
    let mut entry = Vec::with_capacity(len as usize);
    entry.extend_from_slice(&len32.to_le_bytes());
    entry.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    entry.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    entry.extend_from_slice(pkcs7);
    entry.resize(len as usize, 0);
    file.seek(SeekFrom::Start(layout.file_len))
        .map_err(io_err)?;
    file.write_all(&entry).map_err(io_err)?;

    let mut dir = [0u8; 8];
    put32(&mut dir, 0, offset32);
    put32(&mut dir, 4, len32);
    file.seek(SeekFrom::Start(layout.cert_dir_at))
        .map_err(io_err)?;
    file.write_all(&dir).map_err(io_err)?;

    let signed = Layout {
        certificate_table: Some((layout.file_len, len)),
        file_len: layout.file_len + len,
        ..layout.clone()
    };
    let sum = checksum(file, &signed).map_err(io_err)?;
    file.seek(SeekFrom::Start(layout.checksum_at))
        .map_err(io_err)?;
    file.write_all(&sum.to_le_bytes()).map_err(io_err)?;
    file.flush().map_err(io_err)?;
    Ok(signed.file_len)
}

/// A signature found in an image, with the hash it should cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Embedded {
    /// The `WIN_CERTIFICATE`'s content: a DER PKCS#7 `ContentInfo`, then the zeros
    /// that pad the entry to 8 bytes (the DER's own length says where it ends).
    pub pkcs7: Vec<u8>,
    /// The image's Authenticode SHA-256 hash, computed here.
    pub image_hash: [u8; 32],
    /// The `CheckSum` the image carries, and the one computed.
    pub checksum: (u32, u32),
}

/// Reads the signature of the image in `r` back, or `None` when it has none.
pub fn read_signature<R: Read + Seek>(r: &mut R) -> Result<Option<Embedded>, BootError> {
    let layout = Layout::read(r, "the UKI")?;
    let Some((offset, size)) = layout.certificate_table else {
        return Ok(None);
    };
    let bad = |why: String| BootError::BadSection {
        section: "certificate table".into(),
        why,
    };
    if offset + size != layout.file_len || offset % 8 != 0 {
        return Err(bad(format!(
            "its {size} bytes at {offset:#x} are not 8-byte aligned at the end of the \
             file ({:#x} bytes): data was added after the signature",
            layout.file_len
        )));
    }
    if !(WIN_CERT_HEADER_LEN..=MAX_SIGNATURE).contains(&size) {
        return Err(bad(format!("it is {size} bytes long")));
    }
    let io_err = |source| BootError::Io {
        action: "reading the UKI's signature".into(),
        source,
    };
    r.seek(SeekFrom::Start(offset)).map_err(io_err)?;
    let mut table = vec![0u8; size as usize];
    r.read_exact(&mut table).map_err(io_err)?;
    let length = u64::from(le32(&table, 0));
    let (revision, kind) = (le16(&table, 4), le16(&table, 6));
    if revision != WIN_CERT_REVISION_2_0 || kind != WIN_CERT_TYPE_PKCS_SIGNED_DATA {
        return Err(bad(format!(
            "its first entry has revision {revision:#06x} and type {kind:#06x}, not a \
             PKCS#7 signature (0x0200, 0x0002)"
        )));
    }
    if !(WIN_CERT_HEADER_LEN..=size).contains(&length) {
        return Err(bad(format!(
            "its first entry says it is {length} bytes, in a table of {size}"
        )));
    }
    let pkcs7 = table[WIN_CERT_HEADER_LEN as usize..length as usize].to_vec();
    let image_hash = image_hash(r, &layout).map_err(io_err)?;
    let computed = checksum(r, &layout).map_err(io_err)?;
    r.seek(SeekFrom::Start(layout.checksum_at))
        .map_err(io_err)?;
    let mut stored = [0u8; 4];
    r.read_exact(&mut stored).map_err(io_err)?;
    Ok(Some(Embedded {
        pkcs7,
        image_hash,
        checksum: (u32::from_le_bytes(stored), computed),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::synth::Synth;
    use super::*;
    use std::io::Cursor;

    fn temp_image(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uki.efi");
        std::fs::write(&path, bytes).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, f)
    }

    #[test]
    fn the_hash_skips_checksum_and_certificate_entry_but_not_sections() {
        let img = Synth::default().build();
        let layout = Layout::read(&mut Cursor::new(&img), "t").unwrap();
        let base = image_hash(&mut Cursor::new(&img), &layout).unwrap();
        let mut changed = img.clone();
        changed[layout.checksum_at as usize] ^= 0xff;
        changed[layout.cert_dir_at as usize + 7] ^= 0x01;
        assert_eq!(
            image_hash(&mut Cursor::new(&changed), &layout).unwrap(),
            base
        );
        let mut changed = img.clone();
        changed[0x500] ^= 0x01; // inside .text
        assert_ne!(
            image_hash(&mut Cursor::new(&changed), &layout).unwrap(),
            base
        );
    }

    #[test]
    fn a_signature_is_appended_aligned_and_read_back() {
        let mut img = Synth::default().build();
        img.extend_from_slice(b"xyz"); // trailing data: padded, hashed
        let (_dir, mut f) = temp_image(&img);
        let (layout, hash) = prepare(&mut f).unwrap();
        assert_eq!(layout.file_len % 8, 0);
        let len = embed(&mut f, &layout, b"0123456789").unwrap();
        assert_eq!(len, layout.file_len + 24, "8 + 10 bytes, padded to 24");
        let found = read_signature(&mut f).unwrap().unwrap();
        assert_eq!(found.pkcs7, b"0123456789\0\0\0\0\0\0", "with its padding");
        assert_eq!(
            found.image_hash, hash,
            "the signature is not part of the hash"
        );
        assert_eq!(found.checksum.0, found.checksum.1);
        assert_ne!(found.checksum.0, 0);
        assert!(matches!(
            prepare(&mut f).unwrap_err(),
            BootError::AlreadySigned { .. }
        ));
    }

    #[test]
    fn an_unsigned_image_has_no_signature() {
        let img = Synth::default().build();
        assert_eq!(read_signature(&mut Cursor::new(&img)).unwrap(), None);
    }

    #[test]
    fn checksum_matches_a_hand_sum() {
        let img = Synth::default().build();
        let layout = Layout::read(&mut Cursor::new(&img), "t").unwrap();
        let mut expected: u64 = 0;
        for (i, w) in img.chunks(2).enumerate() {
            let at = (i * 2) as u64;
            if at == layout.checksum_at || at == layout.checksum_at + 2 {
                continue;
            }
            expected += u64::from(u16::from_le_bytes([w[0], w[1]]));
            expected = (expected & 0xffff) + (expected >> 16);
        }
        let expected = expected as u32 + img.len() as u32;
        assert_eq!(checksum(&mut Cursor::new(&img), &layout).unwrap(), expected);
    }
}
