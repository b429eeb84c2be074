//! Finding a kernel's configuration inside the kernel image (`CONFIG_IKCONFIG`).
//!
//! With `CONFIG_IKCONFIG=y`, `kernel/configs.c` puts the gzip'd `.config` into the
//! kernel between the markers `IKCFG_ST` and `IKCFG_ED`. The kernel itself is usually
//! compressed inside a boot image, so this module unwraps, at most a few levels deep:
//! - an x86 **bzImage**: boot protocol 2.08+ (Documentation/arch/x86/boot.rst, "The
//!   real-mode kernel header"): `HdrS` at 0x202, `setup_sects` at 0x1F1 (0 means 4),
//!   the protected-mode code at `(setup_sects + 1) * 512`, and relative to it the
//!   compressed payload at `payload_offset` (u32 at 0x248) of `payload_length` (u32 at
//!   0x24C). The payload ends with the 4-byte uncompressed size the kernel build
//!   appends, so each decoder stops at the end of its first stream.
//! - an **EFI zboot** image (arm64/riscv `vmlinuz.efi`, drivers/firmware/efi/libstub/
//!   zboot-header.S): `MZ`, `zimg` at 4, payload offset and size (u32) at 8 and 12.
//! - a whole-file **gzip/xz/zstd/lzma** stream (arm64 `Image.gz`, `config.gz`).
//! - anything else is scanned for gzip, xz and zstd magics, as the kernel's
//!   `scripts/extract-ikconfig` does.
//!
//! Decoders: gzip (flate2), zstd (zstd), xz and lzma (xz2, i.e. liblzma: the kernel's
//! xz payloads use the x86/ARM BCJ filters, which pure-Rust xz decoders lack). lz4,
//! lzo and bzip2 kernels are named in a clear error. Every decompression stops at
//! [`MAX_DECOMPRESSED`] bytes.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use xz2::stream::{Action, Status, Stream};

use super::KernelError;

/// The most bytes any one decompression may produce (and the largest file read).
pub const MAX_DECOMPRESSED: u64 = 512 << 20;

/// How many levels of wrapping (boot image, compressed kernel) are unwrapped.
const MAX_DEPTH: u8 = 3;

/// How many occurrences of each magic the fallback scan tries.
const SCAN_TRIES_PER_MAGIC: usize = 8;

const IKCFG_ST: &[u8] = b"IKCFG_ST";
const IKCFG_ED: &[u8] = b"IKCFG_ED";

/// A compression format a kernel image may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    Lzma,
    Lz4,
    Lzo,
    Bzip2,
}

impl Compression {
    /// Magic numbers, from the formats' specifications (RFC 1952 with deflate,
    /// xz-file-format 2.1.1.1, RFC 8878 3.1.1, the lz4 legacy frame, lzop, bzip2); the
    /// lzma one is the properties byte and dictionary size the kernel build uses.
    const MAGICS: [(Compression, &'static [u8]); 7] = [
        (Compression::Gzip, &[0x1f, 0x8b, 0x08]),
        (Compression::Xz, &[0xfd, b'7', b'z', b'X', b'Z', 0x00]),
        (Compression::Zstd, &[0x28, 0xb5, 0x2f, 0xfd]),
        (Compression::Lz4, &[0x02, 0x21, 0x4c, 0x18]),
        (Compression::Lzo, &[0x89, b'L', b'Z', b'O', 0x00]),
        (Compression::Bzip2, b"BZh"),
        (Compression::Lzma, &[0x5d, 0x00, 0x00]),
    ];

    /// The compression whose magic `data` starts with.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        Compression::MAGICS
            .iter()
            .find(|(_, magic)| data.starts_with(magic))
            .map(|(c, _)| *c)
    }

    fn magic(self) -> &'static [u8] {
        Compression::MAGICS
            .iter()
            .find(|(c, _)| *c == self)
            .map(|(_, m)| *m)
            .unwrap_or_default()
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lzma => "lzma",
            Compression::Lz4 => "lz4",
            Compression::Lzo => "lzo",
            Compression::Bzip2 => "bzip2",
        })
    }
}

/// What a search of some bytes found.
enum Found {
    /// The configuration text.
    Config(Vec<u8>),
    /// A kernel (or a wrapper around one) that has no configuration in it.
    KernelWithout,
    /// Nothing recognisable as a kernel.
    Unknown,
}

