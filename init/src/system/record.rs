//! A [`System`] that records every call in order instead of making it, for unit tests
//! of the boot sequence on any host. Files to read are given up front; any call can
//! be told to fail with an errno. The clock advances by a fixed step per reading so
//! log timestamps are deterministic; `sleep` and an event wait that times out
//! advance it by their duration. The supervisor's events come from a script of
//! [`Step`]s.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::log::{BootTime, LogLine};
use crate::system::{
    ChildExit, DmTarget, Errno, Event, ExitStatus, InitialRoot, ModuleError, Mount, MountFlags,
    MoveStats, PowerAction, Spawn, System, WatchKind,
};

/// One answer of `next_events`, in script order.
#[derive(Clone, Debug)]
pub enum Step {
    /// These events, at once.
    Events(Vec<Event>),
    /// No event: the wait times out (the clock advances by the timeout).
    Timeout,
    /// The clock advances this much, then these events.
    After(Duration, Vec<Event>),
    /// The file is created, then reported by inotify.
    File(String, Vec<u8>),
    /// The child `pid` exits with `code`.
    Exit(i32, i32),
}

/// One recorded call, with owned arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<String>,
        target: String,
        fstype: Option<String>,
        flags: MountFlags,
        data: Option<String>,
    },
    MkdirAll(String, u32),
    DmCreate {
        name: String,
        sectors: u64,
        kind: String,
        params: String,
    },
    DmRemove(String),
    Symlink {
        target: String,
        link: String,
    },
    ReadFile(String),
    WriteFile(String, Vec<u8>),
    LoadModule(String),
    InterfaceUp(String),
    SetHostname(String),
    OpenLogDevices,
    Log(LogLine),
    Sleep(Duration),
    Umount(String, bool),
    CreateFile(String, Vec<u8>),
    RemoveDir(String),
    MoveRootEntries(String),
    SwitchRoot(String),
    Reexec,
    StartEvents(String),
    WatchDir(String, WatchKind),
    Spawn(Spawn),
    Signal(i32, i32),
    NextEvents(Option<Duration>),
    Broadcast(u8),
    Sync,
    Power(PowerAction),
}

type FailRule = Box<dyn Fn(&Call) -> Option<Errno>>;

/// Each clock reading advances this much.
const CLOCK_STEP_NANOS: u64 = 1_250_000;

#[derive(Default)]
pub struct Recorder {
    pub calls: Vec<Call>,
    files: HashMap<String, Vec<u8>>,
    rules: Vec<FailRule>,
    module_errors: HashMap<String, ModuleError>,
    dirs: HashMap<String, Vec<String>>,
    script: VecDeque<Step>,
    next_pid: i32,
    initial_root: Option<InitialRoot>,
    clock_nanos: u64,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A file that `read_file` will return; any other path is `ENOENT`.
    pub fn with_file(mut self, path: &str, contents: &[u8]) -> Self {
        self.files.insert(path.to_owned(), contents.to_vec());
        self
    }

    /// Makes every call for which `rule` returns an errno fail with it.
    pub fn fail_when(mut self, rule: impl Fn(&Call) -> Option<Errno> + 'static) -> Self {
        self.rules.push(Box::new(rule));
        self
    }

    pub fn fail_mount(self, target: &'static str, errno: i32) -> Self {
        self.fail_when(move |c| {
            matches!(c, Call::Mount { target: t, .. } if t == target).then_some(Errno(errno))
        })
    }

    /// Makes loading the module at `path` fail with `error`.
    pub fn fail_module(mut self, path: &str, error: ModuleError) -> Self {
        self.module_errors.insert(path.to_owned(), error);
        self
    }

    /// A directory that `list_dir` lists (and `exists` finds).
    pub fn with_dir(mut self, path: &str, names: &[&str]) -> Self {
        self.dirs.insert(
            path.to_owned(),
            names.iter().map(|n| (*n).to_owned()).collect(),
        );
        self
    }

    /// What successive `next_events` calls return; once it runs out, each call times
    /// out.
    pub fn with_script(mut self, steps: Vec<Step>) -> Self {
        self.script = steps.into();
        self
    }

