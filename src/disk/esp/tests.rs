//! Round trips through the writer and the reader, and the on-disk details fsck cares
//! about. The real `fsck.vfat` and mtools check our images in `tests/esp_fsck.rs`.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use super::layout::{get16, get32, Geometry};
use super::*;
use crate::tree::{Content, Entry, Tree, TreePath};

const MIB: u64 = 1 << 20;

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A tree like an ESP's, plus the awkward cases; the 3 MB file is a host file range.
fn sample_tree(host: &tempfile::NamedTempFile) -> (Tree, Vec<u8>) {
    let big = pattern(3_000_000, 7);
    let mut f = host.as_file();
    f.write_all(b"header to skip").unwrap();
    f.write_all(&big).unwrap();
    f.write_all(b"trailer").unwrap();
    let mut t = Tree::new(1_700_000_000);
    t.add_file("EFI/BOOT/BOOTX64.EFI", pattern(70_000, 1), 0o644)
        .unwrap();
    t.add_file("loader/entries/kios.conf", "title kiOS\n", 0o644)
        .unwrap();
    t.add_file("loader/loader.conf", "timeout 0\n", 0o644)
        .unwrap();
    t.add_file("EMPTY", Vec::new(), 0o644).unwrap();
    t.add_file(
        "a/b/c/d/A file with a rather long name, über.txt",
        "deep",
        0o644,
    )
    .unwrap();
    t.mkdir_p(&TreePath::parse("emptydir").unwrap(), 0o755)
        .unwrap();
    let big_entry = Entry::file(
        Content::Host {
            path: Arc::new(host.path().to_path_buf()),
            offset: 14,
            len: big.len() as u64,
        },
        0o644,
    );
    t.insert(TreePath::parse("EFI/kios/initrd.img").unwrap(), big_entry)
        .unwrap();
    // Many names in one directory: its entries span several 512-byte clusters.
    for i in 0..40 {
        t.add_file(&format!("many/file number {i}.conf"), format!("{i}"), 0o644)
            .unwrap();
    }
    (t, big)
}

fn write(tree: &Tree, size: u64, offset: u64) -> Vec<u8> {
    let mut out = Cursor::new(vec![0u8; (offset + size) as usize]);
    write_fat32(tree, &mut out, offset, size, &EspOptions::default()).unwrap();
    out.into_inner()
}

#[test]
fn a_tree_reads_back_with_the_same_paths_and_contents() {
    let host = tempfile::NamedTempFile::new().unwrap();
    let (tree, big) = sample_tree(&host);
    let offset = MIB;
    let img = write(&tree, 40 * MIB, offset);
    let mut esp = EspReader::open(Cursor::new(img), offset).unwrap();
    assert_eq!(esp.label(), "KIOS_ESP");
    assert_eq!(esp.volume_id(), EspOptions::default().volume_id);

    let listed = esp.list().unwrap();
    let want: Vec<EspFile> = tree
        .iter()
        .filter(|(p, _)| !p.is_root())
        .map(|(p, e)| EspFile {
            path: p.as_str().to_string(),
            is_dir: e.kind == crate::tree::Kind::Dir,
            size: match &e.kind {
                crate::tree::Kind::File(c) => c.len(),
                _ => 0,
            },
        })
        .collect();
    let mut got = listed.clone();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let mut want_sorted = want.clone();
    want_sorted.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got, want_sorted);

    for f in want.iter().filter(|f| !f.is_dir) {
        let content = match &tree.get(&TreePath::parse(&f.path).unwrap()).unwrap().kind {
            crate::tree::Kind::File(c) => c.read_all().unwrap(),
            _ => unreachable!(),
        };
        let mut r = esp.open_file(&f.path).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, content, "{}", f.path);
    }

    // Seeking, including backwards, across cluster boundaries; lookups ignore case.
    let mut r = esp.open_file("efi/KIOS/Initrd.IMG").unwrap();
    assert_eq!(r.len(), big.len() as u64);
    let mut buf = vec![0u8; 10_000];
    r.seek(SeekFrom::Start(2_000_001)).unwrap();
    r.read_exact(&mut buf).unwrap();
    assert_eq!(buf, big[2_000_001..2_010_001]);
    r.seek(SeekFrom::Current(-1_500_000)).unwrap();
    r.read_exact(&mut buf).unwrap();
    assert_eq!(buf, big[510_001..520_001]);
    r.seek(SeekFrom::End(-3)).unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, big[big.len() - 3..]);

    assert!(matches!(
        esp.open_file("EFI/BOOT"),
        Err(EspError::IsADirectory { .. })
    ));
    assert!(matches!(
        esp.open_file("EFI/nope"),
        Err(EspError::NotFound { .. })
    ));
}

