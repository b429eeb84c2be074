//! One layer's own entries -> the layer's `overlay/<id>/diff` directory, as the
//! containers/storage overlay driver leaves it after applying the layer
//! (`drivers/overlay/overlay.go` `ApplyDiff`, `pkg/archive/archive.go` `Unpack`
//! with the overlay whiteout converter of `archive_linux.go`):
//!
//! - the directory itself is mode 0555, owned by root, whatever the layer's `./`
//!   entry says (`Unpack` skips `.` when the directory exists; `create` made it
//!   with the driver's default 0555, and every child layer copies its parent's);
//! - `.wh.NAME` becomes a character device 0:0, mode 0, named NAME and owned by
//!   the whiteout's owner: overlayfs hides the lower NAME behind it. One below a
//!   path the layer made a non-directory is dropped, as `Unpack` ignores ENOTDIR;
//!   one for a path the layer itself also creates is dropped (the entry wins, as
//!   image-spec layer.md says whiteouts only hide lower layers);
//! - `DIR/.wh..wh..opq` becomes xattr `trusted.overlay.opaque=y` on DIR (created
//!   0755 if the layer has no entry for it): overlayfs then hides every lower child;
//! - xattrs are kept, except `security.selinux` (containers/storage drops it).
//!   Layers that set `trusted.overlay.*` or `user.overlay.*` themselves are refused:
//!   those names steer the kernel's overlayfs (opaque, redirect, metacopy, origin),
//!   and only the whiteout conversion above may write them.
//!
//! Everything else (kinds, modes, owners, mtimes, link targets, hard links,
//! devices) is the layer tree's own, with one rule from `createTarFile`: a hard
//! link member chowns, chmods, stamps and sets xattrs on the inode it links to, so
//! the inode ends with the metadata of the last member naming it ([`layer_tree`]).

use std::collections::HashMap;
use std::path::Path;

use crate::oci::{self, LayerBlob, Limits, OciError, Whiteout};
use crate::oci::{LayerChanges, LayerCx};
use crate::tree::{Entry, Kind, Tree, TreePath};

/// One layer's own entries as a tree, whiteouts not applied, like
/// [`oci::read_layer_tree`], except that each hard link member's metadata is
/// applied to the file it links to, in archive order (see the module doc).
pub(super) fn layer_tree(
    reference: &str,
    index: usize,
    blob: &LayerBlob,
    spool_dir: &Path,
    limits: &Limits,
    pool: &oci::SpoolPool,
) -> Result<(Tree, Vec<Whiteout>), OciError> {
    let changes = oci::read_layer_from_pool(reference, index, blob, spool_dir, limits, Some(pool))?;
    let cx = LayerCx::new(reference, index, &blob.digest);
    let mut tree = Tree::new(0);
    oci::merge::apply(&cx, &mut tree, &changes, false)?;
    fold_link_metadata(&mut tree, &changes);
    Ok((tree, changes.whiteouts))
}

