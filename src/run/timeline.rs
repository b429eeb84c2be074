//! A boot timeline from the serial console: kios-init's timestamped lines
//! (`[<ms>ms] kios-init: <message>`, milliseconds of `CLOCK_BOOTTIME`, which starts
//! with the kernel; `docs/init.md`, "Log format") named as boot steps, so that CI can
//! gate on boot time.
//!
//! The firmware's share (QEMU start to kernel start: OVMF, the stub, the kernel's
//! decompression) has no guest clock; it is estimated from the host clock: when the
//! first kios-init line arrived, less the boot time it carries.

use serde::Serialize;

/// One step of the boot, in kernel time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// `kernel`, `init`, `modules`, `data`, `store`, `ready`, `crio`,
    /// `crio-socket`, `kubelet`, `kubelet-restart`, `crio-restart`.
    pub step: &'static str,
    /// Milliseconds since the kernel started.
    pub ms: f64,
    /// The console line's message (kios-init's, after `kios-init: `).
    pub line: String,
}

/// The timeline `run --timeline` writes (`docs/run.md`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timeline {
    pub schema: &'static str,
    /// `kvm` or `tcg`.
    pub accelerator: String,
    /// QEMU start to kernel start, host clock, estimated (see the module docs);
    /// `None` when no kios-init line came.
    pub firmware_ms: Option<f64>,
    pub steps: Vec<Step>,
}

pub const SCHEMA: &str = "kios.dev/timeline/v1";

/// The step a kios-init message marks, if it is one.
fn step_of(message: &str, seen: &[Step]) -> Option<&'static str> {
    let started = |s: &str| seen.iter().any(|x| x.step == s);
    Some(if message.starts_with("starting kios-init") {
        "init"
    } else if message.starts_with("modules: ") {
        "modules"
    } else if message.starts_with("mounted data partition") {
        "data"
    } else if message.starts_with("mounted store partition") {
        "store"
    } else if message == "ready" {
        "ready"
    } else if message.starts_with("crio started (pid") {
        if started("crio") {
            "crio-restart"
        } else {
            "crio"
        }
    } else if message.starts_with("CRI-O socket ") && message.ends_with(" is ready") {
        "crio-socket"
    } else if message.starts_with("kubelet started (pid") {
        if started("kubelet") {
            "kubelet-restart"
        } else {
            "kubelet"
        }
    } else {
        return None;
    })
}

/// `(ms, message)` of a kios-init console line, else `None`.
pub fn init_line(line: &str) -> Option<(f64, &str)> {
    let rest = line.trim_end().strip_prefix('[')?;
    let (ms, rest) = rest.split_once("ms] kios-init: ")?;
    let valid = !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    valid.then_some(())?;
    Some((ms.parse().ok()?, rest))
}

impl Timeline {
    pub fn new(accelerator: &str) -> Timeline {
        Timeline {
            schema: SCHEMA,
            accelerator: accelerator.into(),
            ..Default::default()
        }
    }

    /// Takes one console line that arrived `host_ms` after QEMU started.
    pub fn line(&mut self, line: &str, host_ms: f64) {
        let Some((ms, message)) = init_line(line) else {
            return;
        };
        if self.steps.is_empty() {
            self.firmware_ms = Some((host_ms - ms).max(0.0));
            self.steps.push(Step {
                step: "kernel",
                ms: 0.0,
                line: String::new(),
            });
        }
        if let Some(step) = step_of(message, &self.steps) {
            self.steps.push(Step {
                step,
                ms,
                line: crate::untrusted::shown(message),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kios_init_lines_become_steps_in_order_and_restarts_are_told_apart() {
        let mut t = Timeline::new("tcg");
        for (host, line) in [
            (100.0, "BdsDxe: loading Boot0001"),
            (2900.0, "[2601.5ms] kios-init: starting kios-init 0.1.0"),
            (
                2950.0,
                "[2650.000ms] kios-init: modules: 9 loaded, 0 already loaded",
            ),
            (
                2990.0,
                "[2700ms] kios-init: mounted data partition /dev/vda3 on /var/lib/kios/data",
            ),
            (3000.0, "[2710.0ms] kios-init: ready"),
            (
                3001.0,
                "[2711.0ms] kios-init: crio started (pid 90): /usr/bin/crio",
            ),
            (
                3010.0,
                "[2720.0ms] kios-init: CRI-O socket /var/run/crio/crio.sock is ready",
            ),
            (
                3011.0,
                "[2721.0ms] kios-init: kubelet started (pid 91): /usr/bin/kubelet",
            ),
            (
                3500.0,
                "[3200.0ms] kios-init: kubelet started (pid 99): /usr/bin/kubelet",
            ),
            (3600.0, "[   3.3] kios-init: a kernel echo, not ours"),
        ] {
            t.line(line, host);
        }
        let names: Vec<&str> = t.steps.iter().map(|s| s.step).collect();
        assert_eq!(
            names,
            [
                "kernel",
                "init",
                "modules",
                "data",
                "ready",
                "crio",
                "crio-socket",
                "kubelet",
                "kubelet-restart"
            ]
        );
        assert_eq!(t.firmware_ms, Some(2900.0 - 2601.5));
        assert!(t.steps.windows(2).all(|w| w[0].ms <= w[1].ms));
    }

    #[test]
    fn only_our_prefix_is_a_line() {
        assert_eq!(init_line("[12.5ms] kios-init: x"), Some((12.5, "x")));
        assert_eq!(init_line("[ 12.5] kios-init: x"), None);
        assert_eq!(init_line("[1e9ms] kios-init: x"), None);
        assert_eq!(init_line("kios-init: ready"), None);
    }
}