#[test]
fn the_on_disk_structures_are_what_fatgen103_asks_for() {
    let host = tempfile::NamedTempFile::new().unwrap();
    let (tree, _) = sample_tree(&host);
    let size = 64 * MIB;
    let img = write(&tree, size, 0);
    let geo = Geometry::for_size(size).unwrap();
    let sector = |n: usize| &img[n * 512..(n + 1) * 512];
    assert_eq!(&sector(0)[..3], &[0xEB, 0x58, 0x90]);
    assert_eq!(&sector(0)[510..], &[0x55, 0xAA]);
    assert_eq!(sector(0), sector(6), "backup boot sector");
    assert_eq!(sector(1), sector(7), "backup FSInfo");
    assert_eq!(get32(sector(1), 0), 0x4161_5252);
    assert_eq!(&sector(0)[71..82], b"KIOS_ESP   ");

    let fat = &img[geo.fat_offset(0) as usize..geo.fat_offset(1) as usize];
    assert_eq!(
        fat,
        &img[geo.fat_offset(1) as usize..geo.data_offset() as usize]
    );
    let entry = |c: u32| get32(fat, c as usize * 4);
    assert_eq!(entry(0), 0x0FFF_FFF8);
    assert_eq!(entry(1), 0x0FFF_FFFF);
    let free = (2..geo.clusters + 2).filter(|&c| entry(c) == 0).count() as u32;
    assert_eq!(get32(sector(1), 488), free, "FSI_Free_Count");
    let next_free = get32(sector(1), 492);
    assert_eq!(entry(next_free), 0);
    assert_ne!(entry(next_free - 1), 0);

    // The root starts with the label entry; a first-level directory's `..` is 0.
    let root = &img[geo.cluster_offset(2) as usize..];
    assert_eq!(&root[..11], b"KIOS_ESP   ");
    assert_eq!(root[11], 0x08);
    let efi = root
        .chunks(32)
        .find(|e| &e[..11] == b"EFI        ")
        .expect("EFI entry");
    let efi_cluster = u32::from(get16(efi, 26)) | (u32::from(get16(efi, 20)) << 16);
    let efi_dir = &img[geo.cluster_offset(efi_cluster) as usize..];
    assert_eq!(&efi_dir[..11], b".          ");
    assert_eq!(get16(efi_dir, 26), efi_cluster as u16);
    assert_eq!(&efi_dir[32..43], b"..         ");
    assert_eq!((get16(efi_dir, 32 + 26), get16(efi_dir, 32 + 20)), (0, 0));
    let boot = efi_dir
        .chunks(32)
        .find(|e| &e[..11] == b"BOOT       ")
        .expect("BOOT entry");
    let boot_dir = &img[geo.cluster_offset(u32::from(get16(boot, 26))) as usize..];
    assert_eq!(
        u32::from(get16(boot_dir, 32 + 26)),
        efi_cluster,
        "`..` of EFI/BOOT"
    );
}

