//! The compressed store's data: files cut into LZ4 physical clusters of one block,
//! compressed on every core, written in order.
//!
//! EROFS maps a compressed file's bytes in *extents*: each one is the decompressed
//! data of one physical cluster (pcluster), here always one 4 KiB block. liblz4's
//! destination-size compressors (`LZ4_compress_destSize`, `LZ4_compress_HC_destSize`)
//! fill the block with as much input as fits, so an extent is as long as the data
//! compresses (a fixed output, a variable input: what `mkfs.erofs` does). The
//! compressed bytes end at the block's end, zeros before them
//! (`EROFS_FEATURE_INCOMPAT_ZERO_PADDING`): the kernel finds where they start by
//! skipping the zeros. Data that does not compress to less than its block is stored
//! as it is, 4096 bytes in a block (a *plain* extent).
//!
//! A file is read in [`SEGMENT`]-sized pieces and each piece is compressed on its
//! own, on any worker: extents never cross a segment boundary, so the bytes do not
//! depend on the number of workers (the last extent of a segment may be short;
//! that costs at most a block per MiB). Extents are also at most [`MAX_EXTENT`]
//! long, which bounds what a read of one page decompresses.
//!
//! Memory: at most `2 * workers + 2` segments are in flight (read, compressing, or
//! compressed and waiting to be written), each at most 1 MiB in and out, and at
//! most [`MAX_WORKERS`] compress: about 36 MiB at most on any machine.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::format::BLOCK_SIZE;
use super::layout::{Body, Node};
use super::ErofsError;
use crate::tree::TreePath;

/// The unit of parallel work: a file is compressed in pieces of this many bytes.
pub const SEGMENT: usize = 1 << 20;
/// The most threads that compress, whatever the core count: beyond it memory
/// grows (two segments each) faster than the build gets shorter.
pub const MAX_WORKERS: usize = 8;
/// The longest extent (decompressed bytes of one block).
pub const MAX_EXTENT: usize = 64 << 10;
const BLOCK: usize = BLOCK_SIZE as usize;

/// How the store's files are compressed (`store.compression` in a profile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// LZ4's fast compressor (`LZ4_compress_destSize`).
    Lz4,
    /// LZ4's high-compression compressor at `level` (1..=12; erofs-utils' default is
    /// 9). The output is the same LZ4 format: the kernel reads both alike.
    Lz4hc { level: u8 },
}

impl Compression {
    /// lz4hc's default level, as `mkfs.erofs -zlz4hc` uses it.
    pub const LZ4HC_DEFAULT: u8 = 9;

    /// The name a profile and the report use.
    pub fn name(&self) -> String {
        match self {
            Compression::Lz4 => "lz4".into(),
            Compression::Lz4hc { level } if *level == Self::LZ4HC_DEFAULT => "lz4hc".into(),
            Compression::Lz4hc { level } => format!("lz4hc,{level}"),
        }
    }

    /// Parses `lz4`, `lz4hc` or `lz4hc,LEVEL`; `None` for `none`.
    pub fn parse(text: &str) -> Result<Option<Compression>, String> {
        match text.trim() {
            "none" => Ok(None),
            "lz4" => Ok(Some(Compression::Lz4)),
            "lz4hc" => Ok(Some(Compression::Lz4hc {
                level: Self::LZ4HC_DEFAULT,
            })),
            other => match other.strip_prefix("lz4hc,").map(str::parse::<u8>) {
                Some(Ok(level @ 1..=12)) => Ok(Some(Compression::Lz4hc { level })),
                _ => Err(format!(
                    "{other:?} is not a store compression: use none, lz4, lz4hc or lz4hc,LEVEL (LEVEL 1 to 12)"
                )),
            },
        }
    }
}

/// One worker's compressor (lz4hc keeps its match-finder state here).
struct Compressor {
    algo: Compression,
    hc_state: Option<crate::sys::Lz4hcState>,
    /// Where each compressed block is decoded again before it is used.
    check: Vec<u8>,
}

