//! One file per subcommand: its arguments (clap) and a `run` that turns them into one
//! library call and prints what it returns. Nothing here decides anything a library
//! caller would also need.

pub mod build;
pub mod cache;
pub mod inspect;
pub mod kernel;
pub mod pull;
pub mod run;
pub mod system;
pub mod validate;
pub mod verify;

use std::path::PathBuf;

use clap::Args;

use crate::CliError;

/// `SOURCE_DATE_EPOCH`: every timestamp written (0 when unset, so that a build is
/// reproducible unless asked otherwise).
pub fn epoch() -> Result<u64, CliError> {
    #[derive(Debug, thiserror::Error)]
    #[error("SOURCE_DATE_EPOCH=`{0}` is not a number of seconds")]
    struct BadEpoch(String);
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| CliError::input(&BadEpoch(kios_build::untrusted::shown(&v)))),
    }
}

/// Registry, cache and lock flags of build, validate and pull.
#[derive(Args)]
pub struct PullArgs {
    /// Fail if kios.lock lacks an image or the registry now resolves one differently.
    #[arg(long)]
    locked: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Registry and cache flags: those of [`PullArgs`], and of `system check`.
#[derive(Args)]
pub struct RegistryArgs {
    /// Use only the blob cache (and kios.lock); never the network.
    #[arg(long)]
    offline: bool,
    /// The blob cache (default: $KIOS_CACHE_DIR, else $XDG_CACHE_HOME/kios-build).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// A registry (host:port) that may be reached over plain HTTP. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure: Vec<String>,
    /// A PEM file of CA certificates to trust besides the system roots. Repeatable.
    #[arg(long = "registry-ca", value_name = "FILE")]
    ca: Vec<PathBuf>,
}

impl PullArgs {
    pub fn options(self) -> kios_build::plan::PullOptions {
        kios_build::plan::PullOptions {
            registry: self.registry.options(),
            locked: self.locked,
        }
    }
}

impl RegistryArgs {
    pub fn options(self) -> kios_build::oci::registry::RegistryOptions {
        let mut registry = kios_build::oci::registry::RegistryOptions {
            offline: self.offline,
            insecure: self.insecure,
            ca_files: self.ca,
            ..Default::default()
        };
        if let Some(d) = self.cache_dir {
            registry.cache_dir = d;
        }
        registry
    }
}
