//! Reading a FAT32 volume: the boot sector, directories (long and short names) and
//! files, streamed along their cluster chains. Read-only; it checks what it follows
//! (cluster numbers in range, chains that end, long-name checksums) but it is not fsck.

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom};

use super::layout::{
    entry_cluster, get16, get32, ATTR_DIRECTORY, ATTR_LONG_NAME, ATTR_VOLUME_ID, BAD_CLUSTER,
    DIR_ENTRY, FAT_MASK, MAX_DIR_ENTRIES, MIN_FAT32_CLUSTERS,
};
use super::names::{checksum, decode_lfn, decode_short};
use super::{EspError, EspFile};

/// The most entries [`EspReader::list`] returns: an ESP holds tens of files.
pub const MAX_LISTED: usize = 1 << 16;
/// The longest path [`EspReader::list`] builds (Linux' PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// The most directory bytes [`EspReader::list`] reads over the whole volume.
pub const MAX_DIR_BYTES: u64 = 64 << 20;

/// A FAT32 volume at an offset of a seekable source (a partition inside a disk image).
pub struct EspReader<R> {
    inner: R,
    offset: u64,
    bytes_per_sector: u64,
    /// `BPB_TotSec16` or `BPB_TotSec32`.
    total_sectors: u64,
    cluster_bytes: u64,
    /// Byte offsets from the start of the volume.
    fat_offset: u64,
    data_offset: u64,
    clusters: u32,
    root: u32,
    volume_id: u32,
    label: [u8; 11],
    /// The last FAT sector read: its number and bytes.
    fat_cache: Option<(u64, Vec<u8>)>,
}

/// One directory entry as read.
struct DirEntry {
    /// The long name if there is a valid one, else the short name.
    name: String,
    short: String,
    is_dir: bool,
    first: u32,
    size: u32,
}

impl<R: Read + Seek> EspReader<R> {
    /// [`EspReader::open`] for a volume that must fit in the `len` bytes of its
    /// partition: a boot sector that claims more sectors than that is refused, so
    /// nothing is read from outside the partition.
    pub fn open_within(inner: R, offset: u64, len: u64) -> Result<Self, EspError> {
        let esp = Self::open(inner, offset)?;
        let volume = esp.total_sectors.saturating_mul(esp.bytes_per_sector);
        if volume > len {
            return Err(EspError::NotFat {
                offset,
                why: format!(
                    "its boot sector says the volume is {volume} bytes, larger than its \
                     partition ({len} bytes)"
                ),
            });
        }
        Ok(esp)
    }

    /// Reads and checks the boot sector at `offset`. Refuses anything that is not a
    /// FAT32 volume (fatgen103 §3.5: the cluster count alone decides the FAT type).
    pub fn open(mut inner: R, offset: u64) -> Result<Self, EspError> {
        let mut b = [0u8; 512];
        inner
            .seek(SeekFrom::Start(offset))
            .and_then(|_| inner.read_exact(&mut b))
            .map_err(|source| EspError::Read {
                what: "the boot sector",
                source,
            })?;
        let not_fat = |why: String| EspError::NotFat { offset, why };
        if b[510] != 0x55 || b[511] != 0xAA {
            return Err(not_fat("the boot sector has no 0x55AA signature".into()));
        }
        let bps = u64::from(get16(&b, 11));
        let spc = u64::from(b[13]);
        let reserved = u64::from(get16(&b, 14));
        let num_fats = u64::from(b[16]);
        let root_entries = u64::from(get16(&b, 17));
        let total = match get16(&b, 19) {
            0 => u64::from(get32(&b, 32)),
            n => u64::from(n),
        };
        let fat_size = match get16(&b, 22) {
            0 => u64::from(get32(&b, 36)),
            n => u64::from(n),
        };
        if ![512, 1024, 2048, 4096].contains(&bps) {
            return Err(not_fat(format!("bytes per sector is {bps}")));
        }
        if !spc.is_power_of_two() {
            return Err(not_fat(format!("sectors per cluster is {spc}")));
        }
        if reserved == 0 || num_fats == 0 || fat_size == 0 {
            return Err(not_fat(
                "reserved sectors, FAT count or FAT size is 0".into(),
            ));
        }
        // fatgen103 §3.5 "FAT Type Determination".
        let root_dir_sectors = (root_entries * 32).div_ceil(bps);
        let meta = reserved + num_fats * fat_size + root_dir_sectors;
        let data_sectors = total
            .checked_sub(meta)
            .ok_or_else(|| not_fat("the FATs are larger than the volume".into()))?;
        let clusters = data_sectors / spc;
        if clusters < u64::from(MIN_FAT32_CLUSTERS) {
            return Err(EspError::NotFat32 { offset, clusters });
        }
        if get16(&b, 22) != 0 || root_entries != 0 {
            return Err(not_fat(
                "a FAT32 boot sector has FATSz16 and RootEntCnt 0".into(),
            ));
        }
        if fat_size * bps / 4 < clusters + 2 {
            return Err(not_fat("the FAT is too small for the cluster count".into()));
        }
        let clusters = u32::try_from(clusters)
            .map_err(|_| not_fat(format!("{clusters} clusters is beyond FAT32")))?;
        let root = get32(&b, 44);
        let mut label = [b' '; 11];
        // BS_VolID and BS_VolLab are there when BS_BootSig is 0x29 (fatgen103 §3.3).
        let volume_id = if b[66] == 0x29 {
            label.copy_from_slice(&b[71..82]);
            get32(&b, 67)
        } else {
            0
        };
        let esp = EspReader {
            inner,
            offset,
            bytes_per_sector: bps,
            total_sectors: total,
            cluster_bytes: spc * bps,
            fat_offset: reserved * bps,
            data_offset: meta * bps,
            clusters,
            root,
            volume_id,
            label,
            fat_cache: None,
        };
        if !esp.in_range(root) {
            return Err(not_fat(format!(
                "the root cluster {root} is outside the volume"
            )));
        }
        Ok(esp)
    }

