//! `kios-build inspect IMAGE`: what a built image holds, read from the image itself
//! (`kios_build::inspect`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use kios_build::inspect;

use crate::CliError;

#[derive(Args)]
pub struct InspectArgs {
    /// The image (raw).
    image: PathBuf,
    /// Print the stable JSON form (docs/inspect.md).
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> Result<ExitCode, CliError> {
    let image = inspect::inspect(&args.image).map_err(|e| CliError::failed(&e))?;
    if args.json {
        println!("{}", inspect::render_json(&image));
    } else {
        print!("{}", inspect::render_text(&image));
    }
    Ok(ExitCode::SUCCESS)
}
