//! The ESP writer checked by the reference tools: `fsck.vfat -n` (dosfstools) must accept
//! our FAT32 volumes without a word, mtools must list and read them, `file -s` must see
//! FAT32; and our reader must read what `mkfs.vfat` + `mcopy` make.
//!
//! The tools are build-host requirements of this test: a missing one fails the test with
//! the package to install, it never skips.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use kios_build::disk::esp::{min_size, write_fat32, EspError, EspOptions, EspReader};
use kios_build::tree::{Content, Entry, Tree, TreePath};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// The path of `tool`, or a failure naming the package that provides it.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: this test needs the `{package}` package (apt-get install {package})")
        })
}

/// Runs a tool; returns (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32) as u8
        })
        .collect()
}

/// An ESP as kios-build makes it, with the names that need long entries.
fn esp_tree(dir: &Path) -> Tree {
    let uki = dir.join("uki.efi");
    std::fs::write(&uki, pattern(5_000_000, 3)).unwrap();
    let mut t = Tree::new(1_735_689_600);
    let host = Entry::file(
        Content::Host {
            path: Arc::new(uki),
            offset: 0,
            len: 5_000_000,
        },
        0o644,
    );
    t.insert(TreePath::parse("EFI/BOOT/BOOTX64.EFI").unwrap(), host)
        .unwrap();
    t.add_file("EFI/kios/kios-1.0.efi.sig", pattern(700, 5), 0o644)
        .unwrap();
    t.add_file("loader/loader.conf", "timeout 0\n", 0o644)
        .unwrap();
    t.add_file(
        "loader/entries/kios.conf",
        "title kiOS\nefi /EFI/BOOT/BOOTX64.EFI\n",
        0o644,
    )
    .unwrap();
    t.add_file("EMPTY.TXT", Vec::new(), 0o644).unwrap();
    // Enough long names that a directory spans several 512-byte clusters, and long
    // entries cross cluster boundaries.
    for i in 0..40 {
        let name = format!("EFI/Linux/kios entry number {i:02}.conf");
        t.add_file(&name, format!("{i}\n"), 0o644).unwrap();
    }
    t.add_file(
        "a/deeply/nested/directory/with a name longer than thirteen.txt",
        "x",
        0o644,
    )
    .unwrap();
    t
}

fn opts() -> EspOptions {
    EspOptions {
        volume_id: 0x1234_abcd,
        label: *b"KIOS_ESP   ",
        mtime: 1_735_689_600,
    }
}

/// Writes `tree` as a `size`-byte volume into a fresh sparse file.
fn write_image(tree: &Tree, size: u64, path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    let mut out = std::io::BufWriter::new(file);
    write_fat32(tree, &mut out, 0, size, &opts()).unwrap();
    out.flush().unwrap();
}

/// `fsck.vfat -n` must exit 0 and say nothing but its version and the summary line.
fn assert_fsck_clean(img: &Path) {
    let (ok, text) = run(Command::new(tool("fsck.vfat", "dosfstools"))
        .arg("-n")
        .arg(img));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(ok, "fsck.vfat -n failed:\n{text}");
    assert_eq!(
        lines.len(),
        2,
        "fsck.vfat -n said more than the summary:\n{text}"
    );
    assert!(lines[0].starts_with("fsck.fat"), "{text}");
    assert!(
        lines[1].contains(" files, ") && lines[1].contains(" clusters"),
        "{text}"
    );
}

fn assert_tools_see_fat32_and_our_files(img: &Path, tree_dir: &Path) {
    // fsck.fat -v prints the boot sector as it reads it, FAT type included.
    let (ok, text) = run(Command::new(tool("fsck.fat", "dosfstools"))
        .args(["-n", "-v"])
        .arg(img));
    assert!(ok, "{text}");
    assert!(
        text.contains("FATs, 32 bit entries"),
        "fsck.fat -v does not see FAT32:\n{text}"
    );
    let (ok, text) = run(Command::new(tool("file", "file")).arg("-s").arg(img));
    assert!(ok && text.contains("FAT (32 bit)"), "file -s: {text}");

    let image = format!("{}", img.display());
    let (ok, text) = run(Command::new(tool("minfo", "mtools")).args(["-i", &image, "::"]));
    assert!(ok, "minfo: {text}");
    assert!(
        text.contains("volume label=\"KIOS_ESP   \"") || text.contains("KIOS_ESP"),
        "{text}"
    );
    assert!(text.contains("serial number: 1234ABCD"), "minfo: {text}");
    let (ok, text) = run(Command::new(tool("mdir", "mtools")).args(["-i", &image, "::/EFI/BOOT"]));
    assert!(ok, "mdir: {text}");
    assert!(text.contains("BOOTX64  EFI"), "mdir ::/EFI/BOOT: {text}");
    assert!(text.contains("5000000"), "mdir ::/EFI/BOOT: {text}");
    let (ok, text) =
        run(Command::new(tool("mdir", "mtools")).args(["-i", &image, "::/loader/entries"]));
    assert!(
        ok && text.contains("kios.conf"),
        "mdir ::/loader/entries: {text}"
    );
    let (ok, text) = run(Command::new(tool("mtype", "mtools")).args([
        "-i",
        &image,
        "::/loader/entries/kios.conf",
    ]));
    assert!(ok, "{text}");
    assert_eq!(text, "title kiOS\nefi /EFI/BOOT/BOOTX64.EFI\n");
    let copy = tree_dir.join("copied.efi");
    let (ok, text) = run(Command::new(tool("mcopy", "mtools"))
        .args(["-n", "-i", &image, "::/EFI/BOOT/BOOTX64.EFI"])
        .arg(&copy));
    assert!(ok, "mcopy: {text}");
    assert!(
        std::fs::read(&copy).unwrap() == pattern(5_000_000, 3),
        "mcopy read back different bytes"
    );
}

