//! The system tree check: whether the tree a profile names as `system:` holds what
//! kios-init starts (CRI-O, conmon, an OCI runtime, pinns, the kubelet), built for the
//! image's architecture, with every ELF interpreter and library it needs inside the
//! tree. `kios-build system check` reports it (exit 1 on an error, as `kernel check`);
//! `build` prints it as warnings, and refuses the build with `--strict`.
//!
//! The tree is a value (`tree::Tree`): paths and symlinks are resolved inside it, as
//! the node will resolve them, never on the host; a symlink loop or a link that
//! leaves the tree is a finding, not a hang. File contents are read only for their
//! ELF headers (`elf.rs`, bounded).
//!
//! It does not check what the programs do at run time, nor the kernel (`kernel check`).

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::elf::{self, ReadAt};
use crate::profile::Arch;
use crate::tree::{Content, Entry, Kind, Tree, TreePath};
use crate::untrusted::shown;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The node will not run as it should.
    Error,
    /// Worth a look (setuid, world-writable).
    Warning,
}

/// One thing the check found, about one path of the tree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub severity: Severity,
    /// `/usr/bin/crio`, as on the node.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{s}: {}: {}", shown(&self.path), self.message)
    }
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// ELF files looked at.
    pub elf_files: usize,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for x in &self.findings {
            writeln!(f, "{x}")?;
        }
        let warnings = self.findings.len() - self.errors();
        write!(
            f,
            "{} errors, {warnings} warnings ({} ELF files checked)",
            self.errors(),
            self.elf_files
        )
    }
}

/// The programs kios-init starts, each as the paths where it may be (any one).
const REQUIRED: &[(&str, &[&str])] = &[
    ("CRI-O", &[kios_contract::program::CRIO]),
    ("the kubelet", &[kios_contract::program::KUBELET]),
    (
        "conmon (CRI-O's container monitor)",
        &[
            "/usr/bin/conmon",
            "/usr/libexec/crio/conmon",
            "/usr/local/bin/conmon",
        ],
    ),
    (
        "an OCI runtime (crun or runc)",
        &[
            "/usr/bin/crun",
            "/usr/bin/runc",
            "/usr/sbin/runc",
            "/usr/local/bin/crun",
            "/usr/local/bin/runc",
        ],
    ),
    (
        "pinns (CRI-O's namespace pinner)",
        &["/usr/bin/pinns", "/usr/local/bin/pinns"],
    ),
];

/// How many symlinks one path may pass through (as Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Resolves `path` (absolute, as on the node) inside `tree`, following symlinks in
/// every component; `..` stops at the root, so nothing resolves outside the tree.
/// `Err` says why it does not resolve.
fn resolve<'t>(tree: &'t Tree, path: &str) -> Result<(TreePath, &'t Entry), String> {
    let mut links = 0;
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = path.split('/').rev().map(str::to_string).collect();
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(c);
        let here = TreePath::parse(&done.join("/")).map_err(|e| e.to_string())?;
        let Some(entry) = tree.get(&here) else {
            return Err(format!("/{} does not exist", here.as_str()));
        };
        let target = match &entry.kind {
            Kind::Symlink(t) => t.clone(),
            Kind::Hardlink(t) if todo.is_empty() => {
                let e = tree.get(t).ok_or("a hard link to nothing")?;
                return Ok((t.clone(), e));
            }
            _ if todo.is_empty() => return Ok((here, entry)),
            _ => continue,
        };
        links += 1;
        if links > MAX_LINKS {
            return Err("too many levels of symbolic links (a loop?)".into());
        }
        done.pop();
        if target.starts_with('/') {
            done.clear();
        }
        todo.extend(target.split('/').rev().map(str::to_string));
    }
    let here = TreePath::parse(&done.join("/")).map_err(|e| e.to_string())?;
    let entry = tree.get(&here).ok_or("it does not exist")?;
    Ok((here, entry))
}

/// A file's content, read at offsets.
enum Bytes<'a> {
    Inline(&'a [u8]),
    Host { file: File, offset: u64, len: u64 },
}

impl ReadAt for Bytes<'_> {
    fn len(&self) -> u64 {
        match self {
            Bytes::Inline(b) => b.len() as u64,
            Bytes::Host { len, .. } => *len,
        }
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Bytes::Inline(b) => {
                let p = usize::try_from(pos).map_err(|_| io::ErrorKind::InvalidInput)?;
                let src = b
                    .get(p..p + buf.len())
                    .ok_or(io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(src);
                Ok(())
            }
            Bytes::Host { file, offset, .. } => file.read_exact_at(buf, offset + pos),
        }
    }
}

