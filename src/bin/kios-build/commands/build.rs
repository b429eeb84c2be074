//! `kios-build build PROFILE -o IMAGE`: the whole pipeline (`kios_build::build`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{epoch, PullArgs};
use crate::CliError;

#[derive(Args)]
pub struct BuildArgs {
    /// The node profile (YAML).
    profile: PathBuf,
    /// Where to write the image. Written to a temporary file beside it and
    /// renamed when complete. An existing IMAGE must be a regular file (never a
    /// device, FIFO, folder or symlink) and not an input of the build.
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
    /// Print the build report (as --report writes it) on stdout when done.
    #[arg(long)]
    json: bool,
    /// Write the build report (JSON, docs/report.md): every input's digest, the
    /// static pods' privileges, each artifact's and partition's sha256, timings.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Write an SPDX 2.3 JSON SBOM of the image (kernel, stub, kios-init, system
    /// tree, pre-seeded images and their layers).
    #[arg(long, value_name = "FILE.spdx.json")]
    sbom: Option<PathBuf>,
    /// Refuse the build (exit 2, nothing written) when the system tree fails its
    /// check (`kios-build system check`), instead of warning.
    #[arg(long)]
    strict: bool,
    /// Sign the UKI for Secure Boot with this private key (PEM or DER: PKCS#8,
    /// PKCS#1 RSA or SEC1 EC; RSA 2048-4096 or ECDSA P-256, unencrypted). Read
    /// only, never copied or printed. Needs a certificate: --signing-cert or the
    /// profile's secureBoot.certificate (docs/secure-boot.md).
    #[arg(long, value_name = "KEY", conflicts_with = "signer")]
    signing_key: Option<PathBuf>,
    /// The signing certificate (PEM or DER X.509); overrides the profile's
    /// secureBoot.certificate.
    #[arg(long, value_name = "CERT")]
    signing_cert: Option<PathBuf>,
    /// Sign the UKI with an external signer (PKCS#11, a KMS, an HSM): COMMAND runs
    /// under `sh -c`, gets the bytes to sign on stdin (KIOS_SIGN_SHA256 holds their
    /// SHA-256 in hex) and writes the raw signature to stdout, e.g.
    /// 'openssl pkeyutl -sign -rawin -digest sha256 -inkey db.key'
    /// (docs/secure-boot.md).
    #[arg(long, value_name = "COMMAND")]
    signer: Option<String>,
    /// Write the store partition, initramfs and UKI even when an earlier build kept
    /// ones made from the same inputs in the cache (`artifacts/` in the cache folder).
    #[arg(long)]
    no_reuse: bool,
    #[command(flatten)]
    pull: PullArgs,
}

pub fn run(args: BuildArgs) -> Result<ExitCode, CliError> {
    let opts = kios_build::build::Options {
        init: args.init,
        epoch: epoch()?,
        progress: kios_build::progress::Progress::new(!args.quiet),
        format: args.format,
        pull: args.pull.options(),
        strict: args.strict,
        report: args.report,
        sbom: args.sbom,
        record: args.json,
        signing: kios_build::sign::Request {
            key: match (args.signing_key, args.signer) {
                (Some(path), _) => Some(kios_build::sign::KeySource::File(path)),
                (None, Some(command)) => Some(kios_build::sign::KeySource::Command(command)),
                (None, None) => None,
            },
            certificate: args.signing_cert,
        },
        reuse: !args.no_reuse,
    };
    let built = kios_build::build::build(&args.profile, &args.output, &opts)?;
    match &built.report {
        Some(report) if args.json => print!("{}", report.to_json()),
        _ if !args.quiet => eprintln!(
            "built {} ({} MiB, kernel {}) in {:.1}s",
            built.output.display(),
            built.disk_size >> 20,
            built.kernel_version,
            built.seconds
        ),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}
