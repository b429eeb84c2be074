//! Interruption: SIGTERM, SIGINT and SIGHUP remove what the run has made so far, then
//! end the process with 128 + the signal's number.
//!
//! [`install`] blocks the three signals in the calling thread, so that every thread
//! started later (tokio's, reqwest's) inherits the block, and starts one thread that
//! waits for them with `sigwait`. A thread, not a signal handler: removing a folder
//! tree allocates and takes locks, which a handler may not do. The paths to remove
//! are registered by the code that makes them ([`create_tracked`]), under the same
//! lock the signal thread takes: a file is either made and registered, or not made
//! at all, when the thread removes the registered ones and exits while still holding
//! that lock.
//!
//! It does not clean after SIGKILL (nothing can): the next run does that
//! ([`crate::work::clean_stale`], [`crate::output::clean_stale_partials`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The signals that interrupt a run.
const SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// What an interruption removes: files (the `.partial` images) and folders (the
/// work folder).
static TRACKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn tracked() -> MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves the list as it was: still usable.
    TRACKED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks SIGTERM, SIGINT and SIGHUP and starts the thread that handles them. Call
/// it first in `main`, before any other thread exists: a thread started earlier
/// would not have them blocked, and could be the one the kernel delivers them to.
pub fn install() -> io::Result<()> {
    let set = crate::sys::SignalSet::new(&SIGNALS);
    crate::sys::block_signals(&set)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            // `set` is blocked in this thread too (inherited from the caller).
            if let Ok(sig) = crate::sys::wait_signal(&set) {
                interrupted(sig);
            }
        })?;
    Ok(())
}

/// Removes every tracked path and ends the process, holding the registry's lock so
/// that nothing new is made meanwhile.
fn interrupted(sig: libc::c_int) -> ! {
    let paths = tracked();
    let mut placeholders = Vec::new();
    for p in paths.iter().rev() {
        placeholders.extend(remove(p));
    }
    for p in placeholders {
        let _ = std::fs::remove_file(p);
    }
    let name = match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "SIGHUP",
    };
    let msg = format!("kios-build: interrupted by {name}; temporary files removed\n");
    crate::sys::exit_now(&msg, 128 + sig)
}

/// Removes `p`, a file or a folder tree, not following a symlink. Returns the path
/// of a placeholder to remove last.
///
/// The build's other threads keep running meanwhile and may be writing into a
/// folder: it is first renamed aside (new files can no longer be made in it by
/// path), and an empty file takes its place until the very end, so that a
/// `create_dir_all` below it cannot make it again.
fn remove(p: &Path) -> Option<PathBuf> {
    let m = std::fs::symlink_metadata(p).ok()?;
    if !m.is_dir() {
        let _ = std::fs::remove_file(p);
        return None;
    }
    let mut targets = Vec::new();
    let mut placeholder = None;
    for n in 0..4 {
        let mut aside = p.as_os_str().to_owned();
        aside.push(format!(".removing{n}"));
        let aside = PathBuf::from(aside);
        if std::fs::rename(p, &aside).is_err() {
            break;
        }
        targets.push(aside);
        // Fails when another thread made the folder again since: rename that too.
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
            .is_ok()
        {
            placeholder = Some(p.to_path_buf());
            break;
        }
    }
    if placeholder.is_none() {
        targets.push(p.to_path_buf());
    }
    for t in &targets {
        // A file made in the folder while it is walked makes a removal fail: again.
        for _ in 0..20 {
            match std::fs::remove_dir_all(t) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => continue,
                _ => break,
            }
        }
    }
    placeholder
}

/// Runs `make`, which creates something at the path it returns, and registers that
/// path for removal on interruption, both under the registry's lock.
pub fn create_tracked<T>(make: impl FnOnce() -> io::Result<(T, PathBuf)>) -> io::Result<T> {
    let mut paths = tracked();
    let (made, path) = make()?;
    paths.push(path);
    Ok(made)
}

/// Stops tracking `path`: it was renamed into place or removed.
pub fn untrack(path: &Path) {
    tracked().retain(|p| p != path);
}

/// Runs `step` (a rename or a removal of the tracked `path`) and stops tracking it,
/// under the registry's lock: an interruption sees the path either before or after
/// the step, never a finished image still listed for removal.
pub fn finish_tracked<T>(path: &Path, step: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let mut paths = tracked();
    let r = step();
    if r.is_ok() {
        paths.retain(|p| p != path);
    }
    r
}
