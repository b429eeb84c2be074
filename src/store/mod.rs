//! The pre-seeded container image store: the containers/storage overlay layout of
//! the images a node needs at boot ([`cstorage`]), written as a read-only EROFS
//! image ([`erofs`]) into the `KIOS_STORE` partition. [`write_partition`] is the
//! build's store stage: images in, the partition's filesystem image out.

pub mod cstorage;
pub mod erofs;
pub mod verity;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use cstorage::{StoreError, StoreImage, StoreOptions};
use erofs::{ErofsError, ErofsOptions};

/// What the store stage is given.
pub struct Partition<'a> {
    pub images: &'a [StoreImage],
    /// Where layers are spooled while they are read (in the private work folder).
    pub spool: &'a Path,
    /// The EROFS image to write.
    pub out: &'a Path,
    /// The filesystem UUID (derived from [`key`], so that the bytes depend on the
    /// store's inputs alone).
    pub uuid: [u8; 16],
    /// SOURCE_DATE_EPOCH.
    pub epoch: u64,
    /// The uncompressed bytes all layers may come to: the disk's size, so that a
    /// layer that decompresses past it fails while it is spooled.
    pub budget: u64,
    /// How the store's files are compressed (`store.compression`).
    pub compression: Option<erofs::Compression>,
    /// Where the stage shows which image and layer it reads.
    pub busy: crate::progress::Busy,
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("cannot write the image store")]
    Store(#[source] StoreError),
    #[error("cannot write the image store's filesystem")]
    Filesystem(#[source] ErofsError),
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The hash of everything the store partition's bytes are made from
/// ([`crate::reuse`]): each image's manifest, index and config digests, its layers'
/// digests, diff_ids, sizes and media types, and its names, in order; the
/// epoch; and the compression. The writer's version is in every key. The layout folders the blobs are
/// read from are not: blobs are found and checked by digest.
pub fn key(
    images: &[StoreImage],
    epoch: u64,
    compression: Option<erofs::Compression>,
) -> crate::reuse::Key {
    let mut k = crate::reuse::Key::builder(crate::reuse::Kind::Store);
    k.number(epoch).number(images.len() as u64);
    k.text(&compression.map_or("none".into(), |c| c.name()));
    for si in images {
        let img = &si.image;
        k.text(img.manifest_digest.hex())
            .text(img.config_digest.hex())
            .text(img.index_digest.as_ref().map_or("", |d| d.hex()));
        k.number(si.names.len() as u64);
        for n in &si.names {
            k.text(n);
        }
        k.number(img.layers.len() as u64);
        for l in &img.layers {
            k.text(l.digest.hex())
                .text(l.diff_id.hex())
                .number(l.size)
                .text(&l.media_type);
        }
    }
    k.finish()
}

/// Reads every layer of every image into the containers/storage layout and writes it
/// as EROFS at `p.out`; returns the filesystem's size. Every layer is read here, so a
/// hostile or broken image fails the build before anything else is written.
pub fn write_partition(p: &Partition) -> Result<u64, PartitionError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PartitionError::Io { path, source }
    };
    fs::create_dir_all(p.spool).map_err(io(p.spool))?;
    let tree = cstorage::build_store(
        p.images,
        p.spool,
        &StoreOptions {
            busy: p.busy.clone(),
            ..StoreOptions::new(p.epoch).with_budget(p.budget)
        },
    )
    .map_err(PartitionError::Store)?;
    let mut f = File::create(p.out).map_err(io(p.out))?;
    erofs::write_erofs(
        &tree,
        &mut f,
        &ErofsOptions {
            uuid: p.uuid,
            volume_name: kios_contract::partition::STORE_NAME.into(),
            mtime: p.epoch,
            compression: p.compression,
            workers: 0,
            busy: p.busy.clone(),
        },
    )
    .map_err(PartitionError::Filesystem)
}