    /// The volume serial number (`BS_VolID`).
    pub fn volume_id(&self) -> u32 {
        self.volume_id
    }

    /// The volume label of the boot sector without its padding; empty for `NO NAME`.
    pub fn label(&self) -> String {
        let l = String::from_utf8_lossy(&self.label).trim_end().to_string();
        if l == "NO NAME" {
            String::new()
        } else {
            l
        }
    }

    /// Every directory and file, depth first: each directory, then what it holds, in
    /// the order of the directory entries. Bounded for hostile volumes (directories
    /// sharing cluster chains, nested thousands deep): at most [`MAX_LISTED`] entries,
    /// paths of at most [`MAX_PATH`] bytes, [`MAX_DIR_BYTES`] of directories read.
    pub fn list(&mut self) -> Result<Vec<EspFile>, EspError> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([self.root]);
        let mut dir_bytes = 0u64;
        let root = self.read_dir(self.root, "")?;
        // One open directory listing per level (an explicit stack: the depth comes from
        // the image and must not be able to overflow ours).
        let mut stack = vec![(root.into_iter(), String::new())];
        while let Some((entries, prefix)) = stack.last_mut() {
            let Some(e) = entries.next() else {
                stack.pop();
                continue;
            };
            let path = if prefix.is_empty() {
                e.name.clone()
            } else {
                format!("{prefix}/{}", e.name)
            };
            let corrupt = |why: String| EspError::Corrupt { why };
            if path.len() > MAX_PATH {
                return Err(corrupt(format!(
                    "a path is longer than {MAX_PATH} bytes (directories nested {} deep)",
                    stack.len()
                )));
            }
            if out.len() >= MAX_LISTED {
                return Err(corrupt(format!(
                    "it holds more than {MAX_LISTED} files and directories"
                )));
            }
            out.push(EspFile {
                path: path.clone(),
                is_dir: e.is_dir,
                size: if e.is_dir { 0 } else { u64::from(e.size) },
            });
            if e.is_dir {
                if !self.in_range(e.first) || !seen.insert(e.first) {
                    return Err(EspError::Corrupt {
                        why: format!(
                            "directory {} starts at cluster {}, outside the volume or used by another directory",
                            crate::untrusted::shown(&path),
                            e.first
                        ),
                    });
                }
                let (sub, read) = self.read_dir_counted(e.first, &path)?;
                dir_bytes += read;
                if dir_bytes > MAX_DIR_BYTES {
                    return Err(EspError::Corrupt {
                        why: format!("its directories hold more than {MAX_DIR_BYTES} bytes"),
                    });
                }
                stack.push((sub.into_iter(), path));
            }
        }
        Ok(out)
    }

    /// A reader over the file at `path` (components separated by `/`, compared without
    /// case like FAT does, by long or short name).
    pub fn open_file(&mut self, path: &str) -> Result<EspFileReader<'_, R>, EspError> {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let not_found = || EspError::NotFound {
            path: path.to_string(),
        };
        let mut dir = self.root;
        let mut prefix = String::new();
        for (i, comp) in comps.iter().enumerate() {
            let want = comp.to_uppercase();
            let entry = self
                .read_dir(dir, &prefix)?
                .into_iter()
                .find(|e| e.name.to_uppercase() == want || e.short == want)
                .ok_or_else(not_found)?;
            let last = i + 1 == comps.len();
            match (entry.is_dir, last) {
                (true, true) => {
                    return Err(EspError::IsADirectory {
                        path: path.to_string(),
                    })
                }
                (true, false) => {
                    dir = entry.first;
                    prefix = comps[..=i].join("/");
                }
                (false, true) => {
                    if entry.size > 0 && !self.in_range(entry.first) {
                        return Err(EspError::Corrupt {
                            why: format!(
                                "{path} starts at cluster {}, outside the volume",
                                entry.first
                            ),
                        });
                    }
                    return Ok(EspFileReader {
                        esp: self,
                        path: path.to_string(),
                        first: entry.first,
                        size: u64::from(entry.size),
                        pos: 0,
                        cur: None,
                    });
                }
                (false, false) => return Err(not_found()),
            }
        }
        Err(EspError::IsADirectory {
            path: path.to_string(),
        })
    }

    fn in_range(&self, c: u32) -> bool {
        c >= 2 && c < self.clusters.saturating_add(2)
    }

    /// The FAT entry of cluster `c`: `Some(next)` or `None` at the end of the chain
    /// (fatgen103 §4: any value >= 0x0FFFFFF8 ends a chain; only the low 28 bits count).
    fn next_cluster(&mut self, c: u32, what: &str) -> Result<Option<u32>, EspError> {
        let at = self.fat_offset + u64::from(c) * 4;
        let sector = at / self.bytes_per_sector;
        if self.fat_cache.as_ref().map(|(s, _)| *s) != Some(sector) {
            let mut buf = vec![0u8; self.bytes_per_sector as usize];
            self.inner
                .seek(SeekFrom::Start(
                    self.offset + sector * self.bytes_per_sector,
                ))
                .and_then(|_| self.inner.read_exact(&mut buf))
                .map_err(|source| EspError::Read {
                    what: "the FAT",
                    source,
                })?;
            self.fat_cache = Some((sector, buf));
        }
        let Some((_, buf)) = &self.fat_cache else {
            return Ok(None);
        };
        let v = get32(buf, (at % self.bytes_per_sector) as usize) & FAT_MASK;
        if v >= 0x0FFF_FFF8 {
            return Ok(None);
        }
        if v == BAD_CLUSTER || !self.in_range(v) {
            return Err(EspError::Corrupt {
                why: format!("the cluster chain of {what} goes from {c} to invalid cluster {v:#x}"),
            });
        }
        Ok(Some(v))
    }

    /// The entries of the directory starting at `first`, without `.`, `..`, deleted
    /// entries and the volume label (fatgen103 §6 and §7).
    fn read_dir(&mut self, first: u32, path: &str) -> Result<Vec<DirEntry>, EspError> {
        self.read_dir_counted(first, path)
            .map(|(entries, _)| entries)
    }

    /// [`Self::read_dir`], and how many bytes of directory were read.
    fn read_dir_counted(
        &mut self,
        first: u32,
        path: &str,
    ) -> Result<(Vec<DirEntry>, u64), EspError> {
        // Names come from the image: shown escaped in errors.
        let what = if path.is_empty() {
            "/".to_string()
        } else {
            crate::untrusted::shown(path)
        };
        let max_clusters = (MAX_DIR_ENTRIES * DIR_ENTRY) as u64 / self.cluster_bytes;
        let mut bytes = Vec::new();
        let mut cluster = Some(first);
        let mut n = 0;
        while let Some(c) = cluster {
            // The first cluster comes from a directory entry, which nothing has
            // checked yet (the later ones are checked by next_cluster).
            if !self.in_range(c) {
                return Err(EspError::Corrupt {
                    why: format!("directory {what} starts at cluster {c}, outside the volume"),
                });
            }
            n += 1;
            if n > max_clusters.max(1) {
                return Err(EspError::Corrupt {
                    why: format!("directory {what} is longer than 2 MiB (a loop in its chain?)"),
                });
            }
            let start = bytes.len();
            bytes.resize(start + self.cluster_bytes as usize, 0);
            let pos = self.offset + self.data_offset + u64::from(c - 2) * self.cluster_bytes;
            self.inner
                .seek(SeekFrom::Start(pos))
                .and_then(|_| self.inner.read_exact(&mut bytes[start..]))
                .map_err(|source| EspError::Read {
                    what: "a directory",
                    source,
                })?;
            cluster = self.next_cluster(c, &what)?;
        }
        let read = bytes.len() as u64;
        Ok((parse_dir(&bytes), read))
    }
}

