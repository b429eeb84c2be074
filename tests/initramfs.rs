//! The initramfs as the outside world sees it: archives written by kios-build are
//! listed and extracted by GNU cpio (after `gzip -dc` / `zstd -dc`), and module
//! resolution on Debian's real kernel agrees with kmod's `modprobe --show-depends`.
//!
//! Needs: cpio, gzip, zstd, kmod (apt-get install cpio gzip zstd kmod), root (to
//! extract device nodes and owners), and the kernel input made by
//! `scripts/prepare-inputs` (in `.inputs/` beside Cargo.toml, or `$KIOS_INPUTS`).
//! A missing tool or input fails the test; it never skips.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use kios_build::initramfs::{read_initramfs, write_initramfs, Compression, KernelModules};
use kios_build::tree::{Content, Entry, Kind, Tree, TreePath};

/// Runs `program args` with `stdin`, in `cwd`, and returns its stdout; panics with
/// the package to install when the program is missing.
fn run(program: &str, package: &str, args: &[&str], stdin: &[u8], cwd: &Path) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): install it with `apt-get install {package}`")
        });
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || input.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn path(p: &str) -> TreePath {
    TreePath::parse(p).unwrap()
}

/// A tree with every kind of entry the initramfs needs.
fn sample_tree(host_file: &Path) -> Tree {
    let mut t = Tree::new(1_700_000_000);
    t.add_file("etc/hostname", "edge-7\n", 0o644).unwrap();
    t.add_file("etc/kios/secret", "s3cret", 0o600).unwrap();
    t.get_mut(&path("etc/kios/secret")).unwrap().uid = 1000;
    t.get_mut(&path("etc/kios/secret")).unwrap().gid = 1001;
    t.mkdir_p(&path("var/empty"), 0o700).unwrap();
    let len = fs::metadata(host_file).unwrap().len();
    let mut bin = Entry::file(
        Content::Host {
            path: Arc::new(host_file.to_path_buf()),
            offset: 0,
            len,
        },
        0o755,
    );
    bin.mtime = 1_600_000_000;
    t.insert(path("bin/kios-init"), bin).unwrap();
    t.insert(
        path("bin/init"),
        Entry::new(Kind::Hardlink(path("bin/kios-init")), 0),
    )
    .unwrap();
    t.insert(path("sbin/init"), Entry::symlink("../bin/kios-init"))
        .unwrap();
    t.insert(
        path("dev/null"),
        Entry::new(Kind::CharDevice { major: 1, minor: 3 }, 0o666),
    )
    .unwrap();
    t.insert(path("run/initctl"), Entry::new(Kind::Fifo, 0o600))
        .unwrap();
    t
}

fn check_with_gnu_cpio(compression: Compression, decompress: &[&str], package: &str) {
    assert_eq!(
        effective_uid(),
        0,
        "this test extracts device nodes and owners: run it as root"
    );
    let work = tempfile::tempdir().unwrap();
    let host_file = work.path().join("kios-init");
    // Not a multiple of 4, so padding after the data is exercised.
    fs::write(
        &host_file,
        (0..100_003u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let tree = sample_tree(&host_file);
    let image = write_initramfs(&tree, compression, Vec::new()).unwrap();

    let cpio_bytes = run(
        decompress[0],
        package,
        &decompress[1..],
        &image,
        work.path(),
    );
    let listing = run(
        "cpio",
        "cpio",
        &["-it", "--quiet"],
        &cpio_bytes,
        work.path(),
    );
    let listed: Vec<String> = String::from_utf8(listing)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = tree
        .iter()
        .map(|(p, _)| {
            if p.is_root() {
                ".".into()
            } else {
                p.as_str().into()
            }
        })
        .collect();
    assert_eq!(listed, expected, "GNU cpio lists the tree in order");

    let dest = work.path().join("root");
    fs::create_dir(&dest).unwrap();
    run(
        "cpio",
        "cpio",
        &["-idm", "--quiet", "--no-absolute-filenames"],
        &cpio_bytes,
        &dest,
    );
    let meta = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap();
    assert_eq!(fs::read(dest.join("etc/hostname")).unwrap(), b"edge-7\n");
    assert_eq!(
        fs::read(dest.join("bin/kios-init")).unwrap(),
        fs::read(&host_file).unwrap()
    );
    let secret = meta("etc/kios/secret");
    assert_eq!(
        (secret.mode() & 0o7777, secret.uid(), secret.gid()),
        (0o600, 1000, 1001)
    );
    assert_eq!(meta("var/empty").mode() & 0o7777, 0o700);
    assert!(meta("var/empty").is_dir());
    let bin = meta("bin/kios-init");
    assert_eq!((bin.mode() & 0o7777, bin.mtime()), (0o755, 1_600_000_000));
    assert_eq!(bin.ino(), meta("bin/init").ino(), "bin/init is a hard link");
    assert_eq!(bin.nlink(), 2);
    assert_eq!(
        fs::read_link(dest.join("sbin/init")).unwrap(),
        PathBuf::from("../bin/kios-init")
    );
    let null = meta("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (null.rdev(), null.permissions().mode() & 0o7777),
        (libc_makedev(1, 3), 0o666)
    );
    assert!(meta("run/initctl").file_type().is_fifo());

    // And our reader agrees with what we wrote.
    let entries = read_initramfs(&image[..], 1 << 20).unwrap();
    assert_eq!(entries.len(), tree.len());
}

/// glibc's makedev for small numbers.
fn libc_makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8) | (minor & 0xff)
}

