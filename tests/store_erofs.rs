//! The EROFS writer against the real readers: erofs-utils (`fsck.erofs`,
//! `dump.erofs`) and the kernel (a loop mount), as root.
//!
//! One tree holds every kind of thing the store keeps: nested directories, a 3 MB
//! file streamed from a host file, files of 4096 and 0 bytes, a 500-entry directory,
//! a symlink, an overlay whiteout (char device 0:0), a block device, a fifo, a
//! hardlink pair, owners 1000:1001 and 65534, a setuid file, and the xattrs overlay
//! and file capabilities use; and compressible files (text across two 1 MiB
//! segments, zeros, a setuid file with xattrs, a hardlink to one). Each reader's
//! view is compared with the tree entry by entry, for the plain store and for both
//! compressions (`store: {compression: lz4 | lz4hc}`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{require_tool, run, text};
use kios_build::store::erofs::{size_estimate, write_erofs, Compression, ErofsOptions};
use kios_build::tree::{Content, Entry, Kind, Tree, TreePath};
use sha2::{Digest, Sha256};

const EPOCH: u64 = 1_700_000_000;

fn p(s: &str) -> TreePath {
    TreePath::parse(s).unwrap()
}

fn opts() -> ErofsOptions {
    ErofsOptions {
        uuid: *b"kios-store-uuid!",
        volume_name: "KIOS_STORE".into(),
        mtime: EPOCH,
        ..Default::default()
    }
}

/// The store without compression and with each.
const COMPRESSIONS: [Option<Compression>; 4] = [
    None,
    Some(Compression::Lz4),
    Some(Compression::Lz4hc { level: 2 }),
    Some(Compression::Lz4hc { level: 9 }),
];

fn label(c: Option<Compression>) -> String {
    c.map_or("plain".into(), |c| c.name())
}

/// Deterministic text that compresses about 3:1, as binaries and text do.
fn words(len: usize, seed: u32) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "kubelet ",
        "static ",
        "pod ",
        "/usr/lib/",
        "image ",
        "layer\n",
        "0000 ",
        "node ",
        "libc.so.6 ",
        "\x7fELF ",
        "overlay ",
        "runtime ",
    ];
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(WORDS[(x % 12) as usize].as_bytes());
        if x % 7 == 0 {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// Deterministic bytes that are not all the same.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn add(t: &mut Tree, path: &str, kind: Kind, mode: u32, owner: (u32, u32)) -> TreePath {
    let mut e = Entry::new(kind, mode);
    e.uid = owner.0;
    e.gid = owner.1;
    e.mtime = EPOCH - 1000;
    t.insert(p(path), e).unwrap();
    p(path)
}

