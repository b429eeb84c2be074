//! Opening a local OCI image layout (image-spec image-layout.md) as skopeo writes it
//! for `oci:DIR[:TAG]`: `DIR/oci-layout`, `DIR/index.json`, `DIR/blobs/sha256/<hex>`.
//!
//! [`open_layout`] picks the manifest by its `org.opencontainers.image.ref.name`
//! annotation (annotations.md), follows nested image indexes by platform
//! (image-index.md), and reads the manifest (manifest.md) and the image config
//! (config.md), checking every JSON blob against its descriptor's sha256 and size
//! (descriptor.md "Digests", "Size") before parsing it. OCI and Docker schema 2 media
//! types are accepted for indexes, manifests, configs and layers.
//!
//! It reads no layer blob: layers are only described ([`LayerBlob`]) and are verified
//! when [`crate::oci::layer`] streams them. It does not write to the layout, follow
//! `urls` of foreign layers, or handle artifacts that are not container images.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::{Digest, OciError};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// JSON documents (index, manifest, config) larger than this are refused before
/// they are read: real ones are kilobytes, and the size comes from a hostile file.
const MAX_JSON: u64 = 16 << 20;
/// Index -> index -> manifest is as deep as real images go; more is a loop or abuse.
const MAX_INDEX_DEPTH: usize = 4;

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// How a layer blob is compressed, from its media type (layer.md "Media Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type declares; `None` for media types that are
    /// not filesystem layers.
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        Some(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

/// An image of a local layout, its manifest and config verified and parsed.
#[derive(Clone, Debug)]
pub struct LayoutImage {
    pub layout: PathBuf,
    /// How errors name this image: `oci:DIR:TAG` (or `oci:DIR`).
    pub reference: String,
    pub manifest_digest: Digest,
    /// The outermost image index the manifest was chosen from, when the image was
    /// reached through one (a multi-arch reference): stored beside the manifest so
    /// that the image is also found by the index's digest.
    pub index_digest: Option<Digest>,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
    /// The layers, base first, each paired with its diff_id from the config.
    pub layers: Vec<LayerBlob>,
}

/// One layer of a [`LayoutImage`]: where its blob is and what it must hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// Digest of the blob as stored (compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: Digest,
    pub media_type: String,
    /// Parsed from `media_type`: how to decompress the blob.
    pub compression: Compression,
    /// Size of the blob in bytes, from the manifest's descriptor.
    pub size: u64,
    /// `DIR/blobs/sha256/<hex>`.
    pub path: PathBuf,
}

/// Opens image `tag` (or the only image) of the layout at `dir`, for linux/`arch`.
/// `arch` is an OCI architecture (`amd64`, `arm64`), optionally with a variant
/// (`arm/v7`). When a nested index has several matches, the first one is used.
pub fn open_layout(dir: &Path, tag: Option<&str>, arch: &str) -> Result<LayoutImage, OciError> {
    let reference = match tag {
        Some(t) => format!("oci:{}:{t}", dir.display()),
        None => format!("oci:{}", dir.display()),
    };
    let cx = Cx {
        dir,
        reference: &reference,
    };
    cx.check_layout_file()?;

    let index_path = dir.join("index.json");
    let index_bytes = cx.read_small(&index_path, "index.json")?;
    let index: ImageIndex = cx.parse_json(&index_bytes, "index", &index_path)?;
    let (arch_name, variant) = split_arch(arch);
    let desc = match select_by_tag(&cx, &index, tag)?.as_slice() {
        [one] => (*one).clone(),
        several => select_by_platform(&cx, several, arch_name, variant)?,
    };
    open_descriptor(dir, &reference, desc, arch)
}

/// The entry of an image index (image-index.md) for linux/`arch`, by the same rules
/// [`open_layout`] follows; for the registry, which must know which manifest to
/// fetch. `reference` is how errors name the image.
pub fn select_platform(
    reference: &str,
    index: &ImageIndex,
    arch: &str,
) -> Result<Descriptor, OciError> {
    let cx = Cx {
        dir: Path::new(""),
        reference,
    };
    let (arch_name, variant) = split_arch(arch);
    let all: Vec<&Descriptor> = index.manifests().iter().collect();
    select_by_platform(&cx, &all, arch_name, variant)
}

