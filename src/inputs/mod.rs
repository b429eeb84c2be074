//! Inputs: what the profile names -> files and trees the assembly stages consume.
//!
//! An input is a local path, a local OCI image layout (`oci:DIR[:TAG]`), or a
//! registry reference, pulled beforehand by [`crate::plan`] into the cache and
//! handed over in [`WorkDir::pulled`]. For each kind of input this module returns what the next stages need:
//! - the kernel: the `vmlinuz` file and the `lib/modules/<version>` folder (an OCI
//!   kernel image's files are written to the build's work folder: they are plain,
//!   root-owned files, so nothing is lost and no privilege is needed);
//! - the UEFI stub: its bytes (it is small);
//! - the system tree: a [`Tree`] (owners, modes and xattrs of an image kept as they
//!   are; a local folder is taken as root-owned).
//!
//! It does not pull, cache or pin anything itself.

mod init;
pub use init::{check_kios_init, find_init, kios_init};

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::oci;
use crate::oci::reference::ImageRef;
use crate::profile::{Arch, FileInput, Input, Source};
use crate::tree::{Content, Kind, Tree, TreePath};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{origin}: {what}: {message}")]
    Bad {
        origin: String,
        what: String,
        message: String,
    },
    #[error("{origin}: {what}: cannot read {reference}")]
    Oci {
        origin: String,
        what: String,
        reference: String,
        #[source]
        source: Box<oci::OciError>,
    },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tree(#[from] crate::tree::TreeError),
    /// kios-init missing, unreadable or not a static binary for the architecture.
    #[error("{0}")]
    Init(String),
}

impl InputError {
    pub(crate) fn bad(input: &Input, what: &str, message: impl Into<String>) -> Self {
        InputError::Bad {
            origin: input.origin.to_string(),
            what: what.to_string(),
            message: message.into(),
        }
    }
}

/// The kernel, ready for the initramfs and the UKI.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    pub vmlinuz: PathBuf,
    /// The folder that holds `lib/modules/<version>/`.
    pub root: PathBuf,
    /// `<version>`.
    pub version: String,
    /// The kernel's `.config`, when the input has one (`boot/config`).
    pub config: Option<PathBuf>,
}

/// Where the build may write temporary files: spooled layers, files taken out of
/// images; and the registry images the plan pulled (`crate::plan`).
pub struct WorkDir {
    pub path: PathBuf,
    pub pulled: BTreeMap<ImageRef, oci::LayoutImage>,
}

impl WorkDir {
    pub fn new(path: PathBuf) -> WorkDir {
        WorkDir {
            path,
            pulled: BTreeMap::new(),
        }
    }

    /// Where the store's layers are spooled while they are read.
    pub fn store_spool(&self) -> PathBuf {
        self.path.join("store-spool")
    }

    /// The store partition's filesystem image.
    pub fn store_image(&self) -> PathBuf {
        self.path.join("store.erofs")
    }

    /// The store's dm-verity hash tree.
    pub fn store_verity(&self) -> PathBuf {
        self.path.join("store.verity")
    }

    /// The compressed initramfs.
    pub fn initrd(&self) -> PathBuf {
        self.path.join("initrd.img")
    }

    /// The unified kernel image.
    pub fn uki(&self) -> PathBuf {
        self.path.join("uki.efi")
    }

    fn sub(&self, name: &str) -> Result<PathBuf, InputError> {
        let p = self.path.join(name);
        fs::create_dir_all(&p).map_err(|source| InputError::Io {
            path: p.clone(),
            source,
        })?;
        Ok(p)
    }
}

