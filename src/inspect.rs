//! `inspect`: reads a built image back, for people and for scripts.
//!
//! Image -> [`Inspection`]: the partition table, the ESP's files, the unified
//! kernel image's sections, command line and kernel version, and the initramfs'
//! `/etc` files. Everything is read from the image itself, never from the profile
//! or the build's work folder, so it also checks what a build wrote. The JSON form
//! (`--json`) is a stable contract, documented in `docs/inspect.md`: fields are only
//! ever added, and `schema` changes if one ever has to change meaning.
//!
//! Reads stream: the image, the UKI inside the ESP and the initramfs inside the UKI
//! are never loaded whole.

use crate::store::cstorage::ImageRecord;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::ser::PrettyFormatter;
use sha2::{Digest as _, Sha256};

use crate::boot;
use crate::disk;
use crate::disk::esp::{EspError, EspReader};
use crate::disk::gpt::{GptError, Table};
use crate::initramfs;
use crate::untrusted::{self, shown};

pub const SCHEMA: &str = "kios.dev/inspect/v1";
/// Files of /etc up to this size are shown with their text.
const SHOW_CONTENT_MAX: u64 = 64 * 1024;

/// Why an image cannot be inspected. Each variant keeps the reader's error as its
/// source, so the whole chain (down to the byte offset or the field) is reported.
/// Strings taken from the image are escaped ([`untrusted::shown`]) before they are
/// put into an error.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: this is a {format} image; inspect reads raw images: build with --format raw, \
         or convert it (qemu-img convert -O raw IMAGE disk.raw)"
    )]
    NotRaw { path: PathBuf, format: &'static str },
    #[error("{path}: the partition table cannot be used{}", table_hint(source))]
    Table {
        path: PathBuf,
        #[source]
        source: GptError,
    },
    #[error("{path}: the store partition cannot be read (partition {number})")]
    Store {
        path: PathBuf,
        number: usize,
        #[source]
        source: io::Error,
    },
    #[error("{path}: the ESP cannot be read (partition {number})")]
    Esp {
        path: PathBuf,
        number: usize,
        #[source]
        source: EspError,
    },
    #[error("{path}: the unified kernel image {uki} on the ESP cannot be read")]
    Uki {
        path: PathBuf,
        uki: String,
        #[source]
        source: boot::BootError,
    },
    #[error("{path}: the initramfs in {uki} cannot be read")]
    Initramfs {
        path: PathBuf,
        uki: String,
        #[source]
        source: initramfs::InitramfsError,
    },
}

fn table_hint(e: &GptError) -> &'static str {
    match e {
        GptError::Invalid(_) => " (is this a kios-build image in raw format?)",
        _ => "",
    }
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub schema: &'static str,
    pub image: ImageInfo,
    pub partitions: Vec<PartitionInfo>,
    pub esp: Option<EspInfo>,
    pub boot: Option<BootInfo>,
    pub initramfs: Option<InitramfsInfo>,
    /// The static pods of /etc/kubernetes/manifests.
    pub pods: Vec<StaticPodInfo>,
    /// The images pre-seeded in the store partition, read from the partition's
    /// `overlay-images/images.json`: `names`, `digest` (platform manifest), `id`
    /// (config digest), `indexDigest` for an image reached through an index.
    pub images: Vec<serde_json::Value>,
    /// How the store partition's files are compressed: `lz4` (lz4 and lz4hc write
    /// the same format) or `none`; absent without a store.
    pub store_compression: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct StaticPodInfo {
    pub file: String,
    /// Name, images, added capabilities (and `privileged`), host network, host paths.
    #[serde(flatten)]
    pub summary: Option<crate::pods::PodSummary>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub path: String,
    pub format: &'static str,
    pub size: u64,
    pub disk_guid: String,
}