fn effective_uid() -> u32 {
    // `id -u` rather than libc: no extra dependency.
    let out = Command::new("id")
        .arg("-u")
        .output()
        .expect("id(1) from coreutils");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn gnu_cpio_lists_and_extracts_a_gzip_initramfs_exactly() {
    check_with_gnu_cpio(Compression::Gzip, &["gzip", "-dc"], "gzip");
}

#[test]
fn gnu_cpio_lists_and_extracts_a_zstd_initramfs_exactly() {
    check_with_gnu_cpio(Compression::Zstd, &["zstd", "-dcq"], "zstd");
}

#[test]
fn gnu_cpio_archives_are_read_back() {
    // The other direction: an archive made by GNU cpio, read by us.
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/b/f"), "hello").unwrap();
    std::os::unix::fs::symlink("b/f", src.join("a/l")).unwrap();
    fs::hard_link(src.join("a/b/f"), src.join("a/h")).unwrap();
    let names = b".\na\na/b\na/b/f\na/h\na/l\n";
    let archive = run(
        "cpio",
        "cpio",
        &["-o", "-H", "newc", "--quiet"],
        names,
        &src,
    );
    let entries = read_initramfs(&archive[..], 100).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["", "a", "a/b", "a/b/f", "a/h", "a/l"]);
    assert_eq!(entries[5].link_target.as_deref(), Some("b/f"));
    let (f, h) = (&entries[3], &entries[4]);
    assert_eq!((f.ino, f.nlink, h.nlink), (h.ino, 2, 2));
    // GNU cpio, like us, puts the data on the last name.
    assert_eq!((f.size, h.data.as_deref()), (0, Some(&b"hello"[..])));
}

/// The kernel input made by scripts/prepare-inputs.
fn kernel_input() -> PathBuf {
    let inputs = std::env::var_os("KIOS_INPUTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".inputs"));
    let kernel = inputs.join("kernel");
    assert!(
        kernel.join("lib/modules").is_dir(),
        "{} is missing: run scripts/prepare-inputs (or set KIOS_INPUTS to its output)",
        kernel.display()
    );
    kernel
}

#[test]
fn modules_of_the_debian_kernel_resolve_like_modprobe() {
    let root = kernel_input();
    let km = KernelModules::open(&root).unwrap();
    let wanted = ["virtio_blk", "ext4", "vfat", "overlay"];
    let names: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
    let set = km.resolve(&names).unwrap();
    let order: Vec<&str> = set.load_order.iter().map(|m| m.name.as_str()).collect();
    let pos = |n: &str| {
        order
            .iter()
            .position(|m| *m == n)
            .unwrap_or_else(|| panic!("{n} in {order:?}"))
    };
    for (dep, module) in [
        ("virtio_ring", "virtio"),
        ("virtio", "virtio_blk"),
        ("jbd2", "ext4"),
        ("mbcache", "ext4"),
        ("crc16", "ext4"),
        ("crc32c_generic", "ext4"),
        ("fat", "vfat"),
    ] {
        assert!(pos(dep) < pos(module), "{dep} before {module} in {order:?}");
    }

    // kmod's own answer, one name at a time: the same set of files.
    let mut modprobe: BTreeSet<PathBuf> = BTreeSet::new();
    for name in wanted {
        let root_arg = root.to_str().unwrap();
        let out = run(
            "modprobe",
            "kmod",
            &["--show-depends", "-d", root_arg, "-S", &km.version, name],
            b"",
            &root,
        );
        for line in String::from_utf8(out).unwrap().lines() {
            if let Some(path) = line.strip_prefix("insmod ") {
                modprobe.insert(fs::canonicalize(path.trim()).unwrap());
            }
        }
    }
    let ours: BTreeSet<PathBuf> = set
        .load_order
        .iter()
        .map(|m| fs::canonicalize(&m.host_path).unwrap())
        .collect();
    assert_eq!(ours, modprobe);

    // Into a tree and out as an initramfs.
    let mut tree = Tree::new(1_700_000_000);
    let list = set.add_to_tree(&mut tree).unwrap();
    assert_eq!(list.lines().count(), set.load_order.len());
    for line in list.lines() {
        assert!(tree.get(&path(line)).is_some(), "{line} is in the tree");
    }
    for compression in [Compression::Gzip, Compression::Zstd] {
        let start = std::time::Instant::now();
        let image = write_initramfs(&tree, compression, Vec::new()).unwrap();
        let raw: u64 = set
            .load_order
            .iter()
            .map(|m| fs::metadata(&m.host_path).unwrap().len())
            .sum();
        eprintln!(
            "{} modules, {raw} bytes of .ko: {compression} initramfs of {} bytes in {:?}",
            set.load_order.len(),
            image.len(),
            start.elapsed()
        );
        let entries = read_initramfs(&image[..], 0).unwrap();
        assert_eq!(entries.len(), tree.len());
    }
}

#[test]
fn an_unknown_module_names_the_kernel_and_a_suggestion() {
    let km = KernelModules::open(&kernel_input()).unwrap();
    let err = km
        .resolve(&["virtio-blkk".to_string()])
        .unwrap_err()
        .to_string();
    assert!(err.contains(&km.version), "{err}");
    assert!(err.contains("did you mean \"virtio_blk\""), "{err}");
}
