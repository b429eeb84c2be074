//! The node profile: YAML file(s) -> [`Profile`].
//!
//! A profile is parsed strictly (unknown fields are errors) into a *raw* form where
//! every value keeps the line and column it was written at, then merged onto its
//! `base` (a built-in provider profile from `profiles/`, embedded in the binary, or
//! a file path), then checked. Every error names `file:line:column`, says what is
//! wrong and what would be right. Paths are resolved relative to the file that
//! wrote them. Merging rules (documented in `docs/profile.md`): scalars and inputs
//! of the child replace the base's; `kernel.modules` and `kernel.cmdline` are the
//! base's followed by the child's, duplicates dropped.
//!
//! This module reads YAML and checks shapes and values. It does not open the inputs
//! a profile names beyond checking that local paths exist; that is the job of
//! `inputs` and `build`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::Spanned;
use sha2::{Digest as _, Sha256};

use crate::profile::spec::NodeSpec;
use crate::untrusted::{shown, shown_max};

pub mod caps;
mod kube;
pub(crate) mod kubelet;
pub mod owned;
mod secure_boot;
pub mod spec;
use crate::units::ByteSize;

/// The built-in base profiles, by name.
pub const BUILTIN_BASES: &[(&str, &str)] = &[
    ("aws", include_str!("../../profiles/aws.yaml")),
    ("azure", include_str!("../../profiles/azure.yaml")),
    ("gcp", include_str!("../../profiles/gcp.yaml")),
    ("metal", include_str!("../../profiles/metal.yaml")),
    ("qemu", include_str!("../../profiles/qemu.yaml")),
    ("qemu-arm64", include_str!("../../profiles/qemu-arm64.yaml")),
];

pub const API_VERSION: &str = "kios.dev/v1alpha1";
pub const KIND: &str = "NodeProfile";

/// Where a value was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The file name comes from the command line or a `base:` value: shown safe.
        write!(
            f,
            "{}:{}:{}",
            shown_max(&self.file, PATH_CHARS),
            self.line,
            self.column
        )
    }
}

/// How many characters of a path an error shows: a real path whole, a hostile one
/// cut ([`shown_path`]).
pub(crate) const PATH_CHARS: usize = 1024;
/// How many characters of a parser's message an error shows: it may quote the value
/// it could not read.
pub(crate) const MESSAGE_CHARS: usize = 500;

/// A path from a profile, safe to put in a message (`untrusted::shown_max`).
pub(crate) fn shown_path(p: &Path) -> String {
    shown_max(&p.display().to_string(), PATH_CHARS)
}

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

/// An error in a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{origin}: {message}{}", hint_suffix(.hint))]
    Invalid {
        origin: Origin,
        message: String,
        hint: Option<String>,
    },
    #[error("{}: cannot read the profile: {source}", shown_max(file, PATH_CHARS))]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// The largest profile or base file read; real ones are a few KiB.
const MAX_PROFILE_FILE: u64 = 1 << 20;

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!("\n  hint: {h}"),
        None => String::new(),
    }
}