#[derive(Debug, Serialize)]
pub struct PartitionInfo {
    pub number: usize,
    pub name: String,
    /// `esp`, `data`, or `unknown`.
    pub role: &'static str,
    pub type_guid: String,
    pub guid: String,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct EspInfo {
    pub label: String,
    pub volume_id: String,
    pub files: Vec<FileInfo>,
}

#[derive(Debug, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct BootInfo {
    pub uki: String,
    /// `amd64` or `arm64`, from the UKI's COFF machine (else that machine in hex).
    pub arch: String,
    pub kernel_version: String,
    pub cmdline: String,
    pub os_release: BTreeMap<String, String>,
    pub sections: Vec<SectionInfo>,
    /// What systemd's stub will extend into PCR 11 for this UKI (`boot::measure`).
    pub pcr11: Option<boot::measure::Pcr11>,
    /// The UKI's Authenticode signature: signed, by whom, and whether it verifies.
    pub signature: crate::sign::SignatureInfo,
}

#[derive(Debug, Serialize)]
pub struct SectionInfo {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct InitramfsInfo {
    pub compression: &'static str,
    pub size: u64,
    pub entries: usize,
    pub init: Option<FileInfo>,
    /// The kernel modules /etc/kios/modules lists, in load order.
    pub modules: Vec<String>,
    pub etc: Vec<EtcFile>,
}

#[derive(Debug, Serialize)]
pub struct EtcFile {
    pub path: String,
    /// `file`, `dir`, `symlink`, `char`, `block`, `fifo`.
    pub kind: &'static str,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub sha256: Option<String>,
    /// The text, for small UTF-8 files; never for files only their owner may read.
    pub content: Option<String>,
    pub target: Option<String>,
}

/// The images of a containers/storage store on EROFS at `offset`: each one's names,
/// `digest` (the platform manifest's), `id` and, when it came through an image
/// index, `indexDigest`; and whether the filesystem is LZ4-compressed.
fn store_listing(
    f: &mut File,
    offset: u64,
    len: u64,
) -> std::io::Result<(Vec<serde_json::Value>, bool)> {
    let mut fs = crate::store::erofs::ErofsReader::open(&mut *f, offset, len)?;
    let lz4 = fs.lz4_compressed();
    let Some(bytes) = fs.read_file("overlay-images/images.json", 64 << 20)? else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it holds no overlay-images/images.json",
        ));
    };
    // The records the store writer wrote, read through its own type.
    let records: Vec<ImageRecord> = serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("overlay-images/images.json: {}", shown(&e.to_string())),
        )
    })?;
    let images = records
        .iter()
        .map(|r| {
            // The platform manifest's digest; `digest` is the index's when the image
            // came through one.
            let digest = r
                .big_data_digests
                .get("manifest")
                .unwrap_or(&r.digest)
                .clone();
            let mut v = serde_json::json!({
                "names": r.names,
                "digest": digest,
                "id": r.id,
            });
            if !r.digest.is_empty() && r.digest != digest {
                v["indexDigest"] = r.digest.clone().into();
            }
            v
        })
        .collect();
    Ok((images, lz4))
}

