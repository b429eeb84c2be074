//! `kios-build verify`: is this image what its sources give? The profile is built
//! again from the lock and the blob cache alone (`--locked --offline`), in the
//! image's own format, into the private work folder, and the two files compared.
//!
//! Identical files are the answer. Otherwise both are unpacked to raw disks
//! (`run::image`) and compared partition by partition, in table order; the first
//! partition that differs is named, and where kios-build wrote its contents the
//! first file that differs inside it and how (missing, kind, mode, owner, timestamp,
//! size, contents): the ESP's files (FAT), the UKI's sections, the initramfs' entries
//! (cpio), the store's entries (EROFS). The data partition, made by `mkfs.ext4`, is
//! named with the first byte that differs.
//!
//! Every reader used here is the bounded one `inspect` uses: a hostile image gives
//! an error, not a hang or a huge allocation. Files are compared as streams.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::build::{self, BuildError};
use crate::disk::gpt::{Partition, Table};
use crate::format::Format;
use crate::run::image::{self, Kind};

/// The most entries a store or an initramfs may have here.
const MAX_ENTRIES: usize = 4_000_000;
/// The largest initramfs entry kept in memory for the comparison.
const MAX_CPIO_DATA: u64 = 256 << 20;

/// Where the first difference is, and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// `partition 2 (KIOS_STORE, store)`, or `the partition table`.
    pub partition: String,
    /// Inside it, where kios-build wrote the contents: `EFI/BOOT/BOOTX64.EFI: .initrd:
    /// /etc/hostname`, `overlay-images/images.json`.
    pub file: Option<String>,
    /// `contents differ`, `mode 0644 (rebuilt) vs 0600 (image)`, ...
    pub how: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}: {}: {}", self.partition, file, self.how),
            None => write!(f, "{}: {}", self.partition, self.how),
        }
    }
}

