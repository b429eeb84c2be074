//! `kios-build kernel check CONFIG|IMAGE`: what a kernel lacks for kiOS
//! (`kios_build::kernel::check`); exit 1 when something is missing.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use kios_build::profile::Arch;

use crate::CliError;

#[derive(Subcommand)]
pub enum KernelCommand {
    /// Report the required options a kernel lacks.
    Check {
        /// A kernel .config (plain or gzip'd), or a kernel image with an embedded
        /// configuration (CONFIG_IKCONFIG): bzImage, arm64 Image, vmlinux.
        #[arg(value_name = "CONFIG_FILE|KERNEL_IMAGE")]
        path: PathBuf,
        /// The architecture to check for: amd64 or arm64.
        #[arg(long, default_value = "amd64")]
        arch: Arch,
    },
}

pub fn run(command: KernelCommand) -> Result<ExitCode, CliError> {
    let KernelCommand::Check { path, arch } = command;
    let config = kios_build::kernel::load_config(&path).map_err(|e| CliError::input(&e))?;
    let report = kios_build::kernel::check(&config, arch);
    println!("{}", report.to_string().trim_end());
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
