//! `kios-build verify`: a fresh build verifies in every output format, from its
//! report and from the profile; one byte changed inside a file of the store, of the
//! initramfs (inside the UKI, inside the ESP) and of another UKI section is found
//! and named, partition and file; bad inputs are clear errors.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn profile(dir: &Path) -> PathBuf {
    let i = inputs();
    write_profile(
        dir,
        "node.yaml",
        &profile_text(&format!(
            "kubernetes:\n  pauseImage: oci:{}:kios\ndaemons:\n  - name: dhcp\n    image: oci:{}:1\ndisk:\n  size: 256MiB\n",
            i.join("pause").display(),
            i.join("busybox").display()
        )),
    )
}

fn verify(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let o = run(kios_build()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("verify")
        .arg("--quiet")
        .args(args));
    (o.status.code(), text(&o))
}

fn build_as(profile: &Path, out: &Path, format: &str) {
    let o = run(build_command(profile, out)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["--quiet", "--format", format]));
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_fresh_build_verifies_in_every_format_from_the_profile_and_from_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = profile(dir.path());
    for format in ["raw", "qcow2", "vhd", "vmdk", "gce", "raw.zst", "raw.xz"] {
        let img = dir.path().join(format!("node.{format}"));
        build_as(&p, &img, format);
        let (code, out) = verify(&[p.as_os_str(), "--image".as_ref(), img.as_os_str()]);
        assert_eq!(code, Some(0), "{format}: {out}");
        assert!(out.contains("identical: "), "{out}");
    }
    let img = dir.path().join("reported.img");
    let report = dir.path().join("report.json");
    let o = run(build_command(&p, &img)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("--quiet")
        .arg("--report")
        .arg(&report));
    assert!(o.status.success(), "{}", text(&o));
    // From the report: the profile, the image, the epoch and kios-init are its own.
    let o = run(kios_build()
        .env_remove("SOURCE_DATE_EPOCH")
        .arg("verify")
        .arg(&report));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Takes the UKI out of `img`'s ESP, lets `change` edit it (same length), puts it back.
fn edit_uki(img: &Path, dir: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    require_tool("mcopy", "mtools");
    let (offset, _) = partition(img, "KIOS_ESP");
    let esp = format!("{}@@{offset}", img.display());
    let uki = dir.join("uki.efi");
    let o = run(Command::new("mcopy")
        .args(["-n", "-i", &esp, "::EFI/BOOT/BOOTX64.EFI"])
        .arg(&uki));
    assert!(o.status.success(), "{}", text(&o));
    let mut bytes = fs::read(&uki).unwrap();
    let len = bytes.len();
    change(&mut bytes);
    assert_eq!(bytes.len(), len);
    fs::write(&uki, &bytes).unwrap();
    let o = run(Command::new("mcopy")
        .args(["-o", "-n", "-i", &esp])
        .arg(&uki)
        .arg("::EFI/BOOT/BOOTX64.EFI"));
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_changed_byte_is_named_by_partition_and_file_in_the_store_the_initramfs_and_the_uki() {
    let dir = tempfile::tempdir().unwrap();
    let p = profile(dir.path());
    let built = dir.path().join("node.img");
    build_as(&p, &built, "raw");
    let case = |name: &str| {
        let img = dir.path().join(format!("{name}.img"));
        fs::copy(&built, &img).unwrap();
        img
    };

    // The store: one byte of overlay-images/images.json.
    let img = case("store");
    change_store_metadata(&img);
    let (code, out) = verify(&[p.as_os_str(), "--image".as_ref(), img.as_os_str()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "partition 2 (KIOS_STORE, store): overlay-images/images.json: contents differ"
        ),
        "{out}"
    );

    // The initramfs: /etc/hostname's one byte, recompressed in place in the UKI's
    // .initrd (padded with zeros to its size, as the kernel allows), on the ESP.
    let img = case("initramfs");
    edit_uki(&img, dir.path(), |uki| {
        let info = kios_build::boot::read_uki(&mut std::io::Cursor::new(&uki[..])).unwrap();
        let s = info.sections.iter().find(|s| s.name == ".initrd").unwrap();
        let (start, len) = (
            s.file_offset as usize,
            s.virtual_size.min(s.file_size) as usize,
        );
        let mut cpio = zstd::stream::decode_all(&uki[start..start + len]).unwrap();
        let host = b"test-node\n";
        let at = cpio.windows(host.len()).position(|w| w == host).unwrap();
        cpio[at + 8] = b'f';
        let packed = zstd::stream::encode_all(&cpio[..], 19).unwrap();
        assert!(packed.len() <= len, "{} > {len}", packed.len());
        uki[start..start + len].fill(0);
        uki[start..start + packed.len()].copy_from_slice(&packed);
    });
    let (code, out) = verify(&[p.as_os_str(), "--image".as_ref(), img.as_os_str()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("partition 1 (KIOS_ESP, esp): EFI/BOOT/BOOTX64.EFI: .initrd: /etc/hostname: contents differ"),
        "{out}"
    );

    // Another file of the ESP's UKI: one byte of the kernel command line.
    let img = case("cmdline");
    edit_uki(&img, dir.path(), |uki| {
        let info = kios_build::boot::read_uki(&mut std::io::Cursor::new(&uki[..])).unwrap();
        let s = info.sections.iter().find(|s| s.name == ".cmdline").unwrap();
        uki[s.file_offset as usize] ^= 0x20;
    });
    let (code, out) = verify(&[p.as_os_str(), "--image".as_ref(), img.as_os_str()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("partition 1 (KIOS_ESP, esp): EFI/BOOT/BOOTX64.EFI: .cmdline: contents differ from byte 0"),
        "{out}"
    );
}

#[test]
fn a_report_of_another_profile_a_missing_lock_and_a_file_that_is_no_image_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = profile(dir.path());
    let img = dir.path().join("node.img");
    let report = dir.path().join("r.json");
    let o = run(common::build_command(&p, &img)
        .arg("--quiet")
        .arg("--report")
        .arg(&report));
    assert!(o.status.success(), "{}", text(&o));

    // The profile changed since the report: refused, nothing rebuilt.
    fs::write(&p, fs::read_to_string(&p).unwrap() + "hostname: other\n").unwrap();
    let o = run(kios_build().arg("verify").arg(&report));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("is not the one this report was written for"),
        "{}",
        text(&o)
    );

    // A profile naming a registry image, with no lock: --locked says what to do.
    let reg = write_profile(
        dir.path(),
        "reg.yaml",
        &profile_text("daemons:\n  - name: dhcp\n    image: 127.0.0.1:9/kios/busybox:1\n"),
    );
    let (code, out) = verify(&[reg.as_os_str(), "--image".as_ref(), img.as_os_str()]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("has no entry for 127.0.0.1:9/kios/busybox:1"),
        "{out}"
    );

    let junk = dir.path().join("junk.img");
    fs::write(&junk, vec![1u8; 8192]).unwrap();
    let (code, out) = verify(&[p.as_os_str(), "--image".as_ref(), junk.as_os_str()]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not an image kios-build writes"), "{out}");

    let (code, out) = verify(&[report.as_os_str()]);
    assert_eq!(code, Some(2), "{out}");
    let not_report = dir.path().join("x.json");
    fs::write(&not_report, "{\"hello\": 1}").unwrap();
    let (code, out) = verify(&[not_report.as_os_str()]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not a kios-build report"), "{out}");
}
