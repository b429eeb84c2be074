//! Unit tests of the store writer over small layouts written here; the checks
//! against podman itself are in `tests/store_podman.rs`.

use std::io::{Read, Write};
use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::tree::Content;

/// A tar member: (name, type, data, uid, pax records).
type M<'a> = (
    &'a str,
    tar::EntryType,
    &'a [u8],
    u64,
    Vec<(&'a str, &'a [u8])>,
);

fn tar_of(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, ty, data, uid, pax) in members {
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (*k, *v)))
                .unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*ty);
        h.set_mode(if *ty == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(*uid);
        h.set_gid(*uid);
        h.set_mtime(1_000);
        if matches!(ty, tar::EntryType::Symlink | tar::EntryType::Link) {
            h.set_size(0);
            b.append_link(&mut h, name, std::str::from_utf8(data).unwrap())
                .unwrap();
        } else {
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let d = Digest::of_bytes(bytes);
    let path = d.blob_path(dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    json!({"mediaType": media_type, "digest": d.to_string(), "size": bytes.len()})
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A layout at `dir` with one image of `tars` (gzip'd), tagged "t"; opened.
fn image(dir: &Path, tars: &[Vec<u8>], created: &str) -> LayoutImage {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let layers: Vec<Value> = tars
        .iter()
        .map(|t| blob(dir, "application/vnd.oci.image.layer.v1.tar+gzip", &gzip(t)))
        .collect();
    let diff_ids: Vec<String> = tars
        .iter()
        .map(|t| Digest::of_bytes(t).to_string())
        .collect();
    let config = json!({"created": created, "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let config = blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": layers});
    let mut m = blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    m["annotations"] = json!({"org.opencontainers.image.ref.name": "t"});
    let index = json!({"schemaVersion": 2, "manifests": [m]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    crate::oci::open_layout(dir, Some("t"), "amd64").unwrap()
}

fn base_tar() -> Vec<u8> {
    use tar::EntryType as E;
    tar_of(&[
        ("./", E::Directory, b"", 0, vec![]),
        ("etc/", E::Directory, b"", 0, vec![]),
        ("etc/hello", E::Regular, b"hello\n", 0, vec![]),
        ("etc/hello2", E::Link, b"etc/hello", 0, vec![]),
        ("etc/gone", E::Regular, b"x", 0, vec![]),
        ("home/u/f", E::Regular, b"u", 1000, vec![]),
        ("bin/hl", E::Symlink, b"../etc/hello", 0, vec![]),
        ("d/a", E::Regular, b"a", 0, vec![]),
    ])
}

fn top_tar() -> Vec<u8> {
    use tar::EntryType as E;
    tar_of(&[
        ("d/", E::Directory, b"", 0, vec![]),
        ("d/.wh..wh..opq", E::Regular, b"", 0, vec![]),
        ("d/b", E::Regular, b"b\n", 0, vec![]),
        ("etc/.wh.gone", E::Regular, b"", 5, vec![]),
        (
            "etc/new",
            E::Regular,
            b"new\n",
            0,
            vec![("SCHILY.xattr.user.test", b"val")],
        ),
    ])
}

fn file_text(tree: &Tree, path: &str) -> Vec<u8> {
    match &tree.get(&TreePath::parse(path).unwrap()).unwrap().kind {
        Kind::File(c) => c.read_all().unwrap(),
        other => panic!("{path} is {other:?}"),
    }
}

fn json_of(tree: &Tree, path: &str) -> Value {
    serde_json::from_slice(&file_text(tree, path)).unwrap()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .take_while(|c| **c != b'=')
            .enumerate()
            .fold(0u32, |acc, (i, c)| {
                acc | (u32::from(val(*c)) << (18 - 6 * i))
            });
        let bytes = chunk.iter().filter(|c| **c != b'=').count() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + bytes]);
    }
    out
}

/// Reassembles a layer tar from its tar-split and diff directory, as
/// containers/storage does for `podman push` / `skopeo copy containers-storage:`.
fn reassemble(tree: &Tree, layer_id: &str) -> Vec<u8> {
    let gz = file_text(tree, &format!("overlay-layers/{layer_id}.tar-split.gz"));
    let mut lines = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut lines)
        .unwrap();
    let mut out = Vec::new();
    for line in lines.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        match e["type"].as_u64().unwrap() {
            2 => out.extend(base64_decode(e["payload"].as_str().unwrap())),
            1 if e["size"].as_u64().unwrap_or(0) > 0 => {
                let name = e["name"].as_str().unwrap();
                let p = format!("overlay/{layer_id}/diff/{name}");
                let p = TreePath::parse(&p).unwrap();
                let kind = &tree.get(&p).unwrap().kind;
                let content: &Content = match kind {
                    Kind::File(c) => c,
                    Kind::Hardlink(t) => match &tree.get(t).unwrap().kind {
                        Kind::File(c) => c,
                        _ => panic!(),
                    },
                    _ => panic!("{name}: {kind:?}"),
                };
                out.extend(content.read_all().unwrap());
            }
            _ => {}
        }
    }
    out
}

#[test]
fn layer_ids_chain_like_containers_image() {
    // Ids podman 4.3.1 gave the two layers of an image.
    let d1: Digest = "sha256:85f226fe3c7b7275717d0aad1fdf4cbf3b2922b73f40fc55a5e44e43ac531c20"
        .parse()
        .unwrap();
    let d2: Digest = "sha256:6c07996b231610d401dbf29b71647e69ba5b95b02b383c93fff556fa7687cc34"
        .parse()
        .unwrap();
    assert_eq!(
        layer_ids(&[d1.clone(), d2]),
        [
            d1.hex().to_string(),
            "2f59a94a32db21c7c7af02526264b10b0d224a46350f9a7e6c49b4cea19e33f3".to_string()
        ]
    );
}

#[test]
fn two_images_share_their_base_layer_and_tar_split_rebuilds_each_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, top) = (base_tar(), top_tar());
    let a = image(
        &tmp.path().join("a"),
        &[base.clone(), top.clone()],
        "2024-01-02T03:04:05Z",
    );
    let b = image(
        &tmp.path().join("b"),
        std::slice::from_ref(&base),
        "2024-01-02T03:04:05.500Z",
    );
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let images = [
        StoreImage {
            image: a.clone(),
            names: vec!["example.org/a:1".into()],
        },
        StoreImage {
            image: b.clone(),
            names: vec!["example.org/b:1".into()],
        },
    ];
    let tree = build_store(&images, &spool, &StoreOptions::new(1_700_000_000)).unwrap();
    let again = build_store(&images, &spool, &StoreOptions::new(1_700_000_000)).unwrap();
    assert_eq!(tree, again, "the store is a function of its inputs");

    let ids = layer_ids(&[a.layers[0].diff_id.clone(), a.layers[1].diff_id.clone()]);
    let layers = json_of(&tree, "overlay-layers/layers.json");
    assert_eq!(layers.as_array().unwrap().len(), 2, "{layers:#}");
    assert_eq!(layers[0]["id"], ids[0]);
    assert_eq!(layers[0]["uidset"], json!([0, 1000]));
    assert_eq!(layers[1]["parent"], ids[0]);
    assert_eq!(layers[1]["compression"], 2);
    assert_eq!(layers[1]["uidset"], json!([0]), "whiteouts are not counted");
    assert_eq!(layers[1]["diff-size"], top.len());
    assert_eq!(layers[1]["created"], "2023-11-14T22:13:20Z");

    let imgs = json_of(&tree, "overlay-images/images.json");
    assert_eq!(imgs[0]["id"], a.config_digest.hex());
    assert_eq!(imgs[0]["digest"], a.manifest_digest.to_string());
    assert_eq!(imgs[0]["layer"], ids[1]);
    assert_eq!(imgs[0]["created"], "2024-01-02T03:04:05Z");
    assert_eq!(imgs[1]["layer"], ids[0]);
    assert_eq!(imgs[1]["created"], "2024-01-02T03:04:05.5Z");
    let manifest = file_text(
        &tree,
        &format!("overlay-images/{}/manifest", a.config_digest.hex()),
    );
    assert_eq!(Digest::of_bytes(&manifest), a.manifest_digest);

    assert_eq!(reassemble(&tree, &ids[0]), base);
    assert_eq!(reassemble(&tree, &ids[1]), top);

    let link = String::from_utf8(file_text(&tree, &format!("overlay/{}/link", ids[0]))).unwrap();
    assert_eq!(link.len(), 26);
    let lower = String::from_utf8(file_text(&tree, &format!("overlay/{}/lower", ids[1]))).unwrap();
    assert_eq!(lower, format!("l/{link}"));
    assert_eq!(
        tree.get(&TreePath::parse(&format!("overlay/l/{link}")).unwrap())
            .unwrap()
            .kind,
        Kind::Symlink(format!("../{}/diff", ids[0]))
    );
    let gone = tree
        .get(&TreePath::parse(&format!("overlay/{}/diff/etc/gone", ids[1])).unwrap())
        .unwrap();
    assert_eq!(
        (&gone.kind, gone.uid),
        (&Kind::CharDevice { major: 0, minor: 0 }, 5)
    );
    let hl2 = tree
        .get(&TreePath::parse(&format!("overlay/{}/diff/etc/hello2", ids[0])).unwrap())
        .unwrap();
    assert_eq!(
        hl2.kind,
        Kind::Hardlink(TreePath::parse(&format!("overlay/{}/diff/etc/hello", ids[0])).unwrap())
    );
}

