//! The on-disk structures of FAT32: the volume geometry, the boot sector (BPB), the
//! FSInfo sector and 32-byte directory entries, as fatgen103 defines them. Plain
//! encoding and decoding; no I/O.

use super::EspError;

/// Bytes per sector. We only write 512 (fatgen103 §3.1 `BPB_BytsPerSec`: 512 is the
/// value that works with every driver); the reader accepts the other legal values.
pub const SECTOR: u64 = 512;
/// `BPB_RsvdSecCnt`: 32 is the usual value for FAT32 (fatgen103 §3.1), leaving room for
/// the FSInfo sector (1) and the backup boot sector (6) with its FSInfo (7).
pub const RESERVED_SECTORS: u32 = 32;
/// `BPB_NumFATs`: 2, "the recommended value for all FAT volumes" (fatgen103 §3.1).
pub const NUM_FATS: u32 = 2;
pub const FSINFO_SECTOR: u32 = 1;
pub const BACKUP_BOOT_SECTOR: u32 = 6;
/// `BPB_Media`: 0xF8, a fixed (non-removable) medium; FAT[0] repeats it (fatgen103 §4).
pub const MEDIA: u8 = 0xF8;
/// `BPB_RootClus`: the root directory starts at the first data cluster.
pub const ROOT_CLUSTER: u32 = 2;
/// fatgen103 §3.5 "FAT Type Determination": a volume with fewer than 65,525 clusters is
/// FAT12 or FAT16, whatever its BPB says. This is the only rule that decides the type.
pub const MIN_FAT32_CLUSTERS: u32 = 65_525;
/// The largest cluster number is 0x0FFFFFF6 - 1 (0x0FFFFFF7 is the bad-cluster mark),
/// so at most 0x0FFFFFF5 - 1 clusters (fatgen103 §4, note on FAT32 maximums).
pub const MAX_FAT32_CLUSTERS: u32 = 0x0FFF_FFF4;
/// A FAT32 entry is 28 bits; the high 4 are reserved (fatgen103 §4).
pub const FAT_MASK: u32 = 0x0FFF_FFFF;
/// End of chain: any value >= 0x0FFFFFF8; we write 0x0FFFFFFF like every formatter.
pub const EOC: u32 = 0x0FFF_FFFF;
pub const BAD_CLUSTER: u32 = 0x0FFF_FFF7;
pub const DIR_ENTRY: usize = 32;
/// fatgen103 §6: a directory may hold at most 65,536 32-byte entries (2 MiB).
pub const MAX_DIR_ENTRIES: usize = 65_536;

pub const ATTR_READ_ONLY: u8 = 0x01;
pub const ATTR_HIDDEN: u8 = 0x02;
pub const ATTR_SYSTEM: u8 = 0x04;
pub const ATTR_VOLUME_ID: u8 = 0x08;
pub const ATTR_DIRECTORY: u8 = 0x10;
pub const ATTR_ARCHIVE: u8 = 0x20;
/// fatgen103 §7: a long-name entry has READ_ONLY|HIDDEN|SYSTEM|VOLUME_ID set.
pub const ATTR_LONG_NAME: u8 = ATTR_READ_ONLY | ATTR_HIDDEN | ATTR_SYSTEM | ATTR_VOLUME_ID;

/// Where everything of a volume is, in 512-byte sectors from its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub total_sectors: u32,
    pub sectors_per_cluster: u32,
    pub fat_sectors: u32,
    /// The number of data clusters, numbered 2..clusters+2.
    pub clusters: u32,
}

impl Geometry {
    /// The geometry of a FAT32 volume of `size` bytes.
    pub fn for_size(size: u64) -> Result<Geometry, EspError> {
        if size % SECTOR != 0 {
            return Err(EspError::SizeNotSectors { size });
        }
        let total = size / SECTOR;
        let total_sectors = u32::try_from(total).map_err(|_| EspError::TooLarge { size })?;
        let g = Geometry::with_cluster_size(total_sectors, sectors_per_cluster(total_sectors));
        match g {
            Some(g) if g.clusters >= MIN_FAT32_CLUSTERS => Ok(g),
            _ => Err(EspError::TooSmall {
                size,
                min: min_fat32_size(),
            }),
        }
    }