pub enum Verdict {
    /// The rebuilt image is byte for byte the given one: its sha256.
    Identical(String),
    Differs(Difference),
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{}: not an image kios-build writes", path.display())]
    NotAnImage { path: PathBuf },
    #[error("{}: cannot read", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a kios-build report ({why})", path.display())]
    NotAReport { path: PathBuf, why: String },
    #[error("{}: the profile {} is not the one this report was written for (sha256 {then} then, {now} now)\n  hint: check out the profile the image was built from, or build again to get a new report", report.display(), profile.display())]
    ProfileChanged {
        report: PathBuf,
        profile: PathBuf,
        then: String,
        now: String,
    },
    #[error("the rebuild from the lock and the cache failed")]
    Build(#[source] Box<BuildError>),
    #[error(transparent)]
    Unpack(Box<crate::run::RunError>),
    #[error("cannot make a work folder")]
    Work(#[source] io::Error),
}

impl VerifyError {
    /// Errors of the user's inputs (exit 2): a file that is no image, a profile,
    /// lock or cache that cannot give the build.
    pub fn is_input_error(&self) -> bool {
        match self {
            VerifyError::NotAnImage { .. }
            | VerifyError::NotAReport { .. }
            | VerifyError::ProfileChanged { .. } => true,
            VerifyError::Build(e) => e.is_input_error(),
            VerifyError::Unpack(e) => e.is_input_error(),
            VerifyError::Read { .. } | VerifyError::Work(_) => false,
        }
    }
}

/// What `verify REPORT.json` takes from a build report: the profile (which must be
/// unchanged), the image it wrote, the epoch and the kios-init it used.
pub struct FromReport {
    pub profile: PathBuf,
    pub image: PathBuf,
    pub epoch: u64,
    pub init: PathBuf,
    /// The sha256 the report gives the image.
    pub image_sha256: String,
}

/// Reads a report (`build --report`) for `verify`.
pub fn from_report(path: &Path) -> Result<FromReport, VerifyError> {
    let read = |source| VerifyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = crate::untrusted::read_regular(path, 64 << 20).map_err(read)?;
    let report: crate::report::Report =
        serde_json::from_slice(&bytes).map_err(|e| VerifyError::NotAReport {
            path: path.to_path_buf(),
            why: crate::untrusted::shown(&e.to_string()),
        })?;
    let profile = report.profile.path.clone();
    let now = crate::report::hash_file(&profile).map_err(|source| VerifyError::Read {
        path: profile.clone(),
        source,
    })?;
    if now.0 != report.profile.sha256 {
        return Err(VerifyError::ProfileChanged {
            report: path.to_path_buf(),
            profile,
            then: report.profile.sha256.to_string(),
            now: now.0.to_string(),
        });
    }
    Ok(FromReport {
        profile,
        image: report.artifacts.output.path.clone(),
        epoch: report.source_date_epoch,
        init: report.inputs.kios_init.path.clone(),
        image_sha256: report.artifacts.output.sha256.to_string(),
    })
}

fn format_of(kind: Kind) -> Format {
    match kind {
        Kind::Raw => Format::Raw,
        Kind::Qcow2 => Format::Qcow2,
        Kind::Vhd => Format::Vhd,
        Kind::Vmdk => Format::Vmdk,
        Kind::Zstd => Format::RawZst,
        Kind::Xz => Format::RawXz,
        Kind::GceTarGz => Format::Gce,
    }
}

/// Rebuilds `profile` with `opts` (made `--locked --offline` here) in the format of
/// `image` and compares.
pub fn verify(profile: &Path, image: &Path, opts: &build::Options) -> Result<Verdict, VerifyError> {
    let read = |source| VerifyError::Read {
        path: image.to_path_buf(),
        source,
    };
    let mut f = crate::untrusted::open_regular(image).map_err(read)?;
    let kind = image::kind(&mut f)
        .map_err(read)?
        .ok_or_else(|| VerifyError::NotAnImage {
            path: image.to_path_buf(),
        })?;
    drop(f);
    let work = crate::work::WorkFolder::new().map_err(VerifyError::Work)?;
    let format = format_of(kind);
    let rebuilt = work.path().join(format!("rebuilt.{}", format.extension()));
    let mut o = opts.clone();
    o.format = Some(format);
    o.pull.locked = true;
    o.pull.registry.offline = true;
    build::build(profile, &rebuilt, &o).map_err(|e| VerifyError::Build(Box::new(e)))?;
    let hash = |p: &Path| crate::report::hash_file(p).map(|(d, _)| d.hex().to_string());
    let (a, b) = (hash(&rebuilt).map_err(read)?, hash(image).map_err(read)?);
    if a == b {
        return Ok(Verdict::Identical(a));
    }
    let (dir_a, dir_b) = (work.path().join("a"), work.path().join("b"));
    for d in [&dir_a, &dir_b] {
        std::fs::create_dir_all(d).map_err(VerifyError::Work)?;
    }
    let unpack = |p: &Path, d: &Path| {
        image::raw_disk(p, d)
            .map(|(raw, _)| raw)
            .map_err(|e| VerifyError::Unpack(Box::new(e)))
    };
    let (raw_a, raw_b) = (unpack(&rebuilt, &dir_a)?, unpack(image, &dir_b)?);
    let diff = compare_disks(&raw_a, &raw_b).map_err(read)?;
    Ok(Verdict::Differs(diff))
}

/// The first offset at which `len` bytes from `a` and `b` (at their positions)
/// differ, read a MiB at a time.
fn first_difference(a: &mut impl Read, b: &mut impl Read, len: u64) -> io::Result<Option<u64>> {
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(1 << 20) as usize;
        a.read_exact(&mut x[..n])?;
        b.read_exact(&mut y[..n])?;
        if let Some(i) = x[..n].iter().zip(&y[..n]).position(|(p, q)| p != q) {
            return Ok(Some(done + i as u64));
        }
        done += n as u64;
    }
    Ok(None)
}

fn role(p: &Partition) -> &'static str {
    crate::disk::role(&p.type_guid).unwrap_or("unknown")
}