/// Decodes the entries of a directory's bytes.
fn parse_dir(bytes: &[u8]) -> Vec<DirEntry> {
    let mut out = Vec::new();
    // Long-name pieces seen so far, last piece first, with their checksum and the
    // ordinal the next piece must have.
    let mut pieces: Vec<Vec<u16>> = Vec::new();
    let mut lfn_sum = 0u8;
    let mut next_ord = 0u8;
    for e in bytes.chunks_exact(DIR_ENTRY) {
        match e[0] {
            0x00 => break, // §6: this and every following entry are free
            0xE5 => {
                pieces.clear();
                continue;
            }
            _ => {}
        }
        let attr = e[11];
        // §7: ATTR_LONG_NAME_MASK covers the four low bits plus DIRECTORY and ARCHIVE.
        if attr & 0x3F == ATTR_LONG_NAME {
            let p = decode_lfn(e);
            if p.last && p.ord > 0 {
                pieces = vec![p.chars];
                lfn_sum = p.checksum;
                next_ord = p.ord - 1;
            } else if !pieces.is_empty() && p.ord == next_ord && p.ord > 0 && p.checksum == lfn_sum
            {
                pieces.push(p.chars);
                next_ord -= 1;
            } else {
                pieces.clear();
            }
            continue;
        }
        let long = std::mem::take(&mut pieces);
        if attr & ATTR_VOLUME_ID != 0 {
            continue;
        }
        if e[0] == b'.' {
            continue; // `.` and `..`
        }
        let mut short_name = [0u8; 11];
        short_name.copy_from_slice(&e[..11]);
        // §7: long entries belong to this short entry only if they are complete and
        // carry its checksum; otherwise they are orphans and the short name stands.
        let name = if !long.is_empty() && next_ord == 0 && checksum(&short_name) == lfn_sum {
            let units: Vec<u16> = long.into_iter().rev().flatten().collect();
            String::from_utf16_lossy(&units)
        } else {
            decode_short(e)
        };
        out.push(DirEntry {
            name,
            short: decode_short(e).to_uppercase(),
            is_dir: attr & ATTR_DIRECTORY != 0,
            first: entry_cluster(e),
            size: get32(e, 28),
        });
    }
    out
}