pub fn inspect(path: &Path) -> Result<Inspection, InspectError> {
    let path_buf = || path.to_path_buf();
    let io_err = |source| InspectError::Io {
        path: path_buf(),
        source,
    };
    // Not a FIFO (it would hang) nor a character device (no end to check against).
    let mut f = untrusted::open_regular_or_disk(path).map_err(io_err)?;
    let size = f.seek(SeekFrom::End(0)).map_err(io_err)?;
    if let Some(format) = not_raw(&mut f).map_err(io_err)? {
        return Err(InspectError::NotRaw {
            path: path_buf(),
            format,
        });
    }
    // Table::read checks every partition against the file, so offsets and sizes
    // below are inside it.
    let table = Table::read(&mut f).map_err(|source| InspectError::Table {
        path: path_buf(),
        source,
    })?;
    let partitions = partition_infos(&table);
    let mut out = Inspection {
        schema: SCHEMA,
        image: ImageInfo {
            path: path.display().to_string(),
            format: "raw",
            size,
            disk_guid: table.disk_guid.to_string(),
        },
        partitions,
        esp: None,
        boot: None,
        initramfs: None,
        pods: Vec::new(),
        images: Vec::new(),
        store_compression: None,
    };
    let find = |t| {
        table
            .partitions
            .iter()
            .enumerate()
            .find(|(_, p)| p.type_guid == t)
    };
    // The pre-seeded images, read from the store partition itself.
    if let Some((i, part)) = find(disk::STORE_TYPE) {
        let (images, lz4) =
            store_listing(&mut f, part.offset(), part.size()).map_err(|source| {
                InspectError::Store {
                    path: path_buf(),
                    number: i + 1,
                    source,
                }
            })?;
        out.images = images;
        out.store_compression = Some(if lz4 { "lz4" } else { "none" });
    }
    let Some((esp_index, esp_part)) = find(disk::ESP_TYPE) else {
        return Ok(out);
    };
    let esp_err = |source| InspectError::Esp {
        path: path_buf(),
        number: esp_index + 1,
        source,
    };
    let mut esp = EspReader::open_within(BufReader::new(f), esp_part.offset(), esp_part.size())
        .map_err(esp_err)?;
    let files = esp.list().map_err(esp_err)?;
    out.esp = Some(EspInfo {
        label: esp.label(),
        volume_id: format!("{:08X}", esp.volume_id()),
        files: regular_files(&files),
    });
    // Compared with our own ASCII names: a path found here is safe to print.
    let Some(uki_path) = files
        .iter()
        .map(|f| f.path.as_str())
        .find(|p| {
            [boot::ESP_PATH_X64, boot::ESP_PATH_AA64]
                .iter()
                .any(|want| p.eq_ignore_ascii_case(want))
        })
        .map(str::to_string)
    else {
        return Ok(out);
    };
    let uki_err = |source| InspectError::Uki {
        path: path_buf(),
        uki: uki_path.clone(),
        source,
    };
    let mut uki = esp.open_file(&uki_path).map_err(esp_err)?;
    // read_uki checks that every section lies inside the file.
    let info = boot::read_uki(&mut uki).map_err(uki_err)?;
    out.boot = Some(signed_boot_info(&mut uki, &info, &uki_path).map_err(uki_err)?);
    let Some(initrd) = info.sections.iter().find(|s| s.name == ".initrd") else {
        return Ok(out);
    };
    let initrd_err = |source| InspectError::Initramfs {
        path: path_buf(),
        uki: uki_path.clone(),
        source,
    };
    let read_err = |source| initrd_err(initramfs::InitramfsError::Read { offset: 0, source });
    // The section's data is padded to FileAlignment; the virtual size is exact.
    let len = initrd.virtual_size.min(initrd.file_size);
    uki.seek(SeekFrom::Start(initrd.file_offset))
        .map_err(read_err)?;
    let compression = compression_of(&mut uki, len).map_err(read_err)?;
    uki.seek(SeekFrom::Start(initrd.file_offset))
        .map_err(read_err)?;
    let entries =
        initramfs::read_initramfs((&mut uki).take(len), SHOW_CONTENT_MAX).map_err(initrd_err)?;
    let (initramfs, pods) = initramfs_info(&entries, compression, len);
    out.initramfs = Some(initramfs);
    out.pods = pods;
    Ok(out)
}

/// [`boot_info`] with the UKI's signature checked and the PCR 11 its stub will
/// measure predicted, both from the UKI's bytes.
fn signed_boot_info<R: Read + Seek>(
    uki: &mut R,
    info: &boot::UkiInfo,
    uki_path: &str,
) -> Result<BootInfo, boot::BootError> {
    // A signature that cannot be read is reported, not an error: the rest of the
    // image can still be shown.
    let signature = crate::sign::check(&mut *uki).unwrap_or_else(|e| crate::sign::SignatureInfo {
        signed: true,
        subject: None,
        serial: None,
        verified: false,
        problem: Some(crate::error_chain(&e, ": ")),
    });
    let mut boot = boot_info(info, uki_path, signature);
    boot.pcr11 = Some(
        boot::measure::pcr11(uki, info).map_err(|source| boot::BootError::Io {
            action: "reading the UKI's sections to predict PCR 11".into(),
            source,
        })?,
    );
    Ok(boot)
}

/// The ESP's files, folders left out.
fn regular_files(files: &[crate::disk::esp::EspFile]) -> Vec<FileInfo> {
    files
        .iter()
        .filter(|f| !f.is_dir)
        .map(|f| FileInfo {
            path: f.path.clone(),
            size: f.size,
        })
        .collect()
}

