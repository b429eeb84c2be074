//! Writing a FAT32 volume from a tree: plan every directory and file onto clusters,
//! then write the reserved area, both FATs, the directories and the file contents, in
//! that order (ascending offsets).
//!
//! Allocation is sequential and contiguous: the root directory at cluster 2, the other
//! directories after it in path order, then the files in path order. Every chain is
//! one run of clusters, so a FAT is generated from the list of run ends, chunk by
//! chunk, and a file's clusters are one contiguous byte range to stream into.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};

use super::layout::{
    boot_sector, fsinfo_sector, min_fat32_size, short_entry, FatTime, Geometry, ATTR_ARCHIVE,
    ATTR_DIRECTORY, ATTR_VOLUME_ID, BACKUP_BOOT_SECTOR, DIR_ENTRY, EOC, FSINFO_SECTOR,
    MAX_DIR_ENTRIES, MEDIA, NUM_FATS, RESERVED_SECTORS, ROOT_CLUSTER, SECTOR,
};
use super::names::{self, FatName, NameError};
use super::{EspError, EspOptions};
use crate::tree::{Content, Entry, Kind, Tree, TreePath};

const MIB: u64 = 1 << 20;
/// The size of the buffer file contents are copied through.
const COPY_BUFFER: usize = 1 << 20;
/// How many FAT entries are generated and written at a time (64 KiB).
const FAT_CHUNK_ENTRIES: u64 = 16 * 1024;

/// Writes a FAT32 filesystem holding `tree` into `out` at byte `offset`, exactly `size`
/// bytes (a multiple of 512).
///
/// `tree` may hold directories and regular files only; anything else is an error that
/// names the path. File contents are streamed. Every metadata sector is written (the
/// reserved area, both FATs, every directory cluster including its zero tail) and so is
/// every cluster a file uses; free clusters are not touched, so `out` should be zeroed
/// or sparse over the partition (a fresh sparse disk file sized by the caller) for the
/// image to be byte-for-byte reproducible. The same tree and options give the same bytes.
///
/// `BPB_HiddSec` is set to `offset / 512`: `out` is taken to be the whole disk.
pub fn write_fat32<W: Write + Seek>(
    tree: &Tree,
    out: &mut W,
    offset: u64,
    size: u64,
    opts: &EspOptions,
) -> Result<(), EspError> {
    if offset % SECTOR != 0 {
        return Err(EspError::BadOffset {
            offset,
            why: "is not a whole number of 512-byte sectors",
        });
    }
    let hidden = u32::try_from(offset / SECTOR).map_err(|_| EspError::BadOffset {
        offset,
        why: "is beyond what BPB_HiddSec can say (2 TiB)",
    })?;
    let geo = Geometry::for_size(size)?;
    let label = check_label(&opts.label)?;
    let plan = Plan::new(tree, geo.cluster_bytes(), label.is_some())?;
    let used = plan.next_free - u64::from(ROOT_CLUSTER);
    if used > u64::from(geo.clusters) {
        return Err(EspError::DoesNotFit {
            size,
            needed: used * geo.cluster_bytes(),
            available: u64::from(geo.clusters) * geo.cluster_bytes(),
            min: min_size(tree),
        });
    }
    let mut w = VolumeWriter { out, base: offset };
    // Clusters are numbered from 2; `used` fits since it is at most `geo.clusters`.
    let free = geo.clusters - used as u32;
    // fatgen103 §5: FSI_Nxt_Free is "the cluster number at which the driver should
    // start looking for free clusters"; 0xFFFFFFFF means no hint (the volume is full).
    // (mkfs.fat, mtools and Linux keep the last allocated cluster there instead; either
    // way a driver finds the first free cluster at once.)
    let next_free = if free == 0 {
        0xFFFF_FFFF
    } else {
        plan.next_free as u32
    };
    let volume_label = label.unwrap_or(*b"NO NAME    ");
    w.reserved_area(&geo, hidden, opts.volume_id, &volume_label, free, next_free)?;
    for i in 0..NUM_FATS {
        w.fat(&geo, i, &plan)?;
    }
    let time = FatTime::from_unix(opts.mtime);
    for dir in &plan.dirs {
        let bytes = dir.encode(&plan, geo.cluster_bytes(), label.as_ref(), time);
        w.at(geo.cluster_offset(dir.first), &bytes, "a directory")?;
    }
    let mut buf = vec![0u8; COPY_BUFFER];
    for file in &plan.files {
        if file.clusters > 0 {
            w.file(&geo, file, &mut buf)?;
        }
    }
    w.out.flush().map_err(|source| EspError::Write {
        what: "flush",
        source,
    })
}

