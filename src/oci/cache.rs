//! The blob cache: a content-addressed directory that is itself an OCI image layout
//! (image-layout.md: `oci-layout`, `blobs/sha256/<hex>`; no `index.json`), so a
//! pulled image is opened with [`crate::oci::layout`] like any local layout.
//!
//! A blob enters the cache only through [`BlobWriter`]: bytes go to a temporary file
//! in `blobs/sha256/`, hashed and counted as they are written, and
//! [`BlobWriter::commit`] renames the file to its digest only when both the sha256 and
//! the size match what the manifest promised. A mismatch deletes the temporary file:
//! nothing unverified is ever visible under a digest name. Because names are digests
//! and renames are atomic, two builds sharing a cache need no lock: both may download
//! the same blob, and the second rename replaces identical bytes.
//!
//! Tag resolutions are remembered in `refs/<registry>/<repository>/<tag>` (the digest
//! the tag pointed at when last pulled) so that `--offline` can resolve tags. This
//! module does no network I/O.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::digest::Sha256Writer;
use super::Digest;

/// Prefix of temporary files; [`Cache::prune`] removes stale ones.
const PARTIAL: &str = ".partial-";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {path}: {what}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {expected} is {actual_size} bytes with digest {actual}, but {expected_size} bytes were expected; it was not cached")]
    Mismatch {
        expected: Digest,
        expected_size: u64,
        actual: Digest,
        actual_size: u64,
    },
}

/// The largest JSON blob (manifest, index, config) read back from the cache.
const MAX_JSON_BLOB: u64 = 16 << 20;

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CacheError {
    let path = path.to_path_buf();
    move |source| CacheError::Io { what, path, source }
}

/// The cache directory.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

/// What [`Cache::prune`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub files: u64,
    pub bytes: u64,
}