/// The partition table as `inspect` shows it, each partition with its kiOS role.
fn partition_infos(table: &Table) -> Vec<PartitionInfo> {
    table
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| PartitionInfo {
            number: i + 1,
            name: p.name.clone(),
            role: disk::role(&p.type_guid).unwrap_or("unknown"),
            type_guid: p.type_guid.to_string(),
            guid: p.guid.to_string(),
            offset: p.offset(),
            size: p.size(),
        })
        .collect()
}

/// What the UKI at `uki_path` says: architecture, kernel, command line, os-release
/// and its sections.
fn boot_info(
    info: &boot::UkiInfo,
    uki_path: &str,
    signature: crate::sign::SignatureInfo,
) -> BootInfo {
    BootInfo {
        uki: uki_path.to_string(),
        arch: boot::arch_of_machine(info.machine)
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| format!("{:#06x}", info.machine)),
        kernel_version: info.uname.trim().to_string(),
        cmdline: info.cmdline.trim_end_matches('\0').trim().to_string(),
        os_release: parse_os_release(&info.osrel),
        sections: info
            .sections
            .iter()
            .map(|s| SectionInfo {
                name: s.name.clone(),
                size: s.file_size.min(s.virtual_size.max(s.file_size)),
            })
            .collect(),
        pcr11: None,
        signature,
    }
}

/// The initramfs' compression, from the first bytes of its `len` bytes at the
/// reader's position (which moves).
fn compression_of(r: &mut impl Read, len: u64) -> std::io::Result<&'static str> {
    let mut magic = Vec::with_capacity(4);
    r.take(len.min(4)).read_to_end(&mut magic)?;
    Ok(match magic[..] {
        [0x1f, 0x8b, ..] => "gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "zstd",
        [b'0', b'7', b'0', b'7'] => "none",
        _ => "unknown",
    })
}

/// The initramfs as `inspect` shows it (`/init`, the module list, every `/etc`
/// entry), and the static pods found in it.
fn initramfs_info(
    entries: &[initramfs::CpioEntry],
    compression: &'static str,
    len: u64,
) -> (InitramfsInfo, Vec<StaticPodInfo>) {
    let mut etc = Vec::new();
    let mut pods = Vec::new();
    let mut modules = Vec::new();
    let mut init = None;
    for e in entries {
        let p = e.path.as_str();
        if p == "init" {
            init = Some(FileInfo {
                path: "/init".into(),
                size: e.size,
            });
        }
        if p == "etc/kios/modules" {
            if let Some(d) = &e.data {
                modules = String::from_utf8_lossy(d)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect();
            }
        }
        if p != "etc" && !p.starts_with("etc/") {
            continue;
        }
        let kind = match e.mode & 0o170000 {
            0o100000 => "file",
            0o040000 => "dir",
            0o120000 => "symlink",
            0o020000 => "char",
            0o060000 => "block",
            0o010000 => "fifo",
            _ => "unknown",
        };
        // Files only root may read (kubeconfigs, credentials) are never shown.
        let secret = e.mode & 0o077 == 0;
        let content = e
            .data
            .as_ref()
            .filter(|_| kind == "file" && !secret)
            .and_then(|d| String::from_utf8(d.clone()).ok());
        if kind == "file" && p.starts_with("etc/kubernetes/manifests/") && p.ends_with(".yaml") {
            if let Some(d) = &e.data {
                pods.push(static_pod(p, d));
            }
        }
        etc.push(EtcFile {
            path: format!("/{p}"),
            kind,
            mode: format!("{:04o}", e.mode & 0o7777),
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            sha256: e
                .data
                .as_ref()
                .filter(|_| kind == "file")
                .map(|d| hex::encode(Sha256::digest(d))),
            content,
            target: e.link_target.clone(),
        });
    }
    let info = InitramfsInfo {
        compression,
        size: len,
        entries: entries.len(),
        init,
        modules,
        etc,
    };
    (info, pods)
}

