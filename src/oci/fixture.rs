//! Test fixtures: OCI image layouts and layer tars written by hand, including
//! headers no well-behaved tar writer would produce.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use super::{Compression, Digest};

/// A tar member for [`tar_of`].
pub enum T<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
    /// A regular file with PAX records before it.
    Pax(&'a str, &'a [u8], Vec<(&'a str, &'a [u8])>),
    /// A member whose name bytes are set directly, bypassing the builder's checks.
    RawName(&'a [u8], tar::EntryType, &'a [u8]),
    /// A hard link whose target bytes are set directly.
    RawLink(&'a str, &'a [u8]),
}

fn header(ty: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(if ty == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(1000);
    h.set_gid(100);
    h.set_mtime(1_700_000_000);
    h
}

/// A tar archive of `members`, with the end-of-archive blocks.
pub fn tar_of(members: &[T]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        match m {
            T::File(name, data) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64);
                b.append_data(&mut h, name, *data).unwrap();
            }
            T::Dir(name) => {
                let mut h = header(tar::EntryType::Directory, 0);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            T::Symlink(name, target) => {
                let mut h = header(tar::EntryType::Symlink, 0);
                b.append_link(&mut h, name, target).unwrap();
            }
            T::Hardlink(name, target) => {
                let mut h = header(tar::EntryType::Link, 0);
                b.append_link(&mut h, name, target).unwrap();
            }
            T::Char(name, major, minor) => {
                let mut h = header(tar::EntryType::Char, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            T::Fifo(name) => {
                let mut h = header(tar::EntryType::Fifo, 0);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            T::Pax(name, data, records) => {
                b.append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
                    .unwrap();
                let mut h = header(tar::EntryType::Regular, data.len() as u64);
                b.append_data(&mut h, name, *data).unwrap();
            }
            T::RawName(name, ty, data) => {
                let mut h = header(*ty, data.len() as u64);
                let field = &mut h.as_old_mut().name;
                field.fill(0);
                field[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            T::RawLink(name, target) => {
                let mut h = header(tar::EntryType::Link, 0);
                h.set_path(name).unwrap();
                let field = &mut h.as_old_mut().linkname;
                field.fill(0);
                field[..target.len()].copy_from_slice(target);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn compress(c: Compression, tar: &[u8]) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

pub fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// Writes `bytes` as a blob of the layout at `dir`; returns its descriptor.
pub fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let d = Digest::of_bytes(bytes);
    let path = d.blob_path(dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    json!({"mediaType": media_type, "digest": d.to_string(), "size": bytes.len()})
}

/// An empty layout: `oci-layout` and an index.json listing nothing.
pub fn layout(dir: &Path) {
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    write_index(dir, vec![]);
}

pub fn write_index(dir: &Path, manifests: Vec<Value>) {
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Writes an image of `layers` (tar bytes, compressed as given) for linux/`arch`;
/// returns the manifest's descriptor. `diff_ids` overrides the computed diff_ids.
pub fn image(
    dir: &Path,
    arch: &str,
    layers: &[(Compression, Vec<u8>)],
    diff_ids: Option<Vec<String>>,
) -> Value {
    let mut descs = Vec::new();
    let mut computed = Vec::new();
    for (c, tar) in layers {
        descs.push(blob(dir, layer_media_type(*c), &compress(*c, tar)));
        computed.push(Digest::of_bytes(tar).to_string());
    }
    let config = json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids.unwrap_or(computed)},
    });
    let config = blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": descs,
    });
    blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    )
}

/// `desc` with a `ref.name` annotation and, if given, a platform.
pub fn tagged(mut desc: Value, tag: &str) -> Value {
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    desc
}

pub fn with_platform(mut desc: Value, arch: &str) -> Value {
    desc["platform"] = json!({"os": "linux", "architecture": arch});
    desc
}

/// Writes a layout holding one image of `layers`, tagged `t`, for amd64.
pub fn single(dir: &Path, layers: &[(Compression, Vec<u8>)]) {
    layout(dir);
    let m = image(dir, "amd64", layers, None);
    write_index(dir, vec![tagged(m, "t")]);
}
