//! `kios-build verify REPORT.json` or `verify PROFILE --image IMG`: rebuilds from
//! the lock and the cache alone and compares (`kios_build::verify`); exit 0 when the
//! image is what its sources give, 1 when it differs (naming where), 2 for bad input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use kios_build::verify::Verdict;

use super::{epoch, RegistryArgs};
use crate::CliError;

#[derive(Args)]
pub struct VerifyArgs {
    /// A build report (`build --report FILE.json`), or the node profile (then give
    /// --image).
    #[arg(value_name = "REPORT.json|PROFILE")]
    source: PathBuf,
    /// The image to check (default: the report's output).
    #[arg(long, value_name = "IMAGE")]
    image: Option<PathBuf>,
    /// The kios-init binary (default: the report's, else as for build).
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// Print only the verdict.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}: a profile needs --image IMAGE (or give the build's report instead)")]
struct NoImage(String);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Differs(String);

pub fn run(args: VerifyArgs) -> Result<ExitCode, CliError> {
    let is_report = args
        .source
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let (profile, image, epoch, init, recorded) = if is_report {
        let r = kios_build::verify::from_report(&args.source)
            .map_err(|e| CliError::classified(&e, e.is_input_error()))?;
        let image = args.image.clone().unwrap_or(r.image);
        (
            r.profile,
            image,
            r.epoch,
            args.init.or(Some(r.init)),
            Some(r.image_sha256),
        )
    } else {
        let image = args.image.clone().ok_or_else(|| {
            CliError::input(&NoImage(kios_build::untrusted::shown(
                &args.source.display().to_string(),
            )))
        })?;
        (args.source.clone(), image, epoch()?, args.init, None)
    };
    let progress = kios_build::progress::Progress::new(!args.quiet);
    let opts = kios_build::build::Options {
        init,
        epoch,
        progress: progress.clone(),
        pull: kios_build::plan::PullOptions {
            registry: args.registry.options(),
            locked: true,
        },
        ..Default::default()
    };
    let verdict = kios_build::verify::verify(&profile, &image, &opts)
        .map_err(|e| CliError::classified(&e, e.is_input_error()))?;
    match verdict {
        Verdict::Identical(sha) => {
            if recorded.as_deref().is_some_and(|r| r != sha) {
                progress.say("note: the image differs from the digest the report records; it is what the sources give now");
            }
            println!(
                "identical: {} is what {} builds (sha256 {sha})",
                image.display(),
                profile.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Differs(d) => Err(CliError::failed(&Differs(format!(
            "differs: {} is not what {} builds: {d}",
            image.display(),
            profile.display()
        )))),
    }
}
