//! The cpio "new ASCII" (newc) format: one archive written from a [`Tree`], and
//! archives parsed back into [`CpioEntry`] values.
//!
//! The format, as the kernel reads it (Documentation/driver-api/early-userspace/
//! buffer-format.rst) and as cpio(5) describes it under "New ASCII Format":
//!
//! ```text
//! header    110 bytes: "070701" then 13 fields of 8 ASCII hex digits:
//!           ino mode uid gid nlink mtime filesize devmajor devminor
//!           rdevmajor rdevminor namesize check
//! name      namesize bytes including the trailing NUL, then NULs up to a multiple
//!           of 4 counted from the start of the header
//! data      filesize bytes (a symlink's data is its target, without NUL), then NULs
//!           up to a multiple of 4
//! ...
//! trailer   an entry named "TRAILER!!!" with every field zero except nlink (1) and
//!           namesize
//! ```
//!
//! Hard links: every name of a multiply-linked file carries the same ino and its
//! nlink; the data is written once, with the last name, and the earlier names have
//! filesize 0. GNU cpio defers such empty names until the one with data comes, and
//! the kernel (init/initramfs.c, `maybe_link`) links each later name to the first one
//! with the same ino/dev and then writes the data through it, so both read it right.
//!
//! Written by hand rather than with a crate: the format is ~100 lines, and what the
//! kernel needs (deterministic inodes, hard links, devices without touching the host)
//! is exactly what generic cpio crates do not give. `tests/initramfs.rs` checks the
//! output with GNU cpio.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Read, Write};

use super::InitramfsError;
use crate::tree::{Content, Entry, Kind, Tree, TreePath};

const MAGIC: &[u8; 6] = b"070701";
/// The "crc" variant: same layout, `check` is the 32-bit sum of the data bytes.
const MAGIC_CRC: &[u8; 6] = b"070702";
const HEADER_LEN: u64 = 110;
const TRAILER: &str = "TRAILER!!!";
/// PATH_MAX, including the NUL: the kernel rejects longer names too.
const NAME_MAX: u32 = 4096;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;
const S_IFSOCK: u32 = 0o140000;

/// The 13 numeric fields of a newc header, in their on-disk order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    devmajor: u32,
    devminor: u32,
    rdevmajor: u32,
    rdevminor: u32,
    namesize: u32,
    check: u32,
}

impl Header {
    fn fields(&self) -> [u32; 13] {
        [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            self.devmajor,
            self.devminor,
            self.rdevmajor,
            self.rdevminor,
            self.namesize,
            self.check,
        ]
    }

    fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0u8; HEADER_LEN as usize];
        out[..6].copy_from_slice(MAGIC);
        for (i, field) in self.fields().iter().enumerate() {
            // `{:08X}` of a u32 is always exactly 8 bytes.
            let hex = format!("{field:08X}");
            out[6 + i * 8..14 + i * 8].copy_from_slice(hex.as_bytes());
        }
        out
    }

    /// Parses a header; returns it and whether it is the checksummed variant.
    fn decode(raw: &[u8; HEADER_LEN as usize]) -> Result<(Header, bool), String> {
        let crc = match &raw[..6] {
            m if m == MAGIC => false,
            m if m == MAGIC_CRC => true,
            m => {
                return Err(format!(
                    "bad magic {:?}: only newc (070701/070702) archives are supported",
                    String::from_utf8_lossy(m)
                ))
            }
        };
        let mut f = [0u32; 13];
        for (i, slot) in f.iter_mut().enumerate() {
            let digits = &raw[6 + i * 8..14 + i * 8];
            let text = std::str::from_utf8(digits)
                .ok()
                .filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| format!("header field {i} is not 8 hex digits"))?;
            *slot = u32::from_str_radix(text, 16).map_err(|e| e.to_string())?;
        }
        let h = Header {
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            filesize: f[6],
            devmajor: f[7],
            devminor: f[8],
            rdevmajor: f[9],
            rdevminor: f[10],
            namesize: f[11],
            check: f[12],
        };
        Ok((h, crc))
    }
}

/// NUL bytes needed after `len` bytes to reach a multiple of 4.
fn pad4(len: u64) -> usize {
    ((4 - len % 4) % 4) as usize
}

/// Writes newc entries, keeping the count of bytes written for the padding.
struct NewcWriter<W: Write> {
    out: W,
}

