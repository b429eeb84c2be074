//! Inputs from local OCI image layouts (`oci:DIR:TAG`): the kernel, the UEFI stub and
//! the system tree all taken from images, layers merged with whiteouts, owners kept.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;

fn copy(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::copy(from, to).unwrap();
}

#[test]
fn kernel_stub_and_system_from_oci_layouts_build_an_image() {
    let inputs = inputs();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The kernel image: vmlinuz and just the module files this profile needs.
    let kroot = d.join("kernel-root");
    let mods = fs::read_dir(inputs.join("kernel/lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let version = mods.file_name().unwrap().to_string_lossy().into_owned();
    copy(
        &inputs.join("kernel/boot/vmlinuz"),
        &kroot.join("boot/vmlinuz"),
    );
    let kmods = kroot.join("lib/modules").join(&version);
    for f in fs::read_dir(&mods).unwrap() {
        let f = f.unwrap();
        let name = f.file_name().to_string_lossy().into_owned();
        if name.starts_with("modules.") && f.path().is_file() {
            copy(&f.path(), &kmods.join(&name));
        }
    }
    for m in [
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/block/virtio_blk.ko",
    ] {
        copy(&mods.join(m), &kmods.join(m));
    }
    oci_layout(&d.join("kernel-layout"), "6.1", &[&kroot]);

    // The stub, at systemd's path inside its image.
    let sroot = d.join("stub-root");
    copy(
        &inputs.join("stub/linuxx64.efi.stub"),
        &sroot.join("usr/lib/systemd/boot/efi/linuxx64.efi.stub"),
    );
    oci_layout(&d.join("stub-layout"), "252", &[&sroot]);

    // The system image: two layers; the second removes a file of the first.
    let l1 = d.join("layer1");
    copy(&inputs.join("system/bin/busybox"), &l1.join("bin/busybox"));
    fs::create_dir_all(l1.join("etc")).unwrap();
    fs::write(l1.join("etc/motd"), "welcome\n").unwrap();
    fs::set_permissions(l1.join("etc/motd"), fs::Permissions::from_mode(0o640)).unwrap();
    chown(l1.join("etc/motd"), Some(1000), Some(1001)).unwrap();
    fs::write(l1.join("etc/old"), "to be removed\n").unwrap();
    let l2 = d.join("layer2");
    fs::create_dir_all(l2.join("etc")).unwrap();
    fs::write(l2.join("etc/.wh.old"), "").unwrap();
    fs::write(l2.join("etc/issue"), "kiOS test\n").unwrap();
    oci_layout(&d.join("system-layout"), "1", &[&l1, &l2]);

    let profile = write_profile(
        d,
        "node.yaml",
        "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nhostname: from-images\nkernel:\n  image: oci:kernel-layout:6.1\n  modules: [virtio_blk]\n  cmdline: [console=ttyS0]\nboot:\n  stub:\n    image: oci:stub-layout:252\nsystem:\n  image: oci:system-layout:1\ndisk:\n  size: 256MiB\n",
    );
    let img = d.join("node.img");
    build(&profile, &img, 1_700_000_000);
    let i = inspect(&img);
    assert_eq!(i["boot"]["kernel_version"], version.as_str());
    assert_eq!(i["boot"]["cmdline"], "console=ttyS0");
    let etc = i["initramfs"]["etc"].as_array().unwrap();
    let find = |p: &str| etc.iter().find(|e| e["path"] == p);
    let motd = find("/etc/motd").expect("/etc/motd from the first layer");
    assert_eq!(motd["uid"], 1000, "{motd}");
    assert_eq!(motd["gid"], 1001, "{motd}");
    assert_eq!(motd["mode"], "0640", "{motd}");
    assert_eq!(find("/etc/issue").unwrap()["content"], "kiOS test\n");
    assert!(
        find("/etc/old").is_none(),
        "the whiteout of the second layer removes /etc/old"
    );
    assert!(find("/etc/.wh.old").is_none(), "whiteouts are not files");
    let modules: Vec<&str> = i["initramfs"]["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        modules.last().unwrap().ends_with("/virtio_blk.ko"),
        "{modules:?}"
    );
}

#[test]
fn a_tampered_layer_is_refused_and_no_image_is_written() {
    let inputs = inputs();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let l1 = d.join("layer1");
    copy(&inputs.join("system/bin/busybox"), &l1.join("bin/busybox"));
    oci_layout(&d.join("system-layout"), "1", &[&l1]);
    // Flip one byte of the layer blob (the largest blob of the layout).
    let blobs = d.join("system-layout/blobs/sha256");
    let biggest = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&biggest, bytes).unwrap();
    let text_p = profile_text("").replace(
        &format!("system:\n  path: {}\n", inputs.join("system").display()),
        "system:\n  image: oci:system-layout:1\n",
    );
    let profile = write_profile(d, "node.yaml", &text_p);
    let img = d.join("node.img");
    let o = run(&mut common::build_command(&profile, &img));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("node.yaml:10:") && t.contains("oci:") && t.contains("sha256"),
        "{t}"
    );
    assert!(!img.exists());
    let left: Vec<_> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "partial files left: {left:?}");
}
