//! `kernel check`: reading a kernel's configuration (from a `.config` or from the
//! image's IKCONFIG blob) and checking it against kernel-config/required.txt, on the
//! real Debian kernel of the offline inputs and on synthetic images built here.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use kios_build::kernel::{self, KernelConfig, KernelError, Value};
use kios_build::profile::Arch;

fn debian_boot() -> PathBuf {
    common::inputs().join("kernel/boot")
}

fn debian_config_text() -> String {
    let path = debian_boot().join("config");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/prepare-inputs", path.display()))
}

/// The value Debian's config file gives `name`, read with grep-like plain string
/// matching, independent of the parser under test.
fn debian_line(name: &str) -> Option<String> {
    debian_config_text()
        .lines()
        .find(|l| l.starts_with(&format!("{name}=")) || *l == format!("# {name} is not set"))
        .map(str::to_string)
}

#[test]
fn debian_config_is_checked_against_the_required_list() {
    let config = kernel::load_config(&debian_boot().join("config")).unwrap();
    assert!(config.len() > 5000, "{} options", config.len());
    let report = kernel::check(&config, Arch::Amd64);
    println!("{report}");

    // What Debian builds as modules, which kiOS accepts (the profile loads them):
    for name in [
        "CONFIG_EXT4_FS",
        "CONFIG_OVERLAY_FS",
        "CONFIG_EROFS_FS",
        "CONFIG_VETH",
    ] {
        assert_eq!(debian_line(name).unwrap(), format!("{name}=m"));
        assert!(report.finding(name).is_none(), "{name}: {report}");
    }
    // What kiOS needs before any module can load, and Debian builds in:
    for name in [
        "CONFIG_EFI_STUB",
        "CONFIG_RD_ZSTD",
        "CONFIG_DEVTMPFS",
        "CONFIG_SERIAL_8250_CONSOLE",
    ] {
        assert_eq!(debian_line(name).unwrap(), format!("{name}=y"));
        assert!(report.finding(name).is_none(), "{name}: {report}");
    }
    assert_eq!(report.checked, kernel::required(Arch::Amd64).len());
    assert!(
        report.is_ok(),
        "Debian's kernel is expected to pass:\n{report}"
    );
}

#[test]
fn debian_config_made_to_lack_options_reports_each_with_its_reason() {
    // The same real config, with what a minimal or distro-tuned kernel often drops:
    // built-in options turned into modules or off.
    let mut config = kernel::load_config(&debian_boot().join("config")).unwrap();
    config.set("CONFIG_RD_ZSTD", Value::No);
    config.set("CONFIG_SERIAL_8250", Value::Module);
    config.set("CONFIG_CGROUP_BPF", Value::No);
    let report = kernel::check(&config, Arch::Amd64);
    let text = report.to_string();
    assert!(text.contains("missing: CONFIG_RD_ZSTD is not set, needs y: kios-build writes the initramfs gzip- or zstd-compressed"), "{text}");
    assert!(
        text.contains("missing: CONFIG_CGROUP_BPF is not set, needs y: crun attaches"),
        "{text}"
    );
    assert!(
        text.contains("wrong: CONFIG_SERIAL_8250=m, needs y: console=ttyS0"),
        "{text}"
    );
    assert_eq!((report.missing.len(), report.wrong.len()), (2, 1), "{text}");
}

#[test]
fn the_kios_fragments_have_every_required_option() {
    for arch in [Arch::Amd64, Arch::Arm64] {
        let texts: Vec<String> = kernel::fragments(arch)
            .iter()
            .map(|(name, _)| {
                let path = common::repo().join("kernel-config").join(name);
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            })
            .collect();
        let config = KernelConfig::from_fragments(texts.iter().map(String::as_str)).unwrap();
        let report = kernel::check(&config, arch);
        assert!(report.is_ok(), "{}:\n{report}", arch.as_str());
        assert!(report.checked >= 50, "{}", report.checked);
    }
}

