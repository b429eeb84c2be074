//! Kernel modules for the initramfs: from the names a profile lists to the module
//! files in the tree and the order kios-init loads them in.
//!
//! Input: a directory holding `lib/modules/<version>/` as depmod left it (the kernel
//! input), and names as a user writes them (`virtio-blk` and `virtio_blk` are the
//! same module; an alias such as `crypto-crc32c` or `fs-ext4` works too). Output: a
//! [`ModuleSet`]: the module files, dependencies first, and the names found to be
//! built into the kernel (nothing to load).
//!
//! What is read, all text files written by depmod (see depmod(8), modules.dep(5)):
//! - `modules.dep`: `path: dep-path dep-path ...`, each line listing every module
//!   the first one needs, directly or not. depmod lists them so that reading the
//!   list backwards gives a loading order; kmod's modprobe does exactly that, and so
//!   do we, while still visiting each dependency's own line first, so that a
//!   hand-made file in any order gives a correct order and a cycle is an error
//!   rather than an endless loop.
//! - `modules.builtin` and `modules.builtin.modinfo` (when present): modules and
//!   aliases built into the kernel image.
//! - `modules.alias`: `alias <glob pattern> <module>`.
//! - `modules.softdep`: `softdep <module> pre: <names> post: <names>`, the soft
//!   dependencies a module declares (ext4 and jbd2 want `crypto-crc32c`). modprobe
//!   loads them around the module; there is no modprobe at boot (kios-init loads
//!   modules itself and the kernel's `request_module` has no helper to call), so we
//!   include them as modprobe would. A soft dependency that matches nothing is
//!   skipped, as modprobe does, and listed in [`ModuleSet::missing_softdeps`].
//!
//! Compressed modules (`.ko.gz`, `.ko.zst`) are decompressed at build time and put
//! in the tree as plain `.ko` files, so kios-init's `finit_module` works whatever
//! the kernel's `CONFIG_MODULE_DECOMPRESS`; `.ko.xz` is refused (not supported yet).
//!
//! What this does not do: it reads no modprobe configuration (`/etc/modprobe.d`:
//! options, blacklists, install commands), no `modules.symbols` (`symbol:` names),
//! and it writes no `modules.dep`/`.bin` indexes into the image: nothing at boot
//! runs modprobe.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::depmod::{
    edit_distance, glob_match, normalize, parse_aliases, parse_builtin, parse_builtin_aliases,
    parse_modules_dep, parse_softdeps, Module, SoftDeps,
};
use crate::tree::{Content, Entry, Tree, TreeError, TreePath};

/// An error while finding or adding kernel modules.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot list {dir}: the kernel input must hold lib/modules/<version>/")]
    NoModulesDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("expected exactly one kernel version in {dir}, found {}: [{}]", found.len(), found.join(", "))]
    VersionCount { dir: PathBuf, found: Vec<String> },
    #[error("{path} is missing: run `depmod -b <root> <version>` on the kernel input first")]
    NoModulesDep { path: PathBuf },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{file}:{line}: {why}")]
    BadLine {
        file: PathBuf,
        line: usize,
        why: String,
    },
    #[error("module {name:?} is not in kernel {version} (neither in modules.dep nor built in, nor an alias){}", did_you_mean(suggestion))]
    NotFound {
        name: String,
        version: String,
        suggestion: Option<String>,
    },
    #[error("kernel {version}: modules.dep has a dependency cycle: {}", cycle.join(" -> "))]
    Cycle { version: String, cycle: Vec<String> },
    #[error("{path}: .ko.{format} modules are not supported yet (only .ko, .ko.gz and .ko.zst); rebuild the kernel package with another module compression")]
    UnsupportedCompression { path: PathBuf, format: &'static str },
    #[error("cannot decompress {path}")]
    Decompress {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} decompresses to more than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(transparent)]
    Tree(#[from] TreeError),
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean {s:?}?"),
        None => String::new(),
    }
}

/// How a module file is stored in the kernel input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleCompression {
    None,
    Gzip,
    Zstd,
}

