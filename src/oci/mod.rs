//! OCI images from local image layouts (`oci:DIR[:TAG]`, as skopeo writes them) to
//! filesystem trees.
//!
//! - [`digest`]: `sha256:<hex>` digests and where a layout keeps their blobs.
//! - [`layout`]: `index.json` -> tag -> (nested index by platform) -> manifest ->
//!   config, every JSON blob checked against its descriptor's digest and size
//!   (image-spec image-layout.md, image-index.md, manifest.md, config.md).
//! - [`layer`]: one layer blob -> verified (blob digest, size, diff_id) and spooled
//!   decompressed tar (image-spec layer.md); the public entry points, over the two
//!   below.
//! - `archive`: a verified tar -> the layer's own entries and whiteouts, read from
//!   the headers with every hostile case refused within the [`Limits`].
//! - [`merge`]: a layer's changes ([`LayerChanges`]) applied onto a
//!   [`Tree`](crate::tree::Tree): whiteouts and opaque directories first, then the
//!   entries (layer.md "Whiteouts").
//!
//! Imports go one way: `layer` uses `archive` and `merge`, `archive` uses `merge`'s
//! types; all three name the layer an error is about with `LayerCx`.
//!
//! - [`reference`], [`auth`], [`cache`], [`registry`], [`progress`]: image references
//!   pulled from registries into a content-addressed cache that is itself an image
//!   layout, then opened like one (`docs/registry.md`).
//!
//! Nothing here unpacks a layer onto the host or needs root: file contents stay in
//! the spool file (or the uncompressed blob) as byte ranges. Apart from `registry`,
//! nothing here talks to the network; nothing runs images; it does not follow symlinks
//! (they are values). Every error names the image reference, and the layer digest
//! and entry path where there is one.

pub(crate) mod archive;
pub(crate) mod auth;
pub mod cache;
pub(crate) mod digest;
mod distribution;
pub(crate) mod layer;
pub mod layout;
pub(crate) mod merge;
pub mod reference;
pub mod registry;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

pub use archive::Limits;
pub use digest::{Digest, DigestError};
pub use layer::{
    apply_layer, apply_layers, read_layer, read_layer_from_pool, read_layer_tree, SpoolPool,
};
pub use layout::{open_layout, Compression, LayerBlob, LayoutImage};
pub use merge::{LayerChanges, Whiteout};

const RECOPY: &str = "the layout is damaged or was tampered with: copy the image again \
                      (`skopeo copy <source> oci:DIR:TAG`)";

