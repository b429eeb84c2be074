//! The `timing` group: how long each stage took and the process's peak memory at
//! its end. `ru_maxrss` only grows, so a stage's figure is the peak so far; the
//! stage where it jumps is the one that needed the memory.

use std::time::Instant;

use super::{StageTime, Timing};

/// Laps of the build's stages.
#[derive(Debug)]
pub struct Stopwatch {
    start: Instant,
    last: Instant,
    stages: Vec<StageTime>,
}

impl Default for Stopwatch {
    fn default() -> Self {
        Stopwatch::start()
    }
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        let now = Instant::now();
        Stopwatch {
            start: now,
            last: now,
            stages: Vec::new(),
        }
    }

    /// Ends the stage `stage`, which began at the previous lap.
    pub fn lap(&mut self, stage: &str) {
        let now = Instant::now();
        self.stages.push(StageTime {
            stage: stage.to_string(),
            seconds: now.duration_since(self.last).as_secs_f64(),
            peak_rss_bytes: crate::sys::max_rss_bytes(),
        });
        self.last = now;
    }

    /// Seconds since the start.
    pub fn seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The group, with `pulls` filled in by the caller.
    pub(crate) fn finish(self) -> Timing {
        Timing {
            total_seconds: self.seconds(),
            peak_rss_bytes: crate::sys::max_rss_bytes(),
            stages: self.stages,
            pulls: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_name_each_stage_and_memory_is_measured() {
        let mut w = Stopwatch::start();
        w.lap("one");
        // Touch 32 MiB so the peak is at least that.
        let v = vec![1u8; 32 << 20];
        assert_eq!(v.iter().map(|&b| b as u64).sum::<u64>(), 32 << 20);
        w.lap("two");
        let t = w.finish();
        let names: Vec<&str> = t.stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert!(t.peak_rss_bytes >= 32 << 20, "{}", t.peak_rss_bytes);
        assert!(t.stages[1].peak_rss_bytes >= t.stages[0].peak_rss_bytes);
        assert!(t.total_seconds >= t.stages.iter().map(|s| s.seconds).sum::<f64>() - 1e-9);
    }
}
