//! [`Linux`]: the real [`System`], system calls through libc. Each method is thin:
//! no policy, no retries, no logging; what the boot does is all in the logic modules.
//! The event sources of the supervisor loop live in `events.rs`.
//!
//! Nothing here may panic: every failure comes back as an [`Errno`].

use std::ffi::{CStr, CString};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::time::Duration;

use crate::events::Sources;
use crate::log::{BootTime, LogLine};
use crate::system::{
    DmTarget, Errno, Event, InitialRoot, ModuleError, Mount, MoveStats, PowerAction, Spawn, System,
    WatchKind,
};

/// The variable set for the re-executed init after the switch root.
pub const STAGE_VAR: &str = "KIOS_INIT_STAGE";

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
    events: Sources,
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
            events: Sources::default(),
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
pub fn write_all_fd(fd: &OwnedFd, mut bytes: &[u8]) {
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

pub fn clock_boottime() -> BootTime {
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

pub fn read_at(path: &str, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
    let mut f = File::open(path).map_err(|e| Errno::from_io(&e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Errno::from_io(&e))?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64)
        .read_to_end(&mut buf)
        .map_err(|e| Errno::from_io(&e))?;
    Ok(buf)
}

pub fn list_dir(path: &str) -> Result<Vec<String>, Errno> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| Errno::from_io(&e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn rc(ret: libc::c_int) -> Result<(), Errno> {
    if ret == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Moves one entry of the old root to `dst`, recursively, deleting the source once
/// copied. Ownership and mode are kept; timestamps are not (nothing needs them at
/// run time). There are no xattrs to keep: cpio newc has no field for them and the
/// kernel's unpacker (init/initramfs.c) sets only mode, owner and mtime, and this
/// runs before anything else could set one.
fn move_entry(src: &std::path::Path, dst: &std::path::Path, stats: &mut MoveStats) {
    let Ok(meta) = std::fs::symlink_metadata(src) else {
        stats.failed += 1;
        return;
    };
    let ft = meta.file_type();
    let mode = meta.mode() & 0o7777;
    let ok = if ft.is_dir() {
        let made = DirBuilder::new().mode(mode).create(dst).is_ok() || dst.is_dir();
        if made {
            if let Ok(entries) = std::fs::read_dir(src) {
                for e in entries.flatten() {
                    move_entry(&e.path(), &dst.join(e.file_name()), stats);
                }
            }
            let _ = std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode));
        }
        made
    } else if ft.is_file() {
        match std::fs::copy(src, dst) {
            Ok(n) => {
                stats.bytes += n;
                true
            }
            Err(_) => false,
        }
    } else if ft.is_symlink() {
        std::fs::read_link(src)
            .and_then(|target| symlink(target, dst))
            .is_ok()
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        match CString::new(dst.as_os_str().as_bytes()) {
            // SAFETY: a NUL-terminated path; mknod(2) has no memory effects.
            Ok(p) => unsafe { libc::mknod(p.as_ptr(), meta.mode(), meta.rdev()) == 0 },
            Err(_) => false,
        }
    } else {
        // Sockets cannot be copied and are never in an initramfs.
        false
    };
    if !ok {
        stats.failed += 1;
        return;
    }
    stats.entries += 1;
    if let Ok(p) = CString::new(dst.as_os_str().as_bytes()) {
        // SAFETY: a NUL-terminated path.
        unsafe { libc::lchown(p.as_ptr(), meta.uid(), meta.gid()) };
    }
    let _ = if ft.is_dir() {
        std::fs::remove_dir(src)
    } else {
        std::fs::remove_file(src)
    };
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

    fn umount(&mut self, target: &str, lazy: bool) -> Result<(), Errno> {
        let t = c_string(target)?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: a NUL-terminated path.
        rc(unsafe { libc::umount2(t.as_ptr(), flags) })
    }

    fn dm_create(&mut self, name: &str, target: &DmTarget<'_>) -> Result<String, Errno> {
        super::dm::create(name, target)
    }

    fn dm_remove(&mut self, name: &str) -> Result<(), Errno> {
        super::dm::remove(name)
    }

    fn exists(&mut self, path: &str) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }

    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        read_at(path, offset, len)
    }

    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, Errno> {
        list_dir(path)
    }

    fn create_file(&mut self, path: &str, contents: &[u8]) -> Result<(), Errno> {
        std::fs::write(path, contents).map_err(|e| Errno::from_io(&e))
    }

    fn env(&mut self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn initial_root(&mut self) -> Option<InitialRoot> {
        // SAFETY: statfs is plain data; all zeroes is a valid value.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid statfs to write into.
        if unsafe { libc::statfs(c"/".as_ptr(), &mut st) } != 0 {
            return None;
        }
        const RAMFS_MAGIC: i64 = 0x8584_58f6;
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        #[allow(clippy::unnecessary_cast)]
        let kind = match st.f_type as i64 {
            TMPFS_MAGIC => InitialRoot::Tmpfs,
            RAMFS_MAGIC => InitialRoot::Ramfs,
            _ => return None,
        };
        self.exists("/init").then_some(kind)
    }

    fn remove_dir(&mut self, path: &str) -> Result<(), Errno> {
        std::fs::remove_dir(path).map_err(|e| Errno::from_io(&e))
    }

    fn move_root_entries(&mut self, newroot: &str) -> Result<MoveStats, Errno> {
        let root_dev = std::fs::symlink_metadata("/")
            .map_err(|e| Errno::from_io(&e))?
            .dev();
        let mut stats = MoveStats::default();
        let entries = std::fs::read_dir("/").map_err(|e| Errno::from_io(&e))?;
        let newroot = std::path::Path::new(newroot);
        for e in entries.flatten() {
            let path = e.path();
            // The new root's mount point (and anything mounted) is another device.
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.dev() == root_dev && path != newroot => {}
                _ => continue,
            }
            move_entry(&path, &newroot.join(e.file_name()), &mut stats);
        }
        Ok(stats)
    }

    fn switch_root(&mut self, newroot: &str) -> Result<(), Errno> {
        let root = c_string(newroot)?;
        // SAFETY: NUL-terminated paths; these calls have no memory effects.
        unsafe {
            rc(libc::chdir(root.as_ptr()))?;
            rc(libc::mount(
                c".".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            ))?;
            rc(libc::chroot(c".".as_ptr()))?;
            rc(libc::chdir(c"/".as_ptr()))
        }
    }

    fn reexec(&mut self) -> Errno {
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k.as_bytes() != STAGE_VAR.as_bytes())
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect();
        if let Ok(stage) = CString::new(format!("{STAGE_VAR}=switched")) {
            env.push(stage);
        }
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
        envp.push(std::ptr::null());
        let argv = [c"/init".as_ptr(), std::ptr::null()];
        // SAFETY: argv and envp are NULL-terminated arrays of NUL-terminated strings
        // that outlive the call.
        unsafe { libc::execve(c"/init".as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        Errno::last()
    }

    fn start_events(&mut self, socket: &str) -> Result<(), Errno> {
        // ctrl-alt-del: the kernel sends SIGINT to PID 1 instead of rebooting at once.
        // SAFETY: reboot(2) with CAD_OFF only changes that setting.
        unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
        self.events.start(socket)
    }

    fn watch_dir(&mut self, dir: &str, kind: WatchKind) -> Result<(), Errno> {
        self.events.watch(dir, kind)
    }

    fn spawn(&mut self, spawn: &Spawn) -> Result<i32, Errno> {
        self.events.spawn(spawn)
    }

    fn has_children(&mut self) -> bool {
        // SAFETY: siginfo_t is plain data, written by waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid siginfo_t to write into.
        let rc = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        !(rc < 0 && Errno::last().0 == libc::ECHILD)
    }

    fn signal(&mut self, pid: i32, signal: i32) -> Result<(), Errno> {
        // SAFETY: kill(2) has no memory effects.
        rc(unsafe { libc::kill(pid, signal) })
    }

    fn next_events(&mut self, timeout: Option<Duration>) -> Vec<Event> {
        self.events.next(timeout)
    }

    fn broadcast(&mut self, byte: u8) {
        self.events.broadcast(byte);
    }

    fn sync(&mut self) {
        // SAFETY: sync(2) cannot fail.
        unsafe { libc::sync() };
    }

    fn power(&mut self, action: PowerAction) -> Errno {
        let cmd = match action {
            PowerAction::PowerOff => libc::RB_POWER_OFF,
            PowerAction::Reboot => libc::RB_AUTOBOOT,
        };
        // SAFETY: reboot(2) with a valid command; returns only on failure.
        unsafe { libc::reboot(cmd) };
        Errno::last()
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }
}
