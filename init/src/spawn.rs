//! Starting a service: `posix_spawn(3)` with the process state a service gets.
//!
//! Input: a [`Spawn`] and the write end of the pipe its output goes to. Output: the
//! child's pid, or the errno of the exec. The state: stdin `/dev/null`, stdout and
//! stderr the pipe, its own session (`setsid`), an empty signal mask (PID 1 blocks
//! the signals it reads through its signalfd; a child must not inherit that, TERM
//! would stay pending), SIGPIPE back to its default (Rust ignores it), only `PATH`
//! ([`CHILD_PATH`]) and `HOME=/root` in the environment, `/` as its directory.
//!
//! Why not `std::process::Command`: setting up a session needs a `pre_exec` closure,
//! and with one `Command` forks, copying PID 1's page tables and leaving PID 1 a
//! copy-on-write fault on each page it writes next. glibc's posix_spawn shares PID
//! 1's memory until the exec (`CLONE_VM | CLONE_VFORK`) and has `POSIX_SPAWN_SETSID`
//! (glibc >= 2.26). This module does not read the pipe or reap (`events.rs`).

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::system::{Errno, Spawn};

/// The `PATH` children get.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Starts `spawn.program` with its output into `out` (see the module doc for the
/// state it gets). The exec's own errors (ENOENT, EACCES, ENOEXEC) come back as the
/// result (glibc >= 2.24).
pub fn posix_spawn(spawn: &Spawn, out: &OwnedFd) -> Result<i32, Errno> {
    let c = |s: &str| CString::new(s).map_err(|_| Errno(libc::EINVAL));
    let program = c(&spawn.program)?;
    let mut argv_owned = vec![program.clone()];
    for a in &spawn.args {
        argv_owned.push(c(a)?);
    }
    let env_owned = [c(&format!("PATH={CHILD_PATH}"))?, c("HOME=/root")?];
    let argv = null_terminated(&argv_owned);
    let envp = null_terminated(&env_owned);
    let mut actions = SpawnActions::new()?;
    actions.open(0, c"/dev/null", libc::O_RDONLY)?;
    actions.dup2(out.as_raw_fd(), 1)?;
    actions.dup2(out.as_raw_fd(), 2)?;
    actions.chdir(c"/")?;
    let attr = SpawnAttr::new()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: program, argv and envp are NUL-terminated strings and NULL-terminated
    // arrays that outlive the call; actions and attr are initialised.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attr.0,
            argv.as_ptr().cast(),
            envp.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(Errno(rc));
    }
    Ok(pid)
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct SpawnActions(libc::posix_spawn_file_actions_t);

impl SpawnActions {
    fn new() -> Result<Self, Errno> {
        // SAFETY: plain data, initialised by posix_spawn_file_actions_init below.
        let mut a: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid object to initialise.
        errno_rc(unsafe { libc::posix_spawn_file_actions_init(&mut a) })?;
        Ok(Self(a))
    }

    fn open(&mut self, fd: i32, path: &CStr, flags: i32) -> Result<(), Errno> {
        // SAFETY: an initialised object and a NUL-terminated path (copied by glibc).
        errno_rc(unsafe {
            libc::posix_spawn_file_actions_addopen(&mut self.0, fd, path.as_ptr(), flags, 0)
        })
    }

    fn dup2(&mut self, from: i32, to: i32) -> Result<(), Errno> {
        // SAFETY: an initialised object.
        errno_rc(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from, to) })
    }

    fn chdir(&mut self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: an initialised object and a NUL-terminated path (copied by glibc).
        errno_rc(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, path.as_ptr()) })
    }
}