/// `path`, a file or folder of the input folder `root`, with every symlink on the way
/// resolved, so that what is read later is what was checked; an error when they lead
/// out of `root` (or when it does not exist). An input folder is a tree of its own: a
/// module or kernel image linked to a file elsewhere on the host (`/etc/shadow`, a
/// device) must not be copied into the image. Links that stay inside are fine.
pub fn inside_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let root = fs::canonicalize(root)?;
    let real = fs::canonicalize(path)?;
    if real.starts_with(&root) {
        return Ok(real);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "it leads outside {} (to {}) through a symlink; an input folder's files must be inside it: copy the file in instead of linking to it",
            root.display(),
            real.display()
        ),
    ))
}

/// The uncompressed bytes all layers of a kernel, stub or system image may come to
/// (the system tree goes into the initramfs: real ones are tens of MiB); a
/// decompression bomb fails at this bound, while it is spooled.
const MAX_INPUT_IMAGE: u64 = 4 << 30;

fn input_image_limits() -> oci::Limits {
    oci::Limits {
        max_total: MAX_INPUT_IMAGE,
        ..oci::Limits::default()
    }
}

/// Reads an image input (OCI layout) into a tree.
fn image_tree(input: &Input, what: &str, arch: Arch, work: &WorkDir) -> Result<Tree, InputError> {
    match &input.value {
        Source::OciLayout { dir, tag } => {
            let reference = input.value.to_string();
            let wrap = |source| InputError::Oci {
                origin: input.origin.to_string(),
                what: what.to_string(),
                reference: reference.clone(),
                source: Box::new(source),
            };
            let image =
                oci::layout::open_layout(dir, tag.as_deref(), arch.as_str()).map_err(wrap)?;
            let spool = work.sub("spool")?;
            let mut tree = Tree::new(0);
            oci::layer::apply_layers(&image, &spool, &input_image_limits(), &mut tree)
                .map_err(wrap)?;
            Ok(tree)
        }
        Source::Registry(r) => {
            let wrap = |source| InputError::Oci {
                origin: input.origin.to_string(),
                what: what.to_string(),
                reference: r.to_string(),
                source: Box::new(source),
            };
            let image = work.pulled.get(r).ok_or_else(|| {
                InputError::bad(input, what, format!("{r} was not pulled (no plan)"))
            })?;
            let spool = work.sub("spool")?;
            let mut tree = Tree::new(0);
            oci::layer::apply_layers(image, &spool, &input_image_limits(), &mut tree)
                .map_err(wrap)?;
            Ok(tree)
        }
        Source::Path(_) => unreachable_path(input, what),
    }
}

fn unreachable_path<T>(input: &Input, what: &str) -> Result<T, InputError> {
    Err(InputError::bad(
        input,
        what,
        "expected an image, found a path",
    ))
}

