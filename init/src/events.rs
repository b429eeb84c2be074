//! The event sources of PID 1 on Linux, polled together with one `poll(2)`:
//!
//! - a signalfd for SIGCHLD (every exited child is reaped here, orphans included),
//!   SIGTERM, SIGINT (ctrl-alt-del) and SIGUSR1;
//! - an inotify descriptor (files appearing in `/etc/kubernetes`, the CRI-O socket);
//! - the system socket, a listening `SOCK_STREAM` unix socket, and its clients;
//! - the output pipe of each service, copied to its rotating log and tail (the
//!   service itself is started by `spawn.rs`).
//!
//! Timers are the poll timeout: the supervisor passes the time to its next deadline.
//! Output: [`Event`]s. No decisions are taken here (`supervise.rs` does).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::childlog::{RotatingLog, Tail};
use crate::system::{ChildExit, Errno, Event, ExitStatus, Spawn, WatchKind};

struct Output {
    pipe: Option<OwnedFd>,
    log: RotatingLog,
    tail: Tail,
}

impl Output {
    /// Reads what the pipe has now, without blocking. Returns false at end of file.
    fn drain(&mut self) -> bool {
        let Some(pipe) = &self.pipe else {
            return false;
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            // SAFETY: buf is a valid writable buffer of buf.len() bytes.
            let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match usize::try_from(n) {
                Ok(0) => {
                    self.pipe = None;
                    return false;
                }
                Ok(n) => {
                    let bytes = buf.get(..n).unwrap_or_default();
                    self.log.write(bytes);
                    self.tail.push(bytes);
                }
                Err(_) => {
                    let e = Errno::last().0;
                    if e == libc::EINTR {
                        continue;
                    }
                    if e != libc::EAGAIN {
                        self.pipe = None;
                        return false;
                    }
                    return true;
                }
            }
        }
    }
}

#[derive(Default)]
pub struct Sources {
    signalfd: Option<OwnedFd>,
    inotify: Option<OwnedFd>,
    watches: HashMap<i32, String>,
    listener: Option<OwnedFd>,
    clients: Vec<OwnedFd>,
    outputs: HashMap<i32, Output>,
}

