//! `kios-build run IMAGE`: boots an image in QEMU (`kios_build::run`), the console on
//! stdout; exit 0 when `--until` matched (or, without it, when the guest powered
//! off), 1 on a timeout, a kernel panic or QEMU exiting first, 2 for bad usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use kios_build::profile::Arch;
use kios_build::run::{Accel, Network, Outcome, RunOptions};

use crate::CliError;

#[derive(Clone, Copy, ValueEnum)]
enum NetworkArg {
    /// QEMU's user-mode network (DHCP, DNS, outbound through the host).
    User,
    /// The same, but nothing leaves the host (restrict=on).
    Restricted,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    /// KVM when it works on this host (a probe boots a one-byte firmware), else TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Args)]
pub struct RunArgs {
    /// The image: raw, raw.zst, raw.xz, qcow2, vhd, gce or vmdk, as kios-build wrote it.
    image: PathBuf,
    /// Exit 0 as soon as a console line matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    until: Option<String>,
    /// Give up (exit 1) after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    timeout: u64,
    /// Write the boot timeline (kios-init's steps, docs/run.md) as JSON.
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// The accelerator.
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelArg,
    /// The guest's network.
    #[arg(long, value_enum, default_value = "user")]
    network: NetworkArg,
    /// Boot the image file itself rather than a snapshot (raw only): changes stay.
    #[arg(long)]
    writable: bool,
    /// Boot with OVMF's Secure Boot firmware and these UEFI variables (your keys
    /// enrolled, docs/secure-boot.md).
    #[arg(long, value_name = "VARS_FILE")]
    secure_boot: Option<PathBuf>,
    /// The image's architecture, if it cannot be read from the image.
    #[arg(long)]
    arch: Option<Arch>,
    /// Guest memory, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    memory: u32,
    /// Do not copy the console to stdout; print only the outcome.
    #[arg(long, short)]
    quiet: bool,
    /// More QEMU arguments, after `--`.
    #[arg(last = true, value_name = "QEMU_ARGS")]
    qemu_args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("--until: not a regular expression: {0}")]
struct BadRegex(String);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

pub fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    let until = args
        .until
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| CliError::input(&BadRegex(e.to_string())))?;
    let opts = RunOptions {
        image: args.image,
        accel: match args.accel {
            AccelArg::Auto => Accel::Auto,
            AccelArg::Kvm => Accel::Kvm,
            AccelArg::Tcg => Accel::Tcg,
        },
        until,
        timeout: Duration::from_secs(args.timeout),
        network: match args.network {
            NetworkArg::User => Network::User,
            NetworkArg::Restricted => Network::Restricted,
            NetworkArg::None => Network::None,
        },
        writable: args.writable,
        secure_boot_vars: args.secure_boot,
        arch: args.arch,
        memory_mib: args.memory,
        qemu_args: args.qemu_args,
        echo: !args.quiet,
    };
    let progress = kios_build::progress::Progress::new(true);
    let result = kios_build::run::run(&opts, &progress)
        .map_err(|e| CliError::classified(&e, e.is_input_error()))?;
    if let Some(path) = &args.timeline {
        kios_build::run::write_timeline(path, &result.timeline)
            .map_err(|e| CliError::classified(&e, e.is_input_error()))?;
    }
    let fail = |why: String| Err(CliError::failed(&Failed(why)));
    match (result.outcome, &args.until) {
        (Outcome::Matched(line), _) => {
            progress.say(&format!("run: matched: {line}"));
            Ok(ExitCode::SUCCESS)
        }
        (Outcome::Exited(Some(0)), None) => Ok(ExitCode::SUCCESS),
        (Outcome::Exited(code), until) => fail(format!(
            "QEMU exited ({}){}",
            code.map(|c| format!("code {c}"))
                .unwrap_or_else(|| "killed".into()),
            until
                .as_ref()
                .map(|u| format!(
                    " before a line matched `{}`",
                    kios_build::untrusted::shown(u)
                ))
                .unwrap_or_default()
        )),
        (Outcome::TimedOut, until) => fail(format!(
            "no {} within {} s ({})",
            until
                .as_ref()
                .map(|u| format!("line matching `{}`", kios_build::untrusted::shown(u)))
                .unwrap_or_else(|| "power-off".into()),
            args.timeout,
            result.machine
        )),
        (Outcome::Panicked(line), _) => fail(format!("the kernel panicked: {line}")),
    }
}
