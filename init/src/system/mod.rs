//! The system-call interface of kios-init, and its real Linux implementation.
//!
//! The boot sequence ([`crate::boot`]) is plain logic over the [`System`] trait, so it
//! is unit-tested on any host with a recording implementation (`record.rs`) and can be
//! shown with a dry-run one ([`DryRun`]), the way youki puts its `Syscall` trait
//! between a container's start and the kernel. [`Linux`] is the only code that makes
//! system calls; it keeps each call thin (no policy, no retries, no logging) so that
//! what the boot does is all visible in `boot.rs`.
//!
//! Laid out as youki lays out its `syscall/`: the trait and the types it speaks in
//! here, the real implementation in `linux.rs` (system calls; the event sources of the
//! supervisor loop are in `crate::events`: signalfd, inotify, the system socket, the
//! output pipes of children), the dry run in `dry_run.rs`, and the recording one the
//! unit tests use in `record.rs`. This module imports none of them.
//!
//! Nothing here may panic: every failure comes back as an [`Errno`].

use std::fmt;
use std::io;
use std::time::Duration;

pub use crate::log::{BootTime, Level, LogLine};

pub mod dm;
pub mod dry_run;
pub mod linux;
#[cfg(test)]
pub mod record;

pub use dry_run::DryRun;
pub use linux::Linux;

/// An error number as the kernel returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// `errno` as left by the last failing libc call.
    pub fn last() -> Self {
        Self::from_io(&io::Error::last_os_error())
    }

    pub fn from_io(err: &io::Error) -> Self {
        Self(err.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The symbolic name, for the errors PID 1 is likely to meet.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::ENOTEMPTY => "ENOTEMPTY",
            libc::ETIMEDOUT => "ETIMEDOUT",
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
    pub const RDONLY: Self = Self(libc::MS_RDONLY);
    pub const BIND: Self = Self(libc::MS_BIND);
    pub const NONE: Self = Self(0);

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// `MS_NOSUID|MS_NODEV`, `0` for none (used by the dry run).
impl fmt::Display for MountFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(MountFlags, &str); 7] = [
            (MountFlags::RDONLY, "MS_RDONLY"),
            (MountFlags::BIND, "MS_BIND"),
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

/// Which of the two long-running services a child is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Crio,
    Kubelet,
}

impl Service {
    pub const ALL: [Service; 2] = [Service::Crio, Service::Kubelet];

    pub fn name(self) -> &'static str {
        match self {
            Service::Crio => "crio",
            Service::Kubelet => "kubelet",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A program to start: its stdout and stderr go, through a pipe read by PID 1, to
/// `log` (rotated by size), and the last lines are kept for the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spawn {
    pub service: Service,
    pub program: String,
    pub args: Vec<String>,
    pub log: String,
}

/// Something the supervisor loop reacts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A child was reaped. `last_lines` is the tail of its output when it was one of
    /// the services, empty otherwise.
    ChildExited {
        exit: ChildExit,
        last_lines: Vec<String>,
    },
    /// A file was created, written and closed, or moved into a watched directory.
    FileAppeared(String),
    /// One byte read from a client of the system socket.
    Command(u8),
    /// A signal delivered to PID 1 (through signalfd): SIGTERM, SIGINT, SIGUSR1.
    Signal(i32),
}

/// What inotify should report in a watched directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    /// A file written and closed, or renamed into place (a config file complete).
    Written,
    /// Any new entry (a socket: it is never written).
    Created,
}

/// The last step of a shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerAction::PowerOff => "power off",
            PowerAction::Reboot => "reboot",
        })
    }
}

/// What the kernel's initial rootfs (the unpacked initramfs) is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialRoot {
    /// A tmpfs: what the kernel uses when it has tmpfs and no `root=` is given.
    Tmpfs,
    /// A ramfs: no size limit and no usage figures.
    Ramfs,
}

/// What moving the initramfs onto the new root copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MoveStats {
    pub entries: u64,
    pub bytes: u64,
    /// Entries that could not be copied (logged by count; the boot goes on).
    pub failed: u64,
}

/// One device-mapper target line: `0 <sectors> <kind> <params>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmTarget<'a> {
    pub sectors: u64,
    /// `verity`.
    pub kind: &'a str,
    pub params: &'a str,
}

