//! The image boots: QEMU (TCG, q35), OVMF, the disk as virtio, until kios-init
//! says it is ready on the serial console.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn the_image_boots_in_qemu_with_ovmf_to_kios_init_ready() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_profile(
        dir.path(),
        "node.yaml",
        &profile_text("disk:\n  size: 256MiB\n"),
    );
    let img = dir.path().join("boot.img");
    build(&p, &img, 1_700_000_000);
    let (ready, log) = boot(&img, "kios-init: ready", Duration::from_secs(400), false);
    assert!(
        ready,
        "no `kios-init: ready` on the console; the log:\n{log}"
    );
    // The command line the kernel got is the one embedded in the UKI.
    assert!(log.contains("console=ttyS0,115200"), "{log}");
    // The modules of the profile were loaded, dependencies first, without errors.
    assert!(
        log.contains("kios-init: loaded module /lib/modules/"),
        "{log}"
    );
    common::assert_booted_log(&log, "test-node");
}

#[test]
fn the_qcow2_image_boots_too() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_profile(
        dir.path(),
        "node.yaml",
        &profile_text("disk:\n  size: 256MiB\n  format: qcow2\n"),
    );
    let img = dir.path().join("boot.qcow2");
    build(&p, &img, 1_700_000_000);
    let head = std::fs::read(&img).unwrap();
    assert!(head.starts_with(b"QFI\xfb"), "a qcow2 file");
    let (ready, log) = boot(&img, "kios-init: ready", Duration::from_secs(400), false);
    assert!(
        ready,
        "no `kios-init: ready` on the console; the log:\n{log}"
    );
}
