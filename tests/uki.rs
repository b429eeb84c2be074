//! The UKI writer with the real inputs: systemd's stub and Debian's kernel (made by
//! `scripts/prepare-inputs`), checked by binutils' `objdump` and read back.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use kios_build::boot::{kernel_release, kernel_version, read_uki, write_uki, UkiParts};
use kios_build::tree::Content;

/// The prepared inputs: `$KIOS_INPUTS`, else `.inputs` in this checkout, else `.inputs`
/// in the main checkout when this is a git worktree. Missing inputs fail the test:
/// a skipped test would hide that nothing was checked.
fn inputs() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut candidates: Vec<PathBuf> = std::env::var_os("KIOS_INPUTS")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.push(manifest.join(".inputs"));
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .current_dir(manifest)
        .output()
    {
        let common = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Some(main) = common.parent() {
            candidates.push(main.join(".inputs"));
        }
    }
    for dir in &candidates {
        if dir.join("stub/linuxx64.efi.stub").is_file() && dir.join("kernel/boot/vmlinuz").is_file()
        {
            return dir.clone();
        }
    }
    panic!(
        "the boot inputs are missing (looked in {candidates:?}): run scripts/prepare-inputs \
         (or set KIOS_INPUTS to a directory it made)"
    );
}

fn host_content(path: &Path) -> Content {
    let len = fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len();
    Content::Host {
        path: Arc::new(path.to_path_buf()),
        offset: 0,
        len,
    }
}

/// One line of `objdump -h`: name, size, VMA, file offset (hex fields).
#[derive(Debug, PartialEq, Eq)]
struct ObjdumpSection {
    name: String,
    size: u64,
    vma: u64,
    file_offset: u64,
}

fn objdump_sections(file: &Path) -> Vec<ObjdumpSection> {
    let out = Command::new("objdump")
        .arg("-h")
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run objdump ({e}): install binutils (apt-get install binutils)")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "objdump -h {} failed: {}{text}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("pei-x86-64"),
        "objdump does not see a PE image:\n{text}"
    );
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // "Idx Name Size VMA LMA File-off Algn"
            (f.len() == 7 && f[0].parse::<u32>().is_ok()).then(|| ObjdumpSection {
                name: f[1].to_string(),
                size: hex(f[2]),
                vma: hex(f[3]),
                file_offset: hex(f[5]),
            })
        })
        .collect()
}