/// The smallest size (bytes, a multiple of 1 MiB) of a FAT32 volume that holds `tree`
/// with some slack: 1/8 of the space the tree takes plus 1 MiB, room for small edits
/// (not for a second copy of the kernel image: the disk layout adds what updates need).
/// Never less than FAT32 itself needs (65,525 clusters, about 33 MiB).
///
/// Entries `write_fat32` refuses (symlinks, devices, clashing names) are counted like
/// files; the write reports them.
pub fn min_size(tree: &Tree) -> u64 {
    let mut size = min_fat32_size().div_ceil(MIB) * MIB;
    loop {
        // Sizes from the FAT32 minimum up only fail beyond 2 TiB: nothing larger exists.
        let Ok(geo) = Geometry::for_size(size) else {
            return size;
        };
        let needed = clusters_needed(tree, geo.cluster_bytes());
        let want = needed + needed / 8 + MIB / geo.cluster_bytes();
        if want <= u64::from(geo.clusters) {
            return size;
        }
        // Jump straight to a size that can hold it at this cluster size.
        let bytes = geo.data_offset() + want * geo.cluster_bytes();
        size = (size + MIB).max(bytes.div_ceil(MIB) * MIB);
    }
}

/// The clusters `tree` takes with clusters of `cluster_bytes`.
fn clusters_needed(tree: &Tree, cluster_bytes: u64) -> u64 {
    let mut children: BTreeMap<TreePath, Vec<&str>> = BTreeMap::new();
    let mut clusters = 0;
    for (path, entry) in tree.iter() {
        if let Some(parent) = path.parent() {
            children.entry(parent).or_default().push(path.file_name());
        }
        match &entry.kind {
            Kind::Dir => {
                children.entry(path.clone()).or_default();
            }
            Kind::File(c) => clusters += c.len().div_ceil(cluster_bytes),
            _ => {}
        }
    }
    for (dir, names) in &children {
        let fixed = if dir.is_root() { 1 } else { 2 };
        let slots: usize = fixed + names.iter().map(|n| slots_of(n)).sum::<usize>();
        clusters += dir_clusters(slots, cluster_bytes);
    }
    clusters
}

/// The directory entries `name` takes: the same count `names::assign` gives.
fn slots_of(name: &str) -> usize {
    match names::exact_short(name) {
        Some(_) => 1,
        None => 1 + name.encode_utf16().count().div_ceil(13),
    }
}

fn dir_clusters(slots: usize, cluster_bytes: u64) -> u64 {
    ((slots * DIR_ENTRY) as u64).div_ceil(cluster_bytes).max(1)
}

/// `None` for an all-blank label (no label); the label otherwise, if it is valid.
fn check_label(label: &[u8; 11]) -> Result<Option<[u8; 11]>, EspError> {
    let bad = |why| EspError::BadLabel {
        label: String::from_utf8_lossy(label).into_owned(),
        why,
    };
    if label.iter().all(|&b| b == b' ') {
        return Ok(None);
    }
    if label[0] == b' ' {
        return Err(bad("it starts with a space"));
    }
    // The label is stored as a short name (fatgen103 §6: ATTR_VOLUME_ID entry), so it
    // takes the short name characters; spaces are allowed inside.
    let mut name = String::from_utf8_lossy(label).trim_end().replace(' ', "_");
    if name.len() > 8 {
        // exact_short checks 8.3; a label has 11 characters and no dot.
        name.insert(8, '.');
    }
    if names::exact_short(&name).is_none() {
        return Err(bad("it holds a character a FAT short name cannot"));
    }
    Ok(Some(*label))
}

