//! Outputs: the one way kios-build writes a file at a path the user chose (the image
//! of `build -o`, `kios.lock`).
//!
//! The rules, checked before the long work starts ([`check`]) and again right before
//! the file is put in place ([`Partial::persist`]):
//! - the destination is absent or a regular file. A device, a FIFO, a socket, a
//!   folder or a symlink is refused (`lstat`, so a symlink to `/dev/sda` is a
//!   symlink): renaming over `/dev/null` would take it from the host;
//! - the destination is not an input of the build (same device and inode as the
//!   profile, a base, a file the profile names), nor inside an input folder (the
//!   kernel, the system tree, an OCI layout, the blob cache);
//! - the bytes go to a `.NAME.<pid>-<random>.partial` file beside the destination,
//!   mode 0600, renamed over it only when complete; the partial file is removed on
//!   an error and on SIGTERM/SIGINT/SIGHUP ([`crate::interrupt`]). Each run holds an
//!   exclusive `flock` on its partial files, so the next run removes those of runs
//!   that were killed ([`clean_stale_partials`]) and never a live one's.
//!
//! It does not choose what is written, nor where: the caller does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::work::{same_file, try_lock};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: the output exists and is {kind}, not a regular file\n  hint: {hint}")]
    NotRegular {
        path: PathBuf,
        kind: &'static str,
        hint: &'static str,
    },
    #[error("{path}: the output is {what} ({input}), an input of this build\n  hint: write the output to another path")]
    IsInput {
        path: PathBuf,
        what: String,
        input: PathBuf,
    },
    #[error("{path}: the output is inside {what} ({folder}), an input of this build\n  hint: write the output outside that folder")]
    InsideInput {
        path: PathBuf,
        what: String,
        folder: PathBuf,
    },
    #[error("{path}: the output's folder does not exist or is not a folder\n  hint: create the folder first, or give another path")]
    NoFolder {
        path: PathBuf,
        #[source]
        source: Option<io::Error>,
    },
    #[error("{what}: {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl OutputError {
    /// Everything but a failed write is the user's to fix (exit code 2).
    pub fn is_input_error(&self) -> bool {
        !matches!(self, OutputError::Io { .. })
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OutputError {
    let path = path.to_path_buf();
    move |source| OutputError::Io { what, path, source }
}

/// The paths a build reads, which its output must not be.
#[derive(Debug, Default)]
pub struct Inputs {
    /// What the user calls each (`the profile`, `kernel`, ...) and its path.
    files: Vec<(String, PathBuf)>,
    folders: Vec<(String, PathBuf)>,
}

impl Inputs {
    /// An input file (or a folder whose own path must not be the output).
    pub fn file(&mut self, what: impl Into<String>, path: &Path) {
        self.files.push((what.into(), path.to_path_buf()));
    }

    /// An input folder: the output may not be anywhere inside it.
    pub fn folder(&mut self, what: impl Into<String>, path: &Path) {
        let what = what.into();
        self.files.push((what.clone(), path.to_path_buf()));
        self.folders.push((what, path.to_path_buf()));
    }
}

/// Refuses `dest` when it is not absent or a regular file ([`OutputError::NotRegular`]).
pub fn check_destination(dest: &Path) -> Result<Option<fs::Metadata>, OutputError> {
    let m = match fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("cannot look at the output", dest)(e)),
    };
    let t = m.file_type();
    let (kind, hint) = if t.is_file() {
        return Ok(Some(m));
    } else if t.is_symlink() {
        (
            "a symbolic link",
            "give the path the link points to, or remove the link",
        )
    } else if t.is_dir() {
        ("a folder", "give a file name, such as DIR/node.img")
    } else if t.is_char_device() {
        (
            "a character device",
            "kios-build never writes to a device; write a file and copy it (dd) if that is the aim",
        )
    } else if t.is_block_device() {
        (
            "a block device",
            "kios-build never writes to a device; write a file and copy it (dd) if that is the aim",
        )
    } else if t.is_fifo() {
        ("a FIFO", "write a file and read it from there")
    } else if t.is_socket() {
        ("a socket", "give the path of a new file")
    } else {
        ("a special file", "give the path of a new file")
    };
    Err(OutputError::NotRegular {
        path: dest.to_path_buf(),
        kind,
        hint,
    })
}