    /// The layout for a given cluster size; `None` if nothing fits.
    fn with_cluster_size(total_sectors: u32, spc: u32) -> Option<Geometry> {
        // fatgen103 §3.5, "FAT32 ... FATSz computation": an over-estimate by at most a
        // few sectors, never too small.
        let tmp1 = u64::from(total_sectors).checked_sub(u64::from(RESERVED_SECTORS))?;
        let tmp2 = (256 * u64::from(spc) + u64::from(NUM_FATS)) / 2;
        let mut fat = tmp1.div_ceil(tmp2);
        // Start the data region on a cluster boundary (as mkfs.fat does), so that 4 KiB
        // clusters sit on 4 KiB of the disk: a FAT may be longer than it needs to be.
        while (u64::from(RESERVED_SECTORS) + u64::from(NUM_FATS) * fat) % u64::from(spc) != 0 {
            fat += 1;
        }
        let data_start = u64::from(RESERVED_SECTORS) + u64::from(NUM_FATS) * fat;
        let data = u64::from(total_sectors).checked_sub(data_start)?;
        let clusters = (data / u64::from(spc)).min(u64::from(MAX_FAT32_CLUSTERS));
        // The FAT must hold an entry for every cluster plus the two reserved ones.
        if (clusters + 2) * 4 > fat * SECTOR {
            return None;
        }
        Some(Geometry {
            total_sectors,
            sectors_per_cluster: spc,
            fat_sectors: u32::try_from(fat).ok()?,
            clusters: u32::try_from(clusters).ok()?,
        })
    }

    pub fn cluster_bytes(&self) -> u64 {
        u64::from(self.sectors_per_cluster) * SECTOR
    }

    /// Byte offset of FAT number `i` (0 or 1) in the volume.
    pub fn fat_offset(&self, i: u32) -> u64 {
        (u64::from(RESERVED_SECTORS) + u64::from(i) * u64::from(self.fat_sectors)) * SECTOR
    }

    pub fn data_offset(&self) -> u64 {
        self.fat_offset(NUM_FATS)
    }

    /// Byte offset of cluster `c` (>= 2) in the volume (fatgen103 §3.5: "FirstSectorofCluster").
    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset() + u64::from(c - 2) * self.cluster_bytes()
    }
}

/// The cluster size for a volume: fatgen103 §3.5, table `DskTableFAT32` (for 512-byte
/// sectors): up to 260 MiB 1 sector (0.5 KiB), up to 8 GiB 8 (4 KiB), up to 16 GiB 16,
/// up to 32 GiB 32, above that 64 (32 KiB). mkfs.fat makes the same choice.
pub fn sectors_per_cluster(total_sectors: u32) -> u32 {
    match total_sectors {
        0..=532_480 => 1,
        532_481..=16_777_216 => 8,
        16_777_217..=33_554_432 => 16,
        33_554_433..=67_108_864 => 32,
        _ => 64,
    }
}

/// The smallest volume size (bytes, whole sectors) that FAT32 allows: 65,525 clusters
/// of one sector, their FATs and the reserved sectors (about 32.5 MiB).
pub fn min_fat32_size() -> u64 {
    let mut sectors = MIN_FAT32_CLUSTERS + RESERVED_SECTORS;
    loop {
        if let Some(g) = Geometry::with_cluster_size(sectors, 1) {
            if g.clusters >= MIN_FAT32_CLUSTERS {
                return u64::from(sectors) * SECTOR;
            }
        }
        sectors += 1;
    }
}

pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The boot sector (fatgen103 §3.1 "Boot Sector and BPB Structure" and §3.3 "FAT32
/// Structure Starting at Offset 36"). Written at sector 0 and, identical, at sector 6.
pub fn boot_sector(
    g: &Geometry,
    hidden_sectors: u32,
    volume_id: u32,
    label: &[u8; 11],
) -> [u8; 512] {
    let mut b = [0u8; 512];
    // BS_jmpBoot: a short jump over the BPB to offset 0x5A, then NOP (§3.1).
    b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    // BS_OEMName: informational only; drivers must not rely on it (§3.1).
    b[3..11].copy_from_slice(b"KIOSBLD ");
    put16(&mut b, 11, SECTOR as u16); // BPB_BytsPerSec
    b[13] = g.sectors_per_cluster as u8; // BPB_SecPerClus
    put16(&mut b, 14, RESERVED_SECTORS as u16); // BPB_RsvdSecCnt
    b[16] = NUM_FATS as u8; // BPB_NumFATs
    put16(&mut b, 17, 0); // BPB_RootEntCnt: 0 on FAT32
    put16(&mut b, 19, 0); // BPB_TotSec16: 0 on FAT32, the count is in BPB_TotSec32
    b[21] = MEDIA; // BPB_Media
    put16(&mut b, 22, 0); // BPB_FATSz16: 0 on FAT32, the size is in BPB_FATSz32
                          // BPB_SecPerTrk and BPB_NumHeads: INT 13h geometry, unused by UEFI. 32 and 64 as
                          // mkfs.fat gives an image file: mtools refuses a volume whose sector count is not a
                          // multiple of the sectors per track, and 1 MiB multiples are multiples of 32.
    put16(&mut b, 24, 32);
    put16(&mut b, 26, 64);
    put32(&mut b, 28, hidden_sectors); // BPB_HiddSec: sectors before the partition
    put32(&mut b, 32, g.total_sectors); // BPB_TotSec32
    put32(&mut b, 36, g.fat_sectors); // BPB_FATSz32
    put16(&mut b, 40, 0); // BPB_ExtFlags: FATs mirrored at runtime
    put16(&mut b, 42, 0); // BPB_FSVer: 0.0
    put32(&mut b, 44, ROOT_CLUSTER); // BPB_RootClus
    put16(&mut b, 48, FSINFO_SECTOR as u16); // BPB_FSInfo
    put16(&mut b, 50, BACKUP_BOOT_SECTOR as u16); // BPB_BkBootSec
                                                  // 52..64 BPB_Reserved: zero.
    b[64] = 0x80; // BS_DrvNum: a hard disk
    b[65] = 0; // BS_Reserved1 (Windows keeps its dirty flag here): clean
    b[66] = 0x29; // BS_BootSig: the next three fields are present
    put32(&mut b, 67, volume_id); // BS_VolID
    b[71..82].copy_from_slice(label); // BS_VolLab
    b[82..90].copy_from_slice(b"FAT32   "); // BS_FilSysType: informational only
                                            // Boot code at 0x5A, reached by the jump: `int 18h` asks a BIOS to try the next
                                            // boot device, then `jmp $` in case it returns. UEFI never runs it.
    b[90..94].copy_from_slice(&[0xCD, 0x18, 0xEB, 0xFE]);
    // §3.1: the signature 0x55 0xAA at offsets 510 and 511.
    b[510] = 0x55;
    b[511] = 0xAA;
    b
}

/// The FSInfo sector (fatgen103 §5 "FAT32 FSInfo Sector Structure"): hints only, but
/// fsck.vfat checks the free count against the FAT.
pub fn fsinfo_sector(free_clusters: u32, next_free: u32) -> [u8; 512] {
    let mut b = [0u8; 512];
    put32(&mut b, 0, 0x4161_5252); // FSI_LeadSig "RRaA"
    put32(&mut b, 484, 0x6141_7272); // FSI_StrucSig "rrAa"
    put32(&mut b, 488, free_clusters); // FSI_Free_Count
    put32(&mut b, 492, next_free); // FSI_Nxt_Free: where to start looking, or 0xFFFFFFFF
    put32(&mut b, 508, 0xAA55_0000); // FSI_TrailSig
    b
}

/// A FAT date and time pair (fatgen103 §6.1 "Date and Time Formats"), plus the
/// hundredths for `DIR_CrtTimeTenth`. Times before 1980-01-01 or after 2107-12-31
/// 23:59:58 (what the 7-bit year since 1980 can say) are clamped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FatTime {
    pub date: u16,
    pub time: u16,
    pub tenth: u8,
}

