//! VMDK streamOptimized, as specified by VMware's "Virtual Disk Format 5.0", section
//! "Stream-Optimized Compressed Sparse Extents": the format OVA/OVF packages and
//! vSphere imports use. One file: a sparse extent header, the embedded descriptor,
//! then each non-zero 64 KiB grain deflated (zlib, RFC 1950) behind a grain marker;
//! after the grains of each 32 MiB region its grain table (behind a GT marker); at
//! the end the grain directory (GD marker), the footer (a copy of the header holding
//! the real GD offset, behind a footer marker) and the end-of-stream marker.
//!
//! Grain tables of regions without data are not written; their directory entry is 0
//! ("not allocated", reads as zeros), as VirtualBox's stream writer also does.
//! Memory: one grain table plus the directory (4 bytes per 32 MiB of disk).
//!
//! Not here: monolithicSparse or flat VMDKs, zeroed-grain entries, the redundant
//! grain directory (streams have none), OVF/OVA packaging.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use zlib_rs::{Deflate, DeflateFlush, Status};

use super::source::{RawImage, ZEROS};
use super::{derive_id, rounded_size, ConvertOptions, ConvertReport, Format, FormatError};

const SECTOR: u64 = 512;
/// grainSize: 128 sectors = 64 KiB.
const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// numGTEsPerGT: 512 entries of 4 bytes, 4 sectors per grain table.
const GTES_PER_GT: u64 = 512;
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
const DESCRIPTOR_OFFSET: u64 = 1;
/// descriptorSize in sectors, as QEMU and VMware reserve.
const DESCRIPTOR_SECTORS: u64 = 20;
/// overHead: grains start here, the first grain boundary after the descriptor.
const OVERHEAD_SECTORS: u64 = 128;
/// "gdOffset ... GD_AT_END": the header says the grain directory is found through
/// the footer.
const GD_AT_END: u64 = u64::MAX;

// Header flags (spec, "Hosted Sparse Extent Header").
const FLAG_NL_DETECT: u32 = 1 << 0;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const COMPRESSION_DEFLATE: u16 = 1;

// Marker types ("Stream-Optimized Compressed Sparse Extents").
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// Adapter named in the descriptor; only used when VMware creates a VM from the bare
/// disk (an OVF names its own controller). LSI Logic is VMware's default for Linux.
const ADAPTER_TYPE: &str = "lsilogic";

pub(super) fn write(
    image: &mut RawImage,
    out: &mut File,
    opts: &ConvertOptions,
) -> Result<ConvertReport, FormatError> {
    let werr = Format::Vmdk.write_error();
    let (size, notes) = rounded_size(image.size(), SECTOR, |raw, size| {
        format!("VMDK: virtual size rounded up from {raw} bytes to {size} bytes (whole sectors)")
    });
    let capacity = size / SECTOR;
    let grains = capacity.div_ceil(GRAIN_SECTORS);
    let gd_entries = grains.div_ceil(GTES_PER_GT);
    let cid = u32::from_le_bytes(derive_id::<4>(&opts.seed, "vmdk cid")) & 0x7fff_ffff;

    let mut w = Out {
        w: BufWriter::with_capacity(1 << 20, &mut *out),
        pos: 0,
    };
    let head = header(capacity, GD_AT_END);
    w.write_all(&head).map_err(werr)?;
    let desc = descriptor(cid, capacity);
    if desc.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
        return Err(werr(io::Error::other(
            "the VMDK descriptor does not fit its sectors",
        )));
    }
    w.write_all(desc.as_bytes()).map_err(werr)?;
    w.pad_to(OVERHEAD_SECTORS * SECTOR).map_err(werr)?;

    let mut gd = vec![0u32; gd_entries as usize];
    let mut gt = Gt {
        index: None,
        entries: vec![0u32; GTES_PER_GT as usize],
    };
    let mut deflate = Deflate::new(-1, true, 15);
    let mut grain = vec![0u8; GRAIN as usize];
    let mut compressed = vec![0u8; 2 * GRAIN as usize];
    image.for_each_nonzero_block(GRAIN as usize, |off, data| {
        let g = off / GRAIN;
        if gt.index != Some(g / GTES_PER_GT) {
            gt.flush(&mut w, &mut gd)?;
            gt.index = Some(g / GTES_PER_GT);
        }
        // A grain always inflates to a whole grain: pad the disk's last one.
        let input: &[u8] = if data.len() == grain.len() {
            data
        } else {
            grain.fill(0);
            grain[..data.len()].copy_from_slice(data);
            &grain
        };
        deflate.reset();
        let n = match deflate.compress(input, &mut compressed, DeflateFlush::Finish) {
            Ok(Status::StreamEnd) => deflate.total_out() as usize,
            other => {
                return Err(FormatError::Compress {
                    format: Format::Vmdk,
                    detail: format!("deflate of the grain at byte {off} ended with {other:?}"),
                })
            }
        };
        // Grain marker: lba (u64), size (u32), then the compressed grain; the next
        // marker starts on a sector boundary.
        gt.entries[(g % GTES_PER_GT) as usize] = w.sector()?;
        w.write_all(&(g * GRAIN_SECTORS).to_le_bytes())
            .map_err(werr)?;
        w.write_all(&(n as u32).to_le_bytes()).map_err(werr)?;
        w.write_all(&compressed[..n]).map_err(werr)?;
        w.pad_to_sector().map_err(werr)
    })?;
    gt.flush(&mut w, &mut gd)?;

    let gd_sectors = (gd_entries * 4).div_ceil(SECTOR);
    w.marker(gd_sectors, MARKER_GD).map_err(werr)?;
    let gd_offset = w.pos / SECTOR;
    let gd_bytes: Vec<u8> = gd.iter().flat_map(|e| e.to_le_bytes()).collect();
    w.write_all(&gd_bytes).map_err(werr)?;
    w.pad_to_sector().map_err(werr)?;
    // The footer: the header again, now with the grain directory's offset; QEMU and
    // VMware find it 1536 bytes before the end of the file.
    w.marker(1, MARKER_FOOTER).map_err(werr)?;
    w.write_all(&header(capacity, gd_offset)).map_err(werr)?;
    w.marker(0, MARKER_EOS).map_err(werr)?;
    w.w.flush().map_err(werr)?;
    Ok(ConvertReport {
        format: Format::Vmdk,
        virtual_size: capacity * SECTOR,
        bytes_written: 0,
        notes,
    })
}

