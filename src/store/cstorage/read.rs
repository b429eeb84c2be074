//! The store's layers read on every core: each distinct layer is verified,
//! decompressed and spooled ([`crate::oci::layer`]), read into its overlay `diff`
//! tree ([`super::diff`]) and scanned for its tar-split record ([`super::tarsplit`])
//! on a worker thread. Layers do not depend on each other until the store's
//! metadata is written, which [`super`] does afterwards, one layer after another in
//! the images' order, so the store is the same bytes whatever the number of workers.
//!
//! Bounds: at most [`workers`] layers are read at once; each is streamed (the
//! spool files are on disk, a layer's tar is never held in memory), and all of
//! them together decompress against one [`SpoolPool`] the size of the disk, so a
//! decompression bomb beside other layers stops at the disk's size, as it does
//! read alone. The first failure stops the workers from starting more layers;
//! every layer before it in the images' order is read to its end, so the error
//! reported is the one a serial build reports.
//!
//! This module decides nothing about the store's layout.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{diff, layer_ids, layer_tar_path, tarsplit, LayerAt, StoreError, StoreImage};
use super::{StoreOptions, Tree};
use crate::oci::{LayerBlob, OciError, SpoolPool};
use crate::units::ByteSize;

/// `KIOS_BUILD_JOBS=N` caps the threads the build uses (1: a serial build).
pub const JOBS_VAR: &str = "KIOS_BUILD_JOBS";

/// How many layers to read at once: `KIOS_BUILD_JOBS` when set to a number above
/// zero, else the cores this process may use.
pub fn workers() -> usize {
    std::env::var(JOBS_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// One distinct layer to read: the first image and position it appears at.
pub(super) struct Job {
    pub image: usize,
    pub index: usize,
}

/// A layer read and converted, waiting to be placed in the store.
pub(super) struct ReadLayer {
    /// The `overlay/<id>/diff` tree.
    pub diff: Tree,
    /// `overlay-layers/<id>.tar-split.gz`.
    pub tar_split_gz: Vec<u8>,
    /// The tar's size, and the owners of its members (for `layers.json`).
    pub size: u64,
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

/// The distinct layers of `images` in the order the store places them (layers
/// with one id are stored once). It stops at an image without layers: the store
/// refuses that image when it reaches it, and reads nothing after it.
pub(super) fn jobs(images: &[StoreImage]) -> Vec<Job> {
    let mut seen = std::collections::HashSet::new();
    let mut jobs = Vec::new();
    for (image, si) in images.iter().enumerate() {
        let diff_ids: Vec<_> = si.image.layers.iter().map(|l| l.diff_id.clone()).collect();
        if diff_ids.is_empty() {
            break;
        }
        for (index, id) in layer_ids(&diff_ids).into_iter().enumerate() {
            if seen.insert(id) {
                jobs.push(Job { image, index });
            }
        }
    }
    jobs
}

/// Reads every job on up to `workers` threads. The result has one slot per job:
/// `None` for a job not started because an earlier one failed.
pub(super) fn read_all(
    images: &[StoreImage],
    jobs: &[Job],
    spool_dir: &Path,
    opts: &StoreOptions,
    workers: usize,
) -> Vec<Option<Result<ReadLayer, StoreError>>> {
    let pool = SpoolPool::new(opts.budget);
    let slots: Vec<Mutex<Option<Result<ReadLayer, StoreError>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || loop {
        if failed.load(Ordering::SeqCst) {
            return;
        }
        let i = next.fetch_add(1, Ordering::SeqCst);
        let Some(job) = jobs.get(i) else { return };
        let si = &images[job.image];
        opts.busy.set(format!(
            "image store: {}, layer {} of {} ({} of {} layers read)",
            crate::untrusted::shown(&si.image.reference),
            job.index + 1,
            si.image.layers.len(),
            done.load(Ordering::SeqCst),
            jobs.len(),
        ));
        let result = read_one(si, job.index, spool_dir, opts, &pool);
        if result.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        done.fetch_add(1, Ordering::SeqCst);
        // A slot is written once, by the one worker that took its job.
        if let Ok(mut slot) = slots[i].lock() {
            *slot = Some(result);
        }
    };
    let threads = workers.clamp(1, jobs.len().max(1));
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        })
        .collect()
}

/// Verifies, spools and converts one layer (see the module doc).
fn read_one(
    si: &StoreImage,
    index: usize,
    spool_dir: &Path,
    opts: &StoreOptions,
    pool: &SpoolPool,
) -> Result<ReadLayer, StoreError> {
    let blob = &si.image.layers[index];
    let at = LayerAt {
        reference: &si.image.reference,
        index,
        digest: &blob.digest,
    };
    let (layer_tree, whiteouts) = layer_tree_within_budget(&at, blob, spool_dir, opts, pool)?;
    let facts = scan_spooled_tar(&at, blob, spool_dir)?;
    let diff = diff::overlay_diff(layer_tree, &whiteouts, &facts.whiteout_owners, opts.created)
        .map_err(|e| at.entry(e.entry, e.why))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let tar_split_gz = gz
        .write_all(&facts.tar_split)
        .and_then(|()| gz.finish())
        .map_err(|e| at.layer(format!("cannot compress its tar-split: {e}")))?;
    Ok(ReadLayer {
        diff,
        tar_split_gz,
        size: facts.size,
        uids: facts.uids.into_iter().collect(),
        gids: facts.gids.into_iter().collect(),
    })
}

/// Reads the layer (verified, spooled) into a tree and its whiteouts; all layers
/// together may decompress to the budget ([`StoreOptions::budget`]), and no further.
fn layer_tree_within_budget(
    at: &LayerAt,
    blob: &LayerBlob,
    spool_dir: &Path,
    opts: &StoreOptions,
    pool: &SpoolPool,
) -> Result<(Tree, Vec<crate::oci::Whiteout>), StoreError> {
    let by_budget = pool.size() < opts.limits.max_total;
    match diff::layer_tree(at.reference, at.index, blob, spool_dir, &opts.limits, pool) {
        Err(OciError::Limit { what, limit, .. }) if by_budget && limit == pool.size() => {
            Err(at.layer(format!(
                "{what} is more than the disk's {} for the image store allows (the layers read so far took {} of it); the images do not fit the disk: raise disk.size, or check that the image is not a decompression bomb",
                ByteSize::new(opts.budget),
                ByteSize::new(pool.used()),
            )))
        }
        r => Ok(r?),
    }
}

/// Scans the spooled tar for its tar-split record and facts, which must describe
/// the tar of the diff_id.
fn scan_spooled_tar(
    at: &LayerAt,
    blob: &LayerBlob,
    spool_dir: &Path,
) -> Result<tarsplit::TarFacts, StoreError> {
    let tar = layer_tar_path(blob, spool_dir);
    let facts = tarsplit::scan(&tar).map_err(|e| match e {
        tarsplit::SplitError::Io(e) => at.layer(format!(
            "cannot read the verified tar {}: {e}",
            tar.display()
        )),
        tarsplit::SplitError::Tar(why) => at.layer(why),
        tarsplit::SplitError::Entry { entry, why } => at.entry(entry, why),
    })?;
    if facts.digest != blob.diff_id {
        return Err(at.layer(format!(
            "the spooled tar {} hashes to {}, not the diff_id {}; it changed while the store was written",
            tar.display(),
            facts.digest,
            blob.diff_id
        )));
    }
    Ok(facts)
}