/// Where every directory and file goes.
struct Plan<'t> {
    /// Root first, then the other directories in path order.
    dirs: Vec<DirPlan<'t>>,
    /// In path order.
    files: Vec<FilePlan<'t>>,
    /// First cluster and size of every entry but the root.
    places: HashMap<&'t TreePath, (u32, u32)>,
    /// The last cluster of each chain, ascending.
    chain_ends: Vec<u32>,
    /// The first cluster after everything allocated.
    next_free: u64,
}

struct DirPlan<'t> {
    path: &'t TreePath,
    first: u32,
    /// The cluster `..` names: 0 when the parent is the root (fatgen103 §6.4: "the
    /// dotdot entry points to the starting cluster of the parent directory, which is
    /// 0 if this directory's parent is the root directory").
    parent: u32,
    children: Vec<(&'t TreePath, bool, FatName)>,
}

struct FilePlan<'t> {
    path: &'t TreePath,
    content: &'t Content,
    first: u32,
    clusters: u64,
}

impl<'t> Plan<'t> {
    fn new(tree: &'t Tree, cluster_bytes: u64, has_label: bool) -> Result<Plan<'t>, EspError> {
        // Children by parent; the tree lists parents before children and names in order.
        let mut children: HashMap<TreePath, Vec<(&TreePath, &Entry)>> = HashMap::new();
        let mut dir_paths = Vec::new();
        let mut file_entries = Vec::new();
        for (path, entry) in tree.iter() {
            match &entry.kind {
                Kind::Dir => dir_paths.push(path),
                Kind::File(content) => file_entries.push((path, content)),
                other => {
                    return Err(EspError::Unsupported {
                        path: path.clone(),
                        kind: kind_name(other),
                    })
                }
            }
            if let Some(parent) = path.parent() {
                children.entry(parent).or_default().push((path, entry));
            }
        }

        let mut next: u64 = u64::from(ROOT_CLUSTER);
        let mut chain_ends = Vec::new();
        let mut places = HashMap::new();
        let mut firsts: HashMap<&TreePath, u32> = HashMap::new();
        let mut dirs = Vec::with_capacity(dir_paths.len());
        for &path in &dir_paths {
            let kids = children.remove(path).unwrap_or_default();
            let names: Vec<&str> = kids.iter().map(|(p, _)| p.file_name()).collect();
            let fat_names = names::assign(&names).map_err(|e| match e {
                NameError::Bad(i, why) => EspError::BadName {
                    path: kids[i].0.clone(),
                    why,
                },
                NameError::Clash(i, j) => EspError::NameClash {
                    path: kids[j].0.clone(),
                    other: kids[i].0.clone(),
                },
            })?;
            let fixed = match (path.is_root(), has_label) {
                (true, true) => 1,
                (true, false) => 0,
                (false, _) => 2,
            };
            let slots = fixed + fat_names.iter().map(FatName::slots).sum::<usize>();
            if slots > MAX_DIR_ENTRIES {
                return Err(EspError::DirTooLarge {
                    path: path.clone(),
                    entries: slots,
                });
            }
            let first = cluster_number(next);
            next += dir_clusters(slots, cluster_bytes);
            chain_ends.push(cluster_number(next - 1));
            firsts.insert(path, first);
            if !path.is_root() {
                places.insert(path, (first, 0));
            }
            let parent = match path.parent() {
                Some(p) if !p.is_root() => firsts.get(&p).copied().unwrap_or(0),
                _ => 0,
            };
            let children = kids
                .into_iter()
                .zip(fat_names)
                .map(|((p, e), n)| (p, e.kind == Kind::Dir, n))
                .collect();
            dirs.push(DirPlan {
                path,
                first,
                parent,
                children,
            });
        }

        let mut files = Vec::with_capacity(file_entries.len());
        for (path, content) in file_entries {
            let len = content.len();
            let size = u32::try_from(len).map_err(|_| EspError::FileTooLarge {
                path: path.clone(),
                size: len,
            })?;
            let clusters = len.div_ceil(cluster_bytes);
            // fatgen103 §6: an empty file has first cluster 0.
            let first = if clusters == 0 {
                0
            } else {
                cluster_number(next)
            };
            next += clusters;
            if clusters > 0 {
                chain_ends.push(cluster_number(next - 1));
            }
            places.insert(path, (first, size));
            files.push(FilePlan {
                path,
                content,
                first,
                clusters,
            });
        }
        Ok(Plan {
            dirs,
            files,
            places,
            chain_ends,
            next_free: next,
        })
    }

    /// fatgen103 §4 "FAT Data Structure": the FAT entry of cluster `c`.
    fn fat_entry(&self, c: u64, media: u8) -> u32 {
        match c {
            // FAT[0]: the media byte in the low 8 bits, all other bits set.
            0 => 0x0FFF_FF00 | u32::from(media),
            // FAT[1]: end of chain; its bits 27 (ClnShutBitMask: clean) and 26
            // (HrdErrBitMask: no I/O error) set mean the volume is clean.
            1 => EOC,
            c if c < self.next_free => {
                let c = c as u32;
                if self.chain_ends.binary_search(&c).is_ok() {
                    EOC
                } else {
                    c + 1
                }
            }
            _ => 0,
        }
    }
}

/// Cluster numbers fit in 32 bits once the plan is checked against the geometry; before
/// that, a plan larger than any volume saturates and fails the check.
fn cluster_number(c: u64) -> u32 {
    u32::try_from(c).unwrap_or(u32::MAX)
}

impl DirPlan<'_> {
    /// The directory's clusters: its entries and a zero tail (fatgen103 §6: a first
    /// byte 0 marks the end of the directory; zeroing the whole tail keeps it so).
    fn encode(
        &self,
        plan: &Plan,
        cluster_bytes: u64,
        label: Option<&[u8; 11]>,
        t: FatTime,
    ) -> Vec<u8> {
        let mut entries: Vec<[u8; DIR_ENTRY]> = Vec::new();
        if self.path.is_root() {
            // fatgen103 §6: the volume label is an ATTR_VOLUME_ID entry in the root,
            // matching BS_VolLab (fsck.vfat compares them).
            if let Some(label) = label {
                entries.push(short_entry(label, ATTR_VOLUME_ID, 0, 0, t));
            }
        } else {
            // §6.4: every directory but the root starts with `.` (itself) and `..`.
            entries.push(short_entry(
                b".          ",
                ATTR_DIRECTORY,
                self.first,
                0,
                t,
            ));
            entries.push(short_entry(
                b"..         ",
                ATTR_DIRECTORY,
                self.parent,
                0,
                t,
            ));
        }
        for (path, is_dir, name) in &self.children {
            let (first, size) = plan.places.get(path).copied().unwrap_or((0, 0));
            if let Some(long) = &name.long {
                entries.extend(names::lfn_entries(long, &name.short));
            }
            let attr = if *is_dir {
                ATTR_DIRECTORY
            } else {
                ATTR_ARCHIVE
            };
            entries.push(short_entry(&name.short, attr, first, size, t));
        }
        let len = dir_clusters(entries.len(), cluster_bytes) * cluster_bytes;
        let mut bytes = vec![0u8; len as usize];
        for (slot, e) in bytes.chunks_exact_mut(DIR_ENTRY).zip(&entries) {
            slot.copy_from_slice(e);
        }
        bytes
    }
}

