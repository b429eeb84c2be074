//! How a run reports what it does: one line per finished stage, stamped with the
//! seconds since the run started ([`Progress::step`]), and one `indicatif` bar per
//! blob download (bytes and rate) on a terminal, one plain line per finished blob
//! otherwise; nothing when quiet. The binary makes one and hands it to every stage;
//! it only reports, it never decides anything.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How a run is reported.
#[derive(Clone)]
pub struct Progress {
    mode: Mode,
    start: Instant,
}

impl Default for Progress {
    /// Quiet.
    fn default() -> Self {
        Progress::quiet()
    }
}

#[derive(Clone)]
enum Mode {
    Quiet,
    Lines,
    Bars(MultiProgress),
}

impl Progress {
    /// Bars on a terminal (stderr), lines otherwise; nothing when `verbose` is false.
    pub fn new(verbose: bool) -> Progress {
        let mode = if !verbose {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Mode::Lines
        };
        Progress {
            mode,
            start: Instant::now(),
        }
    }

    pub fn quiet() -> Progress {
        Progress {
            mode: Mode::Quiet,
            start: Instant::now(),
        }
    }

    /// A stage that may take more than a second: on a terminal, a spinner with `what`
    /// and the time spent so far, which the stage may update ([`Busy::set`]) and
    /// which is cleared when it drops (the stage's [`Progress::step`] line follows);
    /// nothing elsewhere, where the step line alone is printed.
    pub fn busy(&self, what: &str) -> Busy {
        let Mode::Bars(m) = &self.mode else {
            return Busy(None);
        };
        let bar = m.add(ProgressBar::new_spinner());
        let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Busy(Some(bar))
    }

    /// Whether anything is shown (warnings are printed only then, too).
    pub fn is_shown(&self) -> bool {
        !matches!(self.mode, Mode::Quiet)
    }

    /// A stage finished: `[  1.23s] msg`, the time since the run started.
    pub fn step(&self, msg: &str) {
        self.say(&format!(
            "[{:>6.2}s] {msg}",
            self.start.elapsed().as_secs_f64()
        ));
    }

    /// A line that is not about one blob (warnings, resolved references).
    pub fn say(&self, msg: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("{msg}"),
            Mode::Bars(m) => {
                let _ = m.println(msg);
            }
        }
    }

    /// Starts reporting one download of `size` bytes, labelled `label` (the
    /// repository and a short digest).
    pub fn blob(&self, label: String, size: Option<u64>) -> BlobProgress {
        let bar = match &self.mode {
            Mode::Bars(m) => {
                let bar = m.add(ProgressBar::new(size.unwrap_or(0)));
                let style = ProgressStyle::with_template(
                    "{msg:32} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(200));
                Some(bar)
            }
            _ => None,
        };
        BlobProgress {
            lines: matches!(self.mode, Mode::Lines),
            label,
            bar,
            start: Instant::now(),
            bytes: 0,
        }
    }
}

/// A running stage on a terminal; see [`Progress::busy`]. Cloning it shares the one
/// spinner (a stage hands it to the module doing the work).
#[derive(Clone, Default)]
pub struct Busy(Option<ProgressBar>);

impl Busy {
    /// What the stage is doing now (`image store: busybox, layer 2 of 3`).
    pub fn set(&self, what: String) {
        if let Some(b) = &self.0 {
            b.set_message(what);
        }
    }
}

impl std::fmt::Debug for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Busy(spinner)"
        } else {
            "Busy(none)"
        })
    }
}

impl Drop for Busy {
    /// Clears the spinner: a clone lives no longer than the stage that made it.
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// The report of one blob; see [`Progress::blob`].
pub struct BlobProgress {
    lines: bool,
    label: String,
    bar: Option<ProgressBar>,
    start: Instant,
    bytes: u64,
}

impl BlobProgress {
    pub fn add(&mut self, n: u64) {
        self.bytes += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// The download starts over (a retry).
    pub fn restart(&mut self) {
        self.bytes = 0;
        if let Some(b) = &self.bar {
            b.set_position(0);
        }
    }

    pub fn done(self) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.lines {
            eprintln!(
                "pulled {} ({} bytes, {:.1} MiB/s)",
                self.label,
                self.bytes,
                self.bytes as f64 / secs / (1 << 20) as f64
            );
        }
    }
}

impl Drop for BlobProgress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
