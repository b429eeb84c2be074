//! Reading the raw image for the writers: which ranges hold data (`SEEK_DATA` /
//! `SEEK_HOLE`, lseek(2)), and the image as a sequence of blocks where holes and
//! all-zero blocks cost no write. Memory is one block buffer, whatever the disk size.
//!
//! Not here: any output format. On a filesystem without hole reporting the kernel
//! reports the whole file as data, which is still correct, only slower.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::FormatError;

/// Largest block any writer asks for; also the size of [`ZEROS`].
pub(super) const MAX_BLOCK: usize = 1 << 20;

/// A block of zeros to compare against and to write for holes.
pub(super) static ZEROS: [u8; MAX_BLOCK] = [0; MAX_BLOCK];

pub(super) fn is_zero(buf: &[u8]) -> bool {
    buf == &ZEROS[..buf.len()]
}

/// The raw image being converted (or hashed, `crate::report`).
pub(crate) struct RawImage {
    file: File,
    path: PathBuf,
    size: u64,
}

impl RawImage {
    pub(crate) fn open(path: &Path) -> Result<Self, FormatError> {
        let err = |source| FormatError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        Ok(RawImage {
            file,
            path: path.to_path_buf(),
            size,
        })
    }

    pub(super) fn size(&self) -> u64 {
        self.size
    }

    fn read_err(&self, source: io::Error) -> FormatError {
        FormatError::Read {
            path: self.path.clone(),
            source,
        }
    }

    /// The data extent containing or following `pos`, as `(start, end)`; `None` when
    /// only a hole remains.
    fn data_from(&self, pos: u64) -> io::Result<Option<(u64, u64)>> {
        if pos >= self.size {
            return Ok(None);
        }
        let Some(start) = crate::sys::seek_data(&self.file, pos, crate::sys::Seek::Data)? else {
            return Ok(None);
        };
        let end =
            crate::sys::seek_data(&self.file, start, crate::sys::Seek::Hole)?.unwrap_or(self.size);
        Ok(Some((start, end.min(self.size))))
    }

    /// Calls `f(offset, data)` for every `block`-aligned block that holds a non-zero
    /// byte, in increasing offset order. `data.len() == block` except for a last,
    /// partial block at the end of an image whose size is not a multiple of `block`.
    pub(super) fn for_each_nonzero_block(
        &mut self,
        block: usize,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        assert!(block.is_power_of_two() && block <= MAX_BLOCK);
        let b = block as u64;
        let mut buf = vec![0u8; block];
        let mut pos = 0u64;
        let mut data_end = 0u64;
        while pos < self.size {
            if pos >= data_end {
                match self.data_from(pos).map_err(|e| self.read_err(e))? {
                    None => break,
                    Some((start, end)) => {
                        pos = pos.max(start / b * b);
                        data_end = end;
                    }
                }
            }
            let len = (self.size - pos).min(b) as usize;
            self.file
                .read_exact_at(&mut buf[..len], pos)
                .map_err(|e| self.read_err(e))?;
            if !is_zero(&buf[..len]) {
                f(pos, &buf[..len])?;
            }
            pos += b;
        }
        Ok(())
    }

    /// Writes every byte of the image to `w`, holes as zeros (read from memory, not
    /// from the file). `werr` turns a write error into the caller's error.
    pub(crate) fn copy_all(
        &mut self,
        w: &mut dyn Write,
        werr: impl Fn(io::Error) -> FormatError,
    ) -> Result<(), FormatError> {
        let mut buf = vec![0u8; MAX_BLOCK];
        let mut pos = 0u64;
        while pos < self.size {
            let (start, end) = self
                .data_from(pos)
                .map_err(|e| self.read_err(e))?
                .unwrap_or((self.size, self.size));
            while pos < start {
                let n = (start - pos).min(MAX_BLOCK as u64) as usize;
                w.write_all(&ZEROS[..n]).map_err(&werr)?;
                pos += n as u64;
            }
            while pos < end {
                let n = (end - pos).min(MAX_BLOCK as u64) as usize;
                self.file
                    .read_exact_at(&mut buf[..n], pos)
                    .map_err(|e| self.read_err(e))?;
                w.write_all(&buf[..n]).map_err(&werr)?;
                pos += n as u64;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nonzero_blocks_are_visited_and_holes_copy_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.raw");
        let f = File::create(&p).unwrap();
        f.set_len(10 << 20).unwrap();
        f.write_all_at(&[7u8; 100], 3 << 20).unwrap();
        f.write_all_at(&[0u8; 70000], 5 << 20).unwrap(); // data extent, but zero
        f.write_all_at(&[9u8; 10], (10 << 20) - 10).unwrap();
        drop(f);
        let mut img = RawImage::open(&p).unwrap();
        let mut seen = vec![];
        img.for_each_nonzero_block(65536, |off, d| {
            seen.push((off, d.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(3 << 20, 65536), ((10 << 20) - 65536, 65536)]);
        let mut all = Vec::new();
        img.copy_all(&mut all, |source| FormatError::Write {
            format: super::super::Format::Raw,
            source,
        })
        .unwrap();
        assert_eq!(all, std::fs::read(&p).unwrap());
    }
}
