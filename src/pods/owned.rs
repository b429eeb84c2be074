//! The system tree against the paths kios-build owns ([`crate::profile::owned`]):
//! where an input tree meets the generated files.

use super::PodsError;
use crate::profile::owned::{clash, Clash, Extent};
use crate::profile::Origin;
use crate::tree::{Kind, Tree};
use crate::untrusted::shown;

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
    use crate::tree::TreePath;

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