impl Cache {
    /// `$KIOS_CACHE_DIR`, else `$XDG_CACHE_HOME/kios-build`, else `~/.cache/kios-build`.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("KIOS_CACHE_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("kios-build")
    }

    /// Opens (creating when needed) the cache at `root`.
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io_err("cannot create", &blobs))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            atomic_write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(Cache {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        digest.blob_path(&self.root)
    }

    /// The blob's path when it is cached with the expected size. Its content was
    /// verified when it entered the cache; readers verify it again as they stream.
    pub fn get(&self, digest: &Digest, size: Option<u64>) -> Option<PathBuf> {
        let p = self.blob_path(digest);
        let meta = fs::metadata(&p).ok()?;
        if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
            return None;
        }
        // Mark it used for `prune --older-than`; failure only affects pruning.
        let _ = File::options()
            .append(true)
            .open(&p)
            .and_then(|f| f.set_modified(SystemTime::now()));
        Some(p)
    }

    /// A writer for the blob `digest` of `size` bytes (when known).
    pub fn writer(&self, digest: &Digest, size: Option<u64>) -> Result<BlobWriter, CacheError> {
        let dir = self.root.join("blobs").join("sha256");
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{PARTIAL}{}.", &digest.hex()[..12]))
            .tempfile_in(&dir)
            .map_err(io_err("cannot create a file in", &dir))?;
        Ok(BlobWriter {
            expected: digest.clone(),
            expected_size: size,
            dest: self.blob_path(digest),
            inner: Sha256Writer::new(tmp),
        })
    }

    /// Reads a small cached JSON blob (manifest, index, config), checking its digest.
    pub fn read_verified(&self, digest: &Digest) -> Option<Vec<u8>> {
        // Bounded and regular: the cache folder is the user's, a file swapped for a
        // huge one or a FIFO must not be read whole or waited on.
        let bytes = crate::untrusted::read_regular(&self.get(digest, None)?, MAX_JSON_BLOB).ok()?;
        (Digest::of_bytes(&bytes) == *digest).then_some(bytes)
    }

    /// Stores small verified bytes (a manifest fetched by tag) under their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, CacheError> {
        let digest = Digest::of_bytes(bytes);
        if self.get(&digest, Some(bytes.len() as u64)).is_none() {
            let mut w = self.writer(&digest, Some(bytes.len() as u64))?;
            w.write_all(bytes)
                .map_err(io_err("cannot write", &w.dest))?;
            w.commit()?;
        }
        Ok(digest)
    }

    fn ref_path(&self, registry: &str, repository: &str, tag: &str) -> PathBuf {
        // Registry names may hold ':' (ports); they are fine in file names. A tag
        // cannot hold '/', repositories are [a-z0-9._-/]: no `..` escapes (checked
        // by the reference parser).
        self.root
            .join("refs")
            .join(registry)
            .join(repository)
            .join(tag)
    }

    /// Remembers that `registry/repository:tag` resolved to `digest`.
    pub fn set_ref(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        digest: &Digest,
    ) -> Result<(), CacheError> {
        let p = self.ref_path(registry, repository, tag);
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
        }
        atomic_write(&p, digest.to_string().as_bytes())
    }

    /// The digest `registry/repository:tag` last resolved to, if any.
    pub fn get_ref(&self, registry: &str, repository: &str, tag: &str) -> Option<Digest> {
        fs::read_to_string(self.ref_path(registry, repository, tag))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Removes interrupted downloads older than an hour, and every blob not used for
    /// `older_than` (all of them with `Duration::ZERO`). Safe beside a running build
    /// only for blobs that build is not using: prune when no build runs.
    pub fn prune(&self, older_than: Duration) -> Result<Pruned, CacheError> {
        let dir = self.root.join("blobs").join("sha256");
        let now = SystemTime::now();
        let mut pruned = Pruned::default();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(pruned),
            Err(e) => return Err(io_err("cannot list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("cannot list", &dir))?;
            let Ok(meta) = entry.metadata() else { continue };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            let partial = entry.file_name().to_string_lossy().starts_with(PARTIAL);
            let stale = if partial {
                age >= Duration::from_secs(3600).min(older_than.max(Duration::from_secs(1)))
                    || older_than.is_zero()
            } else {
                age >= older_than
            };
            if stale && meta.is_file() {
                let p = entry.path();
                fs::remove_file(&p).map_err(io_err("cannot remove", &p))?;
                pruned.files += 1;
                pruned.bytes += meta.len();
            }
        }
        if older_than.is_zero() {
            let refs = self.root.join("refs");
            if refs.exists() {
                fs::remove_dir_all(&refs).map_err(io_err("cannot remove", &refs))?;
            }
        }
        Ok(pruned)
    }
}

/// A blob being written into the cache; see [`Cache::writer`].
pub struct BlobWriter {
    expected: Digest,
    expected_size: Option<u64>,
    dest: PathBuf,
    inner: Sha256Writer<tempfile::NamedTempFile>,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.count()
    }

    /// True when more bytes than the descriptor's size were written: the caller can
    /// stop reading a hostile stream early.
    pub fn too_long(&self) -> bool {
        self.expected_size.is_some_and(|s| self.inner.count() > s)
    }

    /// Checks digest and size; renames the file into place only when both match. On
    /// a mismatch the temporary file is deleted and nothing enters the cache.
    pub fn commit(self) -> Result<PathBuf, CacheError> {
        let (actual, actual_size, tmp) = self.inner.finish();
        let size_ok = self.expected_size.map_or(true, |s| s == actual_size);
        if actual != self.expected || !size_ok {
            drop(tmp); // deletes the temporary file
            return Err(CacheError::Mismatch {
                expected: self.expected,
                expected_size: self.expected_size.unwrap_or(actual_size),
                actual,
                actual_size,
            });
        }
        tmp.persist(&self.dest).map_err(|e| CacheError::Io {
            what: "cannot rename a verified blob into",
            path: self.dest.clone(),
            source: e.error,
        })?;
        Ok(self.dest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`.
fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(PARTIAL)
        .tempfile_in(dir)
        .map_err(io_err("cannot create a file in", dir))?;
    tmp.write_all(bytes).map_err(io_err("cannot write", path))?;
    tmp.persist(path).map_err(|e| CacheError::Io {
        what: "cannot write",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_blob_is_renamed_into_place() {
        let dir = tempfile::TempDir::new().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        assert!(dir.path().join("oci-layout").is_file());
        let d = Digest::of_bytes(b"hello");
        let mut w = cache.writer(&d, Some(5)).unwrap();
        w.write_all(b"hello").unwrap();
        let p = w.commit().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(cache.get(&d, Some(5)), Some(p));
        assert!(cache.get(&d, Some(6)).is_none());
    }

    #[test]
    fn a_mismatching_blob_leaves_nothing_in_the_cache() {
        let dir = tempfile::TempDir::new().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"hello");
        let mut w = cache.writer(&d, Some(5)).unwrap();
        w.write_all(b"hellO").unwrap();
        let e = w.commit().unwrap_err();
        assert!(matches!(e, CacheError::Mismatch { .. }), "{e}");
        let mut w = cache.writer(&d, Some(4)).unwrap();
        w.write_all(b"hello").unwrap();
        assert!(w.too_long());
        assert!(w.commit().is_err());
        let left: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn refs_are_remembered_and_prune_empties_the_cache() {
        let dir = tempfile::TempDir::new().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let d = cache.put_bytes(b"{}").unwrap();
        cache.set_ref("127.0.0.1:5000", "a/b", "1", &d).unwrap();
        assert_eq!(cache.get_ref("127.0.0.1:5000", "a/b", "1"), Some(d.clone()));
        assert_eq!(cache.get_ref("127.0.0.1:5000", "a/b", "2"), None);
        assert_eq!(cache.prune(Duration::from_secs(3600)).unwrap().files, 0);
        let p = cache.prune(Duration::ZERO).unwrap();
        assert_eq!(p, Pruned { files: 1, bytes: 2 });
        assert!(cache.get(&d, None).is_none());
        assert_eq!(cache.get_ref("127.0.0.1:5000", "a/b", "1"), None);
    }
}
