//! `kios-build run IMAGE`: boots an image kios-build wrote in QEMU, the way
//! `linuxkit run` and `mkosi vm` do, for a person at a terminal and for CI.
//!
//! Input: an image in any output format ([`image`] unpacks the ones QEMU should not
//! boot as they are), options. Output: the serial console on stdout, made safe for a
//! terminal; an [`Outcome`] (a line matching `--until`, QEMU's exit, a timeout, a
//! kernel panic); the boot [`timeline::Timeline`].
//!
//! The machine: `qemu-system-x86_64 -machine q35` with OVMF, or
//! `qemu-system-aarch64 -machine virt` with AAVMF, chosen by the architecture of
//! the UKI on the image's ESP; a private copy of the firmware variables; KVM when the
//! host can give it to this architecture, TCG otherwise; the disk as virtio, from a
//! snapshot unless `--writable`; user-mode networking (a DHCP pod gets a lease from
//! QEMU's built-in server). `docs/run.md` has the details.

pub mod image;
pub mod timeline;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::profile::Arch;

/// What the kernel prints when it gives up: the boot failed, whatever `--until` says.
const PANIC: &str = "Kernel panic - not syncing";

/// User-mode networking, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// QEMU's user-mode network: DHCP, DNS and outbound connections through the host.
    User,
    /// The same, with `restrict=on`: DHCP answers, nothing leaves the host.
    Restricted,
    None,
}

/// KVM or TCG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM when it works here (see [`kvm_works`]), else TCG.
    Auto,
    Kvm,
    Tcg,
}

pub struct RunOptions {
    pub image: PathBuf,
    pub accel: Accel,
    /// Stop with success at the first console line that matches.
    pub until: Option<regex::Regex>,
    pub timeout: Duration,
    pub network: Network,
    /// Boot the image itself, not a snapshot (raw images only).
    pub writable: bool,
    /// Secure Boot: OVMF's Secure Boot firmware with these variables (keys enrolled).
    pub secure_boot_vars: Option<PathBuf>,
    /// The image's architecture, when it cannot be read from its ESP.
    pub arch: Option<Arch>,
    pub memory_mib: u32,
    /// Passed to QEMU after ours.
    pub qemu_args: Vec<String>,
    /// Copy the console to stdout.
    pub echo: bool,
}

/// How the run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A console line matched `--until`.
    Matched(String),
    /// QEMU exited by itself (the guest powered off, or QEMU failed), with its code.
    Exited(Option<i32>),
    TimedOut,
    /// The kernel panicked: this line.
    Panicked(String),
}