/// One module file to put in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// The module's name as the kernel knows it (`-` written as `_`).
    pub name: String,
    /// Its path in the image, relative to `lib/modules/<version>/`, always `.ko`.
    pub rel_path: String,
    /// The file in the kernel input, maybe compressed.
    pub host_path: PathBuf,
    pub compression: ModuleCompression,
}

/// The result of [`KernelModules::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSet {
    pub version: String,
    /// Dependencies before the modules that need them; each module once.
    pub load_order: Vec<ModuleFile>,
    /// Names found to be built into the kernel: nothing to load.
    pub builtin: Vec<String>,
    /// Soft dependencies that matched nothing: `(module, wanted name)`.
    pub missing_softdeps: Vec<(String, String)>,
}

/// The largest a decompressed module may be (the largest in Debian's kernel,
/// amdgpu, is about 15 MiB).
const MAX_MODULE_SIZE: u64 = 512 << 20;
/// The largest index file read (`modules.alias` of a distribution kernel is about
/// 1.5 MiB).
const MAX_INDEX_SIZE: u64 = 64 << 20;
/// Deeper dependency chains than this are not a real kernel.
const MAX_DEPTH: usize = 256;

/// The module index of one kernel version.
#[derive(Debug)]
pub struct KernelModules {
    pub version: String,
    /// The kernel folder: no module is taken from outside it.
    root: PathBuf,
    /// `<root>/lib/modules/<version>`.
    dir: PathBuf,
    modules: BTreeMap<String, Module>,
    builtin: BTreeSet<String>,
    /// `(normalised pattern, module)` in file order: modules.alias, then the
    /// built-in aliases.
    aliases: Vec<(String, String)>,
    softdeps: HashMap<String, SoftDeps>,
}

