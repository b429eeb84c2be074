//! The `kios-build` command: parses arguments, calls the library, maps errors to
//! exit codes (0 ok, 1 build failed, 2 bad usage or bad profile).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use kios_build::{build, inspect};

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
    Build {
        /// The node profile (YAML).
        profile: PathBuf,
        /// Where to write the image. Written to a temporary file beside it and
        /// renamed when complete.
        #[arg(short, long, value_name = "IMAGE")]
        output: PathBuf,
        /// The output format (overrides the profile's disk.format): raw, raw.zst,
        /// raw.xz, qcow2, vhd, gce, vmdk.
        #[arg(long, value_name = "FORMAT")]
        format: Option<kios_build::format::Format>,
        /// The kios-init binary to install as /init, built for the profile's arch
        /// (default: $KIOS_INIT, $KIOS_INIT_ARM64 for arm64, or the one beside
        /// kios-build).
        #[arg(long, value_name = "PATH")]
        init: Option<PathBuf>,
        /// Print only errors.
        #[arg(short, long)]
        quiet: bool,
        /// Print a JSON build report on stdout when done.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pull: PullArgs,
    },
    /// Check a profile and everything it refers to; print one line on success.
    Validate {
        /// The node profile (YAML).
        profile: PathBuf,
        /// The kios-init binary to check (as for build).
        #[arg(long, value_name = "PATH")]
        init: Option<PathBuf>,
        #[command(flatten)]
        pull: PullArgs,
    },
    /// Pull every registry image a profile names into the cache, and write kios.lock.
    Pull {
        /// The node profile (YAML).
        profile: PathBuf,
        /// Print only errors.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        pull: PullArgs,
    },
    /// Manage the blob cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Check a kernel's configuration against what kiOS needs
    /// (kernel-config/required.txt). Exit 0: nothing missing; 1: options missing.
    Kernel {
        #[command(subcommand)]
        command: KernelCommand,
    },
    /// Read a built image back: partitions, boot files, command line, kernel
    /// version, and the initramfs' /etc.
    Inspect {
        /// The image (raw).
        image: PathBuf,
        /// Print the stable JSON form (docs/inspect.md).
        #[arg(long)]
        json: bool,
    },
}

/// Registry, cache and lock flags of build, validate and pull.
#[derive(Args)]
struct PullArgs {
    /// Fail if kios.lock lacks an image or the registry now resolves one differently.
    #[arg(long)]
    locked: bool,
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
    fn options(self) -> kios_build::plan::PullOptions {
        let mut registry = kios_build::oci::registry::RegistryOptions {
            offline: self.offline,
            insecure: self.insecure,
            ca_files: self.ca,
            ..Default::default()
        };
        if let Some(d) = self.cache_dir {
            registry.cache_dir = d;
        }
        kios_build::plan::PullOptions {
            registry,
            locked: self.locked,
        }
    }
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Remove cached blobs not used for a while, and interrupted downloads.
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

#[derive(Subcommand)]
enum KernelCommand {
    /// Report the required options a kernel lacks.
    Check {
        /// A kernel .config (plain or gzip'd), or a kernel image with an embedded
        /// configuration (CONFIG_IKCONFIG): bzImage, arm64 Image, vmlinux.
        #[arg(value_name = "CONFIG_FILE|KERNEL_IMAGE")]
        path: PathBuf,
        /// The architecture to check for.
        #[arg(long, default_value = "amd64", value_parser = ["amd64", "arm64"])]
        arch: String,
    },
}

fn epoch() -> Result<u64, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds")),
    }
}

fn render(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let line = c.to_string();
        if !s.contains(&line) {
            s.push_str(&format!("\n  caused by: {line}"));
        }
        cur = c.source();
    }
    s
}

fn pull_command(profile: &std::path::Path, quiet: bool, pull: PullArgs) -> ExitCode {
    let loaded = match kios_build::profile::load(profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", render(&e));
            return ExitCode::from(2);
        }
    };
    let opts = pull.options();
    let progress = kios_build::oci::progress::Progress::new(!quiet);
    match kios_build::plan::resolve(&loaded, &opts, &progress) {
        Ok(plan) => {
            if !quiet {
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", render(&e));
            ExitCode::from(if e.is_input_error() { 2 } else { 1 })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let epoch = match epoch() {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Build {
            profile,
            output,
            format,
            init,
            quiet,
            json,
            pull,
        } => {
            let opts = build::Options {
                init,
                epoch,
                verbose: !quiet,
                format,
                pull: pull.options(),
            };
            match build::build(&profile, &output, &opts) {
                Ok(report) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&report).unwrap_or_default()
                        );
                    } else if !quiet {
                        eprintln!(
                            "built {} ({} MiB, kernel {}) in {:.1}s",
                            report.output.display(),
                            report.size >> 20,
                            report.kernel_version,
                            report.seconds
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}", render(&e));
                    ExitCode::from(if e.is_input_error() { 2 } else { 1 })
                }
            }
        }
        Command::Validate {
            profile,
            init,
            pull,
        } => {
            let opts = build::Options {
                init,
                epoch,
                verbose: false,
                format: None,
                pull: pull.options(),
            };
            match build::prepare(&profile, &opts) {
                Ok(p) => {
                    println!(
                        "OK: {} (kernel {}, {} modules, base chain {})",
                        profile.display(),
                        p.kernel.version,
                        p.modules.load_order.len(),
                        p.profile.chain.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}", render(&e));
                    ExitCode::from(if e.is_input_error() { 2 } else { 1 })
                }
            }
        }
        Command::Pull {
            profile,
            quiet,
            pull,
        } => pull_command(&profile, quiet, pull),
        Command::Cache {
            command:
                CacheCommand::Prune {
                    all,
                    older_than,
                    cache_dir,
                },
        } => {
            let dir = cache_dir.unwrap_or_else(kios_build::oci::cache::Cache::default_dir);
            let age = if all {
                std::time::Duration::ZERO
            } else {
                std::time::Duration::from_secs(older_than.saturating_mul(86_400))
            };
            match kios_build::oci::cache::Cache::open(&dir).and_then(|c| c.prune(age)) {
                Ok(p) => {
                    println!(
                        "pruned {} files ({} MiB) from {}",
                        p.files,
                        p.bytes >> 20,
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}", render(&e));
                    ExitCode::from(1)
                }
            }
        }
        Command::Kernel {
            command: KernelCommand::Check { path, arch },
        } => {
            let arch = if arch == "arm64" {
                kios_build::profile::Arch::Arm64
            } else {
                kios_build::profile::Arch::Amd64
            };
            match kios_build::kernel::load_config(&path) {
                Ok(config) => {
                    let report = kios_build::kernel::check(&config, arch);
                    println!("{}", report.to_string().trim_end());
                    if report.is_ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("error: {}", render(&e));
                    ExitCode::from(2)
                }
            }
        }
        Command::Inspect { image, json } => match inspect::inspect(&image) {
            Ok(i) => {
                if json {
                    println!("{}", inspect::render_json(&i));
                } else {
                    print!("{}", inspect::render_text(&i));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", render(&e));
                ExitCode::from(1)
            }
        },
    }
}
