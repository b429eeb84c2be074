//! Handling what comes from outside: text shown on a terminal, files and streams read
//! with a bound.
//!
//! Every byte a profile, an image, a layer or a registry hands kios-build is hostile
//! until bounded and checked. This module is the one place that:
//! - makes untrusted text safe to print ([`shown`]): control characters escaped, so a
//!   value cannot move the cursor, clear the screen or forge a line of output, and cut
//!   short, so a 50 MB value is not echoed whole;
//! - reads a file the user named without following it into a FIFO or a device
//!   ([`open_regular`], [`read_regular`]): a FIFO would hang the build, `/dev/zero`
//!   would fill memory;
//! - bounds a stream whose length nobody vouches for ([`Limited`]): unlike
//!   `Read::take`, going past the limit is an error, not a silent truncation.
//!
//! It does not decide the limits: each caller names its own, beside the format it reads.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// How many characters of an untrusted value [`shown`] keeps.
pub const SHOWN_CHARS: usize = 120;

/// `text` made safe for a terminal: control characters (C0, DEL, C1), and the
/// Unicode controls that reorder or hide text (bidi overrides, zero-width), written as
/// `\u{..}` escapes (`\n`, `\t`, `\r` as themselves escaped); cut after
/// [`SHOWN_CHARS`] characters with a note of how long the whole was.
pub fn shown(text: &str) -> String {
    shown_max(text, SHOWN_CHARS)
}

/// [`shown`] with another length limit.
pub fn shown_max(text: &str, max_chars: usize) -> String {
    escaped(text, max_chars, text.len())
}

/// [`shown`] for bytes that may not be UTF-8: invalid sequences become U+FFFD.
pub fn shown_bytes(bytes: &[u8]) -> String {
    // Only what can be shown is decoded: a huge value costs no more than a short one.
    let head = &bytes[..bytes.len().min(SHOWN_CHARS * 4)];
    escaped(&String::from_utf8_lossy(head), SHOWN_CHARS, bytes.len())
}

/// The first `max_chars` characters of `text` escaped; `total` (the whole value's
/// length in bytes) is named when anything was cut.
fn escaped(text: &str, max_chars: usize, total: usize) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(max_chars) {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    if chars.next().is_some() || total > text.len() {
        let _ = write!(out, "… ({total} bytes in all)");
    }
    out
}

/// Characters a terminal acts on or that hide what is printed.
pub(crate) fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'   // zero-width space/joiners, LRM, RLM
            | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{feff}'              // zero-width no-break space (BOM)
        )
}

/// Opens `path` for reading if it is a regular file, without blocking on a FIFO or
/// waking a device: the open is non-blocking and the kind is taken from the opened
/// file itself (`fstat`), so a path swapped between a check and the open cannot slip
/// through.
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_kind(path, false)
}

/// [`open_regular`] that also takes a block device: a disk image may be read from
/// the disk it was written to (`inspect /dev/sdb`). Both have a fixed length to
/// check offsets against; a FIFO or a character device has none.
pub fn open_regular_or_disk(path: &Path) -> io::Result<File> {
    open_kind(path, true)
}

fn open_kind(path: &Path, block_too: bool) -> io::Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    let what = if kind.is_file() || (block_too && kind.is_block_device()) {
        // O_NONBLOCK has no effect on regular files' or disks' reads (open(2)).
        return Ok(file);
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}, not a regular file: give a regular file"),
    ))
}

/// The whole of the regular file at `path`, refused if it holds more than `limit`
/// bytes (checked before reading and while reading: the file may grow).
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Err(too_large(limit));
    }
    let mut out = Vec::with_capacity(len as usize);
    Limited::new(file, limit).read_to_end(&mut out)?;
    Ok(out)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "larger than the {} allowed",
            crate::units::ByteSize::new(limit)
        ),
    )
}

/// A reader that fails once more than `limit` bytes come out of `inner`. Where
/// `Read::take` would stop quietly and let a truncated stream pass for a whole one,
/// this makes an oversized stream an error the caller reports.
pub struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Limited<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Limited {
            inner,
            left: limit,
            limit,
        }
    }

    /// How many bytes have been read.
    pub fn consumed(&self) -> u64 {
        self.limit - self.left
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // At the limit: one probe byte tells a stream that ends here from one that
            // goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(too_large(self.limit)),
            };
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_values_cut() {
        assert_eq!(shown("plain value"), "plain value");
        assert_eq!(shown("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(shown("x\ny\tz\r"), "x\\ny\\tz\\r");
        assert_eq!(shown("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(shown("\u{7f}\u{9b}"), "\\u{7f}\\u{9b}");
        assert_eq!(shown("ünïcödé ok"), "ünïcödé ok");
        let long = "a".repeat(50_000_000);
        let s = shown(&long);
        assert!(s.len() < 200, "{}", s.len());
        assert!(s.ends_with("… (50000000 bytes in all)"), "{s}");
        assert_eq!(shown_max("abcdef", 3), "abc… (6 bytes in all)");
    }

    #[test]
    fn bytes_are_shown_lossily_and_bounded() {
        assert_eq!(shown_bytes(b"ok\xffz"), "ok\u{fffd}z");
        let s = shown_bytes(&vec![0u8; 10_000_000]);
        assert!(s.len() < 1200, "{}", s.len());
        assert!(s.ends_with("(10000000 bytes in all)"), "{s}");
    }

    #[test]
    fn limited_errors_past_the_limit_and_passes_an_exact_fit() {
        let mut out = Vec::new();
        Limited::new(&b"12345"[..], 5)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"12345");
        let mut out = Vec::new();
        let e = Limited::new(&b"123456"[..], 5)
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("larger than"), "{e}");
        // An endless stream ends in an error, not in memory exhaustion.
        let e = Limited::new(io::repeat(0), 1 << 20)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        crate::sys::mkfifo(&fifo, 0o600).unwrap();
        let e = read_regular(&fifo, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = read_regular(d.path(), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = read_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let f = d.path().join("f");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read_regular(&f, 5).unwrap(), b"hello");
        let e = read_regular(&f, 4).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }
}