#[test]
fn the_same_tree_and_options_give_the_same_bytes() {
    let host = tempfile::NamedTempFile::new().unwrap();
    let (tree, _) = sample_tree(&host);
    // Junk where the volume goes: every byte we depend on must be written.
    let mut out = Cursor::new(vec![0xA5u8; (40 * MIB) as usize]);
    write_fat32(&tree, &mut out, 0, 40 * MIB, &EspOptions::default()).unwrap();
    let a = write(&tree, 40 * MIB, 0);
    let b = out.into_inner();
    let geo = Geometry::for_size(40 * MIB).unwrap();
    let used = {
        let mut esp = EspReader::open(Cursor::new(a.clone()), 0).unwrap();
        esp.list().unwrap().len()
    };
    assert!(used > 40);
    // Everything up to the first free cluster is identical.
    let next_free = get32(&a[512..1024], 492);
    let end = geo.cluster_offset(next_free) as usize;
    assert_eq!(a[..end], b[..end]);
    assert_eq!(a, write(&tree, 40 * MIB, 0));
}

#[test]
fn entries_fat_cannot_hold_are_refused_with_their_path() {
    let mut t = Tree::new(0);
    t.insert(TreePath::parse("EFI/link").unwrap(), Entry::symlink("x"))
        .unwrap();
    let mut out = Cursor::new(Vec::new());
    let err = write_fat32(&t, &mut out, 0, 40 * MIB, &EspOptions::default()).unwrap_err();
    assert!(err.to_string().contains("/EFI/link"), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");

    let mut t = Tree::new(0);
    t.add_file("EFI/Boot", "x", 0o644).unwrap();
    t.add_file("EFI/BOOT", "y", 0o644).unwrap();
    let err = write_fat32(&t, &mut out, 0, 40 * MIB, &EspOptions::default()).unwrap_err();
    assert!(matches!(err, EspError::NameClash { .. }), "{err}");

    let opts = EspOptions {
        label: *b"kios esp   ",
        ..EspOptions::default()
    };
    let err = write_fat32(&Tree::new(0), &mut out, 0, 40 * MIB, &opts).unwrap_err();
    assert!(matches!(err, EspError::BadLabel { .. }), "{err}");
}

#[test]
fn sizes_too_small_for_fat32_or_for_the_files_are_refused() {
    let mut out = Cursor::new(Vec::new());
    let err =
        write_fat32(&Tree::new(0), &mut out, 0, 16 * MIB, &EspOptions::default()).unwrap_err();
    match &err {
        EspError::TooSmall { min, .. } => assert!(*min > 32 * MIB && *min < 34 * MIB),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("33 MiB"), "{err}");
    assert!(out.get_ref().is_empty(), "nothing is written on error");

    let host = tempfile::NamedTempFile::new().unwrap();
    host.as_file().set_len(40 * MIB).unwrap();
    let mut t = Tree::new(0);
    let entry = Entry::file(
        Content::Host {
            path: Arc::new(host.path().to_path_buf()),
            offset: 0,
            len: 40 * MIB,
        },
        0o644,
    );
    t.insert(TreePath::parse("EFI/BOOT/BOOTX64.EFI").unwrap(), entry)
        .unwrap();
    let err = write_fat32(&t, &mut out, 0, 40 * MIB, &EspOptions::default()).unwrap_err();
    assert!(matches!(err, EspError::DoesNotFit { .. }), "{err}");
    assert!(matches!(
        write_fat32(&t, &mut out, 0, 40 * MIB + 1, &EspOptions::default()),
        Err(EspError::SizeNotSectors { .. })
    ));

    let min = min_size(&t);
    assert_eq!(min % MIB, 0);
    assert!(min > 40 * MIB && min < 48 * MIB, "{min}");
    let file = tempfile::tempfile().unwrap();
    file.set_len(min).unwrap();
    let mut file = std::io::BufWriter::new(file);
    write_fat32(&t, &mut file, 0, min, &EspOptions::default()).unwrap();
}

#[test]
fn min_size_of_a_small_tree_is_the_fat32_minimum() {
    let mut t = Tree::new(0);
    t.add_file("EFI/BOOT/BOOTX64.EFI", vec![1u8; 1000], 0o644)
        .unwrap();
    assert_eq!(min_size(&t), 33 * MIB);
    let mut out = Cursor::new(vec![0u8; (33 * MIB) as usize]);
    write_fat32(&t, &mut out, 0, 33 * MIB, &EspOptions::default()).unwrap();
}
