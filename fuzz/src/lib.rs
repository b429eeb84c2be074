//! What the fuzz targets share: a reader that makes a short input look like the
//! start of a large disk, and a fixer for the GPT's CRCs, so that the fuzzer gets
//! past the checksums to the structures behind them.

use std::io::{self, Read, Seek, SeekFrom};

/// `data` followed by zeros up to `len` bytes: a FAT32 volume or a disk needs tens
/// of MiB, a fuzz input is a few KiB.
pub struct ZeroTail<'a> {
    data: &'a [u8],
    len: u64,
    pos: u64,
}

impl<'a> ZeroTail<'a> {
    pub fn new(data: &'a [u8], len: u64) -> Self {
        ZeroTail {
            data,
            len: len.max(data.len() as u64),
            pos: 0,
        }
    }
}

impl Read for ZeroTail<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = usize::try_from(self.pos + i as u64)
                .ok()
                .and_then(|p| self.data.get(p))
                .copied()
                .unwrap_or(0);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ZeroTail<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "before 0"))?;
        Ok(self.pos)
    }
}

/// Recomputes the primary GPT header's entry-array CRC and header CRC (UEFI 2.10
/// 5.3.2) in `disk`, when it has a header at LBA 1 whose fields fit in `disk`.
pub fn fix_gpt_crcs(disk: &mut [u8]) {
    if disk.len() < 1024 || &disk[512..520] != b"EFI PART" {
        return;
    }
    let u32at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let h = &disk[512..1024];
    let lba = u64::from_le_bytes(h[72..80].try_into().unwrap_or([0; 8]));
    let len = u64::from(u32at(h, 80)) * u64::from(u32at(h, 84));
    let hsize = (u32at(h, 12) as usize).clamp(92, 512);
    if let Some(start) = lba.checked_mul(512) {
        if let Some(end) = start.checked_add(len).filter(|&e| e <= disk.len() as u64) {
            let crc = crc32fast::hash(&disk[start as usize..end as usize]);
            disk[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
        }
    }
    disk[512 + 16..512 + 20].fill(0);
    let crc = crc32fast::hash(&disk[512..512 + hsize]);
    disk[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
}