/// Finds the kernel: `boot/vmlinuz` and exactly one `lib/modules/<version>`.
pub fn kernel(input: &Input, arch: Arch, work: &WorkDir) -> Result<KernelFiles, InputError> {
    let root = match &input.value {
        Source::Path(p) => p.clone(),
        _ => {
            let tree = image_tree(input, "kernel", arch, work)?;
            let dest = work.sub("kernel")?;
            for sub in ["boot", "lib/modules"] {
                materialize(&tree, &TreePath::parse(sub)?, &dest)?;
            }
            dest
        }
    };
    if !root.is_dir() {
        return Err(InputError::bad(
            input,
            "kernel",
            format!(
                "{} is not a folder holding boot/vmlinuz and lib/modules/<version>",
                root.display()
            ),
        ));
    }
    // Every file taken from the folder is taken inside it (see `inside_root`).
    let inside =
        |p: PathBuf| inside_root(&root, &p).map_err(|source| InputError::Io { path: p, source });
    let vmlinuz = ["boot/vmlinuz", "boot/bzImage", "boot/Image", "vmlinuz"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.symlink_metadata().is_ok())
        .ok_or_else(|| {
            InputError::bad(
                input,
                "kernel",
                format!("no boot/vmlinuz in {}", root.display()),
            )
        })?;
    let vmlinuz = inside(vmlinuz)?;
    match fs::metadata(&vmlinuz) {
        Ok(m) if m.is_file() && m.len() <= MAX_KERNEL_IMAGE => {}
        _ => {
            return Err(InputError::bad(
                input,
                "kernel",
                format!(
                    "{} is not a regular file of at most {} MiB: give the kernel image",
                    vmlinuz.display(),
                    MAX_KERNEL_IMAGE >> 20
                ),
            ))
        }
    }
    let mods = inside(root.join("lib/modules")).map_err(|_| {
        InputError::bad(
            input,
            "kernel",
            format!("no lib/modules/<version> folder in {}", root.display()),
        )
    })?;
    let mut versions: Vec<String> = fs::read_dir(&mods)
        .map_err(|_| {
            InputError::bad(
                input,
                "kernel",
                format!("no lib/modules/<version> folder in {}", root.display()),
            )
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    let version = match versions.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(InputError::bad(
                input,
                "kernel",
                format!("{} holds no kernel version folder", mods.display()),
            ))
        }
        many => {
            return Err(InputError::bad(
                input,
                "kernel",
                format!(
                    "{} holds several kernel versions ({}); keep one",
                    mods.display(),
                    many.join(", ")
                ),
            ))
        }
    };
    inside(mods.join(&version))?;
    let vmlinuz = decompress_kernel(input, vmlinuz, work)?;
    let config = match root.join("boot/config") {
        p if p.symlink_metadata().is_ok() => Some(inside(p)?).filter(|p| p.is_file()),
        _ => None,
    };
    Ok(KernelFiles {
        vmlinuz,
        root,
        version,
        config,
    })
}

/// The largest kernel image [`decompress_kernel`] writes; real ones are 30-60 MiB.
const MAX_KERNEL_IMAGE: u64 = 512 << 20;

/// The kernel image as the UKI's `.linux` needs it: an EFI-stub PE image. An arm64
/// `vmlinuz` may be a gzip'd `Image` (Documentation/arch/arm64/booting.rst: the boot
/// loader decompresses it; firmware cannot load it as it is): one that starts with the
/// gzip magic (RFC 1952, 2.3.1: 1f 8b) is decompressed into the work folder. Any other
/// file is used as it is (an x86 bzImage or an arm64 Image, Debian's case, are PE
/// images already).
fn decompress_kernel(
    input: &Input,
    vmlinuz: PathBuf,
    work: &WorkDir,
) -> Result<PathBuf, InputError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InputError::Io { path, source }
    };
    let mut f = crate::untrusted::open_regular(&vmlinuz).map_err(io_err(&vmlinuz))?;
    let mut magic = [0u8; 2];
    let n = io::Read::read(&mut f, &mut magic).map_err(io_err(&vmlinuz))?;
    if n < 2 || magic != [0x1f, 0x8b] {
        return Ok(vmlinuz);
    }
    io::Seek::rewind(&mut f).map_err(io_err(&vmlinuz))?;
    let dest = work.sub("kernel-image")?.join("Image");
    let mut out = fs::File::create(&dest).map_err(io_err(&dest))?;
    let mut gz = io::Read::take(
        flate2::read::GzDecoder::new(io::BufReader::new(f)),
        MAX_KERNEL_IMAGE + 1,
    );
    let written = io::copy(&mut gz, &mut out).map_err(|e| {
        InputError::bad(
            input,
            "kernel",
            format!(
                "{} is gzip'd but cannot be decompressed: {e}",
                vmlinuz.display()
            ),
        )
    })?;
    if written > MAX_KERNEL_IMAGE {
        return Err(InputError::bad(
            input,
            "kernel",
            format!(
                "{} decompresses to more than {} MiB: not a kernel image",
                vmlinuz.display(),
                MAX_KERNEL_IMAGE >> 20
            ),
        ));
    }
    Ok(dest)
}

/// The default place of systemd's stub in an image that carries systemd-boot.
pub const DEFAULT_STUB_FILE: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const MAX_STUB: u64 = 16 << 20;

