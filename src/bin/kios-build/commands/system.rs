//! `kios-build system check TREE|oci:DIR[:TAG]|REFERENCE`: what a system tree lacks for kiOS
//! (`kios_build::system::check`); exit 1 when something is wrong, as `kernel check`.

use std::process::ExitCode;

use clap::Subcommand;

use kios_build::profile::Arch;

use super::RegistryArgs;
use crate::CliError;

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Report what the system tree lacks: the programs kios-init starts, ELF files of
    /// another architecture, interpreters and libraries missing from the tree;
    /// setuid and world-writable files as warnings.
    Check {
        /// A folder, an OCI image layout as oci:DIR[:TAG], or a registry image
        /// REGISTRY/REPOSITORY[:TAG][@DIGEST] (pulled into the blob cache).
        #[arg(value_name = "TREE|oci:DIR:TAG|REFERENCE")]
        tree: String,
        /// The architecture of the image the tree is for: amd64 or arm64.
        #[arg(long, default_value = "amd64")]
        arch: Arch,
        #[command(flatten)]
        registry: RegistryArgs,
        /// Print only the report (no pull progress).
        #[arg(long, short)]
        quiet: bool,
    },
}

pub fn run(command: SystemCommand) -> Result<ExitCode, CliError> {
    let SystemCommand::Check {
        tree,
        arch,
        registry,
        quiet,
    } = command;
    let progress = kios_build::progress::Progress::new(!quiet);
    let loaded = kios_build::system::load(&tree, arch, &registry.options(), &progress)
        .map_err(|e| CliError::classified(&e, e.is_input_error()))?;
    let report = kios_build::system::check(&loaded.tree, arch);
    println!("{report}");
    Ok(if report.errors() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
