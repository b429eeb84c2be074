//! `kios-build validate PROFILE`: every check that needs no build output
//! (`kios_build::build::prepare`), one line when all pass.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{epoch, PullArgs};
use crate::CliError;

#[derive(Args)]
pub struct ValidateArgs {
    /// The node profile (YAML).
    profile: PathBuf,
    /// The kios-init binary to check (as for build).
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// A system tree that fails its check is an error, as `build --strict`.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    pull: PullArgs,
}

pub fn run(args: ValidateArgs) -> Result<ExitCode, CliError> {
    let opts = kios_build::build::Options {
        init: args.init,
        epoch: epoch()?,
        progress: kios_build::progress::Progress::quiet(),
        format: None,
        pull: args.pull.options(),
        strict: args.strict,
        signing: Default::default(),
    };
    let p = kios_build::build::prepare(&args.profile, &opts)?;
    println!(
        "OK: {} (kernel {}, {} modules, base chain {})",
        args.profile.display(),
        p.kernel.version,
        p.modules.load_order.len(),
        p.profile.chain.len()
    );
    Ok(ExitCode::SUCCESS)
}
