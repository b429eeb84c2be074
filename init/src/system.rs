//! The system-call interface of kios-init, and its real Linux implementation.
//!
//! The boot sequence ([`crate::boot`]) is plain logic over the [`System`] trait, so it
//! is unit-tested on any host with a recording implementation (`record.rs`) and can be
//! shown with a dry-run one ([`DryRun`]), the way youki puts its `Syscall` trait
//! between a container's start and the kernel. [`Linux`] is the only code that makes
//! system calls; it keeps each call thin (no policy, no retries, no logging) so that
//! what the boot does is all visible in `boot.rs`.
//!
//! Nothing here may panic: every failure comes back as an [`Errno`].

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::time::Duration;

use crate::log::{BootTime, LogLine};

/// An error number as the kernel returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// `errno` as left by the last failing libc call.
    fn last() -> Self {
        Self::from_io(&io::Error::last_os_error())
    }

    fn from_io(err: &io::Error) -> Self {
        Self(err.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The symbolic name, for the errors PID 1 is likely to meet.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::ENOEXEC => "ENOEXEC",
            libc::EBADF => "EBADF",
            libc::ECHILD => "ECHILD",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENODEV => "ENODEV",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EINVAL => "EINVAL",
            libc::ENOSPC => "ENOSPC",
            libc::EROFS => "EROFS",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::ENOSYS => "ENOSYS",
            libc::ELOOP => "ELOOP",
            libc::EBADMSG => "EBADMSG",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ENOKEY => "ENOKEY",
            libc::EKEYREJECTED => "EKEYREJECTED",
            _ => return None,
        })
    }
}

/// `ENOENT (errno 2)`, or `errno 1234` for a number without a known name.
impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (errno {})", self.0),
            None => write!(f, "errno {}", self.0),
        }
    }
}

/// Flags of `mount(2)`, kept as the kernel's bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountFlags(pub libc::c_ulong);

impl MountFlags {
    pub const NOSUID: Self = Self(libc::MS_NOSUID);
    pub const NODEV: Self = Self(libc::MS_NODEV);
    pub const NOEXEC: Self = Self(libc::MS_NOEXEC);
    pub const REC: Self = Self(libc::MS_REC);
    pub const SHARED: Self = Self(libc::MS_SHARED);

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// `MS_NOSUID|MS_NODEV`, `0` for none (used by the dry run).
impl fmt::Display for MountFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(MountFlags, &str); 5] = [
            (MountFlags::NOSUID, "MS_NOSUID"),
            (MountFlags::NODEV, "MS_NODEV"),
            (MountFlags::NOEXEC, "MS_NOEXEC"),
            (MountFlags::REC, "MS_REC"),
            (MountFlags::SHARED, "MS_SHARED"),
        ];
        let mut rest = self.0;
        let mut first = true;
        for (flag, name) in NAMES {
            if rest & flag.0 != 0 {
                write!(f, "{}{name}", if first { "" } else { "|" })?;
                rest &= !flag.0;
                first = false;
            }
        }
        if rest != 0 || first {
            write!(f, "{}{rest:#x}", if first { "" } else { "|" })?;
        }
        Ok(())
    }
}

/// The arguments of one `mount(2)` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mount<'a> {
    pub source: Option<&'a str>,
    pub target: &'a str,
    pub fstype: Option<&'a str>,
    pub flags: MountFlags,
    pub data: Option<&'a str>,
}

/// Why a module did not load: its file could not be opened, or the kernel refused
/// it (`finit_module` failed: `EEXIST` already loaded, `ENOENT` an unknown symbol,
/// i.e. a dependency not loaded before it, `ENOEXEC` not a module for this kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleError {
    Open(Errno),
    Kernel(Errno),
}

