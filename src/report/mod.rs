//! The build report: what went into an image and what came out, as one JSON document
//! a CI pipeline keeps (`build --report FILE.json`, `build --json`), and the SPDX SBOM
//! made from it ([`sbom`]). `docs/report.md` documents every field and
//! `docs/report.schema.json` is its JSON Schema.
//!
//! Everything outside the `timing` group depends only on the build's inputs: two
//! builds of the same profile with the same inputs, command line and
//! `SOURCE_DATE_EPOCH` give the same document but for `timing`, which holds what
//! depends on the run (durations, peak memory, what the blob cache already had).
//!
//! The values come from the stages that made them ([`crate::build`] hands over what
//! it kept); what no stage hashed is hashed here by streaming the file once
//! ([`digests`]): the kernel image, the modules, kios-init, the initramfs, the UKI,
//! the system tree ([`digests::tree_digest`]), the disk and each partition. The
//! report and the SBOM are written like the image, through [`crate::output`]
//! ([`files`]).

mod digests;
pub(crate) mod files;
mod gather;
pub mod sbom;
mod timing;

pub use digests::{hash_disk, hash_file, hash_image, tree_digest, DiskDigests, TreeDigest};
pub use gather::{gather, Built};
pub use timing::Stopwatch;

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::oci::Digest;

/// The `schema` field: which version of `docs/report.schema.json` a report follows.
pub const SCHEMA: &str = "kios-build-report/v1";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{what}: {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{origin}: cannot read the image {reference} again for the report")]
    Image {
        origin: String,
        reference: String,
        #[source]
        source: Box<crate::oci::OciError>,
    },
}

/// A build report (`docs/report.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// The kios-build that built the image (`CARGO_PKG_VERSION`).
    pub kios_build: String,
    pub profile: ProfileRecord,
    /// `kios.lock`, when the profile names a registry image.
    pub lock: Option<FileRecord>,
    pub source_date_epoch: u64,
    /// `amd64` or `arm64`.
    pub architecture: String,
    pub inputs: Inputs,
    /// The static pods written into the image: what a reviewer reads for privileges.
    pub pods: Vec<PodRecord>,
    pub artifacts: Artifacts,
    /// What depends on the run, not the inputs: left out when reports are compared.
    pub timing: Timing,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// As given on the command line.
    pub path: PathBuf,
    pub sha256: Digest,
    /// The files merged, base first (`builtin:NAME` for a built-in base).
    pub chain: Vec<String>,
    /// sha256 over every file of the chain: the seed of the image's identifiers.
    pub hash: String,
}

/// A file read or written by the build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: PathBuf,
    pub sha256: Digest,
    pub size: u64,
}

/// Where an input came from, as the profile names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// `path`, `oci-layout` or `registry`.
    pub kind: String,
    /// As the profile wrote it, a path made absolute (`oci:DIR:TAG`, `host/repo:tag`).
    pub source: String,
    /// The profile line that names it: `FILE:LINE:COLUMN`.
    pub at: String,
    /// For an image (`oci-layout`, `registry`): the platform manifest's digest.
    pub manifest_digest: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub kernel: KernelRecord,
    pub stub: StubRecord,
    pub system: Option<SystemRecord>,
    pub kios_init: FileRecord,
    /// Every pre-seeded image, in the order the node spec lists them.
    pub images: Vec<ImageRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelRecord {
    pub origin: Origin,
    /// `uname -r`: the `lib/modules/<version>` folder.
    pub version: String,
    /// The kernel image put in the UKI (after decompression, for a gzip'd arm64 one).
    pub image: SizedDigest,
    /// The modules put in the initramfs, in load order.
    pub modules: Vec<ModuleRecord>,
    /// Names asked for that are built into the kernel.
    pub builtin: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizedDigest {
    pub sha256: Digest,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModuleRecord {
    pub name: String,
    /// Relative to `lib/modules/<version>/`, as in the image (`.ko`).
    pub path: String,
    /// Of the file in the kernel input (compressed if it is).
    pub sha256: Digest,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StubRecord {
    pub origin: Origin,
    /// The stub's path inside the image (`boot.stub.file`), for an image.
    pub file: Option<String>,
    pub sha256: Digest,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemRecord {
    pub origin: Origin,
    pub tree: TreeDigest,
}

/// A pre-seeded image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// As the profile wrote it (`oci:DIR:TAG` with DIR absolute, or a registry
    /// reference, normalised).
    pub reference: String,
    pub at: String,
    /// The name the store records (`localhost/kios/NAME:TAG`, `host/repo:tag`).
    pub name: String,
    pub manifest_digest: Digest,
    /// The image index the manifest was chosen from, for a multi-arch image.
    pub index_digest: Option<Digest>,
    /// `linux/amd64`, `linux/arm64/v8`.
    pub platform: String,
    pub config: SizedDigest,
    /// Base first.
    pub layers: Vec<LayerRecord>,
    /// The config's and the layers' sizes, added.
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The blob as stored (compressed).
    pub digest: Digest,
    /// The uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A static pod and the privileges it is given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    pub name: String,
    /// `daemon` (the profile's `daemons:`) or `file` (a `pods:` file).
    pub from: String,
    /// Each `repository@sha256:<manifest digest>`.
    pub images: Vec<String>,
    /// Capabilities added to the containers (every other one is dropped).
    pub capabilities: Vec<String>,
    pub privileged: bool,
    pub host_network: bool,
    pub host_paths: Vec<String>,
    pub devices: Vec<String>,
    /// Runs once (restartPolicy OnFailure/Never), not as a service.
    pub oneshot: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifacts {
    pub output: OutputRecord,
    pub disk: DiskRecord,
    pub uki: UkiRecord,
    pub initramfs: InitramfsRecord,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// As given to `-o`.
    pub path: PathBuf,
    pub format: String,
    /// Of the file written (the converted one, for a format other than raw).
    pub size: u64,
    pub sha256: Digest,
}

/// The raw GPT disk, before any conversion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskRecord {
    pub size: u64,
    pub sha256: Digest,
    pub guid: String,
    pub partitions: Vec<PartitionRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// 1-based, as `sgdisk` numbers them.
    pub number: u32,
    /// `esp`, `store` or `data`.
    pub role: String,
    /// The GPT partition name (`KIOS_ESP`...).
    pub name: String,
    pub type_guid: String,
    pub guid: String,
    /// Bytes from the start of the raw disk.
    pub offset: u64,
    pub size: u64,
    pub sha256: Digest,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UkiRecord {
    pub sha256: Digest,
    pub size: u64,
    pub cmdline: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitramfsRecord {
    pub sha256: Digest,
    pub size: u64,
    /// `gzip` or `zstd`.
    pub compression: String,
}

/// What depends on the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub total_seconds: f64,
    /// The peak resident memory of kios-build (`ru_maxrss`).
    pub peak_rss_bytes: u64,
    pub stages: Vec<StageTime>,
    /// Each registry image: from the blob cache or fetched.
    pub pulls: Vec<PullRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
    /// The process's peak resident memory at the end of the stage (so far).
    pub peak_rss_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullRecord {
    pub reference: String,
    /// `cache` (no network: the digest was known and every blob cached) or
    /// `registry` (the registry was asked: a tag resolved, missing blobs fetched).
    pub from: String,
}

impl Report {
    /// The document as written to `--report` and printed by `--json`.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The digest of the report without `timing`: the same for every build of the
    /// same inputs, so it names the image's content (the SBOM's namespace).
    pub fn content_digest(&self) -> Digest {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("timing");
        }
        Digest::of_bytes(v.to_string().as_bytes())
    }
}
