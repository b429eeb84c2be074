//! `inspect` against damaged and hostile images (issue #12, classes 9 and 11): a real
//! image is built, then cut short, its partition table bent, its UKI replaced by one
//! with escape sequences and huge values, its PE headers broken, its initramfs cut.
//! Each must give exit 1 with an error that names what is wrong, or output with the
//! hostile bytes escaped; never a panic, never raw control characters on the
//! terminal. Every run is under `prlimit --as` (1 GiB): no unbounded allocation.

mod common;
use common::*;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};

use kios_build::boot::{write_uki, UkiParts};
use kios_build::disk::esp::{write_fat32, EspOptions};
use kios_build::initramfs::{write_initramfs, Compression};
use kios_build::tree::{Content, Entry, Tree, TreePath};

struct Built {
    _dir: tempfile::TempDir,
    img: PathBuf,
}

/// One image built from a real profile, shared by the tests; each test damages a
/// copy.
fn image() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let profile = write_profile(
            dir.path(),
            "node.yaml",
            &profile_text("disk:\n  size: 256MiB\n"),
        );
        let img = dir.path().join("node.img");
        build(&profile, &img, 1_700_000_000);
        Built { _dir: dir, img }
    })
}

/// A sparse copy of the built image in `dir`.
fn copy(dir: &Path) -> PathBuf {
    let to = dir.join("copy.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&image().img)
        .arg(&to)
        .status()
        .unwrap();
    assert!(st.success());
    to
}

/// `kios-build inspect IMG [--json]` under a 1 GiB address-space limit.
fn inspect_limited(img: &Path, json: bool) -> Output {
    let mut c = Command::new("prlimit");
    c.arg(format!("--as={}", 1u64 << 30))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_kios-build"))
        .arg("inspect")
        .arg(img);
    if json {
        c.arg("--json");
    }
    c.stdin(Stdio::null()).output().unwrap()
}

/// Nothing a terminal would act on: no C0 (but newline), DEL, C1, bidi or
/// zero-width characters.
fn assert_terminal_safe(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for c in text.chars() {
        let hidden = (c.is_control() && c != '\n')
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
        assert!(!hidden, "{what} prints {c:?} raw:\n{text}");
    }
}

/// Exit 1, an error on stderr containing each of `wanted`, terminal-safe, no panic.
fn assert_refused(img: &Path, wanted: &[&str]) -> String {
    let o = inspect_limited(img, false);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!err.contains("panicked"), "{}", text(&o));
    for w in wanted {
        assert!(err.contains(w), "stderr lacks {w:?}:\n{}", text(&o));
    }
    assert_terminal_safe("the error", &o.stderr);
    err
}

#[test]
fn an_image_cut_short_by_one_sector_is_an_error_saying_by_how_much() {
    let d = tempfile::tempdir().unwrap();
    let img = copy(d.path());
    let len = fs::metadata(&img).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(len - 512)
        .unwrap();
    assert_refused(&img, &["truncated", "512 bytes missing", &len.to_string()]);
}

#[test]
fn an_image_cut_in_half_is_an_error_saying_by_how_much() {
    let d = tempfile::tempdir().unwrap();
    let img = copy(d.path());
    let len = fs::metadata(&img).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let missing = format!("{} bytes missing", len - len / 2);
    assert_refused(&img, &["truncated", &missing]);
}

