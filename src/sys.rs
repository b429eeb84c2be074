//! The only module of the builder that calls libc directly: each function is a safe
//! wrapper of one system call the standard library does not offer (file locks, holes
//! in sparse files, signal masks, the effective uid, peak memory). Every other module
//! is compiled with `unsafe` denied (`lib.rs`), so an unsafe block anywhere else is a
//! build error.
//!
//! Nothing here decides anything: errors come back as `io::Error` for the caller to
//! judge.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// The effective user id of this process.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// The peak resident set size of this process in bytes, `getrusage(2)`'s
/// `ru_maxrss` (KiB on Linux).
pub fn max_rss_bytes() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage it is given a valid pointer to; the
    // struct is zero-initialised, so it is initialised even if the call failed.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024
}

/// Takes an exclusive `flock` on `f`, waiting for it (retried on EINTR).
pub fn lock_exclusive(f: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor `f` owns; it blocks until granted.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes an exclusive `flock` on `f` without waiting; false when another holds it.
pub fn try_lock_exclusive(f: &File) -> io::Result<bool> {
    // SAFETY: flock on a file descriptor this File owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Where `lseek(2)` looks from `pos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    /// The next byte of data (`SEEK_DATA`).
    Data,
    /// The next hole (`SEEK_HOLE`).
    Hole,
}

/// `lseek(2)` with `SEEK_DATA`/`SEEK_HOLE`; `None` for ENXIO (nothing after `pos`). It
/// moves the file offset, so callers read with positional reads only.
pub fn seek_data(file: &File, pos: u64, whence: Seek) -> io::Result<Option<u64>> {
    let off = libc::off_t::try_from(pos).map_err(|_| io::Error::other("offset out of range"))?;
    let whence = match whence {
        Seek::Data => libc::SEEK_DATA,
        Seek::Hole => libc::SEEK_HOLE,
    };
    // SAFETY: lseek on a file descriptor we own; it only moves the file offset.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(r as u64))
}

/// A set of signals, for [`block_signals`] and [`wait_signal`].
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    pub fn new(signals: &[libc::c_int]) -> SignalSet {
        // SAFETY: sigemptyset initialises the zeroed set it is given; sigaddset only
        // adds signal numbers to it (an invalid one is refused with EINVAL, ignored).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            SignalSet(set)
        }
    }
}

/// Blocks `set` in the calling thread (and so in every thread it starts afterwards).
pub fn block_signals(set: &SignalSet) -> io::Result<()> {
    // SAFETY: `set` is an initialised signal set; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set.0, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits for one signal of `set` (which must be blocked) and returns it.
pub fn wait_signal(set: &SignalSet) -> io::Result<libc::c_int> {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised; `sig` is a valid place for the answer.
    let rc = unsafe { libc::sigwait(&set.0, &mut sig) };
    if rc == 0 {
        Ok(sig)
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Writes `msg` to stderr and ends the process with `code` at once: no destructors,
/// no atexit handlers, which could wait for locks other threads hold.
pub fn exit_now(msg: &str, code: i32) -> ! {
    // SAFETY: writes a valid buffer to fd 2; `_exit` never returns.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(code)
    }
}

/// Makes a FIFO at `path` (tests: a hostile input that would block a reader).
#[cfg(test)]
pub fn mkfifo(path: &std::path::Path, mode: u32) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("NUL in path"))?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes the program `cmd` starts get SIGKILL when the thread that starts it (this
/// process's, for a command run from `main`) dies: a QEMU that `kios-build run`
/// started must not outlive it, however it was killed.
pub fn kill_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec; it calls only
    // prctl(2), which is async-signal-safe, and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

// liblz4 (built by lz4-sys, which declares only some of the functions we use).
extern "C" {
    fn LZ4_compress_destSize(
        src: *const libc::c_char,
        dst: *mut libc::c_char,
        src_size: *mut libc::c_int,
        target_dst_size: libc::c_int,
    ) -> libc::c_int;
    fn LZ4_sizeofStateHC() -> libc::c_int;
    fn LZ4_compress_HC_destSize(
        state: *mut libc::c_void,
        src: *const libc::c_char,
        dst: *mut libc::c_char,
        src_size: *mut libc::c_int,
        target_dst_size: libc::c_int,
        level: libc::c_int,
    ) -> libc::c_int;
}

/// The state `LZ4_compress_HC_destSize` works in (`LZ4_streamHC_t`): 8-byte
/// aligned, as liblz4 requires.
pub struct Lz4hcState(Vec<u64>);

impl Lz4hcState {
    pub fn new() -> Lz4hcState {
        // SAFETY: a size query without arguments.
        let size = unsafe { LZ4_sizeofStateHC() };
        Lz4hcState(vec![0u64; usize::try_from(size).unwrap_or(0) / 8 + 1])
    }
}

/// liblz4's destination-size compressors: as much of `src` as compresses into
/// `dst` (LZ4's fast compressor when `hc` is `None`, else the high-compression one
/// at the given level and state). Returns (bytes written to `dst`, bytes of `src`
/// they hold); (0, 0) when liblz4 fails.
pub fn lz4_compress_dest_size(
    src: &[u8],
    dst: &mut [u8],
    hc: Option<(&mut Lz4hcState, u8)>,
) -> (usize, usize) {
    let (Ok(mut consumed), Ok(target)) = (
        libc::c_int::try_from(src.len()),
        libc::c_int::try_from(dst.len()),
    ) else {
        return (0, 0);
    };
    let written = match hc {
        // SAFETY: src and dst are valid for the lengths passed; liblz4 reads at
        // most `consumed` bytes of src and writes at most `target` bytes to dst.
        None => unsafe {
            LZ4_compress_destSize(
                src.as_ptr().cast(),
                dst.as_mut_ptr().cast(),
                &mut consumed,
                target,
            )
        },
        // SAFETY: as above; the state is LZ4_sizeofStateHC() bytes, 8-byte aligned,
        // and the function initialises it before use.
        Some((state, level)) => unsafe {
            LZ4_compress_HC_destSize(
                state.0.as_mut_ptr().cast(),
                src.as_ptr().cast(),
                dst.as_mut_ptr().cast(),
                &mut consumed,
                target,
                libc::c_int::from(level),
            )
        },
    };
    match (usize::try_from(written), usize::try_from(consumed)) {
        (Ok(w), Ok(c)) if w > 0 && w <= dst.len() && c <= src.len() => (w, c),
        _ => (0, 0),
    }
}

/// liblz4's safe decoder: `src` (one LZ4 block) into `dst`; the bytes written, or
/// `None` when `src` is not a valid block that fits. It never reads or writes
/// outside the two slices, whatever `src` holds.
pub fn lz4_decompress(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let src_len = libc::c_int::try_from(src.len()).ok()?;
    let dst_len = libc::c_int::try_from(dst.len()).ok()?;
    // SAFETY: both slices are valid for the lengths passed.
    let n = unsafe {
        lz4_sys::LZ4_decompress_safe(
            src.as_ptr().cast(),
            dst.as_mut_ptr().cast(),
            src_len,
            dst_len,
        )
    };
    usize::try_from(n).ok()
}