    /// `/` is the kernel's initial rootfs, a tmpfs (as when no `root=` is given).
    pub fn initramfs(mut self) -> Self {
        self.initial_root = Some(InitialRoot::Tmpfs);
        self
    }

    /// `/` is the kernel's initial rootfs, a ramfs.
    pub fn initramfs_on_ramfs(mut self) -> Self {
        self.initial_root = Some(InitialRoot::Ramfs);
        self
    }

    /// The programs started, with their pids, in order.
    pub fn spawned(&self) -> Vec<&Spawn> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Spawn(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// The messages logged, in order.
    pub fn messages(&self) -> Vec<&str> {
        self.log_lines().map(LogLine::message).collect()
    }

    pub fn log_lines(&self) -> impl Iterator<Item = &LogLine> {
        self.calls.iter().filter_map(|c| match c {
            Call::Log(line) => Some(line),
            _ => None,
        })
    }

    /// The calls other than logging and clock readings, in order.
    pub fn actions(&self) -> Vec<&Call> {
        self.calls
            .iter()
            .filter(|c| !matches!(c, Call::Log(_)))
            .collect()
    }

    fn record(&mut self, call: Call) -> Result<(), Errno> {
        let failure = self.rules.iter().find_map(|rule| rule(&call));
        self.calls.push(call);
        failure.map_or(Ok(()), Err)
    }
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

impl System for Recorder {
    fn mount(&mut self, m: &Mount<'_>) -> Result<(), Errno> {
        self.record(Call::Mount {
            source: owned(m.source),
            target: m.target.to_owned(),
            fstype: owned(m.fstype),
            flags: m.flags,
            data: owned(m.data),
        })
    }

    fn mkdir_all(&mut self, path: &str, mode: u32) -> Result<(), Errno> {
        self.record(Call::MkdirAll(path.to_owned(), mode))
    }

    /// The device is `/dev/dm-0`.
    fn dm_create(&mut self, name: &str, t: &DmTarget<'_>) -> Result<String, Errno> {
        self.record(Call::DmCreate {
            name: name.to_owned(),
            sectors: t.sectors,
            kind: t.kind.to_owned(),
            params: t.params.to_owned(),
        })?;
        Ok("/dev/dm-0".into())
    }

    fn dm_remove(&mut self, name: &str) -> Result<(), Errno> {
        self.record(Call::DmRemove(name.to_owned()))
    }

    fn symlink(&mut self, target: &str, link: &str) -> Result<(), Errno> {
        self.record(Call::Symlink {
            target: target.to_owned(),
            link: link.to_owned(),
        })
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        self.record(Call::ReadFile(path.to_owned()))?;
        self.files.get(path).cloned().ok_or(Errno(libc::ENOENT))
    }

    /// Given as the file `path@offset`.
    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let key = format!("{path}@{offset}");
        self.record(Call::ReadFile(key.clone()))?;
        let mut b = self.files.get(&key).cloned().ok_or(Errno(libc::ENOENT))?;
        b.truncate(len);
        Ok(b)
    }

    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, Errno> {
        self.dirs.get(path).cloned().ok_or(Errno(libc::ENOENT))
    }

    fn exists(&mut self, path: &str) -> bool {
        self.files.contains_key(path) || self.dirs.contains_key(path)
    }

    fn create_file(&mut self, path: &str, contents: &[u8]) -> Result<(), Errno> {
        self.record(Call::CreateFile(path.to_owned(), contents.to_vec()))?;
        self.files.insert(path.to_owned(), contents.to_vec());
        Ok(())
    }

    fn umount(&mut self, target: &str, lazy: bool) -> Result<(), Errno> {
        self.record(Call::Umount(target.to_owned(), lazy))
    }

    fn env(&mut self, name: &str) -> Option<String> {
        self.files
            .get(&format!("env:{name}"))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn initial_root(&mut self) -> Option<InitialRoot> {
        self.initial_root
    }

    fn remove_dir(&mut self, path: &str) -> Result<(), Errno> {
        self.record(Call::RemoveDir(path.to_owned()))
    }

    fn move_root_entries(&mut self, newroot: &str) -> Result<MoveStats, Errno> {
        self.record(Call::MoveRootEntries(newroot.to_owned()))?;
        Ok(MoveStats {
            entries: 10,
            bytes: 1000,
            failed: 0,
        })
    }

    fn switch_root(&mut self, newroot: &str) -> Result<(), Errno> {
        self.record(Call::SwitchRoot(newroot.to_owned()))
    }

    fn reexec(&mut self) -> Errno {
        self.record(Call::Reexec)
            .err()
            .unwrap_or(Errno(libc::ENOSYS))
    }

    fn start_events(&mut self, socket: &str) -> Result<(), Errno> {
        self.record(Call::StartEvents(socket.to_owned()))
    }

    fn watch_dir(&mut self, dir: &str, kind: WatchKind) -> Result<(), Errno> {
        self.record(Call::WatchDir(dir.to_owned(), kind))
    }

    /// Pids are 100, 101, ...
    fn spawn(&mut self, spawn: &Spawn) -> Result<i32, Errno> {
        self.record(Call::Spawn(spawn.clone()))?;
        let pid = 100 + self.next_pid;
        self.next_pid += 1;
        Ok(pid)
    }

    /// No child is left once asked (the shutdown's kill step ends at once).
    fn has_children(&mut self) -> bool {
        false
    }

    fn signal(&mut self, pid: i32, signal: i32) -> Result<(), Errno> {
        self.record(Call::Signal(pid, signal))
    }

    fn next_events(&mut self, timeout: Option<Duration>) -> Vec<Event> {
        let _ = self.record(Call::NextEvents(timeout));
        match self.script.pop_front() {
            Some(Step::Events(e)) => e,
            Some(Step::After(d, e)) => {
                self.clock_nanos += d.as_nanos() as u64;
                e
            }
            Some(Step::File(path, contents)) => {
                self.files.insert(path.clone(), contents);
                vec![Event::FileAppeared(path)]
            }
            Some(Step::Exit(pid, code)) => vec![Event::ChildExited {
                exit: ChildExit {
                    pid,
                    status: ExitStatus::Exited(code),
                },
                last_lines: vec![format!("STANDIN pid {pid} says bye")],
            }],
            Some(Step::Timeout) | None => {
                if let Some(t) = timeout {
                    self.clock_nanos += t.as_nanos() as u64;
                }
                Vec::new()
            }
        }
    }

    fn broadcast(&mut self, byte: u8) {
        let _ = self.record(Call::Broadcast(byte));
    }

    fn sync(&mut self) {
        let _ = self.record(Call::Sync);
    }

    fn power(&mut self, action: PowerAction) -> Errno {
        self.record(Call::Power(action))
            .err()
            .unwrap_or(Errno(libc::ENOSYS))
    }

    fn write_file(&mut self, path: &str, contents: &[u8]) -> Result<(), Errno> {
        self.record(Call::WriteFile(path.to_owned(), contents.to_vec()))
    }

    fn load_module(&mut self, path: &str) -> Result<(), ModuleError> {
        self.record(Call::LoadModule(path.to_owned()))
            .map_err(ModuleError::Kernel)?;
        self.module_errors.get(path).copied().map_or(Ok(()), Err)
    }

    fn interface_up(&mut self, name: &str) -> Result<(), Errno> {
        self.record(Call::InterfaceUp(name.to_owned()))
    }

    fn set_hostname(&mut self, name: &str) -> Result<(), Errno> {
        self.record(Call::SetHostname(name.to_owned()))
    }

    fn boot_time(&mut self) -> BootTime {
        self.clock_nanos += CLOCK_STEP_NANOS;
        BootTime::from_nanos(self.clock_nanos)
    }

    fn open_log_devices(&mut self) -> Result<(), Errno> {
        self.record(Call::OpenLogDevices)
    }

    fn write_log(&mut self, line: &LogLine) {
        self.calls.push(Call::Log(line.clone()));
    }

    fn sleep(&mut self, duration: Duration) {
        self.clock_nanos += duration.as_nanos() as u64;
        self.calls.push(Call::Sleep(duration));
    }
}
