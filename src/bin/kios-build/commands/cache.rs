//! `kios-build cache prune`: drop cached blobs and kept build artifacts nothing used
//! for a while (`kios_build::oci::cache::Cache::prune`, `kios_build::reuse::prune`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use kios_build::oci::cache::Cache;

use crate::CliError;

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Remove cached blobs and kept build artifacts (store, initramfs, UKI) not used
    /// for a while, and interrupted downloads.
    Prune {
        /// Remove everything, whatever its age.
        #[arg(long)]
        all: bool,
        /// Remove blobs not used for this many days.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        older_than: u64,
        /// The blob cache (default: $KIOS_CACHE_DIR, else $XDG_CACHE_HOME/kios-build).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

pub fn run(command: CacheCommand) -> Result<ExitCode, CliError> {
    let CacheCommand::Prune {
        all,
        older_than,
        cache_dir,
    } = command;
    let dir = cache_dir.unwrap_or_else(Cache::default_dir);
    let age = if all {
        Duration::ZERO
    } else {
        Duration::from_secs(older_than.saturating_mul(86_400))
    };
    let pruned = Cache::open(&dir)
        .and_then(|c| c.prune(age))
        .map_err(|e| CliError::failed(&e))?;
    let (files, bytes) = kios_build::reuse::prune(&dir, age).map_err(|e| CliError::failed(&e))?;
    println!(
        "pruned {} files ({} MiB) and {files} build artifacts ({} MiB) from {}",
        pruned.files,
        pruned.bytes >> 20,
        bytes >> 20,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
