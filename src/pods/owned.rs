//! The paths of the node's filesystem that kios-build writes and nothing else may:
//! the generated `/etc` files (kubelet configuration, CRI-O drop-in, hostname,
//! os-release, module list, storage configuration) and the static pod folder
//! `/etc/kubernetes/manifests`, which only the lint-checked `daemons:` and `pods:`
//! fill.
//!
//! One list ([`OWNED`]), checked twice: a profile's `files:` entry at, inside or above
//! an owned path is refused when the profile is loaded (with its line), and the
//! system tree is refused where it meets the generated files (`build::initramfs_tree`)
//! when it carries one. The list is fixed, not "what this profile happens to
//! generate": a path is kios-build's whether or not this profile sets the field that
//! writes it, so that adding a field to a profile can never silently drop a file.
//!
//! It does not decide what is generated: each writer names its path through the
//! constants here or in [`super::kubelet`].

use super::kubelet;
use super::PodsError;
use crate::profile::Origin;
use crate::tree::{Kind, Tree, TreePath};
use crate::untrusted::shown;

/// `/etc/hostname`, from the profile's `hostname:`.
pub const HOSTNAME: &str = "etc/hostname";
/// `/etc/os-release`, kiOS' release (also the UKI's `.osrel`).
pub const OS_RELEASE: &str = "etc/os-release";
/// `/etc/kios/modules`, the load order of `kernel.modules` that kios-init reads.
pub const MODULES: &str = "etc/kios/modules";
/// `/etc/containers/storage.conf`, pointing CRI-O at the pre-seeded store.
pub const STORAGE_CONF: &str = "etc/containers/storage.conf";
/// The static pod folder: only `daemons:` and `pods:` put files there, linted.
pub const MANIFESTS: &str = "etc/kubernetes/manifests";

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
    file(kubelet::CONFIG, "the profile's `kubelet.config`"),
    file(kubelet::CONFIG_STANDALONE, "the profile's `kubelet.config`"),
    file(kubelet::NODE_LABELS, "the profile's `kubelet.labels`"),
    file(kubelet::NODE_IP, "the profile's `kubelet.nodeIP`"),
    file(kubelet::KUBECONFIG, "the profile's `kubelet.kubeconfig`"),
    file(
        kubelet::BOOTSTRAP_KUBECONFIG,
        "the profile's `kubelet.bootstrapKubeconfig`",
    ),
    file(kubelet::CLUSTER_CA, "the profile's `kubelet.clusterCA`"),
    file(
        kubelet::CREDENTIAL_PROVIDER,
        "the profile's `kubelet.credentialProvider`",
    ),
    file(
        kubelet::CRIO_DROPIN,
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

/// Refuses a system tree that carries an owned path, or puts anything but a folder
/// above one (a symlink `etc/kubernetes` would send the generated files elsewhere).
/// `origin` is where the profile names the system tree.
pub fn check_system_tree(tree: &Tree, origin: &Origin) -> Result<(), PodsError> {
    for (path, entry) in tree.iter() {
        let is_dir = entry.kind == Kind::Dir;
        let (o, what) = match clash(path) {
            // The folder itself may be there (an empty one, as packages make it);
            // kios-build fills it.
            Some(Clash::Is(o))
                if path.as_str() == o.path && o.extent == Extent::Folder && is_dir =>
            {
                continue
            }
            Some(Clash::Is(o)) if path.as_str() != o.path => (o, "is inside"),
            Some(Clash::Is(o)) => (o, "is"),
            Some(Clash::Above(o)) if !is_dir => (o, "is not a folder but lies above"),
            _ => continue,
        };
        return Err(PodsError::SystemTree {
            origin: origin.clone(),
            message: format!(
                "the system tree's {} {what} /{}, which kios-build writes",
                shown(&path.to_string()),
                o.path
            ),
            hint: format!(
                "remove it from the system tree; kios-build writes /{} from {}",
                o.path, o.set_by
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o() -> Origin {
        Origin {
            file: "p.yaml".into(),
            line: 9,
            column: 3,
        }
    }

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

    #[test]
    fn a_system_tree_may_hold_folders_above_owned_paths_but_nothing_owned() {
        let mut t = Tree::new(0);
        t.add_file("etc/crio/crio.conf", "x", 0o644).unwrap();
        // An empty manifests folder, as a package makes it, is fine.
        t.mkdir_p(&p("etc/kubernetes/manifests"), 0o755).unwrap();
        t.mkdir_p(&p("etc/kubernetes/pki"), 0o755).unwrap();
        check_system_tree(&t, &o()).unwrap();
        t.add_file("etc/kubernetes/manifests/evil.yaml", "x", 0o644)
            .unwrap();
        let e = check_system_tree(&t, &o()).unwrap_err().to_string();
        assert!(
            e.contains("/etc/kubernetes/manifests/evil.yaml is inside /etc/kubernetes/manifests"),
            "{e}"
        );
        let mut t = Tree::new(0);
        t.insert(
            p("etc/kubernetes"),
            crate::tree::Entry::symlink("/var/lib/x"),
        )
        .unwrap();
        let e = check_system_tree(&t, &o()).unwrap_err().to_string();
        assert!(e.contains("/etc/kubernetes is not a folder"), "{e}");
    }
}