/// Compares two raw disks (`a` rebuilt, `b` the image); both differ somewhere.
pub fn compare_disks(a: &Path, b: &Path) -> io::Result<Difference> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let table_diff = |how: String| Difference {
        partition: "the partition table".into(),
        file: None,
        how,
    };
    let (ta, tb) = match (Table::read(&mut fa), Table::read(&mut fb)) {
        (Ok(ta), Ok(tb)) => (ta, tb),
        (_, Err(e)) => return Ok(table_diff(format!("the image's cannot be read: {e}"))),
        (Err(e), _) => return Ok(table_diff(format!("the rebuilt one cannot be read: {e}"))),
    };
    if let Some(how) = table_difference(&ta, &tb) {
        return Ok(table_diff(how));
    }
    for (i, (pa, pb)) in ta.partitions.iter().zip(&tb.partitions).enumerate() {
        fa.seek(SeekFrom::Start(pa.offset()))?;
        fb.seek(SeekFrom::Start(pb.offset()))?;
        let Some(at) = first_difference(&mut fa, &mut fb, pa.size())? else {
            continue;
        };
        let partition = format!("partition {} ({}, {})", i + 1, pa.name, role(pa));
        let inside = match role(pa) {
            "esp" => esp_difference(&mut fa, &mut fb, pa).unwrap_or_else(|e| Some(unreadable(e))),
            "store" => {
                store_difference(&mut fa, &mut fb, pa).unwrap_or_else(|e| Some(unreadable(e)))
            }
            _ => None,
        };
        let (file, how) = match inside {
            Some((file, how)) => (file, how),
            None => (
                None,
                format!("bytes differ from byte {at} of the partition"),
            ),
        };
        return Ok(Difference {
            partition,
            file,
            how,
        });
    }
    fa.seek(SeekFrom::Start(0))?;
    fb.seek(SeekFrom::Start(0))?;
    let len = fa.metadata()?.len().min(fb.metadata()?.len());
    let at = first_difference(&mut fa, &mut fb, len)?;
    Ok(Difference {
        partition: "outside the partitions".into(),
        file: None,
        how: match at {
            Some(at) => format!("bytes differ from byte {at} of the disk"),
            None => "the disks differ in length".into(),
        },
    })
}

fn unreadable(e: io::Error) -> (Option<String>, String) {
    (None, format!("its contents cannot be read to compare: {e}"))
}

fn table_difference(a: &Table, b: &Table) -> Option<String> {
    if a.disk_size != b.disk_size {
        return Some(format!(
            "disk size {} (rebuilt) vs {} (image)",
            a.disk_size, b.disk_size
        ));
    }
    if a.disk_guid != b.disk_guid {
        return Some(format!(
            "disk GUID {} (rebuilt) vs {} (image)",
            a.disk_guid, b.disk_guid
        ));
    }
    if a.partitions.len() != b.partitions.len() {
        return Some(format!(
            "{} partitions (rebuilt) vs {} (image)",
            a.partitions.len(),
            b.partitions.len()
        ));
    }
    for (i, (p, q)) in a.partitions.iter().zip(&b.partitions).enumerate() {
        let shown = |x: &Partition| {
            format!(
                "{} {} {}..{} {}",
                x.type_guid, x.guid, x.first_lba, x.last_lba, x.name
            )
        };
        if shown(p) != shown(q) {
            return Some(format!(
                "entry {}: {} (rebuilt) vs {} (image)",
                i + 1,
                shown(p),
                crate::untrusted::shown(&shown(q))
            ));
        }
    }
    None
}

/// One side of a metadata comparison, keyed by path.
#[derive(PartialEq, Eq)]
struct Meta {
    kind: &'static str,
    mode: u32,
    owner: (u32, u32),
    mtime: u64,
    size: u64,
    /// sha256 of the data, or the link target.
    content: Vec<u8>,
}

