//! VHD fixed, as Azure takes it: the raw disk, zero-padded to a whole MiB, followed
//! by the 512-byte hard disk footer of Microsoft's "Virtual Hard Disk Image Format
//! Specification" (v1.0, 2006), section "Hard Disk Footer Format". The data part is
//! written sparsely, like raw.
//!
//! Size rules: Azure requires the virtual size (the footer's current size) to be a
//! whole number of MiB; a raw image that is not is padded and the report says so.
//! The footer's CHS geometry cannot describe most sizes exactly (it rounds down);
//! readers that trust the geometry rather than the current size see a slightly
//! smaller disk. QEMU decides by the creator application field: it trusts the current
//! size only for creators it knows (Hyper-V's "win ", its own "qem2", ...) and uses
//! the geometry for any other, which would cut the backup GPT off a kiOS disk in a
//! plain `qemu-img convert -f vpc`. So the footer names Hyper-V's creator, "win ",
//! the tool whose images Azure is built around; every reader then sees the exact
//! size. (`--image-opts driver=vpc,force_size_calc=current_size,...` also works.)
//!
//! Not here: dynamic or differencing VHDs, VHDX.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::source::RawImage;
use super::{derive_id, raw, rounded_size, ConvertOptions, ConvertReport, Format, FormatError};
use crate::units::MIB;

const FOOTER_LEN: usize = 512;
/// Seconds from the Unix epoch to the VHD epoch, 2000-01-01 00:00:00 UTC.
const VHD_EPOCH: u64 = 946_684_800;
const CREATOR_APP: &[u8; 4] = b"win ";
const CREATOR_HOST_OS_WINDOWS: &[u8; 4] = b"Wi2k";
const DISK_TYPE_FIXED: u32 = 2;

pub(super) fn write(
    image: &mut RawImage,
    out: &mut File,
    opts: &ConvertOptions,
) -> Result<ConvertReport, FormatError> {
    let werr = Format::Vhd.write_error();
    let raw_size = image.size();
    let (size, notes) = rounded_size(raw_size, MIB, |raw, size| {
        format!(
            "VHD: virtual size rounded up from {raw} bytes to {} MiB for Azure",
            size / MIB
        )
    });
    raw::copy_sparse(image, out, Format::Vhd)?;
    let timestamp = opts.mtime.saturating_sub(VHD_EPOCH).min(u32::MAX as u64) as u32;
    let unique_id = derive_id::<16>(&opts.seed, "vhd unique id");
    let f = footer(size, timestamp, uuid_v4(unique_id));
    out.write_all_at(&f, size).map_err(werr)?;
    Ok(ConvertReport {
        format: Format::Vhd,
        virtual_size: size,
        bytes_written: 0,
        notes,
    })
}

/// Marks 16 random-looking bytes as an RFC 4122 version 4 UUID, the kind the footer's
/// "Unique Id" field expects.
fn uuid_v4(mut b: [u8; 16]) -> [u8; 16] {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}

/// The hard disk footer ("Hard Disk Footer Format"); all fields big-endian.
fn footer(size: u64, timestamp: u32, unique_id: [u8; 16]) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[0..8].copy_from_slice(b"conectix"); // Cookie
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // Features: reserved bit, always set
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // File Format Version 1.0
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes()); // Data Offset: none for fixed disks
    f[24..28].copy_from_slice(&timestamp.to_be_bytes()); // Time Stamp
    f[28..32].copy_from_slice(CREATOR_APP); // Creator Application
    f[32..36].copy_from_slice(&creator_version().to_be_bytes()); // Creator Version
    f[36..40].copy_from_slice(CREATOR_HOST_OS_WINDOWS); // Creator Host OS
    f[40..48].copy_from_slice(&size.to_be_bytes()); // Original Size
    f[48..56].copy_from_slice(&size.to_be_bytes()); // Current Size
    let (c, h, s) = chs(size / 512);
    f[56..58].copy_from_slice(&c.to_be_bytes()); // Disk Geometry: cylinders,
    f[58] = h; // heads,
    f[59] = s; // sectors per track
    f[60..64].copy_from_slice(&DISK_TYPE_FIXED.to_be_bytes()); // Disk Type
    f[68..84].copy_from_slice(&unique_id); // Unique Id
                                           // f[84] Saved State = 0; 85..512 reserved zeros.
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes()); // Checksum
    f
}