/// The test tree; host file contents live in `host_dir`.
fn sample_tree(host_dir: &Path) -> Tree {
    let mut t = Tree::new(EPOCH - 5000);
    // A 3 MB file that starts 100 bytes into a host file, as a blob's member does.
    let big = pattern(3 * 1024 * 1024 + 100, 1);
    let host = host_dir.join("big.bin");
    fs::write(&host, &big).unwrap();
    let content = Content::Host {
        path: Arc::new(host),
        offset: 100,
        len: 3 * 1024 * 1024,
    };
    add(
        &mut t,
        "usr/lib/big.bin",
        Kind::File(content),
        0o644,
        (0, 0),
    );
    add(
        &mut t,
        "usr/lib/exact4096",
        Kind::File(Content::inline(pattern(4096, 2))),
        0o600,
        (0, 0),
    );
    add(
        &mut t,
        "usr/lib/empty",
        Kind::File(Content::inline(Vec::new())),
        0o644,
        (0, 0),
    );
    add(
        &mut t,
        "a/b/c/d/deep.txt",
        Kind::File(Content::inline("deep\n")),
        0o640,
        (1000, 1001),
    );
    add(&mut t, "a/b/owned", Kind::Dir, 0o750, (1000, 1001));
    add(
        &mut t,
        "home/nobody",
        Kind::File(Content::inline("n")),
        0o400,
        (65534, 65534),
    );
    for i in 0..500 {
        let name = format!("many/entry-with-a-fairly-long-name-{i:04}");
        add(
            &mut t,
            &name,
            Kind::File(Content::inline(format!("{i}\n"))),
            0o644,
            (0, 0),
        );
    }
    add(
        &mut t,
        "usr/bin/big-symlink",
        Kind::Symlink("../lib/big.bin".into()),
        0o777,
        (0, 0),
    );
    // Overlay whiteout of a deleted file: a 0:0 character device under its name.
    add(
        &mut t,
        "layer/.wh.gone",
        Kind::CharDevice { major: 0, minor: 0 },
        0o000,
        (0, 0),
    );
    add(
        &mut t,
        "layer/removed",
        Kind::CharDevice { major: 0, minor: 0 },
        0o000,
        (0, 0),
    );
    // Names sorting before "." and ".." in byte order.
    add(
        &mut t,
        "layer/+plus",
        Kind::File(Content::inline("+")),
        0o644,
        (0, 0),
    );
    add(
        &mut t,
        "layer/-dash",
        Kind::File(Content::inline("-")),
        0o644,
        (0, 0),
    );
    add(
        &mut t,
        "dev/sda1",
        Kind::BlockDevice { major: 8, minor: 1 },
        0o660,
        (0, 6),
    );
    add(
        &mut t,
        "dev/big-minor",
        Kind::CharDevice {
            major: 240,
            minor: 300_000,
        },
        0o600,
        (0, 0),
    );
    add(&mut t, "run/fifo", Kind::Fifo, 0o620, (0, 0));
    add(
        &mut t,
        "usr/bin/tool",
        Kind::File(Content::inline(pattern(5000, 3))),
        0o755,
        (0, 0),
    );
    add(
        &mut t,
        "usr/bin/tool-hardlink",
        Kind::Hardlink(p("usr/bin/tool")),
        0o755,
        (0, 0),
    );
    add(
        &mut t,
        "usr/bin/su",
        Kind::File(Content::inline(pattern(9000, 4))),
        0o4755,
        (0, 0),
    );

    // Sizes around the block size, so tails go inline, or in a block of their own
    // when the metadata block has no room.
    for i in 0..120u32 {
        let len = (i as usize * 977) % 9000;
        let content = Content::inline(pattern(len, 100 + i));
        add(
            &mut t,
            &format!("sizes/f{i:03}"),
            Kind::File(content),
            0o644,
            (0, 0),
        );
    }
    // Compressible files: across the 1 MiB segments, zeros, one with a setuid bit
    // and xattrs (its index follows them), a hardlink to one, one just past a block.
    add(
        &mut t,
        "zip/text",
        Kind::File(Content::inline(words(2_500_000, 8))),
        0o644,
        (0, 0),
    );
    add(
        &mut t,
        "zip/zeros",
        Kind::File(Content::inline(vec![0u8; (1 << 20) + 5])),
        0o644,
        (0, 0),
    );
    let suid = add(
        &mut t,
        "zip/suid-tool",
        Kind::File(Content::inline(words(70_000, 9))),
        0o4755,
        (0, 0),
    );
    t.get_mut(&suid)
        .unwrap()
        .xattrs
        .insert("user.note".into(), b"compressed".to_vec());
    add(
        &mut t,
        "zip/suid-link",
        Kind::Hardlink(p("zip/suid-tool")),
        0o4755,
        (0, 0),
    );
    add(
        &mut t,
        "zip/4097",
        Kind::File(Content::inline(words(4097, 10))),
        0o644,
        (1000, 1000),
    );
    // An inode whose xattrs alone are larger than a block.
    let fat = add(
        &mut t,
        "sizes/fat-xattrs",
        Kind::File(Content::inline(pattern(300, 5))),
        0o644,
        (0, 0),
    );
    let e = t.get_mut(&fat).unwrap();
    e.xattrs.insert("user.big".into(), pattern(5000, 6));
    e.xattrs
        .insert("trusted.overlay.origin".into(), pattern(40, 7));

    let opaque = add(&mut t, "layer/opaque", Kind::Dir, 0o755, (0, 0));
    add(
        &mut t,
        "layer/opaque/kept",
        Kind::File(Content::inline("k")),
        0o644,
        (0, 0),
    );
    t.get_mut(&opaque)
        .unwrap()
        .xattrs
        .insert("trusted.overlay.opaque".into(), b"y".to_vec());
    // vfs_cap_data revision 2, effective, permitted = CAP_NET_RAW (bit 13).
    let mut cap = Vec::new();
    for word in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        cap.extend_from_slice(&word.to_le_bytes());
    }
    let ping = add(
        &mut t,
        "usr/bin/ping",
        Kind::File(Content::inline("ping")),
        0o755,
        (0, 0),
    );
    let e = t.get_mut(&ping).unwrap();
    e.xattrs.insert("security.capability".into(), cap);
    e.xattrs.insert("user.foo".into(), b"bar".to_vec());
    t
}