pub struct RunResult {
    pub outcome: Outcome,
    pub timeline: timeline::Timeline,
    /// What was booted, for the messages: `amd64, tcg, raw`.
    pub machine: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{}: cannot read the image", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not an image kios-build writes (no GPT, and not qcow2, VHD, VMDK, raw.zst, raw.xz or a GCE tar.gz)", path.display())]
    NotAnImage { path: PathBuf },
    #[error("{}: cannot unpack the {format} image to boot it", path.display())]
    Unpack {
        path: PathBuf,
        format: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot tell the image's architecture ({why})\n  hint: give it with --arch amd64|arm64", path.display())]
    Arch { path: PathBuf, why: String },
    #[error("--writable boots the image file itself, which only a raw image allows ({0} given)\n  hint: drop --writable (the disk is then a snapshot), or build with --format raw")]
    Writable(&'static str),
    #[error("--secure-boot is for amd64 images (OVMF); this one is {0}")]
    SecureBootArch(&'static str),
    #[error("{program} is not installed\n  hint: apt-get install {package}")]
    MissingProgram {
        program: &'static str,
        package: &'static str,
    },
    #[error("{}: the UEFI firmware is missing\n  hint: apt-get install {package}", path.display())]
    MissingFirmware {
        path: PathBuf,
        package: &'static str,
    },
    #[error("{}: cannot copy the firmware variables", path.display())]
    Vars {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make a work folder")]
    Work(#[source] std::io::Error),
    #[error("cannot start {program}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    /// Errors the user fixes in the command line or the image (exit 2).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            RunError::NotAnImage { .. }
                | RunError::Arch { .. }
                | RunError::Writable(_)
                | RunError::SecureBootArch(_)
        )
    }
}

/// The QEMU machine for one architecture.
struct Machine {
    program: &'static str,
    package: &'static str,
    args: Vec<String>,
    code: &'static str,
    vars: &'static str,
    firmware_package: &'static str,
}

fn machine(arch: Arch, secure_boot: bool, kvm: bool) -> Machine {
    let accel = if kvm { "kvm" } else { "tcg" };
    match arch {
        Arch::Amd64 => Machine {
            program: "qemu-system-x86_64",
            package: "qemu-system-x86",
            args: if secure_boot {
                // SMM, and the variable store writable only from SMM: what OVMF's
                // Secure Boot build requires, so a guest cannot change the keys.
                vec![
                    "-machine".into(),
                    format!("q35,smm=on,accel={accel}"),
                    "-global".into(),
                    "driver=cfi.pflash01,property=secure,value=on".into(),
                ]
            } else {
                vec!["-machine".into(), format!("q35,accel={accel}")]
            }
            .into_iter()
            .chain(
                kvm.then(|| ["-cpu".to_string(), "host".to_string()])
                    .into_iter()
                    .flatten(),
            )
            .collect(),
            code: if secure_boot {
                "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
            } else {
                "/usr/share/OVMF/OVMF_CODE_4M.fd"
            },
            vars: "/usr/share/OVMF/OVMF_VARS_4M.fd",
            firmware_package: "ovmf",
        },
        Arch::Arm64 => Machine {
            program: "qemu-system-aarch64",
            package: "qemu-system-arm",
            args: vec![
                "-machine".into(),
                format!("virt,accel={accel}"),
                "-cpu".into(),
                if kvm { "host" } else { "cortex-a57" }.into(),
            ],
            // AAVMF's files are already padded to the 64 MiB of virt's pflash banks.
            code: "/usr/share/AAVMF/AAVMF_CODE.fd",
            vars: "/usr/share/AAVMF/AAVMF_VARS.fd",
            firmware_package: "qemu-efi-aarch64",
        },
    }
}

/// Whether KVM runs a guest of `arch` here. `/dev/kvm` opening is not enough: on
/// some hosts (nested virtualisation) QEMU then aborts setting up the vCPU, or the
/// guest stops at its first instruction with "KVM internal error". So on x86_64 a
/// probe boots a 64 KiB firmware of our own that writes one byte to the serial
/// port; KVM is used only if the byte arrives (in well under a second when it works).
fn kvm_works(arch: Arch, work: &Path) -> bool {
    let host = match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::Arm64,
        _ => return false,
    };
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if host != arch || !opens {
        return false;
    }
    if arch == Arch::Arm64 {
        return true;
    }
    // The reset vector (16 bytes from the end of the image, mapped just below
    // 4 GiB): mov dx, 0x3f8; mov al, 'K'; out dx, al; hlt.
    let mut bios = vec![0u8; 64 * 1024];
    let reset = bios.len() - 16;
    bios[reset..reset + 7].copy_from_slice(&[0xba, 0xf8, 0x03, 0xb0, b'K', 0xee, 0xf4]);
    let probe = work.join("kvm-probe.bin");
    if std::fs::write(&probe, &bios).is_err() {
        return false;
    }
    let child = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35,accel=kvm", "-cpu", "host", "-nodefaults"])
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-bios",
        ])
        .arg(&probe)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let (tx, rx) = mpsc::channel();
    if let Some(mut out) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            let _ = tx.send(std::io::Read::read(&mut out, &mut b).ok() == Some(1) && b[0] == b'K');
        });
    }
    let works = rx.recv_timeout(Duration::from_secs(3)).unwrap_or(false);
    let _ = child.kill();
    let _ = child.wait();
    works
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// The image's architecture, from the UKI on its ESP.
fn arch_of(disk: &Path, image: &Path) -> Result<Arch, RunError> {
    let arch_err = |why: String| RunError::Arch {
        path: image.to_path_buf(),
        why,
    };
    let inspection = crate::inspect::inspect(disk).map_err(|e| arch_err(e.to_string()))?;
    match inspection.boot.as_ref().map(|b| b.arch.as_str()) {
        Some("amd64") => Ok(Arch::Amd64),
        Some("arm64") => Ok(Arch::Arm64),
        Some(other) => Err(arch_err(format!("its UKI is for machine {other}"))),
        None => Err(arch_err("no UKI on its ESP".into())),
    }
}

/// A path as the value of a QEMU `-drive` option: a comma ends a value there, so
/// it is doubled (`a,b.img` would otherwise open `a` with an option `b.img`).
fn opt_value(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// The whole QEMU command line for `disk`.
fn command(m: &Machine, disk: &Path, vars: &Path, opts: &RunOptions, kvm: bool) -> Vec<String> {
    let mut a = m.args.clone();
    let snapshot = if opts.writable { "" } else { ",snapshot=on" };
    a.extend(
        [
            "-m",
            &opts.memory_mib.to_string(),
            "-smp",
            if kvm { "2" } else { "1" },
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-drive",
            &format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                opt_value(Path::new(&m.code))
            ),
            "-drive",
            &format!("if=pflash,format=raw,unit=1,file={}", opt_value(vars)),
            "-drive",
            &format!("if=virtio,format=raw,file={}{snapshot}", opt_value(disk)),
        ]
        .map(str::to_string),
    );
    match opts.network {
        Network::None => a.extend(["-nic".to_string(), "none".to_string()]),
        Network::User | Network::Restricted => {
            let restrict = if opts.network == Network::Restricted {
                ",restrict=on"
            } else {
                ""
            };
            a.extend([
                "-netdev".to_string(),
                format!("user,id=net0{restrict}"),
                "-device".to_string(),
                "virtio-net-pci,netdev=net0".to_string(),
            ]);
        }
    }
    a.extend(opts.qemu_args.iter().cloned());
    a
}

