//! The arm64 image boots: built on this (x86_64) host from Debian's arm64 kernel,
//! systemd's linuxaa64.efi.stub and the aarch64 kios-init, then started in
//! `qemu-system-aarch64 -machine virt` (TCG) with AAVMF until kios-init says it is
//! ready on the PL011 serial console.

mod common;
use common::*;
use std::time::Duration;

/// aarch64 under TCG: AAVMF plus the kernel to `kios-init: ready` took 13-23 s here
/// with a Cortex-A57 (two shared cores); the limit leaves room for a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn the_arm64_image_boots_in_qemu_virt_with_aavmf_to_kios_init_ready() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_profile(
        dir.path(),
        "node.yaml",
        &profile_text_arm64("disk:\n  size: 256MiB\n"),
    );
    let img = dir.path().join("arm64.img");
    build(&p, &img, 1_700_000_000);

    // What firmware will look for, read back from the image itself.
    let i = inspect(&img);
    let kernel_version = std::fs::read_dir(inputs_arm64().join("kernel/lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    assert!(kernel_version.ends_with("-arm64"), "{kernel_version}");
    assert_eq!(i["boot"]["uki"], "EFI/BOOT/BOOTAA64.EFI", "{i:#}");
    assert_eq!(i["boot"]["arch"], "arm64", "{i:#}");
    assert_eq!(
        i["boot"]["kernel_version"],
        kernel_version.as_str(),
        "{i:#}"
    );
    assert_eq!(i["boot"]["cmdline"], "console=ttyAMA0 panic=-1", "{i:#}");
    let esp_files: Vec<&str> = i["esp"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(esp_files, ["EFI/BOOT/BOOTAA64.EFI"]);
    let modules = i["initramfs"]["modules"].to_string();
    assert!(
        modules.contains(&format!("/lib/modules/{kernel_version}/")),
        "{modules}"
    );
    assert!(
        modules.contains("virtio_mmio.ko") && modules.contains("virtio_pci.ko"),
        "{modules}"
    );

    let boot = boot_arm64(&img, "kios-init: ready", BOOT_TIMEOUT);
    let log = &boot.log;
    eprintln!(
        "arm64 boot: kios-init ready after {:.1}s",
        boot.elapsed.as_secs_f64()
    );
    assert!(
        boot.seen,
        "no `kios-init: ready` on the console within {}s; the log:\n{log}",
        BOOT_TIMEOUT.as_secs()
    );
    // AAVMF took EFI/BOOT/BOOTAA64.EFI, the stub handed over the embedded initrd, and
    // the kernel got the UKI's command line.
    assert!(
        log.contains("EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID"),
        "{log}"
    );
    assert!(
        log.contains("Kernel command line: console=ttyAMA0 panic=-1"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "/lib/modules/{kernel_version}/kernel/drivers/block/virtio_blk.ko"
        )),
        "{log}"
    );
    common::assert_booted_log(log, "test-node-arm64");
}