/// The folder `dest` goes in (`.` for a bare name).
fn folder_of(dest: &Path) -> &Path {
    match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Every rule but the last-moment one: `dest` is absent or a regular file, its folder
/// exists, and it is none of `inputs`.
pub fn check(dest: &Path, inputs: &Inputs) -> Result<(), OutputError> {
    let existing = check_destination(dest)?;
    let folder = folder_of(dest);
    match fs::metadata(folder) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(OutputError::NoFolder {
                path: dest.to_path_buf(),
                source: None,
            })
        }
        Err(e) => {
            return Err(OutputError::NoFolder {
                path: dest.to_path_buf(),
                source: Some(e),
            })
        }
    }
    if let Some(out) = &existing {
        for (what, p) in &inputs.files {
            // The input as it is read: through its symlinks.
            if let Ok(m) = fs::metadata(p) {
                if m.dev() == out.dev() && m.ino() == out.ino() {
                    return Err(OutputError::IsInput {
                        path: dest.to_path_buf(),
                        what: what.clone(),
                        input: p.clone(),
                    });
                }
            }
        }
    }
    // Compared as real paths: the output's folder with symlinks resolved, and its name.
    let Some(name) = dest.file_name() else {
        return Err(OutputError::NotRegular {
            path: dest.to_path_buf(),
            kind: "a folder",
            hint: "give a file name, such as DIR/node.img",
        });
    };
    let real = fs::canonicalize(folder)
        .map_err(io_err("cannot resolve the output's folder", folder))?
        .join(name);
    for (what, p) in &inputs.folders {
        if let Ok(dir) = fs::canonicalize(p) {
            if real.starts_with(&dir) {
                return Err(OutputError::InsideInput {
                    path: dest.to_path_buf(),
                    what: what.clone(),
                    folder: p.clone(),
                });
            }
        }
    }
    Ok(())
}

