//! The `kios-build` command: clap turns the arguments into one subcommand, each of
//! which is a short function over a library call (`commands/`, one file each, as
//! cargo's `commands/*.rs`); [`CliError`] is the one place that renders an error
//! chain and picks the exit code: 0 ok, 1 the build failed, 2 bad usage or a bad
//! profile.

mod commands;

use std::error::Error;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kios-build",
    version,
    about = "Turns a kiOS node profile into a bootable disk image",
    long_about = "Turns a kiOS node profile (YAML) into a bootable UEFI disk image.\n\nExit codes: 0 ok, 1 the build failed, 2 bad usage or a bad profile."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a disk image from a node profile.
    Build(commands::build::BuildArgs),
    /// Check a profile and everything it refers to; print one line on success.
    Validate(commands::validate::ValidateArgs),
    /// Pull every registry image a profile names into the cache, and write kios.lock.
    Pull(commands::pull::PullCommandArgs),
    /// Manage the blob cache.
    Cache {
        #[command(subcommand)]
        command: commands::cache::CacheCommand,
    },
    /// Check a kernel's configuration against what kiOS needs
    /// (kernel-config/required.txt). Exit 0: nothing missing; 1: options missing.
    Kernel {
        #[command(subcommand)]
        command: commands::kernel::KernelCommand,
    },
    /// Read a built image back: partitions, boot files, command line, kernel
    /// version, and the initramfs' /etc.
    Inspect(commands::inspect::InspectArgs),
    /// Rebuild from the lock and the cache alone and compare with an image: exit 0
    /// identical, 1 different (the first partition and file that differ).
    Verify(commands::verify::VerifyArgs),
    /// Boot an image in QEMU (UEFI firmware, KVM when usable), its console on stdout.
    /// Exit 0: --until matched, or the guest powered off; 1: timeout, panic, QEMU exit.
    Run(commands::run::RunArgs),
    /// Check a system tree against what kiOS needs (docs/system.md). Exit 0: nothing
    /// wrong; 1: errors found.
    System {
        #[command(subcommand)]
        command: commands::system::SystemCommand,
    },
}

/// Why a command stopped: the message to print (the whole cause chain, made safe for
/// a terminal) and the exit code.
pub struct CliError {
    message: String,
    code: u8,
}

impl CliError {
    /// The user's input is wrong (exit 2).
    pub fn input(error: &dyn Error) -> Self {
        Self::with_code(error, 2)
    }

    /// The work failed (exit 1).
    pub fn failed(error: &dyn Error) -> Self {
        Self::with_code(error, 1)
    }

    /// Exit 2 when `is_input` (the library's own classification), else 1.
    pub fn classified(error: &dyn Error, is_input: bool) -> Self {
        Self::with_code(error, if is_input { 2 } else { 1 })
    }

    fn with_code(error: &dyn Error, code: u8) -> Self {
        CliError {
            message: render(error),
            code,
        }
    }
}

impl From<kios_build::build::BuildError> for CliError {
    fn from(e: kios_build::build::BuildError) -> Self {
        let input = e.is_input_error();
        Self::classified(&e, input)
    }
}

impl From<kios_build::plan::PlanError> for CliError {
    fn from(e: kios_build::plan::PlanError) -> Self {
        let input = e.is_input_error();
        Self::classified(&e, input)
    }
}

/// The longest line of an error printed; past it, the line is cut with a note.
const ERROR_LINE_CHARS: usize = 1500;

/// The error and its causes, one `caused by:` line each. Every line is made safe for
/// a terminal and cut short (`untrusted::shown_max`): values are escaped where a
/// message quotes them, this is the last defence for any text that was not.
fn render(e: &dyn Error) -> String {
    kios_build::error_chain(e, "\n  caused by: ")
        .split('\n')
        .map(|line| kios_build::untrusted::shown_max(line, ERROR_LINE_CHARS))
        .collect::<Vec<_>>()
        .join("\n")
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

fn run() -> Result<ExitCode, CliError> {
    // First, before any thread starts: the signals are blocked in every thread and
    // handled by one, which removes the run's temporary files (src/interrupt.rs).
    kios_build::interrupt::install().map_err(|e| CliError::failed(&e))?;
    let cli = Cli::parse();
    match cli.command {
        Command::Build(args) => commands::build::run(args),
        Command::Validate(args) => commands::validate::run(args),
        Command::Pull(args) => commands::pull::run(args),
        Command::Cache { command } => commands::cache::run(command),
        Command::Kernel { command } => commands::kernel::run(command),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::System { command } => commands::system::run(command),
        Command::Run(args) => commands::run::run(args),
        Command::Verify(args) => commands::verify::run(args),
    }
}
