//! Applying one layer's [`LayerChanges`] onto a [`Tree`]: the union of layers that
//! image-spec layer.md describes ("Applying Changesets", "Whiteouts").
//!
//! Order within a layer: whiteouts (`.wh.NAME` removes NAME and what is below it;
//! `.wh..wh..opq` removes every lower child of its directory) are applied first, so
//! they only ever hide lower layers and never what the same layer adds; then the
//! entries, in archive order. A directory entry over a directory replaces its
//! metadata and keeps its children; any other entry replaces what was there.
//!
//! Checks that need the lower layers (errors naming image, layer and entry):
//! - no entry or whiteout may sit below a symlink (`a/b` when `a` is a symlink):
//!   the tree itself would not care, but whoever unpacks it would write through the
//!   link. A whiteout below a symlink is allowed only when the same layer turns that
//!   symlink into a directory. Below a non-directory is an error too.
//! - a hard link must name a regular file (or a hard link to one) present at that
//!   point, and not itself; links are stored pointing at the file, never at a link.
//!
//! Hard links keep their meaning across layers: when a layer removes or replaces
//! the file a lower-layer link points to, the link becomes a copy of the old file
//! (overlay filesystems behave the same: the two names were one inode of the lower
//! layer). A link whose target the *same* layer replaces after making the link is
//! refused rather than guessed at.
//!
//! The layer is applied to a copy; on error the tree is left as it was.

use std::collections::{HashMap, HashSet};

use super::{LayerCx, OciError};
use crate::tree::{Entry, Kind, Tree, TreePath};

/// What one layer does to the layers below it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerChanges {
    /// Entries in archive order; when applied, a later entry for a path replaces an
    /// earlier one. Whiteout files are not here.
    pub entries: Vec<(TreePath, Entry)>,
    /// Removals of lower-layer paths, in archive order.
    pub whiteouts: Vec<Whiteout>,
}

/// A removal a layer makes in the layers below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Whiteout {
    /// `.wh.NAME`: remove this path and everything below it.
    Remove(TreePath),
    /// `DIR/.wh..wh..opq`: remove every lower-layer child of this directory.
    Opaque(TreePath),
}

impl Whiteout {
    pub fn path(&self) -> &TreePath {
        match self {
            Whiteout::Remove(p) | Whiteout::Opaque(p) => p,
        }
    }
}

/// Applies `changes` onto `tree`; whiteouts only when `with_whiteouts`.
pub(crate) fn apply(
    cx: &LayerCx,
    tree: &mut Tree,
    changes: &LayerChanges,
    with_whiteouts: bool,
) -> Result<(), OciError> {
    let mut work = tree.clone();
    let layer_dirs: HashSet<&TreePath> = changes
        .entries
        .iter()
        .filter(|(_, e)| e.kind == Kind::Dir)
        .map(|(p, _)| p)
        .collect();

    if with_whiteouts {
        for w in &changes.whiteouts {
            // Name the whiteout file as the layer spells it.
            let (marker, check_up_to) = match w {
                Whiteout::Remove(p) => {
                    let parent = p.parent().unwrap_or_default();
                    let marker = parent.join(&format!(".wh.{}", p.file_name()));
                    (marker.map(|m| m.to_string()).unwrap_or_default(), p.clone())
                }
                // The opaque directory itself must not be a symlink either.
                Whiteout::Opaque(d) => {
                    let marker = d.join(".wh..wh..opq").unwrap_or_default();
                    (marker.to_string(), marker)
                }
            };
            check_parents(&work, &check_up_to, Some(&layer_dirs))
                .map_err(|why| cx.entry(marker, why))?;
            match w {
                Whiteout::Remove(p) => {
                    work.remove(p);
                }
                Whiteout::Opaque(d) => {
                    if work.get(d).map(|e| e.kind == Kind::Dir) == Some(true) {
                        work.remove_below(d);
                    }
                }
            }
        }
    }

    let mut last_insert: HashMap<&TreePath, usize> = HashMap::new();
    let mut new_links: Vec<(usize, &TreePath, TreePath)> = Vec::new();
    for (i, (path, entry)) in changes.entries.iter().enumerate() {
        let bad = |why: String| cx.entry(path.to_string(), why);
        check_parents(&work, path, None).map_err(bad)?;
        let mut entry = entry.clone();
        if let Kind::Hardlink(target) = &entry.kind {
            let target = resolve_link(&work, path, target).map_err(bad)?;
            new_links.push((i, path, target.clone()));
            entry.kind = Kind::Hardlink(target);
        }
        work.insert(path.clone(), entry)
            .map_err(|e| bad(e.to_string()))?;
        last_insert.insert(path, i);
    }
    for (i, link, target) in &new_links {
        let link_kept = last_insert.get(link) == Some(i);
        if link_kept && last_insert.get(target).is_some_and(|t| t > i) {
            return Err(cx.entry(
                link.to_string(),
                format!("it is a hard link to {target}, which the same layer replaces afterwards"),
            ));
        }
    }
    keep_hardlinks(cx, tree, &mut work)?;
    *tree = work;
    Ok(())
}

