//! Reading one layer blob (image-spec layer.md) into the layer's own entries and
//! whiteouts, treating the blob as hostile.
//!
//! 1. Verify and spool: the blob is streamed once through sha256 (it must match the
//!    descriptor's digest and size), decompressed by its media type (gzip, zstd, or
//!    none; the magic bytes must agree with the media type), and the uncompressed
//!    stream is hashed (it must match the config's diff_id, config.md "rootfs") and
//!    written to a spool file named after the diff_id. An uncompressed blob is not
//!    copied: its tar is the blob itself. Nothing is parsed before both digests match,
//!    and the decompressed size is capped while streaming ([`Limits::max_total`]).
//! 2. Read the tar (`oci::archive`) into [`LayerChanges`]: the layer's
//!    entries, regular files as [`Content`](crate::tree::Content) byte ranges of the
//!    spool file, and its whiteouts (layer.md "Whiteouts").
//!
//! [`apply_layer`] then merges the changes onto a tree ([`crate::oci::merge`]).
//! The limits ([`Limits`]) bound what a hostile layer can make us read or write.

use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::archive::{self, Limits};
use super::digest::{Sha256Reader, Sha256Writer};
use super::layout::{Compression, LayerBlob, LayoutImage};
use super::merge::{self, LayerChanges, Whiteout};
use super::{Digest, LayerCx, OciError};
use crate::tree::Tree;

/// Applies the image's layers, base first, onto `tree`. On error, `tree` holds the
/// layers before the failing one.
pub fn apply_layers(
    image: &LayoutImage,
    spool_dir: &Path,
    limits: &Limits,
    tree: &mut Tree,
) -> Result<(), OciError> {
    let mut left = limits.clone();
    for (i, blob) in image.layers.iter().enumerate() {
        apply_layer(&image.reference, i, blob, spool_dir, &left, tree)?;
        let tar = match blob.compression {
            Compression::None => blob.path.clone(),
            _ => spooled_path(blob, spool_dir),
        };
        let len = std::fs::metadata(&tar)
            .map_err(LayerCx::new(&image.reference, i, &blob.digest).spool(&tar))?
            .len();
        left.max_total = left.max_total.saturating_sub(len);
    }
    Ok(())
}

/// Where [`verify_and_spool`] leaves a compressed layer's tar.
fn spooled_path(blob: &LayerBlob, spool_dir: &Path) -> PathBuf {
    spool_dir.join(format!("{}.tar", blob.diff_id.hex()))
}

/// Verifies, spools and reads one layer, then applies it onto `tree` (whiteouts,
/// then entries). On error, `tree` is unchanged.
pub fn apply_layer(
    reference: &str,
    layer_index: usize,
    blob: &LayerBlob,
    spool_dir: &Path,
    limits: &Limits,
    tree: &mut Tree,
) -> Result<(), OciError> {
    let changes = read_layer(reference, layer_index, blob, spool_dir, limits)?;
    let cx = LayerCx::new(reference, layer_index, &blob.digest);
    merge::apply(&cx, tree, &changes, true)
}

/// Verifies, spools and reads one layer without applying it.
pub fn read_layer(
    reference: &str,
    layer_index: usize,
    blob: &LayerBlob,
    spool_dir: &Path,
    limits: &Limits,
) -> Result<LayerChanges, OciError> {
    read_layer_from_pool(reference, layer_index, blob, spool_dir, limits, None)
}

/// Uncompressed bytes several layers read at once (on several threads) may come to
/// together: each spooled chunk is taken from it before it is written, so a
/// decompression bomb read beside other layers still stops at the pool's size, not
/// at the pool's size per thread.
#[derive(Debug)]
pub struct SpoolPool {
    size: u64,
    left: std::sync::atomic::AtomicU64,
}

impl SpoolPool {
    pub fn new(size: u64) -> Self {
        SpoolPool {
            size,
            left: std::sync::atomic::AtomicU64::new(size),
        }
    }