/// Reads the UEFI stub's bytes.
pub fn stub(input: &FileInput, arch: Arch, work: &WorkDir) -> Result<Vec<u8>, InputError> {
    let src = &input.source;
    let content = match &src.value {
        Source::Path(p) => {
            let meta = fs::metadata(p).map_err(|source| InputError::Io {
                path: p.clone(),
                source,
            })?;
            if !meta.is_file() {
                return Err(InputError::bad(
                    src,
                    "boot.stub",
                    format!("{} is not a file", p.display()),
                ));
            }
            Content::Host {
                path: std::sync::Arc::new(p.clone()),
                offset: 0,
                len: meta.len(),
            }
        }
        _ => {
            let tree = image_tree(src, "boot.stub", arch, work)?;
            let file = input.file.as_deref().unwrap_or(DEFAULT_STUB_FILE);
            let path = TreePath::parse(file)?;
            match tree.get(&path).map(|e| &e.kind) {
                Some(Kind::File(c)) => c.clone(),
                _ => {
                    return Err(InputError::bad(
                        src,
                        "boot.stub",
                        format!(
                            "the image has no regular file /{} (set `file:` to the stub's path)",
                            path.as_str()
                        ),
                    ))
                }
            }
        }
    };
    if content.len() > MAX_STUB {
        return Err(InputError::bad(
            src,
            "boot.stub",
            format!("{} bytes is too large for a UEFI stub", content.len()),
        ));
    }
    content.read_all().map_err(|source| InputError::Io {
        path: PathBuf::from(src.value.to_string()),
        source,
    })
}

/// The system tree: a local folder (root-owned) or an image's merged layers.
pub fn system(input: &Input, arch: Arch, work: &WorkDir, mtime: u64) -> Result<Tree, InputError> {
    match &input.value {
        Source::Path(p) => {
            if !p.is_dir() {
                return Err(InputError::bad(
                    input,
                    "system",
                    format!("{} is not a folder", p.display()),
                ));
            }
            let mut tree = Tree::new(mtime);
            tree.add_host_dir(p, &TreePath::root())?;
            Ok(tree)
        }
        _ => image_tree(input, "system", arch, work),
    }
}

/// Writes the regular files, folders and in-tree symlinks below `sub` to `dest/sub`.
/// Only for trees whose metadata does not matter (the kernel's files).
fn materialize(tree: &Tree, sub: &TreePath, dest: &Path) -> Result<(), InputError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InputError::Io { path, source }
    };
    for (path, entry) in tree.iter() {
        if !path.starts_with(sub) || path.is_root() {
            continue;
        }
        // TreePath has no `..` and no leading `/`: the join stays below dest.
        let target = dest.join(path.as_str());
        match &entry.kind {
            Kind::Dir => fs::create_dir_all(&target).map_err(io_err(&target))?,
            Kind::File(c) => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                let mut r = c.open().map_err(io_err(&target))?;
                let mut w = fs::File::create(&target).map_err(io_err(&target))?;
                io::copy(&mut r, &mut w).map_err(io_err(&target))?;
            }
            Kind::Hardlink(to) => {
                if let Some(Kind::File(c)) = tree.get(to).map(|e| &e.kind) {
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent).map_err(io_err(parent))?;
                    }
                    let mut r = c.open().map_err(io_err(&target))?;
                    let mut w = fs::File::create(&target).map_err(io_err(&target))?;
                    io::copy(&mut r, &mut w).map_err(io_err(&target))?;
                }
            }
            // A kernel image's symlinks (vmlinuz -> vmlinuz-6.1...) are resolved
            // inside the tree, never on the host.
            Kind::Symlink(_) => {
                if let Some(Kind::File(c)) = resolve_in_tree(tree, path).map(|e| &e.kind) {
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent).map_err(io_err(parent))?;
                    }
                    let mut r = c.open().map_err(io_err(&target))?;
                    let mut w = fs::File::create(&target).map_err(io_err(&target))?;
                    io::copy(&mut r, &mut w).map_err(io_err(&target))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Follows symlinks inside the tree (at most 16), never leaving it.
