//! The build's private work folder in `$TMPDIR`: spooled layers, files taken out of
//! images, the initramfs, the UKI and the image store before they go into the disk.
//!
//! These files hold the node's secrets (a kubeconfig, the 0600 files of the image),
//! so the folder is made 0700 whatever the umask, and its files are reachable only
//! through it. It is removed when the build ends, on an error, and on SIGTERM,
//! SIGINT or SIGHUP ([`crate::interrupt`]). A run killed with SIGKILL leaves it: each
//! live run holds an exclusive `flock` on the `.lock` file inside its folder, so a
//! later run can tell a dead run's folder (its lock can be taken) from a live one's,
//! and [`clean_stale`] removes it.
//!
//! It does not decide what goes into the folder: [`crate::inputs::WorkDir`] and the
//! build's stages do.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What every work folder's name starts with; [`clean_stale`] looks only at these.
pub const PREFIX: &str = "kios-build-";
/// The file each live run holds locked inside its folder.
const LOCK_NAME: &str = ".lock";

/// A work folder, removed when dropped.
#[derive(Debug)]
pub struct WorkFolder {
    path: PathBuf,
    /// Held open (and locked) for as long as the folder is in use.
    _lock: File,
}

impl WorkFolder {
    /// Makes a new private folder in `$TMPDIR` (else /tmp), after removing the
    /// folders of runs that died there.
    pub fn new() -> io::Result<WorkFolder> {
        let tmp = std::env::temp_dir();
        clean_stale(&tmp);
        WorkFolder::new_in(&tmp)
    }

    /// Makes a new private folder in `parent`.
    pub fn new_in(parent: &Path) -> io::Result<WorkFolder> {
        // A cleaner of another run may take a new folder's lock before its maker
        // does, and remove it: the maker sees its lock file gone and starts again.
        for _ in 0..16 {
            if let Some(w) = WorkFolder::try_new_in(parent)? {
                return Ok(w);
            }
        }
        Err(io::Error::other(
            "another kios-build kept removing the new work folder",
        ))
    }

    fn try_new_in(parent: &Path) -> io::Result<Option<WorkFolder>> {
        let path = crate::interrupt::create_tracked(|| {
            let path = make_private_dir(parent)?;
            Ok((path.clone(), path))
        })?;
        let made = (|| {
            let lock_path = path.join(LOCK_NAME);
            let lock = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&lock_path)?;
            if !try_lock(&lock)? || !same_file(&lock, &lock_path) {
                return Ok(None);
            }
            Ok(Some(lock))
        })();
        match made {
            Ok(Some(lock)) => Ok(Some(WorkFolder { path, _lock: lock })),
            Ok(None) => {
                remove_tracked(&path);
                Ok(None)
            }
            Err(e) => {
                remove_tracked(&path);
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkFolder {
    fn drop(&mut self) {
        remove_tracked(&self.path);
    }
}

fn remove_tracked(path: &Path) {
    let _ = crate::interrupt::finish_tracked(path, || match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    });
}

/// `parent/kios-build-XXXXXXXX`, made 0700: `mkdir` with that mode (the umask can
/// only take bits away) and a `chmod` to be sure.
fn make_private_dir(parent: &Path) -> io::Result<PathBuf> {
    for _ in 0..64 {
        let path = parent.join(format!("{PREFIX}{}", random_suffix()));
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "cannot find a free work folder name in {}",
        parent.display()
    )))
}

/// Eight characters from the time and the process id: names need only be unlikely
/// to collide, `create`'s `AlreadyExists` catches the rest.
pub(crate) fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    format!("{:08x}", h.finish() as u32)
}

/// Takes an exclusive `flock` on `f` without waiting; false when another holds it.
pub(crate) fn try_lock(f: &File) -> io::Result<bool> {
    crate::sys::try_lock_exclusive(f)
}

/// True when `path` still names the open file `f` (not removed, not replaced).
pub(crate) fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The file at `path`, locked, when it is a dead run's: a regular file (not followed
/// through a symlink, never a FIFO or device) owned by `uid` whose `flock` nobody
/// holds. A live run holds the lock of each file it made; the caller removes what
/// belongs to the file while this lock is held.
pub(crate) fn abandoned(path: &Path, uid: u32) -> Option<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let m = f.metadata().ok()?;
    (m.is_file() && m.uid() == uid && try_lock(&f).unwrap_or(false)).then_some(f)
}

/// Removes the work folders of dead runs from `tmp`: folders (not symlinks) named
/// with [`PREFIX`], owned by this user, whose lock file can be locked. A folder
/// without a lock file is left alone: it may be a run that has just made it, or a
/// folder this version did not make. Errors are ignored: cleaning is a courtesy,
/// never a reason to fail a build.
pub fn clean_stale(tmp: &Path) -> usize {
    let Ok(entries) = fs::read_dir(tmp) else {
        return 0;
    };
    let uid = crate::sys::geteuid();
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = e.path();
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && m.uid() == uid => {}
            _ => continue,
        }
        // Removed while the lock is held: a run that made this folder just now and
        // lost the race to lock it sees its lock file gone and makes another.
        if abandoned(&path.join(LOCK_NAME), uid).is_some() && fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_work_folder_is_private_and_only_dead_runs_folders_are_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let live = WorkFolder::new_in(tmp.path()).unwrap();
        let mode = fs::metadata(live.path()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        // A dead run's folder: a lock file nobody holds.
        let dead = tmp.path().join(format!("{PREFIX}dead"));
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join(LOCK_NAME), "").unwrap();
        fs::write(dead.join("initrd.img"), "secret").unwrap();
        // Not ours to judge: no lock file, another prefix, a symlink.
        let bare = tmp.path().join(format!("{PREFIX}bare"));
        fs::create_dir(&bare).unwrap();
        let other = tmp.path().join("other-dead");
        fs::create_dir(&other).unwrap();
        fs::write(other.join(LOCK_NAME), "").unwrap();
        let link = tmp.path().join(format!("{PREFIX}link"));
        std::os::unix::fs::symlink(&dead, &link).unwrap();

        assert_eq!(clean_stale(tmp.path()), 1);
        assert!(!dead.exists());
        assert!(live.path().is_dir(), "a live run's folder is kept");
        assert!(bare.is_dir() && other.is_dir());
        assert!(fs::symlink_metadata(&link).is_ok());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "dropped, the folder is removed");
    }
}