impl<W: Write> NewcWriter<W> {
    fn header_and_name(&mut self, mut h: Header, name: &str) -> io::Result<()> {
        let namesize = name.len() as u64 + 1;
        // Names are TreePaths (at most 4095 bytes) or fixed strings: this fits.
        h.namesize = namesize as u32;
        self.out.write_all(&h.encode())?;
        self.out.write_all(name.as_bytes())?;
        let zeros = [0u8; 4];
        self.out
            .write_all(&zeros[..1 + pad4(HEADER_LEN + namesize)])
    }

    fn data_padding(&mut self, len: u64) -> io::Result<()> {
        self.out.write_all(&[0u8; 4][..pad4(len)])
    }

    fn trailer(&mut self) -> io::Result<()> {
        let h = Header {
            nlink: 1,
            ..Header::default()
        };
        self.header_and_name(h, TRAILER)
    }
}

/// What the writer learns about the tree before writing it.
struct Plan<'a> {
    ino: HashMap<&'a TreePath, u32>,
    /// For each multiply-linked file (by the path of the file entry): its names.
    links: HashMap<&'a TreePath, Vec<&'a TreePath>>,
    subdirs: HashMap<&'a TreePath, u32>,
}

fn plan<'a>(entries: &BTreeMap<&'a TreePath, &'a Entry>) -> Result<Plan<'a>, InitramfsError> {
    let mut links: HashMap<&TreePath, Vec<&TreePath>> = HashMap::new();
    let mut subdirs: HashMap<&TreePath, u32> = HashMap::new();
    let mut ino = HashMap::new();
    let mut next_ino = 1u32;
    for (&path, entry) in entries {
        let inode_of = match &entry.kind {
            Kind::Hardlink(target) => {
                let bad = |why| InitramfsError::BadHardlink {
                    path: path.clone(),
                    target: target.clone(),
                    why,
                };
                let (&target_path, target_entry) = entries
                    .get_key_value(target)
                    .ok_or_else(|| bad("the target is not in the tree"))?;
                if !matches!(target_entry.kind, Kind::File(_)) {
                    return Err(bad("the target is not a regular file"));
                }
                links
                    .entry(target_path)
                    .or_insert_with(|| vec![target_path])
                    .push(path);
                target_path
            }
            Kind::Dir => {
                if let Some((&parent, _)) = path.parent().and_then(|p| entries.get_key_value(&p)) {
                    *subdirs.entry(parent).or_default() += 1;
                }
                path
            }
            _ => path,
        };
        ino.entry(inode_of).or_insert_with(|| {
            let n = next_ino;
            next_ino += 1;
            n
        });
    }
    Ok(Plan {
        ino,
        links,
        subdirs,
    })
}

/// Writes `tree` as one newc archive (with its trailer) to `out`.
pub(super) fn write_tree<W: Write>(tree: &Tree, out: W) -> Result<W, InitramfsError> {
    let entries: BTreeMap<&TreePath, &Entry> = tree.iter().collect();
    let plan = plan(&entries)?;
    let mut w = NewcWriter { out };
    for (&path, &entry) in &entries {
        let name = if path.is_root() { "." } else { path.as_str() };
        // A hard link is the same inode as its target: same metadata and content.
        let (inode_path, inode) = match &entry.kind {
            Kind::Hardlink(target) => match entries.get_key_value(target) {
                Some((p, e)) => (*p, *e),
                None => unreachable_link(path, target)?,
            },
            _ => (path, entry),
        };
        let too_large = |field: &'static str, value: u64| InitramfsError::FieldTooLarge {
            path: path.clone(),
            field,
            value,
        };
        let mut h = Header {
            ino: plan.ino.get(inode_path).copied().unwrap_or_default(),
            mode: inode.type_bits() | (inode.mode & 0o7777),
            uid: inode.uid,
            gid: inode.gid,
            nlink: 1,
            mtime: u32::try_from(inode.mtime).map_err(|_| too_large("mtime", inode.mtime))?,
            ..Header::default()
        };
        let mut data: Option<&Content> = None;
        let mut symlink: Option<&[u8]> = None;
        match &inode.kind {
            Kind::Dir => h.nlink = 2 + plan.subdirs.get(path).copied().unwrap_or(0),
            Kind::File(content) => {
                let names = plan.links.get(inode_path);
                if let Some(names) = names {
                    h.nlink = names.len() as u32;
                }
                let last = names.and_then(|n| n.iter().max()).copied();
                if last.is_none() || last == Some(path) {
                    h.filesize = u32::try_from(content.len())
                        .map_err(|_| too_large("filesize", content.len()))?;
                    data = Some(content);
                }
            }
            Kind::Symlink(target) => {
                h.filesize = target.len() as u32;
                symlink = Some(target.as_bytes());
            }
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                h.rdevmajor = *major;
                h.rdevminor = *minor;
            }
            Kind::Fifo => {}
            Kind::Hardlink(target) => unreachable_link(path, target)?,
        }
        let write_err = |source| InitramfsError::Write { source };
        w.header_and_name(h, name).map_err(write_err)?;
        if let Some(bytes) = symlink {
            w.out.write_all(bytes).map_err(write_err)?;
        }
        if let Some(content) = data {
            copy_content(path, content, &mut w.out)?;
        }
        w.data_padding(h.filesize as u64).map_err(write_err)?;
    }
    w.trailer()
        .map_err(|source| InitramfsError::Write { source })?;
    Ok(w.out)
}

