//! The pre-seeded image store: a set of OCI images -> the directory tree of a
//! containers/storage store with the `overlay` driver, as a [`Tree`] value. The
//! tree is written into the read-only store filesystem and mounted where CRI-O
//! reads it as an additional image store ([`storage_conf`]); see `docs/store.md`.
//!
//! The layout is the one containers/storage 1.43 (podman 4.3, CRI-O 1.2x) writes
//! when it pulls an image with containers/image, read from their sources (`store.go`,
//! `images.go`, `layers.go`, `drivers/overlay/overlay.go`, containers/image
//! `storage/storage_dest.go`) and checked against podman by `tests/store_podman.rs`:
//!
//! ```text
//! storage.lock                          empty lock files: c/storage opens them
//! overlay-images/images.lock            read-only (O_CREAT|O_RDONLY) and cannot
//! overlay-layers/layers.lock            create them on a read-only filesystem
//! overlay-images/images.json            image records (records.rs)
//! overlay-images/<image-id>/<key>       big data: config, manifest, signatures
//! overlay-layers/layers.json            layer records
//! overlay-layers/<layer-id>.tar-split.gz  tar-split of the layer (tarsplit.rs)
//! overlay/<layer-id>/diff/              the layer as an overlayfs upper dir (diff.rs)
//! overlay/<layer-id>/link               its 26-character short name
//! overlay/<layer-id>/lower              l/<short>:l/<short>… of its parents, nearest
//!                                       first (absent for a base layer)
//! overlay/<layer-id>/{work,merged}      empty, and empty/ for a base layer
//! overlay/l/<short> -> ../<layer-id>/diff
//! ```
//!
//! Ids: an image's id is its config digest (hex); a layer's id is containers/image's
//! chain: the first layer's diff_id (hex), then sha256(parent id + "+" + diff_id
//! hex). Layers with one id are written once, whichever images share them. Short
//! link names are derived from the layer id (podman draws them at random), so the
//! tree is a function of its inputs; times are the image config's `created` and
//! [`StoreOptions::created`] for everything a pull would stamp with "now".
//!
//! Layers are read by [`crate::oci::layer`] (verified digests, hostile entries
//! refused); this module does not unpack anything on the host, decide which
//! images go into the store, or write the filesystem image itself.

mod diff;
mod read;
pub(crate) mod records;
mod tarsplit;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::oci::{Compression, Digest, LayerBlob, LayoutImage, Limits, OciError};
use crate::tree::{Entry, Kind, Tree, TreeError, TreePath};
pub use read::{workers, JOBS_VAR};
pub(crate) use records::ImageRecord;
use records::LayerRecord;

/// One image to put into the store, and the names it is known by.
#[derive(Clone, Debug)]
pub struct StoreImage {
    pub image: LayoutImage,
    /// Normalised references, e.g. `docker.io/library/busybox:1.36`,
    /// `127.0.0.1:5000/test/dhcp:1`: what `crictl images` and the kubelet match an
    /// image's `image:` against.
    pub names: Vec<String>,
}

/// How the store is written.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Seconds since the epoch (`SOURCE_DATE_EPOCH`) for the times a pull would
    /// record as "now": layer `created`, an image's `created` when its config has
    /// none, and the mtimes of the store's own files and directories.
    pub created: u64,
    /// Bounds on what a layer may contain (see [`Limits`]).
    pub limits: Limits,
    /// The uncompressed bytes all layers together may come to: the store cannot hold
    /// more than the disk it is written to, so the build passes the disk's size.
    /// Each layer is decompressed against what is left of it, so a gzip bomb fails
    /// while it is spooled, having written at most the budget.
    pub budget: u64,
    /// Told which image and layer is being read (a spinner on a terminal).
    pub busy: crate::progress::Busy,
    /// Layers read at once (`read.rs`); the store's bytes do not depend on it.
    pub workers: usize,
}

impl StoreOptions {
    pub fn new(created: u64) -> Self {
        StoreOptions {
            created,
            limits: Limits::default(),
            budget: u64::MAX,
            busy: crate::progress::Busy::default(),
            workers: workers(),
        }
    }