#[test]
fn a_name_given_to_two_images_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = image(&tmp.path().join("a"), &[base_tar()], "2024-01-01T00:00:00Z");
    let b = image(&tmp.path().join("b"), &[top_tar()], "2024-01-01T00:00:00Z");
    let images = [
        StoreImage {
            image: a,
            names: vec!["x/y:1".into()],
        },
        StoreImage {
            image: b,
            names: vec!["x/y:1".into()],
        },
    ];
    let err = build_store(&images, tmp.path(), &StoreOptions::new(0)).unwrap_err();
    assert!(matches!(err, StoreError::NameConflict { .. }), "{err}");
}

#[test]
fn duplicate_members_and_overlay_xattrs_are_refused_naming_image_and_entry() {
    use tar::EntryType as E;
    let tmp = tempfile::tempdir().unwrap();
    let dup = tar_of(&[
        ("a", E::Regular, b"1", 0, vec![]),
        ("./a", E::Regular, b"2", 0, vec![]),
    ]);
    let img = image(&tmp.path().join("dup"), &[dup], "2024-01-01T00:00:00Z");
    let images = [StoreImage {
        image: img,
        names: vec![],
    }];
    let err = build_store(&images, tmp.path(), &StoreOptions::new(0)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("dup:t") && msg.contains("entry \"a\"") && msg.contains("two members"),
        "{msg}"
    );

    let xa = tar_of(&[(
        "x",
        E::Regular,
        b"1",
        0,
        vec![("SCHILY.xattr.trusted.overlay.redirect", b"/etc")],
    )]);
    let img = image(&tmp.path().join("xa"), &[xa], "2024-01-01T00:00:00Z");
    let images = [StoreImage {
        image: img,
        names: vec![],
    }];
    let msg = build_store(&images, tmp.path(), &StoreOptions::new(0))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("xa:t") && msg.contains("/x") && msg.contains("trusted.overlay.redirect"),
        "{msg}"
    );
}

