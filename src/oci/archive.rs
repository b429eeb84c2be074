//! A verified layer tar -> [`LayerChanges`] (image-spec layer.md), reading only
//! headers and seeking over file data: regular files become [`Content::Host`] byte
//! ranges of the tar file; `.wh.NAME` and `.wh..wh..opq` become [`Whiteout`]s.
//! Formats: POSIX ustar, PAX extended headers, GNU long names and links.
//! It does not verify digests ([`crate::oci::layer`] does, before) nor look at
//! lower layers ([`crate::oci::merge`] does, after).
//!
//! The tar crate is used only to iterate raw headers: its PAX parser splits records
//! at `\n` (binary xattr values such as `security.capability` may contain one), it
//! reads extension headers without a size cap, and over a seekable file it takes a
//! truncated archive for a finished one. So PAX records are parsed here by their
//! length prefix, extension headers are capped at 1 MiB, and every member's data
//! and the end-of-archive block must lie inside the file.
//!
//! Rules for hostile entries (each is an error naming image, layer and entry):
//! - a name with a `..` component, a NUL, or a component over 255 bytes (names are
//!   normalised by [`TreePath::parse`]; a raw absolute name such as `/etc/x` is
//!   read as `etc/x`, as Docker and containerd do); a name that is not UTF-8;
//! - a hard link whose target is outside the tree; one that is missing, not a
//!   regular file, or itself ([`crate::oci::merge`], which sees the lower layers);
//! - an entry below a path component that is a symlink ([`crate::oci::merge`]);
//! - a member larger than [`Limits::max_file_size`], more members than
//!   [`Limits::max_entries`], an xattr value over [`Limits::max_xattr`];
//! - a member whose data runs past the end of the archive, or an archive without its
//!   end-of-archive block (truncated); GNU sparse members; PAX `size` disagreeing
//!   with the header (the two would let parsers see different archives).
//!
//! Symlink targets are not checked: a symlink is a value in the tree, never followed
//! at build time, so `/etc/x -> ../../x` or `-> /abs` is fine. Device nodes and
//! fifos are accepted (images carry `/dev/null`). PAX global headers and AUFS
//! `.wh..wh.*` metadata other than the opaque marker are ignored, as containerd does;
//! `LIBARCHIVE.xattr.*` records are ignored (only `SCHILY.xattr.*` carry xattrs).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tar::EntryType;

use super::merge::{LayerChanges, Whiteout};
use super::{LayerCx, OciError};
use crate::tree::{Content, Entry, Kind, TreePath};

/// PAX and GNU long-name extension headers hold a few names; more is abuse.
const MAX_EXTENSION: u64 = 1 << 20;

/// Bounds on what one layer may contain, so that a hostile layer cannot exhaust
/// memory or disk. The reading of the tar here enforces the bounds on members;
/// [`super::layer`] enforces `max_total` while it spools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Tar members in one layer (extension headers not counted).
    pub max_entries: u64,
    /// Bytes of one member.
    pub max_file_size: u64,
    /// Bytes of one layer's uncompressed tar; for
    /// [`apply_layers`](super::apply_layers), of all the image's layers together
    /// (each is decompressed against what the layers before it left, so a
    /// decompression bomb fails while it is spooled).
    pub max_total: u64,
    /// Bytes of one xattr value.
    pub max_xattr: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1_000_000,
            max_file_size: 8 << 30,
            max_total: 64 << 30,
            max_xattr: 64 << 10,
        }
    }
}