/// The `.config` text of `bytes`: the bytes themselves when they are a configuration
/// (plain or gzip'd), or the configuration built into the kernel image they are.
pub(crate) fn config_text(bytes: &[u8], path: &Path) -> Result<Vec<u8>, KernelError> {
    if looks_like_config(bytes) {
        return Ok(bytes.to_vec());
    }
    match search(bytes, path, 0)? {
        Found::Config(text) => Ok(text),
        Found::KernelWithout => Err(KernelError::NoEmbeddedConfig {
            path: path.to_path_buf(),
        }),
        Found::Unknown => Err(KernelError::NotAKernel {
            path: path.to_path_buf(),
        }),
    }
}

fn search(data: &[u8], path: &Path, depth: u8) -> Result<Found, KernelError> {
    if depth >= MAX_DEPTH {
        return Ok(Found::Unknown);
    }
    // A boot image's kernel is its payload: decompress that rather than trust a
    // marker that may sit in the compressed bytes by chance.
    if let Some((offset, payload)) = bzimage_payload(data, path)? {
        return unwrap_payload(payload, offset, path, depth);
    }
    if let Some((offset, payload)) = zboot_payload(data, path)? {
        return unwrap_payload(payload, offset, path, depth);
    }
    if let Some(config) = ikconfig_blob(data, path)? {
        return Ok(Found::Config(config));
    }
    if Compression::detect(data).is_some() {
        let inner = decompress(data, 0, path)?;
        if looks_like_config(&inner) {
            return Ok(Found::Config(inner));
        }
        return match search(&inner, path, depth + 1)? {
            Found::Unknown => Ok(Found::KernelWithout),
            found => Ok(found),
        };
    }
    if is_elf(data) || is_arm64_image(data) {
        return Ok(Found::KernelWithout);
    }
    // An image of a kind not known above: try each strong magic, like
    // scripts/extract-ikconfig. Failures are expected (magics inside other data).
    for compression in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
        let magic = compression.magic();
        let mut from = 0;
        for _ in 0..SCAN_TRIES_PER_MAGIC {
            let Some(at) = find(data, magic, from) else {
                break;
            };
            from = at + 1;
            if let Ok(inner) = decompress(&data[at..], at, path) {
                if let Found::Config(config) = search(&inner, path, depth + 1)? {
                    return Ok(Found::Config(config));
                }
            }
        }
    }
    Ok(Found::Unknown)
}

/// Decompresses a boot image's payload and searches the kernel in it.
fn unwrap_payload(
    payload: &[u8],
    offset: usize,
    path: &Path,
    depth: u8,
) -> Result<Found, KernelError> {
    let kernel = decompress(payload, offset, path)?;
    match search(&kernel, path, depth + 1)? {
        Found::Unknown => Ok(Found::KernelWithout),
        found => Ok(found),
    }
}

/// The gzip'd configuration between `IKCFG_ST` and `IKCFG_ED`, decompressed.
fn ikconfig_blob(data: &[u8], path: &Path) -> Result<Option<Vec<u8>>, KernelError> {
    // The marker also appears in the kernel's own code that prints it; the blob is
    // the occurrence followed by a gzip header.
    let mut from = 0;
    while let Some(at) = find(data, IKCFG_ST, from) {
        let start = at + IKCFG_ST.len();
        from = start;
        if !data[start..].starts_with(Compression::Gzip.magic()) {
            continue;
        }
        let end = find(data, IKCFG_ED, start).unwrap_or(data.len());
        let config = decompress(&data[start..end], start, path)?;
        return Ok(Some(config));
    }
    Ok(None)
}

/// The compressed kernel of an x86 bzImage, with its offset in the file.
fn bzimage_payload<'a>(
    data: &'a [u8],
    path: &Path,
) -> Result<Option<(usize, &'a [u8])>, KernelError> {
    if data.get(0x202..0x206) != Some(b"HdrS") {
        return Ok(None);
    }
    let bad = |message: String| KernelError::BadImage {
        path: path.to_path_buf(),
        message,
    };
    let version = u16_at(data, 0x206).unwrap_or(0);
    if version < 0x208 {
        return Err(bad(format!(
            "bzImage boot protocol {}.{:02} predates the payload fields (2.08); give the kernel's .config file instead",
            version >> 8,
            version & 0xff
        )));
    }
    let setup_sects = match data[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let (Some(offset), Some(length)) = (u32_at(data, 0x248), u32_at(data, 0x24c)) else {
        return Err(bad("bzImage setup header is truncated".into()));
    };
    let start = (setup_sects + 1) * 512 + offset as usize;
    let payload = start
        .checked_add(length as usize)
        .and_then(|end| data.get(start..end))
        .ok_or_else(|| {
            bad(format!(
                "bzImage payload (byte {start}, {length} bytes) lies outside the {}-byte file",
                data.len()
            ))
        })?;
    Ok(Some((start, payload)))
}

/// The compressed kernel of an EFI zboot image, with its offset in the file.
fn zboot_payload<'a>(
    data: &'a [u8],
    path: &Path,
) -> Result<Option<(usize, &'a [u8])>, KernelError> {
    if !data.starts_with(b"MZ") || data.get(4..8) != Some(b"zimg") {
        return Ok(None);
    }
    let (Some(offset), Some(size)) = (u32_at(data, 8), u32_at(data, 12)) else {
        return Ok(None);
    };
    let (start, size) = (offset as usize, size as usize);
    let payload = start
        .checked_add(size)
        .and_then(|end| data.get(start..end))
        .ok_or_else(|| KernelError::BadImage {
            path: path.to_path_buf(),
            message: format!(
                "EFI zboot payload (byte {start}, {size} bytes) lies outside the {}-byte file",
                data.len()
            ),
        })?;
    Ok(Some((start, payload)))
}