    /// These options with [`StoreOptions::budget`] set to `bytes`.
    pub fn with_budget(mut self, bytes: u64) -> Self {
        self.budget = bytes;
        self
    }
}

/// Why the store could not be built. Every variant names the image it is about,
/// and the layer and entry where there is one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or verifying a layer failed (names image, layer, entry), or an
    /// entry cannot be stored ([`OciError::Entry`]).
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("{reference}: layer {index} ({digest}): {why}")]
    Layer {
        reference: String,
        index: usize,
        digest: Digest,
        why: String,
    },
    #[error("image name {name:?} is given to two different images, {first} and {second}; a store can map a name to one image only")]
    NameConflict {
        name: String,
        first: String,
        second: String,
    },
    #[error("{reference}: {why}")]
    Image { reference: String, why: String },
    #[error("{reference}: cannot place {path} in the store tree")]
    Tree {
        reference: String,
        path: String,
        #[source]
        source: TreeError,
    },
}

impl StoreError {
    /// True when an image is at fault (a hostile or broken layer, a name given to
    /// two images): the user fixes the profile or the image, not the machine.
    pub fn is_input_error(&self) -> bool {
        match self {
            StoreError::Oci(OciError::Io { .. }) | StoreError::Tree { .. } => false,
            StoreError::Oci(_)
            | StoreError::Layer { .. }
            | StoreError::NameConflict { .. }
            | StoreError::Image { .. } => true,
        }
    }
}

/// Builds the store's directory tree for `images` (see the module doc). Layer
/// blobs are verified and spooled into `spool_dir`, [`StoreOptions::workers`] at
/// once (`read.rs`); the returned tree's file contents point into the spool files
/// and layout blobs, which must stay in place until the tree is written.
pub fn build_store(
    images: &[StoreImage],
    spool_dir: &Path,
    opts: &StoreOptions,
) -> Result<Tree, StoreError> {
    let jobs = read::jobs(images);
    let mut read = read::read_all(images, &jobs, spool_dir, opts, opts.workers).into_iter();
    let mut w = Writer {
        tree: Tree::new(opts.created),
        opts,
        images: Vec::new(),
        image_index: HashMap::new(),
        name_owner: HashMap::new(),
        layers: Vec::new(),
        layer_links: HashMap::new(),
        short_names: HashSet::new(),
    };
    w.skeleton()?;
    for si in images {
        w.add_image(si, &mut read)?;
    }
    w.finish()
}

/// `/etc/containers/storage.conf` for the image: the overlay driver, the writable
/// store on the data partition, and the pre-seeded store as an additional
/// (read-only) image store (containers-storage.conf(5)).
pub fn storage_conf(store_mount: &str, graphroot: &str, runroot: &str) -> String {
    format!(
        "# Written by kios-build. containers-storage.conf(5)\n\
         [storage]\n\
         driver = \"overlay\"\n\
         graphroot = {}\n\
         runroot = {}\n\
         \n\
         [storage.options]\n\
         # The pre-seeded image store (the KIOS_STORE partition, mounted read-only).\n\
         additionalimagestores = [{}]\n",
        toml_string(graphroot),
        toml_string(runroot),
        toml_string(store_mount)
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The chain of layer ids containers/image gives an image's layers
/// (`storage_dest.go` `commitLayer`): `diff_id` hex for the first, then
/// sha256(parent id + "+" + diff_id hex).
pub fn layer_ids(diff_ids: &[Digest]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let id = match ids.last() {
            None => d.hex().to_string(),
            Some(parent) => hex::encode(Sha256::digest(format!("{parent}+{}", d.hex()))),
        };
        ids.push(id);
    }
    ids
}

/// A layer's short link name: 26 characters of `[A-Z2-7]` (base32 of a hash of
/// the layer id and `attempt`), in the alphabet and length of overlay.go's random
/// `generateID(idLength)` names.
fn short_name(layer_id: &str, attempt: u32) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(format!("kios-build overlay link\0{layer_id}\0{attempt}"));
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut out = String::with_capacity(26);
    for b in hash.iter() {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 && out.len() < 26 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    out
}

struct Writer<'a> {
    tree: Tree,
    opts: &'a StoreOptions,
    images: Vec<ImageRecord>,
    /// Image id -> index in `images`.
    image_index: HashMap<String, usize>,
    /// Name -> (image id, reference that gave it).
    name_owner: HashMap<String, (String, String)>,
    layers: Vec<LayerRecord>,
    /// Layer id -> its short link name.
    layer_links: HashMap<String, String>,
    short_names: HashSet<String>,
}