#[test]
fn fsck_vfat_accepts_a_64_mib_esp_and_mtools_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let tree = esp_tree(dir.path());
    let img = dir.path().join("esp.img");
    write_image(&tree, 64 * MIB, &img);
    assert_fsck_clean(&img);
    assert_tools_see_fat32_and_our_files(&img, dir.path());
}

#[test]
fn fsck_vfat_accepts_a_300_mib_esp_with_4k_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let tree = esp_tree(dir.path());
    let img = dir.path().join("esp.img");
    write_image(&tree, 300 * MIB, &img);
    let (_, text) = run(Command::new(tool("fsck.fat", "dosfstools"))
        .args(["-n", "-v"])
        .arg(&img));
    assert!(text.contains("4096 bytes per cluster"), "{text}");
    assert_fsck_clean(&img);
    assert_tools_see_fat32_and_our_files(&img, dir.path());
}

#[test]
fn fsck_vfat_accepts_an_esp_of_min_size() {
    let dir = tempfile::tempdir().unwrap();
    let tree = esp_tree(dir.path());
    let size = min_size(&tree);
    let img = dir.path().join("esp.img");
    write_image(&tree, size, &img);
    assert_fsck_clean(&img);
}

#[test]
fn an_esp_too_small_for_fat32_is_refused_with_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let tree = esp_tree(dir.path());
    let mut out = std::io::Cursor::new(Vec::new());
    let err = write_fat32(&tree, &mut out, 0, 32 * MIB, &opts()).unwrap_err();
    assert!(matches!(err, EspError::TooSmall { .. }), "{err}");
    assert!(err.to_string().contains("at least"), "{err}");
}

#[test]
fn two_writes_of_the_same_tree_are_identical() {
    let dir = tempfile::tempdir().unwrap();
    let tree = esp_tree(dir.path());
    let digest = |name: &str| {
        let img = dir.path().join(name);
        write_image(&tree, 64 * MIB, &img);
        let mut f = std::fs::File::open(&img).unwrap();
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).unwrap();
        hex::encode(h.finalize())
    };
    assert_eq!(digest("a.img"), digest("b.img"));
}

#[test]
fn our_reader_reads_what_mkfs_vfat_and_mcopy_make() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("mkfs.img");
    let image = format!("{}", img.display());
    let (ok, text) = run(Command::new(tool("mkfs.vfat", "dosfstools")).args([
        "-F",
        "32",
        "-n",
        "OTHERLABEL",
        "-i",
        "0badcafe",
        "-C",
        &image,
        "65536",
    ]));
    assert!(ok, "mkfs.vfat: {text}");
    let big = dir.path().join("big.bin");
    std::fs::write(&big, pattern(3_000_000, 9)).unwrap();
    let small = dir.path().join("kios.conf");
    std::fs::write(&small, "title kiOS\n").unwrap();
    for d in ["::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"] {
        let (ok, text) = run(Command::new(tool("mmd", "mtools")).args(["-i", &image, d]));
        assert!(ok, "mmd {d}: {text}");
    }
    for (src, dst) in [
        (&big, "::/EFI/BOOT/BOOTX64.EFI"),
        (&small, "::/loader/entries/kios.conf"),
        (&small, "::/loader/entries/A Long Mixed-Case Name.conf"),
    ] {
        let (ok, text) = run(Command::new(tool("mcopy", "mtools"))
            .args(["-i", &image])
            .arg(src)
            .arg(dst));
        assert!(ok, "mcopy {dst}: {text}");
    }

    let mut esp = EspReader::open(std::fs::File::open(&img).unwrap(), 0).unwrap();
    assert_eq!(esp.label(), "OTHERLABEL");
    assert_eq!(esp.volume_id(), 0x0bad_cafe);
    let mut paths: Vec<(String, bool, u64)> = esp
        .list()
        .unwrap()
        .into_iter()
        .map(|f| (f.path, f.is_dir, f.size))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            ("EFI".to_string(), true, 0),
            ("EFI/BOOT".to_string(), true, 0),
            ("EFI/BOOT/BOOTX64.EFI".to_string(), false, 3_000_000),
            ("loader".to_string(), true, 0),
            ("loader/entries".to_string(), true, 0),
            (
                "loader/entries/A Long Mixed-Case Name.conf".to_string(),
                false,
                11
            ),
            ("loader/entries/kios.conf".to_string(), false, 11),
        ]
    );
    let mut back = Vec::new();
    esp.open_file("EFI/BOOT/BOOTX64.EFI")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(
        back == pattern(3_000_000, 9),
        "the big file reads back different"
    );
    let mut conf = String::new();
    esp.open_file("loader/entries/A Long Mixed-Case Name.conf")
        .unwrap()
        .read_to_string(&mut conf)
        .unwrap();
    assert_eq!(conf, "title kiOS\n");
}

#[test]
fn our_reader_refuses_a_fat16_volume() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fat16.img");
    let image = format!("{}", img.display());
    let (ok, text) = run(
        Command::new(tool("mkfs.vfat", "dosfstools")).args(["-F", "16", "-C", &image, "32768"])
    );
    assert!(ok, "mkfs.vfat: {text}");
    let err = EspReader::open(std::fs::File::open(&img).unwrap(), 0)
        .err()
        .expect("a FAT16 volume is refused");
    assert!(matches!(err, EspError::NotFat32 { .. }), "{err}");
}