/// A file of an [`EspReader`]: `Read` and `Seek` over its bytes, following its cluster
/// chain, reading straight from the underlying source (no whole-file buffering).
pub struct EspFileReader<'a, R> {
    esp: &'a mut EspReader<R>,
    path: String,
    first: u32,
    size: u64,
    pos: u64,
    /// The cluster of the last read: its index in the chain and its number.
    cur: Option<(u64, u32)>,
}

impl<R: Read + Seek> EspFileReader<'_, R> {
    /// The file size in bytes.
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The cluster holding byte `index * cluster_bytes` of the file: walks forward from
    /// the last cluster used, or from the start after a seek backwards.
    fn cluster_at(&mut self, index: u64) -> Result<u32, EspError> {
        let (mut i, mut c) = match self.cur {
            Some((i, c)) if i <= index => (i, c),
            _ => (0, self.first),
        };
        while i < index {
            c = self
                .esp
                .next_cluster(c, &self.path)?
                .ok_or_else(|| EspError::Corrupt {
                    why: format!(
                        "the cluster chain of {} ends before its size of {} bytes",
                        self.path, self.size
                    ),
                })?;
            i += 1;
        }
        self.cur = Some((i, c));
        Ok(c)
    }

    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, EspError> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let cb = self.esp.cluster_bytes;
        let index = self.pos / cb;
        let first = self.cluster_at(index)?;
        let within = self.pos % cb;
        let want = (buf.len() as u64).min(self.size - self.pos);
        // Extend the read over clusters that follow each other on disk.
        let mut len = (cb - within).min(want);
        let mut last = first;
        while len < want {
            let next = self.cluster_at(index + (last - first) as u64 + 1)?;
            if next != last + 1 {
                break;
            }
            last = next;
            len = (len + cb).min(want);
        }
        let at = self.esp.offset + self.esp.data_offset + u64::from(first - 2) * cb + within;
        let esp = &mut *self.esp;
        let n = esp
            .inner
            .seek(SeekFrom::Start(at))
            .and_then(|_| esp.inner.read(&mut buf[..len as usize]))
            .map_err(|source| EspError::Read {
                what: "file contents",
                source,
            })?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Read for EspFileReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf).map_err(io::Error::other)
    }
}

impl<R: Read + Seek> Seek for EspFileReader<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        Ok(self.pos)
    }
}