/// SparseExtentHeader ("Hosted Sparse Extent Header"), little-endian, packed.
fn header(capacity: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(b"KDMV"); // magicNumber 0x564d444b
    h[4..8].copy_from_slice(&3u32.to_le_bytes()); // version 3: stream-optimized
    h[8..12].copy_from_slice(&(FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS).to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes()); // capacity (sectors)
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes()); // grainSize
    h[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes()); // descriptorOffset
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes()); // descriptorSize
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes()); // numGTEsPerGT
    h[48..56].copy_from_slice(&0u64.to_le_bytes()); // rgdOffset: none
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes()); // gdOffset
    h[64..72].copy_from_slice(&OVERHEAD_SECTORS.to_le_bytes()); // overHead
    h[72] = 0; // uncleanShutdown
    h[73..77].copy_from_slice(b"\n \r\n"); // newline-corruption detection characters
    h[77..79].copy_from_slice(&COMPRESSION_DEFLATE.to_le_bytes()); // compressAlgorithm
    h
}

/// The embedded descriptor ("The Descriptor File").
fn descriptor(cid: u32, capacity: u64) -> String {
    // SCSI geometry as VMware reports it: 255 heads, 63 sectors, cylinders capped.
    let cylinders = (capacity / (255 * 63)).min(65535);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"disk.vmdk\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"{ADAPTER_TYPE}\"\n"
    )
}

struct Out<'a> {
    w: BufWriter<&'a mut File>,
    pos: u64,
}

impl Out<'_> {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, at: u64) -> io::Result<()> {
        let n = at.saturating_sub(self.pos) as usize;
        self.write_all(&ZEROS[..n])
    }

    fn pad_to_sector(&mut self) -> io::Result<()> {
        self.pad_to(self.pos.div_ceil(SECTOR) * SECTOR)
    }

    /// The current sector, as a 32-bit grain table / directory entry.
    fn sector(&self) -> Result<u32, FormatError> {
        u32::try_from(self.pos / SECTOR).map_err(|_| FormatError::TooLarge {
            format: Format::Vmdk,
            size: self.pos,
            max: u32::MAX as u64 * SECTOR,
        })
    }

    /// A metadata marker sector: numSectors (u64), size 0 (u32), type (u32), zeros.
    fn marker(&mut self, num_sectors: u64, kind: u32) -> io::Result<()> {
        let mut m = [0u8; SECTOR as usize];
        m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        self.write_all(&m)
    }
}

/// The grain table of the 32 MiB region being written.
struct Gt {
    index: Option<u64>,
    entries: Vec<u32>,
}

impl Gt {
    fn flush(&mut self, w: &mut Out, gd: &mut [u32]) -> Result<(), FormatError> {
        let werr = Format::Vmdk.write_error();
        if let Some(i) = self.index.take() {
            w.marker(GT_SECTORS, MARKER_GT).map_err(werr)?;
            gd[i as usize] = w.sector()?;
            let bytes: Vec<u8> = self.entries.iter().flat_map(|e| e.to_le_bytes()).collect();
            w.write_all(&bytes).map_err(werr)?;
            self.entries.fill(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_sit_at_the_spec_offsets() {
        let h = header(4 << 21, 77);
        assert_eq!(u32::from_le_bytes(h[0..4].try_into().unwrap()), 0x564d_444b);
        assert_eq!(
            u32::from_le_bytes(h[8..12].try_into().unwrap()),
            0x0003_0001
        );
        assert_eq!(u64::from_le_bytes(h[12..20].try_into().unwrap()), 4 << 21);
        assert_eq!(u64::from_le_bytes(h[20..28].try_into().unwrap()), 128);
        assert_eq!(u64::from_le_bytes(h[56..64].try_into().unwrap()), 77);
        assert_eq!(&h[73..77], b"\n \r\n");
        assert_eq!(u16::from_le_bytes(h[77..79].try_into().unwrap()), 1);
    }

    #[test]
    fn descriptor_fits_its_sectors_and_names_the_stream_type() {
        let d = descriptor(0x1234abcd, u64::MAX / 512);
        assert!(d.len() as u64 <= DESCRIPTOR_SECTORS * SECTOR);
        assert!(d.contains("CID=1234abcd\n") && d.contains("createType=\"streamOptimized\""));
    }
}
