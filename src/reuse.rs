//! Build artifacts kept from one build for the next: the store partition's EROFS
//! image, the compressed initramfs and the unified kernel image, each under a
//! [`Key`] that is a hash of everything its bytes are made from. A rebuild whose
//! inputs to an artifact did not change takes the kept file instead of writing it
//! again; the result is the same bytes, since the key covers every input, the
//! writer's version and [`FORMAT`].
//!
//! Where: `artifacts/<kind>/<key hex>-<sha256 hex>` in the blob cache folder
//! ([`crate::oci::cache::Cache::default_dir`], `--cache-dir`). A file enters only
//! whole (a temporary file beside it, renamed), named after its own sha256, and is
//! hashed again before every reuse: a file changed on disk is removed and the
//! artifact rebuilt, never used. A reused file's mtime is set to now, so "used"
//! means built or reused. Each kind keeps its [`KEEP`] most recently used files
//! (the older ones are removed when a new one is added); `kios-build cache prune`
//! removes the ones not used for its `--older-than` days, or all with `--all`.
//!
//! This module does not decide what goes into a key (the build stages do) and
//! never builds anything itself.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

/// Bump when a writer's output changes for the same inputs (EROFS, containers/
/// storage layout, cpio, UKI): kept artifacts of older writers are then not found.
pub const FORMAT: u32 = 1;

/// Files kept per kind: a few profiles or image sets built in turn all reuse.
pub const KEEP: usize = 3;

/// Prefix of files being written; [`prune`] removes stale ones.
const PARTIAL: &str = ".partial-";

/// What an artifact is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Store,
    Initramfs,
    Uki,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Store, Kind::Initramfs, Kind::Uki];

    fn folder(self) -> &'static str {
        match self {
            Kind::Store => "store",
            Kind::Initramfs => "initramfs",
            Kind::Uki => "uki",
        }
    }
}

/// The hash of an artifact's inputs. Built field by field ([`KeyBuilder`]), each
/// length-prefixed, so two different input lists never hash alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// A key for `kind`, already holding the crate's version and [`FORMAT`].
    pub fn builder(kind: Kind) -> KeyBuilder {
        let mut b = KeyBuilder(Sha256::new());
        b.field(b"kios-build artifact")
            .field(kind.folder().as_bytes())
            .field(env!("CARGO_PKG_VERSION").as_bytes())
            .field(&FORMAT.to_le_bytes());
        b
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for progress lines.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

/// See [`Key`].
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn text(&mut self, s: &str) -> &mut Self {
        self.field(s.as_bytes())
    }

    pub fn number(&mut self, n: u64) -> &mut Self {
        self.field(&n.to_le_bytes())
    }

    /// A file's sha256 (read whole, streamed).
    pub fn file(&mut self, path: &Path) -> io::Result<&mut Self> {
        let digest = sha256_file(path)?;
        Ok(self.field(&digest))
    }

    pub fn finish(&self) -> Key {
        Key(self.0.clone().finalize().into())
    }
}

/// A `Write` that only hashes (the uncompressed cpio of an initramfs, to key it).
#[derive(Default)]
pub struct HashWriter(Sha256);

impl HashWriter {
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why an artifact could not be kept.
#[derive(Debug, thiserror::Error)]
#[error("cannot keep a build artifact in {path}: {what}")]
pub struct ReuseError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ReuseError {
    let path = path.to_path_buf();
    move |source| ReuseError { what, path, source }
}

/// What [`Artifacts::get`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A kept file with the right sha256.
    Hit(PathBuf),
    /// Nothing kept under this key.
    Miss,
    /// A kept file whose bytes no longer match its name: removed.
    Corrupt(PathBuf),
}

/// The artifacts folder of a cache.
#[derive(Clone, Debug)]
pub struct Artifacts {
    root: PathBuf,
}

impl Artifacts {
    /// `artifacts/` in the blob cache folder `cache_dir` (created when written to).
    pub fn in_cache(cache_dir: &Path) -> Artifacts {
        Artifacts {
            root: cache_dir.join("artifacts"),
        }
    }

    fn folder(&self, kind: Kind) -> PathBuf {
        self.root.join(kind.folder())
    }

