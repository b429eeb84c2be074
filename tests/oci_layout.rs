//! Local OCI image layouts against the real tools: a layout written by hand (layers
//! made by GNU tar) must be accepted by skopeo, and what skopeo re-writes (zstd
//! recompressed, or kept uncompressed) must read back to exactly the files put in.
//! Missing tools fail the test with the package to install; they are never skipped.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use common::run_tool;
use kios_build::oci::{apply_layers, open_layout, Digest, Limits};
use kios_build::tree::{Kind, Tree};
use serde_json::json;
use tempfile::TempDir;

/// A reproducible layer tar of `root`, made by GNU tar.
fn gnu_tar(root: &Path, out: &Path) -> Vec<u8> {
    run_tool(
        "tar",
        "tar",
        &[
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=posix",
            "--pax-option=delete=atime,delete=ctime",
            "-C",
            root.to_str().unwrap(),
            "-cf",
            out.to_str().unwrap(),
            ".",
        ],
    );
    fs::read(out).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes the layout by hand; returns the manifest bytes.
fn write_layout(dir: &Path, layers: &[(&str, Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let descs: Vec<_> = layers
        .iter()
        .map(|(mt, blob, _)| common::layout::blob(dir, mt, blob))
        .collect();
    let diff_ids: Vec<_> = layers
        .iter()
        .map(|(_, _, tar)| Digest::of_bytes(tar).to_string())
        .collect();
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/hello"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = common::layout::blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": descs,
    }))
    .unwrap();
    let mut desc =
        common::layout::blob(dir, "application/vnd.oci.image.manifest.v1+json", &manifest);
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": "t"});
    let index = json!({"schemaVersion": 2, "manifests": [desc]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    manifest
}

/// What a tree says about each path: kind, mode and bytes.
fn summary(tree: &Tree) -> BTreeMap<String, String> {
    tree.iter()
        .filter(|(p, _)| !p.is_root())
        .map(|(p, e)| {
            let what = match &e.kind {
                Kind::File(c) => format!(
                    "file {:o} {:?}",
                    e.mode,
                    String::from_utf8(c.read_all().unwrap()).unwrap()
                ),
                Kind::Dir => format!("dir {:o}", e.mode),
                Kind::Symlink(t) => format!("symlink {t}"),
                Kind::Hardlink(t) => format!("hardlink {t}"),
                other => format!("{other:?}"),
            };
            (
                p.as_str().to_string(),
                format!("{what} {}:{} {}", e.uid, e.gid, e.mtime),
            )
        })
        .collect()
}

#[test]
fn a_hand_written_layout_survives_skopeo_and_reads_back_exactly() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();

    // Layer 1: a small root filesystem.
    let r1 = t.join("root1");
    fs::create_dir_all(r1.join("bin")).unwrap();
    fs::create_dir_all(r1.join("etc/ssl")).unwrap();
    fs::create_dir_all(r1.join("var/cache/old")).unwrap();
    fs::write(r1.join("bin/hello"), b"#!/bin/sh\necho hello\n").unwrap();
    fs::set_permissions(r1.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::hard_link(r1.join("bin/hello"), r1.join("bin/hi")).unwrap();
    fs::write(r1.join("etc/os-release"), b"ID=kios\n").unwrap();
    fs::write(r1.join("etc/remove-me"), b"x").unwrap();
    fs::write(r1.join("etc/ssl/cert.pem"), b"cert").unwrap();
    fs::write(r1.join("var/cache/old/blob"), b"cached").unwrap();
    symlink("/etc/ssl/cert.pem", r1.join("etc/cert")).unwrap();
    let long = format!("etc/{}", "n".repeat(120));
    fs::write(r1.join(&long), b"long name").unwrap();
    // Layer 2: changes, with a whiteout and an opaque directory.
    let r2 = t.join("root2");
    fs::create_dir_all(r2.join("etc")).unwrap();
    fs::create_dir_all(r2.join("var/cache")).unwrap();
    fs::write(r2.join("etc/.wh.remove-me"), b"").unwrap();
    fs::write(r2.join("etc/os-release"), b"ID=kios\nVERSION=2\n").unwrap();
    fs::write(r2.join("var/cache/.wh..wh..opq"), b"").unwrap();
    fs::write(r2.join("var/cache/new"), b"fresh").unwrap();
    for dir in [&r1, &r2] {
        for d in [
            "",
            "bin",
            "etc",
            "etc/ssl",
            "var",
            "var/cache",
            "var/cache/old",
        ] {
            let p = dir.join(d);
            if p.is_dir() {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }
    let tar1 = gnu_tar(&r1, &t.join("l1.tar"));
    let tar2 = gnu_tar(&r2, &t.join("l2.tar"));

    let src = t.join("src");
    let manifest = write_layout(
        &src,
        &[
            ("application/vnd.oci.image.layer.v1.tar", tar1.clone(), tar1),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                gzip(&tar2),
                tar2,
            ),
        ],
    );

    let src_ref = format!("oci:{}:t", src.display());
    let raw = run_tool("skopeo", "skopeo", &["inspect", "--raw", &src_ref]);
    assert_eq!(raw, manifest, "skopeo reads our manifest as written");
    let listed = run_tool("umoci", "umoci", &["ls", "--layout", src.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&listed).trim(), "t");

    let zstd = t.join("zstd");
    let plain = t.join("plain");
    let zstd_ref = format!("oci:{}:t", zstd.display());
    let plain_ref = format!("oci:{}:t", plain.display());
    run_tool(
        "skopeo",
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-compress-format",
            "zstd",
            &src_ref,
            &zstd_ref,
        ],
    );
    run_tool(
        "skopeo",
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-oci-accept-uncompressed-layers",
            &src_ref,
            &plain_ref,
        ],
    );

    let mut results = Vec::new();
    for dir in [&src, &zstd, &plain] {
        let image = open_layout(dir, Some("t"), "amd64").unwrap();
        let media: Vec<_> = image.layers.iter().map(|l| l.media_type.clone()).collect();
        let spool = t.join(format!(
            "spool-{}",
            dir.file_name().unwrap().to_string_lossy()
        ));
        fs::create_dir_all(&spool).unwrap();
        let mut tree = Tree::new(0);
        apply_layers(&image, &spool, &Limits::default(), &mut tree).unwrap();
        results.push((media, summary(&tree)));
    }
    assert!(
        results[1].0[0].ends_with("+zstd"),
        "skopeo recompressed: {:?}",
        results[1].0
    );
    assert!(
        results[2].0[0].ends_with(".tar"),
        "kept uncompressed: {:?}",
        results[2].0
    );

    let s = &results[0].1;
    let expect = |path: &str, what: &str| {
        assert_eq!(
            s.get(path).map(String::as_str),
            Some(what),
            "{path} in {s:#?}"
        );
    };
    expect("bin/hello", "file 755 \"#!/bin/sh\\necho hello\\n\" 0:0 0");
    expect("bin/hi", "hardlink /bin/hello 0:0 0");
    expect("etc/cert", "symlink /etc/ssl/cert.pem 0:0 0");
    expect(
        "etc/os-release",
        "file 644 \"ID=kios\\nVERSION=2\\n\" 0:0 0",
    );
    expect(&long, "file 644 \"long name\" 0:0 0");
    expect("var/cache/new", "file 644 \"fresh\" 0:0 0");
    assert!(!s.contains_key("etc/remove-me"), "whiteout applied");
    assert!(!s.contains_key("var/cache/old"), "opaque directory applied");
    assert!(
        !s.keys().any(|k| k.contains(".wh.")),
        "whiteout files are not entries"
    );
    assert_eq!(results[1].1, *s, "zstd copy reads back the same");
    assert_eq!(results[2].1, *s, "uncompressed copy reads back the same");
}
