//! `kios-build system check TREE|oci:DIR[:TAG]`: what a system tree lacks for kiOS
//! (`kios_build::system::check`); exit 1 when something is wrong, as `kernel check`.

use std::process::ExitCode;

use clap::Subcommand;

use kios_build::profile::Arch;

use crate::CliError;

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Report what the system tree lacks: the programs kios-init starts, ELF files of
    /// another architecture, interpreters and libraries missing from the tree;
    /// setuid and world-writable files as warnings.
    Check {
        /// A folder, or an OCI image layout as oci:DIR[:TAG].
        #[arg(value_name = "TREE|oci:DIR:TAG")]
        tree: String,
        /// The architecture of the image the tree is for: amd64 or arm64.
        #[arg(long, default_value = "amd64")]
        arch: Arch,
    },
}

pub fn run(command: SystemCommand) -> Result<ExitCode, CliError> {
    let SystemCommand::Check { tree, arch } = command;
    let loaded = kios_build::system::load(&tree, arch).map_err(|e| CliError::input(&e))?;
    let report = kios_build::system::check(&loaded.tree, arch);
    println!("{report}");
    Ok(if report.errors() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
