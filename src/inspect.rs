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

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::boot;
use crate::disk::{self, esp::EspReader, gpt::Table};
use crate::initramfs;

pub const SCHEMA: &str = "kios.dev/inspect/v1";
/// Files of /etc up to this size are shown with their text.
const SHOW_CONTENT_MAX: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    Bad { path: PathBuf, message: String },
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
/// index, `indexDigest`.
fn store_listing(f: &mut File, offset: u64, len: u64) -> std::io::Result<Vec<serde_json::Value>> {
    let mut fs = crate::store::erofs::ErofsReader::open(&mut *f, offset, len)?;
    let Some(bytes) = fs.read_file("overlay-images/images.json", 64 << 20)? else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it holds no overlay-images/images.json",
        ));
    };
    let records: Vec<serde_json::Value> = serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("overlay-images/images.json: {e}"),
        )
    })?;
    Ok(records
        .iter()
        .map(|r| {
            let digest = r["big-data-digests"]["manifest"]
                .as_str()
                .or(r["digest"].as_str())
                .unwrap_or_default();
            let mut v = serde_json::json!({
                "names": r["names"].clone(),
                "digest": digest,
                "id": r["id"].clone(),
            });
            if let Some(top) = r["digest"].as_str().filter(|d| *d != digest) {
                v["indexDigest"] = top.into();
            }
            v
        })
        .collect())
}

pub fn inspect(path: &Path) -> Result<Inspection, InspectError> {
    let io_err = |source| InspectError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |message: String| InspectError::Bad {
        path: path.to_path_buf(),
        message,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let size = f.seek(SeekFrom::End(0)).map_err(io_err)?;
    if let Some(format) = not_raw(&mut f).map_err(io_err)? {
        return Err(bad(format!(
            "this is a {format} image; inspect reads raw images: build with --format raw, or convert it (qemu-img convert -O raw IMAGE disk.raw)"
        )));
    }
    let table = Table::read(&mut f)
        .map_err(|e| bad(format!("{e} (is this a kios-build image in raw format?)")))?;
    let partitions = table
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| PartitionInfo {
            number: i + 1,
            name: p.name.clone(),
            role: if p.type_guid == disk::ESP_TYPE {
                "esp"
            } else if p.type_guid == disk::DATA_TYPE {
                "data"
            } else if p.type_guid == disk::STORE_TYPE {
                "store"
            } else {
                "unknown"
            },
            type_guid: p.type_guid.to_string(),
            guid: p.guid.to_string(),
            offset: p.offset(),
            size: p.size(),
        })
        .collect();
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
    };
    // The pre-seeded images, read from the store partition itself.
    if let Some(part) = table
        .partitions
        .iter()
        .find(|p| p.type_guid == disk::STORE_TYPE)
    {
        out.images = store_listing(&mut f, part.offset(), part.size())
            .map_err(|e| bad(format!("the store partition cannot be read: {e}")))?;
    }
    let Some(esp_part) = table
        .partitions
        .iter()
        .find(|p| p.type_guid == disk::ESP_TYPE)
    else {
        return Ok(out);
    };
    let mut esp = EspReader::open(BufReader::new(f), esp_part.offset())
        .map_err(|e| bad(format!("the ESP cannot be read: {e}")))?;
    let files = esp
        .list()
        .map_err(|e| bad(format!("the ESP cannot be listed: {e}")))?;
    out.esp = Some(EspInfo {
        label: esp.label(),
        volume_id: format!("{:08X}", esp.volume_id()),
        files: files
            .iter()
            .filter(|f| !f.is_dir)
            .map(|f| FileInfo {
                path: f.path.clone(),
                size: f.size,
            })
            .collect(),
    });
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
    let mut uki = esp
        .open_file(&uki_path)
        .map_err(|e| bad(format!("{uki_path}: {e}")))?;
    let info = boot::read_uki(&mut uki).map_err(|e| bad(format!("{uki_path}: {e}")))?;
    out.boot = Some(BootInfo {
        uki: uki_path.clone(),
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
    });
    let Some(initrd) = info.sections.iter().find(|s| s.name == ".initrd") else {
        return Ok(out);
    };
    // The section's data is padded to FileAlignment; the virtual size is exact.
    let len = initrd.virtual_size.min(initrd.file_size);
    uki.seek(SeekFrom::Start(initrd.file_offset))
        .map_err(io_err)?;
    let mut magic = [0u8; 4];
    uki.read_exact(&mut magic).map_err(io_err)?;
    uki.seek(SeekFrom::Start(initrd.file_offset))
        .map_err(io_err)?;
    let compression = match magic {
        [0x1f, 0x8b, ..] => "gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "zstd",
        [b'0', b'7', b'0', b'7'] => "none",
        _ => "unknown",
    };
    let entries = initramfs::read_initramfs((&mut uki).take(len), SHOW_CONTENT_MAX)
        .map_err(|e| bad(format!("the initramfs in {uki_path} cannot be read: {e}")))?;
    let mut etc = Vec::new();
    let mut pods = Vec::new();
    let mut modules = Vec::new();
    let mut init = None;
    for e in &entries {
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
    out.initramfs = Some(InitramfsInfo {
        compression,
        size: len,
        entries: entries.len(),
        init,
        modules,
        etc,
    });
    out.pods = pods;
    Ok(out)
}