/// Boots `opts.image` until the outcome; see the module docs.
pub fn run(opts: &RunOptions, progress: &crate::progress::Progress) -> Result<RunResult, RunError> {
    let work = crate::work::WorkFolder::new().map_err(RunError::Work)?;
    let (disk, format) = image::raw_disk(&opts.image, work.path())?;
    if opts.writable && format != "raw" {
        return Err(RunError::Writable(format));
    }
    let arch = match opts.arch {
        Some(a) => a,
        None => arch_of(&disk, &opts.image)?,
    };
    if opts.secure_boot_vars.is_some() && arch != Arch::Amd64 {
        return Err(RunError::SecureBootArch(arch.as_str()));
    }
    let kvm = match opts.accel {
        Accel::Auto => kvm_works(arch, work.path()),
        Accel::Kvm => true,
        Accel::Tcg => false,
    };
    let m = machine(arch, opts.secure_boot_vars.is_some(), kvm);
    if !in_path(m.program) {
        return Err(RunError::MissingProgram {
            program: m.program,
            package: m.package,
        });
    }
    for f in [m.code, m.vars] {
        if !Path::new(f).is_file() {
            return Err(RunError::MissingFirmware {
                path: f.into(),
                package: m.firmware_package,
            });
        }
    }
    let vars_src = opts
        .secure_boot_vars
        .clone()
        .unwrap_or_else(|| m.vars.into());
    let vars = work.path().join("vars.fd");
    std::fs::copy(&vars_src, &vars).map_err(|source| RunError::Vars {
        path: vars_src.clone(),
        source,
    })?;
    let accel = if kvm { "kvm" } else { "tcg" };
    let machine_text = format!("{}, {accel}, {format}", arch.as_str());
    progress.step(&format!(
        "booting {} ({machine_text}) with {}",
        opts.image.display(),
        m.program
    ));
    let mut qemu = Command::new(m.program);
    crate::sys::kill_with_parent(&mut qemu);
    let child = qemu
        .args(command(&m, &disk, &vars, opts, kvm))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: m.program,
            source,
        })?;
    let (outcome, timeline) = watch(child, opts, accel);
    drop(work);
    Ok(RunResult {
        outcome,
        timeline,
        machine: machine_text,
    })
}

/// Writes `timeline` as JSON at `path`, the way every output is written (a partial
/// file beside it, renamed; never over anything but a regular file).
pub fn write_timeline(
    path: &Path,
    timeline: &timeline::Timeline,
) -> Result<(), crate::output::OutputError> {
    let json = serde_json::to_vec_pretty(timeline).unwrap_or_default();
    crate::output::write_file(path, &json)
}

/// Reads the console until the outcome, then stops QEMU.
fn watch(mut child: Child, opts: &RunOptions, accel: &str) -> (Outcome, timeline::Timeline) {
    let start = Instant::now();
    let deadline = start + opts.timeout;
    let (tx, rx) = mpsc::channel::<String>();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut buf = Vec::new();
            // A line is cut at 64 KiB: a console that never sends a newline cannot
            // make this hold an unbounded buffer.
            while let Ok(n) = std::io::Read::take(&mut r, 64 * 1024).read_until(b'\n', &mut buf) {
                if n == 0 {
                    break;
                }
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                buf.clear();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let mut timeline = timeline::Timeline::new(accel);
    let stdout = std::io::stdout();
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Outcome::TimedOut;
        }
        match rx.recv_timeout(left) {
            Ok(line) => {
                if opts.echo {
                    let mut out = stdout.lock();
                    let _ = writeln!(out, "{}", crate::untrusted::shown_max(&line, 4096));
                    let _ = out.flush();
                }
                timeline.line(&line, start.elapsed().as_secs_f64() * 1000.0);
                if line.contains(PANIC) {
                    break Outcome::Panicked(crate::untrusted::shown(&line));
                }
                if opts.until.as_ref().is_some_and(|re| re.is_match(&line)) {
                    break Outcome::Matched(crate::untrusted::shown(&line));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break Outcome::TimedOut,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The console closed: QEMU is exiting.
                let code = child.wait().ok().and_then(|s| s.code());
                break Outcome::Exited(code);
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    (outcome, timeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_in_a_path_stays_in_the_drive_value() {
        assert_eq!(
            opt_value(Path::new("/tmp/x/lz4hc,2.img")),
            "/tmp/x/lz4hc,,2.img"
        );
        // A path cannot add options of its own.
        assert_eq!(
            opt_value(Path::new("a.img,if=none,file=/etc/shadow")),
            "a.img,,if=none,,file=/etc/shadow"
        );
    }
}