/// True for image index and Docker manifest list media types.
pub fn is_index_media_type(media_type: &str) -> bool {
    is_one_of(media_type, &INDEX_TYPES)
}

fn split_arch(arch: &str) -> (&str, Option<&str>) {
    match arch.split_once('/') {
        Some((a, v)) => (a, Some(v)),
        None => (arch, None),
    }
}

/// Opens the image that `desc` (an image manifest, or an index to select from by
/// platform) describes, with its blobs in `dir/blobs/sha256/`. For callers that
/// found the descriptor elsewhere than in `index.json`: the registry cache.
/// `reference` is how errors name the image.
pub fn open_descriptor(
    dir: &Path,
    reference: &str,
    mut desc: Descriptor,
    arch: &str,
) -> Result<LayoutImage, OciError> {
    let reference = reference.to_string();
    let cx = Cx {
        dir,
        reference: &reference,
    };
    let (arch_name, variant) = split_arch(arch);
    let mut depth = 0;
    let mut index_digest = None;
    while is_one_of(desc.media_type().as_ref(), &INDEX_TYPES) {
        depth += 1;
        if depth > MAX_INDEX_DEPTH {
            return Err(cx.invalid(
                "image index",
                format!("indexes are nested more than {MAX_INDEX_DEPTH} deep"),
            ));
        }
        let (digest, bytes, path) = cx.read_blob(&desc, "image index")?;
        index_digest.get_or_insert(digest);
        let nested: ImageIndex = cx.parse_json(&bytes, "image index", &path)?;
        let all: Vec<&Descriptor> = nested.manifests().iter().collect();
        desc = select_by_platform(&cx, &all, arch_name, variant)?;
    }
    if !is_one_of(desc.media_type().as_ref(), &MANIFEST_TYPES) {
        return Err(cx.media_type(
            format!("manifest {}", desc.digest()),
            desc.media_type().as_ref(),
            "an OCI or Docker schema 2 image manifest or index",
        ));
    }

    let (manifest_digest, bytes, path) = cx.read_blob(&desc, "manifest")?;
    let manifest: ImageManifest = cx.parse_json(&bytes, "manifest", &path)?;
    if let Some(mt) = manifest.media_type() {
        if !is_one_of(mt.as_ref(), &MANIFEST_TYPES) {
            return Err(cx.media_type(
                format!("manifest {manifest_digest}"),
                mt.as_ref(),
                "an image manifest",
            ));
        }
    }
    let config_desc = manifest.config();
    if !is_one_of(config_desc.media_type().as_ref(), &CONFIG_TYPES) {
        return Err(cx.media_type(
            format!("config {}", config_desc.digest()),
            config_desc.media_type().as_ref(),
            "an OCI or Docker image config (is this an artifact, not a container image?)",
        ));
    }
    let (config_digest, bytes, path) = cx.read_blob(config_desc, "config")?;
    let config: ImageConfiguration = cx.parse_json(&bytes, "config", &path)?;

    if config.os().to_string() != "linux" || config.architecture().to_string() != arch_name {
        return Err(OciError::NoPlatform {
            reference: reference.clone(),
            arch: arch.to_string(),
            available: format!("{}/{}", config.os(), config.architecture()),
        });
    }
    let rootfs = config.rootfs();
    if rootfs.typ() != "layers" {
        return Err(cx.invalid(
            "config",
            format!("rootfs.type is {:?}, not \"layers\"", rootfs.typ()),
        ));
    }
    if rootfs.diff_ids().len() != manifest.layers().len() {
        return Err(cx.invalid(
            "config",
            format!(
                "the manifest lists {} layers but the config has {} diff_ids",
                manifest.layers().len(),
                rootfs.diff_ids().len()
            ),
        ));
    }

    let mut layers = Vec::with_capacity(manifest.layers().len());
    for (i, (layer, diff_id)) in manifest.layers().iter().zip(rootfs.diff_ids()).enumerate() {
        let media_type = layer.media_type().as_ref().to_string();
        let Some(compression) = Compression::of_media_type(&media_type) else {
            return Err(cx.media_type(
                format!("layer {i} ({})", layer.digest()),
                &media_type,
                "a tar, tar+gzip or tar+zstd layer",
            ));
        };
        let digest = cx.digest(layer.digest().as_ref(), &format!("layer {i}"))?;
        let diff_id = cx.digest(diff_id, &format!("diff_id of layer {i}"))?;
        layers.push(LayerBlob {
            path: digest.blob_path(dir),
            digest,
            diff_id,
            media_type,
            compression,
            size: layer.size(),
        });
    }

    Ok(LayoutImage {
        layout: dir.to_path_buf(),
        reference,
        manifest_digest,
        index_digest,
        manifest,
        config_digest,
        config,
        layers,
    })
}

