//! qcow2 version 3, as specified by QEMU's `docs/interop/qcow2.txt`: 64 KiB clusters,
//! 16-bit refcounts, no backing file, no snapshots, no extensions, all feature bits
//! clear, compression type 0 (deflate). Only clusters of the raw disk that hold a
//! non-zero byte are allocated; with `compress`, each is stored as a compressed
//! cluster when that is smaller.
//!
//! Layout, written front to back in one pass over the disk: the header cluster
//! (filled in last), then for each 512 MiB region of the disk its data clusters
//! followed by its L2 table, then the L1 table, the refcount table and the refcount
//! blocks. The spec puts no order on clusters, and this order needs no second pass
//! and no knowledge of compressed sizes ahead. Memory: one L2 table, the L1 table
//! (8 bytes per 512 MiB of disk) and the refcounts (2 bytes per 64 KiB cluster of
//! *output*, so it grows with the data written, at 1/32768 of it).
//!
//! Not here: reading qcow2, backing files, encryption, subclusters (extended L2),
//! zstd compression, the feature name table (optional).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

use zlib_rs::{Deflate, DeflateFlush, Status};

use super::source::{RawImage, ZEROS};
use super::{ConvertReport, Format, FormatError};

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// "L2 tables ... are exactly one cluster in size": 8-byte entries.
const L2_ENTRIES: u64 = CLUSTER / 8;
/// refcount_order 4: 16-bit refcounts, so one refcount block covers this many clusters.
const REFCOUNT_ORDER: u32 = 4;
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER * 8 / (1 << REFCOUNT_ORDER);
/// Header fields through "compression_type" plus its 7 bytes of padding.
const HEADER_LENGTH: u32 = 112;

/// L1/L2 entry bit 63, "QCOW_OFLAG_COPIED": the refcount is exactly one.
const OFLAG_COPIED: u64 = 1 << 63;
/// L2 entry bit 62: the cluster is compressed ("Compressed Clusters Descriptor").
const OFLAG_COMPRESSED: u64 = 1 << 62;
/// "x = 62 - (cluster_bits - 8)": bits 0..x-1 hold the host byte offset, bits x..61
/// the number of additional 512-byte sectors.
const CSIZE_SHIFT: u32 = 62 - (CLUSTER_BITS - 8);
/// QEMU inflates compressed clusters with a 4 KiB window (`inflateInit2(.., -12)`),
/// so they must be deflated with at most that window.
const DEFLATE_WINDOW_BITS: u8 = 12;
/// zlib's Z_DEFAULT_COMPRESSION, as QEMU uses.
const DEFLATE_LEVEL: i32 = -1;

pub(super) fn write(
    image: &mut RawImage,
    out: &mut File,
    compress: bool,
) -> Result<ConvertReport, FormatError> {
    let werr = Format::Qcow2.write_error();
    let size = image.size();
    let l1_entries = size.div_ceil(CLUSTER * L2_ENTRIES);
    let l1_size = u32::try_from(l1_entries).map_err(|_| FormatError::TooLarge {
        format: Format::Qcow2,
        size,
        max: u32::MAX as u64 * CLUSTER * L2_ENTRIES,
    })?;

    let mut w = Out {
        w: BufWriter::with_capacity(1 << 20, &mut *out),
        pos: 0,
        refcounts: vec![],
    };
    // Cluster 0 is the header, written at the end once the offsets are known.
    w.write_clusters(&[]).map_err(werr)?;

    let mut l1 = vec![0u64; l1_entries as usize];
    let mut l2 = L2 {
        region: None,
        bytes: vec![0u8; CLUSTER as usize],
    };
    let mut compressor = compress.then(Compressor::new);
    image.for_each_nonzero_block(CLUSTER as usize, |off, data| {
        let cluster = off / CLUSTER;
        let region = cluster / L2_ENTRIES;
        if l2.region != Some(region) {
            l2.flush(&mut w, &mut l1).map_err(werr)?;
            l2.region = Some(region);
        }
        let entry = match compressor.as_mut().and_then(|c| c.compress(data)) {
            Some(compressed) => w.write_compressed(compressed).map_err(werr)?,
            None => w.write_clusters(data).map_err(werr)? | OFLAG_COPIED,
        };
        l2.set(cluster % L2_ENTRIES, entry);
        Ok(())
    })?;
    l2.flush(&mut w, &mut l1).map_err(werr)?;

    // "L1 table": contiguous, cluster-aligned, 8-byte entries.
    let l1_bytes: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
    let l1_offset = w.write_clusters(&l1_bytes).map_err(werr)?;

    // "Host cluster management": the refcount table and blocks must also count
    // themselves, so find the smallest sizes that cover everything including them.
    let used = w.pos / CLUSTER;
    let (mut table_clusters, mut blocks) = (1u64, 1u64);
    loop {
        let total = used + table_clusters + blocks;
        let need_blocks = total.div_ceil(REFCOUNTS_PER_BLOCK);
        let need_table = (need_blocks * 8).div_ceil(CLUSTER);
        if (need_blocks, need_table) == (blocks, table_clusters) {
            break;
        }
        (blocks, table_clusters) = (need_blocks, need_table);
    }
    let table_offset = w.pos;
    let first_block = used + table_clusters;
    let table: Vec<u8> = (0..blocks)
        .flat_map(|i| ((first_block + i) * CLUSTER).to_be_bytes())
        .collect();
    // Counted here rather than by `write_clusters`, which would count them again.
    w.refcounts
        .resize((used + table_clusters + blocks) as usize, 1);
    w.write_all(&table).map_err(werr)?;
    w.pad_to_cluster().map_err(werr)?;
    for i in 0..blocks as usize {
        let n = REFCOUNTS_PER_BLOCK as usize;
        let block: Vec<u8> = (0..n)
            .flat_map(|j| {
                w.refcounts
                    .get(i * n + j)
                    .copied()
                    .unwrap_or(0)
                    .to_be_bytes()
            })
            .collect();
        w.write_all(&block).map_err(werr)?;
    }
    w.w.flush().map_err(werr)?;
    drop(w);

    let h = header(
        size,
        l1_size,
        l1_offset,
        table_offset,
        table_clusters as u32,
    );
    out.write_all_at(&h, 0).map_err(werr)?;
    Ok(ConvertReport {
        format: Format::Qcow2,
        virtual_size: size,
        bytes_written: 0,
        notes: vec![],
    })
}

