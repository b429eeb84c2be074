//! kios-init: the PID 1 of kiOS.
//!
//! This file only decides how to run: as PID 1, the boot sequence ([`boot`]) runs
//! against the real system ([`linux::Linux`]) and then the supervisor
//! ([`supervise`]) starts CRI-O and the kubelet and runs forever; anywhere else it
//! refuses (exit 2), unless `--dry-run` asks to print what the host setup would do.
//! See `docs/init.md` for the log format and the files read, and `docs/boot-flow.md`
//! for the contracts with the image and the services.

mod boot;
mod childlog;
mod config;
mod events;
mod gpt;
mod kubelet;
mod log;
mod shutdown;
mod spawn;
mod storage;
mod supervise;
mod system;
mod verity;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;

use crate::storage::Storage;
use crate::supervise::Supervisor;
use crate::system::Linux;
use crate::system::{DryRun, System};

const USAGE: &str = "\
usage: kios-init [--dry-run]

kios-init is the PID 1 of kiOS; the kernel starts it from the initramfs.
Run by hand (not as PID 1) it does nothing and exits with status 2.

  --dry-run   print what the boot sequence would do on this machine, do none of it";

fn main() -> ExitCode {
    // SAFETY: getpid(2) cannot fail and has no memory effects.
    if unsafe { libc::getpid() } == 1 {
        // The kernel passes init any unrecognised command-line words as arguments;
        // PID 1 ignores them rather than refusing to boot.
        run_as_pid1()
    }
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--dry-run"] => {
            let _ = boot_guarded(&mut DryRun);
            ExitCode::SUCCESS
        }
        ["--help"] | ["-h"] => {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            // writeln!, not eprintln!: the latter panics if stderr is closed.
            let _ = writeln!(
                std::io::stderr(),
                "kios-init: not running as PID 1; refusing to touch this system.\n\
                 Use --dry-run to see what the boot would do.\n\n{USAGE}"
            );
            ExitCode::from(2)
        }
    }
}

fn run_as_pid1() -> ! {
    let mut sys = Linux::new();
    let storage = boot_guarded(&mut sys);
    let store = storage.store.then_some(storage::STORE_MOUNT);
    let mut sup = Supervisor::new(kubelet::crio_args(store));
    if let Some(reason) = storage.refused {
        sup.hold(reason);
    }
    if catch_unwind(AssertUnwindSafe(|| sup.start(&mut sys))).is_err() {
        system::warn(
            &mut sys,
            "starting the services panicked (a bug); supervising what runs",
        );
    }
    // A panic in one round (there should be none) is logged and the loop goes on:
    // PID 1 must never exit.
    loop {
        if catch_unwind(AssertUnwindSafe(|| sup.step(&mut sys))).is_err() {
            system::warn(&mut sys, "the supervisor panicked (a bug); continuing");
            sys.sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Runs the boot sequence, catching a panic as a last line of defence: PID 1 exiting
/// would panic the kernel, so a bug in one step must leave a log line, not a dead
/// machine. (This needs `panic = "unwind"`, the default; `abort` would defeat it.)
fn boot_guarded(sys: &mut dyn System) -> Storage {
    match catch_unwind(AssertUnwindSafe(|| boot::run(sys))) {
        Ok(storage) => storage,
        Err(_) => {
            system::warn(
                sys,
                "the boot sequence panicked (a bug); continuing as PID 1 without the remaining steps",
            );
            Storage::default()
        }
    }
}