fn is_one_of(media_type: &str, types: &[&str]) -> bool {
    types.contains(&media_type)
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

fn tag_list(index: &ImageIndex) -> String {
    let names: Vec<String> = index
        .manifests()
        .iter()
        .map(|d| match ref_name(d) {
            Some(n) => format!("{n:?}"),
            None => format!("untagged {}", d.digest()),
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// image-layout.md "index.json": the tag is the `ref.name` annotation. Several
/// descriptors under one tag (one per platform) are returned for platform selection.
fn select_by_tag<'i>(
    cx: &Cx,
    index: &'i ImageIndex,
    tag: Option<&str>,
) -> Result<Vec<&'i Descriptor>, OciError> {
    let candidates: Vec<&Descriptor> = match tag {
        Some(t) => index
            .manifests()
            .iter()
            .filter(|d| ref_name(d) == Some(t))
            .collect(),
        None => index.manifests().iter().collect(),
    };
    match (candidates.len(), tag) {
        (0, Some(t)) => Err(OciError::TagNotFound {
            reference: cx.reference.to_string(),
            tag: t.to_string(),
            available: tag_list(index),
        }),
        (0, None) => Err(cx.invalid("index.json", "it lists no image".into())),
        (1, _) | (_, Some(_)) => Ok(candidates),
        (_, None) => Err(OciError::AmbiguousTag {
            reference: cx.reference.to_string(),
            available: tag_list(index),
        }),
    }
}

/// image-index.md "platform": os `linux`, the architecture, and the variant when one
/// is asked for.
fn select_by_platform(
    cx: &Cx,
    manifests: &[&Descriptor],
    arch: &str,
    variant: Option<&str>,
) -> Result<Descriptor, OciError> {
    let matches = |d: &&Descriptor| match d.platform() {
        Some(p) => {
            p.os().to_string() == "linux"
                && p.architecture().to_string() == arch
                && (variant.is_none() || p.variant().as_deref() == variant)
        }
        None => false,
    };
    if let Some(d) = manifests.iter().copied().find(matches) {
        return Ok(d.clone());
    }
    if let [only] = manifests {
        if only.platform().is_none() {
            // No platform to compare: the config's own architecture is checked later.
            return Ok((*only).clone());
        }
    }
    let available: Vec<String> = manifests
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| match p.variant() {
            Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
            None => format!("{}/{}", p.os(), p.architecture()),
        })
        .collect();
    Err(OciError::NoPlatform {
        reference: cx.reference.to_string(),
        arch: match variant {
            Some(v) => format!("{arch}/{v}"),
            None => arch.to_string(),
        },
        available: if available.is_empty() {
            "no platforms".into()
        } else {
            available.join(", ")
        },
    })
}

/// What every read of the layout needs to name its errors.
struct Cx<'a> {
    dir: &'a Path,
    reference: &'a str,
}

