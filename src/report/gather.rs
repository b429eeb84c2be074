//! The report's records, from what the build's stages kept ([`crate::build::Prepared`]
//! and the artifacts' digests), hashing only the files no stage hashed.

use std::path::Path;

use super::*;
use crate::build::Prepared;
use crate::disk::gpt::Table;
use crate::oci::layout::LayoutImage;
use crate::profile::{Input, Source};

/// What the build made, for [`gather`].
pub struct Built<'a> {
    pub prepared: &'a Prepared,
    pub epoch: u64,
    /// As given to `-o`.
    pub output: &'a Path,
    pub format: crate::format::Format,
    /// The file written at `output`.
    pub output_digest: (Digest, u64),
    pub table: &'a Table,
    pub disk: &'a DiskDigests,
    pub cmdline: &'a str,
    pub compression: crate::initramfs::Compression,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ReportError {
    let path = path.to_path_buf();
    move |source| ReportError::Io { what, path, source }
}

fn file_record(path: &Path) -> Result<FileRecord, ReportError> {
    let (sha256, size) = hash_file(path).map_err(io_err("cannot hash", path))?;
    Ok(FileRecord {
        path: path.to_path_buf(),
        sha256,
        size,
    })
}

fn sized(path: &Path) -> Result<SizedDigest, ReportError> {
    let f = file_record(path)?;
    Ok(SizedDigest {
        sha256: f.sha256,
        size: f.size,
    })
}

/// The report of a finished build; `watch` has lapped every stage before.
pub fn gather(b: &Built, mut watch: Stopwatch) -> Result<Report, ReportError> {
    let p = b.prepared;
    let profile = &p.profile;
    let lock = match &p.lock {
        Some(l) if l.exists() => Some(file_record(l)?),
        _ => None,
    };
    let inputs = Inputs {
        kernel: kernel(p)?,
        stub: StubRecord {
            origin: origin(&profile.stub.source, p)?,
            file: profile.stub.file.clone(),
            sha256: Digest::of_bytes(&p.stub),
            size: p.stub.len() as u64,
        },
        system: match (&profile.system, &p.system) {
            (Some(input), Some(tree)) => Some(SystemRecord {
                origin: origin(input, p)?,
                tree: tree_digest(tree).map_err(io_err(
                    "cannot hash the system tree",
                    Path::new(&input.value.to_string()),
                ))?,
            }),
            _ => None,
        },
        kios_init: file_record(&p.init)?,
        images: p
            .seed
            .images
            .iter()
            .map(|s| image_record(&s.source, &s.pinned.name, &s.image))
            .collect(),
    };
    let artifacts = Artifacts {
        output: OutputRecord {
            path: b.output.to_path_buf(),
            format: b.format.to_string(),
            size: b.output_digest.1,
            sha256: b.output_digest.0.clone(),
        },
        disk: disk_record(b.table, b.disk),
        uki: {
            let s = sized(&p.work.uki())?;
            UkiRecord {
                sha256: s.sha256,
                size: s.size,
                cmdline: b.cmdline.to_string(),
            }
        },
        initramfs: {
            let s = sized(&p.work.initrd())?;
            InitramfsRecord {
                sha256: s.sha256,
                size: s.size,
                compression: b.compression.to_string(),
            }
        },
    };
    let profile_record = ProfileRecord {
        path: profile.file.clone(),
        sha256: file_record(&profile.file)?.sha256,
        chain: profile.chain.clone(),
        hash: hex::encode(profile.hash),
    };
    watch.lap("report");
    let mut timing = watch.finish();
    timing.pulls = p
        .work
        .pulled
        .keys()
        .map(|r| PullRecord {
            reference: r.to_string(),
            from: if p.fetched.contains(r) {
                "registry"
            } else {
                "cache"
            }
            .to_string(),
        })
        .collect();
    Ok(Report {
        schema: SCHEMA.to_string(),
        kios_build: env!("CARGO_PKG_VERSION").to_string(),
        profile: profile_record,
        lock,
        source_date_epoch: b.epoch,
        architecture: profile.arch.as_str().to_string(),
        inputs,
        pods: p.pods.pods.iter().map(pod_record).collect(),
        artifacts,
        timing,
    })
}