/// The image header ("Header" in qcow2.txt), big-endian, version 3.
fn header(
    size: u64,
    l1_size: u32,
    l1_offset: u64,
    refcount_table_offset: u64,
    refcount_table_clusters: u32,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LENGTH as usize);
    h.extend_from_slice(b"QFI\xfb"); //  0 magic
    h.extend_from_slice(&3u32.to_be_bytes()); //  4 version
    h.extend_from_slice(&0u64.to_be_bytes()); //  8 backing_file_offset
    h.extend_from_slice(&0u32.to_be_bytes()); // 16 backing_file_size
    h.extend_from_slice(&CLUSTER_BITS.to_be_bytes()); // 20 cluster_bits
    h.extend_from_slice(&size.to_be_bytes()); // 24 size
    h.extend_from_slice(&0u32.to_be_bytes()); // 32 crypt_method
    h.extend_from_slice(&l1_size.to_be_bytes()); // 36 l1_size
    h.extend_from_slice(&l1_offset.to_be_bytes()); // 40 l1_table_offset
    h.extend_from_slice(&refcount_table_offset.to_be_bytes()); // 48 refcount_table_offset
    h.extend_from_slice(&refcount_table_clusters.to_be_bytes()); // 56 refcount_table_clusters
    h.extend_from_slice(&0u32.to_be_bytes()); // 60 nb_snapshots
    h.extend_from_slice(&0u64.to_be_bytes()); // 64 snapshots_offset
    h.extend_from_slice(&0u64.to_be_bytes()); // 72 incompatible_features
    h.extend_from_slice(&0u64.to_be_bytes()); // 80 compatible_features
    h.extend_from_slice(&0u64.to_be_bytes()); // 88 autoclear_features
    h.extend_from_slice(&REFCOUNT_ORDER.to_be_bytes()); // 96 refcount_order
    h.extend_from_slice(&HEADER_LENGTH.to_be_bytes()); // 100 header_length
    h.push(0); // 104 compression_type: deflate
    h.extend_from_slice(&[0; 7]); // 105 padding to a multiple of 8
                                  // The header extension list that follows is empty: its end marker (type 0,
                                  // length 0) is the zeros the rest of cluster 0 already holds.
    debug_assert_eq!(h.len(), HEADER_LENGTH as usize);
    h
}

/// The output, written front to back, with the refcount of every host cluster.
struct Out<'a> {
    w: BufWriter<&'a mut File>,
    pos: u64,
    refcounts: Vec<u16>,
}

impl Out<'_> {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad_to_cluster(&mut self) -> io::Result<()> {
        let pad = (CLUSTER - self.pos % CLUSTER) % CLUSTER;
        self.write_all(&ZEROS[..pad as usize])
    }

    /// Adds one reference to every host cluster overlapping `[start, end)`.
    fn reference(&mut self, start: u64, end: u64) {
        let (first, last) = (start / CLUSTER, (end - 1) / CLUSTER);
        if self.refcounts.len() <= last as usize {
            self.refcounts.resize(last as usize + 1, 0);
        }
        for c in first..=last {
            let r = &mut self.refcounts[c as usize];
            *r = r.saturating_add(1);
        }
    }

    /// Writes `data` from the next cluster boundary, zero-padded to whole clusters
    /// (at least one), each with refcount 1. Returns its offset.
    fn write_clusters(&mut self, data: &[u8]) -> io::Result<u64> {
        self.pad_to_cluster()?;
        let start = self.pos;
        self.write_all(data)?;
        if data.is_empty() {
            self.write_all(&ZEROS[..CLUSTER as usize])?;
        }
        self.pad_to_cluster()?;
        self.reference(start, self.pos);
        Ok(start)
    }

    /// Writes a compressed cluster right after the previous bytes (compressed
    /// clusters are packed, not cluster-aligned) and returns its L2 entry, the
    /// "Compressed Clusters Descriptor".
    fn write_compressed(&mut self, data: &[u8]) -> io::Result<u64> {
        let start = self.pos;
        self.write_all(data)?;
        let extra_sectors = ((start + data.len() as u64 - 1) >> 9) - (start >> 9);
        // QEMU counts a reference on every host cluster overlapping the sectors
        // named by the descriptor, and so must the refcounts.
        self.reference(start & !511, ((start >> 9) + extra_sectors + 1) << 9);
        Ok(OFLAG_COMPRESSED | (extra_sectors << CSIZE_SHIFT) | start)
    }
}