fn fold_link_metadata(tree: &mut Tree, changes: &LayerChanges) {
    for (_, entry) in &changes.entries {
        let Kind::Hardlink(target) = &entry.kind else {
            continue;
        };
        let file = match tree.get(target).map(|e| &e.kind) {
            Some(Kind::Hardlink(t)) => t.clone(),
            _ => target.clone(),
        };
        if let Some(f) = tree.get_mut(&file) {
            if matches!(f.kind, Kind::File(_)) {
                f.uid = entry.uid;
                f.gid = entry.gid;
                f.mode = entry.mode;
                f.mtime = entry.mtime;
                f.xattrs
                    .extend(entry.xattrs.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }
}

/// The xattr overlayfs reads for an opaque directory when mounted by root.
pub(super) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Mode of every layer's diff directory (overlay.go `defaultPerms`).
const DIFF_ROOT_MODE: u32 = 0o555;

/// An entry the conversion refuses, and why.
#[derive(Debug)]
pub(super) struct DiffError {
    pub entry: String,
    pub why: String,
}

/// Turns `layer` (the layer's own entries, whiteouts not applied) into its overlay
/// diff directory. `owners` gives each `.wh.NAME` whiteout's uid and gid;
/// `mtime` is given to what the conversion creates.
pub(super) fn overlay_diff(
    mut layer: Tree,
    whiteouts: &[Whiteout],
    owners: &HashMap<TreePath, (u32, u32)>,
    mtime: u64,
) -> Result<Tree, DiffError> {
    for (path, entry) in layer.iter() {
        if let Some(name) = entry
            .xattrs
            .keys()
            .find(|k| k.starts_with("trusted.overlay.") || k.starts_with("user.overlay."))
        {
            return Err(DiffError {
                entry: path.to_string(),
                why: format!(
                    "it sets xattr {name:?}, which only overlayfs itself may set; \
                     rebuild the image without overlay metadata"
                ),
            });
        }
    }
    let paths: Vec<TreePath> = layer.iter().map(|(p, _)| p.clone()).collect();
    for p in &paths {
        if let Some(e) = layer.get_mut(p) {
            e.xattrs.remove("security.selinux");
        }
    }
    let mut root = Entry::dir(DIFF_ROOT_MODE);
    root.mtime = mtime;
    layer
        .insert(TreePath::root(), root)
        .map_err(|e| DiffError {
            entry: "/".into(),
            why: e.to_string(),
        })?;

    for w in whiteouts {
        match w {
            Whiteout::Opaque(dir) => {
                let marker = format!("{dir}/.wh..wh..opq");
                let bad = |why: String| DiffError {
                    entry: marker.clone(),
                    why,
                };
                match layer.get_mut(dir) {
                    Some(e) if e.kind == Kind::Dir => {
                        e.xattrs.insert(OPAQUE_XATTR.into(), b"y".to_vec());
                    }
                    Some(_) => {
                        return Err(bad(format!("its directory {dir} is not a directory")));
                    }
                    None => {
                        let mut d = Entry::dir(0o755);
                        d.mtime = mtime;
                        d.xattrs.insert(OPAQUE_XATTR.into(), b"y".to_vec());
                        layer
                            .insert(dir.clone(), d)
                            .map_err(|e| bad(e.to_string()))?;
                    }
                }
            }
            Whiteout::Remove(path) => {
                if layer.get(path).is_some() || below_non_dir(&layer, path) {
                    continue;
                }
                let (uid, gid) = owners.get(path).copied().unwrap_or((0, 0));
                let mut dev = Entry::new(Kind::CharDevice { major: 0, minor: 0 }, 0);
                dev.uid = uid;
                dev.gid = gid;
                dev.mtime = mtime;
                layer.insert(path.clone(), dev).map_err(|e| DiffError {
                    entry: whiteout_name(path),
                    why: e.to_string(),
                })?;
            }
        }
    }
    Ok(layer)
}

/// True when a proper ancestor of `path` exists in `tree` and is not a directory.
fn below_non_dir(tree: &Tree, path: &TreePath) -> bool {
    let mut cur = path.parent();
    while let Some(p) = cur {
        if let Some(e) = tree.get(&p) {
            if e.kind != Kind::Dir {
                return true;
            }
        }
        cur = p.parent();
    }
    false
}

fn whiteout_name(path: &TreePath) -> String {
    let parent = path.parent().unwrap_or_default();
    if parent.is_root() {
        format!("/.wh.{}", path.file_name())
    } else {
        format!("{parent}/.wh.{}", path.file_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Content;

    fn p(s: &str) -> TreePath {
        TreePath::parse(s).unwrap()
    }

    #[test]
    fn whiteouts_become_devices_and_opaque_markers_xattrs() {
        let mut t = Tree::new(0);
        t.insert(p("d"), Entry::dir(0o700)).unwrap();
        t.insert(p("f"), Entry::file(Content::inline("x"), 0o644))
            .unwrap();
        let owners = HashMap::from([(p("etc/gone"), (7, 8))]);
        let wh = [
            Whiteout::Opaque(p("d")),
            Whiteout::Opaque(p("new/opaque")),
            Whiteout::Remove(p("etc/gone")),
            Whiteout::Remove(p("f")), // the layer re-creates f: the file wins
            Whiteout::Remove(p("f/sub")), // below a file: dropped (ENOTDIR)
        ];
        let d = overlay_diff(t, &wh, &owners, 99).unwrap();
        let root = d.get(&TreePath::root()).unwrap();
        assert_eq!((root.mode, root.uid, root.mtime), (0o555, 0, 99));
        assert_eq!(d.get(&p("d")).unwrap().xattrs[OPAQUE_XATTR], b"y");
        assert_eq!(d.get(&p("d")).unwrap().mode, 0o700);
        assert_eq!(d.get(&p("new/opaque")).unwrap().xattrs[OPAQUE_XATTR], b"y");
        let gone = d.get(&p("etc/gone")).unwrap();
        assert_eq!(gone.kind, Kind::CharDevice { major: 0, minor: 0 });
        assert_eq!((gone.mode, gone.uid, gone.gid), (0, 7, 8));
        assert!(matches!(d.get(&p("f")).unwrap().kind, Kind::File(_)));
        assert!(d.get(&p("f/sub")).is_none());
    }

    #[test]
    fn layer_supplied_overlay_xattrs_are_refused() {
        let mut t = Tree::new(0);
        let mut e = Entry::dir(0o755);
        e.xattrs
            .insert("trusted.overlay.redirect".into(), b"/etc".to_vec());
        t.insert(p("x"), e).unwrap();
        let err = overlay_diff(t, &[], &HashMap::new(), 0).unwrap_err();
        assert_eq!(err.entry, "/x");
        assert!(err.why.contains("trusted.overlay.redirect"));
    }
}