/// How a reaped child ended, decoded from the `waitpid` status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
    Other(i32),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with status {code}"),
            ExitStatus::Signaled(sig) => write!(f, "killed by signal {sig}"),
            ExitStatus::Other(raw) => write!(f, "changed state (raw status {raw:#x})"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildExit {
    pub pid: i32,
    pub status: ExitStatus,
}

/// Everything kios-init asks of the kernel. One method per operation, arguments as
/// the boot sequence means them; implementations do no logging of their own except
/// [`System::write_log`].
pub trait System {
    /// `mount(2)`.
    fn mount(&mut self, mount: &Mount<'_>) -> Result<(), Errno>;
    /// Creates `path` and its missing parents with `mode`; an existing directory is
    /// not an error.
    fn mkdir_all(&mut self, path: &str, mode: u32) -> Result<(), Errno>;
    /// Creates the symbolic link `link` pointing at `target`.
    fn symlink(&mut self, target: &str, link: &str) -> Result<(), Errno>;
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, Errno>;
    /// Writes `contents` to an existing file (a sysctl, say); never creates one.
    fn write_file(&mut self, path: &str, contents: &[u8]) -> Result<(), Errno>;
    /// `open(path)` then `finit_module(fd, "", 0)`. `EEXIST` (already loaded) is
    /// returned as is; the caller decides what it means.
    fn load_module(&mut self, path: &str) -> Result<(), ModuleError>;
    /// Sets `IFF_UP` on the network interface `name`.
    fn interface_up(&mut self, name: &str) -> Result<(), Errno>;
    /// `sethostname(2)`.
    fn set_hostname(&mut self, name: &str) -> Result<(), Errno>;
    /// `clock_gettime(CLOCK_BOOTTIME)`.
    fn boot_time(&mut self) -> BootTime;
    /// Opens the log devices that only exist once devtmpfs is mounted: `/dev/kmsg`,
    /// and `/dev/console` if it could not be opened at start. The error is about
    /// `/dev/kmsg`.
    fn open_log_devices(&mut self) -> Result<(), Errno>;
    /// Writes one line to every open log sink. Cannot fail: there is nowhere left to
    /// report that logging failed.
    fn write_log(&mut self, line: &LogLine);
    /// `waitpid(-1, &status, 0)`: blocks until a child changes state.
    fn wait_child(&mut self) -> Result<ChildExit, Errno>;
    fn sleep(&mut self, duration: Duration);
}

fn c_string(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno(libc::EINVAL))
}

fn c_ptr(s: &Option<CString>) -> *const libc::c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// The real thing: system calls through libc.
pub struct Linux {
    /// `/dev/console`, or a duplicate of stderr when the console could not be opened.
    console: Option<OwnedFd>,
    console_is_fallback: bool,
    kmsg: Option<File>,
}

impl Linux {
    /// Opens `/dev/console` for logging, falling back to stderr (fd 2). The kernel
    /// opens fds 0-2 on `/dev/console` for init only if the initramfs has that node,
    /// so the fallback may write nowhere; the console is tried again in
    /// [`System::open_log_devices`].
    pub fn new() -> Self {
        let (console, console_is_fallback) = match open_console() {
            Ok(fd) => (Some(fd), false),
            Err(_) => (dup_stderr(), true),
        };
        Self {
            console,
            console_is_fallback,
            kmsg: None,
        }
    }
}

fn open_console() -> Result<OwnedFd, Errno> {
    // SAFETY: a valid NUL-terminated path; the returned fd is owned by the OwnedFd.
    let fd = unsafe {
        libc::open(
            c"/dev/console".as_ptr(),
            libc::O_WRONLY | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: fd was just opened and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn dup_stderr() -> Option<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on fd 2 has no memory effects; a negative result is
    // handled.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    // SAFETY: fd was just created and is not owned elsewhere.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes all of `bytes`, retrying on `EINTR` and short writes; gives up silently.
fn write_all_fd(fd: &OwnedFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: bytes is a valid readable buffer of bytes.len() bytes.
        let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if Errno::last().0 == libc::EINTR {
                continue;
            }
            return;
        }
        match bytes.get(usize::try_from(n).unwrap_or(0)..) {
            Some(rest) if n > 0 => bytes = rest,
            _ => return,
        }
    }
}

fn read_whole_file(path: &str) -> Result<Vec<u8>, Errno> {
    let mut contents = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut contents))
        .map_err(|e| Errno::from_io(&e))?;
    Ok(contents)
}