/// Everything kios-init asks of the kernel. One method per operation, arguments as
/// the boot sequence means them; implementations do no logging of their own except
/// [`System::write_log`].
pub trait System {
    /// `mount(2)`.
    fn mount(&mut self, mount: &Mount<'_>) -> Result<(), Errno>;
    /// `umount2(2)`, with `MNT_DETACH` when `lazy`.
    fn umount(&mut self, target: &str, lazy: bool) -> Result<(), Errno>;
    /// Creates the device-mapper device `name` with one read-only target
    /// (`target.kind` and its parameters, over `target.sectors` 512-byte sectors) and
    /// makes it live; returns its device node, `/dev/dm-N`.
    fn dm_create(&mut self, name: &str, target: &DmTarget<'_>) -> Result<String, Errno>;
    /// Removes the device-mapper device `name`.
    fn dm_remove(&mut self, name: &str) -> Result<(), Errno>;
    /// Creates `path` and its missing parents with `mode`; an existing directory is
    /// not an error.
    fn mkdir_all(&mut self, path: &str, mode: u32) -> Result<(), Errno>;
    /// Creates the symbolic link `link` pointing at `target`.
    fn symlink(&mut self, target: &str, link: &str) -> Result<(), Errno>;
    /// Whether `path` exists (`lstat` succeeds).
    fn exists(&mut self, path: &str) -> bool;
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, Errno>;
    /// Reads up to `len` bytes at `offset` (a block device's GPT, say).
    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>, Errno>;
    /// The names in a directory, `.` and `..` left out, sorted.
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, Errno>;
    /// Writes `contents` to an existing file (a sysctl, say); never creates one.
    fn write_file(&mut self, path: &str, contents: &[u8]) -> Result<(), Errno>;
    /// Creates or truncates `path` and writes `contents` (a marker file).
    fn create_file(&mut self, path: &str, contents: &[u8]) -> Result<(), Errno>;
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
    /// An environment variable of this process.
    fn env(&mut self, name: &str) -> Option<String>;
    /// What `/` is made of when it is the kernel's initial rootfs (a ramfs or tmpfs
    /// holding `/init`); `None` otherwise.
    fn initial_root(&mut self) -> Option<InitialRoot>;
    /// `rmdir(2)`.
    fn remove_dir(&mut self, path: &str) -> Result<(), Errno>;
    /// Copies every entry of `/` that is on the root filesystem into `newroot` (a
    /// mounted tmpfs), deleting each original once copied to free its memory.
    fn move_root_entries(&mut self, newroot: &str) -> Result<MoveStats, Errno>;
    /// `chdir(newroot)`, `mount(newroot, "/", MS_MOVE)`, `chroot(".")`, `chdir("/")`.
    fn switch_root(&mut self, newroot: &str) -> Result<(), Errno>;
    /// `execve("/init")` with `KIOS_INIT_STAGE=switched` in the environment; returns
    /// only on failure.
    fn reexec(&mut self) -> Errno;
    /// Starts the real event sources: blocks and routes SIGCHLD, SIGTERM, SIGINT and
    /// SIGUSR1 through a signalfd, listens on `socket`, and has the kernel send
    /// SIGINT for ctrl-alt-del.
    fn start_events(&mut self, socket: &str) -> Result<(), Errno>;
    /// Adds an inotify watch on the directory `dir`.
    fn watch_dir(&mut self, dir: &str, kind: WatchKind) -> Result<(), Errno>;
    /// Starts `spawn` in its own session with its output captured.
    fn spawn(&mut self, spawn: &Spawn) -> Result<i32, Errno>;
    /// Whether PID 1 has any child left, exited or not (`waitid(P_ALL, .., WNOHANG |
    /// WNOWAIT)` is not `ECHILD`); reaps nothing.
    fn has_children(&mut self) -> bool;
    /// `kill(2)`; `pid` -1 is every process but PID 1.
    fn signal(&mut self, pid: i32, signal: i32) -> Result<(), Errno>;
    /// Waits up to `timeout` (forever with `None`) for events; reaps every child that
    /// exited, copies children's output to their logs. May return no events.
    fn next_events(&mut self, timeout: Option<std::time::Duration>) -> Vec<Event>;
    /// Sends `byte` to every connected client of the system socket.
    fn broadcast(&mut self, byte: u8);
    /// `sync(2)`.
    fn sync(&mut self);
    /// `reboot(2)`; returns only on failure.
    fn power(&mut self, action: PowerAction) -> Errno;
    fn sleep(&mut self, duration: Duration);
}

/// Logs `message` at [`Level::Info`], stamped with the current boot time.
pub fn info(sys: &mut dyn System, message: &str) {
    emit(sys, Level::Info, message);
}

/// Logs `message` at [`Level::Warning`], stamped with the current boot time.
pub fn warn(sys: &mut dyn System, message: &str) {
    emit(sys, Level::Warning, message);
}

/// The contents of a file the boot can do without: `None` when it is absent (logged
/// as `no PATH; ABSENT`) or cannot be read (a warning: `cannot read PATH: ERROR;
/// UNREADABLE`), each message saying what the boot does instead.
pub fn read_optional(
    sys: &mut dyn System,
    path: &str,
    absent: &str,
    unreadable: &str,
) -> Option<Vec<u8>> {
    match sys.read_file(path) {
        Ok(contents) => Some(contents),
        Err(Errno(libc::ENOENT)) => {
            info(sys, &format!("no {path}; {absent}"));
            None
        }
        Err(e) => {
            warn(sys, &format!("cannot read {path}: {e}; {unreadable}"));
            None
        }
    }
}

fn emit(sys: &mut dyn System, level: Level, message: &str) {
    let at = sys.boot_time();
    sys.write_log(&LogLine::new(at, level, message));
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
        assert_eq!(MountFlags(libc::MS_RDONLY).to_string(), "MS_RDONLY");
        assert_eq!(MountFlags(libc::MS_MOVE).to_string(), "0x2000");
    }
}