fn bytes(content: &Content) -> io::Result<Bytes<'_>> {
    Ok(match content {
        Content::Inline(b) => Bytes::Inline(b),
        Content::Host { path, offset, len } => Bytes::Host {
            file: crate::untrusted::open_regular(path)?,
            offset: *offset,
            len: *len,
        },
    })
}

/// The library folders the dynamic loader searches, in its order: `/etc/ld.so.conf`
/// (and the files it includes from `/etc/ld.so.conf.d/`), then the default folders,
/// multiarch first.
fn library_dirs(tree: &Tree, arch: Arch) -> Vec<String> {
    let mut dirs = Vec::new();
    let conf_text = |path: &str| -> Option<String> {
        let (_, e) = resolve(tree, path).ok()?;
        let Kind::File(c) = &e.kind else { return None };
        let b = bytes(c).ok()?;
        let mut buf = vec![0u8; b.len().min(64 << 10) as usize];
        b.read_at(0, &mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    let mut files = vec!["/etc/ld.so.conf".to_string()];
    if let Some(text) = conf_text("/etc/ld.so.conf") {
        if text.lines().any(|l| l.trim().starts_with("include")) {
            // `include /etc/ld.so.conf.d/*.conf`, as Debian writes it: the folder's
            // .conf files in name order.
            let d = TreePath::parse("etc/ld.so.conf.d").ok();
            let mut names: Vec<String> = tree
                .iter()
                .filter(|(p, _)| d.as_ref().and_then(|d| p.parent().map(|x| &x == d)) == Some(true))
                .map(|(p, _)| format!("/{}", p.as_str()))
                .filter(|p| p.ends_with(".conf"))
                .collect();
            names.sort();
            files.extend(names);
        }
    }
    for f in files {
        if let Some(text) = conf_text(&f) {
            for l in text.lines() {
                let l = l.trim();
                if l.starts_with('/') {
                    dirs.push(l.to_string());
                }
            }
        }
    }
    let triplet = match arch {
        Arch::Amd64 => "x86_64-linux-gnu",
        Arch::Arm64 => "aarch64-linux-gnu",
    };
    for d in [
        format!("/lib/{triplet}"),
        format!("/usr/lib/{triplet}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
    ] {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

fn machine_of(arch: Arch) -> u16 {
    match arch {
        Arch::Amd64 => elf::EM_X86_64,
        Arch::Arm64 => elf::EM_AARCH64,
    }
}

/// Checks the system tree `tree` of an `arch` image.
pub fn check(tree: &Tree, arch: Arch) -> Report {
    let mut report = Report::default();
    check_required(tree, &mut report);
    let dirs = library_dirs(tree, arch);
    for (path, entry) in tree.iter() {
        let node_path = format!("/{}", path.as_str());
        check_mode(&node_path, entry, &mut report);
        let Kind::File(content) = &entry.kind else {
            continue;
        };
        let Ok(b) = bytes(content) else { continue };
        let mut head = [0u8; 4];
        if b.len() < 4 || b.read_at(0, &mut head).is_err() || !elf::is_elf(&head) {
            continue;
        }
        report.elf_files += 1;
        match elf::read_elf(&b) {
            Ok(e) => check_elf(tree, path, &e, arch, &dirs, &mut report),
            Err(err) => report.add(
                Severity::Error,
                &node_path,
                format!("a damaged ELF file: {err}"),
            ),
        }
    }
    report.findings.sort();
    report
}

impl Report {
    fn add(&mut self, severity: Severity, path: &str, message: String) {
        self.findings.push(Finding {
            severity,
            path: path.to_string(),
            message,
        })
    }
}

/// The programs kios-init starts: present, regular, executable.
fn check_required(tree: &Tree, report: &mut Report) {
    for (what, paths) in REQUIRED {
        let found = paths
            .iter()
            .find_map(|p| resolve(tree, p).ok().map(|r| (p, r)));
        match found {
            None => report.add(
                Severity::Error,
                paths[0],
                format!(
                    "{what} is missing (looked for {}); a kiOS node runs it (docs/system.md)",
                    paths.join(", ")
                ),
            ),
            Some((p, (_, e))) => {
                if !matches!(e.kind, Kind::File(_)) {
                    report.add(Severity::Error, p, format!("{what} is not a regular file"));
                } else if e.mode & 0o111 == 0 {
                    report.add(
                        Severity::Error,
                        p,
                        format!("{what} is not executable (mode {:04o})", e.mode),
                    );
                }
            }
        }
    }
}

/// setuid/setgid files and world-writable entries (sticky folders aside): warnings.
fn check_mode(node_path: &str, entry: &crate::tree::Entry, report: &mut Report) {
    if !matches!(entry.kind, Kind::Dir | Kind::Symlink(_)) && entry.mode & 0o6000 != 0 {
        let which = if entry.mode & 0o4000 != 0 {
            "setuid"
        } else {
            "setgid"
        };
        report.add(
            Severity::Warning,
            node_path,
            format!(
                "{which} (mode {:04o}): it runs with its owner's rights",
                entry.mode
            ),
        );
    }
    if !matches!(entry.kind, Kind::Symlink(_)) && entry.mode & 0o002 != 0 {
        let sticky_dir = matches!(entry.kind, Kind::Dir) && entry.mode & 0o1000 != 0;
        if !sticky_dir {
            report.add(
                Severity::Warning,
                node_path,
                format!("world-writable (mode {:04o})", entry.mode),
            );
        }
    }
}

/// One ELF file: its machine, its interpreter and its `DT_NEEDED` libraries, found
/// in the tree through `RUNPATH`/`RPATH` and the tree's library folders `dirs`.
fn check_elf(
    tree: &Tree,
    path: &TreePath,
    e: &elf::Elf,
    arch: Arch,
    dirs: &[String],
    report: &mut Report,
) {
    let node_path = format!("/{}", path.as_str());
    let want = machine_of(arch);
    if e.class != 64 || e.machine != want {
        report.add(
            Severity::Error,
            &node_path,
            format!(
                "built for {} ({}-bit), but the image is {} ({})",
                elf::machine_name(e.machine),
                e.class,
                arch.as_str(),
                elf::machine_name(want)
            ),
        );
        return;
    }
    if let Some(interp) = &e.interpreter {
        if let Err(why) = resolve(tree, interp) {
            report.add(
                Severity::Error,
                &node_path,
                format!(
                    "its ELF interpreter {} is not in the tree: {why}",
                    shown(interp)
                ),
            );
        }
    }
    let origin = path
        .parent()
        .map(|p| format!("/{}", p.as_str()))
        .unwrap_or_else(|| "/".into());
    let search: Vec<String> = e
        .search
        .iter()
        .map(|d| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin))
        .chain(dirs.iter().cloned())
        .collect();
    let mut missing = BTreeSet::new();
    for lib in &e.needed {
        let found = if lib.contains('/') {
            resolve(tree, lib).is_ok()
        } else {
            search
                .iter()
                .any(|d| resolve(tree, &format!("{d}/{lib}")).is_ok())
        };
        if !found {
            missing.insert(lib.clone());
        }
    }
    for lib in missing {
        report.add(
            Severity::Error,
            &node_path,
            format!(
                "needs {}, which is not in the tree (searched {})",
                shown(&lib),
                search.join(", ")
            ),
        );
    }
}

/// A system tree loaded for [`check`]; its files may point into a private work
/// folder, which lives as long as this.
pub struct Loaded {
    pub tree: Tree,
    _work: crate::work::WorkFolder,
}

/// Loads the system tree `spec` as the command line names it: a folder, an OCI
/// image layout `oci:DIR[:TAG]`, or a registry image `REGISTRY/REPOSITORY[:TAG][@DIGEST]`
/// (pulled into the blob cache with `registry`'s options, as a build would).
///
/// A spec that names an existing path is always a folder. Anything else is a registry
/// reference only if its first component is a registry host (it has a `.` or a `:`, or
/// is `localhost`): a mistyped folder name must not become a pull from Docker Hub.
pub fn load(
    spec: &str,
    arch: Arch,
    registry: &crate::oci::registry::RegistryOptions,
    progress: &crate::progress::Progress,
) -> Result<Loaded, SystemLoadError> {
    use crate::profile::{Origin, Source, Sourced};
    let io = |source| crate::inputs::InputError::Io {
        path: std::env::temp_dir(),
        source,
    };
    let work = crate::work::WorkFolder::new().map_err(io)?;
    let mut dir = crate::inputs::WorkDir::new(work.path().to_path_buf());
    let value = match spec.strip_prefix("oci:") {
        Some(rest) => {
            let (dir, tag) = crate::profile::split_oci(rest);
            Source::OciLayout {
                dir: dir.into(),
                tag,
            }
        }
        None if std::path::Path::new(spec).symlink_metadata().is_ok() => Source::Path(spec.into()),
        None if names_a_registry(spec) => {
            let reference = crate::oci::reference::ImageRef::parse(spec)
                .map_err(|e| SystemLoadError::Reference(Box::new(e)))?;
            if reference.tag_defaulted {
                progress.say(&format!(
                    "warning: {reference} names no tag; `latest` is assumed"
                ));
            }
            let request = crate::oci::registry::Request {
                reference: reference.clone(),
                digest: None,
            };
            let pulled = crate::oci::registry::pull(&[request], arch.as_str(), registry, progress)
                .map_err(|e| SystemLoadError::Pull(Box::new(e)))?;
            for p in pulled {
                progress.say(&format!(
                    "{} -> {} ({})",
                    p.reference, p.image.manifest_digest, p.platform
                ));
                dir.pulled.insert(p.reference, p.image);
            }
            Source::Registry(reference)
        }
        None => return Err(SystemLoadError::NotFound(crate::untrusted::shown(spec))),
    };
    let input = Sourced {
        value,
        origin: Origin {
            file: "the command line".into(),
            line: 0,
            column: 0,
        },
    };
    let tree = crate::inputs::system(&input, arch, &dir, 0)?;
    Ok(Loaded { tree, _work: work })
}

/// True when the first component of `spec` is a registry host, as the distribution
/// reference grammar decides it (`localhost`, or a name with `.` or `:`).
fn names_a_registry(spec: &str) -> bool {
    match spec.split_once('/') {
        Some((host, _)) if host.starts_with('.') => false,
        Some((host, _)) => host == "localhost" || host.contains('.') || host.contains(':'),
        None => false,
    }
}

/// Why [`load`] could not give a tree.
#[derive(Debug, thiserror::Error)]
pub enum SystemLoadError {
    #[error("{0}: no such folder, and not an image reference that names its registry\n  hint: give a folder, oci:DIR[:TAG], or REGISTRY/REPOSITORY:TAG (e.g. registry.example.com/kios/system:1.0)")]
    NotFound(String),
    #[error(transparent)]
    Reference(Box<crate::oci::reference::ReferenceError>),
    #[error(transparent)]
    Pull(Box<crate::oci::registry::RegistryError>),
    #[error(transparent)]
    Input(#[from] crate::inputs::InputError),
}

impl SystemLoadError {
    /// Errors of the command line or the user's inputs (exit 2), as against a
    /// registry or the host failing (exit 1).
    pub fn is_input_error(&self) -> bool {
        match self {
            SystemLoadError::NotFound(_) | SystemLoadError::Reference(_) => true,
            SystemLoadError::Pull(e) => {
                matches!(**e, crate::oci::registry::RegistryError::Offline { .. })
            }
            SystemLoadError::Input(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TreePath {
        TreePath::parse(s).unwrap()
    }

    #[test]
    fn paths_resolve_inside_the_tree_through_links_and_never_out_of_it() {
        let mut t = Tree::new(0);
        t.add_file("usr/lib/x86_64-linux-gnu/libc.so.6", "x", 0o755)
            .unwrap();
        t.mkdir_p(&p("lib"), 0o755).unwrap();
        t.insert(p("lib64"), Entry::symlink("usr/lib/x86_64-linux-gnu"))
            .unwrap();
        t.insert(
            p("lib/abs"),
            Entry::symlink("/usr/lib/x86_64-linux-gnu/libc.so.6"),
        )
        .unwrap();
        t.insert(p("lib/up"), Entry::symlink("../../../../../usr/lib"))
            .unwrap();
        t.insert(p("lib/loop"), Entry::symlink("loop")).unwrap();
        assert_eq!(
            resolve(&t, "/lib64/libc.so.6").unwrap().0,
            p("usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(
            resolve(&t, "/lib/abs").unwrap().0,
            p("usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        // `..` past the root stays at the root: /usr/lib of the tree.
        assert_eq!(resolve(&t, "/lib/up").unwrap().0, p("usr/lib"));
        assert!(resolve(&t, "/lib/loop")
            .unwrap_err()
            .contains("too many levels"));
        assert!(resolve(&t, "/etc/shadow").is_err());
    }

    #[test]
    fn only_a_spec_whose_first_component_is_a_host_is_a_registry_reference() {
        assert!(names_a_registry("127.0.0.1:5000/kios/system:1"));
        assert!(names_a_registry("registry.example.com/kios/system"));
        assert!(names_a_registry("localhost/system"));
        assert!(!names_a_registry("system"));
        assert!(!names_a_registry("kios/system"));
        assert!(!names_a_registry("build/system.d"));
        assert!(!names_a_registry("./system"));
        assert!(!names_a_registry("../x/system"));
        assert!(!names_a_registry("/srv/system"));
    }

    #[test]
    fn an_empty_tree_lacks_every_program_kios_init_starts() {
        let r = check(&Tree::new(0), Arch::Amd64);
        assert_eq!(r.errors(), REQUIRED.len(), "{r}");
        assert!(r.to_string().contains("CRI-O is missing"), "{r}");
    }
}