/// A hard link whose target is itself a link (or vanished): `plan` rejects the
/// cases it can see, this catches chains.
fn unreachable_link<T>(path: &TreePath, target: &TreePath) -> Result<T, InitramfsError> {
    Err(InitramfsError::BadHardlink {
        path: path.clone(),
        target: target.clone(),
        why: "the target is not a regular file",
    })
}

/// Streams a file's content, checking that it still has the length the header said.
fn copy_content<W: Write>(
    path: &TreePath,
    content: &Content,
    out: &mut W,
) -> Result<(), InitramfsError> {
    let host = match content {
        Content::Host { path, .. } => Some(path.as_path().to_path_buf()),
        Content::Inline(_) => None,
    };
    let read_err = |source| InitramfsError::Content {
        path: path.clone(),
        host: host.clone(),
        source,
    };
    let mut reader = content.open().map_err(read_err)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        out.write_all(&buf[..n])
            .map_err(|source| InitramfsError::Write { source })?;
        copied += n as u64;
    }
    if copied != content.len() {
        return Err(InitramfsError::ContentChanged {
            path: path.clone(),
            host,
            expected: content.len(),
            actual: copied,
        });
    }
    Ok(())
}

/// One entry of an archive, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// The normalised path (the archive's "." is the root).
    pub path: TreePath,
    /// The full `st_mode`, type bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// The data size in the archive (0 for all but the last name of a hard link).
    pub size: u64,
    /// (major, minor) of a device node; (0, 0) otherwise.
    pub rdev: (u32, u32),
    /// Hard links share an ino; the names of one file agree on `ino` and `nlink`.
    pub ino: u32,
    pub nlink: u32,
    /// A symlink's target.
    pub link_target: Option<String>,
    /// A regular file's data, when it is no larger than the reader's limit.
    pub data: Option<Vec<u8>>,
}

impl CpioEntry {
    /// The `S_IFMT` bits of `mode`.
    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.file_type() == S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.file_type() == S_IFLNK
    }
}

/// A buffered reader that can look a few bytes ahead (to tell a cpio header from
/// padding or a compressed stream) and counts what was consumed (for errors).
pub(super) struct Input<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes consumed so far.
    pub(super) offset: u64,
}

impl<R: Read> Input<R> {
    pub(super) fn new(inner: R) -> Self {
        Input {
            inner,
            buf: vec![0u8; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            offset: 0,
        }
    }

    /// The next `n` bytes (fewer only at the end of the stream), not consumed.
    pub(super) fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.end - self.start < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            while self.end < n {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Ok(0) => break,
                    Ok(k) => self.end += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[self.start..self.end.min(self.start + n)])
    }
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Input<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            self.start = 0;
            self.end = loop {
                match self.inner.read(&mut self.buf) {
                    Ok(k) => break k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.end - self.start);
        self.start += amt;
        self.offset += amt as u64;
    }
}

/// Reads exactly `buf.len()` bytes or reports what was cut short.
fn read_exact<R: Read>(
    r: &mut Input<R>,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), InitramfsError> {
    let at = r.offset;
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => InitramfsError::Truncated { offset: at, what },
        _ => InitramfsError::Read {
            offset: at,
            source: e,
        },
    })
}

