//! What goes into the initramfs: the system tree, kios-init as `/init`, the kernel
//! modules and their load order, and the generated `/etc` (os-release, hostname, the
//! static pods and kubelet files, `storage.conf` when there is a store), as one
//! [`Tree`]; and that tree written to the work folder as a compressed cpio.
//!
//! It assembles values made by earlier stages (`inputs`, `pods`, the module set) and
//! decides nothing about them; the cpio format itself is `super::cpio`.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{write_initramfs, Compression, InitramfsError, ModuleError, ModuleSet};
use crate::pods::{Generated, PodsError};
use crate::profile::owned;
use crate::profile::Origin;
use crate::tree::{Content, Entry, Kind, Tree, TreeError, TreePath};

/// Everything the initramfs is made of.
pub struct Contents<'a> {
    /// The system tree, and where the profile names it.
    pub system: Option<(&'a Tree, &'a Origin)>,
    /// kios-init, checked (`crate::inputs::kios_init`).
    pub init: &'a Path,
    pub modules: &'a ModuleSet,
    /// The kernel release the modules belong to (for errors).
    pub kernel_version: &'a str,
    /// `/etc/os-release` ([`os_release`]).
    pub os_release: &'a str,
    pub hostname: Option<&'a str>,
    /// The static pods, the kubelet's files and the profile's extra files.
    pub pods: &'a Generated,
    /// Whether the image has a store partition (then `storage.conf` points at it).
    pub store: bool,
    /// SOURCE_DATE_EPOCH: no timestamp is later.
    pub epoch: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ContentsError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("kernel modules of {version}")]
    Modules {
        version: String,
        #[source]
        source: ModuleError,
    },
    /// The system tree carries a path kios-build owns, or a generated file is wrong:
    /// the user's input.
    #[error(transparent)]
    Pods(#[from] PodsError),
    #[error("cannot read kios-init: {}", path.display())]
    Init {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The text of `/etc/os-release` (also the UKI's `.osrel`); `hash` is the profile's.
pub fn os_release(hash: &[u8; 32]) -> String {
    let ver = env!("CARGO_PKG_VERSION");
    let id = hex::encode(&hash[..6]);
    format!(
        "NAME=\"kiOS\"\nID=kios\nPRETTY_NAME=\"kiOS (kios-build {ver})\"\nVERSION_ID={ver}\nBUILD_ID={id}\nHOME_URL=\"https://kios.dev/\"\n"
    )
}

/// The initramfs tree and the module load order written to `/etc/kios/modules`. The
/// system tree may not carry a path kios-build writes (`profile::owned`): it would be
/// silently replaced, or, in the static pod folder, put a pod on the node that no lint
/// has seen.
pub fn tree(c: &Contents) -> Result<(Tree, String), ContentsError> {
    let epoch = c.epoch;
    let mut tree = match c.system {
        Some((t, origin)) => {
            crate::pods::owned::check_system_tree(t, origin)?;
            t.clone()
        }
        None => Tree::new(epoch),
    };
    tree.default_mtime = epoch;
    for (dir, mode) in [
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("var", 0o755),
        ("etc/kios", 0o755),
        (owned::MANIFESTS, 0o755),
    ] {
        tree.mkdir_p(&TreePath::parse(dir)?, mode)?;
    }
    // The kernel opens /dev/console for init's stdio before devtmpfs exists.
    for (path, major, minor, mode) in [("dev/console", 5, 1, 0o600), ("dev/null", 1, 3, 0o666)] {
        let mut e = Entry::new(Kind::CharDevice { major, minor }, mode);
        e.mtime = epoch;
        tree.insert(TreePath::parse(path)?, e)?;
    }
    let init_len = fs::metadata(c.init)
        .map_err(|source| ContentsError::Init {
            path: c.init.to_path_buf(),
            source,
        })?
        .len();
    let mut init = Entry::file(
        Content::Host {
            path: Arc::new(c.init.to_path_buf()),
            offset: 0,
            len: init_len,
        },
        0o755,
    );
    init.mtime = epoch;
    tree.insert(TreePath::parse("init")?, init)?;
    let modules_list =
        c.modules
            .add_to_tree(&mut tree)
            .map_err(|source| ContentsError::Modules {
                version: c.kernel_version.to_string(),
                source,
            })?;
    tree.add_file(owned::MODULES, modules_list.clone(), 0o644)?;
    tree.add_file(owned::OS_RELEASE, c.os_release.to_string(), 0o644)?;
    if let Some(h) = c.hostname {
        tree.add_file(owned::HOSTNAME, format!("{h}\n"), 0o644)?;
    }
    crate::pods::add_to_tree(c.pods, &mut tree)?;
    if c.store {
        // CRI-O (and podman) read the store partition as an additional image store.
        tree.add_file(
            owned::STORAGE_CONF,
            crate::store::cstorage::storage_conf(
                kios_contract::mount::STORE,
                "/var/lib/containers/storage",
                "/run/containers/storage",
            ),
            0o644,
        )?;
    }
    tree.clamp_mtimes(epoch);
    Ok((tree, modules_list))
}

/// Writes `tree` as the compressed cpio at `path` (in the private work folder) and
/// returns its size.
pub fn write_file(
    tree: &Tree,
    compression: Compression,
    path: &Path,
) -> Result<u64, InitramfsError> {
    let write = |source| InitramfsError::Write { source };
    let f = File::create(path).map_err(write)?;
    let w = write_initramfs(tree, compression, BufWriter::new(f))?;
    let f = w.into_inner().map_err(|e| write(e.into_error()))?;
    f.sync_all().map_err(write)?;
    Ok(f.metadata().map_err(write)?.len())
}

impl From<crate::profile::Compression> for Compression {
    fn from(c: crate::profile::Compression) -> Self {
        match c {
            crate::profile::Compression::Gzip => Compression::Gzip,
            crate::profile::Compression::Zstd => Compression::Zstd,
        }
    }
}
