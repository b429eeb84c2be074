//! Where the output of CRI-O and the kubelet goes: a log file rotated by size
//! ([`RotatingLog`]) and the last lines kept in memory ([`Tail`]) to show on the
//! console when the service crashes.
//!
//! Input is raw bytes as read from a child's pipe; output is the log file
//! (`<log>`, `<log>.1`, `<log>.2`) and the tail. It does not read pipes or decide
//! when to show the tail (`events.rs`, `supervise.rs`). A log that cannot be written
//! is dropped silently: the tail still works, and PID 1 must not stop for a log.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

/// A log file is rotated when it would grow past this.
pub const ROTATE_BYTES: u64 = 10 * 1024 * 1024;
/// How many rotated files are kept (`.1` newest).
pub const KEEP_OLD: u32 = 2;
/// How many lines the tail keeps.
pub const TAIL_LINES: usize = 20;
/// A longer line is cut in the tail (the log file has it whole).
const TAIL_LINE_MAX: usize = 400;

pub struct RotatingLog {
    path: String,
    file: Option<File>,
    size: u64,
    limit: u64,
}

impl RotatingLog {
    pub fn open(path: &str) -> Self {
        Self::with_limit(path, ROTATE_BYTES)
    }

    pub fn with_limit(path: &str, limit: u64) -> Self {
        let mut log = Self {
            path: path.to_owned(),
            file: None,
            size: 0,
            limit,
        };
        log.reopen();
        log
    }

    fn reopen(&mut self) {
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)
            .ok();
        self.size = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
    }

    pub fn write(&mut self, bytes: &[u8]) {
        if self.file.is_none() {
            return;
        }
        if self.size > 0 && self.size.saturating_add(bytes.len() as u64) > self.limit {
            self.rotate();
        }
        if let Some(f) = &mut self.file {
            if f.write_all(bytes).is_ok() {
                self.size = self.size.saturating_add(bytes.len() as u64);
            }
        }
    }

    /// `log.1` -> `log.2`, ..., `log` -> `log.1`, then a new `log`.
    fn rotate(&mut self) {
        self.file = None;
        for n in (1..KEEP_OLD).rev() {
            let _ = std::fs::rename(
                format!("{}.{n}", self.path),
                format!("{}.{}", self.path, n + 1),
            );
        }
        let _ = std::fs::rename(&self.path, format!("{}.1", self.path));
        self.reopen();
    }
}

/// The last [`TAIL_LINES`] complete lines, plus a pending partial line.
#[derive(Default)]
pub struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.finish_line();
            } else if self.partial.len() < TAIL_LINE_MAX {
                self.partial.push(b);
            }
        }
    }

    fn finish_line(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The kept lines, oldest first, a pending partial line last.
    pub fn take(&mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            self.finish_line();
        }
        self.lines.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_and_a_partial_one() {
        let mut t = Tail::default();
        for i in 0..30 {
            t.push(format!("line {i}\n").as_bytes());
        }
        t.push(b"partial");
        let lines = t.take();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.first().map(String::as_str), Some("line 11"));
        assert_eq!(lines.last().map(String::as_str), Some("partial"));
        assert!(t.take().is_empty());
    }

    #[test]
    fn log_rotates_by_size_keeping_two_old_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("x.log");
        let path = path.to_string_lossy().into_owned();
        let mut log = RotatingLog::with_limit(&path, 10);
        for chunk in [b"aaaaaa\n", b"bbbbbb\n", b"cccccc\n", b"dddddd\n"] {
            log.write(chunk);
        }
        let read = |p: String| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(path.clone()), "dddddd\n");
        assert_eq!(read(format!("{path}.1")), "cccccc\n");
        assert_eq!(read(format!("{path}.2")), "bbbbbb\n");
        assert!(!std::path::Path::new(&format!("{path}.3")).exists());
    }

    #[test]
    fn unwritable_log_is_ignored() {
        let mut log = RotatingLog::open("/nonexistent-dir/x.log");
        log.write(b"nothing happens\n");
    }
}