/// The container format of a converted image, told by its magic bytes.
fn not_raw(f: &mut File) -> io::Result<Option<&'static str>> {
    let mut head = [0u8; 512];
    f.seek(SeekFrom::Start(0))?;
    let n = f.read(&mut head)?;
    let head = &head[..n];
    Ok(if head.starts_with(b"QFI\xfb") {
        Some("qcow2")
    } else if head.starts_with(b"KDMV") {
        Some("VMDK")
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip-compressed (GCE tar.gz)")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd-compressed")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz-compressed")
    } else {
        None
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

/// The human-readable form.
pub fn render_text(i: &Inspection) -> String {
    let mut s = String::new();
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    s.push_str(&format!(
        "image      {} ({}, {:.0} MiB)\n",
        i.image.path,
        i.image.format,
        mib(i.image.size)
    ));
    s.push_str(&format!("disk guid  {}\n", i.image.disk_guid));
    s.push_str("partitions\n");
    for p in &i.partitions {
        s.push_str(&format!(
            "  {}  {:<10} {:<5} {:>8.1} MiB at {:>6.1} MiB  type {}\n",
            p.number,
            p.name,
            p.role,
            mib(p.size),
            mib(p.offset),
            p.type_guid
        ));
    }
    if let Some(e) = &i.esp {
        s.push_str(&format!(
            "esp        label {} volume id {}\n",
            e.label.trim(),
            e.volume_id
        ));
        for f in &e.files {
            s.push_str(&format!("  {:<28} {:>10} bytes\n", f.path, f.size));
        }
    }
    if let Some(b) = &i.boot {
        s.push_str(&format!("kernel     {} ({})\n", b.kernel_version, b.arch));
        s.push_str(&format!("cmdline    {}\n", b.cmdline));
        if let Some(n) = b.os_release.get("PRETTY_NAME") {
            s.push_str(&format!("os         {n}\n"));
        }
        let secs: Vec<String> = b
            .sections
            .iter()
            .map(|x| format!("{} {}", x.name, x.size))
            .collect();
        s.push_str(&format!("uki        {}\n", secs.join(", ")));
    }
    if !i.images.is_empty() {
        s.push_str(&format!(
            "images     {} pre-seeded in the store\n",
            i.images.len()
        ));
        for img in &i.images {
            let names: Vec<&str> = img["names"]
                .as_array()
                .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
                .unwrap_or_default();
            s.push_str(&format!(
                "  {}  {}\n",
                names.join(", "),
                img["digest"].as_str().unwrap_or("")
            ));
        }
    }
    if let Some(r) = &i.initramfs {
        s.push_str(&format!(
            "initramfs  {} entries, {} bytes {}\n",
            r.entries, r.size, r.compression
        ));
        s.push_str(&format!("modules    {} to load\n", r.modules.len()));
        for m in &r.modules {
            s.push_str(&format!("  {m}\n"));
        }
        s.push_str("/etc\n");
        for e in &r.etc {
            let extra = match (&e.target, &e.content) {
                (Some(t), _) => format!(" -> {t}"),
                (None, Some(c)) if c.lines().count() == 1 => format!("  \"{}\"", c.trim_end()),
                _ => String::new(),
            };
            s.push_str(&format!(
                "  {} {:<6} {}:{} {:>7}  {}{}\n",
                e.mode, e.kind, e.uid, e.gid, e.size, e.path, extra
            ));
        }
    }
    if !i.pods.is_empty() {
        s.push_str("static pods\n");
    }
    for p in &i.pods {
        match &p.summary {
            Some(x) => {
                let mut access = Vec::new();
                if x.host_network {
                    access.push("host network".to_string());
                }
                access.extend(x.host_paths.iter().cloned());
                s.push_str(&format!(
                    "  {:<10} {}{}\n    capabilities: {}\n    host: {}\n",
                    x.name,
                    x.images.join(", "),
                    if x.oneshot { " (one-shot)" } else { "" },
                    if x.capabilities.is_empty() {
                        "none".into()
                    } else {
                        x.capabilities.join(", ")
                    },
                    if access.is_empty() {
                        "none".into()
                    } else {
                        access.join(", ")
                    },
                ));
            }
            None => s.push_str(&format!(
                "  {}: not a pod: {}\n",
                p.file,
                p.error.as_deref().unwrap_or("")
            )),
        }
    }
    s
}