/// Edits the primary GPT's entry of partition `name` and recomputes both CRCs of
/// the primary header (UEFI 2.10 5.3.2), so that the range is the only damage.
fn patch_entry(img: &Path, name: &str, edit: impl FnOnce(&mut [u8])) -> usize {
    let mut f = OpenOptions::new().read(true).write(true).open(img).unwrap();
    let mut h = [0u8; 512];
    f.seek(SeekFrom::Start(512)).unwrap();
    f.read_exact(&mut h).unwrap();
    let u32at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let lba = u64::from_le_bytes(h[72..80].try_into().unwrap());
    let (n, size) = (u32at(&h, 80) as usize, u32at(&h, 84) as usize);
    let mut entries = vec![0u8; n * size];
    f.seek(SeekFrom::Start(lba * 512)).unwrap();
    f.read_exact(&mut entries).unwrap();
    let index = entries
        .chunks(size)
        .position(|e| {
            let units: Vec<u16> = e[56..128]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            String::from_utf16_lossy(&units) == name
        })
        .unwrap_or_else(|| panic!("no partition {name}"));
    edit(&mut entries[index * size..(index + 1) * size]);
    h[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
    h[16..20].fill(0);
    let hsize = u32at(&h, 12) as usize;
    let crc = crc32fast::hash(&h[..hsize]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    f.seek(SeekFrom::Start(lba * 512)).unwrap();
    f.write_all(&entries).unwrap();
    f.seek(SeekFrom::Start(512)).unwrap();
    f.write_all(&h).unwrap();
    index + 1
}

fn set_lba(e: &mut [u8], at: usize, v: u64) {
    e[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn a_partition_ending_past_the_disk_is_an_error_naming_it_and_the_numbers() {
    let d = tempfile::tempdir().unwrap();
    let img = copy(d.path());
    let sectors = fs::metadata(&img).unwrap().len() / 512;
    let last = sectors + 1000;
    let n = patch_entry(&img, "KIOS_DATA", |e| set_lba(e, 40, last));
    // sgdisk agrees that the table is damaged, and only in this.
    let v = Command::new("sgdisk").arg("-v").arg(&img).output().unwrap();
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("problem"),
        "{}",
        text(&v)
    );
    let err = assert_refused(
        &img,
        &[
            &format!("partition {n} (KIOS_DATA)"),
            &format!("..={last}"),
            "beyond",
        ],
    );
    assert!(err.contains("damaged"), "{err}");
}

#[test]
fn a_partition_whose_end_is_before_its_start_is_an_error_not_a_wrapped_size() {
    let d = tempfile::tempdir().unwrap();
    let img = copy(d.path());
    let n = patch_entry(&img, "KIOS_DATA", |e| {
        let first = u64::from_le_bytes(e[32..40].try_into().unwrap());
        set_lba(e, 40, first - 1);
    });
    assert_refused(
        &img,
        &[
            &format!("partition {n} (KIOS_DATA)"),
            "first sector is after its last",
        ],
    );
}

#[test]
fn overlapping_partitions_are_an_error_naming_both() {
    let d = tempfile::tempdir().unwrap();
    let img = copy(d.path());
    // The data partition starts inside the ESP.
    patch_entry(&img, "KIOS_DATA", |e| set_lba(e, 32, 4096));
    assert_refused(&img, &["overlap", "(KIOS_ESP)", "(KIOS_DATA)"]);
}

#[test]
fn a_partition_name_with_escape_sequences_is_escaped_in_errors() {
    let d = tempfile::tempdir().unwrap();
    let img = copy(d.path());
    patch_entry(&img, "KIOS_DATA", |e| {
        let name: Vec<u16> = "\u{1b}[2J\u{202e}evil".encode_utf16().collect();
        e[56..128].fill(0);
        for (i, u) in name.iter().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        set_lba(e, 40, u64::MAX);
    });
    assert_refused(&img, &["\\u{1b}[2J\\u{202e}evil", "18446744073709551615"]);
}

// --- The UKI ----------------------------------------------------------------

/// What a hostile UKI carries.
struct Hostile {
    cmdline: Vec<u8>,
    osrel: Vec<u8>,
    uname: Vec<u8>,
    initrd: Vec<u8>,
}

const ESC_CMDLINE: &str = "console=ttyS0 \u{1b}[2J\u{1b}]0;owned\u{7} \u{9b}31m \u{202e}gnp.exe";

fn hostile_initrd() -> Vec<u8> {
    let mut t = Tree::new(0);
    t.add_file("etc/hostname", "node\u{1b}[31m\n", 0o644)
        .unwrap();
    t.add_file("etc/\u{1b}[2Jhidden\u{7}", "x", 0o644).unwrap();
    t.add_file("etc/kios/modules", "virtio\u{1b}[H\n", 0o644)
        .unwrap();
    t.insert(
        TreePath::parse("etc/link").unwrap(),
        Entry::symlink("/\u{1b}]0;title\u{7}"),
    )
    .unwrap();
    write_initramfs(&t, Compression::Gzip, Vec::new()).unwrap()
}

impl Hostile {
    fn new() -> Hostile {
        let huge = "A".repeat(300_000);
        Hostile {
            cmdline: ESC_CMDLINE.as_bytes().to_vec(),
            osrel: format!(
                "ID=kios\nPRETTY_NAME=\"\u{1b}[31mkiOS\u{202e}\u{200b}\"\nHUGE={huge}\n"
            )
            .into_bytes(),
            uname: b"6.1.0-\x1b[Hkios".to_vec(),
            initrd: hostile_initrd(),
        }
    }

    fn uki(&self) -> Vec<u8> {
        let inputs = inputs();
        let stub = fs::read(inputs.join("stub/linuxx64.efi.stub")).unwrap();
        let vmlinuz = inputs.join("kernel/boot/vmlinuz");
        let len = fs::metadata(&vmlinuz).unwrap().len();
        let parts = UkiParts {
            osrel: self.osrel.clone(),
            cmdline: self.cmdline.clone(),
            uname: self.uname.clone(),
            linux: Content::Host {
                path: Arc::new(vmlinuz),
                offset: 0,
                len,
            },
            initrd: Content::inline(self.initrd.clone()),
        };
        let mut out = Vec::new();
        write_uki(&stub, &parts, &mut out).unwrap();
        out
    }
}

/// A copy of the built image whose ESP holds `uki` as its boot file (and a file
/// whose name carries a bidi override: FAT names cannot hold control characters).
fn image_with_uki(dir: &Path, uki: Vec<u8>) -> PathBuf {
    let img = copy(dir);
    let (offset, size) = partition(&img, "KIOS_ESP");
    let mut t = Tree::new(1_700_000_000);
    t.add_file("EFI/BOOT/BOOTX64.EFI", uki, 0o644).unwrap();
    t.add_file("loader/evil\u{202e}fnoc.exe", "x", 0o644)
        .unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    write_fat32(&t, &mut f, offset, size, &EspOptions::default()).unwrap();
    img
}

/// The file offset of section `name`'s header in a PE image.
fn section_header(pe: &[u8], name: &str) -> usize {
    let lfanew = u32::from_le_bytes(pe[0x3c..0x40].try_into().unwrap()) as usize;
    let count = u16::from_le_bytes([pe[lfanew + 6], pe[lfanew + 7]]) as usize;
    let opt = u16::from_le_bytes([pe[lfanew + 20], pe[lfanew + 21]]) as usize;
    let table = lfanew + 24 + opt;
    (0..count)
        .map(|i| table + i * 40)
        .find(|&at| pe[at..at + 8].starts_with(name.as_bytes()))
        .unwrap_or_else(|| panic!("no section {name}"))
}

#[test]
fn escape_sequences_and_huge_values_in_the_uki_are_escaped_and_cut_in_the_text_form() {
    let d = tempfile::tempdir().unwrap();
    let img = image_with_uki(d.path(), Hostile::new().uki());
    let o = inspect_limited(&img, false);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_terminal_safe("inspect", &o.stdout);
    assert_terminal_safe("inspect's stderr", &o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    for escaped in [
        "console=ttyS0 \\u{1b}[2J\\u{1b}]0;owned\\u{7} \\u{9b}31m \\u{202e}gnp.exe",
        "\\u{1b}[31mkiOS\\u{202e}\\u{200b}",
        "6.1.0-\\u{1b}[Hkios",
        "/etc/\\u{1b}[2Jhidden\\u{7}",
        "-> /\\u{1b}]0;title\\u{7}",
        "virtio\\u{1b}[H",
        "loader/evil\\u{202e}fnoc.exe",
    ] {
        assert!(out.contains(escaped), "no {escaped:?} in:\n{out}");
    }
    // The 300 kB value is not printed whole (os-release shows only PRETTY_NAME).
    assert!(out.len() < 20_000, "{} bytes of output", out.len());
}

#[test]
fn the_json_form_keeps_hostile_values_exact_but_escaped_for_the_terminal() {
    let d = tempfile::tempdir().unwrap();
    let hostile = Hostile::new();
    let img = image_with_uki(d.path(), hostile.uki());
    let o = inspect_limited(&img, true);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_terminal_safe("inspect --json", &o.stdout);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["boot"]["cmdline"], ESC_CMDLINE);
    assert_eq!(
        v["boot"]["os_release"]["PRETTY_NAME"],
        "\u{1b}[31mkiOS\u{202e}\u{200b}"
    );
    assert_eq!(
        v["boot"]["os_release"]["HUGE"].as_str().map(str::len),
        Some(300_000)
    );
    let etc = v["initramfs"]["etc"].as_array().unwrap();
    assert!(
        etc.iter().any(|e| e["path"] == "/etc/\u{1b}[2Jhidden\u{7}"),
        "{etc:?}"
    );
}

#[test]
fn a_section_name_of_binary_junk_is_shown_escaped() {
    let d = tempfile::tempdir().unwrap();
    let mut uki = Hostile::new().uki();
    let at = section_header(&uki, ".osrel");
    uki[at..at + 8].copy_from_slice(b"\x1b[2J\xff\x07\x9b\x00");
    let img = image_with_uki(d.path(), uki);
    let o = inspect_limited(&img, false);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_terminal_safe("inspect", &o.stdout);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\\u{1b}[2J\u{fffd}\\u{7}"), "{out}");
}

#[test]
fn a_section_past_the_end_of_the_uki_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let mut uki = Hostile::new().uki();
    let at = section_header(&uki, ".cmdline");
    // PointerToRawData far past the end of the file.
    uki[at + 20..at + 24].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let img = image_with_uki(d.path(), uki);
    assert_refused(
        &img,
        &[
            "EFI/BOOT/BOOTX64.EFI",
            ".cmdline",
            "0x7fff0000",
            "past the end of the UKI",
        ],
    );
}

#[test]
fn a_broken_pe_header_is_an_error_not_junk() {
    let d = tempfile::tempdir().unwrap();
    let mut uki = Hostile::new().uki();
    // e_lfanew pointing into the middle of nowhere, and an MZ stub full of escapes.
    uki[2..0x3c].copy_from_slice(&[0x1b; 0x3a]);
    uki[0x3c..0x40].copy_from_slice(&0x0ffe_0000u32.to_le_bytes());
    let img = image_with_uki(d.path(), uki);
    assert_refused(&img, &["EFI/BOOT/BOOTX64.EFI", "not a PE", "0xffe0000"]);
}

#[test]
fn an_initramfs_error_keeps_its_cause() {
    let d = tempfile::tempdir().unwrap();
    let mut hostile = Hostile::new();
    // A plain archive, cut in the middle of a file's data.
    let mut t = Tree::new(0);
    t.add_file("etc/big", vec![b'x'; 10_000], 0o644).unwrap();
    let cpio = write_initramfs(&t, Compression::None, Vec::new()).unwrap();
    hostile.initrd = cpio[..cpio.len() / 2].to_vec();
    let img = image_with_uki(d.path(), hostile.uki());
    let err = assert_refused(
        &img,
        &[
            "the initramfs in EFI/BOOT/BOOTX64.EFI cannot be read",
            "caused by",
            "truncated",
        ],
    );
    assert!(err.contains("at byte"), "{err}");
}

#[test]
fn a_fifo_or_a_character_device_given_as_the_image_is_refused_without_hanging() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("image.raw");
    mkfifo(&fifo);
    assert_refused(&fifo, &["a FIFO, not a regular file"]);
    // /dev/zero's numbers, in a temporary folder.
    let zero = d.path().join("zero.raw");
    mknod(&zero, "c", Some((1, 5)));
    assert_refused(&zero, &["a character device, not a regular file"]);
}