/// Decompresses the first stream of `data`, whose format its magic tells; `offset`
/// is where `data` starts in the file, for messages.
fn decompress(data: &[u8], offset: usize, path: &Path) -> Result<Vec<u8>, KernelError> {
    let compression = Compression::detect(data).ok_or_else(|| KernelError::BadImage {
        path: path.to_path_buf(),
        message: format!("no known compression magic at byte {offset}"),
    })?;
    let result = match compression {
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(data), MAX_DECOMPRESSED),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(data).and_then(|d| {
            let mut d = d.single_frame();
            // The kernel's zstd22 payloads may use windows beyond the default limit.
            d.window_log_max(31)?;
            read_bounded(d, MAX_DECOMPRESSED)
        }),
        Compression::Xz => liblzma(
            Stream::new_stream_decoder(u64::MAX, 0),
            data,
            MAX_DECOMPRESSED,
        ),
        Compression::Lzma => liblzma(Stream::new_lzma_decoder(u64::MAX), data, MAX_DECOMPRESSED),
        Compression::Lz4 | Compression::Lzo | Compression::Bzip2 => {
            return Err(KernelError::UnsupportedCompression {
                path: path.to_path_buf(),
                compression,
            })
        }
    };
    result.map_err(|source| {
        if source.kind() == io::ErrorKind::OutOfMemory {
            KernelError::TooLarge {
                path: path.to_path_buf(),
                what: format!("the {compression} data at byte {offset}, decompressed,"),
                limit: MAX_DECOMPRESSED,
            }
        } else {
            KernelError::Decompress {
                path: path.to_path_buf(),
                compression,
                offset,
                source,
            }
        }
    })
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        "decompressed size limit reached",
    )
}

/// Reads `reader` to its end, refusing more than `limit` bytes.
fn read_bounded(reader: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(out)
}

/// Runs a liblzma decoder over `data` until the end of its first stream (xz2's
/// reader would go on into the size word the kernel build appends).
fn liblzma(
    stream: Result<Stream, xz2::stream::Error>,
    data: &[u8],
    limit: u64,
) -> io::Result<Vec<u8>> {
    let mut stream = stream.map_err(io::Error::other)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(4).min(limit));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= limit {
                return Err(too_large());
            }
            // Double, but never past the limit.
            out.reserve_exact(out.len().max(1 << 16).min(limit - out.len()));
        }
        let (before_in, before_out) = (stream.total_in(), stream.total_out());
        let input = usize::try_from(before_in)
            .ok()
            .and_then(|consumed| data.get(consumed..))
            .unwrap_or_default();
        let status = stream
            .process_vec(input, &mut out, Action::Finish)
            .map_err(io::Error::other)?;
        if out.len() > limit {
            return Err(too_large());
        }
        if status == Status::StreamEnd {
            return Ok(out);
        }
        if stream.total_in() == before_in && stream.total_out() == before_out {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream ends before its end marker",
            ));
        }
    }
}

/// Whether `bytes` is `.config` text: no NUL bytes, UTF-8, and a line that sets or
/// unsets an option.
fn looks_like_config(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(1 << 16)];
    if head.contains(&0) {
        return false;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    text.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with("CONFIG_") || line.starts_with("# CONFIG_")
    })
}

fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