#[test]
fn storage_conf_names_the_store_as_additional() {
    let c = storage_conf(
        "/var/lib/kios/store",
        "/var/lib/containers/storage",
        "/run/containers/storage",
    );
    assert!(c.contains("driver = \"overlay\""));
    assert!(c.contains("additionalimagestores = [\"/var/lib/kios/store\"]"));
    assert!(c.contains("graphroot = \"/var/lib/containers/storage\""));
}

/// `read.rs`: the distinct layers are read once each, on any number of workers, and
/// the store is the same bytes whatever that number.
#[test]
fn the_store_is_the_same_with_one_worker_and_with_four() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = vec![
        StoreImage {
            image: image(
                &d.join("a"),
                &[base_tar(), top_tar()],
                "2024-01-01T00:00:00Z",
            ),
            names: vec!["x/a:1".into()],
        },
        StoreImage {
            image: image(&d.join("b"), &[base_tar()], "2024-01-02T00:00:00Z"),
            names: vec!["x/b:1".into()],
        },
    ];
    // The base layer is shared: two layers to read, not three.
    assert_eq!(read::jobs(&images).len(), 2);
    let bytes = |workers: usize| {
        let spool = d.join(format!("spool{workers}"));
        std::fs::create_dir_all(&spool).unwrap();
        let opts = StoreOptions {
            workers,
            ..StoreOptions::new(7)
        };
        let tree = build_store(&images, &spool, &opts).unwrap();
        let mut out = std::io::Cursor::new(Vec::new());
        let erofs = crate::store::erofs::ErofsOptions {
            uuid: [1; 16],
            volume_name: "store".into(),
            mtime: 7,
            ..Default::default()
        };
        crate::store::erofs::write_erofs(&tree, &mut out, &erofs).unwrap();
        out.into_inner()
    };
    assert_eq!(bytes(1), bytes(4));
}