impl Drop for SpawnActions {
    fn drop(&mut self) {
        // SAFETY: initialised in new().
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t` for a service: own session, empty signal mask, SIGPIPE
/// default. Destroyed on drop.
struct SpawnAttr(libc::posix_spawnattr_t);

impl SpawnAttr {
    fn new() -> Result<Self, Errno> {
        // SAFETY: plain data, initialised by posix_spawnattr_init below.
        let mut a: libc::posix_spawnattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid object to initialise.
        errno_rc(unsafe { libc::posix_spawnattr_init(&mut a) })?;
        let mut attr = Self(a);
        // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset.
        let (empty, pipe) = unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            (empty, pipe)
        };
        let flags = libc::POSIX_SPAWN_SETSID
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
        // SAFETY: an initialised object and valid signal sets.
        unsafe {
            errno_rc(libc::posix_spawnattr_setsigmask(&mut attr.0, &empty))?;
            errno_rc(libc::posix_spawnattr_setsigdefault(&mut attr.0, &pipe))?;
            errno_rc(libc::posix_spawnattr_setflags(&mut attr.0, flags))?;
        }
        Ok(attr)
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: initialised in new().
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// The posix_spawn family returns an error number rather than setting errno.
fn errno_rc(rc: libc::c_int) -> Result<(), Errno> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Service;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    /// Runs `script` with /bin/sh through [`posix_spawn`], with SIGTERM blocked in
    /// the calling thread as PID 1 blocks it; returns the child's pid and output.
    fn run_sh(script: &str) -> (i32, String) {
        // SAFETY: plain signal-set manipulation of this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let spawn = Spawn {
            service: Service::Crio,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            log: String::new(),
        };
        let pid = posix_spawn(&spawn, &write).unwrap_or_else(|e| panic!("spawn: {e}"));
        drop(write);
        let mut out = String::new();
        let _ = std::fs::File::from(read).read_to_string(&mut out);
        let mut status = 0;
        // SAFETY: a valid int to write into; pid is our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        (pid, out)
    }

    #[test]
    fn a_service_gets_its_own_session_a_clean_signal_state_and_only_path_and_home() {
        // The shell reads its own status with builtins, before it forks anything:
        // dash blocks every signal around its own fork(), so a child reading the
        // shell's status could see that.
        let (pid, out) = run_sh(
            "while IFS= read -r l; do case $l in Sig[BI]*) echo \"$l\";; esac; done < /proc/$$/status; \
             read -r _ _ _ _ _ sid _ < /proc/$$/stat; echo \"sid=$sid\"; \
             echo to-stdout; echo to-stderr >&2; pwd; env; echo \"stdin=$(readlink /proc/$$/fd/0)\"",
        );
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines.contains(&"to-stdout") && lines.contains(&"to-stderr"),
            "{out}"
        );
        assert!(lines.contains(&"/"), "cwd is not /: {out}");
        assert!(
            lines.contains(&format!("PATH={CHILD_PATH}").as_str()),
            "{out}"
        );
        assert!(lines.contains(&"HOME=/root"), "{out}");
        // Nothing of this process's environment leaks (the shell adds PWD, SHLVL, _).
        assert!(!out.contains("CARGO"), "{out}");
        assert!(
            lines.contains(&format!("sid={pid}").as_str()),
            "not its own session: {out}"
        );
        assert!(lines.contains(&"SigBlk:\t0000000000000000"), "{out}");
        let ignored = lines
            .iter()
            .find_map(|l| l.strip_prefix("SigIgn:\t"))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(u64::MAX);
        assert_eq!(
            ignored & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE ignored: {out}"
        );
        assert!(lines.contains(&"stdin=/dev/null"), "{out}");
    }

    #[test]
    fn the_exec_error_comes_back_as_the_result() {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds were just created and are owned by nobody else.
        let (_read, write) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let spawn = |program: &str| Spawn {
            service: Service::Kubelet,
            program: program.into(),
            args: vec![],
            log: String::new(),
        };
        assert_eq!(
            posix_spawn(&spawn("/nonexistent/kubelet"), &write),
            Err(Errno(libc::ENOENT))
        );
        // A directory cannot be executed.
        assert_eq!(posix_spawn(&spawn("/"), &write), Err(Errno(libc::EACCES)));
    }
}