    /// The pool's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes taken so far.
    pub fn used(&self) -> u64 {
        self.size - self.left.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes `n` bytes, or none and false when fewer are left.
    fn take(&self, n: u64) -> bool {
        use std::sync::atomic::Ordering;
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }
}

/// [`read_layer`], its uncompressed bytes also taken from `pool` when given.
pub fn read_layer_from_pool(
    reference: &str,
    layer_index: usize,
    blob: &LayerBlob,
    spool_dir: &Path,
    limits: &Limits,
    pool: Option<&SpoolPool>,
) -> Result<LayerChanges, OciError> {
    let cx = LayerCx::new(reference, layer_index, &blob.digest);
    let bounds = Bounds { limits, pool };
    let tar = verify_and_spool(&cx, blob, spool_dir, &bounds)?;
    archive::read_tar(&cx, &tar, limits)
}

/// What a layer may decompress to: its own limit, and a pool shared with others.
struct Bounds<'a> {
    limits: &'a Limits,
    pool: Option<&'a SpoolPool>,
}

impl Bounds<'_> {
    /// Counts `n` more bytes after `so_far`; the error when a bound is passed.
    fn take(&self, cx: &LayerCx, so_far: u64, n: u64) -> Result<(), OciError> {
        if so_far.saturating_add(n) > self.limits.max_total {
            return Err(cx.limit(
                format!("the uncompressed size (more than {so_far} bytes)"),
                self.limits.max_total,
            ));
        }
        match self.pool {
            Some(pool) if !pool.take(n) => Err(cx.limit(
                format!(
                    "the uncompressed size (more than {so_far} bytes, beside {} bytes of the other layers)",
                    pool.used()
                ),
                pool.size(),
            )),
            _ => Ok(()),
        }
    }
}

/// One layer on its own: its entries as a tree (missing parents created as 0755
/// root-owned directories with mtime 0) and its whiteouts, not applied. For writers
/// that store layers separately (containers/storage).
pub fn read_layer_tree(
    reference: &str,
    layer_index: usize,
    blob: &LayerBlob,
    spool_dir: &Path,
    limits: &Limits,
) -> Result<(Tree, Vec<Whiteout>), OciError> {
    let changes = read_layer(reference, layer_index, blob, spool_dir, limits)?;
    let cx = LayerCx::new(reference, layer_index, &blob.digest);
    let mut tree = Tree::new(0);
    merge::apply(&cx, &mut tree, &changes, false)?;
    Ok((tree, changes.whiteouts))
}

