//! [`DryRun`]: a [`System`] that shows what the boot would do on this host, without
//! doing it (`kios-init --dry-run`).

use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

use super::linux;
use super::{
    BootTime, DmTarget, Errno, Event, InitialRoot, LogLine, ModuleError, Mount, MoveStats,
    PowerAction, Spawn, System, WatchKind,
};

/// Shows what the boot would do on this host, without doing it: every action prints
/// a `dry-run:` line on stdout and succeeds; files are read from the real `/` (reading
/// is harmless, and it checks a rootfs's config); the log goes to stdout. Only the
/// host setup runs dry; the supervisor is not started.
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

    fn umount(&mut self, target: &str, lazy: bool) -> Result<(), Errno> {
        self.show(format_args!("umount {target} (lazy: {lazy})"));
        Ok(())
    }

    fn dm_create(&mut self, name: &str, t: &DmTarget<'_>) -> Result<String, Errno> {
        self.show(format_args!(
            "dmsetup create {name} --readonly --table '0 {} {} {}'",
            t.sectors, t.kind, t.params
        ));
        Ok(format!("/dev/mapper/{name}"))
    }

    fn dm_remove(&mut self, name: &str) -> Result<(), Errno> {
        self.show(format_args!("dmsetup remove {name}"));
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

    fn exists(&mut self, path: &str) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        std::fs::read(path).map_err(|e| Errno::from_io(&e))
    }

    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        linux::read_at(path, offset, len)
    }

    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, Errno> {
        linux::list_dir(path)
    }

    fn write_file(&mut self, path: &str, contents: &[u8]) -> Result<(), Errno> {
        self.show(format_args!(
            "write {:?} to {path}",
            String::from_utf8_lossy(contents)
        ));
        Ok(())
    }

    fn create_file(&mut self, path: &str, contents: &[u8]) -> Result<(), Errno> {
        self.show(format_args!(
            "create {path} with {:?}",
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
        linux::clock_boottime()
    }

    fn open_log_devices(&mut self) -> Result<(), Errno> {
        self.show(format_args!("open /dev/kmsg"));
        Ok(())
    }

    fn write_log(&mut self, line: &LogLine) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{}", line.console_text());
    }

    fn env(&mut self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn initial_root(&mut self) -> Option<InitialRoot> {
        None
    }

    fn remove_dir(&mut self, path: &str) -> Result<(), Errno> {
        self.show(format_args!("rmdir {path}"));
        Ok(())
    }

    fn move_root_entries(&mut self, newroot: &str) -> Result<MoveStats, Errno> {
        self.show(format_args!("move / into {newroot}"));
        Ok(MoveStats::default())
    }

    fn switch_root(&mut self, newroot: &str) -> Result<(), Errno> {
        self.show(format_args!("switch root to {newroot}"));
        Ok(())
    }

    fn reexec(&mut self) -> Errno {
        self.show(format_args!("execve /init"));
        Errno(libc::ENOSYS)
    }

    fn start_events(&mut self, socket: &str) -> Result<(), Errno> {
        self.show(format_args!("signalfd, listen on {socket}"));
        Ok(())
    }

    fn watch_dir(&mut self, dir: &str, kind: WatchKind) -> Result<(), Errno> {
        self.show(format_args!("inotify watch {dir} ({kind:?})"));
        Ok(())
    }

    fn spawn(&mut self, spawn: &Spawn) -> Result<i32, Errno> {
        self.show(format_args!(
            "start {} {} (log {})",
            spawn.program,
            spawn.args.join(" "),
            spawn.log
        ));
        Err(Errno(libc::ENOSYS))
    }

    fn has_children(&mut self) -> bool {
        false
    }

    fn signal(&mut self, pid: i32, signal: i32) -> Result<(), Errno> {
        self.show(format_args!("kill({pid}, {signal})"));
        Ok(())
    }

    fn next_events(&mut self, _timeout: Option<Duration>) -> Vec<Event> {
        Vec::new()
    }

    fn broadcast(&mut self, byte: u8) {
        self.show(format_args!("broadcast {byte:#04x}"));
    }

    fn sync(&mut self) {
        self.show(format_args!("sync"));
    }

    fn power(&mut self, action: PowerAction) -> Errno {
        self.show(format_args!("reboot(2): {action}"));
        Errno(libc::ENOSYS)
    }

    fn sleep(&mut self, duration: Duration) {
        self.show(format_args!("sleep {duration:?}"));
    }
}
