//! The disk: assembled parts -> a raw GPT disk image.
//!
//! Layout (DESIGN.md, "The disk"): 1 MiB aligned partitions,
//! 1. `KIOS_ESP`: FAT32 written in-process ([`esp`]) holding the boot files;
//! 2. `KIOS_STORE` (when the node has images to pre-seed): the read-only EROFS image
//!    of the containers/storage store (`crate::store`), copied in as it is;
//!    `KIOS_STORE_VERITY` after it, its dm-verity hash tree, when the store is
//!    verified (entry 4 of the table, so that the data partition is 3 either way);
//! 3. `KIOS_DATA`: an empty ext4 made by e2fsprogs' `mkfs.ext4` at the partition's
//!    offset inside the image file (no loop device, no root), grown at first boot.
//!
//! Every identifier is derived from the profile's hash: the disk and partition GUIDs,
//! the FAT volume id, the ext4 UUID and hash seed. `mkfs.ext4` runs with our own
//! `mke2fs.conf` (so the host's defaults do not change the bytes) and
//! `E2FSPROGS_FAKE_TIME` (it ignores `SOURCE_DATE_EPOCH`).
//!
//! This module writes into a file the caller created (the caller owns the temporary
//! file and its rename); it does not convert formats.

pub mod esp;
pub mod gpt;

use std::fs::File;
use std::io;
use std::path::Path;
use std::process::Command;

use crate::tree::Tree;
use crate::units::MIB;
use gpt::{Guid, Partition, Table, SECTOR};

/// The EFI system partition type (UEFI 2.10, table 5.7).
pub const ESP_TYPE: Guid = Guid::parse(kios_contract::partition::ESP_TYPE);
/// The kiOS data partition type, which kios-init looks for.
pub const DATA_TYPE: Guid = Guid::parse(kios_contract::partition::DATA_TYPE);

/// The kiOS pre-seeded image store partition type (kios-init mounts it read-only).
pub const STORE_TYPE: Guid = Guid::parse(kios_contract::partition::STORE_TYPE);
/// The store's dm-verity hash tree.
pub const STORE_VERITY_TYPE: Guid = Guid::parse(kios_contract::partition::STORE_VERITY_TYPE);

/// The kiOS role of a partition type: `esp`, `store`, `data`, `store-verity`; `None`
/// for a type kiOS does not use (each reader names that its own way).
pub fn role(type_guid: &Guid) -> Option<&'static str> {
    Some(match *type_guid {
        t if t == ESP_TYPE => "esp",
        t if t == STORE_TYPE => "store",
        t if t == DATA_TYPE => "data",
        t if t == STORE_VERITY_TYPE => "store-verity",
        _ => return None,
    })
}

