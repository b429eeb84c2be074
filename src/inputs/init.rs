//! kios-init, found and checked like the other inputs: it runs as PID 1 before any
//! library exists, so it must be a static ELF for the profile's architecture. Only its
//! ELF header and program headers are read, from a regular file.

use std::io;
use std::path::{Path, PathBuf};

use super::InputError;
use crate::profile::Arch;

/// The kios-init to install: `given` (`--init`), else the one [`find_init`] finds;
/// checked either way.
pub fn kios_init(given: Option<&Path>, arch: Arch) -> Result<PathBuf, InputError> {
    let init = match given {
        Some(p) => p.to_path_buf(),
        None => find_init(arch)?,
    };
    check_kios_init(&init, arch)?;
    Ok(init)
}

/// What kios-init is looked for and checked as, per architecture.
struct InitTarget {
    /// The environment variable that names it, used as given.
    env: &'static str,
    /// The Rust target triple `scripts/build-init` builds it for.
    triple: &'static str,
    /// ELF `e_machine` (System V gABI; EM_X86_64 = 62, EM_AARCH64 = 183).
    e_machine: u16,
    /// What an error calls the architecture.
    name: &'static str,
}

fn init_target(arch: Arch) -> InitTarget {
    match arch {
        Arch::Amd64 => InitTarget {
            env: "KIOS_INIT",
            triple: "x86_64-unknown-linux-gnu",
            e_machine: crate::elf::EM_X86_64,
            name: "x86_64",
        },
        Arch::Arm64 => InitTarget {
            env: "KIOS_INIT_ARM64",
            triple: "aarch64-unknown-linux-gnu",
            e_machine: crate::elf::EM_AARCH64,
            name: "aarch64",
        },
    }
}

/// Where kios-init for `arch` is looked for: `$KIOS_INIT` (amd64) or
/// `$KIOS_INIT_ARM64` (arm64), taken as given; else the first static binary for
/// `arch` among `$KIOS_INIT` (arm64 only: one variable may name an aarch64 build),
/// `kios-init` beside this executable, and the static build's place in a cargo
/// target folder (`<target>/<triple>/{release,debug}/kios-init`).
pub fn find_init(arch: Arch) -> Result<PathBuf, InputError> {
    let t = init_target(arch);
    if let Some(p) = std::env::var_os(t.env) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("KIOS_INIT") {
        candidates.push(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|source| InputError::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    candidates.push(dir.join("kios-init"));
    if let Some(target) = dir.parent() {
        for profile in ["release", "debug"] {
            candidates.push(target.join(t.triple).join(profile).join("kios-init"));
        }
    }
    // A `cargo build` of the workspace leaves a dynamically linked kios-init beside
    // kios-build: skip it for the static one further down the list.
    candidates
        .into_iter()
        .find(|p| p.is_file() && check_kios_init(p, arch).is_ok())
        .ok_or_else(|| {
            InputError::Init(format!(
                "no static {} kios-init was found beside kios-build or in target/{}/release\n  hint: build it with `scripts/build-init {}`, or point --init or {} at it",
                t.name,
                t.triple,
                arch.as_str(),
                t.env
            ))
        })
}

/// The largest kios-init accepted; the static release build is a few MiB.
const MAX_INIT: u64 = 64 << 20;

/// kios-init runs before any library exists: it must be a static ELF for `arch`.
/// Only its ELF headers are read (`crate::elf`, each table bounded), from a regular file
/// (`--init /dev/zero` or a FIFO is refused, not read until memory runs out).
pub fn check_kios_init(path: &Path, arch: Arch) -> Result<(), InputError> {
    let t = init_target(arch);
    let cannot_read = |e: io::Error| {
        InputError::Init(format!(
            "cannot read kios-init at {}: {e}\n  hint: give the kios-init binary (a regular file) with --init or {}",
            path.display(),
            t.env
        ))
    };
    let file = crate::untrusted::open_regular(path).map_err(cannot_read)?;
    let size = file.metadata().map_err(cannot_read)?.len();
    let bad = |why: &str| {
        InputError::Init(format!(
            "kios-init at {}: {why}\n  hint: build it with `scripts/build-init {}`",
            path.display(),
            arch.as_str()
        ))
    };
    if size > MAX_INIT {
        return Err(bad(&format!(
            "it is {size} bytes, larger than the {} MiB a kios-init can be",
            MAX_INIT >> 20
        )));
    }
    let elf = crate::elf::read_elf(&file).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => bad(&format!("not a usable ELF executable: {e}")),
        _ => cannot_read(e),
    })?;
    if elf.class != 64 {
        return Err(bad("not a 64-bit ELF executable"));
    }
    if elf.machine != t.e_machine {
        return Err(bad(&format!(
            "it is built for {}; arch {} needs a static {} binary",
            crate::elf::machine_name(elf.machine),
            arch.as_str(),
            t.name
        )));
    }
    // PT_INTERP: the binary needs a dynamic loader, which the initramfs lacks.
    if elf.interpreter.is_some() {
        return Err(bad("dynamically linked (it has an ELF interpreter)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A 64-bit little-endian ELF header for `e_machine`, with one program header of
    /// type `p_type` right after it.
    fn elf(e_machine: u16, p_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little-endian
        b[18..20].copy_from_slice(&e_machine.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        b[64..68].copy_from_slice(&p_type.to_le_bytes());
        b
    }

    fn check(bytes: &[u8], arch: Arch) -> Result<(), String> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kios-init");
        fs::write(&p, bytes).unwrap();
        check_kios_init(&p, arch).map_err(|e| e.to_string())
    }

    #[test]
    fn kios_init_must_be_static_and_built_for_the_profiles_arch() {
        const PT_LOAD: u32 = 1;
        const PT_INTERP: u32 = 3;
        check(&elf(62, PT_LOAD), Arch::Amd64).unwrap();
        check(&elf(183, PT_LOAD), Arch::Arm64).unwrap();
        let e = check(&elf(62, PT_LOAD), Arch::Arm64).unwrap_err();
        assert!(
            e.contains("it is built for x86_64; arch arm64 needs a static aarch64 binary"),
            "{e}"
        );
        assert!(e.contains("scripts/build-init arm64"), "{e}");
        let e = check(&elf(183, PT_LOAD), Arch::Amd64).unwrap_err();
        assert!(e.contains("built for aarch64; arch amd64"), "{e}");
        let e = check(&elf(183, PT_INTERP), Arch::Arm64).unwrap_err();
        assert!(e.contains("dynamically linked"), "{e}");
    }
}