/// The layers [`read::read_all`] read, in the order [`Writer`] places them.
type ReadLayers = std::vec::IntoIter<Option<Result<read::ReadLayer, StoreError>>>;

impl Writer<'_> {
    fn path(&self, reference: &str, p: &str) -> Result<TreePath, StoreError> {
        TreePath::parse(p).map_err(|source| StoreError::Tree {
            reference: reference.to_string(),
            path: p.to_string(),
            source,
        })
    }

    fn insert(&mut self, reference: &str, p: &str, mut entry: Entry) -> Result<(), StoreError> {
        let path = self.path(reference, p)?;
        if entry.mtime == 0 {
            entry.mtime = self.opts.created;
        }
        self.tree
            .insert(path, entry)
            .map_err(|source| StoreError::Tree {
                reference: reference.to_string(),
                path: p.to_string(),
                source,
            })
    }

    fn dir(&mut self, reference: &str, p: &str, mode: u32) -> Result<(), StoreError> {
        self.insert(reference, p, Entry::dir(mode))
    }

    fn file(
        &mut self,
        reference: &str,
        p: &str,
        bytes: Vec<u8>,
        mode: u32,
    ) -> Result<(), StoreError> {
        self.insert(
            reference,
            p,
            Entry::file(crate::tree::Content::inline(bytes), mode),
        )
    }

    /// The directories and lock files every store has, with the modes
    /// containers/storage gives them.
    fn skeleton(&mut self) -> Result<(), StoreError> {
        let r = "the store";
        self.dir(r, "", 0o700)?;
        self.dir(r, "overlay", 0o700)?;
        self.dir(r, "overlay/l", 0o755)?;
        self.dir(r, "overlay-images", 0o700)?;
        self.dir(r, "overlay-layers", 0o700)?;
        for lock in [
            "storage.lock",
            "overlay-images/images.lock",
            "overlay-layers/layers.lock",
        ] {
            self.file(r, lock, Vec::new(), 0o644)?;
        }
        Ok(())
    }

    fn add_image(&mut self, si: &StoreImage, read: &mut ReadLayers) -> Result<(), StoreError> {
        let img = &si.image;
        let reference = img.reference.as_str();
        let top = self.add_layers(img, read)?;
        let image_id = img.config_digest.hex().to_string();
        self.claim_names(reference, &image_id, &si.names)?;
        let config = read_blob(reference, &img.config_digest, &img.layout)?;
        let manifest = read_blob(reference, &img.manifest_digest, &img.layout)?;
        let big = match self.image_index.get(&image_id) {
            Some(&at) => self.add_to_image(si, at, &top, manifest)?,
            None => self.new_image(si, &image_id, top, config, manifest)?,
        };
        self.write_big_data(reference, &image_id, big)
    }

    /// Stores the image's layers not stored yet, parents first; returns the id of
    /// its top layer.
    fn add_layers(
        &mut self,
        img: &LayoutImage,
        read: &mut ReadLayers,
    ) -> Result<String, StoreError> {
        let reference = img.reference.as_str();
        let diff_ids: Vec<Digest> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
        let ids = layer_ids(&diff_ids);
        let Some(top) = ids.last().cloned() else {
            return Err(StoreError::Image {
                reference: reference.to_string(),
                why: "the image has no layers; containers/storage cannot store it".into(),
            });
        };
        for (i, blob) in img.layers.iter().enumerate() {
            if !self.layer_links.contains_key(&ids[i]) {
                let parent = if i == 0 {
                    None
                } else {
                    Some(ids[i - 1].as_str())
                };
                let at = LayerAt {
                    reference,
                    index: i,
                    digest: &blob.digest,
                };
                // `read::jobs` lists exactly the layers this loop stores, in this order.
                let layer = read.next().flatten().ok_or_else(|| {
                    at.layer("was not read (the store's layer list is out of step)".into())
                })??;
                self.add_layer(&at, blob, &ids[i], parent, layer)?;
            }
        }
        Ok(top)
    }

    /// Gives `names` to the image `image_id`; a name may name one image only.
    fn claim_names(
        &mut self,
        reference: &str,
        image_id: &str,
        names: &[String],
    ) -> Result<(), StoreError> {
        for name in names {
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(StoreError::Image {
                    reference: reference.to_string(),
                    why: format!("image name {name:?} is not a reference"),
                });
            }
            match self.name_owner.get(name) {
                Some((id, first)) if id != image_id => {
                    return Err(StoreError::NameConflict {
                        name: name.clone(),
                        first: first.clone(),
                        second: reference.to_string(),
                    })
                }
                _ => {
                    self.name_owner
                        .insert(name.clone(), (image_id.to_string(), reference.to_string()));
                }
            }
        }
        Ok(())
    }

    /// The same image again (other names, or another copy of the manifest):
    /// containers/image adds the names to the record at `at`, and returns the
    /// manifests it does not hold yet, under their digests.
    fn add_to_image(
        &mut self,
        si: &StoreImage,
        at: usize,
        top: &str,
        manifest: Vec<u8>,
    ) -> Result<Vec<BigData>, StoreError> {
        let img = &si.image;
        let reference = img.reference.as_str();
        let manifest_digest = img.manifest_digest.to_string();
        let rec = &mut self.images[at];
        if rec.layer != top {
            return Err(StoreError::Image {
                reference: reference.to_string(),
                why: format!("image {} was already stored with other layers", rec.id),
            });
        }
        for n in &si.names {
            if !rec.names.contains(n) {
                rec.names.push(n.clone());
                rec.names_history.insert(0, n.clone());
            }
        }
        let mut big = Vec::new();
        let key = format!("manifest-{manifest_digest}");
        if !rec.big_data_names.contains(&key) {
            big.push(BigData::new(key, manifest, manifest_digest));
        }
        if let Some(index) = &img.index_digest {
            let key = format!("manifest-{index}");
            if !rec.big_data_names.contains(&key) {
                let bytes = read_blob(reference, index, &img.layout)?;
                big.push(BigData::new(key, bytes, index.to_string()));
            }
        }
        Ok(big)
    }

    /// A new image record and its folder; returns the big data to write for it:
    /// the config, the manifests and an empty signature list.
    fn new_image(
        &mut self,
        si: &StoreImage,
        image_id: &str,
        top: String,
        config: Vec<u8>,
        manifest: Vec<u8>,
    ) -> Result<Vec<BigData>, StoreError> {
        let img = &si.image;
        let reference = img.reference.as_str();
        let manifest_digest = img.manifest_digest.to_string();
        let created = img
            .config
            .created()
            .as_deref()
            .and_then(records::go_time_of_rfc3339)
            .unwrap_or_else(|| records::go_time(self.opts.created));
        let config_key = img.config_digest.to_string();
        let mut big = vec![BigData::new(config_key.clone(), config, config_key)];
        // Reached through an image index (a multi-arch reference): containers/image
        // keeps the index too, under its own key and before the instance's, and
        // records the index's digest as the image's; the image is then found by
        // either digest.
        let mut digest = manifest_digest.clone();
        if let Some(index) = &img.index_digest {
            let bytes = read_blob(reference, index, &img.layout)?;
            big.push(BigData::new(
                format!("manifest-{index}"),
                bytes,
                index.to_string(),
            ));
            digest = index.to_string();
        }
        big.push(BigData::new(
            format!("manifest-{manifest_digest}"),
            manifest.clone(),
            manifest_digest.clone(),
        ));
        big.push(BigData::new(
            "manifest".into(),
            manifest,
            manifest_digest.clone(),
        ));
        // containers/image records an empty signature list for each manifest
        // it stores, and its size in the metadata.
        big.push(BigData::new(
            format!("signature-{}", img.manifest_digest.hex()),
            Vec::new(),
            Digest::of_bytes(b"").to_string(),
        ));
        let metadata = serde_json::json!({
            "signatures-sizes": { manifest_digest.clone(): [] }
        })
        .to_string();
        let mut names = Vec::new();
        for n in &si.names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        self.image_index
            .insert(image_id.to_string(), self.images.len());
        self.images.push(ImageRecord {
            id: image_id.to_string(),
            digest,
            names_history: names.iter().rev().cloned().collect(),
            names,
            layer: top,
            metadata,
            big_data_names: Vec::new(),
            big_data_sizes: BTreeMap::new(),
            big_data_digests: BTreeMap::new(),
            created,
        });
        self.dir(reference, &format!("overlay-images/{image_id}"), 0o700)?;
        Ok(big)
    }

    /// Writes `big` into the image's folder and lists it in its record.
    fn write_big_data(
        &mut self,
        reference: &str,
        image_id: &str,
        big: Vec<BigData>,
    ) -> Result<(), StoreError> {
        let at = self.image_index[image_id];
        for BigData { key, bytes, digest } in big {
            let rec = &mut self.images[at];
            rec.big_data_names.push(key.clone());
            rec.big_data_sizes.insert(key.clone(), bytes.len() as u64);
            rec.big_data_digests.insert(key.clone(), digest);
            let file = records::big_data_file_name(&key);
            self.file(
                reference,
                &format!("overlay-images/{image_id}/{file}"),
                bytes,
                0o600,
            )?;
        }
        Ok(())
    }

    fn add_layer(
        &mut self,
        at: &LayerAt,
        blob: &LayerBlob,
        id: &str,
        parent: Option<&str>,
        layer: read::ReadLayer,
    ) -> Result<(), StoreError> {
        self.write_overlay_dir(at, id, parent, &layer.diff)?;
        self.file(
            at.reference,
            &format!("overlay-layers/{id}.tar-split.gz"),
            layer.tar_split_gz,
            0o600,
        )?;
        self.layers.push(LayerRecord {
            id: id.to_string(),
            parent: parent.unwrap_or_default().to_string(),
            created: records::go_time(self.opts.created),
            compressed_diff_digest: blob.digest.to_string(),
            compressed_size: blob.size,
            diff_digest: blob.diff_id.to_string(),
            diff_size: layer.size,
            compression: records::compression_code(blob.compression),
            uids: layer.uids,
            gids: layer.gids,
        });
        Ok(())
    }

    /// `overlay/<id>/`: the diff, the link to a new short name, `work`, `merged`,
    /// and `empty` or `lower`; and `overlay/l/<short>`.
    fn write_overlay_dir(
        &mut self,
        at: &LayerAt,
        id: &str,
        parent: Option<&str>,
        diff: &Tree,
    ) -> Result<(), StoreError> {
        let reference = at.reference;
        let mut attempt = 0;
        let short = loop {
            let s = short_name(id, attempt);
            if self.short_names.insert(s.clone()) {
                break s;
            }
            attempt += 1;
        };
        let base = format!("overlay/{id}");
        self.dir(reference, &base, 0o700)?;
        let diff_base = self.path(reference, &format!("{base}/diff"))?;
        for (path, entry) in diff.iter() {
            let dest = diff_base
                .join(path.as_str())
                .map_err(|e| at.entry(path.to_string(), e.to_string()))?;
            let mut entry = entry.clone();
            if let Kind::Hardlink(target) = &entry.kind {
                let target = diff_base
                    .join(target.as_str())
                    .map_err(|e| at.entry(path.to_string(), e.to_string()))?;
                entry.kind = Kind::Hardlink(target);
            }
            self.tree
                .insert(dest, entry)
                .map_err(|e| at.entry(path.to_string(), e.to_string()))?;
        }
        self.file(
            reference,
            &format!("{base}/link"),
            short.clone().into_bytes(),
            0o644,
        )?;
        self.dir(reference, &format!("{base}/work"), 0o700)?;
        self.dir(reference, &format!("{base}/merged"), 0o700)?;
        match parent {
            None => self.dir(reference, &format!("{base}/empty"), 0o700)?,
            Some(p) => {
                let lower = self.lower(reference, p)?;
                self.file(
                    reference,
                    &format!("{base}/lower"),
                    lower.into_bytes(),
                    0o644,
                )?;
            }
        }
        self.insert(
            reference,
            &format!("overlay/l/{short}"),
            Entry::symlink(format!("../{id}/diff")),
        )?;
        self.layer_links.insert(id.to_string(), short);
        Ok(())
    }

    /// The `lower` of a layer whose parent is `parent` (overlay.go getLower): the
    /// parent's link, then the parent's lowers.
    fn lower(&self, reference: &str, parent: &str) -> Result<String, StoreError> {
        let mut lower = format!("l/{}", self.layer_links[parent]);
        let parent_lower = self
            .tree
            .get(&self.path(reference, &format!("overlay/{parent}/lower"))?)
            .and_then(|e| match &e.kind {
                Kind::File(c) => c.read_all().ok(),
                _ => None,
            });
        if let Some(pl) = parent_lower {
            lower.push(':');
            lower.push_str(&String::from_utf8_lossy(&pl));
        }
        Ok(lower)
    }

    fn finish(mut self) -> Result<Tree, StoreError> {
        let r = "the store";
        let images = serde_json::to_vec(&self.images).map_err(|e| StoreError::Image {
            reference: r.into(),
            why: format!("cannot encode images.json: {e}"),
        })?;
        let layers = serde_json::to_vec(&self.layers).map_err(|e| StoreError::Image {
            reference: r.into(),
            why: format!("cannot encode layers.json: {e}"),
        })?;
        self.file(r, "overlay-images/images.json", images, 0o600)?;
        self.file(r, "overlay-layers/layers.json", layers, 0o600)?;
        Ok(self.tree)
    }
}

