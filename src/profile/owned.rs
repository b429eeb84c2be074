//! The paths of the node's filesystem that kios-build writes and nothing else may:
//! the generated `/etc` files (kubelet configuration, CRI-O drop-in, hostname,
//! os-release, module list, storage configuration) and the static pod folder
//! `/etc/kubernetes/manifests`, which only the lint-checked `daemons:` and `pods:`
//! fill.
//!
//! One list ([`OWNED`]), checked twice: a profile's `files:` entry at, inside or above
//! an owned path is refused when the profile is loaded (with its line), and the
//! system tree is refused where it meets the generated files
//! (`crate::pods::owned::check_system_tree`, from `initramfs::contents::tree`) when it
//! carries one. The list is fixed, not "what this profile happens to
//! generate": a path is kios-build's whether or not this profile sets the field that
//! writes it, so that adding a field to a profile can never silently drop a file.
//!
//! It does not decide what is generated: each writer names its path through the
//! constants here, which come from the contract with kios-init (`kios_contract`).

use crate::tree::TreePath;
use kios_contract::{file, relative};

/// `/etc/hostname`, from the profile's `hostname:`.
pub const HOSTNAME: &str = relative(file::HOSTNAME);
/// `/etc/os-release`, kiOS' release (also the UKI's `.osrel`).
pub const OS_RELEASE: &str = relative(file::OS_RELEASE);
/// `/etc/kios/modules`, the load order of `kernel.modules` that kios-init reads.
pub const MODULES: &str = relative(file::MODULES);
/// `/etc/containers/storage.conf`, pointing CRI-O at the pre-seeded store.
pub const STORAGE_CONF: &str = relative(file::STORAGE_CONF);
/// The static pod folder: only `daemons:` and `pods:` put files there, linted.
pub const MANIFESTS: &str = relative(file::STATIC_PODS);
/// The kubelet's files (`crate::pods::kubelet` writes them, kios-init reads them).
pub const CONFIG: &str = relative(file::KUBELET_CONFIG);
pub const CONFIG_STANDALONE: &str = relative(file::KUBELET_CONFIG_STANDALONE);
pub const KUBECONFIG: &str = relative(file::KUBECONFIG);
pub const BOOTSTRAP_KUBECONFIG: &str = relative(file::BOOTSTRAP_KUBECONFIG);
pub const CLUSTER_CA: &str = relative(file::CLUSTER_CA);
pub const CREDENTIAL_PROVIDER: &str = relative(file::CREDENTIAL_CONFIG);
pub const NODE_LABELS: &str = relative(file::NODE_LABELS);
pub const NODE_IP: &str = relative(file::NODE_IP);
pub const CRIO_DROPIN: &str = relative(file::CRIO_PAUSE_DROPIN);

/// Whether an owned path is one file or a whole folder (everything below is owned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    File,
    Folder,
}

/// One owned path (relative to `/`), and the profile field that writes it: what an
/// error tells the user to use instead.
#[derive(Debug, PartialEq, Eq)]
pub struct Owned {
    pub path: &'static str,
    pub extent: Extent,
    pub set_by: &'static str,
}

const fn file(path: &'static str, set_by: &'static str) -> Owned {
    Owned {
        path,
        extent: Extent::File,
        set_by,
    }
}

/// Every path kios-build owns.
pub const OWNED: &[Owned] = &[
    file(HOSTNAME, "the profile's `hostname:`"),
    file(OS_RELEASE, "kios-build (kiOS' release)"),
    file(MODULES, "the profile's `kernel.modules`"),
    file(
        STORAGE_CONF,
        "kios-build (the pre-seeded image store: `images:` and `daemons:`)",
    ),
    Owned {
        path: MANIFESTS,
        extent: Extent::Folder,
        set_by: "the profile's `daemons:` and `pods:` (checked by the pod lint)",
    },
    file(CONFIG, "the profile's `kubelet.config`"),
    file(CONFIG_STANDALONE, "the profile's `kubelet.config`"),
    file(NODE_LABELS, "the profile's `kubelet.labels`"),
    file(NODE_IP, "the profile's `kubelet.nodeIP`"),
    file(KUBECONFIG, "the profile's `kubelet.kubeconfig`"),
    file(
        BOOTSTRAP_KUBECONFIG,
        "the profile's `kubelet.bootstrapKubeconfig`",
    ),
    file(CLUSTER_CA, "the profile's `kubelet.clusterCA`"),
    file(
        CREDENTIAL_PROVIDER,
        "the profile's `kubelet.credentialProvider`",
    ),
    file(
        CRIO_DROPIN,
        "the profile's `kubernetes.version` and `kubernetes.pauseImage`",
    ),
];

/// How `path` meets an owned path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clash {
    /// `path` is the owned path, or lies inside an owned folder.
    Is(&'static Owned),
    /// `path` is a folder above an owned path: as anything but a folder it would
    /// replace (or, as a symlink, redirect) what kios-build writes below it.
    Above(&'static Owned),
}

/// The owned path `path` (normalised, relative to `/`) is, is inside, or is above.
pub fn clash(path: &TreePath) -> Option<Clash> {
    OWNED.iter().find_map(|o| {
        let owned = TreePath::parse(o.path).ok()?;
        if path == &owned || (o.extent == Extent::Folder && path.starts_with(&owned)) {
            Some(Clash::Is(o))
        } else if owned.starts_with(path) {
            Some(Clash::Above(o))
        } else {
            None
        }
    })
}

/// Why a `files:` entry at `path` (a file, normalised) may not be written: `None`
/// when it may. `(message, hint)`.
pub fn refuse_extra_file(path: &TreePath) -> Option<(String, String)> {
    let (o, what) = match clash(path)? {
        Clash::Is(o) if path.as_str() != o.path => (o, "is inside"),
        Clash::Is(o) => (o, "is"),
        Clash::Above(o) => (o, "would replace the folder of"),
    };
    Some((
        format!(
            "files: {path} {what} /{}, which kios-build writes",
            o.path
        ),
        format!(
            "set it through {} instead; files: may not write kios-build's own paths (docs/profile.md, \"Paths kios-build owns\")",
            o.set_by
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TreePath {
        TreePath::parse(s).unwrap()
    }

    #[test]
    fn owned_paths_their_folders_and_parents_clash() {
        for is in [
            "etc/hostname",
            "etc/os-release",
            "etc/kios/modules",
            "etc/containers/storage.conf",
            "etc/kubernetes/manifests",
            "etc/kubernetes/manifests/x.yaml",
            "etc/kubernetes/manifests/sub/x.yaml",
            "etc/kubernetes/config.yaml",
            "etc/kubernetes/pki/ca.crt",
            "etc/crio/crio.conf.d/10-kios-pause.conf",
        ] {
            assert!(matches!(clash(&p(is)), Some(Clash::Is(_))), "{is}");
        }
        for above in [
            "etc",
            "etc/kubernetes",
            "etc/crio",
            "etc/crio/crio.conf.d",
            "etc/kios",
            "etc/containers",
            "etc/kubernetes/pki",
        ] {
            assert!(matches!(clash(&p(above)), Some(Clash::Above(_))), "{above}");
        }
        for free in [
            "etc/example.conf",
            "etc/kubernetes/pki/extra.crt",
            "etc/crio/crio.conf",
            "etc/crio/crio.conf.d/20-mine.conf",
            "etc/containers/policy.json",
            "etc/hostname2",
            "etc/kubernetes/manifests2",
        ] {
            assert_eq!(clash(&p(free)), None, "{free}");
        }
    }
}