fn owned(fd: libc::c_int) -> Result<OwnedFd, Errno> {
    if fd < 0 {
        Err(Errno::last())
    } else {
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on a valid fd has no memory effects.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

impl Sources {
    pub fn start(&mut self, socket: &str) -> Result<(), Errno> {
        // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset; the calls
        // have no other memory effects.
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGUSR1] {
                libc::sigaddset(&mut set, sig);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
        };
        self.signalfd = Some(owned(fd)?);
        // SAFETY: inotify_init1 has no memory effects.
        self.inotify = Some(owned(unsafe {
            libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC)
        })?);
        self.listener = Some(listen(socket)?);
        Ok(())
    }

    pub fn watch(&mut self, dir: &str, kind: WatchKind) -> Result<(), Errno> {
        let Some(ino) = &self.inotify else {
            return Err(Errno(libc::EBADF));
        };
        let mask = match kind {
            WatchKind::Written => libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO,
            WatchKind::Created => libc::IN_CREATE | libc::IN_MOVED_TO,
        };
        let path = std::ffi::CString::new(dir).map_err(|_| Errno(libc::EINVAL))?;
        // SAFETY: a valid inotify fd and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(ino.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return Err(Errno::last());
        }
        self.watches.insert(wd, dir.to_owned());
        Ok(())
    }

    pub fn spawn(&mut self, spawn: &Spawn) -> Result<i32, Errno> {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(Errno::last());
        }
        let read = owned(fds[0])?;
        // Our copy of the write end closes when this returns, so EOF on `read` means
        // the child (and anything it passed the pipe to) is gone.
        let write = owned(fds[1])?;
        let pid = crate::spawn::posix_spawn(spawn, &write)?;
        set_nonblocking(&read);
        self.outputs.insert(
            pid,
            Output {
                pipe: Some(read),
                log: RotatingLog::open(&spawn.log),
                tail: Tail::default(),
            },
        );
        Ok(pid)
    }

    pub fn broadcast(&mut self, byte: u8) {
        self.clients.retain(|c| {
            // SAFETY: a valid fd and a one-byte buffer; MSG_NOSIGNAL avoids SIGPIPE.
            let n = unsafe {
                libc::send(
                    c.as_raw_fd(),
                    (&byte as *const u8).cast(),
                    1,
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            n == 1
        });
    }

    pub fn next(&mut self, timeout: Option<Duration>) -> Vec<Event> {
        // Without a signalfd (start failed), poll at most a second so that reaping
        // still happens.
        let timeout = match (timeout, &self.signalfd) {
            (t, Some(_)) => t,
            (Some(t), None) => Some(t.min(Duration::from_secs(1))),
            (None, None) => Some(Duration::from_secs(1)),
        };
        let ms = timeout.map_or(-1, |t| {
            i32::try_from(t.as_millis().saturating_add(1)).unwrap_or(i32::MAX)
        });
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut push = |fd: &OwnedFd| {
            fds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
        };
        for fd in [&self.signalfd, &self.inotify, &self.listener]
            .into_iter()
            .flatten()
        {
            push(fd);
        }
        for c in &self.clients {
            push(c);
        }
        for o in self.outputs.values() {
            if let Some(p) = &o.pipe {
                push(p);
            }
        }
        // SAFETY: fds is a valid array of fds.len() pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        let mut events = Vec::new();
        if n < 0 {
            return events;
        }
        let ready = |fd: &Option<OwnedFd>| {
            fd.as_ref()
                .is_some_and(|f| fds.iter().any(|p| p.fd == f.as_raw_fd() && p.revents != 0))
        };
        let (sig_ready, ino_ready, listen_ready) = (
            ready(&self.signalfd),
            ready(&self.inotify),
            ready(&self.listener),
        );
        // Output first, so a crashed child's last lines are in its tail when reaped.
        for o in self.outputs.values_mut() {
            o.drain();
        }
        if sig_ready {
            self.read_signals(&mut events);
        }
        self.reap(&mut events);
        if ino_ready {
            self.read_inotify(&mut events);
        }
        if listen_ready {
            self.accept();
        }
        self.read_clients(&fds, &mut events);
        events
    }

    fn read_signals(&mut self, events: &mut Vec<Event>) {
        let Some(fd) = &self.signalfd else { return };
        loop {
            // SAFETY: signalfd_siginfo is plain data.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: info is a valid buffer of `size` bytes.
            let n = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if usize::try_from(n).ok() != Some(size) {
                return;
            }
            let sig = i32::try_from(info.ssi_signo).unwrap_or(0);
            if sig != libc::SIGCHLD {
                events.push(Event::Signal(sig));
            }
        }
    }

    fn reap(&mut self, events: &mut Vec<Event>) {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: status is a valid int to write into.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let status = if libc::WIFEXITED(status) {
                ExitStatus::Exited(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                ExitStatus::Signaled(libc::WTERMSIG(status))
            } else {
                ExitStatus::Other(status)
            };
            let last_lines = match self.outputs.remove(&pid) {
                Some(mut o) => {
                    o.drain();
                    o.tail.take()
                }
                None => Vec::new(),
            };
            events.push(Event::ChildExited {
                exit: ChildExit { pid, status },
                last_lines,
            });
        }
    }

    fn read_inotify(&mut self, events: &mut Vec<Event>) {
        let Some(fd) = &self.inotify else { return };
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: buf is a valid writable buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else { return };
            if n == 0 {
                return;
            }
            // struct inotify_event { int wd; u32 mask, cookie, len; char name[len]; }
            let mut at = 0usize;
            while at + 16 <= n {
                let word = |o: usize| {
                    buf.get(at + o..at + o + 4)
                        .and_then(|b| <[u8; 4]>::try_from(b).ok())
                        .map_or(0, u32::from_ne_bytes)
                };
                let wd = word(0) as i32;
                let len = word(12) as usize;
                let name = buf.get(at + 16..at + 16 + len).unwrap_or_default();
                let name = name.split(|&b| b == 0).next().unwrap_or_default();
                if let Some(dir) = self.watches.get(&wd) {
                    if !name.is_empty() {
                        events.push(Event::FileAppeared(format!(
                            "{dir}/{}",
                            String::from_utf8_lossy(name)
                        )));
                    }
                }
                at += 16 + len;
            }
        }
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        loop {
            // SAFETY: accept4 with null address pointers is valid.
            let fd = unsafe {
                libc::accept4(
                    l.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            match owned(fd) {
                Ok(c) => self.clients.push(c),
                Err(_) => return,
            }
        }
    }

    fn read_clients(&mut self, fds: &[libc::pollfd], events: &mut Vec<Event>) {
        self.clients.retain(|c| {
            let ready = fds.iter().any(|p| p.fd == c.as_raw_fd() && p.revents != 0);
            if !ready {
                return true;
            }
            let mut buf = [0u8; 64];
            // SAFETY: buf is a valid writable buffer.
            let n = unsafe { libc::read(c.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match usize::try_from(n) {
                Ok(0) => false,
                Ok(n) => {
                    events.extend(buf.iter().take(n).map(|&b| Event::Command(b)));
                    true
                }
                Err(_) => Errno::last().0 == libc::EAGAIN,
            }
        });
    }
}

/// A listening unix stream socket at `path`, root only (mode 0600).
fn listen(path: &str) -> Result<OwnedFd, Errno> {
    // SAFETY: socket(2) has no memory effects.
    let fd = owned(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    let _ = std::fs::remove_file(path);
    // SAFETY: sockaddr_un is plain data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    } != 0
    {
        return Err(Errno::last());
    }
    let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600));
    // SAFETY: listen(2) has no memory effects.
    if unsafe { libc::listen(fd.as_raw_fd(), 16) } != 0 {
        return Err(Errno::last());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Service;

    #[test]
    fn a_program_that_cannot_be_executed_is_an_error_and_leaves_no_output_behind() {
        let mut src = Sources::default();
        let spawn = Spawn {
            service: Service::Kubelet,
            program: "/nonexistent/kubelet".into(),
            args: vec![],
            log: "/nonexistent/kubelet.log".into(),
        };
        assert_eq!(src.spawn(&spawn), Err(Errno(libc::ENOENT)));
        assert!(src.outputs.is_empty());
    }
}
