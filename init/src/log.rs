//! Log lines of kios-init: one line per boot step, written to the console and, once
//! devtmpfs is mounted, to the kernel log (`/dev/kmsg`).
//!
//! The console form is a contract (see `docs/init.md`): tests grep for
//! `kios-init: ready` and parse the milliseconds since boot, so a boot can be timed
//! from its log:
//!
//! ```text
//! [1234.567ms] kios-init: mounted proc on /proc
//! [2345.678ms] kios-init: ready
//! ```
//!
//! The kernel-log form has no timestamp of our own (the kernel stamps each record):
//! `<7>kios-init: mounted proc on /proc` (`<4>` for warnings). Steps are recorded at
//! debug priority so that the kernel does not print them on the console a second
//! time: the init already wrote them there, and the kernel's console write is
//! synchronous (on a real 115200-baud serial port, ~87 µs per character, ~7 ms a
//! line). Warnings are echoed: they are few and worth seeing twice.
//!
//! This module only formats, and imports nothing of the crate; where lines go is the
//! business of [`System::write_log`](crate::system::System::write_log), and
//! [`crate::system::info`]/[`crate::system::warn`] stamp and send a line.

use std::fmt;

/// The tag every line carries, after the timestamp.
pub const TAG: &str = kios_contract::log::TAG;

/// The message of the last line of a successful boot sequence, exactly.
pub const READY: &str = kios_contract::log::READY;

/// Time since boot, from `CLOCK_BOOTTIME` (which, unlike `CLOCK_MONOTONIC`, keeps
/// counting during suspend, so it matches the kernel's own timestamps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BootTime {
    nanos: u64,
}

impl BootTime {
    pub const fn from_nanos(nanos: u64) -> Self {
        Self { nanos }
    }

    /// This time plus `d`.
    pub fn plus(self, d: std::time::Duration) -> Self {
        let add = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self::from_nanos(self.nanos.saturating_add(add))
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: BootTime) -> std::time::Duration {
        std::time::Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }
}

/// `1234.567ms`: whole milliseconds, then exactly three decimals (microseconds).
impl fmt::Display for BootTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.nanos / 1_000;
        write!(f, "{}.{:03}ms", micros / 1_000, micros % 1_000)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    /// Something failed and the boot continues without it.
    Warning,
}

impl Level {
    /// The syslog priority put in front of a `/dev/kmsg` record.
    fn kmsg_priority(self) -> u8 {
        match self {
            // KERN_DEBUG, not KERN_INFO: below the default console log level, so
            // not echoed onto the console the init already wrote the line to.
            Level::Info => 7,
            Level::Warning => 4, // KERN_WARNING
        }
    }
}

/// One log line: when, how bad, what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub at: BootTime,
    pub level: Level,
    message: String,
}

impl LogLine {
    /// Control characters (a newline in a config value, say) are replaced with `?` so
    /// that one message is always exactly one line.
    pub fn new(at: BootTime, level: Level, message: &str) -> Self {
        let message = message
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        Self { at, level, message }
    }

    #[cfg(test)]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `[1234.567ms] kios-init: <message>`, without the newline.
    pub fn console_text(&self) -> String {
        format!("[{}] {TAG}: {}", self.at, self.message)
    }

    /// `<7>kios-init: <message>` (`<4>` for a warning), without the newline.
    pub fn kmsg_text(&self) -> String {
        format!("<{}>{TAG}: {}", self.level.kmsg_priority(), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_line_has_milliseconds_with_three_decimals_then_tag() {
        let line = LogLine::new(
            BootTime::from_nanos(1_234_567_890),
            Level::Info,
            "mounted proc on /proc",
        );
        assert_eq!(
            line.console_text(),
            "[1234.567ms] kios-init: mounted proc on /proc"
        );
    }

    #[test]
    fn small_times_keep_leading_zeros_in_the_decimals() {
        let line = LogLine::new(BootTime::from_nanos(5_007_000), Level::Info, READY);
        assert_eq!(line.console_text(), "[5.007ms] kios-init: ready");
        let line = LogLine::new(BootTime::from_nanos(0), Level::Info, READY);
        assert_eq!(line.console_text(), "[0.000ms] kios-init: ready");
    }

    #[test]
    fn kmsg_line_carries_the_priority_and_no_timestamp() {
        let at = BootTime::from_nanos(1);
        assert_eq!(
            LogLine::new(at, Level::Info, "x").kmsg_text(),
            "<7>kios-init: x"
        );
        assert_eq!(
            LogLine::new(at, Level::Warning, "y").kmsg_text(),
            "<4>kios-init: y"
        );
    }

    #[test]
    fn control_characters_cannot_split_a_line() {
        let line = LogLine::new(BootTime::from_nanos(0), Level::Info, "a\nb\r\x1b");
        assert_eq!(line.message(), "a?b??");
    }

    #[test]
    fn console_line_is_parseable_by_the_documented_pattern() {
        // The contract in docs/init.md: `[<digits>(.<3 digits>)?ms] kios-init: <msg>`.
        let text =
            LogLine::new(BootTime::from_nanos(987_654_321_000), Level::Info, READY).console_text();
        let rest = text.strip_prefix('[').unwrap_or_default();
        let (ms, msg) = rest.split_once("ms] ").unwrap_or_default();
        let (whole, frac) = ms.split_once('.').unwrap_or_default();
        assert!(whole.chars().all(|c| c.is_ascii_digit()) && !whole.is_empty());
        assert_eq!(frac.len(), 3);
        assert_eq!(ms.parse::<f64>().ok(), Some(987_654.321));
        assert_eq!(msg, "kios-init: ready");
    }
}