#[test]
fn uki_from_the_systemd_stub_and_debian_kernel_is_a_valid_pe_with_our_sections() {
    let inputs = inputs();
    let stub_path = inputs.join("stub/linuxx64.efi.stub");
    let vmlinuz = inputs.join("kernel/boot/vmlinuz");
    let stub = fs::read(&stub_path).unwrap();
    let stub_sections = objdump_sections(&stub_path);

    let version = kernel_version(&mut fs::File::open(&vmlinuz).unwrap()).unwrap();
    let release = kernel_release(&version).to_string();
    let osrel = b"ID=kios\nNAME=kiOS\n".to_vec();
    let initrd = b"\x1f\x8b a tiny stand-in initramfs".to_vec();
    let parts = UkiParts {
        osrel: osrel.clone(),
        cmdline: b"console=ttyS0".to_vec(),
        uname: release.clone().into_bytes(),
        linux: host_content(&vmlinuz),
        initrd: Content::inline(initrd.clone()),
    };

    let dir = tempfile::tempdir().unwrap();
    let uki_path = dir.path().join("BOOTX64.EFI");
    let mut file = fs::File::create(&uki_path).unwrap();
    let written = write_uki(&stub, &parts, &mut file).unwrap();
    drop(file);
    assert_eq!(written, fs::metadata(&uki_path).unwrap().len());

    let info = read_uki(&mut fs::File::open(&uki_path).unwrap()).unwrap();
    assert_eq!(info.machine, 0x8664);
    assert_eq!(info.cmdline, "console=ttyS0");
    assert_eq!(info.uname, release);
    assert_eq!(info.osrel.as_bytes(), &osrel[..]);

    // objdump agrees with our reader, and the stub's sections come first, unchanged.
    let dumped = objdump_sections(&uki_path);
    let names: Vec<&str> = dumped.iter().map(|s| s.name.as_str()).collect();
    let stub_names: Vec<&str> = stub_sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(&names[..stub_names.len()], &stub_names[..]);
    assert_eq!(
        &names[stub_names.len()..],
        [".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
    );
    assert_eq!(&dumped[..stub_sections.len()], &stub_sections[..]);
    assert_eq!(dumped.len(), info.sections.len());
    for (d, s) in dumped.iter().zip(&info.sections) {
        assert_eq!(d.name, s.name);
        assert_eq!(d.vma, s.virtual_address, "{}", s.name);
        assert_eq!(d.file_offset, s.file_offset, "{}", s.name);
        // BFD shows the loaded data: VirtualSize, capped at the raw data.
        assert_eq!(d.size, s.virtual_size.min(s.file_size), "{}", s.name);
    }

    // Sizes: the text sections and the initrd are their data; .linux reserves the
    // kernel's SizeOfImage, which for this kernel exceeds its file.
    let section = |name: &str| info.sections.iter().find(|s| s.name == name).unwrap();
    assert_eq!(section(".osrel").virtual_size, osrel.len() as u64);
    assert_eq!(section(".cmdline").virtual_size, 13);
    assert_eq!(section(".uname").virtual_size, release.len() as u64);
    assert_eq!(section(".initrd").virtual_size, initrd.len() as u64);
    let kernel_len = parts.linux.len();
    let kernel_size_of_image = size_of_image(&vmlinuz);
    let linux = section(".linux");
    assert_eq!(linux.virtual_size, kernel_size_of_image.max(kernel_len));
    assert!(
        linux.virtual_size > kernel_len,
        "Debian's kernel reserves more than its file"
    );
    assert_eq!(linux.file_size, kernel_len.div_ceil(0x200) * 0x200);
    let sdmagic = stub_sections.last().unwrap();
    assert!(section(".osrel").virtual_address >= sdmagic.vma + sdmagic.size);
    for s in &info.sections[stub_sections.len()..] {
        assert_eq!(s.virtual_address % 0x200, 0, "{} is aligned", s.name);
        assert_eq!(
            s.file_offset % 0x200,
            0,
            "{} is aligned in the file",
            s.name
        );
    }
    let image_size = size_of_image(&uki_path);
    assert_eq!(image_size, linux.virtual_address + linux.virtual_size);

    // The kernel's bytes are in .linux, verbatim, and the file ends with its section.
    let uki = fs::read(&uki_path).unwrap();
    let kernel = fs::read(&vmlinuz).unwrap();
    let at = linux.file_offset as usize;
    assert!(
        uki[at..at + kernel.len()] == kernel[..],
        ".linux holds the kernel"
    );
    assert_eq!(uki.len() as u64, linux.file_offset + linux.file_size);
}

#[test]
fn kernel_version_of_the_debian_kernel_names_its_module_directory() {
    let inputs = inputs();
    let vmlinuz = inputs.join("kernel/boot/vmlinuz");
    let version = kernel_version(&mut fs::File::open(&vmlinuz).unwrap()).unwrap();
    // prepare-inputs keeps the package's lib/modules/<release>: the same name.
    let modules: Vec<String> = fs::read_dir(inputs.join("kernel/lib/modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        modules,
        [kernel_release(&version)],
        "version string: {version:?}"
    );
    assert!(
        version.contains("debian-kernel@lists.debian.org"),
        "{version}"
    );
    // What holds for any Debian amd64 kernel, whichever the archive serves today:
    // the release is `<major>.<minor>.<patch>-<abi>-amd64` and names the package
    // prepare-inputs took it from (recorded in kernel/.package).
    let release = kernel_release(&version);
    assert!(is_debian_release(release, "amd64"), "release {release:?}");
    let package = fs::read_to_string(inputs.join("kernel/.package")).unwrap();
    let name = package.split_whitespace().next().unwrap_or("");
    assert_eq!(
        name,
        format!("linux-image-{release}"),
        "kernel/.package: {package}"
    );
}

/// `6.1.0-57-amd64`: a dotted version of three numbers, the ABI number, the flavour.
fn is_debian_release(release: &str, flavour: &str) -> bool {
    let Some(rest) = release.strip_suffix(&format!("-{flavour}")) else {
        return false;
    };
    let Some((upstream, abi)) = rest.split_once('-') else {
        return false;
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = upstream.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| numeric(p)) && numeric(abi)
}

/// `SizeOfImage` as `objdump -p` prints it.
fn size_of_image(file: &Path) -> u64 {
    let out = Command::new("objdump")
        .arg("-p")
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run objdump ({e}): install binutils (apt-get install binutils)")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("SizeOfImage"))
        .unwrap_or_else(|| {
            panic!(
                "objdump -p {} shows no SizeOfImage:\n{text}",
                file.display()
            )
        });
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}