impl Compressor {
    fn new(algo: Compression) -> Compressor {
        let hc_state = match algo {
            Compression::Lz4hc { .. } => Some(crate::sys::Lz4hcState::new()),
            Compression::Lz4 => None,
        };
        Compressor {
            algo,
            hc_state,
            check: vec![0u8; MAX_EXTENT],
        }
    }

    /// Compresses the start of `src` (at most [`MAX_EXTENT`] bytes) into at most one
    /// block: the compressed bytes and how much of `src` they hold; nothing when
    /// liblz4 fails. What it returns is checked: it starts with a non-zero byte
    /// (the kernel finds the start by skipping the padding zeros) and decodes to
    /// exactly those bytes of `src`, so a compressor fault stores the data plain
    /// rather than a store the node cannot read.
    fn fill_block<'o>(&mut self, src: &[u8], out: &'o mut [u8; BLOCK]) -> (&'o [u8], usize) {
        let hc = match (self.algo, self.hc_state.as_mut()) {
            (Compression::Lz4hc { level }, Some(state)) => Some((state, level)),
            _ => None,
        };
        let (written, consumed) = crate::sys::lz4_compress_dest_size(src, out, hc);
        let packed = &out[..written];
        let sound = consumed <= self.check.len()
            && packed.first().is_some_and(|&b| b != 0)
            && crate::sys::lz4_decompress(packed, &mut self.check[..consumed]) == Some(consumed)
            && self.check[..consumed] == src[..consumed];
        if sound {
            (packed, consumed)
        } else {
            (&out[..0], 0)
        }
    }

    /// Cuts `data` (one segment) into extents: appends one block per extent to
    /// `blocks` and its length and kind to `extents`.
    fn segment(&mut self, data: &[u8], blocks: &mut Vec<u8>, extents: &mut Vec<Extent>) {
        let mut scratch = [0u8; BLOCK];
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            let window = &rest[..rest.len().min(MAX_EXTENT)];
            let (packed, consumed) = if rest.len() > BLOCK {
                self.fill_block(window, &mut scratch)
            } else {
                (&[][..], 0)
            };
            // Worth it only when the block holds more than a block of data.
            if consumed > BLOCK && !packed.is_empty() {
                push_packed(packed, consumed, blocks, extents);
                pos += consumed;
            } else {
                let len = self.plain_len(pos, rest, blocks, extents);
                if len == 0 {
                    break; // the tail went in compressed
                }
                blocks.extend_from_slice(&rest[..len]);
                blocks.resize(blocks.len() + BLOCK - len, 0);
                extents.push(Extent {
                    len: len as u32,
                    plain: true,
                });
                pos += len;
            }
        }
    }
}

impl Compressor {
    /// How long a plain extent at `pos` (of a segment, which starts on a cluster
    /// boundary) may be; 0 when `rest` went in compressed instead.
    ///
    /// A plain extent is at most a block, and the file's last one must also end in
    /// the logical cluster it starts in: the kernel maps the last extent up to the
    /// end of its last cluster, and refuses a plain one that comes out longer than
    /// its block (`m_llen > m_plen`, EFSCORRUPTED). So a tail that would cross a
    /// cluster boundary is compressed whole when LZ4 takes it in one block, and
    /// otherwise cut at the boundary.
    fn plain_len(
        &mut self,
        pos: usize,
        rest: &[u8],
        blocks: &mut Vec<u8>,
        extents: &mut Vec<Extent>,
    ) -> usize {
        let to_boundary = BLOCK - pos % BLOCK;
        if rest.len() > BLOCK || rest.len() <= to_boundary {
            return rest.len().min(BLOCK);
        }
        let mut scratch = [0u8; BLOCK];
        let (packed, consumed) = self.fill_block(rest, &mut scratch);
        if consumed == rest.len() && !packed.is_empty() {
            push_packed(packed, consumed, blocks, extents);
            return 0;
        }
        to_boundary
    }
}