/// Writes the image; returns its path and size.
fn write_image(tree: &Tree, dir: &Path, name: &str) -> (PathBuf, u64) {
    write_compressed(tree, dir, name, None)
}

/// Writes the image with `compression`; returns its path and size.
fn write_compressed(
    tree: &Tree,
    dir: &Path,
    name: &str,
    compression: Option<Compression>,
) -> (PathBuf, u64) {
    let path = dir.join(name);
    let mut f = fs::File::create(&path).unwrap();
    let size = write_erofs(
        tree,
        &mut f,
        &ErofsOptions {
            compression,
            ..opts()
        },
    )
    .unwrap();
    drop(f);
    assert_eq!(fs::metadata(&path).unwrap().len(), size);
    (path, size)
}

fn sha256_reader(mut r: impl Read) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

fn major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32
}

fn minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32
}

/// All xattrs of `path` (not following symlinks), read with getfattr.
fn xattrs_of(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = run(Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(path));
    assert!(
        out.status.success(),
        "getfattr {}: {}",
        path.display(),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim().trim_start_matches("0x");
            (k.to_string(), hex::decode(v).unwrap())
        })
        .collect()
}

/// What a reader's view is compared on.
struct Check {
    what: &'static str,
    mtimes: bool,
    xattrs: bool,
    hardlinks: bool,
    /// Whether setuid and setgid bits are expected to survive.
    suid: bool,
}