/// The container format of a converted image, told by its magic bytes.
fn not_raw(f: &mut File) -> io::Result<Option<&'static str>> {
    // The one reading of kios-build's formats by their magic (`run` unpacks by it).
    // A fixed VHD is the raw disk with a footer: its GPT reads as it is.
    use crate::run::image::Kind;
    Ok(match crate::run::image::kind(f)? {
        Some(Kind::Qcow2) => Some("qcow2"),
        Some(Kind::Vmdk) => Some("VMDK"),
        Some(Kind::GceTarGz) => Some("gzip-compressed (GCE tar.gz)"),
        Some(Kind::Zstd) => Some("zstd-compressed"),
        Some(Kind::Xz) => Some("xz-compressed"),
        Some(Kind::Raw | Kind::Vhd) | None => None,
    })
}

/// A static pod manifest of the image, summarised; a file that is not a Pod is
/// listed with its error.
fn static_pod(path: &str, data: &[u8]) -> StaticPodInfo {
    let parsed = std::str::from_utf8(data)
        .map_err(|e| e.to_string())
        .and_then(|t| {
            serde_saphyr::from_str::<k8s_openapi::api::core::v1::Pod>(t)
                .map_err(|e| e.to_string().lines().next().unwrap_or("").to_string())
        });
    match parsed {
        Ok(pod) => {
            let oneshot =
                pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure");
            StaticPodInfo {
                file: format!("/{path}"),
                summary: Some(crate::pods::summarize(&pod, "manifest", oneshot)),
                error: None,
            }
        }
        Err(e) => StaticPodInfo {
            file: format!("/{path}"),
            summary: None,
            error: Some(e),
        },
    }
}

fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// The human-readable form. Every string that comes from the image (names, paths,
/// command line, os-release, file contents, pod fields) goes through
/// [`untrusted::shown`]: it cannot move the cursor or forge a line, and a long one is
/// cut short.
pub fn render_text(i: &Inspection) -> String {
    let mut s = String::new();
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    s.push_str(&format!(
        "image      {} ({}, {:.0} MiB)\n",
        shown(&i.image.path),
        i.image.format,
        mib(i.image.size)
    ));
    s.push_str(&format!("disk guid  {}\n", i.image.disk_guid));
    s.push_str("partitions\n");
    for p in &i.partitions {
        s.push_str(&format!(
            "  {}  {:<10} {:<5} {:>8.1} MiB at {:>6.1} MiB  type {}\n",
            p.number,
            shown(&p.name),
            p.role,
            mib(p.size),
            mib(p.offset),
            p.type_guid
        ));
    }
    if let Some(e) = &i.esp {
        s.push_str(&format!(
            "esp        label {} volume id {}\n",
            shown(e.label.trim()),
            e.volume_id
        ));
        for f in &e.files {
            s.push_str(&format!("  {:<28} {:>10} bytes\n", shown(&f.path), f.size));
        }
    }
    if let Some(b) = &i.boot {
        s.push_str(&format!(
            "kernel     {} ({})\n",
            shown(&b.kernel_version),
            shown(&b.arch)
        ));
        s.push_str(&format!("cmdline    {}\n", shown(&b.cmdline)));
        if let Some(p) = &b.pcr11 {
            let value = p
                .sha256
                .as_deref()
                .unwrap_or("(not predicted for this stub)");
            s.push_str(&format!("pcr11      {value} ({})\n", shown(&p.stub)));
        }
        if let Some(n) = b.os_release.get("PRETTY_NAME") {
            s.push_str(&format!("os         {}\n", shown(n)));
        }
        let secs: Vec<String> = b
            .sections
            .iter()
            .map(|x| format!("{} {}", shown(&x.name), x.size))
            .collect();
        s.push_str(&format!("uki        {}\n", secs.join(", ")));
        s.push_str(&format!("signature  {}\n", signature_line(&b.signature)));
    }
    render_images(&mut s, &i.images, i.store_compression);
    if let Some(r) = &i.initramfs {
        render_initramfs(&mut s, r);
    }
    render_pods(&mut s, &i.pods);
    s
}