impl KernelModules {
    /// Reads the index of the single kernel version under `root/lib/modules/`.
    pub fn open(root: &Path) -> Result<Self, ModuleError> {
        let base = root.join("lib/modules");
        let listing = fs::read_dir(&base).map_err(|source| ModuleError::NoModulesDir {
            dir: base.clone(),
            source,
        })?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ModuleError::Io { path, source }
        };
        let mut found = Vec::new();
        for entry in listing {
            let entry = entry.map_err(io_err(&base))?;
            if entry.path().is_dir() {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        found.sort();
        let [version] =
            <[String; 1]>::try_from(found).map_err(|found| ModuleError::VersionCount {
                dir: base.clone(),
                found,
            })?;
        // Everything is read inside the kernel folder (symlinks leading out of it are
        // refused, see `inputs::inside_root`), and from regular files of bounded size.
        let dir = crate::inputs::inside_root(root, &base.join(&version))
            .map_err(io_err(&base.join(&version)))?;
        let read = |name: &str, required: bool| -> Result<Option<Vec<u8>>, ModuleError> {
            let path = dir.join(name);
            let read = crate::inputs::inside_root(root, &path)
                .and_then(|p| crate::untrusted::read_regular(&p, MAX_INDEX_SIZE));
            match read {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && required => {
                    Err(ModuleError::NoModulesDep { path })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(ModuleError::Io { path, source }),
            }
        };
        let text = |bytes: Option<Vec<u8>>| {
            String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
        };
        let modules =
            parse_modules_dep(&text(read("modules.dep", true)?), &version).map_err(|e| {
                ModuleError::BadLine {
                    file: dir.join("modules.dep"),
                    line: e.line,
                    why: e.why,
                }
            })?;
        let builtin = parse_builtin(&text(read("modules.builtin", false)?));
        let mut aliases = parse_aliases(&text(read("modules.alias", false)?));
        aliases.extend(parse_builtin_aliases(
            &read("modules.builtin.modinfo", false)?.unwrap_or_default(),
        ));
        let softdeps = parse_softdeps(&text(read("modules.softdep", false)?));
        Ok(KernelModules {
            version,
            root: root.to_path_buf(),
            dir,
            modules,
            builtin,
            aliases,
            softdeps,
        })
    }

    /// Resolves `names` to the module files to include, dependencies first, in a
    /// deterministic order: the order of `names`, and for each one the order
    /// modprobe would load it in.
    pub fn resolve(&self, names: &[String]) -> Result<ModuleSet, ModuleError> {
        let mut r = Resolver {
            km: self,
            done: BTreeSet::new(),
            stack: Vec::new(),
            order: Vec::new(),
            builtin: Vec::new(),
            missing_softdeps: Vec::new(),
        };
        for name in names {
            let found = self.lookup(name);
            if found.is_empty() {
                return Err(ModuleError::NotFound {
                    name: name.clone(),
                    version: self.version.clone(),
                    suggestion: self.closest(&normalize(name)),
                });
            }
            for module in found {
                r.visit(&module, false)?;
            }
        }
        let load_order = r
            .order
            .iter()
            .map(|name| self.module_file(name))
            .collect::<Result<_, _>>()?;
        Ok(ModuleSet {
            version: self.version.clone(),
            load_order,
            builtin: r.builtin,
            missing_softdeps: r.missing_softdeps,
        })
    }

    /// The modules (loadable or built in) that `name` stands for: itself, or what
    /// its alias matches, in modules.alias order.
    fn lookup(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        if self.modules.contains_key(&n) || self.builtin.contains(&n) {
            return vec![n];
        }
        let mut found: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            let known = self.modules.contains_key(module) || self.builtin.contains(module);
            if known && !found.contains(module) && glob_match(pattern.as_bytes(), n.as_bytes()) {
                found.push(module.clone());
            }
        }
        found
    }

    /// The known module name closest to `name`, if one is close enough to be a typo.
    fn closest(&self, name: &str) -> Option<String> {
        let limit = (name.chars().count() / 3).max(1);
        let mut best: Option<(usize, &String)> = None;
        for candidate in self.modules.keys().chain(self.builtin.iter()) {
            let d = edit_distance(name, candidate);
            let better = match best {
                None => true,
                Some((bd, bc)) => (d, candidate) < (bd, bc),
            };
            if d <= limit && better {
                best = Some((d, candidate));
            }
        }
        best.map(|(_, c)| c.clone())
    }

    fn module_file(&self, name: &str) -> Result<ModuleFile, ModuleError> {
        let path = &self.modules[name].path;
        let host_path = self.dir.join(path);
        // A module linked to a file outside the kernel folder would copy that file
        // into the initramfs; one linked inside is taken from where the link leads.
        let host_path = crate::inputs::inside_root(&self.root, &host_path).map_err(|source| {
            ModuleError::Io {
                path: host_path,
                source,
            }
        })?;
        let (stem, compression) = if let Some(s) = path.strip_suffix(".ko") {
            (s, ModuleCompression::None)
        } else if let Some(s) = path.strip_suffix(".ko.gz") {
            (s, ModuleCompression::Gzip)
        } else if let Some(s) = path.strip_suffix(".ko.zst") {
            (s, ModuleCompression::Zstd)
        } else {
            let format = if path.ends_with(".ko.xz") {
                "xz"
            } else {
                "unknown"
            };
            return Err(ModuleError::UnsupportedCompression {
                path: host_path,
                format,
            });
        };
        Ok(ModuleFile {
            name: name.to_string(),
            rel_path: format!("{stem}.ko"),
            host_path,
            compression,
        })
    }
}

/// Depth-first walk in modprobe's order (kmod, `__kmod_module_get_probe_list`):
/// a module's dependencies (modules.dep line read backwards), then its `pre:` soft
/// dependencies, the module, its `post:` soft dependencies.
struct Resolver<'a> {
    km: &'a KernelModules,
    done: BTreeSet<String>,
    /// The modules being visited, outermost first: a hard dependency on one of them
    /// is a cycle; a soft one is skipped, as modprobe does.
    stack: Vec<String>,
    order: Vec<String>,
    builtin: Vec<String>,
    missing_softdeps: Vec<(String, String)>,
}