/// Compares the directory `root` (an extraction or a mount) with `tree`.
fn compare(tree: &Tree, root: &Path, check: &Check) {
    let what = check.what;
    // The same set of paths, nothing more.
    let mut found = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            found.insert(rel);
        }
    }
    let expected: BTreeSet<String> = tree
        .iter()
        .filter(|(p, _)| !p.is_root())
        .map(|(p, _)| p.as_str().to_string())
        .collect();
    assert_eq!(found, expected, "{what}: the paths differ");

    for (path, entry) in tree.iter() {
        let on_disk = root.join(path.as_str());
        let meta = fs::symlink_metadata(&on_disk).unwrap();
        let at = format!("{what}: {path}");
        // A hardlink shows its target's inode.
        let (entry, link_target) = match &entry.kind {
            Kind::Hardlink(t) => (tree.get(t).unwrap(), Some(t)),
            _ => (entry, None),
        };
        let ft = meta.file_type();
        match &entry.kind {
            Kind::Dir => assert!(ft.is_dir(), "{at}: not a dir"),
            Kind::File(c) => {
                assert!(ft.is_file(), "{at}: not a file");
                assert_eq!(meta.len(), c.len(), "{at}: size");
                assert_eq!(
                    sha256_reader(fs::File::open(&on_disk).unwrap()),
                    sha256_reader(c.open().unwrap()),
                    "{at}: content"
                );
            }
            Kind::Symlink(target) => {
                assert!(ft.is_symlink(), "{at}: not a symlink");
                assert_eq!(
                    fs::read_link(&on_disk).unwrap().to_str(),
                    Some(target.as_str())
                );
            }
            Kind::CharDevice {
                major: ma,
                minor: mi,
            }
            | Kind::BlockDevice {
                major: ma,
                minor: mi,
            } => {
                let is_char = matches!(entry.kind, Kind::CharDevice { .. });
                assert!(
                    if is_char {
                        ft.is_char_device()
                    } else {
                        ft.is_block_device()
                    },
                    "{at}: wrong device type"
                );
                assert_eq!(
                    (major(meta.rdev()), minor(meta.rdev())),
                    (*ma, *mi),
                    "{at}: rdev"
                );
            }
            Kind::Fifo => assert!(ft.is_fifo(), "{at}: not a fifo"),
            Kind::Hardlink(_) => unreachable!("resolved above"),
        }
        if !ft.is_symlink() {
            let mask = if check.suid { 0o7777 } else { 0o1777 };
            assert_eq!(meta.mode() & mask, entry.mode & mask, "{at}: mode");
        }
        assert_eq!(
            (meta.uid(), meta.gid()),
            (entry.uid, entry.gid),
            "{at}: owner"
        );
        if check.mtimes {
            assert_eq!(meta.mtime() as u64, entry.mtime, "{at}: mtime");
        }
        if check.xattrs {
            assert_eq!(xattrs_of(&on_disk), entry.xattrs, "{at}: xattrs");
        }
        if let (Some(target), true) = (link_target, check.hardlinks) {
            let target_meta = fs::metadata(root.join(target.as_str())).unwrap();
            assert_eq!(
                meta.ino(),
                target_meta.ino(),
                "{at}: not the same inode as {target}"
            );
            assert_eq!(meta.nlink(), 2, "{at}: link count");
        }
    }
}

fn require_root() {
    // SAFETY-free check: root owns /proc/self when we run as root.
    let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1);
    assert_eq!(
        uid, 0,
        "this test must run as root (device nodes, owners, mount)"
    );
}

/// Unmounts on drop, so a failed assertion does not leave the mount behind.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn fsck_erofs_accepts_the_image_and_extracts_the_same_tree() {
    require_tool("fsck.erofs", "erofs-utils");
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let tree = sample_tree(dir.path());
    for compression in COMPRESSIONS {
        let name = label(compression);
        let (img, _) = write_compressed(&tree, dir.path(), &format!("{name}.erofs"), compression);

        // fsck.erofs 1.5 exits 0 even on some errors (a bad superblock checksum):
        // any "<E>" line is a rejection. It decompresses every compressed extent.
        let out = run(Command::new("fsck.erofs").arg(&img));
        assert!(
            out.status.success() && !text(&out).contains("<E>"),
            "fsck.erofs rejected the {name} image: {}",
            text(&out)
        );

        let extracted = dir.path().join(format!("extracted-{name}"));
        let out = run(Command::new("fsck.erofs")
            .arg(format!("--extract={}", extracted.display()))
            .arg("--preserve")
            .arg(&img));
        assert!(
            out.status.success() && !text(&out).contains("<E>"),
            "fsck.erofs --extract of the {name} image failed: {}",
            text(&out)
        );
        // fsck.erofs 1.5 restores contents, types, modes, owners and device
        // numbers, but neither xattrs nor hardlinks (it writes each name as its own
        // file), and it chmods before it chowns, which drops setuid/setgid bits
        // (fixed upstream later by "chown() first"). The kernel mount checks those.
        compare(
            &tree,
            &extracted,
            &Check {
                what: "fsck.erofs --extract",
                mtimes: true,
                xattrs: false,
                hardlinks: false,
                suid: false,
            },
        );
    }
}

