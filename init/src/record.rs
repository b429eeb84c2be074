//! A [`System`] that records every call in order instead of making it, for unit tests
//! of the boot sequence on any host. Files to read are given up front; any call can
//! be told to fail with an errno. The clock advances by a fixed step per reading so
//! log timestamps are deterministic.

use std::collections::HashMap;
use std::time::Duration;

use crate::log::{BootTime, LogLine};
use crate::system::{ChildExit, Errno, ModuleError, Mount, MountFlags, System};

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
    WaitChild,
    Sleep(Duration),
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
    children: Vec<Result<ChildExit, Errno>>,
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

    /// What successive `wait_child` calls return; `ECHILD` once they run out.
    pub fn with_children(mut self, results: Vec<Result<ChildExit, Errno>>) -> Self {
        self.children = results;
        self.children.reverse();
        self
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

    fn wait_child(&mut self) -> Result<ChildExit, Errno> {
        self.record(Call::WaitChild)?;
        self.children.pop().unwrap_or(Err(Errno(libc::ECHILD)))
    }

    fn sleep(&mut self, duration: Duration) {
        self.calls.push(Call::Sleep(duration));
    }
}