impl Resolver<'_> {
    fn visit(&mut self, name: &str, soft: bool) -> Result<(), ModuleError> {
        if self.done.contains(name) {
            return Ok(());
        }
        if let Some(at) = self.stack.iter().position(|s| s == name) {
            if soft {
                return Ok(());
            }
            let mut cycle = self.stack[at..].to_vec();
            cycle.push(name.to_string());
            return Err(ModuleError::Cycle {
                version: self.km.version.clone(),
                cycle,
            });
        }
        if self.stack.len() > MAX_DEPTH {
            let mut cycle = self.stack.clone();
            cycle.push(format!("{name} (deeper than {MAX_DEPTH})"));
            return Err(ModuleError::Cycle {
                version: self.km.version.clone(),
                cycle,
            });
        }
        let Some(module) = self.km.modules.get(name) else {
            // Built in (lookup only returns known names; parse_modules_dep
            // registers every dependency).
            self.done.insert(name.to_string());
            self.builtin.push(name.to_string());
            return Ok(());
        };
        self.stack.push(name.to_string());
        for dep in module.deps.iter().rev() {
            self.visit(dep, false)?;
        }
        let soft = self.km.softdeps.get(name).cloned().unwrap_or_default();
        self.visit_soft(name, &soft.pre)?;
        self.stack.pop();
        self.done.insert(name.to_string());
        self.order.push(name.to_string());
        self.visit_soft(name, &soft.post)
    }

    fn visit_soft(&mut self, module: &str, wanted: &[String]) -> Result<(), ModuleError> {
        for want in wanted {
            let found = self.km.lookup(want);
            if found.is_empty() {
                let miss = (module.to_string(), want.clone());
                if !self.missing_softdeps.contains(&miss) {
                    self.missing_softdeps.push(miss);
                }
            }
            for dep in found {
                self.visit(&dep, true)?;
            }
        }
        Ok(())
    }
}

impl ModuleSet {
    /// Adds the module files under `lib/modules/<version>/` (mode 0644, owner 0:0,
    /// the tree's default mtime; compressed ones decompressed) and returns the text
    /// of `/etc/kios/modules`: one absolute path per line, in load order.
    pub fn add_to_tree(&self, tree: &mut Tree) -> Result<String, ModuleError> {
        let base = TreePath::parse(&format!("lib/modules/{}", self.version))?;
        let mut list = String::new();
        for m in &self.load_order {
            let dest = base.join(&m.rel_path)?;
            let content = match m.compression {
                ModuleCompression::None => {
                    // A regular file only: a FIFO or device would hang or fill the
                    // initramfs.
                    let io_err = |source| ModuleError::Io {
                        path: m.host_path.clone(),
                        source,
                    };
                    let meta = crate::untrusted::open_regular(&m.host_path)
                        .and_then(|f| f.metadata())
                        .map_err(io_err)?;
                    if meta.len() > MAX_MODULE_SIZE {
                        return Err(ModuleError::TooLarge {
                            path: m.host_path.clone(),
                            limit: MAX_MODULE_SIZE,
                        });
                    }
                    Content::Host {
                        path: Arc::new(m.host_path.clone()),
                        offset: 0,
                        len: meta.len(),
                    }
                }
                ModuleCompression::Gzip | ModuleCompression::Zstd => {
                    Content::inline(decompress(&m.host_path, m.compression)?)
                }
            };
            let mut entry = Entry::file(content, 0o644);
            entry.mtime = tree.default_mtime;
            list.push_str(&format!("{dest}\n"));
            tree.insert(dest, entry)?;
        }
        Ok(list)
    }
}