fn kernel(p: &Prepared) -> Result<KernelRecord, ReportError> {
    let k = &p.kernel;
    let mut modules = Vec::with_capacity(p.modules.load_order.len());
    for m in &p.modules.load_order {
        let s = sized(&m.host_path)?;
        modules.push(ModuleRecord {
            name: m.name.clone(),
            path: m.rel_path.clone(),
            sha256: s.sha256,
            size: s.size,
        });
    }
    Ok(KernelRecord {
        origin: origin(&p.profile.kernel.source, p)?,
        version: k.version.clone(),
        image: sized(&k.vmlinuz)?,
        modules,
        builtin: p.modules.builtin.clone(),
    })
}

/// Where `input` came from; an image's manifest digest from the plan's pulls, or
/// read again from its local layout (index, manifest and config only).
fn origin(input: &Input, p: &Prepared) -> Result<Origin, ReportError> {
    let (kind, manifest_digest) = match &input.value {
        Source::Path(_) => ("path", None),
        Source::Registry(r) => (
            "registry",
            p.work.pulled.get(r).map(|i| i.manifest_digest.clone()),
        ),
        Source::OciLayout { dir, tag } => {
            let image =
                crate::oci::layout::open_layout(dir, tag.as_deref(), p.profile.arch.as_str())
                    .map_err(|e| ReportError::Image {
                        origin: input.origin.to_string(),
                        reference: input.value.to_string(),
                        source: Box::new(e),
                    })?;
            ("oci-layout", Some(image.manifest_digest))
        }
    };
    Ok(Origin {
        kind: kind.to_string(),
        source: input.value.to_string(),
        at: input.origin.to_string(),
        manifest_digest,
    })
}

fn image_record(source: &Input, name: &str, image: &LayoutImage) -> ImageRecord {
    let config = SizedDigest {
        sha256: image.config_digest.clone(),
        size: image.manifest.config().size(),
    };
    let layers: Vec<LayerRecord> = image
        .layers
        .iter()
        .map(|l| LayerRecord {
            digest: l.digest.clone(),
            diff_id: l.diff_id.clone(),
            media_type: l.media_type.clone(),
            size: l.size,
        })
        .collect();
    ImageRecord {
        reference: source.value.to_string(),
        at: source.origin.to_string(),
        name: name.to_string(),
        manifest_digest: image.manifest_digest.clone(),
        index_digest: image.index_digest.clone(),
        platform: crate::oci::registry::platform_of(image),
        size: config.size + layers.iter().map(|l| l.size).sum::<u64>(),
        config,
        layers,
    }
}

fn disk_record(table: &Table, d: &DiskDigests) -> DiskRecord {
    let partitions = table
        .partitions
        .iter()
        .zip(&d.partitions)
        .enumerate()
        .map(|(i, (part, sha256))| PartitionRecord {
            number: i as u32 + 1,
            role: crate::disk::role(&part.type_guid)
                .unwrap_or("other")
                .to_string(),
            name: part.name.clone(),
            type_guid: part.type_guid.to_string(),
            guid: part.guid.to_string(),
            offset: part.offset(),
            size: part.size(),
            sha256: sha256.clone(),
        })
        .collect();
    DiskRecord {
        size: d.size,
        sha256: d.sha256.clone(),
        guid: table.disk_guid.to_string(),
        partitions,
    }
}

fn pod_record(s: &crate::pods::PodSummary) -> PodRecord {
    PodRecord {
        name: s.name.clone(),
        from: s.from.to_string(),
        images: s.images.clone(),
        capabilities: s.capabilities.clone(),
        privileged: s.privileged,
        host_network: s.host_network,
        host_paths: s.host_paths.clone(),
        devices: s.devices.clone(),
        oneshot: s.oneshot,
    }
}
