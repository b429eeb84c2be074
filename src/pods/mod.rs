//! The `pods` stage: a profile's [`NodeSpec`] -> the files of the node's
//! `/etc/kubernetes` (static pod manifests, kubelet configuration, node labels and IP,
//! kubeconfigs), the CRI-O pause image drop-in, and the profile's extra `/etc` files.
//!
//! Static pods are built as typed Kubernetes objects (`k8s-openapi`, compiled for
//! 1.33: every field written exists in every supported version) and least privilege
//! first: every capability dropped but the declared ones, a read-only root
//! filesystem, no privilege escalation, no host PID or IPC, host network and host
//! paths only where declared, images by digest with `imagePullPolicy: IfNotPresent`.
//! [`lint`] checks every pod (daemons and the `pods:` files) before anything is
//! generated; its errors carry the profile line. Image references are pinned by an
//! [`ImageResolver`] the caller gives: the build passes what it can resolve (local
//! OCI layouts today, the pre-seeded store later).
//!
//! This stage does not fetch images, write the store or decide how init starts the
//! kubelet: `docs/boot-flow.md` ("Bootstrap pod contract") is the contract with init.
//! Secrets (kubeconfigs, credential provider configuration) are read here, written
//! with mode 0600, and never put in a message: [`GeneratedFile`]'s `Debug` hides them.

mod generate;
pub mod kubelet;
pub(crate) mod lint;
pub(crate) mod owned;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

pub use crate::profile::spec::NodeSpec;
use crate::profile::Origin;
pub use generate::{daemon_pod, manifest_yaml, summarize};
pub use lint::{Finding, Severity};

/// An image pinned to its manifest digest: `repository@sha256:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedImage {
    pub reference_with_digest: String,
    /// The name the store records, `repository:tag`: what a pod file that writes a
    /// tag is looked up by.
    pub name: String,
    /// `repository@sha256:<index digest>` when the image came through an image
    /// index (the store keeps the index too, so CRI-O finds it by that digest).
    pub index: Option<String>,
}

/// Pins the image references a profile writes, and says which images the node will
/// have without pulling (the pre-seeded store).
pub trait ImageResolver {
    /// `reference` is the image as the profile wrote it, with local layouts spelled
    /// `oci:/abs/dir[:tag]` ([`crate::profile::Source`]'s `Display`). `None` when the
    /// image is not pre-seeded.
    fn resolve(&self, reference: &str) -> Option<PinnedImage>;
}

/// A resolver from a fixed map, reference -> pinned image.
#[derive(Clone, Debug, Default)]
pub struct MapResolver(pub BTreeMap<String, PinnedImage>);

impl ImageResolver for MapResolver {
    fn resolve(&self, reference: &str) -> Option<PinnedImage> {
        if let Some(p) = self.0.get(reference) {
            return Some(p.clone());
        }
        // A pod file's image, written by the digest or the name the store records,
        // in full or short (`busybox:1.36` is `docker.io/library/busybox:1.36`).
        let normal = crate::oci::reference::ImageRef::parse(reference).ok();
        let same = |p: &PinnedImage| {
            if p.reference_with_digest == reference
                || p.name == reference
                || p.index.as_deref() == Some(reference)
            {
                return true;
            }
            match &normal {
                Some(r) => match &r.digest {
                    Some(d) => {
                        let by_digest = format!("{}@{d}", r.name());
                        p.reference_with_digest == by_digest
                            || p.index.as_deref() == Some(by_digest.as_str())
                    }
                    None => !r.tag_defaulted && p.name == r.to_string(),
                },
                None => false,
            }
        };
        self.0.values().find(|p| same(p)).cloned()
    }
}

/// A file the stage makes, for the node's filesystem.
#[derive(Clone)]
pub struct GeneratedFile {
    /// Relative to `/`, e.g. `etc/kubernetes/manifests/dhcp.yaml`.
    pub path: String,
    pub mode: u32,
    pub content: Vec<u8>,
    /// True for files whose content must never be shown (kubeconfigs...).
    pub secret: bool,
}

impl fmt::Debug for GeneratedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("GeneratedFile");
        d.field("path", &self.path)
            .field("mode", &format_args!("{:04o}", self.mode));
        if self.secret {
            d.field(
                "content",
                &format_args!("<secret, {} bytes>", self.content.len()),
            );
        } else {
            d.field("content", &String::from_utf8_lossy(&self.content));
        }
        d.finish()
    }
}

/// One static pod, for reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PodSummary {
    pub name: String,
    /// `daemon` or `file` (a `pods:` file); `manifest` when read back by inspect.
    pub from: &'static str,
    pub images: Vec<String>,
    pub capabilities: Vec<String>,
    /// A container runs `privileged` (every capability and device of the host).
    pub privileged: bool,
    pub host_network: bool,
    pub host_paths: Vec<String>,
    /// Host devices given without `privileged` (the CRI-O devices annotation).
    pub devices: Vec<String>,
    pub oneshot: bool,
}