pub const ESP_NAME: &str = kios_contract::partition::ESP_NAME;
pub const STORE_NAME: &str = kios_contract::partition::STORE_NAME;
pub const STORE_VERITY_NAME: &str = kios_contract::partition::STORE_VERITY_NAME;
pub const DATA_NAME: &str = kios_contract::partition::DATA_NAME;
/// The smallest ESP we make: room for the boot files and some to spare.
const MIN_ESP: u64 = 64 * MIB;
/// The smallest data partition we make: enough for a first boot's layout.
const MIN_DATA: u64 = 64 * MIB;
/// The smallest disk: the GPT's first and last MiB, the smallest ESP and data
/// partition (a store partition adds its size). A profile asking less is refused
/// when it is loaded.
pub const MIN_DISK_SIZE: u64 = MIB + MIN_ESP + MIN_DATA + MIB;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk.size {size} is too small: the ESP needs {esp} MiB and the data partition at least {data} MiB, so the disk needs at least {need} MiB")]
    TooSmall {
        size: String,
        esp: u64,
        data: u64,
        need: u64,
    },
    #[error("disk.size must be a whole number of MiB (got {0} bytes)")]
    NotAligned(u64),
    #[error("`mkfs.ext4` was not found: install e2fsprogs (apt-get install e2fsprogs); it makes the data partition")]
    NoMkfs,
    #[error("mkfs.ext4 failed making the data partition: {0}")]
    Mkfs(String),
    #[error("cannot write the ESP")]
    Esp(#[from] esp::EspError),
    #[error("cannot write the partition table")]
    Gpt(#[from] gpt::GptError),
    #[error("cannot write the disk image")]
    Io(#[from] io::Error),
}

/// What to put on the disk.
pub struct DiskSpec<'a> {
    /// The whole disk, bytes (a multiple of 1 MiB).
    pub size: u64,
    /// The profile's hash: every identifier is derived from it.
    pub seed: [u8; 32],
    /// The ESP's files.
    pub esp: &'a Tree,
    /// The timestamp of everything written (SOURCE_DATE_EPOCH).
    pub mtime: u64,
    /// The store's filesystem image, written as is into `KIOS_STORE`.
    pub store: Option<&'a Path>,
    /// The store's hash tree, written as is into `KIOS_STORE_VERITY`.
    pub store_verity: Option<&'a Path>,
    /// The build's private work folder, for the files the tools need (mke2fs'
    /// configuration): nothing is left in `$TMPDIR` when the build is interrupted.
    pub work: &'a Path,
}

/// The partition table for `spec`, without writing anything.
pub fn layout(spec: &DiskSpec) -> Result<Table, DiskError> {
    if spec.size % MIB != 0 {
        return Err(DiskError::NotAligned(spec.size));
    }
    let esp_size = (esp::min_size(spec.esp).div_ceil(MIB) * MIB).max(MIN_ESP);
    let align = MIB / SECTOR;
    let mut table = Table {
        disk_guid: Guid::derive(&spec.seed, "disk"),
        disk_size: spec.size,
        partitions: Vec::new(),
    };
    // The backup table needs 33 sectors at the end: the last MiB stays unused so that
    // every partition both starts and ends on a MiB boundary.
    let mib_size = |p: Option<&Path>| -> io::Result<u64> {
        Ok(match p {
            Some(p) => std::fs::metadata(p)?.len().div_ceil(MIB) * MIB,
            None => 0,
        })
    };
    let store_size = mib_size(spec.store)?;
    let verity_size = mib_size(spec.store.and(spec.store_verity))?;
    let need = 1 + esp_size / MIB + (store_size + verity_size) / MIB + MIN_DATA / MIB + 1;
    if spec.size < need * MIB {
        return Err(DiskError::TooSmall {
            size: crate::units::ByteSize::new(spec.size).to_string(),
            esp: esp_size / MIB,
            data: MIN_DATA / MIB,
            need,
        });
    }
    let esp_first = align;
    let esp_last = esp_first + esp_size / SECTOR - 1;
    let mut data_first = esp_last + 1;
    let data_last = (table.last_usable() + 1) / align * align - 1;
    table.partitions.push(Partition {
        type_guid: ESP_TYPE,
        guid: Guid::derive(&spec.seed, "partition:esp"),
        first_lba: esp_first,
        last_lba: esp_last,
        attributes: 0,
        name: ESP_NAME.into(),
    });
    if store_size > 0 {
        let first = data_first;
        let last = first + store_size / SECTOR - 1;
        table.partitions.push(Partition {
            type_guid: STORE_TYPE,
            guid: Guid::derive(&spec.seed, "partition:store"),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: STORE_NAME.into(),
        });
        data_first = last + 1;
    }
    // The hash tree lies between the store and the data partition (which must stay
    // last, to grow), but is the last entry: the data partition keeps its number
    // (vda3), which the base profiles' resize daemon names, with or without it.
    let verity = (verity_size > 0).then(|| {
        let first = data_first;
        let last = first + verity_size / SECTOR - 1;
        data_first = last + 1;
        Partition {
            type_guid: STORE_VERITY_TYPE,
            guid: Guid::derive(&spec.seed, "partition:store-verity"),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: STORE_VERITY_NAME.into(),
        }
    });
    table.partitions.push(Partition {
        type_guid: DATA_TYPE,
        guid: Guid::derive(&spec.seed, "partition:data"),
        first_lba: data_first,
        last_lba: data_last,
        attributes: 0,
        name: DATA_NAME.into(),
    });
    table.partitions.extend(verity);
    Ok(table)
}

/// Checks up front what writing a disk needs from the host.
pub fn check_host_tools() -> Result<(), DiskError> {
    match Command::new("mkfs.ext4").arg("-V").output() {
        Ok(_) => Ok(()),
        Err(_) => Err(DiskError::NoMkfs),
    }
}

/// Writes the whole disk into `file` (created by the caller; resized here).
pub fn write_disk(spec: &DiskSpec, file: &mut File, path: &Path) -> Result<Table, DiskError> {
    let table = layout(spec)?;
    file.set_len(0)?;
    file.set_len(spec.size)?;
    table.write(file)?;
    let esp_part = &table.partitions[0];
    let mut label = [b' '; 11];
    label[..ESP_NAME.len()].copy_from_slice(ESP_NAME.as_bytes());
    let vol = Guid::derive(&spec.seed, "esp:volume-id").disk_bytes();
    let opts = esp::EspOptions {
        volume_id: u32::from_le_bytes([vol[0], vol[1], vol[2], vol[3]]),
        label,
        mtime: spec.mtime,
    };
    esp::write_fat32(spec.esp, file, esp_part.offset(), esp_part.size(), &opts)?;
    for (content, kind) in [
        (spec.store, STORE_TYPE),
        (spec.store_verity, STORE_VERITY_TYPE),
    ] {
        if let (Some(content), Some(part)) = (
            content,
            table.partitions.iter().find(|p| p.type_guid == kind),
        ) {
            use std::io::{Seek, SeekFrom};
            let mut src = File::open(content)?;
            file.seek(SeekFrom::Start(part.offset()))?;
            io::copy(&mut src, file)?;
        }
    }
    file.sync_data()?;
    let data = table
        .partitions
        .iter()
        .find(|p| p.type_guid == DATA_TYPE)
        .ok_or_else(|| DiskError::Io(io::Error::other("no data partition in the layout")))?;
    make_ext4(path, data, spec)?;
    Ok(table)
}

/// Our own mke2fs configuration: the features of the data partition do not depend on
/// the build host's `/etc/mke2fs.conf`. All are supported by Linux 5.10 and later.
const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

fn make_ext4(image: &Path, part: &Partition, spec: &DiskSpec) -> Result<(), DiskError> {
    let conf = tempfile::NamedTempFile::new_in(spec.work)?;
    std::fs::write(conf.path(), MKE2FS_CONF)?;
    let uuid = Guid::derive(&spec.seed, "data:ext4-uuid")
        .to_string()
        .to_lowercase();
    let seed = Guid::derive(&spec.seed, "data:ext4-hash-seed")
        .to_string()
        .to_lowercase();
    let blocks = part.size() / 4096;
    let out = Command::new("mkfs.ext4")
        .env("MKE2FS_CONFIG", conf.path())
        .env("E2FSPROGS_FAKE_TIME", spec.mtime.max(1).to_string())
        .args([
            "-F", "-q", "-t", "ext4", "-b", "4096", "-L", DATA_NAME, "-U", &uuid,
        ])
        .arg("-E")
        .arg(format!(
            "offset={},hash_seed={seed},root_owner=0:0,nodiscard,lazy_itable_init=0",
            part.offset()
        ))
        .arg(image)
        .arg(blocks.to_string())
        .output()
        .map_err(|_| DiskError::NoMkfs)?;
    if !out.status.success() {
        return Err(DiskError::Mkfs(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}