/// An error reading an OCI image layout or applying its layers.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{reference}: {path} is not an OCI image layout ({why}); write one with `skopeo copy <image> oci:DIR:TAG`")]
    NotALayout {
        reference: String,
        path: PathBuf,
        why: String,
    },
    #[error("{reference}: cannot read {path}")]
    Io {
        reference: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{reference}: {what} {path} is not valid JSON of its kind; {RECOPY}")]
    Json {
        reference: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{reference}: {what}")]
    Digest {
        reference: String,
        what: String,
        #[source]
        source: DigestError,
    },
    #[error("{reference}: the layout has no image tagged {tag:?}; tags present: {available}")]
    TagNotFound {
        reference: String,
        tag: String,
        available: String,
    },
    #[error("{reference}: the layout holds several images ({available}); name one as oci:DIR:TAG")]
    AmbiguousTag {
        reference: String,
        available: String,
    },
    #[error("{reference}: no linux/{arch} image in the image index (it has: {available}); choose another arch, or copy that platform with `skopeo copy --override-arch {arch}`")]
    NoPlatform {
        reference: String,
        arch: String,
        available: String,
    },
    #[error("{reference}: {what} has media type {media_type:?}, which is not supported (expected {expected})")]
    MediaType {
        reference: String,
        what: String,
        media_type: String,
        expected: &'static str,
    },
    #[error("{reference}: {what}: {why}; {RECOPY}")]
    Invalid {
        reference: String,
        what: String,
        why: String,
    },
    #[error("{reference}: blob {digest} ({what}) is {actual} bytes but its descriptor says {expected}; {RECOPY}")]
    BlobSize {
        reference: String,
        what: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("{reference}: blob {digest} ({what}) has the content of {actual}; {RECOPY}")]
    BlobDigest {
        reference: String,
        what: String,
        digest: Digest,
        actual: Digest,
    },
    #[error("{reference}: layer {index} ({digest}) uncompresses to {actual} but the image config says its diff_id is {expected}; {RECOPY}")]
    DiffId {
        reference: String,
        index: usize,
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("{reference}: layer {index} ({digest}) has media type {media_type:?} but its bytes are {detected}; the image was written wrongly, rebuild or re-push it")]
    Compression {
        reference: String,
        index: usize,
        digest: Digest,
        media_type: String,
        detected: &'static str,
    },
    #[error("{reference}: layer {index} ({digest}): {what} is over the limit of {limit}; refusing the layer (raise the limit only for an image you trust)")]
    Limit {
        reference: String,
        index: usize,
        digest: Digest,
        what: String,
        limit: u64,
    },
    /// An entry of a layer that cannot be taken: `why` says what is wrong with it
    /// and what follows (the reader refuses the layer as malformed or hostile, or
    /// the store cannot hold it).
    #[error("{reference}: layer {index} ({digest}): entry {entry:?}: {why}")]
    Entry {
        reference: String,
        index: usize,
        digest: Digest,
        entry: String,
        why: String,
    },
    #[error(
        "{reference}: layer {index} ({digest}) is not a complete tar archive: {why}; {RECOPY}"
    )]
    Tar {
        reference: String,
        index: usize,
        digest: Digest,
        why: String,
    },
    #[error("{reference}: layer {index} ({digest}): cannot write or read the spool file {path}")]
    Spool {
        reference: String,
        index: usize,
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl OciError {
    /// An I/O error on `path`, for `map_err`.
    pub(crate) fn io(reference: &str, path: &Path) -> impl FnOnce(io::Error) -> OciError {
        let reference = reference.to_string();
        let path = path.to_path_buf();
        move |source| OciError::Io {
            reference,
            path,
            source,
        }
    }
}

/// The image and layer an error is about.
pub(crate) struct LayerCx<'a> {
    reference: &'a str,
    index: usize,
    digest: &'a Digest,
}

impl<'a> LayerCx<'a> {
    pub(crate) fn new(reference: &'a str, index: usize, digest: &'a Digest) -> Self {
        LayerCx {
            reference,
            index,
            digest,
        }
    }

    /// An entry the layer reader refuses: the whole layer is refused.
    pub(crate) fn entry(&self, entry: impl Into<String>, why: impl Into<String>) -> OciError {
        OciError::Entry {
            reference: self.reference.to_string(),
            index: self.index,
            digest: self.digest.clone(),
            entry: entry.into(),
            why: format!(
                "{}; the layer is malformed or hostile, refusing it",
                why.into()
            ),
        }
    }

    pub(crate) fn limit(&self, what: String, limit: u64) -> OciError {
        OciError::Limit {
            reference: self.reference.to_string(),
            index: self.index,
            digest: self.digest.clone(),
            what,
            limit,
        }
    }

    pub(crate) fn tar(&self, why: impl Into<String>) -> OciError {
        OciError::Tar {
            reference: self.reference.to_string(),
            index: self.index,
            digest: self.digest.clone(),
            why: why.into(),
        }
    }

    pub(crate) fn spool(&self, path: &Path) -> impl FnOnce(io::Error) -> OciError {
        let (reference, index, digest) =
            (self.reference.to_string(), self.index, self.digest.clone());
        let path = path.to_path_buf();
        move |source| OciError::Spool {
            reference,
            index,
            digest,
            path,
            source,
        }
    }

    pub(crate) fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> OciError {
        OciError::io(self.reference, path)
    }
}
