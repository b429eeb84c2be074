//! Layer reading and merging, end to end from a layout written in the test.

use tempfile::TempDir;

use super::fixture::{self, tar_of, T};
use super::*;
use crate::tree::{Kind, Tree, TreePath};

use Compression::{Gzip, None as Plain, Zstd};

struct Applied {
    tree: Tree,
    _dir: TempDir,
}

fn apply_with(layers: &[(Compression, Vec<u8>)], limits: &Limits) -> Result<Applied, OciError> {
    let dir = TempDir::new().unwrap();
    let layout = dir.path().join("layout");
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::create_dir_all(&spool).unwrap();
    fixture::single(&layout, layers);
    let image = open_layout(&layout, Some("t"), "amd64").unwrap();
    let mut tree = Tree::new(0);
    apply_layers(&image, &spool, limits, &mut tree)?;
    Ok(Applied { tree, _dir: dir })
}

fn apply(layers: &[(Compression, Vec<u8>)]) -> Result<Applied, OciError> {
    apply_with(layers, &Limits::default())
}

fn p(s: &str) -> TreePath {
    TreePath::parse(s).unwrap()
}

fn content(tree: &Tree, path: &str) -> Vec<u8> {
    match &tree
        .get(&p(path))
        .unwrap_or_else(|| panic!("{path} missing"))
        .kind
    {
        Kind::File(c) => c.read_all().unwrap(),
        other => panic!("{path} is {other:?}"),
    }
}

fn paths(tree: &Tree) -> Vec<String> {
    tree.iter().map(|(p, _)| p.as_str().to_string()).collect()
}

/// The error is about `entry` (as the layer names it) and says `why`.
#[track_caller]
fn assert_entry_error(r: Result<Applied, OciError>, entry: &str, why: &str) {
    let err = r.err().expect("the layer was accepted");
    let msg = err.to_string();
    assert!(matches!(err, OciError::Entry { .. }), "{msg}");
    assert!(msg.contains(entry) && msg.contains(why), "{msg}");
    assert!(msg.contains("oci:") && msg.contains("sha256:"), "{msg}");
}

#[test]
fn layers_merge_with_whiteouts_and_opaque_directories() {
    let base = tar_of(&[
        T::Dir("etc"),
        T::File("etc/a", b"a0"),
        T::File("etc/b", b"b0"),
        T::Dir("opt/d"),
        T::File("opt/d/old", b"old"),
        T::Dir("opt/d/sub"),
        T::File("opt/d/sub/x", b"x"),
        T::File("usr/bin/tool", b"v1"),
        T::Dir("var/gone"),
        T::File("var/gone/f", b"f"),
    ]);
    let upper = tar_of(&[
        // The layer re-adds what it whites out: whiteouts only hide lower layers.
        T::File("etc/.wh.a", b""),
        T::Dir("opt/d"),
        T::File("opt/d/new", b"new"),
        T::File("opt/d/.wh..wh..opq", b""),
        T::File("usr/bin/tool", b"v2"),
        T::File("var/.wh.gone", b""),
        T::File("var/gone", b"now a file"),
        T::File(".wh.nothing-there", b""),
    ]);
    let third = tar_of(&[T::File("etc/.wh.b", b""), T::File("etc/a", b"a2")]);
    let a = apply(&[(Gzip, base), (Zstd, upper), (Plain, third)]).unwrap();
    assert_eq!(
        paths(&a.tree),
        [
            "",
            "etc",
            "etc/a",
            "opt",
            "opt/d",
            "opt/d/new",
            "usr",
            "usr/bin",
            "usr/bin/tool",
            "var",
            "var/gone"
        ]
    );
    assert_eq!(content(&a.tree, "etc/a"), b"a2");
    assert_eq!(content(&a.tree, "usr/bin/tool"), b"v2");
    assert_eq!(content(&a.tree, "var/gone"), b"now a file");
    let e = a.tree.get(&p("usr/bin/tool")).unwrap();
    assert_eq!(
        (e.mode, e.uid, e.gid, e.mtime),
        (0o644, 1000, 100, 1_700_000_000)
    );
}