fn clock_boottime() -> BootTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return BootTime::from_nanos(0);
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    BootTime::from_nanos(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

impl Default for Linux {
    fn default() -> Self {
        Self::new()
    }
}

impl System for Linux {
    fn mount(&mut self, m: &Mount<'_>) -> Result<(), Errno> {
        let source = m.source.map(c_string).transpose()?;
        let target = c_string(m.target)?;
        let fstype = m.fstype.map(c_string).transpose()?;
        let data = m.data.map(c_string).transpose()?;
        // SAFETY: every pointer is NUL-terminated and outlives the call, or null.
        let rc = unsafe {
            libc::mount(
                c_ptr(&source),
                target.as_ptr(),
                c_ptr(&fstype),
                m.flags.0,
                c_ptr(&data).cast(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    fn mkdir_all(&mut self, path: &str, mode: u32) -> Result<(), Errno> {
        DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(|e| Errno::from_io(&e))
    }

    fn symlink(&mut self, target: &str, link: &str) -> Result<(), Errno> {
        symlink(target, link).map_err(|e| Errno::from_io(&e))
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        read_whole_file(path)
    }

    fn write_file(&mut self, path: &str, contents: &[u8]) -> Result<(), Errno> {
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(contents))
            .map_err(|e| Errno::from_io(&e))
    }

    fn load_module(&mut self, path: &str) -> Result<(), ModuleError> {
        let file = File::open(path).map_err(|e| ModuleError::Open(Errno::from_io(&e)))?;
        let params: &CStr = c"";
        let flags: libc::c_int = 0;
        // SAFETY: finit_module(2) takes an fd, a NUL-terminated parameter string and
        // flags; all are valid for the duration of the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                file.as_raw_fd(),
                params.as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(ModuleError::Kernel(Errno::last()))
        }
    }

    fn interface_up(&mut self, name: &str) -> Result<(), Errno> {
        // SAFETY: socket(2) has no memory effects; the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: fd was just created and is not owned elsewhere.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };

        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        let bytes = name.as_bytes();
        // Leave room for the terminating NUL (the array is zeroed).
        if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
            return Err(Errno(libc::EINVAL));
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        // SAFETY: req is a valid ifreq with a NUL-terminated name; SIOCGIFFLAGS
        // writes ifru_flags.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
            return Err(Errno::last());
        }
        // SAFETY: SIOCGIFFLAGS filled ifru_flags, the union member read and written.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above; SIOCSIFFLAGS reads the name and ifru_flags.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    fn set_hostname(&mut self, name: &str) -> Result<(), Errno> {
        // SAFETY: name points at name.len() readable bytes.
        let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    fn boot_time(&mut self) -> BootTime {
        clock_boottime()
    }

    fn open_log_devices(&mut self) -> Result<(), Errno> {
        if self.console_is_fallback {
            if let Ok(fd) = open_console() {
                self.console = Some(fd);
                self.console_is_fallback = false;
            }
        }
        if self.kmsg.is_none() {
            let kmsg = OpenOptions::new()
                .write(true)
                .open("/dev/kmsg")
                .map_err(|e| Errno::from_io(&e))?;
            self.kmsg = Some(kmsg);
        }
        Ok(())
    }

    fn write_log(&mut self, line: &LogLine) {
        if let Some(console) = &self.console {
            let mut text = line.console_text();
            text.push('\n');
            write_all_fd(console, text.as_bytes());
        }
        if let Some(kmsg) = &mut self.kmsg {
            // One write(2) is one kernel log record. Userspace writes are rate
            // limited by the kernel (printk.devkmsg); a dropped record is harmless
            // since the console has the line.
            let mut text = line.kmsg_text();
            text.push('\n');
            let _ = kmsg.write(text.as_bytes());
        }
    }

    fn wait_child(&mut self) -> Result<ChildExit, Errno> {
        let mut status: libc::c_int = 0;
        // SAFETY: status is a valid int to write into.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            return Err(Errno::last());
        }
        let status = if libc::WIFEXITED(status) {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            ExitStatus::Other(status)
        };
        Ok(ChildExit { pid, status })
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Shows what the boot would do on this host, without doing it: every action prints
/// a `dry-run:` line on stdout and succeeds; files are read from the real `/` (reading
/// is harmless, and it checks a rootfs's config); the log goes to stdout.
pub struct DryRun;

impl DryRun {
    fn show(&self, what: fmt::Arguments<'_>) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "dry-run: {what}");
    }
}

impl System for DryRun {
    fn mount(&mut self, m: &Mount<'_>) -> Result<(), Errno> {
        self.show(format_args!(
            "mount({:?}, {:?}, {:?}, {}, {:?})",
            m.source, m.target, m.fstype, m.flags, m.data
        ));
        Ok(())
    }

    fn mkdir_all(&mut self, path: &str, mode: u32) -> Result<(), Errno> {
        self.show(format_args!("mkdir -p -m {mode:o} {path}"));
        Ok(())
    }

    fn symlink(&mut self, target: &str, link: &str) -> Result<(), Errno> {
        self.show(format_args!("symlink {link} -> {target}"));
        Ok(())
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        read_whole_file(path)
    }

    fn write_file(&mut self, path: &str, contents: &[u8]) -> Result<(), Errno> {
        self.show(format_args!(
            "write {:?} to {path}",
            String::from_utf8_lossy(contents)
        ));
        Ok(())
    }

    fn load_module(&mut self, path: &str) -> Result<(), ModuleError> {
        self.show(format_args!("finit_module(open({path}), \"\", 0)"));
        Ok(())
    }

    fn interface_up(&mut self, name: &str) -> Result<(), Errno> {
        self.show(format_args!("set IFF_UP on {name}"));
        Ok(())
    }

    fn set_hostname(&mut self, name: &str) -> Result<(), Errno> {
        self.show(format_args!("sethostname({name:?})"));
        Ok(())
    }

    fn boot_time(&mut self) -> BootTime {
        clock_boottime()
    }

    fn open_log_devices(&mut self) -> Result<(), Errno> {
        self.show(format_args!("open /dev/kmsg"));
        Ok(())
    }

    fn write_log(&mut self, line: &LogLine) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{}", line.console_text());
    }

    fn wait_child(&mut self) -> Result<ChildExit, Errno> {
        Err(Errno(libc::ECHILD))
    }

    fn sleep(&mut self, duration: Duration) {
        self.show(format_args!("sleep {duration:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_shows_name_and_number() {
        assert_eq!(Errno(libc::ENOENT).to_string(), "ENOENT (errno 2)");
        assert_eq!(Errno(4095).to_string(), "errno 4095");
    }

    #[test]
    fn mount_flags_show_their_names() {
        let flags = MountFlags::NOSUID.union(MountFlags::NODEV);
        assert_eq!(flags.to_string(), "MS_NOSUID|MS_NODEV");
        assert_eq!(MountFlags(0).to_string(), "0x0");
        assert_eq!(MountFlags(libc::MS_RDONLY).to_string(), "0x1");
    }

    #[test]
    fn boot_time_is_read_from_the_real_clock() {
        let a = clock_boottime();
        let b = clock_boottime();
        assert!(b >= a && a > BootTime::from_nanos(0));
    }
}