/// Writes at offsets relative to the start of the volume.
struct VolumeWriter<'w, W> {
    out: &'w mut W,
    base: u64,
}

impl<W: Write + Seek> VolumeWriter<'_, W> {
    fn at(&mut self, pos: u64, bytes: &[u8], what: &'static str) -> Result<(), EspError> {
        let err = |source| EspError::Write { what, source };
        self.out
            .seek(SeekFrom::Start(self.base + pos))
            .map_err(err)?;
        self.out.write_all(bytes).map_err(err)
    }

    /// The 32 reserved sectors: boot sector (0), FSInfo (1), their backups (6, 7;
    /// fatgen103 §3.3 BPB_BkBootSec), zeros elsewhere.
    fn reserved_area(
        &mut self,
        geo: &Geometry,
        hidden: u32,
        volume_id: u32,
        label: &[u8; 11],
        free: u32,
        next_free: u32,
    ) -> Result<(), EspError> {
        let mut area = vec![0u8; (RESERVED_SECTORS as u64 * SECTOR) as usize];
        let boot = boot_sector(geo, hidden, volume_id, label);
        let info = fsinfo_sector(free, next_free);
        for (sector, bytes) in [
            (0, &boot),
            (FSINFO_SECTOR, &info),
            (BACKUP_BOOT_SECTOR, &boot),
            (BACKUP_BOOT_SECTOR + FSINFO_SECTOR, &info),
        ] {
            let at = (u64::from(sector) * SECTOR) as usize;
            area[at..at + SECTOR as usize].copy_from_slice(bytes);
        }
        self.at(0, &area, "the boot sectors")
    }

    /// FAT number `i`, all of it, chunk by chunk.
    fn fat(&mut self, geo: &Geometry, i: u32, plan: &Plan) -> Result<(), EspError> {
        let entries = u64::from(geo.fat_sectors) * SECTOR / 4;
        let mut chunk = Vec::with_capacity((FAT_CHUNK_ENTRIES * 4) as usize);
        let mut start = 0;
        while start < entries {
            let end = (start + FAT_CHUNK_ENTRIES).min(entries);
            chunk.clear();
            for c in start..end {
                chunk.extend_from_slice(&plan.fat_entry(c, MEDIA).to_le_bytes());
            }
            self.at(geo.fat_offset(i) + start * 4, &chunk, "a FAT")?;
            start = end;
        }
        Ok(())
    }

    /// A file's contents, streamed into its clusters, then zeros to the end of its last
    /// cluster (so that the image does not depend on what `out` held there).
    fn file(&mut self, geo: &Geometry, file: &FilePlan, buf: &mut [u8]) -> Result<(), EspError> {
        let read_err = |source| EspError::ReadContent {
            path: file.path.clone(),
            source,
        };
        let write_err = |source| EspError::Write {
            what: "file contents",
            source,
        };
        let expected = file.content.len();
        let mut src = file.content.open().map_err(read_err)?;
        self.out
            .seek(SeekFrom::Start(self.base + geo.cluster_offset(file.first)))
            .map_err(write_err)?;
        let mut done = 0u64;
        while done < expected {
            let want = (expected - done).min(buf.len() as u64) as usize;
            let n = match src.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(EspError::ShortContent {
                        path: file.path.clone(),
                        expected,
                        got: done,
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            self.out.write_all(&buf[..n]).map_err(write_err)?;
            done += n as u64;
        }
        let tail = (file.clusters * geo.cluster_bytes() - expected) as usize;
        if tail > 0 {
            buf[..tail].fill(0);
            self.out.write_all(&buf[..tail]).map_err(write_err)?;
        }
        Ok(())
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Dir => "directory",
        Kind::File(_) => "regular file",
        Kind::Symlink(_) => "symbolic link",
        Kind::Hardlink(_) => "hard link",
        Kind::CharDevice { .. } => "character device",
        Kind::BlockDevice { .. } => "block device",
        Kind::Fifo => "FIFO",
    }
}
