//! `kios-build pull PROFILE`: every registry image into the cache, pinned in
//! `kios.lock` (`kios_build::plan::resolve`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::PullArgs;
use crate::CliError;

#[derive(Args)]
pub struct PullCommandArgs {
    /// The node profile (YAML).
    profile: PathBuf,
    /// Print only errors.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    pull: PullArgs,
}

pub fn run(args: PullCommandArgs) -> Result<ExitCode, CliError> {
    let loaded = kios_build::profile::load(&args.profile).map_err(|e| CliError::input(&e))?;
    let opts = args.pull.options();
    let progress = kios_build::progress::Progress::new(!args.quiet);
    let plan = kios_build::plan::resolve(&loaded, &opts, &progress)?;
    if !args.quiet {
        match &plan.lock_path {
            Some(lock) => eprintln!(
                "pulled {} images into {} (pinned in {})",
                plan.images.len(),
                opts.registry.cache_dir.display(),
                lock.display()
            ),
            None => eprintln!("the profile names no registry image"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