/// The most entries [`read_archive`] collects from one initramfs: a real one has tens
/// of thousands; a hostile one (a compressed stream of empty entries) could otherwise
/// grow the list until memory runs out.
pub const MAX_ENTRIES: usize = 1 << 20;
/// The most file data kept in memory over one initramfs (each file at most the
/// reader's `keep_data_max`), for the same reason.
pub const MAX_KEPT_BYTES: u64 = 512 << 20;

/// What has been read so far, over every archive of one initramfs.
#[derive(Default)]
pub(super) struct Collected {
    pub(super) entries: Vec<CpioEntry>,
    /// The bytes of `data` kept, summed.
    kept: u64,
}

/// Reads one archive, from its first header through its trailer and padding,
/// appending its entries to `out`.
pub(super) fn read_archive<R: Read>(
    r: &mut Input<R>,
    keep_data_max: u64,
    out: &mut Collected,
) -> Result<(), InitramfsError> {
    loop {
        let start = r.offset;
        let malformed = |why: String| InitramfsError::Malformed { offset: start, why };
        let mut raw = [0u8; HEADER_LEN as usize];
        read_exact(r, &mut raw, "an entry header")?;
        let (h, crc) = Header::decode(&raw).map_err(malformed)?;
        if h.namesize == 0 || h.namesize > NAME_MAX {
            return Err(malformed(format!(
                "name size {} is outside 1..={NAME_MAX}",
                h.namesize
            )));
        }
        let mut name = vec![0u8; h.namesize as usize + pad4(HEADER_LEN + h.namesize as u64)];
        read_exact(r, &mut name, "an entry name")?;
        name.truncate(h.namesize as usize);
        if name.pop() != Some(0) || name.contains(&0) {
            return Err(malformed(
                "the name is not one NUL-terminated string".into(),
            ));
        }
        let name =
            String::from_utf8(name).map_err(|_| malformed("the name is not valid UTF-8".into()))?;
        if name == TRAILER {
            skip_data(r, h.filesize as u64)?;
            return Ok(());
        }
        let path = TreePath::parse(&name).map_err(|source| InitramfsError::BadPath {
            offset: start,
            source,
        })?;
        if out.entries.len() >= MAX_ENTRIES {
            return Err(InitramfsError::TooLarge {
                offset: start,
                what: format!("more than {MAX_ENTRIES} entries"),
            });
        }
        // Names come from the archive: escaped before they reach a message.
        let bad_entry = |why: String| {
            malformed(format!(
                "{}: {why}",
                crate::untrusted::shown(&path.to_string())
            ))
        };
        let file_type = h.mode & S_IFMT;
        if ![
            S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK,
        ]
        .contains(&file_type)
        {
            return Err(bad_entry(format!("unknown file type in mode {:o}", h.mode)));
        }
        if file_type != S_IFREG && file_type != S_IFLNK && h.filesize != 0 {
            return Err(bad_entry(format!(
                "only files and symlinks may have data ({} bytes)",
                h.filesize
            )));
        }
        let size = h.filesize as u64;
        let keep = match file_type {
            S_IFLNK if size >= NAME_MAX as u64 => {
                return Err(bad_entry(format!("symlink target of {size} bytes")))
            }
            S_IFLNK => true,
            S_IFREG => size <= keep_data_max,
            _ => false,
        };
        if keep {
            out.kept += size;
            if out.kept > MAX_KEPT_BYTES {
                return Err(InitramfsError::TooLarge {
                    offset: start,
                    what: format!("more than {MAX_KEPT_BYTES} bytes of file data to keep"),
                });
            }
        }
        let mut data = keep.then(|| Vec::with_capacity(size as usize));
        let sum = read_data(r, size, data.as_mut())?;
        if crc && sum != h.check {
            return Err(bad_entry(format!(
                "checksum {sum:08x} does not match the header's {:08x}",
                h.check
            )));
        }
        let mut link_target = None;
        if file_type == S_IFLNK {
            let bytes = data.take().unwrap_or_default();
            link_target = Some(
                String::from_utf8(bytes)
                    .map_err(|_| bad_entry("symlink target is not valid UTF-8".into()))?,
            );
        }
        out.entries.push(CpioEntry {
            path,
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime as u64,
            size,
            rdev: (h.rdevmajor, h.rdevminor),
            ino: h.ino,
            nlink: h.nlink,
            link_target,
            data,
        });
    }
}