/// A file being written beside its destination, removed unless persisted.
#[derive(Debug)]
pub struct Partial {
    file: File,
    path: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl Partial {
    /// A new `.NAME.<pid>-<random>.partial` beside `dest`, 0600 and locked, after
    /// removing those that killed runs left there for the same `dest`.
    pub fn create(dest: &Path) -> Result<Partial, OutputError> {
        clean_stale_partials(dest);
        let folder = folder_of(dest);
        let prefix = partial_prefix(dest);
        for _ in 0..64 {
            let path = folder.join(format!(
                "{prefix}{}-{}.partial",
                std::process::id(),
                crate::work::random_suffix()
            ));
            let made = crate::interrupt::create_tracked(|| {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)?;
                Ok((f, path.clone()))
            });
            let file = match made {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("cannot create a file in", folder)(e)),
            };
            let partial = Partial {
                file,
                path: path.clone(),
                dest: dest.to_path_buf(),
                done: false,
            };
            // Another run's cleaner may have locked and removed it before this run
            // locked it: then make another.
            let locked = try_lock(&partial.file).map_err(io_err("cannot lock", &path))?;
            if locked && same_file(&partial.file, &path) {
                return Ok(partial);
            }
        }
        Err(OutputError::Io {
            what: "cannot create a temporary file in",
            path: folder.to_path_buf(),
            source: io::Error::other("every name tried was taken"),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flushes the file to disk and renames it over the destination, once that is
    /// checked again to be absent or a regular file: it may have changed during a
    /// build of several minutes.
    pub fn persist(mut self) -> Result<(), OutputError> {
        self.file
            .sync_all()
            .map_err(io_err("cannot write", &self.path))?;
        check_destination(&self.dest)?;
        let (from, to) = (self.path.clone(), self.dest.clone());
        crate::interrupt::finish_tracked(&from, || fs::rename(&from, &to))
            .map_err(io_err("cannot rename the finished file to", &to))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let p = self.path.clone();
            let _ = crate::interrupt::finish_tracked(&p, || fs::remove_file(&p));
        }
    }
}

/// `.NAME.`: what the partial files of `dest` start with.
fn partial_prefix(dest: &Path) -> String {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    format!(".{name}.")
}

/// Removes the partial files of `dest` that dead runs left: regular files (not
/// symlinks) beside it, named `.NAME.*.partial`, owned by this user, whose `flock`
/// can be taken (a live run holds its own). Returns how many were removed; errors
/// are ignored, as cleaning is never a reason to fail.
pub fn clean_stale_partials(dest: &Path) -> usize {
    let folder = folder_of(dest);
    let prefix = partial_prefix(dest);
    let Ok(entries) = fs::read_dir(folder) else {
        return 0;
    };
    let uid = crate::sys::geteuid();
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(&prefix) && name.ends_with(".partial")) {
            continue;
        }
        let path = e.path();
        // Removed while locked, and only if the name still is that file.
        let Some(f) = crate::work::abandoned(&path, uid) else {
            continue;
        };
        if same_file(&f, &path) && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Writes `bytes` to `dest` by the rules above (for small files such as kios.lock).
pub fn write_file(dest: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    check_destination(dest)?;
    let mut p = Partial::create(dest)?;
    let path = p.path().to_path_buf();
    p.file_mut()
        .write_all(bytes)
        .map_err(io_err("cannot write", &path))?;
    p.persist()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_or_regular_destination_is_written() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("a.img");
        write_file(&file, b"one").unwrap();
        write_file(&file, b"two").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = write_file(&link, b"x").unwrap_err();
        assert!(e.to_string().contains("a symbolic link"), "{e}");
        let e = write_file(d.path(), b"x").unwrap_err();
        assert!(e.to_string().contains("a folder"), "{e}");
        assert_eq!(fs::read(&file).unwrap(), b"two");
        // Nothing but the file and the link is left.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn an_input_or_a_path_inside_an_input_folder_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let profile = d.path().join("p.yaml");
        fs::write(&profile, "x").unwrap();
        let hard = d.path().join("hard");
        fs::hard_link(&profile, &hard).unwrap();
        let kernel = d.path().join("kernel");
        fs::create_dir(&kernel).unwrap();
        let mut inputs = Inputs::default();
        inputs.file("the profile", &profile);
        inputs.folder("the kernel folder", &kernel);
        let e = check(&hard, &inputs).unwrap_err();
        assert!(matches!(e, OutputError::IsInput { .. }), "{e}");
        let e = check(&kernel.join("new.img"), &inputs).unwrap_err();
        assert!(matches!(e, OutputError::InsideInput { .. }), "{e}");
        check(&d.path().join("node.img"), &inputs).unwrap();
        let e = check(&d.path().join("none/node.img"), &inputs).unwrap_err();
        assert!(matches!(e, OutputError::NoFolder { .. }), "{e}");
    }

    #[test]
    fn only_dead_runs_partials_are_cleaned() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("node.img");
        let live = Partial::create(&dest).unwrap();
        let dead = d.path().join(".node.img.1-dead.partial");
        fs::write(&dead, "x").unwrap();
        let other = d.path().join(".other.img.1-dead.partial");
        fs::write(&other, "x").unwrap();
        assert_eq!(clean_stale_partials(&dest), 1);
        assert!(!dead.exists() && other.exists() && live.path().exists());
        let p = live.path().to_path_buf();
        drop(live);
        assert!(!p.exists());
    }
}