impl FatTime {
    pub fn from_unix(secs: u64) -> FatTime {
        const MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
        const MAX: u64 = 4_354_819_198; // 2107-12-31T23:59:58Z
        let secs = secs.clamp(MIN, MAX);
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let date = (((y - 1980) as u16) << 9) | ((m as u16) << 5) | d as u16;
        let (h, min, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
        let time = ((h as u16) << 11) | ((min as u16) << 5) | (s / 2) as u16;
        FatTime {
            date,
            time,
            // §6: "Count of tenths of a second", 0-199, the odd second the 2-second
            // resolution of DIR_CrtTime cannot hold (it counts hundredths in practice).
            tenth: ((s % 2) * 100) as u8,
        }
    }
}

/// Year, month (1-12), day (1-31) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for the proleptic Gregorian calendar).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A short (8.3) directory entry (fatgen103 §6 "Directory Structure").
pub fn short_entry(name: &[u8; 11], attr: u8, cluster: u32, size: u32, t: FatTime) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[0..11].copy_from_slice(name); // DIR_Name
    e[11] = attr; // DIR_Attr
    e[12] = 0; // DIR_NTRes
    e[13] = t.tenth; // DIR_CrtTimeTenth
    put16(&mut e, 14, t.time); // DIR_CrtTime
    put16(&mut e, 16, t.date); // DIR_CrtDate
    put16(&mut e, 18, t.date); // DIR_LstAccDate
    put16(&mut e, 20, (cluster >> 16) as u16); // DIR_FstClusHI
    put16(&mut e, 22, t.time); // DIR_WrtTime
    put16(&mut e, 24, t.date); // DIR_WrtDate
    put16(&mut e, 26, cluster as u16); // DIR_FstClusLO
    put32(&mut e, 28, size); // DIR_FileSize
    e
}

/// The first cluster of a short entry (`DIR_FstClusHI:DIR_FstClusLO`).
pub fn entry_cluster(e: &[u8]) -> u32 {
    (u32::from(get16(e, 20)) << 16) | u32::from(get16(e, 26))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_encoded_and_clamped_to_the_fat_range() {
        // 2024-02-29T13:45:31Z
        let t = FatTime::from_unix(1_709_214_331);
        assert_eq!(t.date, (44 << 9) | (2 << 5) | 29);
        assert_eq!(t.time, (13 << 11) | (45 << 5) | 15);
        assert_eq!(t.tenth, 100);
        let epoch = FatTime::from_unix(0);
        assert_eq!((epoch.date, epoch.time), ((1 << 5) | 1, 0));
        let end = FatTime::from_unix(u64::MAX);
        assert_eq!(end.date, (127 << 9) | (12 << 5) | 31);
    }

    #[test]
    fn cluster_size_follows_the_spec_table_and_fat32_needs_65525_clusters() {
        let g = Geometry::for_size(64 << 20).unwrap();
        assert_eq!(g.sectors_per_cluster, 1);
        assert!(g.clusters >= MIN_FAT32_CLUSTERS);
        let g = Geometry::for_size(300 << 20).unwrap();
        assert_eq!(g.sectors_per_cluster, 8);
        assert!(g.clusters >= MIN_FAT32_CLUSTERS);
        assert_eq!(g.data_offset() % g.cluster_bytes(), 0);
        let min = min_fat32_size();
        assert!(Geometry::for_size(min).is_ok());
        assert!(matches!(
            Geometry::for_size(min - 512),
            Err(EspError::TooSmall { .. })
        ));
        assert!(min < 33 << 20, "{min}");
        // Every size between 260 MiB and what 8-sector clusters need must still work.
        for mib in 255..=262u64 {
            assert!(Geometry::for_size(mib << 20).is_ok(), "{mib} MiB");
        }
    }
}