/// Appends a compressed extent holding `len` bytes: its block (zeros, then the
/// `packed` bytes at the block's end) and its entry.
fn push_packed(packed: &[u8], len: usize, blocks: &mut Vec<u8>, extents: &mut Vec<Extent>) {
    blocks.resize(blocks.len() + BLOCK - packed.len(), 0);
    blocks.extend_from_slice(packed);
    extents.push(Extent {
        len: len as u32,
        plain: false,
    });
}

/// One extent: `len` decompressed bytes in one block, compressed or plain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub len: u32,
    pub plain: bool,
}

/// A compressed segment: one block per extent, in order.
pub struct Packed {
    pub blocks: Vec<u8>,
    pub extents: Vec<Extent>,
}

struct Job {
    seq: u64,
    data: Vec<u8>,
}

type Done = (u64, Result<Packed, ErofsError>);

/// The compressed segments of every compressed file, in node order, made by
/// workers ahead of the writer. Dropping it stops the threads (they are scoped).
pub struct Pipeline {
    done: Receiver<Done>,
    /// Taken back by the feeder for each segment it reads; returned when the
    /// writer has taken a segment: the bound on segments in flight.
    tokens: SyncSender<()>,
    waiting: std::collections::BTreeMap<u64, Result<Packed, ErofsError>>,
    next: u64,
}

impl Pipeline {
    /// Starts the feeder (reads the compressed files of `nodes` in order) and
    /// `workers` compressors on `scope`.
    pub fn start<'s, 'e: 's>(
        scope: &'s std::thread::Scope<'s, 'e>,
        nodes: &'e [Node<'e>],
        algo: Compression,
        workers: usize,
    ) -> Pipeline {
        let workers = workers.clamp(1, MAX_WORKERS);
        let in_flight = 2 * workers + 2;
        let (tokens, token_rx) = sync_channel::<()>(in_flight);
        for _ in 0..in_flight {
            let _ = tokens.send(());
        }
        let (job_tx, job_rx) = sync_channel::<Job>(workers);
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let (done_tx, done) = std::sync::mpsc::channel::<Done>();
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            scope.spawn(move || {
                let mut c = Compressor::new(algo);
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // A panic must reach the writer as an error in this segment's
                    // place: otherwise it would wait for the segment for ever.
                    let packed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let mut packed = Packed {
                            blocks: Vec::with_capacity(job.data.len() + BLOCK),
                            extents: Vec::new(),
                        };
                        c.segment(&job.data, &mut packed.blocks, &mut packed.extents);
                        packed
                    }))
                    .map_err(|_| {
                        ErofsError::Write(io::Error::other("a store compressor thread failed"))
                    });
                    let failed = packed.is_err();
                    if done_tx.send((job.seq, packed)).is_err() || failed {
                        return;
                    }
                }
            });
        }
        scope.spawn(move || feed(nodes, &token_rx, &job_tx, &done_tx));
        Pipeline {
            done,
            tokens,
            waiting: Default::default(),
            next: 0,
        }
    }

    /// The next segment in order (the writer knows how many each file has).
    pub fn next_segment(&mut self) -> Result<Packed, ErofsError> {
        loop {
            if let Some(r) = self.waiting.remove(&self.next) {
                self.next += 1;
                let _ = self.tokens.send(());
                return r;
            }
            match self.done.recv() {
                Ok((seq, r)) => {
                    self.waiting.insert(seq, r);
                }
                Err(_) => {
                    return Err(ErofsError::Write(io::Error::other(
                        "the store's compressor threads stopped early",
                    )))
                }
            }
        }
    }
}

/// How many segments a compressed file of `size` bytes is read in.
pub fn segments(size: u64) -> u64 {
    size.div_ceil(SEGMENT as u64)
}

