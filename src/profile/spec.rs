//! What a profile says about the node's Kubernetes side, after its bases are merged:
//! the Kubernetes version, the kubelet's settings, the system daemons, extra static
//! pod files, extra `/etc` files, and what the profile explicitly allows.
//!
//! These are plain values, each keeping where it was written ([`Sourced`]); the YAML
//! reading and merging is in the rest of `crate::profile`. Nothing here reads a file: secrets are
//! named (a file or an environment variable), and read only when the files are
//! generated, so that a secret never sits in a value that could be printed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::{Input, Origin, Sourced};

/// A Kubernetes minor version this build can generate for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub minor: u32,
}

/// The versions k8s-openapi 0.29 describes and kubernetes-validate has schemas for.
pub const SUPPORTED_MINORS: std::ops::RangeInclusive<u32> = 33..=37;
/// Used when no profile of the chain sets `kubernetes.version`.
pub const DEFAULT_VERSION: KubeVersion = KubeVersion { minor: 33 };

impl KubeVersion {
    /// Parses `1.N` or `1.N.P`, for the supported minors.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_start_matches('v');
        let mut parts = s.split('.');
        let major = parts.next().and_then(|p| p.parse::<u32>().ok());
        let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
        let patch_ok = parts
            .next()
            .map(|p| p.parse::<u32>().is_ok())
            .unwrap_or(true);
        let supported = || {
            format!(
                "1.{} to 1.{}",
                SUPPORTED_MINORS.start(),
                SUPPORTED_MINORS.end()
            )
        };
        match (major, minor, patch_ok, parts.next()) {
            (Some(1), Some(m), true, None) if SUPPORTED_MINORS.contains(&m) => {
                Ok(KubeVersion { minor: m })
            }
            (Some(1), Some(m), true, None) => Err(format!(
                "Kubernetes 1.{m} is not supported: this kios-build generates for {}",
                supported()
            )),
            _ => Err(format!(
                "`{}` is not a Kubernetes version: write it as \"1.N\" ({})",
                crate::untrusted::shown(s),
                supported()
            )),
        }
    }

    /// `1.N.0`, as kubernetes-validate spells a version.
    pub fn full(self) -> String {
        format!("1.{}.0", self.minor)
    }

    /// The pause (sandbox) image of this Kubernetes version (what kubeadm pins).
    pub fn pause_image(self) -> &'static str {
        if self.minor <= 33 {
            "registry.k8s.io/pause:3.10"
        } else {
            "registry.k8s.io/pause:3.10.1"
        }
    }

    /// The KubeletConfiguration API version of this Kubernetes version.
    pub fn kubelet_config_api(self) -> &'static str {
        "kubelet.config.k8s.io/v1beta1"
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.minor)
    }
}

/// Where a secret (or any file the kubelet is given) comes from. The content is read
/// only when the file is generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the build host (absolute).
    File(PathBuf),
    /// An environment variable of the build, holding the content itself.
    Env(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "file {}", p.display()),
            SecretSource::Env(n) => write!(f, "environment variable {n}"),
        }
    }
}

/// The kubelet's settings.
#[derive(Clone, Debug, Default)]
pub struct KubeletSpec {
    /// Top-level KubeletConfiguration fields, merged over the bases (deep merge),
    /// each with the place its last value was written.
    pub config: BTreeMap<String, (Origin, serde_json::Value)>,
    pub labels: BTreeMap<String, Sourced<String>>,
    pub node_ip: Option<Sourced<String>>,
    pub kubeconfig: Option<Sourced<SecretSource>>,
    pub bootstrap_kubeconfig: Option<Sourced<SecretSource>>,
    pub cluster_ca: Option<Sourced<SecretSource>>,
    pub credential_provider: Option<Sourced<SecretSource>>,
}

/// A host path a daemon mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPath {
    pub path: Sourced<String>,
    pub read_only: bool,
}

/// A system daemon, as the profile declares it (merged by name over the bases).
#[derive(Clone, Debug)]
pub struct Daemon {
    pub name: Sourced<String>,
    /// `None` for a daemon a built-in base declares and no profile gave an image:
    /// such a daemon is not run (see docs/pods.md, "Base daemons").
    pub image: Option<Input>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub capabilities: Vec<Sourced<String>>,
    pub host_network: bool,
    pub oneshot: bool,
    pub host_paths: Vec<HostPath>,
    pub devices: Vec<Sourced<String>>,
    pub env: BTreeMap<String, String>,
    pub privileged: Option<Sourced<bool>>,
    /// True when the daemon was first declared by a built-in base.
    pub from_builtin_base: bool,
}