#[test]
fn the_kernel_mounts_the_image_with_owners_devices_hardlinks_and_xattrs() {
    require_tool("getfattr", "attr");
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let tree = sample_tree(dir.path());
    for compression in COMPRESSIONS {
        let name = label(compression);
        let (img, _) = write_compressed(&tree, dir.path(), &format!("{name}.erofs"), compression);
        let mnt = dir.path().join(format!("mnt-{name}"));
        fs::create_dir(&mnt).unwrap();
        let out = run(Command::new("mount")
            .args(["-t", "erofs", "-o", "loop,ro"])
            .arg(&img)
            .arg(&mnt));
        assert!(
            out.status.success(),
            "mount -t erofs -o loop of the {name} image failed (needs root, a loop device and the erofs module): {}",
            text(&out)
        );
        let _guard = Mounted(mnt.clone());
        compare(
            &tree,
            &mnt,
            &Check {
                what: "kernel mount",
                mtimes: true,
                xattrs: true,
                hardlinks: true,
                suid: true,
            },
        );
    }
}

/// Compression shrinks what compresses and costs little on what does not: the
/// sample is mostly random bytes, its compressible files are 3.6 MB.
#[test]
fn compressed_images_are_smaller_and_identical_for_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let tree = sample_tree(dir.path());
    let (_, plain) = write_image(&tree, dir.path(), "plain.erofs");
    for compression in COMPRESSIONS.into_iter().flatten() {
        let name = compression.name();
        let mut images = Vec::new();
        for workers in [1, 2, 5] {
            let path = dir.path().join(format!("{name}-{workers}.erofs"));
            let mut f = fs::File::create(&path).unwrap();
            let opts = ErofsOptions {
                compression: Some(compression),
                workers,
                ..opts()
            };
            let size = write_erofs(&tree, &mut f, &opts).unwrap();
            assert!(
                size + (2 << 20) < plain,
                "{name}: {size} bytes, plain {plain}"
            );
            images.push(fs::read(&path).unwrap());
        }
        assert!(
            images.windows(2).all(|w| w[0] == w[1]),
            "{name}: workers change the bytes"
        );
    }
}