/// The feeder: reads each compressed file's content, exactly as long as the tree
/// says, a segment at a time; a read error or a wrong length goes to the writer in
/// the failing segment's place.
fn feed(
    nodes: &[Node<'_>],
    tokens: &Receiver<()>,
    jobs: &SyncSender<Job>,
    done: &std::sync::mpsc::Sender<Done>,
) {
    let mut seq = 0u64;
    for node in nodes.iter().filter(|n| n.compressed()) {
        let Body::File(content) = &node.body else {
            continue;
        };
        let fail = |seq: u64, e: ErofsError| {
            let _ = done.send((seq, Err(e)));
        };
        let mut reader = match content.open() {
            Ok(r) => r,
            Err(source) => return fail(seq, read_error(node.path, source)),
        };
        let mut left = node.size;
        while left > 0 {
            if tokens.recv().is_err() {
                return; // the writer stopped
            }
            let want = left.min(SEGMENT as u64) as usize;
            let mut data = vec![0u8; want];
            if let Err(e) = read_full(&mut reader, &mut data, node, left) {
                return fail(seq, e);
            }
            left -= want as u64;
            if left == 0 {
                if let Err(e) = expect_end(&mut reader, node) {
                    return fail(seq, e);
                }
            }
            if jobs.send(Job { seq, data }).is_err() {
                return;
            }
            seq += 1;
        }
    }
}

fn read_error(path: &TreePath, source: io::Error) -> ErofsError {
    ErofsError::Read {
        path: path.clone(),
        source,
    }
}

/// Fills `buf`; a content that ends first is [`ErofsError::ContentLength`].
fn read_full(
    r: &mut dyn Read,
    buf: &mut [u8],
    node: &Node<'_>,
    left: u64,
) -> Result<(), ErofsError> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => {
                return Err(ErofsError::ContentLength {
                    path: node.path.clone(),
                    expected: node.size,
                    got: node.size - left + at as u64,
                })
            }
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(node.path, e)),
        }
    }
    Ok(())
}

/// After the declared length the content must end.
fn expect_end(r: &mut dyn Read, node: &Node<'_>) -> Result<(), ErofsError> {
    let mut probe = [0u8; 4096];
    loop {
        match r.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                return Err(ErofsError::ContentLength {
                    path: node.path.clone(),
                    expected: node.size,
                    got: node.size + n as u64,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(node.path, e)),
        }
    }
}

/// Decompresses one LZ4 extent: `block` is the pcluster (zeros, then the
/// compressed bytes), `out` exactly the extent's length. Fails unless the bytes
/// decompress to exactly `out.len()` bytes.
pub fn decompress_block(block: &[u8], out: &mut [u8]) -> io::Result<()> {
    let start = block.iter().position(|&b| b != 0).unwrap_or(block.len());
    let src = &block[start..];
    if src.is_empty() || out.len() > MAX_DECODED {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "an empty or oversized compressed extent",
        ));
    }
    let n = crate::sys::lz4_decompress(src, out);
    if n != Some(out.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a compressed extent does not decode to the {} bytes its index says",
                out.len()
            ),
        ));
    }
    Ok(())
}