/// Errors when a proper ancestor of `path` is a symlink or another non-directory.
/// `layer_dirs`: ancestors the layer itself makes directories (for whiteouts).
fn check_parents(
    tree: &Tree,
    path: &TreePath,
    layer_dirs: Option<&HashSet<&TreePath>>,
) -> Result<(), String> {
    let mut cur = TreePath::root();
    let mut parent = path.parent();
    let Some(parent) = parent.take() else {
        return Ok(());
    };
    for comp in parent.components() {
        cur = cur.join(comp).map_err(|e| e.to_string())?;
        let kind = match tree.get(&cur) {
            None => continue,
            Some(e) => &e.kind,
        };
        if *kind == Kind::Dir || layer_dirs.is_some_and(|d| d.contains(&cur)) {
            continue;
        }
        return Err(match kind {
            Kind::Symlink(_) => format!(
                "path component {cur} is a symlink; writing through it would leave the tree when unpacked"
            ),
            _ => format!("path component {cur} is not a directory"),
        });
    }
    Ok(())
}

/// The regular file a new hard link at `path` names.
fn resolve_link(tree: &Tree, path: &TreePath, target: &TreePath) -> Result<TreePath, String> {
    let resolved = match tree.get(target).map(|e| &e.kind) {
        Some(Kind::File(_)) => target.clone(),
        Some(Kind::Hardlink(t)) => t.clone(),
        Some(Kind::Dir) => return Err(format!("its hard link target {target} is a directory")),
        Some(_) => {
            return Err(format!(
                "its hard link target {target} is not a regular file"
            ))
        }
        None => {
            return Err(format!(
                "its hard link target {target} does not exist in this or a lower layer"
            ))
        }
    };
    if &resolved == path {
        return Err("it is a hard link to itself".into());
    }
    Ok(resolved)
}

/// See the module doc: links from lower layers whose file this layer removed or
/// replaced become copies of the old file (the first, in path order) or links to
/// that copy.
fn keep_hardlinks(cx: &LayerCx, before: &Tree, work: &mut Tree) -> Result<(), OciError> {
    let links: Vec<(TreePath, TreePath)> = work
        .iter()
        .filter_map(|(p, e)| match &e.kind {
            Kind::Hardlink(t) => Some((p.clone(), t.clone())),
            _ => None,
        })
        .collect();
    let mut moved: HashMap<TreePath, TreePath> = HashMap::new();
    for (link, target) in links {
        let now = work.get(&target);
        let was = before.get(&target);
        let from_lower = before.get(&link) == work.get(&link);
        let target_is_file = matches!(now.map(|e| &e.kind), Some(Kind::File(_)));
        if target_is_file && (!from_lower || now == was) {
            continue;
        }
        if let Some(copy) = moved.get(&target) {
            if let Some(e) = work.get_mut(&link) {
                e.kind = Kind::Hardlink(copy.clone());
            }
            continue;
        }
        match was {
            Some(
                old @ Entry {
                    kind: Kind::File(_),
                    ..
                },
            ) => {
                let old = old.clone();
                work.insert(link.clone(), old)
                    .map_err(|e| cx.entry(link.to_string(), e.to_string()))?;
                moved.insert(target, link);
            }
            _ => {
                return Err(cx.entry(
                    link.to_string(),
                    format!(
                        "it is a hard link to {target}, which the same layer removes or replaces"
                    ),
                ))
            }
        }
    }
    Ok(())
}