impl ProfileError {
    pub fn at(origin: &Origin, message: impl Into<String>, hint: Option<String>) -> Self {
        ProfileError::Invalid {
            origin: origin.clone(),
            message: message.into(),
            hint,
        }
    }
}

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProfile {
    api_version: Option<S<String>>,
    kind: Option<S<String>>,
    base: Option<S<String>>,
    arch: Option<S<String>>,
    hostname: Option<S<String>>,
    kernel: Option<RawKernel>,
    system: Option<RawInput>,
    boot: Option<RawBoot>,
    initramfs: Option<RawInitramfs>,
    store: Option<RawStore>,
    disk: Option<RawDisk>,
    kubernetes: Option<kube::RawKubernetes>,
    kubelet: Option<kube::RawKubelet>,
    daemons: Option<Vec<kube::RawDaemon>>,
    allow: Option<kube::RawAllow>,
    pods: Option<Vec<S<String>>>,
    files: Option<Vec<kube::RawFile>>,
    registries: Option<RawRegistries>,
    images: Option<Vec<S<String>>>,
    secure_boot: Option<secure_boot::RawSecureBoot>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistries {
    insecure: Option<Vec<S<String>>>,
    ca: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    path: Option<S<String>>,
    image: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    path: Option<S<String>>,
    image: Option<S<String>>,
    modules: Option<Vec<S<String>>>,
    cmdline: Option<Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoot {
    stub: Option<RawFileInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileInput {
    path: Option<S<String>>,
    image: Option<S<String>>,
    /// The file inside the image.
    file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInitramfs {
    compression: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    verity: Option<S<bool>>,
    compression: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    size: Option<S<String>>,
    format: Option<S<String>>,
}

/// The CPU architecture of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "amd64" => Ok(Arch::Amd64),
            "arm64" => Ok(Arch::Arm64),
            other => Err(format!(
                "unknown architecture `{}`: amd64 or arm64",
                crate::untrusted::shown(other)
            )),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an input comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local file or directory (absolute, resolved against the profile's folder).
    Path(PathBuf),
    /// A local OCI image layout and an optional tag (`oci:DIR[:TAG]`).
    OciLayout { dir: PathBuf, tag: Option<String> },
    /// A registry reference (pulled by the registry stage, `oci::registry`).
    Registry(crate::oci::reference::ImageRef),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Path(p) => write!(f, "{}", p.display()),
            Source::OciLayout { dir, tag } => match tag {
                Some(t) => write!(f, "oci:{}:{}", dir.display(), t),
                None => write!(f, "oci:{}", dir.display()),
            },
            Source::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// An input and where the profile named it.
pub type Input = Sourced<Source>;

#[derive(Clone, Debug)]
pub struct Kernel {
    pub source: Input,
    pub modules: Vec<Sourced<String>>,
    pub cmdline: Vec<Sourced<String>>,
}

#[derive(Clone, Debug)]
pub struct FileInput {
    pub source: Input,
    /// For an image: the path of the file inside it.
    pub file: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

pub use crate::format::Format;
pub use secure_boot::SecureBoot;

/// A loaded, merged and checked node profile.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The profile file the user gave.
    pub file: PathBuf,
    /// The files merged, base first (built-in bases as `builtin:NAME`).
    pub chain: Vec<String>,
    /// sha256 over the contents of every file of the chain, in order: the seed of
    /// every identifier the build derives (partition GUIDs, filesystem ids).
    pub hash: [u8; 32],
    pub arch: Arch,
    pub hostname: Option<Sourced<String>>,
    pub kernel: Kernel,
    pub system: Option<Input>,
    pub stub: FileInput,
    pub compression: Compression,
    /// `store.verity`: a dm-verity hash tree over the store partition, its root hash
    /// on the kernel command line, checked by kios-init. `None` when the profile does
    /// not say: then it is on when the UKI is signed.
    pub store_verity: Option<Sourced<bool>>,
    /// `store.compression`: how the store's files are compressed (`None`: plain).
    pub store_compression: Option<crate::store::erofs::Compression>,
    pub disk_size: Sourced<ByteSize>,
    pub format: Format,
    /// Kubernetes version, kubelet, daemons, static pods and extra /etc files.
    pub node: NodeSpec,
    pub registries: Registries,
    /// `secureBoot:`: the certificate the UKI is signed for, if any.
    pub secure_boot: Option<SecureBoot>,
}

impl Profile {
    /// The kernel command line: `kernel.cmdline`, bases first, joined by spaces.
    pub fn cmdline(&self) -> String {
        self.kernel
            .cmdline
            .iter()
            .map(|c| c.value.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How to reach registries (`registries:`); merged like `kernel.modules`: the
/// base's `insecure` entries then the child's, the child's `ca` replacing the base's.
#[derive(Clone, Debug, Default)]
pub struct Registries {
    /// `host:port` of registries that may be reached over plain HTTP.
    pub insecure: Vec<Sourced<String>>,
    /// A PEM file of extra CA certificates (absolute).
    pub ca: Option<Sourced<PathBuf>>,
}

/// Loads `path`, merges it onto its bases, and checks it.
pub fn load(path: &Path) -> Result<Profile, ProfileError> {
    let mut layers: Vec<(Layer, RawProfile)> = Vec::new();
    let mut hasher = Sha256::new();
    let mut next = Some(LayerRef::File(path.to_path_buf()));
    let mut seen: Vec<String> = Vec::new();
    while let Some(r) = next.take() {
        let layer = r.read()?;
        if seen.contains(&layer.name) {
            return Err(ProfileError::at(
                &layer.origin(1, 1),
                "the chain of `base` profiles loops back to this file",
                Some("remove one of the `base` fields".into()),
            ));
        }
        seen.push(layer.name.clone());
        if layers.len() > 8 {
            return Err(ProfileError::at(
                &layer.origin(1, 1),
                "more than 8 levels of `base` profiles",
                None,
            ));
        }
        let raw = parse_raw(&layer)?;
        check_header(&layer, &raw)?;
        if let Some(base) = &raw.base {
            next = Some(LayerRef::resolve(&layer, base)?);
        }
        layers.push((layer, raw));
    }
    layers.reverse(); // base first
    for (layer, _) in &layers {
        hasher.update((layer.text.len() as u64).to_le_bytes());
        hasher.update(layer.text.as_bytes());
    }
    let hash: [u8; 32] = hasher.finalize().into();
    merge(path, &layers, hash)
}

/// One file of a profile chain.
struct Layer {
    /// What errors call the file: its path as given, or `builtin:NAME`.
    name: String,
    file: Arc<str>,
    /// The folder relative paths are resolved against; `None` for built-in bases.
    dir: Option<PathBuf>,
    text: String,
}

impl Layer {
    fn origin(&self, line: u64, column: u64) -> Origin {
        Origin {
            file: self.file.clone(),
            line,
            column,
        }
    }

    fn at<T>(&self, s: &S<T>) -> Origin {
        self.origin(s.referenced.line(), s.referenced.column())
    }

    /// The folder a local path written at `at` is relative to; built-in bases have
    /// none, so a path in one is an error.
    fn local_dir<T>(&self, at: &S<T>) -> Result<&Path, ProfileError> {
        self.dir.as_deref().ok_or_else(|| {
            ProfileError::at(
                &self.at(at),
                "a built-in base cannot name local paths",
                None,
            )
        })
    }

    fn sourced<T: Clone>(&self, s: &S<T>) -> Sourced<T> {
        Sourced {
            value: s.value.clone(),
            origin: self.at(s),
        }
    }
}

enum LayerRef {
    File(PathBuf),
    Builtin(&'static str, &'static str),
}

impl LayerRef {
    fn resolve(from: &Layer, base: &S<String>) -> Result<LayerRef, ProfileError> {
        let name = base.value.trim();
        if let Some((n, text)) = BUILTIN_BASES.iter().find(|(n, _)| *n == name) {
            return Ok(LayerRef::Builtin(n, text));
        }
        let looks_like_path =
            name.contains('/') || name.ends_with(".yaml") || name.ends_with(".yml");
        if looks_like_path && !name.contains(char::is_control) {
            let Some(dir) = &from.dir else {
                return Err(ProfileError::at(
                    &from.at(base),
                    "a built-in base cannot name a file as its base",
                    None,
                ));
            };
            return Ok(LayerRef::File(dir.join(name)));
        }
        let names: Vec<&str> = BUILTIN_BASES.iter().map(|(n, _)| *n).collect();
        Err(ProfileError::at(
            &from.at(base),
            format!("unknown base profile `{}`", shown(name)),
            Some(format!(
                "use one of the built-in bases ({}) or a path to a profile file such as ./base.yaml",
                names.join(", ")
            )),
        ))
    }

    fn read(self) -> Result<Layer, ProfileError> {
        match self {
            LayerRef::Builtin(name, text) => Ok(Layer {
                name: format!("builtin:{name}"),
                file: Arc::from(format!("profiles/{name}.yaml (built in)").as_str()),
                dir: None,
                text: text.to_string(),
            }),
            LayerRef::File(path) => {
                let shown = path.display().to_string();
                // A FIFO would hang the build and a device fill memory: only a
                // regular file, of a size a profile can have.
                let text = crate::untrusted::read_regular_text(&path, MAX_PROFILE_FILE).map_err(
                    |source| ProfileError::Read {
                        file: shown.clone(),
                        source,
                    },
                )?;
                let abs = std::path::absolute(&path).unwrap_or(path.clone());
                let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
                Ok(Layer {
                    name: abs.display().to_string(),
                    file: Arc::from(shown.as_str()),
                    dir: Some(dir),
                    text,
                })
            }
        }
    }
}

fn parse_raw(layer: &Layer) -> Result<RawProfile, ProfileError> {
    if layer.text.trim().is_empty() {
        return Err(ProfileError::at(
            &layer.origin(1, 1),
            "the profile is empty",
            Some(format!(
                "start from examples/qemu.yaml; a profile begins with `apiVersion: {API_VERSION}`"
            )),
        ));
    }
    serde_saphyr::from_str::<RawProfile>(&layer.text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("");
        // The parser may quote the value it could not read: shown safe and short.
        let first = shown_max(first, MESSAGE_CHARS);
        // "error: line L column C: MESSAGE" -> MESSAGE
        let message = first
            .split_once(": ")
            .map(|(_, rest)| rest)
            .and_then(|rest| rest.split_once(": ").map(|(_, m)| m.to_string()))
            .unwrap_or(first);
        let hint = if message.contains("unknown field") {
            Some("see docs/profile.md for the fields a profile may have".to_string())
        } else {
            None
        };
        ProfileError::at(&layer.origin(line, column), message, hint)
    })
}

fn check_header(layer: &Layer, raw: &RawProfile) -> Result<(), ProfileError> {
    match &raw.api_version {
        Some(v) if v.value == API_VERSION => {}
        Some(v) => {
            return Err(ProfileError::at(
                &layer.at(v),
                format!("apiVersion `{}` is not supported", shown(&v.value)),
                Some(format!("write `apiVersion: {API_VERSION}`")),
            ))
        }
        None => {
            return Err(ProfileError::at(
                &layer.origin(1, 1),
                "missing field `apiVersion`",
                Some(format!(
                    "begin the profile with `apiVersion: {API_VERSION}`"
                )),
            ))
        }
    }
    match &raw.kind {
        Some(k) if k.value == KIND => Ok(()),
        Some(k) => Err(ProfileError::at(
            &layer.at(k),
            format!("kind `{}` is not a node profile", shown(&k.value)),
            Some(format!("write `kind: {KIND}`")),
        )),
        None => Err(ProfileError::at(
            &layer.origin(1, 1),
            "missing field `kind`",
            Some(format!("add `kind: {KIND}`")),
        )),
    }
}

/// Merges the layers (base first) into a checked profile.
fn merge(
    file: &Path,
    layers: &[(Layer, RawProfile)],
    hash: [u8; 32],
) -> Result<Profile, ProfileError> {
    let mut merged = Merged::default();
    for (layer, raw) in layers {
        merged.apply(layer, raw)?;
    }
    merged.finish(file, layers, hash)
}

/// The profile as the layers read so far set it: a later layer's scalars and
/// inputs replace the earlier ones, its `kernel.modules` and `kernel.cmdline` are
/// appended (duplicates dropped). Each value is checked as its layer is applied, so
/// an error names the file that wrote it.
#[derive(Default)]
struct Merged {
    arch: Option<Sourced<String>>,
    hostname: Option<Sourced<String>>,
    kernel: Option<Input>,
    modules: Vec<Sourced<String>>,
    cmdline: Vec<Sourced<String>>,
    system: Option<Input>,
    stub: Option<FileInput>,
    compression: Option<Compression>,
    store_verity: Option<Sourced<bool>>,
    store_compression: Option<Option<crate::store::erofs::Compression>>,
    size: Option<Sourced<ByteSize>>,
    format: Option<Format>,
    registries: Registries,
    secure_boot: Option<SecureBoot>,
}

impl Merged {
    /// Applies one layer, its sections in the order a profile lists them.
    fn apply(&mut self, layer: &Layer, raw: &RawProfile) -> Result<(), ProfileError> {
        if let Some(r) = &raw.registries {
            merge_registries(layer, r, &mut self.registries)?;
        }
        if let Some(sb) = &raw.secure_boot {
            secure_boot::apply(layer, sb, &mut self.secure_boot)?;
        }
        if let Some(a) = &raw.arch {
            self.arch = Some(layer.sourced(a));
        }
        if let Some(h) = &raw.hostname {
            self.hostname = Some(check_hostname(layer, h)?);
        }
        if let Some(k) = &raw.kernel {
            self.apply_kernel(layer, k)?;
        }
        if let Some(s) = &raw.system {
            if let Some(src) = input(layer, s.path.as_ref(), s.image.as_ref(), "system")? {
                self.system = Some(src);
            }
        }
        if let Some(st) = raw.boot.as_ref().and_then(|b| b.stub.as_ref()) {
            if let Some(stub) = stub_input(layer, st)? {
                self.stub = Some(stub);
            }
        }
        if let Some(c) = raw.initramfs.as_ref().and_then(|i| i.compression.as_ref()) {
            self.compression = Some(parse_compression(layer, c)?);
        }
        if let Some(v) = raw.store.as_ref().and_then(|s| s.verity.as_ref()) {
            self.store_verity = Some(layer.sourced(v));
        }
        if let Some(c) = raw.store.as_ref().and_then(|s| s.compression.as_ref()) {
            self.store_compression = Some(
                crate::store::erofs::Compression::parse(&c.value).map_err(|e| {
                    ProfileError::at(
                        &layer.at(c),
                        shown_max(&e, MESSAGE_CHARS),
                        Some(format!(
                            "leave it out for the default ({})",
                            DEFAULT_STORE_COMPRESSION.name()
                        )),
                    )
                })?,
            );
        }
        if let Some(d) = &raw.disk {
            if let Some(s) = &d.size {
                self.size = Some(parse_disk_size(layer, s)?);
            }
            if let Some(f) = &d.format {
                self.format = Some(f.value.parse::<Format>().map_err(|e| {
                    ProfileError::at(&layer.at(f), shown_max(&e.to_string(), MESSAGE_CHARS), None)
                })?);
            }
        }
        Ok(())
    }

    /// `kernel:`: the input replaces the base's; modules and command line
    /// arguments are appended unless already there.
    fn apply_kernel(&mut self, layer: &Layer, k: &RawKernel) -> Result<(), ProfileError> {
        if let Some(src) = input(layer, k.path.as_ref(), k.image.as_ref(), "kernel")? {
            self.kernel = Some(src);
        }
        for m in k.modules.iter().flatten() {
            let name = module_name(layer, m)?;
            if !self.modules.iter().any(|x| x.value == name) {
                self.modules.push(Sourced {
                    value: name,
                    origin: layer.at(m),
                });
            }
        }
        for c in k.cmdline.iter().flatten() {
            let arg = cmdline_arg(layer, c)?;
            if !self.cmdline.iter().any(|x| x.value == arg) {
                self.cmdline.push(Sourced {
                    value: arg,
                    origin: layer.at(c),
                });
            }
        }
        Ok(())
    }

    /// Checks what only the whole chain can tell (the required fields are set
    /// somewhere, the joined command line fits) and builds the [`Profile`].
    fn finish(
        self,
        file: &Path,
        layers: &[(Layer, RawProfile)],
        hash: [u8; 32],
    ) -> Result<Profile, ProfileError> {
        let top = &layers[layers.len() - 1].0;
        let arch = parse_arch(self.arch)?;
        let missing = |field: &str, example: &str| {
            ProfileError::at(
                &top.origin(1, 1),
                format!("missing field `{field}` (neither this profile nor its base sets it)"),
                Some(format!("add for example:\n{example}")),
            )
        };
        let kernel_src = self.kernel.ok_or_else(|| {
            missing(
                "kernel",
                "kernel:\n    path: ./kernel   # holds boot/vmlinuz and lib/modules/<version>",
            )
        })?;
        let stub = self
            .stub
            .ok_or_else(|| missing("boot.stub", "boot:\n    stub: {path: ./linuxx64.efi.stub}"))?;
        let disk_size = self
            .size
            .ok_or_else(|| missing("disk.size", "disk:\n    size: 1GiB"))?;
        check_cmdline_length(&self.cmdline)?;
        let node = kube::merge_node(layers)?;
        Ok(Profile {
            file: file.to_path_buf(),
            // Shown in the build's progress: safe for a terminal.
            chain: layers
                .iter()
                .map(|(l, _)| shown_max(&l.file, PATH_CHARS))
                .collect(),
            hash,
            arch,
            hostname: self.hostname,
            kernel: Kernel {
                source: kernel_src,
                modules: self.modules,
                cmdline: self.cmdline,
            },
            system: self.system,
            stub,
            // zstd by default: smaller, faster to write and to boot (docs/design.md).
            compression: self.compression.unwrap_or(Compression::Zstd),
            store_verity: self.store_verity,
            store_compression: self
                .store_compression
                .unwrap_or(Some(DEFAULT_STORE_COMPRESSION)),
            disk_size,
            format: self.format.unwrap_or(Format::Raw),
            node,
            registries: self.registries,
            secure_boot: self.secure_boot,
        })
    }
}

/// The store's compression when a profile does not say: chosen from the measured
/// size, build time and boot-time reads (docs/design.md, "A compressed store").
pub const DEFAULT_STORE_COMPRESSION: crate::store::erofs::Compression =
    crate::store::erofs::Compression::Lz4hc { level: 2 };

/// A `kernel.modules` entry, as modprobe names it (`-` and `_` are the same).
fn module_name(layer: &Layer, m: &S<String>) -> Result<String, ProfileError> {
    let name = m.value.trim().replace('-', "_");
    // What a module name can be (kernel's MODULE_NAME_LEN is 64 with
    // the NUL); anything else would name a path or never match.
    let ok = !name.is_empty()
        && name.len() < 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(ProfileError::at(
            &layer.at(m),
            format!("`{}` is not a kernel module name", shown(&m.value)),
            Some("write the module's name as modprobe knows it, e.g. virtio_blk".into()),
        ));
    }
    Ok(name)
}

/// A `kernel.cmdline` entry: one argument, on one line.
fn cmdline_arg(layer: &Layer, c: &S<String>) -> Result<String, ProfileError> {
    let arg = c.value.trim().to_string();
    if arg.is_empty() || arg.contains(char::is_control) {
        return Err(ProfileError::at(
            &layer.at(c),
            format!(
                "`{}`: a kernel command line argument must be one non-empty line without control characters (NUL, tab, escape...)",
                shown(&arg)
            ),
            Some("write one argument per list item, e.g. console=ttyS0".into()),
        ));
    }
    Ok(arg)
}

/// `boot.stub`: a path, or a file inside an image.
fn stub_input(layer: &Layer, st: &RawFileInput) -> Result<Option<FileInput>, ProfileError> {
    let Some(src) = input(layer, st.path.as_ref(), st.image.as_ref(), "boot.stub")? else {
        return Ok(None);
    };
    if let (Source::Path(_), Some(f)) = (&src.value, &st.file) {
        return Err(ProfileError::at(
            &layer.at(f),
            "`file` is only for an `image` input",
            Some("with `path`, name the stub file itself".into()),
        ));
    }
    Ok(Some(FileInput {
        source: src,
        file: st.file.as_ref().map(|f| f.value.clone()),
    }))
}

/// `initramfs.compression`.
fn parse_compression(layer: &Layer, c: &S<String>) -> Result<Compression, ProfileError> {
    match c.value.as_str() {
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        other => Err(ProfileError::at(
            &layer.at(c),
            format!("unknown initramfs compression `{}`", shown(other)),
            Some("use zstd (the default) or gzip".into()),
        )),
    }
}

/// `disk.size`: parsed and checked against what a disk can be.
fn parse_disk_size(layer: &Layer, s: &S<String>) -> Result<Sourced<ByteSize>, ProfileError> {
    let parsed: ByteSize = s.value.parse().map_err(|e: String| {
        ProfileError::at(
            &layer.at(s),
            shown_max(&e, MESSAGE_CHARS),
            Some("write a size such as 2GiB or 512MiB".into()),
        )
    })?;
    check_disk_size(parsed).map_err(|(m, h)| ProfileError::at(&layer.at(s), m, Some(h)))?;
    Ok(Sourced {
        value: parsed,
        origin: layer.at(s),
    })
}

/// `arch`, amd64 when no layer sets it; the kernel's names are accepted too.
fn parse_arch(arch: Option<Sourced<String>>) -> Result<Arch, ProfileError> {
    let Some(a) = arch else {
        return Ok(Arch::Amd64);
    };
    match a.value.as_str() {
        "amd64" | "x86_64" => Ok(Arch::Amd64),
        "arm64" | "aarch64" => Ok(Arch::Arm64),
        other => Err(ProfileError::at(
            &a.origin,
            format!("unknown arch `{}`", shown(other)),
            Some("use amd64 or arm64".into()),
        )),
    }
}

/// The kernel's COMMAND_LINE_SIZE on x86 and arm64 (arch/x86/include/asm/setup.h,
/// arch/arm64/include/uapi/asm/setup.h: 2048 in Linux 6.1), with the NUL that ends it.
/// A longer command line is cut by the kernel without a word.
pub const COMMAND_LINE_SIZE: usize = 2048;

/// The joined command line (arguments separated by one space, as the build writes
/// `.cmdline`) must fit the kernel's buffer; the error names the argument that
/// crosses the limit.
fn check_cmdline_length(cmdline: &[Sourced<String>]) -> Result<(), ProfileError> {
    let mut len = 0;
    for (i, c) in cmdline.iter().enumerate() {
        len += c.value.len() + usize::from(i > 0);
        if len >= COMMAND_LINE_SIZE {
            return Err(ProfileError::at(
                &c.origin,
                format!(
                    "the kernel command line is {}+ bytes with `{}`: the kernel keeps at most {} (COMMAND_LINE_SIZE)",
                    len,
                    shown(&c.value),
                    COMMAND_LINE_SIZE - 1
                ),
                Some("shorten or drop arguments (the base's come first)".into()),
            ));
        }
    }
    Ok(())
}

/// The largest `disk.size`: the image is written whole to its disk, and its data
/// partition is grown at first boot; an image of more is a mistake (a `T` for a
/// `G`), not a node.
pub const MAX_DISK_SIZE: u64 = 4 << 40;

/// Checks what the disk can be made at before anything is built: a whole number of
/// MiB, at least what the fixed partitions need (`disk::MIN_DISK_SIZE`; the store
/// partition, when there is one, adds its size at build time), at most
/// [`MAX_DISK_SIZE`]. `Err((message, hint))`.
fn check_disk_size(size: ByteSize) -> Result<(), (String, String)> {
    let b = size.bytes();
    let min = crate::disk::MIN_DISK_SIZE;
    if b % crate::units::MIB != 0 {
        return Err((
            format!("disk.size {size} is not a whole number of MiB"),
            "write a size in MiB or GiB, e.g. 1GiB".into(),
        ));
    }
    if b < min {
        return Err((
            format!(
                "disk.size {size} is too small: the GPT, the smallest ESP and the smallest data partition need {}",
                ByteSize::new(min)
            ),
            "write at least 1GiB; pre-seeded images need room besides".into(),
        ));
    }
    if b > MAX_DISK_SIZE {
        return Err((
            format!(
                "disk.size {size} is larger than the {} an image may be",
                ByteSize::new(MAX_DISK_SIZE)
            ),
            "give the size of the image, not of the node's disk: a few GiB, e.g. 2GiB".into(),
        ));
    }
    Ok(())
}

fn merge_registries(
    layer: &Layer,
    raw: &RawRegistries,
    out: &mut Registries,
) -> Result<(), ProfileError> {
    for h in raw.insecure.iter().flatten() {
        let v = h.value.trim();
        let ok = !v.is_empty()
            && !v.contains("://")
            && !v.contains('/')
            && !v.contains(|c: char| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(ProfileError::at(
                &layer.at(h),
                format!("`{}` is not a registry address", shown(v)),
                Some("write host or host:port, e.g. 127.0.0.1:5000 (no scheme, no path)".into()),
            ));
        }
        if !out.insecure.iter().any(|x| x.value == v) {
            out.insecure.push(Sourced {
                value: v.to_string(),
                origin: layer.at(h),
            });
        }
    }
    if let Some(ca) = &raw.ca {
        let dir = layer.local_dir(ca)?;
        let abs = dir.join(ca.value.trim());
        if !abs.is_file() {
            return Err(ProfileError::at(
                &layer.at(ca),
                format!("`registries.ca`: {} is not a file", shown_path(&abs)),
                Some("name a PEM file of CA certificates, relative to the profile's folder".into()),
            ));
        }
        out.ca = Some(Sourced {
            value: abs,
            origin: layer.at(ca),
        });
    }
    Ok(())
}

/// Reads a `path:`/`image:` pair: exactly one of them, or neither.
fn input(
    layer: &Layer,
    path: Option<&S<String>>,
    image: Option<&S<String>>,
    field: &str,
) -> Result<Option<Input>, ProfileError> {
    match (path, image) {
        (None, None) => Ok(None),
        (Some(_), Some(i)) => Err(ProfileError::at(
            &layer.at(i),
            format!("`{field}` has both `path` and `image`"),
            Some("keep one: `path` for a local file or folder, `image` for an OCI image".into()),
        )),
        (Some(p), None) => {
            let dir = layer.local_dir(p)?;
            let abs = dir.join(&p.value);
            if !abs.exists() {
                return Err(ProfileError::at(
                    &layer.at(p),
                    format!("`{field}.path`: {} does not exist", shown_path(&abs)),
                    Some(format!(
                        "paths are relative to the profile's folder ({}); run scripts/prepare-inputs to make the example inputs",
                        shown_path(dir)
                    )),
                ));
            }
            Ok(Some(Sourced {
                value: Source::Path(abs),
                origin: layer.at(p),
            }))
        }
        (None, Some(i)) => image_input(layer, i, &format!("{field}.image")).map(Some),
    }
}

/// `DIR[:TAG]` of `oci:DIR[:TAG]`, as skopeo spells it: the tag is after the last
/// `:`, unless that part holds a `/` (then it is all folder).
pub(crate) fn split_oci(rest: &str) -> (&str, Option<String>) {
    match rest.rsplit_once(':') {
        Some((d, t)) if !t.contains('/') && !t.is_empty() => (d, Some(t.to_string())),
        _ => (rest, None),
    }
}

/// Reads an image: `oci:DIR[:TAG]` (a local OCI layout, relative to the profile's
/// folder) or a registry reference. `field` names it in errors.
fn image_input(layer: &Layer, i: &S<String>, field: &str) -> Result<Input, ProfileError> {
    let v = i.value.trim();
    if let Some(rest) = v.strip_prefix("oci:") {
        let dir = layer.local_dir(i)?;
        let (d, tag) = split_oci(rest);
        let abs = dir.join(d);
        if !abs.join("index.json").is_file() {
            return Err(ProfileError::at(
                &layer.at(i),
                format!(
                    "`{field}`: {} is not an OCI image layout (no index.json)",
                    shown_path(&abs)
                ),
                Some("write oci:DIR:TAG with DIR relative to the profile's folder".into()),
            ));
        }
        return Ok(Sourced {
            value: Source::OciLayout { dir: abs, tag },
            origin: layer.at(i),
        });
    }
    let parsed = crate::oci::reference::ImageRef::parse(v).map_err(|e| {
        ProfileError::at(
            &layer.at(i),
            format!(
                "`{field}`: `{}` is not an image reference ({})",
                shown(v),
                shown_max(&e.why, MESSAGE_CHARS)
            ),
            Some(
                "write registry/repository:tag, registry/repository@sha256:..., or oci:DIR:TAG"
                    .into(),
            ),
        )
    })?;
    Ok(Sourced {
        value: Source::Registry(parsed),
        origin: layer.at(i),
    })
}

fn check_hostname(layer: &Layer, h: &S<String>) -> Result<Sourced<String>, ProfileError> {
    let v = h.value.trim();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if v.is_empty() || v.len() > 64 || !v.split('.').all(label_ok) {
        return Err(ProfileError::at(
            &layer.at(h),
            format!("`{}` is not a valid hostname", shown(v)),
            Some("use letters, digits and '-', at most 64 characters, e.g. edge-7".into()),
        ));
    }
    Ok(Sourced {
        value: v.to_ascii_lowercase(),
        origin: layer.at(h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    fn minimal(dir: &Path) -> String {
        fs::create_dir_all(dir.join("k")).unwrap();
        fs::write(dir.join("stub.efi"), b"x").unwrap();
        "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nkernel:\n  path: k\n  modules: [virtio-blk]\nboot:\n  stub: {path: stub.efi}\ndisk:\n  size: 1GiB\n".to_string()
    }

    fn err(dir: &Path, text: &str) -> String {
        let p = write(dir, "p.yaml", text);
        load(&p).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_profile_loads_with_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "p.yaml", &minimal(d.path()));
        let prof = load(&p).unwrap();
        assert_eq!(prof.arch, Arch::Amd64);
        assert_eq!(prof.compression, Compression::Zstd);
        assert_eq!(prof.kernel.modules[0].value, "virtio_blk");
        assert_eq!(prof.kernel.modules[0].origin.line, 5);
        assert_eq!(prof.disk_size.value.bytes(), 1 << 30);
    }

    #[test]
    fn unknown_field_names_file_line_and_column() {
        let d = tempfile::tempdir().unwrap();
        let text = minimal(d.path()).replace("  modules:", "  modulez:");
        let e = err(d.path(), &text);
        assert!(e.contains("p.yaml:5:3: unknown field `modulez`"), "{e}");
    }

    #[test]
    fn wrong_type_is_located() {
        let d = tempfile::tempdir().unwrap();
        let text = minimal(d.path()).replace("modules: [virtio-blk]", "modules: 5");
        let e = err(d.path(), &text);
        assert!(e.contains("p.yaml:5:"), "{e}");
    }

    #[test]
    fn missing_path_is_located_and_explained() {
        let d = tempfile::tempdir().unwrap();
        let text = minimal(d.path()).replace("path: k", "path: nothere");
        let e = err(d.path(), &text);
        assert!(e.contains("p.yaml:4:9: `kernel.path`"), "{e}");
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn unknown_base_lists_the_builtins() {
        let d = tempfile::tempdir().unwrap();
        let text = format!("{}base: nope\n", minimal(d.path()));
        let e = err(d.path(), &text);
        assert!(
            e.contains("p.yaml:10:7: unknown base profile `nope`"),
            "{e}"
        );
        assert!(
            e.contains("aws, azure, gcp, metal, qemu, qemu-arm64"),
            "{e}"
        );
    }

    #[test]
    fn base_lists_are_appended_and_scalars_replaced() {
        let d = tempfile::tempdir().unwrap();
        minimal(d.path());
        write(
            d.path(),
            "base.yaml",
            "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nhostname: base-host\nkernel:\n  path: k\n  modules: [ext4, virtio_blk]\n  cmdline: [console=ttyS0]\nboot:\n  stub: {path: stub.efi}\ndisk:\n  size: 1GiB\n",
        );
        let p = write(
            d.path(),
            "child.yaml",
            "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: ./base.yaml\nhostname: child\nkernel:\n  modules: [virtio-blk, vfat]\n  cmdline: [quiet]\ndisk:\n  size: 2GiB\n",
        );
        let prof = load(&p).unwrap();
        let mods: Vec<_> = prof
            .kernel
            .modules
            .iter()
            .map(|m| m.value.as_str())
            .collect();
        assert_eq!(mods, ["ext4", "virtio_blk", "vfat"]);
        let cmd: Vec<_> = prof
            .kernel
            .cmdline
            .iter()
            .map(|m| m.value.as_str())
            .collect();
        assert_eq!(cmd, ["console=ttyS0", "quiet"]);
        assert_eq!(prof.hostname.unwrap().value, "child");
        assert_eq!(prof.disk_size.value.bytes(), 2 << 30);
        assert_eq!(prof.chain.len(), 2);
        assert!(prof.kernel.modules[0].origin.file.ends_with("base.yaml"));
    }

    #[test]
    fn builtin_bases_parse() {
        let d = tempfile::tempdir().unwrap();
        for (name, _) in BUILTIN_BASES {
            let text = format!("{}base: {name}\n", minimal(d.path()));
            let p = write(d.path(), "p.yaml", &text);
            let prof = load(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!prof.kernel.cmdline.is_empty(), "{name} sets a console");
        }
    }

    #[test]
    fn arm64_is_accepted_under_both_names_and_other_arches_are_not() {
        let d = tempfile::tempdir().unwrap();
        for name in ["arm64", "aarch64"] {
            let p = write(
                d.path(),
                "p.yaml",
                &format!("{}arch: {name}\n", minimal(d.path())),
            );
            assert_eq!(load(&p).unwrap().arch, Arch::Arm64, "{name}");
        }
        let e = err(d.path(), &format!("{}arch: riscv64\n", minimal(d.path())));
        assert!(e.contains("p.yaml:10:7: unknown arch `riscv64`"), "{e}");
        assert!(e.contains("use amd64 or arm64"), "{e}");
    }

    #[test]
    fn the_qemu_arm64_base_sets_arm64_and_the_pl011_console() {
        let d = tempfile::tempdir().unwrap();
        let text = format!("{}base: qemu-arm64\n", minimal(d.path()));
        let prof = load(&write(d.path(), "p.yaml", &text)).unwrap();
        assert_eq!(prof.arch, Arch::Arm64);
        assert!(prof
            .kernel
            .cmdline
            .iter()
            .any(|c| c.value == "console=ttyAMA0"));
        assert!(prof.kernel.modules.iter().any(|m| m.value == "virtio_mmio"));
    }

    #[test]
    fn bad_hostname_and_header_are_rejected() {
        let d = tempfile::tempdir().unwrap();
        let e = err(
            d.path(),
            &format!("{}hostname: bad_name\n", minimal(d.path())),
        );
        assert!(
            e.contains("p.yaml:10:11: `bad_name` is not a valid hostname"),
            "{e}"
        );
        let e = err(d.path(), &minimal(d.path()).replace("v1alpha1", "v9"));
        assert!(e.contains("p.yaml:1:13: apiVersion"), "{e}");
    }

    #[test]
    fn path_and_image_together_are_rejected() {
        let d = tempfile::tempdir().unwrap();
        let text = minimal(d.path()).replace("  path: k\n", "  path: k\n  image: x/y:1\n");
        let e = err(d.path(), &text);
        assert!(e.contains("both `path` and `image`"), "{e}");
    }

    #[test]
    fn registries_and_image_references_are_parsed_at_load() {
        let d = tempfile::TempDir::new().unwrap();
        fs::write(d.path().join("ca.pem"), "x").unwrap();
        let text = minimal(d.path())
            + "system:\n  image: busybox\nregistries:\n  insecure: [127.0.0.1:5000]\n  ca: ca.pem\n";
        let p = write(d.path(), "p.yaml", &text);
        let prof = load(&p).unwrap();
        match &prof.system.as_ref().unwrap().value {
            Source::Registry(r) => assert_eq!(r.to_string(), "docker.io/library/busybox:latest"),
            other => panic!("{other:?}"),
        }
        assert_eq!(prof.registries.insecure[0].value, "127.0.0.1:5000");
        assert!(prof
            .registries
            .ca
            .as_ref()
            .unwrap()
            .value
            .ends_with("ca.pem"));
        let e = err(d.path(), &text.replace("127.0.0.1:5000", "http://x/"));
        assert!(e.contains("not a registry address"), "{e}");
        let e = err(d.path(), &text.replace("image: busybox", "image: Bad/Name"));
        assert!(
            e.contains("p.yaml:") && e.contains("not an image reference"),
            "{e}"
        );
    }

    #[test]
    fn the_pause_image_and_extra_images_decide_what_is_pre_seeded() {
        let d = tempfile::tempdir().unwrap();
        // No pods, no images: nothing to pre-seed, not even the pause image.
        let p = write(d.path(), "p.yaml", &minimal(d.path()));
        let prof = load(&p).unwrap();
        assert!(prof.node.seed_images().is_empty());
        assert_eq!(
            prof.node.pause_image().value.to_string(),
            "registry.k8s.io/pause:3.10"
        );
        // An image to pre-seed brings the version's pause image (last, once).
        let text = minimal(d.path())
            + "kubernetes: {version: \"1.35\"}\nimages: [quay.io/a/b:1, quay.io/a/b:1, busybox:1.36]\n";
        let prof = load(&write(d.path(), "p.yaml", &text)).unwrap();
        let seeded: Vec<String> = prof
            .node
            .seed_images()
            .iter()
            .map(|i| i.value.to_string())
            .collect();
        assert_eq!(
            seeded,
            [
                "quay.io/a/b:1",
                "docker.io/library/busybox:1.36",
                "registry.k8s.io/pause:3.10.1"
            ]
        );
        // A pause image of the profile's own is pre-seeded even without pods.
        let text = minimal(d.path()) + "kubernetes:\n  pauseImage: example.com/pause:1\n";
        let prof = load(&write(d.path(), "p.yaml", &text)).unwrap();
        let seeded: Vec<String> = prof
            .node
            .seed_images()
            .iter()
            .map(|i| i.value.to_string())
            .collect();
        assert_eq!(seeded, ["example.com/pause:1"]);
        // Bad references name their field and line.
        let e = err(
            d.path(),
            &(minimal(d.path()) + "kubernetes:\n  pauseImage: Bad/Pause\n"),
        );
        assert!(
            e.contains("p.yaml:11") && e.contains("`kubernetes.pauseImage`"),
            "{e}"
        );
        let e = err(
            d.path(),
            &(minimal(d.path()) + "images:\n  - oci:missing:1\n"),
        );
        assert!(
            e.contains("p.yaml:11") && e.contains("`images`") && e.contains("no index.json"),
            "{e}"
        );
    }

    #[test]
    fn disk_sizes_are_bounded_at_the_fixed_partitions_and_4tib() {
        let ok = |b: u64| check_disk_size(ByteSize::new(b)).is_ok();
        assert!(ok(130 << 20));
        assert!(!ok(129 << 20));
        assert!(ok(MAX_DISK_SIZE));
        assert!(!ok(MAX_DISK_SIZE + (1 << 20)));
        assert!(!ok((1 << 30) + 512));
    }

    #[test]
    fn the_command_line_fits_command_line_size_with_its_nul() {
        let at = |v: String| Sourced {
            value: v,
            origin: Origin {
                file: "p.yaml".into(),
                line: 1,
                column: 1,
            },
        };
        // "a" + " " + 2045 bytes = 2047: the most the kernel keeps.
        let fits = vec![at("a".into()), at("b".repeat(2045))];
        check_cmdline_length(&fits).unwrap();
        let over = vec![at("a".into()), at("b".repeat(2046))];
        let e = check_cmdline_length(&over).unwrap_err().to_string();
        assert!(e.contains("at most 2047"), "{e}");
    }

    #[test]
    fn origins_and_values_are_shown_escaped() {
        let o = Origin {
            file: "a\x1b[2Jb.yaml".into(),
            line: 3,
            column: 4,
        };
        assert_eq!(o.to_string(), "a\\u{1b}[2Jb.yaml:3:4");
        let d = tempfile::tempdir().unwrap();
        let e = err(
            d.path(),
            &format!("{}hostname: \"\\e[2J\"\n", minimal(d.path())),
        );
        assert!(e.contains("`\\u{1b}[2J` is not a valid hostname"), "{e}");
        assert!(!e.contains('\x1b'), "{e}");
    }

    #[test]
    fn every_supported_version_has_a_pause_image_that_parses() {
        for minor in crate::profile::spec::SUPPORTED_MINORS {
            let v = crate::profile::spec::KubeVersion { minor };
            crate::oci::reference::ImageRef::parse(v.pause_image()).unwrap();
        }
    }
}