/// What the stage made.
#[derive(Clone, Debug, Default)]
pub struct Generated {
    pub files: Vec<GeneratedFile>,
    pub pods: Vec<PodSummary>,
    /// Lint warnings (explicitly allowed privileges), to show the user.
    pub warnings: Vec<Finding>,
    /// Daemons of a built-in base left without an image, so not run.
    pub skipped: Vec<String>,
}

/// An error of the `pods` stage.
#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error("{}", render_findings(.0))]
    Lint(Vec<Finding>),
    #[error("{origin}: {message}{}", .hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Invalid {
        origin: Origin,
        message: String,
        hint: Option<String>,
    },
    #[error("{origin}: cannot read {}", crate::profile::shown_path(.path))]
    Read {
        origin: Origin,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the {what}: {message}")]
    Serialize { what: String, message: String },
    /// The system tree carries a path kios-build owns ([`owned`]).
    #[error("{origin}: {message}\n  hint: {hint}")]
    SystemTree {
        origin: Origin,
        message: String,
        hint: String,
    },
}

impl PodsError {
    pub(crate) fn at(origin: &Origin, message: impl Into<String>, hint: Option<&str>) -> Self {
        PodsError::Invalid {
            origin: origin.clone(),
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }
}

fn render_findings(f: &[Finding]) -> String {
    let errors = f.iter().filter(|x| x.severity == Severity::Error).count();
    let mut s = format!(
        "the static pods break {errors} rule{}:",
        if errors == 1 { "" } else { "s" }
    );
    for x in f {
        s.push_str(&format!("\n{x}"));
    }
    s
}

/// Checks the profile's pods and generates every file of this stage.
pub fn generate(spec: &NodeSpec, resolver: &dyn ImageResolver) -> Result<Generated, PodsError> {
    let pods = generate::collect(spec, resolver)?;
    let findings = lint::lint(spec, &pods, resolver);
    if findings.iter().any(|f| f.severity == Severity::Error) {
        return Err(PodsError::Lint(findings));
    }
    let mut out = Generated {
        warnings: findings,
        ..Generated::default()
    };
    generate::write(spec, &pods, &mut out)?;
    kubelet::write(spec, resolver, &mut out)?;
    generate::extra_files(spec, &mut out)?;
    Ok(out)
}

/// Adds the generated files to a filesystem tree (the initramfs), making their
/// folders (0755) as needed.
pub fn add_to_tree(
    g: &Generated,
    tree: &mut crate::tree::Tree,
) -> Result<(), crate::tree::TreeError> {
    for f in &g.files {
        let path = crate::tree::TreePath::parse(&f.path)?;
        if let Some(parent) = path.parent() {
            let mut dirs = Vec::new();
            let mut cur = Some(parent);
            while let Some(d) = cur {
                if d.is_root() || tree.get(&d).is_some() {
                    break;
                }
                cur = d.parent();
                dirs.push(d);
            }
            for d in dirs.into_iter().rev() {
                tree.mkdir_p(&d, 0o755)?;
            }
        }
        tree.add_file(&f.path, f.content.clone(), f.mode)?;
    }
    Ok(())
}

/// YAML as kubectl would write it: plain scalars, no folded long strings.
pub(crate) fn to_yaml<T: serde::Serialize>(value: &T, what: &str) -> Result<String, PodsError> {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(value, options).map_err(|e| PodsError::Serialize {
        what: what.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const INDEX: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn resolver() -> MapResolver {
        MapResolver(BTreeMap::from([(
            "docker.io/library/busybox:1.36".to_string(),
            PinnedImage {
                reference_with_digest: format!("docker.io/library/busybox@{D}"),
                name: "docker.io/library/busybox:1.36".into(),
                index: Some(format!("docker.io/library/busybox@{INDEX}")),
            },
        )]))
    }

    #[test]
    fn pod_file_images_resolve_by_full_or_short_name_and_by_digest() {
        let r = resolver();
        for known in [
            "docker.io/library/busybox:1.36".to_string(),
            "busybox:1.36".to_string(),
            format!("busybox@{D}"),
            format!("docker.io/library/busybox@{D}"),
            format!("busybox:1.36@{D}"),
            format!("busybox@{INDEX}"),
            format!("docker.io/library/busybox:1.36@{INDEX}"),
        ] {
            assert!(r.resolve(&known).is_some(), "{known}");
        }
        for unknown in [
            // No tag: the kubelet would pull `latest` (Always).
            "busybox".to_string(),
            "busybox:1.37".to_string(),
            format!("busybox@{OTHER}"),
            format!("quay.io/busybox@{D}"),
            "not a reference".to_string(),
        ] {
            assert!(r.resolve(&unknown).is_none(), "{unknown}");
        }
    }
}