/// One file of an image's big data (`overlay-images/<id>/<key>`): its key, bytes
/// and digest as `images.json` records them.
struct BigData {
    key: String,
    bytes: Vec<u8>,
    digest: String,
}

impl BigData {
    fn new(key: String, bytes: Vec<u8>, digest: String) -> Self {
        BigData { key, bytes, digest }
    }
}

/// The layer an error is about: the image's reference, the layer's index and digest.
struct LayerAt<'a> {
    reference: &'a str,
    index: usize,
    digest: &'a Digest,
}

impl LayerAt<'_> {
    fn layer(&self, why: String) -> StoreError {
        StoreError::Layer {
            reference: self.reference.to_string(),
            index: self.index,
            digest: self.digest.clone(),
            why,
        }
    }

    /// An entry the layer reader took but containers/storage cannot hold.
    fn entry(&self, entry: String, why: String) -> StoreError {
        StoreError::Oci(OciError::Entry {
            reference: self.reference.to_string(),
            index: self.index,
            digest: self.digest.clone(),
            entry,
            why: format!("{why}; the layer cannot be stored in a containers/storage store"),
        })
    }
}

/// Where [`crate::oci::read_layer`] left the layer's uncompressed tar: the blob
/// itself when it is not compressed, else the spool file it names after the
/// diff_id (`oci/layer.rs` `verify_and_spool`). The tar-split scan re-hashes it
/// against the diff_id, so a change of that convention is caught, not missed.
fn layer_tar_path(blob: &LayerBlob, spool_dir: &Path) -> PathBuf {
    match blob.compression {
        Compression::None => blob.path.clone(),
        Compression::Gzip | Compression::Zstd => {
            spool_dir.join(format!("{}.tar", blob.diff_id.hex()))
        }
    }
}

/// A config or manifest blob, checked against its digest again (the layout was
/// verified when opened; this is the copy that goes into the store).
fn read_blob(reference: &str, digest: &Digest, layout: &Path) -> Result<Vec<u8>, StoreError> {
    let path = digest.blob_path(layout);
    // The layout was checked when opened; read again, it is still bounded like any
    // JSON blob of a layout, and a FIFO put in its place is refused.
    let bytes = crate::untrusted::read_regular(&path, 16 << 20).map_err(|source| OciError::Io {
        reference: reference.to_string(),
        path: path.clone(),
        source,
    })?;
    if Digest::of_bytes(&bytes) != *digest {
        return Err(StoreError::Image {
            reference: reference.to_string(),
            why: format!(
                "blob {} changed since the layout was opened; copy the image again",
                path.display()
            ),
        });
    }
    Ok(bytes)
}