/// The arm64 Image header (Documentation/arch/arm64/booting.rst): magic at 0x38.
fn is_arm64_image(data: &[u8]) -> bool {
    data.get(0x38..0x3c) == Some(b"ARM\x64")
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let next = haystack[at..=haystack.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        at += next;
        if haystack[at + 1..at + needle.len()] == *rest {
            return Some(at);
        }
        at += 1;
    }
    None
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const CONFIG: &[u8] = b"CONFIG_EFI_STUB=y\nCONFIG_EXT4_FS=m\n# CONFIG_X is not set\n";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A fake uncompressed kernel: an ELF header, noise, a decoy marker (the string
    /// the kernel's own code holds), the blob.
    fn vmlinux(config: &[u8]) -> Vec<u8> {
        let mut v = b"\x7fELF\x02\x01\x01".to_vec();
        v.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        v.extend_from_slice(b"IKCFG_ST and some text");
        v.extend_from_slice(IKCFG_ST);
        v.extend(gzip(config));
        v.extend_from_slice(IKCFG_ED);
        v.extend([0u8; 300]);
        v
    }

    fn p() -> &'static Path {
        Path::new("vmlinuz")
    }

    #[test]
    fn finds_the_blob_in_an_uncompressed_kernel_past_a_decoy_marker() {
        assert_eq!(config_text(&vmlinux(CONFIG), p()).unwrap(), CONFIG);
    }

    #[test]
    fn unwraps_a_gzip_compressed_kernel() {
        assert_eq!(config_text(&gzip(&vmlinux(CONFIG)), p()).unwrap(), CONFIG);
    }

    #[test]
    fn reads_a_gzipped_config_like_proc_config_gz() {
        assert_eq!(config_text(&gzip(CONFIG), p()).unwrap(), CONFIG);
    }

    #[test]
    fn a_kernel_without_the_blob_is_named_as_such() {
        let mut kernel = vmlinux(CONFIG);
        let at = find(&kernel, IKCFG_ED, 0).unwrap();
        kernel.truncate(find(&kernel[..at], IKCFG_ST, 30).unwrap());
        let err = config_text(&gzip(&kernel), p()).unwrap_err();
        assert!(
            matches!(err, KernelError::NoEmbeddedConfig { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "kernel image vmlinuz has no embedded configuration (CONFIG_IKCONFIG); give its .config file instead"
        );
    }

    #[test]
    fn random_bytes_are_not_a_kernel() {
        let noise: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        let err = config_text(&noise, p()).unwrap_err();
        assert!(matches!(err, KernelError::NotAKernel { .. }), "{err:?}");
    }

    #[test]
    fn finds_a_compressed_kernel_inside_an_unknown_wrapper_by_scanning() {
        let mut image = vec![0x55u8; 700];
        image.extend(gzip(&vmlinux(CONFIG)));
        image.extend([0u8; 64]);
        assert_eq!(config_text(&image, p()).unwrap(), CONFIG);
    }

    #[test]
    fn a_bzimage_payload_outside_the_file_is_an_error() {
        let mut image = vec![0u8; 0x400];
        image[0x1f1] = 1;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&0x1000u32.to_le_bytes());
        let err = config_text(&image, p()).unwrap_err();
        assert!(err.to_string().contains("lies outside"), "{err}");
    }

    #[test]
    fn lz4_kernels_get_a_clear_error() {
        // setup_sects 1: the protected-mode code, and the payload, start at 0x400.
        let mut image = vec![0u8; 0x800];
        image[0x1f1] = 1;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&16u32.to_le_bytes());
        image[0x400..0x404].copy_from_slice(&[0x02, 0x21, 0x4c, 0x18]);
        let err = config_text(&image, p()).unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::UnsupportedCompression {
                    compression: Compression::Lz4,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_truncated_xz_stream_is_an_error_not_a_hang() {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(&vmlinux(CONFIG)).unwrap();
        let xz = e.finish().unwrap();
        let err = config_text(&xz[..xz.len() / 2], p()).unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::Decompress {
                    compression: Compression::Xz,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let big = vec![b'k'; 300_000];
        let gz = gzip(&big);
        let err = read_bounded(flate2::read::GzDecoder::new(&gz[..]), 100_000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        assert_eq!(
            read_bounded(flate2::read::GzDecoder::new(&gz[..]), 300_000).unwrap(),
            big
        );

        let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(&big).unwrap();
        let xz = e.finish().unwrap();
        let decoder = || Stream::new_stream_decoder(u64::MAX, 0);
        let err = liblzma(decoder(), &xz, 100_000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        assert_eq!(liblzma(decoder(), &xz, 300_000).unwrap(), big);
        // The size word the kernel build appends after the stream is not read.
        let mut piggy = xz.clone();
        piggy.extend_from_slice(&300_000u32.to_le_bytes());
        assert_eq!(liblzma(decoder(), &piggy, 300_000).unwrap(), big);
    }

    #[test]
    fn find_handles_edges() {
        assert_eq!(find(b"abcabd", b"abd", 0), Some(3));
        assert_eq!(find(b"abcabd", b"abd", 4), None);
        assert_eq!(find(b"ab", b"abc", 0), None);
        assert_eq!(find(b"xxab", b"ab", 0), Some(2));
    }
}