impl Cx<'_> {
    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> OciError {
        OciError::io(self.reference, path)
    }

    fn invalid(&self, what: &str, why: String) -> OciError {
        OciError::Invalid {
            reference: self.reference.to_string(),
            what: what.to_string(),
            why,
        }
    }

    fn media_type(&self, what: String, media_type: &str, expected: &'static str) -> OciError {
        OciError::MediaType {
            reference: self.reference.to_string(),
            what,
            media_type: media_type.to_string(),
            expected,
        }
    }

    fn digest(&self, value: &str, what: &str) -> Result<Digest, OciError> {
        value.parse().map_err(|source| OciError::Digest {
            reference: self.reference.to_string(),
            what: format!("{what} has an unusable digest"),
            source,
        })
    }

    /// image-layout.md "oci-layout file": its presence marks a layout.
    fn check_layout_file(&self) -> Result<(), OciError> {
        let path = self.dir.join("oci-layout");
        let not_layout = |why: String| OciError::NotALayout {
            reference: self.reference.to_string(),
            path: self.dir.to_path_buf(),
            why,
        };
        if !self.dir.is_dir() {
            return Err(not_layout("it is not a directory".into()));
        }
        if !path.is_file() {
            return Err(not_layout("it has no `oci-layout` file".into()));
        }
        let bytes = self.read_small(&path, "oci-layout")?;
        let v: serde_json::Value = self.parse_json(&bytes, "oci-layout file", &path)?;
        match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
            Some(ver) if ver.starts_with("1.") => Ok(()),
            other => Err(not_layout(format!(
                "its imageLayoutVersion is {other:?}, expected 1.x"
            ))),
        }
    }

    fn read_small(&self, path: &Path, what: &str) -> Result<Vec<u8>, OciError> {
        let file = crate::untrusted::open_regular(path).map_err(self.io(path))?;
        let mut bytes = Vec::new();
        file.take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(self.io(path))?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(self.invalid(what, format!("it is larger than {MAX_JSON} bytes")));
        }
        Ok(bytes)
    }

    fn parse_json<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        what: &'static str,
        path: &Path,
    ) -> Result<T, OciError> {
        serde_json::from_slice(bytes).map_err(|source| OciError::Json {
            reference: self.reference.to_string(),
            what,
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a JSON blob and checks its size and sha256 against `desc`.
    fn read_blob(
        &self,
        desc: &Descriptor,
        what: &str,
    ) -> Result<(Digest, Vec<u8>, PathBuf), OciError> {
        let digest = self.digest(desc.digest().as_ref(), what)?;
        if desc.size() > MAX_JSON {
            return Err(self.invalid(
                &format!("{what} {digest}"),
                format!("its descriptor claims {} bytes", desc.size()),
            ));
        }
        let path = digest.blob_path(self.dir);
        let file = crate::untrusted::open_regular(&path).map_err(self.io(&path))?;
        let mut bytes = Vec::with_capacity(desc.size() as usize);
        file.take(desc.size() + 1)
            .read_to_end(&mut bytes)
            .map_err(self.io(&path))?;
        let actual_len = if bytes.len() as u64 > desc.size() {
            fs::metadata(&path).map_err(self.io(&path))?.len()
        } else {
            bytes.len() as u64
        };
        if actual_len != desc.size() {
            return Err(OciError::BlobSize {
                reference: self.reference.to_string(),
                what: what.to_string(),
                digest,
                expected: desc.size(),
                actual: actual_len,
            });
        }
        let actual = Digest::of_bytes(&bytes);
        if actual != digest {
            return Err(OciError::BlobDigest {
                reference: self.reference.to_string(),
                what: what.to_string(),
                digest,
                actual,
            });
        }
        Ok((digest, bytes, path))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tempfile::TempDir;

    use super::super::fixture::{self, tar_of, T};
    use super::*;

    fn two_arch_layout() -> (TempDir, Value, Value) {
        let dir = TempDir::new().unwrap();
        fixture::layout(dir.path());
        let tar = |s: &str| vec![(Compression::Gzip, tar_of(&[T::File("arch", s.as_bytes())]))];
        let amd = fixture::image(dir.path(), "amd64", &tar("amd64"), None);
        let arm = fixture::image(dir.path(), "arm64", &tar("arm64"), None);
        (dir, amd, arm)
    }

    use serde_json::Value;

    #[test]
    fn a_nested_index_is_followed_by_architecture() {
        let (dir, amd, arm) = two_arch_layout();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [fixture::with_platform(amd.clone(), "amd64"), fixture::with_platform(arm.clone(), "arm64")],
        });
        let index = fixture::blob(
            dir.path(),
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).unwrap(),
        );
        fixture::write_index(dir.path(), vec![fixture::tagged(index, "multi")]);
        for (arch, desc) in [("amd64", &amd), ("arm64", &arm)] {
            let image = open_layout(dir.path(), Some("multi"), arch).unwrap();
            assert_eq!(image.manifest_digest.to_string(), desc["digest"]);
            assert_eq!(image.config.architecture().to_string(), arch);
            assert_eq!(image.layers.len(), 1);
        }
        let err = open_layout(dir.path(), Some("multi"), "riscv64").unwrap_err();
        assert!(matches!(err, OciError::NoPlatform { .. }), "{err}");
        assert!(err.to_string().contains("linux/arm64"), "{err}");
    }

    #[test]
    fn images_are_chosen_by_tag() {
        let (dir, amd, arm) = two_arch_layout();
        fixture::write_index(
            dir.path(),
            vec![
                fixture::tagged(amd.clone(), "one"),
                fixture::tagged(arm, "two"),
            ],
        );
        let image = open_layout(dir.path(), Some("one"), "amd64").unwrap();
        assert_eq!(image.manifest_digest.to_string(), amd["digest"]);
        assert!(image.reference.ends_with(":one"));
        let err = open_layout(dir.path(), None, "amd64").unwrap_err();
        assert!(matches!(err, OciError::AmbiguousTag { .. }), "{err}");
        assert!(err.to_string().contains("\"one\", \"two\""), "{err}");
        let err = open_layout(dir.path(), Some("three"), "amd64").unwrap_err();
        assert!(matches!(err, OciError::TagNotFound { .. }), "{err}");
        // The image's own config must match the architecture asked for.
        let err = open_layout(dir.path(), Some("two"), "amd64").unwrap_err();
        assert!(matches!(err, OciError::NoPlatform { .. }), "{err}");
        // With a single image, no tag is needed.
        fixture::write_index(dir.path(), vec![amd]);
        assert!(open_layout(dir.path(), None, "amd64").is_ok());
    }

    #[test]
    fn a_tampered_manifest_or_config_is_rejected() {
        let (dir, amd, _) = two_arch_layout();
        fixture::write_index(dir.path(), vec![fixture::tagged(amd.clone(), "t")]);
        let digest: Digest = amd["digest"].as_str().unwrap().parse().unwrap();
        let path = digest.blob_path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = open_layout(dir.path(), Some("t"), "amd64").unwrap_err();
        assert!(matches!(err, OciError::BlobDigest { .. }), "{err}");
        bytes.push(b' ');
        std::fs::write(&path, &bytes).unwrap();
        let err = open_layout(dir.path(), Some("t"), "amd64").unwrap_err();
        assert!(matches!(err, OciError::BlobSize { .. }), "{err}");
    }

    #[test]
    fn a_directory_without_oci_layout_is_not_a_layout() {
        let dir = TempDir::new().unwrap();
        let err = open_layout(dir.path(), None, "amd64").unwrap_err();
        assert!(matches!(err, OciError::NotALayout { .. }), "{err}");
        assert!(err.to_string().contains("skopeo copy"), "{err}");
    }

    #[test]
    fn non_sha256_digests_and_unknown_layer_types_are_rejected() {
        let dir = TempDir::new().unwrap();
        fixture::layout(dir.path());
        let m = fixture::image(dir.path(), "amd64", &[], None);
        let mut sha512 = m.clone();
        sha512["digest"] = json!(format!("sha512:{}", "a".repeat(128)));
        fixture::write_index(dir.path(), vec![sha512]);
        let err = open_layout(dir.path(), None, "amd64").unwrap_err();
        let cause = std::error::Error::source(&err).map(|s| s.to_string());
        assert!(
            cause.as_deref().unwrap_or("").contains("only sha256"),
            "{err}: {cause:?}"
        );

        let config = fixture::blob(
            dir.path(),
            "application/vnd.oci.image.config.v1+json",
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#,
        );
        let layer = fixture::blob(dir.path(), "application/vnd.example.layer.v1.tar+xz", b"x");
        let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config, "layers": [layer]});
        let m = fixture::blob(
            dir.path(),
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        );
        fixture::write_index(dir.path(), vec![m]);
        let err = open_layout(dir.path(), None, "amd64").unwrap_err();
        assert!(matches!(err, OciError::MediaType { .. }), "{err}");
        assert!(err.to_string().contains("tar+xz"), "{err}");
    }
}
