//! The plan: a [`Profile`] -> every registry image it names, pinned to a digest and
//! pulled into the cache ([`crate::oci::registry`]), and `kios.lock` beside the
//! profile recording what each reference resolved to.
//!
//! The lock is JSON (`docs/registry.md`): one entry per reference and platform, with
//! the digest the reference resolved to (an index or a manifest) and the platform
//! manifest used. By default references are resolved afresh and the lock is
//! rewritten when something changed. `--locked` requires an entry for every
//! reference, resolves online all the same, and fails when a tag now points
//! elsewhere; the lock is then never written. `--offline` resolves from the lock
//! (else the reference's digest, else the cache's last resolution of the tag) and
//! reads only the cache.
//!
//! This module does not read layers or build trees: [`crate::inputs`] opens the
//! pulled images.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::oci::layout::LayoutImage;
use crate::oci::reference::ImageRef;
use crate::oci::registry::{self, RegistryError, RegistryOptions, Request};
use crate::oci::Digest;
use crate::profile::{Profile, Source};
use crate::progress::Progress;

pub const LOCK_FILE: &str = "kios.lock";
const LOCK_VERSION: u32 = 1;

/// Options of the resolve and fetch stages that do not come from the profile.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    pub registry: RegistryOptions,
    /// Fail when the lock lacks a reference or the registry resolves it differently.
    pub locked: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{path}: cannot read the lock file")]
    ReadLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a kios.lock file ({why})\n  hint: delete it and build without --locked to write a new one")]
    BadLock { path: PathBuf, why: String },
    #[error("{path}: cannot write the lock file")]
    WriteLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--locked: {lock} has no entry for {reference} ({platform}), named at {origin}\n  hint: build once without --locked to record it")]
    NotLocked {
        lock: PathBuf,
        reference: String,
        platform: String,
        origin: String,
    },
    #[error("--locked: {reference} now resolves to {resolved}, but {lock} pins {locked}\n  hint: build without --locked to accept the new image, or pin the reference with @{locked}")]
    Changed {
        lock: PathBuf,
        reference: String,
        locked: Digest,
        resolved: Digest,
    },
    #[error("{path}: cannot write the lock file")]
    Output {
        path: PathBuf,
        #[source]
        source: Box<crate::output::OutputError>,
    },
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error("{reference} is the pause image of Kubernetes {version} (the profile sets no kubernetes.pauseImage), and it cannot be pulled: {source}\n  hint: every pod needs the pause image before the node has a network, so it is pre-seeded; set kubernetes.pauseImage to a registry you can reach, or to oci:DIR:TAG to build offline (scripts/make-pause-image makes kiOS' own)")]
    DefaultPause {
        reference: String,
        version: String,
        #[source]
        source: Box<RegistryError>,
    },
}

impl From<RegistryError> for PlanError {
    fn from(e: RegistryError) -> Self {
        PlanError::Registry(Box::new(e))
    }
}

impl PlanError {
    /// Errors the user fixes in the profile, its lock or the cache (exit code 2).
    pub fn is_input_error(&self) -> bool {
        match self {
            PlanError::Registry(e) => matches!(
                **e,
                RegistryError::Offline { .. } | RegistryError::LayerTooLarge { .. }
            ),
            PlanError::DefaultPause { .. } => true,
            PlanError::Output { source, .. } => source.is_input_error(),
            PlanError::ReadLock { .. } | PlanError::WriteLock { .. } => false,
            PlanError::BadLock { .. } | PlanError::NotLocked { .. } | PlanError::Changed { .. } => {
                true
            }
        }
    }
}

/// `kios.lock`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    pub images: Vec<LockedImage>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// The reference as the profile wrote it, normalised (`docker.io/library/…`).
    pub reference: String,
    /// `linux/amd64`.
    pub platform: String,
    /// What the reference resolved to (index or manifest).
    pub digest: String,
    /// The platform's image manifest.
    pub manifest: String,
}

/// A lock file larger than this is not one kios-build wrote (an entry is ~300 bytes).
const LOCK_MAX_BYTES: u64 = 16 << 20;