/// "Checksum": the one's complement of the sum of all footer bytes, computed with
/// the checksum field itself zero.
fn checksum(footer: &[u8; FOOTER_LEN]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(b as u32));
    !sum
}

/// "Creator Version": major.minor of kios-build in the high and low 16 bits.
fn creator_version() -> u32 {
    let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0);
    let minor: u32 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0);
    (major << 16) | (minor & 0xffff)
}

/// Disk geometry (cylinders, heads, sectors per track) for `total_sectors`, the
/// specification's appendix "CHS Calculation", step for step.
fn chs(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        (spt, heads, cth) = (s, h, c);
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_geometry_follows_the_spec_appendix() {
        // 1 GiB = 2097152 sectors (< 65535*16*63 = 66059280):
        //   spt 17: cth = 2097152/17 = 123361; heads = ceil(123361/1024) = 121 > 16
        //   -> spt 31, heads 16: cth = 2097152/31 = 67650 >= 16*1024
        //   -> spt 63, heads 16: cth = 2097152/63 = 33288; cyl = 33288/16 = 2080.
        assert_eq!(chs(2097152), (2080, 16, 63));
        // 2 GiB = 4194304 sectors: ... spt 63: cth = 4194304/63 = 66576; cyl = 4161.
        assert_eq!(chs(4194304), (4161, 16, 63));
        // 20 MiB = 40960 sectors: spt 17: cth = 2409; heads = ceil(2409/1024) = 3 -> 4;
        //   2409 < 4*1024, heads <= 16: stays; cyl = 2409/4 = 602.
        assert_eq!(chs(40960), (602, 4, 17));
        // 64 MiB = 131072 sectors: spt 17: cth = 7710; heads = 8; 7710 < 8192: stays;
        //   cyl = 7710/8 = 963.
        assert_eq!(chs(131072), (963, 8, 17));
        // 40 GiB = 83886080 sectors >= 66059280: spt 255, heads 16:
        //   cth = 83886080/255 = 328965; cyl = 328965/16 = 20560.
        assert_eq!(chs(83886080), (20560, 16, 255));
        // 2 TiB is beyond the CHS limit: clamped to 65535*16*255 -> (65535, 16, 255).
        assert_eq!(chs(1 << 32), (65535, 16, 255));
    }

    #[test]
    fn footer_checksum_is_the_ones_complement_of_the_byte_sum() {
        let f = footer(1 << 30, 0, [0; 16]);
        let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
        // Worked by hand: "conectix" = 99+111+110+101+99+116+105+120 = 861;
        // features 2; version 0x00010000 -> 1; data offset 8 x 0xff = 2040;
        // "win " = 119+105+110+32 = 366; creator version 0.1 -> 0x00000001 = 1;
        // "Wi2k" = 87+105+50+107 = 349; sizes 0x40000000 twice -> 0x40 + 0x40 = 128;
        // geometry 2080/16/63 = 0x0820,0x10,0x3f -> 8+32+16+63 = 119; disk type 2.
        // Sum = 861+2+1+2040+366+1+349+128+119+2 = 3869; !3869 = 0xFFFFF0E2.
        assert_eq!(
            creator_version(),
            1,
            "the hand-worked sum assumes version 0.1"
        );
        assert_eq!(stored, 0xFFFF_F0E2);
        let mut sum: u32 = f.iter().map(|&b| b as u32).sum();
        sum -= f[64..68].iter().map(|&b| b as u32).sum::<u32>();
        assert_eq!(stored, !sum);
    }

    #[test]
    fn footer_fields_sit_where_the_spec_puts_them() {
        let f = footer(3 << 20, 0x1234_5678, [0xab; 16]);
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(&f[16..24], &[0xff; 8]);
        assert_eq!(&f[24..28], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(u64::from_be_bytes(f[48..56].try_into().unwrap()), 3 << 20);
        assert_eq!(u32::from_be_bytes(f[60..64].try_into().unwrap()), 2);
        assert_eq!(&f[68..84], &[0xab; 16]);
        assert!(f[84..].iter().all(|&b| b == 0));
    }
}