fn resolve_in_tree<'a>(tree: &'a Tree, path: &TreePath) -> Option<&'a crate::tree::Entry> {
    let mut cur = path.clone();
    for _ in 0..16 {
        let e = tree.get(&cur)?;
        match &e.kind {
            Kind::Symlink(t) => {
                let base = if t.starts_with('/') {
                    TreePath::root()
                } else {
                    cur.parent().unwrap_or_default()
                };
                cur = resolve_dots(&base, t)?;
            }
            _ => return Some(e),
        }
    }
    None
}

/// `base/rel` with `..` resolved lexically, clamped at the root.
fn resolve_dots(base: &TreePath, rel: &str) -> Option<TreePath> {
    let mut parts: Vec<&str> = base.components().collect();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    TreePath::parse(&parts.join("/")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_dir(vmlinuz: &[u8]) -> (tempfile::TempDir, Input) {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("k/boot")).unwrap();
        fs::create_dir_all(d.path().join("k/lib/modules/6.1.0-test-arm64")).unwrap();
        fs::write(d.path().join("k/boot/vmlinuz"), vmlinuz).unwrap();
        let input = Input {
            value: Source::Path(d.path().join("k")),
            origin: crate::profile::Origin {
                file: "p.yaml".into(),
                line: 4,
                column: 9,
            },
        };
        (d, input)
    }

    #[test]
    fn a_gzipped_kernel_image_is_decompressed_into_the_work_folder() {
        use std::io::Write as _;
        let image = b"MZ\0\0an arm64 Image stand-in".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&image).unwrap();
        let (d, input) = kernel_dir(&gz.finish().unwrap());
        let work = WorkDir::new(d.path().join("work"));
        let k = kernel(&input, Arch::Arm64, &work).unwrap();
        assert!(k.vmlinuz.starts_with(&work.path), "{}", k.vmlinuz.display());
        assert_eq!(fs::read(&k.vmlinuz).unwrap(), image);
        assert_eq!(k.version, "6.1.0-test-arm64");
    }

    #[test]
    fn a_plain_kernel_image_is_used_where_it_is() {
        let (d, input) = kernel_dir(b"MZ plain");
        let work = WorkDir::new(d.path().join("work"));
        let k = kernel(&input, Arch::Arm64, &work).unwrap();
        assert_eq!(k.vmlinuz, d.path().join("k/boot/vmlinuz"));
    }

    #[test]
    fn a_damaged_gzip_kernel_is_an_input_error() {
        let (d, input) = kernel_dir(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff]);
        let work = WorkDir::new(d.path().join("work"));
        let e = kernel(&input, Arch::Arm64, &work).unwrap_err().to_string();
        assert!(e.contains("p.yaml:4:9: kernel:"), "{e}");
        assert!(e.contains("cannot be decompressed"), "{e}");
    }

    #[test]
    fn symlinks_resolve_inside_the_tree_only() {
        let mut t = Tree::new(0);
        t.add_file("boot/vmlinuz-6.1", "k", 0o644).unwrap();
        t.insert(
            TreePath::parse("boot/vmlinuz").unwrap(),
            crate::tree::Entry::symlink("vmlinuz-6.1"),
        )
        .unwrap();
        t.insert(
            TreePath::parse("boot/evil").unwrap(),
            crate::tree::Entry::symlink("../../../../etc/passwd"),
        )
        .unwrap();
        let e = resolve_in_tree(&t, &TreePath::parse("boot/vmlinuz").unwrap()).unwrap();
        assert!(matches!(e.kind, Kind::File(_)));
        // Clamped at the tree's root: /etc/passwd of the tree, which does not exist.
        assert!(resolve_in_tree(&t, &TreePath::parse("boot/evil").unwrap()).is_none());
    }
}