impl Lock {
    pub fn read(path: &Path) -> Result<Option<Lock>, PlanError> {
        let bad = |why: String| PlanError::BadLock {
            path: path.to_path_buf(),
            why,
        };
        // Not followed into a FIFO or a device, and bounded.
        let text = match crate::untrusted::read_regular(path, LOCK_MAX_BYTES) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
                ) =>
            {
                return Err(bad(e.to_string()))
            }
            Err(source) => {
                return Err(PlanError::ReadLock {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let lock: Lock = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if lock.version != LOCK_VERSION {
            return Err(bad(format!(
                "version {} is not {LOCK_VERSION}",
                lock.version
            )));
        }
        for i in &lock.images {
            for d in [&i.digest, &i.manifest] {
                d.parse::<Digest>().map_err(|e| bad(e.to_string()))?;
            }
        }
        Ok(Some(lock))
    }

    fn find(&self, reference: &str, platform: &str) -> Option<&LockedImage> {
        self.images
            .iter()
            .find(|i| i.reference == reference && i.platform == platform)
    }

    fn text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// The registry images of a profile, pulled.
#[derive(Debug, Default)]
pub struct Plan {
    pub images: BTreeMap<ImageRef, LayoutImage>,
    /// Where the lock is; `None` when the profile names no registry image.
    pub lock_path: Option<PathBuf>,
    /// The references the registry was asked for (the others came from the cache
    /// alone).
    pub fetched: Vec<ImageRef>,
}

/// The registry references a profile names, with where each was written.
pub fn registry_inputs(profile: &Profile) -> Vec<(ImageRef, String)> {
    let seed = profile.node.seed_images();
    let mut inputs = vec![&profile.kernel.source, &profile.stub.source];
    inputs.extend(profile.system.as_ref());
    inputs.extend(seed.iter());
    let mut out: Vec<(ImageRef, String)> = Vec::new();
    for i in inputs {
        if let Source::Registry(r) = &i.value {
            if !out.iter().any(|(x, _)| x == r) {
                out.push((r.clone(), i.origin.to_string()));
            }
        }
    }
    out
}

/// The lock's place: `kios.lock` in the profile's folder.
pub fn lock_path(profile: &Profile) -> PathBuf {
    match profile.file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(LOCK_FILE),
        _ => PathBuf::from(LOCK_FILE),
    }
}

/// Resolves, pulls and pins every registry image of `profile`; writes the lock
/// unless `--locked`.
pub fn resolve(
    profile: &Profile,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<Plan, PlanError> {
    let inputs = registry_inputs(profile);
    if inputs.is_empty() {
        return Ok(Plan::default());
    }
    let path = lock_path(profile);
    let lock = Lock::read(&path)?;
    // The profile's `registries:` add to the flags.
    let mut reg = opts.registry.clone();
    for h in &profile.registries.insecure {
        if !reg.insecure.contains(&h.value) {
            reg.insecure.push(h.value.clone());
        }
    }
    reg.ca_files
        .extend(profile.registries.ca.iter().map(|c| c.value.clone()));
    // No layer the build can use is larger than the disk it goes on.
    reg.max_blob = reg.max_blob.min(profile.disk_size.value.bytes());
    let platform = format!("linux/{}", profile.arch.as_str());
    let mut requests = Vec::new();
    for (r, origin) in &inputs {
        let key = r.to_string();
        let locked = lock.as_ref().and_then(|l| l.find(&key, &platform));
        if opts.locked && locked.is_none() {
            return Err(PlanError::NotLocked {
                lock: path.clone(),
                reference: key,
                platform,
                origin: origin.clone(),
            });
        }
        if r.tag_defaulted {
            progress.say(&format!(
                "warning: {origin}: {r} names no tag; `latest` is assumed (write a tag or @sha256 digest to pin it)"
            ));
        }
        // Offline, the lock says what the tag meant; online, the registry does,
        // and --locked compares.
        let digest = match (opts.registry.offline, locked) {
            (true, Some(l)) => l.digest.parse().ok(),
            _ => None,
        };
        requests.push(Request {
            reference: r.clone(),
            digest,
        });
    }
    // The default pause image is pulled on its own, so that its failure says where
    // the reference came from (no line of the profile names it).
    let default_pause = match (&profile.node.pause, &profile.node.pause_image().value) {
        (None, Source::Registry(r)) => Some(r.clone()),
        _ => None,
    };
    let (pause, others): (Vec<Request>, Vec<Request>) = requests
        .into_iter()
        .partition(|q| Some(&q.reference) == default_pause.as_ref());
    let mut pulled = if others.is_empty() {
        Vec::new()
    } else {
        registry::pull(&others, profile.arch.as_str(), &reg, progress)?
    };
    if !pause.is_empty() {
        let p = registry::pull(&pause, profile.arch.as_str(), &reg, progress).map_err(|e| {
            PlanError::DefaultPause {
                reference: pause[0].reference.to_string(),
                version: profile.node.kubernetes.value.to_string(),
                source: Box::new(e),
            }
        })?;
        pulled.extend(p);
    }

    let mut entries = Vec::new();
    for p in &pulled {
        let key = p.reference.to_string();
        if opts.locked {
            if let Some(l) = lock.as_ref().and_then(|l| l.find(&key, &platform)) {
                if l.digest != p.digest.to_string() {
                    return Err(PlanError::Changed {
                        lock: path.clone(),
                        reference: key,
                        locked: l.digest.parse().unwrap_or_else(|_| p.digest.clone()),
                        resolved: p.digest.clone(),
                    });
                }
            }
        }
        progress.say(&format!(
            "{key} -> {} ({})",
            p.image.manifest_digest, p.platform
        ));
        entries.push(LockedImage {
            reference: key,
            platform: platform.clone(),
            digest: p.digest.to_string(),
            manifest: p.image.manifest_digest.to_string(),
        });
    }
    if !opts.locked {
        update_lock(&path, entries)?;
    }
    Ok(Plan {
        fetched: pulled
            .iter()
            .filter(|p| !p.cached)
            .map(|p| p.reference.clone())
            .collect(),
        images: pulled.into_iter().map(|p| (p.reference, p.image)).collect(),
        lock_path: Some(path),
    })
}

/// Records `entries` in the lock at `path`, keeping the entries of other profiles
/// that share the folder. Several runs may do this at once: the read, the merge and
/// the write happen under an exclusive `flock` on the folder (no extra file is left
/// in it), the lock is read again under it, and written whole by
/// [`crate::output::write_file`], so no run's entries are lost.
fn update_lock(path: &Path, entries: Vec<LockedImage>) -> Result<(), PlanError> {
    let write_err = |source| PlanError::WriteLock {
        path: path.to_path_buf(),
        source,
    };
    let _held = lock_folder(path).map_err(write_err)?;
    let old = Lock::read(path)?;
    let mut new = old.clone().unwrap_or(Lock {
        version: LOCK_VERSION,
        images: Vec::new(),
    });
    for e in entries {
        new.images
            .retain(|i| !(i.reference == e.reference && i.platform == e.platform));
        new.images.push(e);
    }
    new.images.sort();
    if old.as_ref() != Some(&new) {
        write_atomic(path, new.text().as_bytes())?;
    }
    Ok(())
}

/// The folder of `path`, open and exclusively locked until the returned file drops.
fn lock_folder(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)?;
    crate::sys::lock_exclusive(&f)?;
    Ok(f)
}

/// Writes the lock by the rules of every output ([`crate::output`]): never over a
/// symlink, a FIFO or a device at its place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PlanError> {
    crate::output::write_file(path, bytes).map_err(|e| PlanError::Output {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_round_trips_and_bad_ones_are_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let p = dir.path().join(LOCK_FILE);
        assert_eq!(Lock::read(&p).unwrap(), None);
        let d = Digest::of_bytes(b"x").to_string();
        let lock = Lock {
            version: 1,
            images: vec![LockedImage {
                reference: "127.0.0.1:5000/a:1".into(),
                platform: "linux/amd64".into(),
                digest: d.clone(),
                manifest: d.clone(),
            }],
        };
        write_atomic(&p, lock.text().as_bytes()).unwrap();
        let back = Lock::read(&p).unwrap().unwrap();
        assert_eq!(back, lock);
        assert!(back.find("127.0.0.1:5000/a:1", "linux/amd64").is_some());
        assert!(back.find("127.0.0.1:5000/a:1", "linux/arm64").is_none());
        fs::write(&p, lock.text().replace(&d, "sha256:00")).unwrap();
        let e = Lock::read(&p).unwrap_err();
        assert!(matches!(e, PlanError::BadLock { .. }), "{e}");
    }
}