/// The first path whose entries differ, and how; `None` when the maps agree.
fn first_entry_difference(
    a: &BTreeMap<String, Meta>,
    b: &BTreeMap<String, Meta>,
) -> Option<(String, String)> {
    let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for p in paths {
        let shown = crate::untrusted::shown(p);
        let how = match (a.get(p), b.get(p)) {
            (Some(_), None) => "missing from the image".to_string(),
            (None, Some(_)) => "only in the image (the rebuild has no such entry)".to_string(),
            (Some(x), Some(y)) if x == y => continue,
            (Some(x), Some(y)) if x.kind != y.kind => {
                format!("a {} (rebuilt) vs a {} (image)", x.kind, y.kind)
            }
            (Some(x), Some(y)) if x.mode != y.mode => {
                format!("mode {:04o} (rebuilt) vs {:04o} (image)", x.mode, y.mode)
            }
            (Some(x), Some(y)) if x.owner != y.owner => format!(
                "owner {}:{} (rebuilt) vs {}:{} (image)",
                x.owner.0, x.owner.1, y.owner.0, y.owner.1
            ),
            (Some(x), Some(y)) if x.mtime != y.mtime => {
                format!("timestamp {} (rebuilt) vs {} (image)", x.mtime, y.mtime)
            }
            (Some(x), Some(y)) if x.size != y.size => {
                format!("size {} (rebuilt) vs {} (image)", x.size, y.size)
            }
            _ => "contents differ".to_string(),
        };
        return Some((shown, how));
    }
    None
}

fn kind_of(mode: u32) -> &'static str {
    match mode & 0o170000 {
        0o040000 => "folder",
        0o100000 => "file",
        0o120000 => "symlink",
        0o020000 => "character device",
        0o060000 => "block device",
        0o010000 => "FIFO",
        _ => "socket",
    }
}

fn store_difference(
    fa: &mut File,
    fb: &mut File,
    p: &Partition,
) -> io::Result<Option<(Option<String>, String)>> {
    let walk = |f: &mut File| -> io::Result<BTreeMap<String, Meta>> {
        let mut r = crate::store::erofs::ErofsReader::open(f, p.offset(), p.size())?;
        Ok(r.walk(MAX_ENTRIES)?
            .into_iter()
            .map(|e| {
                let meta = Meta {
                    kind: kind_of(u32::from(e.mode)),
                    mode: u32::from(e.mode) & 0o7777,
                    owner: (e.uid, e.gid),
                    mtime: e.mtime,
                    size: e.size,
                    content: e.sha256.map(|d| d.to_vec()).unwrap_or_default(),
                };
                (e.path, meta)
            })
            .collect())
    };
    let (a, b) = (walk(fa)?, walk(fb)?);
    Ok(first_entry_difference(&a, &b).map(|(file, how)| (Some(file), how)))
}

fn esp_difference(
    fa: &mut File,
    fb: &mut File,
    p: &Partition,
) -> io::Result<Option<(Option<String>, String)>> {
    use crate::disk::esp::EspReader;
    let io = |e: crate::disk::esp::EspError| io::Error::other(e.to_string());
    let mut ea = EspReader::open_within(&mut *fa, p.offset(), p.size()).map_err(io)?;
    let mut eb = EspReader::open_within(&mut *fb, p.offset(), p.size()).map_err(io)?;
    let list = |files: Vec<crate::disk::esp::EspFile>| -> BTreeMap<String, (bool, u64)> {
        files
            .into_iter()
            .map(|f| (f.path, (f.is_dir, f.size)))
            .collect()
    };
    let (la, lb) = (list(ea.list().map_err(io)?), list(eb.list().map_err(io)?));
    let paths: std::collections::BTreeSet<&String> = la.keys().chain(lb.keys()).collect();
    for path in paths {
        let shown = crate::untrusted::shown(path);
        let (x, y) = match (la.get(path), lb.get(path)) {
            (Some(_), None) => return Ok(Some((Some(shown), "missing from the image".into()))),
            (None, Some(_)) => return Ok(Some((Some(shown), "only in the image".into()))),
            (Some(x), Some(y)) => (*x, *y),
            (None, None) => continue,
        };
        if x.0 != y.0 || x.1 != y.1 {
            let how = format!("size {} (rebuilt) vs {} (image)", x.1, y.1);
            return Ok(Some((Some(shown), how)));
        }
        if x.0 {
            continue;
        }
        let mut ra = ea.open_file(path).map_err(io)?;
        let mut rb = eb.open_file(path).map_err(io)?;
        let Some(at) = first_difference(&mut ra, &mut rb, x.1)? else {
            continue;
        };
        let is_uki = [crate::boot::ESP_PATH_X64, crate::boot::ESP_PATH_AA64]
            .iter()
            .any(|u| path.eq_ignore_ascii_case(u));
        if is_uki {
            if let Some((inner, how)) = uki_difference(&mut ra, &mut rb)? {
                return Ok(Some((Some(format!("{shown}: {inner}")), how)));
            }
        }
        return Ok(Some((
            Some(shown),
            format!("contents differ from byte {at}"),
        )));
    }
    Ok(None)
}