/// Reads `size` data bytes and their padding, keeping them in `keep` if given;
/// returns the byte sum used by the 070702 variant.
fn read_data<R: Read>(
    r: &mut Input<R>,
    size: u64,
    mut keep: Option<&mut Vec<u8>>,
) -> Result<u32, InitramfsError> {
    let mut buf = [0u8; 16 * 1024];
    let mut left = size;
    let mut sum = 0u32;
    while left > 0 {
        let chunk = &mut buf[..left.min(16 * 1024) as usize];
        read_exact(r, chunk, "file data")?;
        sum = chunk.iter().fold(sum, |s, b| s.wrapping_add(u32::from(*b)));
        if let Some(v) = keep.as_deref_mut() {
            v.extend_from_slice(chunk);
        }
        left -= chunk.len() as u64;
    }
    let mut pad = [0u8; 4];
    read_exact(r, &mut pad[..pad4(size)], "padding")?;
    Ok(sum)
}

fn skip_data<R: Read>(r: &mut Input<R>, size: u64) -> Result<(), InitramfsError> {
    read_data(r, size, None).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Vec<CpioEntry> {
        let mut r = Input::new(bytes);
        let mut out = Collected::default();
        read_archive(&mut r, u64::MAX, &mut out).unwrap();
        assert_eq!(
            r.offset,
            bytes.len() as u64,
            "the archive ends at its trailer"
        );
        out.entries
    }

    #[test]
    fn header_is_magic_and_13_fields_of_8_hex_digits() {
        let h = Header {
            ino: 1,
            mode: 0o100644,
            uid: 0x10,
            mtime: 0xDEADBEEF,
            filesize: 5,
            rdevmajor: 4,
            rdevminor: 64,
            namesize: 2,
            ..Header::default()
        };
        let raw = h.encode();
        assert_eq!(
            std::str::from_utf8(&raw).unwrap(),
            "070701\
             00000001000081A4000000100000000000000000DEADBEEF00000005\
             00000000000000000000000400000040\
             0000000200000000"
        );
        assert_eq!(Header::decode(&raw).unwrap(), (h, false));
    }

    #[test]
    fn names_and_data_are_padded_to_four_bytes() {
        let mut t = Tree::new(0);
        t.add_file("ab", "xyz", 0o644).unwrap();
        let out = write_tree(&t, Vec::new()).unwrap();
        // ".": 110 + 2 = 112, no padding; "ab": 110 + 3 = 113 -> 116; data 3 -> 4.
        let second = 112;
        assert_eq!(&out[second + 110..second + 116], b"ab\0\0\0\0");
        assert_eq!(&out[second + 116..second + 120], b"xyz\0");
        let trailer = second + 120;
        assert_eq!(&out[trailer..trailer + 6], MAGIC);
        assert_eq!(&out[trailer + 110..], b"TRAILER!!!\0\0\0\0");
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn hard_links_share_an_inode_and_the_last_name_carries_the_data() {
        let mut t = Tree::new(0);
        t.add_file("b/file", "payload", 0o755).unwrap();
        let link = |target: &str| Entry::new(Kind::Hardlink(TreePath::parse(target).unwrap()), 0);
        t.insert(TreePath::parse("a").unwrap(), link("b/file"))
            .unwrap();
        t.insert(TreePath::parse("c").unwrap(), link("b/file"))
            .unwrap();
        let entries = read_all(&write_tree(&t, Vec::new()).unwrap());
        let by_name: HashMap<&str, &CpioEntry> =
            entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let (a, file, c) = (by_name["a"], by_name["b/file"], by_name["c"]);
        assert_eq!((a.ino, a.nlink), (file.ino, 3));
        assert_eq!((c.ino, c.nlink), (file.ino, 3));
        assert_eq!(a.mode, 0o100755, "a link has its target's metadata");
        assert_eq!((a.size, file.size), (0, 0));
        assert_eq!(c.data.as_deref(), Some(&b"payload"[..]));
        let inos: std::collections::HashSet<u32> = entries.iter().map(|e| e.ino).collect();
        assert_eq!(inos.len(), 3, "root, b, and the one linked file");
    }

    #[test]
    fn a_hard_link_to_a_directory_is_refused() {
        let mut t = Tree::new(0);
        t.mkdir_p(&TreePath::parse("d").unwrap(), 0o755).unwrap();
        let e = Entry::new(Kind::Hardlink(TreePath::parse("d").unwrap()), 0);
        t.insert(TreePath::parse("l").unwrap(), e).unwrap();
        assert!(matches!(
            write_tree(&t, Vec::new()),
            Err(InitramfsError::BadHardlink { .. })
        ));
    }

    #[test]
    fn devices_carry_rdev_and_no_data() {
        let mut t = Tree::new(0);
        let mut e = Entry::new(Kind::CharDevice { major: 5, minor: 1 }, 0o600);
        e.uid = 7;
        t.insert(TreePath::parse("dev/console").unwrap(), e)
            .unwrap();
        let blk = Entry::new(
            Kind::BlockDevice {
                major: 259,
                minor: 3,
            },
            0o660,
        );
        t.insert(TreePath::parse("dev/nvme0n1p1").unwrap(), blk)
            .unwrap();
        t.insert(
            TreePath::parse("run/fifo").unwrap(),
            Entry::new(Kind::Fifo, 0o644),
        )
        .unwrap();
        let entries = read_all(&write_tree(&t, Vec::new()).unwrap());
        let con = entries
            .iter()
            .find(|e| e.path.as_str() == "dev/console")
            .unwrap();
        assert_eq!(
            (con.mode, con.rdev, con.size, con.uid),
            (0o020600, (5, 1), 0, 7)
        );
        let blk = entries
            .iter()
            .find(|e| e.path.as_str() == "dev/nvme0n1p1")
            .unwrap();
        assert_eq!((blk.mode, blk.rdev), (0o060660, (259, 3)));
        let fifo = entries
            .iter()
            .find(|e| e.path.as_str() == "run/fifo")
            .unwrap();
        assert_eq!(fifo.mode, 0o010644);
    }

    #[test]
    fn directories_count_their_subdirectories_in_nlink() {
        let mut t = Tree::new(0);
        t.add_file("a/b/f", "", 0o644).unwrap();
        t.mkdir_p(&TreePath::parse("a/c").unwrap(), 0o700).unwrap();
        let entries = read_all(&write_tree(&t, Vec::new()).unwrap());
        let nlink: HashMap<&str, u32> =
            entries.iter().map(|e| (e.path.as_str(), e.nlink)).collect();
        assert_eq!((nlink[""], nlink["a"], nlink["a/b"]), (3, 4, 2));
    }

    #[test]
    fn an_mtime_beyond_2106_is_an_error_not_a_wrap() {
        let mut t = Tree::new(0);
        t.add_file("f", "", 0o644).unwrap();
        t.get_mut(&TreePath::parse("f").unwrap()).unwrap().mtime = 1 << 32;
        assert!(matches!(
            write_tree(&t, Vec::new()),
            Err(InitramfsError::FieldTooLarge { field: "mtime", .. })
        ));
    }

    #[test]
    fn a_short_stream_is_truncated_not_a_huge_allocation() {
        // A header that claims 4 GiB - 1 of data and then ends.
        let h = Header {
            mode: S_IFREG | 0o644,
            filesize: u32::MAX,
            ..Header::default()
        };
        let mut w = NewcWriter { out: Vec::new() };
        w.header_and_name(h, "big").unwrap();
        let mut r = Input::new(&w.out[..]);
        let err = read_archive(&mut r, 1024, &mut Collected::default()).unwrap_err();
        assert!(
            matches!(
                err,
                InitramfsError::Truncated {
                    what: "file data",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn names_that_leave_the_tree_are_rejected() {
        let mut w = NewcWriter { out: Vec::new() };
        let h = Header {
            mode: S_IFREG | 0o644,
            ..Header::default()
        };
        w.header_and_name(h, "../etc/passwd").unwrap();
        w.trailer().unwrap();
        let mut r = Input::new(&w.out[..]);
        let err = read_archive(&mut r, 0, &mut Collected::default()).unwrap_err();
        assert!(
            matches!(err, InitramfsError::BadPath { offset: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn the_crc_variant_is_checked() {
        let mut w = NewcWriter { out: Vec::new() };
        let h = Header {
            mode: S_IFREG | 0o644,
            filesize: 2,
            check: 1 + 2,
            ..Header::default()
        };
        w.header_and_name(h, "f").unwrap();
        w.out.extend_from_slice(&[1, 2, 0, 0]);
        w.trailer().unwrap();
        w.out[..6].copy_from_slice(MAGIC_CRC);
        assert_eq!(read_all(&w.out)[0].data.as_deref(), Some(&[1u8, 2][..]));
        w.out[6 + 12 * 8 + 7] = b'4';
        let mut r = Input::new(&w.out[..]);
        assert!(read_archive(&mut r, 10, &mut Collected::default()).is_err());
    }
}