/// The UKI's signature in one line: unsigned, or signer and verdict.
fn signature_line(sig: &crate::sign::SignatureInfo) -> String {
    if !sig.signed {
        return "none (the UKI is not signed)".into();
    }
    let who = match (&sig.subject, &sig.serial) {
        (Some(subject), Some(serial)) => format!("{} serial {}", shown(subject), shown(serial)),
        _ => "an unreadable signer".into(),
    };
    let problem = sig.problem.as_deref().map(shown).unwrap_or_default();
    if sig.verified {
        let note = if problem.is_empty() {
            String::new()
        } else {
            format!(" ({problem})")
        };
        format!("signed by {who}, verifies with its certificate{note}")
    } else {
        format!("signed by {who}, DOES NOT VERIFY: {problem}")
    }
}

/// The pre-seeded images: names and digest, one line each.
fn render_images(s: &mut String, images: &[serde_json::Value], compression: Option<&str>) {
    if !images.is_empty() {
        s.push_str(&format!(
            "images     {} pre-seeded in the store{}\n",
            images.len(),
            if compression == Some("lz4") {
                " (LZ4-compressed)"
            } else {
                ""
            }
        ));
        for img in images {
            let names: Vec<String> = img["names"]
                .as_array()
                .map(|a| a.iter().filter_map(|n| n.as_str()).map(shown).collect())
                .unwrap_or_default();
            s.push_str(&format!(
                "  {}  {}\n",
                names.join(", "),
                shown(img["digest"].as_str().unwrap_or(""))
            ));
        }
    }
}

/// The initramfs: its size, the modules to load and every `/etc` entry.
fn render_initramfs(s: &mut String, r: &InitramfsInfo) {
    s.push_str(&format!(
        "initramfs  {} entries, {} bytes {}\n",
        r.entries, r.size, r.compression
    ));
    s.push_str(&format!("modules    {} to load\n", r.modules.len()));
    for m in &r.modules {
        s.push_str(&format!("  {}\n", shown(m)));
    }
    s.push_str("/etc\n");
    for e in &r.etc {
        let extra = match (&e.target, &e.content) {
            (Some(target), _) => format!(" -> {}", shown(target)),
            (None, Some(c)) if c.lines().count() == 1 => {
                format!("  \"{}\"", shown(c.trim_end()))
            }
            _ => String::new(),
        };
        s.push_str(&format!(
            "  {} {:<6} {}:{} {:>7}  {}{}\n",
            e.mode,
            e.kind,
            e.uid,
            e.gid,
            e.size,
            shown(&e.path),
            extra
        ));
    }
}

