//! OCI image layouts written by hand for the integration tests: layer tars (from
//! members or from a host folder), blobs, image manifests, tags and indexes. One
//! writer for every test; `tests/common/registry.rs` pushes what it writes.

use std::fs;
use std::path::Path;
use std::process::Command;

use kios_build::oci::Digest;
use serde_json::{json, Value};

use super::{require_tool, run, text};

pub const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// A reproducible tar of `files` (path, mode, content), GNU tar's format.
pub fn tar_of(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (path, _, _) in files {
        let mut acc = String::new();
        for c in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            acc = if acc.is_empty() {
                c.to_string()
            } else {
                format!("{acc}/{c}")
            };
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(0);
                h.set_mtime(0);
                h.set_cksum();
                b.append_data(&mut h, format!("{acc}/"), std::io::empty())
                    .unwrap();
            }
        }
    }
    for (path, mode, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(content.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path, *content).unwrap();
    }
    b.into_inner().unwrap()
}

/// `tar` compressed for `media_type`.
pub fn compress(media_type: &str, tar: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match media_type {
        OCI_GZIP => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        OCI_ZSTD => zstd::encode_all(tar, 3).unwrap(),
        _ => tar.to_vec(),
    }
}

/// Stores `bytes` as a blob of the layout `dir`; returns its descriptor.
pub fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let d = Digest::of_bytes(bytes);
    let path = d.blob_path(dir);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    json!({"mediaType": media_type, "digest": d.to_string(), "size": bytes.len()})
}

/// Writes an image (its layers given as (media type, uncompressed tar)) into the
/// layout `dir`, without touching index.json; returns the manifest's descriptor.
pub fn image(dir: &Path, arch: &str, layers: &[(&str, Vec<u8>)]) -> Value {
    image_with(dir, arch, layers, json!({}))
}

/// [`image`] with `extra` merged into the config's top level (`created`,
/// `config: {Entrypoint: ...}`).
pub fn image_with(dir: &Path, arch: &str, layers: &[(&str, Vec<u8>)], extra: Value) -> Value {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let descs: Vec<Value> = layers
        .iter()
        .map(|(mt, tar)| blob(dir, mt, &compress(mt, tar)))
        .collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(_, tar)| Digest::of_bytes(tar).to_string())
        .collect();
    let mut config = json!({
        "architecture": arch, "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    for (k, v) in extra.as_object().expect("extra is an object") {
        config[k] = v.clone();
    }
    let config = blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": descs,
    });
    let mut d = blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    d["platform"] = json!({"architecture": arch, "os": "linux"});
    d
}

/// Writes `index.json` tagging each descriptor.
pub fn tag(dir: &Path, tagged: &[(&str, Value)]) {
    let manifests: Vec<Value> = tagged
        .iter()
        .map(|(t, d)| {
            let mut d = d.clone();
            d["annotations"] = json!({"org.opencontainers.image.ref.name": t});
            d
        })
        .collect();
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// An image index over `manifests`, as a blob of `dir`; returns its descriptor.
pub fn index(dir: &Path, manifests: &[Value]) -> Value {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    blob(
        dir,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    )
}

/// A tar of the folder `dir`'s contents by GNU tar (sorted, mtimes 0, PAX without
/// times); owners as they are on the host, or 0:0 with `as_root`.
pub fn folder_tar(dir: &Path, as_root: bool) -> Vec<u8> {
    require_tool("tar", "tar");
    let mut c = Command::new("tar");
    c.args(["--sort=name", "--mtime=@0", "--numeric-owner"]);
    if as_root {
        c.args(["--owner=0", "--group=0"]);
    }
    let tar = run(c
        .args([
            "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "-C",
        ])
        .arg(dir)
        .args(["-cf", "-", "."]));
    assert!(tar.status.success(), "tar: {}", text(&tar));
    tar.stdout
}