#[test]
fn dump_erofs_shows_the_superblock() {
    require_tool("dump.erofs", "erofs-utils");
    let dir = tempfile::tempdir().unwrap();
    let tree = sample_tree(dir.path());
    let (img, size) = write_image(&tree, dir.path(), "store.erofs");
    let out = run(Command::new("dump.erofs").arg("-s").arg(&img));
    assert!(out.status.success(), "dump.erofs -s failed: {}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    let inodes = tree
        .iter()
        .filter(|(_, e)| !matches!(e.kind, Kind::Hardlink(_)))
        .count();
    for (field, value) in [
        ("Filesystem magic number:", "0xE0F5E1E2".to_string()),
        ("Filesystem blocks:", (size / 4096).to_string()),
        ("Filesystem root nid:", "128".to_string()),
        ("Filesystem inode count:", inodes.to_string()),
        ("Filesystem features:", "sb_csum".to_string()),
        (
            "Filesystem UUID:",
            "6b696f73-2d73-746f-7265-2d7575696421".to_string(),
        ),
    ] {
        let line = shown.lines().find(|l| l.starts_with(field));
        assert_eq!(
            line.map(|l| l[field.len()..].trim()),
            Some(value.as_str()),
            "{field} in dump.erofs -s:\n{shown}"
        );
    }

    // Both names of the hardlink pair lead to one inode with two links.
    let inode_info = |path: &str| {
        let out = run(Command::new("dump.erofs")
            .arg(format!("--path={path}"))
            .arg(&img));
        assert!(
            out.status.success(),
            "dump.erofs --path={path}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let a = inode_info("/usr/bin/tool");
    let b = inode_info("/usr/bin/tool-hardlink");
    let nid_line = |info: &str| {
        info.lines()
            .find(|l| l.starts_with("NID:"))
            .map(str::to_string)
    };
    assert_eq!(nid_line(&a), nid_line(&b), "{a}\n{b}");
    assert!(nid_line(&a).is_some_and(|l| l.contains("Links: 2")), "{a}");

    let out = run(Command::new("dump.erofs")
        .args(["--path=/many", "--ls"])
        .arg(&img));
    assert!(
        out.status.success(),
        "dump.erofs --ls failed: {}",
        text(&out)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("entry-with-a-fairly-long-name-0499"),
        "{listing}"
    );
}

#[test]
fn fsck_erofs_catches_a_corrupted_superblock_by_its_checksum() {
    require_tool("fsck.erofs", "erofs-utils");
    let dir = tempfile::tempdir().unwrap();
    let tree = sample_tree(dir.path());
    let (img, _) = write_image(&tree, dir.path(), "store.erofs");
    let mut bytes = fs::read(&img).unwrap();
    bytes[1024 + 64] ^= 0x20; // a letter of the volume name
    fs::write(&img, &bytes).unwrap();
    // fsck.erofs 1.5 reports a bad checksum but still exits 0: read what it says.
    let out = run(Command::new("fsck.erofs").arg(&img));
    assert!(
        text(&out).contains("superblock chksum doesn't match"),
        "corruption went unnoticed: {}",
        text(&out)
    );
}

#[test]
fn the_same_tree_gives_the_same_image_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let tree = sample_tree(dir.path());
    let (a, _) = write_image(&tree, dir.path(), "a.erofs");
    let (b, _) = write_image(&sample_tree(dir.path()), dir.path(), "b.erofs");
    assert_eq!(
        sha256_reader(fs::File::open(a).unwrap()),
        sha256_reader(fs::File::open(b).unwrap())
    );
}

#[test]
fn the_size_estimate_bounds_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let tree = sample_tree(dir.path());
    let estimate = size_estimate(&tree);
    let (_, size) = write_image(&tree, dir.path(), "store.erofs");
    assert!(size <= estimate, "image {size} > estimate {estimate}");
    assert_eq!(size % 4096, 0);
}

/// The reader `inspect` uses is not tied to our writer: it reads what erofs-utils'
/// `mkfs.erofs` makes (uncompressed; compact inodes, inline tails), by path.
#[test]
fn our_reader_reads_what_mkfs_erofs_writes() {
    require_tool("mkfs.erofs", "erofs-utils");
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    fs::create_dir_all(root.join("overlay-images/abc")).unwrap();
    let json = br#"[{"id":"abc","names":["docker.io/library/busybox:1.36"]}]"#;
    fs::write(root.join("overlay-images/images.json"), json).unwrap();
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("overlay-images/abc/manifest"), &big).unwrap();
    for i in 0..300 {
        fs::write(
            root.join(format!("entry-with-a-rather-long-name-{i:03}")),
            format!("{i}"),
        )
        .unwrap();
    }
    let img = d.path().join("fs.erofs");
    let o = run(Command::new("mkfs.erofs").arg(&img).arg(&root));
    assert!(o.status.success(), "{}", text(&o));
    let len = fs::metadata(&img).unwrap().len();
    let mut r =
        kios_build::store::erofs::ErofsReader::open(fs::File::open(&img).unwrap(), 0, len).unwrap();
    assert_eq!(
        r.read_file("overlay-images/images.json", 1 << 20)
            .unwrap()
            .unwrap(),
        json
    );
    assert_eq!(
        r.read_file("overlay-images/abc/manifest", 1 << 20)
            .unwrap()
            .unwrap(),
        big
    );
    for i in [0, 150, 299] {
        let got = r
            .read_file(&format!("entry-with-a-rather-long-name-{i:03}"), 100)
            .unwrap()
            .unwrap();
        assert_eq!(got, format!("{i}").as_bytes());
    }
    assert!(r
        .read_file("overlay-images/missing", 100)
        .unwrap()
        .is_none());
}