#[test]
fn a_layer_read_alone_keeps_its_whiteouts_apart() {
    let dir = TempDir::new().unwrap();
    let tar = tar_of(&[
        T::File("a/.wh.b", b""),
        T::File("c/.wh..wh..opq", b""),
        T::File("a/x", b"1"),
    ]);
    fixture::single(dir.path(), &[(Gzip, tar)]);
    let image = open_layout(dir.path(), Some("t"), "amd64").unwrap();
    let (tree, whiteouts) = read_layer_tree(
        &image.reference,
        0,
        &image.layers[0],
        dir.path(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(paths(&tree), ["", "a", "a/x"]);
    assert_eq!(
        whiteouts,
        [Whiteout::Remove(p("a/b")), Whiteout::Opaque(p("c"))]
    );
}

#[test]
fn contents_are_ranges_of_the_spool_or_of_an_uncompressed_blob() {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for c in [Plain, Gzip, Zstd] {
        let a = apply(&[(c, tar_of(&[T::File("f", &big), T::File("g", b"tail")]))]).unwrap();
        assert_eq!(content(&a.tree, "f"), big);
        assert_eq!(content(&a.tree, "g"), b"tail");
        let Kind::File(crate::tree::Content::Host { path, .. }) =
            &a.tree.get(&p("f")).unwrap().kind
        else {
            panic!("not a host range")
        };
        let in_blobs = path.components().any(|c| c.as_os_str() == "blobs");
        assert_eq!(in_blobs, c == Plain, "{c:?}: {}", path.display());
    }
}

#[test]
fn links_devices_fifos_and_escaping_symlink_targets_are_values() {
    let a = apply(&[(
        Gzip,
        tar_of(&[
            T::File("bin/busybox", b"bb"),
            T::Hardlink("bin/sh", "bin/busybox"),
            T::Hardlink("bin/ls", "/bin/sh"),
            T::Symlink("etc/abs", "/etc/shadow"),
            T::Symlink("etc/up", "../../../../etc/shadow"),
            T::Char("dev/null", 1, 3),
            T::Fifo("run/fifo"),
        ]),
    )])
    .unwrap();
    let kind = |s: &str| a.tree.get(&p(s)).unwrap().kind.clone();
    assert_eq!(kind("bin/sh"), Kind::Hardlink(p("bin/busybox")));
    assert_eq!(
        kind("bin/ls"),
        Kind::Hardlink(p("bin/busybox")),
        "links point at the file"
    );
    assert_eq!(kind("etc/abs"), Kind::Symlink("/etc/shadow".into()));
    assert_eq!(
        kind("etc/up"),
        Kind::Symlink("../../../../etc/shadow".into())
    );
    assert_eq!(kind("dev/null"), Kind::CharDevice { major: 1, minor: 3 });
    assert_eq!(kind("run/fifo"), Kind::Fifo);
}

#[test]
fn a_lower_hard_link_keeps_the_old_file_when_its_target_is_removed() {
    let base = tar_of(&[
        T::File("f", b"one"),
        T::Hardlink("l1", "f"),
        T::Hardlink("l2", "f"),
    ]);
    let upper = tar_of(&[T::File(".wh.f", b"")]);
    let a = apply(&[(Gzip, base), (Gzip, upper)]).unwrap();
    assert_eq!(content(&a.tree, "l1"), b"one");
    assert_eq!(a.tree.get(&p("l2")).unwrap().kind, Kind::Hardlink(p("l1")));
    assert!(a.tree.get(&p("f")).is_none());
}

#[test]
fn pax_xattrs_with_binary_values_and_long_names_are_read() {
    let cap = b"\x01\x00\x00\x02\n\x20\x00\x00";
    let long = format!("{}/file", "d".repeat(200));
    let a = apply(&[(
        Gzip,
        tar_of(&[
            T::Pax(
                "bin/ping",
                b"ping",
                vec![("SCHILY.xattr.security.capability", cap)],
            ),
            T::File(&long, b"long"),
        ]),
    )])
    .unwrap();
    assert_eq!(
        a.tree.get(&p("bin/ping")).unwrap().xattrs["security.capability"],
        cap
    );
    assert_eq!(content(&a.tree, &long), b"long");
}

#[test]
fn absolute_raw_names_are_read_as_relative() {
    let a = apply(&[(
        Gzip,
        tar_of(&[T::RawName(b"/etc/abs", tar::EntryType::Regular, b"x")]),
    )])
    .unwrap();
    assert_eq!(content(&a.tree, "etc/abs"), b"x");
}

#[test]
fn tampered_blob_is_rejected_and_nothing_is_applied() {
    let dir = TempDir::new().unwrap();
    fixture::single(dir.path(), &[(Gzip, tar_of(&[T::File("f", b"hello")]))]);
    let image = open_layout(dir.path(), Some("t"), "amd64").unwrap();
    let blob = &image.layers[0];
    let mut bytes = std::fs::read(&blob.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&blob.path, &bytes).unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let mut tree = Tree::new(0);
    let err = apply_layers(&image, &spool, &Limits::default(), &mut tree).unwrap_err();
    assert!(matches!(err, OciError::BlobDigest { .. }), "{err}");
    assert!(err.to_string().contains(&blob.digest.to_string()), "{err}");
    assert_eq!(tree, Tree::new(0));
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "no spool file is left"
    );
}

#[test]
fn wrong_diff_id_is_rejected() {
    let dir = TempDir::new().unwrap();
    fixture::layout(dir.path());
    let tar = tar_of(&[T::File("f", b"x")]);
    let wrong = Digest::of_bytes(b"something else").to_string();
    let m = fixture::image(dir.path(), "amd64", &[(Zstd, tar)], Some(vec![wrong]));
    fixture::write_index(dir.path(), vec![fixture::tagged(m, "t")]);
    let image = open_layout(dir.path(), Some("t"), "amd64").unwrap();
    let err = apply_layers(&image, dir.path(), &Limits::default(), &mut Tree::new(0)).unwrap_err();
    assert!(matches!(err, OciError::DiffId { .. }), "{err}");
}

#[test]
fn media_type_and_magic_bytes_must_agree() {
    let dir = TempDir::new().unwrap();
    fixture::single(dir.path(), &[(Zstd, tar_of(&[T::File("f", b"x")]))]);
    let mut image = open_layout(dir.path(), Some("t"), "amd64").unwrap();
    image.layers[0].compression = Gzip;
    image.layers[0].media_type = fixture::layer_media_type(Gzip).into();
    let err = apply_layers(&image, dir.path(), &Limits::default(), &mut Tree::new(0)).unwrap_err();
    assert!(
        matches!(
            err,
            OciError::Compression {
                detected: "zstd-compressed",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn dot_dot_names_are_rejected() {
    let r = apply(&[(
        Gzip,
        tar_of(&[T::RawName(b"../escape", tar::EntryType::Regular, b"x")]),
    )]);
    assert_entry_error(r, "../escape", "`..`");
    let r = apply(&[(
        Gzip,
        tar_of(&[T::RawName(b"a/../../x", tar::EntryType::Regular, b"x")]),
    )]);
    assert_entry_error(r, "a/../../x", "`..`");
    let r = apply(&[(Gzip, tar_of(&[T::File("a/.wh...", b"")]))]);
    assert_entry_error(r, "a/.wh...", "whiteout");
}

#[test]
fn writing_through_a_symlink_is_rejected() {
    let lower = tar_of(&[T::Symlink("a", "/etc")]);
    let upper = tar_of(&[T::File("a/passwd", b"root::0:0")]);
    assert_entry_error(
        apply(&[(Gzip, lower.clone()), (Gzip, upper)]),
        "/a/passwd",
        "/a is a symlink",
    );
    let same = tar_of(&[T::Symlink("b", "/"), T::File("b/x", b"x")]);
    assert_entry_error(apply(&[(Gzip, same)]), "/b/x", "/b is a symlink");
    let whiteout = tar_of(&[T::File("a/.wh.passwd", b"")]);
    assert_entry_error(
        apply(&[(Gzip, lower.clone()), (Gzip, whiteout)]),
        "/a/.wh.passwd",
        "symlink",
    );
    // Replacing the symlink by a directory first is fine.
    let fixed = tar_of(&[T::Dir("a"), T::File("a/passwd", b"p")]);
    let ok = apply(&[(Gzip, lower), (Gzip, fixed)]).unwrap();
    assert_eq!(content(&ok.tree, "a/passwd"), b"p");
}

#[test]
fn bad_hard_links_are_rejected() {
    let missing = tar_of(&[T::Hardlink("l", "nowhere")]);
    assert_entry_error(apply(&[(Gzip, missing)]), "/l", "does not exist");
    let outside = tar_of(&[T::RawLink("l", b"../../etc/shadow")]);
    assert_entry_error(apply(&[(Gzip, outside)]), "l", "`..`");
    let dir = tar_of(&[T::Dir("d"), T::Hardlink("l", "d")]);
    assert_entry_error(apply(&[(Gzip, dir)]), "/l", "is a directory");
    let symlink = tar_of(&[T::Symlink("s", "/x"), T::Hardlink("l", "s")]);
    assert_entry_error(apply(&[(Gzip, symlink)]), "/l", "not a regular file");
    let own = tar_of(&[T::File("f", b"1"), T::Hardlink("f", "f")]);
    assert_entry_error(apply(&[(Gzip, own)]), "/f", "itself");
    let replaced = tar_of(&[T::File("f", b"1"), T::Hardlink("l", "f"), T::Dir("f")]);
    assert_entry_error(apply(&[(Gzip, replaced)]), "/l", "replaces afterwards");
}

#[test]
fn limits_are_enforced() {
    let tar = tar_of(&[T::File("a", &[7u8; 4096]), T::File("b", b"x")]);
    let limit_error = |limits: Limits, what: &str| {
        let err = apply_with(&[(Gzip, tar.clone())], &limits)
            .err()
            .expect("accepted");
        assert!(matches!(err, OciError::Limit { .. }), "{err}");
        assert!(err.to_string().contains(what), "{err}");
    };
    limit_error(
        Limits {
            max_file_size: 4095,
            ..Limits::default()
        },
        "entry \"a\"",
    );
    limit_error(
        Limits {
            max_entries: 1,
            ..Limits::default()
        },
        "number of entries",
    );
    limit_error(
        Limits {
            max_total: 4096,
            ..Limits::default()
        },
        "uncompressed size",
    );
    let xattr = tar_of(&[T::Pax(
        "f",
        b"",
        vec![("SCHILY.xattr.user.big", &[1u8; 100][..])],
    )]);
    let err = apply_with(
        &[(Gzip, xattr)],
        &Limits {
            max_xattr: 99,
            ..Limits::default()
        },
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("user.big") && err.to_string().contains("\"f\""),
        "{err}"
    );
}

#[test]
fn the_uncompressed_bound_holds_for_all_layers_of_an_image_together() {
    let tar = tar_of(&[T::File("a", &[7u8; 4096])]);
    let limits = Limits {
        max_total: tar.len() as u64 * 3 / 2,
        ..Limits::default()
    };
    // One layer fits; a second one of the same size does not fit what is left.
    apply_with(&[(Gzip, tar.clone())], &limits).unwrap();
    let other = tar_of(&[T::File("b", &[8u8; 4096])]);
    let err = apply_with(&[(Gzip, tar), (Zstd, other)], &limits)
        .err()
        .expect("accepted");
    assert!(
        matches!(err, OciError::Limit { index: 1, .. }),
        "the second layer is over the bound: {err}"
    );
}

#[test]
fn truncated_archives_are_rejected() {
    let tar = tar_of(&[T::File("a", &[1u8; 3000]), T::File("b", b"x")]);
    // Cut inside a's data: the header claims more than the stream has.
    let r = apply(&[(Gzip, tar[..1500].to_vec())]);
    assert_entry_error(r, "\"a\"", "truncated");
    // Cut inside a header block after the last member: refused.
    let end_of_b = 512 + 3072 + 1024;
    let err = apply(&[(Zstd, tar[..end_of_b + 100].to_vec())])
        .err()
        .unwrap();
    assert!(
        matches!(err, OciError::Tar { .. }) && err.to_string().contains("at offset 4608"),
        "{err}"
    );
}

/// An archive that ends at a header boundary without the end-of-archive blocks is
/// read as Go's archive/tar and GNU tar read it (umoci writes such layers; the
/// diff_id has already proved the bytes are the layer's); so is an empty one.
#[test]
fn an_archive_without_end_marker_at_a_header_boundary_is_read_whole() {
    let tar = tar_of(&[T::File("a", &[1u8; 3000]), T::File("b", b"x")]);
    let end_of_b = 512 + 3072 + 1024;
    assert!(apply(&[(Zstd, tar[..end_of_b].to_vec())]).is_ok());
    assert!(apply(&[(Plain, Vec::new())]).is_ok());
}

#[test]
fn a_pax_size_that_disagrees_with_the_header_is_rejected() {
    let tar = tar_of(&[T::Pax("f", b"abc", vec![("size", b"1024")])]);
    assert_entry_error(apply(&[(Gzip, tar)]), "\"f\"", "PAX size");
}