/// The static pods with what each may reach of the host.
fn render_pods(s: &mut String, pods: &[StaticPodInfo]) {
    if !pods.is_empty() {
        s.push_str("static pods\n");
    }
    let list = |items: &[String]| {
        items
            .iter()
            .map(|x| shown(x))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for p in pods {
        match &p.summary {
            Some(x) => {
                let mut access = Vec::new();
                if x.host_network {
                    access.push("host network".to_string());
                }
                access.extend(x.host_paths.iter().cloned());
                s.push_str(&format!(
                    "  {:<10} {}{}\n    capabilities: {}\n    host: {}\n",
                    shown(&x.name),
                    list(&x.images),
                    if x.oneshot { " (one-shot)" } else { "" },
                    if x.capabilities.is_empty() {
                        "none".into()
                    } else {
                        list(&x.capabilities)
                    },
                    if access.is_empty() {
                        "none".into()
                    } else {
                        list(&access)
                    },
                ));
            }
            None => s.push_str(&format!(
                "  {}: not a pod: {}\n",
                shown(&p.file),
                shown(p.error.as_deref().unwrap_or(""))
            )),
        }
    }
}

/// The JSON form (`--json`), pretty-printed. Values are exact (a JSON parser gets
/// back the image's strings byte for byte), and the output is still safe on a
/// terminal: besides the control characters JSON itself escapes (below U+0020),
/// DEL, the C1 controls and the characters that reorder or hide text are written as
/// `\uXXXX` escapes too.
pub fn render_json(i: &Inspection) -> String {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, TerminalSafe(PrettyFormatter::new()));
    // Serializing these plain structs into memory cannot fail (no maps with
    // non-string keys, no I/O).
    if i.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// serde_json's pretty formatter, with [`untrusted::is_hidden`] characters escaped
/// in strings.
struct TerminalSafe(PrettyFormatter<'static>);

impl serde_json::ser::Formatter for TerminalSafe {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| untrusted::is_hidden(c)) {
            w.write_all(&rest.as_bytes()[..at])?;
            // Every hidden character is in the Basic Multilingual Plane: one \u escape.
            write!(w, "\\u{:04x}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &str = "a\u{1b}[2J\u{7}\u{9b}\u{7f}\u{202e}\u{200b}z";

    /// An inspection with `NASTY` in every string that can come from an image.
    fn hostile() -> Inspection {
        let n = || NASTY.to_string();
        Inspection {
            schema: SCHEMA,
            image: ImageInfo {
                path: n(),
                format: "raw",
                size: 1,
                // Formatted by us from numbers, as are the other GUIDs and the
                // volume id: never image text.
                disk_guid: "G".into(),
            },
            partitions: vec![PartitionInfo {
                number: 1,
                name: n(),
                role: "esp",
                type_guid: "T".into(),
                guid: "G".into(),
                offset: 0,
                size: 0,
            }],
            esp: Some(EspInfo {
                label: n(),
                volume_id: "V".into(),
                files: vec![FileInfo { path: n(), size: 1 }],
            }),
            boot: Some(BootInfo {
                uki: n(),
                arch: n(),
                kernel_version: n(),
                cmdline: n(),
                os_release: BTreeMap::from([("PRETTY_NAME".to_string(), n())]),
                sections: vec![SectionInfo { name: n(), size: 1 }],
                pcr11: Some(boot::measure::Pcr11 {
                    stub: n(),
                    sha256: None,
                    events: vec![],
                }),
                signature: crate::sign::SignatureInfo {
                    signed: true,
                    subject: Some(n()),
                    serial: Some(n()),
                    verified: false,
                    problem: Some(n()),
                },
            }),
            initramfs: Some(InitramfsInfo {
                compression: "gzip",
                size: 1,
                entries: 1,
                init: None,
                modules: vec![n()],
                etc: vec![
                    EtcFile {
                        path: n(),
                        kind: "file",
                        mode: "0644".into(),
                        uid: 0,
                        gid: 0,
                        size: 1,
                        sha256: None,
                        content: Some(n()),
                        target: None,
                    },
                    EtcFile {
                        path: n(),
                        kind: "symlink",
                        mode: "0777".into(),
                        uid: 0,
                        gid: 0,
                        size: 1,
                        sha256: None,
                        content: None,
                        target: Some(n()),
                    },
                ],
            }),
            pods: vec![
                StaticPodInfo {
                    file: n(),
                    summary: Some(crate::pods::PodSummary {
                        name: n(),
                        from: "manifest",
                        images: vec![n()],
                        capabilities: vec![n()],
                        privileged: false,
                        host_network: true,
                        host_paths: vec![n()],
                        devices: vec![n()],
                        oneshot: false,
                    }),
                    error: None,
                },
                StaticPodInfo {
                    file: n(),
                    summary: None,
                    error: Some(n()),
                },
            ],
            images: vec![serde_json::json!({"names": [n()], "digest": n()})],
            store_compression: Some("lz4"),
        }
    }

    fn assert_safe(out: &str) {
        for c in out.chars() {
            assert!(
                c == '\n' || !crate::untrusted::is_hidden(c),
                "{c:?} printed raw in:\n{out}"
            );
        }
    }

    #[test]
    fn the_text_form_escapes_every_string_from_the_image() {
        let out = render_text(&hostile());
        assert_safe(&out);
        // The hostile strings are there, escaped: all 26 the text form shows (the
        // UKI's path and a summarised pod's file are only in the JSON form).
        let escaped = shown(NASTY);
        assert_eq!(out.matches(&escaped).count(), 26, "{out}");
    }

    #[test]
    fn the_json_form_is_exact_and_terminal_safe() {
        let i = hostile();
        let out = render_json(&i);
        assert_safe(&out);
        assert!(
            out.contains("\\u001b[2J\\u0007\\u009b\\u007f\\u202e\\u200b"),
            "{out}"
        );
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back, serde_json::to_value(&i).unwrap());
        assert_eq!(back["boot"]["cmdline"], NASTY);
    }
}