/// The L2 table of the 512 MiB region being written.
struct L2 {
    region: Option<u64>,
    bytes: Vec<u8>,
}

impl L2 {
    fn set(&mut self, index: u64, entry: u64) {
        let i = index as usize * 8;
        self.bytes[i..i + 8].copy_from_slice(&entry.to_be_bytes());
    }

    /// Writes the table (if a region is open) and points its L1 entry at it.
    fn flush(&mut self, w: &mut Out, l1: &mut [u64]) -> io::Result<()> {
        if let Some(region) = self.region.take() {
            l1[region as usize] = w.write_clusters(&self.bytes)? | OFLAG_COPIED;
            self.bytes.fill(0);
        }
        Ok(())
    }
}

/// Raw deflate of one cluster, for compressed clusters.
struct Compressor {
    deflate: Deflate,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl Compressor {
    fn new() -> Self {
        Compressor {
            deflate: Deflate::new(DEFLATE_LEVEL, false, DEFLATE_WINDOW_BITS),
            input: vec![0; CLUSTER as usize],
            output: vec![0; CLUSTER as usize],
        }
    }

    /// The compressed cluster, or `None` when compressing does not make it smaller
    /// than a cluster (then it is stored as a normal cluster, as QEMU does).
    fn compress(&mut self, data: &[u8]) -> Option<&[u8]> {
        // A compressed cluster always inflates to a whole cluster: pad the disk's
        // last, partial cluster with zeros.
        let input: &[u8] = if data.len() == CLUSTER as usize {
            data
        } else {
            self.input.fill(0);
            self.input[..data.len()].copy_from_slice(data);
            &self.input
        };
        self.deflate.reset();
        let limit = CLUSTER as usize - 1;
        match self
            .deflate
            .compress(input, &mut self.output[..limit], DeflateFlush::Finish)
        {
            Ok(Status::StreamEnd) => Some(&self.output[..self.deflate.total_out() as usize]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_sit_at_the_spec_offsets() {
        let h = header(2 << 30, 4, 0x30000, 0x40000, 1);
        assert_eq!(&h[0..4], b"QFI\xfb");
        assert_eq!(u32::from_be_bytes(h[4..8].try_into().unwrap()), 3);
        assert_eq!(u32::from_be_bytes(h[20..24].try_into().unwrap()), 16);
        assert_eq!(u64::from_be_bytes(h[24..32].try_into().unwrap()), 2 << 30);
        assert_eq!(u32::from_be_bytes(h[36..40].try_into().unwrap()), 4);
        assert_eq!(u64::from_be_bytes(h[40..48].try_into().unwrap()), 0x30000);
        assert_eq!(u64::from_be_bytes(h[48..56].try_into().unwrap()), 0x40000);
        assert_eq!(u32::from_be_bytes(h[96..100].try_into().unwrap()), 4);
        assert_eq!(u32::from_be_bytes(h[100..104].try_into().unwrap()), 112);
        assert_eq!(h.len(), 112);
    }

    #[test]
    fn compressed_descriptor_counts_extra_sectors_and_references_overlapped_clusters() {
        let mut file = tempfile::tempfile().unwrap();
        let mut w = Out {
            w: BufWriter::new(&mut file),
            pos: 0,
            refcounts: vec![],
        };
        w.write_clusters(&[]).unwrap();
        w.write_all(&[0u8; 65000]).unwrap(); // pos 130536, sector 254 byte 488
        let e = w.write_compressed(&[1u8; 100]).unwrap();
        // Bytes 130536..130636 span sectors 254 and 255: one extra sector.
        assert_eq!(e & ((1 << CSIZE_SHIFT) - 1), 130536);
        assert_eq!((e >> CSIZE_SHIFT) & 0xff, 1);
        assert_eq!(e & OFLAG_COMPRESSED, OFLAG_COMPRESSED);
        assert_eq!(w.refcounts, vec![1, 1]);
        // Bytes 130636..131236: sectors 255 and 256, the second one in cluster 2.
        let e = w.write_compressed(&[1u8; 600]).unwrap();
        assert_eq!((e >> CSIZE_SHIFT) & 0xff, 1);
        assert_eq!(w.refcounts, vec![1, 2, 1]);
    }

    #[test]
    fn a_cluster_that_does_not_shrink_is_stored_uncompressed() {
        let mut c = Compressor::new();
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..CLUSTER)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(c.compress(&noise).is_none());
        assert!(c.compress(&[7u8; 65536]).is_some_and(|d| d.len() < 1000));
    }
}