/// The longest extent a reader decompresses: what the kernel accepts
/// (`Z_EROFS_PCLUSTER_MAX_DSIZE`, 12 MiB) is far more than this writer makes, and
/// a reader of hostile images stays bounded.
pub const MAX_DECODED: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(algo: Compression, data: &[u8]) -> Vec<Extent> {
        let mut blocks = Vec::new();
        let mut extents = Vec::new();
        Compressor::new(algo).segment(data, &mut blocks, &mut extents);
        assert_eq!(blocks.len(), extents.len() * BLOCK);
        let mut back = Vec::new();
        for (i, e) in extents.iter().enumerate() {
            let block = &blocks[i * BLOCK..(i + 1) * BLOCK];
            let mut out = vec![0u8; e.len as usize];
            if e.plain {
                out.copy_from_slice(&block[..e.len as usize]);
            } else {
                decompress_block(block, &mut out).unwrap();
            }
            back.extend_from_slice(&out);
        }
        assert_eq!(back, data);
        extents
    }

    fn text(len: usize) -> Vec<u8> {
        let words = [
            "kube", "let ", "pod ", "node", "\n", "image ", "layer", "42 ",
        ];
        let mut out = Vec::with_capacity(len);
        let mut x = 7u32;
        while out.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            out.extend_from_slice(words[(x >> 16) as usize % words.len()].as_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn compressible_data_packs_several_blocks_into_one_and_reads_back() {
        for algo in [Compression::Lz4, Compression::Lz4hc { level: 9 }] {
            let data = text(300_000);
            let extents = roundtrip(algo, &data);
            assert!(extents.iter().any(|e| !e.plain));
            assert!(
                extents.len() * BLOCK < data.len() * 3 / 4,
                "{algo:?}: {}",
                extents.len()
            );
            assert!(extents.iter().all(|e| e.len as usize <= MAX_EXTENT));
        }
    }

    #[test]
    fn random_data_is_stored_plain_and_a_short_tail_too() {
        let mut data = vec![0u8; 3 * BLOCK + 100];
        let mut x = 1u64;
        for b in &mut data {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let extents = roundtrip(Compression::Lz4hc { level: 9 }, &data);
        assert!(extents.iter().all(|e| e.plain));
        assert_eq!(extents.last().unwrap().len, 100);
    }

    #[test]
    fn a_last_plain_extent_never_crosses_a_cluster_boundary() {
        let mut x = 9u64;
        let noise: Vec<u8> = (0..3 * BLOCK + 4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        // Compressible text, then noise: the tail starts mid-cluster and crosses.
        for data in [[text(20_000), noise.clone()].concat(), noise] {
            for algo in [Compression::Lz4, Compression::Lz4hc { level: 9 }] {
                let extents = roundtrip(algo, &data);
                let mut start = 0usize;
                for e in &extents {
                    let end = start + e.len as usize;
                    if e.plain && end == data.len() {
                        assert!(start / BLOCK == (end - 1) / BLOCK, "{algo:?}: {extents:?}");
                    }
                    start = end;
                }
            }
        }
    }

    #[test]
    fn zeros_are_capped_at_the_longest_extent() {
        let extents = roundtrip(Compression::Lz4, &vec![0u8; 200_000]);
        assert_eq!(extents[0].len as usize, MAX_EXTENT);
    }

    #[test]
    fn a_block_that_does_not_decode_to_its_extent_is_an_error() {
        let data = text(50_000);
        let mut blocks = Vec::new();
        let mut extents = Vec::new();
        Compressor::new(Compression::Lz4).segment(&data, &mut blocks, &mut extents);
        let block = &blocks[..BLOCK];
        let len = extents[0].len as usize;
        assert!(decompress_block(block, &mut vec![0u8; len]).is_ok());
        assert!(decompress_block(block, &mut vec![0u8; len - 1]).is_err());
        assert!(decompress_block(block, &mut vec![0u8; len + 1]).is_err());
        assert!(decompress_block(&[0u8; BLOCK], &mut vec![0u8; len]).is_err());
        assert!(decompress_block(block, &mut vec![0u8; MAX_DECODED + 1]).is_err());
    }

    #[test]
    fn names_parse_and_print_back() {
        assert_eq!(Compression::parse("none"), Ok(None));
        for name in ["lz4", "lz4hc", "lz4hc,12"] {
            assert_eq!(Compression::parse(name).unwrap().unwrap().name(), name);
        }
        assert!(Compression::parse("lz4hc,13").is_err());
        assert!(Compression::parse("zstd").is_err());
    }
}
