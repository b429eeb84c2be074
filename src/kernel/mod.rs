//! The kiOS kernel configuration: what a kernel must have to run kiOS, and the check
//! of a given kernel against it (`kios-build kernel check`).
//!
//! Input: a kernel's configuration, read by [`load_config`] from a `.config` file or
//! from the kernel image itself (its `CONFIG_IKCONFIG` blob; `ikconfig.rs` finds and
//! decompresses it). Output: a [`CheckReport`] against `kernel-config/required.txt`,
//! which is compiled in, as are the configuration fragments kiOS kernels are built
//! from ([`fragments`]). See docs/kernel.md.
//!
//! This module does not build kernels, does not resolve Kconfig dependencies (a
//! merged fragment set is what `merge_config.sh` would hand to `make olddefconfig`),
//! and does not look at modules: whether a `=m` option's module is actually in the
//! initramfs is the profile's `kernel.modules` list's business.

mod config;
mod ikconfig;
mod required;

use std::io;
use std::path::{Path, PathBuf};

pub use config::{KernelConfig, Value};
pub use ikconfig::{Compression, MAX_DECOMPRESSED};
pub use required::{
    check, check_against, parse_requirements, required, CheckReport, Finding, Requirement,
    REQUIRED_TXT,
};

use crate::profile::Arch;

/// What can go wrong reading a kernel configuration.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("in configuration fragment {index}")]
    Fragment {
        index: usize,
        #[source]
        source: Box<KernelError>,
    },
    #[error("in {path}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<KernelError>,
    },
    #[error("kernel-config/required.txt line {line}: {message}")]
    Requirement { line: usize, message: String },
    #[error("kernel image {path} has no embedded configuration (CONFIG_IKCONFIG); give its .config file instead")]
    NoEmbeddedConfig { path: PathBuf },
    #[error("{path} is neither a kernel .config nor a kernel image kios-build can read (bzImage, arm64 Image or EFI zboot image, vmlinux, optionally gzip/xz/zstd-compressed)")]
    NotAKernel { path: PathBuf },
    #[error("{path}: cannot decompress the {compression} data at byte {offset}")]
    Decompress {
        path: PathBuf,
        compression: Compression,
        offset: usize,
        #[source]
        source: io::Error,
    },
    #[error("{path}: the kernel is compressed with {compression}, which kios-build cannot decompress (it reads gzip, xz, lzma and zstd); give the kernel's .config file instead")]
    UnsupportedCompression {
        path: PathBuf,
        compression: Compression,
    },
    #[error("{path}: {what} is larger than {limit} bytes; refusing to read it")]
    TooLarge {
        path: PathBuf,
        what: String,
        limit: u64,
    },
    #[error("{path}: {message}")]
    BadImage { path: PathBuf, message: String },
}

/// The largest file [`load_config`] reads: kernel images are 10-60 MiB, a `vmlinux`
/// with debug information can be a few hundred.
pub const MAX_KERNEL_INPUT: u64 = 256 << 20;

/// Reads the configuration of a kernel from `path`: a `.config` text (also gzip'd, like
/// `/proc/config.gz`), or a kernel image whose configuration is built in
/// (`CONFIG_IKCONFIG`): an x86 bzImage, an arm64 `Image` or `Image.gz`, an EFI zboot
/// image, or a `vmlinux`.
pub fn load_config(path: &Path) -> Result<KernelConfig, KernelError> {
    let io_error = |source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A regular file only (a FIFO would hang, `/dev/zero` fill memory), of a size a
    // kernel image or a .config can have.
    let file = crate::untrusted::open_regular(path).map_err(io_error)?;
    let size = file.metadata().map_err(io_error)?.len();
    if size > MAX_KERNEL_INPUT {
        return Err(KernelError::TooLarge {
            path: path.to_path_buf(),
            what: "the file".into(),
            limit: MAX_KERNEL_INPUT,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    io::Read::read_to_end(
        &mut crate::untrusted::Limited::new(file, MAX_KERNEL_INPUT),
        &mut bytes,
    )
    .map_err(io_error)?;
    let text = ikconfig::config_text(&bytes, path)?;
    let text = String::from_utf8_lossy(&text);
    KernelConfig::parse(&text).map_err(|e| KernelError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// The build's warnings about a kernel: the options kiOS needs that its
/// configuration lacks, read from `config` (its `boot/config`) when there is one,
/// else from the image's embedded configuration; or one line saying it could not be
/// checked. The build goes on either way.
pub fn warnings(config: Option<&Path>, image: &Path, version: &str, arch: Arch) -> Vec<String> {
    match load_config(config.unwrap_or(image)) {
        Ok(config) => {
            let report = check(&config, arch);
            if report.is_ok() {
                Vec::new()
            } else {
                let mut v = vec![format!(
                    "kernel {version} lacks options kiOS needs (kernel-config/required.txt):"
                )];
                v.extend(report.to_string().lines().map(|l| format!("  {l}")));
                v
            }
        }
        Err(e) => vec![format!(
            "kernel {version}: its configuration was not checked: {e}"
        )],
    }
}

/// The kiOS configuration fragments for `arch`, in merge order, as `(file name,
/// text)`: `base.config`, `containers.config`, then the architecture's.
pub fn fragments(arch: Arch) -> [(&'static str, &'static str); 3] {
    const BASE: (&str, &str) = (
        "base.config",
        include_str!("../../kernel-config/base.config"),
    );
    const CONTAINERS: (&str, &str) = (
        "containers.config",
        include_str!("../../kernel-config/containers.config"),
    );
    let arch_fragment = match arch {
        Arch::Amd64 => (
            "x86_64.config",
            include_str!("../../kernel-config/x86_64.config"),
        ),
        Arch::Arm64 => (
            "arm64.config",
            include_str!("../../kernel-config/arm64.config"),
        ),
    };
    [BASE, CONTAINERS, arch_fragment]
}

/// The kiOS fragments for `arch`, merged.
pub fn kios_config(arch: Arch) -> Result<KernelConfig, KernelError> {
    KernelConfig::from_fragments(fragments(arch).iter().map(|(_, text)| *text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_kios_fragments_satisfy_the_requirements_of_each_arch() {
        for arch in [Arch::Amd64, Arch::Arm64] {
            let config = kios_config(arch).unwrap();
            let report = check(&config, arch);
            assert!(report.is_ok(), "{}:\n{report}", arch.as_str());
        }
    }

    #[test]
    fn load_config_reads_a_config_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("config");
        fs::write(&good, "CONFIG_A=y\n# CONFIG_B is not set\n").unwrap();
        assert_eq!(
            load_config(&good).unwrap().get("CONFIG_A"),
            Some(&Value::Yes)
        );

        let bad = dir.path().join("bad.config");
        fs::write(&bad, "CONFIG_A=y\nCONFIG_B=what\n").unwrap();
        let err = load_config(&bad).unwrap_err();
        assert!(
            matches!(&err, KernelError::InFile { path, source } if path == &bad
            && matches!(**source, KernelError::Syntax { line: 2, .. })),
            "{err:?}"
        );

        let missing = dir.path().join("nope");
        assert!(matches!(load_config(&missing), Err(KernelError::Io { .. })));
    }
}