/// What the profile explicitly allows beyond least privilege.
#[derive(Clone, Debug, Default)]
pub struct Allow {
    /// Pod names allowed to run privileged.
    pub privileged: Vec<Sourced<String>>,
    /// Capabilities that give a container the host (`caps::HOST`), each allowed to
    /// one pod: `allow.capabilities` and `allow.sysAdmin`.
    pub capabilities: Vec<Grant>,
    /// Host memory devices (`caps::HOST_DEVICES`), each allowed to one pod:
    /// `allow.devices`.
    pub devices: Vec<Grant>,
    /// Host paths allowed besides [`DEFAULT_HOST_PATHS`].
    pub host_paths: Vec<Sourced<String>>,
}

/// One thing (a capability, a device) allowed to one pod by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The capability (without CAP_) or the device path.
    pub what: String,
    /// The pod's name, where the profile wrote it.
    pub pod: Sourced<String>,
    /// The profile field that allowed it, for messages: `allow.capabilities`...
    pub field: &'static str,
}

/// Host paths any static pod may mount (a path is allowed when it is one of these or
/// below one).
pub const DEFAULT_HOST_PATHS: &[&str] = &[
    "/dev",
    "/etc/kubernetes",
    "/etc/ssl/certs",
    "/run/kios",
    "/run/system.sock",
    "/var/lib/kios",
    "/var/log",
];

/// An extra file for the node's `/etc`.
#[derive(Clone, Debug)]
pub struct ExtraFile {
    pub path: Sourced<String>,
    pub mode: u32,
    pub content: ExtraContent,
}

#[derive(Clone, Debug)]
pub enum ExtraContent {
    Inline(String),
    Source(PathBuf),
}

/// Everything the `pods` stage reads from the profile.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub kubernetes: Sourced<KubeVersion>,
    pub kubelet: KubeletSpec,
    pub daemons: Vec<Daemon>,
    /// Extra static pod manifests, as files (absolute), in profile order.
    pub pods: Vec<Sourced<PathBuf>>,
    pub files: Vec<ExtraFile>,
    pub allow: Allow,
    /// `kubernetes.pauseImage` when a profile of the chain sets it; else the pause
    /// image of the version ([`NodeSpec::pause_image`]).
    pub pause: Option<Input>,
    /// `images:`, the extra images to pre-seed (for `pods:` files, or for pods the
    /// node runs later without pulling), in profile order, each once.
    pub images: Vec<Input>,
}

impl NodeSpec {
    /// The pause (sandbox) image: `kubernetes.pauseImage`, else the one of the
    /// Kubernetes version from registry.k8s.io.
    pub fn pause_image(&self) -> Input {
        if let Some(p) = &self.pause {
            return p.clone();
        }
        let r = crate::oci::reference::ImageRef::parse(self.kubernetes.value.pause_image())
            .expect("the built-in pause references parse");
        Sourced {
            value: crate::profile::Source::Registry(r),
            origin: self.kubernetes.origin.clone(),
        }
    }

    /// Every image the node must have without pulling, each once, in this order:
    /// the daemons' images, `images:`, then the pause image when there is any
    /// pod to run (a pod's sandbox needs it before the network is up) or the
    /// profile names one.
    pub fn seed_images(&self) -> Vec<Input> {
        let mut out: Vec<Input> = Vec::new();
        let add = |out: &mut Vec<Input>, i: &Input| {
            if !out.iter().any(|x| x.value == i.value) {
                out.push(i.clone());
            }
        };
        for i in self.daemons.iter().filter_map(|d| d.image.as_ref()) {
            add(&mut out, i);
        }
        for i in &self.images {
            add(&mut out, i);
        }
        if !out.is_empty() || !self.pods.is_empty() || self.pause.is_some() {
            add(&mut out, &self.pause_image());
        }
        out
    }
}

/// Deep merge for YAML/JSON values: mappings merge key by key, anything else replaces.
pub fn deep_merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_within_the_supported_range() {
        assert_eq!(KubeVersion::parse("1.34").unwrap().minor, 34);
        assert_eq!(KubeVersion::parse("v1.33.2").unwrap().minor, 33);
        assert!(KubeVersion::parse("1.30")
            .unwrap_err()
            .contains("not supported"));
        assert!(KubeVersion::parse("one").unwrap_err().contains("1.N"));
    }

    #[test]
    fn deep_merge_merges_maps_and_replaces_the_rest() {
        let mut a = serde_json::json!({"a": {"b": 1, "c": [1]}, "d": 1});
        deep_merge(&mut a, serde_json::json!({"a": {"c": [2], "e": 3}}));
        assert_eq!(
            a,
            serde_json::json!({"a": {"b": 1, "c": [2], "e": 3}, "d": 1})
        );
    }
}