/// What the first bytes of a blob say it is.
fn sniff(magic: &[u8]) -> (Option<Compression>, &'static str) {
    match magic {
        [0x1f, 0x8b, ..] => (Some(Compression::Gzip), "gzip-compressed"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => (Some(Compression::Zstd), "zstd-compressed"),
        [0xfd, b'7', b'z', b'X', b'Z', ..] => (None, "xz-compressed"),
        [b'B', b'Z', b'h', ..] => (None, "bzip2-compressed"),
        _ => (Some(Compression::None), "an uncompressed tar"),
    }
}

/// Step 1 of the module doc. Returns the path of the verified tar.
fn verify_and_spool(
    cx: &LayerCx,
    blob: &LayerBlob,
    spool_dir: &Path,
    bounds: &Bounds,
) -> Result<PathBuf, OciError> {
    // A regular file only: a FIFO in a layout would hang the build.
    let file = crate::untrusted::open_regular(&blob.path).map_err(cx.io(&blob.path))?;
    let len = file.metadata().map_err(cx.io(&blob.path))?.len();
    let size_error = |actual| OciError::BlobSize {
        reference: cx.reference.to_string(),
        what: format!("layer {}", cx.index),
        digest: blob.digest.clone(),
        expected: blob.size,
        actual,
    };
    let digest_error = |actual| OciError::BlobDigest {
        reference: cx.reference.to_string(),
        what: format!("layer {}", cx.index),
        digest: blob.digest.clone(),
        actual,
    };
    if len != blob.size {
        return Err(size_error(len));
    }
    let mut magic = [0u8; 6];
    let n = (&file)
        .take(6)
        .read(&mut magic)
        .map_err(cx.io(&blob.path))?;
    let (detected, what) = sniff(&magic[..n]);
    if detected != Some(blob.compression) {
        return Err(OciError::Compression {
            reference: cx.reference.to_string(),
            index: cx.index,
            digest: blob.digest.clone(),
            media_type: blob.media_type.clone(),
            detected: what,
        });
    }
    (&file)
        .seek(SeekFrom::Start(0))
        .map_err(cx.io(&blob.path))?;
    let mut input = Sha256Reader::new(BufReader::with_capacity(1 << 16, file));

    if blob.compression == Compression::None {
        if len > bounds.limits.max_total {
            return Err(cx.limit(
                format!("the uncompressed size {len}"),
                bounds.limits.max_total,
            ));
        }
        bounds.take(cx, 0, len)?;
        let (digest, count) = input.finish().map_err(cx.io(&blob.path))?;
        if count != blob.size {
            return Err(size_error(count));
        }
        if digest != blob.digest {
            return Err(digest_error(digest));
        }
        if digest != blob.diff_id {
            return Err(diff_id_error(cx, blob, digest));
        }
        return Ok(blob.path.clone());
    }

    let mut part = tempfile::Builder::new()
        .prefix(".layer-")
        .suffix(".tar.part")
        .tempfile_in(spool_dir)
        .map_err(cx.spool(spool_dir))?;
    let part_path = part.path().to_path_buf();
    let copied = {
        let mut out = Sha256Writer::new(BufWriter::with_capacity(1 << 16, part.as_file_mut()));
        let result = decompress_into(
            cx,
            blob.compression,
            &mut input,
            &mut out,
            &part_path,
            bounds,
        );
        result.and_then(|()| {
            let (diff, _, mut w) = out.finish();
            w.flush()
                .map_err(|e| Failure::Spool(e, part_path.clone()))?;
            Ok(diff)
        })
    };
    // Whatever went wrong while decompressing, a blob that is not the one the
    // manifest names is reported as such: that is the cause, and the fix.
    let (digest, count) = input.finish().map_err(cx.io(&blob.path))?;
    if count != blob.size {
        return Err(size_error(count));
    }
    if digest != blob.digest {
        return Err(digest_error(digest));
    }
    let diff = match copied {
        Ok(diff) => diff,
        Err(Failure::Limit(e)) => return Err(e),
        Err(Failure::Decode(e)) => {
            return Err(cx.tar(format!("cannot decompress the {what} blob: {e}")))
        }
        Err(Failure::Spool(e, path)) => return Err(cx.spool(&path)(e)),
    };
    if diff != blob.diff_id {
        return Err(diff_id_error(cx, blob, diff));
    }
    let spooled = spooled_path(blob, spool_dir);
    part.persist(&spooled)
        .map_err(|e| cx.spool(&spooled)(e.error))?;
    Ok(spooled)
}

fn diff_id_error(cx: &LayerCx, blob: &LayerBlob, actual: Digest) -> OciError {
    OciError::DiffId {
        reference: cx.reference.to_string(),
        index: cx.index,
        digest: blob.digest.clone(),
        expected: blob.diff_id.clone(),
        actual,
    }
}

enum Failure {
    Decode(io::Error),
    Spool(io::Error, PathBuf),
    Limit(OciError),
}

fn decompress_into<R: Read, W: Write>(
    cx: &LayerCx,
    compression: Compression,
    input: &mut R,
    out: &mut Sha256Writer<W>,
    part_path: &Path,
    bounds: &Bounds,
) -> Result<(), Failure> {
    let mut decoder: Box<dyn Read + '_> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(input).map_err(Failure::Decode)?)
        }
        Compression::None => Box::new(input),
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Decode(e)),
        };
        bounds
            .take(cx, out.count(), n as u64)
            .map_err(Failure::Limit)?;
        out.write_all(&buf[..n])
            .map_err(|e| Failure::Spool(e, part_path.to_path_buf()))?;
    }
}