    /// The kept file of `kind` under `key`, put at `dest` (a hard link when the
    /// cache is on the same filesystem, else a copy) and verified there against the
    /// sha256 in its name: the bytes checked are the bytes the build uses, even when
    /// another build removes the kept file meanwhile.
    pub fn get(&self, kind: Kind, key: &Key, dest: &Path) -> Found {
        let dir = self.folder(kind);
        let prefix = format!("{}-", key.hex());
        let Ok(list) = fs::read_dir(&dir) else {
            return Found::Miss;
        };
        let Some((path, want)) = list.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let want = name.strip_prefix(&prefix)?.to_string();
            Some((e.path(), want))
        }) else {
            return Found::Miss;
        };
        let _ = fs::remove_file(dest);
        let digest = if fs::hard_link(&path, dest).is_ok() {
            // A FIFO or a folder under an artifact's name is not read.
            crate::untrusted::open_regular(dest).and_then(sha256_reader)
        } else {
            copy_hashed(&path, dest)
        };
        if !digest.is_ok_and(|d| hex::encode(d) == want) {
            let _ = fs::remove_file(dest);
            let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
            return Found::Corrupt(path);
        }
        // The mtime records the last use (see the module doc); a failure only
        // makes the file look older to `prune`.
        if let Ok(f) = File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Found::Hit(path)
    }

    /// Keeps a copy of `src` as the artifact of `kind` under `key` (a hard link when
    /// the cache is on the same filesystem), and removes all but the [`KEEP`] most
    /// recently used of its kind. Returns the kept file.
    pub fn put(&self, kind: Kind, key: &Key, src: &Path) -> Result<PathBuf, ReuseError> {
        let dir = self.folder(kind);
        fs::create_dir_all(&dir).map_err(io_err("cannot create the folder", &dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(PARTIAL)
            .tempfile_in(&dir)
            .map_err(io_err("cannot create a file", &dir))?;
        let tmp_path = tmp.path().to_path_buf();
        // The hard link replaces the empty temporary file; a copy fills it.
        let linked = fs::remove_file(&tmp_path).is_ok() && fs::hard_link(src, &tmp_path).is_ok();
        let digest = if linked {
            File::open(&tmp_path)
                .and_then(sha256_reader)
                .map_err(io_err("cannot read", &tmp_path))?
        } else {
            copy_hashed(src, &tmp_path).map_err(io_err("cannot copy into", &tmp_path))?
        };
        let dest = dir.join(format!("{}-{}", key.hex(), hex::encode(digest)));
        // Persisting the handle also renames a hard link put at its path.
        tmp.persist(&dest)
            .map_err(|e| io_err("cannot rename into", &dest)(e.error))?;
        self.trim(kind, &dest);
        Ok(dest)
    }

    /// Removes all but the [`KEEP`] most recently used files of `kind` (never `keep`).
    fn trim(&self, kind: Kind, keep: &Path) {
        let mut files = entries(&self.folder(kind));
        files.retain(|(p, _, _)| p != keep);
        files.sort_by_key(|f| std::cmp::Reverse(f.1));
        for (path, _, _) in files.into_iter().skip(KEEP.saturating_sub(1)) {
            let _ = fs::remove_file(path);
        }
    }
}

/// Removes every artifact not used for `older_than` (all of them with
/// `Duration::ZERO`), and files left by interrupted writes; returns the count and
/// bytes removed.
pub fn prune(cache_dir: &Path, older_than: Duration) -> Result<(u64, u64), ReuseError> {
    let arts = Artifacts::in_cache(cache_dir);
    let now = SystemTime::now();
    let (mut files, mut bytes) = (0, 0);
    for kind in Kind::ALL {
        for (path, modified, len) in entries(&arts.folder(kind)) {
            let age = now.duration_since(modified).unwrap_or_default();
            let partial = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(PARTIAL));
            let stale = partial && age >= Duration::from_secs(3600);
            if stale || age >= older_than {
                fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
                files += 1;
                bytes += len;
            }
        }
    }
    Ok((files, bytes))
}

/// The regular files of `dir`: path, mtime, length.
fn entries(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let Ok(list) = fs::read_dir(dir) else {
        return Vec::new();
    };
    list.flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some((e.path(), meta.modified().ok()?, meta.len()))
        })
        .collect()
}

fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    sha256_reader(crate::untrusted::open_regular(path)?)
}

fn sha256_reader(mut r: impl Read) -> io::Result<[u8; 32]> {
    let mut h = HashWriter::default();
    io::copy(&mut r, &mut h)?;
    Ok(h.finish())
}

/// Copies `src` to `dest` (which exists, empty) and returns the bytes' sha256.
fn copy_hashed(src: &Path, dest: &Path) -> io::Result<[u8; 32]> {
    let mut input = crate::untrusted::open_regular(src)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, File::create(dest)?);
    let mut h = HashWriter::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.write_all(&buf[..n])?;
        out.write_all(&buf[..n])?;
    }
    out.flush()?;
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> Key {
        Key::builder(Kind::Store).number(n).finish()
    }

    #[test]
    fn a_kept_file_is_found_by_its_key_and_a_changed_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"store bytes").unwrap();
        let dest = dir.path().join("dest");
        let arts = Artifacts::in_cache(&dir.path().join("cache"));
        assert_eq!(arts.get(Kind::Store, &key(1), &dest), Found::Miss);
        let kept = arts.put(Kind::Store, &key(1), &src).unwrap();
        fs::remove_file(&src).unwrap();
        assert_eq!(
            arts.get(Kind::Store, &key(1), &dest),
            Found::Hit(kept.clone())
        );
        assert_eq!(fs::read(&dest).unwrap(), b"store bytes");
        assert_eq!(arts.get(Kind::Store, &key(2), &dest), Found::Miss);
        assert_eq!(arts.get(Kind::Uki, &key(1), &dest), Found::Miss);
        // Changed through a new file (the kept file is a hard link to `dest`).
        fs::remove_file(&kept).unwrap();
        fs::write(&kept, b"store bytez").unwrap();
        assert_eq!(
            arts.get(Kind::Store, &key(1), &dest),
            Found::Corrupt(kept.clone())
        );
        assert!(!kept.exists());
        assert!(!dest.exists());
    }

    #[test]
    fn only_the_most_recent_files_of_a_kind_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let arts = Artifacts::in_cache(dir.path());
        let mut kept = Vec::new();
        for n in 0..(KEEP as u64 + 2) {
            let src = dir.path().join(format!("src{n}"));
            fs::write(&src, n.to_string()).unwrap();
            kept.push(arts.put(Kind::Initramfs, &key(n), &src).unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
        let left: Vec<_> = kept.iter().filter(|p| p.exists()).collect();
        assert_eq!(left.len(), KEEP);
        assert!(kept.last().unwrap().exists());
        assert_eq!(prune(dir.path(), Duration::ZERO).unwrap().0, KEEP as u64);
        assert!(entries(&arts.folder(Kind::Initramfs)).is_empty());
    }

    #[test]
    fn keys_of_different_fields_differ() {
        let a = Key::builder(Kind::Store).text("ab").text("c").finish();
        let b = Key::builder(Kind::Store).text("a").text("bc").finish();
        let c = Key::builder(Kind::Uki).text("ab").text("c").finish();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