/// Extension headers waiting for the member they describe.
#[derive(Default)]
struct Pending {
    pax: Option<Vec<(String, Vec<u8>)>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pax.is_none() && self.long_name.is_none() && self.long_link.is_none()
    }

    /// Keeps the extension header of type `ty` (its `data` read from `data_at`)
    /// for the next member; one of each kind per member.
    fn add(
        &mut self,
        cx: &LayerCx,
        ty: EntryType,
        mut data: Vec<u8>,
        data_at: u64,
    ) -> Result<(), OciError> {
        let twice = || {
            cx.tar(format!(
                "two extension headers of one kind for one member at offset {data_at}"
            ))
        };
        match ty {
            EntryType::XHeader => {
                if self.pax.is_some() {
                    return Err(twice());
                }
                self.pax =
                    Some(parse_pax(&data).map_err(|why| {
                        cx.tar(format!("bad PAX header at offset {data_at}: {why}"))
                    })?);
            }
            EntryType::GNULongName | EntryType::GNULongLink => {
                while data.last() == Some(&0) {
                    data.pop();
                }
                let slot = if ty == EntryType::GNULongName {
                    &mut self.long_name
                } else {
                    &mut self.long_link
                };
                if slot.replace(data).is_some() {
                    return Err(twice());
                }
            }
            _ => {} // PAX global header: ignored, as Docker and containerd do
        }
        Ok(())
    }

    fn pax(&self, key: &str) -> Option<&[u8]> {
        // POSIX pax: a later record for the same keyword wins.
        self.pax
            .as_ref()?
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// Reads the tar at `tar_path` (already verified) into the layer's changes.
pub(crate) fn read_tar(
    cx: &LayerCx,
    tar_path: &Path,
    limits: &Limits,
) -> Result<LayerChanges, OciError> {
    let file = File::open(tar_path).map_err(cx.spool(tar_path))?;
    let file_len = file.metadata().map_err(cx.spool(tar_path))?.len();
    let content_path = Arc::new(tar_path.to_path_buf());
    let mut archive = tar::Archive::new(file);
    let members = archive
        .entries_with_seek()
        .map_err(|e| cx.tar(e.to_string()))?
        .raw(true);

    let mut changes = LayerChanges::default();
    let mut pending = Pending::default();
    let mut end = 0u64; // where the next header starts
    let mut count = 0u64;
    for member in members {
        let mut member = member.map_err(|e| cx.tar(format!("at offset {end}: {e}")))?;
        let raw_name = String::from_utf8_lossy(&member.header().path_bytes()).into_owned();
        let size = member.size();
        let data_at = member.raw_file_position();
        match data_at.checked_add(size) {
            Some(data_end) if data_end <= file_len => end = data_end.next_multiple_of(512),
            _ => {
                return Err(cx.entry(
                    raw_name,
                    format!(
                        "its header claims {size} bytes at offset {data_at} but the archive ends at {file_len} (truncated)"
                    ),
                ))
            }
        }
        let ty = member.header().entry_type();
        if matches!(
            ty,
            EntryType::XHeader
                | EntryType::XGlobalHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            if size > MAX_EXTENSION {
                return Err(cx.limit(
                    format!("an extension header of {size} bytes at offset {data_at}"),
                    MAX_EXTENSION,
                ));
            }
            let mut data = Vec::with_capacity(size as usize);
            member
                .read_to_end(&mut data)
                .map_err(|e| cx.tar(format!("at offset {data_at}: {e}")))?;
            pending.add(cx, ty, data, data_at)?;
            continue;
        }

        count += 1;
        if count > limits.max_entries {
            return Err(cx.limit(
                format!("the number of entries (at {raw_name:?})"),
                limits.max_entries,
            ));
        }
        let ext = std::mem::take(&mut pending);
        let member = Member {
            header: member.header(),
            ext: &ext,
            size,
            data_at,
        };
        if let Some(change) = member.read(cx, limits, &content_path)? {
            match change {
                Change::Entry(path, entry) => changes.entries.push((path, entry)),
                Change::Whiteout(w) => changes.whiteouts.push(w),
            }
        }
    }
    if !pending.is_empty() {
        return Err(cx.tar("the archive ends with an extension header that describes no member"));
    }
    check_end_marker(cx, tar_path, end, file_len)?;
    Ok(changes)
}

/// The tar format ends an archive with zero blocks (POSIX ustar: two; one is
/// accepted). A layer whose stream simply ends at a header boundary is accepted too,
/// as Go's `archive/tar` (podman, containerd) and GNU tar accept it: `umoci insert`
/// writes such layers, and by now the layer's bytes have been checked against the
/// `diff_id` its image's config pins, so a missing marker is how the image was made,
/// not a cut in transit. Anything else after the last member (part of a block, a
/// block that is not zeros) is refused.
fn check_end_marker(
    cx: &LayerCx,
    tar_path: &Path,
    end: u64,
    file_len: u64,
) -> Result<(), OciError> {
    let truncated = || {
        cx.tar(format!(
            "no end-of-archive block at offset {end}: the archive is truncated"
        ))
    };
    if end == file_len {
        return Ok(());
    }
    if end + 512 > file_len {
        return Err(truncated());
    }
    let mut f = File::open(tar_path).map_err(cx.spool(tar_path))?;
    f.seek(SeekFrom::Start(end)).map_err(cx.spool(tar_path))?;
    let mut block = [0u8; 512];
    f.read_exact(&mut block).map_err(cx.spool(tar_path))?;
    if block.iter().any(|b| *b != 0) {
        return Err(truncated());
    }
    Ok(())
}

/// A PAX extended header's records: `"<len> <key>=<value>\n"`, where `len` counts
/// the whole record (POSIX.1-2008 pax, "pax Extended Header"). Values are bytes and
/// may hold newlines.
pub(crate) fn parse_pax(mut data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut records = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or("a PAX record has no length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("a PAX record length is not a number")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("a PAX record length does not match the record".into());
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or("a PAX record has no `=`")?;
        let key =
            std::str::from_utf8(&record[..eq]).map_err(|_| "a PAX record key is not UTF-8")?;
        records.push((key.to_string(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(records)
}

enum Change {
    Entry(TreePath, Entry),
    Whiteout(Whiteout),
}

/// One tar member with the extension headers that precede it.
struct Member<'a> {
    header: &'a tar::Header,
    ext: &'a Pending,
    size: u64,
    data_at: u64,
}

impl Member<'_> {
    /// GNU long name, else PAX `path`, else the header's name (with the ustar
    /// prefix); Go's archive/tar and the tar crate use the same order.
    fn name_bytes(&self) -> Vec<u8> {
        if let Some(n) = &self.ext.long_name {
            return n.clone();
        }
        if let Some(p) = self.ext.pax("path") {
            return p.to_vec();
        }
        self.header.path_bytes().into_owned()
    }

    fn link_bytes(&self) -> Option<Vec<u8>> {
        if let Some(n) = &self.ext.long_link {
            return Some(n.clone());
        }
        if let Some(p) = self.ext.pax("linkpath") {
            return Some(p.to_vec());
        }
        self.header.link_name_bytes().map(|l| l.into_owned())
    }

    fn read(
        &self,
        cx: &LayerCx,
        limits: &Limits,
        content_path: &Arc<PathBuf>,
    ) -> Result<Option<Change>, OciError> {
        let raw = self.name_bytes();
        let lossy = String::from_utf8_lossy(&raw).into_owned();
        let bad = |why: String| cx.entry(lossy.clone(), why);
        let name = std::str::from_utf8(&raw).map_err(|_| bad("its name is not UTF-8".into()))?;
        let path = TreePath::parse(name).map_err(|e| bad(e.to_string()))?;
        self.check_data(cx, limits, &lossy, &bad)?;
        // layer.md "Whiteouts": the marker files are not entries themselves.
        if path.file_name().starts_with(".wh.") {
            return self.whiteout(&path, &bad);
        }
        let kind = self.kind(content_path, &bad)?;
        let entry = self.entry(kind, cx, limits, &lossy, &bad)?;
        Ok(Some(Change::Entry(path, entry)))
    }

    /// The member's data: within the size limit, its PAX size the header's, and
    /// not a GNU sparse file.
    fn check_data(
        &self,
        cx: &LayerCx,
        limits: &Limits,
        lossy: &str,
        bad: &impl Fn(String) -> OciError,
    ) -> Result<(), OciError> {
        if self.size > limits.max_file_size {
            return Err(cx.limit(
                format!("entry {lossy:?} of {} bytes", self.size),
                limits.max_file_size,
            ));
        }
        if let Some(s) = self.ext.pax("size") {
            if s != self.size.to_string().as_bytes() {
                return Err(bad("its PAX size disagrees with its header size".into()));
            }
        }
        if let Some(ext) = &self.ext.pax {
            if ext.iter().any(|(k, _)| k.starts_with("GNU.sparse.")) {
                return Err(bad(
                    "GNU sparse files are not supported; rebuild the layer without --sparse".into(),
                ));
            }
        }
        Ok(())
    }

    /// A `.wh.` marker at `path`: the opaque marker, a removal, or AUFS metadata
    /// (ignored).
    fn whiteout(
        &self,
        path: &TreePath,
        bad: &impl Fn(String) -> OciError,
    ) -> Result<Option<Change>, OciError> {
        let base = path.file_name();
        let rest = base.strip_prefix(".wh.").unwrap_or(base);
        let parent = path.parent().unwrap_or_default();
        if base == ".wh..wh..opq" {
            return Ok(Some(Change::Whiteout(Whiteout::Opaque(parent))));
        }
        if rest.starts_with(".wh.") {
            return Ok(None); // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs)
        }
        if rest.is_empty() || rest == "." || rest == ".." {
            return Err(bad("a whiteout must name a file".into()));
        }
        let target = parent.join(rest).map_err(|e| bad(e.to_string()))?;
        Ok(Some(Change::Whiteout(Whiteout::Remove(target))))
    }

    /// What the member is; a regular file's content is its byte range in the tar.
    fn kind(
        &self,
        content_path: &Arc<PathBuf>,
        bad: &impl Fn(String) -> OciError,
    ) -> Result<Kind, OciError> {
        let link = || -> Result<String, OciError> {
            let l = self.link_bytes().unwrap_or_default();
            match String::from_utf8(l) {
                Ok(s) if !s.is_empty() => Ok(s),
                Ok(_) => Err(bad("its link target is empty".into())),
                Err(_) => Err(bad("its link target is not UTF-8".into())),
            }
        };
        let device = || -> Result<(u32, u32), OciError> {
            let h = self.header;
            match (h.device_major(), h.device_minor()) {
                (Ok(Some(major)), Ok(Some(minor))) => Ok((major, minor)),
                _ => Err(bad("its device numbers are missing or malformed".into())),
            }
        };
        Ok(match self.header.entry_type() {
            // GNU tar reads "contiguous" members as regular files.
            EntryType::Regular | EntryType::Continuous => Kind::File(Content::Host {
                path: content_path.clone(),
                offset: self.data_at,
                len: self.size,
            }),
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink(link()?),
            EntryType::Link => {
                let target = TreePath::parse(&link()?)
                    .map_err(|e| bad(format!("its hard link target: {e}")))?;
                Kind::Hardlink(target)
            }
            EntryType::Char => {
                let (major, minor) = device()?;
                Kind::CharDevice { major, minor }
            }
            EntryType::Block => {
                let (major, minor) = device()?;
                Kind::BlockDevice { major, minor }
            }
            EntryType::Fifo => Kind::Fifo,
            EntryType::GNUSparse => {
                return Err(bad(
                    "GNU sparse files are not supported; rebuild the layer without --sparse".into(),
                ))
            }
            other => {
                return Err(bad(format!(
                    "tar member type {:?} is not supported",
                    other.as_byte() as char
                )))
            }
        })
    }

    /// The tree entry: `kind` with the member's mtime, xattrs, mode and owner,
    /// PAX records taking precedence over the header's fields.
    fn entry(
        &self,
        kind: Kind,
        cx: &LayerCx,
        limits: &Limits,
        lossy: &str,
        bad: &impl Fn(String) -> OciError,
    ) -> Result<Entry, OciError> {
        let num = |key: &str, header: io::Result<u64>| -> Result<u64, OciError> {
            match self.ext.pax(key) {
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| bad(format!("its PAX {key} is not a number"))),
                None => header.map_err(|e| bad(format!("its {key}: {e}"))),
            }
        };
        let id = |key: &str, header| -> Result<u32, OciError> {
            u32::try_from(num(key, header)?)
                .map_err(|_| bad(format!("its {key} does not fit in 32 bits")))
        };
        let mtime = self.mtime(bad)?;
        let xattrs = self.xattrs(cx, limits, lossy)?;
        let mode = self
            .header
            .mode()
            .map_err(|e| bad(format!("its mode: {e}")))?;
        let mut entry = Entry::new(kind, mode);
        entry.uid = id("uid", self.header.uid())?;
        entry.gid = id("gid", self.header.gid())?;
        entry.mtime = mtime;
        entry.xattrs = xattrs;
        Ok(entry)
    }

    fn mtime(&self, bad: &impl Fn(String) -> OciError) -> Result<u64, OciError> {
        match self.ext.pax("mtime") {
            // PAX mtime is decimal seconds, maybe fractional or negative: keep whole
            // seconds, and the epoch for anything before it.
            Some(v) => {
                let s =
                    std::str::from_utf8(v).map_err(|_| bad("its PAX mtime is not text".into()))?;
                let whole = s.split('.').next().unwrap_or("");
                if whole.starts_with('-') {
                    Ok(0)
                } else {
                    whole
                        .parse()
                        .map_err(|_| bad("its PAX mtime is not a number".into()))
                }
            }
            None => self
                .header
                .mtime()
                .map_err(|e| bad(format!("its mtime: {e}"))),
        }
    }

    /// The `SCHILY.xattr.*` records, each within the xattr size limit.
    fn xattrs(
        &self,
        cx: &LayerCx,
        limits: &Limits,
        lossy: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, OciError> {
        let mut xattrs = BTreeMap::new();
        for (key, value) in self.ext.pax.iter().flatten() {
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if value.len() > limits.max_xattr {
                    return Err(cx.limit(
                        format!("xattr {name:?} of entry {lossy:?} ({} bytes)", value.len()),
                        limits.max_xattr as u64,
                    ));
                }
                xattrs.insert(name.to_string(), value.clone());
            }
        }
        Ok(xattrs)
    }
}