fn decompress(path: &Path, compression: ModuleCompression) -> Result<Vec<u8>, ModuleError> {
    let err = |source| ModuleError::Decompress {
        path: path.to_path_buf(),
        source,
    };
    let file = crate::untrusted::open_regular(path).map_err(|source| ModuleError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader: Box<dyn Read> = match compression {
        ModuleCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        _ => Box::new(zstd::Decoder::new(file).map_err(err)?),
    };
    let mut out = Vec::new();
    reader
        .take(MAX_MODULE_SIZE + 1)
        .read_to_end(&mut out)
        .map_err(err)?;
    if out.len() as u64 > MAX_MODULE_SIZE {
        return Err(ModuleError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_MODULE_SIZE,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERSION: &str = "6.1.0-test";

    /// A kernel input with the given index files; module files are created for
    /// every path in modules.dep.
    fn kernel(files: &[(&str, &str)]) -> (tempfile::TempDir, KernelModules) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lib/modules").join(VERSION);
        fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            fs::write(dir.join(name), text).unwrap();
            if *name == "modules.dep" {
                for word in text.split_whitespace() {
                    let path = dir.join(word.trim_end_matches(':'));
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    fs::write(&path, format!("module {word}")).unwrap();
                }
            }
        }
        let km = KernelModules::open(root.path()).unwrap();
        (root, km)
    }

    fn names(set: &ModuleSet) -> Vec<&str> {
        set.load_order.iter().map(|m| m.name.as_str()).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/crypto/crc32c_generic.ko:
";

    #[test]
    fn dependencies_come_first_in_modprobe_order_and_once() {
        let (_d, km) = kernel(&[("modules.dep", DEP)]);
        let set = km
            .resolve(&strings(&["virtio_blk", "ext4", "virtio"]))
            .unwrap();
        assert_eq!(
            names(&set),
            [
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4"
            ]
        );
        assert_eq!(
            set.load_order[2].rel_path,
            "kernel/drivers/block/virtio_blk.ko"
        );
    }

    #[test]
    fn a_dependency_order_that_is_not_topological_is_still_loaded_correctly() {
        // virtio_blk's line lists virtio_ring last: read backwards it would come
        // first anyway, so list it first to make the backwards order wrong.
        let dep = "a.ko: c.ko b.ko\nb.ko: c.ko\nc.ko:\n";
        let (_d, km) = kernel(&[("modules.dep", dep)]);
        // Backwards: b then c, but b needs c.
        assert_eq!(
            names(&km.resolve(&strings(&["a"])).unwrap()),
            ["c", "b", "a"]
        );
    }

    #[test]
    fn a_cycle_is_an_error_not_a_hang() {
        let dep = "a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n";
        let (_d, km) = kernel(&[("modules.dep", dep)]);
        let err = km.resolve(&strings(&["a"])).unwrap_err();
        assert!(
            matches!(&err, ModuleError::Cycle { cycle, .. } if cycle == &["a", "b", "c", "a"]),
            "{err}"
        );
    }

    #[test]
    fn dashes_and_underscores_are_the_same_name() {
        let (_d, km) = kernel(&[("modules.dep", DEP)]);
        let set = km
            .resolve(&strings(&["virtio-blk", "crc32c_intel"]))
            .unwrap();
        assert_eq!(
            names(&set),
            ["virtio_ring", "virtio", "virtio_blk", "crc32c_intel"]
        );
        assert_eq!(
            set.load_order[3].rel_path,
            "kernel/arch/x86/crypto/crc32c-intel.ko"
        );
    }

    #[test]
    fn an_unknown_name_suggests_the_closest_module() {
        let (_d, km) = kernel(&[("modules.dep", DEP)]);
        let err = km.resolve(&strings(&["virtio_blkk"])).unwrap_err();
        assert!(
            matches!(&err, ModuleError::NotFound { suggestion: Some(s), version, .. }
                if s == "virtio_blk" && version == VERSION),
            "{err}"
        );
        assert!(
            err.to_string().contains("did you mean \"virtio_blk\""),
            "{err}"
        );
        let err = km.resolve(&strings(&["nvidia"])).unwrap_err();
        assert!(
            matches!(
                err,
                ModuleError::NotFound {
                    suggestion: None,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn builtin_modules_and_aliases_load_nothing() {
        let builtin = "kernel/fs/unix/unix.ko\nkernel/fs/debugfs/debugfs.ko\n";
        let (dir, _) = kernel(&[("modules.dep", DEP), ("modules.builtin", builtin)]);
        let vdir = dir.path().join("lib/modules").join(VERSION);
        fs::write(
            vdir.join("modules.builtin.modinfo"),
            b"debugfs.alias=fs-debugfs\0",
        )
        .unwrap();
        let km = KernelModules::open(dir.path()).unwrap();
        let set = km.resolve(&strings(&["unix", "fs-debugfs"])).unwrap();
        assert!(set.load_order.is_empty());
        assert_eq!(set.builtin, ["unix", "debugfs"]);
    }

    #[test]
    fn soft_dependencies_resolve_through_aliases_like_modprobe() {
        let alias = "\
alias crypto-crc32c crc32c_intel
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
alias crypto-crc32c crc32c_generic
alias fs-ext4 ext4
";
        let softdep = "\
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c post: crypto-missing
softdep mbcache crc16
";
        let (_d, km) = kernel(&[
            ("modules.dep", DEP),
            ("modules.alias", alias),
            ("modules.softdep", softdep),
        ]);
        let set = km.resolve(&strings(&["fs-ext4"])).unwrap();
        assert_eq!(
            names(&set),
            [
                "crc32c_intel",
                "crc32c_generic",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4"
            ]
        );
        assert_eq!(
            set.missing_softdeps,
            [("jbd2".to_string(), "crypto-missing".to_string())]
        );
    }

    #[test]
    fn soft_dependency_cycles_are_skipped() {
        let softdep = "softdep a pre: b\nsoftdep b pre: a\n";
        let (_d, km) = kernel(&[
            ("modules.dep", "a.ko:\nb.ko:\n"),
            ("modules.softdep", softdep),
        ]);
        assert_eq!(names(&km.resolve(&strings(&["a"])).unwrap()), ["b", "a"]);
    }

    #[test]
    fn one_kernel_version_is_required() {
        let root = tempfile::tempdir().unwrap();
        let err = KernelModules::open(root.path()).unwrap_err();
        assert!(matches!(err, ModuleError::NoModulesDir { .. }), "{err}");
        for v in ["6.1.0-a", "6.12.0-b"] {
            fs::create_dir_all(root.path().join("lib/modules").join(v)).unwrap();
        }
        let err = KernelModules::open(root.path()).unwrap_err().to_string();
        assert!(err.contains("found 2: [6.1.0-a, 6.12.0-b]"), "{err}");
    }

    #[test]
    fn a_module_path_may_not_leave_the_module_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lib/modules").join(VERSION);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("modules.dep"),
            "kernel/a.ko: ../../../../etc/shadow.ko\n",
        )
        .unwrap();
        let err = KernelModules::open(root.path()).unwrap_err();
        assert!(matches!(err, ModuleError::BadLine { line: 1, .. }), "{err}");
    }

    #[test]
    fn compressed_modules_become_plain_ko_files_and_xz_is_refused() {
        let dep = "kernel/a.ko.zst:\nkernel/b.ko.gz: kernel/a.ko.zst\nkernel/c.ko.xz:\n";
        let (dir, km) = kernel(&[("modules.dep", dep)]);
        let vdir = dir.path().join("lib/modules").join(VERSION);
        fs::write(
            vdir.join("kernel/a.ko.zst"),
            zstd::encode_all(&b"AAAA"[..], 3).unwrap(),
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, b"BBBB").unwrap();
        fs::write(vdir.join("kernel/b.ko.gz"), gz.finish().unwrap()).unwrap();

        let set = km.resolve(&strings(&["b"])).unwrap();
        let mut tree = Tree::new(42);
        let list = set.add_to_tree(&mut tree).unwrap();
        assert_eq!(
            list,
            format!("/lib/modules/{VERSION}/kernel/a.ko\n/lib/modules/{VERSION}/kernel/b.ko\n")
        );
        let a = tree.get(&TreePath::parse(&format!("lib/modules/{VERSION}/kernel/a.ko")).unwrap());
        let a = a.unwrap();
        assert_eq!((a.mode, a.uid, a.gid, a.mtime), (0o644, 0, 0, 42));
        match &a.kind {
            crate::tree::Kind::File(c) => assert_eq!(c.read_all().unwrap(), b"AAAA"),
            other => panic!("{other:?}"),
        }

        let err = km.resolve(&strings(&["c"])).unwrap_err();
        assert!(
            err.to_string()
                .contains(".ko.xz modules are not supported yet"),
            "{err}"
        );
    }
}