/// The first section of two UKIs that differs, and inside `.initrd` the entry.
fn uki_difference<R: Read + Seek>(a: &mut R, b: &mut R) -> io::Result<Option<(String, String)>> {
    let io = |e: crate::boot::BootError| io::Error::other(e.to_string());
    let (ia, ib) = (
        crate::boot::read_uki(a).map_err(io)?,
        crate::boot::read_uki(b).map_err(io)?,
    );
    let names = |i: &crate::boot::UkiInfo| -> Vec<String> {
        i.sections.iter().map(|s| s.name.clone()).collect()
    };
    if names(&ia) != names(&ib) {
        return Ok(Some((
            "sections".into(),
            format!(
                "{:?} (rebuilt) vs {} (image)",
                names(&ia),
                crate::untrusted::shown(&format!("{:?}", names(&ib)))
            ),
        )));
    }
    for (sa, sb) in ia.sections.iter().zip(&ib.sections) {
        let (la, lb) = (
            sa.virtual_size.min(sa.file_size),
            sb.virtual_size.min(sb.file_size),
        );
        let name = crate::untrusted::shown(&sa.name);
        if la != lb {
            return Ok(Some((name, format!("size {la} (rebuilt) vs {lb} (image)"))));
        }
        a.seek(SeekFrom::Start(sa.file_offset))?;
        b.seek(SeekFrom::Start(sb.file_offset))?;
        let Some(at) = first_difference(a, b, la)? else {
            continue;
        };
        if sa.name == ".initrd" {
            if let Some((entry, how)) =
                initramfs_difference(a, b, sa.file_offset, sb.file_offset, la)?
            {
                return Ok(Some((format!("{name}: {entry}"), how)));
            }
        }
        return Ok(Some((name, format!("contents differ from byte {at}"))));
    }
    Ok(None)
}

fn initramfs_difference<R: Read + Seek>(
    a: &mut R,
    b: &mut R,
    at_a: u64,
    at_b: u64,
    len: u64,
) -> io::Result<Option<(String, String)>> {
    let entries = |r: &mut R, at: u64| -> io::Result<BTreeMap<String, Meta>> {
        use sha2::{Digest, Sha256};
        r.seek(SeekFrom::Start(at))?;
        let list = crate::initramfs::read_initramfs(r.take(len), MAX_CPIO_DATA)
            .map_err(|e| io::Error::other(e.to_string()))?;
        if list.len() > MAX_ENTRIES {
            return Err(io::Error::other("too many initramfs entries"));
        }
        Ok(list
            .into_iter()
            .map(|e| {
                let content = match (&e.data, &e.link_target) {
                    (Some(d), _) => Sha256::digest(d).to_vec(),
                    (None, Some(t)) => t.as_bytes().to_vec(),
                    (None, None) => Vec::new(),
                };
                let meta = Meta {
                    kind: kind_of(e.mode),
                    mode: e.mode & 0o7777,
                    owner: (e.uid, e.gid),
                    mtime: e.mtime,
                    size: e.size,
                    content,
                };
                (format!("/{}", e.path.as_str()), meta)
            })
            .collect())
    };
    let (ea, eb) = (entries(a, at_a)?, entries(b, at_b)?);
    Ok(first_entry_difference(&ea, &eb))
}
