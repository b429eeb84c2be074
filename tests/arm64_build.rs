//! arm64 images built on this x86_64 host, without booting them (tests/boot_qemu_arm64.rs
//! boots one): the same inputs give the same bytes, the arm64 image of a multi-arch
//! OCI index is the one taken, and inputs of the wrong architecture are refused
//! before anything is written, each error naming what to use instead.

mod common;
use common::*;
use std::fs;

#[test]
fn an_arm64_build_is_reproducible_and_holds_bootaa64_and_the_aarch64_init() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_profile(
        dir.path(),
        "node.yaml",
        &profile_text_arm64("disk:\n  size: 256MiB\n"),
    );
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    build(&p, &a, 1_700_000_000);
    build(&p, &b, 1_700_000_000);
    assert_eq!(
        sha256_file(&a),
        sha256_file(&b),
        "same profile, inputs and epoch"
    );
    let i = inspect(&a);
    assert_eq!(i["boot"]["uki"], "EFI/BOOT/BOOTAA64.EFI", "{i:#}");
    assert_eq!(i["boot"]["arch"], "arm64", "{i:#}");
    assert!(
        i["boot"]["kernel_version"]
            .as_str()
            .unwrap()
            .ends_with("-arm64"),
        "{i:#}"
    );
    let init_len = fs::metadata(init_binary_arm64()).unwrap().len();
    assert_eq!(i["initramfs"]["init"]["size"], init_len, "{i:#}");
}

#[test]
fn an_arm64_profile_takes_the_arm64_image_of_a_multi_arch_index() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["amd64", "arm64"] {
        let etc = dir.path().join(arch).join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("built-for"), format!("{arch}\n")).unwrap();
    }
    let layout = dir.path().join("system-layout");
    oci_multi_arch_layout(
        &layout,
        "1",
        &[
            ("amd64", &dir.path().join("amd64")),
            ("arm64", &dir.path().join("arm64")),
        ],
    );
    let text = profile_text_arm64("disk:\n  size: 256MiB\n").replace(
        &format!(
            "system:\n  path: {}\n",
            inputs_arm64().join("system").display()
        ),
        &format!("system:\n  image: oci:{}:1\n", layout.display()),
    );
    assert!(text.contains("image: oci:"), "{text}");
    let p = write_profile(dir.path(), "node.yaml", &text);
    let img = dir.path().join("node.img");
    build(&p, &img, 0);
    let i = inspect(&img);
    let built_for = i["initramfs"]["etc"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/etc/built-for")
        .unwrap_or_else(|| panic!("no /etc/built-for: {i:#}"));
    assert_eq!(built_for["content"], "arm64\n");
}

fn refused(profile_text: &str, init: Option<&std::path::Path>, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let p = write_profile(dir.path(), "node.yaml", profile_text);
    let img = dir.path().join("node.img");
    let mut cmd = build_command(&p, &img);
    if let Some(init) = init {
        cmd.arg("--init").arg(init);
    }
    let o = run(&mut cmd);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for e in expect {
        assert!(t.contains(e), "expected `{e}` in:\n{t}");
    }
    assert!(!img.exists(), "no image is written");
}

#[test]
fn an_amd64_stub_for_an_arm64_profile_is_refused_naming_linuxaa64() {
    let text = profile_text_arm64("").replace(
        &inputs_arm64()
            .join("stub/linuxaa64.efi.stub")
            .display()
            .to_string(),
        &inputs()
            .join("stub/linuxx64.efi.stub")
            .display()
            .to_string(),
    );
    refused(
        &text,
        None,
        &["the UEFI stub", "0x8664", "linuxaa64.efi.stub"],
    );
}

#[test]
fn an_x86_64_kios_init_for_an_arm64_profile_is_refused() {
    refused(
        &profile_text_arm64(""),
        Some(&init_binary()),
        &[
            "it is built for x86_64; arch arm64 needs a static aarch64 binary",
            "scripts/build-init arm64",
        ],
    );
}