/// A reproducible byte stream (xorshift) over 16 byte values, so the fake kernels
/// compress somewhat, like code, not like zeros nor like random data (which the
/// compressors would store verbatim, IKCONFIG blob included).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 24) as u8) & 0x0f
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// xz with the x86 BCJ filter and CRC32, as the kernel's scripts/xz_wrap.sh makes it.
fn xz_like_the_kernel(data: &[u8]) -> Vec<u8> {
    use xz2::stream::{Check, Filters, LzmaOptions, Stream};
    let mut filters = Filters::new();
    filters.x86();
    filters.lzma2(&LzmaOptions::new_preset(6).unwrap());
    let stream = Stream::new_stream_encoder(&filters, Check::Crc32).unwrap();
    let mut e = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn lzma_alone(data: &[u8]) -> Vec<u8> {
    use xz2::stream::{LzmaOptions, Stream};
    let stream = Stream::new_lzma_encoder(&LzmaOptions::new_preset(6).unwrap()).unwrap();
    let mut e = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const FAKE_CONFIG: &str = "#\n# Linux/x86 6.12.0 Kernel Configuration\n#\nCONFIG_EFI_STUB=y\nCONFIG_EXT4_FS=m\n# CONFIG_IKCONFIG_PROC is not set\nCONFIG_LOCALVERSION=\"-kios\"\n";

/// A fake vmlinux: ELF magic, noise, the marker string as the kernel's code holds
/// it, the IKCONFIG blob, more noise.
fn fake_vmlinux(config: &str) -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01\x00".to_vec();
    v.extend(noise(200_000, 1));
    v.extend_from_slice(b"IKCFG_ST\0");
    v.extend(noise(10_000, 2));
    v.extend_from_slice(b"IKCFG_ST");
    v.extend(gzip(config.as_bytes()));
    v.extend_from_slice(b"IKCFG_ED");
    v.extend(noise(100_000, 3));
    v
}

/// A minimal bzImage (Documentation/arch/x86/boot.rst): setup_sects 3, boot protocol
/// 2.15, the payload 0x240 bytes into the protected-mode code, and the 4-byte
/// uncompressed size after the payload, counted in payload_length as the kernel's
/// mkpiggy does.
fn bzimage(payload: &[u8], uncompressed: usize) -> Vec<u8> {
    const SETUP_SECTS: u8 = 3;
    const PAYLOAD_OFFSET: u32 = 0x240;
    let mut image = noise(usize::from(SETUP_SECTS + 1) * 512, 4);
    image[0x1f1] = SETUP_SECTS;
    image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    let mut piggy = payload.to_vec();
    piggy.extend_from_slice(&(uncompressed as u32).to_le_bytes());
    image[0x248..0x24c].copy_from_slice(&PAYLOAD_OFFSET.to_le_bytes());
    image[0x24c..0x250].copy_from_slice(&(piggy.len() as u32).to_le_bytes());
    image.extend(noise(PAYLOAD_OFFSET as usize, 5)); // the decompressor's code
    image.extend(piggy);
    image.extend(noise(4096, 6));
    image
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn config_is_extracted_from_bzimages_compressed_with_gzip_xz_zstd_and_lzma() {
    let dir = tempfile::tempdir().unwrap();
    let vmlinux = fake_vmlinux(FAKE_CONFIG);
    let expected = KernelConfig::parse(FAKE_CONFIG).unwrap();
    let payloads = [
        ("gzip", gzip(&vmlinux)),
        ("xz", xz_like_the_kernel(&vmlinux)),
        ("zstd", zstd::encode_all(&vmlinux[..], 19).unwrap()),
        ("lzma", lzma_alone(&vmlinux)),
    ];
    for (name, payload) in payloads {
        // The blob is only readable after decompression.
        assert!(!contains(&payload, b"CONFIG_EFI_STUB"), "{name}");
        assert!(!contains(&payload, b"IKCFG_ED"), "{name}");
        let path = write(
            dir.path(),
            &format!("vmlinuz-{name}"),
            &bzimage(&payload, vmlinux.len()),
        );
        let config = kernel::load_config(&path).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(config, expected, "{name}");
    }
}

#[test]
fn config_is_extracted_from_vmlinux_arm64_image_gz_and_efi_zboot() {
    let dir = tempfile::tempdir().unwrap();
    let expected = KernelConfig::parse(FAKE_CONFIG).unwrap();

    let vmlinux = write(dir.path(), "vmlinux", &fake_vmlinux(FAKE_CONFIG));
    assert_eq!(kernel::load_config(&vmlinux).unwrap(), expected);

    // arm64 Image: "ARM\x64" at 0x38 (Documentation/arch/arm64/booting.rst).
    let mut image = noise(64, 7);
    image[0x38..0x3c].copy_from_slice(b"ARM\x64");
    image.extend(&fake_vmlinux(FAKE_CONFIG)[8..]);
    let image_gz = write(dir.path(), "Image.gz", &gzip(&image));
    assert_eq!(kernel::load_config(&image_gz).unwrap(), expected);

    // EFI zboot: "MZ", "zimg" at 4, payload offset and size at 8 and 12, the
    // compression's name at 0x18 (drivers/firmware/efi/libstub/zboot-header.S).
    let payload = zstd::encode_all(&image[..], 3).unwrap();
    let mut zboot = noise(0x400, 8);
    zboot[0..2].copy_from_slice(b"MZ");
    zboot[4..8].copy_from_slice(b"zimg");
    zboot[8..12].copy_from_slice(&0x400u32.to_le_bytes());
    zboot[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    zboot[0x18..0x20].copy_from_slice(b"zstd\0\0\0\0");
    zboot.extend(&payload);
    zboot.extend(noise(512, 9));
    let zboot = write(dir.path(), "vmlinuz.efi", &zboot);
    assert_eq!(kernel::load_config(&zboot).unwrap(), expected);
}

#[test]
fn a_bzimage_without_ikconfig_gets_the_no_embedded_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut vmlinux = b"\x7fELF\x02\x01\x01\x00".to_vec();
    vmlinux.extend(noise(100_000, 10));
    let path = write(
        dir.path(),
        "vmlinuz",
        &bzimage(&gzip(&vmlinux), vmlinux.len()),
    );
    let err = kernel::load_config(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "kernel image {} has no embedded configuration (CONFIG_IKCONFIG); give its .config file instead",
            path.display()
        )
    );
}

#[test]
fn a_corrupt_payload_is_reported_as_a_decompression_error() {
    let dir = tempfile::tempdir().unwrap();
    let vmlinux = fake_vmlinux(FAKE_CONFIG);
    let mut payload = xz_like_the_kernel(&vmlinux);
    let middle = payload.len() / 2;
    payload[middle] ^= 0xff;
    let path = write(dir.path(), "vmlinuz", &bzimage(&payload, vmlinux.len()));
    let err = kernel::load_config(&path).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::Decompress {
                compression: kernel::Compression::Xz,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn debian_vmlinuz_is_decompressed_and_has_no_embedded_configuration() {
    // Debian 12 compresses its x86 kernel with xz (x86 BCJ filter) and leaves
    // IKCONFIG out; these two lines are the premise of this test.
    assert_eq!(
        debian_line("CONFIG_KERNEL_XZ").as_deref(),
        Some("CONFIG_KERNEL_XZ=y")
    );
    assert_eq!(
        debian_line("CONFIG_IKCONFIG").as_deref(),
        Some("# CONFIG_IKCONFIG is not set")
    );
    let vmlinuz = debian_boot().join("vmlinuz");
    let err = kernel::load_config(&vmlinuz).unwrap_err();
    // NoEmbeddedConfig is only returned after the payload decompressed cleanly and the
    // kernel in it was searched; a failed xz decode would be a Decompress error.
    assert!(
        matches!(err, KernelError::NoEmbeddedConfig { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(
        "has no embedded configuration (CONFIG_IKCONFIG); give its .config file instead"
    ));
}
